r"""Sinkhorn-Knopp solver for the SeLa self-labelling step.

SeLa (Asano, Rupprecht & Vedaldi, "Self-labelling via simultaneous
clustering and representation learning", ICLR 2020) turns the network's
class probabilities into pseudo-labels that split the data evenly over the
clusters. Eq. (7) of the paper writes the pseudo-label matrix as

.. math::

    Q = \operatorname{diag}(\alpha)\, P^{\lambda}\, \operatorname{diag}(\beta),

where the power is taken elementwise and the scaling vectors are chosen so
that :math:`Q` has prescribed row and column sums. The paper stores
:math:`P` as clusters x samples. This module follows the torch convention
samples x clusters, so with ``N`` samples and ``K`` clusters

.. math::

    Q_{ik} = u_i\, P_{ik}^{\lambda}\, v_k, \qquad
    \sum_k Q_{ik} = c_i = 1/N, \qquad \sum_i Q_{ik} = r_k,

with ``r`` the cluster marginal (uniform ``1/K`` unless given).
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

__all__ = ["SinkhornResult", "sinkhorn_knopp"]

@dataclass(frozen=True)
class SinkhornResult:
    """Output of :func:`sinkhorn_knopp`.

    Attributes
    ----------
    plan : torch.Tensor of shape (n_samples, n_clusters)
        The transport plan :math:`Q`. Each row sums to ``1 / n_samples``
        (exactly up to rounding: the last half-step rescales the rows) and
        column ``k`` sums to ``r_k`` up to ``marginal_error``. Same device as
        the input; dtype is the input's, or float32 for half-precision
        inputs. Use :attr:`soft_labels` for rows that sum to one.
    labels : torch.Tensor of shape (n_samples,) or None
        Hard pseudo-labels ``plan.argmax(1)`` (int64) when requested.
    marginal_error : float
        L1 deviation of the cluster sums of ``plan`` from the cluster
        marginal, ``sum_k |sum_i plan[i, k] - r_k|``, measured on the
        returned plan. This is twice the total-variation distance, i.e. the
        error is at most this fraction of the unit mass.
    n_iter : int
        Number of Sinkhorn iterations (row plus column update) done.
    converged : bool
        Whether ``marginal_error`` went below ``tol`` within ``max_iter``.
    n_log_steps : int
        How many of the iterations were done in the log domain because the
        scaling vectors left the safe range of the dtype (see Notes of
        :func:`sinkhorn_knopp`).
    """

    plan: torch.Tensor
    labels: torch.Tensor | None
    marginal_error: float
    n_iter: int
    converged: bool
    n_log_steps: int

    @property
    def soft_labels(self) -> torch.Tensor:
        """Plan rescaled so that every row sums to one, shape (N, K)."""
        return self.plan * self.plan.shape[0]


# ----------------------------------------------------------------------------
# input handling
# ----------------------------------------------------------------------------


def _as_float_tensor(log_probs: object) -> torch.Tensor:
    """Return ``log_probs`` as a floating tensor in the compute dtype."""
    x = torch.as_tensor(log_probs)
    if not x.is_floating_point():
        raise ValueError(
            f"log_probs must have a floating dtype, got {x.dtype}."
        )
    if x.ndim != 2:
        raise ValueError(
            f"log_probs must be 2-D (n_samples, n_clusters), got shape "
            f"{tuple(x.shape)}."
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"log_probs must be non-empty, got shape {tuple(x.shape)}.")
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return x


def _check_scalars(lam: float, tol: float, max_iter: int, check_every: int) -> None:
    """Validate the scalar parameters."""
    for name, val in (("lam", lam), ("tol", tol)):
        if not (
            isinstance(val, numbers.Real)
            and not isinstance(val, bool)
            and math.isfinite(val)
            and val > 0
        ):
            raise ValueError(f"{name} must be a finite number > 0, got {val!r}.")
    for name, val in (("max_iter", max_iter), ("check_every", check_every)):
        if not (isinstance(val, numbers.Integral) and not isinstance(val, bool) and val >= 1):
            raise ValueError(f"{name} must be an integer >= 1, got {val!r}.")


def _cluster_marginal(
    cluster_marginal: object, n_clusters: int, like: torch.Tensor
) -> torch.Tensor:
    """Return the normalised cluster marginal ``r`` on ``like``'s device/dtype."""
    if cluster_marginal is None:
        return torch.full((n_clusters,), 1.0 / n_clusters, dtype=like.dtype, device=like.device)
    r = torch.as_tensor(cluster_marginal).to(device=like.device, dtype=torch.float64)
    if r.ndim != 1 or r.shape[0] != n_clusters:
        raise ValueError(
            f"cluster_marginal must have shape ({n_clusters},), got {tuple(r.shape)}."
        )
    if not bool(torch.isfinite(r).all()) or not bool((r > 0).all()):
        raise ValueError("cluster_marginal must be finite and strictly positive.")
    return (r / r.sum()).to(like.dtype)


