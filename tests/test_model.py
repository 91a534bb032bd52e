"""The spec -> snnTorch builder against hand-computed trajectories and an independent numpy
implementation of docs/neuron_semantics.md (Leaky/Synaptic/RLeaky, subtract/zero, per-neuron
parameters, float64 path, conv/pool layers, recording, surrogate gradients)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from snn.model import build_model, load_weights
from snn.spec import (AvgPool2d, Conv2d, Flatten, Leaky, Linear, MaxPool2d, ModelSpec, RLeaky, Surrogate,
                      Synaptic)

# --------------------------------------------------------------------------- numpy reference


def ref_neurons(kind: str, x: np.ndarray, beta, threshold, reset: str, alpha=None, rec=None) -> dict:
    """docs/neuron_semantics.md, written out in numpy float64.

    x: [T, B, N] synaptic input; beta/threshold/alpha: scalars or [N]; rec: function S[t-1] -> [B, N]
    (RLeaky). Returns {"spikes", "mem", "syn"}: [T, B, N]."""
    T, B, N = x.shape
    beta = np.clip(np.broadcast_to(np.asarray(beta, float), (N,)), 0, 1)
    theta = np.broadcast_to(np.asarray(threshold, float), (N,))
    U, I, S = np.zeros((B, N)), np.zeros((B, N)), np.zeros((B, N))
    out = {"spikes": [], "mem": [], "syn": []}
    for t in range(T):
        R = (U - theta > 0).astype(float)  # did the neuron spike at the previous step
        if kind == "leaky":
            if reset == "subtract":
                U = beta * U + x[t] - R * theta
            else:
                U = beta * ((1 - R) * U) + x[t]
        elif kind == "synaptic":
            a = np.clip(np.broadcast_to(np.asarray(alpha, float), (N,)), 0, 1)
            I = a * I + x[t]
            V = beta * U + I
            U = V - R * theta if reset == "subtract" else (1 - R) * V
        else:  # rleaky
            V = beta * U + x[t] + rec(S)
            U = V - R * theta if reset == "subtract" else (1 - R) * V
        S = (U - theta > 0).astype(float)
        out["spikes"].append(S)
        out["mem"].append(U)
        out["syn"].append(I.copy())
    return {k: np.stack(v) for k, v in out.items()}


def ref_network(model, x: torch.Tensor) -> tuple[np.ndarray, dict]:
    """Step-by-step reference of a whole network: stateless layers applied per time step with
    torch.nn.functional on the model's weights (float64), neurons from `ref_neurons`."""
    spec = model.spec
    sd = {k: v.detach().to(torch.float64) for k, v in model.state_dict().items()}
    params = model.neuron_parameters()
    T = x.shape[0]
    # stateless layers per step, neuron layers per whole sequence: walk the layers in order
    h = [x[t].to(torch.float64) for t in range(T)]
    rec_out = {}
    for i, l in enumerate(spec.layers):
        w, b = sd.get(f"layers.{i}.weight"), sd.get(f"layers.{i}.bias")
        if isinstance(l, Linear):
            h = [F.linear(z, w, b) for z in h]
        elif isinstance(l, Conv2d):
            h = [F.conv2d(z, w, b, stride=l.stride, padding=l.padding) for z in h]
        elif isinstance(l, MaxPool2d):
            h = [F.max_pool2d(z, l.kernel_size, l.effective_stride) for z in h]
        elif isinstance(l, AvgPool2d):
            h = [F.avg_pool2d(z, l.kernel_size, l.effective_stride) for z in h]
        elif isinstance(l, Flatten):
            h = [z.flatten(1) for z in h]
        else:
            shape = h[0].shape
            xs = np.stack([z.reshape(shape[0], -1).numpy() for z in h])
            p = {k: v.numpy() for k, v in params[i].items()}
            rec = None
            if isinstance(l, RLeaky):
                if l.all_to_all:
                    rw, rb = sd[f"layers.{i}.recurrent.weight"].numpy(), sd[f"layers.{i}.recurrent.bias"].numpy()
                    rec = lambda s, rw=rw, rb=rb: s @ rw.T + rb  # noqa: E731
                else:
                    rec = lambda s, v=p["V"]: s * v  # noqa: E731
            kind = {Leaky: "leaky", Synaptic: "synaptic", RLeaky: "rleaky"}[type(l)]
            r = ref_neurons(kind, xs, p["beta"], p["threshold"], l.reset, p.get("alpha"), rec)
            rec_out[i] = {k: v.reshape(T, *shape) for k, v in r.items()}
            h = [torch.from_numpy(s.reshape(shape)) for s in r["spikes"]]
    return np.stack([z.reshape(z.shape[0], -1).numpy() for z in h]), rec_out


