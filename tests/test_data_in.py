"""Issue 14, data in and messages: image scale, float32 range, extreme scales, ties, warnings.

The reliability probe on e6dd4a8 (``../shared/reviews/reliability-probe.md``) found what each
test covers; each fails at e6dd4a8, except the guards (marked *guard*), which pass there and
pin what the fix must not overdo.

- Defect 1, float images on a 0-255 scale: ``test_whole_valued_float_images_are_read_as_uint8``,
  ``test_float_images_of_another_scale_are_refused``;
  ``test_float_images_in_0_1_or_centred_are_taken_as_they_are`` (*guard*).
- Defect 5, float64 beyond the float32 range: ``test_values_beyond_float32_are_refused``.
- Defect 6, scale sensitivity (cosine overflow, the Standardize floor):
  ``test_mined_neighbours_do_not_depend_on_the_scale``,
  ``test_cosine_similarities_do_not_depend_on_the_scale``,
  ``test_standardize_brings_a_tiny_spread_to_unit_scale``,
  ``test_standardize_keeps_a_constant_feature_constant``,
  ``test_a_fit_does_not_depend_on_the_scale_of_x``,
  ``test_a_power_of_two_scale_changes_no_bit_of_the_fit``.
- Defect 8, Sinkhorn ties: ``test_tied_sinkhorn_labels_are_balanced``,
  ``test_sinkhorn_labels_spread_only_over_the_tied_columns``,
  ``test_rows_tied_across_all_columns_are_spread_evenly`` (hypothesis);
  ``test_sinkhorn_labels_are_the_argmax_without_ties`` and
  ``test_sinkhorn_labels_take_a_largest_entry_of_their_row`` (hypothesis, *guards*: the labels
  are still the plan's argmax).
- Defect 7, messages: ``test_a_disconnected_graph_the_embedding_separates_gives_no_warning`` and
  ``test_a_graph_of_too_many_parts_warns_to_raise_n_neighbors`` (scikit-learn's "Graph is not
  fully connected" leaked from the spectral step), ``test_sela_max_epochs_0_names_max_epochs``,
  ``test_scan_augment_is_refused_before_any_training``. Covered elsewhere, not repeated here:
  ``cluster_marginal`` given a string (``tests/test_sela.py::test_bad_parameters``, with
  "abc"), the message for ``augment=123`` (``tests/test_api.py::
  test_bad_scan_parameters_are_refused``) and ``pretext__`` parameters of a named pretext
  (``tests/test_fit_path.py``: ``test_pretext_params_reach_a_named_pretext``,
  ``test_pretext_params_in_a_grid_search``, which checks ``pretext_.n_epochs_``).
"""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from skorch.callbacks import Callback

from skdeepcluster import DRC, SCAN, NeighborMiner, SeLa, SimCLR
from skdeepcluster.backbones import Standardize
from skdeepcluster.base import check_float32_range
from skdeepcluster.neighbors import mine_neighbors, neighbor_graph_embedding
from skdeepcluster.ot import sinkhorn_knopp
from skdeepcluster.pairwise_labels import _cosine_similarity_matrix, cosine_adjacency


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 6, (3, 6))
    return np.concatenate([c + rng.normal(0, 1, (30, 6)) for c in centres]).astype(np.float32)


@pytest.fixture(scope="module")
def uint8_images():
    """8-bit gray images of three kinds (a bright band at one of three heights), holding both
    0 and 255."""
    rng = np.random.default_rng(1)
    X = rng.integers(0, 64, (42, 1, 8, 8))
    for g in range(3):
        X[g::3, :, 3 * g : 3 * g + 2] += 192
    assert X.min() == 0 and X.max() == 255
    return X.astype(np.uint8)


def tiny_sela(**kwargs):
    """SeLa from scratch (no pretext), so it takes images without a pretext."""
    params = dict(
        n_clusters=3, pretext=None, max_epochs=2, batch_size=16, head_init="random", random_state=0
    )
    return SeLa(**{**params, **kwargs})


