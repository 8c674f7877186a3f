"""Property tests of the LSD-C losses (pairwise BCE, consistency MSE, ramp-up)."""

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skdeepcluster.losses import consistency_mse, lsdc_pairwise_bce, rampup_weight

torch.set_num_threads(1)
SETTINGS = settings(max_examples=30, deadline=None)


@st.composite
def labels(draw, max_n=8, min_k=1, max_k=5):
    n = draw(st.integers(1, max_n))
    k = draw(st.integers(min_k, max_k))
    y = draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n))
    return torch.tensor(y), k


@st.composite
def probs(draw, n, k):
    seed = draw(st.integers(0, 2**31 - 1))
    temp = draw(st.floats(0.1, 10))
    logits = torch.randn(n, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.softmax(logits / temp, dim=1)


def ref_bce(pa, pb, a, eps=1e-7):
    """Eq. (5) pair by pair in float64, with eps inside the logs: log(s + eps), log(1 - s + eps)."""
    total = 0.0
    for i in range(pa.shape[0]):
        for j in range(pb.shape[0]):
            s = min(max(float(pa[i].double() @ pb[j].double()), 0.0), 1.0)
            t = float(a[i, j])
            total -= t * math.log(s + eps) + (1 - t) * math.log(1 - s + eps)
    return total / (pa.shape[0] * pb.shape[0])


# --------------------------------------------------------------------------
# pairwise BCE, eq. (5)
# --------------------------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_bce_matches_reference(data):
    n, m, k = (
        data.draw(st.integers(1, 6)),
        data.draw(st.integers(1, 6)),
        data.draw(st.integers(1, 5)),
    )
    pa, pb = data.draw(probs(n, k)), data.draw(probs(m, k))
    soft = data.draw(st.booleans())
    a = torch.rand(
        n,
        m,
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(data.draw(st.integers(0, 99))),
    )
    if not soft:
        a = (a > 0.5).double()
    loss = lsdc_pairwise_bce(pa, pb, a)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(ref_bce(pa, pb, a), rel=1e-9, abs=1e-12)


@SETTINGS
@given(lab=labels(min_k=2), data=st.data())
def test_bce_is_minimal_for_one_hot_consistent_with_partition(lab, data):
    y, k = lab
    onehot = torch.nn.functional.one_hot(y, k).double()
    a = (y[:, None] == y[None, :]).double()
    eps = 1e-7
    best = lsdc_pairwise_bce(onehot, onehot, a, eps=eps)
    assert best.item() == pytest.approx(-math.log1p(eps), rel=1e-6)  # ~ -eps, eps in the logs
    # any perturbation of the predictions increases the loss: move mass delta
    # of one sample from its cluster to another one
    i = data.draw(st.integers(0, y.shape[0] - 1))
    to = (int(y[i]) + data.draw(st.integers(1, k - 1))) % k
    delta = data.draw(st.floats(1e-3, 1.0))
    perturbed = onehot.clone()
    perturbed[i, y[i]] -= delta
    perturbed[i, to] += delta
    assert lsdc_pairwise_bce(perturbed, onehot, a).item() > best.item()
    assert lsdc_pairwise_bce(onehot, perturbed, a).item() > best.item()


@SETTINGS
@given(data=st.data())
def test_bce_invariant_to_permuting_clusters(data):
    n, k = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))
    pa, pb = data.draw(probs(n, k)), data.draw(probs(n, k))
    a = torch.rand(n, n, dtype=torch.float64)
    perm = torch.tensor(data.draw(st.permutations(range(k))), dtype=torch.int64)
    loss = lsdc_pairwise_bce(pa, pb, a)
    loss_perm = lsdc_pairwise_bce(pa[:, perm], pb[:, perm], a)
    assert loss_perm.item() == pytest.approx(loss.item(), rel=1e-12)


