"""Byte transports under the link: pyserial ports (device paths or pyserial URLs) and a
fault-injecting wrapper for the tests.

A transport has `write(data)`, `read(timeout_s) -> bytes` (whatever arrived, at least one byte,
or b"" after timeout_s), `close()` and a `name`. Errors of a dead port become
`LinkDisconnectedError`.
"""

from __future__ import annotations

import time

import numpy as np
import serial

from .errors import LinkDisconnectedError

POLL_S = 0.01  # pyserial read timeout per poll; the link enforces the real deadlines


class PySerialTransport:
    """A serial port through pyserial: `port` is a device path (/dev/ttyACM0, /dev/pts/3, COM3) or
    a pyserial URL (loop://, socket://host:port, rfc2217://...). baud: bits per second."""

    def __init__(self, port: str, baud: int = 115200, exclusive: bool | None = None):
        if not isinstance(port, str) or not port:
            raise ValueError(f"port must be a device path or pyserial URL, got {port!r}")
        if not isinstance(baud, int) or baud <= 0:
            raise ValueError(f"baud must be a positive integer, got {baud!r}")
        self.name = port
        self.baud = baud
        try:
            kw = {"exclusive": exclusive} if exclusive is not None and "://" not in port else {}
            self._ser = serial.serial_for_url(port, baudrate=baud, timeout=POLL_S,
                                              write_timeout=10.0, **kw)
        except (serial.SerialException, OSError, ValueError) as e:
            raise LinkDisconnectedError(f"cannot open serial port {port}: {e}") from None

    def write(self, data: bytes) -> None:
        try:
            self._ser.write(data)
        except (serial.SerialException, OSError) as e:
            raise LinkDisconnectedError(f"serial port {self.name} failed on write: {e}") from None

    def read(self, timeout_s: float) -> bytes:
        deadline = time.monotonic() + max(0.0, timeout_s)
        try:
            while True:
                waiting = self._ser.in_waiting
                data = self._ser.read(waiting if waiting else 1)
                if data:
                    more = self._ser.in_waiting
                    return data + (self._ser.read(more) if more else b"")
                if time.monotonic() >= deadline:
                    return b""
        except (serial.SerialException, OSError) as e:
            raise LinkDisconnectedError(f"serial port {self.name} failed on read "
                                        f"(disconnected?): {e}") from None

    def drain(self, quiet_s: float = 0.02, max_s: float = 0.5) -> int:
        """Discard input until the line has been quiet for quiet_s (at most max_s); bytes dropped."""
        dropped, end = 0, time.monotonic() + max_s
        while time.monotonic() < end:
            data = self.read(quiet_s)
            if not data:
                break
            dropped += len(data)
        return dropped

    def close(self) -> None:
        try:
            self._ser.close()
        except (serial.SerialException, OSError):
            pass


class FaultyTransport:
    """Wraps a transport and damages bytes in both directions at set rates (per byte: corrupt =
    xor with a random non-zero byte, drop, duplicate; per write/read chunk: delay by delay_s).
    Deterministic for a seed. `injected` counts what was done."""

    def __init__(self, inner, *, corrupt_rate: float = 0.0, drop_rate: float = 0.0,
                 duplicate_rate: float = 0.0, delay_rate: float = 0.0, delay_s: float = 0.0,
                 seed: int = 0, directions: str = "both"):
        for name, v in (("corrupt_rate", corrupt_rate), ("drop_rate", drop_rate),
                        ("duplicate_rate", duplicate_rate), ("delay_rate", delay_rate)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v!r}")
        if delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {delay_s!r}")
        if directions not in ("both", "to_board", "from_board"):
            raise ValueError(f"directions must be both|to_board|from_board, got {directions!r}")
        self.inner = inner
        self.name = f"faulty({inner.name})"
        self.rates = (corrupt_rate, drop_rate, duplicate_rate)
        self.delay_rate, self.delay_s = delay_rate, delay_s
        self.directions = directions
        self._rng = np.random.default_rng(seed)
        self.injected = {"corrupted": 0, "dropped": 0, "duplicated": 0, "delayed": 0}

    def _damage(self, data: bytes) -> bytes:
        if not data:
            return data
        if self.delay_rate and self._rng.random() < self.delay_rate:
            self.injected["delayed"] += 1
            time.sleep(self.delay_s)
        corrupt, drop, dup = self.rates
        if not (corrupt or drop or dup):
            return data
        arr = np.frombuffer(data, np.uint8)
        u = self._rng.random((3, len(arr)))
        flips = self._rng.integers(1, 256, len(arr), dtype=np.uint8)
        arr = np.where(u[0] < corrupt, arr ^ flips, arr)
        keep = u[1] >= drop
        reps = np.where(u[2] < dup, 2, 1) * keep
        self.injected["corrupted"] += int((u[0] < corrupt).sum())
        self.injected["dropped"] += int((~keep).sum())
        self.injected["duplicated"] += int(((u[2] < dup) & keep).sum())
        return np.repeat(arr, reps).tobytes()

    def write(self, data: bytes) -> None:
        self.inner.write(self._damage(data) if self.directions in ("both", "to_board") else data)

    def read(self, timeout_s: float) -> bytes:
        data = self.inner.read(timeout_s)
        return self._damage(data) if self.directions in ("both", "from_board") else data

    def drain(self, quiet_s: float = 0.02, max_s: float = 0.5) -> int:
        return self.inner.drain(quiet_s, max_s)

    def close(self) -> None:
        self.inner.close()
