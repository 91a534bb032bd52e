"""Compiling convolution, pooling and graded-input models (program format version 2) for `mcu`.

The compiled integer network is run by the independent NumPy reference (tests/conv_reference.py)
and its membranes, divided by each neuron's scale K (= integer threshold / float threshold), are
compared with the float64 model's on the same input: that checks the layout of shared weights,
the per-channel scales, the pooling of accumulations (max; sum with the average's 1/pk² folded
into K), the pooling records of spikes (OR; counts with 1/pk² folded into the next weights) and
the graded input's quantization, to within the quantization error."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from conv_reference import quantize_input, reference_run  # noqa: E402

from hw.compiler import CompileError, compile_model, plan_stages  # noqa: E402
from hw.profiles import get_profile  # noqa: E402
from hw.program import Program  # noqa: E402
from snn.encoding import encode_batch  # noqa: E402
from snn.model import build_model  # noqa: E402
from snn.presets import conv as conv_preset  # noqa: E402
from snn.spec import AvgPool2d, Conv2d, Flatten, Leaky, Linear, MaxPool2d, ModelSpec  # noqa: E402

BIG = 1e4  # a threshold no membrane reaches: no spikes, no resets, membranes comparable at every step


def _spec(layers, shape=(2, 6, 6), encoder=None, T=4):
    return ModelSpec(layers=tuple(layers), input_shape=shape, num_steps=T,
                     encoder=encoder or {"type": "rate", "gain": 1.0}, name="t")


def _float_traces(spec, sd, x):
    model = build_model(spec, sd, dtype=torch.float64).eval()
    with torch.no_grad():
        return model(x.to(torch.float64), record=True).record


def _device_input(spec, prog, x):
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    if prog.graded_input:
        return quantize_input(flat.numpy(), prog.input_scale)
    return flat.numpy().astype(np.int64)


def _scaled_membranes(prog, ref, k, threshold):
    K = prog.layers[k].threshold.astype(np.float64) / threshold
    return ref["membranes"][k] / K


@pytest.mark.parametrize("pool", [None, MaxPool2d(2), AvgPool2d(2)])
@pytest.mark.parametrize("encoder", ["rate", "direct"])
def test_conv_layer_membranes_follow_the_float_model(pool, encoder):
    torch.manual_seed(0)
    layers = [Conv2d(2, 3, 3, padding=1)] + ([pool] if pool else []) + [Leaky(beta=0.75, threshold=BIG)]
    enc = {"type": "rate", "gain": 1.0} if encoder == "rate" else {"type": "direct", "gain": 2.0}
    spec = _spec(layers, encoder=enc)
    sd = build_model(spec).state_dict()
    prog = compile_model(spec, sd, "mcu")
    assert prog.version == 2 and prog.layers[0].kind == "conv"
    assert prog.graded_input == (encoder == "direct")
    if encoder == "direct":
        assert prog.input_scale == pytest.approx(127 / 2.0)
    g = prog.layers[0].conv
    assert (g.kernel, g.padding, g.out_channels) == (3, 1, 3)
    assert g.pool == {None: "none", MaxPool2d(2): "max", AvgPool2d(2): "sum"}[pool]
    x = encode_batch(spec, torch.rand(5, 2, 6, 6), torch.Generator().manual_seed(1))
    ref = reference_run(prog, _device_input(spec, prog, x))
    assert ref["output"].sum() == 0  # no spikes: the membranes integrate freely
    mem_f = _float_traces(spec, sd, x)[len(layers) - 1]["mem"].reshape(4, 5, -1).numpy()
    mem_d = _scaled_membranes(prog, ref, 0, BIG)
    err = np.abs(mem_d - mem_f).max() / np.abs(mem_f).max()
    assert err < 0.02, err


def test_pool_record_of_spikes_and_the_folded_average():
    """Conv → Leaky → AvgPool (a sum pooling record) → Flatten → Linear → Leaky: layer 2's
    membranes equal the float Linear applied to the *device's* average-pooled spikes."""
    torch.manual_seed(2)
    spec = _spec([Conv2d(2, 4, 3, padding=1), Leaky(beta=0.5, threshold=0.3), AvgPool2d(2), Flatten(),
                  Linear(4 * 3 * 3, 5), Leaky(beta=0.9, threshold=BIG)])
    sd = build_model(spec).state_dict()
    prog = compile_model(spec, sd, "mcu")
    assert [l.kind for l in prog.layers] == ["conv", "pool", "dense"]
    assert prog.layers[1].geometry.pool == "sum"
    x = encode_batch(spec, torch.rand(6, 2, 6, 6), torch.Generator().manual_seed(3))
    ref = reference_run(prog, _device_input(spec, prog, x))
    counts = ref["layers"][1]  # [T, B, 36], 0..4 spikes per window
    assert counts.max() > 1 and counts.max() <= 4
    W, b = sd["layers.4.weight"].double().numpy(), sd["layers.4.bias"].double().numpy()
    z = counts / 4.0 @ W.T + b  # the float layer's input on the device's spikes
    mem = np.zeros_like(z[0])
    expect = []
    for t in range(z.shape[0]):
        mem = 0.9 * mem + z[t]
        expect.append(mem.copy())
    mem_d = _scaled_membranes(prog, ref, 2, BIG)
    assert np.abs(mem_d - np.stack(expect)).max() / np.abs(np.stack(expect)).max() < 0.02


