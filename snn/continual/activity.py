"""Presynaptic activity of a network's weight layers, recorded with forward hooks during a pass.

A *weight layer* is every `Linear` or `Conv2d` of the spec (module `layers.<i>`) and the dense
recurrent map of an all-to-all `RLeaky` (module `layers.<i>.recurrent`). Its presynaptic activity
is what the module receives: the encoded input spikes or the spikes of the spiking layer before it
(after pooling/flatten), and for a conv2d the unfolded input patches (one row per output position).

`representation(steps, mode)` turns the recorded `[T, R, n]` (R = batch rows, or batch x positions
for conv) into the vectors the subspace methods learn from:
  "rate":  mean over the T steps          -> [R, n]
  "trace": weighted rate with weights beta^(T-1-t) / sum (the paper's weighted firing rate) -> [R, n]
  "steps": every step separately          -> [T*R, n]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..model import SpikingNetwork
from ..spec import Conv2d, Linear, RLeaky

ACTIVITY_MODES = ("rate", "trace", "steps")


@dataclass(frozen=True)
class WeightLayer:
    """One trainable weight matrix that projection methods protect.

    name: module path in the network ("layers.0", "layers.3.recurrent"); index: spec layer index;
    kind: "linear" or "conv2d"; in_dim: n, the length of one presynaptic vector (C_in*k*k for conv);
    """

    name: str
    index: int
    kind: str
    in_dim: int
    out_dim: int
    kernel_size: int = 1
    stride: int = 1
    padding: int = 0

    def __post_init__(self):
        if self.kind not in ("linear", "conv2d"):
            raise ValueError(f"WeightLayer.kind must be 'linear' or 'conv2d', got {self.kind!r}")

    def module(self, model: nn.Module) -> nn.Module:
        return model.get_submodule(self.name)

    def weight(self, model: nn.Module) -> torch.Tensor:
        return self.module(model).weight


def weight_layers(model: SpikingNetwork) -> list[WeightLayer]:
    """The weight layers of `model` in forward order."""
    spec = model.spec
    out = []
    for i, layer in enumerate(spec.layers):
        if isinstance(layer, Linear):
            out.append(WeightLayer(f"layers.{i}", i, "linear", layer.in_features, layer.out_features))
        elif isinstance(layer, Conv2d):
            out.append(WeightLayer(f"layers.{i}", i, "conv2d", layer.in_channels * layer.kernel_size ** 2,
                                   layer.out_channels, kernel_size=layer.kernel_size, stride=layer.stride,
                                   padding=layer.padding))
        elif isinstance(layer, RLeaky) and layer.all_to_all and layer.learn_recurrent:
            n = math.prod(model.feature_shapes[i])
            out.append(WeightLayer(f"layers.{i}.recurrent", i, "linear", n, n))
    return out


def flat_grad(layer: WeightLayer, weight: torch.Tensor) -> torch.Tensor:
    """A weight (or its gradient) as the [out, n] matrix that acts on presynaptic vectors."""
    return weight.reshape(weight.shape[0], -1)


class ActivityRecorder:
    """Context manager: while active, keeps the input of every listed weight layer on each call.

    After a forward pass, `steps()` returns {layer name: [T, R, n]} (detached) and `clear()` drops
    them. Used as `with ActivityRecorder(model, layers) as rec: out = model(x)`.
    """

    def __init__(self, model: SpikingNetwork, layers: list[WeightLayer], num_steps: int):
        self.model, self.layers, self.num_steps = model, list(layers), num_steps
        self._calls: dict[str, list[torch.Tensor]] = {l.name: [] for l in self.layers}
        self._handles = []
        self.enabled = True

    def __enter__(self):
        for layer in self.layers:
            self._handles.append(layer.module(self.model).register_forward_hook(self._hook(layer.name)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()
        return False

    def _hook(self, name):
        def hook(module, inputs, output):
            if self.enabled:
                self._calls[name].append(inputs[0].detach())
        return hook

    def clear(self) -> None:
        for v in self._calls.values():
            v.clear()

    def steps(self) -> dict[str, torch.Tensor]:
        """{name: [T, R, n]}: per-step presynaptic vectors of the last forward pass."""
        T = self.num_steps
        out = {}
        for layer in self.layers:
            calls = self._calls[layer.name]
            if not calls:
                raise RuntimeError(f"no activity recorded for {layer.name}: was the model called "
                                   "inside the recorder?")
            # A stateless layer runs once over all T*B samples; a recurrent map runs once per step.
            if len(calls) == 1:
                x = calls[0]
                if x.shape[0] % T:
                    raise RuntimeError(f"{layer.name}: {x.shape[0]} input rows is not a multiple of T={T}")
                x = x.reshape(T, x.shape[0] // T, *x.shape[1:])
            elif len(calls) == T:
                x = torch.stack(calls)
            else:
                raise RuntimeError(f"{layer.name}: {len(calls)} calls in one pass, expected 1 or T={T} "
                                   "(clear() between passes)")
            out[layer.name] = _as_vectors(layer, x)
        return out


def _as_vectors(layer: WeightLayer, x: torch.Tensor) -> torch.Tensor:
    """[T, B, *in] -> [T, R, n]: linear inputs flattened; conv inputs unfolded into patches."""
    T, B = x.shape[:2]
    if layer.kind == "linear":
        return x.reshape(T, B, -1)
    patches = F.unfold(x.reshape(T * B, *x.shape[2:]), layer.kernel_size, padding=layer.padding,
                       stride=layer.stride)  # [T*B, n, L]
    L = patches.shape[-1]
    return patches.transpose(1, 2).reshape(T, B * L, layer.in_dim)


def representation(steps: torch.Tensor, mode: str = "rate", beta: float = 0.9) -> torch.Tensor:
    """steps: [T, R, n] -> rate/trace [R, n] or all steps [T*R, n] (see the module docstring)."""
    if mode not in ACTIVITY_MODES:
        raise ValueError(f"activity mode must be one of {ACTIVITY_MODES}, got {mode!r}")
    if steps.dim() != 3:
        raise ValueError(f"activity steps must be [T, R, n], got {tuple(steps.shape)}")
    T = steps.shape[0]
    if mode == "rate":
        return steps.mean(0)
    if mode == "trace":
        if not 0.0 < beta <= 1.0:
            raise ValueError(f"trace beta must be in (0, 1], got {beta}")
        w = beta ** torch.arange(T - 1, -1, -1, dtype=steps.dtype, device=steps.device)
        return torch.einsum("t,trn->rn", w / w.sum(), steps)
    return steps.reshape(-1, steps.shape[-1])
