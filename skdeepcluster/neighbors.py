"""Nearest-neighbour mining in feature space (SCAN, Sec. 2.1), blockwise on the device."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import Tensor

from . import distributed
from ._numerics import unit_rows
from ._validation import check_positive_int
from .base import resolve_device, to_numpy


@torch.no_grad()
def mine_neighbors(features: Tensor, n_neighbors: int, block_size: int = 1024) -> Tensor:
    """Indices of each row's ``n_neighbors`` most cosine-similar other rows.

    Similarities are computed ``block_size`` rows at a time, so memory stays at
    ``block_size x n`` whatever ``n`` is. A row is never its own neighbour (duplicates of it are).
    Within a distributed fit (:mod:`skdeepcluster.distributed`) every process holds all the
    features, finds the neighbours of its share of the rows, and all get the whole table.

    Parameters
    ----------
    features : Tensor of shape (n, d)
    n_neighbors : int
        ``1 <= n_neighbors < n``.
    block_size : int
        Rows per block.

    Returns
    -------
    Tensor of shape (n, n_neighbors), int64, on ``features``' device, most similar first.
    """
    n = features.shape[0]
    if not 1 <= n_neighbors < n:
        raise ValueError(
            f"n_neighbors must be in [1, n_samples - 1] = [1, {n - 1}], got {n_neighbors}"
        )
    unit = unit_rows(features.float())
    first, last = distributed.shard_of(n)  # in a distributed fit: this process's queries
    out = torch.empty(last - first, n_neighbors, dtype=torch.long, device=features.device)
    for start in range(first, last, block_size):
        stop = min(start + block_size, last)
        sims = unit[start:stop] @ unit.T
        rows = torch.arange(stop - start, device=features.device)
        sims[rows, rows + start] = float("-inf")  # exclude self
        out[start - first : stop - first] = sims.topk(n_neighbors, dim=1).indices
    return distributed.gather_shards(out, n)


def neighbor_graph_embedding(
    features: Tensor, n_components: int, n_neighbors: int = 10, random_state: int | None = None
) -> Tensor:
    r"""Spectral embedding of the cosine k-nearest-neighbour graph of ``features``, rows unit norm.

    Builds the symmetrised graph :math:`W = \tfrac12 (G + G^\top)` with :math:`G_{ij} = 1` when
    :math:`j` is one of the ``n_neighbors`` most cosine-similar rows of :math:`i`
    (:func:`mine_neighbors`), and returns the ``n_components`` leading non-trivial eigenvectors
    of its normalised Laplacian (Laplacian eigenmaps, Belkin and Niyogi 2003, computed by
    :func:`sklearn.manifold.spectral_embedding`), each row scaled to unit length. Use it when
    features are meaningful only *locally* (good nearest neighbours, poor global geometry, as
    SimCLR features are: ``docs/benchmarks.md``): the embedding turns that neighbourhood
    structure into a global one.

    Parameters
    ----------
    features : Tensor of shape (n_samples, d)
    n_components : int
        Dimension of the embedding, ``1 <= n_components <= n_samples - 2`` (the trivial
        eigenvector is computed and dropped too).
    n_neighbors : int, default=10
        Neighbours per sample in the graph.
    random_state : int or None, default=None
        Seeds the eigensolver's start vector.

    Returns
    -------
    Tensor of shape (n_samples, n_components), float32, on ``features``' device.

    Warns
    -----
    UserWarning
        When the graph falls into more than ``n_components + 1`` disconnected parts (fewer are
        told apart by the embedding, and are no reason to warn).
    """
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components
    from sklearn.manifold import spectral_embedding

    n = features.shape[0]
    n_components = check_positive_int(n_components, "n_components")
    if n_components > n - 2:
        raise ValueError(f"n_components must be <= n_samples - 2 = {n - 2}, got {n_components}")
    neighbors = to_numpy(mine_neighbors(features, check_positive_int(n_neighbors, "n_neighbors")))
    rows = np.repeat(np.arange(n), neighbors.shape[1])
    graph = sparse.csr_matrix((np.ones(rows.size), (rows, neighbors.ravel())), shape=(n, n))
    graph = 0.5 * (graph + graph.T)
    n_parts = connected_components(graph, directed=False)[0]
    if n_parts > n_components + 1:
        warnings.warn(
            f"The {n_neighbors}-nearest-neighbour graph of the features falls into {n_parts} "
            f"disconnected parts, more than a {n_components}-d spectral embedding can tell "
            "apart; raise n_neighbors for a connected graph.",
            UserWarning,
            stacklevel=2,
        )
    with warnings.catch_warnings():
        # scikit-learn warns on any disconnected graph; up to n_components + 1 parts are
        # separated by the embedding (each part is one of its zero-eigenvalue directions)
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        embedding = spectral_embedding(
            graph, n_components=n_components, random_state=random_state, drop_first=True
        )
    embedding /= np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-12)
    return torch.as_tensor(embedding, dtype=torch.float32, device=features.device)


#: :func:`tsne_embedding` reduces wider features to this many principal components first.
TSNE_MAX_INPUT_DIM = 50


def tsne_embedding(features: Tensor, random_state: int | None = None) -> np.ndarray:
    """Two-dimensional t-SNE embedding of ``features`` (van der Maaten and Hinton, 2008).

    The manifold step of the vector path (as N2D embeds its autoencoder features before
    clustering them): t-SNE keeps each sample's neighbourhood and pulls clusters apart, so a
    k-means of the embedding follows the data's manifold where a k-means of the features cuts
    across it (digits as 64-d vectors: 0.79 -> 0.95 ACC, ``docs/benchmarks.md``). Features wider
    than :data:`TSNE_MAX_INPUT_DIM` are reduced by PCA first (the usual t-SNE practice, and it
    bounds the cost). scikit-learn's Barnes-Hut :class:`~sklearn.manifold.TSNE` does the work, with
    perplexity ``min(30, (n - 1) / 3)`` so that small data sets are accepted.

    Parameters
    ----------
    features : Tensor of shape (n_samples, d)
        At least 4 samples.
    random_state : int or None, default=None
        Seeds the PCA and t-SNE.

    Returns
    -------
    ndarray of shape (n_samples, 2), float32
        All zeros when every row of ``features`` is the same.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = to_numpy(features.float()).astype(np.float64)
    n = len(x)
    if n < 4:
        raise ValueError(f"a t-SNE embedding needs at least 4 samples, got {n}")
    if not np.ptp(x, axis=0).any():
        # every row the same (constant X): nothing to embed, and scikit-learn's Barnes-Hut
        # t-SNE crashes the process (segmentation fault) on identical points
        return np.zeros((n, 2), dtype=np.float32)
    if x.shape[1] > TSNE_MAX_INPUT_DIM and n > TSNE_MAX_INPUT_DIM:
        x = PCA(TSNE_MAX_INPUT_DIM, random_state=random_state).fit_transform(x)
    tsne = TSNE(
        2,
        perplexity=min(30.0, (n - 1) / 3),
        init="pca",
        random_state=random_state,
        n_jobs=torch.get_num_threads(),
    )
    return tsne.fit_transform(x).astype(np.float32)


