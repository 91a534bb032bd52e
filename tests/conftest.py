"""Shared fixtures: a small trained digits checkpoint, built once per test session."""

from __future__ import annotations

import pytest

pytest_plugins = ["skip_guard"]  # SPIKELOOP_NO_SKIP=1: a skip not marked gpu/serial_hw fails the run

from snn.data import load_dataset
from snn.presets import fc
from snn.training import Trainer, TrainConfig


@pytest.fixture(scope="session")
def digits():
    """The embedded digits dataset (1437 train / 360 test, [N, 1, 8, 8] in [0, 1])."""
    return load_dataset("digits")


@pytest.fixture(scope="session")
def trained_digits_checkpoint(tmp_path_factory, digits):
    """Path to a checkpoint of a small fc network (64-64-10, T=20) trained 3 epochs on digits
    (about 10 s on one core; test accuracy around 0.9)."""
    out = tmp_path_factory.mktemp("digits_ckpt")
    spec = fc(digits.input_shape, digits.num_classes, hidden=64, num_steps=20)
    cfg = TrainConfig(epochs=3, batch_size=64, lr=5e-3, seed=0, progress=False)
    result = Trainer(spec, digits.train_x, digits.train_y, cfg, out, test_x=digits.test_x,
                     test_y=digits.test_y, extra={"dataset": "digits"}).fit()
    return result.checkpoint
