"""The comparison metrics on hand-made traces with known answers (no simulator involved)."""

from __future__ import annotations

import numpy as np
import pytest

from snn.brian2_ref.compare import compare_traces, count_correlation, sample_divergence


def _traces(spikes, mem):
    return {"spikes": np.asarray(spikes, dtype=float), "mem": np.asarray(mem, dtype=float)}


def test_divergence_metrics_hand_computed():
    T, B, N = 5, 2, 3
    sa = np.zeros((T, B, N))
    sa[1, 0, 0] = sa[3, 0, 1] = sa[2, 1, 2] = 1
    sb = sa.copy()
    sb[3, 0, 1] = 0      # sample 0, neuron 1 diverges at step 3
    sb[4, 1, 0] = 1      # sample 1, neuron 0 diverges at step 4
    ma = np.zeros((T, B, N))
    mb = ma.copy()
    mb[0, 0, 2] = 1e-7   # drift before any divergence (sample 0 diverges at 3)
    mb[4, 0, 0] = 0.5    # after sample 0's divergence: counted only in the overall max
    mb[3, 1, 1] = 2e-7   # sample 1 diverges at step 4, so step 3 is before divergence
    a, b = {7: _traces(sa, ma)}, {7: _traces(sb, mb)}
    np.testing.assert_array_equal(sample_divergence(a, b), [3, 4])
    (c,) = compare_traces(a, b, {7: "leaky"})
    assert c.spec_index == 7 and c.n == 3
    assert c.spike_agreement == pytest.approx(1 - 2 / 30)
    assert c.train_agreement == pytest.approx(1 - 2 / 6)
    assert c.first_divergence_step == 3 and c.median_divergence_step == 3.5
    assert c.max_membrane_abs_diff == 0.5
    assert c.max_membrane_abs_diff_before_divergence == 2e-7
    np.testing.assert_array_equal(c.neuron_first_divergence, [4, 3, -1])
    np.testing.assert_allclose(c.neuron_agreement, [0.9, 0.9, 1.0])
    assert (c.spikes_a, c.spikes_b) == (3, 3)
    d = c.to_dict()
    assert d["diverged_fraction"] == pytest.approx(2 / 6)
    assert d["neuron_first_divergence_step"] == [4, 3, None]


def test_identical_traces():
    s = np.zeros((4, 1, 2))
    s[2, 0, 1] = 1
    (c,) = compare_traces({1: _traces(s, s)}, {1: _traces(s, s)}, {1: "synaptic"})
    assert c.spike_agreement == 1.0 and c.first_divergence_step is None and c.median_divergence_step is None
    assert c.spike_count_correlation == 1.0 and c.max_membrane_abs_diff == 0.0


def test_count_correlation_cases():
    assert count_correlation([1, 2, 3], [1, 2, 3]) == 1.0
    assert count_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert count_correlation([0, 0, 0], [0, 1, 0]) is None  # one side constant and they differ
    assert count_correlation([2, 4, 6], [1, 2, 3]) == pytest.approx(1.0)


def test_shape_mismatch_and_missing_layer_rejected():
    s = np.zeros((3, 1, 2))
    with pytest.raises(ValueError, match="layer 1: spikes shapes differ"):
        compare_traces({1: _traces(s, s)}, {1: _traces(np.zeros((3, 1, 3)), np.zeros((3, 1, 3)))}, {1: "leaky"})
    with pytest.raises(ValueError, match=r"no traces for layer\(s\) \[1\]"):
        compare_traces({1: _traces(s, s)}, {}, {1: "leaky"})
