"""Benchmark: deep clustering estimators beside k-means, ACC / NMI / ARI / seconds.

    python3 examples/benchmark.py --data digits mnist-vectors mnist-images --methods kmeans scan
    python3 examples/benchmark.py --data mnist-images --methods scan --device cuda

Every estimator runs with its defaults (only ``n_clusters``, ``device`` and ``random_state`` are
set), as a user would get it. Times are wall-clock seconds of ``fit_predict`` on this machine.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import numpy as np
import torch
from _data import load
from sklearn.cluster import KMeans

import skdeepcluster
from skdeepcluster.metrics import clustering_report, format_reports


def _kmeans(n_clusters: int, device: str, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    model = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed)
    return lambda X: model.fit_predict(X.reshape(len(X), -1).astype(np.float32))


def _estimator(name: str) -> Callable[[int, str, int], Callable[[np.ndarray], np.ndarray]]:
    def make(n_clusters: int, device: str, seed: int) -> Callable[[np.ndarray], np.ndarray]:
        cls = getattr(skdeepcluster, name)
        return cls(n_clusters=n_clusters, device=device, random_state=seed).fit_predict

    return make


METHODS = {
    "kmeans": _kmeans,
    "scan": _estimator("SCAN"),
    "sela": _estimator("SeLa"),
    "lsdc": _estimator("LSDC"),
}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"{cpu}, {torch.get_num_threads()} torch threads{gpu}; torch {torch.__version__}, "
        f"skdeepcluster {skdeepcluster.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data",
        nargs="+",
        default=["digits"],
        choices=["digits", "digits-images", "mnist-vectors", "mnist-images"],
    )
    parser.add_argument("--methods", nargs="+", default=["kmeans", "scan"], choices=sorted(METHODS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice; use 1 when the cores are shared)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine(), flush=True)
    rows = {}
    for data in args.data:
        X, y = load(data)
        for method in args.methods:
            for seed in args.seeds:
                fit_predict = METHODS[method](10, args.device, seed)
                start = time.perf_counter()
                labels = fit_predict(X)
                seconds = time.perf_counter() - start
                rows[f"{data} | {method} | seed {seed}"] = {
                    **clustering_report(y, labels),
                    "seconds": seconds,
                }
                print(
                    format_reports(
                        {
                            f"{data} | {method} | seed {seed}": rows[
                                f"{data} | {method} | seed {seed}"
                            ]
                        }
                    ),
                    flush=True,
                )
    print()
    print(format_reports(rows, name="data | method | seed"))


if __name__ == "__main__":
    main()
