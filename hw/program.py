"""Device programs: the integer network a device runs, its binary encoding and a JSON view.

The byte layout is defined in docs/program_format.md (version 1, little-endian, CRC-32); the meaning
of the numbers per profile in docs/fixed_point.md. `Program.to_bytes()` gives exactly the bytes a
device receives; `Program.from_bytes()` validates every field and refuses corrupt, truncated or
other-version blobs with a `ProgramError` naming the failed rule (`ProgramError.rule`, the id in the
table of docs/program_format.md "Validation"; the firmware names the same rule for the same blob).
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from snn.atomic import write_bytes_atomic, write_text_atomic

from .profiles import DEPRECATED_PROFILES, PROFILE_BY_ID, PROFILES, Profile, get_profile

FORMAT_VERSION = 2          # newest version written; dense spike-input programs are written as 1
FORMAT_VERSIONS = (1, 2)    # versions read
MAGIC = b"SLPG"
HEADER_SIZE = 48
RECORD_HEADER_SIZE = 16
RECORD_LAYER = 1            # dense layer
RECORD_CONV = 2             # convolution layer (version 2)
RECORD_POOL = 3             # pooling of the previous layer's spikes, no neurons (version 2)
GEOMETRY_SIZE = 16
FLAG_GRADED_INPUT = 0x01    # header flags bit 0 (version 2): the network input is int8 values
NAME_BYTES = 16
_HEADER = struct.Struct("<4sHBBIIHHHHII16s")
_RECORD = struct.Struct("<BBBBHHBBHI")
_GEOMETRY = struct.Struct("<HHHHBBBBBBH")
POOL_KINDS = {"none": 0, "max": 1, "sum": 2}
POOL_NAMES = {v: k for k, v in POOL_KINDS.items()}
MAX_POOL_KERNEL = 15  # a sum pool's count (<= 225) fits a byte

# The one registry of neuron types a program can hold: name -> id in the binary.
NEURON_TYPES = {"leaky": 1, "synaptic": 2, "rleaky_dense": 3, "rleaky_elementwise": 4}
NEURON_TYPE_NAMES = {v: k for k, v in NEURON_TYPES.items()}
RESET_MODES = {"subtract": 0, "zero": 1}
RESET_NAMES = {v: k for k, v in RESET_MODES.items()}
MAX_SHIFT = 20  # no profile allows more; keeps every exact sum below 2**63


class ProgramError(ValueError):
    """A program that is malformed, corrupt, of another version or outside its profile's limits.

    rule: the id of the failed rule in docs/program_format.md "Validation" (e.g. "6.7"; the message
    ends with "(rule 6.7)"), None for errors outside that table (a LayerProgram built from arrays
    of the wrong shape); check: the rule's check number, the firmware's BAD_PROGRAM detail."""

    def __init__(self, message: str, rule: str | None = None):
        super().__init__(f"{message} (rule {rule})" if rule else message)
        self.message, self.rule = message, rule

    @property
    def check(self) -> int | None:
        return int(self.rule.split(".")[0]) if self.rule else None

    def __reduce__(self):  # keep `rule` through pickling (multiprocessing, caches)
        return type(self), (self.message, self.rule)


def _pad4(n: int) -> int:
    return (n + 3) // 4 * 4


def neuron_family(neuron_type: str) -> str:
    """The spec neuron type (leaky, synaptic, rleaky) of a program neuron type."""
    return "rleaky" if neuron_type.startswith("rleaky") else neuron_type


@dataclass(frozen=True)
class MapGeometry:
    """The feature-map geometry of a convolution or pooling record (docs/program_format.md, "Version 2").

    Input map [in_channels, in_height, in_width], C-major. Convolution: out_channels, square kernel,
    stride, zero padding on every side, then an optional pool ("max"/"sum", pool_kernel, pool_stride)
    of the accumulations. A pooling record: out_channels == in_channels, kernel = stride = padding = 0
    and pool "max" or "sum". Raises ProgramError (rule 6.10) when inconsistent."""

    in_channels: int
    in_height: int
    in_width: int
    out_channels: int
    kernel: int = 0
    stride: int = 0
    padding: int = 0
    pool: str = "none"
    pool_kernel: int = 0
    pool_stride: int = 0

    def __post_init__(self):
        why = self._problem()
        if why:
            raise ProgramError(f"geometry {self.describe()}: {why}", "6.10")

    @property
    def is_pool_record(self) -> bool:
        return self.kernel == 0

    def _problem(self) -> str | None:
        for name in ("in_channels", "in_height", "in_width", "out_channels", "kernel", "stride",
                     "padding", "pool_kernel", "pool_stride"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
                return f"{name} must be a non-negative integer, got {v!r}"
        for name in ("in_channels", "in_height", "in_width", "out_channels"):
            if not 1 <= getattr(self, name) <= 0xFFFF:
                return f"{name} must be in [1, 65535], got {getattr(self, name)}"
        for name in ("kernel", "stride", "padding", "pool_kernel", "pool_stride"):
            if getattr(self, name) > 0xFF:
                return f"{name} must fit a byte, got {getattr(self, name)}"
        if self.pool not in POOL_KINDS:
            return f"pool must be one of {sorted(POOL_KINDS)}, got {self.pool!r}"
        if self.is_pool_record:
            if self.stride or self.padding:
                return "a pooling record has kernel, stride and padding 0"
            if self.pool == "none":
                return "a pooling record needs pool 'max' or 'sum'"
            if self.out_channels != self.in_channels:
                return "a pooling record keeps its channels (out_channels == in_channels)"
        else:
            if self.stride < 1:
                return "stride must be >= 1"
            if self.padding >= self.kernel:
                return f"padding {self.padding} must be below the kernel {self.kernel}"
        if self.pool == "none":
            if self.pool_kernel or self.pool_stride:
                return "pool_kernel and pool_stride must be 0 without a pool"
        elif not 1 <= self.pool_kernel <= MAX_POOL_KERNEL or self.pool_stride < 1:
            return f"a pool needs pool_kernel in [1, {MAX_POOL_KERNEL}] and pool_stride >= 1"
        if self.conv_height < 1 or self.conv_width < 1:
            return f"kernel {self.kernel} does not fit the padded {self.in_height}x{self.in_width} input"
        if self.out_height < 1 or self.out_width < 1:
            return f"pool window {self.pool_kernel} larger than the {self.conv_height}x{self.conv_width} map"
        return None

    def describe(self) -> str:
        body = (f"{self.in_channels}x{self.in_height}x{self.in_width}"
                + (f" conv {self.out_channels}@{self.kernel}x{self.kernel}/s{self.stride}/p{self.padding}"
                   if self.kernel else ""))
        return body + (f" {self.pool}pool {self.pool_kernel}/s{self.pool_stride}" if self.pool != "none" else "")

    @property
    def conv_height(self) -> int:
        if not self.kernel:
            return self.in_height
        return (self.in_height + 2 * self.padding - self.kernel) // max(self.stride, 1) + 1

    @property
    def conv_width(self) -> int:
        if not self.kernel:
            return self.in_width
        return (self.in_width + 2 * self.padding - self.kernel) // max(self.stride, 1) + 1

    @property
    def out_height(self) -> int:
        if self.pool == "none":
            return self.conv_height
        return (self.conv_height - self.pool_kernel) // max(self.pool_stride, 1) + 1

    @property
    def out_width(self) -> int:
        if self.pool == "none":
            return self.conv_width
        return (self.conv_width - self.pool_kernel) // max(self.pool_stride, 1) + 1

    @property
    def fan_in(self) -> int:
        return self.in_channels * self.in_height * self.in_width

    @property
    def num_outputs(self) -> int:
        return self.out_channels * self.out_height * self.out_width

    @property
    def window_fan_in(self) -> int:
        """Inputs one convolution output reads (C_in * k * k)."""
        return self.in_channels * self.kernel * self.kernel

    def to_bytes(self) -> bytes:
        return _GEOMETRY.pack(self.in_channels, self.in_height, self.in_width, self.out_channels,
                              self.kernel, self.stride, self.padding, POOL_KINDS[self.pool],
                              self.pool_kernel, self.pool_stride, 0)

    def to_dict(self) -> dict:
        return {k: (getattr(self, k) if k == "pool" else int(getattr(self, k))) for k in self.__dataclass_fields__}


@dataclass(frozen=True, eq=False)
class PoolProgram:
    """A pooling record (record_type 3): per channel, the OR ("max") or count ("sum") of the previous
    layer's spikes over each window; no neurons (docs/fixed_point.md)."""

    geometry: MapGeometry
    kind = "pool"

    def __post_init__(self):
        if not isinstance(self.geometry, MapGeometry) or not self.geometry.is_pool_record:
            raise ProgramError(f"a pooling record needs a pooling MapGeometry (kernel 0), got {self.geometry!r}",
                               "6.10")

    @property
    def fan_in(self) -> int:
        return self.geometry.fan_in

    @property
    def num_neurons(self) -> int:
        return self.geometry.num_outputs

    w_shift = rec_shift = max_spikes = 0

    def record_size(self) -> int:
        return RECORD_HEADER_SIZE + GEOMETRY_SIZE

    def to_bytes(self) -> bytes:
        return _RECORD.pack(RECORD_POOL, 0, 0, 0, self.fan_in, self.num_neurons, 0, 0, 0,
                            self.record_size()) + self.geometry.to_bytes()

    def to_dict(self) -> dict:
        return {"kind": "pool", "fan_in": self.fan_in, "num_neurons": self.num_neurons,
                "geometry": self.geometry.to_dict()}

    def check_profile(self, profile: Profile, where: str) -> None:
        _check_map_support(self, profile, where)
        _pool_violation(self.geometry, profile, where)
        _check_sizes(self, profile, where)


