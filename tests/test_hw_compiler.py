"""The compiler: exact reproduction of the float model when every value is representable (an
independent check of the float->integer mapping for every neuron type and reset), refusals naming
the layer and the limit, scale choice, the compile report, a trained digits model on mcu/xylo-like,
and the xylosim profiles' mapping and refusals (xylo-imu, xylo-audio2)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from hw.compiler import CompileError, best_weight_scale, compile_checkpoint, compile_model
from hw.deploy import device_inputs, float_predictions, run_dataset
from hw.device import open_device
from snn.model import build_model
from snn.presets import conv, fc
from snn.spec import Flatten, Leaky, Linear, ModelSpec, RLeaky, Synaptic


def grid_weights(shape, gen):
    """Weights k/32 with max |W| = 127/32 in every row, so the compiler's per-row scale
    (127/max|W_i|) is exactly 32."""
    w = torch.randint(-127, 128, shape, generator=gen).to(torch.float64) / 32
    w[:, 0] = 127 / 32
    return w


def representable_model(neuron, reset, beta):
    gen = torch.Generator().manual_seed(1)
    kw = dict(beta=beta, threshold=1.0, reset=reset)
    if neuron == "synaptic":
        make = lambda: Synaptic(alpha=0.5, **kw)  # noqa: E731
    elif neuron == "rleaky":
        make = lambda: RLeaky(all_to_all=True, **kw)  # noqa: E731
    elif neuron == "rleaky_elementwise":
        make = lambda: RLeaky(all_to_all=False, V=-0.25, **kw)  # noqa: E731
    else:
        make = lambda: Leaky(**kw)  # noqa: E731
    spec = ModelSpec(layers=(Flatten(), Linear(6, 5), make(), Linear(5, 3), make()), input_shape=(1, 2, 3),
                     num_steps=10)
    model = build_model(spec, dtype=torch.float64)
    sd = model.state_dict()
    for k in sd:
        if k.endswith("weight"):
            sd[k] = grid_weights(sd[k].shape, gen)
        elif k.endswith("bias"):
            sd[k] = torch.randint(-8, 9, sd[k].shape, generator=gen).to(torch.float64) / 32
    return spec, sd


@pytest.mark.parametrize("neuron", ["leaky", "synaptic", "rleaky", "rleaky_elementwise"])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_mcu_reproduces_float_model_exactly_when_representable(neuron, reset, beta):
    """Weights k/32, beta in {0, 1/2, 1}, alpha 1/2, T = 10: every float value is a multiple of
    2^-15 and every integer rule exact, so the device spikes must equal the float64 model's."""
    spec, sd = representable_model(neuron, reset, beta)
    prog = compile_model(spec, sd, "mcu")
    for rep in prog.report["layers"]:
        assert rep["weight_relative_rmse"] == 0 and rep["beta"]["max_abs_error"] == 0
    model = build_model(spec, sd, dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(10, 16, 1, 2, 3, generator=g) < 0.6).to(torch.float64)
    with torch.no_grad():
        out = model(x, record=True)
    with open_device("sim", profile="mcu") as dev:
        dev.load(prog)
        res = dev.run(x.reshape(10, 16, 6), probe=True)
    assert torch.equal(res.output_spikes.to(torch.float64), out.spikes)
    assert torch.equal(res.layer_spikes[0].to(torch.float64), out.record[2]["spikes"].reshape(10, 16, 5))
    assert out.spikes.sum() > 0 and out.record[2]["spikes"].sum() > 0
    # the integer membrane is the float membrane times the layer scale K
    K = prog.report["layers"][1]["scale"]
    assert K["min"] == K["max"]  # every row has the same max |W|, hence the same scale
    assert torch.equal(res.membranes[1].to(torch.float64), out.mem * K["min"])


def test_refusals_name_layer_and_limit():
    c = conv((1, 8, 8), 10)
    with pytest.raises(CompileError, match=r"layer 0 \(conv2d\).*'xylo-imu' does not support convolution"):
        compile_model(c, build_model(c).state_dict(), "xylo-imu")
    s = fc((1, 8, 8), 10, hidden=16)
    sd = build_model(s).state_dict()
    with pytest.raises(CompileError, match=r"layer 2 \(leaky\): reset 'subtract' is not supported by "
                                           r"profile 'loihi' \(supported: \['zero'\]\)"):
        compile_model(s, sd, "loihi")
    wide = fc((1, 8, 8), 10, hidden=4100)
    with pytest.raises(CompileError, match=r"layer 2 \(leaky\): 4100 neurons exceed .*max_neurons_per_layer=4096"):
        compile_model(wide, build_model(wide).state_dict(), "mcu")
    big_in = fc((1, 70, 70), 10, hidden=16)
    with pytest.raises(CompileError, match="fan-in 4900 exceeds .*max_fan_in=4096"):
        compile_model(big_in, build_model(big_in).state_dict(), "mcu")
    syn = ModelSpec(layers=(Linear(4, 3), Synaptic(reset="zero")), input_shape=(4,))
    with pytest.raises(CompileError, match=r"layer 1 \(synaptic\): neuron type 'synaptic' is not supported "
                                           r"by profile 'loihi'"):
        compile_model(syn, build_model(syn).state_dict(), "loihi")
    two = ModelSpec(layers=(Linear(4, 3), Linear(3, 3), Leaky()), input_shape=(4,))
    with pytest.raises(CompileError, match="two synapse layers"):
        compile_model(two, build_model(two).state_dict(), "mcu")
    deep = ModelSpec(layers=tuple(x for _ in range(9) for x in (Linear(4, 4), Leaky())), input_shape=(4,))
    with pytest.raises(CompileError, match="9 device layers exceed .*max_layers=8"):
        compile_model(deep, build_model(deep).state_dict(), "mcu")