class NeighborFeatures(np.ndarray):
    """A features array that carries the indices of each row's mined neighbours.

    ``NeighborMiner.transform`` returns it so that the clustering step after it in a ``Pipeline``
    receives features and neighbours together. It behaves as a plain ndarray otherwise; arrays
    derived from it (slices, copies, arithmetic) do not carry the neighbours, since their rows no
    longer match the indices.

    Attributes
    ----------
    neighbors : ndarray of shape (n_samples, n_neighbors), int64
    """

    neighbors: np.ndarray | None = None

    def __array_finalize__(self, obj: Any) -> None:
        self.neighbors = None

    @classmethod
    def wrap(cls, features: np.ndarray, neighbors: np.ndarray) -> NeighborFeatures:
        out = np.asarray(features).view(cls)
        out.neighbors = neighbors
        return out

    def __reduce__(self):  # pickles as a plain ndarray plus its neighbours
        return (NeighborFeatures.wrap, (np.asarray(self), self.neighbors))


def neighbors_of(X: Any, n_samples: int | None = None) -> np.ndarray | None:
    """The mined neighbours carried by ``X`` (a :class:`NeighborFeatures`) as int64, else None;
    with ``n_samples``, checked to be a ``(n_samples, k)`` table of row indices."""
    neighbors = getattr(X, "neighbors", None)
    if neighbors is None:
        return None
    neighbors = np.asarray(neighbors)
    if n_samples is not None:
        if neighbors.ndim != 2 or neighbors.shape[0] != n_samples or neighbors.shape[1] < 1:
            raise ValueError(
                f"the neighbours carried by X must be (n_samples, k) = ({n_samples}, k); got "
                f"shape {neighbors.shape}"
            )
        if neighbors.min() < 0 or neighbors.max() >= n_samples:
            raise ValueError("the neighbours carried by X must index rows of X")
    return neighbors.astype(np.int64)


