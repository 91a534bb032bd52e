"""Rate codes: intensities become random spike trains whose per-step statistics follow the intensity."""

from __future__ import annotations

from typing import Any

import torch

from . import _checks


def _repeat_time(t: torch.Tensor, num_steps: int) -> torch.Tensor:
    # contiguous so the sampler walks a dense [T, ...] tensor; the random stream is then the same
    # as snnTorch's data.repeat(...) followed by torch.bernoulli.
    return t.unsqueeze(0).expand(num_steps, *t.shape).contiguous()


def bernoulli(x: Any, num_steps: int, gain: float = 1.0, offset: float = 0.0,
              generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Bernoulli rate code: each element spikes independently at each step with p = gain * x + offset.

    x: [B, ...] floating intensities in [0, 1] (torch tensor or numpy array).
    num_steps: T >= 1.
    gain, offset: finite numbers; every p = gain * x + offset must lie in [0, 1] (checked in
        float64 and rejected otherwise, never clamped).
    generator: torch.Generator on x's device, an int seed (a fresh Generator on x's device), or
        None for torch's default RNG. The same seed on the same device gives the same spikes.
    returns spikes: [T, B, ...] in x's dtype and device, values {0, 1}.

    For float32/float64 input and a Generator seeded like the global RNG this draws exactly what
    `snntorch.spikegen.rate(x, num_steps, gain, offset)` draws (both call torch.bernoulli on the
    same p), but snnTorch clamps p into [0, 1] where this function raises.
    """
    x = _checks.intensities(x)
    num_steps = _checks.num_steps_arg(num_steps)
    gain = _checks.real(gain, "gain")
    offset = _checks.real(offset, "offset")
    gen = _checks.generator_for(generator, x.device)
    # validate the exact p in float64 so a float32 rounding of a valid p (0.7 * 1 + 0.3) is not
    # mistaken for user error, and a real excursion is never hidden
    _checks.check_range(x.double() * gain + offset, "p = gain * x + offset", 0.0, 1.0,
                        hint=f" (gain={gain}, offset={offset})")
    xw = x.to(_checks.work_dtype(x.dtype))
    # same expression as snnTorch; the clamp only absorbs the <= 1 ulp rounding of a p already
    # validated above
    p = (xw * gain + offset).clamp_(0.0, 1.0)
    if p.device.type == "cpu":
        # On the CPU torch.bernoulli(p) draws one uniform u per element, in order, from the
        # generator and returns u < p; drawing u with torch.rand and comparing against the
        # broadcast p gives the same bits (tests/test_encoders.py checks it against torch.bernoulli
        # and snnTorch) at a fifth of the cost, without materialising p over time, and as bool.
        # The comparison is written into u's own memory where the dtypes agree: one pass over the
        # [T, ...] spikes instead of three (bool, then a copy to x's dtype); the same bits.
        u = torch.rand((num_steps, *p.shape), generator=gen, dtype=p.dtype)
        if u.dtype == x.dtype:
            return torch.lt(u, p, out=u)
        return (u < p).to(x.dtype)
    spikes = torch.bernoulli(_repeat_time(p, num_steps), generator=gen)
    return spikes.to(x.dtype)


def poisson_count(x: Any, num_steps: int, *, max_rate_hz: float, dt_s: float,
                  generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Poisson count code: the number of spikes of each element in each step is Poisson distributed.

    Each element fires as a Poisson process of rate x * max_rate_hz (Hz); the count in one step
    of length dt_s is Poisson with mean lam = x * max_rate_hz * dt_s, independent across steps
    and elements. Unlike `bernoulli`, a step can hold more than one spike.

    x: [B, ...] floating intensities in [0, 1] (torch tensor or numpy array).
    num_steps: T >= 1.
    max_rate_hz: rate in Hz of an element with x = 1; finite, >= 0.
    dt_s: step length in seconds; finite, > 0.
    generator: as in `bernoulli`.
    returns counts: [T, B, ...] in x's dtype and device, holding non-negative integers
        (an integer-valued float tensor, so it feeds a network like 0/1 spikes do). In float16
        and bfloat16 outputs, counts above 2048 and 256 respectively are not exact.
    """
    x = _checks.intensities(x)
    num_steps = _checks.num_steps_arg(num_steps)
    max_rate_hz = _checks.real(max_rate_hz, "max_rate_hz", lo=0.0)
    dt_s = _checks.real(dt_s, "dt_s", lo=0.0, lo_open=True)
    gen = _checks.generator_for(generator, x.device)
    lam = x.to(_checks.work_dtype(x.dtype)) * (max_rate_hz * dt_s)
    if lam.numel() and not bool(torch.isfinite(lam).all()):
        raise ValueError(f"max_rate_hz * dt_s = {max_rate_hz * dt_s} overflows {lam.dtype}")
    counts = torch.poisson(_repeat_time(lam, num_steps), generator=gen)
    return counts.to(x.dtype)
