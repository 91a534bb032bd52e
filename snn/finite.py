"""The one check that weights are finite, used wherever weights enter spikeloop.

Training start, checkpoint save and load, `build_model` with given weights, the hardware compiler and
NIR export/import all call `require_finite`, so a NaN or Inf is refused where it enters, with the
tensor's name, instead of evaluating at chance, compiling to zeros or failing later in an
unrelated range check.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


class NonFiniteError(ValueError):
    """Weights holding NaN or +-Inf (the message names each tensor and the counts)."""


def _counts(value: Any) -> tuple[int, int] | None:
    """(NaN count, Inf count) of a float tensor or array; None for non-float values."""
    if isinstance(value, torch.Tensor):
        if not (value.is_floating_point() or value.is_complex()):
            return None
        v = value.detach()
        return int(torch.isnan(v).sum()), int(torch.isinf(v).sum())
    a = np.asarray(value)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.complexfloating)):
        return None
    return int(np.isnan(a).sum()), int(np.isinf(a).sum())


def non_finite_report(tensors: Mapping[str, Any]) -> list[str]:
    """One phrase per tensor holding non-finite values, in name order, e.g.
    "layers.1.weight has 3 NaN values" or "layers.0.bias has 1 NaN and 2 infinite values"."""
    out = []
    for name in sorted(tensors):
        c = _counts(tensors[name])
        if c is None or c == (0, 0):
            continue
        nan, inf = c
        parts = ([f"{nan} NaN"] if nan else []) + ([f"{inf} infinite"] if inf else [])
        out.append(f"{name} has {' and '.join(parts)} value{'s' if nan + inf > 1 else ''}")
    return out


def require_finite(tensors: Mapping[str, Any], context: str | None = None,
                   error: type[ValueError] = NonFiniteError) -> None:
    """Raise `error` (default NonFiniteError) if any float tensor/array in `tensors` holds NaN or Inf.

    tensors: {name: torch.Tensor | np.ndarray | float}; non-float entries are skipped.
    The message reads "[<context>: ]non-finite weights: layers.1.weight has 3 NaN values; ..."."""
    bad = non_finite_report(tensors)
    if bad:
        more = f"; and {len(bad) - 5} more tensors" if len(bad) > 5 else ""
        raise error(f"{context + ': ' if context else ''}non-finite weights: {'; '.join(bad[:5])}{more}")
