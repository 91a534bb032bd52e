"""Plots of a continual-learning comparison: accuracy-matrix heatmaps and per-task accuracy curves."""

from __future__ import annotations

import math

import numpy as np

from experiments.plots import _save, plt


def _matrix(R) -> np.ndarray:
    return np.array([[np.nan if v is None else 100.0 * v for v in row] for row in R], dtype=float)


def accuracy_heatmaps(matrices: dict[str, list], path, title: str = "") -> "object":
    """One heatmap per strategy of R[i][j] (percent; rows: after task i, columns: task j)."""
    names = list(matrices)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    K = len(next(iter(matrices.values())))
    size = 0.42 * K + 1.6
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        M = _matrix(matrices[name])
        im = ax.imshow(np.ma.masked_invalid(M), vmin=0, vmax=100, cmap="viridis")
        if K <= 12:
            for i in range(K):
                for j in range(K):
                    if not np.isnan(M[i, j]):
                        ax.text(j, i, f"{M[i, j]:.0f}", ha="center", va="center", fontsize=7,
                                color="white" if M[i, j] < 60 else "black")
        ax.set(title=name, xlabel="task j (tested)", ylabel="after task i (trained)",
               xticks=range(K), yticks=range(K))
    fig.subplots_adjust(wspace=0.55, hspace=0.45)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="accuracy %")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def task_curves(matrices: dict[str, list], path, title: str = "") -> "object":
    """Per strategy: accuracy on each task j as later tasks are learned (R[i][j] for i >= j)."""
    names = list(matrices)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, sharey=True)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        M = _matrix(matrices[name])
        K = M.shape[0]
        cmap = plt.get_cmap("viridis", max(K, 2))
        for j in range(K):
            xs = [i for i in range(j, K) if not np.isnan(M[i, j])]
            if xs:
                ax.plot(xs, [M[i, j] for i in xs], "o-", ms=3, color=cmap(j), label=f"task {j}")
        ax.set(title=name, xlabel="after learning task i", ylabel="accuracy % on task j", ylim=(0, 100),
               xticks=range(K), xlim=(-0.3, K - 0.7))
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=6, ncol=2, loc="lower left")
    fig.subplots_adjust(wspace=0.25, hspace=0.5)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
