"""Neighbour mining: agreement with a brute-force cosine top-k, blocks, NeighborMiner's output."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from skdeepcluster import NeighborFeatures, NeighborMiner
from skdeepcluster.metrics import cluster_accuracy
from skdeepcluster.neighbors import mine_neighbors, neighbor_graph_embedding


def brute_force_similarities(X):
    """Cosine similarity of every pair of rows, float64, with the diagonal excluded."""
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    return sims


def assert_valid_top_k(X, neighbors, k):
    """``neighbors`` are the k most similar other rows, most similar first (ties in any order)."""
    sims = brute_force_similarities(X.astype(np.float64))
    n = X.shape[0]
    assert neighbors.shape == (n, k)
    assert not (neighbors == np.arange(n)[:, None]).any(), "a row is its own neighbour"
    for i in range(n):
        assert len(set(neighbors[i])) == k
        got = sims[i, neighbors[i]]
        expected = np.sort(sims[i])[::-1][:k]
        np.testing.assert_allclose(got, expected, atol=1e-5)  # same similarities, same order


@st.composite
def features(draw):
    n = draw(st.integers(3, 40))
    d = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**16))
    X = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    k = draw(st.integers(1, n - 1))
    return X, k


@given(features(), st.integers(1, 50))
def test_mine_neighbors_matches_brute_force_for_any_block_size(data, block_size):
    X, k = data
    neighbors = mine_neighbors(torch.from_numpy(X), k, block_size=block_size).numpy()
    assert neighbors.dtype == np.int64
    assert_valid_top_k(X, neighbors, k)
    # without ties (continuous random data) the result does not depend on the blocks at all
    whole = mine_neighbors(torch.from_numpy(X), k, block_size=len(X)).numpy()
    np.testing.assert_array_equal(neighbors, whole)


def test_mine_neighbors_agrees_with_sklearn():
    from sklearn.neighbors import NearestNeighbors

    X = np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32)
    k = 7
    ours = mine_neighbors(torch.from_numpy(X), k, block_size=16).numpy()
    # sklearn returns each point first (distance 0): ask for one more and drop it
    theirs = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(X).kneighbors(X)[1][:, 1:]
    np.testing.assert_array_equal(ours, theirs)


def test_mine_neighbors_never_returns_self_even_with_duplicates():
    X = np.repeat(np.eye(3, dtype=np.float32), 2, axis=0)  # every row has one exact duplicate
    neighbors = mine_neighbors(torch.from_numpy(X), 1, block_size=4).numpy().ravel()
    assert neighbors.tolist() == [1, 0, 3, 2, 5, 4]


@pytest.mark.parametrize("k", [0, 5, 6])
def test_mine_neighbors_rejects_bad_n_neighbors(k):
    with pytest.raises(ValueError, match="n_neighbors must be in"):
        mine_neighbors(torch.randn(5, 2), k)


def test_neighbor_miner_transform_output():
    X = np.random.default_rng(1).normal(size=(25, 4))
    miner = NeighborMiner(n_neighbors=4, block_size=7)
    out = miner.fit_transform(X)
    assert isinstance(out, NeighborFeatures)
    assert out.neighbors.shape == (25, 4)
    np.testing.assert_array_equal(np.asarray(out), X)  # the features pass through unchanged
    np.testing.assert_array_equal(out.neighbors, miner.neighbors_)
    assert_valid_top_k(X, out.neighbors, 4)
    # transform mines among the rows it is given
    part = miner.transform(X[:10])
    assert part.neighbors.shape == (10, 4)
    assert part.neighbors.max() < 10
    assert_valid_top_k(X[:10], part.neighbors, 4)


def test_neighbor_features_derived_arrays_drop_neighbors_pickle_keeps_them():
    X = np.random.default_rng(2).normal(size=(12, 3))
    out = NeighborMiner(n_neighbors=3).fit_transform(X)
    assert out[:5].neighbors is None  # rows no longer match the indices
    assert out.copy().neighbors is None
    assert (out * 2).neighbors is None
    loaded = pickle.loads(pickle.dumps(out))
    assert isinstance(loaded, NeighborFeatures)
    np.testing.assert_array_equal(loaded.neighbors, out.neighbors)
    np.testing.assert_array_equal(np.asarray(loaded), X)


def test_neighbor_miner_errors():
    X = np.random.default_rng(3).normal(size=(5, 2))
    with pytest.raises(ValueError, match="must be smaller than the number of samples"):
        NeighborMiner(n_neighbors=5).fit(X)
    with pytest.raises(ValueError, match="n_neighbors must be an integer >= 1"):
        NeighborMiner(n_neighbors=0).fit(X)
    miner = NeighborMiner(n_neighbors=2).fit(X)
    with pytest.raises(ValueError, match="features"):
        miner.transform(np.zeros((5, 3)))


def test_neighbor_graph_embedding_unrolls_non_convex_clusters():
    """Two concentric rings: k-means on the raw points splits them by side, on the embedding of
    their neighbour graph by ring."""
    from sklearn.cluster import KMeans
    from sklearn.datasets import make_circles

    X, y = make_circles(400, factor=0.3, noise=0.03, random_state=0)
    # a constant third coordinate: directions (cosine neighbours) then follow the plane's layout
    feats = torch.as_tensor(np.c_[X, np.full(400, 5.0)], dtype=torch.float32)
    with warnings.catch_warnings():  # the two rings are two components of the graph: the point
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        emb = neighbor_graph_embedding(feats, n_components=2, n_neighbors=5, random_state=0)
    assert emb.shape == (400, 2) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(400))
    raw = KMeans(2, n_init=5, random_state=0).fit_predict(X)
    spectral = KMeans(2, n_init=5, random_state=0).fit_predict(emb.numpy())
    assert cluster_accuracy(y, raw) < 0.7 and cluster_accuracy(y, spectral) > 0.95


def test_neighbor_graph_embedding_bad_input():
    feats = torch.randn(10, 3)
    with pytest.raises(ValueError, match="n_components must be <= n_samples - 2 = 8"):
        neighbor_graph_embedding(feats, n_components=9)
    with pytest.raises(ValueError, match="n_components must be an integer >= 1"):
        neighbor_graph_embedding(feats, n_components=0)