def _row_max(x: torch.Tensor) -> torch.Tensor:
    """Per-row maximum; checks for NaN, +inf and rows/columns without support."""
    m = x.amax(dim=1)  # NaN and +inf propagate into the row maximum
    if not bool(torch.isfinite(m).all()):
        if bool(torch.isnan(m).any()):
            raise ValueError("log_probs contains NaN.")
        if bool((m == math.inf).any()):
            raise ValueError("log_probs contains +inf.")
        raise ValueError(
            "Every row (sample) of log_probs needs at least one finite entry; "
            "found a row that is all -inf."
        )
    if not bool((x.amax(dim=0) > -math.inf).all()):
        raise ValueError(
            "Every column (cluster) of log_probs needs at least one finite "
            "entry; found a column that is all -inf."
        )
    return m


# ----------------------------------------------------------------------------
# numerical kernels
# ----------------------------------------------------------------------------


def _log_kernel(x: torch.Tensor, row_max: torch.Tensor, lam: float) -> torch.Tensor:
    """Row-stabilised log kernel ``lam * (x - max_k x)`` (a new tensor, <= 0)."""
    return (x - row_max[:, None]).mul_(lam)


def _exp_kernel(
    x: torch.Tensor, row_max: torch.Tensor, lam: float, f: torch.Tensor, g: torch.Tensor
) -> torch.Tensor:
    """Kernel ``exp(lam * (x - max) + f_i + g_k)`` with underflow flushed to 0.

    Exponents below ``0.9 * log(tiny)`` are set to exactly zero instead of
    producing subnormals, which are both meaningless here and very slow in
    the vectorised ``exp`` on CPU.
    """
    k = _log_kernel(x, row_max, lam).add_(f[:, None]).add_(g[None, :])
    floor = 0.9 * math.log(torch.finfo(k.dtype).tiny)
    k.clamp_(min=floor)
    flushed = k == floor
    k.exp_()
    return k.masked_fill_(flushed, 0.0)


