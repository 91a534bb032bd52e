"""The `emulator` device: the board firmware compiled for this computer (firmware_stubs/, host
port), started on a pseudo-terminal and driven through pyserial by a `SerialDevice` — so the
emulator exercises the same serial path, protocol and firmware code as a real board.

    with open_device("emulator") as dev:     # or "emulator:asan" (the ASan+UBSan build), and
                                             # options: "emulator:host?frame_payload=256&timeout_s=2"
        dev.load(program); result = dev.run(spikes)

The firmware is built with `make` when its binary is missing or older than its sources
(`firmware_binary`). Set SPIKELOOP_FIRMWARE_DIR to use a firmware tree elsewhere.
`emulator?chip=7&mismatch=0.15&noise=0.02` boots the firmware as that non-ideal chip
(docs/fixed_point.md, "Non-ideal chips"; the flags `--chip`/`--sigma-q16` of the host port): the
host side learns nothing of it, as with a real board.
"""

from __future__ import annotations

import fcntl
import os
import select
import subprocess
import tempfile
import time
from pathlib import Path

from hw.device import DeviceError, register_backend
from hw.nonideal import ChipModel
from hw.serial.device import SerialDevice, check_profile

VARIANTS = {"host": "spikeloop-fw-host", "asan": "spikeloop-fw-host-asan"}
PTY_LINE = "SPIKELOOP_PTY "


def firmware_dir() -> Path:
    return Path(os.environ.get("SPIKELOOP_FIRMWARE_DIR", Path(__file__).resolve().parents[1] / "firmware_stubs"))


def _sources(root: Path) -> list[Path]:
    return [p for pat in ("*.c", "*.h", "ports/host/*.c", "Makefile") for p in root.glob(pat)]


