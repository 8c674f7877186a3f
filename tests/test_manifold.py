"""The manifold start of the vector path: t-SNE embedding, its k-means partitions, linear heads
fitted to a partition, and the short cross-entropy stage that makes a method start from them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score
from torch import nn

from skdeepcluster import C2BIN, DRC, LSDC, SCAN, AutoEncoder, SeLa
from skdeepcluster import heads as heads_module
from skdeepcluster.augment import MarginalCorruption
from skdeepcluster.heads import fit_linear_head, manifold_partition
from skdeepcluster.methods._base import PartitionObjective
from skdeepcluster.neighbors import tsne_embedding


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(150, n_features=8, centers=3, cluster_std=0.5, random_state=0)
    return X.astype(np.float32), y


def test_tsne_embedding_is_2d_float32_and_seeded(blobs):
    X, _ = blobs
    a = tsne_embedding(torch.tensor(X), random_state=0)
    b = tsne_embedding(torch.tensor(X), random_state=0)
    assert a.shape == (len(X), 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)


def test_tsne_embedding_reduces_wide_features_and_accepts_few_samples():
    wide = torch.randn(60, 80)  # > TSNE_MAX_INPUT_DIM columns: PCA first
    assert tsne_embedding(wide, random_state=0).shape == (60, 2)
    assert tsne_embedding(torch.randn(5, 3), random_state=0).shape == (5, 2)  # perplexity 4/3


def test_tsne_embedding_refuses_fewer_than_four_samples():
    with pytest.raises(ValueError, match="at least 4 samples, got 3"):
        tsne_embedding(torch.randn(3, 2))


def test_manifold_partition_recovers_separated_clusters(blobs):
    X, y = blobs
    rows, labels = manifold_partition(torch.tensor(X), [3, 5], seed=0)
    np.testing.assert_array_equal(rows, np.arange(len(X)))
    assert len(labels) == 2 and labels[0].dtype == np.int64
    assert adjusted_rand_score(y, labels[0]) == pytest.approx(1.0)
    assert len(np.unique(labels[1])) == 5


def test_manifold_partition_embeds_a_sorted_subset_of_large_data(monkeypatch, blobs):
    monkeypatch.setattr(heads_module, "MANIFOLD_MAX_SAMPLES", 40)
    X, _ = blobs
    rows, labels = manifold_partition(torch.tensor(X), [3], seed=0)
    assert len(rows) == 40 and len(np.unique(rows)) == 40
    assert np.all(np.diff(rows) > 0) and labels[0].shape == (40,)


def test_fit_linear_head_reproduces_a_linear_partition_with_bounded_logits(blobs):
    X, y = blobs
    head = nn.Linear(X.shape[1], 3)
    agreement = fit_linear_head(head, torch.tensor(X), torch.tensor(y))
    assert agreement == 1.0
    logits = head(torch.tensor(X))
    np.testing.assert_array_equal(logits.argmax(1).numpy(), y)
    # the weight decay keeps separable data from driving the logits to infinity
    assert torch.isfinite(logits).all() and float(logits.detach().abs().max()) < 1e3


def test_partition_objective_is_the_mean_cross_entropy_over_labelled_samples():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    module = lambda x: [logits[x.long()]]  # noqa: E731 - a one-head "module" indexed by sample
    targets = torch.tensor([[0, 1, -1]])  # the third sample is outside the partition
    loss = PartitionObjective(targets).loss(module, torch.arange(3.0), torch.arange(3))["loss"]
    expected = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_partition_objective_is_zero_not_nan_without_labelled_samples():
    module = lambda x: [torch.zeros(len(x), 4, requires_grad=True)]  # noqa: E731
    targets = torch.full((1, 3), -1)
    loss = PartitionObjective(targets).loss(module, torch.zeros(3), torch.arange(3))["loss"]
    assert float(loss) == 0.0


def test_partition_objective_of_uniform_logits_is_log_k():
    module = lambda x: [torch.zeros(len(x), 4), torch.zeros(len(x), 4)]  # noqa: E731
    targets = torch.tensor([[0, 1, 2], [3, 3, 0]])
    loss = PartitionObjective(targets).loss(module, torch.zeros(3), torch.arange(3))["loss"]
    assert float(loss) == pytest.approx(math.log(4), rel=1e-6)  # the mean over heads too


@pytest.mark.parametrize(
    ("cls", "kwargs", "n_heads"),
    [
        (SeLa, dict(max_epochs=1, n_heads=2), 2),
        (C2BIN, dict(max_epochs=1, head_sizes=[3, 6], hidden_dim=16, projection_dim=8), 2),
        (DRC, dict(max_epochs=1), 1),
        (LSDC, dict(max_epochs=1, pretext=None), 1),
        (SCAN, dict(max_epochs=1, self_label_epochs=0, n_heads=2, pretext=None), 2),
    ],
)
def test_vectors_start_from_the_manifold_partition(blobs, cls, kwargs, n_heads):
    X, _ = blobs
    model = cls(n_clusters=3, batch_size=32, random_state=0, **kwargs).fit(X)
    assert model.head_init_ == "manifold"  # "auto" on vectors
    assert "manifold_start" in model.histories_ and len(model.histories_["manifold_start"]) >= 5
    assert len(model.manifold_agreement_) == n_heads
    assert min(model.manifold_agreement_) > 0.95


def test_the_manifold_start_finds_separated_clusters(blobs):
    X, y = blobs
    start = DRC(n_clusters=3, max_epochs=1, lr=1e-6, batch_size=32, random_state=0).fit(X)
    assert adjusted_rand_score(y, start.labels_) > 0.95  # (a 1e-6 lr leaves the start as it is)


def test_manifold_start_is_not_the_default_for_images():
    X = np.random.default_rng(0).random((40, 8, 8), dtype=np.float32)
    model = DRC(n_clusters=3, pretext=None, max_epochs=1, batch_size=16, random_state=0).fit(X)
    assert model.head_init_ == "random" and "manifold_start" not in model.histories_
    forced = DRC(n_clusters=3, pretext=None, head_init="manifold", max_epochs=1, batch_size=16).fit(
        X
    )  # images are flattened for the embedding
    assert len(forced.manifold_agreement_) == 1


# ----------------------------------------------------------------------------- SCARF and the AE


def test_marginal_corruption_draws_each_entry_from_its_own_column():
    pool = torch.tensor([[1.0, 10.0, 100.0], [2.0, 20.0, 200.0]])
    x = torch.zeros(500, 3)
    out = MarginalCorruption(pool, prob=1.0)(x)
    for j in range(3):  # every entry replaced, by a value of its own feature only
        assert set(out[:, j].tolist()) == set(pool[:, j].tolist())


@pytest.mark.parametrize("prob", [0.0, 0.3])
def test_marginal_corruption_replaces_the_asked_fraction(prob):
    torch.manual_seed(0)
    pool = torch.full((4, 50), -1.0)
    out = MarginalCorruption(pool, prob=prob)(torch.ones(200, 50))
    assert float((out == -1).float().mean()) == pytest.approx(prob, abs=0.02)


def test_autoencoder_learns_to_reconstruct_and_embeds_in_its_width(blobs):
    X, _ = blobs
    ae = AutoEncoder(hidden=(32,), embedding_dim=4, max_epochs=30, batch_size=32, random_state=0)
    embedding = ae.fit_transform(X)
    assert embedding.shape == (len(X), 4) and embedding.dtype == np.float32
    losses = ae.history_[:, "train_loss"]
    assert ae.n_epochs_ == 30 and losses[-1] < 0.5 * losses[0]
    assert ae.backbone_.out_features == 4


def test_autoencoder_refuses_images():
    with pytest.raises(ValueError, match="AutoEncoder is for feature vectors"):
        AutoEncoder(max_epochs=1).fit(np.zeros((10, 8, 8), dtype=np.float32))


def test_autoencoder_is_a_named_pretext_of_the_methods(blobs):
    X, _ = blobs
    model = DRC(n_clusters=3, pretext="autoencoder", max_epochs=1, batch_size=32, random_state=0)
    model.set_params(pretext__max_epochs=2, pretext__hidden=(16,))
    model.fit(X)
    assert isinstance(model.pretext_, AutoEncoder) and model.pretext_.n_epochs_ == 2
    assert model.module_.backbone.out_features == 10
