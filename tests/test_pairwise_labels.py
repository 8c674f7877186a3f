"""Property tests of the LSD-C pairwise labelling (skdeepcluster.pairwise_labels)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skdeepcluster.pairwise_labels import (
    calibrate_similarity,
    cosine_adjacency,
    knn_adjacency,
    l2_adjacency,
    pairwise_adjacency,
    sne_adjacency,
    sne_joint_probabilities,
)

torch.set_num_threads(1)
SETTINGS = settings(max_examples=30, deadline=None)


@st.composite
def features(draw, min_b=1, max_b=9):
    """Small integer-valued feature batches: exact ties and zero rows do occur."""
    b = draw(st.integers(min_b, max_b))
    d = draw(st.integers(1, 4))
    values = draw(st.lists(st.integers(-3, 3), min_size=b * d, max_size=b * d))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    return torch.tensor(values, dtype=dtype).reshape(b, d)


def ref_cosine(f):
    x = f.double().numpy()
    n = np.linalg.norm(x, axis=1)
    n[n == 0] = 1.0
    x = x / n[:, None]
    return x @ x.T


def ref_sqdist(f, normalize=False):
    if normalize:  # documented as 2 - 2 cos, where a zero vector has cosine 0 to every other
        return 2.0 - 2.0 * ref_cosine(f)
    x = f.double().numpy()
    return ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)


def ref_sne(f, temperature):
    """LSD-C eqs. (1)-(2) in float64: p_{j|i} from exp(-||f_i - f_j||^2 / T^2) over k != i, and
    p_ij = (p_{j|i} + p_{i|j}) / 2. Each row is shifted by its nearest distance before exp (the
    shift cancels in p_{j|i}), so small temperatures do not underflow the partition function."""
    d = ref_sqdist(f)
    b = d.shape[0]
    cond = np.zeros((b, b))
    for i in range(b):
        others = [k for k in range(b) if k != i]
        nearest = min(d[i, k] for k in others)
        weight = {k: math.exp(-(d[i, k] - nearest) / temperature**2) for k in others}
        z = math.fsum(weight.values())
        for j in others:
            cond[i, j] = weight[j] / z
    return (cond + cond.T) / 2


def ref_sne_harmonic(f, temperature):
    """The right-hand form of eq. (2): exp(-||f_i - f_j||^2 / T^2) / H(Z_i, Z_j), with Z_i the
    partition function of eq. (1) and H the harmonic mean (no underflow guard: moderate T only)."""
    d = ref_sqdist(f)
    b = d.shape[0]
    z = [
        math.fsum(math.exp(-d[i, k] / temperature**2) for k in range(b) if k != i) for i in range(b)
    ]
    p = np.zeros((b, b))
    for i in range(b):
        for j in range(b):
            if i != j:
                harmonic = 2 * z[i] * z[j] / (z[i] + z[j])
                p[i, j] = math.exp(-d[i, j] / temperature**2) / harmonic
    return p


def assert_adjacency(a, f):
    b = f.shape[0]
    assert a.shape == (b, b)
    assert a.dtype == f.dtype and a.device == f.device
    assert not a.requires_grad
    assert torch.equal(a, a.T)
    assert torch.all(a.diagonal() == 1)
    assert torch.all((a == 0) | (a == 1))


def far_from(values, tau, tol):
    """Mask of entries not within tol of the threshold (where rounding may decide)."""
    return torch.as_tensor(np.abs(values - tau) > tol)


# --------------------------------------------------------------------------
# structure: symmetric, 0/1, ones on the diagonal, for every criterion
# --------------------------------------------------------------------------

PARAMS = {
    "cosine": st.fixed_dictionaries({"threshold": st.floats(-1, 1)}),
    "l2": st.fixed_dictionaries({"threshold": st.floats(0, 50), "normalize": st.booleans()}),
    "sne": st.fixed_dictionaries(
        {
            "threshold": st.floats(0, 1),
            "temperature": st.floats(0.01, 20),
            "normalize": st.booleans(),
        }
    ),
    "knn": st.fixed_dictionaries({"n_neighbors": st.integers(1, 10)}),
}


@pytest.mark.parametrize("name", list(PARAMS))
@SETTINGS
@given(data=st.data())
def test_structure(name, data):
    f = data.draw(features(min_b=2 if name == "sne" else 1))
    params = data.draw(PARAMS[name])
    a = pairwise_adjacency(f.requires_grad_(), name, **params)
    assert_adjacency(a, f)


@SETTINGS
@given(f=features(), tau=st.floats(-1, 1))
def test_cosine_matches_reference(f, tau):
    a = cosine_adjacency(f, tau).numpy()
    cos = ref_cosine(f)
    expected = cos > tau
    np.fill_diagonal(expected, True)
    ok = np.abs(cos - tau) > 1e-5
    np.fill_diagonal(ok, True)
    assert np.array_equal(a[ok], expected[ok])


@SETTINGS
@given(f=features(), tau=st.floats(0, 40), normalize=st.booleans())
def test_l2_matches_reference(f, tau, normalize):
    a = l2_adjacency(f, tau, normalize=normalize).numpy()
    d = ref_sqdist(f, normalize)
    expected = d < tau
    np.fill_diagonal(expected, True)
    ok = np.abs(d - tau) > 1e-4
    np.fill_diagonal(ok, True)
    assert np.array_equal(a[ok], expected[ok])


@SETTINGS
@given(f=features(min_b=2), temperature=st.floats(0.05, 20))
def test_sne_probabilities_match_reference(f, temperature):
    p = sne_joint_probabilities(f, temperature)
    # float32 logits -d / T^2 carry an absolute error of about eps * max(d) / T^2, which the
    # exponential turns into a relative error of the probabilities (3.6e-5 at T = 0.055, d = 8)
    spread = float(ref_sqdist(f, False).max()) / temperature**2
    rtol = 1e-4 + 8 * float(np.finfo(np.float32).eps) * spread
    np.testing.assert_allclose(p.double().numpy(), ref_sne(f, temperature), rtol=rtol, atol=1e-7)


@SETTINGS
@given(f=features(min_b=2), temperature=st.floats(3, 20))
def test_sne_probabilities_are_eq_2_harmonic_mean_form(f, temperature):
    """Squared distances of these features are at most 144, so exp(-d / T^2) >= exp(-16)."""
    p = sne_joint_probabilities(f.double(), temperature)
    np.testing.assert_allclose(p.numpy(), ref_sne_harmonic(f, temperature), rtol=1e-9, atol=1e-15)


@SETTINGS
@given(f=features(min_b=2), temperature=st.floats(0.01, 20), normalize=st.booleans())
def test_sne_probability_bounds(f, temperature, normalize):
    """p_ij = p_ji, p_ii = 0, 0 <= p_ij <= 1 and, each p_{.|i} summing to 1, sum_ij p_ij = B."""
    p = sne_joint_probabilities(f, temperature, normalize=normalize)
    b = f.shape[0]
    assert p.dtype == torch.promote_types(f.dtype, torch.float32)
    assert torch.equal(p, p.T)
    assert torch.all(p.diagonal() == 0)
    assert torch.all((p >= 0) & (p <= 1 + 1e-6))
    assert p.sum().item() == pytest.approx(b, rel=1e-5)


@SETTINGS
@given(f=features(min_b=2), temperature=st.floats(0.1, 20), scale=st.floats(0.05, 20))
def test_sne_scaling_features_is_scaling_the_temperature(f, temperature, scale):
    """exp(-||c f_i - c f_j||^2 / (c T)^2) = exp(-||f_i - f_j||^2 / T^2): T is a length."""
    f = f.double()
    scaled = sne_joint_probabilities(scale * f, scale * temperature)
    np.testing.assert_allclose(
        scaled.numpy(), sne_joint_probabilities(f, temperature).numpy(), rtol=1e-7, atol=1e-12
    )


def test_sne_is_numerically_stable_for_small_temperature():
    f = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 30.0], [11.0, 0.0]])
    p = sne_joint_probabilities(f, temperature=1e-3)  # T^2 = 1e-6 against distances >= 1
    assert torch.isfinite(p).all()
    assert p.sum().item() == pytest.approx(4, abs=1e-5)
    # each point puts all its conditional mass on its nearest neighbour: 1 and 3 are mutual
    # nearest neighbours (p = 1), 0 and 2 each point one way (p = 1/2), the rest get 0
    assert p[1, 3].item() == pytest.approx(1.0)
    assert p[0, 1].item() == pytest.approx(0.5) and p[0, 2].item() == pytest.approx(0.5)
    assert p[2, 3].item() == 0 and p[1, 2].item() == 0 and p[0, 3].item() == 0
    for tau, similar in [(0.0, 3), (0.4, 3), (0.5, 1), (0.99, 1), (1.0, 0)]:
        a = sne_adjacency(f, threshold=tau, temperature=1e-3)
        assert (a.sum().item() - 4) / 2 == similar  # pairs labelled similar off the diagonal
    a = sne_adjacency(f, threshold=0.4, temperature=1e-3)
    assert a[1, 3] == 1 and a[0, 1] == 1 and a[0, 2] == 1  # mutual or one-way nearest
    assert a[2, 3] == 0 and a[1, 2] == 0 and a[0, 3] == 0


@SETTINGS
@given(f=features(), tau=st.floats(0, 8))
def test_l2_normalized_equals_cosine(f, tau):
    a = l2_adjacency(f, tau, normalize=True)
    if tau > 4:  # beyond the largest squared distance on the unit sphere
        assert torch.all(a == 1)
        return
    c = cosine_adjacency(f, 1 - tau / 2)
    ok = far_from(ref_cosine(f), 1 - tau / 2, 1e-5)
    assert torch.equal(a[ok], c[ok])


# --------------------------------------------------------------------------
# monotonicity
# --------------------------------------------------------------------------


@SETTINGS
@given(f=features(), t1=st.floats(-1, 1), t2=st.floats(-1, 1))
def test_cosine_larger_threshold_gives_subset(f, t1, t2):
    lo, hi = sorted((t1, t2))
    assert torch.all(cosine_adjacency(f, hi) <= cosine_adjacency(f, lo))


@SETTINGS
@given(f=features(), t1=st.floats(0, 50), t2=st.floats(0, 50), normalize=st.booleans())
def test_l2_larger_threshold_gives_superset(f, t1, t2, normalize):
    lo, hi = sorted((t1, t2))
    assert torch.all(
        l2_adjacency(f, lo, normalize=normalize) <= l2_adjacency(f, hi, normalize=normalize)
    )


@SETTINGS
@given(f=features(min_b=2), t1=st.floats(0, 1), t2=st.floats(0, 1), temperature=st.floats(0.01, 20))
def test_sne_larger_threshold_gives_subset(f, t1, t2, temperature):
    lo, hi = sorted((t1, t2))
    assert torch.all(sne_adjacency(f, hi, temperature) <= sne_adjacency(f, lo, temperature))


@SETTINGS
@given(f=features(), k1=st.integers(1, 10), k2=st.integers(1, 10))
def test_knn_larger_k_gives_superset(f, k1, k2):
    lo, hi = sorted((k1, k2))
    assert torch.all(knn_adjacency(f, lo) <= knn_adjacency(f, hi))


@SETTINGS
@given(f=features(), k=st.integers(1, 10))
def test_knn_row_counts(f, k):
    a = knn_adjacency(f, k)
    b = f.shape[0]
    off_diagonal = a.sum(dim=1) - 1
    assert torch.all(off_diagonal >= min(k, b - 1))
    if k >= b - 1:
        assert torch.all(a == 1)


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), b=st.integers(2, 12), k=st.integers(1, 4))
def test_knn_matches_reference_on_continuous_features(seed, b, k):
    f = torch.randn(b, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    a = knn_adjacency(f, k).numpy()
    cos = ref_cosine(f)
    np.fill_diagonal(cos, -np.inf)
    near = np.zeros((b, b), dtype=bool)
    for i in range(b):
        for j in np.argsort(-cos[i])[: min(k, b - 1)]:
            near[i, j] = True
    expected = near | near.T
    np.fill_diagonal(expected, True)
    assert np.array_equal(a, expected)


# --------------------------------------------------------------------------
# invariances
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PARAMS))
@SETTINGS
@given(data=st.data())
def test_batch_permutation_permutes_adjacency(name, data):
    f = data.draw(features(min_b=2 if name == "sne" else 1))
    params = data.draw(PARAMS[name])
    perm = torch.tensor(data.draw(st.permutations(range(f.shape[0]))), dtype=torch.int64)
    a = pairwise_adjacency(f, name, **params)
    a_perm = pairwise_adjacency(f[perm], name, **params)
    expected = a[perm][:, perm]
    if name == "cosine":
        ok = far_from(ref_cosine(f), params["threshold"], 1e-5)
    elif name == "l2":
        ok = far_from(ref_sqdist(f, params["normalize"]), params["threshold"], 1e-4)
    elif name == "sne":
        p = (
            sne_joint_probabilities(f, params["temperature"], normalize=params["normalize"])
            .double()
            .numpy()
        )
        ok = far_from(p, params["threshold"], 1e-5 * max(params["threshold"], 1e-3))
    else:
        ok = torch.ones_like(a, dtype=torch.bool)
    ok = ok[perm][:, perm]
    assert torch.equal(a_perm[ok], expected[ok])


@SETTINGS
@given(f=features(), tau=st.floats(-1, 1), data=st.data())
def test_cosine_invariant_to_positive_rescaling(f, tau, data):
    scales = data.draw(st.lists(st.floats(0.01, 100), min_size=f.shape[0], max_size=f.shape[0]))
    g = f * torch.tensor(scales, dtype=f.dtype)[:, None]
    ok = far_from(ref_cosine(f), tau, 1e-5)
    assert torch.equal(cosine_adjacency(g, tau)[ok], cosine_adjacency(f, tau)[ok])


@SETTINGS
@given(f=features(), tau=st.floats(-1, 1), data=st.data())
def test_centred_cosine_ignores_a_common_offset(f, tau, data):
    """centre=True thresholds cos(f_i - mean, f_j - mean): adding one vector to every feature
    changes nothing, and it equals the plain criterion on features centred by hand."""
    offset = torch.tensor(
        data.draw(st.lists(st.floats(-50, 50), min_size=f.shape[1], max_size=f.shape[1])),
        dtype=f.dtype,
    )
    centred = f - f.mean(0, keepdim=True)
    ok = far_from(ref_cosine(centred), tau, 1e-4)
    a = cosine_adjacency(f, tau, center=True)
    assert torch.equal(a[ok], cosine_adjacency(centred, tau)[ok])
    # A row equal to the mean centres to the zero vector, whose cosine is 0 by convention; after
    # an offset, rounding leaves it a ~1e-7 vector pointing anywhere. Its pairs are left out of the
    # offset comparison (integer features: any other centred row has norm >= 1/B).
    moving = centred.norm(dim=1) > 1e-3
    ok = ok & moving[:, None] & moving[None, :]
    assert torch.equal(cosine_adjacency(f + offset, tau, center=True)[ok], a[ok])


def test_centring_spreads_non_negative_features():
    """Non-negative features with a shared component: raw cosines crowd near 1, centred ones do
    not (the MNIST collapse that made LSDC centre them)."""
    g = torch.Generator().manual_seed(0)
    f = 5.0 + torch.rand(64, 16, generator=g)
    assert cosine_adjacency(f, 0.9).mean() == 1.0
    assert cosine_adjacency(f, 0.9, center=True).mean() < 0.1


def test_zero_features_have_cosine_zero():
    f = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    assert torch.equal(cosine_adjacency(f, -0.5), torch.ones(3, 3))
    a = cosine_adjacency(f, 0.0)
    assert torch.equal(a, torch.tensor([[1.0, 0, 0], [0, 1, 1], [0, 1, 1]]))


def test_dtype_is_kept():
    f = torch.randn(5, 3, dtype=torch.float16)
    for name, params in [("cosine", {"threshold": 0.2}), ("knn", {"n_neighbors": 2})]:
        assert pairwise_adjacency(f, name, **params).dtype == torch.float16


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: cosine_adjacency(torch.randn(5), 0.5), "2-D"),
        (lambda: cosine_adjacency(torch.randn(2, 3, 4), 0.5), "2-D"),
        (lambda: cosine_adjacency(torch.ones(3, 2, dtype=torch.int64), 0.5), "floating"),
        (lambda: cosine_adjacency([[1.0, 2.0]], 0.5), "torch.Tensor"),
        (lambda: cosine_adjacency(torch.randn(0, 3), 0.5), "at least 1"),
        (lambda: cosine_adjacency(torch.randn(4, 3), 1.5), r"\[-1, 1\]"),
        (lambda: cosine_adjacency(torch.randn(4, 3), float("nan")), "finite"),
        (lambda: cosine_adjacency(torch.randn(4, 3), "0.5"), "real number"),
        (lambda: cosine_adjacency(torch.randn(4, 3), True), "real number"),
        (lambda: l2_adjacency(torch.randn(4, 3), -1.0), ">= 0"),
        (lambda: sne_adjacency(torch.randn(4, 3), -0.1, 1.0), ">= 0"),
        (lambda: sne_adjacency(torch.randn(4, 3), 0.01, 0.0), "temperature"),
        (lambda: sne_adjacency(torch.randn(1, 3), 0.01, 1.0), "at least 2"),
        (lambda: knn_adjacency(torch.randn(4, 3), 0), ">= 1"),
        (lambda: knn_adjacency(torch.randn(4, 3), 2.5), "integer"),
        (lambda: knn_adjacency(torch.randn(4, 3), True), "integer"),
        (
            lambda: pairwise_adjacency(torch.randn(4, 3), "euclid", threshold=1.0),
            "'cosine', 'l2', 'sne', 'knn'",
        ),
        (lambda: pairwise_adjacency(torch.randn(4, 3), "knn", threshold=1.0), "n_neighbors"),
        (
            lambda: pairwise_adjacency(torch.randn(4, 3), "cosine", threshold=0.1, k=3),
            "accepts: threshold",
        ),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------- calibration
def _share(batches, similarity, **params):
    similar = sum(
        float(pairwise_adjacency(f, similarity, **params).sum()) - len(f) for f in batches
    )
    return similar / sum(len(f) * (len(f) - 1) for f in batches)


_CALIBRATED = [
    ("cosine", {"center": True}),
    ("cosine", {}),
    ("l2", {}),
    ("sne", {"temperature": 2.0}),
    ("knn", {}),
]


@SETTINGS
@given(
    seed=st.integers(0, 2**16),
    fraction=st.floats(0.05, 0.6),
    case=st.sampled_from(_CALIBRATED),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
)
def test_calibrated_share_matches_the_target(seed, fraction, case, scale):
    similarity, params = case
    if similarity == "sne":
        scale = 1.0  # SNE's temperature fixes the scale it sees
    gen = torch.Generator().manual_seed(seed)
    batches = [scale * torch.randn(24, 5, generator=gen, dtype=torch.float64) for _ in range(3)]
    value = calibrate_similarity(batches, similarity, fraction, **params)
    if similarity == "knn":
        assert isinstance(value, int)
        assert _share(batches, "knn", n_neighbors=value) >= fraction
        if value > 1:  # the smallest such k
            assert _share(batches, "knn", n_neighbors=value - 1) < fraction
        return
    share = _share(batches, similarity, threshold=value, **params)
    one_pair = 1 / (3 * 24 * 23 / 2)  # continuous scores: the share moves one pair at a time
    assert abs(share - fraction) <= one_pair + 1e-9


def test_calibrated_l2_threshold_scales_with_the_features():
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(32, 4, generator=gen) for _ in range(4)]
    small = calibrate_similarity(batches, "l2", 0.1)
    large = calibrate_similarity([100 * f for f in batches], "l2", 0.1)
    assert large == pytest.approx(1e4 * small, rel=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(fraction=0.0), r"fraction must lie in \(0, 1\)"),
        (dict(fraction=1.0), r"fraction must lie in \(0, 1\)"),
        (dict(fraction=0.1, similarity="jaccard"), "unknown similarity"),
    ],
)
def test_calibration_bad_input(kwargs, match):
    kwargs = {"similarity": "cosine", **kwargs}
    with pytest.raises(ValueError, match=match):
        calibrate_similarity([torch.randn(8, 3)], **kwargs)
    with pytest.raises(ValueError, match="at least one batch"):
        calibrate_similarity([], "cosine", 0.1)


def test_calibration_warns_when_the_share_cannot_be_reached():
    far = 3 * torch.randn(32, 128, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="raise the SNE temperature"):
        calibrate_similarity([far], "sne", 1 / 3, temperature=1.0)
