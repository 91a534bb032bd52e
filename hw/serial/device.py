"""`SerialDevice`: the `hw.device.Device` backend for a spikeloop board on a serial port
(`serial:///dev/ttyACM0?baud=115200`), speaking docs/protocol.md through pyserial.

    with open_device("serial:///dev/ttyACM0?baud=115200") as dev:
        dev.load(program)              # LOAD in chunks, whole-program CRC checked by the board
        result = dev.run(spikes)       # spikes: [T, B, N_in] {0, 1} -> output_spikes [T, B, N_out]

A run streams the B samples back to back (T steps each) in RUN frames as large as the board's
max_payload allows; the board resets neuron state at the start of every sample.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from hw.device import Device, DeviceError, DeviceInfo, RunResult, as_program, check_input_spikes

from .errors import BoardError, FirmwareRestartError, SerialLinkError
from .link import Link
from .messages import (COUNTER, LOAD_HEADER, RUN_BEGIN, RUN_COUNTERS, RUN_HEADER, BoardInfo,
                       ErrorCode, MsgType, load_payload, parse_output, run_payload)
from .transport import PySerialTransport

PROFILE = "mcu"  # the arithmetic of this project's board (docs/fixed_point.md)
DEFAULT_BAUD = 115200


class SerialDevice(Device):
    """A board on `port` (device path or pyserial URL). timeout_s: answer timeout per frame (plus
    wire time at `baud`); retries: retransmissions per frame; max_recoveries: board restarts
    survived per run (reload + rerun, docs/protocol.md section 4). frame_payload: largest payload
    per frame (default and maximum: the board's max_payload; smaller frames lose less to a noisy
    line). transport_wrapper: a callable wrapping the transport (the fault-injection tests use it)."""

    backend = "serial"

    def __init__(self, port: str, *, baud: int = DEFAULT_BAUD, timeout_s: float = 1.0, retries: int = 5,
                 max_recoveries: int = 1, frame_payload: int | None = None, transport_wrapper=None,
                 protocol_version: int | None = None):
        if not isinstance(max_recoveries, int) or max_recoveries < 0:
            raise ValueError(f"max_recoveries must be an integer >= 0, got {max_recoveries!r}")
        if frame_payload is not None and (not isinstance(frame_payload, int) or frame_payload < 64):
            raise ValueError(f"frame_payload must be an integer >= 64, got {frame_payload!r}")
        self.frame_payload = frame_payload
        self.port = port
        self.baud = baud
        self.timeout_s = timeout_s
        self.retries = retries
        self.max_recoveries = max_recoveries
        self.transport_wrapper = transport_wrapper
        self.protocol_version = protocol_version
        self.link: Link | None = None
        self.board: BoardInfo | None = None
        self.recoveries = 0
        self._blob: bytes | None = None
        self._program = None

    # ---- Device interface -----------------------------------------------------------------------

    def open(self) -> "SerialDevice":
        if self.link is not None:
            return self
        transport = PySerialTransport(self.port, self.baud)
        if self.transport_wrapper is not None:
            transport = self.transport_wrapper(transport)
        kw = {} if self.protocol_version is None else {"protocol_version": self.protocol_version}
        link = Link(transport, timeout_s=self.timeout_s, retries=self.retries, baud=self.baud, **kw)
        try:
            link.flush_line()
            self.board = link.hello()
        except BaseException:
            link.close()
            raise
        self.link = link
        if self.board.profile != PROFILE:
            self.close()
            raise DeviceError(f"board on {self.port} runs profile {self.board.profile!r}; "
                              f"spikeloop's serial backend drives {PROFILE!r} boards")
        return self

    def _need_link(self) -> Link:
        if self.link is None:
            raise DeviceError(f"serial device {self.port} is not open (use it in a `with` block or call open())")
        return self.link

    def info(self) -> DeviceInfo:
        self._need_link()
        b = self.board
        caps = {"max_layers": b.max_layers, "max_neurons_per_layer": b.max_neurons,
                "max_fan_in": b.max_inputs, "max_program_bytes": b.max_program_bytes,
                "max_spikes_per_step": 1, "max_payload": b.max_payload}
        return DeviceInfo(self.backend, b.profile, b.firmware_version_str, caps,
                          {"port": self.port, "board": b.name, "protocol_version": b.proto_version,
                           "build_id": f"{b.build_id:08x}", "boot_id": f"{b.boot_id:08x}"})

    def load(self, program) -> None:
        link = self._need_link()
        prog = as_program(program, PROFILE)
        blob = prog.to_bytes()
        b = self.board
        for what, have, limit in (("bytes", len(blob), b.max_program_bytes),
                                  ("layers", len(prog.layers), b.max_layers),
                                  ("inputs", prog.num_inputs, b.max_inputs),
                                  ("neurons in a layer", max(l.num_neurons for l in prog.layers), b.max_neurons)):
            if have > limit:
                raise DeviceError(f"program has {have} {what}; the board on {self.port} holds at most {limit}")
        self._send_program(link, blob)
        self._blob, self._program = blob, prog

    @property
    def payload_limit(self) -> int:
        """Largest payload this device puts in one frame."""
        limit = self.board.max_payload
        return min(limit, self.frame_payload) if self.frame_payload else limit

    def _send_program(self, link: Link, blob: bytes) -> None:
        crc = zlib.crc32(blob)
        chunk = self.payload_limit - LOAD_HEADER.size
        offset = 0
        while True:
            data = blob[offset:offset + chunk]
            f = link.request(MsgType.LOAD, load_payload(len(blob), offset, crc, data))
            received, complete = int.from_bytes(f.payload[:4], "little"), f.payload[4]
            offset += len(data)
            if received != offset:
                raise SerialLinkError(f"board on {self.port} acknowledged {received} program bytes, sent {offset}")
            if offset >= len(blob):
                if not complete:
                    raise SerialLinkError(f"board on {self.port} did not confirm the program after the last chunk")
                return

    def reset(self) -> None:
        self._need_link().request(MsgType.RESET, b"\x00")

    def run(self, spikes: torch.Tensor, probe: bool = False) -> RunResult:
        """spikes: [T, B, N_in] {0, 1} -> RunResult(output_spikes [T, B, N_out] uint8, counters
        {layer: {"spikes", "synops"}} summed over T and B). probe is not available over serial."""
        link = self._need_link()
        if self._program is None:
            raise DeviceError(f"no program loaded on {self.port}: call load() first")
        if probe:
            raise DeviceError("membrane probes are not sent over the serial link; run the same program "
                              "on the `sim` device to probe")
        x = check_input_spikes(spikes, self._program.num_inputs)
        T, B, _ = x.shape
        if T > 0xFFFF:
            raise ValueError(f"T={T} steps per sample exceeds the protocol's 65535")
        stream = x.permute(1, 0, 2).reshape(T * B, -1).cpu().numpy()  # sample-major
        recovered = 0
        while True:
            try:
                out, counters = self._run_stream(link, stream, T)
                break
            except BoardError as e:
                if not e.is_code(ErrorCode.NOT_LOADED):
                    raise
                recovered += 1
                self._recover(link, e, recovered)
        output = torch.from_numpy(out.reshape(B, T, -1)).permute(1, 0, 2).contiguous()
        return RunResult(output, {k: {"spikes": s, "synops": o} for k, (s, o) in enumerate(counters)})

    def _recover(self, link: Link, cause: BoardError, attempt: int) -> None:
        """The board lost its program (it restarted): handshake again, reload; the caller reruns
        the whole batch from its first step."""
        if attempt > self.max_recoveries:
            raise FirmwareRestartError(
                f"board on {self.port} restarted during a run and lost its program ({cause}); "
                f"gave up after {self.max_recoveries} recoveries (max_recoveries)") from None
        self.recoveries += 1
        self.board = link.hello()
        self._send_program(link, self._blob)

    def _frame_steps(self) -> int:
        """Steps per RUN frame: the input bitmap and the OUTPUT bitmap with counters must fit."""
        p = self._program
        room = self.payload_limit - RUN_HEADER.size
        row_in, row_out = (p.num_inputs + 7) // 8, (p.num_outputs + 7) // 8
        counters = 1 + COUNTER.size * len(p.layers)
        n = min(room // row_in, (room - counters) // row_out, 0xFFFF)
        if n < 1:
            raise DeviceError(f"a single step does not fit {self.payload_limit}-byte frames")
        return n

    def _run_stream(self, link: Link, stream: np.ndarray, T: int):
        n_total = stream.shape[0]
        n_out = self._program.num_outputs
        out = np.zeros((n_total, n_out), np.uint8)
        totals = np.zeros((len(self._program.layers), 2), np.int64)
        per_frame = self._frame_steps()
        first = 0
        while first < n_total:
            n = min(per_frame, n_total - first)
            flags = RUN_COUNTERS | (RUN_BEGIN if first == 0 else 0)
            payload = run_payload(flags, T, first, stream[first:first + n])
            f = link.request(MsgType.RUN, payload)
            try:
                o = parse_output(f.payload, n_out)
            except ValueError as e:
                raise SerialLinkError(f"board on {self.port} sent a malformed OUTPUT: {e}") from None
            if (o.first_step, o.n_steps, o.steps_per_sample) != (first, n, T) or o.counters is None \
                    or len(o.counters) != len(self._program.layers):
                raise SerialLinkError(f"board on {self.port} answered steps {o.first_step}+{o.n_steps} "
                                      f"(T={o.steps_per_sample}) to a RUN of steps {first}+{n} (T={T})")
            out[first:first + n] = o.spikes
            totals += np.asarray(o.counters, np.int64)
            first += n
        return out, [(int(s), int(o)) for s, o in totals]

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None

    # ---- extras ---------------------------------------------------------------------------------

    def link_stats(self) -> dict:
        """Byte and frame counters of the link (see `LinkStats`), with `link_efficiency`."""
        link = self._need_link()
        return {**link.stats.to_dict(), "recoveries": self.recoveries}

    def ping(self, data: bytes = b"") -> bytes:
        return self._need_link().ping(data)


def _factory(uri, **kwargs) -> SerialDevice:
    if not uri.target:
        raise ValueError(f"serial device URI {uri.raw!r} names no port (e.g. serial:///dev/ttyACM0?baud=115200)")
    params = dict(uri.params)
    kw = {}
    for key, conv in (("baud", int), ("timeout_s", float), ("retries", int), ("max_recoveries", int),
                      ("frame_payload", int)):
        if key in params:
            try:
                kw[key] = conv(params.pop(key))
            except ValueError:
                raise ValueError(f"serial device URI {uri.raw!r}: {key} must be a number") from None
    if params:
        raise ValueError(f"serial device URI {uri.raw!r}: unknown parameters {sorted(params)}")
    check_profile(kwargs.pop("profile", None))
    return SerialDevice(uri.target, **kw, **kwargs)


def check_profile(profile) -> None:
    """Boards run the mcu arithmetic; asking a serial device for another profile is an error."""
    if profile not in (None, PROFILE):
        raise ValueError(f"spikeloop boards run the {PROFILE!r} profile, not {profile!r}")
