"""The vector path as a first-class input: one scale for features that share one, per-feature
scales for mixed units, SCARF views by default, ``pretext="auto"`` by width, Ward partitions of
the manifold, and LSDC without a pretext labelling its pairs from the input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from skdeepcluster import DRC, LSDC, SCAN, AutoEncoder, SeLa
from skdeepcluster.augment import MarginalCorruption, default_augmentations
from skdeepcluster.backbones import MLP, SHARED_SCALE_RATIO, Standardize, vector_scales
from skdeepcluster.heads import manifold_partition
from skdeepcluster.methods._base import AUTOENCODER_MIN_FEATURES, resolve_pretext


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(150, n_features=6, centers=3, cluster_std=0.5, random_state=0)
    return X.astype(np.float32), y


# ------------------------------------------------------------------------------ feature scales


def test_features_on_one_scale_share_one_divisor_and_keep_their_weights():
    spread = torch.tensor([1.0, 2.0, 4.0, 0.0])  # largest 4 <= 10 x median 2; one constant
    scales = vector_scales(spread)
    shared = float(torch.tensor([1.0, 4.0, 16.0]).mean().sqrt())  # rms of the moving spreads
    np.testing.assert_allclose(scales[:3].numpy(), shared, rtol=1e-6)
    assert float(scales[3]) == 0.0  # constant: left to Standardize
    standardized = Standardize(torch.zeros(4), scales)(torch.tensor([[1.0, 2.0, 4.0, 5.0]]))
    np.testing.assert_allclose(standardized[0, :3].numpy() * shared, [1.0, 2.0, 4.0], rtol=1e-6)


def test_features_in_mixed_units_are_each_brought_to_unit_spread():
    spread = torch.tensor([0.003, 1.0, 500.0, 2.0, 0.0])  # 500 > 10 x median 1.5: mixed units
    np.testing.assert_array_equal(vector_scales(spread).numpy(), spread.numpy())


def test_the_shared_scale_rule_switches_at_the_ratio():
    at = torch.tensor([1.0, 1.0, SHARED_SCALE_RATIO])
    above = torch.tensor([1.0, 1.0, SHARED_SCALE_RATIO * 1.01])
    assert len(torch.unique(vector_scales(at))) == 1
    assert len(torch.unique(vector_scales(above))) == 2


def test_all_constant_features_keep_zero_spreads():
    np.testing.assert_array_equal(vector_scales(torch.zeros(3)).numpy(), np.zeros(3))


def test_raw_tabular_units_cluster_as_well_as_standardised_ones(blobs):
    X, y = blobs
    units = np.array([1e-3, 1.0, 1e3, 1e5, 10.0, 0.1], dtype=np.float32)
    offsets = np.array([0.0, 1e4, -50.0, 3e6, 0.0, 7.0], dtype=np.float32)
    raw = X * units + offsets
    labels = SCAN(n_clusters=3, pretext=None, random_state=0, max_epochs=5).fit_predict(raw)
    assert adjusted_rand_score(y, labels) > 0.95


# ------------------------------------------------------------------------------ views and pretext


def test_vector_views_replace_entries_by_draws_from_their_own_feature():
    sample = torch.tensor([[0.0, 10.0], [1.0, 20.0], [0.0, 30.0]])
    weak, strong = default_augmentations(sample)
    assert isinstance(weak, MarginalCorruption) and isinstance(strong, MarginalCorruption)
    assert weak.prob < strong.prob
    torch.manual_seed(0)
    view = strong(sample.repeat(50, 1))
    for j in range(2):  # never outside the feature's support: no zeros, no noise
        assert set(view[:, j].tolist()) <= set(sample[:, j].tolist())


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((10, 3, 8, 8), "simclr"),
        ((10, AUTOENCODER_MIN_FEATURES - 1), None),
        ((10, AUTOENCODER_MIN_FEATURES), "autoencoder"),
    ],
)
def test_auto_pretext_follows_the_data_kind_and_width(shape, expected):
    assert resolve_pretext("auto", np.zeros(shape)) == expected


@pytest.mark.parametrize("given", [None, "simclr", "rotnet"])
def test_a_given_pretext_is_kept(given):
    assert resolve_pretext(given, np.zeros((10, 3, 8, 8))) == given


@pytest.mark.parametrize("cls", [SCAN, LSDC, SeLa, DRC])
def test_every_method_defaults_to_the_auto_pretext(cls):
    assert cls().pretext == "auto"


def test_narrow_vectors_train_in_the_input_space_with_an_mlp(blobs):
    X, _ = blobs
    model = SCAN(n_clusters=3, max_epochs=1, self_label_epochs=0, random_state=0).fit(X)
    assert model.pretext_ is None and model.head_init_ == "manifold"
    assert not any(isinstance(m, torch.nn.Conv2d) for m in model.module_.modules())


def test_wide_vectors_are_never_reshaped_into_images():
    X = np.random.default_rng(0).random((40, 64), dtype=np.float32)  # 8 x 8, as digits
    model = DRC(n_clusters=2, pretext=None, max_epochs=1, batch_size=16, random_state=0).fit(X)
    assert isinstance(model.module_.backbone.body, MLP)
    assert not hasattr(model, "image_scale_")


# ------------------------------------------------------------------------------ the manifold step


def test_manifold_partitions_are_deterministic_ward_partitions(blobs):
    X, y = blobs
    _, first = manifold_partition(torch.tensor(X), [3, 3], seed=0)
    _, again = manifold_partition(torch.tensor(X), [3], seed=5)  # the same embedding rows
    np.testing.assert_array_equal(first[0], first[1])  # Ward has no random start
    assert adjusted_rand_score(y, first[0]) == pytest.approx(1.0)
    assert adjusted_rand_score(first[0], again[0]) > 0.99


# ------------------------------------------------------------------------------ LSDC from scratch


def test_lsdc_without_pretext_labels_its_pairs_from_the_input(blobs):
    X, y = blobs
    model = LSDC(n_clusters=3, pretext=None, max_epochs=3, batch_size=32, random_state=0).fit(X)
    assert model.label_features_ == "spectral" and model.pretext_ is None
    assert adjusted_rand_score(y, model.labels_) > 0.95  # no collapse
    assert model.n_clusters_used_ == 3


def test_lsdc_fixed_labels_on_images_still_need_a_pretext():
    X = np.zeros((20, 8, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="on images needs a pretext"):
        LSDC(n_clusters=2, pretext=None, label_features="spectral").fit(X)


# ------------------------------------------------------------------------------ fine-tuning the AE


def _lr_of(net, parameter):
    groups = [g for g in net.optimizer_.param_groups if any(p is parameter for p in g["params"])]
    assert len(groups) == 1
    return groups[0]["lr"]


@pytest.mark.parametrize("cls", [DRC, SeLa, SCAN])
def test_an_autoencoder_encoder_is_fine_tuned_at_a_tenth_of_the_lr(blobs, cls):
    X, _ = blobs
    pretext = AutoEncoder(hidden=(8,), embedding_dim=4, max_epochs=1)
    kwargs = dict(self_label_epochs=0) if cls is SCAN else {}
    model = cls(n_clusters=3, pretext=pretext, lr=0.01, max_epochs=1, random_state=0, **kwargs)
    model.fit(X)
    module = model.net_.module_
    backbone_weight = next(module.backbone.parameters())
    head_weight = next(module.heads.parameters())
    assert pretext.fine_tune_lr_scale == 0.1  # the default
    assert _lr_of(model.net_, backbone_weight) == pytest.approx(0.001)
    assert _lr_of(model.net_, head_weight) != pytest.approx(0.001)


def test_the_autoencoder_can_ask_for_the_method_lr(blobs):
    X, _ = blobs
    model = DRC(n_clusters=3, pretext="autoencoder", lr=0.01, max_epochs=1, random_state=0)
    model.set_params(pretext__max_epochs=1, pretext__hidden=(8,), pretext__fine_tune_lr_scale=1.0)
    model.fit(X)
    backbone_weight = next(model.net_.module_.backbone.parameters())
    assert _lr_of(model.net_, backbone_weight) == pytest.approx(0.01)


def test_other_pretexts_are_fine_tuned_at_the_method_lr(blobs):
    X, _ = blobs
    model = DRC(n_clusters=3, pretext="simclr", lr=0.01, max_epochs=1, random_state=0)
    model.set_params(pretext__max_epochs=1)
    model.fit(X)
    backbone_weight = next(model.net_.module_.backbone.parameters())
    assert _lr_of(model.net_, backbone_weight) == pytest.approx(0.01)


def test_kmeans_partitions_of_the_manifold_are_seeded_per_head(blobs):
    X, y = blobs
    _, labels = manifold_partition(torch.tensor(X), [3, 4], seed=0, clustering="kmeans")
    assert adjusted_rand_score(y, labels[0]) == pytest.approx(1.0)
    assert len(np.unique(labels[1])) == 4
    with pytest.raises(ValueError, match="clustering must be 'ward' or 'kmeans', got 'gmm'"):
        manifold_partition(torch.tensor(X), [3], seed=0, clustering="gmm")


def test_images_keep_kmeans_partitions_in_the_manifold_start(monkeypatch):
    import skdeepcluster.methods._base as methods_base

    used = []
    real = methods_base.manifold_partition
    monkeypatch.setattr(
        methods_base,
        "manifold_partition",
        lambda *a, **kw: used.append(a[3] if len(a) > 3 else kw["clustering"]) or real(*a, **kw),
    )
    images = np.random.default_rng(0).random((40, 8, 8), dtype=np.float32)
    DRC(n_clusters=3, pretext=None, head_init="manifold", max_epochs=1, batch_size=16).fit(images)
    vectors = images.reshape(40, -1)
    DRC(n_clusters=3, pretext=None, max_epochs=1, batch_size=16).fit(vectors)
    assert used == ["kmeans", "ward"]


def test_scan_without_pretext_mines_in_the_standardised_input(blobs):
    X, _ = blobs
    raw = X * np.array([1e-3, 1.0, 1e3, 1e5, 10.0, 0.1], dtype=np.float32)
    fast = dict(n_clusters=3, pretext=None, max_epochs=1, self_label_epochs=0, random_state=0)
    mined_raw = SCAN(**fast).fit(raw).neighbors_
    mined_standardised = SCAN(**fast).fit((X - X.mean(0)) / X.std(0)).neighbors_
    np.testing.assert_array_equal(mined_raw, mined_standardised)
