"""Spike encoders (intensities or time series -> spike trains), decoders, and the name registry a model spec uses.

Conventions (details in docs/encoders.md):
- Static inputs x are [B, ...] intensities in [0, 1]; time series and spike trains are [T, B, ...],
  time first. Outputs keep the input's dtype and device (decoded spike times are int64).
- Inputs are floating torch tensors or numpy arrays (converted with torch.from_numpy). Integer and
  bool inputs, NaN/inf, values outside the documented range, num_steps < 1 and too few dims raise
  ValueError naming the argument; nothing is silently clamped.
- Random encoders take `generator`: a torch.Generator on the input's device, an int seed, or None
  (torch's default RNG).

A model spec names its encoder as {"type": <key of ENCODERS>, **params}; run it with
`encode(spec["type"], x, num_steps, generator, **params)`.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch

from . import _checks
from .decode import first_spike_time, spike_count, spike_rate
from .direct import direct
from .rate import bernoulli, poisson_count
from .temporal import LATENCY_METHODS, delta, latency, latency_times

__all__ = [
    "ANALOG_ENCODERS",
    "ENCODERS",
    "LATENCY_METHODS",
    "bernoulli",
    "delta",
    "direct",
    "encode",
    "is_spike_encoder",
    "first_spike_time",
    "latency",
    "latency_times",
    "poisson_count",
    "spike_count",
    "spike_rate",
]

# The one list of encoder names. Encoders with a `num_steps` parameter turn static [B, ...]
# intensities into [T, B, ...]; the others (delta) take a [T, B, ...] series. Encoders with a
# `generator` parameter are random. `encode` reads both facts off the signatures.
ENCODERS: dict[str, Callable[..., torch.Tensor]] = {
    "rate": bernoulli,
    "poisson": poisson_count,
    "latency": latency,
    "delta": delta,
    "direct": direct,
}

# Encoders whose output is a real-valued current rather than spikes (or spike counts): a network
# fed by them cannot run where the input must be spike events (fixed-point devices, Brian2).
ANALOG_ENCODERS = frozenset({"direct"})


def is_spike_encoder(name: str) -> bool:
    """True when encoder `name` emits spike events (0/1, counts or signed delta spikes)."""
    if name not in ENCODERS:
        raise ValueError(f"encoder name must be one of {sorted(ENCODERS)}, got {name!r}")
    return name not in ANALOG_ENCODERS

_POSITIONAL = ("x", "num_steps", "generator")


def encode(name: str, x: Any, num_steps: int, generator: torch.Generator | int | None = None,
           **params: Any) -> torch.Tensor:
    """Run the encoder registered as `name` with the spec's params.

    name: key of ENCODERS ("rate", "poisson", "latency", "delta", "direct").
    x: [B, ...] intensities in [0, 1] for the static encoders; for "delta", the [T, B, ...]
        series itself, whose T must equal num_steps.
    num_steps: T >= 1.
    generator: used by the random encoders ("rate", "poisson"); the deterministic ones ignore it,
        so a caller can pass its generator whatever the encoder.
    params: the encoder's other keyword arguments, e.g. gain=1.0 for "rate"; unknown or missing
        ones raise ValueError.
    returns spikes: [T, B, ...] in x's dtype and device.
    """
    if not isinstance(name, str) or name not in ENCODERS:
        raise ValueError(f"encoder name must be one of {sorted(ENCODERS)}, got {name!r}")
    fn = ENCODERS[name]
    signature = inspect.signature(fn).parameters
    accepted = [p for p in signature if p not in _POSITIONAL]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"encoder {name!r}: unknown parameter(s) {unknown}; accepted: {accepted}")
    missing = [p for p in accepted
               if signature[p].default is inspect.Parameter.empty and p not in params]
    if missing:
        raise ValueError(f"encoder {name!r}: missing required parameter(s) {missing}")
    kwargs = dict(params)
    if "generator" in signature:
        kwargs["generator"] = generator
    if "num_steps" in signature:
        return fn(x, num_steps, **kwargs)
    num_steps = _checks.num_steps_arg(num_steps)
    series = _checks.as_float_tensor(x, "x", 2, "[T, B, ...]")
    if series.shape[0] != num_steps:
        raise ValueError(
            f"encoder {name!r} takes a [T, B, ...] series: x has T={series.shape[0]} steps but "
            f"num_steps={num_steps}")
    return fn(series, **kwargs)
