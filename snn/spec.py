"""The declarative model spec: the one description of a network that every part of spikeloop reads.

A `ModelSpec` lists layers in order (stateless `Linear`/`Conv2d`/pooling/`Flatten` and spiking
`Leaky`/`Synaptic`/`RLeaky`), the input feature shape (without time and batch axes), the time step
`dt_s` in seconds, the number of time steps and the input encoder. It round-trips through plain
dicts (`to_dict`/`from_dict`, each layer carrying a `"type"` key) and JSON/TOML files, and
validates on construction: every invalid field raises `ValueError` naming the layer and field.

Resource limits: a spec is refused (`ResourceLimitError`, a `ValueError`) when a layer has more than
`MAX_NEURONS_PER_LAYER` outputs per time step, `num_steps` exceeds `MAX_NUM_STEPS`, or a layer or
the whole model holds more than `MAX_PARAMETERS` parameters, so an absurd spec fails while it is
read, naming the layer, instead of in the allocator. `estimate_memory` gives a lower bound of the
bytes a model and a batch need; `check_memory` refuses one that cannot fit a memory limit
(`snn.model.require_memory` applies it with the machine's memory before building or running).

Neuron semantics (what beta, threshold and reset mean step by step) are written down once in
`docs/neuron_semantics.md`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import encoders

SPEC_FORMAT_VERSION = 1

# Generous limits against typos and hostile files (1e9 neurons, 1e9 steps); far above any model that
# trains on one machine, far below what overflows an allocation.
MAX_NEURONS_PER_LAYER = 10 ** 7  # outputs per time step of one layer (any layer type) and input features
MAX_NUM_STEPS = 10 ** 5
MAX_PARAMETERS = 10 ** 9  # per layer and in all

RESET_MODES = ("subtract", "zero")
SURROGATES = ("atan", "fast_sigmoid", "sigmoid", "straight_through", "triangular")

LAYER_TYPES: dict[str, type["LayerSpec"]] = {}


def _register(cls):
    LAYER_TYPES[cls.type_name] = cls
    return cls


def _check_positive_int(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")


def _check_bool(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{owner}: {name} must be true or false, got {value!r}")


def _as_param(owner: str, name: str, value: Any, lo: float, hi: float, hi_open: bool = False):
    """Validate a scalar or per-neuron parameter; lists become tuples of floats."""
    values = value if isinstance(value, (list, tuple)) else [value]
    if len(values) == 0:
        raise ValueError(f"{owner}: {name} must not be empty")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{owner}: {name} must be finite numbers, got {v!r}")
        if v < lo or v > hi or (hi_open and v >= hi):
            bracket = ")" if hi_open else "]"
            raise ValueError(f"{owner}: {name}={v!r} outside [{lo}, {hi}{bracket}")
        out.append(float(v))
    return tuple(out) if isinstance(value, (list, tuple)) else out[0]


@dataclass(frozen=True)
class Surrogate:
    """Surrogate gradient of the Heaviside spike: snnTorch function name and its slope/alpha."""

    name: str = "atan"
    slope: float = 2.0

    def __post_init__(self):
        if self.name not in SURROGATES:
            raise ValueError(f"surrogate.name must be one of {SURROGATES}, got {self.name!r}")
        if not (isinstance(self.slope, (int, float)) and self.slope > 0):
            raise ValueError(f"surrogate.slope must be > 0, got {self.slope!r}")


@dataclass(frozen=True)
class LayerSpec:
    """Base of all layer specs. `type_name` is the `"type"` key in dicts."""

    type_name: ClassVar[str] = ""
    spiking: ClassVar[bool] = False

    def to_dict(self) -> dict:
        d = {"type": self.type_name}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Surrogate):
                v = dataclasses.asdict(v)
            elif isinstance(v, tuple):
                v = list(v)
            d[f.name] = v
        return d

    def output_shape(self, input_shape: tuple[int, ...], where: str) -> tuple[int, ...]:
        raise TypeError(f"{where}: layer type {self.type_name!r} defines no shape rule")

    def parameter_shapes(self, input_shape: tuple[int, ...],
                         output_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        """Shapes of the trained tensors `snn.model` builds for this layer (for size limits and
        memory estimates; the model's state dict is the authority). Stateless layers: none."""
        return {}


@_register
@dataclass(frozen=True)
class Linear(LayerSpec):
    """Dense synapses: input [..., in_features] -> [..., out_features]."""

    type_name: ClassVar[str] = "linear"
    in_features: int
    out_features: int
    bias: bool = True

    def __post_init__(self):
        _check_positive_int("linear", "in_features", self.in_features)
        _check_positive_int("linear", "out_features", self.out_features)
        _check_bool("linear", "bias", self.bias)

    def parameter_shapes(self, input_shape, output_shape):
        return {"weight": (self.out_features, self.in_features)} | ({"bias": (self.out_features,)} if self.bias else {})

    def output_shape(self, input_shape, where):
        if input_shape != (self.in_features,):
            raise ValueError(f"{where}: linear expects input shape ({self.in_features},), got {input_shape}"
                             " (add a flatten layer before it?)")
        return (self.out_features,)


@_register
@dataclass(frozen=True)
class Conv2d(LayerSpec):
    """2-D convolution on [C, H, W] features, square kernel."""

    type_name: ClassVar[str] = "conv2d"
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    bias: bool = True

    def __post_init__(self):
        for n in ("in_channels", "out_channels", "kernel_size", "stride"):
            _check_positive_int("conv2d", n, getattr(self, n))
        _check_bool("conv2d", "bias", self.bias)
        if not isinstance(self.padding, int) or self.padding < 0:
            raise ValueError(f"conv2d: padding must be a non-negative integer, got {self.padding!r}")

    def parameter_shapes(self, input_shape, output_shape):
        k = self.kernel_size
        return ({"weight": (self.out_channels, self.in_channels, k, k)}
                | ({"bias": (self.out_channels,)} if self.bias else {}))

    def output_shape(self, input_shape, where):
        if len(input_shape) != 3 or input_shape[0] != self.in_channels:
            raise ValueError(f"{where}: conv2d expects [C={self.in_channels}, H, W], got {input_shape}")
        c, h, w = input_shape
        ho = (h + 2 * self.padding - self.kernel_size) // self.stride + 1
        wo = (w + 2 * self.padding - self.kernel_size) // self.stride + 1
        if ho < 1 or wo < 1:
            raise ValueError(f"{where}: conv2d kernel {self.kernel_size} larger than input {h}x{w}")
        return (self.out_channels, ho, wo)


@dataclass(frozen=True)
class _Pool2d(LayerSpec):
    kernel_size: int = 2
    stride: int | None = None  # None: equal to kernel_size, as in torch

    def __post_init__(self):
        _check_positive_int(self.type_name, "kernel_size", self.kernel_size)
        if self.stride is not None:
            _check_positive_int(self.type_name, "stride", self.stride)

    @property
    def effective_stride(self) -> int:
        return self.stride or self.kernel_size

    def output_shape(self, input_shape, where):
        if len(input_shape) != 3:
            raise ValueError(f"{where}: {self.type_name} expects [C, H, W], got {input_shape}")
        c, h, w = input_shape
        s = self.effective_stride
        ho, wo = (h - self.kernel_size) // s + 1, (w - self.kernel_size) // s + 1
        if ho < 1 or wo < 1:
            raise ValueError(f"{where}: {self.type_name} kernel {self.kernel_size} larger than {h}x{w}")
        return (c, ho, wo)


@_register
@dataclass(frozen=True)
class MaxPool2d(_Pool2d):
    type_name: ClassVar[str] = "maxpool2d"


@_register
@dataclass(frozen=True)
class AvgPool2d(_Pool2d):
    type_name: ClassVar[str] = "avgpool2d"


@_register
@dataclass(frozen=True)
class Flatten(LayerSpec):
    """[C, H, W] -> [C*H*W] in C-major (torch) order."""

    type_name: ClassVar[str] = "flatten"

    def output_shape(self, input_shape, where):
        return (math.prod(input_shape),)


@dataclass(frozen=True)
class _SpikingSpec(LayerSpec):
    """Common fields of spiking layers. beta/threshold are a float (shared) or a per-neuron list."""

    spiking: ClassVar[bool] = True
    beta: float | tuple[float, ...] = 0.9
    threshold: float | tuple[float, ...] = 1.0
    reset: str = "subtract"
    learn_beta: bool = False
    learn_threshold: bool = False
    per_neuron: bool = False  # expand scalar beta/threshold (and alpha) to one value per neuron
    surrogate: Surrogate = field(default_factory=Surrogate)

    def __post_init__(self):
        t = self.type_name
        object.__setattr__(self, "beta", _as_param(t, "beta", self.beta, 0.0, 1.0))
        object.__setattr__(self, "threshold", _as_param(t, "threshold", self.threshold, 1e-12, math.inf))
        if self.reset not in RESET_MODES:
            raise ValueError(f"{t}: reset must be one of {RESET_MODES}, got {self.reset!r}")
        if isinstance(self.surrogate, dict):
            unknown = set(self.surrogate) - {"name", "slope"}
            if unknown:
                raise ValueError(f"{t}: unknown surrogate field(s) {sorted(unknown)}; allowed: ['name', 'slope']")
            object.__setattr__(self, "surrogate", Surrogate(**self.surrogate))
        if not isinstance(self.surrogate, Surrogate):
            raise ValueError(f"{t}: surrogate must be a table {{name, slope}}, got {self.surrogate!r}")
        for f in dataclasses.fields(self):
            if f.name.startswith(("learn_", "per_neuron", "all_to_all")):
                _check_bool(t, f.name, getattr(self, f.name))

    def per_neuron_params(self) -> tuple[str, ...]:
        return ("beta", "threshold")

    def parameter_shapes(self, input_shape, output_shape):
        out = {}
        for name in self.per_neuron_params():
            v = getattr(self, name)
            per = self.per_neuron or (isinstance(v, tuple) and len(v) > 1)
            out[name] = tuple(output_shape) if per else ()
        return out

    def output_shape(self, input_shape, where):
        n = math.prod(input_shape)
        for name in self.per_neuron_params():
            v = getattr(self, name)
            if isinstance(v, tuple) and len(v) not in (1, n):
                raise ValueError(f"{where}: {name} has {len(v)} values but the layer has {n} neurons")
        return input_shape


@_register
@dataclass(frozen=True)
class Leaky(_SpikingSpec):
    """First-order LIF (snnTorch `Leaky`): U[t] = beta U[t-1] + I[t] - reset."""

    type_name: ClassVar[str] = "leaky"


@_register
@dataclass(frozen=True)
class Synaptic(_SpikingSpec):
    """Current-based LIF (snnTorch `Synaptic`): I_syn[t] = alpha I_syn[t-1] + X[t]; U[t] = beta U[t-1] + I_syn[t]."""

    type_name: ClassVar[str] = "synaptic"
    alpha: float | tuple[float, ...] = 0.8
    learn_alpha: bool = False

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "alpha", _as_param("synaptic", "alpha", self.alpha, 0.0, 1.0))

    def per_neuron_params(self):
        return ("alpha", "beta", "threshold")


