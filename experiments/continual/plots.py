"""Plots of a continual-learning comparison: accuracy-matrix heatmaps and per-task accuracy curves."""

from __future__ import annotations

import math

import numpy as np

from experiments.plots import _save, plt


def _matrix(R) -> np.ndarray:
    return np.array([[np.nan if v is None else 100.0 * v for v in row] for row in R], dtype=float)


def accuracy_heatmaps(matrices: dict[str, list], path, title: str = "", spread: dict[str, list] | None = None,
                      cols: int = 3) -> "object":
    """One heatmap per entry of R[i][j] (percent; rows: after task i, columns: task j).
    spread: per entry, a std matrix (fractions) written under each mean as "±s"."""
    names = list(matrices)
    cols = min(cols, len(names))
    rows = math.ceil(len(names) / cols)
    K = len(next(iter(matrices.values())))
    size = 0.42 * K + 1.6
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        M = _matrix(matrices[name])
        S = _matrix(spread[name]) if spread and spread.get(name) is not None else None
        im = ax.imshow(np.ma.masked_invalid(M), vmin=0, vmax=100, cmap="viridis")
        if K <= 12:
            for i in range(K):
                for j in range(K):
                    if not np.isnan(M[i, j]):
                        text = f"{M[i, j]:.0f}"
                        if S is not None and not np.isnan(S[i, j]):
                            text += f"\n±{S[i, j]:.1f}"
                        ax.text(j, i, text, ha="center", va="center", fontsize=7 if S is None else 5,
                                color="white" if M[i, j] < 60 else "black")
        ax.set(title=name, xlabel="task j (tested)", ylabel="after task i (trained)",
               xticks=range(K), yticks=range(K))
    fig.subplots_adjust(wspace=0.55, hspace=0.45)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="accuracy %")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def task_curves(matrices: dict[str, list], path, title: str = "", spread: dict[str, list] | None = None) -> "object":
    """Per strategy: accuracy on each task j as later tasks are learned (R[i][j] for i >= j);
    spread: per strategy a std matrix (fractions), drawn as a band of ±1 std."""
    names = list(matrices)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, sharey=True)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        M = _matrix(matrices[name])
        S = _matrix(spread[name]) if spread and spread.get(name) is not None else None
        K = M.shape[0]
        cmap = plt.get_cmap("viridis", max(K, 2))
        for j in range(K):
            xs = [i for i in range(j, K) if not np.isnan(M[i, j])]
            if xs:
                ys = np.array([M[i, j] for i in xs])
                ax.plot(xs, ys, "o-", ms=3, color=cmap(j), label=f"task {j}")
                if S is not None:
                    sd = np.nan_to_num(np.array([S[i, j] for i in xs]))
                    ax.fill_between(xs, ys - sd, ys + sd, color=cmap(j), alpha=0.15, lw=0)
        ax.set(title=name, xlabel="after learning task i", ylabel="accuracy % on task j", ylim=(0, 100),
               xticks=range(K), xlim=(-0.3, K - 0.7))
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=6, ncol=2, loc="lower left")
    fig.subplots_adjust(wspace=0.25, hspace=0.5)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def metric_bars(study: dict, path, title: str = "") -> "object":
    """ACC, BWT and forgetting per strategy of a multi-seed study (points): bars at the mean, error
    bars the 95 % t interval, dots the seeds; with a device evaluation, device ACC/BWT beside."""
    entries = study["strategies"]
    names = list(entries)
    panels = [("acc", "ACC %"), ("bwt", "BWT %"), ("forgetting", "forgetting %")]
    has_dev = any("device" in e for e in entries.values())
    fig, axes = plt.subplots(1, 3, figsize=(4.0 * 3, 3.4), squeeze=False)
    for ax, (m, label) in zip(axes.flat, panels):
        series = [("float", lambda e: e[m])]
        if has_dev and m != "forgetting":
            series.append(("device", lambda e: e.get("device", {}).get(f"device_{m}")))
        width = 0.8 / len(series)
        for si, (sname, get) in enumerate(series):
            for xi, n in enumerate(names):
                s = get(entries[n])
                if not s or s.get("mean") is None:
                    continue
                x = xi + (si - (len(series) - 1) / 2) * width
                err = None if s.get("half_width") is None else [[100 * s["half_width"]], [100 * s["half_width"]]]
                ax.bar(x, 100 * s["mean"], width, yerr=err, capsize=3, color=f"C{si}",
                       label=sname if xi == 0 else None, alpha=0.8)
                ax.plot([x] * len(s["values"]), [100 * v for v in s["values"]], "k.", ms=3)
        ax.set_xticks(range(len(names)), names, rotation=30)
        ax.set(ylabel=label)
        ax.axhline(0, color="k", lw=0.5)
        ax.grid(alpha=0.3, axis="y")
        if len(series) > 1:
            ax.legend(fontsize=7)
    fig.subplots_adjust(wspace=0.35, bottom=0.25)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
