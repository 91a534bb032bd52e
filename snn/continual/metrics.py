"""Continual-learning metrics on the accuracy matrix R (Lopez-Paz & Ranzato 2017; GPM; HLOP).

R[i][j] is the test accuracy on task j after learning task i (tasks 0..K-1). Entries not measured
(task j not yet seen, or rows a strategy does not produce) are None / NaN.

  ACC = mean_j R[K-1][j]                         (average accuracy after the last task)
  BWT = mean_{j < K-1} (R[K-1][j] - R[j][j])      (backward transfer; negative = forgetting)
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def as_matrix(R: Sequence[Sequence[float | None]]) -> list[list[float]]:
    """Validate R (square, K >= 1) and return it as lists of floats with NaN for missing entries."""
    rows = [list(r) for r in R]
    k = len(rows)
    if k == 0:
        raise ValueError("accuracy matrix must have at least one task")
    out = []
    for i, row in enumerate(rows):
        if len(row) != k:
            raise ValueError(f"accuracy matrix must be square: row {i} has {len(row)} entries, expected {k}")
        vals = []
        for j, v in enumerate(row):
            v = math.nan if v is None else float(v)
            if not math.isnan(v) and not 0.0 <= v <= 1.0:
                raise ValueError(f"accuracy matrix entry [{i}][{j}] = {v} is not an accuracy in [0, 1]")
            vals.append(v)
        out.append(vals)
    return out


def average_accuracy(R) -> float:
    """ACC: mean of the last row (every task must be measured after the last task)."""
    M = as_matrix(R)
    last = M[-1]
    if any(math.isnan(v) for v in last):
        raise ValueError("ACC needs every entry of the last row of the accuracy matrix")
    return sum(last) / len(last)


def backward_transfer(R) -> float | None:
    """BWT: mean over j < K-1 of R[K-1][j] - R[j][j]; None for a single task or when the diagonal
    was not measured (e.g. joint multitask training)."""
    M = as_matrix(R)
    k = len(M)
    if k < 2:
        return None
    diffs = [M[-1][j] - M[j][j] for j in range(k - 1)]
    if any(math.isnan(d) for d in diffs):
        return None
    return sum(diffs) / len(diffs)


def forgetting(R) -> float | None:
    """Average forgetting (Chaudhry et al. 2018): mean over j < K-1 of max_{i<K-1} R[i][j] - R[K-1][j]."""
    M = as_matrix(R)
    k = len(M)
    if k < 2:
        return None
    vals = []
    for j in range(k - 1):
        best = [M[i][j] for i in range(j, k - 1) if not math.isnan(M[i][j])]
        if not best or math.isnan(M[-1][j]):
            return None
        vals.append(max(best) - M[-1][j])
    return sum(vals) / len(vals)


def summarize(R) -> dict:
    """{"acc", "bwt", "forgetting"} of R (None where undefined)."""
    return {"acc": average_accuracy(R), "bwt": backward_transfer(R), "forgetting": forgetting(R)}
