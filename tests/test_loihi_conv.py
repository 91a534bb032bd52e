"""Convolution records on the `loihi` profile (docs/fixed_point.md, "Convolution on loihi"): Lava's
Conv process, so an int8 kernel with no weight exponent (w_shift 0, `conv_max_w_shift`) and no
pooling (`pool_kinds` empty). Without Lava: the refusals, and the `sim` device's convolution checked
against the same network written out as a dense loihi program by explicit loops over the kernel
(the dense loihi path is the one checked against Lava and the NumPy reference). Against Lava
itself: tests/test_vendor_lava.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hw.compiler import CompileError, compile_model
from hw.device import open_device
from hw.program import LayerProgram, MapGeometry, PoolProgram, Program, ProgramError, crc32_of
from snn.model import build_model
from snn.spec import AvgPool2d, Conv2d, Flatten, Leaky, Linear, MaxPool2d, ModelSpec


def _spec(layers, shape=(2, 8, 8), T=6, encoder="rate"):
    return ModelSpec(layers=tuple(layers), input_shape=shape, num_steps=T, encoder={"type": encoder, "gain": 1.0},
                     name="loihi-conv")


def _weights(spec, gain=3.0, seed=0):
    torch.manual_seed(seed)
    return {k: (v * gain if k.endswith("weight") else v) for k, v in build_model(spec).state_dict().items()}


STRIDED = [Conv2d(2, 3, 3, stride=2, padding=1), Leaky(beta=0.9, threshold=0.5, reset="zero"),
           Conv2d(3, 4, 3), Leaky(beta=0.8, threshold=0.5, reset="zero"),
           Flatten(), Linear(16, 5), Leaky(beta=0.9, threshold=0.3, reset="zero")]


def dense_equivalent(layer: LayerProgram) -> np.ndarray:
    """The [N, M] matrix of a convolution record, by explicit loops over outputs and kernel taps
    (neuron (o, y, x) reads input (c, y·st − p + ky, x·st − p + kx) with W[o, c, ky, kx])."""
    g = layer.conv
    out = np.zeros((g.num_outputs, g.fan_in), dtype=np.int64)
    for o in range(g.out_channels):
        for y in range(g.out_height):
            for x in range(g.out_width):
                i = (o * g.out_height + y) * g.out_width + x
                for c in range(g.in_channels):
                    for ky in range(g.kernel):
                        for kx in range(g.kernel):
                            iy, ix = y * g.stride - g.padding + ky, x * g.stride - g.padding + kx
                            if 0 <= iy < g.in_height and 0 <= ix < g.in_width:
                                out[i, (c * g.in_height + iy) * g.in_width + ix] = layer.weights[o, c, ky, kx]
    return out


def test_a_strided_conv_model_compiles_with_w_shift_0_and_one_scale_per_channel():
    spec = _spec(STRIDED)
    prog = compile_model(spec, _weights(spec), "loihi")
    assert [l.kind for l in prog.layers] == ["conv", "conv", "dense"] and prog.version == 2
    for layer in prog.layers[:2]:
        g = layer.conv
        assert layer.w_shift == 0 and g.pool == "none"
        per = g.out_height * g.out_width
        # every neuron of a channel has the channel's threshold (one scale per output channel)
        th = layer.threshold.reshape(g.out_channels, per)
        assert (th == th[:, :1]).all()
        assert len(np.unique(th[:, 0])) <= 8   # snapped to LOIHI_MAX_SCALES levels
    assert Program.from_bytes(prog.to_bytes(), expected_profile="loihi").to_bytes() == prog.to_bytes()


def test_sim_convolution_equals_the_dense_program_written_by_loops():
    spec = _spec(STRIDED)
    prog = compile_model(spec, _weights(spec), "loihi")
    dense = Program("loihi", tuple(
        LayerProgram("leaky", "zero", l.w_shift, dense_equivalent(l) if l.conv is not None else l.weights,
                     l.bias, l.threshold, l.decay_mem) for l in prog.layers), num_steps=prog.num_steps)
    x = (torch.rand(6, 16, 128, generator=torch.Generator().manual_seed(1)) < 0.3).to(torch.uint8)
    runs = []
    for p in (prog, dense):
        with open_device("sim", profile="loihi") as dev:
            dev.load(p)
            runs.append(dev.run(x, probe=True))
    for k in range(3):
        assert torch.equal(runs[0].membranes[k], runs[1].membranes[k]), k
        assert torch.equal(runs[0].layer_spikes[k], runs[1].layer_spikes[k]), k
        assert 0 < runs[0].layer_spikes[k].float().mean() < 0.9, "the test network must be active"
    # counters: a conv record counts each input spike once per output position that reads it
    assert runs[0].counters[0]["spikes"] == runs[1].counters[0]["spikes"]


@pytest.mark.parametrize("pool, kind", [(MaxPool2d(2), "max"), (AvgPool2d(2), "sum")])
def test_pooling_is_refused_naming_the_profile_and_the_alternative(pool, kind):
    for layers in ([Conv2d(2, 3, 3), pool, Leaky(reset="zero"), Flatten(), Linear(27, 2), Leaky(reset="zero")],
                   [Conv2d(2, 3, 3), Leaky(reset="zero"), pool, Flatten(), Linear(27, 2), Leaky(reset="zero")]):
        spec = _spec(layers)
        with pytest.raises(CompileError, match=rf"\({pool.type_name}\): profile 'loihi' has no {kind} pooling "
                                               rf"\(pool_kinds=\[\].*strided Conv2d"):
            compile_model(spec, _weights(spec), "loihi")


def test_graded_input_is_still_refused():
    spec = _spec(STRIDED, encoder="direct")
    with pytest.raises(CompileError, match=r"takes spike input only \(supports_graded_input=false"):
        compile_model(spec, _weights(spec), "loihi")


def _conv_layer(w_shift=0, pool="none"):
    g = MapGeometry(1, 4, 4, 2, 3, 1, 0, pool, 2 if pool != "none" else 0, 2 if pool != "none" else 0)
    return LayerProgram("leaky", "zero", w_shift, np.ones((2, 1, 3, 3), np.int8), np.zeros(g.num_outputs, int),
                        np.ones(g.num_outputs, int), np.zeros(g.num_outputs, int), conv=g)


def test_programs_the_profile_cannot_run_are_refused_by_rule():
    """Rule 8.7 (a conv record's w_shift above conv_max_w_shift = 0) and 6.12 (pooling on a profile
    without pool_kinds), both by the constructor and by the blob reader (the same blob is valid for mcu)."""
    for layer, rule in ((_conv_layer(w_shift=1), "8.7"), (_conv_layer(pool="max"), "6.12")):
        with pytest.raises(ProgramError, match=r"profile 'loihi'") as e:
            Program("loihi", (layer,))
        assert e.value.rule == rule
        blob = bytearray(Program("mcu", (layer,)).to_bytes())
        blob[6] = 2  # profile_id: loihi
        blob[12:16] = crc32_of(bytes(blob)).to_bytes(4, "little")
        with pytest.raises(ProgramError) as e:
            Program.from_bytes(bytes(blob))
        assert e.value.rule == rule
    dense = LayerProgram("leaky", "zero", 0, np.ones((8, 8), np.int8), np.zeros(8, int), np.ones(8, int),
                         np.zeros(8, int))
    pool = PoolProgram(MapGeometry(2, 2, 2, 2, pool="max", pool_kernel=2, pool_stride=2))
    with pytest.raises(ProgramError, match=r"a pooling record is not supported by profile 'loihi'.*strided") as e:
        Program("loihi", (dense, pool, LayerProgram("leaky", "zero", 0, np.ones((1, 2), np.int8),
                                                    np.zeros(1, int), np.ones(1, int), np.zeros(1, int))))
    assert e.value.rule == "6.12"
