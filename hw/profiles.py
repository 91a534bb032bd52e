"""Chip profiles: the limits and number formats of each target, read from `hw/profiles/*.json`."""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

PROFILE_FORMAT_VERSION = 1
DECAY_KINDS = ("q12_multiplicative", "bitshift")


@dataclass(frozen=True)
class LayerRole:
    """What layer k of a program may be on a chip of fixed shape (Xylo: a hidden pool fed by 16
    input channels, then a readout): its fan-in and neuron count, its fixed spike cap, and by how
    many steps its input lags the previous layer's spikes (Xylo's readout reads the hidden spikes
    of the previous step)."""

    role: str
    max_neurons: int
    max_spikes: int
    max_fan_in: int | None = None    # None: whatever the previous layer has
    input_delay_steps: int = 0
    note: str | None = None          # why the limits are what they are (added to refusals)
    max_count: int = 1               # > 1: 0..max_count consecutive layers take this role (at most one such role)
    pool_neurons: int | None = None  # layers of roles with a pool share its neurons (Xylo's hidden pool)
    shared_w_shift: bool = False     # all layers of this role have one w_shift (Xylo's one weight_shift_rec)

    def __post_init__(self):
        for name in ("max_neurons", "max_spikes"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"layer role {self.role!r}: {name} must be a positive integer, got {v!r}")
        if self.max_fan_in is not None and (not isinstance(self.max_fan_in, int) or self.max_fan_in < 1):
            raise ValueError(f"layer role {self.role!r}: max_fan_in must be a positive integer or None, "
                             f"got {self.max_fan_in!r}")
        if not isinstance(self.input_delay_steps, int) or self.input_delay_steps not in (0, 1):
            raise ValueError(f"layer role {self.role!r}: input_delay_steps must be 0 or 1, "
                             f"got {self.input_delay_steps!r}")
        if not isinstance(self.max_count, int) or isinstance(self.max_count, bool) or self.max_count < 1:
            raise ValueError(f"layer role {self.role!r}: max_count must be a positive integer, got {self.max_count!r}")
        if self.pool_neurons is not None and (not isinstance(self.pool_neurons, int) or self.pool_neurons < 1):
            raise ValueError(f"layer role {self.role!r}: pool_neurons must be a positive integer or None, "
                             f"got {self.pool_neurons!r}")

    @property
    def repeated(self) -> bool:
        """Taken by 0..max_count consecutive layers (Xylo's hidden layers after the first)."""
        return self.max_count > 1

    def to_dict(self) -> dict:
        defaults = {"max_count": 1, "shared_w_shift": False}
        return {k: getattr(self, k) for k in self.__dataclass_fields__
                if getattr(self, k) is not None and not (k in defaults and getattr(self, k) == defaults[k])}