def _check_map_support(layer, profile: Profile, where: str) -> None:
    if not profile.supports_conv:
        raise ProgramError(f"{where}: {layer.kind} records are not supported by profile {profile.name!r} "
                           f"(supports_conv=false)", "6.4")


def _pool_violation(geometry: MapGeometry, profile: Profile, where: str) -> None:
    """Rule 6.12: pooling (a pooling record, or a convolution record's pool) the profile cannot do."""
    if geometry.pool != "none" and geometry.pool not in profile.pool_kinds:
        what = "a pooling record" if geometry.is_pool_record else f"a convolution record with {geometry.pool} pooling"
        raise ProgramError(f"{where}: {what} is not supported by profile {profile.name!r} (pool_kinds="
                           f"{list(profile.pool_kinds)}" + ("" if profile.pool_kinds else
                                                            "; it has no pooling: use a strided convolution")
                           + ")", "6.12")


def _check_w_shift(layer_w_shift: int, conv: bool, p: Profile, where: str) -> None:
    """Rule 8.7: w_shift within the profile's limit (a convolution record's: conv_w_shift_max)."""
    limit = min(MAX_SHIFT, p.conv_w_shift_max if conv else p.max_w_shift)
    if layer_w_shift > limit:
        what = (f"limit for convolution records conv_max_w_shift={limit}" if conv and p.conv_max_w_shift is not None
                else f"limit {limit}")
        raise ProgramError(f"{where}: w_shift={layer_w_shift} exceeds the profile {p.name!r} {what}", "8.7")


