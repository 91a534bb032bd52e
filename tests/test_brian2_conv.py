"""Brian2 reference for convolutional models: max pooling (of real values and of spikes) and analog input.

Against the float64 snnTorch model (weights and input intensities on a 2^-8 / 1/16 grid make every
sum exact, so spikes agree 100% and membranes bit for bit), against torch's max_pool2d for the window
tables, and against a hand-computed trajectory for max pooling of spikes (a logical OR).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from snn.brian2_ref import UnsupportedLayerError, crosscheck, run_brian2, translate
from snn.brian2_ref.mapping import pool_windows
from snn.brian2_ref.plan import NetworkPlan, Stage, plan_from_arrays, plan_to_arrays
from snn.brian2_ref.runner import check_inputs
from snn.model import build_model
from snn.presets import conv
from snn.spec import AvgPool2d, Conv2d, Flatten, Leaky, Linear, MaxPool2d, ModelSpec, Synaptic

DIRECT = {"type": "direct", "gain": 1.0}
RATE = {"type": "rate", "gain": 1.0}


def grid_state(spec: ModelSpec, seed: int) -> dict:
    """Every weight and bias a random multiple of 2^-8 in [-48, 96]/256."""
    g = torch.Generator().manual_seed(seed)
    sd = build_model(spec).state_dict()
    for k, v in sd.items():
        if k.endswith(("weight", "bias")):
            sd[k] = torch.randint(-48, 97, v.shape, generator=g).float() / 256
    return sd


def model_input(spec: ModelSpec, batch: int, seed: int) -> torch.Tensor:
    """Rate-like 0/1 spikes for a spike encoder; for `direct`, intensities k/16 repeated every step."""
    g = torch.Generator().manual_seed(100 + seed)
    shape = (batch, *spec.input_shape)
    if spec.encoder["type"] == "direct":
        x = torch.randint(0, 17, shape, generator=g).float() / 16
        return x.unsqueeze(0).expand(spec.num_steps, *shape).contiguous()
    return (torch.rand(spec.num_steps, *shape, generator=g) < 0.35).float()


def assert_bit_exact(report):
    d = report.to_dict(per_neuron=False)
    for layer in d["layers"]:  # every spiking layer, every step
        assert layer["spike_agreement"] == 1.0 and layer["first_divergence_step"] is None, layer
        assert layer["max_membrane_abs_diff"] == 0.0, layer
    assert d["exact"] and d["prediction_agreement"] == 1.0
    # not a vacuous agreement: every layer spikes, but not everywhere
    T, B = report.num_steps, report.samples
    assert all(0 < l["spikes_brian2"] < T * B * l["neurons"] for l in d["layers"]), d["layers"]


def test_pool_windows_give_torch_max_pool2d():
    g = torch.Generator().manual_seed(0)
    for (c, h, w), k, s in [((3, 8, 8), 2, 2), ((2, 7, 9), 3, 2), ((1, 5, 5), 2, 1)]:
        x = torch.randn(c, h, w, generator=g, dtype=torch.float64)
        idx, out_shape = pool_windows((c, h, w), k, s)
        ref = F.max_pool2d(x[None], k, s)[0]
        assert out_shape == tuple(ref.shape)
        np.testing.assert_array_equal(x.reshape(-1).numpy()[idx].max(axis=1), ref.reshape(-1).numpy())


def test_conv_preset_plan_stages():
    plan = translate(conv((1, 8, 8), 5, channels=(3, 4), num_steps=6, encoder=DIRECT),
                     grid_state(conv((1, 8, 8), 5, channels=(3, 4), num_steps=6), 0))
    assert plan.input_kind == "analog"
    assert [[s.kind for s in layer.stages] for layer in plan.layers] == [["linear", "max"], ["linear", "max"], []]
    first = plan.layers[0]
    assert (first.stages[0].n_in, first.stages[0].n_out, first.stages[1].n_out) == (64, 3 * 64, 3 * 16)
    assert first.chain == (0, 1) and np.all(first.params["bias"] == 0)  # the conv bias is taken before the max
    # identity from the pooled values into the population
    np.testing.assert_array_equal(first.feedforward.to_dense(), np.eye(48))
    # the plan survives the cpp_standalone file format
    back = plan_from_arrays(plan_to_arrays(plan))
    assert back.input_kind == "analog"
    for a, b in zip(plan.layers, back.layers):
        assert [(s.kind, s.n_in, s.n_out) for s in a.stages] == [(s.kind, s.n_in, s.n_out) for s in b.stages]
        for sa, sb in zip(a.stages, b.stages):
            if sa.kind == "linear":
                np.testing.assert_array_equal(sa.conn.to_dense(), sb.conn.to_dense())
                np.testing.assert_array_equal(sa.bias, sb.bias)
            else:
                np.testing.assert_array_equal(sa.windows, sb.windows)


@pytest.mark.parametrize("encoder", [RATE, DIRECT], ids=["rate", "direct"])
def test_conv_preset_bit_exact_against_float64_snntorch(encoder):
    spec = conv((1, 8, 8), 5, channels=(3, 4), num_steps=12, encoder=encoder)
    sd = grid_state(spec, 3)
    report = crosscheck((spec, sd), model_input(spec, 3, 3))
    assert_bit_exact(report)
    # the check can fail: average pooling in Brian2 instead of max pooling disagrees
    avg = ModelSpec(layers=tuple(AvgPool2d(2) if isinstance(l, MaxPool2d) else l for l in spec.layers),
                    input_shape=spec.input_shape, num_steps=spec.num_steps, encoder=spec.encoder)
    assert crosscheck((spec, sd), model_input(spec, 3, 3), brian2_spec=avg).spike_agreement < 1.0


@pytest.mark.parametrize("encoder", [RATE, DIRECT], ids=["rate", "direct"])
def test_maxpool_of_spikes_and_values_mixed_network_bit_exact(encoder):
    """Pooling after a spiking layer (OR of spikes, twice in a row across a population) and after a
    conv (max of values); stride != kernel; a synaptic layer; zero reset."""
    spec = ModelSpec(layers=(Conv2d(1, 3, 3, padding=1), Leaky(beta=0.875, threshold=0.5, reset="zero"),
                             MaxPool2d(2), Conv2d(3, 4, 3, padding=1), MaxPool2d(3, stride=1),
                             Synaptic(alpha=0.75, beta=0.9), MaxPool2d(2), Flatten(), Linear(4, 5), Leaky()),
                     input_shape=(1, 8, 8), num_steps=10, encoder=encoder)
    sd = grid_state(spec, 5)
    plan = translate(spec, sd)
    assert [[s.kind for s in layer.stages] for layer in plan.layers] == [[], ["or", "linear", "max"], ["or"]]
    report = crosscheck((spec, sd), model_input(spec, 2, 5))
    assert_bit_exact(report)


def test_maxpool_of_analog_input_bit_exact():
    """Max pooling straight on the input currents (a max stage reading the analog input group),
    then a conv read through summed synapses from the max stage."""
    spec = ModelSpec(layers=(MaxPool2d(2), Conv2d(1, 3, 3, padding=1), Leaky(), Flatten(), Linear(48, 4), Leaky()),
                     input_shape=(1, 8, 8), num_steps=8, encoder=DIRECT)
    sd = grid_state(spec, 9)
    assert [[s.kind for s in layer.stages] for layer in translate(spec, sd).layers] == [["max"], []]
    assert_bit_exact(crosscheck((spec, sd), model_input(spec, 3, 9)))


def test_analog_input_trained_like_weights_agree_to_tolerance():
    """float32 initial weights (not on a grid) and intensities k/255: the sums round, in a different
    order in each simulator, so membranes agree to 1e-12 and spikes exactly."""
    spec = conv((1, 8, 8), 5, channels=(4, 6), num_steps=10, encoder=DIRECT)
    torch.manual_seed(0)  # before building: the initial weights must not depend on the tests run before
    model = build_model(spec)
    sd = {k: (v * 3 if k.endswith("weight") else v) for k, v in model.state_dict().items()}  # make it spike
    g = torch.Generator().manual_seed(1)
    x = (torch.randint(0, 256, (4, 1, 8, 8), generator=g).float() / 255).expand(10, -1, -1, -1, -1).contiguous()
    d = crosscheck((spec, sd), x).to_dict(per_neuron=False)
    assert d["spike_agreement"] == 1.0 and d["exact"], d
    assert d["max_membrane_abs_diff"] <= 1e-12
    assert all(l["spikes_brian2"] > 0 for l in d["layers"])


def test_analog_sample_alone_equals_sample_in_batch():
    spec = conv((1, 8, 8), 5, channels=(3, 4), num_steps=8, encoder=DIRECT)
    plan = translate(spec, grid_state(spec, 7))
    x = model_input(spec, 3, 7).numpy()
    batch = run_brian2(plan, x)
    alone = run_brian2(plan, x[:, 2:3])
    for i, rec in alone.layers.items():
        np.testing.assert_array_equal(rec["mem"][:, 0], batch.layers[i]["mem"][:, 2])
        np.testing.assert_array_equal(rec["spikes"][:, 0], batch.layers[i]["spikes"][:, 2])


def test_or_pooling_hand_computed():
    """Input spikes -> Leaky (beta 0, zero reset, threshold 0.5: fires exactly when its input does)
    -> MaxPool 2x2 -> Linear (weights 1, 2, 4, 8) -> Leaky (beta 0, threshold never reached).
    The output membrane at step t is sum_w 2^w * OR(window w fired at step t), computed by hand;
    an OR delivered one step late, or a sum instead of an OR, gives other numbers."""
    spec = ModelSpec(layers=(Leaky(beta=0.0, threshold=0.5, reset="zero"), MaxPool2d(2), Flatten(),
                             Linear(4, 1, bias=False), Leaky(beta=0.0, threshold=100.0, reset="zero")),
                     input_shape=(1, 4, 4), num_steps=4, encoder=RATE)
    sd = build_model(spec).state_dict()
    sd["layers.3.weight"] = torch.tensor([[1.0, 2.0, 4.0, 8.0]])
    x = np.zeros((4, 1, 1, 4, 4))
    x[0, 0, 0, 0, 0] = 1                            # t=0: window 0 (top left)
    x[1, 0, 0, 0, 1] = x[1, 0, 0, 1, 0] = 1         # t=1: two spikes in window 0: still 1
    x[1, 0, 0, 3, 3] = 1                            #      and window 3 (bottom right)
    x[2, 0, 0, 0, 2] = x[2, 0, 0, 2, 1] = 1         # t=2: windows 1 and 2
    # t=3: nothing
    want = np.array([1.0, 1.0 + 8.0, 2.0 + 4.0, 0.0])
    plan = translate(spec, sd)
    assert [s.kind for s in plan.layers[1].stages] == ["or"]
    b2 = run_brian2(plan, x)
    np.testing.assert_array_equal(b2.layers[4]["mem"][:, 0, 0], want)
    np.testing.assert_array_equal(b2.layers[0]["spikes"][:, 0].reshape(4, 4, 4), x[:, 0, 0])
    assert_exact = crosscheck((spec, sd), x).to_dict(per_neuron=False)
    assert assert_exact["spike_agreement"] == 1.0 and assert_exact["max_membrane_abs_diff"] == 0.0


def test_refusals_name_the_problem():
    spec = conv((1, 8, 8), 5, channels=(2, 3), num_steps=4, encoder=RATE)
    sd = grid_state(spec, 0)
    currents = model_input(conv((1, 8, 8), 5, num_steps=4, encoder=DIRECT), 1, 0)
    with pytest.raises(ValueError, match="input spikes must be 0 or 1.*analog encoder"):
        crosscheck((spec, sd), currents)
    analog = translate(conv((1, 8, 8), 5, channels=(2, 3), num_steps=4, encoder=DIRECT), sd)
    bad = currents.numpy().copy()
    bad[0, 0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="input currents must be finite"):
        check_inputs(analog, bad)
    with pytest.raises(ValueError, match=r"input currents must be \[T, B, \*input_shape\]"):
        check_inputs(analog, bad[:, :, 0])
    # a plan that would take the max of spikes as values (or OR real values) is refused
    first = analog.layers[0]
    or_first = dataclasses.replace(first, stages=(Stage("or", 64, 128, windows=(np.arange(128) % 64)[:, None]),
                                                  *first.stages[1:]))
    with pytest.raises(ValueError, match="'or' stage on a real-valued source"):
        NetworkPlan((or_first,) + analog.layers[1:], analog.input_shape, analog.num_steps, analog.dt_s, "analog")
    max_first = dataclasses.replace(first, stages=(Stage("max", 64, 32, windows=(np.arange(128) % 64).reshape(32, 4)),))
    with pytest.raises(ValueError, match="'max' stage on a spike source"):
        NetworkPlan((max_first,) + analog.layers[1:], analog.input_shape, analog.num_steps, analog.dt_s, "spikes")
    with pytest.raises(ValueError, match="windows index outside"):
        Stage("max", 4, 1, windows=np.array([[0, 4]]))
    # graded spikes stay refused
    sd2 = dict(sd)
    sd2["layers.2.graded_spikes_factor"] = torch.tensor(2.0)
    with pytest.raises(UnsupportedLayerError, match="layer 2 .*graded"):
        translate(spec, sd2)
