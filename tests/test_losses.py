"""Property tests of the pure loss functions (hypothesis), against direct float64 references."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from skdeepcluster.losses import info_nce, marginal_entropy, nt_xent, scan_loss, self_label_loss

FLOATS = st.floats(-8.0, 8.0, allow_nan=False, width=32)


@st.composite
def logit_pairs(draw, min_k=2, max_k=6, max_n=12):
    """Anchor and neighbour logits of the same shape (N, K), and an entropy weight."""
    n = draw(st.integers(1, max_n))
    k = draw(st.integers(min_k, max_k))
    a = draw(arrays(np.float32, (n, k), elements=FLOATS))
    b = draw(arrays(np.float32, (n, k), elements=FLOATS))
    weight = draw(st.floats(0.0, 10.0))
    return torch.from_numpy(a), torch.from_numpy(b), weight


def scan_reference(anchor, neighbor, weight):
    """SCAN eq. 2 written directly, in float64 with a plain softmax."""
    p_a = torch.softmax(anchor.double(), dim=1)
    p_n = torch.softmax(neighbor.double(), dim=1)
    consistency = -torch.log((p_a * p_n).sum(1)).mean()
    mean_p = p_a.mean(0)
    entropy = -(mean_p * torch.log(mean_p)).sum()
    return consistency - weight * entropy, consistency, entropy


def assert_close(actual, expected, rtol=1e-4, atol=1e-5):
    torch.testing.assert_close(
        torch.as_tensor(actual).double(), torch.as_tensor(expected).double(), rtol=rtol, atol=atol
    )


# ----------------------------------------------------------------------------- SCAN


@given(logit_pairs(), st.randoms(use_true_random=False))
def test_scan_loss_invariant_to_cluster_permutation(pair, rnd):
    anchor, neighbor, weight = pair
    perm = list(range(anchor.shape[1]))
    rnd.shuffle(perm)
    before = scan_loss(anchor, neighbor, weight)
    after = scan_loss(anchor[:, perm], neighbor[:, perm], weight)
    for x, y in zip(before, after):
        assert_close(x, y)


@given(logit_pairs(), st.randoms(use_true_random=False))
def test_scan_loss_invariant_to_batch_permutation(pair, rnd):
    anchor, neighbor, weight = pair
    perm = list(range(anchor.shape[0]))
    rnd.shuffle(perm)
    before = scan_loss(anchor, neighbor, weight)
    after = scan_loss(anchor[perm], neighbor[perm], weight)
    for x, y in zip(before, after):
        assert_close(x, y)


@given(logit_pairs(), st.data())
def test_scan_consistency_is_log_k_against_uniform_neighbours(pair, data):
    """A neighbour with equal logits (p = 1/K) agrees with any anchor with probability
    <p_anchor, 1/K> = 1/K, so the consistency term is exactly log K whatever the anchors."""
    anchor, _, weight = pair
    n, k = anchor.shape
    level = torch.tensor(data.draw(st.lists(FLOATS, min_size=n, max_size=n)))
    neighbor = level[:, None].expand(n, k).contiguous()
    result = scan_loss(anchor, neighbor, weight)
    assert_close(result.consistency, math.log(k))
    expected_entropy = scan_reference(anchor, neighbor, weight)[2]
    assert_close(result.total, math.log(k) - weight * expected_entropy)


@given(st.integers(1, 10), st.integers(2, 6), st.floats(0.0, 10.0))
def test_scan_loss_of_uniform_predictions(n, k, weight):
    """All logits equal: consistency log K, entropy log K, total (1 - lambda) log K."""
    logits = torch.zeros(n, k)
    result = scan_loss(logits, logits, weight)
    assert_close(result.consistency, math.log(k))
    assert_close(result.entropy, math.log(k))
    assert_close(result.total, (1 - weight) * math.log(k))


@given(logit_pairs())
def test_scan_loss_matches_float64_reference(pair):
    anchor, neighbor, weight = pair
    for actual, expected in zip(
        scan_loss(anchor, neighbor, weight), scan_reference(anchor, neighbor, weight)
    ):
        assert_close(actual, expected)


@given(logit_pairs())
def test_scan_entropy_is_marginal_entropy_of_the_anchors(pair):
    """scan_loss's entropy term is marginal_entropy of the anchors' softmax, bit for bit."""
    anchor, neighbor, weight = pair
    entropy = scan_loss(anchor, neighbor, weight).entropy
    assert torch.equal(entropy, marginal_entropy(torch.log_softmax(anchor.float(), dim=1).exp()))
    assert_close(entropy, scan_reference(anchor, neighbor, weight)[2])


@given(st.lists(st.integers(0, 4), min_size=1, max_size=10), st.integers(5, 8))
def test_scan_consistency_is_zero_for_identical_confident_one_hots(labels, k):
    logits = 50.0 * F.one_hot(torch.tensor(labels), k).float()
    result = scan_loss(logits, logits.clone(), 5.0)
    assert result.consistency.item() == pytest.approx(0.0, abs=1e-6)
    # Each sample's own prediction is then as good as it gets: any disagreement costs more.
    other = scan_loss(logits, logits.roll(1, dims=1), 5.0)
    assert other.consistency.item() > 10.0


def test_scan_entropy_is_log_k_for_balanced_assignments():
    k = 4
    logits = 30.0 * torch.eye(k).repeat(3, 1)  # every cluster used equally often
    assert scan_loss(logits, logits, 1.0).entropy.item() == pytest.approx(math.log(k), abs=1e-5)
    collapsed = 30.0 * F.one_hot(torch.zeros(12, dtype=torch.long), k).float()
    assert scan_loss(collapsed, collapsed, 1.0).entropy.item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_scan_loss_finite_for_extreme_logits(scale):
    k = 3
    anchor = (scale * F.one_hot(torch.tensor([0, 1, 2, 0]), k).float()).requires_grad_()
    neighbor = (scale * F.one_hot(torch.tensor([1, 2, 0, 0]), k).float()).requires_grad_()
    result = scan_loss(anchor, neighbor, 5.0)
    assert all(torch.isfinite(term) for term in result)
    result.total.backward()
    assert torch.isfinite(anchor.grad).all() and torch.isfinite(neighbor.grad).all()


def test_scan_loss_shape_mismatch():
    with pytest.raises(ValueError, match="must both be"):
        scan_loss(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="must both be"):
        scan_loss(torch.zeros(4), torch.zeros(4))


# ----------------------------------------------------------------------------- NT-Xent


@st.composite
def projection_pairs(draw, max_n=6, max_d=5):
    n = draw(st.integers(1, max_n))
    d = draw(st.integers(1, max_d))
    z_a = draw(arrays(np.float32, (n, d), elements=FLOATS))
    z_b = draw(arrays(np.float32, (n, d), elements=FLOATS))
    z = np.concatenate([z_a, z_b])
    assume(np.linalg.norm(z, axis=1).min() > 1e-2)  # cosine similarity needs non-zero rows
    temperature = draw(st.floats(0.1, 2.0))
    return torch.from_numpy(z_a), torch.from_numpy(z_b), temperature


def nt_xent_reference(z_a, z_b, temperature):
    """NT-Xent by the definition: a loop over the 2N anchors, float64."""
    z = torch.cat([z_a, z_b]).double()
    n = z_a.shape[0]
    total = 0.0
    for i in range(2 * n):
        j = i + n if i < n else i - n
        sim = [float(z[i] @ z[k] / (z[i].norm() * z[k].norm())) / temperature for k in range(2 * n)]
        denominator = sum(math.exp(s) for k, s in enumerate(sim) if k != i)
        total += -math.log(math.exp(sim[j]) / denominator)
    return total / (2 * n)


@given(projection_pairs())
def test_nt_xent_matches_loop_reference(pair):
    z_a, z_b, t = pair
    assert nt_xent(z_a, z_b, t).item() == pytest.approx(
        nt_xent_reference(z_a, z_b, t), rel=1e-4, abs=1e-4
    )


@given(projection_pairs(), st.randoms(use_true_random=False))
def test_nt_xent_invariant_to_pair_permutation(pair, rnd):
    z_a, z_b, t = pair
    perm = list(range(z_a.shape[0]))
    rnd.shuffle(perm)
    assert_close(nt_xent(z_a[perm], z_b[perm], t), nt_xent(z_a, z_b, t))


@given(projection_pairs(), st.floats(1e-2, 1e2))
def test_nt_xent_invariant_to_positive_rescaling(pair, scale):
    z_a, z_b, t = pair
    # one global factor, and a different positive factor per row: cosines do not change
    row_scale = torch.linspace(0.5, 3.0, z_a.shape[0]).unsqueeze(1)
    assert_close(nt_xent(scale * z_a, scale * z_b, t), nt_xent(z_a, z_b, t))
    assert_close(nt_xent(row_scale * z_a, z_b / row_scale, t), nt_xent(z_a, z_b, t))


@given(
    st.integers(1, 8),
    arrays(np.float32, (4,), elements=st.floats(0.5, 5.0, width=32)),
    st.floats(0.1, 2.0),
)
def test_nt_xent_identical_projections_give_log_2n_minus_1(n, row, t):
    z = torch.from_numpy(row).repeat(n, 1)
    assert nt_xent(z, z.clone(), t).item() == pytest.approx(math.log(2 * n - 1), abs=1e-5)


@given(st.integers(1, 6), st.integers(0, 3), st.floats(0.1, 2.0), st.floats(0.1, 10.0))
def test_nt_xent_orthogonal_pairs_closed_form(n, extra_dims, t, scale):
    """Pair i is the i-th basis vector in both views: each anchor has its positive at cosine 1
    and 2N - 2 negatives at cosine 0, so the loss is log(1 + (2N - 2) exp(-1 / t))."""
    z = scale * torch.eye(n, n + extra_dims)
    expected = math.log1p((2 * n - 2) * math.exp(-1 / t))
    assert nt_xent(z, z.clone(), t).item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_nt_xent_rejects_bad_input():
    with pytest.raises(ValueError, match="must both be"):
        nt_xent(torch.zeros(3, 2), torch.zeros(2, 2))
    for bad in (0.0, -1.0, float("nan"), float("inf"), "0.5", True, None):
        with pytest.raises(ValueError, match=r"temperature must be a number in \(0.0, inf\)"):
            nt_xent(torch.ones(3, 2), torch.ones(3, 2), temperature=bad)


# ----------------------------------------------------------------------------- self-labelling


def test_self_label_loss_zero_with_graph_when_nothing_is_confident():
    strong = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    weak = torch.full((6, 3), 1 / 3)
    loss = self_label_loss(strong, weak, threshold=0.5)
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()  # backward works and contributes nothing
    assert torch.equal(strong.grad, torch.zeros_like(strong))


@given(st.integers(1, 4), st.integers(2, 5), st.integers(0, 2**16))
def test_self_label_loss_is_plain_cross_entropy_for_balanced_classes(per_class, k, seed):
    gen = torch.Generator().manual_seed(seed)
    n_present = max(1, k - 1)  # one class may be absent: balance among the present ones counts
    targets = torch.arange(n_present).repeat(per_class)
    confident = F.one_hot(targets, k).float() * 0.98 + 0.02 / k
    # unconfident rows (max prob 0.5) are ignored
    unconfident = torch.full((3, k), 0.5 / (k - 1))
    unconfident[:, 0] = 0.5
    weak = torch.cat([confident, unconfident])
    strong = torch.randn(len(weak), k, generator=gen)
    loss = self_label_loss(strong, weak, threshold=0.9)
    expected = F.cross_entropy(strong[: len(targets)], targets)
    assert_close(loss, expected)


def test_self_label_loss_balances_classes():
    gen = torch.Generator().manual_seed(1)
    targets = torch.tensor([0, 0, 0, 1])
    weak = F.one_hot(targets, 2).float()
    strong = torch.randn(4, 2, generator=gen, dtype=torch.float64)
    per_sample = F.cross_entropy(strong, targets, reduction="none")
    weights = torch.tensor([1 / 3, 1 / 3, 1 / 3, 1.0], dtype=torch.float64)  # 1 / class count
    expected = (weights * per_sample).sum() / weights.sum()
    assert_close(self_label_loss(strong.float(), weak, threshold=0.5), expected)


def test_self_label_loss_shape_mismatch():
    with pytest.raises(ValueError, match="must both be"):
        self_label_loss(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="must both be"):
        self_label_loss(torch.zeros(4, 3), torch.zeros(5, 3))


# ----------------------------------------------------------------------------- marginal entropy


@st.composite
def assignment_batches(draw, max_n=12, max_k=6):
    """Soft assignments (N, K), from nearly uniform to nearly one-hot rows."""
    n = draw(st.integers(1, max_n))
    k = draw(st.integers(1, max_k))
    logits = torch.from_numpy(draw(arrays(np.float32, (n, k), elements=FLOATS)))
    sharpness = draw(st.sampled_from([0.1, 1.0, 10.0]))
    return torch.softmax(sharpness * logits, dim=1)


def marginal_entropy_reference(probs):
    """-sum_k pbar_k log pbar_k of the float64 column means, with 0 log 0 = 0."""
    pbar = probs.double().mean(0).tolist()
    return -math.fsum(p * math.log(p) for p in pbar if p > 0)


@given(assignment_batches())
def test_marginal_entropy_matches_float64_reference(probs):
    entropy = marginal_entropy(probs)
    assert entropy.shape == () and entropy.dtype == torch.float32
    assert_close(entropy, marginal_entropy_reference(probs))


@given(st.integers(1, 6), st.integers(1, 4), st.randoms(use_true_random=False))
def test_marginal_entropy_is_log_k_for_a_balanced_batch(k, per_cluster, rnd):
    rows = list(range(k)) * per_cluster
    rnd.shuffle(rows)
    one_hot = F.one_hot(torch.tensor(rows), k).float()  # every cluster used equally often
    assert_close(marginal_entropy(one_hot), math.log(k))
    uniform = torch.full((len(rows), k), 1.0 / k)  # every row spread evenly
    assert_close(marginal_entropy(uniform), math.log(k))


@given(st.integers(1, 12), st.integers(1, 6), st.data())
def test_marginal_entropy_is_zero_for_a_collapsed_batch(n, k, data):
    cluster = data.draw(st.integers(0, k - 1))
    collapsed = F.one_hot(torch.full((n,), cluster), k).float()
    assert marginal_entropy(collapsed).item() == pytest.approx(0.0, abs=1e-7)


@given(assignment_batches(), st.data())
def test_marginal_entropy_invariant_to_permuting_rows_and_columns(probs, data):
    n, k = probs.shape
    rows = data.draw(st.permutations(range(n)))
    columns = data.draw(st.permutations(range(k)))
    entropy = marginal_entropy(probs)
    assert_close(marginal_entropy(probs[rows]), entropy, rtol=1e-6, atol=1e-6)
    assert_close(marginal_entropy(probs[:, columns]), entropy, rtol=1e-6, atol=1e-6)


@given(assignment_batches())
def test_marginal_entropy_bounds(probs):
    k = probs.shape[1]
    entropy = marginal_entropy(probs).item()
    assert -1e-6 <= entropy <= math.log(k) + 1e-6


def test_marginal_entropy_dtypes_gradient_and_bad_input():
    probs = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]], requires_grad=True)  # empty column
    entropy = marginal_entropy(probs)
    (grad,) = torch.autograd.grad(entropy, probs)
    assert torch.isfinite(grad).all()
    assert marginal_entropy(probs.detach().double()).dtype == torch.float64
    assert marginal_entropy(probs.detach().bfloat16()).dtype == torch.float32
    with pytest.raises(ValueError, match="probs must be a 2-D"):
        marginal_entropy(torch.ones(3))
    with pytest.raises(ValueError, match="floating"):
        marginal_entropy(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 1 row"):
        marginal_entropy(torch.ones(0, 3))


# ----------------------------------------------------------------------------- InfoNCE

SIMILARITIES = st.sampled_from(["cosine", "dot"])
SMALL = st.floats(-3.0, 3.0, allow_nan=False, width=32)


@st.composite
def anchor_candidate_pairs(draw, max_n=8, max_d=5):
    n = draw(st.integers(1, max_n))
    d = draw(st.integers(1, max_d))
    anchors = draw(arrays(np.float32, (n, d), elements=SMALL))
    candidates = draw(arrays(np.float32, (n, d), elements=SMALL))
    rows = np.concatenate([anchors, candidates])
    assume(np.linalg.norm(rows, axis=1).min() > 1e-1)  # cosine needs non-zero rows
    temperature = draw(st.floats(0.1, 2.0))
    return torch.from_numpy(anchors), torch.from_numpy(candidates), temperature


def info_nce_reference(anchors, candidates, temperature, similarity):
    """InfoNCE by the definition: a loop over anchors and candidates, float64."""
    a, c = anchors.double(), candidates.double()
    n = a.shape[0]

    def sim(u, v):
        dot = float(u @ v)
        return dot / (float(u.norm()) * float(v.norm())) if similarity == "cosine" else dot

    total = 0.0
    for i in range(n):
        logits = [sim(a[i], c[j]) / temperature for j in range(n)]
        top = max(logits)
        log_denominator = top + math.log(math.fsum(math.exp(x - top) for x in logits))
        total -= logits[i] - log_denominator
    return total / n


@given(anchor_candidate_pairs(), SIMILARITIES)
def test_info_nce_matches_loop_reference(pair, similarity):
    anchors, candidates, t = pair
    loss = info_nce(anchors, candidates, t, similarity)
    assert loss.shape == () and loss.dtype == torch.float32
    expected = info_nce_reference(anchors, candidates, t, similarity)
    assert loss.item() == pytest.approx(expected, rel=1e-4, abs=1e-4)


@given(anchor_candidate_pairs(), SIMILARITIES, st.data())
def test_info_nce_invariant_to_permuting_the_pairs(pair, similarity, data):
    anchors, candidates, t = pair
    rows = data.draw(st.permutations(range(anchors.shape[0])))
    assert_close(
        info_nce(anchors[rows], candidates[rows], t, similarity),
        info_nce(anchors, candidates, t, similarity),
    )


@given(anchor_candidate_pairs(), SIMILARITIES)
def test_info_nce_identical_candidates_give_log_n(pair, similarity):
    """Every candidate equal: each anchor's N logits are equal, whatever the anchor."""
    anchors, candidates, t = pair
    n = anchors.shape[0]
    same = candidates[:1].expand(n, -1).contiguous()
    assert info_nce(anchors, same, t, similarity).item() == pytest.approx(math.log(n), abs=1e-5)
    rows = anchors[:1].expand(n, -1).contiguous()  # all rows of both inputs identical
    assert info_nce(rows, rows.clone(), t, similarity).item() == pytest.approx(
        math.log(n), abs=1e-5
    )


