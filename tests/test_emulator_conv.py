"""The firmware (the `emulator` device: firmware_stubs/ on a pty behind the serial backend) on
programs of format version 2 — convolution records with every pool kind, pooling records, graded
int8 input into a conv or a dense first layer — against the independent NumPy reference
tests/conv_reference.py, bit for bit: output spikes, every layer's recorded outputs (spikes; a sum
pool's counts), every neuron layer's recorded membranes and the counters. Plus RUN encodings 2/3
(held values, values) on the wire and the non-ideal chip on a convolution layer."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

import conv_reference as ref
from hw.device import open_device
from hw.program import LayerProgram, MapGeometry, PoolProgram, Program
from hw.serial.device import _graded_frame_steps
from hw.serial.messages import ENC_HELD, ENC_VALUES, encode_values

pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None,
                                reason="needs make and a C compiler")


def _neurons(rng, neuron, reset, n, window, *, conv=None, w_shift=0, mag=1.0, big=False):
    """A leaky/synaptic layer with thresholds near its typical input (it spikes, not always)."""
    shape = (conv.out_channels, conv.in_channels, conv.kernel, conv.kernel) if conv else (n, window)
    w = rng.choice([-128, 127], size=shape) if big else rng.integers(-128, 128, size=shape)
    typical = max(1.0, 60.0 * np.sqrt(window * 0.3) * mag) * 2 ** w_shift
    if big:
        thr, bias = rng.integers(2 ** 30, 2 ** 31 - 1, size=n), rng.integers(-2 ** 31, 2 ** 31 - 1, size=n)
    else:
        thr = rng.integers(max(1, int(typical * 0.3)), int(typical * 1.5) + 2, size=n)
        bias = rng.integers(-int(typical * 0.2) - 1, int(typical * 0.2) + 1, size=n)
    return LayerProgram(neuron, reset, w_shift, w.astype(np.int8), bias.astype(np.int32), thr.astype(np.int32),
                        rng.integers(0, 4097, size=n).astype(np.uint16),
                        rng.integers(0, 4097, size=n).astype(np.uint16) if neuron == "synaptic" else None,
                        conv=conv)


def _conv(rng, neuron, reset, *geo, **kw):
    g = MapGeometry(*geo)
    return _neurons(rng, neuron, reset, g.num_outputs, g.window_fan_in, conv=g, **kw), g


def make_program(case: int, neuron: str, reset: str, seed: int) -> Program:
    rng = np.random.default_rng(seed)
    graded = case in (2, 3, 5)
    if case == 0:    # conv 3x3/s1/p1, no pool -> dense
        l0, g = _conv(rng, neuron, reset, 2, 6, 6, 3, 3, 1, 1)
        layers = [l0, _neurons(rng, neuron, reset, 5, g.num_outputs)]
    elif case == 1:  # conv 3x3/s2/p1 + max pool 2/2 -> sum pool record 2/1 -> conv 2x2/p1 -> dense
        l0, g = _conv(rng, neuron, reset, 1, 9, 9, 4, 3, 2, 1, "max", 2, 2, w_shift=2)
        pr = PoolProgram(MapGeometry(4, g.out_height, g.out_width, 4, pool="sum", pool_kernel=2, pool_stride=1))
        pg = pr.geometry
        l2, g2 = _conv(rng, neuron, reset, 4, pg.out_height, pg.out_width, 3, 2, 1, 1, mag=2.0)
        layers = [l0, pr, l2, _neurons(rng, neuron, reset, 4, g2.num_outputs)]
    elif case == 2:  # graded conv 2x2/s1/p0 + overlapping sum pool 3/2 -> dense
        l0, g = _conv(rng, neuron, reset, 2, 7, 8, 2, 2, 1, 0, "sum", 3, 2, mag=180.0)
        layers = [l0, _neurons(rng, neuron, reset, 6, g.num_outputs)]
    elif case == 3:  # graded dense -> max pool record of its 2x4x4 map -> dense
        layers = [_neurons(rng, neuron, reset, 32, 20, w_shift=1, mag=60.0),
                  PoolProgram(MapGeometry(2, 4, 4, 2, pool="max", pool_kernel=2, pool_stride=2)),
                  _neurons(rng, neuron, reset, 3, 8)]
    elif case == 4:  # conv 4x4/s3/p2 + max pool 2/1 -> max pool record 2/2 -> dense; pooling gaps
        l0, g = _conv(rng, neuron, reset, 3, 10, 10, 2, 4, 3, 2, "max", 2, 1, w_shift=5)
        pr = PoolProgram(MapGeometry(2, g.out_height, g.out_width, 2, pool="max", pool_kernel=2, pool_stride=2))
        layers = [l0, pr, _neurons(rng, neuron, reset, 4, pr.num_neurons)]
    elif case == 5:  # saturation: graded conv, ±128/127 weights, w_shift 20, int32-scale values
        l0, g = _conv(rng, neuron, reset, 3, 5, 5, 2, 3, 1, 1, "sum", 2, 1, w_shift=20, big=True)
        layers = [l0, _neurons(rng, neuron, reset, 3, g.num_outputs, w_shift=20, big=True)]
    else:            # sum pool with stride > kernel (unused map rows/columns) -> dense
        l0, g = _conv(rng, neuron, reset, 1, 11, 11, 2, 3, 1, 0, "sum", 2, 3)
        layers = [l0, _neurons(rng, neuron, reset, 3, g.num_outputs)]
    return Program("mcu", layers, num_steps=6, graded_input=graded, input_scale=12.5 if graded else 0.0)


def make_input(prog: Program, T: int, B: int, seed: int, held: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = prog.num_inputs
    if prog.graded_input:
        v = torch.randint(-128, 128, (1 if held else T, B, n), generator=g, dtype=torch.int64)
        v[torch.rand(v.shape, generator=g) < 0.3] = 0
        return v.expand(T, B, n).to(torch.int8).contiguous()
    return (torch.rand(T, B, n, generator=g) < 0.3).to(torch.uint8)


@pytest.fixture(scope="module")
def emulator():
    with open_device("emulator:asan", timeout_s=5.0) as dev:
        yield dev


def check_against_reference(dev, prog, x):
    want = ref.reference_run(prog, x.numpy())
    neuron_layers = [k for k, l in enumerate(prog.layers) if l.kind != "pool"]
    dev.load(prog)
    for m in neuron_layers:
        res = dev.run(x, probe=True, membrane_layer=m)
        assert torch.equal(res.output_spikes, torch.as_tensor(want["output"]).to(torch.uint8))
        for k in range(len(prog.layers)):
            assert np.array_equal(res.layer_spikes[k].numpy(), want["layers"][k]), f"layer {k} outputs"
            assert res.counters[k] == want["counters"][k], f"layer {k} counters"
        assert np.array_equal(res.membranes[m].numpy(), want["membranes"][m]), f"layer {m} membranes"
    plain = dev.run(x)  # without recording: the same outputs and counters
    assert torch.equal(plain.output_spikes, torch.as_tensor(want["output"]).to(torch.uint8))
    assert plain.counters == {k: c for k, c in enumerate(want["counters"])}


@pytest.mark.parametrize("case", range(7))
@pytest.mark.parametrize("neuron,reset", [("leaky", "subtract"), ("synaptic", "zero")])
def test_firmware_matches_reference(emulator, case, neuron, reset):
    prog = make_program(case, neuron, reset, seed=100 * case + len(neuron) + len(reset))
    assert prog.version == 2
    x = make_input(prog, T=7, B=3, seed=case)   # T=7 with num_steps 6: samples straddle frames
    check_against_reference(emulator, prog, x)


@pytest.mark.parametrize("case", [2, 3, 5])
def test_graded_held_input_matches_reference(emulator, case):
    """The direct encoder's constant current: every frame goes as held values (encoding 3)."""
    prog = make_program(case, "leaky", "subtract", seed=7 + case)
    x = make_input(prog, T=9, B=4, seed=case, held=True)
    check_against_reference(emulator, prog, x)


