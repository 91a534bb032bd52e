"""The non-ideal chip model (docs/fixed_point.md, "Non-ideal chips"): the generator and one
mismatched, noisy neuron against hand/pure-integer computations; `sim` against the firmware
(emulator) bit for bit with mismatch and noise on; σ = 0 leaves every device as it was."""

from __future__ import annotations

import random
import shutil
import subprocess

import numpy as np
import pytest
import torch

from hw import nonideal as ni
from hw.compiler import compile_model
from hw.deploy import device_inputs
from hw.device import open_device, parse_uri
from hw.program import LayerProgram, Program
from snn.checkpoint import load_checkpoint

from test_emulator import NEURONS, random_program, random_spikes

M32 = 0xFFFFFFFF
needs_cc = pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None,
                              reason="the emulator builds the firmware with make and a C compiler")


def ref_hash(x: int) -> int:
    """lowbias32 on Python integers (arbitrary precision, masked): the reference."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    return x ^ (x >> 16)


def ref_draw(prefix: int, n: int = 0, t: int = 0) -> int:
    a = ref_hash(ref_hash(prefix ^ n) ^ t)
    b = ref_hash(a ^ 0x9E3779B9)
    s = (a & 0xFFFF) + (a >> 16) + (b & 0xFFFF) + (b >> 16) - 131070
    m = (abs(s) * 56756 + 32768) >> 16
    return -m if s < 0 else m


def rnd(num: int, den_shift: int) -> int:
    """num / 2^den_shift rounded half away from zero (the doc's sign/abs form)."""
    m = (abs(num) + (1 << (den_shift - 1))) >> den_shift
    return -m if num < 0 else m


def test_hash_by_hand_and_against_python_integers():
    # h(1): 1 ^ 0 = 1; * 0x7FEB352D = 0x7FEB352D; ^ (0x7FEB352D >> 15 = 0xFFD6) = 0x7FEBCAFB;
    # * 0x846CA68B mod 2^32 = 0x6889F849; ^ (>> 16 = 0x6889) = 0x688990C0
    assert (0x7FEB352D >> 15) == 0xFFD6 and 0x7FEB352D ^ 0xFFD6 == 0x7FEBCAFB
    assert (0x7FEBCAFB * 0x846CA68B) % 2 ** 32 == 0x6889F849 and 0x6889F849 ^ 0x6889 == 0x688990C0
    assert int(ni.hash32(torch.tensor(1))) == 0x688990C0
    assert int(ni.hash32(torch.tensor(0))) == 0  # lowbias32 fixes 0
    xs = [random.Random(1).getrandbits(32) for _ in range(1)] + [random.Random(s).getrandbits(32) for s in range(4000)]
    xs += [0, 1, M32, 0x80000000, 0xFFFF, 0x10000]
    assert ni.hash32(torch.tensor(xs)).tolist() == [ref_hash(x) for x in xs]
    assert ni.mul32(torch.tensor([M32]), M32).item() == (M32 * M32) & M32


def test_normal_draw_by_hand_and_its_statistics():
    a = ref_hash(0x12345678)
    b = ref_hash(a ^ 0x9E3779B9)
    assert (a, b) == (0xF5E71C96, 0x09E65EDB)
    s = 0x1C96 + 0xF5E7 + 0x5EDB + 0x09E6 - 131070
    assert s == -33984
    assert (33984 * 56756 + 32768) >> 16 == 29431
    assert int(ni.normal_q15(torch.tensor(a))) == -29431
    z = ni.draw_q15(ni.key_prefix(7, ni.TAG_NOISE, 1, torch.arange(256)), torch.arange(400)[:, None], 5)
    zf = z.double() / 2 ** 15
    assert abs(zf.mean().item()) < 0.01 and abs(zf.std().item() - 1) < 0.01  # 102 400 draws
    assert int(z.abs().max()) <= 113511
    pre = ni.key_prefix(7, ni.TAG_NOISE, 1, torch.arange(5)).tolist()
    assert pre == [ref_hash(ref_hash(7) ^ (5 << 24 | 1 << 16 | i)) for i in range(5)]
    assert ni.draw_q15(torch.tensor(pre), 11, 3).tolist() == [ref_draw(p, 11, 3) for p in pre]


def one_neuron_program(neuron_type="leaky", reset="subtract") -> Program:
    kw = {"decay_syn": np.array([1000])} if neuron_type == "synaptic" else {}
    layer = LayerProgram(neuron_type=neuron_type, reset=reset, w_shift=2,
                         weights=np.array([[100, -50]], np.int8), bias=np.array([7]),
                         threshold=np.array([1000]), decay_mem=np.array([410]), **kw)
    return Program(profile="mcu", layers=(layer,), num_steps=6, name="one")


CHIP = ni.ChipModel(chip=3, sigma_threshold=0.2, sigma_leak=0.1, sigma_gain=0.15, sigma_noise=0.05)


def test_one_mismatched_noisy_neuron_by_hand():
    """A leaky/subtract neuron on chip 3 over 6 steps of two samples, every rule from the doc in
    Python integers, against `sim`'s probed membrane and spikes."""
    assert CHIP.q16 == (13107, 6554, 9830, 3277)
    pfx = lambda q: ref_hash(ref_hash(3) ^ (q << 24))  # noqa: E731  layer 0, neuron 0
    dev = lambda v, q, sq: v + rnd(v * rnd(sq * ref_draw(pfx(q)), 15), 16)  # noqa: E731
    theta = min(max(dev(1000, 1, 13107), 1), 2 ** 31 - 1)
    d = min(max(dev(410, 2, 6554), 0), 4096)
    gain = max(0, 65536 + rnd(9830 * ref_draw(pfx(4)), 15))
    amp = (1000 * 3277 + 32768) >> 16
    assert amp == 50
    assert (theta, d, gain) != (1000, 410, 65536)
    x = torch.tensor([[1, 1], [1, 0], [1, 0], [0, 1], [1, 1], [1, 0]], dtype=torch.uint8)
    spikes = torch.stack([x, x.flip(0)], dim=1)  # [6, 2, 2]: two samples
    with open_device("sim", chip=CHIP) as sim:
        sim.load(one_neuron_program())
        res = sim.run(spikes, probe=True)
    for b in range(2):
        u, r = 0, 0
        for t in range(6):
            a = (100 * int(spikes[t, b, 0]) - 50 * int(spikes[t, b, 1])) << 2
            X = rnd(a * gain, 16) + 7
            dec = rnd(u * (4096 - d), 12)  # sign(u)·((|u|(4096−d) + 2048) >> 12)
            u = dec + X - r * theta
            u += rnd(amp * ref_draw(pfx(5), b, t), 15)   # sample b (the device's first run), step t
            r = int(u > theta)
            assert int(res.membranes[0][t, b, 0]) == u, (b, t)
            assert int(res.layer_spikes[0][t, b, 0]) == r, (b, t)
    assert int(res.layer_spikes[0].sum()) > 0


def test_sigma_zero_is_exactly_the_ideal_device():
    prog = random_program("synaptic", "subtract", seed=2)
    x = random_spikes(12, 20, 40, seed=4)
    with open_device("sim") as a, open_device("sim?chip=9&mismatch=0&noise=0") as b:
        assert b.chip is None
        a.load(prog), b.load(prog)
        ra, rb = a.run(x, probe=True), b.run(x, probe=True)
    assert torch.equal(ra.output_spikes, rb.output_spikes) and ra.counters == rb.counters
    assert all(torch.equal(ra.membranes[k], rb.membranes[k]) for k in ra.membranes)


def test_chips_differ_and_a_chip_is_reproducible():
    prog = random_program("leaky", "subtract", seed=1)
    x = random_spikes(12, 64, 40, seed=4)

    def run(uri, times=1):
        with open_device(uri) as d:
            d.load(prog)
            return [d.run(x).output_spikes for _ in range(times)]

    a1, a2 = run("sim?chip=1&mismatch=0.2", 2)
    assert torch.equal(a1, a2)  # mismatch only: the same chip answers the same way every time
    assert torch.equal(a1, run("sim?chip=1&mismatch=0.2")[0])
    assert not torch.equal(a1, run("sim?chip=2&mismatch=0.2")[0])
    n1, n2 = run("sim?chip=1&noise=0.1", 2)
    assert not torch.equal(n1, n2)  # noise: fresh every sample (the counter moved on)
    assert torch.equal(run("sim?chip=1&noise=0.1", 2)[1], n2)  # and the same sequence after a restart


def test_uri_parameters_and_clear_errors():
    assert parse_uri("sim?chip=7&mismatch=0.15&noise=0.02").params == {
        "chip": "7", "mismatch": "0.15", "noise": "0.02"}
    with open_device("sim?chip=7&mismatch=0.15&mismatch_gain=0.05&noise=0.02") as d:
        assert d.chip == ni.ChipModel(7, 0.15, 0.15, 0.05, 0.02)
    with pytest.raises(ValueError, match="mismatch must be a number"):
        open_device("sim?mismatch=lots")
    with pytest.raises(ValueError, match="sigma_noise must be a number in \\[0, 1\\]"):
        open_device("sim?noise=1.5")
    with pytest.raises(ValueError, match="chip must be an integer"):
        open_device("sim?chip=-1&mismatch=0.1")
    with pytest.raises(ValueError, match="defined for the mcu profile"):
        open_device("sim?profile=loihi&mismatch=0.1")
    with pytest.raises(ValueError, match="emulator URI .*unknown parameters"):
        open_device("emulator?chips=3")


@needs_cc
def test_firmware_refuses_bad_boot_flags():
    from hw.emulator import firmware_binary
    binary = str(firmware_binary("host"))
    for args, msg in ((["--chip", "x"], "--chip takes a decimal uint32"),
                      (["--sigma-q16", "1,2,3"], "--sigma-q16 takes four"),
                      (["--sigma-q16", "1,2,3,70000"], "must be in 0..65536")):
        r = subprocess.run([binary, "--stdio", *args], capture_output=True, text=True, timeout=10, input="")
        assert r.returncode == 2 and msg in r.stderr, (args, r.stderr)


QUERY = "chip=7&mismatch=0.15&noise=0.05"


@needs_cc
@pytest.mark.parametrize("kind", sorted(NEURONS))
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_emulated_board_equals_sim_with_mismatch_and_noise(kind, reset):
    prog = random_program(kind, reset, seed=len(kind) + 1)
    x = random_spikes(12, 16, 40, seed=5)
    # the ASan+UBSan build: the C arithmetic also has no undefined behaviour on these runs
    with open_device("sim?" + QUERY) as sim, open_device("emulator:asan?" + QUERY) as emu, open_device("sim") as ideal:
        for d in (sim, emu, ideal):
            d.load(prog)
        runs = [(sim.run(x), emu.run(x)) for _ in range(2)]  # two runs: the noise counter advances alike
        ref = ideal.run(x)
    for s, e in runs:
        assert torch.equal(s.output_spikes, e.output_spikes)
        assert s.counters == e.counters
    assert not torch.equal(runs[0][0].output_spikes, ref.output_spikes)  # the chip is not ideal
    assert not torch.equal(runs[0][0].output_spikes, runs[1][0].output_spikes)  # noise moved on


@needs_cc
def test_emulated_board_equals_sim_on_trained_digits(trained_digits_checkpoint, digits):
    ckpt = load_checkpoint(trained_digits_checkpoint)
    prog = compile_model(ckpt.spec, ckpt.state_dict, "mcu")
    inputs = device_inputs(ckpt.spec, digits.test_x[:120], range(120))
    with open_device("sim?chip=11&mismatch=0.2&noise=0.03") as sim, \
            open_device("emulator:host?frame_payload=256&chip=11&mismatch=0.2&noise=0.03") as emu:
        sim.load(prog), emu.load(prog.to_bytes())
        s, e = sim.run(inputs), emu.run(inputs)
    assert torch.equal(s.output_spikes, e.output_spikes) and s.counters == e.counters
    assert int(s.output_spikes.sum()) > 120


@pytest.mark.gpu
def test_sim_cuda_equals_cpu_with_mismatch_and_noise():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA (no GPU here)")
    prog = random_program("synaptic", "zero", seed=3)
    x = random_spikes(12, 64, 40, seed=6)
    with open_device("sim?" + QUERY) as cpu, open_device("sim:cuda?" + QUERY) as gpu:
        cpu.load(prog), gpu.load(prog)
        runs = [(cpu.run(x, probe=True), gpu.run(x, probe=True)) for _ in range(2)]
    for a, b in runs:
        assert torch.equal(a.output_spikes, b.output_spikes) and a.counters == b.counters
        assert all(torch.equal(a.membranes[k], b.membranes[k]) for k in a.membranes)