@given(st.integers(1, 8), st.integers(0, 3), st.floats(0.05, 5.0), st.data())
def test_info_nce_orthogonal_rows_closed_form(n, extra_dims, t, data):
    """Anchors and candidates the same N orthogonal rows (any positive lengths) under cosine:
    positive at cosine 1, N - 1 negatives at 0, so the loss is log(1 + (N - 1) exp(-1 / t))."""
    lengths = data.draw(st.lists(st.floats(0.1, 10.0), min_size=n, max_size=n))
    basis = torch.eye(n, n + extra_dims)
    anchors = torch.tensor(lengths)[:, None] * basis
    expected = math.log1p((n - 1) * math.exp(-1 / t))
    assert info_nce(anchors, basis, t).item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


@given(anchor_candidate_pairs(), st.floats(1e-2, 1e2), st.data())
def test_info_nce_cosine_ignores_positive_rescaling(pair, scale, data):
    anchors, candidates, t = pair
    n = anchors.shape[0]
    row_scale = torch.tensor(data.draw(st.lists(st.floats(0.1, 10.0), min_size=n, max_size=n)))
    loss = info_nce(anchors, candidates, t)
    assert_close(info_nce(anchors, scale * candidates, t), loss)
    assert_close(info_nce(anchors, row_scale[:, None] * candidates, t), loss)
    assert_close(info_nce(row_scale[:, None] * anchors, candidates, t), loss)