@torch.no_grad()
def _run(model, x):
    return model(x, record=True)


def single_layer(layer, n: int = 1, dtype=torch.float64):
    """A network of one spiking layer fed directly by the input: X[t] = input[t]."""
    return build_model(ModelSpec(layers=(layer,), input_shape=(n,), num_steps=1), dtype=dtype)


def run_single(layer, xs, n: int = 1):
    model = single_layer(layer, n)
    x = torch.tensor(xs, dtype=torch.float64).reshape(len(xs), 1, n)
    with torch.no_grad():
        rec = model(x, record=True).record[0]
    return {k: v[:, 0].numpy() for k, v in rec.items()}


# --------------------------------------------------------------------------- hand-computed


# Values chosen as binary fractions so every step is exact in float64.
X_LEAKY = [0.75, 0.75, 0.75, 0.0, 1.0, 1.0]


def test_leaky_subtract_by_hand():
    r = run_single(Leaky(beta=0.5, threshold=1.0, reset="subtract"), X_LEAKY)
    # U: .75; .375+.75=1.125 (spike); .5625+.75-1=.3125; .15625; .078125+1=1.078125 (spike); .5390625+1-1
    np.testing.assert_array_equal(r["mem"][:, 0], [0.75, 1.125, 0.3125, 0.15625, 1.078125, 0.5390625])
    np.testing.assert_array_equal(r["spikes"][:, 0], [0, 1, 0, 0, 1, 0])


def test_leaky_zero_by_hand():
    r = run_single(Leaky(beta=0.5, threshold=1.0, reset="zero"), X_LEAKY)
    # after a spike the old membrane is dropped but the same-step input is kept; U = 1.0 = theta does not spike
    np.testing.assert_array_equal(r["mem"][:, 0], [0.75, 1.125, 0.75, 0.375, 1.1875, 1.0])
    np.testing.assert_array_equal(r["spikes"][:, 0], [0, 1, 0, 0, 1, 0])


def test_threshold_is_strict():
    r = run_single(Leaky(beta=0.5, threshold=1.0), [0.5, 0.75, 0.0])
    np.testing.assert_array_equal(r["mem"][:, 0], [0.5, 1.0, 0.5])
    np.testing.assert_array_equal(r["spikes"][:, 0], [0, 0, 0])


X_SYN = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0]


def test_synaptic_subtract_by_hand():
    r = run_single(Synaptic(alpha=0.5, beta=0.5, threshold=1.0, reset="subtract"), X_SYN)
    np.testing.assert_array_equal(r["syn"][:, 0], [1.0, 0.5, 0.25, 1.125, 1.5625, 0.78125])
    # U: 1 (= theta, no spike); 1.0; .75; 1.5 (spike); .75+1.5625-1=1.3125 (spike); .65625+.78125-1
    np.testing.assert_array_equal(r["mem"][:, 0], [1.0, 1.0, 0.75, 1.5, 1.3125, 0.4375])
    np.testing.assert_array_equal(r["spikes"][:, 0], [0, 0, 0, 1, 1, 0])


def test_synaptic_zero_by_hand():
    r = run_single(Synaptic(alpha=0.5, beta=0.5, threshold=1.0, reset="zero"), X_SYN)
    np.testing.assert_array_equal(r["syn"][:, 0], [1.0, 0.5, 0.25, 1.125, 1.5625, 0.78125])  # I never reset
    # the step after a spike drops the whole membrane, same-step input included: U5 = 0
    np.testing.assert_array_equal(r["mem"][:, 0], [1.0, 1.0, 0.75, 1.5, 0.0, 0.78125])
    np.testing.assert_array_equal(r["spikes"][:, 0], [0, 0, 0, 1, 0, 0])


