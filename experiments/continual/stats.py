"""Statistics over seeds: mean, sample standard deviation, Student-t 95 % interval, element-wise
mean/std of accuracy matrices, and paired comparisons of strategies (paired t test, exact
Wilcoxon signed-rank test).

Self-contained (no scipy needed): the Student-t distribution for integer degrees of freedom uses the
closed finite series of Abramowitz & Stegun 26.7.3/26.7.4; its quantile is found by bisection; the
Wilcoxon null distribution is counted exactly over all 2^n sign patterns (by dynamic programming
over rank sums, so ties with average ranks are exact as well).
Values are whatever the caller passes (accuracies as fractions in the result objects).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

CONFIDENCE = 0.95


def t_two_sided_mass(t: float, df: int) -> float:
    """P(|T| <= t) for Student's T with integer `df` >= 1 (A&S 26.7.3 odd df, 26.7.4 even df)."""
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"df must be a positive integer, got {df!r}")
    t = abs(float(t))
    if math.isinf(t):
        return 1.0
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2 == 1:
        if df == 1:
            return 2.0 * theta / math.pi
        term, series = 1.0, 1.0
        for k in range(1, (df - 3) // 2 + 1):  # 1 + (2/3)c^2 + (2*4)/(3*5)c^4 + ...
            term *= (2 * k) / (2 * k + 1) * c2
            series += term
        return min(1.0, 2.0 / math.pi * (theta + math.sin(theta) * math.cos(theta) * series))
    term, series = 1.0, 1.0
    for k in range(1, (df - 2) // 2 + 1):  # 1 + (1/2)c^2 + (1*3)/(2*4)c^4 + ...
        term *= (2 * k - 1) / (2 * k) * c2
        series += term
    return min(1.0, math.sin(theta) * series)


def t_p_value(t: float, df: int) -> float:
    """Two-sided p-value of a t statistic."""
    return max(0.0, 1.0 - t_two_sided_mass(t, df))


def t_quantile(q: float, df: int) -> float:
    """The q-quantile (0.5 < q < 1) of Student's T with integer df, by bisection to 1e-12."""
    if not 0.5 < q < 1.0:
        raise ValueError(f"q must be in (0.5, 1), got {q!r}")
    mass = 2.0 * q - 1.0
    lo, hi = 0.0, 1.0
    while t_two_sided_mass(hi, df) < mass:
        hi *= 2.0
    while hi - lo > 1e-12 * max(1.0, hi):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_two_sided_mass(mid, df) < mass else (lo, mid)
    return 0.5 * (lo + hi)


def _finite(values: Sequence[float | None], what: str) -> list[float]:
    out = []
    for v in values:
        if v is None:
            raise ValueError(f"{what}: a value is missing (None)")
        v = float(v)
        if not math.isfinite(v):
            raise ValueError(f"{what}: values must be finite, got {v}")
        out.append(v)
    return out


def describe(values: Sequence[float | None], what: str = "values", confidence: float = CONFIDENCE) -> dict:
    """{"n", "values", "mean", "std" (sample, ddof 1), "ci": [lo, hi] (Student t, `confidence`),
    "half_width"}; std/ci/half_width are None for n = 1. All None (n = 0) if any value is None
    (a metric a strategy does not have, such as multitask's BWT)."""
    vals = list(values)
    if not vals:
        raise ValueError(f"{what}: no values")
    if any(v is None for v in vals):
        return {"n": 0, "values": vals, "mean": None, "std": None, "ci": None, "half_width": None}
    x = _finite(vals, what)
    n = len(x)
    mean = sum(x) / n
    if n == 1:
        return {"n": 1, "values": x, "mean": mean, "std": None, "ci": None, "half_width": None}
    std = math.sqrt(sum((v - mean) ** 2 for v in x) / (n - 1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    return {"n": n, "values": x, "mean": mean, "std": std, "ci": [mean - half, mean + half], "half_width": half}


def wilcoxon_p_value(d: Sequence[float]) -> float | None:
    """Exact two-sided Wilcoxon signed-rank p-value of paired differences `d` (zeros dropped, tied
    |d| get average ranks): 2 min(P(W+ <= w), P(W+ >= w)) under the null that each sign is +/- with
    probability 1/2, capped at 1. None when every difference is zero."""
    x = [v for v in _finite(d, "differences") if v != 0.0]
    n = len(x)
    if n == 0:
        return None
    if n > 60:
        raise ValueError(f"exact Wilcoxon test is meant for few seeds, got {n} differences")
    order = sorted(range(n), key=lambda i: abs(x[i]))
    ranks2 = [0] * n  # twice the average rank: integers even with ties
    i = 0
    while i < n:
        j = i
        while j + 1 < n and abs(x[order[j + 1]]) == abs(x[order[i]]):
            j += 1
        for k in range(i, j + 1):
            ranks2[order[k]] = (i + 1) + (j + 1)
        i = j + 1
    w2 = sum(r for r, v in zip(ranks2, x) if v > 0)
    counts = {0: 1}  # rank-sum (doubled) -> number of sign patterns
    for r in ranks2:
        nxt = dict(counts)
        for s, c in counts.items():
            nxt[s + r] = nxt.get(s + r, 0) + c
        counts = nxt
    total = 2 ** n
    le = sum(c for s, c in counts.items() if s <= w2) / total
    ge = sum(c for s, c in counts.items() if s >= w2) / total
    return min(1.0, 2.0 * min(le, ge))


def paired(a: Sequence[float], b: Sequence[float], what: str = "paired", confidence: float = CONFIDENCE) -> dict:
    """Paired comparison of a and b over the same seeds: the differences d = a - b described as by
    `describe`, the paired t statistic and its two-sided p-value (None for n < 2 or zero spread)
    and the exact Wilcoxon signed-rank p-value."""
    if len(a) != len(b):
        raise ValueError(f"{what}: {len(a)} values against {len(b)}; pair them over the same seeds")
    d = [x - y for x, y in zip(_finite(a, what), _finite(b, what))]
    out = describe(d, what, confidence)
    t = p = None
    if out["n"] >= 2 and out["std"] > 0:
        t = out["mean"] / (out["std"] / math.sqrt(out["n"]))
        p = t_p_value(t, out["n"] - 1)
    out |= {"differences": out.pop("values"), "t": t, "p_t": p, "p_wilcoxon": wilcoxon_p_value(d)}
    return out


def matrix_mean_std(mats: Sequence[Sequence[Sequence[float | None]]]) -> tuple[list, list]:
    """Element-wise mean and sample std (None for one matrix) of same-shaped accuracy matrices;
    an entry missing (None) in any matrix is None in both outputs."""
    if not mats:
        raise ValueError("no matrices")
    K = len(mats[0])
    if any(len(m) != K or any(len(r) != K for r in m) for m in mats):
        raise ValueError("accuracy matrices must all be K x K with the same K")
    mean = [[None] * K for _ in range(K)]
    std = [[None] * K for _ in range(K)]
    for i in range(K):
        for j in range(K):
            vals = [m[i][j] for m in mats]
            if any(v is None for v in vals):
                continue
            s = describe(vals)
            mean[i][j], std[i][j] = s["mean"], s["std"]
    return mean, std
