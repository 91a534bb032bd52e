"""The Device interface and URI registry, SimulatedDevice behaviour (validation, batching
invariance, counters against hand counts), and sim:cuda vs sim on a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hw.device import (Device, DeviceError, DeviceInfo, RunResult, make_device, open_device, parse_uri,
                       register_backend)
from hw.program import LayerProgram, Program, ProgramError
from hw.sim import SimulatedDevice


def program(profile="mcu", seed=0):
    rng = np.random.default_rng(seed)
    dmax = 16 if profile == "xylo" else 1000
    kw = {"max_spikes": 3} if profile == "xylo" else {}
    l0 = LayerProgram("leaky", "subtract", 2, rng.integers(-128, 128, (6, 4)), rng.integers(-20, 20, 6),
                      rng.integers(50, 300, 6), rng.integers(0, dmax, 6), **kw)
    l1 = LayerProgram("leaky", "subtract", 2, rng.integers(-128, 128, (3, 6)), np.zeros(3, int),
                      rng.integers(50, 300, 3), rng.integers(0, dmax, 3), **kw)
    return Program(profile, (l0, l1), num_steps=8)


def spikes(T=8, B=5, N=4, seed=0):
    return (torch.rand(T, B, N, generator=torch.Generator().manual_seed(seed)) < 0.5).to(torch.uint8)


def test_parse_uri():
    assert parse_uri("sim").scheme == "sim" and parse_uri("sim").target == ""
    u = parse_uri("sim:cuda")
    assert (u.scheme, u.target) == ("sim", "cuda")
    u = parse_uri("serial:///dev/ttyACM0?baud=115200")
    assert (u.scheme, u.target, u.params) == ("serial", "/dev/ttyACM0", {"baud": "115200"})
    assert parse_uri("emulator").scheme == "emulator"
    with pytest.raises(ValueError, match="non-empty"):
        parse_uri("")


def test_open_device_and_info():
    with open_device("sim", profile="xylo") as dev:
        info = dev.info()
        assert isinstance(dev, SimulatedDevice) and dev.uri == "sim"
        assert (info.backend, info.profile) == ("sim", "xylo")
        assert info.capacities["max_neurons_per_layer"] == 1000 and info.firmware_version
    with pytest.raises(ValueError, match="unknown device backend 'nope'"):
        open_device("nope")
    with pytest.raises(ValueError, match="unknown chip profile 'tpu'"):
        open_device("sim", profile="tpu")


def test_register_backend_reaches_custom_devices():
    calls = []

    class Echo(Device):
        def open(self):
            calls.append("open")
            return self

        def info(self):
            return DeviceInfo("echo", "mcu", "0", {})

        def load(self, program):
            pass

        def reset(self):
            pass

        def run(self, spikes, probe=False):
            return RunResult(spikes, {})

        def close(self):
            calls.append("close")

    register_backend("echo", lambda uri, **kw: Echo())
    with make_device("echo://x") as dev:
        assert dev.info().backend == "echo" and dev.uri == "echo://x"
    assert calls == ["open", "close"]


def test_run_validation_errors():
    dev = make_device("sim")
    with pytest.raises(DeviceError, match="not open"):
        dev.load(program())
    dev.open()
    with pytest.raises(DeviceError, match="no program loaded"):
        dev.run(spikes())
    dev.load(program())
    with pytest.raises(ValueError, match=r"spikes must be \[T, B, 4\]"):
        dev.run(torch.zeros(8, 2, 5))
    with pytest.raises(ValueError, match="0 or 1"):
        dev.run(torch.full((8, 2, 4), 2.0))
    with pytest.raises(ProgramError, match="for profile 'xylo', this device runs 'mcu'"):
        dev.load(program("xylo"))
    with pytest.raises(ProgramError, match="checksum mismatch"):
        blob = bytearray(program().to_bytes())
        blob[-1] ^= 1
        dev.load(bytes(blob))
    dev.close()
    with pytest.raises(DeviceError, match="not open"):
        dev.run(spikes())


def test_batching_does_not_change_results():
    prog, s = program(), spikes(B=7)
    with open_device("sim") as dev:
        dev.load(prog)
        whole = dev.run(s)
        parts = [dev.run(s[:, i:i + 1]) for i in range(7)]
        again = dev.run(s)
    assert torch.equal(whole.output_spikes, torch.cat([p.output_spikes for p in parts], dim=1))
    assert torch.equal(whole.output_spikes, again.output_spikes)  # every run starts from reset


def test_counters_by_hand():
    prog, s = program(), spikes()
    with open_device("sim") as dev:
        dev.load(prog)
        res = dev.run(s, probe=True)
    hidden = res.layer_spikes[0]
    assert res.counters[0] == {"spikes": int(hidden.sum()), "synops": int(s.sum()) * 6}
    assert res.counters[1] == {"spikes": int(res.output_spikes.sum()), "synops": int(hidden.sum()) * 3}
    assert res.total("synops") == int(s.sum()) * 6 + int(hidden.sum()) * 3
    assert res.output_spikes.dtype == torch.uint8 and res.spike_counts.shape == (5, 3)


def test_sim_cuda_without_gpu_says_so():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(DeviceError, match="needs a CUDA GPU"):
        open_device("sim:cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("profile", ["mcu", "xylo"])
def test_sim_cuda_matches_cpu(profile):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA (no GPU here)")
    prog, s = program(profile), spikes(T=20, B=64)
    with open_device("sim", profile=profile) as cpu, open_device("sim:cuda", profile=profile) as gpu:
        cpu.load(prog)
        gpu.load(prog)
        a, b = cpu.run(s, probe=True), gpu.run(s, probe=True)
    assert torch.equal(a.output_spikes, b.output_spikes) and a.counters == b.counters
    assert all(torch.equal(a.membranes[k], b.membranes[k]) for k in a.membranes)
