"""Quick start: cluster real data with SCAN and print ACC / NMI / ARI beside k-means.

    python3 examples/quickstart.py                      # digits as 1797 8x8 images
    python3 examples/quickstart.py --data mnist-images  # MNIST-test (minutes on 2 cores)
    python3 examples/quickstart.py --data mnist-images --device cuda

(Accuracies and times measured with seed 0 on the 2-core development machine, docs/benchmarks.md.)
"""

from __future__ import annotations

import argparse
import time

from _data import load
from sklearn.cluster import KMeans

from skdeepcluster import SCAN
from skdeepcluster.metrics import clustering_report, format_reports


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data",
        default="digits-images",
        choices=["digits", "digits-images", "mnist-vectors", "mnist-images"],
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    X, y = load(args.data)
    print(
        f"{args.data}: X {X.shape} {X.dtype}, {len(set(y))} classes (labels used only for scoring)"
    )
    reports = {}
    start = time.perf_counter()
    kmeans = KMeans(n_clusters=10, n_init=10, random_state=args.seed).fit_predict(
        X.reshape(len(X), -1)
    )
    reports["KMeans"] = {**clustering_report(y, kmeans), "seconds": time.perf_counter() - start}
    start = time.perf_counter()
    labels = SCAN(n_clusters=10, device=args.device, random_state=args.seed, verbose=1).fit_predict(
        X
    )
    reports["SCAN"] = {**clustering_report(y, labels), "seconds": time.perf_counter() - start}
    print(format_reports(reports))


if __name__ == "__main__":
    main()
