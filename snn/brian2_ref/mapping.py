"""Translate a model spec + weights into a simulator-neutral plan: populations, synapse lists, parameters.

This module holds the math of the mapping and no Brian2 code: every spiking layer of the spec
becomes one population (`LayerPlan`), and the stateless layers in front of it (linear, conv2d,
avgpool2d, flatten) are unrolled into one sparse synapse list from the previous population (or
the input) with a composed bias. Conv2d and AvgPool2d are unrolled by explicit index arithmetic
(not by calling torch), so a padding/stride/flatten-order mistake in the model would show up as
a disagreement. MaxPool2d is nonlinear, so it splits the chain into `Stage`s: the linear layers
before it become a "linear" stage (real values), the pooling a "max" stage over explicit window
tables, or an "or" stage when its input is spikes (the max of {0, 1} values is a logical OR).
Analog input (the `direct` encoder) makes the plan's `input_kind` "analog". See
`docs/brian2_mapping.md`.
"""

from __future__ import annotations

import math
import numpy as np
import scipy.sparse as sp
import torch

import encoders

from ..model import build_model, without_spec_buffers
from ..spec import AvgPool2d, Conv2d, Flatten, Leaky, Linear, MaxPool2d, ModelSpec, RLeaky, Synaptic
from .plan import Connection, LayerPlan, NetworkPlan, Stage


class UnsupportedLayerError(ValueError):
    """A spec layer the Brian2 reference cannot reproduce exactly (the message names the layer)."""


# ---------------------------------------------------------------------------------------------
# Unrolling of stateless layers into sparse matrices [n_out, n_in] (row-major / C-major feature
# order, the order torch's flatten uses).

def unroll_conv2d(weight: np.ndarray, in_shape: tuple[int, int, int], stride: int, padding: int):
    """Conv2d weight [C_out, C_in, k, k] on input [C_in, H, W] -> sparse [C_out*Ho*Wo, C_in*H*W]."""
    c_out, c_in, k, k2 = weight.shape
    ci_, h, w = in_shape
    if k != k2 or ci_ != c_in:
        raise ValueError(f"conv2d weight {weight.shape} does not fit input {in_shape}")
    ho = (h + 2 * padding - k) // stride + 1
    wo = (w + 2 * padding - k) // stride + 1
    co, oy, ox, ci, ky, kx = np.meshgrid(np.arange(c_out), np.arange(ho), np.arange(wo), np.arange(c_in),
                                         np.arange(k), np.arange(k), indexing="ij")
    iy = oy * stride - padding + ky
    ix = ox * stride - padding + kx
    ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    rows = ((co * ho + oy) * wo + ox)[ok]
    cols = ((ci * h + iy) * w + ix)[ok]
    vals = weight[co[ok], ci[ok], ky[ok], kx[ok]]
    return sp.csr_matrix((vals, (rows, cols)), shape=(c_out * ho * wo, c_in * h * w)), (c_out, ho, wo)


def unroll_avgpool2d(in_shape: tuple[int, int, int], kernel: int, stride: int):
    """AvgPool2d (no padding) on [C, H, W] -> sparse [C*Ho*Wo, C*H*W] with entries 1/kernel^2."""
    c, h, w = in_shape
    ho, wo = (h - kernel) // stride + 1, (w - kernel) // stride + 1
    ch, oy, ox, ky, kx = np.meshgrid(np.arange(c), np.arange(ho), np.arange(wo), np.arange(kernel),
                                     np.arange(kernel), indexing="ij")
    rows = ((ch * ho + oy) * wo + ox).ravel()
    cols = ((ch * h + oy * stride + ky) * w + ox * stride + kx).ravel()
    vals = np.full(rows.shape, 1.0 / (kernel * kernel))
    return sp.csr_matrix((vals, (rows, cols)), shape=(c * ho * wo, c * h * w)), (c, ho, wo)


def pool_windows(in_shape: tuple[int, int, int], kernel: int, stride: int):
    """Windows of a 2-D pooling (no padding, floor mode, torch's MaxPool2d) on [C, H, W]:
    int64 [C*Ho*Wo, kernel^2] flat input indices, row-major over (ky, kx); and (C, Ho, Wo)."""
    c, h, w = in_shape
    ho, wo = (h - kernel) // stride + 1, (w - kernel) // stride + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"pooling kernel {kernel} does not fit input {in_shape}")
    ch, oy, ox, ky, kx = np.meshgrid(np.arange(c), np.arange(ho), np.arange(wo), np.arange(kernel),
                                     np.arange(kernel), indexing="ij")
    idx = (ch * h + oy * stride + ky) * w + ox * stride + kx
    return idx.reshape(c * ho * wo, kernel * kernel).astype(np.int64), (c, ho, wo)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float64).numpy()


