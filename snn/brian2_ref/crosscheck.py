"""Cross-check a trained network: the same input spikes through snnTorch and through Brian2, compared.

    report = crosscheck(checkpoint_or_path_or_(spec, state_dict), input_spikes [T, B, *input_shape])
    report.to_dict()  # spike_agreement, max_membrane_abs_diff, first_divergence_step, layers, ...

With `dtype=torch.float64`, spike trains must agree 100% and membranes to `tolerance` (1e-12);
bit-exact when the weights make every sum exact (e.g. multiples of 2^-8). With float32 the report
measures snnTorch's float32 drift against the float64 Brian2 reference.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import Checkpoint, load_checkpoint
from ..model import build_model
from ..spec import ModelSpec
from .compare import LayerComparison, compare_traces
from .mapping import NetworkPlan, translate
from .runner import TARGETS, check_inputs, run_brian2

REPORT_VERSION = 1
DEFAULT_TOLERANCE = 1e-12
_DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass
class CrossCheckReport:
    """Result of one cross-check. `layers` compares every spiking layer (a = snnTorch, b = Brian2).

    traces_snntorch / traces_brian2: {spec index: {"spikes"|"mem"(|"syn"): [T, B, N] float64}};
    inputs: [T, B, n_input] input spikes or currents. They are kept for plotting and left out of `to_dict`."""

    layers: list[LayerComparison]
    target: str
    dtype: str
    samples: int
    num_steps: int
    tolerance: float
    brian2_seconds: float
    snntorch_seconds: float
    brian2_timing: dict
    predictions_snntorch: np.ndarray
    predictions_brian2: np.ndarray
    traces_snntorch: dict = field(repr=False, default_factory=dict)
    traces_brian2: dict = field(repr=False, default_factory=dict)
    inputs: np.ndarray | None = field(repr=False, default=None)
    thresholds: dict = field(repr=False, default_factory=dict)
    model_name: str = "model"

    @property
    def spike_agreement(self) -> float:
        """Fraction of all spike bins (every layer, step, sample, neuron) that agree."""
        total = sum(l.n for l in self.layers)
        return float(sum(l.spike_agreement * l.n for l in self.layers) / total)

    @property
    def train_agreement(self) -> float:
        total = sum(l.n for l in self.layers)
        return float(sum(l.train_agreement * l.n for l in self.layers) / total)

    @property
    def max_membrane_abs_diff(self) -> float:
        return max(l.max_membrane_abs_diff for l in self.layers)

    @property
    def first_divergence_step(self) -> int | None:
        steps = [l.first_divergence_step for l in self.layers if l.first_divergence_step is not None]
        return min(steps) if steps else None

    @property
    def exact(self) -> bool:
        """All spikes agree and every membrane is within `tolerance`."""
        return self.spike_agreement == 1.0 and self.max_membrane_abs_diff <= self.tolerance

    def to_dict(self, per_neuron: bool = True) -> dict:
        import brian2
        import snntorch

        return {
            "report_version": REPORT_VERSION,
            "model": self.model_name,
            "target": self.target,
            "dtype": self.dtype,
            "samples": self.samples,
            "num_steps": self.num_steps,
            "spike_agreement": self.spike_agreement,
            "train_agreement": self.train_agreement,
            "diverged_fraction": 1.0 - self.train_agreement,
            "max_membrane_abs_diff": self.max_membrane_abs_diff,
            "max_membrane_abs_diff_before_divergence":
                max(l.max_membrane_abs_diff_before_divergence for l in self.layers),
            "first_divergence_step": self.first_divergence_step,
            "prediction_agreement": float(np.mean(self.predictions_snntorch == self.predictions_brian2)),
            "tolerance": self.tolerance,
            "exact": self.exact,
            "brian2_seconds": self.brian2_seconds,
            "snntorch_seconds": self.snntorch_seconds,
            "brian2_build_seconds": self.brian2_timing.get("build_seconds"),
            "brian2_run_seconds": self.brian2_timing.get("run_seconds"),
            "layers": [l.to_dict(per_neuron) for l in self.layers],
            "versions": {"brian2": brian2.__version__, "snntorch": snntorch.__version__,
                         "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()},
        }


def _resolve(source) -> tuple[ModelSpec, dict]:
    if isinstance(source, Checkpoint):
        return source.spec, source.state_dict
    if isinstance(source, (str, Path)):
        ckpt = load_checkpoint(source)
        return ckpt.spec, ckpt.state_dict
    if isinstance(source, tuple) and len(source) == 2 and isinstance(source[0], ModelSpec):
        return source
    raise ValueError("source must be a Checkpoint, a checkpoint path or a (ModelSpec, state_dict) tuple, "
                     f"got {type(source).__name__}")


def _as_tensor(input_spikes, spec: ModelSpec) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(input_spikes) if not isinstance(input_spikes, torch.Tensor) else input_spikes)
    if x.dim() != 2 + len(spec.input_shape) or tuple(x.shape[2:]) != spec.input_shape \
            or x.shape[0] != spec.num_steps:
        raise ValueError(f"input_spikes must be [T={spec.num_steps}, B, {', '.join(map(str, spec.input_shape))}], "
                         f"got {list(x.shape)}")
    return x.detach().cpu()


def run_snntorch(spec: ModelSpec, state_dict: dict, input_spikes, dtype: torch.dtype = torch.float64,
                 device: str = "cpu") -> tuple[dict[int, dict[str, np.ndarray]], float]:
    """snnTorch forward pass with every spiking layer recorded.

    Returns ({spec index: {"spikes"|"mem"(|"syn"): [T, B, N] float64}}, seconds of the timed
    forward pass; a one-sample warm-up pass runs first, untimed)."""
    x = _as_tensor(input_spikes, spec).to(device=device, dtype=dtype)
    model = build_model(spec, state_dict, dtype=dtype, device=device).eval()
    with torch.no_grad():
        model(x[:, :1])
        t0 = time.perf_counter()
        out = model(x, record=True)
        if x.is_cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    traces = {i: {k: v.detach().cpu().to(torch.float64).reshape(v.shape[0], v.shape[1], -1).numpy()
                  for k, v in rec.items()} for i, rec in out.record.items()}
    return traces, seconds


def _predict(spikes: np.ndarray) -> np.ndarray:
    """Argmax of output spike counts [T, B, N] -> [B], ties to the lowest index."""
    return np.argmax(spikes.sum(axis=0), axis=1)


def crosscheck(source, input_spikes, target: str = "numpy", dtype: torch.dtype | str = torch.float64,
               cache_dir: str | Path | None = None, tolerance: float = DEFAULT_TOLERANCE,
               brian2_spec: ModelSpec | None = None, progress: bool = False,
               device: str = "cpu") -> CrossCheckReport:
    """Run `source` (Checkpoint, checkpoint path, or (spec, state_dict)) in snnTorch (`dtype`) and in
    Brian2 (`target`, always float64) on the same input [T, B, *input_shape] and compare: spikes
    (0/1) for a spike encoder, the real-valued currents of an analog encoder (`direct`) otherwise.

    brian2_spec: simulate this spec in Brian2 instead (same weights) — for negative tests of the
    check itself, e.g. a spec with the reset mode swapped must not agree.
    progress: Brian2 prints its run progress to stderr (numpy and cython targets).
    device: where snnTorch runs ("cpu" by default; on "cuda" the float64 sums may round differently)."""
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        dtype = _DTYPES[dtype]
    if dtype not in _DTYPES.values():
        raise ValueError(f"dtype must be torch.float64 or torch.float32, got {dtype}")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    spec, state_dict = _resolve(source)
    x = _as_tensor(input_spikes, spec)
    plan: NetworkPlan = translate(brian2_spec or spec, state_dict)
    check_inputs(plan, x.numpy())  # the right shape and kind (0/1 spikes or currents), before any simulation
    traces_a, t_snn = run_snntorch(spec, state_dict, x, dtype, device=device)
    b2 = run_brian2(plan, x.numpy(), target=target, cache_dir=cache_dir, progress=progress)
    kinds = {i: spec.layers[i].type_name for i in traces_a}
    layers = compare_traces(traces_a, b2.layers, kinds)
    last = spec.spiking_layers()[-1]
    return CrossCheckReport(
        layers=layers, target=target, dtype=str(dtype).replace("torch.", ""), samples=int(x.shape[1]),
        num_steps=int(x.shape[0]), tolerance=tolerance, brian2_seconds=b2.seconds, snntorch_seconds=t_snn,
        brian2_timing=b2.timing, predictions_snntorch=_predict(traces_a[last]["spikes"]),
        predictions_brian2=_predict(b2.layers[last]["spikes"]), traces_snntorch=traces_a,
        traces_brian2=b2.layers, inputs=x.reshape(x.shape[0], x.shape[1], -1).numpy(),
        thresholds={l.spec_index: l.params["threshold"] for l in plan.layers}, model_name=spec.name)