def same_predictions(a, b, X_a, X_b=None):
    """``a`` on ``X_a`` and ``b`` on ``X_b`` give the same labels and the same probabilities."""
    X_b = X_a if X_b is None else X_b
    np.testing.assert_array_equal(a.predict(X_a), b.predict(X_b))
    np.testing.assert_allclose(a.predict_proba(X_a), b.predict_proba(X_b), rtol=0, atol=0)


AS_8_BIT = r"whole values in \[0, 255\]: read as 8-bit images"


# ------------------------------------------------------------------------ images on 0-255


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_whole_valued_float_images_are_read_as_uint8(uint8_images, dtype):
    """At e6dd4a8 float images on 0-255 trained as if in [0, 1] (the augmentations clamp), and a
    model fitted on uint8 predicted the same pixels as floats differently."""
    X8 = uint8_images
    Xf = X8.astype(dtype)
    on_uint8 = tiny_sela().fit(X8)
    with pytest.warns(UserWarning, match=AS_8_BIT):
        on_float = tiny_sela().fit(Xf)
    np.testing.assert_array_equal(on_float.labels_, on_uint8.labels_)
    same_predictions(on_uint8, on_float, X8)  # the float fit is the uint8 fit
    # fit on uint8, predict on floats (and back): the same pixels, the same predictions
    with pytest.warns(UserWarning, match=AS_8_BIT):
        same_predictions(on_uint8, on_uint8, X8, Xf)
    with pytest.warns(UserWarning, match=AS_8_BIT):
        same_predictions(on_float, on_uint8, Xf, X8)


@pytest.mark.parametrize(
    ("make_X", "values"),
    [
        (lambda X8: X8 + np.float32(0.5), r"\[0\.5, 255\.5\]"),  # not whole numbers
        (lambda X8: X8 * np.float32(257), r"\[0, 6\.554e\+04\]"),  # 16-bit images
        (lambda X8: X8 / np.float32(2), r"\[0, 127\.5\]"),
    ],
    ids=["half_pixels", "16_bit", "halved"],
)
def test_float_images_of_another_scale_are_refused(uint8_images, make_X, values):
    X = make_X(uint8_images.astype(np.float32))
    scale = r"float images must be in \[0, 1\]"
    with pytest.raises(ValueError, match=values + r"; " + scale):
        tiny_sela().fit(X)
    model = tiny_sela().fit(uint8_images)
    for method in (model.predict, model.predict_proba):
        with pytest.raises(ValueError, match=r"8-bit images are given as uint8 \(0-255\)"):
            method(X)


def test_float_images_in_0_1_or_centred_are_taken_as_they_are(uint8_images):
    """Binary float images ({0, 1}) and centred ones (negative values) are not 8-bit images: no
    warning, and not divided by 255."""
    binary = (uint8_images > 127).astype(np.float32)
    centred = uint8_images.astype(np.float32) - np.float32(128)  # whole values, some negative
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = tiny_sela().fit(binary)
        tiny_sela().fit(centred)
    assert not [w for w in caught if "8-bit" in str(w.message)], [str(w.message) for w in caught]
    # read as they are: the same images as uint8 (0 or 1, divided by 255) are other images
    assert not np.allclose(
        model.predict_proba(binary), model.predict_proba(binary.astype(np.uint8))
    )


# ----------------------------------------------------------------------------- float32 range


@pytest.mark.parametrize("value", [1e39, -1e39, 1e300])
def test_values_beyond_float32_are_refused(blobs, value):
    """At e6dd4a8 they passed validation, became infinite and ended in NaN far inside the fit."""
    X = blobs.astype(np.float64)
    X[3, 2] = value
    with pytest.raises(ValueError, match=r"beyond the float32 range"):
        DRC(n_clusters=3, pretext=None, max_epochs=1).fit(X)
    model = DRC(n_clusters=3, pretext=None, max_epochs=2, head_init="random", random_state=0)
    model.fit(blobs)
    for method in (model.predict, model.predict_proba):
        with pytest.raises(ValueError, match=r"X has values up to .* float32 range"):
            method(X)
    largest = np.finfo(np.float32).max
    check_float32_range(np.array([[float(largest), -float(largest)]]))  # the range itself is fine


