"""SeLa on imbalanced digits: what the cluster marginal of the Sinkhorn step does.

SeLa's labels split the data in fixed proportions, equal by default (eq. 6 with a uniform
cluster marginal r). On imbalanced data an equal split must cut the large classes into pieces
and merge small ones. As in the paper's experiment on imbalanced data (Sec. 4.5), we drop most of
some classes, here 70 % of the digits 5-9 of scikit-learn's digits, and compare:

- SeLa with the uniform marginal (the default),
- SeLa with the true class proportions as the marginal (an oracle: in practice an estimate).

The entries of ``cluster_marginal`` are the sizes of clusters 0, 1, ... in that order; which
cluster takes which size is learned (cluster ids are arbitrary), so only the multiset of
proportions matters.

Run: ``OMP_NUM_THREADS=1 python examples/sela_imbalanced.py`` (under two minutes on one core).
"""

import time

import numpy as np
import torch
from sklearn.datasets import load_digits

from skdeepcluster import SeLa
from skdeepcluster.metrics import clustering_report

torch.set_num_threads(1)

X, y = load_digits(return_X_y=True)
rng = np.random.default_rng(0)
keep = np.ones(len(y), dtype=bool)
for digit in range(5, 10):
    rows = np.flatnonzero(y == digit)
    keep[rng.choice(rows, size=int(0.7 * len(rows)), replace=False)] = False
X, y = X[keep], y[keep]
proportions = np.bincount(y) / len(y)
print(f"{len(y)} samples; class sizes {np.bincount(y).tolist()}")

for name, marginal in [("uniform marginal", None), ("true class proportions", proportions)]:
    start = time.perf_counter()
    model = SeLa(n_clusters=10, cluster_marginal=marginal, random_state=0).fit(X)
    seconds = time.perf_counter() - start
    report = clustering_report(y, model.labels_)
    scores = "  ".join(f"{key.upper()} {value:.3f}" for key, value in report.items())
    print(f"\n{name}: {scores}  ({seconds:.0f} s)")
    print(
        "  cluster sizes, predict (sorted):       ",
        sorted(np.bincount(model.labels_, minlength=10).tolist(), reverse=True),
    )
    print(
        "  cluster sizes, Sinkhorn labels (sorted):",
        sorted(np.bincount(model.pseudo_labels_, minlength=10).tolist(), reverse=True),
    )
