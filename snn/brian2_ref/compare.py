"""Compare two simulations of one network, layer by layer: spike agreement, divergence, membrane error.

Pure numpy on traces `{spec index: {"spikes"|"mem"(|"syn"): [T, B, N] float}}` (as returned by
`run_snntorch` and `run_brian2`). Steps are 0-based indices on the T axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LayerComparison:
    """Agreement of one spiking layer (spec index `spec_index`, `n` neurons) over B samples, T steps.

    spike_agreement: fraction of the T*B*N spike bins that are equal.
    train_agreement: fraction of the B*N spike trains (one neuron, one sample) that are identical.
    first_divergence_step: first step where any train differs (None if none);
    median_divergence_step: median first-divergence step of the trains that differ.
    max_membrane_abs_diff: max |U_a - U_b| over everything; `..._before_divergence` only over
    steps before the sample's first spike divergence anywhere in the network (pure arithmetic drift).
    spike_count_correlation: Pearson r of the per-train spike counts (1.0 when both are identical,
    None when one side is constant and they differ).
    neuron_agreement: [N] fraction of the T*B bins equal, per neuron.
    neuron_first_divergence: [N] first step the neuron's train differs in any sample, -1 if never."""

    spec_index: int
    kind: str
    n: int
    spike_agreement: float
    train_agreement: float
    first_divergence_step: int | None
    median_divergence_step: float | None
    max_membrane_abs_diff: float
    max_membrane_abs_diff_before_divergence: float
    max_syn_abs_diff: float | None
    spike_count_correlation: float | None
    spikes_a: int
    spikes_b: int
    neuron_agreement: np.ndarray
    neuron_first_divergence: np.ndarray

    def to_dict(self, per_neuron: bool = True) -> dict:
        d = {
            "layer": self.spec_index, "type": self.kind, "neurons": self.n,
            "spike_agreement": self.spike_agreement, "train_agreement": self.train_agreement,
            "diverged_fraction": 1.0 - self.train_agreement,
            "first_divergence_step": self.first_divergence_step,
            "median_divergence_step": self.median_divergence_step,
            "max_membrane_abs_diff": self.max_membrane_abs_diff,
            "max_membrane_abs_diff_before_divergence": self.max_membrane_abs_diff_before_divergence,
            "max_syn_abs_diff": self.max_syn_abs_diff,
            "spike_count_correlation": self.spike_count_correlation,
            "spikes_snntorch": self.spikes_a, "spikes_brian2": self.spikes_b,
        }
        if per_neuron:
            d["neuron_agreement"] = [float(x) for x in self.neuron_agreement]
            d["neuron_first_divergence_step"] = [int(x) if x >= 0 else None for x in self.neuron_first_divergence]
        return d


def _first_true(mask: np.ndarray, axis: int = 0) -> np.ndarray:
    """Index of the first True along `axis`, -1 where none."""
    first = np.argmax(mask, axis=axis)
    return np.where(mask.any(axis=axis), first, -1)


def count_correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson r of two count vectors; 1.0 if identical, None if one is constant and they differ."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if np.array_equal(a, b):
        return 1.0
    if a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _check(name: str, shape_a, shape_b, layer: int) -> None:
    if tuple(shape_a) != tuple(shape_b):
        raise ValueError(f"layer {layer}: {name} shapes differ: {tuple(shape_a)} vs {tuple(shape_b)}")


def sample_divergence(traces_a: dict, traces_b: dict) -> np.ndarray:
    """[B] first step at which any spike of any layer differs in each sample, T where none."""
    first = None
    for i in traces_a:
        sa = np.asarray(traces_a[i]["spikes"]).reshape(*traces_a[i]["spikes"].shape[:2], -1)
        sb = np.asarray(traces_b[i]["spikes"]).reshape(sa.shape)
        T = sa.shape[0]
        f = _first_true((sa != sb).any(axis=2), axis=0)
        f = np.where(f < 0, T, f)
        first = f if first is None else np.minimum(first, f)
    return first


def compare_layer(i: int, kind: str, a: dict, b: dict, sample_first: np.ndarray) -> LayerComparison:
    """Compare traces of spiking layer i: a, b = {"spikes", "mem"(, "syn")} each [T, B, ...]."""
    T, B = a["spikes"].shape[:2]
    sa, sb = (np.asarray(x["spikes"], dtype=np.float64).reshape(T, B, -1) for x in (a, b))
    ma, mb = (np.asarray(x["mem"], dtype=np.float64).reshape(T, B, -1) for x in (a, b))
    _check("spikes", sa.shape, sb.shape, i)
    _check("mem", ma.shape, mb.shape, i)
    n = sa.shape[2]
    differ = sa != sb  # [T, B, N]
    train_first = _first_true(differ, axis=0)  # [B, N]
    diverged = train_first >= 0
    mem_diff = np.abs(ma - mb)
    before = np.arange(T)[:, None] < sample_first[None, :]  # [T, B]
    syn_diff = None
    if "syn" in a and "syn" in b:
        ya, yb = (np.asarray(x["syn"], dtype=np.float64).reshape(T, B, -1) for x in (a, b))
        _check("syn", ya.shape, yb.shape, i)
        syn_diff = float(np.abs(ya - yb).max())
    neuron_first = np.where(diverged.any(axis=0), np.where(diverged, train_first, T).min(axis=0), -1)
    return LayerComparison(
        spec_index=i, kind=kind, n=n,
        spike_agreement=float(1.0 - differ.mean()),
        train_agreement=float(1.0 - diverged.mean()),
        first_divergence_step=int(train_first[diverged].min()) if diverged.any() else None,
        median_divergence_step=float(np.median(train_first[diverged])) if diverged.any() else None,
        max_membrane_abs_diff=float(mem_diff.max()),
        max_membrane_abs_diff_before_divergence=float(mem_diff[before].max()) if before.any() else 0.0,
        max_syn_abs_diff=syn_diff,
        spike_count_correlation=count_correlation(sa.sum(axis=0), sb.sum(axis=0)),
        spikes_a=int(sa.sum()), spikes_b=int(sb.sum()),
        neuron_agreement=1.0 - differ.reshape(T * B, n).mean(axis=0),
        neuron_first_divergence=neuron_first.astype(np.int64),
    )


def compare_traces(traces_a: dict, traces_b: dict, kinds: dict[int, str]) -> list[LayerComparison]:
    """Compare every spiking layer present in `traces_a` (simulation a: snnTorch, b: Brian2)."""
    missing = sorted(set(traces_a) - set(traces_b))
    if missing:
        raise ValueError(f"second simulation has no traces for layer(s) {missing}")
    for i in traces_a:
        for name in ("spikes", "mem"):
            _check(name, np.shape(traces_a[i][name]), np.shape(traces_b[i][name]), i)
    first = sample_divergence(traces_a, traces_b)
    return [compare_layer(i, kinds[i], traces_a[i], traces_b[i], first) for i in sorted(traces_a)]