def _stateless_matrix(spec: ModelSpec, i: int, in_shape, state: dict):
    """(matrix [n_out, n_in], bias [n_out] or None, out_shape) of stateless spec layer i."""
    layer = spec.layers[i]
    n_in = math.prod(in_shape)
    if isinstance(layer, Flatten):
        return sp.identity(n_in, format="csr"), None, (n_in,)
    if isinstance(layer, Linear):
        w = _np(state[f"layers.{i}.weight"])
        b = _np(state[f"layers.{i}.bias"]) if layer.bias else None
        return sp.csr_matrix(w), b, (layer.out_features,)
    if isinstance(layer, Conv2d):
        m, out_shape = unroll_conv2d(_np(state[f"layers.{i}.weight"]), tuple(in_shape), layer.stride,
                                     layer.padding)
        b = np.repeat(_np(state[f"layers.{i}.bias"]), out_shape[1] * out_shape[2]) if layer.bias else None
        return m, b, out_shape
    if isinstance(layer, AvgPool2d):
        m, out_shape = unroll_avgpool2d(tuple(in_shape), layer.kernel_size, layer.effective_stride)
        return m, None, out_shape
    raise UnsupportedLayerError(f"layer {i} ({layer.type_name}) is not supported by the Brian2 reference")


def _check_spiking(spec: ModelSpec, i: int, state: dict) -> None:
    layer = spec.layers[i]
    gsf = state.get(f"layers.{i}.graded_spikes_factor")
    if gsf is not None and float(gsf) != 1.0:
        raise UnsupportedLayerError(f"layer {i} ({layer.type_name}): graded spikes (graded_spikes_factor="
                                    f"{float(gsf)}) are not supported by the Brian2 reference")


def translate(spec: ModelSpec, state_dict: dict[str, torch.Tensor]) -> NetworkPlan:
    """The `NetworkPlan` of a spec with trained weights (all values as float64).

    Neuron parameters are the effective values snnTorch applies (`neuron_parameters()`: beta and
    alpha clamped to [0, 1]). The plan's input is "analog" for an analog encoder (`direct`),
    "spikes" otherwise. Raises `UnsupportedLayerError` naming the first layer that cannot be
    reproduced, and ValueError if the weights do not fit the spec."""
    # the spec decides the reset mode (spec-derived buffers dropped: a deliberately different spec
    # may be simulated with these weights, see crosscheck(brian2_spec=...))
    params = build_model(spec, without_spec_buffers(state_dict), dtype=torch.float64).neuron_parameters()
    shapes = spec.shapes()
    in_shapes = [spec.input_shape] + shapes[:-1]
    state = dict(state_dict)
    input_kind = "spikes" if encoders.is_spike_encoder(spec.encoder["type"]) else "analog"
    plans = []
    chain: list[int] = []
    stages: list[Stage] = []
    matrix, bias = None, None  # the composed linear chain since the last population or stage
    n_src = math.prod(spec.input_shape)
    src_spikes = input_kind == "spikes"  # whether what `matrix` (or the next stage) reads is spikes
    for i, layer in enumerate(spec.layers):
        if isinstance(layer, MaxPool2d):
            n_in = math.prod(in_shapes[i])
            if matrix is not None:  # the linear layers in front become a stage of real values
                b = np.zeros(matrix.shape[0]) if bias is None else np.asarray(bias, dtype=np.float64)
                stages.append(Stage("linear", matrix.shape[1], matrix.shape[0],
                                    conn=Connection.from_matrix(matrix), bias=b))
                matrix, bias, src_spikes = None, None, False
            windows, _ = pool_windows(tuple(in_shapes[i]), layer.kernel_size, layer.effective_stride)
            stages.append(Stage("or" if src_spikes else "max", n_in, windows.shape[0], windows=windows))
            chain.append(i)
            continue
        if not layer.spiking:
            m, b, _ = _stateless_matrix(spec, i, in_shapes[i], state)
            if matrix is None:
                matrix, bias = m, b
            else:
                matrix = m @ matrix
                carried = m @ bias if bias is not None else None
                bias = carried if b is None else (b if carried is None else carried + b)
            chain.append(i)
            continue
        _check_spiking(spec, i, state)
        n = math.prod(shapes[i])
        if matrix is None:  # spiking layer right after another or after a pooling: identity synapses
            matrix = sp.identity(stages[-1].n_out if stages else n_src, format="csr")
        p = {k: v.numpy().astype(np.float64) for k, v in params[i].items()}
        p["bias"] = np.zeros(n) if bias is None else np.asarray(bias, dtype=np.float64).reshape(n)
        recurrent = None
        if isinstance(layer, RLeaky):
            if layer.all_to_all:
                recurrent = Connection.from_matrix(_np(state[f"layers.{i}.recurrent.weight"]))
                p["rec_bias"] = _np(state[f"layers.{i}.recurrent.bias"])
            else:
                idx = np.arange(n, dtype=np.int64)
                v = p.pop("V")
                keep = v != 0
                recurrent = Connection(idx[keep], idx[keep], v[keep], n, n)
                p["rec_bias"] = np.zeros(n)
        kind = "leaky" if isinstance(layer, Leaky) else "synaptic" if isinstance(layer, Synaptic) else "rleaky"
        plans.append(LayerPlan(spec_index=i, kind=kind, reset=layer.reset, shape=tuple(shapes[i]), params=p,
                               feedforward=Connection.from_matrix(matrix), recurrent=recurrent,
                               chain=tuple(chain), stages=tuple(stages)))
        matrix, bias, chain, stages, n_src, src_spikes = None, None, [], [], n, True
    return NetworkPlan(layers=tuple(plans), input_shape=tuple(spec.input_shape), num_steps=spec.num_steps,
                       dt_s=float(spec.dt_s), input_kind=input_kind)
