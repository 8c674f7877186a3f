"""Neighbour mining: agreement with a brute-force cosine top-k, blocks, NeighborMiner's output."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from skdeepcluster import NeighborFeatures, NeighborMiner
from skdeepcluster import neighbors as neighbors_module
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
    if X.shape[1] > 1:  # one-dimensional rows all have cosine +-1: ties in any order
        # without ties (continuous random data) the result does not depend on the tiles at all
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


# ------------------------------------------------------------- screen, re-score, certificate

SCREENS = [torch.float32, torch.bfloat16]


@pytest.fixture(params=SCREENS, ids=lambda dtype: str(dtype).removeprefix("torch."))
def screen(request, monkeypatch):
    """Run the search with each screening precision, whatever this CPU would choose."""
    monkeypatch.setattr(neighbors_module, "screen_dtype", lambda device: request.param)
    return request.param


def exact_top_k(X, k):
    sims = brute_force_similarities(X.astype(np.float64))
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("slack", [0, 3, 24])
def test_the_screen_finds_the_exact_top_k_over_many_tiles(screen, slack, monkeypatch):
    monkeypatch.setattr(neighbors_module, "SCREEN_SLACK", slack)
    X = np.random.default_rng(1).normal(size=(301, 16)).astype(np.float32)
    got = mine_neighbors(torch.from_numpy(X), 7, block_size=64).numpy()
    np.testing.assert_array_equal(got, exact_top_k(X, 7))


def test_near_ties_the_screen_cannot_see_are_certified_in_float32(screen, monkeypatch):
    """Rows scattered by 0.08 around one direction have neighbours' cosines 1e-6 to 1e-3
    apart, under one bfloat16 step (2**-9).

    The bfloat16 screen ranks them at random, so the certificate must fail and send the rows to
    the wider screen, then to float32, which returns the exact order. With the certificate
    switched off, this test fails.
    """
    monkeypatch.setattr(neighbors_module, "SCREEN_SLACK", 0)
    rng = np.random.default_rng(2)
    X = (rng.normal(size=(1, 8)) + 0.08 * rng.normal(size=(60, 8))).astype(np.float32)
    exact = exact_top_k(X, 5)
    sims = brute_force_similarities(X.astype(np.float64))
    gaps = -np.diff(np.sort(sims, axis=1)[:, ::-1][:, :6], axis=1)
    assert gaps.min() > 1e-6, "the exact order must be well defined in float32"
    assert gaps.max() < 2.0**-9, "the bfloat16 screen must not be able to tell the rows apart"

    searches = []
    original = neighbors_module._CertifiedSearch._float32_top
    monkeypatch.setattr(
        neighbors_module._CertifiedSearch,
        "_float32_top",
        lambda self, rows: searches.append(len(rows)) or original(self, rows),
    )
    got = mine_neighbors(torch.from_numpy(X), 5, block_size=16).numpy()
    np.testing.assert_array_equal(got, exact)
    if screen == torch.bfloat16:
        assert searches and sum(searches) > 0, "no row fell back to float32"


@pytest.mark.parametrize("spread", [1.0, 0.08], ids=["scattered", "clustered"])
def test_the_certificate_bound_holds_for_every_pair(screen, spread):
    """|screened - float32 similarity| <= the certificate's bound, on every pair of a tile.

    Scattered rows (cosines near 0) stress the rounding of the rows, clustered rows (cosines
    near 1) the rounding of the product: each term of the bound is needed by one of the two.
    """
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(1, 8)) + spread * rng.normal(size=(200, 8))
    unit = neighbors_module.unit_rows(torch.as_tensor(rows, dtype=torch.float32))
    search = neighbors_module._CertifiedSearch(unit, 5, 256, screen)
    screened = search._similarities(slice(0, 200), slice(0, 200)).float()
    exact = unit.double() @ unit.double().T
    residual = search.residual.double()
    bound = search.error_bound(residual[:, None], residual[None, :], screened.double())
    assert ((screened.double() - exact).abs() <= bound).all()
    if screen == torch.bfloat16:  # the bound is not vacuous: bfloat16 errs by far more than float32
        assert (screened.double() - exact).abs().max() > 1e-4
