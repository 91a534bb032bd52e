"""Translator from model spec + weights to the simulator-neutral plan (no Brian2 run here)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from snn.brian2_ref import Connection, UnsupportedLayerError, translate
from snn.brian2_ref.equations import THRESHOLD, update_code
from snn.brian2_ref.mapping import unroll_avgpool2d, unroll_conv2d
from snn.brian2_ref.plan import plan_from_arrays, plan_to_arrays
from snn.model import build_model
from snn.spec import AvgPool2d, Conv2d, Flatten, Leaky, Linear, MaxPool2d, ModelSpec, RLeaky, Synaptic


@pytest.mark.parametrize("stride,padding,k", [(1, 0, 3), (1, 1, 3), (2, 1, 3), (2, 0, 2), (1, 2, 5)])
def test_unroll_conv2d_matches_torch_conv(stride, padding, k):
    g = torch.Generator().manual_seed(stride * 10 + padding + k)
    w = torch.randn(3, 2, k, k, generator=g, dtype=torch.float64)
    x = torch.randn(2, 7, 6, generator=g, dtype=torch.float64)
    m, out_shape = unroll_conv2d(w.numpy(), (2, 7, 6), stride, padding)
    ref = F.conv2d(x[None], w, stride=stride, padding=padding)[0]
    assert out_shape == tuple(ref.shape)
    np.testing.assert_allclose(m @ x.numpy().ravel(), ref.numpy().ravel(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kernel,stride", [(2, 2), (3, 1), (2, 1), (3, 3)])
def test_unroll_avgpool2d_matches_torch(kernel, stride):
    x = torch.randn(3, 8, 7, generator=torch.Generator().manual_seed(kernel), dtype=torch.float64)
    m, out_shape = unroll_avgpool2d((3, 8, 7), kernel, stride)
    ref = F.avg_pool2d(x[None], kernel, stride)[0]
    assert out_shape == tuple(ref.shape)
    np.testing.assert_allclose(m @ x.numpy().ravel(), ref.numpy().ravel(), rtol=0, atol=1e-12)


def _spec_all_kinds():
    return ModelSpec(layers=(Linear(6, 5), Leaky(beta=0.5, threshold=0.75), Linear(5, 4, bias=False),
                             Synaptic(alpha=0.25, beta=0.5, reset="zero"), Linear(4, 3), RLeaky(beta=0.875),
                             RLeaky(all_to_all=False, V=[0.5, -0.25, 0.0], beta=0.75)),
                     input_shape=(6,), num_steps=4)


def test_translate_carries_weights_params_and_recurrence():
    spec = _spec_all_kinds()
    sd = build_model(spec).state_dict()
    plan = translate(spec, sd)
    assert [l.spec_index for l in plan.layers] == [1, 3, 5, 6]
    assert [l.kind for l in plan.layers] == ["leaky", "synaptic", "rleaky", "rleaky"]
    assert [l.reset for l in plan.layers] == ["subtract", "zero", "subtract", "subtract"]
    l1, l3, l5, l6 = plan.layers
    np.testing.assert_array_equal(l1.feedforward.to_dense(), sd["layers.0.weight"].double().numpy())
    np.testing.assert_array_equal(l1.params["bias"], sd["layers.0.bias"].double().numpy())
    np.testing.assert_array_equal(l3.params["bias"], np.zeros(4))  # bias=False
    np.testing.assert_array_equal(l1.params["threshold"], np.full(5, 0.75))
    np.testing.assert_array_equal(l3.params["alpha"], np.full(4, 0.25))
    np.testing.assert_array_equal(l5.recurrent.to_dense(), sd["layers.5.recurrent.weight"].double().numpy())
    np.testing.assert_array_equal(l5.params["rec_bias"], sd["layers.5.recurrent.bias"].double().numpy())
    # spiking layer right after another: identity synapses; elementwise V as one-to-one synapses (0 dropped)
    np.testing.assert_array_equal(l6.feedforward.to_dense(), np.eye(3))
    np.testing.assert_array_equal(l6.recurrent.to_dense(), np.diag([0.5, -0.25, 0.0]))
    assert len(l6.recurrent.pre) == 2
    # beta stored as float32 by snnTorch: the plan carries that exact value
    assert l1.params["beta"][0] == float(np.float32(0.5))


def test_translate_unrolls_conv_avgpool_flatten_chain_exactly():
    spec = ModelSpec(layers=(Conv2d(1, 2, 3, padding=1), AvgPool2d(2), Leaky(), Flatten(), Linear(8, 3), Leaky()),
                     input_shape=(1, 4, 4), num_steps=3)
    model = build_model(spec, dtype=torch.float64)
    plan = translate(spec, model.state_dict())
    assert plan.layers[0].chain == (0, 1) and plan.layers[1].chain == (3, 4)
    x = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = model.layers[1](model.layers[0](x)).reshape(5, -1)
    ff = plan.layers[0].feedforward.to_dense()
    got = x.reshape(5, -1).numpy() @ ff.T + plan.layers[0].params["bias"]
    np.testing.assert_allclose(got, ref.detach().numpy(), rtol=0, atol=1e-12)


def test_maxpool_becomes_linear_and_max_stages_matching_torch():
    """Conv2d -> MaxPool2d -> Leaky: the conv (with its bias) is a linear stage, the pooling a max over
    window tables; applied in numpy they give torch's conv + max_pool2d."""
    spec = ModelSpec(layers=(Conv2d(1, 2, 3, padding=1), MaxPool2d(2), Leaky(), Flatten(), Linear(8, 2), Leaky()),
                     input_shape=(1, 4, 4))
    model = build_model(spec, dtype=torch.float64)
    plan = translate(spec, model.state_dict())
    lin, mx = plan.layers[0].stages
    assert (lin.kind, mx.kind) == ("linear", "max") and plan.layers[1].stages == ()
    x = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = model.layers[1](model.layers[0](x)).reshape(5, -1).detach().numpy()
    y = x.reshape(5, -1).numpy() @ lin.conn.to_dense().T + lin.bias
    got = y[:, mx.windows].max(axis=2) @ plan.layers[0].feedforward.to_dense().T
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_graded_spikes_rejected():
    spec = ModelSpec(layers=(Linear(3, 2), Leaky()), input_shape=(3,))
    sd = build_model(spec).state_dict()
    sd["layers.1.graded_spikes_factor"] = torch.tensor(2.0)
    with pytest.raises(UnsupportedLayerError, match="layer 1 .*graded"):
        translate(spec, sd)


