"""Translate a model spec + weights into a simulator-neutral plan: populations, synapse lists, parameters.

This module holds the math of the mapping and no Brian2 code: every spiking layer of the spec
becomes one population (`LayerPlan`), and the stateless layers in front of it (linear, conv2d,
avgpool2d, flatten) are unrolled into one sparse synapse list from the previous population (or
the input) with a composed bias. Conv2d and AvgPool2d are unrolled by explicit index arithmetic
(not by calling torch), so a padding/stride/flatten-order mistake in the model would show up as
a disagreement. MaxPool2d is nonlinear and has no synapse equivalent: it is rejected with
`UnsupportedLayerError` naming the layer. See `docs/brian2_mapping.md`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from ..model import build_model
from ..spec import AvgPool2d, Conv2d, Flatten, Leaky, Linear, MaxPool2d, ModelSpec, RLeaky, Synaptic

NEURON_KINDS = ("leaky", "synaptic", "rleaky")


class UnsupportedLayerError(ValueError):
    """A spec layer the Brian2 reference cannot reproduce exactly (the message names the layer)."""


@dataclass(frozen=True)
class Connection:
    """Synapses from a population of `n_pre` neurons to one of `n_post`: `w[k]` from `pre[k]` to `post[k]`.

    pre, post: int64 [S]; weight: float64 [S]. The target's input of a step is
    `X[post] = sum_k weight[k] * S_pre[pre[k]]` over the synapses whose source spiked."""

    pre: np.ndarray
    post: np.ndarray
    weight: np.ndarray
    n_pre: int
    n_post: int

    def __post_init__(self):
        for name in ("pre", "post", "weight"):
            a = getattr(self, name)
            if not isinstance(a, np.ndarray) or a.ndim != 1:
                raise ValueError(f"Connection.{name} must be a 1-D numpy array")
        if not (len(self.pre) == len(self.post) == len(self.weight)):
            raise ValueError(f"Connection: pre/post/weight lengths differ "
                             f"({len(self.pre)}, {len(self.post)}, {len(self.weight)})")
        if self.n_pre < 1 or self.n_post < 1:
            raise ValueError(f"Connection: n_pre and n_post must be >= 1, got {self.n_pre}, {self.n_post}")
        if len(self.pre) and (self.pre.min() < 0 or self.pre.max() >= self.n_pre):
            raise ValueError(f"Connection.pre indices outside [0, {self.n_pre})")
        if len(self.post) and (self.post.min() < 0 or self.post.max() >= self.n_post):
            raise ValueError(f"Connection.post indices outside [0, {self.n_post})")
        if not np.all(np.isfinite(self.weight)):
            raise ValueError("Connection.weight must be finite")

    @classmethod
    def from_matrix(cls, m: sp.spmatrix | np.ndarray) -> "Connection":
        """From a matrix [n_post, n_pre] (torch's weight layout: out x in); exact zeros are dropped."""
        coo = sp.coo_matrix(m)
        keep = coo.data != 0
        return cls(coo.col[keep].astype(np.int64), coo.row[keep].astype(np.int64),
                   coo.data[keep].astype(np.float64), coo.shape[1], coo.shape[0])

    def to_dense(self) -> np.ndarray:
        """Dense [n_post, n_pre] float64 matrix (for tests and small networks)."""
        m = np.zeros((self.n_post, self.n_pre))
        np.add.at(m, (self.post, self.pre), self.weight)
        return m


@dataclass(frozen=True)
class LayerPlan:
    """One spiking layer as one population of `n` neurons.

    kind: "leaky" | "synaptic" | "rleaky"; reset: "subtract" | "zero".
    params: float64 [n] arrays "beta", "threshold", "bias" (composed bias of the feed-forward
    chain) and, by kind, "alpha" (synaptic) and "rec_bias" (rleaky; zeros when elementwise).
    feedforward: synapses from the previous population (or the input) after unrolling the
    stateless layers `chain` (spec indices). recurrent: rleaky only, from the population to
    itself (all-to-all weights, or one-to-one with weight V for elementwise)."""

    spec_index: int
    kind: str
    reset: str
    shape: tuple[int, ...]
    params: dict[str, np.ndarray]
    feedforward: Connection
    recurrent: Connection | None = None
    chain: tuple[int, ...] = ()

    def __post_init__(self):
        if self.kind not in NEURON_KINDS:
            raise ValueError(f"LayerPlan.kind must be one of {NEURON_KINDS}, got {self.kind!r}")
        if self.reset not in ("subtract", "zero"):
            raise ValueError(f"LayerPlan.reset must be 'subtract' or 'zero', got {self.reset!r}")
        needed = {"beta", "threshold", "bias"} | ({"alpha"} if self.kind == "synaptic" else set()) \
            | ({"rec_bias"} if self.kind == "rleaky" else set())
        missing = needed - set(self.params)
        if missing:
            raise ValueError(f"LayerPlan.params (layer {self.spec_index}) misses {sorted(missing)}")
        for k, v in self.params.items():
            if v.shape != (self.n,):
                raise ValueError(f"LayerPlan.params[{k!r}] (layer {self.spec_index}) must have shape "
                                 f"({self.n},), got {v.shape}")
        if self.feedforward.n_post != self.n:
            raise ValueError(f"LayerPlan.feedforward (layer {self.spec_index}) targets "
                             f"{self.feedforward.n_post} neurons, the layer has {self.n}")
        if (self.recurrent is None) != (self.kind != "rleaky"):
            raise ValueError(f"LayerPlan.recurrent (layer {self.spec_index}) must be set exactly for rleaky")

    @property
    def n(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class NetworkPlan:
    """The whole network: `n_input` input channels (flattened `input_shape`) feeding `layers` in order."""

    layers: tuple[LayerPlan, ...]
    input_shape: tuple[int, ...]
    num_steps: int
    dt_s: float

    def __post_init__(self):
        if not self.layers:
            raise ValueError("NetworkPlan.layers must not be empty")
        n_src = self.n_input
        for layer in self.layers:
            if layer.feedforward.n_pre != n_src:
                raise ValueError(f"NetworkPlan: layer {layer.spec_index} expects {layer.feedforward.n_pre} "
                                 f"inputs but its source has {n_src}")
            n_src = layer.n
        if not (self.dt_s > 0 and math.isfinite(self.dt_s)):
            raise ValueError(f"NetworkPlan.dt_s must be a positive number of seconds, got {self.dt_s}")

    @property
    def n_input(self) -> int:
        return math.prod(self.input_shape)


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
    if isinstance(layer, MaxPool2d):
        raise UnsupportedLayerError(
            f"layer {i} (maxpool2d) is not supported by the Brian2 reference: max pooling of real-valued "
            "synaptic input has no synapse equivalent (use avgpool2d, or a stride in conv2d)")
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
    alpha clamped to [0, 1]). Raises `UnsupportedLayerError` naming the first layer that cannot be
    reproduced, and ValueError if the weights do not fit the spec."""
    params = build_model(spec, state_dict, dtype=torch.float64).neuron_parameters()
    shapes = spec.shapes()
    in_shapes = [spec.input_shape] + shapes[:-1]
    state = dict(state_dict)
    plans = []
    chain: list[int] = []
    matrix, bias = None, None  # the composed chain since the last population
    n_src = math.prod(spec.input_shape)
    for i, layer in enumerate(spec.layers):
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
        if matrix is None:  # spiking layer right after another: identity synapses
            matrix = sp.identity(n_src, format="csr")
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
                               chain=tuple(chain)))
        matrix, bias, chain, n_src = None, None, [], n
    return NetworkPlan(layers=tuple(plans), input_shape=tuple(spec.input_shape), num_steps=spec.num_steps,
                       dt_s=float(spec.dt_s))