def test_graded_frames_held_or_values():
    a, b = np.full((1, 5), 3, np.int8), np.arange(5, dtype=np.int8)[None]
    assert encode_values(np.repeat(a, 4, 0)) == (ENC_HELD, a.tobytes())
    mixed = np.concatenate([a, b, a])
    assert encode_values(mixed) == (ENC_VALUES, mixed.tobytes())
    assert _graded_frame_steps(np.concatenate([np.repeat(a, 6, 0), b]), 2) == 6   # held run of 6
    assert _graded_frame_steps(np.concatenate([a, b, b, b]), 3) == 3              # values frame
    assert _graded_frame_steps(np.repeat(a, 3, 0), 1) == 3


def test_graded_program_refuses_spike_encodings_and_vice_versa(emulator):
    from hw.serial.errors import BoardError
    from hw.serial.messages import MsgType, RUN_BEGIN, RUN_HEADER, ErrorCode, run_payload, run_payload_values
    graded = make_program(3, "leaky", "subtract", seed=1)
    spiking = make_program(0, "leaky", "subtract", seed=1)
    link = emulator.link
    emulator.load(graded)
    with pytest.raises(BoardError) as e:
        link.request(MsgType.RUN, run_payload(RUN_BEGIN, 4, 0, np.zeros((1, graded.num_inputs), np.uint8)))
    assert e.value.is_code(ErrorCode.BAD_INPUT)
    with pytest.raises(BoardError) as e:  # held values of the wrong length
        link.request(MsgType.RUN, RUN_HEADER.pack(RUN_BEGIN, ENC_HELD, 4, 0, 2, 0, 0) + bytes(graded.num_inputs - 1))
    assert e.value.is_code(ErrorCode.BAD_LENGTH)
    emulator.load(spiking)
    with pytest.raises(BoardError) as e:
        link.request(MsgType.RUN, run_payload_values(RUN_BEGIN, 4, 0, np.zeros((2, spiking.num_inputs), np.int8)))
    assert e.value.is_code(ErrorCode.BAD_INPUT)
    with pytest.raises(ValueError):  # a pooling record has no membranes
        emulator.load(make_program(1, "leaky", "subtract", seed=1))
        emulator.run(torch.zeros(2, 1, 81, dtype=torch.uint8), probe=True, membrane_layer=1)


