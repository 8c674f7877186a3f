"""
Choosing the number of clusters without labels
==============================================

With no labels, ``GridSearchCV`` scores each candidate with the estimator's own ``score``: the
modularity of its clusters on the nearest-neighbour graph of the data
(:func:`skdeepcluster.metrics.knn_modularity`). Here it chooses ``n_clusters`` for SCAN on the
first 1,000 digits. Then the labels, which the search never saw, say how good the choice was.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV

from skdeepcluster import SCAN
from skdeepcluster.metrics import acc_scorer, label_free_scorer

X, y = load_digits(return_X_y=True)
X, y = X[:1000, X.std(0) > 0], y[:1000]

# %%
# Clustering is transductive: each candidate is fitted and scored on all samples (one "split").
# The search chooses by ``label_free_scorer`` (the estimator's ``score``), which never reads y;
# the accuracy is recorded beside it from the same fits, only to show what the labels say.
everything = np.arange(len(X))
search = GridSearchCV(
    SCAN(random_state=0),
    {"n_clusters": [6, 8, 10, 12, 14]},
    scoring={"label_free": label_free_scorer, "acc": acc_scorer},
    refit=False,
    cv=[(everything, everything)],
)
search.fit(X, y)
results = search.cv_results_
ks = results["param_n_clusters"].data.astype(int)
chosen = ks[np.argmax(results["mean_test_label_free"])]
print(f"chosen without labels: n_clusters={chosen}")
for k, score, acc in zip(ks, results["mean_test_label_free"], results["mean_test_acc"]):
    print(f"n_clusters={k:2d}  score {score:.3f}  ACC {acc:.3f}")

# %%
# Without any labels at all, ``GridSearchCV(SCAN(), grid, cv=...)`` with no ``scoring`` and
# ``search.fit(X)`` chooses the same way, and refits the choice.
#
# What the labels would have said
# -------------------------------
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(ks, results["mean_test_label_free"], marker="o", label="score (no labels)")
ax.plot(ks, results["mean_test_acc"], marker="s", label="ACC (the labels)")
ax.axvline(chosen, color="grey", linestyle=":", label="chosen")
ax.set(xlabel="n_clusters", xticks=ks)
ax.legend()
fig.tight_layout()