@dataclass(frozen=True)
class Profile:
    """One chip's arithmetic and capacity limits (docs/fixed_point.md defines the arithmetic).

    Ranges of program values follow from the bit widths: `threshold_max`, `bias_min/bias_max`,
    `decay_max` and `max_w_shift` are what `Program` validation checks against. A chip of fixed
    shape (xylo-imu, xylo-audio2) lists the `LayerRole`s its layers take in order (one of them may
    repeat: `roles_for`), which programs must match, with the shared pool and shift of
    `pool_violation` (`role_violation`, rule 7.4 of docs/program_format.md). Several profiles may share one
    `arithmetic` (the xylosim chips do)."""

    name: str
    profile_id: int
    description: str
    neuron_types: tuple[str, ...]
    reset_modes: tuple[str, ...]
    supports_conv: bool
    max_layers: int
    max_neurons_per_layer: int
    max_fan_in: int
    max_program_bytes: int
    weight_bits: int
    max_w_shift: int
    state_bits: int
    decay: dict
    max_spikes_per_step: int
    threshold_bits: int | None = None       # signed width of the threshold field (mcu, xylo-*)
    threshold_mant_bits: int | None = None  # loihi: unsigned mantissa width, used << 6
    bias_bits: int | None = None            # signed width of the bias field (mcu, xylo-*)
    bias_mant_bits: int | None = None       # loihi: signed mantissa width ...
    max_bias_exp: int | None = None         # ... times 2**exp, exp in [0, max_bias_exp]
    arithmetic: str = ""                    # the hw.fixed_point.ARITHMETIC entry; "" = the name
    deprecated_names: tuple[str, ...] = ()  # old names that still load this profile
    layer_roles: tuple[LayerRole, ...] = ()  # fixed-shape chips: the layers' roles in order (see LayerRole)
    unsupported_reasons: dict = field(default_factory=dict)  # neuron family -> why it cannot run
    supports_graded_input: bool = False     # program format v2 GRADED_INPUT: int8 network input
    max_neurons_total: int | None = None    # all records' num_neurons together (state memory); None: no pool limit
    pool_kinds: tuple[str, ...] = ("max", "sum")  # pooling a supports_conv chip does (records, conv pools)
    conv_max_w_shift: int | None = None     # w_shift limit of convolution records; None: max_w_shift
    alias_of: str | None = None             # set on the object get_profile returns for a deprecated name
    version: int = PROFILE_FORMAT_VERSION
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.version != PROFILE_FORMAT_VERSION:
            raise ValueError(f"profile {self.name!r}: version {self.version} is not supported "
                             f"(this spikeloop reads profile version {PROFILE_FORMAT_VERSION})")
        object.__setattr__(self, "neuron_types", tuple(self.neuron_types))
        object.__setattr__(self, "reset_modes", tuple(self.reset_modes))
        object.__setattr__(self, "deprecated_names", tuple(self.deprecated_names))
        object.__setattr__(self, "pool_kinds", tuple(self.pool_kinds))
        if not set(self.pool_kinds) <= {"max", "sum"}:
            raise ValueError(f"profile {self.name!r}: pool_kinds must be a subset of ['max', 'sum'], "
                             f"got {list(self.pool_kinds)}")
        if self.conv_max_w_shift is not None and not 0 <= self.conv_max_w_shift <= self.max_w_shift:
            raise ValueError(f"profile {self.name!r}: conv_max_w_shift must be in [0, max_w_shift], "
                             f"got {self.conv_max_w_shift!r}")
        object.__setattr__(self, "arithmetic", self.arithmetic or self.name)
        object.__setattr__(self, "layer_roles", tuple(r if isinstance(r, LayerRole) else LayerRole(**r)
                                                      for r in self.layer_roles))
        if sum(r.repeated for r in self.layer_roles) > 1:
            raise ValueError(f"profile {self.name!r}: at most one layer role may have max_count > 1")
        if self.layer_roles and sum(r.max_count for r in self.layer_roles) != self.max_layers:
            raise ValueError(f"profile {self.name!r}: max_layers must equal the layers the layer_roles hold "
                             f"({sum(r.max_count for r in self.layer_roles)}), got {self.max_layers}")
        for name in ("profile_id", "max_layers", "max_neurons_per_layer", "max_fan_in",
                     "max_program_bytes", "weight_bits", "state_bits", "max_spikes_per_step"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"profile {self.name!r}: {name} must be a positive integer, got {v!r}")
        if self.decay.get("kind") not in DECAY_KINDS:
            raise ValueError(f"profile {self.name!r}: decay.kind must be one of {DECAY_KINDS}, "
                             f"got {self.decay.get('kind')!r}")
        if (self.threshold_bits is None) == (self.threshold_mant_bits is None):
            raise ValueError(f"profile {self.name!r}: give exactly one of threshold_bits, threshold_mant_bits")
        if (self.bias_bits is None) == (self.bias_mant_bits is None):
            raise ValueError(f"profile {self.name!r}: give exactly one of bias_bits, bias_mant_bits")
        if self.bias_mant_bits is not None and self.max_bias_exp is None:
            raise ValueError(f"profile {self.name!r}: bias_mant_bits needs max_bias_exp")

    @property
    def threshold_max(self) -> int:
        if self.threshold_bits is not None:
            return 2 ** (self.threshold_bits - 1) - 1
        return 2 ** self.threshold_mant_bits - 1

    @property
    def bias_max(self) -> int:
        if self.bias_bits is not None:
            return 2 ** (self.bias_bits - 1) - 1
        return (2 ** (self.bias_mant_bits - 1) - 1) << self.max_bias_exp

    @property
    def bias_min(self) -> int:
        return -2 ** (self.bias_bits - 1) if self.bias_bits is not None else -self.bias_max

    @property
    def decay_max(self) -> int:
        return int(self.decay["max"] if self.decay["kind"] == "q12_multiplicative" else self.decay["max_dash"])

    @property
    def conv_w_shift_max(self) -> int:
        """The largest w_shift of a convolution record (loihi: 0, Lava's Conv has no weight exponent)."""
        return self.max_w_shift if self.conv_max_w_shift is None else self.conv_max_w_shift

    @property
    def canonical_name(self) -> str:
        """The profile's own name (for an object loaded by a deprecated name, the name it maps to)."""
        return self.alias_of or self.name

    def role_violation(self, index: int, num_layers: int, fan_in: int, num_neurons: int,
                       max_spikes: int) -> str | None:
        """Why layer `index` of a `num_layers`-layer program does not fit this chip's fixed shape
        (`layer_roles`), or None (also None for profiles without roles)."""
        if not self.layer_roles:
            return None
        roles = self.roles_for(num_layers)
        if roles is None:
            names = ", ".join(r.role + (f" (0..{r.max_count} layers)" if r.repeated else "") for r in self.layer_roles)
            fixed = sum(not r.repeated for r in self.layer_roles)
            many = fixed != self.max_layers
            return (f"profile {self.name!r} runs " + (f"{fixed} to {self.max_layers}" if many else f"exactly {fixed}")
                    + f" layers ({names}), got {num_layers}")
        r = roles[index]
        if r.max_fan_in is not None and fan_in > r.max_fan_in:
            what = "input channels" if index == 0 else f"{roles[index - 1].role} neurons it can read"
            return (f"layer {index} ({r.role}): fan-in {fan_in} exceeds the {r.max_fan_in} {what} on "
                    f"profile {self.name!r}" + (f" ({r.note})" if r.note and index else ""))
        if num_neurons > r.max_neurons:
            return (f"layer {index} ({r.role}): {num_neurons} neurons exceed the profile {self.name!r} limit of "
                    f"{r.max_neurons} {r.role} neurons" + (f" ({r.note})" if r.note else ""))
        if max_spikes != r.max_spikes:
            return (f"layer {index} ({r.role}): max_spikes must be {r.max_spikes} on profile {self.name!r} "
                    f"(the chip's fixed spike cap), got {max_spikes}")
        return None

    def roles_for(self, num_layers: int) -> tuple[LayerRole, ...] | None:
        """The role of each layer of a `num_layers`-layer program (the repeated role, if any, takes
        the layers the fixed roles leave), or None if no assignment fits (or no roles)."""
        fixed = sum(not r.repeated for r in self.layer_roles)
        extra = num_layers - fixed
        if not self.layer_roles or extra < 0 or extra > sum(r.max_count for r in self.layer_roles if r.repeated):
            return None
        return tuple(x for r in self.layer_roles for x in ([r] * extra if r.repeated else [r]))

    def pool_violation(self, num_neurons: list[int], w_shifts: list[int]) -> str | None:
        """Why a program with these layer sizes and shifts does not fit the chip's shared resources:
        layers of roles with `pool_neurons` share that many neurons; layers of a `shared_w_shift`
        role must have one w_shift. None if it fits (or the number of layers has no roles)."""
        roles = self.roles_for(len(num_neurons)) if self.layer_roles else None
        if roles is None:
            return None
        pooled = [k for k, r in enumerate(roles) if r.pool_neurons is not None]
        if pooled:
            cap = min(roles[k].pool_neurons for k in pooled)
            total = sum(num_neurons[k] for k in pooled)
            if total > cap:
                return (f"layers {pooled} ({' + '.join(str(num_neurons[k]) for k in pooled)} = {total} neurons) "
                        f"exceed the {cap}-neuron hidden pool of profile {self.name!r}")
        shared = [k for k, r in enumerate(roles) if r.shared_w_shift]
        if len({w_shifts[k] for k in shared}) > 1:
            return (f"layers {shared} ({roles[shared[0]].role}) must share one w_shift on profile {self.name!r} "
                    f"(the chip's one weight shift for the recurrent matrix), got {[w_shifts[k] for k in shared]}")
        return None

    def capacities(self) -> dict:
        """The limits a device reports in `DeviceInfo.capacities`."""
        caps = {"max_layers": self.max_layers, "max_neurons_per_layer": self.max_neurons_per_layer,
                "max_fan_in": self.max_fan_in, "max_program_bytes": self.max_program_bytes,
                "max_spikes_per_step": self.max_spikes_per_step}
        return caps | ({"max_neurons_total": self.max_neurons_total} if self.max_neurons_total else {})

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "extra"}
        d["neuron_types"], d["reset_modes"] = list(self.neuron_types), list(self.reset_modes)
        d["deprecated_names"], d["pool_kinds"] = list(self.deprecated_names), list(self.pool_kinds)
        d["layer_roles"] = [r.to_dict() for r in self.layer_roles]
        empty = {"deprecated_names": [], "layer_roles": [], "unsupported_reasons": {}}
        return {k: v for k, v in d.items() if v is not None and not (k in empty and v == empty[k])} | self.extra

    @classmethod
    def from_dict(cls, d: dict) -> "Profile":
        known = set(cls.__dataclass_fields__) - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in known},
                   extra={k: v for k, v in d.items() if k not in known})