def test_rleaky_elementwise_by_hand():
    xs = [1.25, 0.0, 0.0, 0.5]
    r = run_single(RLeaky(beta=0.5, threshold=1.0, all_to_all=False, V=0.5, reset="subtract"), xs)
    # U: 1.25 (spike); .625+0+.5*1-1=.125; .0625; .03125+.5=.53125
    np.testing.assert_array_equal(r["mem"][:, 0], [1.25, 0.125, 0.0625, 0.53125])
    np.testing.assert_array_equal(r["spikes"][:, 0], [1, 0, 0, 0])
    r = run_single(RLeaky(beta=0.5, threshold=1.0, all_to_all=False, V=0.5, reset="zero"), xs)
    np.testing.assert_array_equal(r["mem"][:, 0], [1.25, 0.0, 0.0, 0.5])


def test_rleaky_all_to_all_by_hand():
    # neuron 0 excites neuron 1 with weight 0.75; the recurrent bias 0.125 reaches neuron 1 every step
    layer = RLeaky(beta=0.5, threshold=1.0, all_to_all=True)
    model = single_layer(layer, 2)
    with torch.no_grad():
        model.layers[0].recurrent.weight.copy_(torch.tensor([[0.0, 0.0], [0.75, 0.0]]))
        model.layers[0].recurrent.bias.copy_(torch.tensor([0.0, 0.125]))
    x = torch.tensor([[1.5, 0.0], [0.0, 0.25], [0.0, 0.0]], dtype=torch.float64).reshape(3, 1, 2)
    with torch.no_grad():
        rec = model(x, record=True).record[0]
    # n0: 1.5 (spike), .75-1=-.25, -.125;  n1: .125, .0625+.25+.75+.125=1.1875 (spike), .59375+.125-1
    np.testing.assert_array_equal(rec["mem"][:, 0].numpy(), [[1.5, 0.125], [-0.25, 1.1875], [-0.125, -0.28125]])
    np.testing.assert_array_equal(rec["spikes"][:, 0].numpy(), [[1, 0], [0, 1], [0, 0]])


def test_per_neuron_parameters_by_hand():
    layer = Leaky(beta=(0.5, 0.25), threshold=(1.0, 0.5))
    r = run_single(layer, [[0.75, 0.75], [0.75, 0.0]], n=2)
    # n0: .75, .375+.75=1.125 (spike); n1: .75 (spike > .5), .1875+0-.5=-.3125
    np.testing.assert_array_equal(r["mem"], [[0.75, 0.75], [1.125, -0.3125]])
    np.testing.assert_array_equal(r["spikes"], [[0, 1], [1, 0]])


# --------------------------------------------------------------------------- whole networks vs numpy


def mixed_spec(reset: str) -> ModelSpec:
    return ModelSpec(layers=(
        Linear(6, 5), Leaky(beta=(0.9, 0.5, 0.7, 0.95, 0.2), threshold=0.5, reset=reset),
        Linear(5, 4), Synaptic(alpha=0.7, beta=0.8, threshold=(0.5, 1.0, 0.7, 0.3), reset=reset, per_neuron=True),
        Linear(4, 4), RLeaky(beta=0.85, threshold=0.6, all_to_all=True, reset=reset),
        Linear(4, 3), RLeaky(beta=0.6, threshold=0.4, all_to_all=False, V=(0.5, -0.7, 1.2), reset=reset),
    ), input_shape=(6,), num_steps=40)


