"""Benchmark: how well each method's label-free ``score`` chooses hyperparameters and n_clusters.

For every data set, method, grid and seed, every configuration of the grid is fitted on all
samples; the labels only measure ACC afterwards. Each fit records its ACC, its ``score(X)``
(the k-NN modularity in the method's reference space) and the other label-free criteria the
choice was made between, computed from the same fit:

- ``modularity_5`` / ``modularity_20``: the modularity with 5 or 20 neighbours;
- ``mutual_10`` / ``mutual_20``: the modularity of the mutual-neighbour graph;
- ``silhouette``: the cosine silhouette of the clusters in the reference space;
- ``learnability``: Cohen's kappa of a 3-fold cross-validated logistic regression predicting the
  clusters from the reference features (TURTLE's idea, with a linear probe).

``--summary FILE`` then prints, per data set, method and grid, the ACC of the configuration each
criterion picks against the grid's best and median ACC (mean and min over seeds)::

    python examples/label_free_selection.py --data digits --methods scan drc --json runs.jsonl
    python examples/label_free_selection.py --data digits --methods scan --grid n_clusters \\
        --json runs.jsonl
    python examples/label_free_selection.py --summary runs.jsonl
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from _data import DATASETS, load
from benchmark import ESTIMATORS, cache_pretexts, machine
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score, cohen_kappa_score, silhouette_score
from sklearn.model_selection import cross_val_predict

import skdeepcluster
from skdeepcluster.metrics import cluster_accuracy, knn_modularity

#: Each method's key hyperparameter and its grid (the default included).
GRIDS = {
    "scan": ("entropy_weight", [1.0, 2.0, 5.0, 10.0]),
    "lsdc": ("threshold", [None, 0.5, 0.9]),
    "sela": ("sinkhorn_lambda", [5.0, 25.0, 100.0]),
    "c2bin": ("entropy_weight", [0.5, 1.0, 4.0]),
    "drc": ("probability_weight", [0.1, 0.3, 1.0, 3.0]),
}
N_CLUSTERS_GRID = [6, 8, 10, 12, 14]
CRITERIA = [
    "score",
    "modularity_5",
    "modularity_20",
    "mutual_10",
    "mutual_20",
    "silhouette",
    "learnability",
]


def criteria(reference: torch.Tensor, labels: np.ndarray) -> dict[str, float]:
    """The label-free criteria besides ``score`` for one fit."""
    features = reference.cpu().numpy().reshape(len(labels), -1)
    out = {f"modularity_{k}": knn_modularity(features, labels, k) for k in (5, 20)}
    out.update({f"mutual_{k}": knn_modularity(features, labels, k, mutual=True) for k in (10, 20)})
    if len(np.unique(labels)) < 2:
        return {**out, "silhouette": -1.0, "learnability": 0.0}
    out["silhouette"] = float(silhouette_score(features, labels, metric="cosine"))
    smallest = int(np.bincount(labels)[np.unique(labels)].min())  # the smallest cluster's size
    out["learnability"] = 0.0
    if smallest >= 2:  # each cluster in at least 2 of the (up to 3) folds
        probe = LogisticRegression(max_iter=300)
        predicted = cross_val_predict(probe, features, labels, cv=min(3, smallest))
        out["learnability"] = float(cohen_kappa_score(labels, predicted))
    return out


def run(data: str, method: str, grid: str, seed: int, device: str) -> list[dict]:
    """Fit every configuration of one grid on one seed; one record per fit."""
    X, y = load(data)
    name, values = ("n_clusters", N_CLUSTERS_GRID) if grid == "n_clusters" else GRIDS[method]
    records = []
    for value in values:
        params = {"n_clusters": 10, name: value}
        model = getattr(skdeepcluster, ESTIMATORS[method])(
            device=device, random_state=seed, **params
        )
        start = time.perf_counter()
        model.fit(X)
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        score = model.score(X)
        score_seconds = time.perf_counter() - start
        reference = model._reference_features(model._validate_input(X, reset=False))
        record = {
            "data": data,
            "method": method,
            "grid": grid,
            "param": name,
            "value": value,
            "seed": seed,
            "acc": cluster_accuracy(y, model.labels_),
            "score": score,
            "seconds": round(seconds, 1),
            "score_seconds": round(score_seconds, 2),
            **criteria(reference, model.labels_),
        }
        print(json.dumps(record), flush=True)
        record["labels"] = model.labels_.tolist()  # for the stability across seeds
        records.append(record)
    return records


def summary(path: str, criterion: str = "score") -> None:
    """Per data set, method and grid: the ACC each criterion picks, the best and the median."""
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    groups: dict[tuple, dict[int, list[dict]]] = {}
    for r in records:
        groups.setdefault((r["data"], r["method"], r["grid"]), {}).setdefault(r["seed"], []).append(
            r
        )
    print(
        "data | method | grid | seeds | "
        + " | ".join(CRITERIA)
        + f" | best | median | picked by {criterion} | per seed | stability"
    )
    for (data, method, grid), by_seed in sorted(groups.items()):
        present = [c for c in CRITERIA if all(c in r for rs in by_seed.values() for r in rs)]
        picked = {c: [] for c in present}
        best, median, values = [], [], []
        near_best = above_median = 0
        for runs in by_seed.values():
            accs = np.array([r["acc"] for r in runs])
            best.append(accs.max())
            median.append(float(np.median(accs)))
            chosen_acc = runs[int(np.argmax([r[criterion] for r in runs]))]["acc"]
            near_best += chosen_acc >= accs.max() - 0.02
            above_median += chosen_acc > np.median(accs)
            for c in present:
                chosen = runs[int(np.argmax([r[c] for r in runs]))]
                picked[c].append(chosen["acc"])
                if c == criterion:
                    values.append(chosen["value"])

        def cell(v: list[float]) -> str:
            return f"{np.mean(v):.3f} ({np.min(v):.3f})"

        print(
            f"{data} | {method} | {grid} | {len(by_seed)} | "
            + " | ".join(cell(picked[c]) if c in picked else "-" for c in CRITERIA)
            + f" | {cell(best)} | {cell(median)} | {values} | {near_best}/{len(by_seed)} within "
            f"0.02 of the best, {above_median}/{len(by_seed)} above the median | "
            f"{stability_pick(by_seed)}"
        )


def stability_pick(by_seed: dict[int, list[dict]]) -> str:
    """The configuration whose partitions agree most across seeds (mean pairwise ARI), and its
    ACC (mean (min) over the seeds): stability, the criterion that needs refits."""
    seeds = sorted(by_seed)
    if len(seeds) < 2 or any("labels" not in r for s in seeds for r in by_seed[s]):
        return "-"
    values = [r["value"] for r in by_seed[seeds[0]]]
    agreement = []
    for i in range(len(values)):
        labels = [by_seed[s][i]["labels"] for s in seeds]
        pairs = [
            adjusted_rand_score(labels[a], labels[b])
            for a in range(len(seeds))
            for b in range(a + 1, len(seeds))
        ]
        agreement.append(np.mean(pairs))
    chosen = int(np.argmax(agreement))
    accs = [by_seed[s][chosen]["acc"] for s in seeds]
    return f"stability: {values[chosen]} -> {np.mean(accs):.3f} ({np.min(accs):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", choices=sorted(DATASETS), default=["digits"])
    parser.add_argument("--methods", nargs="+", choices=sorted(GRIDS), default=sorted(GRIDS))
    parser.add_argument(
        "--grid", choices=["hyperparameter", "n_clusters"], default="hyperparameter"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", help="append one JSON line per fit to this file")
    parser.add_argument("--cache-pretext", help="cache fitted pretexts in this directory")
    parser.add_argument("--summary", help="print the summary of a JSON-lines file and exit")
    parser.add_argument(
        "--criterion", default="score", help="the criterion the summary's per-seed counts follow"
    )
    args = parser.parse_args()
    if args.summary:
        summary(args.summary, args.criterion)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cache_pretext:
        cache_pretexts(args.cache_pretext)
    print(machine(), flush=True)
    for data in args.data:
        for method in args.methods:
            for seed in args.seeds:
                for record in run(data, method, args.grid, seed, args.device):
                    if args.json:
                        with open(args.json, "a") as f:
                            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