def test_best_scale_never_worse_than_plain_max_scaling():
    rng = np.random.default_rng(0)
    for _ in range(5):
        w = rng.standard_t(3, size=(64, 32)) * 0.1  # heavy tails: clipping a few outliers pays off
        s, mse = best_weight_scale(w)
        s0 = 127 / np.abs(w).max()
        mse0 = np.mean((w - np.clip(np.round(w * s0), -128, 127) / s0) ** 2)
        assert mse <= mse0 and s >= s0


def test_xylo_like_report_shows_power_of_two_beta():
    s = fc((1, 8, 8), 10, hidden=16, beta=0.9)
    prog = compile_model(s, build_model(s).state_dict(), "xylo-like")
    rep = prog.report["layers"][0]
    assert rep["beta"]["effective_mean"] == pytest.approx(0.875)  # 1 - 2^-3 is the nearest
    assert rep["beta"]["max_abs_error"] == pytest.approx(0.025, abs=1e-6)
    assert "notes" in rep


def test_trained_digits_on_mcu_and_xylo_like(trained_digits_checkpoint, digits):
    """Compiled for mcu the trained model predicts like the float model on >= 97 % of the test set;
    xylo-like (power-of-two decays, different reset order) on >= 90 %."""
    from snn.checkpoint import load_checkpoint
    ck = load_checkpoint(trained_digits_checkpoint)
    model = ck.build(dtype=torch.float32).eval()
    x = digits.test_x[:120]
    _, fpred = float_predictions(model, ck.spec, x)
    inputs = device_inputs(ck.spec, x, range(len(x)))
    for profile, min_agree in (("mcu", 0.97), ("xylo-like", 0.90)):
        prog = compile_checkpoint(trained_digits_checkpoint, profile)
        with open_device("sim", profile=profile) as dev:
            dev.load(prog.to_bytes())
            run = run_dataset(dev, ck.spec, x, batch_size=50, inputs=inputs)
        agree = (run.predictions == fpred).float().mean().item()
        assert agree >= min_agree, (profile, agree)
        assert math.isclose(sum(c["spikes"] for c in run.counters.values()),
                            float(run.output_spikes.sum()) + run.counters[0]["spikes"])


