"""Statistics over seeds (experiments/continual/stats.py) against hand-computed values: Student-t
quantiles and p-values from the closed forms for 1, 2 and 3 degrees of freedom, sample std and t
intervals, exact Wilcoxon signed-rank p-values by counting sign patterns, matrix mean/std."""

import itertools
import math

import pytest

from experiments.continual.stats import (describe, matrix_mean_std, paired, t_p_value, t_quantile,
                                         t_two_sided_mass, wilcoxon_p_value)
from experiments.continual.study import StudyError, parse_seeds


def test_t_distribution_closed_forms():
    # df = 1 (Cauchy): P(|T| <= t) = 2 atan(t) / pi, so the 0.975 quantile is tan(0.475 pi)
    assert t_quantile(0.975, 1) == pytest.approx(math.tan(0.475 * math.pi), rel=1e-10)
    # df = 2: P(|T| <= t) = t / sqrt(2 + t^2)  ->  quantile of mass m: t = m sqrt(2 / (1 - m^2))
    assert t_quantile(0.975, 2) == pytest.approx(0.95 * math.sqrt(2 / (1 - 0.95 ** 2)), rel=1e-10)
    assert t_p_value(3.0, 2) == pytest.approx(1 - 3 / math.sqrt(11), rel=1e-12)
    # df = 3: P(|T| <= t) = (2/pi) (theta + sin theta cos theta), theta = atan(t / sqrt 3)
    th = math.atan(1.7 / math.sqrt(3))
    assert t_two_sided_mass(1.7, 3) == pytest.approx(2 / math.pi * (th + math.sin(th) * math.cos(th)), rel=1e-12)
    # df = 4: sin theta (1 + cos^2 theta / 2)
    th = math.atan(2.5 / 2)
    assert t_two_sided_mass(2.5, 4) == pytest.approx(math.sin(th) * (1 + math.cos(th) ** 2 / 2), rel=1e-12)
    # table values (any statistics textbook): t_{0.975} for df 4 and 30
    assert t_quantile(0.975, 4) == pytest.approx(2.776445, abs=1e-6)
    assert t_quantile(0.975, 30) == pytest.approx(2.042272, abs=1e-6)
    with pytest.raises(ValueError, match="df"):
        t_two_sided_mass(1.0, 0)


def test_describe_mean_std_and_t_interval():
    s = describe([0.70, 0.72, 0.74])
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.72, abs=1e-15)
    assert s["std"] == pytest.approx(0.02, abs=1e-15)  # sqrt((0.02^2 + 0 + 0.02^2) / 2)
    half = 0.95 * math.sqrt(2 / (1 - 0.95 ** 2)) * 0.02 / math.sqrt(3)
    assert s["half_width"] == pytest.approx(half, rel=1e-10)
    assert s["ci"] == pytest.approx([0.72 - half, 0.72 + half], rel=1e-10)
    one = describe([0.5])
    assert one["mean"] == 0.5 and one["std"] is None and one["ci"] is None
    assert describe([None, None])["mean"] is None  # e.g. multitask's BWT
    with pytest.raises(ValueError, match="finite"):
        describe([0.1, float("nan")])


def test_paired_t_and_wilcoxon():
    c = paired([0.80, 0.82, 0.85], [0.79, 0.80, 0.82])
    assert c["differences"] == pytest.approx([0.01, 0.02, 0.03], abs=1e-12)
    # mean 0.02, std 0.01, t = 0.02 / (0.01 / sqrt 3) = 2 sqrt 3; df 2: p = 1 - t / sqrt(2 + t^2)
    assert c["t"] == pytest.approx(2 * math.sqrt(3), rel=1e-9)
    assert c["p_t"] == pytest.approx(1 - 2 * math.sqrt(3) / math.sqrt(14), rel=1e-9)
    assert c["p_wilcoxon"] == pytest.approx(2 / 8)  # all 3 signs positive: 2 * (1/2)^3
    with pytest.raises(ValueError, match="same seeds"):
        paired([0.1, 0.2], [0.1])


def _wilcoxon_by_enumeration(ranks, w_obs):
    sums = [sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product((0, 1), repeat=len(ranks))]
    le = sum(s <= w_obs for s in sums) / len(sums)
    ge = sum(s >= w_obs for s in sums) / len(sums)
    return min(1.0, 2 * min(le, ge))


def test_wilcoxon_exact_counts():
    # ranks 1..5, W+ = 1 + 3 + 4 + 5 = 13; subsets of {1..5} with sum >= 13: {all}, {2,3,4,5}, {1,3,4,5}
    assert wilcoxon_p_value([0.1, -0.2, 0.3, 0.4, 0.5]) == pytest.approx(2 * 3 / 32)
    # ties: |d| = 1, 1, 2, 3 -> average ranks 1.5, 1.5, 3, 4; positives: one of the 1s and the 3
    assert wilcoxon_p_value([1.0, -1.0, 2.0, -3.0]) == pytest.approx(
        _wilcoxon_by_enumeration([1.5, 1.5, 3, 4], 1.5 + 3))
    assert wilcoxon_p_value([0.0, 0.0]) is None
    assert wilcoxon_p_value([0.0, 0.2, 0.1]) == pytest.approx(2 / 4)  # zeros dropped: n = 2


def test_matrix_mean_std():
    a = [[0.5, None], [0.4, 0.6]]
    b = [[0.7, None], [0.4, 0.8]]
    mean, std = matrix_mean_std([a, b])
    assert mean[0][0] == pytest.approx(0.6) and mean[0][1] is None and mean[1] == pytest.approx([0.4, 0.7])
    assert std[0][0] == pytest.approx(math.sqrt(0.02)) and std[1][0] == 0.0  # (0.1^2 * 2) / 1
    with pytest.raises(ValueError, match="K x K"):
        matrix_mean_std([a, [[0.5]]])


def test_parse_seeds():
    assert parse_seeds("5") == (0, 1, 2, 3, 4)
    assert parse_seeds("3,1,2") == (3, 1, 2)
    assert parse_seeds("7,") == (7,)
    for bad, match in (("0", ">= 1"), ("a,b", "comma-separated"), ("1,1", "repeated"), ("-1,2", "seeds must")):
        with pytest.raises(StudyError, match=match):
            parse_seeds(bad)
