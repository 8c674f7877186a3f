"""Nearest-neighbour mining in feature space (SCAN, Sec. 2.1), blockwise on the device."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import Tensor

from . import distributed
from ._numerics import unit_rows
from ._training import cpu_has_fast_bf16
from ._validation import check_positive_int
from .base import resolve_device, to_numpy

#: Rows and columns of a similarity tile of :func:`mine_neighbors`: a 2048 x 2048 tile stays in
#: the cache while it is screened (``docs/benchmarks.md``, "Neighbour mining").
MINING_TILE = 2048

#: Candidates beyond ``n_neighbors`` that :func:`mine_neighbors` keeps per row from the
#: reduced-precision screen and re-scores in float32; rows whose certificate fails are searched
#: again (``docs/benchmarks.md``, "Neighbour mining").
SCREEN_SLACK = 40

#: Rows re-scored together: their gathered candidates (64 x candidates x d) stay in the cache.
_RESCORE_ROWS = 64


def screen_dtype(device: torch.device) -> torch.dtype:
    """Precision of :func:`mine_neighbors`' screening products on ``device``: float16 on CUDA,
    bfloat16 on a CPU with bfloat16 instructions, float32 elsewhere (where a reduced-precision
    product is no faster)."""
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if device.type == "cpu" and cpu_has_fast_bf16() else torch.float32


@torch.no_grad()
def mine_neighbors(features: Tensor, n_neighbors: int, block_size: int = MINING_TILE) -> Tensor:
    """Indices of each row's ``n_neighbors`` most cosine-similar other rows, exactly.

    The search is exact: the result is the float32 cosine top-k, most similar first. It is
    computed in three steps, each on the features' device and in ``block_size x block_size``
    tiles, so memory stays at one tile plus ``n x (n_neighbors + SCREEN_SLACK)`` candidates:

    1. **Screen.** Every pair's similarity is computed once, in the reduced precision of
       :func:`screen_dtype` (a tile of rows i and columns j serves both i's and j's lists, since
       the similarity is symmetric). Each row keeps its ``n_neighbors + SCREEN_SLACK`` best
       candidates; a tile's entries are compared with the row's current worst candidate, so only
       the few that beat it are merged.
    2. **Re-score** the candidates in float32 and keep the best ``n_neighbors``.
    3. **Certify.** A screened similarity is within a bound ``eps`` of the float32 one: the
       rounding of the two unit rows (``|r_i| + |r_j| + |r_i||r_j|`` by Cauchy-Schwarz, ``r`` the
       rounding residual), the rounding of the product (half an ulp) and the float32
       accumulations. A row whose k-th re-scored similarity exceeds its worst screened
       candidate plus ``eps`` has all its true neighbours among the candidates. The other rows
       are searched again with a four times longer list, then in float32 against all rows.

    A row is never its own neighbour (duplicates of it are). Within a distributed fit
    (:mod:`skdeepcluster.distributed`) every process holds all the features, finds the
    neighbours of its share of the rows, and all get the whole table.

    Parameters
    ----------
    features : Tensor of shape (n, d)
    n_neighbors : int
        ``1 <= n_neighbors < n``.
    block_size : int, default=MINING_TILE
        Rows and columns of a similarity tile.

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
    with _full_precision_accumulation(unit.device):
        search = _CertifiedSearch(unit, n_neighbors, block_size, screen_dtype(unit.device))
        if (first, last) == (0, n):
            candidates = search.screen_symmetric()
        else:
            candidates = search.screen_rows(torch.arange(first, last, device=unit.device))
        top = search.certified_top(torch.arange(first, last, device=unit.device), *candidates)
    return distributed.gather_shards(top, n)


@contextlib.contextmanager
def _full_precision_accumulation(device: torch.device) -> Iterator[None]:
    """cuBLAS may accumulate float16 products in float16; the certificate assumes float32."""
    if device.type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul
    before = matmul.allow_fp16_reduced_precision_reduction
    matmul.allow_fp16_reduced_precision_reduction = False
    try:
        yield
    finally:
        matmul.allow_fp16_reduced_precision_reduction = before