@_register
@dataclass(frozen=True)
class RLeaky(_SpikingSpec):
    """Recurrent LIF (snnTorch `RLeaky`): U[t] = beta U[t-1] + I[t] + V(S[t-1]) - reset.

    `all_to_all=True`: V is a dense N x N linear layer with bias (weights in the checkpoint);
    `all_to_all=False`: V is an elementwise weight `V` (scalar or per-neuron)."""

    type_name: ClassVar[str] = "rleaky"
    all_to_all: bool = True
    V: float | tuple[float, ...] = 1.0
    learn_recurrent: bool = True

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "V", _as_param("rleaky", "V", self.V, -math.inf, math.inf))

    def per_neuron_params(self):
        return ("beta", "threshold") if self.all_to_all else ("beta", "threshold", "V")

    def parameter_shapes(self, input_shape, output_shape):
        out = super().parameter_shapes(input_shape, output_shape)
        if self.all_to_all:
            n = math.prod(output_shape)
            out |= {"recurrent.weight": (n, n), "recurrent.bias": (n,)}
        return out

    def output_shape(self, input_shape, where):
        if self.all_to_all and len(input_shape) != 1:
            raise ValueError(f"{where}: rleaky with all_to_all needs flat [N] input, got {input_shape}")
        return super().output_shape(input_shape, where)