# -------------------------------------------------------------------------------- scale


@pytest.mark.parametrize("scale", [1e20, 1e30, 1e-25, 1e-30])
def test_mined_neighbours_do_not_depend_on_the_scale(scale):
    """At e6dd4a8 the squared norms overflowed (1e20) or underflowed (1e-25): random neighbours."""
    features = torch.as_tensor(np.random.default_rng(0).normal(size=(60, 5)), dtype=torch.float32)
    expected = mine_neighbors(features, 5)
    torch.testing.assert_close(mine_neighbors(features * scale, 5), expected, rtol=0, atol=0)
    torch.testing.assert_close(mine_neighbors(-features * scale, 5), expected, rtol=0, atol=0)


@pytest.mark.parametrize("scale", [1e20, 1e30, 1e-25, 1e-30])
def test_cosine_similarities_do_not_depend_on_the_scale(scale):
    """LSD-C's cosine criterion: the same similarities, the same pairwise labels, at any scale."""
    f = torch.as_tensor(np.random.default_rng(1).normal(size=(30, 4)), dtype=torch.float32)
    f[5] = 0  # a zero row keeps cosine 0 to all
    sims = _cosine_similarity_matrix(f * scale)
    torch.testing.assert_close(sims, _cosine_similarity_matrix(f), rtol=0, atol=1e-6)
    assert float(sims[5].abs().max()) == 0.0
    torch.testing.assert_close(sims.diagonal()[:5], torch.ones(5), rtol=0, atol=1e-6)
    for threshold in (0.0, 0.5):
        torch.testing.assert_close(
            cosine_adjacency(f * scale, threshold), cosine_adjacency(f, threshold), rtol=0, atol=0
        )


def test_standardize_brings_a_tiny_spread_to_unit_scale():
    """At e6dd4a8 the std was floored at 1e-6: a feature of std 1e-8 came out 100x too small."""
    z = torch.as_tensor(np.random.default_rng(2).normal(size=(200, 3)), dtype=torch.float32)
    layer = Standardize(mean=torch.zeros(3), std=torch.full((3,), 1e-8))
    torch.testing.assert_close(layer(z * 1e-8), z, rtol=1e-5, atol=1e-6)
    # statistics taken from data on a 1e-8 scale (all features tiny, one constant)
    x = torch.cat([z * 1e-8 + 3e-8, torch.full((200, 1), 2.0)], dim=1)
    out = Standardize.from_data(x)(x)
    spread = x[:, :3].std(0)  # one shared scale: each comes out at its spread over their rms
    expected = spread / spread.square().mean().sqrt()
    torch.testing.assert_close(out[:, :3].std(0), expected, rtol=1e-4, atol=0)
    assert float(expected.min()) > 0.9
    torch.testing.assert_close(out[:, :3].mean(0), torch.zeros(3), rtol=0, atol=1e-4)
    assert float(out[:, 3].abs().max()) == 0.0


def test_standardize_keeps_a_constant_feature_constant():
    """A constant feature stays 0 after centring, and a spread at float32 rounding level of the
    mean (a constant feature, as stored) is not blown up into unit noise."""
    layer = Standardize(mean=torch.tensor([5.0, 1000.0]), std=torch.tensor([0.0, 3e-5]))
    x = torch.tensor([[5.0, 1000.0], [5.0, 1000.0 + 6.1e-5], [5.0, 1000.0 - 6.1e-5]])
    out = layer(x)
    assert float(out[:, 0].abs().max()) == 0.0
    assert float(out[:, 1].abs().max()) < 1e-3  # divided by 1, not by its rounding-level spread
    torch.testing.assert_close(layer.std, torch.ones(2), rtol=0, atol=0)


