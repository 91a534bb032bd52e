"""The vendor simulators as `Device` backends: URIs `lava` (profile loihi) and `xylosim` (xylo-imu,
xylo-audio2), so anything taking a device URI (`spikeloop deploy --device lava`) runs on them.

    with open_device("lava", profile="loihi") as dev:      # "lava?copies=100&connection=sparse"
        dev.load(program)
        res = dev.run(spikes)                              # spikes: [T, B, N_in] {0, 1}

`lava` runs each `run` call as one call of `hw/vendor/lava_runner.py` in the Lava side venv (created
on `open` when missing, `hw/vendor/lava_env.py`), with `copies` samples side by side (default
`hw.vendor.lava.FAST`); Lava's one-step-per-layer delay is undone, so the traces are in spikeloop's
time. `xylosim` runs xylosim in-process (`hw/vendor/xylo.py`; needs the `vendor` extra). Both give
the `RunResult` the `sim` device gives (output spikes, per-layer spike and synop counters counted
the way `sim` counts them, membranes and layer spikes when probed), computed from the vendor's own
recordings. Registered in `hw.device.LAZY_BACKENDS`.
"""

from __future__ import annotations

import numpy as np
import torch

from ..device import (Device, DeviceError, DeviceInfo, DeviceURI, RunResult, as_program, check_input_spikes,
                      register_backend)
from ..profiles import get_profile
from ..program import Program
from .xylo import XYLOSIM_PROFILES


class _VendorDevice(Device):
    """What both backends share: open state, the loaded program, profile checks."""

    backend = ""
    profiles: tuple[str, ...] = ()

    def __init__(self, profile: str):
        if get_profile(profile).name not in self.profiles:
            raise ValueError(f"the {self.backend} device runs profile {' or '.join(self.profiles)}, not {profile!r} "
                             f"(e.g. spikeloop deploy --device {self.backend} --profile {self.profiles[0]})")
        self.profile = get_profile(profile)
        self.program: Program | None = None
        self._open = False

    def _check(self) -> Program:
        if not self._open:
            raise DeviceError(f"{self.backend} device is not open (use open() or a with block)")
        if self.program is None:
            raise DeviceError("no program loaded: call load(program) first")
        return self.program

    def load(self, program: Program | bytes) -> None:
        if not self._open:
            raise DeviceError(f"{self.backend} device is not open (use open() or a with block)")
        self.program = as_program(program, self.profile.name)

    def reset(self) -> None:
        """Every run starts each sample from the reset state: nothing to clear."""
        if not self._open:
            raise DeviceError(f"{self.backend} device is not open (use open() or a with block)")

    def close(self) -> None:
        self._open = False
        self.program = None


def _result(layer_spikes: dict, layer_inputs: dict, membranes: dict, probe: bool) -> RunResult:
    """RunResult from per-layer spikes [T, B, N] and the inputs each layer received [T, B, M]
    (synops = input events × layer width, as `sim` counts them)."""
    L = len(layer_spikes)
    counters = {k: {"spikes": int(np.asarray(layer_spikes[k], dtype=np.int64).sum()),
                    "synops": int(np.asarray(layer_inputs[k], dtype=np.int64).sum()) * layer_spikes[k].shape[2]}
                for k in range(L)}
    out = torch.as_tensor(np.ascontiguousarray(layer_spikes[L - 1]).astype(np.uint8))
    if not probe:
        return RunResult(out, counters)
    return RunResult(out, counters, {k: torch.as_tensor(np.asarray(v).astype(np.int32)) for k, v in membranes.items()},
                     {k: torch.as_tensor(np.asarray(v).astype(np.uint8)) for k, v in layer_spikes.items()})