def _check_sizes(layer, p: Profile, where: str) -> None:
    if layer.num_neurons > p.max_neurons_per_layer:
        raise ProgramError(f"{where}: {layer.num_neurons} neurons exceed the profile {p.name!r} limit "
                           f"max_neurons_per_layer={p.max_neurons_per_layer}", "8.5")
    fan_in = max(layer.fan_in, layer.conv.window_fan_in if getattr(layer, "conv", None) else 0)
    if fan_in > p.max_fan_in:
        raise ProgramError(f"{where}: fan-in {fan_in} exceeds the profile {p.name!r} limit "
                           f"max_fan_in={p.max_fan_in}", "8.6")


@dataclass(frozen=True, eq=False)
class LayerProgram:
    """One layer: a dense synapse matrix [N, M] feeding N neurons, or (conv set, format version 2) a
    convolution with shared weights int8 [C_out, C_in, k, k] and an optional pool feeding the
    N = C_out*Ho*Wo neurons of its output map (docs/program_format.md).

    weights: int8 [N, M] (dense) or [C_out, C_in, k, k] (conv); bias, threshold: int32 [N]; decay_mem: uint16 [N];
    decay_syn: uint16 [N] (synaptic only); rec_weights: int8 [N, N] (rleaky_dense only);
    rec_gain: int32 [N] (rleaky_elementwise only)."""

    neuron_type: str
    reset: str
    w_shift: int
    weights: np.ndarray
    bias: np.ndarray
    threshold: np.ndarray
    decay_mem: np.ndarray
    decay_syn: np.ndarray | None = None
    rec_weights: np.ndarray | None = None
    rec_shift: int = 0
    rec_gain: np.ndarray | None = None
    max_spikes: int = 0  # spikes per neuron per step: 0 = one (mcu, loihi); xylo-like: 1..15; xylosim: 31, 1
    conv: MapGeometry | None = None

    @property
    def kind(self) -> str:
        return "dense" if self.conv is None else "conv"

    def __post_init__(self):
        if self.neuron_type not in NEURON_TYPES:
            raise ProgramError(f"neuron_type must be one of {sorted(NEURON_TYPES)}, got {self.neuron_type!r}",
                               "6.5")
        if self.reset not in RESET_MODES:
            raise ProgramError(f"reset must be one of {sorted(RESET_MODES)}, got {self.reset!r}", "6.6")
        for name in ("w_shift", "rec_shift"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or not 0 <= v <= MAX_SHIFT:
                raise ProgramError(f"{name} must be an integer in [0, {MAX_SHIFT}], got {v!r}",
                                   "8.7" if name == "w_shift" else "8.8")
        if not isinstance(self.max_spikes, (int, np.integer)) or not 0 <= self.max_spikes <= 255:
            raise ProgramError(f"max_spikes must be an integer in [0, 255], got {self.max_spikes!r}")
        w = self.weights
        g = self.conv
        if g is not None:
            if not isinstance(g, MapGeometry) or g.is_pool_record:
                raise ProgramError(f"conv must be a convolution MapGeometry, got {g!r}", "6.10")
            if self.neuron_type not in ("leaky", "synaptic"):
                raise ProgramError(f"a convolution record takes leaky or synaptic neurons, got {self.neuron_type!r}",
                                   "6.5")
            shape = (g.out_channels, g.in_channels, g.kernel, g.kernel)
            if not isinstance(w, np.ndarray) or w.shape != shape:
                raise ProgramError(f"conv weights must have shape {shape}, got {getattr(w, 'shape', w)!r}")
            n = g.num_outputs
        elif not isinstance(w, np.ndarray) or w.ndim != 2 or w.shape[0] < 1 or w.shape[1] < 1:
            raise ProgramError(f"weights must be a 2-D [N, M] array, got {getattr(w, 'shape', w)!r}")
        else:
            n = w.shape[0]
        self._set("weights", w, np.int8)
        for name, dtype in (("bias", np.int32), ("threshold", np.int32), ("decay_mem", np.uint16)):
            self._set(name, getattr(self, name), dtype, (n,))
        wants = {"decay_syn": self.neuron_type == "synaptic",
                 "rec_weights": self.neuron_type == "rleaky_dense",
                 "rec_gain": self.neuron_type == "rleaky_elementwise"}
        for name, needed in wants.items():
            v = getattr(self, name)
            if needed and v is None:
                raise ProgramError(f"{name} is required for neuron_type {self.neuron_type!r}")
            if not needed and v is not None:
                raise ProgramError(f"{name} must be None for neuron_type {self.neuron_type!r}")
        if self.decay_syn is not None:
            self._set("decay_syn", self.decay_syn, np.uint16, (n,))
        if self.rec_weights is not None:
            self._set("rec_weights", self.rec_weights, np.int8, (n, n))
        if self.rec_gain is not None:
            self._set("rec_gain", self.rec_gain, np.int32, (n,))
        if self.neuron_type != "rleaky_dense" and self.rec_shift != 0:
            raise ProgramError("rec_shift must be 0 unless neuron_type is 'rleaky_dense'", "8.8")

    def _set(self, name, value, dtype, shape=None):
        a = np.asarray(value)
        if shape is not None and a.shape != shape:
            raise ProgramError(f"{name} must have shape {shape}, got {a.shape}")
        if a.dtype != dtype:
            info = np.iinfo(dtype)
            if a.dtype.kind not in "iu" or (a.size and (a.min() < info.min or a.max() > info.max)):
                raise ProgramError(f"{name} must hold integers in the {np.dtype(dtype).name} range, got dtype {a.dtype}"
                                   + (f" with values in [{a.min()}, {a.max()}]" if a.size and a.dtype.kind in "iu" else ""))
            a = a.astype(dtype)
        a = np.ascontiguousarray(a)
        a.setflags(write=False)
        object.__setattr__(self, name, a)

    @property
    def num_neurons(self) -> int:
        return self.weights.shape[0] if self.conv is None else self.conv.num_outputs

    @property
    def fan_in(self) -> int:
        return self.weights.shape[1] if self.conv is None else self.conv.fan_in

    def sections(self) -> list[tuple[str, np.ndarray]]:
        """The record's arrays in binary order, with their little-endian dtypes."""
        out = [("weights", self.weights), ("bias", self.bias), ("threshold", self.threshold),
               ("decay_mem", self.decay_mem)]
        if self.decay_syn is not None:
            out.append(("decay_syn", self.decay_syn))
        if self.rec_weights is not None:
            out.append(("rec_weights", self.rec_weights))
        if self.rec_gain is not None:
            out.append(("rec_gain", self.rec_gain))
        return out

    def record_size(self) -> int:
        return (RECORD_HEADER_SIZE + (GEOMETRY_SIZE if self.conv is not None else 0)
                + sum(_pad4(a.nbytes) for _, a in self.sections()))

    def to_bytes(self) -> bytes:
        head = _RECORD.pack(RECORD_LAYER if self.conv is None else RECORD_CONV, NEURON_TYPES[self.neuron_type],
                            RESET_MODES[self.reset], int(self.w_shift), self.fan_in, self.num_neurons,
                            int(self.rec_shift), int(self.max_spikes), 0, self.record_size())
        parts = [head] + ([self.conv.to_bytes()] if self.conv is not None else [])
        for _, a in self.sections():
            raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
            parts.append(raw + b"\0" * (_pad4(len(raw)) - len(raw)))
        return b"".join(parts)

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "neuron_type": self.neuron_type, "reset": self.reset, "fan_in": self.fan_in,
             "num_neurons": self.num_neurons, "w_shift": int(self.w_shift),
             "rec_shift": int(self.rec_shift), "max_spikes": int(self.max_spikes)}
        if self.conv is not None:
            d["geometry"] = self.conv.to_dict()
        for name, a in self.sections():
            d[name] = a.tolist()
        return d

    def check_profile(self, profile: Profile, where: str) -> None:
        """Refuse values the profile cannot hold (docs/fixed_point.md, hw/profiles/*.json), in the
        order of the rule table of docs/program_format.md "Validation"."""
        p = profile
        if self.conv is not None:
            _check_map_support(self, p, where)
            _pool_violation(self.conv, p, where)
        if neuron_family(self.neuron_type) not in p.neuron_types:
            raise ProgramError(f"{where}: neuron type {self.neuron_type!r} is not supported by profile "
                               f"{p.name!r} (supported: {list(p.neuron_types)})", "6.5")
        if self.reset not in p.reset_modes:
            raise ProgramError(f"{where}: reset {self.reset!r} is not supported by profile {p.name!r} "
                               f"(supported: {list(p.reset_modes)})", "6.6")
        if p.max_spikes_per_step == 1 and self.max_spikes != 0:
            raise ProgramError(f"{where}: max_spikes must be 0 for profile {p.name!r} (one spike per step), "
                               f"got {self.max_spikes}", "5.4")
        if p.max_spikes_per_step > 1 and not 1 <= self.max_spikes <= p.max_spikes_per_step:
            raise ProgramError(f"{where}: max_spikes must be in [1, {p.max_spikes_per_step}] for profile "
                               f"{p.name!r}, got {self.max_spikes}", "5.4")
        _check_sizes(self, p, where)
        _check_w_shift(self.w_shift, self.conv is not None, p, where)
        if self.rec_shift > p.max_w_shift:
            raise ProgramError(f"{where}: rec_shift={self.rec_shift} exceeds the profile {p.name!r} "
                               f"limit {p.max_w_shift}", "8.8")
        th = self.threshold
        if th.min() < 1 or th.max() > p.threshold_max:
            raise ProgramError(f"{where}: thresholds must be in [1, {p.threshold_max}] for profile "
                               f"{p.name!r}, got [{th.min()}, {th.max()}]", "8.9")
        b = self.bias.astype(np.int64)
        if b.min() < p.bias_min or b.max() > p.bias_max:
            raise ProgramError(f"{where}: bias must be in [{p.bias_min}, {p.bias_max}] for profile "
                               f"{p.name!r}, got [{b.min()}, {b.max()}]", "8.10")
        if p.bias_mant_bits is not None and not bias_representable(b, p).all():
            raise ProgramError(f"{where}: a bias is not mantissa({p.bias_mant_bits} bits) << exp"
                               f"(<= {p.max_bias_exp}) as profile {p.name!r} requires", "8.10")
        for name in ("decay_mem", "decay_syn"):
            a = getattr(self, name)
            if a is not None and a.max() > p.decay_max:
                raise ProgramError(f"{where}: {name} values must be <= {p.decay_max} for profile "
                                   f"{p.name!r}, got {a.max()}", "8.11")
        if self.rec_gain is not None:
            g = self.rec_gain.astype(np.int64)
            if g.min() < p.bias_min or g.max() > p.bias_max:
                raise ProgramError(f"{where}: rec_gain must be in [{p.bias_min}, {p.bias_max}]", "8.12")