def test_max_spikes_option():
    s = fc((1, 8, 8), 10, hidden=16)
    sd = build_model(s).state_dict()
    assert [l.max_spikes for l in compile_model(s, sd, "xylo-like").layers] == [1, 1]
    prog = compile_model(s, sd, "xylo-like", max_spikes=15)
    assert [l.max_spikes for l in prog.layers] == [15, 15] and prog.report["layers"][0]["max_spikes"] == 15
    assert [l.max_spikes for l in compile_model(s, sd, "mcu", max_spikes=15).layers] == [0, 0]
    with pytest.raises(CompileError, match=r"max_spikes must be in \[1, 15\]"):
        compile_model(s, sd, "xylo-like", max_spikes=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        old = compile_model(s, sd, "xylo", max_spikes=15)  # the deprecated name: the same program
    assert old.to_bytes() == prog.to_bytes() and old.profile == "xylo"


def _xylo_spec(n_in=16, hidden=32, n_out=10, neuron=Synaptic, alpha=0.5, beta=0.75, bias=False, layers=2):
    body = []
    sizes = [n_in] + [hidden] * (layers - 1) + [n_out]
    for a, b in zip(sizes, sizes[1:]):
        body += [Linear(a, b, bias=bias), neuron(alpha=alpha, beta=beta) if neuron is Synaptic else neuron(beta=beta)]
    return ModelSpec(layers=tuple(body), input_shape=(n_in,), num_steps=10)


def test_xylosim_profiles_refuse_what_the_chips_cannot_hold():
    cases = [("xylo-imu", _xylo_spec(n_in=64),
              r"layer 1 \(synaptic, the hidden layer\): fan-in 64 exceeds the 16 input channels"),
             ("xylo-imu", _xylo_spec(neuron=Leaky), r"neuron type 'leaky' is not supported .*receives nothing"),
             ("xylo-imu", _xylo_spec(layers=9), r"9 device layers: .*runs 2 to 8 layers"),
             ("xylo-imu", _xylo_spec(layers=1), r"1 device layers: .*runs 2 to 8 layers"),
             ("xylo-imu", _xylo_spec(n_out=20),
              r"layer 3 \(synaptic, the readout layer\): 20 neurons exceed .* 16 readout neurons"),
             ("xylo-imu", _xylo_spec(hidden=200), r"200 neurons exceed .* 128 hidden neurons \(the chip's 496"),
             ("xylo-audio2", _xylo_spec(),
              r"layer 3 \(synaptic, the readout layer\): 10 neurons exceed .* 8 readout neurons")]
    for profile, spec, msg in cases:
        with pytest.raises(CompileError, match=msg):
            compile_model(spec, build_model(spec).state_dict(), profile)
    spec = _xylo_spec(n_out=8, hidden=300)
    assert compile_model(spec, build_model(spec).state_dict(), "xylo-audio2").layers[0].num_neurons == 300
    with pytest.raises(CompileError, match=r"fixed spike caps \(hidden 31, readout 1\); max_spikes=15"):
        compile_model(_xylo_spec(), build_model(_xylo_spec()).state_dict(), "xylo-imu", max_spikes=15)


def test_xylosim_compile_units_caps_and_notes():
    """Threshold and bias in units alpha_e*K (xylosim decays the input in the step it arrives),
    dash_syn >= 1 (0 would block the input), the fixed caps, and the report's notes."""
    spec = _xylo_spec(alpha=0.1, bias=True)  # alpha 0.1 is nearest dash 0: the compiler takes 1
    sd = build_model(spec).state_dict()
    prog = compile_model(spec, sd, "xylo-imu")
    hidden, readout = prog.layers
    assert [l.max_spikes for l in prog.layers] == [31, 1] and prog.profile == "xylo-imu"
    assert (hidden.decay_syn == 1).all() and (hidden.decay_mem == 2).all()  # beta 0.75 = 1 - 2^-2
    rep = prog.report["layers"][0]
    assert rep["alpha"]["effective_mean"] == 0.5 and rep["role"] == "hidden"
    K_v = np.array([rep["scale"]["min"], rep["scale"]["max"]])
    w = sd["layers.0.weight"].double().numpy()
    K = np.array([best_weight_scale(r)[0] for r in w]) * 2 ** hidden.w_shift
    thr = np.round(1.0 * K * 0.5) + 1
    assert hidden.threshold.tolist() == thr.astype(int).tolist()
    assert K_v.tolist() == [float((K * 0.5).min()), float((K * 0.5).max())]
    b = sd["layers.0.bias"].double().numpy()
    assert hidden.bias.tolist() == np.clip(np.round(b * K * 0.5 / 0.5), -32768, 32767).astype(int).tolist()
    notes = " ".join(prog.report["layers"][1]["notes"])
    assert "reads the previous layer's spikes of the step before" in notes and "steady state" in notes


def test_scale_levels_snap_down_to_equal_count_groups():
    from hw.compiler import scale_levels
    s = np.array([6.0, 1.0, 5.0, 2.0, 4.0, 3.0])
    assert scale_levels(s, 2).tolist() == [4.0, 1.0, 4.0, 1.0, 4.0, 1.0]   # groups {1,2,3}, {4,5,6}
    assert scale_levels(s, 6).tolist() == s.tolist()                      # few enough: unchanged
    rng = np.random.default_rng(1)
    s = rng.uniform(1, 9, 200)
    out = scale_levels(s, 8)
    assert len(np.unique(out)) == 8 and (out <= s).all()                   # never clips more


def _ones_state(spec):
    sd = build_model(spec).state_dict()
    sd["layers.0.weight"] = torch.ones_like(sd["layers.0.weight"])
    return sd


def test_loihi_exponent_keeps_the_summed_input_inside_lavas_int32():
    """2100 inputs of weight 127: at weight exponent 7 the input (Σ w) << 7 << 6 reaches 2^31, where
    Lava's int32 wraps; the compiler lowers the exponent to 6 (a low threshold would pick 7)."""
    from snn.spec import Leaky, Linear, ModelSpec
    spec = ModelSpec(layers=(Linear(2100, 1, bias=False), Leaky(beta=0.9, threshold=0.01, reset="zero")),
                     input_shape=(2100,), num_steps=2)
    prog = compile_model(spec, _ones_state(spec), "loihi")
    (layer,) = prog.layers
    assert int(layer.weights.astype(np.int64).sum()) == 2100 * 127
    assert layer.w_shift == 6 and (2100 * 127) << (6 + 6) < 2 ** 31 <= (2100 * 127) << (7 + 6)
    spec2 = ModelSpec(layers=(Linear(4096, 1, bias=False), Leaky(beta=0.9, threshold=0.01, reset="zero")),
                      input_shape=(4096,), num_steps=2)
    prog2 = compile_model(spec2, _ones_state(spec2), "loihi")
    assert (4096 * 127) << (prog2.layers[0].w_shift + 6) < 2 ** 31
