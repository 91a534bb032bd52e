"""The one `Device` interface every backend implements, and the URI registry that opens them.

    with open_device("sim", profile="mcu") as dev:       # or "sim:cuda", "emulator",
        dev.load(program)                                 # "serial:///dev/ttyACM0?baud=115200"
        result = dev.run(spikes)                          # spikes: [T, B, N_in] {0, 1}

A backend registers a factory for its URI scheme with `register_backend(scheme, factory)`; the
factory receives the parsed `DeviceURI` and the keyword arguments of `open_device` and returns an
unopened `Device`. Schemes whose module is not imported yet are imported on first use
(`LAZY_BACKENDS`), so `open_device("emulator")` works without importing `hw.emulator` first.
"""

from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import parse_qsl, urlsplit

import torch

from .profiles import get_profile
from .program import Program

DEVICE_API_VERSION = 1


@dataclass(frozen=True)
class DeviceInfo:
    """What a device is and can hold. capacities: the profile limits (`Profile.capacities()`)."""

    backend: str            # "sim", "sim:cuda", "emulator", "serial", ...
    profile: str            # chip profile name (hw/profiles: mcu, loihi, xylo-imu, ...)
    firmware_version: str   # firmware / simulator version string
    capacities: dict
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("backend", "profile", "firmware_version"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"DeviceInfo.{name} must be a non-empty string")

    def to_dict(self) -> dict:
        return {"backend": self.backend, "profile": self.profile, "firmware_version": self.firmware_version,
                "capacities": dict(self.capacities), **({"extra": self.extra} if self.extra else {})}


@dataclass
class RunResult:
    """The result of `Device.run` on [T, B, N_in] input spikes.

    output_spikes: [T, B, N_out] uint8 (0/1; spike counts for multi-spike profiles such as xylo).
    counters: {program layer index: {"spikes": int, "synops": int}} summed over T and B.
    membranes: {program layer index: [T, B, N] int32 membrane after each step} when probed, else None.
    layer_spikes: {program layer index: [T, B, N] uint8} when probed, else None."""

    output_spikes: torch.Tensor
    counters: dict[int, dict[str, int]]
    membranes: dict[int, torch.Tensor] | None = None
    layer_spikes: dict[int, torch.Tensor] | None = None

    @property
    def spike_counts(self) -> torch.Tensor:
        """[B, N_out] output spike counts (int64)."""
        return self.output_spikes.to(torch.int64).sum(0)

    def total(self, key: str) -> int:
        return int(sum(c[key] for c in self.counters.values()))


class DeviceError(RuntimeError):
    """A device failed (not open, no program loaded, link lost...)."""


class Device(abc.ABC):
    """A neuromorphic target running device programs. Use as a context manager:
    `open()` on enter, `close()` on exit. Every sample in `run` starts from the reset state."""

    uri: str = ""

    @abc.abstractmethod
    def open(self) -> "Device":
        """Connect/allocate; returns self. Opening an open device does nothing (so both
        `with open_device(uri) as dev` and `with make_device(uri) as dev` work)."""

    @abc.abstractmethod
    def info(self) -> DeviceInfo:
        """Capabilities, profile, firmware version."""

    @abc.abstractmethod
    def load(self, program: Program | bytes) -> None:
        """Load a program (a `Program` or its exact bytes); the device validates it."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Reset all neuron state (the loaded program stays)."""

    @abc.abstractmethod
    def run(self, spikes: torch.Tensor, probe: bool = False) -> RunResult:
        """spikes: [T, B, N_in] {0, 1} -> RunResult with output_spikes [T, B, N_out]."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the device; safe to call twice."""

    def __enter__(self) -> "Device":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()