class LavaDevice(_VendorDevice):
    """A `loihi` program on Lava 0.10.0's bit-accurate models (`hw.vendor.lava`). copies, connection:
    samples side by side per Lava network (`run_lava_layers`)."""

    backend = "lava"
    profiles = ("loihi",)

    def __init__(self, profile: str = "loihi", copies: int | None = None, connection: str | None = None):
        from .lava import FAST
        super().__init__(profile)
        self.copies = FAST["copies"] if copies is None else copies
        self.connection = FAST["connection"] if connection is None else connection
        if not isinstance(self.copies, int) or self.copies < 1:
            raise ValueError(f"lava device: copies must be an integer >= 1, got {self.copies!r}")
        if self.connection not in ("dense", "sparse"):
            raise ValueError(f"lava device: connection must be dense or sparse, got {self.connection!r}")
        self._env = None
        self._layers = None

    def open(self) -> "LavaDevice":
        if self._open:
            return self
        from .lava_env import LavaEnvError, ensure_lava_env
        try:
            self._env = ensure_lava_env()
        except LavaEnvError as e:
            raise DeviceError(f"the lava device needs the Lava side venv: {e}") from None
        self._open = True
        return self

    def info(self) -> DeviceInfo:
        v = dict(self._env.versions) if self._env else {}
        return DeviceInfo("lava", self.profile.name, f"lava-nc {v.get('lava-nc', '?')} Loihi1SimCfg fixed_pt",
                          self.profile.capacities(), {"copies": self.copies, "connection": self.connection,
                                                      "versions": v})

    def load(self, program: Program | bytes) -> None:
        from .lava import program_jobs
        super().load(program)
        # the mapping and its limits (LIF processes per layer) are checked here, not at the first run
        self._layers = program_jobs([(self.program, np.zeros((1, 1, self.program.num_inputs), np.uint8))])[0][0]

    def run(self, spikes: torch.Tensor, probe: bool = False) -> RunResult:
        """spikes: [T, B, N_in] {0, 1} -> RunResult in spikeloop's time (Lava's delay undone)."""
        from .lava import run_lava_layers
        prog = self._check()
        x = check_input_spikes(spikes, prog.num_inputs).cpu().numpy()
        res = run_lava_layers([(self._layers, x)], record_u=False, python=self._env.python,
                              copies=self.copies, connection=self.connection)[0]
        spk = res["layer_spikes"]
        inputs = {0: x} | {k: spk[k - 1] for k in range(1, len(spk))}
        return _result(spk, inputs, res["membranes"], probe)


class XylosimDevice(_VendorDevice):
    """A `xylo-imu` / `xylo-audio2` program on xylosim 0.1.3 (`hw.vendor.xylo`), in-process."""

    backend = "xylosim"
    profiles = XYLOSIM_PROFILES

    def __init__(self, profile: str = "xylo-imu"):
        super().__init__(profile)
        self._version = None

    def open(self) -> "XylosimDevice":
        if self._open:
            return self
        from .xylo import XylosimUnavailable, xylosim_version
        try:
            self._version = xylosim_version()
        except XylosimUnavailable as e:
            raise DeviceError(f"the xylosim device needs xylosim: {e}") from None
        self._open = True
        return self

    def info(self) -> DeviceInfo:
        return DeviceInfo("xylosim", self.profile.name, f"xylosim {self._version or '?'} xylosim.v2.XyloLayer",
                          self.profile.capacities(), {"chip": self.profile.extra.get("chip", {})})

    def run(self, spikes: torch.Tensor, probe: bool = False) -> RunResult:
        """spikes: [T, B, N_in] {0, 1} -> RunResult (output spike counts: the readout's 0/1)."""
        from .xylo import run_on_xylosim
        prog = self._check()
        x = check_input_spikes(spikes, prog.num_inputs).cpu().numpy()
        res = run_on_xylosim(prog, x)
        spk = res["layer_spikes"]
        # hidden layers 2.. and the readout receive the previous layer's spikes of the step before
        inputs = {0: x} | {k: np.concatenate([np.zeros_like(spk[k - 1][:1]), spk[k - 1][:-1]])
                           for k in range(1, len(spk))}
        return _result(spk, inputs, res["membranes"], probe)


def _lava_factory(uri: DeviceURI, profile: str = "loihi", **kwargs) -> LavaDevice:
    if uri.target:
        raise ValueError(f"lava URI {uri.raw!r}: no target expected (use lava?copies=N&connection=sparse)")
    params = dict(uri.params)
    kw = {}
    if "copies" in params:
        try:
            kw["copies"] = int(params.pop("copies"))
        except ValueError:
            raise ValueError(f"lava URI {uri.raw!r}: copies must be an integer") from None
    if "connection" in params:
        kw["connection"] = params.pop("connection")
    if params:
        raise ValueError(f"lava URI {uri.raw!r}: unknown parameters {sorted(params)} (known: copies, connection)")
    if kwargs:
        raise TypeError(f"lava device got unexpected options {sorted(kwargs)}")
    return LavaDevice(profile, **kw)


def _xylosim_factory(uri: DeviceURI, profile: str = "xylo-imu", **kwargs) -> XylosimDevice:
    if uri.target or uri.params:
        raise ValueError(f"xylosim URI {uri.raw!r} takes no target or parameters")
    if kwargs:
        raise TypeError(f"xylosim device got unexpected options {sorted(kwargs)}")
    return XylosimDevice(profile)


register_backend("lava", _lava_factory)
register_backend("xylosim", _xylosim_factory)
