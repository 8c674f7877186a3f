"""Time :func:`skdeepcluster.ot.sinkhorn_knopp` against POT's ``ot.sinkhorn``.

Both solve the same entropic transport problem: cost ``M = -log P`` with
``P = softmax(logits)`` for standard-normal logits, ``reg = 1 / lam``,
sample marginal ``1/N`` and uniform cluster marginal ``1/K``. Our solver runs
first with tolerance ``--tol``; POT is then given a stopping threshold equal
to the error our plan reached in POT's own metric (L2 norm of the cluster-sum
deviation), so POT stops at an error no larger than ours (it checks every 10
iterations, so it may go a few iterations further). Both errors are measured
afterwards on the returned plans in float64.

Needs the ``bench`` extra (``pip install pot``). Example::

    python examples/bench_sinkhorn.py --n 100000 --k 1000
    python examples/bench_sinkhorn.py --n 1000000 --k 3000 --device cuda
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from skdeepcluster.ot import sinkhorn_knopp


def _errors(plan: torch.Tensor | np.ndarray) -> tuple[float, float]:
    """(L1, L2) deviation of the cluster sums from uniform, in float64."""
    p = torch.as_tensor(plan).double()
    dev = p.sum(0) - 1.0 / p.shape[1]
    return float(dev.abs().sum()), float(dev.norm())


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_ours(log_p: torch.Tensor, lam: float, tol: float) -> dict:
    _sync(str(log_p.device))
    t0 = time.perf_counter()
    res = sinkhorn_knopp(log_p, lam=lam, tol=tol, max_iter=5000)
    _sync(str(log_p.device))
    seconds = time.perf_counter() - t0
    l1, l2 = _errors(res.plan)
    return dict(seconds=seconds, n_iter=f"{res.n_sparse_iter} sparse + {res.n_iter}", l1=l1, l2=l2)


def run_pot(log_p: torch.Tensor, lam: float, stop_thr: float, dtype: str) -> dict:
    import ot

    use_torch = log_p.device.type != "cpu"
    cost = (-log_p).to(getattr(torch, dtype))
    n, k = cost.shape
    a = torch.full((n,), 1.0 / n, dtype=cost.dtype, device=cost.device)
    b = torch.full((k,), 1.0 / k, dtype=cost.dtype, device=cost.device)
    if not use_torch:
        cost, a, b = cost.numpy(), a.numpy(), b.numpy()
    _sync(str(log_p.device))
    t0 = time.perf_counter()
    plan, log = ot.sinkhorn(a, b, cost, 1.0 / lam, numItermax=5000, stopThr=stop_thr, log=True)
    _sync(str(log_p.device))
    seconds = time.perf_counter() - t0
    l1, l2 = _errors(plan)
    return dict(seconds=seconds, n_iter=int(log["niter"]) + 1, l1=l1, l2=l2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--lam", type=float, default=25.0)
    parser.add_argument("--tol", type=float, default=1e-5, help="our L1 tolerance")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", default="float32,float64", help="dtypes for our solver")
    parser.add_argument(
        "--pot-dtype",
        default="float64",
        help="POT's plain Sinkhorn underflows in float32 at lam=25",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(args.seed)
    logits = torch.randn(args.n, args.k, generator=gen, dtype=torch.float64)
    log_p = torch.log_softmax(logits, dim=1).to(args.device)
    del logits

    print(
        f"N={args.n} K={args.k} lam={args.lam} device={args.device} "
        f"torch threads={torch.get_num_threads()}"
    )
    rows = []
    for dtype in args.dtypes.split(","):
        ours = run_ours(log_p.to(getattr(torch, dtype)), args.lam, args.tol)
        pot = run_pot(log_p, args.lam, ours["l2"], args.pot_dtype)
        rows.append((dtype, ours, pot))
        print(f"done {dtype}", flush=True)

    print(
        "\n| ours dtype | ours s | ours iters | ours L1 err | ours L2 err "
        f"| POT ({args.pot_dtype}) s | POT iters | POT L1 err | POT L2 err | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for dtype, o, p in rows:
        print(
            f"| {dtype} | {o['seconds']:.2f} | {o['n_iter']} | {o['l1']:.2e} | {o['l2']:.2e} "
            f"| {p['seconds']:.2f} | {p['n_iter']} | {p['l1']:.2e} | {p['l2']:.2e} "
            f"| {p['seconds'] / o['seconds']:.1f}x |"
        )


if __name__ == "__main__":
    main()
