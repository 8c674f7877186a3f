"""Tests of the SeLa estimator: scikit-learn compatibility, schedule, heads, marginal, errors."""

import os
import pickle

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import make_blobs
from sklearn.utils.estimator_checks import parametrize_with_checks

from skdeepcluster import SeLa, SimCLR
from skdeepcluster._training import DeviceData
from skdeepcluster.methods import _base as methods_base
from skdeepcluster.methods import sela as sela_module
from skdeepcluster.methods.sela import label_update_epochs
from skdeepcluster.metrics import cluster_accuracy

torch.set_num_threads(1)


def tiny(**kwargs):
    params = dict(
        n_clusters=3,
        n_heads=2,
        max_epochs=3,
        n_label_updates=2,
        batch_size=16,
        pretext=None,
        random_state=0,
    )
    params.update(kwargs)
    return SeLa(**params)


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=300, centers=4, n_features=8, cluster_std=1.0, random_state=0)
    return X.astype(np.float32), y


# ---------------------------------------------------------------- scikit-learn checks
# These checks set n_clusters=1, which SeLa refuses by design (a single cluster is no clustering,
# and the Sinkhorn step and the cross-entropy are void for it): fit raises
# "n_clusters must be an integer >= 2, got 1" before the property under check is reached.
_REFUSES_ONE_CLUSTER = "sets n_clusters=1, which SeLa refuses with a ValueError (needs >= 2)"
EXPECTED_FAILED = {
    "check_dont_overwrite_parameters": _REFUSES_ONE_CLUSTER,
    "check_methods_subset_invariance": _REFUSES_ONE_CLUSTER,
    "check_fit2d_predict1d": _REFUSES_ONE_CLUSTER,
    "check_fit2d_1feature": _REFUSES_ONE_CLUSTER + " (the check expects a message about the "
    "single feature instead)",
}


# the manifold start (vectors) passes the checks as SCAN's default in test_estimators_sklearn.py;
# here it would only triple the time of these checks. Three label updates: with two, random heads
# on check_clustering's noisy 2-d data left cluster 0 empty under SCARF views (a legal outcome
# of a 3-epoch fit that the check refuses)
@parametrize_with_checks(
    [tiny(head_init="random", n_label_updates=3)],
    expected_failed_checks=lambda est: EXPECTED_FAILED,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


# ---------------------------------------------------------------- schedule
@pytest.mark.parametrize(
    "m, e", [(1, 1), (1, 10), (2, 2), (5, 5), (8, 60), (12, 60), (40, 60), (3, 100)]
)
def test_schedule_has_m_increasing_epochs_starting_at_zero(m, e):
    epochs = label_update_epochs(m, e)
    assert len(epochs) == m
    assert epochs[0] == 0
    assert np.all(np.diff(epochs) > 0)
    assert epochs[-1] <= e - 1
    if m > 1:
        assert epochs[-1] == e - 1


def test_schedule_follows_squared_fractions():
    # t_i = (i / 4)^2 of 100 epochs -> 0, 6.25, 25, 56.25, 100 -> scaled by 99 and rounded
    np.testing.assert_array_equal(label_update_epochs(5, 100), [0, 6, 25, 56, 99])
    # crowded early updates are pushed to the next free epochs
    np.testing.assert_array_equal(label_update_epochs(4, 4), [0, 1, 2, 3])


def test_schedule_refuses_more_updates_than_epochs():
    with pytest.raises(ValueError, match="n_label_updates=5 must not exceed max_epochs=3"):
        label_update_epochs(5, 3)


def test_fit_records_the_schedule(blobs):
    X, _ = blobs
    model = tiny(n_clusters=4, max_epochs=6, n_label_updates=3, batch_size=100).fit(X)
    np.testing.assert_array_equal(model.label_update_epochs_, label_update_epochs(3, 6))
    clustering = [row for row in model.history_ if row["stage"] == "clustering"]
    updates = [i for i, row in enumerate(clustering) if "label_change" in row]
    assert updates == list(model.label_update_epochs_)


# ---------------------------------------------------------------- behaviour
def test_blobs_accuracy(blobs):
    X, y = blobs
    model = SeLa(
        n_clusters=4,
        n_heads=2,
        max_epochs=15,
        n_label_updates=6,
        batch_size=64,
        pretext=None,
        random_state=0,
    ).fit(X)
    # measured: 0.997-1.0 over random_state 0-4 (labels_ and pseudo_labels_)
    assert cluster_accuracy(y, model.labels_) >= 0.95
    assert model.labels_.shape == (len(X),)
    assert model.pseudo_labels_.shape == (len(X),)
    assert set(np.unique(model.pseudo_labels_)) <= set(range(4))
    # equal split: Sinkhorn labels give every cluster about n / k samples
    counts = np.bincount(model.pseudo_labels_, minlength=4)
    assert counts.min() >= 0.8 * len(X) / 4


def test_heads_of_different_sizes(blobs):
    X, _ = blobs
    model = tiny(n_clusters=[4, 7, 4], n_heads=None).fit(X)
    assert model.head_sizes_ == [4, 7, 4]
    outputs = model.module_(torch.as_tensor(X[:5]))
    assert [o.shape[1] for o in outputs] == [4, 7, 4]
    assert model.head_ in (0, 2)  # predict uses a head with n_clusters[0] clusters
    assert model.head_losses_[model.head_] == min(model.head_losses_[[0, 2]])
    assert model.predict_proba(X).shape == (len(X), 4)
    assert model.head_pseudo_labels_.shape == (3, len(X))
    assert model.head_pseudo_labels_[1].max() <= 6
    assert len(np.unique(model.head_pseudo_labels_[1])) == 7


def test_cluster_marginal_changes_cluster_sizes(blobs):
    X, _ = blobs
    marginal = np.array([0.55, 0.15, 0.15, 0.15])
    uniform = tiny(n_clusters=4).fit(X)
    skewed = tiny(n_clusters=4, cluster_marginal=marginal * 7).fit(X)  # normalised inside
    uniform_sizes = np.bincount(uniform.pseudo_labels_, minlength=4) / len(X)
    skewed_sizes = np.bincount(skewed.pseudo_labels_, minlength=4) / len(X)
    assert uniform_sizes.max() < 0.35
    np.testing.assert_allclose(skewed_sizes, marginal, atol=0.05)
    assert skewed_sizes[0] > uniform_sizes.max()


def test_marginal_applies_only_to_heads_of_the_first_size(blobs):
    X, _ = blobs
    model = tiny(n_clusters=[4, 5], cluster_marginal=[0.7, 0.1, 0.1, 0.1]).fit(X)
    other = np.bincount(model.head_pseudo_labels_[1], minlength=5) / len(X)
    assert other.max() < 0.3


def test_same_labels_with_same_random_state(blobs):
    X, _ = blobs
    a = tiny(n_clusters=4).fit(X)
    b = tiny(n_clusters=4).fit(X)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.pseudo_labels_, b.pseudo_labels_)


