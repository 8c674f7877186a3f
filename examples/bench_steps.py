"""Training steps per second of every estimator's stages, in float32, channels-last, bfloat16.

Each estimator is fitted on the first ``--n`` MNIST-test images (28 x 28) with its default
batch size, network and augmentations, for a few epochs per stage (``--epochs``); the methods
start from a one-epoch SimCLR, whose stage is not counted (SimCLR has its own row). A stage's
rate is its steps over its wall-clock seconds, from its second epoch on (the first warms up),
between-epoch work included (SeLa's relabelling, SCAN's confident-sample count), as skorch's
history records them. Every ``--layouts`` entry is one configuration of
:func:`skdeepcluster.set_config`: ``nchw`` (``channels_last=False``), ``cl`` (the default,
channels-last) and ``cl-bf16`` (channels-last with ``bf16=True``). Example::

    python3 examples/bench_steps.py --n 5120 --threads 2
    python3 examples/bench_steps.py --device cuda --n 10000
"""

from __future__ import annotations

import argparse
import platform

import torch
from _data import load

import skdeepcluster as sk

CONFIGS = {
    "nchw": dict(channels_last=False, bf16=False),
    "cl": dict(channels_last=True, bf16=False),
    "cl-bf16": dict(channels_last=True, bf16=True),
}


def estimators(epochs: int, device: str) -> dict[str, sk.base.DeepEstimatorMixin]:
    common = dict(device=device, random_state=0)
    start = dict(pretext=sk.SimCLR(max_epochs=1), n_clusters=10, max_epochs=epochs, **common)
    return {
        "SimCLR": sk.SimCLR(max_epochs=epochs, **common),
        "RotNet": sk.RotNet(max_epochs=epochs, **common),
        "SCAN": sk.SCAN(self_label_epochs=epochs, **start),
        "SeLa": sk.SeLa(**start),
        "LSDC": sk.LSDC(**start),
        "C2BIN": sk.C2BIN(**start),
        "DRC": sk.DRC(**start),
    }


def stage_rates(estimator) -> dict[str, tuple[float, int]]:
    """Steps per second of each stage from its second epoch on, and the steps counted."""
    per_stage: dict[str, list[dict]] = {}
    for row in estimator.history_:
        per_stage.setdefault(row.get("stage", "training"), []).append(row)
    rates = {}
    for stage, rows in per_stage.items():
        counted = rows[1:]
        steps = sum(len(row["batches"]) for row in counted)
        seconds = sum(row["dur"] for row in counted)
        if steps:
            rates[stage] = (steps / seconds, steps)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5120)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layouts", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--methods", nargs="+", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    X = load("mnist-images")[0][: args.n]
    print(
        f"{platform.processor() or platform.machine()}, {args.threads} threads, "
        f"torch {torch.__version__}, {args.n} MNIST-test images, device {args.device}"
    )
    print("| estimator | stage | " + " | ".join(f"{name} steps/s" for name in args.layouts) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in args.layouts) + " |")
    names = args.methods or list(estimators(args.epochs, args.device))
    for name in names:
        rates = {}
        for layout in args.layouts:
            with sk.config_context(**CONFIGS[layout]):
                estimator = estimators(args.epochs, args.device)[name]
                estimator.fit(X)
                rates[layout] = stage_rates(estimator)

        for stage in rates[args.layouts[0]]:
            cells = [f"{rates[layout][stage][0]:.2f}" for layout in args.layouts]
            print(f"| {name} | {stage} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
