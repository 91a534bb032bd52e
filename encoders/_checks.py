"""Argument validation shared by the encoders and decoders; every failure is a ValueError naming the argument."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch

# float8 types report is_floating_point() but most kernels (log, bernoulli, poisson) lack them.
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype the arithmetic runs in: float64 stays float64, everything else runs in float32.

    16-bit inputs are computed in float32 so that probabilities, Poisson means and spike times
    do not pick up half-precision rounding; outputs are cast back to the input dtype.
    """
    return torch.float64 if dtype == torch.float64 else torch.float32


def as_float_tensor(x: Any, name: str, min_ndim: int, layout: str) -> torch.Tensor:
    """Tensor (or numpy array, converted) with a floating dtype, >= min_ndim dims and no NaN/inf."""
    if isinstance(x, np.ndarray):
        if x.dtype not in (np.float16, np.float32, np.float64):
            raise ValueError(
                f"{name} must have a floating dtype (float16/32/64), got numpy {x.dtype}; integer "
                f"and bool arrays are rejected: convert explicitly, e.g. x.astype(np.float32) / 255")
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(
            f"{name} must have a floating dtype (float16, bfloat16, float32 or float64), got {x.dtype}; "
            f"integer and bool tensors are rejected because their scale is ambiguous: convert "
            f"explicitly, e.g. x.float() / 255")
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dims {layout}, got shape {tuple(x.shape)}")
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def check_range(x: torch.Tensor, name: str, lo: float, hi: float, hint: str = "") -> None:
    """Reject any element outside the closed interval [lo, hi] (no clamping)."""
    if x.numel() == 0:
        return
    x_min, x_max = float(x.min()), float(x.max())
    if x_min < lo or x_max > hi:
        raise ValueError(f"{name} must lie in [{lo}, {hi}], got values in [{x_min}, {x_max}]{hint}")


def intensities(x: Any, name: str = "x") -> torch.Tensor:
    """x: [B, ...] floating intensities in [0, 1]."""
    x = as_float_tensor(x, name, 1, "[B, ...]")
    check_range(x, name, 0.0, 1.0)
    return x


def spike_train(spikes: Any, name: str = "spikes") -> torch.Tensor:
    """spikes: [T, B, ...] floating, finite, non-negative (0/1 spikes or per-step counts)."""
    spikes = as_float_tensor(spikes, name, 2, "[T, B, ...]")
    if spikes.shape[0] == 0:
        raise ValueError(f"{name} must have at least one time step, got shape {tuple(spikes.shape)}")
    if spikes.numel() and float(spikes.min()) < 0:
        raise ValueError(
            f"{name} must be non-negative (0/1 spikes or counts), got minimum {float(spikes.min())}; "
            f"split the ON (+1) and OFF (-1) channels of a delta code before decoding")
    return spikes


def num_steps_arg(num_steps: Any, name: str = "num_steps") -> int:
    if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= 1, got {num_steps!r}")
    if num_steps < 1:
        raise ValueError(f"{name} must be >= 1, got {num_steps}")
    return int(num_steps)


def real(value: Any, name: str, lo: float | None = None, hi: float | None = None,
         lo_open: bool = False, hi_open: bool = False) -> float:
    """A finite real number inside the given bounds (open or closed), returned as float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    too_low = lo is not None and (value <= lo if lo_open else value < lo)
    too_high = hi is not None and (value >= hi if hi_open else value > hi)
    if too_low or too_high:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        raise ValueError(f"{name} must lie in {left}{lo_s}, {hi_s}{right}, got {value!r}")
    return value


def flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def generator_for(generator: Any, device: torch.device) -> torch.Generator | None:
    """torch.Generator on `device` from a Generator, an int seed, or None (torch's default RNG)."""
    if generator is None:
        return None
    if isinstance(generator, torch.Generator):
        g_dev = generator.device
        same = g_dev.type == device.type and (
            g_dev.index is None or device.index is None or g_dev.index == device.index)
        if not same:
            raise ValueError(
                f"generator is on {g_dev} but the input is on {device}; create it with "
                f"torch.Generator(device=x.device) or pass an int seed")
        return generator
    if isinstance(generator, bool) or not isinstance(generator, numbers.Integral):
        raise ValueError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}")
    if not 0 <= generator < 2**64:
        raise ValueError(f"generator seed must lie in [0, 2**64), got {generator}")
    return torch.Generator(device=device).manual_seed(int(generator))
