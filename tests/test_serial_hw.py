"""A real board on a serial port (marker serial_hw): set SPIKELOOP_SERIAL_PORT=/dev/ttyACM0 (and
optionally SPIKELOOP_SERIAL_BAUD) to run; skipped otherwise. The board must give the same output
rasters and counters as the `sim` device."""

from __future__ import annotations

import os

import pytest
import torch

from hw.compiler import compile_model
from hw.device import open_device
from snn.model import build_model
from snn.spec import Leaky, Linear, ModelSpec

PORT = os.environ.get("SPIKELOOP_SERIAL_PORT")
BAUD = int(os.environ.get("SPIKELOOP_SERIAL_BAUD", "115200"))

pytestmark = [pytest.mark.serial_hw,
              pytest.mark.skipif(not PORT, reason="no board: set SPIKELOOP_SERIAL_PORT=/dev/ttyACM0 to run")]


def test_real_board_matches_sim():
    torch.manual_seed(0)
    spec = ModelSpec(layers=(Linear(64, 32), Leaky(beta=0.9, threshold=0.5), Linear(32, 10), Leaky(beta=0.9)),
                     input_shape=(64,), num_steps=20)
    prog = compile_model(spec, {k: v * 3 for k, v in build_model(spec).state_dict().items()}, "mcu")
    x = (torch.rand(20, 32, 64, generator=torch.Generator().manual_seed(1)) < 0.3).to(torch.uint8)
    with open_device(f"serial://{PORT}?baud={BAUD}&timeout_s=2") as dev:
        assert dev.info().profile == "mcu"
        dev.load(prog)
        got = dev.run(x)
    with open_device("sim", profile="mcu") as sim:
        sim.load(prog)
        ref = sim.run(x)
    assert torch.equal(got.output_spikes, ref.output_spikes)
    assert got.counters == ref.counters
