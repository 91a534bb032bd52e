"""Temporal codes: time-to-first-spike latency for static intensities, threshold crossings for time series."""

from __future__ import annotations

from typing import Any

import torch

from . import _checks

LATENCY_METHODS = ("linear", "log")


def latency_times(x: Any, num_steps: int, *, tau: float | None = None, threshold: float = 0.01,
                  method: str = "linear", normalize: bool = False,
                  epsilon: float = 1e-7) -> torch.Tensor:
    """Real-valued spike times s (in steps) of the latency code, before rounding and clipping.

    x: [B, ...] floating intensities in [0, 1].
    returns s: [B, ...] in float32 (float64 for float64 input), finite and >= 0.
    Formulas (x_sat = max(x, threshold) for linear, max(x, threshold + epsilon) for log):
        linear: s = tau * (1 - x_sat);                 normalize: tau = num_steps - 1
        log:    s = tau * ln(x_sat / (x_sat - threshold)); normalize: s *= (num_steps - 1) / max(s)
    where max(s) runs over every element of x (all batch entries). Parameters as in `latency`.
    """
    x = _checks.intensities(x)
    num_steps = _checks.num_steps_arg(num_steps)
    return _times(x, num_steps, tau, threshold, method, normalize, epsilon)


def _times(x: torch.Tensor, num_steps: int, tau: Any, threshold: Any, method: Any, normalize: Any,
           epsilon: Any) -> torch.Tensor:
    """`latency_times` on an already validated x and num_steps."""
    if method not in LATENCY_METHODS:
        raise ValueError(f"method must be one of {LATENCY_METHODS}, got {method!r}")
    normalize = _checks.flag(normalize, "normalize")
    if normalize and tau is not None:
        raise ValueError(
            f"tau must be None when normalize=True (normalize sets the time scale to fill "
            f"num_steps), got tau={tau!r}")
    tau = 1.0 if tau is None else _checks.real(tau, "tau", lo=0.0, lo_open=True)
    if method == "log":
        threshold = _checks.real(threshold, "threshold", lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        epsilon = _checks.real(epsilon, "epsilon", lo=0.0, lo_open=True)
    else:
        threshold = _checks.real(threshold, "threshold", lo=0.0, hi=1.0, hi_open=True)

    xw = x.to(_checks.work_dtype(x.dtype))
    if method == "linear":
        if normalize:
            tau = float(num_steps - 1)
        # clamp_max of tau * (1 - x) by tau * (1 - threshold) is tau * (1 - max(x, threshold)),
        # written the way snnTorch's latency_code_linear computes it so that roundings agree bitwise
        s = torch.clamp_max(tau * (1 - xw), tau * (1 - threshold))
    else:
        floor = threshold + epsilon
        gap = torch.tensor(floor, dtype=xw.dtype) - threshold
        if not gap > 0:
            raise ValueError(
                f"epsilon={epsilon} vanishes next to threshold={threshold} in {xw.dtype}; "
                f"use a larger epsilon")
        xs = torch.clamp(xw, min=floor)
        s = tau * torch.log(xs / (xs - threshold))
        if normalize and s.numel():
            s = s * (num_steps - 1) / torch.max(s)
    if s.numel() and not bool(torch.isfinite(s).all()):
        raise ValueError(f"tau={tau} makes spike times overflow {s.dtype}")
    return s


def latency(x: Any, num_steps: int, *, tau: float | None = None, threshold: float = 0.01,
            method: str = "linear", normalize: bool = False, clip: bool = False,
            epsilon: float = 1e-7) -> torch.Tensor:
    """Time-to-first-spike code: each element spikes at most once, brighter elements earlier.

    x: [B, ...] floating intensities in [0, 1] (torch tensor or numpy array).
    num_steps: T >= 1.
    tau: time constant in steps (> 0); None means 1.0. Must be None when normalize=True.
    threshold: intensity below which an element is sub-threshold; linear: [0, 1), log: (0, 1).
    method: "linear" or "log".
    normalize: stretch the code over the T steps (see below).
    clip: if True, sub-threshold elements (x < threshold) do not spike at all.
    epsilon: log only; sub-threshold saturation offset (> 0).
    returns spikes: [T, B, ...] in x's dtype and device, values {0, 1}, at most one 1 per element.

    Spike time of one element, in steps (x_sat as below):
        linear: s = tau * (1 - max(x, threshold))
                normalize=True: tau = T - 1, so x = 1 fires at step 0, x <= threshold at
                round((T - 1) * (1 - threshold)).
        log:    s = tau * ln(x_sat / (x_sat - threshold)),  x_sat = max(x, threshold + epsilon)
                (the time an RC membrane driven by x, time constant tau, takes to reach threshold;
                sub-threshold inputs never would, so they are saturated at threshold + epsilon)
                normalize=True: s = s * (T - 1) / max(s), max over ALL elements of x, so the
                latest element lands on step T - 1. This couples the elements of the tensor,
                batch entries included (same as snnTorch); use normalize=False with an explicit
                tau for a code where each element depends only on its own intensity.
    The element spikes at step k = round(s) (round half to even, torch.round: 0.5 -> 0,
    1.5 -> 2, 2.5 -> 2) if k <= T - 1 and not (clip and x < threshold); otherwise it does not
    spike within the window (it would fire after it; nothing is moved into the window).

    Spike times are computed in float32 (float64 for float64 input). With first_spike_time=0,
    on_target=1, off_target=0, interpolate=False and bypass=True, the result equals
    `snntorch.spikegen.latency(x, num_steps, threshold, tau, clip=clip, normalize=normalize,
    linear=(method == "linear"), epsilon=epsilon)` for float32/float64 x in [0, 1] (snnTorch without
    bypass raises where a spike falls after the window; snnTorch ignores tau under normalize, this
    function refuses it).
    """
    x = _checks.intensities(x)
    num_steps = _checks.num_steps_arg(num_steps)
    clip = _checks.flag(clip, "clip")
    s = _times(x, num_steps, tau, threshold, method, normalize, epsilon)
    k = torch.round(s)
    # compare as floats: k may be far beyond T and must not be cast to an integer type; a k past
    # the last step matches no step, so that element does not spike in the window
    steps = torch.arange(num_steps, dtype=k.dtype, device=k.device).view(num_steps, *([1] * k.ndim))
    spikes = steps == k.unsqueeze(0)
    if clip:
        spikes &= ~(x < threshold).unsqueeze(0)
    return spikes.to(x.dtype)


def delta(x: Any, threshold: float, off_spike: bool = False, padding: bool = False) -> torch.Tensor:
    """Threshold-crossing (delta) code of a time series.

    x: [T, B, ...] floating time series, any finite values (torch tensor or numpy array).
    threshold: > 0, in the units of x.
    off_spike: also emit -1 where the signal falls by threshold or more.
    padding: reference for step 0; False: x[-1] := 0 (a signal starting above threshold spikes
        at step 0); True: x[-1] := x[0] (step 0 never spikes).
    returns spikes: [T, B, ...] in x's dtype and device, d[t] = x[t] - x[t-1]:
        +1 where d[t] >= threshold; -1 where off_spike and d[t] <= -threshold; 0 elsewhere.

    Equals `snntorch.spikegen.delta(x, threshold, padding, off_spike)` (which also accepts
    threshold <= 0; here that is refused, as it would fire on a constant signal).
    """
    x = _checks.as_float_tensor(x, "x", 2, "[T, B, ...]")
    threshold = _checks.real(threshold, "threshold", lo=0.0, lo_open=True)
    off_spike = _checks.flag(off_spike, "off_spike")
    padding = _checks.flag(padding, "padding")
    previous = torch.cat((x[:1] if padding else torch.zeros_like(x[:1]), x[:-1]))
    d = x - previous
    spikes = (d >= threshold).to(x.dtype)
    if off_spike:
        spikes = spikes - (d <= -threshold).to(x.dtype)
    return spikes
