"""Brian2 reference for trained snnTorch networks: translate a model spec + weights into a Brian2
network that reproduces snnTorch's discrete-time semantics exactly, run it, and compare.

    from snn.brian2_ref import crosscheck, plot_crosscheck
    report = crosscheck("runs/train/checkpoint.safetensors", input_spikes)  # [T, B, *input_shape]
    report.to_dict()["spike_agreement"]; plot_crosscheck(report, "crosscheck.png")

Pieces: `mapping` (spec + weights -> `NetworkPlan`, no Brian2), `equations` (Brian2 model text),
`runner` (Brian2 objects, schedule, targets), `compare` (metrics), `crosscheck` (both simulators,
report), `plot`. The mapping is documented in `docs/brian2_mapping.md`.
"""

from .compare import LayerComparison, compare_traces
from .crosscheck import CrossCheckReport, crosscheck, run_snntorch
from .mapping import Connection, LayerPlan, NetworkPlan, UnsupportedLayerError, translate
from .plot import plot_crosscheck
from .runner import STRICT_FP_FLAGS, TARGETS, Brian2Result, cache_root, run_brian2

__all__ = [
    "Brian2Result", "Connection", "CrossCheckReport", "LayerComparison", "LayerPlan", "NetworkPlan",
    "STRICT_FP_FLAGS", "TARGETS", "UnsupportedLayerError", "cache_root", "compare_traces", "crosscheck",
    "plot_crosscheck", "run_brian2", "run_snntorch", "translate",
]