def _same_cluster(logits_a, logits_b):
    return (torch.softmax(logits_a, dim=1) @ torch.softmax(logits_b, dim=1).T)[0, 0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("target", [1.0, 0.0])
def test_bce_pushes_confidently_wrong_pairs_towards_target(target, dtype):
    """A similar pair confidently split (s ~ 4e-9) or a dissimilar pair confidently merged
    (s ~ 1 - 4e-9) is the most wrong a pair can be: its gradient must be finite, non-zero, and a
    descent step must move s towards the target (a clamp of s to [eps, 1 - eps] gives zero)."""
    logits_a = torch.tensor([[20.0, 0.0, 0.0]], dtype=dtype, requires_grad=True)
    other = [0.0, 20.0, 0.0] if target == 1.0 else [20.0, 0.0, 0.0]
    logits_b = torch.tensor([other], dtype=dtype, requires_grad=True)
    s_before = _same_cluster(logits_a.double(), logits_b.double()).item()
    assert abs(s_before - (1.0 - target)) < 1e-8  # confidently wrong, beyond the eps of the loss
    probs_a, probs_b = torch.softmax(logits_a, dim=1), torch.softmax(logits_b, dim=1)
    loss = lsdc_pairwise_bce(probs_a, probs_b, torch.full((1, 1), target))
    assert loss.item() > 15.0  # about -log(4e-9 + 1e-7)
    grads = torch.autograd.grad(loss, (logits_a, logits_b))
    for grad in grads:
        assert torch.isfinite(grad).all()
        assert grad.abs().max().item() > 1e-3
    with torch.no_grad():
        stepped = [(x - g).double() for x, g in zip((logits_a, logits_b), grads)]
        s_after = _same_cluster(*stepped).item()
    direction = 1.0 if target == 1.0 else -1.0
    assert direction * (s_after - s_before) > 0.01 * min(s_before, 1.0 - s_before)


@pytest.mark.parametrize("target", [1.0, 0.0])
def test_bce_gradient_at_exact_one_hots(target):
    """s exactly 0 (target 1) or exactly 1 (target 0): finite loss, finite non-zero gradient on
    the probabilities, of the sign that moves s towards the target."""
    probs_a = torch.tensor([[1.0, 0.0, 0.0]], requires_grad=True)
    probs_b = torch.tensor([[0.0, 1.0, 0.0] if target == 1.0 else [1.0, 0.0, 0.0]])
    loss = lsdc_pairwise_bce(probs_a, probs_b, torch.full((1, 1), target))
    assert torch.isfinite(loss)
    (grad,) = torch.autograd.grad(loss, probs_a)
    assert torch.isfinite(grad).all()
    shared = int(probs_b.argmax())  # ds / dp_a = p_b: only this entry of the gradient matters
    if target == 1.0:
        assert grad[0, shared] < -1e6  # descent raises p_a in p_b's cluster: s grows
    else:
        assert grad[0, shared] > 1e6  # descent lowers it: s falls
    assert torch.count_nonzero(grad).item() == 1


def test_bce_clip_keeps_rounding_above_one_finite():
    """Rows whose product rounds above 1 (here 1 + 2e-6): the loss and gradient stay finite."""
    p = torch.tensor([[1.0 + 1e-6, 0.0]], requires_grad=True)
    loss = lsdc_pairwise_bce(p, p.detach(), torch.zeros(1, 1))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(-math.log(1e-7), rel=1e-3)
    (grad,) = torch.autograd.grad(loss, p)
    assert torch.isfinite(grad).all() and grad[0, 0] > 0


def test_bce_gradient_pushes_towards_target():
    p = torch.tensor([[0.6, 0.4], [0.4, 0.6]], requires_grad=True)
    a = torch.eye(2)
    lsdc_pairwise_bce(p, p.detach(), a).backward()
    # similar pair (i, i): increase own-cluster mass of row 0 in cluster 0
    assert p.grad[0, 0] < p.grad[0, 1]


@SETTINGS
@given(data=st.data())
def test_bce_soft_target_minimum_is_target_entropy(data):
    # with K = 2 and one column p'_0 = (1, 0), s_i0 = p_i[0] can reach any target
    t = torch.tensor(
        data.draw(st.lists(st.floats(0.01, 0.99), min_size=1, max_size=5)), dtype=torch.float64
    )
    pa = torch.stack([t, 1 - t], dim=1)
    pb = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    loss = lsdc_pairwise_bce(pa, pb, t[:, None])
    entropy = -(t * t.log() + (1 - t) * (1 - t).log()).mean()
    # eps inside the logs moves the value by at most eps / min(t, 1 - t) = 1e-5
    assert loss.item() == pytest.approx(entropy.item(), abs=2e-5)
    assert loss.item() == pytest.approx(ref_bce(pa, pb, t[:, None]), rel=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_bce_float32_and_rectangular(seed):
    gen = torch.Generator().manual_seed(seed)
    pa = torch.softmax(3 * torch.randn(3, 4, generator=gen), dim=1)
    pb = torch.softmax(3 * torch.randn(5, 4, generator=gen), dim=1)
    a = torch.rand(3, 5, generator=gen) > 0.5
    loss = lsdc_pairwise_bce(pa, pb, a)
    assert loss.dtype == torch.float32 and loss.shape == ()
    assert loss.item() == pytest.approx(ref_bce(pa, pb, a), rel=1e-5)
    # the (N, M) orientation: rows follow probs_a, columns probs_b
    assert lsdc_pairwise_bce(pb, pa, a.T).item() == pytest.approx(loss.item(), rel=1e-5)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((torch.rand(3), torch.rand(3, 2), torch.ones(3, 3)), {}, "probs_a must be a 2-D"),
        ((torch.rand(3, 2), torch.rand(3, 3), torch.ones(3, 3)), {}, "same number of clusters"),
        ((torch.rand(3, 2), torch.rand(4, 2), torch.ones(3, 3)), {}, r"\(N, M\) = \(3, 4\)"),
        ((torch.rand(3, 2), torch.rand(3, 2), torch.full((3, 3), 2.0)), {}, r"\[0, 1\]"),
        ((torch.rand(3, 2), torch.rand(3, 2), torch.full((3, 3), float("nan"))), {}, r"\[0, 1\]"),
        ((torch.rand(3, 2), torch.rand(3, 2), torch.ones(3, 3)), {"eps": 0.0}, "eps"),
        (
            (torch.rand(3, 2), torch.rand(3, 2), torch.ones(3, 3)),
            {"eps": 0.7},
            r"eps .*\(0.0, 0.5\)",
        ),
        ((torch.rand(3, 2), torch.rand(3, 2), torch.ones(3, 3)), {"eps": True}, "eps"),
        ((torch.rand(3, 2), torch.rand(3, 2), torch.ones(3, 3)), {"eps": "1e-7"}, "eps"),
        ((torch.ones(3, 2, dtype=torch.long), torch.rand(3, 2), torch.ones(3, 3)), {}, "floating"),
        ((torch.rand(3, 2), torch.rand(3, 2), [[1.0]]), {}, "torch.Tensor"),
    ],
)
def test_bce_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        lsdc_pairwise_bce(*args, **kwargs)


