"""`SerialDevice`: the `hw.device.Device` backend for a spikeloop board on a serial port
(`serial:///dev/ttyACM0?baud=115200`), speaking docs/protocol.md through pyserial.

    with open_device("serial:///dev/ttyACM0?baud=115200") as dev:
        dev.load(program)              # LOAD in chunks, whole-program CRC checked by the board
        result = dev.run(spikes)       # spikes: [T, B, N_in] {0, 1} -> output_spikes [T, B, N_out]
                                       # (a graded-input program: int8 values [T, B, N_in])
        probed = dev.run(spikes, probe=True, membrane_layer=0)   # + layer_spikes, membranes {0: ...}

A run streams the B samples back to back (T steps each) in RUN frames as large as the board's
max_payload allows; the board resets neuron state at the start of every sample. Graded input goes as
held values (one vector for the whole frame) when every step of a frame has the same vector, else
as values (docs/protocol.md, RUN encodings 2 and 3).
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from hw.device import Device, DeviceError, DeviceInfo, RunResult, as_program, check_input

from .errors import BoardError, FirmwareRestartError, SerialLinkError
from .link import Link
from .messages import (COUNTER, LOAD_HEADER, RECORD_HEADER, RECORD_TOTAL, RUN_BEGIN, RUN_COUNTERS,
                       RUN_HEADER, RUN_REC_MEMBRANE, RUN_REC_SPIKES, BoardInfo, ErrorCode, MsgType,
                       decode_record, load_payload, parse_output, parse_record, read_payload,
                       record_step_bytes, run_payload, run_payload_values)
from .transport import PySerialTransport

PROFILE = "mcu"  # the arithmetic of this project's board (docs/fixed_point.md)
DEFAULT_BAUD = 115200


class SerialDevice(Device):
    """A board on `port` (device path or pyserial URL). timeout_s: answer timeout per frame (plus
    wire time at `baud`); retries: retransmissions per frame; max_recoveries: board restarts
    survived per run (reload + rerun, docs/protocol.md section 4). frame_payload: largest payload
    per frame (default and maximum: the board's max_payload; smaller frames lose less to a noisy
    line). transport_wrapper: a callable wrapping the transport (the fault-injection tests use it).
    membrane_layer: the program layer whose membranes `run(probe=True)` records by default (None:
    spikes only; negative counts from the end)."""

    backend = "serial"

    def __init__(self, port: str, *, baud: int = DEFAULT_BAUD, timeout_s: float = 1.0, retries: int = 5,
                 max_recoveries: int = 1, frame_payload: int | None = None, transport_wrapper=None,
                 protocol_version: int | None = None, membrane_layer: int | None = None):
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
        if membrane_layer is not None and (not isinstance(membrane_layer, int) or isinstance(membrane_layer, bool)):
            raise ValueError(f"membrane_layer must be a layer index or None, got {membrane_layer!r}")
        self.membrane_layer = membrane_layer
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
                           "max_record_bytes": b.max_record_bytes,
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

    def run(self, spikes: torch.Tensor, probe: bool = False, membrane_layer=...) -> RunResult:
        """spikes: [T, B, N_in] {0, 1} (a graded-input program: int8 values in [-128, 127]) ->
        RunResult(output_spikes [T, B, N_out] uint8, counters {layer: {"spikes", "synops"}} summed
        over T and B).

        probe: also record on the board (docs/protocol.md section 3.1) and return layer_spikes
        {k: [T, B, N_k] uint8} for every program layer (a pooling record: its outputs, 0/1 or a
        sum pool's counts) and membranes {m: [T, B, N_m] int32} (the
        board's integer U after each step, as `sim` reports it) for the one layer m =
        membrane_layer (default: the device's `membrane_layer`; None: membranes is {}). A board
        records one layer's membranes per run, so unlike `sim` the dict has at most one key."""
        link = self._need_link()
        if self._program is None:
            raise DeviceError(f"no program loaded on {self.port}: call load() first")
        mem_layer = self._membrane_layer(self.membrane_layer if membrane_layer is ... else membrane_layer) \
            if probe else None
        x = check_input(spikes, self._program)
        T, B, _ = x.shape
        if T > 0xFFFF:
            raise ValueError(f"T={T} steps per sample exceeds the protocol's 65535")
        stream = x.permute(1, 0, 2).reshape(T * B, -1).cpu().numpy()  # sample-major
        recovered = 0
        while True:
            try:
                out, counters, rec_spikes, rec_mem = self._run_stream(link, stream, T, probe, mem_layer)
                break
            except BoardError as e:
                if not e.is_code(ErrorCode.NOT_LOADED):
                    raise
                recovered += 1
                self._recover(link, e, recovered)

        def tbn(a: np.ndarray) -> torch.Tensor:  # sample-major [B*T, N] -> [T, B, N]
            return torch.from_numpy(a.reshape(B, T, -1)).permute(1, 0, 2).contiguous()

        counters = {k: {"spikes": s, "synops": o} for k, (s, o) in enumerate(counters)}
        if not probe:
            return RunResult(tbn(out), counters)
        layer_spikes = {k: tbn(a) for k, a in enumerate(rec_spikes)}
        membranes = {} if mem_layer is None else {mem_layer: tbn(rec_mem)}
        return RunResult(tbn(out), counters, membranes, layer_spikes)

    def _membrane_layer(self, k) -> int | None:
        if k is None:
            return None
        n = len(self._program.layers)
        if not isinstance(k, int) or isinstance(k, bool) or not -n <= k < n:
            raise ValueError(f"membrane_layer must be a layer index in [-{n}, {n}) of the loaded "
                             f"{n}-layer program, or None; got {k!r}")
        if self._program.layers[k % n].kind == "pool":
            raise ValueError(f"membrane_layer {k}: layer {k % n} is a pooling record (no membranes)")
        return k % n

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

    def _layer_sizes(self) -> list[int]:
        return [l.num_neurons for l in self._program.layers]

    def _count_layers(self) -> set[int]:
        """The sum-pooling records: their recording rows are u8 counts (docs/protocol.md 3.1)."""
        return {k for k, l in enumerate(self._program.layers) if l.kind == "pool" and l.geometry.pool == "sum"}

    def _frame_steps(self, probe: bool = False, mem_layer: int | None = None) -> int:
        """Steps per RUN frame: the input bitmap and the OUTPUT bitmap with counters (and the
        record_total field) must fit a frame, and a recording the board's record buffer."""
        p = self._program
        room = self.payload_limit - RUN_HEADER.size
        row_in, row_out = (p.num_inputs + 7) // 8, (p.num_outputs + 7) // 8
        counters = 1 + COUNTER.size * len(p.layers) + (RECORD_TOTAL.size if probe else 0)
        # graded input: held values cost N_in bytes per frame whatever its steps (checked here);
        # values frames are cut to room // N_in steps in _run_stream
        n = min(room // p.num_inputs if p.graded_input and p.num_inputs > room else
                (0xFFFF if p.graded_input else room // row_in), (room - counters) // row_out, 0xFFFF)
        if probe:
            step = record_step_bytes(self._layer_sizes(), True, mem_layer, self._count_layers())
            n = min(n, self.board.max_record_bytes // step)
            n = self._fewest_round_trips(n, step, row_out, counters) if n >= 1 else n
        if n < 1:
            what = f"{self.payload_limit}-byte frames" + \
                (f" and the board's {self.board.max_record_bytes}-byte record buffer" if probe else "")
            of = (f" of {p.num_inputs} graded inputs (at most {room} per RUN frame)"
                  if p.graded_input and p.num_inputs > room else "")
            raise DeviceError(f"a single step{of} does not fit {what}")
        return n

    def _fewest_round_trips(self, n_max: int, step: int, row_out: int, counters: int) -> int:
        """Steps per recording RUN frame (<= n_max) with the fewest request/answer round trips per
        step: the RUN, plus the READs for what does not fit the OUTPUT (its bitmap worst case)."""
        board_max = self.board.max_payload
        chunk = (self.payload_limit if self.frame_payload else board_max) - RECORD_HEADER.size
        best, best_cost = n_max, None
        for n in range(n_max, 0, -1):
            inline = board_max - (RUN_HEADER.size + n * row_out + counters)
            cost = (1 + -(-max(0, n * step - inline) // chunk)) / n
            if best_cost is None or cost < best_cost - 1e-12:
                best, best_cost = n, cost
        return best

    def _read_record(self, link: Link, o, first: int) -> bytes:
        """The whole recording of the RUN answered by OUTPUT `o`: its first chunk, then READs."""
        buf = bytearray(o.record)
        board_max = self.board.max_payload
        if len(buf) != min(o.record_total, board_max - (o.size - len(buf))):
            raise SerialLinkError(f"board on {self.port} sent {len(buf)} bytes of a {o.record_total}-byte "
                                  f"recording in a {o.size}-byte OUTPUT: not as many as fit")
        max_len = self.payload_limit - RECORD_HEADER.size if self.frame_payload else 0
        while len(buf) < o.record_total:
            f = link.request(MsgType.READ, read_payload(len(buf), max_len))
            try:
                c = parse_record(f.payload)
            except ValueError as e:
                raise SerialLinkError(f"board on {self.port} sent a malformed RECORD: {e}") from None
            want = min(max_len or board_max, o.record_total - len(buf), board_max - RECORD_HEADER.size)
            if (c.first_step, c.offset, c.total, len(c.data)) != (first, len(buf), o.record_total, want):
                raise SerialLinkError(f"board on {self.port} answered a READ of the recording of step "
                                      f"{first} at {len(buf)} for {want} bytes with bytes {c.offset}+{len(c.data)} of a "
                                      f"{c.total}-byte recording of step {c.first_step}")
            buf += c.data
        return bytes(buf)

    def _run_stream(self, link: Link, stream: np.ndarray, T: int, probe: bool = False,
                    mem_layer: int | None = None):
        n_total = stream.shape[0]
        n_out = self._program.num_outputs
        sizes = self._layer_sizes()
        out = np.zeros((n_total, n_out), np.uint8)
        rec_spikes = [np.zeros((n_total, n), np.uint8) for n in sizes] if probe else None
        rec_mem = np.zeros((n_total, sizes[mem_layer]), np.int32) if mem_layer is not None else None
        totals = np.zeros((len(self._program.layers), 2), np.int64)
        per_frame = self._frame_steps(probe, mem_layer)
        graded = self._program.graded_input
        values_steps = (self.payload_limit - RUN_HEADER.size) // max(1, stream.shape[1])
        counts = self._count_layers()
        rec_flags = (RUN_REC_SPIKES | (RUN_REC_MEMBRANE if mem_layer is not None else 0)) if probe else 0
        first = 0
        while first < n_total:
            n = min(per_frame, n_total - first)
            flags = RUN_COUNTERS | rec_flags | (RUN_BEGIN if first == 0 else 0)
            if graded:
                n = _graded_frame_steps(stream[first:first + n], values_steps)
                payload = run_payload_values(flags, T, first, stream[first:first + n], mem_layer or 0)
            else:
                payload = run_payload(flags, T, first, stream[first:first + n], mem_layer or 0)
            f = link.request(MsgType.RUN, payload)
            try:
                o = parse_output(f.payload, n_out)
            except ValueError as e:
                raise SerialLinkError(f"board on {self.port} sent a malformed OUTPUT: {e}") from None
            if (o.first_step, o.n_steps, o.steps_per_sample) != (first, n, T) or o.counters is None \
                    or len(o.counters) != len(self._program.layers) \
                    or o.flags != flags & ~RUN_BEGIN or o.mem_layer != (mem_layer or 0):
                raise SerialLinkError(f"board on {self.port} answered steps {o.first_step}+{o.n_steps} "
                                      f"(T={o.steps_per_sample}, flags 0x{o.flags:02X}) to a RUN of steps "
                                      f"{first}+{n} (T={T}, flags 0x{flags & ~RUN_BEGIN:02X})")
            out[first:first + n] = o.spikes
            totals += np.asarray(o.counters, np.int64)
            if probe:
                expect = n * record_step_bytes(sizes, True, mem_layer, counts)
                if o.record_total != expect:   # checked before any READ: a bogus total is not fetched
                    raise SerialLinkError(f"board on {self.port} announced a {o.record_total}-byte recording "
                                          f"for steps {first}+{n}; they record {expect} bytes")
                try:
                    spk, mem = decode_record(self._read_record(link, o, first), n, sizes, True, mem_layer,
                                             counts)
                except ValueError as e:
                    raise SerialLinkError(f"board on {self.port} sent a malformed recording: {e}") from None
                for k, a in enumerate(spk):
                    rec_spikes[k][first:first + n] = a
                if mem is not None:
                    rec_mem[first:first + n] = mem
            first += n
        return out, [(int(s), int(o)) for s, o in totals], rec_spikes, rec_mem

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


def _graded_frame_steps(rows: np.ndarray, values_steps: int) -> int:
    """Steps of the next graded-input frame from rows [n, N_in] int8 (n: the most the reply allows):
    the leading run of identical vectors as one held-values frame when it is at least as long as a
    values frame could be (values_steps = the most steps a values frame holds), else a values frame."""
    n = rows.shape[0]
    same = np.all(rows == rows[:1], axis=1)
    run = n if bool(same.all()) else int(np.argmin(same))
    return run if run >= min(n, values_steps) else min(n, max(1, values_steps))


def _factory(uri, **kwargs) -> SerialDevice:
    if not uri.target:
        raise ValueError(f"serial device URI {uri.raw!r} names no port (e.g. serial:///dev/ttyACM0?baud=115200)")
    params = dict(uri.params)
    kw = {}
    for key, conv in (("baud", int), ("timeout_s", float), ("retries", int), ("max_recoveries", int),
                      ("frame_payload", int), ("membrane_layer", int)):
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