class NeighborMiner(TransformerMixin, BaseEstimator):
    """Mine each sample's nearest neighbours (cosine similarity) in feature space.

    ``transform(X)`` returns ``X`` unchanged as a :class:`NeighborFeatures` array whose
    ``neighbors`` attribute holds, for each row, the indices of its ``n_neighbors`` most similar
    *other rows of the same X*. So ``make_pipeline(SimCLR(), NeighborMiner(), SCAN(pretext=None))``
    passes features and neighbours to SCAN, and ``GridSearchCV`` can index the raw X freely: the
    neighbours are always mined inside the data a step receives. The miner is therefore stateless
    (``fit`` only validates and records the number of features).

    Similarities are computed in blocks on ``device``, so memory stays at ``block_size x n``.

    Parameters
    ----------
    n_neighbors : int, default=20
        Neighbours per sample (SCAN mines 5 by default); must be smaller than the number of
        samples.
    block_size : int, default=1024
        Rows per similarity block.
    device : str or torch.device, default="cpu"
        Where the similarities are computed.

    Attributes
    ----------
    n_features_in_ : int
    neighbors_ : ndarray of shape (n_samples, n_neighbors)
        The neighbours mined on the data ``fit`` saw.

    Examples
    --------
    >>> import numpy as np
    >>> from skdeepcluster import NeighborMiner
    >>> X = np.array([[0., 1.], [0., 1.1], [1., 0.], [1.1, 0.]])
    >>> NeighborMiner(n_neighbors=1).fit_transform(X).neighbors.ravel().tolist()
    [1, 0, 3, 2]
    """

    def __init__(self, n_neighbors: int = 20, block_size: int = 1024, device: str = "cpu") -> None:
        self.n_neighbors = n_neighbors
        self.block_size = block_size
        self.device = device

    def _mine(self, X: np.ndarray) -> np.ndarray:
        check_positive_int(self.n_neighbors, "n_neighbors")
        check_positive_int(self.block_size, "block_size")
        if self.n_neighbors >= X.shape[0]:
            raise ValueError(
                f"n_neighbors={self.n_neighbors} must be smaller than the number of "
                f"samples ({X.shape[0]})"
            )
        if X.dtype == np.float64:
            # cosine neighbours do not depend on a row's scale: unit rows in float64, so that
            # the float32 copy neither overflows (|x| > 3.4e38) nor underflows
            X = to_numpy(unit_rows(torch.from_numpy(np.require(X, requirements="W"))))
        features = torch.as_tensor(
            np.require(X, requirements="W"), dtype=torch.float32, device=resolve_device(self.device)
        )
        return to_numpy(mine_neighbors(features, self.n_neighbors, self.block_size))

    def fit(self, X: Any, y: Any = None) -> NeighborMiner:
        """Validate the parameters and mine the neighbours of ``X`` (kept as ``neighbors_``)."""
        X = validate_data(self, X, ensure_min_samples=2, dtype=(np.float32, np.float64))
        self.neighbors_ = self._mine(X)
        return self

    def transform(self, X: Any) -> NeighborFeatures:
        """``X`` with the neighbours of each row among the rows of ``X``."""
        check_is_fitted(self, "neighbors_")
        X = validate_data(
            self, X, reset=False, ensure_min_samples=2, dtype=(np.float32, np.float64)
        )
        return NeighborFeatures.wrap(X, self._mine(X))

    def fit_transform(self, X: Any, y: Any = None) -> NeighborFeatures:
        self.fit(X)
        return NeighborFeatures.wrap(
            validate_data(self, X, reset=False, dtype=(np.float32, np.float64)), self.neighbors_
        )
