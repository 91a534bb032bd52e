"""The declarative model spec: the one description of a network that every part of spikeloop reads.

A `ModelSpec` lists layers in order (stateless `Linear`/`Conv2d`/pooling/`Flatten` and spiking
`Leaky`/`Synaptic`/`RLeaky`), the input feature shape (without time and batch axes), the time step
`dt_s` in seconds, the number of time steps and the input encoder. It round-trips through plain
dicts (`to_dict`/`from_dict`, each layer carrying a `"type"` key) and JSON/TOML files, and
validates on construction: every invalid field raises `ValueError` naming the layer and field.

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

RESET_MODES = ("subtract", "zero")
SURROGATES = ("atan", "fast_sigmoid", "sigmoid", "straight_through", "triangular")

LAYER_TYPES: dict[str, type["LayerSpec"]] = {}


def _register(cls):
    LAYER_TYPES[cls.type_name] = cls
    return cls


def _check_positive_int(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")


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
        if not isinstance(self.padding, int) or self.padding < 0:
            raise ValueError(f"conv2d: padding must be a non-negative integer, got {self.padding!r}")

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
            object.__setattr__(self, "surrogate", Surrogate(**self.surrogate))

    def per_neuron_params(self) -> tuple[str, ...]:
        return ("beta", "threshold")

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

    def output_shape(self, input_shape, where):
        if self.all_to_all and len(input_shape) != 1:
            raise ValueError(f"{where}: rleaky with all_to_all needs flat [N] input, got {input_shape}")
        return super().output_shape(input_shape, where)


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
    dt_s: simulation time step in seconds (beta = exp(-dt_s / tau_mem_s)).
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
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "input_shape", tuple(self.input_shape))
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
    """Membrane decay per step for an exponential time constant: beta = exp(-dt_s / tau_s)."""
    if tau_s <= 0 or dt_s <= 0:
        raise ValueError(f"tau_s and dt_s must be > 0, got tau_s={tau_s}, dt_s={dt_s}")
    return math.exp(-dt_s / tau_s)


def tau_from_beta(beta: float, dt_s: float) -> float:
    """Inverse of `beta_from_tau`: tau_s = -dt_s / ln(beta), for 0 < beta < 1."""
    if not 0 < beta < 1:
        raise ValueError(f"beta must be in (0, 1) to have a finite time constant, got {beta}")
    return -dt_s / math.log(beta)
