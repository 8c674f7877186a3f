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
    total = 0.0
    for i in range(pa.shape[0]):
        for j in range(pb.shape[0]):
            s = min(max(float(pa[i] @ pb[j]), eps), 1 - eps)
            t = float(a[i, j])
            total -= t * math.log(s) + (1 - t) * math.log(1 - s)
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
    assert best.item() == pytest.approx(-math.log1p(-eps), rel=1e-6)  # ~ eps, the clamp floor
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


@pytest.mark.parametrize("target", [0.0, 1.0, 0.5])
def test_bce_finite_with_finite_gradients_at_extremes(target):
    # rows 0 and 1 are orthogonal (s = 0), row 0 with itself gives s = 1
    logits = torch.tensor([[30.0, -30.0, -30.0], [-30.0, 30.0, -30.0]], requires_grad=True)
    pa = torch.softmax(logits * 100, dim=1)
    exact = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], requires_grad=True)
    a = torch.full((2, 2), target)
    for p in (pa, exact):
        loss = lsdc_pairwise_bce(p, p, a)
        assert torch.isfinite(loss)
        (grad,) = torch.autograd.grad(loss, logits if p is pa else exact)
        assert torch.isfinite(grad).all()


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
    assert loss.item() == pytest.approx(entropy.item(), rel=1e-9)


def test_bce_float32_and_rectangular():
    pa = torch.softmax(torch.randn(3, 4), dim=1)
    pb = torch.softmax(torch.randn(5, 4), dim=1)
    loss = lsdc_pairwise_bce(pa, pb, torch.ones(3, 5, dtype=torch.bool))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((torch.rand(3), torch.rand(3, 2), torch.ones(3, 3)), {}, "probs_a must be a 2-D"),
        ((torch.rand(3, 2), torch.rand(3, 3), torch.ones(3, 3)), {}, "same number of clusters"),
        ((torch.rand(3, 2), torch.rand(4, 2), torch.ones(3, 3)), {}, r"\(N, M\) = \(3, 4\)"),
        ((torch.rand(3, 2), torch.rand(3, 2), torch.full((3, 3), 2.0)), {}, r"\[0, 1\]"),
        ((torch.rand(3, 2), torch.rand(3, 2), torch.full((3, 3), float("nan"))), {}, r"\[0, 1\]"),
        ((torch.rand(3, 2), torch.rand(3, 2), torch.ones(3, 3)), {"eps": 0.0}, "eps"),
        ((torch.rand(3, 2), torch.rand(3, 2), torch.ones(3, 3)), {"eps": 0.7}, "eps"),
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
        ((0, -1, 1.0), "rampup_steps must be >= 0"),
        ((0, 10, -1.0), "max_weight must be >= 0"),
        ((float("nan"), 10, 1.0), "step must be a finite"),
        ((0, float("inf"), 1.0), "rampup_steps must be a finite"),
        ((0, 10, "1"), "max_weight must be a finite"),
    ],
)
def test_rampup_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        rampup_weight(*args)