def bias_representable(b: np.ndarray, profile: Profile) -> np.ndarray:
    """loihi: whether each bias is m << e with |m| < 2**(bias_mant_bits-1), 0 <= e <= max_bias_exp."""
    b = np.asarray(b, dtype=np.int64)
    m_max = 2 ** (profile.bias_mant_bits - 1) - 1
    ok = np.zeros(b.shape, dtype=bool)
    for e in range(profile.max_bias_exp + 1):
        ok |= (b % (1 << e) == 0) & (np.abs(b >> e) <= m_max)
    return ok


@dataclass(frozen=True, eq=False)
class Program:
    """A compiled network for one chip profile: an ordered chain of `LayerProgram`s (dense or
    convolution) and `PoolProgram`s.

    graded_input: the network input of every step is int8 values, not spikes (format version 2),
    made by the host with `quantize_input(v, input_scale)` (docs/fixed_point.md, "Graded input").
    num_steps, dt_ns, name: informative (the model's T, time step in ns, and name).
    version: None writes the lowest version that holds the program (1 for dense spike input)."""

    profile: str
    layers: tuple
    num_steps: int = 1
    dt_ns: int = 1_000_000
    name: str = "model"
    version: int | None = None
    report: dict = field(default_factory=dict)  # compile report; not part of the binary
    graded_input: bool = False
    input_scale: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        needs_v2 = self.graded_input or any(l.kind != "dense" for l in self.layers)
        if self.version is None:
            object.__setattr__(self, "version", 2 if needs_v2 else 1)
        if self.version not in FORMAT_VERSIONS:
            raise ProgramError(f"program format version {self.version} is not supported (this "
                               f"spikeloop reads versions {list(FORMAT_VERSIONS)})", "2.1")
        profile = get_profile(self.profile)
        if self.version == 1 and self.graded_input:
            raise ProgramError("graded input needs program format version 2", "5.2")
        if not isinstance(self.graded_input, bool):
            raise ProgramError(f"graded_input must be a bool, got {self.graded_input!r}", "5.2")
        if not self.graded_input and self.input_scale:
            raise ProgramError("input_scale must be 0 without graded input", "5.2")
        if self.graded_input:
            why = graded_input_problem(profile, self.input_scale)
            if why:
                raise ProgramError(why, "5.7")
            object.__setattr__(self, "input_scale", float(np.float32(self.input_scale)))
        if not self.layers:
            raise ProgramError("a program needs at least one layer", "6.1")
        if len(self.layers) > profile.max_layers:
            raise ProgramError(f"{len(self.layers)} layers exceed the profile {profile.name!r} limit "
                               f"max_layers={profile.max_layers}", "6.2")
        total = 0
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, (LayerProgram, PoolProgram)):
                raise ProgramError(f"layer {i}: expected a LayerProgram or PoolProgram, got {type(layer).__name__}")
            if self.version == 1 and layer.kind != "dense":
                raise ProgramError(f"layer {i}: {layer.kind} records need program format version 2", "6.4")
            if i and layer.fan_in != self.layers[i - 1].num_neurons:
                raise ProgramError(f"layer {i}: fan-in {layer.fan_in} does not match the "
                                   f"{self.layers[i - 1].num_neurons} neurons of layer {i - 1}", "7.1")
            layer.check_profile(profile, f"layer {i}")
            total += layer.num_neurons
            _check_total(profile, total, f"layer {i}")
        why = pool_placement_problem([l.kind for l in self.layers])
        if why:
            raise ProgramError(why, "7.5")
        for i, layer in enumerate(self.layers):  # chips of fixed shape (xylo-imu, xylo-audio2)
            why = profile.role_violation(i, len(self.layers), layer.fan_in, layer.num_neurons, int(layer.max_spikes))
            if why:
                raise ProgramError(why, "7.4")
        why = profile.pool_violation([l.num_neurons for l in self.layers], [int(l.w_shift) for l in self.layers])
        if why:
            raise ProgramError(why, "7.4")
        for name, hi, rule in (("num_steps", 0xFFFF, "8.2"), ("dt_ns", 0xFFFFFFFF, "8.3")):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or not 1 <= v <= hi:
                raise ProgramError(f"{name} must be an integer in [1, {hi}], got {v!r}", rule)
        if self.num_inputs > 0xFFFF or any(l.num_neurons > 0xFFFF for l in self.layers):
            raise ProgramError("layer sizes must fit in 16 bits", "8.5")
        try:
            encoded = self.name.encode("ascii")
        except UnicodeEncodeError:
            raise ProgramError(f"name must be ASCII, got {self.name!r}", "5.3") from None
        if len(encoded) > NAME_BYTES or b"\0" in encoded:
            raise ProgramError(f"name must be at most {NAME_BYTES} ASCII characters without NUL, got {self.name!r}",
                               "5.3")
        size = self.size_bytes()
        if size > profile.max_program_bytes:
            raise ProgramError(f"program of {size} bytes exceeds the profile {profile.name!r} limit "
                               f"max_program_bytes={profile.max_program_bytes}", "8.1")

    @property
    def profile_obj(self) -> Profile:
        return get_profile(self.profile)

    @property
    def num_inputs(self) -> int:
        return self.layers[0].fan_in

    @property
    def num_outputs(self) -> int:
        return self.layers[-1].num_neurons

    def size_bytes(self) -> int:
        return HEADER_SIZE + sum(l.record_size() for l in self.layers)

    def to_bytes(self) -> bytes:
        """The exact blob a device receives (docs/program_format.md)."""
        body = b"".join(l.to_bytes() for l in self.layers)
        total = HEADER_SIZE + len(body)
        flags = FLAG_GRADED_INPUT if self.graded_input else 0
        scale = struct.unpack("<I", struct.pack("<f", self.input_scale))[0] if self.graded_input else 0
        header = _HEADER.pack(MAGIC, self.version, self.profile_obj.profile_id, flags, total, 0,
                              len(self.layers), self.num_inputs, self.num_outputs, int(self.num_steps),
                              int(self.dt_ns), scale, self.name.encode("ascii").ljust(NAME_BYTES, b"\0"))
        blob = header + body
        crc = crc32_of(blob)
        return blob[:12] + struct.pack("<I", crc) + blob[16:]

    @property
    def checksum(self) -> int:
        return struct.unpack_from("<I", self.to_bytes(), 12)[0]

    @classmethod
    def from_bytes(cls, data: bytes, expected_profile: str | None = None) -> "Program":
        """Decode and validate a blob; raises `ProgramError` naming the failed rule.

        The rules of docs/program_format.md "Validation" are checked in the order of its table and
        the first failing one is raised (`ProgramError.rule`), as the firmware does."""
        data = bytes(data)
        if len(data) < HEADER_SIZE:
            raise ProgramError(f"program truncated: {len(data)} bytes, the header alone is {HEADER_SIZE}",
                               "1.1")
        (magic, version, profile_id, flags, total, crc, num_layers, n_in, n_out, num_steps, dt_ns,
         reserved, name) = _HEADER.unpack_from(data, 0)
        if magic != MAGIC:
            raise ProgramError(f"not a spikeloop program: magic {magic!r}, expected {MAGIC!r}", "1.2")
        if version not in FORMAT_VERSIONS:
            raise ProgramError(f"program format version {version} is not supported (this spikeloop "
                               f"reads versions {list(FORMAT_VERSIONS)}); recompile it with this version", "2.1")
        if total != len(data):
            what = "truncated" if len(data) < total else "has trailing bytes"
            raise ProgramError(f"program {what}: header says {total} bytes, got {len(data)}", "3.1")
        if total % 4:
            raise ProgramError(f"program size {total} is not a multiple of 4", "3.2")
        actual = crc32_of(data)
        if actual != crc:
            raise ProgramError(f"program checksum mismatch: header CRC-32 0x{crc:08x}, "
                               f"computed 0x{actual:08x} (corrupt program)", "4.1")
        if profile_id not in PROFILE_BY_ID:
            raise ProgramError(f"unknown profile id {profile_id}; known: "
                               f"{ {k: v.name for k, v in PROFILE_BY_ID.items()} }", "5.1")
        profile = PROFILE_BY_ID[profile_id]
        if expected_profile is not None:
            # by id: a device opened under a deprecated name (xylo) reads its profile's programs
            expected = PROFILES.get(expected_profile) or DEPRECATED_PROFILES.get(expected_profile)
            if expected is None or expected.profile_id != profile_id:
                raise ProgramError(f"program is for profile {profile.name!r}, this device runs "
                                   f"{expected_profile!r}", "5.1")
            profile = expected
        graded = version >= 2 and bool(flags & FLAG_GRADED_INPUT)
        if (flags if version == 1 else flags & ~FLAG_GRADED_INPUT) or (reserved and not graded):
            raise ProgramError("header flags/reserved bytes must be 0"
                               + (" (version 2 defines only flag bit 0, GRADED_INPUT)" if version >= 2 else ""), "5.2")
        input_scale = struct.unpack("<f", struct.pack("<I", reserved))[0] if graded else 0.0
        if graded:
            why = graded_input_problem(profile, input_scale)
            if why:
                raise ProgramError(why, "5.7")
        name_s = name.rstrip(b"\0")
        if b"\0" in name_s:
            raise ProgramError("name field must be NUL-padded ASCII", "5.3")
        try:
            name_s = name_s.decode("ascii")
        except UnicodeDecodeError:
            raise ProgramError("name field is not ASCII", "5.3") from None
        if total > profile.max_program_bytes:
            raise ProgramError(f"program of {total} bytes exceeds the profile {profile.name!r} limit "
                               f"max_program_bytes={profile.max_program_bytes}", "8.1")
        if num_layers < 1:
            raise ProgramError("num_layers=0: a program needs at least one layer", "6.1")
        if num_layers > profile.max_layers:
            raise ProgramError(f"num_layers={num_layers} exceeds the profile {profile.name!r} limit "
                               f"max_layers={profile.max_layers}", "6.2")
        if num_steps < 1:
            raise ProgramError("num_steps=0: the model needs at least one time step", "8.2")
        if dt_ns < 1:
            raise ProgramError("dt_ns=0: the time step must be at least 1 ns", "8.3")
        layers, off, neurons = [], HEADER_SIZE, 0
        for i in range(num_layers):
            layer, off = _decode_record(data, off, f"layer {i}", profile, version, neurons)
            neurons += layer.num_neurons
            if i == 0 and layer.fan_in != n_in:
                raise ProgramError(f"num_inputs={n_in} but layer 0 has fan-in {layer.fan_in}", "7.1")
            if i and layer.fan_in != layers[-1].num_neurons:
                raise ProgramError(f"layer {i}: fan-in {layer.fan_in} does not match the "
                                   f"{layers[-1].num_neurons} neurons of layer {i - 1}", "7.1")
            layers.append(layer)
        if layers[-1].num_neurons != n_out:
            raise ProgramError(f"num_outputs={n_out} but the last layer has {layers[-1].num_neurons} neurons",
                               "7.2")
        if off != total:
            raise ProgramError(f"records end at byte {off}, but the program has {total} bytes", "7.3")
        why = pool_placement_problem([l.kind for l in layers])
        if why:
            raise ProgramError(why, "7.5")
        return cls(profile=profile.name, layers=tuple(layers), num_steps=num_steps, dt_ns=dt_ns,
                   name=name_s, version=version, graded_input=graded, input_scale=input_scale)

    def to_dict(self) -> dict:
        """JSON view for humans: header fields, every layer's arrays, and the compile report."""
        return {"format": "spikeloop-program", "version": self.version, "profile": self.profile,
                "profile_id": self.profile_obj.profile_id, "name": self.name,
                "input": ({"kind": "graded", "input_scale": self.input_scale} if self.graded_input
                          else {"kind": "spikes"}),
                "num_steps": int(self.num_steps), "dt_ns": int(self.dt_ns),
                "num_inputs": self.num_inputs, "num_outputs": self.num_outputs,
                "size_bytes": self.size_bytes(), "crc32": f"0x{self.checksum:08x}",
                "report": self.report, "layers": [l.to_dict() for l in self.layers]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        write_bytes_atomic(path, self.to_bytes())
        return path

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        write_text_atomic(path, self.to_json())
        return path

    @classmethod
    def load(cls, path: str | Path, expected_profile: str | None = None) -> "Program":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"program file not found: {path}")
        return cls.from_bytes(path.read_bytes(), expected_profile)


