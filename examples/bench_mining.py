"""Time :func:`skdeepcluster.neighbors.mine_neighbors` against faiss-cpu and scikit-learn.

Exact cosine k-nearest neighbours of every row among the others (self-kNN), on unit rows:

* ``mine_neighbors``: the reduced-precision screen of every pair once, the float32 re-score and
  the certificate (its docstring);
* faiss-cpu ``IndexFlatIP`` (exact inner-product search; each row finds itself first, so it is
  asked for ``k + 1`` and its own index dropped);
* scikit-learn ``NearestNeighbors(algorithm="brute", metric="cosine")`` (with ``--sklearn``: it
  is slow).

Recall is measured on ``--check`` random rows against a float64 search: a returned neighbour
counts when its float64 similarity reaches the true k-th one less 1e-6 (float32 cannot order
closer ties). The data are ``--data gauss`` (isotropic Gaussian rows: near-ties everywhere, the
hardest case for a screen) or ``clustered`` (100 Gaussian clusters, like learned features).
Every library runs on ``--threads`` threads. Needs the ``bench`` extra (faiss-cpu). Example::

    python3 examples/bench_mining.py --n 50000 --d 512 --k 20 --data gauss clustered
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from skdeepcluster.neighbors import mine_neighbors, screen_dtype


def make_data(kind: str, n: int, d: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randn(n, d, generator=generator)
    if kind == "clustered":
        centres = torch.randn(100, d, generator=generator)
        labels = torch.randint(0, 100, (n,), generator=generator)
        rows = centres[labels] + 0.7 * rows
    return torch.nn.functional.normalize(rows, dim=1)


def recall(unit: torch.Tensor, neighbors: np.ndarray, check: np.ndarray) -> float:
    k = neighbors.shape[1]
    sims = unit[check].double() @ unit.double().T
    sims[np.arange(len(check)), check] = -2.0
    kth = sims.topk(k, dim=1).values[:, -1:]
    got = sims.gather(1, torch.as_tensor(neighbors[check]))
    return float((got >= kth - 1e-6).double().mean())


def run_ours(unit: torch.Tensor, k: int) -> np.ndarray:
    return mine_neighbors(unit, k).numpy()


def run_faiss(unit: torch.Tensor, k: int) -> np.ndarray:
    import faiss

    rows = unit.numpy()
    index = faiss.IndexFlatIP(rows.shape[1])
    index.add(rows)
    found = index.search(rows, k + 1)[1]
    own = found == np.arange(len(rows))[:, None]
    # drop each row's own index (or the last one where a duplicate outranked it)
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
    keep = np.ones_like(found, dtype=bool)
    keep[np.arange(len(rows)), drop] = False
    return found[keep].reshape(len(rows), k)


def run_sklearn(unit: torch.Tensor, k: int) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    rows = unit.numpy()
    search = NearestNeighbors(n_neighbors=k + 1, algorithm="brute", metric="cosine")
    return search.fit(rows).kneighbors(rows)[1][:, 1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--data", nargs="+", default=["gauss", "clustered"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs")
    parser.add_argument("--check", type=int, default=3000, help="rows whose recall is measured")
    parser.add_argument("--sklearn", action="store_true")
    args = parser.parse_args()

    import faiss

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"faiss {faiss.__version__}, {args.threads} threads, "
        f"screen {screen_dtype(torch.device('cpu'))}"
    )
    runs = {"mine_neighbors": run_ours, "faiss IndexFlatIP": run_faiss}
    if args.sklearn:
        runs["sklearn brute"] = run_sklearn
    print("| data | n x d, k | method | seconds (best of runs) | recall |")
    print("| --- | --- | --- | --- | --- |")
    for kind in args.data:
        unit = make_data(kind, args.n, args.d)
        check = np.random.default_rng(0).choice(args.n, min(args.check, args.n), replace=False)
        for name, run in runs.items():
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                neighbors = run(unit, args.k)
                times.append(time.perf_counter() - start)
            print(
                f"| {kind} | {args.n} x {args.d}, {args.k} | {name} | "
                f"{' / '.join(f'{t:.2f}' for t in times)} | "
                f"{recall(unit, neighbors, check):.6f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