class _CertifiedSearch:
    """The screen, re-score and certificate of :func:`mine_neighbors` over unit rows."""

    def __init__(self, unit: Tensor, k: int, tile: int, dtype: torch.dtype) -> None:
        self.unit, self.k, self.tile = unit, k, tile
        self.n, d = unit.shape
        self.low = unit.to(dtype)
        self.width = min(k + SCREEN_SLACK, self.n - 1)
        # rounding residual of each row, and half an ulp of the product (none in float32)
        self.residual = (self.low.float() - unit).norm(dim=1)
        self.product_ulp = 0.0 if dtype == torch.float32 else torch.finfo(dtype).eps / 2
        unit_roundoff = torch.finfo(torch.float32).eps / 2
        # two float32 accumulations of d products: the screen's and the re-score's
        self.accumulation = 2 * d * unit_roundoff / (1 - d * unit_roundoff)
        self._bytes8 = torch.arange(8, device=unit.device)

    def _similarities(self, rows: Tensor | slice, cols: slice) -> Tensor:
        """Screened similarities of ``rows`` and ``cols``, written over the previous tile's."""
        query, keys = self.low[rows], self.low[cols]
        return torch.mm(
            query, keys.T, out=self._reused("_tile", (len(query), len(keys)), query.dtype)
        )

    def _reused(self, name: str, shape: tuple[int, int], dtype: torch.dtype) -> Tensor:
        """A contiguous ``shape`` view of a buffer kept between tiles (a new tile-sized tensor
        each time costs more than the comparison written into it)."""
        size = shape[0] * shape[1]
        buffer = getattr(self, name, None)
        if buffer is None or buffer.numel() < size or buffer.dtype != dtype:
            buffer = torch.empty(size, dtype=dtype, device=self.unit.device)
            setattr(self, name, buffer)
        return buffer[:size].view(shape)

    def screen_symmetric(self) -> tuple[Tensor, Tensor]:
        """Best ``width`` screened candidates of every row, each pair's similarity computed once."""
        width = self.width
        starts = range(0, self.n, self.tile)
        blocks = [slice(s, min(s + self.tile, self.n)) for s in starts]
        values = self.unit.new_empty(self.n, width)
        indices = torch.empty(self.n, width, dtype=torch.long, device=self.unit.device)
        for block in blocks:  # the diagonal tiles give every row its first candidates
            sims = self._similarities(block, block).float()
            sims.fill_diagonal_(float("-inf"))
            best = sims.topk(min(width, sims.shape[1]), dim=1, sorted=False)
            values[block] = float("-inf")
            values[block, : best.values.shape[1]] = best.values
            indices[block, : best.indices.shape[1]] = best.indices + block.start
        for a, rows in enumerate(blocks):
            for cols in blocks[a + 1 :]:
                sims = self._similarities(rows, cols)
                self._merge_tile(values, indices, sims, rows, cols)
                self._merge_tile(values, indices, sims, rows, cols, for_columns=True)
        return values, indices

    def screen_rows(self, rows: Tensor, width: int | None = None) -> tuple[Tensor, Tensor]:
        """Best ``width`` screened candidates of ``rows`` against all rows."""
        width = self.width if width is None else width
        values = self.unit.new_full((len(rows), width), float("-inf"))
        indices = torch.zeros(len(rows), width, dtype=torch.long, device=self.unit.device)
        for start in range(0, len(rows), self.tile):
            chunk = slice(start, min(start + self.tile, len(rows)))
            query = rows[chunk]
            for col_start in range(0, self.n, self.tile):
                cols = slice(col_start, min(col_start + self.tile, self.n))
                sims = self._similarities(query, cols)
                own = (query >= cols.start) & (query < cols.stop)
                sims[own.nonzero().squeeze(1), query[own] - cols.start] = float("-inf")
                self._merge_tile(values, indices, sims, chunk, cols)
        return values, indices

    def _merge_tile(
        self,
        values: Tensor,
        indices: Tensor,
        sims: Tensor,
        rows: slice,
        cols: slice,
        for_columns: bool = False,
    ) -> None:
        """Merge the entries of the tile ``sims`` (``rows`` x ``cols``) that beat the worst
        candidate of their row, or of their column with ``for_columns`` (the tile read
        transposed, without copying it)."""
        owners, partners = (cols, rows) if for_columns else (rows, cols)
        worst = values[owners].amin(dim=1)  # the candidates are kept unsorted
        mask = self._reused("_mask", tuple(sims.shape), torch.bool)
        torch.gt(sims, worst if for_columns else worst.unsqueeze(1), out=mask)
        flat = self._flat_nonzero(mask)
        if flat.numel() == 0:
            return
        vals = sims.reshape(-1)[flat].float()
        row, col = flat // sims.shape[1], flat % sims.shape[1]
        owner, partner = row, col
        if for_columns:  # group the entries by column
            order = torch.argsort(col, stable=True)
            owner, partner, vals = col[order], row[order], vals[order]
        n_owners = owners.stop - owners.start
        counts = torch.bincount(owner, minlength=n_owners)
        slot = torch.arange(len(owner), device=owner.device) - (counts.cumsum(0) - counts)[owner]
        new_values = values.new_full((n_owners, int(counts.max())), float("-inf"))
        new_indices = indices.new_zeros(new_values.shape)
        new_values[owner, slot] = vals
        new_indices[owner, slot] = partner + partners.start
        merged = torch.cat([values[owners], new_values], dim=1)
        best = merged.topk(values.shape[1], dim=1, sorted=False)
        indices[owners] = torch.cat([indices[owners], new_indices], dim=1).gather(1, best.indices)
        values[owners] = best.values

    def _flat_nonzero(self, mask: Tensor) -> Tensor:
        """Flat positions of the True entries of ``mask``, read eight bytes at a time (the
        mask is nearly all False, and a bool scan is the screen's slowest step)."""
        flat = mask.reshape(-1)
        if flat.numel() % 8:
            return flat.nonzero().squeeze(1)
        words = flat.view(torch.int64).nonzero().squeeze(1)
        positions = (words.unsqueeze(1) * 8 + self._bytes8).reshape(-1)
        return positions[flat[positions]]

    def certified_top(
        self, rows: Tensor, values: Tensor, indices: Tensor, widen: bool = True
    ) -> Tensor:
        """The exact top k of ``rows`` from their screened candidates (``values``,
        ``indices``). Rows that fail the certificate are screened again with four times the
        candidates (``widen``), and after a second failure searched in float32."""
        exact, top = self._rescore(rows, indices)
        failed = (~self._certified(rows, exact, values)).nonzero().squeeze(1)
        if len(failed) == 0:
            return top
        if widen:
            wider = self.screen_rows(rows[failed], min(4 * values.shape[1], self.n - 1))
            top[failed] = self.certified_top(rows[failed], *wider, widen=False)
        else:
            top[failed] = self._float32_top(rows[failed])
        return top

    def _rescore(self, rows: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
        """float32 similarities of the k best candidates, most similar first, and their indices."""
        exact = self.unit.new_empty(indices.shape)
        for start in range(0, len(rows), _RESCORE_ROWS):
            part = slice(start, start + _RESCORE_ROWS)
            candidates = self.unit[indices[part]]  # (rows, width, d)
            exact[part] = torch.einsum("rd,rwd->rw", self.unit[rows[part]], candidates)
        best = exact.topk(self.k, dim=1)
        return best.values, indices.gather(1, best.indices)

    def _certified(self, rows: Tensor, exact: Tensor, values: Tensor) -> Tensor:
        """Rows whose every left-out row is provably less similar than their k-th neighbour."""
        if values.shape[1] == self.n - 1:
            return torch.ones(len(rows), dtype=torch.bool, device=rows.device)
        worst = values.amin(dim=1)
        eps = self.error_bound(self.residual[rows], self.residual.max(), worst)
        return exact[:, -1] > worst + eps

    def error_bound(self, residual_i: Tensor, residual_j: Tensor, screened: Tensor) -> Tensor:
        """Bound on |screened - float32 similarity| of rows with rounding residuals
        ``residual_i`` and ``residual_j`` (broadcast), given the screened similarity."""
        rounding = residual_i + residual_j + residual_i * residual_j  # Cauchy-Schwarz
        accumulation = self.accumulation * (1 + residual_i) * (1 + residual_j)
        return rounding + self.product_ulp * screened.abs() + accumulation

    def _float32_top(self, rows: Tensor) -> Tensor:
        """Exact float32 top k of ``rows`` against all rows (the certificate's last resort)."""
        top = torch.empty(len(rows), self.k, dtype=torch.long, device=rows.device)
        for start in range(0, len(rows), self.tile):
            part = rows[start : start + self.tile]
            sims = self.unit[part] @ self.unit.T
            sims[torch.arange(len(part), device=rows.device), part] = float("-inf")
            top[start : start + self.tile] = sims.topk(self.k, dim=1).indices
        return top


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

    Neighbours are found by :func:`mine_neighbors` (exact) in ``block_size x block_size``
    tiles on ``device``.

    Parameters
    ----------
    n_neighbors : int, default=20
        Neighbours per sample (SCAN mines 5 by default); must be smaller than the number of
        samples.
    block_size : int, default=2048
        Rows and columns of a similarity tile (:data:`MINING_TILE`); memory stays at one tile
        plus ``n_samples x (n_neighbors + SCREEN_SLACK)`` candidates.
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

    def __init__(
        self, n_neighbors: int = 20, block_size: int = MINING_TILE, device: str = "cpu"
    ) -> None:
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
