"""ACC, BWT and forgetting on hand-written accuracy matrices."""

import pytest

from snn.continual.metrics import average_accuracy, backward_transfer, forgetting, summarize

R = [
    [0.90, None, None],
    [0.80, 0.85, None],
    [0.70, 0.80, 0.95],
]


def test_hand_computed_values():
    # ACC = (0.70 + 0.80 + 0.95) / 3
    assert average_accuracy(R) == pytest.approx(0.8166666666666667, abs=1e-15)
    # BWT = ((0.70 - 0.90) + (0.80 - 0.85)) / 2
    assert backward_transfer(R) == pytest.approx(-0.125, abs=1e-15)
    # forgetting = ((max(0.90, 0.80) - 0.70) + (0.85 - 0.80)) / 2
    assert forgetting(R) == pytest.approx(0.125, abs=1e-15)
    assert summarize(R) == pytest.approx({"acc": 0.8166666666666667, "bwt": -0.125, "forgetting": 0.125})


def test_positive_transfer_and_forgetting_differ():
    # task 0 improves after task 1, then drops: BWT counts from the diagonal, forgetting from the best
    M = [[0.5, None, None], [0.9, 0.6, None], [0.7, 0.6, 0.8]]
    assert backward_transfer(M) == pytest.approx(((0.7 - 0.5) + (0.6 - 0.6)) / 2)
    assert forgetting(M) == pytest.approx(((0.9 - 0.7) + 0.0) / 2)


def test_single_task_and_multitask_rows():
    assert backward_transfer([[0.7]]) is None and average_accuracy([[0.7]]) == 0.7
    joint = [[None, None], [0.8, 0.6]]  # multitask: only the last row exists
    assert average_accuracy(joint) == pytest.approx(0.7)
    assert backward_transfer(joint) is None
    assert forgetting(joint) is None


@pytest.mark.parametrize("bad,match", [
    ([], "at least one"),
    ([[0.5, 0.2]], "square"),
    ([[0.5], [0.4]], "square"),
    ([[1.5]], r"\[0\]\[0\]"),
    ([[0.5, None], [0.4, None]], "last row"),
])
def test_bad_matrices_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        average_accuracy(bad)
