"""Benchmark: deep clustering estimators beside k-means, ACC / NMI / ARI / seconds over seeds.

    python3 examples/benchmark.py --data digits-images --methods kmeans scan sela lsdc
    python3 examples/benchmark.py --data mnist-images --methods scan --device cuda
    python3 examples/benchmark.py --data digits-images --methods scan --set scan:n_neighbors=5

Every estimator runs with its defaults (only ``n_clusters``, ``device`` and ``random_state`` are
set, plus any ``--set method:param=value``), as a user would get it. Each figure is reported as
the mean and the minimum over the seeds (default 0, 1, 2: a single seed misleads). Times are
wall-clock seconds of ``fit_predict`` on this machine. ``--json FILE`` appends one line per run.
"""

from __future__ import annotations

import argparse
import ast
import json
import platform
import time
from collections.abc import Callable

import numpy as np
import torch
from _data import DATASETS, load
from sklearn.cluster import KMeans, SpectralClustering

import skdeepcluster
from skdeepcluster.metrics import clustering_report

ESTIMATORS = {"scan": "SCAN", "sela": "SeLa", "lsdc": "LSDC", "c2bin": "C2BIN", "drc": "DRC"}


def make_method(
    name: str, device: str, seed: int, params: dict, n_clusters: int = 10
) -> Callable[[np.ndarray], np.ndarray]:
    """``fit_predict`` of the method ``name`` with ``params`` set."""
    if name == "kmeans":
        model = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed)
        return lambda X: model.fit_predict(X.reshape(len(X), -1).astype(np.float32))
    if name == "spectral":  # spectral clustering of the 10-nearest-neighbour graph
        model = SpectralClustering(
            n_clusters, affinity="nearest_neighbors", n_neighbors=10, random_state=seed
        )
        return lambda X: model.fit_predict(X.reshape(len(X), -1).astype(np.float32))
    cls = getattr(skdeepcluster, ESTIMATORS[name])
    return cls(n_clusters=n_clusters, device=device, random_state=seed, **params).fit_predict


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


def parse_settings(settings: list[str]) -> dict[str, dict]:
    """``["scan:n_neighbors=5", ...]`` -> ``{"scan": {"n_neighbors": 5}}`` (values as literals)."""
    out: dict[str, dict] = {}
    for item in settings:
        method, assignment = item.split(":", 1)
        key, value = assignment.split("=", 1)
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        out.setdefault(method, {})[key] = parsed
    return out


def cache_pretexts(directory: str) -> None:
    """Reuse fitted pretexts: a method seeded with ``s`` fits the same pretext as any other
    method seeded with ``s`` (same data, same pretext parameters), so ablations of the clustering
    step can share it. Never for the reported end-to-end timings."""
    import hashlib
    import os
    import pickle

    from skdeepcluster.methods import _base

    fit = _base.fit_pretext
    os.makedirs(directory, exist_ok=True)

    def cached(pretext, X, *, device, random_state, verbose, callbacks=None):
        key = hashlib.sha1(
            repr(
                (
                    pretext if isinstance(pretext, str) else pretext.get_params(),
                    X.shape,
                    hashlib.sha1(X.tobytes()).hexdigest(),
                    str(device),
                    random_state,
                )
            ).encode()
        ).hexdigest()[:16]
        path = os.path.join(directory, f"{key}.pkl")
        if os.path.exists(path):
            with open(path, "rb") as f:
                return pickle.load(f)
        start = time.perf_counter()
        fitted = fit(
            pretext,
            X,
            device=device,
            random_state=random_state,
            verbose=verbose,
            callbacks=callbacks,
        )
        print(f"pretext fitted in {time.perf_counter() - start:.1f} s (cached)", flush=True)
        with open(path, "wb") as f:
            pickle.dump(fitted, f)
        return fitted

    _base.fit_pretext = cached


def summary(runs: list[dict]) -> str:
    """One line: mean and min over the seeds of ACC, NMI, ARI; mean seconds."""
    parts = []
    for key in ("acc", "nmi", "ari"):
        values = np.array([r[key] for r in runs])
        parts.append(f"{key.upper()} {values.mean():.3f} (min {values.min():.3f})")
    seconds = np.array([r["seconds"] for r in runs])
    parts.append(f"{seconds.mean():.1f} s (max {seconds.max():.1f})")
    return " | ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", nargs="+", default=["digits-images"], choices=list(DATASETS))
    parser.add_argument("--methods", nargs="+", default=["kmeans", "scan"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--set", nargs="*", default=[], help="method:param=value settings")
    parser.add_argument("--label", default="", help="a name for this configuration (JSON log)")
    parser.add_argument("--json", default=None, help="append one JSON line per run to this file")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--cache-pretext",
        default=None,
        metavar="DIR",
        help="for ablations only: keep each fitted pretext (per data, pretext and seed) in DIR "
        "and reuse it; the seconds then exclude the pretext",
    )
    args = parser.parse_args()
    if args.cache_pretext:
        cache_pretexts(args.cache_pretext)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = parse_settings(args.set)
    print(machine(), flush=True)
    lines = []
    for data in args.data:
        X, y = load(data)
        for method in args.methods:
            runs = []
            for seed in args.seeds:
                params = settings.get(method, {})
                n_clusters = len(np.unique(y))  # 10, but 3 for iris and 2 for breast_cancer
                fit_predict = make_method(method, args.device, seed, params, n_clusters)
                start = time.perf_counter()
                labels = fit_predict(X)
                seconds = time.perf_counter() - start
                run = {**clustering_report(y, labels), "seconds": seconds}
                runs.append(run)
                print(
                    f"{data} | {method} {params or ''} | seed {seed} | ACC {run['acc']:.4f} "
                    f"NMI {run['nmi']:.4f} ARI {run['ari']:.4f} | {seconds:.1f} s",
                    flush=True,
                )
                if args.json:
                    record = {
                        "data": data,
                        "method": method,
                        "params": params,
                        "seed": seed,
                        "label": args.label,
                        "machine": machine(),
                        **run,
                    }
                    with open(args.json, "a") as f:
                        f.write(json.dumps(record, default=str) + "\n")
            lines.append(
                f"{data} | {method} {settings.get(method, '')} | seeds "
                f"{args.seeds} | {summary(runs)}"
            )
            print(lines[-1], flush=True)
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