@given(anchor_candidate_pairs(), st.floats(0.25, 4.0))
def test_info_nce_dot_scaling_is_a_temperature(pair, scale):
    """Under "dot", (c a) . (c b) / t = a . b / (t / c^2)."""
    anchors, candidates, t = pair
    assert_close(
        info_nce(scale * anchors, scale * candidates, t, "dot"),
        info_nce(anchors, candidates, t / scale**2, "dot"),
        rtol=1e-4,
        atol=1e-4,
    )


def test_info_nce_is_one_directional():
    """Swapping the roles changes the value: candidates, not anchors, supply the negatives."""
    anchors = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])  # one anchor direction
    candidates = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # three candidate ones
    forward = info_nce(anchors, candidates, 0.5).item()
    # every anchor sees the logits (2, 0, -2) and anchor i picks entry i, so the loss is their
    # logsumexp minus their mean (0); reversed, each row of logits is constant: log 3
    assert forward == pytest.approx(math.log(math.exp(2) + 1 + math.exp(-2)), rel=1e-6)
    assert info_nce(candidates, anchors, 0.5).item() == pytest.approx(math.log(3), rel=1e-6)
    assert forward == pytest.approx(info_nce_reference(anchors, candidates, 0.5, "cosine"))
    assert forward != pytest.approx(info_nce(candidates, anchors, 0.5).item(), abs=1e-3)


