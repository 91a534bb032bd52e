"""Build a `torch.nn.Module` of snnTorch neurons from a `ModelSpec` and run it over time.

Module `layers[i]` implements spec layer `i`, so state-dict keys are `layers.<i>.<param>`
(`layers.<i>.weight`, `layers.<i>.beta`, `layers.<i>.recurrent.weight`, ...): every other part of
spikeloop finds trained values by spec index.

State is passed explicitly step to step (snnTorch neurons are called with `mem`/`syn`/`spk`
arguments); nothing is kept on the module between calls.
"""

from __future__ import annotations

import math
import os
from functools import partial
from typing import NamedTuple

import snntorch as snntorch_lib
import snntorch.surrogate as snn_surrogate
import torch
from snntorch._neurons.rleaky import RecurrentOneToOne
from torch import nn
from torch.nn.modules import module as _nn_module

from .finite import require_finite
from .fused_lif import leaky_multistep, rleaky_multistep, synaptic_multistep
from .spec import (AvgPool2d, Conv2d, Flatten, Leaky, Linear, MaxPool2d, ModelSpec, RLeaky,
                   Surrogate, Synaptic, check_memory)


FUSED_LIF_ENV = "SPIKELOOP_FUSED_LIF"  # "0": build models that step spiking layers one step at a time


class NetworkOutput(NamedTuple):
    """spikes, mem: [T, B, N_out] of the last layer (flattened features).
    record: {spec layer index: {"spikes"|"mem"|"syn": [T, B, *feature_shape]}} for every
    spiking layer when `record=True`, else None."""

    spikes: torch.Tensor
    mem: torch.Tensor
    record: dict[int, dict[str, torch.Tensor]] | None


def surrogate_fn(s: Surrogate):
    """snnTorch surrogate-gradient spike function for a `Surrogate` spec."""
    if s.name == "atan":
        return snn_surrogate.atan(alpha=s.slope)
    if s.name == "fast_sigmoid":
        return snn_surrogate.fast_sigmoid(slope=s.slope)
    if s.name == "sigmoid":
        return snn_surrogate.sigmoid(slope=s.slope)
    if s.name == "straight_through":
        return snn_surrogate.straight_through_estimator()
    return snn_surrogate.triangular(threshold=s.slope)


def _param_tensor(value, shape: tuple[int, ...], per_neuron: bool) -> torch.Tensor:
    """A spec parameter as a float32 tensor: scalar, or one value per neuron shaped like the features."""
    if isinstance(value, tuple):
        if len(value) == 1:
            value = value[0]
        else:
            return torch.tensor(value, dtype=torch.float32).reshape(shape)
    t = torch.tensor(float(value), dtype=torch.float32)
    return t.expand(shape).clone() if per_neuron else t


def _build_layer(layer, in_shape, out_shape) -> nn.Module:
    if isinstance(layer, Linear):
        return nn.Linear(layer.in_features, layer.out_features, bias=layer.bias)
    if isinstance(layer, Conv2d):
        return nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                         stride=layer.stride, padding=layer.padding, bias=layer.bias)
    if isinstance(layer, MaxPool2d):
        return nn.MaxPool2d(layer.kernel_size, layer.effective_stride)
    if isinstance(layer, AvgPool2d):
        return nn.AvgPool2d(layer.kernel_size, layer.effective_stride)
    if isinstance(layer, Flatten):
        return nn.Flatten(start_dim=1)
    common = dict(
        beta=_param_tensor(layer.beta, out_shape, layer.per_neuron),
        threshold=_param_tensor(layer.threshold, out_shape, layer.per_neuron),
        spike_grad=surrogate_fn(layer.surrogate),
        learn_beta=layer.learn_beta,
        learn_threshold=layer.learn_threshold,
        reset_mechanism=layer.reset,
    )
    if isinstance(layer, Leaky):
        return snntorch_lib.Leaky(**common)
    if isinstance(layer, Synaptic):
        return snntorch_lib.Synaptic(alpha=_param_tensor(layer.alpha, out_shape, layer.per_neuron),
                                     learn_alpha=layer.learn_alpha, **common)
    if isinstance(layer, RLeaky):
        if layer.all_to_all:
            return snntorch_lib.RLeaky(all_to_all=True, linear_features=out_shape[0],
                                       learn_recurrent=layer.learn_recurrent, **common)
        return snntorch_lib.RLeaky(all_to_all=False, V=_param_tensor(layer.V, out_shape, layer.per_neuron),
                                   learn_recurrent=layer.learn_recurrent, **common)
    raise ValueError(f"no builder for layer type {layer.type_name!r}")


