"""One script for one process or many: run it with ``python3`` or with ``torchrun``.

    python3 examples/distributed_fit.py --data digits-images --method scan
    torchrun --nproc_per_node=2 examples/distributed_fit.py --data digits-images --method scan
    torchrun --nnodes=2 --node_rank=0 --master_addr=HOST --master_port=29500 \
        --nproc_per_node=8 examples/distributed_fit.py --data mnist-images --device cuda

Nothing in the script is about processes: under ``torchrun`` each estimator finds the
environment, trains every process on its share of each batch, and ends with the same fitted
estimator on every process (``n_processes_``); only process 0 prints and writes files.

``--memmap`` writes X to a NumPy memmap first and fits on it; ``--device-data-bytes N`` sets the
budget of training data kept on the device (``skdeepcluster.set_config``), so data above it
streams from host memory (``streamed_``). ``--json FILE`` appends one line per fit (process 0).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import tempfile
import time

import numpy as np
import torch
from _data import DATASETS, load

import skdeepcluster
from skdeepcluster.metrics import clustering_report

METHODS = {"scan": "SCAN", "sela": "SeLa", "lsdc": "LSDC", "c2bin": "C2BIN", "drc": "DRC"}


def as_memmap(X: np.ndarray, directory: str) -> np.ndarray:
    """X written to a file in ``directory`` and opened read-only as a memmap."""
    path = os.path.join(directory, "X.npy")
    writer = np.lib.format.open_memmap(path, mode="w+", dtype=X.dtype, shape=X.shape)
    writer[:] = X
    writer.flush()
    return np.load(path, mmap_mode="r")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="digits-images", choices=list(DATASETS))
    parser.add_argument("--method", default="scan", choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--memmap", action="store_true", help="fit on X stored as a memmap")
    parser.add_argument("--device-data-bytes", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    parser.add_argument("--set", nargs="*", default=[], help="param=value settings (literals)")
    parser.add_argument("--json", default=None, help="append one JSON line per fit")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params = {k: ast.literal_eval(v) for k, v in (item.split("=", 1) for item in args.set)}
    main_process = int(os.environ.get("RANK", "0")) == 0
    skdeepcluster.set_config(device_data_bytes=args.device_data_bytes)
    X, y = load(args.data)
    with tempfile.TemporaryDirectory() as directory:
        if args.memmap:
            X = as_memmap(X, directory)
        for seed in args.seeds:
            estimator = getattr(skdeepcluster, METHODS[args.method])(
                n_clusters=len(np.unique(y)), device=args.device, random_state=seed, **params
            )
            start = time.perf_counter()
            labels = estimator.fit_predict(X)
            seconds = time.perf_counter() - start
            if not main_process:
                continue
            record = {
                "data": args.data,
                "method": args.method,
                "seed": seed,
                "params": params,
                "n_processes": estimator.n_processes_,
                "threads_per_process": torch.get_num_threads(),
                "memmap": args.memmap,
                "streamed": estimator.streamed_,
                "seconds": seconds,
                **clustering_report(y, labels),
            }
            print(json.dumps(record), flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