class ResourceLimitError(ValueError):
    """A spec, or a batch run with it, larger than the resource limits (names the layer and the size)."""


def format_bytes(n: float) -> str:
    """Decimal units: 3136000000000 -> '3.1 TB'."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def _layer_parameters(spec: "ModelSpec", i: int, shapes: list | None = None) -> tuple[int, str]:
    """(parameter count, description of the largest tensor, e.g. "1000 x 784 weights") of layer i."""
    shapes = spec.shapes() if shapes is None else shapes
    in_shape = spec.input_shape if i == 0 else shapes[i - 1]
    p = spec.layers[i].parameter_shapes(in_shape, shapes[i])
    if not p:
        return 0, "no parameters"
    name, shape = max(p.items(), key=lambda kv: math.prod(kv[1]))
    kind = "recurrent weights" if name == "recurrent.weight" else "weights" if name == "weight" else name
    return sum(math.prod(s) for s in p.values()), f"{' x '.join(map(str, shape)) or '1'} {kind}"


@dataclass(frozen=True)
class MemoryItem:
    """One part of a memory estimate: layer (spec index; None for the encoded input), what it is, bytes."""

    layer: int | None
    what: str
    num_bytes: int


def estimate_memory(spec: "ModelSpec", batch_size: int = 0, num_steps: int | None = None,
                    dtype_bytes: int = 4, training: bool = False) -> list[MemoryItem]:
    """A lower bound of the memory a model of `spec` and one batch need, item by item.

    Always the parameters of every layer; with batch_size B > 0 also the encoded input [T, B, *input]
    and the outputs [T, B, N_i] the forward pass keeps: for evaluation the largest layer's (it is
    stacked over time before the next layer runs), for training every layer's (autograd keeps them
    for the backward pass). Real use needs more (state per step, gradients, optimizer moments), so a
    refusal from this estimate is never a false alarm. T defaults to spec.num_steps."""
    T = spec.num_steps if num_steps is None else num_steps
    shapes = spec.shapes()
    items = []
    for i, layer in enumerate(spec.layers):
        count, what = _layer_parameters(spec, i, shapes)
        if count:
            items.append(MemoryItem(i, what, count * dtype_bytes))
    if batch_size > 0:
        f_in = math.prod(spec.input_shape)
        items.append(MemoryItem(None, f"{T} x {batch_size} x {f_in} spikes (steps x batch x features)",
                                T * batch_size * f_in * dtype_bytes))
        outs = [MemoryItem(i, f"{T} x {batch_size} x {math.prod(s)} outputs (steps x batch x neurons)",
                           T * batch_size * math.prod(s) * dtype_bytes) for i, s in enumerate(shapes)]
        items += outs if training else [max(outs, key=lambda m: m.num_bytes)]
    return items


def check_memory(spec: "ModelSpec", limit_bytes: int | None, what: str, batch_size: int = 0,
                 num_steps: int | None = None, dtype_bytes: int = 4, dtype_name: str = "float32",
                 training: bool = False, limit_name: str = "the memory limit") -> int:
    """Raise ResourceLimitError when `estimate_memory` exceeds limit_bytes (None: no limit), naming
    the largest item's layer, e.g. "building the model: layer 1 (linear): 10000000 x 784 weights =
    31.4 GB of float32 (31.4 GB in all), above the 25.0 GB of memory on cpu". Returns the estimate."""
    items = estimate_memory(spec, batch_size, num_steps, dtype_bytes, training)
    total = sum(m.num_bytes for m in items)
    if limit_bytes is not None and total > limit_bytes:
        big = max(items, key=lambda m: m.num_bytes)
        where = "input" if big.layer is None else f"layer {big.layer} ({spec.layers[big.layer].type_name})"
        raise ResourceLimitError(f"{what}: {where}: {big.what} = {format_bytes(big.num_bytes)} of {dtype_name} "
                                 f"(at least {format_bytes(total)} in all), above {limit_name} "
                                 f"({format_bytes(limit_bytes)})")
    return total