class SpikingNetwork(nn.Module):
    """The network of a `ModelSpec`. Call with input spikes `x: [T, B, *spec.input_shape]`."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        shapes = spec.shapes()
        in_shapes = [spec.input_shape] + shapes[:-1]
        self.layers = nn.ModuleList(_build_layer(l, i, o) for l, i, o in zip(spec.layers, in_shapes, shapes))
        self.feature_shapes = shapes
        # Leaky, Synaptic and RLeaky layers run through the fused multi-step Functions (same forward bits
        # as snnTorch); False (or SPIKELOOP_FUSED_LIF=0 at construction) steps them one time step
        # at a time, the reference path tests and benchmarks compare against
        self.fused_lif = os.environ.get(FUSED_LIF_ENV, "1") != "0"

    def forward(self, x: torch.Tensor, record: bool = False) -> NetworkOutput:
        spec = self.spec
        if x.dim() != 2 + len(spec.input_shape) or tuple(x.shape[2:]) != spec.input_shape:
            raise ValueError(f"input must be [T, B, {', '.join(map(str, spec.input_shape))}], "
                             f"got {list(x.shape)}")
        T, B = x.shape[:2]
        # Layer by layer, not step by step: layer i at step t depends only on layer i-1 at the same
        # step and on its own state (no synaptic delay, docs/neuron_semantics.md), so each
        # stateless layer runs once over all T*B samples and only the spiking layers loop over time.
        # Same values as a step-by-step loop, with far fewer (and larger) kernel calls.
        h = x.reshape(T * B, *spec.input_shape)
        traces: dict[int, dict[str, torch.Tensor]] = {}
        mem_out = None
        for i, (layer, lspec) in enumerate(zip(self.layers, spec.layers)):
            if not lspec.spiking:
                h = layer(h)
                continue
            fused = _fused_args(layer, lspec) if self.fused_lif else None
            if fused is not None:  # the whole time loop in one autograd Function (snn/fused_lif.py)
                z = h.reshape(T, B, *h.shape[1:])
                if isinstance(lspec, Synaptic):
                    spikes, syn_all, mem_all = synaptic_multistep(z, *fused, lspec.surrogate)
                elif isinstance(lspec, RLeaky):
                    *args, rec = fused
                    (spikes, mem_all), syn_all = rleaky_multistep(z, *args, lspec.surrogate, **rec), None
                else:
                    (spikes, mem_all), syn_all = leaky_multistep(z, *fused, lspec.surrogate), None
                if record or i == len(self.layers) - 1:
                    mem_out = mem_all
                if record:
                    traces[i] = {"spikes": spikes, "mem": mem_all} | ({"syn": syn_all} if syn_all is not None else {})
                h = spikes.reshape(T * B, *spikes.shape[2:])
                continue
            # unbind, not z[t]: the backward of T selects would fill T full-size zero tensors
            steps = h.reshape(T, B, *h.shape[1:]).unbind(0)
            zeros = torch.zeros_like(steps[0])
            fast = _leaky_step_fn(layer)
            if fast is not None:
                step, state = fast[0], fast[1](zeros)
            else:
                step, state = partial(_step, layer, lspec), (zeros, zeros)
            spk_t, mem_t, syn_t = [], [], []
            for z_t in steps:
                spk, state, syn = step(z_t, state)
                spk_t.append(spk)
                mem_t.append(state[1])
                if syn is not None:
                    syn_t.append(syn)
            spikes = torch.stack(spk_t)
            if record or i == len(self.layers) - 1:
                mem_out = torch.stack(mem_t)
            if record:
                traces[i] = {"spikes": spikes, "mem": mem_out} | ({"syn": torch.stack(syn_t)} if syn_t else {})
            h = spikes.reshape(T * B, *spikes.shape[2:])
        return NetworkOutput(h.reshape(T, B, -1), mem_out.reshape(T, B, -1), traces if record else None)

    def neuron_parameters(self) -> dict[int, dict[str, torch.Tensor]]:
        """Effective per-neuron parameters of every spiking layer, as float64 tensors of shape [N]
        (flattened features): beta and alpha clamped to [0, 1] as snnTorch applies them, threshold,
        and for elementwise RLeaky the recurrent weight V."""
        out = {}
        for i in self.spec.spiking_layers():
            layer, n = self.layers[i], math.prod(self.feature_shapes[i])
            names = ["beta", "threshold"] + (["alpha"] if hasattr(layer, "alpha") else [])
            p = {}
            for name in names:
                v = getattr(layer, name).detach().to(torch.float64)
                if name in ("beta", "alpha"):
                    v = v.clamp(0, 1)
                p[name] = v.expand(self.feature_shapes[i]).reshape(n).clone() if v.numel() == 1 else v.reshape(n)
            if isinstance(self.spec.layers[i], RLeaky) and not self.spec.layers[i].all_to_all:
                v = layer.V.detach().to(torch.float64)
                p["V"] = v.expand(n).clone() if v.numel() == 1 else v.reshape(n)
            out[i] = p
        return out


_FUSED_KINDS = {snntorch_lib.Leaky: Leaky, snntorch_lib.Synaptic: Synaptic,
                snntorch_lib.RLeaky: RLeaky}  # snnTorch module -> spec layer


def _hooked(module) -> bool:
    """Whether forward/backward hooks watch `module` (e.g. the continual-learning activity
    recorder): a fused loop bypasses the module's own forward, so those layers step as modules."""
    if module is None:
        return False
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or getattr(module, "_backward_pre_hooks", None) or _nn_module._global_forward_hooks
                or _nn_module._global_forward_pre_hooks)