@pytest.mark.parametrize("cls", [DRC, SeLa])
def test_a_fit_does_not_depend_on_the_scale_of_x(blobs, cls):
    """Vectors on a 1e-8 scale fit as the same vectors on unit scale (same random_state): the
    same labels, probabilities equal up to float32 rounding of the scaled input. (With the
    default manifold start the partition is the same too, but its cluster numbering can change
    under any 1e-7 perturbation of X, a rescaling or not: t-SNE + k-means number the clusters
    unstably. The exact statement for the default start is the power-of-two test below.)"""
    params = dict(n_clusters=3, pretext=None, max_epochs=2, batch_size=32, random_state=0)
    small = blobs * np.float32(1e-8)
    on_unit = cls(head_init="random", **params).fit(blobs)
    on_small = cls(head_init="random", **params).fit(small)
    np.testing.assert_array_equal(on_small.labels_, on_unit.labels_)
    np.testing.assert_allclose(
        on_small.predict_proba(small), on_unit.predict_proba(blobs), atol=1e-3
    )
    assert adjusted_rand_score(np.repeat(np.arange(3), 30), on_small.labels_) == 1.0


def test_a_power_of_two_scale_changes_no_bit_of_the_fit(blobs):
    """Scaling by 2**-27 (~7e-9) is exact in floating point, so the fit, default head
    initialisation and neighbour mining included, is bitwise the fit on unit scale."""
    params = dict(
        n_clusters=3, pretext=None, max_epochs=2, self_label_epochs=1, n_neighbors=3, random_state=0
    )
    small = blobs * np.float32(2.0**-27)
    on_unit = SCAN(**params).fit(blobs)
    on_small = SCAN(**params).fit(small)
    np.testing.assert_array_equal(on_small.labels_, on_unit.labels_)
    same_predictions(on_small, on_unit, small, blobs)


# ------------------------------------------------------------------------------- Sinkhorn ties


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("n", "k"), [(10, 5), (7, 3), (4, 4), (3, 5)])
def test_tied_sinkhorn_labels_are_balanced(n, k, dtype):
    """At e6dd4a8 ``sinkhorn_knopp(zeros(10, 5), return_labels=True).labels`` was all 0, though
    the plan is an equipartition."""
    result = sinkhorn_knopp(torch.zeros(n, k, dtype=dtype), return_labels=True)
    counts = torch.bincount(result.labels, minlength=k)
    assert int(counts.max()) - int(counts.min()) <= 1, counts
    assert counts.sum() == n and result.labels.dtype == torch.int64
    if (n, k) == (10, 5):
        assert counts.tolist() == [2] * 5