def layer_from_dict(d: dict, where: str = "layer") -> LayerSpec:
    if not isinstance(d, dict) or "type" not in d:
        raise ValueError(f"{where}: each layer must be a table with a 'type' key, got {d!r}")
    kind = d["type"]
    cls = LAYER_TYPES.get(kind)
    if cls is None:
        raise ValueError(f"{where}: unknown layer type {kind!r}; known: {sorted(LAYER_TYPES)}")
    kwargs = {k: v for k, v in d.items() if k != "type"}
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(kwargs) - names
    if unknown:
        raise ValueError(f"{where} ({kind}): unknown field(s) {sorted(unknown)}; allowed: {sorted(names)}")
    try:
        return cls(**kwargs)
    except TypeError as e:  # missing required field
        raise ValueError(f"{where} ({kind}): {e}") from None


@dataclass(frozen=True)
class ModelSpec:
    """A whole network.

    input_shape: feature shape of one time step of one sample, e.g. (64,) or (1, 28, 28).
    dt_s: simulation time step in seconds (beta = 1 - dt_s / tau_mem_s, `beta_from_tau`).
    num_steps: time steps T per sample.
    encoder: {"type": <name in encoders.ENCODERS>, **params} turning intensities into input spikes.
    """

    layers: tuple[LayerSpec, ...]
    input_shape: tuple[int, ...]
    dt_s: float = 1e-3
    num_steps: int = 25
    encoder: dict = field(default_factory=lambda: {"type": "rate", "gain": 1.0})
    name: str = "model"
    version: int = SPEC_FORMAT_VERSION

    def __post_init__(self):
        if self.version != SPEC_FORMAT_VERSION:
            raise ValueError(f"model spec version {self.version} is not supported (this spikeloop reads "
                             f"version {SPEC_FORMAT_VERSION})")
        if not isinstance(self.layers, (list, tuple)):
            raise ValueError(f"model spec: layers must be a list of layer tables, got {self.layers!r}")
        if not isinstance(self.input_shape, (list, tuple)):
            raise ValueError(f"model spec: input_shape must be a list of positive integers, got {self.input_shape!r}")
        if not isinstance(self.name, str):
            raise ValueError(f"model spec: name must be a string, got {self.name!r}")
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "input_shape", tuple(self.input_shape))
        if not all(isinstance(l, LayerSpec) for l in self.layers):
            raise ValueError("model spec: layers must be layer specs (use ModelSpec.from_dict for tables)")
        if not self.layers:
            raise ValueError("model spec: layers must not be empty")
        for n in self.input_shape:
            _check_positive_int("model spec", "input_shape entries", n)
        if not (isinstance(self.dt_s, (int, float)) and self.dt_s > 0 and math.isfinite(self.dt_s)):
            raise ValueError(f"model spec: dt_s must be a positive number of seconds, got {self.dt_s!r}")
        _check_positive_int("model spec", "num_steps", self.num_steps)
        if not isinstance(self.encoder, dict) or "type" not in self.encoder:
            raise ValueError(f"model spec: encoder must be a table with a 'type' key, got {self.encoder!r}")
        if self.encoder["type"] not in encoders.ENCODERS:
            raise ValueError(f"model spec: unknown encoder type {self.encoder['type']!r}; "
                             f"known: {sorted(encoders.ENCODERS)}")
        if not self.layers[-1].spiking:
            raise ValueError("model spec: the last layer must be spiking (leaky, synaptic or rleaky)")
        self.shapes()  # validates the chain of shapes
        self._check_limits()

    def _check_limits(self) -> None:
        if self.num_steps > MAX_NUM_STEPS:
            raise ResourceLimitError(f"model spec: num_steps={self.num_steps} is above the limit of "
                                     f"{MAX_NUM_STEPS} steps (snn.spec.MAX_NUM_STEPS)")
        if math.prod(self.input_shape) > MAX_NEURONS_PER_LAYER:
            raise ResourceLimitError(f"model spec: input_shape {list(self.input_shape)} has "
                                     f"{math.prod(self.input_shape)} features, above the limit of "
                                     f"{MAX_NEURONS_PER_LAYER} (snn.spec.MAX_NEURONS_PER_LAYER)")
        total, largest, shapes = 0, None, self.shapes()
        for i, (layer, shape) in enumerate(zip(self.layers, shapes)):
            where = f"layer {i} ({layer.type_name})"
            n = math.prod(shape)
            if n > MAX_NEURONS_PER_LAYER:
                raise ResourceLimitError(f"{where}: {n} outputs per time step (shape {list(shape)}), above the "
                                         f"limit of {MAX_NEURONS_PER_LAYER} per layer "
                                         f"(snn.spec.MAX_NEURONS_PER_LAYER)")
            count, what = _layer_parameters(self, i, shapes)
            if count > MAX_PARAMETERS:
                raise ResourceLimitError(f"{where}: {what} = {count} parameters ({format_bytes(4 * count)} of "
                                         f"float32), above the limit of {MAX_PARAMETERS} parameters "
                                         f"(snn.spec.MAX_PARAMETERS)")
            total += count
            if largest is None or count > largest[0]:
                largest = (count, f"{where}: {what}")
        if total > MAX_PARAMETERS:
            raise ResourceLimitError(f"model spec: {total} parameters in all ({format_bytes(4 * total)} of float32; "
                                     f"largest {largest[1]}), above the limit of {MAX_PARAMETERS} "
                                     f"(snn.spec.MAX_PARAMETERS)")

    def shapes(self) -> list[tuple[int, ...]]:
        """Feature shape after each layer (index i: output of layers[i])."""
        shape, out = self.input_shape, []
        for i, layer in enumerate(self.layers):
            shape = layer.output_shape(shape, f"layer {i}")
            out.append(shape)
        return out

    def spiking_layers(self) -> list[int]:
        return [i for i, l in enumerate(self.layers) if l.spiking]

    @property
    def num_outputs(self) -> int:
        return math.prod(self.shapes()[-1])

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "name": self.name,
            "input_shape": list(self.input_shape),
            "dt_s": self.dt_s,
            "num_steps": self.num_steps,
            "encoder": dict(self.encoder),
            "layers": [l.to_dict() for l in self.layers],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        if not isinstance(d, dict):
            raise ValueError(f"model spec must be a table/object, got {type(d).__name__}")
        allowed = {"version", "name", "input_shape", "dt_s", "num_steps", "encoder", "layers"}
        unknown = set(d) - allowed
        if unknown:
            raise ValueError(f"model spec: unknown field(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        if "layers" not in d or "input_shape" not in d:
            raise ValueError("model spec: 'layers' and 'input_shape' are required")
        if not isinstance(d["layers"], (list, tuple)):
            raise ValueError(f"model spec: layers must be a list of layer tables, got {d['layers']!r}")
        layers = [layer_from_dict(l, f"layer {i}") for i, l in enumerate(d["layers"])]
        kw = {k: v for k, v in d.items() if k != "layers"}
        return cls(layers=tuple(layers), **kw)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise ValueError(f"model spec: invalid JSON: {e}") from None

    def replace(self, **changes) -> "ModelSpec":
        return dataclasses.replace(self, **changes)


def load_spec(path: str | Path) -> ModelSpec:
    """Read a spec from a .json or .toml file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model spec file not found: {path}")
    text = path.read_text()
    if path.suffix == ".toml":
        try:
            return ModelSpec.from_dict(tomllib.loads(text))
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: invalid TOML: {e}") from None
    return ModelSpec.from_json(text)


def beta_from_tau(tau_s: float, dt_s: float) -> float:
    """Decay per step of a time constant, forward Euler: beta = 1 - dt_s / tau_s.

    The one convention for continuous-time parameters (docs/neuron_semantics.md, "Time
    constants"): a spikeloop layer with decay beta is the forward-Euler step of
    `tau dv/dt = -v + r I` with `r = tau/dt`, which is how NIR's consumers (snnTorch's
    `import_from_nir`, Norse) discretise NIR's LIF. Needs tau_s >= dt_s (beta >= 0)."""
    if not (tau_s > 0 and dt_s > 0):  # also refuses NaN
        raise ValueError(f"tau_s and dt_s must be > 0, got tau_s={tau_s}, dt_s={dt_s}")
    if tau_s < dt_s:
        raise ValueError(f"tau_s = {tau_s} s is shorter than dt_s = {dt_s} s: forward Euler gives beta < 0")
    return 1.0 - dt_s / tau_s


def tau_from_beta(beta: float, dt_s: float) -> float:
    """Inverse of `beta_from_tau`: tau_s = dt_s / (1 - beta), for 0 <= beta < 1 (beta = 1 is an
    integrator, with no finite time constant)."""
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1) to have a finite time constant, got {beta}")
    if not dt_s > 0:
        raise ValueError(f"dt_s must be > 0, got {dt_s}")
    return dt_s / (1.0 - beta)