def _recurrent_args(layer, lspec) -> dict | None:
    """The recurrent map of an snnTorch `RLeaky` as `rleaky_multistep` keywords: {weight, bias}
    for a dense `nn.Linear` (all_to_all), {V} for the elementwise map; None for anything else
    (a convolutional recurrence, a module replaced after building)."""
    rec = getattr(layer, "recurrent", None)
    if _hooked(rec):  # the fused loop calls F.linear itself: hooks on the map would not fire
        return None
    if lspec.all_to_all:
        if type(rec) is not nn.Linear or not layer.all_to_all:
            return None
        return {"weight": rec.weight} | ({"bias": rec.bias} if rec.bias is not None else {})
    if layer.all_to_all or type(rec) is not RecurrentOneToOne or rec.V is not layer.V:
        return None
    return {"V": layer.V}


def _fused_args(layer, lspec):
    """The parameters for `leaky_multistep` (clamped beta, threshold, reset), `synaptic_multistep`
    (clamped alpha, clamped beta, threshold, reset) or `rleaky_multistep` (clamped beta, threshold,
    reset, {recurrent keywords}) when the layer is a plain snnTorch `Leaky`, `Synaptic` or `RLeaky`
    they cover (subtract/zero reset with reset_delay, unit spikes, no state quantisation or
    inhibition, the spec's surrogate; RLeaky with its dense linear or elementwise recurrence),
    else None."""
    kind = _FUSED_KINDS.get(type(layer))
    if _hooked(layer):
        return None
    if (kind is None or not isinstance(lspec, kind) or layer.state_quant
            or layer.inhibition or not layer.reset_delay or layer.reset_mechanism_val not in (0, 1)):
        return None
    graded = layer.graded_spikes_factor
    if not (isinstance(graded, torch.Tensor) and not graded.requires_grad and bool((graded == 1).all())):
        return None
    rec = _recurrent_args(layer, lspec) if isinstance(lspec, RLeaky) else {}
    if rec is None:
        return None
    params = ([layer.alpha] if isinstance(lspec, Synaptic) else []) + [layer.beta, layer.threshold]
    if len({(p.dtype, p.device) for p in params + list(rec.values())}) != 1:
        return None
    reset = "subtract" if layer.reset_mechanism_val == 0 else "zero"
    # one clamp per forward is the value snnTorch's per-step clamp gives
    args = (*(p.clamp(0, 1) for p in params[:-1]), layer.threshold, reset)
    return (*args, rec) if isinstance(lspec, RLeaky) else args


