"""Plots written as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


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