def crc32_of(blob: bytes) -> int:
    """CRC-32/ISO-HDLC (zlib) of a program blob, skipping its CRC field at bytes 12..15."""
    return zlib.crc32(blob[16:], zlib.crc32(blob[:12])) & 0xFFFFFFFF


def graded_input_problem(profile: Profile, input_scale) -> str | None:
    """Why a program with graded input cannot exist for `profile` (rule 5.7), or None."""
    if not profile.supports_graded_input:
        return (f"profile {profile.name!r} takes spikes only (supports_graded_input=false): graded "
                f"(multi-bit) network input is not supported")
    scale = float(input_scale) if isinstance(input_scale, (int, float, np.floating)) else float("nan")
    if not (np.isfinite(scale) and scale > 0 and np.isfinite(np.float32(scale)) and np.float32(scale) > 0):
        return f"input_scale must be a finite float32 > 0, got {input_scale!r}"
    return None


def pool_placement_problem(kinds: list[str]) -> str | None:
    """Rule 7.5: a pooling record pools a neuron layer's spikes, so it is neither first, last, nor
    right after another pooling record."""
    for i, kind in enumerate(kinds):
        if kind != "pool":
            continue
        if i == 0 or i == len(kinds) - 1 or kinds[i - 1] == "pool":
            where = "first" if i == 0 else "last" if i == len(kinds) - 1 else "right after another pooling record"
            return f"layer {i}: a pooling record cannot be {where} (it pools a neuron layer's spikes)"
    return None


