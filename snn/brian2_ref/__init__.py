"""Brian2 reference for trained snnTorch networks: translate a model spec + weights into a Brian2
network that reproduces snnTorch's discrete-time semantics exactly, run it, and compare.

    from snn.brian2_ref import crosscheck, plot_crosscheck
    report = crosscheck("runs/train/model.safetensors", input_spikes)  # [T, B, *input_shape]
    report.to_dict()["spike_agreement"]; plot_crosscheck(report, "crosscheck.png")

Pieces: `plan` (the simulator-neutral network description, numpy only), `mapping` (spec + weights
-> plan), `equations` (Brian2 model text), `runner` (Brian2 objects, schedule, targets),
`compare` (metrics), `crosscheck` (both simulators, report), `plot`. The mapping is documented in
`docs/brian2_mapping.md`. Names are imported lazily, so the cpp_standalone worker
(`python -m snn.brian2_ref.standalone`) starts without torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Connection": "plan", "LayerPlan": "plan", "NetworkPlan": "plan", "Stage": "plan",
    "UnsupportedLayerError": "mapping", "translate": "mapping",
    "STRICT_FP_FLAGS": "runner", "TARGETS": "runner", "Brian2Result": "runner", "cache_root": "runner",
    "run_brian2": "runner",
    "LayerComparison": "compare", "compare_traces": "compare",
    "CrossCheckReport": "crosscheck", "crosscheck": "crosscheck", "run_snntorch": "crosscheck",
    "plot_crosscheck": "plot",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