def _check_shape(x, num_inputs: int, what: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor [T, B, N_in], got {type(x).__name__}")
    if x.dim() != 3 or x.shape[2] != num_inputs:
        raise ValueError(f"{what} must be [T, B, {num_inputs}] (the program's inputs), got {list(x.shape)}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{what} must have T >= 1 and B >= 1, got {list(x.shape)}")


def check_input_spikes(spikes: torch.Tensor, num_inputs: int) -> torch.Tensor:
    """Validate [T, B, N_in] input spikes with values in {0, 1}; returns them as uint8."""
    _check_shape(spikes, num_inputs, "spikes")
    if spikes.dtype in (torch.uint8, torch.bool):
        bad = spikes.dtype == torch.uint8 and bool(spikes.amax() > 1)  # unsigned: only > 1 is wrong
    else:
        bad = bool(((spikes != 0) & (spikes != 1)).any())  # also catches NaN
    if bad:
        raise ValueError("spikes must be 0 or 1")
    return spikes.to(torch.uint8)


def check_graded_input(values: torch.Tensor, num_inputs: int) -> torch.Tensor:
    """Validate [T, B, N_in] graded input (program format v2 GRADED_INPUT): integers in [-128, 127]
    (any integer dtype, or floats holding integers; make them from currents with
    `hw.fixed_point.quantize_input`); returns them as int8."""
    _check_shape(values, num_inputs, "graded input")
    if values.dtype == torch.bool:
        return values.to(torch.int8)
    if values.dtype.is_floating_point and not bool((values == values.round()).all()):  # also NaN
        raise ValueError("graded input must hold integers (quantize currents with "
                         "hw.fixed_point.quantize_input and the program's input_scale)")
    if values.numel() and (bool(values.amin() < -128) or bool(values.amax() > 127)):
        raise ValueError(f"graded input must be int8 values in [-128, 127], got "
                         f"[{values.amin().item()}, {values.amax().item()}]")
    return values.to(torch.int8)


def check_input(x: torch.Tensor, program: Program) -> torch.Tensor:
    """The input a device runs `program` on: spikes (uint8) or, with graded input, int8 values."""
    if program.graded_input:
        return check_graded_input(x, program.num_inputs)
    return check_input_spikes(x, program.num_inputs)


def as_program(program: Program | bytes | bytearray, expected_profile: str | None = None) -> Program:
    """A `Program` from a Program or its bytes (validated; `ProgramError` if bad)."""
    if isinstance(program, Program):
        # by id, as Program.from_bytes does: a device opened under a deprecated name (xylo) runs
        # its profile's programs
        if expected_profile is not None and \
                get_profile(program.profile).profile_id != get_profile(expected_profile).profile_id:
            from .program import ProgramError
            raise ProgramError(f"program is for profile {program.profile!r}, this device runs "
                               f"{expected_profile!r}", "5.1")
        return program
    if isinstance(program, (bytes, bytearray, memoryview)):
        return Program.from_bytes(bytes(program), expected_profile)
    raise TypeError(f"load() takes a Program or its bytes, got {type(program).__name__}")


@dataclass(frozen=True)
class DeviceURI:
    """A parsed device URI: `sim`, `sim:cuda`, `emulator`, `serial:///dev/ttyACM0?baud=115200`.

    scheme: the backend name; target: what follows the scheme (`cuda`, `/dev/ttyACM0`, or "");
    params: the query parameters as strings."""

    raw: str
    scheme: str
    target: str = ""
    params: dict = field(default_factory=dict)


def parse_uri(uri: str) -> DeviceURI:
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError(f"device URI must be a non-empty string, got {uri!r}")
    uri = uri.strip()
    if ":" not in uri:
        name, _, query = uri.partition("?")  # `sim?chip=7&mismatch=0.15`: options without a target
        return DeviceURI(uri, name.lower(), "", dict(parse_qsl(query, keep_blank_values=True)))
    parts = urlsplit(uri)
    if not parts.scheme:
        raise ValueError(f"device URI {uri!r} has no scheme (e.g. sim, sim:cuda, serial:///dev/ttyACM0)")
    target = parts.netloc + parts.path if parts.netloc else parts.path
    return DeviceURI(uri, parts.scheme.lower(), target, dict(parse_qsl(parts.query, keep_blank_values=True)))


DeviceFactory = Callable[..., Device]
_BACKENDS: dict[str, DeviceFactory] = {}
# Schemes implemented in modules that register themselves on import.
LAZY_BACKENDS: dict[str, str] = {"sim": "hw.sim", "emulator": "hw.emulator", "serial": "hw.serial",
                                 "lava": "hw.vendor.devices", "xylosim": "hw.vendor.devices"}


def register_backend(scheme: str, factory: DeviceFactory) -> None:
    """Make `open_device("<scheme>...")` call `factory(uri: DeviceURI, **kwargs) -> Device`."""
    if not isinstance(scheme, str) or not scheme.isidentifier():
        raise ValueError(f"backend scheme must be an identifier, got {scheme!r}")
    _BACKENDS[scheme.lower()] = factory


def backends() -> list[str]:
    return sorted(set(_BACKENDS) | set(LAZY_BACKENDS))


def _factory(scheme: str) -> DeviceFactory:
    if scheme not in _BACKENDS and scheme in LAZY_BACKENDS:
        try:
            importlib.import_module(LAZY_BACKENDS[scheme])
        except ModuleNotFoundError as e:
            raise ValueError(f"device backend {scheme!r} is not available ({e})") from None
    if scheme not in _BACKENDS:
        raise ValueError(f"unknown device backend {scheme!r}; known: {backends()}")
    return _BACKENDS[scheme]


def make_device(uri: str, **kwargs) -> Device:
    """The (unopened) device for `uri`."""
    parsed = parse_uri(uri)
    dev = _factory(parsed.scheme)(parsed, **kwargs)
    dev.uri = parsed.raw
    return dev


def open_device(uri: str, **kwargs) -> Device:
    """Open the device for `uri` (e.g. `open_device("sim", profile="mcu")`); use it in a `with`."""
    return make_device(uri, **kwargs).open()