def test_info_nce_half_precision_gradients_and_extremes():
    gen = torch.Generator().manual_seed(0)
    anchors = torch.randn(6, 4, generator=gen)
    candidates = torch.randn(6, 4, generator=gen)
    for half in (torch.bfloat16, torch.float16):
        a, c = anchors.to(half), candidates.to(half)
        loss = info_nce(a, c, 0.5)
        assert loss.dtype == torch.float32
        assert_close(loss, info_nce(a.float(), c.float(), 0.5), rtol=1e-6, atol=1e-6)
    assert info_nce(anchors.double(), candidates.double(), 0.5).dtype == torch.float64
    # large dot products and a small temperature: the log-softmax keeps it finite
    a = (1e3 * anchors).requires_grad_()
    c = (1e3 * candidates).requires_grad_()
    loss = info_nce(a, c, 0.01, "dot")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(a.grad).all() and torch.isfinite(c.grad).all()
    assert a.grad.abs().sum() > 0 and c.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.ones(3, 2), torch.ones(4, 2), 0.5), "anchors and candidates must both be"),
        ((torch.ones(3, 2), torch.ones(3, 3), 0.5), "anchors and candidates must both be"),
        ((torch.ones(3), torch.ones(3), 0.5), "anchors must be a 2-D"),
        ((torch.ones(3, 2), torch.ones(3, 2, dtype=torch.long), 0.5), "floating"),
        ((torch.ones(3, 2), [[1.0, 1.0]] * 3, 0.5), "torch.Tensor"),
        ((torch.ones(3, 2), torch.ones(3, 2), 0.0), r"temperature must be a number in \(0.0"),
        ((torch.ones(3, 2), torch.ones(3, 2), -1.0), r"temperature must be a number in \(0.0"),
        ((torch.ones(3, 2), torch.ones(3, 2), float("nan")), "temperature"),
        ((torch.ones(3, 2), torch.ones(3, 2), True), "temperature"),
        ((torch.ones(3, 2), torch.ones(3, 2), 0.5, "l2"), "one of 'cosine', 'dot'; got 'l2'"),
        ((torch.ones(3, 2), torch.ones(3, 2), 0.5, None), "one of 'cosine', 'dot'; got None"),
    ],
)
def test_info_nce_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        info_nce(*args)
