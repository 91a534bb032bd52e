"""Chip profiles: the limits and number formats of each target, read from `hw/profiles/*.json`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

PROFILE_FORMAT_VERSION = 1
DECAY_KINDS = ("q12_multiplicative", "bitshift")


@dataclass(frozen=True)
class Profile:
    """One chip's arithmetic and capacity limits (docs/fixed_point.md defines the arithmetic).

    Ranges of program values follow from the bit widths: `threshold_max`, `bias_min/bias_max`,
    `decay_max` and `max_w_shift` are what `Program` validation checks against."""

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
    threshold_bits: int | None = None       # signed width of the threshold field (mcu, xylo)
    threshold_mant_bits: int | None = None  # loihi: unsigned mantissa width, used << 6
    bias_bits: int | None = None            # signed width of the bias field (mcu, xylo)
    bias_mant_bits: int | None = None       # loihi: signed mantissa width ...
    max_bias_exp: int | None = None         # ... times 2**exp, exp in [0, max_bias_exp]
    version: int = PROFILE_FORMAT_VERSION
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.version != PROFILE_FORMAT_VERSION:
            raise ValueError(f"profile {self.name!r}: version {self.version} is not supported "
                             f"(this spikeloop reads profile version {PROFILE_FORMAT_VERSION})")
        object.__setattr__(self, "neuron_types", tuple(self.neuron_types))
        object.__setattr__(self, "reset_modes", tuple(self.reset_modes))
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

    def capacities(self) -> dict:
        """The limits a device reports in `DeviceInfo.capacities`."""
        return {"max_layers": self.max_layers, "max_neurons_per_layer": self.max_neurons_per_layer,
                "max_fan_in": self.max_fan_in, "max_program_bytes": self.max_program_bytes,
                "max_spikes_per_step": self.max_spikes_per_step}

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "extra"}
        d["neuron_types"], d["reset_modes"] = list(self.neuron_types), list(self.reset_modes)
        return {k: v for k, v in d.items() if v is not None} | self.extra

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


PROFILES: dict[str, Profile] = _load_all()
PROFILE_BY_ID: dict[int, Profile] = {p.profile_id: p for p in PROFILES.values()}


def get_profile(name: str | Profile) -> Profile:
    """The profile called `name` (mcu, loihi, xylo)."""
    if isinstance(name, Profile):
        return name
    if name not in PROFILES:
        raise ValueError(f"unknown chip profile {name!r}; known: {sorted(PROFILES)}")
    return PROFILES[name]
