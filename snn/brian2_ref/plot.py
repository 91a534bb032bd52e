"""Plot of one cross-checked sample: membrane traces and spike rasters of snnTorch and Brian2 overlaid."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..atomic import write_bytes_atomic


def _pick_neurons(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """Up to k neurons of [T, N] spike trains: those whose trains differ first, then those firing
    closest to every other step (silent or saturated neurons show the least)."""
    T = a.shape[0]
    differ = (a != b).any(axis=0)
    activity = a.sum(axis=0) + b.sum(axis=0)  # in [0, 2T]
    score = differ * 1e9 + np.minimum(activity, 2 * T - activity)
    return np.argsort(-score, kind="stable")[:k]


def plot_crosscheck(report, path: str | Path, sample: int = 0, neurons_per_layer: int = 3) -> Path:
    """Write a PNG: one row per spiking layer; left, membrane traces of a few neurons (snnTorch solid,
    Brian2 dashed, threshold dotted); right, the spike raster of the whole layer (snnTorch '|',
    Brian2 'o'). Disagreeing spikes are drawn in red. `report` is a `CrossCheckReport`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not report.traces_snntorch:
        raise ValueError("the report holds no traces to plot")
    if not 0 <= sample < report.samples:
        raise ValueError(f"sample must be in [0, {report.samples}), got {sample}")
    layers = sorted(report.traces_snntorch)
    fig, axes = plt.subplots(len(layers), 2, figsize=(13, 2.4 * len(layers)), squeeze=False,
                             gridspec_kw={"width_ratios": [1.2, 1], "wspace": 0.45})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, i in enumerate(layers):
        a, b = report.traces_snntorch[i], report.traces_brian2[i]
        sa, sb = a["spikes"][:, sample], b["spikes"][:, sample]
        ma, mb = a["mem"][:, sample], b["mem"][:, sample]
        T = sa.shape[0]
        ax_m, ax_r = axes[row]
        for c, n in enumerate(_pick_neurons(sa, sb, neurons_per_layer)):
            col = colors[c % len(colors)]
            ax_m.plot(range(T), ma[:, n], "-", color=col, lw=1.4, label=f"n{n} snnTorch")
            ax_m.plot(range(T), mb[:, n], "--", color="k", lw=0.9, alpha=0.8,
                      label="Brian2" if c == 0 else None)
            th = report.thresholds.get(i)
            if th is not None:
                ax_m.axhline(float(th[n]), color=col, ls=":", lw=0.8)
        ax_m.set_ylabel(f"layer {i}\nmembrane U")
        ax_m.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        ta, na = np.nonzero(sa)
        tb, nb = np.nonzero(sb)
        ax_r.scatter(ta, na, marker="|", s=30, color="k", label="snnTorch")
        ax_r.scatter(tb, nb, marker="o", s=14, facecolors="none", edgecolors="tab:blue", lw=0.7, label="Brian2")
        td, nd = np.nonzero(sa != sb)
        if len(td):
            ax_r.scatter(td, nd, marker="x", s=24, color="red", label="disagree")
        ax_r.set_ylim(-0.5, sa.shape[1] - 0.5)
        ax_r.set_ylabel("neuron")
        ax_r.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    axes[-1, 0].set_xlabel("time step")
    axes[-1, 1].set_xlabel("time step")
    d = report.to_dict(per_neuron=False)
    fdiv = d["first_divergence_step"]
    fig.suptitle(f"{report.model_name}: snnTorch ({report.dtype}) vs Brian2 ({report.target}), showing sample {sample}\n"
                 f"all {report.samples} samples: spike agreement {d['spike_agreement']:.6f}, "
                 f"max |dU| {d['max_membrane_abs_diff']:.3g}, first divergence step "
                 f"{fdiv if fdiv is not None else 'none'}", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return write_bytes_atomic(path, buf.getvalue())