def _leaky_step_fn(layer):
    """A step function for an snnTorch `Leaky` computing exactly what `Leaky.forward` computes
    (same expressions in the same order, the layer's own beta/threshold tensors and surrogate
    spike function) without its per-call bookkeeping: storing state on the module (a buffer
    registration per call), a second surrogate call and a clone to get the reset signal.
    tests/test_model.py checks values and gradients against `Leaky.forward` itself.

    Returns (step, initial_state) or None when the layer uses an option this path does not
    cover (the caller then steps the snnTorch module). The state is (R, U): the reset signal
    for the next step and the membrane. R[t+1] = H(U[t] - theta) is the forward value of the
    spike S[t] when spikes are not scaled (graded_spikes_factor 1), so it is taken from there."""
    if (type(layer) is not snntorch_lib.Leaky or layer.state_quant or layer.inhibition or not layer.reset_delay
            or layer.reset_mechanism_val not in (0, 1)):
        return None
    beta = layer.beta.clamp(0, 1)  # snnTorch clamps at every step; one clamp per forward is the same value
    threshold, spike_fn = layer.threshold, layer.spike_grad
    graded = layer.graded_spikes_factor
    unit_spikes = isinstance(graded, torch.Tensor) and not graded.requires_grad and bool((graded == 1).all())
    subtract = layer.reset_mechanism_val == 0

    def step(z, state):
        reset, mem = state
        if subtract:
            mem = beta * mem + z - reset * threshold
        else:
            mem = beta * ((1 - reset) * mem) + z
        spk = spike_fn(mem - threshold)
        if unit_spikes:
            spk = spk.to(mem.dtype)
            return spk, (spk.detach(), mem), None
        spk = (spk * graded).to(mem.dtype)
        return spk, ((mem.detach() - threshold.detach() > 0).to(mem.dtype), mem), None

    def initial_state(zeros):
        # U[0] = 0, so R[1] = H(0 - theta): zero for every positive threshold
        return ((zeros - threshold.detach() > 0).to(zeros.dtype), zeros)

    return step, initial_state


def _step(layer, lspec, z, state):
    """One time step of a spiking layer. state = (aux, mem) where aux is syn (Synaptic), the
    previous spikes (RLeaky) or unused (Leaky). Spikes come back in the membrane's dtype
    (snnTorch's surrogates return float32)."""
    aux, mem = state
    if isinstance(lspec, Leaky):
        spk, mem = layer(z, mem)
        return spk.to(mem.dtype), (aux, mem), None
    if isinstance(lspec, Synaptic):
        spk, syn, mem = layer(z, aux, mem)
        return spk.to(mem.dtype), (syn, mem), syn
    spk, mem = layer(z, aux, mem)
    spk = spk.to(mem.dtype)
    return spk, (spk, mem), None


def build_model(spec: ModelSpec, state_dict: dict | None = None, dtype: torch.dtype = torch.float32,
                device: str | torch.device = "cpu") -> SpikingNetwork:
    """A `SpikingNetwork` for `spec`, optionally loaded with trained weights (strict key match).

    Refuses (ResourceLimitError) a spec whose parameters cannot fit the memory of the CPU (where the
    modules are built) or of `device`, and (NonFiniteError) weights holding NaN or Inf."""
    require_memory(spec, "building the model", "cpu", torch.float32)
    if torch.device(device).type != "cpu" or dtype != torch.float32:
        require_memory(spec, "building the model", device, dtype)
    model = SpikingNetwork(spec)
    if state_dict is not None:
        load_weights(model, state_dict)
    model = model.to(device=device, dtype=dtype)
    if any(isinstance(l, Conv2d) for l in spec.layers):
        # channels-last conv weights make oneDNN/cuDNN pick their fast NHWC kernels (1.6x for the
        # conv preset's training step on CPU); values are unchanged, checkpoints store contiguous
        model = model.to(memory_format=torch.channels_last)
    return model


RESET_BUFFER = "reset_mechanism_val"  # snnTorch's buffer holding the reset mode
SPEC_BUFFERS = (RESET_BUFFER,)  # snnTorch buffers that encode spec fields, not trained values


def without_spec_buffers(state_dict: dict) -> dict:
    """The state dict minus buffers the spec determines (e.g. the reset mode), for loading trained
    weights into a deliberately different spec."""
    return {k: v for k, v in state_dict.items() if not k.endswith(SPEC_BUFFERS)}