def _load_all() -> dict[str, Profile]:
    out = {}
    for entry in sorted((Path(__file__).parent / "profiles").glob("*.json")):
        p = Profile.from_dict(json.loads(entry.read_text()))
        if p.name + ".json" != entry.name:
            raise ValueError(f"profile file {entry.name} holds profile {p.name!r}")
        out[p.name] = p
    return out


def _aliases(profiles: dict[str, Profile]) -> dict[str, Profile]:
    """deprecated name -> a copy of its profile under that name (same id and arithmetic), so that
    programs and devices made with the old name keep working and their messages use it."""
    out = {}
    for p in profiles.values():
        for old in p.deprecated_names:
            if old in profiles or old in out:
                raise ValueError(f"deprecated profile name {old!r} of {p.name!r} is taken")
            out[old] = dataclasses.replace(
                p, name=old, alias_of=p.name, deprecated_names=(),
                description=f"deprecated name of profile {p.name!r} (kept so that old programs and "
                            f"commands run unchanged): {p.description}")
    return out


PROFILES: dict[str, Profile] = _load_all()
PROFILE_BY_ID: dict[int, Profile] = {p.profile_id: p for p in PROFILES.values()}
DEPRECATED_PROFILES: dict[str, Profile] = _aliases(PROFILES)
_warned: set[str] = set()


def get_profile(name: str | Profile) -> Profile:
    """The profile called `name` (mcu, loihi, xylo-like, xylo-imu, xylo-audio2; the deprecated name
    xylo gives xylo-like under its old name, with a FutureWarning: shown to CLI users too)."""
    if isinstance(name, Profile):
        return name
    if name in DEPRECATED_PROFILES:
        p = DEPRECATED_PROFILES[name]
        if name not in _warned:  # once per process: programs look their profile up on every check
            _warned.add(name)
            warnings.warn(f"chip profile {name!r} is deprecated: it is {p.alias_of!r}, a Xylo-like profile that is "
                          f"not xylosim; the chips are 'xylo-imu' and 'xylo-audio2'", FutureWarning,
                          stacklevel=2)
        return p
    if name not in PROFILES:
        raise ValueError(f"unknown chip profile {name!r}; known: {sorted(PROFILES)}")
    return PROFILES[name]