def test_weights_not_fitting_spec_rejected():
    spec = ModelSpec(layers=(Linear(3, 2), Leaky()), input_shape=(3,))
    sd = build_model(spec).state_dict()
    sd["layers.0.weight"] = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="layers.0.weight"):
        translate(spec, sd)


def test_connection_validation_names_field():
    with pytest.raises(ValueError, match="pre indices"):
        Connection(np.array([3]), np.array([0]), np.array([1.0]), 3, 1)
    with pytest.raises(ValueError, match="weight must be finite"):
        Connection(np.array([0]), np.array([0]), np.array([math.nan]), 1, 1)
    with pytest.raises(ValueError, match="lengths differ"):
        Connection(np.array([0, 1]), np.array([0]), np.array([1.0]), 2, 1)


def test_plan_round_trips_through_arrays():
    spec = _spec_all_kinds()
    plan = translate(spec, build_model(spec).state_dict())
    back = plan_from_arrays(plan_to_arrays(plan))
    assert back.input_shape == plan.input_shape and back.num_steps == plan.num_steps and back.dt_s == plan.dt_s
    for a, b in zip(plan.layers, back.layers):
        assert (a.spec_index, a.kind, a.reset, a.shape, a.chain) == (b.spec_index, b.kind, b.reset, b.shape, b.chain)
        for k in a.params:
            np.testing.assert_array_equal(a.params[k], b.params[k])
        np.testing.assert_array_equal(a.feedforward.to_dense(), b.feedforward.to_dense())
        if a.recurrent is not None:
            np.testing.assert_array_equal(a.recurrent.to_dense(), b.recurrent.to_dense())


def test_update_code_is_two_operand_statements():
    """Every statement has at most one binary operator, so Brian2 cannot re-associate a sum."""
    assert THRESHOLD == "v > threshold"
    for kind in ("leaky", "synaptic", "rleaky"):
        for reset in ("subtract", "zero"):
            for line in update_code(kind, reset).splitlines():
                rhs = line.split("=", 1)[1]
                if "int(" in rhs:
                    continue
                assert sum(rhs.count(op) for op in " + - * ".split()) <= 1, line
    with pytest.raises(ValueError, match="reset"):
        update_code("leaky", "none")
