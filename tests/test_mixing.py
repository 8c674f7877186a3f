"""Tests of the LSD-C data composition (MixUp, RICAP) and composite targets, eq. (6)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skdeepcluster.losses import lsdc_pairwise_bce
from skdeepcluster.mixing import blend, composite_targets, mixup, ricap
from skdeepcluster.pairwise_labels import cosine_adjacency

torch.set_num_threads(1)
SETTINGS = settings(max_examples=30, deadline=None)


def ref_targets(adjacency, sources, weights):
    """T[i, j] = sum_s w[j, s] * A[i, sources[j, s]], written as an explicit loop."""
    n, m = adjacency.shape[0], sources.shape[0]
    out = np.zeros((n, m))
    for i in range(n):
        for j in range(m):
            for s in range(sources.shape[1]):
                out[i, j] += float(weights[j, s]) * float(adjacency[i, int(sources[j, s])])
    return out


@st.composite
def adjacency_matrices(draw, b):
    seed = draw(st.integers(0, 2**31 - 1))
    a = torch.rand(b, b, generator=torch.Generator().manual_seed(seed)) > 0.5
    a = a | a.T
    a.fill_diagonal_(True)
    return a.double()


@st.composite
def sources_and_weights(draw, b, m, s):
    idx = draw(st.lists(st.integers(0, b - 1), min_size=m * s, max_size=m * s))
    raw = draw(st.lists(st.floats(0.0, 1.0), min_size=m * s, max_size=m * s))
    w = torch.tensor(raw, dtype=torch.float64).reshape(m, s) + 1e-3
    w = w / w.sum(dim=1, keepdim=True)
    return torch.tensor(idx, dtype=torch.int64).reshape(m, s), w


# --------------------------------------------------------------------------
# composite targets: explicit loop as reference
# --------------------------------------------------------------------------


def test_composite_targets_hand_example():
    # samples 0, 1 similar; 2 alone
    a = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    # composite 0 = 0.7 x_2 + 0.3 x_1; composite 1 = x_0; composite 2 = 0.5 x_2 + 0.5 x_2
    sources = torch.tensor([[2, 1], [0, 0], [2, 2]])
    weights = torch.tensor([[0.7, 0.3], [1.0, 0.0], [0.5, 0.5]])
    t = composite_targets(a, sources, weights)
    expected = torch.tensor(
        [
            [0.3, 1.0, 0.0],  # pure 0 vs the parts from 2 (0) and 1 (1)
            [0.3, 1.0, 0.0],
            [0.7, 0.0, 1.0],
        ]
    )
    assert torch.allclose(t, expected)
    # the composite's own index (A[i, j]) or the transpose would give other values
    assert not torch.allclose(t, a) and not torch.allclose(t, a.T)


@SETTINGS
@given(data=st.data())
def test_composite_targets_match_loop_reference(data):
    b = data.draw(st.integers(1, 6))
    m = data.draw(st.integers(1, 6))
    s = data.draw(st.integers(1, 4))
    a = data.draw(adjacency_matrices(b))
    if data.draw(st.booleans()):  # soft adjacency too
        a = a * 0.5 + 0.25
    sources, weights = data.draw(sources_and_weights(b, m, s))
    t = composite_targets(a, sources, weights)
    assert t.shape == (b, m)
    np.testing.assert_allclose(t.numpy(), ref_targets(a, sources, weights), rtol=1e-12, atol=1e-12)
    assert torch.all((t >= 0) & (t <= 1 + 1e-12))


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), b=st.integers(1, 6), alpha=st.floats(0.05, 5))
def test_mixup_targets_match_loop_reference(seed, b, alpha):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, generator=g, dtype=torch.float64)
    a = cosine_adjacency(x, 0.2)
    mixed, sources, weights = mixup(x, alpha, generator=g)
    t = composite_targets(a, sources, weights)
    np.testing.assert_allclose(t.numpy(), ref_targets(a, sources, weights), rtol=1e-12, atol=1e-12)
    # the composites really are made of the described sources
    for j in range(b):
        expected = sum(weights[j, s] * x[sources[j, s]] for s in range(2))
        assert torch.allclose(mixed[j], expected)


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1), b=st.integers(1, 5), h=st.integers(1, 7), w=st.integers(1, 7)
)
def test_ricap_targets_match_loop_reference(seed, b, h, w):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 2, h, w, generator=g)
    a = cosine_adjacency(x.flatten(1), 0.0)
    _, sources, weights = ricap(x, 0.3, generator=g)
    t = composite_targets(a, sources, weights)
    np.testing.assert_allclose(t.numpy(), ref_targets(a, sources, weights), rtol=1e-6, atol=1e-6)


@SETTINGS
@given(data=st.data())
def test_single_source_composite_gets_adjacency_column(data):
    b = data.draw(st.integers(1, 6))
    a = data.draw(adjacency_matrices(b))
    ks = torch.tensor(data.draw(st.lists(st.integers(0, b - 1), min_size=1, max_size=6)))
    t = composite_targets(a, ks[:, None], torch.ones(len(ks), 1, dtype=torch.float64))
    assert torch.equal(t, a[:, ks])


def test_rounded_weights_keep_targets_in_the_unit_interval():
    """RICAP's float32 patch areas sum to one only up to rounding; with every source similar the
    target must still be a valid BCE label (an MNIST run stopped on 1 + 1e-7 before the clamp)."""
    weights = torch.tensor([[0.1, 0.2, 0.3, 0.4]], dtype=torch.float32)
    weights = weights * (1 + 3e-7)  # rows summing to 1 + ~3e-7 in float32
    assert float(weights.sum()) > 1.0
    t = composite_targets(torch.ones(2, 4), torch.tensor([[0, 1, 2, 3]]), weights)
    assert float(t.max()) == 1.0
    p = torch.softmax(torch.randn(2, 3), dim=1)
    assert torch.isfinite(lsdc_pairwise_bce(p, p[:1], t))


def test_composite_targets_feed_the_bce():
    a = torch.eye(4)
    x = torch.randn(4, 3)
    _, sources, weights = mixup(x, generator=torch.Generator().manual_seed(0))
    t = composite_targets(a, sources, weights)
    p = torch.softmax(torch.randn(4, 2), dim=1)
    assert torch.isfinite(lsdc_pairwise_bce(p, p, t))


# --------------------------------------------------------------------------
# MixUp
# --------------------------------------------------------------------------


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    shape=st.sampled_from([(1, 3), (5, 4), (4, 3, 5, 5), (3, 1, 2, 2), (2, 2, 3)]),
    alpha=st.floats(0.05, 5),
)
def test_mixup_shapes_and_weights(seed, shape, alpha):
    x = torch.randn(*shape)
    mixed, sources, weights = mixup(x, alpha, generator=torch.Generator().manual_seed(seed))
    b = shape[0]
    assert mixed.shape == x.shape and mixed.dtype == x.dtype
    assert sources.shape == (b, 2) and sources.dtype == torch.int64
    assert weights.shape == (b, 2) and weights.dtype == x.dtype
    assert torch.equal(sources[:, 0], torch.arange(b))
    assert torch.equal(torch.sort(sources[:, 1]).values, torch.arange(b))  # a permutation
    assert torch.all(weights >= 0)
    assert torch.allclose(weights.sum(dim=1), torch.ones(b))
    assert torch.allclose(mixed, blend(x, sources, weights), atol=1e-6)


def test_mixup_is_reproducible_with_a_generator():
    x = torch.randn(6, 3)
    r1 = mixup(x, generator=torch.Generator().manual_seed(3))
    r2 = mixup(x, generator=torch.Generator().manual_seed(3))
    for u, v in zip(r1, r2):
        assert torch.equal(u, v)


def test_mixup_weight_one_is_identity():
    x = torch.randn(5, 2, 3, 3)
    perm = torch.randperm(5)
    sources = torch.stack([torch.arange(5), perm], dim=1)
    weights = torch.tensor([[1.0, 0.0]] * 5)
    assert torch.equal(blend(x, sources, weights), x)


def test_mixup_beta_weights_have_the_right_mean_and_spread():
    x = torch.zeros(4000, 1)
    _, _, weights = mixup(x, alpha=0.3, generator=torch.Generator().manual_seed(0))
    w = weights[:, 0]
    assert abs(w.mean().item() - 0.5) < 0.03
    # Beta(0.3, 0.3) is U-shaped: variance 1 / (4 (2 alpha + 1)) = 0.156
    assert abs(w.var().item() - 1 / (4 * 1.6)) < 0.01


# --------------------------------------------------------------------------
# RICAP
# --------------------------------------------------------------------------


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    b=st.integers(1, 5),
    c=st.integers(1, 3),
    h=st.integers(1, 8),
    w=st.integers(1, 8),
    beta=st.floats(0.05, 5),
)
def test_ricap_shapes_areas_and_patches(seed, b, c, h, w, beta):
    # each pixel value encodes (image, row, col), so we can find where a patch came from
    img = torch.arange(b, dtype=torch.float64)[:, None, None] * 10000
    rows = torch.arange(h, dtype=torch.float64)[None, :, None] * 100
    cols = torch.arange(w, dtype=torch.float64)[None, None, :]
    x = (img + rows + cols)[:, None].expand(b, c, h, w).contiguous()
    out, sources, weights = ricap(x, beta, generator=torch.Generator().manual_seed(seed))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert sources.shape == (b, 4) and sources.dtype == torch.int64
    assert weights.shape == (b, 4)
    assert torch.all(weights >= 0)
    areas = weights * (h * w)
    assert torch.allclose(areas, areas.round())
    assert torch.allclose(areas.sum(dim=1), torch.full((b,), float(h * w), dtype=torch.float64))
    assert torch.all(areas == areas[0])  # one boundary point per batch
    # recover the patch layout from the areas: a_tl = ph * pw etc.
    areas = [int(v) for v in areas[0].round()]
    pw_left = next(
        pw
        for pw in range(w + 1)
        for ph in range(h + 1)
        if ph * pw == areas[0]
        and ph * (w - pw) == areas[1]
        and (h - ph) * pw == areas[2]
        and (h - ph) * (w - pw) == areas[3]
    )
    ph_top = next(
        ph
        for ph in range(h + 1)
        if ph * pw_left == areas[0]
        and ph * (w - pw_left) == areas[1]
        and (h - ph) * pw_left == areas[2]
        and (h - ph) * (w - pw_left) == areas[3]
    )
    region = torch.empty(h, w, dtype=torch.int64)
    region[:ph_top, :pw_left] = 0
    region[:ph_top, pw_left:] = 1
    region[ph_top:, :pw_left] = 2
    region[ph_top:, pw_left:] = 3
    # every output pixel comes from the source image of its patch, and each
    # patch is a contiguous crop (constant offset) of that image
    for j in range(b):
        for s in range(4):
            mask = region == s
            if not mask.any():
                continue
            vals = out[j, 0][mask]
            assert torch.all((vals // 10000) == sources[j, s])
            src_r = (vals % 10000) // 100
            src_c = vals % 100
            out_r, out_c = mask.nonzero(as_tuple=True)
            assert torch.unique(src_r - out_r).numel() == 1
            assert torch.unique(src_c - out_c).numel() == 1
        assert torch.equal(out[j], out[j, :1].expand(c, h, w))  # same crop for all channels


def test_ricap_uses_independent_permutations_per_patch():
    x = torch.randn(64, 1, 8, 8)
    _, sources, _ = ricap(x, generator=torch.Generator().manual_seed(0))
    for s in range(4):
        assert torch.equal(torch.sort(sources[:, s]).values, torch.arange(64))
    assert not torch.equal(sources[:, 0], sources[:, 1])


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: ricap(torch.randn(4, 3), 0.3), r"\(B, C, H, W\).*mixup"),
        (lambda: ricap(torch.randn(4, 3, 5), 0.3), r"\(B, C, H, W\)"),
        (lambda: ricap(torch.randn(2, 1, 4, 4), 0.0), "positive"),
        (lambda: mixup(torch.randn(4), 0.3), r"\(B, d\)"),
        (lambda: mixup(torch.ones(4, 2, dtype=torch.long), 0.3), "floating"),
        (lambda: mixup(torch.randn(4, 2), -1.0), "positive"),
        (lambda: mixup(torch.randn(4, 2), float("inf")), "positive"),
        (lambda: mixup(torch.randn(4, 2), 0.3, generator=0), "torch.Generator"),
        (
            lambda: composite_targets(
                torch.eye(3), torch.tensor([[0, 3]]), torch.tensor([[0.5, 0.5]])
            ),
            r"\[0, 3\)",
        ),
        (
            lambda: composite_targets(
                torch.eye(3), torch.tensor([[0, 1]]), torch.tensor([[0.5, 0.6]])
            ),
            "sum to 1",
        ),
        (
            lambda: composite_targets(
                torch.eye(3), torch.tensor([[0, 1]]), torch.tensor([[1.5, -0.5]])
            ),
            "non-negative",
        ),
        (
            lambda: composite_targets(torch.eye(3), torch.tensor([[0, 1]]), torch.tensor([[1.0]])),
            "shape of sources",
        ),
        (
            lambda: composite_targets(torch.eye(3), torch.tensor([0, 1]), torch.tensor([0.5, 0.5])),
            r"\(M, S\)",
        ),
        (
            lambda: composite_targets(
                torch.eye(3), torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]])
            ),
            "integer",
        ),
        (
            lambda: composite_targets(
                torch.ones(3), torch.tensor([[0, 1]]), torch.tensor([[0.5, 0.5]])
            ),
            "2-D",
        ),
        (
            lambda: blend(torch.randn(3, 2), torch.tensor([[0, 1]]), torch.tensor([[1, 0]])),
            "floating",
        ),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
