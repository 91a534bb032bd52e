"""Decoders: read a spike train back into per-element numbers (counts, rates, first-spike times)."""

from __future__ import annotations

import numbers
from typing import Any

import torch

from . import _checks


def spike_count(spikes: Any) -> torch.Tensor:
    """Number of spikes of each element over the whole window.

    spikes: [T, B, ...] floating, finite, >= 0 (0/1 spikes or per-step counts such as
        `poisson_count`'s); negative values (delta OFF spikes) are rejected.
    returns counts: [B, ...] = sum over t of spikes[t], in spikes' dtype and device.
    """
    spikes = _checks.spike_train(spikes)
    return spikes.sum(dim=0)


def spike_rate(spikes: Any) -> torch.Tensor:
    """Mean number of spikes per step (not per second: divide by dt_s for Hz).

    spikes: [T, B, ...] as in `spike_count`.
    returns rate: [B, ...] = spike_count(spikes) / T, in spikes' dtype and device.
    """
    spikes = _checks.spike_train(spikes)
    return spikes.sum(dim=0) / spikes.shape[0]


def first_spike_time(spikes: Any, never: int | None = None) -> torch.Tensor:
    """Index of the first step in which each element spikes (spikes[t] > 0).

    spikes: [T, B, ...] as in `spike_count`.
    never: value for elements that never spike; None (default) means T, one past the last step,
        so that "later than every step" sorts after every real spike time.
    returns steps: [B, ...] int64 on spikes' device (indices, so not spikes' dtype).
    """
    spikes = _checks.spike_train(spikes)
    num_steps = spikes.shape[0]
    if never is None:
        never = num_steps
    elif isinstance(never, bool) or not isinstance(never, numbers.Integral):
        raise ValueError(f"never must be an int or None, got {never!r}")
    steps = torch.arange(num_steps, device=spikes.device).view(num_steps, *([1] * (spikes.ndim - 1)))
    # a step index past every real one marks "no spike here"; min over time then picks the first
    candidates = torch.where(spikes > 0, steps, num_steps)
    first = candidates.min(dim=0).values
    return torch.where(first == num_steps, torch.full_like(first, int(never)), first)