def test_sinkhorn_labels_spread_only_over_the_tied_columns():
    """Rows tied between columns 1 and 3 (0 and 2 impossible) split between 1 and 3, and rows
    tied between 0 and 2 between those two: four rows to each column, as the plan has it."""
    log_probs = torch.zeros(16, 4, dtype=torch.float64)
    log_probs[:8, [0, 2]] = float("-inf")
    log_probs[8:, [1, 3]] = float("-inf")
    result = sinkhorn_knopp(log_probs, return_labels=True)
    torch.testing.assert_close(result.plan.sum(0), torch.full((4,), 0.25, dtype=torch.float64))
    assert sorted(result.labels[:8].tolist()) == [1] * 4 + [3] * 4
    assert sorted(result.labels[8:].tolist()) == [0] * 4 + [2] * 4


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # not at issue here
@given(
    n=st.integers(2, 30),
    k=st.integers(2, 6),
    seed=st.integers(0, 2**16),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_sinkhorn_labels_are_the_argmax_without_ties(n, k, seed, dtype):
    gen = torch.Generator().manual_seed(seed)
    log_probs = torch.log_softmax(3 * torch.randn(n, k, generator=gen, dtype=torch.float64), 1)
    result = sinkhorn_knopp(log_probs.to(dtype), return_labels=True)
    top2 = result.plan.topk(2, dim=1).values
    untied = top2[:, 0] > top2[:, 1] * (1 + 1e-3)
    assert torch.equal(result.labels[untied], result.plan.argmax(1)[untied])


@given(
    shifts=arrays(np.float64, st.integers(1, 30), elements=st.floats(-50, 50)),
    k=st.integers(2, 6),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_rows_tied_across_all_columns_are_spread_evenly(shifts, k, dtype):
    """Any per-row shift of the scores is absorbed by Sinkhorn: rows constant across the columns
    give a uniform plan, whose labels must be an equipartition."""
    log_probs = torch.as_tensor(shifts, dtype=dtype)[:, None].expand(-1, k).contiguous()
    labels = sinkhorn_knopp(log_probs, return_labels=True).labels
    counts = torch.bincount(labels, minlength=k)
    assert int(counts.max()) - int(counts.min()) <= 1, counts


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # not at issue here
@given(
    values=arrays(
        np.float64, st.tuples(st.integers(2, 20), st.integers(2, 5)), elements=st.integers(-2, 0)
    )
)
def test_sinkhorn_labels_take_a_largest_entry_of_their_row(values):
    """With ties frequent (small integer scores), every label is one of its row's maxima."""
    result = sinkhorn_knopp(torch.as_tensor(values), return_labels=True)
    plan = result.plan
    chosen = plan.gather(1, result.labels[:, None]).squeeze(1)
    torch.testing.assert_close(chosen, plan.amax(1), rtol=1e-10, atol=0)


# ------------------------------------------------------------------- spectral graph warning


def direction_groups(n_groups, per_group=12, dim=6):
    """``n_groups`` tight groups of rows around orthogonal directions: with 4 neighbours each,
    the cosine neighbour graph has exactly one part per group."""
    rng = np.random.default_rng(0)
    X = np.concatenate(
        [10 * np.eye(dim)[g] + rng.normal(0, 1, (per_group, dim)) for g in range(n_groups)]
    )
    return torch.as_tensor(X, dtype=torch.float32), np.repeat(np.arange(n_groups), per_group)


@pytest.mark.parametrize(("n_groups", "n_components"), [(2, 1), (3, 2), (4, 3)])
def test_a_disconnected_graph_the_embedding_separates_gives_no_warning(n_groups, n_components):
    """At e6dd4a8 scikit-learn's "Graph is not fully connected" warning leaked out of LSD-C's
    spectral step, though up to n_components + 1 parts are told apart by the embedding."""
    features, groups = direction_groups(n_groups)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        embedding = neighbor_graph_embedding(features, n_components, n_neighbors=4, random_state=0)
    assert caught == [], [str(w.message) for w in caught]
    # and the parts are indeed apart in the embedding
    found = KMeans(n_groups, n_init=5, random_state=0).fit_predict(embedding.numpy())
    assert adjusted_rand_score(groups, found) == 1.0


@pytest.mark.parametrize(("n_groups", "n_components"), [(3, 1), (4, 2)])
def test_a_graph_of_too_many_parts_warns_to_raise_n_neighbors(n_groups, n_components):
    features, _ = direction_groups(n_groups)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        neighbor_graph_embedding(features, n_components, n_neighbors=4, random_state=0)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages  # its own warning, not scikit-learn's as well
    assert caught[0].category is UserWarning
    assert f"graph of the features falls into {n_groups} disconnected parts" in messages[0]
    assert "raise n_neighbors" in messages[0]


# -------------------------------------------------------------------------------- messages


def test_sela_max_epochs_0_names_max_epochs(blobs):
    """At e6dd4a8 SeLa(max_epochs=0) blamed n_label_updates, a parameter the user never set."""
    with pytest.raises(ValueError, match=r"'max_epochs' parameter of SeLa must be") as info:
        tiny_sela(max_epochs=0).fit(blobs)
    assert "n_label_updates" not in str(info.value)


class EpochRecorder(Callback):
    """Records the stage of every epoch end in a class-level list (callbacks are deep-copied
    into each stage)."""

    epochs: list = []

    def on_epoch_end(self, net, **kwargs):
        EpochRecorder.epochs.append(getattr(net, "stage", None))


def test_scan_augment_is_refused_before_any_training(blobs):
    """At e6dd4a8 SCAN(augment=123) trained its pretext, then failed with a TypeError from deep
    inside the clustering stage. (The message itself: ``test_api.py``.)"""
    EpochRecorder.epochs = []
    model = SCAN(
        n_clusters=3,
        pretext=SimCLR(max_epochs=1, batch_size=32, projection_dim=8),
        augment=123,
        max_epochs=1,
        n_neighbors=3,
        batch_size=32,
        callbacks=[EpochRecorder()],
    )
    try:
        with pytest.raises(ValueError, match=r"'augment' parameter of SCAN must be a callable"):
            model.fit(blobs)
        assert EpochRecorder.epochs == []  # no pretext epoch, no clustering epoch
        assert not hasattr(model, "pretext_")
    finally:
        EpochRecorder.epochs = []


@pytest.mark.parametrize("scale", [1e39, 1e100, 1e-46, 1e-50])
def test_neighbor_miner_on_float64_beyond_float32_finds_the_same_neighbours(scale):
    """NeighborMiner cast float64 to float32 first: beyond float32's range every row got the
    same (NaN or zero) neighbours. Cosine neighbours do not depend on the scale."""
    X = np.random.default_rng(0).normal(size=(20, 5))
    expected = NeighborMiner(n_neighbors=3).fit(X).neighbors_
    np.testing.assert_array_equal(NeighborMiner(n_neighbors=3).fit(X * scale).neighbors_, expected)


def test_an_x_below_the_smallest_float32_is_refused():
    """DRC.fit(X * 1e-50) turned X into zeros and said only "constant features"."""
    X = np.random.default_rng(0).normal(size=(30, 4)) * 1e-50
    with pytest.raises(ValueError, match=r"below the smallest normal float32"):
        DRC(n_clusters=3, pretext=None, max_epochs=1).fit(X)


def test_the_image_scale_decided_at_fit_holds_at_predict():
    """The scale was decided per call: after a fit on 8-bit floats a dark image (maximum 1) was
    read as [0, 1]; after a fit on centred images one bright image was refused; a [0, 1] image
    with resampling overshoot (1 + 1e-7) was refused."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 1, 8, 8)).astype(np.uint8)
    params = dict(n_clusters=3, pretext=None, head_init="random", max_epochs=1, random_state=0)
    with pytest.warns(UserWarning, match="read as 8-bit"):
        on_floats = SeLa(**params).fit(images.astype(np.float32))
    assert on_floats.image_scale_ == "float8bit"
    dark = rng.integers(0, 2, size=(5, 1, 8, 8)).astype(np.uint8)  # 0 and 1 out of 255
    with pytest.warns(UserWarning, match="read as 8-bit"):
        as_float = on_floats.predict_proba(dark.astype(np.float32))
    np.testing.assert_array_equal(as_float, on_floats.predict_proba(dark))

    centred = images.astype(np.float32) / 255 - 0.5
    on_centred = SeLa(**params).fit(centred)
    assert on_centred.image_scale_ == "centred"
    bright = np.full((1, 1, 8, 8), 1.7, np.float32)  # no negative value, above 1
    assert on_centred.predict(bright).shape == (1,)

    unit = images.astype(np.float32) / 255
    unit[0, 0, 0, 0] = 1 + 1e-7
    assert SeLa(**params).fit(unit).image_scale_ == "unit"
    assert SeLa(**params).fit(images).image_scale_ == "uint8"


def test_standardize_keeps_a_spread_at_a_large_offset():
    """Timestamps: mean 1.7e9, std 1000 is a spread, not float32 rounding of a constant."""
    layer = Standardize(mean=torch.tensor([1.7e9]), std=torch.tensor([1000.0]))
    assert float(layer.std) == 1000.0


def test_sinkhorn_tie_spreading_takes_an_infinite_maximum():
    from skdeepcluster.ot import _argmax_spreading_ties

    plan = torch.tensor([[0.0, float("inf"), 1.0], [float("inf"), 0.0, float("inf")]])
    assert _argmax_spreading_ties(plan).tolist() == [1, 2]  # row 1: tie, from column 1 on