def test_nonideal_chip_on_conv_layers_matches_sim():
    """The chip's fixed pattern and noise per neuron index of a conv layer: the firmware and
    `sim` (hw/nonideal.py, an independent implementation) agree bit for bit."""
    prog = make_program(1, "leaky", "subtract", seed=5)
    x = make_input(prog, T=6, B=2, seed=3)
    query = "?chip=11&mismatch=0.2&noise=0.05"
    with open_device("emulator" + query) as dev:
        dev.load(prog)
        got = dev.run(x, probe=True, membrane_layer=2)
    with open_device("sim" + query) as sim:
        sim.load(prog)
        want = sim.run(x, probe=True)
    assert torch.equal(got.output_spikes, want.output_spikes)
    assert torch.equal(got.membranes[2], want.membranes[2].to(torch.int32))
    assert got.counters == want.counters


def test_gain_of_a_huge_graded_input_saturates_instead_of_overflowing():
    """4096 graded inputs of -128 on weights of -128 at shift 20: A = 2^46, and A·G passes int64
    for a gain G > 2^17 without the spec's sat_40 (docs/fixed_point.md, non-ideal chips). By hand,
    in Python integers: U after step 1 is sat_32(mulq16(2^39 - 1, G)) for each neuron's G, in the
    sim's C time loop and its torch loop. (The board takes at most max_payload - 12 graded inputs
    per step, so this input does not fit a RUN frame; its firmware line is the same expression.)"""
    from hw.nonideal import ChipModel, mismatched_layer
    from hw.sim import SimulatedDevice
    n, m = 24, 4096
    layer = LayerProgram("leaky", "subtract", 20, np.full((n, m), -128, np.int8), np.zeros(n, np.int32),
                         np.full(n, 2 ** 30, np.int32), np.zeros(n, np.uint16))
    prog = Program("mcu", (layer,), num_steps=1, graded_input=True, input_scale=127.0)
    chip = ChipModel(chip=3, sigma_gain=1.0)
    gains = [int(v) for v in mismatched_layer(layer, 0, chip)[1].gain_q16]
    assert max(gains) > 2 ** 17 and min(gains) >= 0  # some products pass 2^63 unsaturated
    a = (1 << 39) - 1  # sat_40(2^46)
    want = [min(((a * g + (1 << 15)) >> 16), 2 ** 31 - 1) for g in gains]
    x = torch.full((1, 1, m), -128, dtype=torch.int8)
    for fused in (True, False):
        with SimulatedDevice(chip=chip, fused=fused) as dev:
            dev.load(prog)
            res = dev.run(x, probe=True)
        assert res.membranes[0].reshape(-1).tolist() == want, fused


def test_graded_input_wider_than_a_frame_is_refused_naming_the_limit(emulator):
    n, m = 4, 2000
    layer = LayerProgram("leaky", "subtract", 0, np.ones((n, m), np.int8), np.zeros(n, np.int32),
                         np.full(n, 100, np.int32), np.zeros(n, np.uint16))
    emulator.load(Program("mcu", (layer,), num_steps=2, graded_input=True, input_scale=127.0))
    with pytest.raises(Exception, match=r"a single step of 2000 graded inputs \(at most 1012 per RUN frame\)"):
        emulator.run(torch.ones(2, 1, m, dtype=torch.int8))