def test_max_pool_of_spikes_is_an_or_record():
    spec = _spec([Conv2d(2, 2, 3, padding=1), Leaky(threshold=0.2), MaxPool2d(3), Flatten(), Linear(8, 3),
                  Leaky()])
    prog = compile_model(spec, build_model(spec).state_dict(), "mcu")
    pool = prog.layers[1]
    assert pool.kind == "pool" and pool.geometry.pool == "max" and pool.num_neurons == 2 * 2 * 2


def test_conv_preset_fits_the_mcu_and_round_trips():
    for enc in ({"type": "rate", "gain": 1.0}, {"type": "direct"}):
        spec = conv_preset((1, 28, 28), 10, encoder=enc)
        prog = compile_model(spec, build_model(spec).state_dict(), "mcu")
        assert [l.num_neurons for l in prog.layers] == [2352, 1568, 10]
        assert prog.size_bytes() <= get_profile("mcu").max_program_bytes
        again = Program.from_bytes(prog.to_bytes(), "mcu")
        assert again.to_bytes() == prog.to_bytes() and again.graded_input == (enc["type"] == "direct")


def test_dense_spike_programs_keep_version_1():
    spec = _spec([Flatten(), Linear(72, 4), Leaky()])
    assert compile_model(spec, build_model(spec).state_dict(), "mcu").version == 1


@pytest.mark.parametrize("profile", ["loihi", "xylo-like", "xylo-imu"])
def test_profiles_without_conv_or_graded_input_refuse_naming_the_limit(profile):
    spec = conv_preset((1, 8, 8), 4)
    if profile != "loihi":  # loihi takes convolutions (tests/test_loihi_conv.py), not pooling nor graded input
        with pytest.raises(CompileError, match=r"does not support convolution layers \(supports_conv=false"):
            compile_model(spec, build_model(spec).state_dict(), profile)
    dense = _spec([Flatten(), Linear(16, 4), Leaky()], shape=(1, 4, 4), encoder={"type": "direct"})
    with pytest.raises(CompileError, match=r"takes spike input only \(supports_graded_input=false"):
        compile_model(dense, build_model(dense).state_dict(), profile)


@pytest.mark.parametrize("layers, match", [
    ([MaxPool2d(2), Flatten(), Linear(18, 2), Leaky()], "must follow a spiking layer or a convolution"),
    ([Conv2d(2, 2, 3), MaxPool2d(2), AvgPool2d(1), Leaky()], "second pool after a convolution"),
    ([Conv2d(2, 2, 3), Leaky(), MaxPool2d(2), AvgPool2d(1), Flatten(), Linear(8, 2), Leaky()],
     "not the network input nor another pool"),
])
def test_unmappable_pooling_is_refused(layers, match):
    spec = _spec(layers)
    with pytest.raises(CompileError, match=match):
        plan_stages(spec, get_profile("mcu"))


def test_a_network_above_the_state_memory_is_refused():
    spec = _spec([Conv2d(1, 8, 3, padding=1), Leaky(), Flatten(), Linear(8 * 20 * 20, 1000), Leaky()],
                 shape=(1, 20, 20))  # 3200 + 1000 neurons
    with pytest.raises(CompileError, match="max_neurons_total=4096"):
        plan_stages(spec, get_profile("mcu"))