# --------------------------------------------------------------------------
# consistency MSE, eq. (8)
# --------------------------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_consistency_mse(data):
    n, k = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))
    pa, pb = data.draw(probs(n, k)), data.draw(probs(n, k))
    loss = consistency_mse(pa, pb)
    expected = sum(float(((pa[i] - pb[i]) ** 2).sum()) for i in range(n)) / (n * k)
    assert loss.item() == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert consistency_mse(pa, pa).item() == 0.0
    assert consistency_mse(pb, pa).item() == pytest.approx(loss.item(), rel=1e-12)


def test_consistency_mse_gradients_flow_to_both():
    pa = torch.rand(4, 3, requires_grad=True)
    pb = torch.rand(4, 3, requires_grad=True)
    consistency_mse(pa, pb).backward()
    assert pa.grad.abs().sum() > 0 and pb.grad.abs().sum() > 0


def test_consistency_mse_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        consistency_mse(torch.rand(4, 3), torch.rand(4, 2))
    with pytest.raises(ValueError, match="2-D"):
        consistency_mse(torch.rand(4), torch.rand(4))


# --------------------------------------------------------------------------
# ramp-up weight
# --------------------------------------------------------------------------


@SETTINGS
@given(big_t=st.floats(0.5, 1000), lam=st.floats(0, 100))
def test_rampup_endpoints(big_t, lam):
    assert rampup_weight(0, big_t, lam) == pytest.approx(lam * math.exp(-5))
    assert rampup_weight(-3.0, big_t, lam) == pytest.approx(lam * math.exp(-5))  # t clipped at 0
    assert rampup_weight(big_t, big_t, lam) == lam
    assert rampup_weight(big_t / 2, big_t, lam) == pytest.approx(lam * math.exp(-5 * 0.25))


@SETTINGS
@given(
    big_t=st.integers(0, 50),
    lam=st.floats(0, 100),
    steps=st.lists(st.floats(-10, 200), min_size=2, max_size=10),
)
def test_rampup_monotone_and_constant_after_t(big_t, lam, steps):
    steps = sorted(steps)
    values = [rampup_weight(t, big_t, lam) for t in steps]
    assert all(v1 <= v2 for v1, v2 in itertools.pairwise(values))
    assert all(0 <= v <= lam for v in values)
    for t, v in zip(steps, values):
        if t >= big_t:
            assert v == lam


def test_rampup_zero_length_means_constant():
    assert rampup_weight(0, 0, 2.5) == 2.5
    assert rampup_weight(-1, 0, 2.5) == 2.5


@pytest.mark.parametrize(
    "args, match",
    [
        ((0, -1, 1.0), r"rampup_steps must be a number in \[0.0, inf\), got -1"),
        ((0, 10, -1.0), r"max_weight must be a number in \[0.0, inf\), got -1.0"),
        ((float("nan"), 10, 1.0), "step must be finite; got nan"),
        ((0, float("inf"), 1.0), r"rampup_steps must be a number in \[0.0, inf\), got inf"),
        ((0, 10, "1"), r"max_weight must be a number in \[0.0, inf\), got '1'"),
        (("0", 10, 1.0), "step must be a real number; got '0'"),
        ((True, 10, 1.0), "step must be a real number; got True"),
    ],
)
def test_rampup_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        rampup_weight(*args)
