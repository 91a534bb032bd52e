"""The Device interface and URI registry, SimulatedDevice behaviour (validation, batching
invariance, counters against hand counts), the deprecated profile name xylo, the fixed shape of the
xylosim profiles, and sim:cuda vs sim on a GPU."""

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
    dmax = 16 if profile in ("xylo", "xylo-like") else 1000
    kw = {"max_spikes": 3} if profile in ("xylo", "xylo-like") else {}
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
    with pytest.raises(ProgramError, match=r"for profile 'xylo-like', this device runs 'mcu' \(rule 5.1\)"):
        dev.load(program("xylo-like"))
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


def test_deprecated_xylo_name_runs_xylo_like_programs():
    """'xylo' (the old name of xylo-like, profile id 3) still opens a device, warns once, and runs
    the programs of either name, bytes or objects made under it, with the same results."""
    import warnings

    from hw import profiles
    profiles._warned.discard("xylo")
    with pytest.warns(FutureWarning, match="'xylo' is deprecated: it is 'xylo-like'"):
        old = program("xylo")
    new, s = program("xylo-like"), spikes()
    assert old.to_bytes() == new.to_bytes()  # same profile id, same bytes
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # only once per process
        program("xylo")
    results = []
    for name, prog in (("xylo", old), ("xylo", new.to_bytes()), ("xylo-like", old.to_bytes()), ("xylo-like", new),
                       ("xylo", new), ("xylo-like", old)):  # objects are matched by profile id, like bytes
        with open_device("sim", profile=name) as dev:
            assert dev.info().profile == name
            dev.load(prog)
            results.append(dev.run(s).output_spikes)
    assert all(torch.equal(results[0], r) for r in results[1:]) and results[0].sum() > 0
    for p in list(profiles.PROFILES.values()) + list(profiles.DEPRECATED_PROFILES.values()):
        assert profiles.Profile.from_dict(p.to_dict()) == p  # the JSON view keeps every field


def test_xylosim_profiles_refuse_what_the_chip_cannot_hold():
    """Rule 7.4 (docs/program_format.md): 1 to 7 hidden layers and a readout, the first hidden layer's
    fan-in at most the 16 input channels, the chip's neuron counts and its fixed spike caps."""
    def layer(n, m, cap, **kw):
        return LayerProgram("synaptic", "subtract", 0, np.ones((n, m), int), np.zeros(n, int), np.full(n, 5),
                            np.ones(n, int), decay_syn=np.ones(n, int), max_spikes=cap, **kw)

    ok = Program("xylo-imu", (layer(128, 16, 31), layer(16, 128, 1)))
    assert Program.from_bytes(ok.to_bytes()).to_bytes() == ok.to_bytes() and ok.to_bytes()[6] == 4
    bad = {"runs 2 to 8 layers \\(hidden, hidden \\(0..6 layers\\), readout\\), got 1": (layer(4, 16, 31),),
           "9 layers exceed the profile 'xylo-imu' limit max_layers=8": (layer(4, 16, 31),) + (layer(4, 4, 31),) * 7
                                                                          + (layer(2, 4, 1),),
           "fan-in 17 exceeds the 16 input channels": (layer(4, 17, 31), layer(2, 4, 1)),
           "129 neurons exceed the profile 'xylo-imu' limit|max_neurons_per_layer=128":
               (layer(129, 16, 31), layer(2, 129, 1)),
           "17 neurons exceed the profile 'xylo-imu' limit of 16 readout neurons": (layer(4, 16, 31), layer(17, 4, 1)),
           "max_spikes must be 31 on profile 'xylo-imu'": (layer(4, 16, 1), layer(2, 4, 1)),
           "max_spikes must be 1 on profile 'xylo-imu'": (layer(4, 16, 31), layer(2, 4, 31))}
    for msg, layers in bad.items():
        with pytest.raises(ProgramError, match=msg):
            Program("xylo-imu", layers)
    with pytest.raises(ProgramError, match="limit of 8 readout neurons") as e:
        Program("xylo-audio2", (layer(300, 16, 31), layer(10, 300, 1)))
    assert e.value.rule == "7.4"
    with open_device("sim", profile="xylo-audio2") as dev:
        assert dev.info().capacities["max_neurons_per_layer"] == 1000
        with pytest.raises(ProgramError, match="for profile 'xylo-imu', this device runs 'xylo-audio2'"):
            dev.load(ok.to_bytes())


def test_xylosim_batching_and_counters():
    rng = np.random.default_rng(3)
    layers = (LayerProgram("synaptic", "subtract", 2, rng.integers(-128, 128, (6, 4)), rng.integers(-20, 20, 6),
                           rng.integers(20, 100, 6), rng.integers(0, 16, 6), decay_syn=rng.integers(1, 16, 6),
                           max_spikes=31),
              LayerProgram("synaptic", "subtract", 1, rng.integers(-128, 128, (3, 6)), np.zeros(3, int),
                           rng.integers(20, 200, 3), rng.integers(0, 16, 3), decay_syn=rng.integers(1, 16, 3),
                           max_spikes=1))
    prog, s = Program("xylo-imu", layers), spikes(B=7)
    with open_device("sim", profile="xylo-imu") as dev:
        dev.load(prog)
        whole = dev.run(s, probe=True)
        parts = [dev.run(s[:, i:i + 1]) for i in range(7)]
    assert torch.equal(whole.output_spikes, torch.cat([p.output_spikes for p in parts], dim=1))
    hidden = whole.layer_spikes[0].to(torch.int64)
    assert hidden.max() > 1  # several spikes per step
    assert whole.counters[0] == {"spikes": int(hidden.sum()), "synops": int(s.sum()) * 6}
    # the readout processes the hidden spikes of steps 0..T-2 (the last step's arrive after the run)
    assert whole.counters[1] == {"spikes": int(whole.output_spikes.sum()), "synops": int(hidden[:-1].sum()) * 3}


@pytest.mark.gpu
@pytest.mark.parametrize("profile", ["mcu", "xylo-like", "xylo-imu"])
def test_sim_cuda_matches_cpu(profile):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA (no GPU here)")
    prog, s = (_xylo_imu_program() if profile == "xylo-imu" else program(profile)), spikes(T=20, B=64)
    with open_device("sim", profile=profile) as cpu, open_device("sim:cuda", profile=profile) as gpu:
        cpu.load(prog)
        gpu.load(prog)
        a, b = cpu.run(s, probe=True), gpu.run(s, probe=True)
    assert torch.equal(a.output_spikes, b.output_spikes) and a.counters == b.counters
    assert all(torch.equal(a.membranes[k], b.membranes[k]) for k in a.membranes)


def _xylo_imu_program():
    rng = np.random.default_rng(0)
    return Program("xylo-imu", (
        LayerProgram("synaptic", "subtract", 7, rng.integers(-128, 128, (6, 4)), rng.integers(-20, 20, 6),
                     rng.integers(50, 3000, 6), rng.integers(0, 16, 6), decay_syn=rng.integers(0, 16, 6),
                     max_spikes=31),
        LayerProgram("synaptic", "subtract", 2, rng.integers(-128, 128, (3, 6)), np.zeros(3, int),
                     rng.integers(50, 300, 3), rng.integers(0, 16, 3), decay_syn=rng.integers(1, 16, 3),
                     max_spikes=1)))