def _log_step(
    x: torch.Tensor,
    row_max: torch.Tensor,
    lam: float,
    g: torch.Tensor,
    log_c: float,
    log_r: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Sinkhorn iteration in the log domain (rows, then columns).

    Returns the potentials ``(f, g)`` with ``f_i = log c - LSE_k(L_ik + g_k)``
    and then ``g_k = log r_k - LSE_i(L_ik + f_i)``. Never over/underflows.
    """
    f = log_c - torch.logsumexp(_log_kernel(x, row_max, lam).add_(g[None, :]), dim=1)
    g = log_r - torch.logsumexp(_log_kernel(x, row_max, lam).add_(f[:, None]), dim=0)
    return f, g


def _scaling_pass(
    kernel: torch.Tensor, v: torch.Tensor, c: float, block_rows: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row update ``u = c / (G v)`` followed by ``s = G^T u``.

    The rows are processed in blocks so that each block of ``G`` is read from
    memory once and reused from cache for the transposed product; with
    ``block_rows >= N`` this is two plain matrix-vector products.
    """
    n = kernel.shape[0]
    if block_rows >= n:
        u = torch.mv(kernel, v).reciprocal_().mul_(c)
        return u, torch.mv(kernel.T, u)
    u = torch.empty(n, dtype=kernel.dtype, device=kernel.device)
    s = torch.zeros(kernel.shape[1], dtype=kernel.dtype, device=kernel.device)
    for start in range(0, n, block_rows):
        block = kernel[start : start + block_rows]
        u_block = u[start : start + block_rows]
        torch.mv(block, v, out=u_block)
        u_block.reciprocal_().mul_(c)
        s.addmv_(block.T, u_block)
    return u, s


def _default_block_rows(kernel: torch.Tensor) -> int:
    """About 1 MiB of kernel per block on CPU; one block on accelerators."""
    if kernel.device.type != "cpu":
        return kernel.shape[0]
    return max(1, (1 << 20) // (kernel.shape[1] * kernel.element_size()))


def _final_plan(
    kernel: torch.Tensor,
    v: torch.Tensor,
    c: float,
    x: torch.Tensor,
    row_max: torch.Tensor,
    lam: float,
    g: torch.Tensor,
) -> torch.Tensor:
    """Plan ``diag(u) G diag(v)`` after a last row update (in place on ``G``).

    Falls back to a log-domain row update if some row of ``G v`` underflowed.
    """
    u = torch.mv(kernel, v).reciprocal_().mul_(c)
    if bool(torch.isfinite(u).all()):
        return kernel.mul_(u[:, None]).mul_(v[None, :])
    del kernel
    g = g + v.log()
    f = math.log(c) - torch.logsumexp(_log_kernel(x, row_max, lam).add_(g[None, :]), dim=1)
    return _exp_kernel(x, row_max, lam, f, g)


# ----------------------------------------------------------------------------
# public solver
# ----------------------------------------------------------------------------


def sinkhorn_knopp(
    log_probs: torch.Tensor | np.ndarray,
    lam: float = 25.0,
    cluster_marginal: torch.Tensor | np.ndarray | None = None,
    tol: float | None = None,
    max_iter: int = 1000,
    return_labels: bool = False,
    check_every: int | None = None,
) -> SinkhornResult:
    r"""Equipartitioned pseudo-labels by Sinkhorn-Knopp (SeLa, eq. 7).

    Solves for :math:`Q = \operatorname{diag}(\alpha) P^{\lambda}
    \operatorname{diag}(\beta)` (Asano, Rupprecht & Vedaldi, ICLR 2020,
    eq. 7), here in samples x clusters layout,
    :math:`Q_{ik} = \alpha_i P_{ik}^{\lambda} \beta_k`, such that every
    sample carries mass :math:`1/N` and cluster :math:`k` receives mass
    :math:`r_k`. ``N`` need not be a multiple of ``K``.
    This is the entropy-regularised optimal transport problem
    :math:`\min_Q \langle Q, -\log P\rangle - \frac{1}{\lambda} H(Q)` over
    the transport polytope :math:`U(r, c)`.

    Parameters
    ----------
    log_probs : torch.Tensor or ndarray of shape (n_samples, n_clusters)
        Log class probabilities :math:`\log P` (e.g. ``log_softmax`` of the
        logits). Because any per-row shift is absorbed into :math:`\alpha`,
        raw logits give the same result. Entries may be ``-inf``
        (probability zero: that sample is never put in that cluster) as
        long as every row and every column has a finite entry; NaN and
        ``+inf`` are rejected. float32 and float64 are computed in their
        own dtype, float16/bfloat16 are upcast to float32. The computation
        runs on the tensor's device.
    lam : float, default=25.0
        Regularisation strength :math:`\lambda > 0` (the paper's default is
        25). Larger values give harder assignments and need more iterations.
    cluster_marginal : array-like of shape (n_clusters,), default=None
        Target cluster proportions :math:`r`, strictly positive; normalised
        to sum to one. ``None`` means uniform ``1/K``.
    tol : float, default=None
        Stop when the L1 deviation of the cluster sums from :math:`r` is at
        most ``tol``. ``None`` means ``1e-6`` for float64 and ``1e-5`` for
        float32 (whose rounding floor is around ``1e-6``).
    max_iter : int, default=1000
        Maximum number of iterations. A :class:`~sklearn.exceptions.\
ConvergenceWarning` is issued if ``tol`` is not reached.
    return_labels : bool, default=False
        Also return the hard labels ``plan.argmax(1)``.
    check_every : int, default=None
        Check convergence and numerical range every this many iterations
        (each check synchronises with the device). ``None``: every
        iteration on CPU, every 10 on other devices.

    Returns
    -------
    SinkhornResult
        ``plan`` (the matrix :math:`Q`, rows summing to ``1/N``),
        ``labels``, ``marginal_error`` (L1 error of the cluster sums of the
        returned plan), ``n_iter``, ``converged``, ``n_log_steps``.

    Raises
    ------
    ValueError
        If ``log_probs`` is not a non-empty 2-D floating array, contains NaN
        or ``+inf``, or has a row or column that is all ``-inf``; if
        ``cluster_marginal`` has the wrong length or non-positive entries;
        if ``lam`` or ``tol`` is not a finite positive number, or
        ``max_iter``/``check_every`` is not a positive integer.

    Notes
    -----
    *Algorithm.* A plain log-domain solver does two ``logsumexp`` passes over
    the ``N x K`` matrix per iteration, i.e. ``2 N K`` exponentials. Instead
    the kernel is stabilised once, :math:`G = \exp(\lambda(\log P_{ik} -
    \max_k \log P_{ik}) + f_i + g_k)` (every entry in ``[0, 1]``, subnormal
    results flushed to zero), and the iterations are the classic
    exp-domain scalings :math:`u = c / (G v)`, :math:`v = r / (G^\top u)`:
    two matrix-vector products, no exponentials. On CPU both products are
    fused in one pass over ``G`` in cache-sized row blocks, so ``G`` is
    streamed from memory once per iteration; the cluster sums needed for
    the stopping test come for free from that pass. This was the fastest
    of the variants benchmarked (log-domain, two separate products, fused
    blocks); see ``docs/sinkhorn.md``.

    *Safety.* Whenever a check finds a scaling outside
    :math:`[e^{-\tau}, e^{\tau}]`, :math:`\tau = \tfrac14 \log(\text{max
    float})` (22 for float32, 177 for float64), or a non-finite value (a
    cluster whose kernel column underflowed, large ``lam``, log
    probabilities like ``-1e4``), the last good scalings are absorbed into
    the potentials :math:`f, g`, one exact log-domain iteration is done and
    the kernel is rebuilt. Every iteration therefore makes progress and, in
    the worst case, the solver degrades into log-domain Sinkhorn rather than
    producing NaN/inf. The returned plan is always built from a rebuilt-safe
    kernel and finite scalings.

    Each row of the returned plan sums to ``1/N`` because the last half-step
    is the row update; convergence is measured on the cluster sums.

    Examples
    --------
    >>> import torch
    >>> from skdeepcluster.ot import sinkhorn_knopp
    >>> log_p = torch.log_softmax(torch.randn(10, 3, dtype=torch.float64), 1)
    >>> res = sinkhorn_knopp(log_p, lam=10.0, return_labels=True)
    >>> res.plan.sum(0)  # doctest: +SKIP
    tensor([0.3333, 0.3333, 0.3333], dtype=torch.float64)
    """
    x = _as_float_tensor(log_probs)
    if tol is None:
        tol = 1e-6 if x.dtype == torch.float64 else 1e-5
    if check_every is None:
        check_every = 1 if x.device.type == "cpu" else 10
    _check_scalars(lam, tol, max_iter, check_every)
    lam = float(lam)
    n, k = x.shape
    r = _cluster_marginal(cluster_marginal, k, x)
    row_max = _row_max(x)

    c = 1.0 / n
    log_r = r.log()
    tau = 0.25 * math.log(torch.finfo(x.dtype).max)
    f = torch.zeros(n, dtype=x.dtype, device=x.device)
    g = torch.zeros(k, dtype=x.dtype, device=x.device)
    kernel = _exp_kernel(x, row_max, lam, f, g)
    block_rows = _default_block_rows(kernel)

    v = torch.ones(k, dtype=x.dtype, device=x.device)
    v_good = v
    converged = False
    n_log_steps = 0
    it = 0
    while it < max_iter:
        it += 1
        u, s = _scaling_pass(kernel, v, c, block_rows)
        v_next = r / s
        if it % check_every and it < max_iter:
            v = v_next
            continue
        err = (v * s - r).abs().sum()
        in_range = (v_next.log().abs() <= tau).all()
        err_val, ok = torch.stack([err, in_range.to(err.dtype)]).tolist()
        if not ok or not math.isfinite(err_val):
            # Absorb the last safe scaling and do one exact log-domain step.
            del kernel, u, s, v_next
            f, g = _log_step(x, row_max, lam, g + v_good.log(), math.log(c), log_r)
            kernel = _exp_kernel(x, row_max, lam, f, g)
            v = v_good = torch.ones_like(v)
            n_log_steps += 1
            continue
        if err_val <= tol:
            converged = True
            break
        v = v_good = v_next

    plan = _final_plan(kernel, v, c, x, row_max, lam, g)
    marginal_error = float((plan.sum(0) - r).abs().sum())
    if not converged:
        warnings.warn(
            f"Sinkhorn-Knopp did not reach tol={tol:g} in {max_iter} iterations "
            f"(marginal error {marginal_error:.3g}); increase max_iter or "
            "decrease lam.",
            ConvergenceWarning,
            stacklevel=2,
        )
    labels = plan.argmax(dim=1) if return_labels else None
    return SinkhornResult(
        plan=plan,
        labels=labels,
        marginal_error=marginal_error,
        n_iter=it,
        converged=converged,
        n_log_steps=n_log_steps,
    )