def test_does_not_change_global_torch_state(blobs):
    X, _ = blobs
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny(n_clusters=4).fit(X)
    torch.testing.assert_close(torch.rand(3), expected)


def test_pickle_and_predict_after_loading(blobs, tmp_path):
    X, _ = blobs
    model = tiny(n_clusters=4).fit(X)
    path = tmp_path / "sela.pkl"
    path.write_bytes(pickle.dumps(model))
    loaded = pickle.loads(path.read_bytes())
    np.testing.assert_array_equal(loaded.predict(X), model.labels_)
    np.testing.assert_allclose(loaded.predict_proba(X[:10]), model.predict_proba(X[:10]), atol=1e-6)


def test_pretext_backbone_is_used_and_not_modified():
    X, _y = make_blobs(n_samples=120, centers=3, n_features=6, random_state=1)
    pretext = SimCLR(max_epochs=1, batch_size=32, projection_dim=8, random_state=0)
    model = tiny(pretext=pretext, batch_size=32).fit(X)
    assert not hasattr(pretext, "backbone_")  # cloned, never fitted in place
    assert model.pretext_.backbone_ is not model.module_.backbone
    assert model.module_.heads[0].in_features == model.pretext_.backbone_.out_features
    assert model.predict(X).shape == (120,)


@pytest.mark.parametrize(
    ("pretext", "head_init", "expected"),
    [
        (None, "auto", "manifold"),  # vectors
        ("simclr", "auto", "manifold"),
        (None, "kmeans", "kmeans"),
        ("simclr", "random", "random"),
    ],
)
def test_head_init_resolved(one_epoch_pretexts, monkeypatch, blobs, pretext, head_init, expected):
    calls = []
    real = methods_base.kmeans_heads
    monkeypatch.setattr(
        methods_base, "kmeans_heads", lambda *a, **kw: calls.append(1) or real(*a, **kw)
    )
    X, _ = blobs
    model = tiny(pretext=pretext, head_init=head_init, batch_size=32).fit(X)
    assert model.head_init_ == expected
    assert len(calls) == (expected == "kmeans")


def test_kmeans_heads_start_from_the_kmeans_labels(blobs):
    # one update at epoch 0: the first Sinkhorn labels come from the k-means heads, so on
    # separated blobs they are already right
    X, y = blobs
    model = tiny(n_clusters=4, head_init="kmeans", max_epochs=1, n_label_updates=1).fit(X)
    assert cluster_accuracy(y, model.pseudo_labels_) > 0.93  # k-means of an untrained MLP


