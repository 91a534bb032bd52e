"""Plots written as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

from snn.atomic import write_bytes_atomic

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig, path) -> Path:
    """Render `fig` to PNG bytes in memory, close it, and write them atomically (snn.atomic)."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return write_bytes_atomic(path, buf.getvalue())


def learning_curves(history: list[dict], path) -> Path:
    """Train loss and train/validation accuracy per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    a1.plot(epochs, [h["train_loss"] for h in history], "o-")
    a1.set(xlabel="epoch", ylabel="train loss", title="loss")
    a2.plot(epochs, [h["train_accuracy"] for h in history], "o-", label="train")
    if any("val_accuracy" in h for h in history):
        a2.plot(epochs, [h.get("val_accuracy") for h in history], "s-", label="validation")
    a2.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    a2.legend()
    return _save(fig, path)


def spike_raster(layers: dict[str, "object"], path, title: str = "") -> Path:
    """One raster panel per layer. layers: {name: spikes [T, N] (0/1)}."""
    n = len(layers)
    fig, axes = plt.subplots(n, 1, figsize=(8, 1.2 + 1.6 * n), sharex=True, squeeze=False)
    for ax, (name, spk) in zip(axes[:, 0], layers.items()):
        spk = spk.reshape(spk.shape[0], -1)
        t, i = spk.nonzero(as_tuple=True) if hasattr(spk, "nonzero") else spk.nonzero()
        ax.scatter(t, i, s=2, marker="|", color="k")
        ax.set_ylabel(f"{name}\nneuron")
        ax.set_ylim(-0.5, spk.shape[1] - 0.5)
    axes[-1, 0].set_xlabel("time step")
    if title:
        axes[0, 0].set_title(title)
    return _save(fig, path)


def confusion_matrices(mats: dict[str, "object"], path, class_names=None) -> Path:
    """Side-by-side confusion matrices. mats: {title: [C, C] counts, rows = true class}."""
    n = len(mats)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.8), squeeze=False)
    for ax, (name, m) in zip(axes[0], mats.items()):
        m = [[int(v) for v in row] for row in (m.tolist() if hasattr(m, "tolist") else m)]
        ax.imshow(m, cmap="Blues")
        for i, row in enumerate(m):
            for j, v in enumerate(row):
                if v:
                    ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                            color="white" if v > max(map(max, m)) / 2 else "black")
        ax.set(title=name, xlabel="predicted", ylabel="true")
        ticks = range(len(m))
        ax.set_xticks(ticks, class_names or ticks)
        ax.set_yticks(ticks, class_names or ticks)
    return _save(fig, path)