def _scaled_model(spec, scale, dtype, seed=0):
    torch.manual_seed(seed)
    model = build_model(spec, dtype=dtype)
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if k.endswith("weight"):
                v.mul_(scale)  # enough drive that every layer spikes
    return model


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_mixed_network_matches_reference_float64(reset):
    spec = mixed_spec(reset)
    model = _scaled_model(spec, 3.0, torch.float64)
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(40, 7, 6, generator=g) < 0.4).to(torch.float64)
    out = _run(model, x)
    ref_spk, ref_rec = ref_network(model, x)
    assert out.spikes.dtype == torch.float64 and out.mem.dtype == torch.float64
    np.testing.assert_array_equal(out.spikes.numpy(), ref_spk)
    for i, r in ref_rec.items():
        np.testing.assert_array_equal(out.record[i]["spikes"].numpy(), r["spikes"])
        np.testing.assert_allclose(out.record[i]["mem"].numpy(), r["mem"], rtol=0, atol=1e-12)
        if isinstance(spec.layers[i], Synaptic):
            np.testing.assert_allclose(out.record[i]["syn"].numpy(), r["syn"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(out.mem.numpy(), ref_rec[7]["mem"], rtol=0, atol=1e-12)
    for i in spec.spiking_layers():  # the comparison is not vacuous: every layer fires and rests
        s = out.record[i]["spikes"]
        assert 0 < s.mean().item() < 1, f"layer {i} firing rate {s.mean().item()}"


def test_float32_path_follows_float64():
    spec = mixed_spec("subtract")
    m64 = _scaled_model(spec, 3.0, torch.float64)
    m32 = build_model(spec, m64.state_dict())
    assert next(m32.parameters()).dtype == torch.float32
    x = (torch.rand(40, 7, 6, generator=torch.Generator().manual_seed(2)) < 0.4).float()
    o32, o64 = _run(m32, x), _run(m64, x.double())
    assert o32.spikes.dtype == torch.float32
    # for this seed no membrane lands within float32 rounding of a threshold, so spikes agree exactly
    torch.testing.assert_close(o32.spikes.double(), o64.spikes, rtol=0, atol=0)
    torch.testing.assert_close(o32.record[1]["mem"].double(), o64.record[1]["mem"], rtol=0, atol=1e-5)


def conv_spec() -> ModelSpec:
    return ModelSpec(layers=(
        Conv2d(2, 3, 3, padding=1), MaxPool2d(2), Leaky(beta=0.8, threshold=0.5, per_neuron=True),
        Conv2d(3, 4, 3, stride=2), AvgPool2d(kernel_size=1), Synaptic(alpha=0.5, beta=0.9, reset="zero"),
        Flatten(), Linear(4, 3), Leaky(beta=0.7, threshold=0.5),
    ), input_shape=(2, 6, 6), num_steps=12)


def test_conv_network_matches_reference_and_records_feature_shapes():
    spec = conv_spec()
    model = _scaled_model(spec, 4.0, torch.float64, seed=3)
    x = (torch.rand(12, 5, 2, 6, 6, generator=torch.Generator().manual_seed(4)) < 0.5).double()
    out = _run(model, x)
    ref_spk, ref_rec = ref_network(model, x)
    np.testing.assert_array_equal(out.spikes.numpy(), ref_spk)
    assert out.spikes.shape == (12, 5, 3) and out.mem.shape == (12, 5, 3)
    assert set(out.record) == {2, 5, 8}
    assert out.record[2]["spikes"].shape == (12, 5, 3, 3, 3)
    assert set(out.record[5]) == {"spikes", "mem", "syn"} and out.record[5]["syn"].shape == (12, 5, 4, 1, 1)
    assert set(out.record[2]) == {"spikes", "mem"}
    for i, r in ref_rec.items():
        np.testing.assert_array_equal(out.record[i]["spikes"].numpy(), r["spikes"])
        np.testing.assert_allclose(out.record[i]["mem"].numpy(), r["mem"], rtol=0, atol=1e-12)
        assert 0 < out.record[i]["spikes"].mean().item() < 1
    assert model(x).record is None


def test_output_without_record_equals_recorded_output():
    spec = conv_spec()
    model = _scaled_model(spec, 4.0, torch.float32, seed=3)
    x = (torch.rand(12, 5, 2, 6, 6, generator=torch.Generator().manual_seed(4)) < 0.5).float()
    a, b = model(x), model(x, record=True)
    assert torch.equal(a.spikes, b.spikes) and torch.equal(a.mem, b.mem)
    assert torch.equal(b.spikes, b.record[8]["spikes"].reshape(12, 5, 3))


def test_input_shape_is_checked():
    model = build_model(conv_spec())
    with pytest.raises(ValueError, match=r"input must be \[T, B, 2, 6, 6\], got \[12, 2, 6, 6\]"):
        model(torch.zeros(12, 2, 6, 6))
    with pytest.raises(ValueError, match="input must be"):
        model(torch.zeros(12, 1, 1, 6, 6))


# --------------------------------------------------------------------------- parameters and state dict


def test_state_dict_keys_follow_spec_indices():
    spec = mixed_spec("subtract")
    keys = set(build_model(spec).state_dict())
    for i in (0, 2, 4, 6):
        assert {f"layers.{i}.weight", f"layers.{i}.bias"} <= keys
    assert {"layers.1.beta", "layers.1.threshold", "layers.3.alpha", "layers.5.recurrent.weight",
            "layers.5.recurrent.bias"} <= keys


def test_per_neuron_expansion_and_learnable_flags():
    spec = ModelSpec(layers=(Conv2d(1, 2, 3), Leaky(beta=0.75, threshold=0.5, per_neuron=True, learn_beta=True),
                             Flatten(), Linear(8, 3), Synaptic(alpha=0.5, beta=(0.1, 0.2, 0.3), learn_alpha=True,
                                                               learn_threshold=True)),
                     input_shape=(1, 4, 4))
    model = build_model(spec)
    params = dict(model.named_parameters())
    assert params["layers.1.beta"].shape == (2, 2, 2)  # one value per neuron, shaped like the features
    assert "layers.1.threshold" not in params  # not learnable: a buffer
    assert {"layers.4.alpha", "layers.4.threshold"} <= set(params) and "layers.4.beta" not in params
    p = model.neuron_parameters()
    np.testing.assert_array_equal(p[1]["beta"].numpy(), np.full(8, 0.75))
    np.testing.assert_array_equal(p[1]["threshold"].numpy(), np.full(8, 0.5))
    np.testing.assert_allclose(p[4]["beta"].numpy(), [0.1, 0.2, 0.3], rtol=1e-7)
    np.testing.assert_array_equal(p[4]["alpha"].numpy(), [0.5, 0.5, 0.5])
    assert all(v.dtype == torch.float64 for layer in p.values() for v in layer.values())


def test_learned_beta_is_clamped_when_applied():
    layer = Leaky(beta=0.5, threshold=10.0, learn_beta=True)
    model = single_layer(layer)
    with torch.no_grad():
        model.layers[0].beta.fill_(1.5)
    assert model.neuron_parameters()[0]["beta"].item() == 1.0
    out = _run(model, torch.full((3, 1, 1), 1.0, dtype=torch.float64))
    np.testing.assert_array_equal(out.record[0]["mem"][:, 0, 0].numpy(), [1.0, 2.0, 3.0])  # beta = 1, not 1.5


def test_load_weights_names_the_mismatch():
    spec = mixed_spec("subtract")
    model = build_model(spec)
    sd = model.state_dict()
    bad = dict(sd)
    bad["layers.0.weight"] = torch.zeros(5, 7)
    with pytest.raises(ValueError, match=r"layers.0.weight: spec \(5, 6\) vs weights \(5, 7\)"):
        load_weights(model, bad)
    missing = {k: v for k, v in sd.items() if k != "layers.2.bias"}
    with pytest.raises(ValueError, match=r"missing \['layers.2.bias'\]"):
        build_model(spec, missing)
    with pytest.raises(ValueError, match=r"unexpected \['layers.9.weight'\]"):
        build_model(spec, sd | {"layers.9.weight": torch.zeros(1)})


# --------------------------------------------------------------------------- surrogate gradients


@pytest.mark.parametrize("surrogate, expected", [
    (Surrogate("atan", 2.0), lambda d: 2.0 / 2 / (1 + (math.pi / 2 * 2.0 * d) ** 2)),
    (Surrogate("fast_sigmoid", 25.0), lambda d: 1 / (25.0 * abs(d) + 1) ** 2),
    (Surrogate("sigmoid", 5.0), lambda d: 5.0 * math.exp(-5.0 * d) / (math.exp(-5.0 * d) + 1) ** 2),
    (Surrogate("straight_through", 1.0), lambda d: 1.0),
    (Surrogate("triangular", 0.5), lambda d: 0.5 if d < 0 else -0.5),
])
def test_surrogate_gradient_of_one_step(surrogate, expected):
    # one neuron, one step: S = H(X - theta); dS/dX is the surrogate derivative at X - theta
    model = single_layer(Leaky(beta=0.5, threshold=1.0, surrogate=surrogate))
    for x0 in (0.7, 1.3):
        x = torch.tensor([[[x0]]], dtype=torch.float64, requires_grad=True)
        model(x).spikes.sum().backward()
        assert x.grad.item() == pytest.approx(expected(x0 - 1.0), rel=1e-6)


def test_gradients_reach_every_weight_through_time():
    spec = mixed_spec("subtract")
    model = _scaled_model(spec, 3.0, torch.float32)
    x = (torch.rand(40, 7, 6, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    model(x).spikes.sum().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


# --------------------------------------------------------------------------- fast Leaky path


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_leaky_step_equals_snntorch_forward(monkeypatch, reset, dtype):
    """snn.model steps Leaky layers with its own copy of Leaky.forward's arithmetic; values and
    gradients (inputs, weights, learnable beta/threshold) must be those of snnTorch's forward."""
    import snn.model as model_mod

    spec = ModelSpec(layers=(
        Linear(6, 5), Leaky(beta=(0.9, 0.5, 0.7, 0.95, 0.2), threshold=0.5, reset=reset, learn_beta=True,
                            learn_threshold=True, surrogate=Surrogate("fast_sigmoid", 10.0)),
        Linear(5, 3), Leaky(beta=0.8, threshold=0.7, reset=reset, per_neuron=True, learn_beta=True),
    ), input_shape=(6,), num_steps=30)
    x = (torch.rand(30, 4, 6, generator=torch.Generator().manual_seed(5)) < 0.5).to(dtype).requires_grad_()

    def run(fused=False):
        model = _scaled_model(spec, 3.0, dtype, seed=7)
        model.fused_lif = fused  # the fused multi-step Leaky is tests/test_fused_lif.py's
        out = model(x, record=True)
        (out.spikes.sum() + out.record[1]["mem"].sum() + out.mem.sum()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()} | {"input": x.grad.clone()}
        x.grad = None
        return out, grads

    fast_out, fast_grads = run()
    fused_out, fused_grads = run(fused=True)
    monkeypatch.setattr(model_mod, "_leaky_step_fn", lambda layer: None)  # step the snnTorch modules
    slow_out, slow_grads = run()
    assert torch.equal(fast_out.spikes, slow_out.spikes) and torch.equal(fast_out.mem, slow_out.mem)
    for i in (1, 3):
        for k in ("spikes", "mem"):
            assert torch.equal(fast_out.record[i][k], slow_out.record[i][k]), (i, k)
    assert 0 < fast_out.record[1]["spikes"].mean() < 1 and 0 < fast_out.spikes.mean() < 1
    assert set(fast_grads) == set(slow_grads)
    # shared parameters (a scalar threshold, beta behind one clamp per forward) sum the same
    # per-step terms in another order: equal up to rounding relative to the gradient's scale.
    # snnTorch's surrogates return float32 spikes, so even float64 gradients pass through float32.
    tol = 1e-5 if dtype == torch.float32 else 1e-7
    for k in fast_grads:
        scale = slow_grads[k].abs().max().item()
        assert (fast_grads[k] - slow_grads[k]).abs().max().item() <= tol * scale, k
        assert (fused_grads[k] - slow_grads[k]).abs().max().item() <= tol * scale, k
    assert torch.equal(fused_out.spikes, slow_out.spikes) and torch.equal(fused_out.mem, slow_out.mem)
    assert torch.equal(fused_out.record[1]["mem"], slow_out.record[1]["mem"])