def firmware_binary(variant: str = "host", build: bool = True) -> Path:
    """Path of the host firmware binary of `variant` (host | asan), built with `make` when missing
    or older than any firmware source. Raises DeviceError when it cannot be built."""
    if variant not in VARIANTS:
        raise ValueError(f"firmware variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    root = firmware_dir()
    if not (root / "Makefile").is_file():
        raise DeviceError(f"firmware sources not found in {root} (set SPIKELOOP_FIRMWARE_DIR)")
    binary = root / "build" / VARIANTS[variant]

    def stale() -> bool:
        if not binary.exists():
            return True
        built = binary.stat().st_mtime
        return any(p.stat().st_mtime > built for p in _sources(root))

    if not stale():
        return binary
    if not build:
        raise DeviceError(f"firmware binary {binary} is missing or stale; run `make -C {root} {variant}`")
    (root / "build").mkdir(exist_ok=True)
    with open(root / "build" / ".make.lock", "w") as lock:  # one build at a time (pytest -n)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stale():
            try:
                r = subprocess.run(["make", "-C", str(root), variant], capture_output=True, text=True,
                                   timeout=300)
            except FileNotFoundError:
                raise DeviceError("building the emulator firmware needs `make` and a C compiler") from None
            if r.returncode != 0 or not binary.exists():
                raise DeviceError(f"building the firmware failed (make -C {root} {variant}):\n"
                                  f"{(r.stdout + r.stderr)[-2000:]}")
    return binary


class FirmwareProcess:
    """The host firmware running on a fresh pty. `start()` returns the pty path to open with
    pyserial; `stop()` ends it (closing its stdin, then SIGTERM, then SIGKILL) and returns its exit
    status. Its stderr is kept in a temporary file (`stderr_text()`): sanitizer reports land there."""

    def __init__(self, binary: str | Path, args: tuple[str, ...] = ()):
        self.binary = Path(binary)
        self.args = tuple(args)
        self.proc: subprocess.Popen | None = None
        self.pty_path = ""
        self._stderr = None

    def start(self, timeout_s: float = 10.0) -> str:
        if not self.binary.is_file():
            raise DeviceError(f"firmware binary {self.binary} not found")
        self._stderr = tempfile.TemporaryFile()
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=0:abort_on_error=0:exitcode=86")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1:exitcode=87")
        self.proc = subprocess.Popen([str(self.binary), "--pty", *self.args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._stderr, env=env)
        line, deadline = b"", time.monotonic() + timeout_s
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, remaining))
            if not ready:
                self.stop()
                raise DeviceError(f"firmware {self.binary.name} did not report its pty within {timeout_s}s")
            ch = os.read(self.proc.stdout.fileno(), 1)
            if not ch:
                rc = self.stop()
                raise DeviceError(f"firmware {self.binary.name} exited ({rc}) before reporting its pty: "
                                  f"{self.stderr_text()[-500:]}")
            line += ch
        text = line.decode("ascii", errors="replace").strip()
        if not text.startswith(PTY_LINE):
            self.stop()
            raise DeviceError(f"firmware {self.binary.name} printed {text!r}, expected '{PTY_LINE}<path>'")
        self.pty_path = text[len(PTY_LINE):]
        return self.pty_path

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 5.0) -> int | None:
        if self.proc is None:
            return None
        p = self.proc
        try:
            if p.stdin and not p.stdin.closed:
                p.stdin.close()  # the firmware exits when its stdin closes
            try:
                p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                p.terminate()
                try:
                    p.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        finally:
            if p.stdout:
                p.stdout.close()
        return p.returncode

    def stderr_text(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", errors="replace")


class EmulatorDevice(SerialDevice):
    """A `SerialDevice` connected to the host firmware on a pty it starts (and stops on close).

    variant: host | asan; firmware: an explicit binary (skips the build); reboot_after: restart the
    firmware once (losing its program) after its N-th request frame — for restart tests. Other keywords
    go to `SerialDevice`. After close(), `exit_code` and `firmware_stderr` tell how it ended."""

    backend = "emulator"

    def __init__(self, variant: str = "host", *, firmware: str | Path | None = None,
                 reboot_after: int | None = None, build: bool = True, chip: ChipModel | None = None,
                 **kwargs):
        if variant not in VARIANTS:
            raise ValueError(f"emulator variant must be one of {sorted(VARIANTS)}, got {variant!r}")
        if reboot_after is not None and (not isinstance(reboot_after, int) or reboot_after < 1):
            raise ValueError(f"reboot_after must be a positive integer, got {reboot_after!r}")
        if chip is not None and not isinstance(chip, ChipModel):
            raise TypeError(f"chip must be a hw.nonideal.ChipModel, got {type(chip).__name__}")
        super().__init__("", **kwargs)
        self.variant, self.firmware, self.reboot_after, self.build = variant, firmware, reboot_after, build
        self.chip = chip  # boot arguments only: the link never carries it
        self.process: FirmwareProcess | None = None
        self.exit_code: int | None = None
        self.firmware_stderr = ""

    def open(self) -> "EmulatorDevice":
        if self.link is not None:
            return self
        binary = Path(self.firmware) if self.firmware else firmware_binary(self.variant, self.build)
        args = ("--reboot-after", str(self.reboot_after)) if self.reboot_after else ()
        if self.chip is not None:
            args += self.chip.firmware_args()
        self.process = FirmwareProcess(binary, args)
        self.port = self.process.start()
        try:
            super().open()
        except BaseException:
            self._stop_firmware()
            raise
        return self

    def _stop_firmware(self) -> None:
        if self.process is not None:
            self.exit_code = self.process.stop()
            self.firmware_stderr = self.process.stderr_text()
            self.process = None

    def close(self) -> None:
        super().close()
        self._stop_firmware()

    def info(self):
        i = super().info()
        return type(i)("emulator", i.profile, i.firmware_version, i.capacities,
                       {**i.extra, "variant": self.variant})


def _factory(uri, **kwargs) -> EmulatorDevice:
    params = dict(uri.params)
    kw = {}
    if uri.target:
        kw["variant"] = uri.target
    if "variant" in params:
        kw["variant"] = params.pop("variant")
    for key, conv in (("reboot_after", int), ("timeout_s", float), ("retries", int),
                      ("max_recoveries", int), ("baud", int), ("frame_payload", int)):
        if key in params:
            try:
                kw[key] = conv(params.pop(key))
            except ValueError:
                raise ValueError(f"emulator URI {uri.raw!r}: {key} must be a number") from None
    if "firmware" in params:
        kw["firmware"] = params.pop("firmware")
    chip = ChipModel.from_uri_params(params, f"emulator URI {uri.raw!r}")
    if chip is not None:
        kw["chip"] = chip
    if params:
        raise ValueError(f"emulator URI {uri.raw!r}: unknown parameters {sorted(params)}")
    check_profile(kwargs.pop("profile", None))
    return EmulatorDevice(**kw, **kwargs)


register_backend("emulator", _factory)
