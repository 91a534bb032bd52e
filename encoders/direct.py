"""Direct (analog current) input: the intensities themselves, repeated at every time step.

Not a spike code: the first weight layer receives real-valued currents, as in most surrogate-gradient
SNN papers on images (and snnTorch's convolutional tutorial). It is deterministic and loses no
intensity information, so it trains faster and more accurately than a rate code at small T; the
price is that the network's input is not spikes: a device profile with graded input (`mcu`) takes
these currents quantized to int8 (`hw.fixed_point.quantize_input` with the program's input_scale),
the spike-only profiles refuse such a model (`is_spike_encoder`); the Brian2 reference feeds it as a
current."""

from __future__ import annotations

from typing import Any

import torch

from . import _checks


def direct(x: Any, num_steps: int, gain: float = 1.0) -> torch.Tensor:
    """Analog input current: out[t] = gain * x for every step t.

    x: [B, ...] floating intensities in [0, 1] (torch tensor or numpy array).
    num_steps: T >= 1.
    gain: finite number scaling the current.
    returns currents: [T, B, ...] in x's dtype and device (a dense copy, not a view).
    """
    x = _checks.intensities(x)
    num_steps = _checks.num_steps_arg(num_steps)
    gain = _checks.real(gain, "gain")
    current = (x.to(_checks.work_dtype(x.dtype)) * gain).to(x.dtype)
    return current.unsqueeze(0).expand(num_steps, *x.shape).contiguous()