def _check_total(p: Profile, total: int, where: str) -> None:
    if p.max_neurons_total is not None and total > p.max_neurons_total:
        raise ProgramError(f"{where}: the layers hold {total} neurons together, above the profile {p.name!r} "
                           f"limit max_neurons_total={p.max_neurons_total}", "8.5")


def _decode_geometry(data: bytes, off: int, where: str) -> MapGeometry:
    if off + RECORD_HEADER_SIZE + GEOMETRY_SIZE > len(data):
        raise ProgramError(f"{where}: geometry runs past the end of the program", "6.9")
    (c, h, w, co, k, st, pad, pool, pk, ps, reserved) = _GEOMETRY.unpack_from(data, off + RECORD_HEADER_SIZE)
    if reserved:
        raise ProgramError(f"{where}: geometry reserved bytes must be 0", "6.10")
    if pool not in POOL_NAMES:
        raise ProgramError(f"{where}: unknown pool kind {pool}", "6.10")
    try:
        return MapGeometry(c, h, w, co, k, st, pad, POOL_NAMES[pool], pk, ps)
    except ProgramError as e:
        raise ProgramError(f"{where}: {e.message}", "6.10") from None


def _decode_record(data: bytes, off: int, where: str, profile: Profile, version: int = 1,
                   neurons_before: int = 0):
    """One record at `off` (rules 6.3 .. 8.12, in table order) -> (layer, offset after it)."""
    if off + RECORD_HEADER_SIZE > len(data):
        raise ProgramError(f"{where}: record header runs past the end of the program", "6.3")
    (rtype, ntype, reset, w_shift, fan_in, n, rec_shift, max_spikes, reserved,
     size) = _RECORD.unpack_from(data, off)
    known = (RECORD_LAYER,) if version == 1 else (RECORD_LAYER, RECORD_CONV, RECORD_POOL)
    if rtype not in known:
        raise ProgramError(f"{where}: unknown record type {rtype} (version {version} has types "
                           f"{list(known)})", "6.4")
    geometry = None
    if rtype != RECORD_LAYER:
        if not profile.supports_conv:
            raise ProgramError(f"{where}: {'convolution' if rtype == RECORD_CONV else 'pooling'} records are "
                               f"not supported by profile {profile.name!r} (supports_conv=false)", "6.4")
        geometry = _decode_geometry(data, off, where)
        if geometry.is_pool_record != (rtype == RECORD_POOL):
            raise ProgramError(f"{where}: a {'pooling' if rtype == RECORD_POOL else 'convolution'} record needs "
                               f"kernel {'0' if rtype == RECORD_POOL else '>= 1'}", "6.10")
        if fan_in != geometry.fan_in or n != geometry.num_outputs:
            raise ProgramError(f"{where}: fan_in {fan_in} / num_neurons {n} do not match the geometry "
                               f"{geometry.describe()} ({geometry.fan_in} / {geometry.num_outputs})", "6.10")
    if rtype == RECORD_POOL and (ntype or reset or w_shift or rec_shift or max_spikes):
        raise ProgramError(f"{where}: a pooling record has neuron_type, reset_mode, w_shift, rec_shift and "
                           f"max_spikes 0", "6.11")
    if geometry is not None:
        _pool_violation(geometry, profile, where)
    if rtype == RECORD_POOL:
        if reserved:
            raise ProgramError(f"{where}: record reserved bytes must be 0", "5.5")
        layer = PoolProgram(geometry)
        if n > profile.max_neurons_per_layer:
            raise ProgramError(f"{where}: {n} outputs exceed the profile {profile.name!r} limit "
                               f"max_neurons_per_layer={profile.max_neurons_per_layer}", "8.5")
        _check_total(profile, neurons_before + n, where)
        _check_sizes(layer, profile, where)
        if size != layer.record_size():
            raise ProgramError(f"{where}: record_size {size} does not match {layer.record_size()} computed "
                               f"from its fields", "6.7")
        if off + size > len(data):
            raise ProgramError(f"{where}: record runs past the end of the program", "6.8")
        return layer, off + size
    if ntype not in NEURON_TYPE_NAMES:
        raise ProgramError(f"{where}: unknown neuron type id {ntype}", "6.5")
    ntype_name = NEURON_TYPE_NAMES[ntype]
    if geometry is not None and ntype_name not in ("leaky", "synaptic"):
        raise ProgramError(f"{where}: a convolution record takes leaky or synaptic neurons, got {ntype_name!r}",
                           "6.5")
    if reset not in RESET_NAMES:
        raise ProgramError(f"{where}: unknown reset mode id {reset}", "6.6")
    p = profile
    if neuron_family(ntype_name) not in p.neuron_types:
        raise ProgramError(f"{where}: neuron type {ntype_name!r} is not supported by profile {p.name!r} "
                           f"(supported: {list(p.neuron_types)})", "6.5")
    if RESET_NAMES[reset] not in p.reset_modes:
        raise ProgramError(f"{where}: reset {RESET_NAMES[reset]!r} is not supported by profile {p.name!r} "
                           f"(supported: {list(p.reset_modes)})", "6.6")
    if p.max_spikes_per_step == 1 and max_spikes != 0:
        raise ProgramError(f"{where}: max_spikes must be 0 for profile {p.name!r} (one spike per step), "
                           f"got {max_spikes}", "5.4")
    if p.max_spikes_per_step > 1 and not 1 <= max_spikes <= p.max_spikes_per_step:
        raise ProgramError(f"{where}: max_spikes must be in [1, {p.max_spikes_per_step}] for profile "
                           f"{p.name!r}, got {max_spikes}", "5.4")
    if reserved:
        raise ProgramError(f"{where}: record reserved bytes must be 0", "5.5")
    if fan_in < 1 or n < 1:
        raise ProgramError(f"{where}: fan_in and num_neurons must be >= 1, got {fan_in}, {n}", "8.4")
    if n > p.max_neurons_per_layer:
        raise ProgramError(f"{where}: {n} neurons exceed the profile {p.name!r} limit "
                           f"max_neurons_per_layer={p.max_neurons_per_layer}", "8.5")
    _check_total(p, neurons_before + n, where)
    window = geometry.window_fan_in if geometry is not None else 0
    if max(fan_in, window) > p.max_fan_in:
        raise ProgramError(f"{where}: fan-in {max(fan_in, window)} exceeds the profile {p.name!r} limit "
                           f"max_fan_in={p.max_fan_in}", "8.6")
    max_shift = min(MAX_SHIFT, p.max_w_shift)
    _check_w_shift(w_shift, geometry is not None, p, where)
    if rec_shift > max_shift or (rec_shift and ntype_name != "rleaky_dense"):
        raise ProgramError(f"{where}: rec_shift={rec_shift} must be <= {max_shift}, and 0 unless "
                           f"neuron_type is 'rleaky_dense'", "8.8")
    n_weights = n * fan_in if geometry is None else geometry.out_channels * window
    spec = [("weights", "<i1", n_weights), ("bias", "<i4", n), ("threshold", "<i4", n),
            ("decay_mem", "<u2", n)]
    if ntype_name == "synaptic":
        spec.append(("decay_syn", "<u2", n))
    if ntype_name == "rleaky_dense":
        spec.append(("rec_weights", "<i1", n * n))
    if ntype_name == "rleaky_elementwise":
        spec.append(("rec_gain", "<i4", n))
    head = RECORD_HEADER_SIZE + (GEOMETRY_SIZE if geometry is not None else 0)
    expected = head + sum(_pad4(np.dtype(dt).itemsize * c) for _, dt, c in spec)
    if size != expected:
        raise ProgramError(f"{where}: record_size {size} does not match {expected} computed from its fields",
                           "6.7")
    if off + size > len(data):
        raise ProgramError(f"{where}: record runs past the end of the program", "6.8")
    pos, arrays = off + head, {}
    for name, dt, count in spec:
        nbytes = np.dtype(dt).itemsize * count
        arrays[name] = np.frombuffer(data, dtype=dt, count=count, offset=pos).astype(dt[1:])
        pad = data[pos + nbytes: pos + _pad4(nbytes)]
        if any(pad):
            raise ProgramError(f"{where}: padding after {name} must be zero bytes", "5.6")
        pos += _pad4(nbytes)
    if geometry is None:
        arrays["weights"] = arrays["weights"].reshape(n, fan_in)
    else:
        g = geometry
        arrays["weights"] = arrays["weights"].reshape(g.out_channels, g.in_channels, g.kernel, g.kernel)
    if "rec_weights" in arrays:
        arrays["rec_weights"] = arrays["rec_weights"].reshape(n, n)
    layer = LayerProgram(neuron_type=ntype_name, reset=RESET_NAMES[reset], w_shift=w_shift,
                         rec_shift=rec_shift, max_spikes=max_spikes, conv=geometry, **arrays)
    layer.check_profile(p, where)  # the value rules 8.9 .. 8.12 (the others passed above)
    return layer, off + size