@pytest.mark.parametrize("shape", [(40, 1, 12, 12), (40, 12, 12)])
def test_images_from_scratch(shape):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=shape, dtype=np.uint8)
    model = tiny(batch_size=16, max_epochs=2).fit(X)
    assert model.input_shape_ == (1, 12, 12)
    np.testing.assert_array_equal(model.predict(X), model.labels_)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "params, message",
    [
        (dict(n_clusters=1), "'n_clusters' parameter of SeLa must be an int in the range"),
        (dict(n_clusters=500), r"n_clusters=500 must not exceed the number of samples \(300\)"),
        (dict(n_clusters=2.5), "'n_clusters' parameter of SeLa must be an int .* or an array-like"),
        (dict(n_clusters=[4, 1], n_heads=None), r"n_clusters\[1\] must be an integer >= 2"),
        (dict(n_clusters=[4, "a"], n_heads=None), r"n_clusters\[1\] must be an integer >= 2"),
        (dict(n_clusters=[], n_heads=None), "non-empty list"),
        (dict(n_clusters=[4, 5], n_heads=3), "n_heads=3 does not match n_clusters"),
        (dict(n_heads=0), "'n_heads' parameter of SeLa must be an int in the range"),
        (
            dict(sinkhorn_lambda=0.0),
            r"'sinkhorn_lambda' parameter of SeLa must be a float in the range \(0.0",
        ),
        (dict(sinkhorn_lambda=float("nan")), "'sinkhorn_lambda' parameter of SeLa must be a float"),
        (dict(n_label_updates=0), "'n_label_updates' parameter of SeLa must be an int"),
        (dict(n_label_updates=9, max_epochs=3), "must not exceed max_epochs"),
        (dict(n_clusters=3, cluster_marginal=[0.5, 0.5]), r"one entry per cluster, shape \(3,\)"),
        (dict(n_clusters=3, cluster_marginal=[0.5, 0.5, 0.0]), "finite and > 0"),
        (dict(n_clusters=3, cluster_marginal=[0.5, np.nan, 0.2]), "finite and > 0"),
        (
            dict(n_clusters=3, cluster_marginal="abc"),
            "'cluster_marginal' parameter of SeLa must be",
        ),
        (dict(device="tpu"), "unknown device 'tpu'"),
        (dict(pretext="moco"), "'pretext' parameter of SeLa must be a str among .*'auto'"),
        (dict(pretext="rotnet"), "RotNet needs images"),
        (dict(batch_size=1), r"'batch_size' parameter of SeLa must be an int in the range \[2"),
        (dict(head_init="centroids"), "'head_init' parameter of SeLa must be a str among"),
    ],
)
def test_bad_parameters(blobs, params, message):
    X, _ = blobs
    with pytest.raises(ValueError, match=message):
        tiny(**params).fit(X)


def test_bad_input():
    X = np.random.default_rng(0).normal(size=(30, 4))
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        tiny().fit(X)
    with pytest.raises(ValueError, match="must be 2-D"):
        tiny().fit(np.zeros((4, 2, 2, 2, 2)))
    model = tiny().fit(np.random.default_rng(0).normal(size=(30, 4)))
    with pytest.raises(ValueError, match="features"):
        model.predict(np.zeros((5, 6)))


def test_default_label_updates_once_per_epoch(blobs):
    X, _ = blobs
    model = tiny(max_epochs=4, n_label_updates=None).fit(X)
    np.testing.assert_array_equal(model.label_update_epochs_, np.arange(4))
    assert SeLa().n_label_updates is None and SeLa().max_epochs == "auto"


def test_sela_loss_uses_the_labels_of_the_batch_rows():
    """Each row's cross-entropy is against *its own* label: a model that predicts every
    sample's label with certainty has zero loss on any batch, and a shifted lookup would not."""
    n, k = 30, 3
    X = np.zeros((n, 2), dtype=np.float32)
    X[:, 0] = np.arange(n)
    data = DeviceData(X, torch.device("cpu"))
    labels = torch.stack([torch.arange(n) % k, (torch.arange(n) // 2) % k])

    class Oracle(torch.nn.Module):
        def forward(self, x):
            ids = x[:, 0].long()
            return [100.0 * F.one_hot(row[ids], k).float() for row in labels]

    objective = sela_module.SeLaObjective(lambda x: x, labels, [], 25.0, [None, None])
    torch.manual_seed(0)
    for _ in range(5):
        idx = torch.randperm(n)[:8]
        assert objective.loss(Oracle(), data, idx)["loss"].item() < 1e-6
    assert objective.head_losses.batches == 5
    wrong = sela_module.SeLaObjective(lambda x: x, labels.roll(1, dims=1), [], 25.0, [None] * 2)
    assert wrong.loss(Oracle(), data, torch.arange(n))["loss"].item() > 10
