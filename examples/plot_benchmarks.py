"""
The benchmarks as plots
=======================

The accuracy of every method with its defaults, as measured by ``examples/benchmark.py`` and
recorded in :doc:`/benchmarks`: the mean over seeds 0, 1 and 2 (bars) and the worst seed
(ticks), on a 2-core AMD EPYC CPU, beside k-means. Nothing is trained here: the figures are the
recorded ones (the README's status table), drawn.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np

METHODS = ["k-means", "SCAN", "SeLa", "LSDC", "C2BIN", "DRC"]
#: data set -> (mean, min) ACC per method, in METHODS' order (k-means: one figure)
RECORDED = {
    "digits images": [
        (0.792, 0.792),
        (0.988, 0.987),
        (0.992, 0.991),
        (0.971, 0.971),
        (0.990, 0.988),
        (0.968, 0.963),
    ],
    "MNIST-test images": [
        (0.542, 0.542),
        (0.961, 0.954),
        (0.926, 0.902),
        (0.973, 0.973),
        (0.931, 0.912),  # seeds 0-1
        (0.970, 0.969),
    ],
    "digits vectors": [
        (0.792, 0.792),
        (0.943, 0.942),
        (0.919, 0.918),
        (0.859, 0.858),
        (0.940, 0.935),
        (0.938, 0.937),
    ],
    "MNIST-test vectors": [
        (0.542, 0.542),
        (0.959, 0.956),
        (0.937, 0.926),
        (0.926, 0.914),
        (0.961, 0.960),
        (0.957, 0.951),
    ],
}

fig, ax = plt.subplots(figsize=(8, 3.8))
width = 0.8 / len(METHODS)
for m, method in enumerate(METHODS):
    x = np.arange(len(RECORDED)) + (m - (len(METHODS) - 1) / 2) * width
    mean = [RECORDED[data][m][0] for data in RECORDED]
    worst = [RECORDED[data][m][1] for data in RECORDED]
    ax.bar(x, mean, width, label=method)
    ax.plot(x, worst, "k_", markersize=8)
ax.set_xticks(np.arange(len(RECORDED)), list(RECORDED))
ax.set(ylabel="ACC (mean of seeds 0-2; tick: worst seed)", ylim=(0.5, 1.0))
ax.legend(ncol=6, fontsize=8, loc="lower center")
fig.tight_layout()