def _fill_aliases(own: dict, state_dict: dict) -> None:
    """Names of one shared parameter (element-wise RLeaky registers V as `layers.<i>.V` and
    `layers.<i>.recurrent.V`): a state dict may carry any of them (a de-duplicating writer keeps
    one); fill in the others, and refuse two that disagree."""
    groups: dict[tuple, list[str]] = {}
    for k, v in own.items():
        if v.numel():  # the same tensor under several names: same memory, shape and dtype
            groups.setdefault((v.data_ptr(), tuple(v.shape), v.dtype), []).append(k)
    for names in groups.values():
        present = [n for n in names if n in state_dict]
        if len(names) < 2 or not present:
            continue
        first = state_dict[present[0]]
        for n in present[1:]:
            if not torch.equal(torch.as_tensor(state_dict[n]).cpu(), torch.as_tensor(first).cpu()):
                raise ValueError(f"weights do not match the model spec: {present[0]} and {n} are one shared "
                                 "parameter but hold different values")
        for n in names:
            state_dict.setdefault(n, first)


def load_weights(model: SpikingNetwork, state_dict: dict) -> None:
    """Load weights, raising ValueError naming missing/unexpected/mis-shaped tensors, or
    (NonFiniteError) tensors holding NaN or Inf."""
    require_finite(state_dict)
    own = model.state_dict()
    state_dict = dict(state_dict)
    _fill_aliases(own, state_dict)
    for k in own:  # spec-derived buffers may be left out: the spec supplies them
        if k.endswith(SPEC_BUFFERS) and k not in state_dict:
            state_dict[k] = own[k]
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    bad = sorted(k for k in set(own) & set(state_dict) if tuple(own[k].shape) != tuple(state_dict[k].shape))
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}")
        if bad:
            parts.append("shape mismatch " + ", ".join(
                f"{k}: spec {tuple(own[k].shape)} vs weights {tuple(state_dict[k].shape)}" for k in bad[:5]))
        raise ValueError("weights do not match the model spec: " + "; ".join(parts))
    # snnTorch keeps the reset mode as a buffer; the spec is the one source of truth, so weights
    # saved with another reset mode are refused rather than silently overriding the spec.
    for k in sorted(own):
        if k.endswith(RESET_BUFFER) and not torch.equal(own[k].cpu(), state_dict[k].cpu()):
            modes = ("subtract", "zero", "none")
            layer = k.split(".")[1]

            def name(v: torch.Tensor) -> str:  # a corrupt buffer may hold anything
                x = float(v.reshape(-1)[0]) if v.numel() == 1 else None
                return repr(modes[int(x)]) if x is not None and x in (0, 1, 2) else f"value {v.tolist()!r} (no reset mode)"
            raise ValueError(f"weights do not match the model spec: layer {layer} was saved with reset "
                             f"{name(state_dict[k])} but the spec says {name(own[k])}")
    model.load_state_dict({k: v.to(own[k].dtype) if v.is_floating_point() else v for k, v in state_dict.items()})


def memory_limit_bytes(device: str | torch.device) -> int | None:
    """Memory of `device` in bytes: the CPU's physical memory (or the cgroup limit when lower), a
    CUDA device's total memory; None (no limit known) for other devices."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_properties(dev.index if dev.index is not None else
                                                torch.cuda.current_device()).total_memory
    if dev.type != "cpu":
        return None
    try:
        limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None
    try:  # a container's limit (cgroup v2) is what the allocator will hit
        with open("/sys/fs/cgroup/memory.max") as f:
            text = f.read().strip()
        if text.isdigit():
            limit = min(limit, int(text))
    except OSError:
        pass
    return limit


def require_memory(spec: ModelSpec, what: str, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32, batch_size: int = 0, num_steps: int | None = None,
                   training: bool = False) -> int:
    """`snn.spec.check_memory` against the memory of `device`: raises ResourceLimitError naming the
    largest layer when the lower-bound estimate for the model (and a batch of `batch_size` over
    `num_steps`, default spec.num_steps) cannot fit. Returns the estimate in bytes."""
    dev = torch.device(device)
    return check_memory(spec, memory_limit_bytes(dev), what, batch_size=batch_size, num_steps=num_steps,
                        dtype_bytes=torch.empty((), dtype=dtype).element_size(),
                        dtype_name=str(dtype).removeprefix("torch."), training=training,
                        limit_name=f"the memory of {dev}")


def default_device() -> torch.device:
    """CUDA when present, CPU otherwise."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
