"""
Clustering the digits with SCAN
===============================

SCAN clusters scikit-learn's 1,797 handwritten digits, given as 64-d vectors, without their
labels. The labels only measure the result: a confusion matrix against the true digits, the
mean image of each cluster, the training history of the fit, and the accuracy of the samples
SCAN is most confident about.
"""

# %%
# Fit
# ---
# On vectors of 64 features SCAN trains in the input space (``pretext="auto"`` fits no
# pretext below 256 features) and starts from the manifold partition. A few seconds on a CPU.
# Its last stage, self-labelling, is left out here (``self_label_epochs=0``), so that the last
# figure can show which samples that stage would train on.
import matplotlib.pyplot as plt
import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.datasets import load_digits
from sklearn.metrics import confusion_matrix

from skdeepcluster import SCAN
from skdeepcluster.metrics import clustering_report

X, y = load_digits(return_X_y=True)
X = X[:, X.std(0) > 0]  # three pixels are blank in every digit
model = SCAN(n_clusters=10, self_label_epochs=0, random_state=0).fit(X)
print(clustering_report(y, model.labels_))

# %%
# Confusion matrix
# ----------------
# Cluster ids are arbitrary: reorder them by the matching that agrees with the most digits
# (the matching behind ACC).
counts = confusion_matrix(y, model.labels_)
_, order = linear_sum_assignment(counts, maximize=True)
fig, ax = plt.subplots(figsize=(5, 4.5))
ax.imshow(counts[:, order], cmap="Blues")
for (i, j), value in np.ndenumerate(counts[:, order]):
    if value:
        ax.text(j, i, value, ha="center", va="center", fontsize=7)
ax.set(xlabel="cluster (matched order)", ylabel="true digit", xticks=range(10), yticks=range(10))
ax.set_xticklabels(order)
ax.set_title("SCAN on the digits as vectors")
fig.tight_layout()

# %%
# The mean image of each cluster
# ------------------------------
images = load_digits().images
fig, axes = plt.subplots(1, 10, figsize=(10, 1.6))
for ax, cluster in zip(axes, order, strict=True):
    ax.imshow(images[model.labels_ == cluster].mean(0), cmap="gray_r")
    ax.set_title(f"{model.cluster_sizes_[cluster]}", fontsize=8)
    ax.axis("off")
fig.suptitle("mean image of each cluster (its size above)")

# %%
# The training history
# --------------------
# ``history_`` holds every epoch of the fit, tagged with its stage: the manifold start, SCAN's
# clustering loss (self-labelling would follow).
fig, ax = plt.subplots(figsize=(6, 3.5))
epoch = 0
for stage in ("manifold_start", "clustering"):
    losses = model.histories_[stage][:, "train_loss"]
    ax.plot(range(epoch, epoch + len(losses)), losses, marker=".", label=stage)
    epoch += len(losses)
ax.set(xlabel="epoch", ylabel="training loss", yscale="symlog")
ax.legend()
fig.tight_layout()

# %%
# Accuracy against the confidence threshold
# -----------------------------------------
# Self-labelling trains only on the samples whose predicted probability exceeds
# ``confidence_threshold`` (0.99 by default). How many samples pass each threshold, and how
# accurate are they? The clusters are matched to the digits on all samples, then each threshold
# keeps the samples above it.
confidence = model.predict_proba(X).max(1)
thresholds = np.linspace(0.5, 0.999, 40)
kept = [(confidence > t).mean() for t in thresholds]
digit_of = np.empty(10, dtype=int)
digit_of[order] = np.arange(10)
correct = digit_of[model.labels_] == y
accuracy = [
    correct[confidence > t].mean() if (confidence > t).sum() else np.nan for t in thresholds
]
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(thresholds, accuracy, label="accuracy of the samples above")
ax.plot(thresholds, kept, label="share of the samples above")
ax.axvline(0.99, color="grey", linestyle=":", label="SCAN's default threshold")
ax.set(xlabel="confidence threshold", ylim=(0, 1.02))
ax.legend(loc="lower left")
fig.tight_layout()
