"""Message types, error codes and payload layouts of the serial protocol (docs/protocol.md,
section 3), the two spike encodings (bitmap, address events), the two graded-input encodings
(values, held values), and the layout of a RUN's recording (every layer's spikes, one layer's
membranes; section 3.1).

Spike arrays here are numpy `[n_steps, N]` uint8 {0, 1}: one frame's consecutive time steps;
graded input `[n_steps, N]` int8.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from ..profiles import PROFILE_BY_ID
from .frame import PROTOCOL_VERSION


class MsgType(IntEnum):
    HELLO = 0x01
    PING = 0x02
    RESET = 0x03
    LOAD = 0x04
    RUN = 0x05
    READ = 0x06
    INFO = 0x81
    PONG = 0x82
    RESET_ACK = 0x83
    LOAD_ACK = 0x84
    OUTPUT = 0x85
    RECORD = 0x86
    ERROR = 0xFF


RESPONSE_BIT = 0x80


class ErrorCode(IntEnum):
    BAD_CRC = 1
    BAD_FRAMING = 2
    UNKNOWN_TYPE = 3
    BAD_LENGTH = 4
    VERSION_MISMATCH = 5
    OVERFLOW = 6
    PROGRAM_TOO_LARGE = 7
    CHECKSUM_MISMATCH = 8
    BAD_OFFSET = 9
    BAD_PROGRAM = 10
    NOT_LOADED = 11
    BAD_STEP = 12
    BAD_INPUT = 13


# Errors a board sends (with seq 0xFFFF) for a frame that did not arrive intact: retransmit.
NACK_CODES = frozenset({ErrorCode.BAD_CRC, ErrorCode.BAD_FRAMING, ErrorCode.OVERFLOW})

RUN_BEGIN = 0x01
RUN_COUNTERS = 0x02
RUN_REC_SPIKES = 0x04      # record every layer's spikes
RUN_REC_MEMBRANE = 0x08    # record the membranes of layer mem_layer
RUN_FLAGS = RUN_BEGIN | RUN_COUNTERS | RUN_REC_SPIKES | RUN_REC_MEMBRANE
ENC_BITMAP = 0
ENC_EVENTS = 1
ENC_VALUES = 2    # graded-input programs: N int8 per step
ENC_HELD = 3      # graded-input programs: N int8 once, the input of every step of the frame
# flags, encoding, steps_per_sample, first_step, n_steps, mem_layer, reserved (0)
RUN_HEADER = struct.Struct("<BBHIHBB")
READ_PAYLOAD = struct.Struct("<IH")       # offset, max_len (0: as much as fits)
RECORD_HEADER = struct.Struct("<III")     # first_step, offset, total
RECORD_TOTAL = struct.Struct("<I")
LOAD_HEADER = struct.Struct("<III")       # total, offset, program_crc
ERROR_HEADER = struct.Struct("<BBI")      # code, detail, value
COUNTER = struct.Struct("<II")            # spikes, synops
PROFILE_IDS = {pid: p.name for pid, p in PROFILE_BY_ID.items()}  # the one registry: hw/profiles


def type_name(t: int) -> str:
    try:
        return MsgType(t).name
    except ValueError:
        return f"type 0x{t:02X}"


@dataclass(frozen=True)
class BoardInfo:
    """The INFO payload: what the board is, speaks and can hold. proto_version: the version chosen
    for the session; proto_min..proto_max: the versions the board speaks."""

    proto_version: int
    proto_min: int
    firmware_version: tuple[int, int, int]
    profile_id: int
    program_loaded: bool
    max_payload: int
    max_program_bytes: int
    max_layers: int
    max_neurons: int
    max_inputs: int
    build_id: int
    boot_id: int
    program_crc: int
    name: str
    proto_max: int = PROTOCOL_VERSION
    max_record_bytes: int = 0

    _FIXED = struct.Struct("<BBBBBBBBHIHHHIIII")

    @property
    def profile(self) -> str:
        return PROFILE_IDS.get(self.profile_id, f"profile {self.profile_id}")

    @property
    def firmware_version_str(self) -> str:
        return ".".join(str(v) for v in self.firmware_version)

    @staticmethod
    def versions(p: bytes) -> tuple[int, int, int]:
        """(chosen, lowest, highest) from the first bytes of an INFO of any version (a v1 INFO has
        no proto_max: its version is its highest). ValueError when too short."""
        if len(p) < 8:
            raise ValueError(f"INFO payload of {len(p)} bytes is malformed")
        return p[0], p[1], (p[7] if p[0] >= 2 else p[0])

    @classmethod
    def from_payload(cls, p: bytes) -> "BoardInfo":
        """Decode a version-2 INFO; ValueError when malformed."""
        n = cls._FIXED.size
        if len(p) < n + 1 or len(p) != n + 1 + p[n]:
            raise ValueError(f"INFO payload of {len(p)} bytes is malformed")
        (ver, vmin, fmaj, fmin, fpat, prof, flags, vmax, max_payload, max_prog, max_layers, max_neurons,
         max_inputs, build_id, boot_id, prog_crc, max_record) = cls._FIXED.unpack_from(p, 0)
        return cls(ver, vmin, (fmaj, fmin, fpat), prof, bool(flags & 1), max_payload, max_prog,
                   max_layers, max_neurons, max_inputs, build_id, boot_id, prog_crc,
                   p[n + 1:].decode("ascii", errors="replace"), vmax, max_record)

    def to_payload(self) -> bytes:
        """The INFO bytes (for fake boards in tests)."""
        name = self.name.encode("ascii")[:32]
        return self._FIXED.pack(self.proto_version, self.proto_min, *self.firmware_version, self.profile_id,
                                int(self.program_loaded), self.proto_max, self.max_payload,
                                self.max_program_bytes, self.max_layers, self.max_neurons, self.max_inputs,
                                self.build_id, self.boot_id, self.program_crc,
                                self.max_record_bytes) + bytes([len(name)]) + name

    def to_dict(self) -> dict:
        return {"protocol_version": self.proto_version, "protocol_min": self.proto_min,
                "protocol_max": self.proto_max,
                "firmware_version": self.firmware_version_str, "profile": self.profile,
                "program_loaded": self.program_loaded, "max_payload": self.max_payload,
                "max_program_bytes": self.max_program_bytes, "max_layers": self.max_layers,
                "max_neurons_per_layer": self.max_neurons, "max_fan_in": self.max_inputs,
                "max_record_bytes": self.max_record_bytes,
                "build_id": f"{self.build_id:08x}", "boot_id": f"{self.boot_id:08x}",
                "program_crc": f"{self.program_crc:08x}", "name": self.name}


@dataclass(frozen=True)
class BoardErrorInfo:
    """The ERROR payload."""

    code: int
    detail: int
    value: int
    message: str

    @property
    def code_name(self) -> str:
        try:
            return ErrorCode(self.code).name
        except ValueError:
            return f"error {self.code}"

    @classmethod
    def from_payload(cls, p: bytes) -> "BoardErrorInfo":
        if len(p) < ERROR_HEADER.size:
            raise ValueError(f"ERROR payload of {len(p)} bytes is malformed")
        code, detail, value = ERROR_HEADER.unpack_from(p, 0)
        return cls(code, detail, value, p[ERROR_HEADER.size:].decode("ascii", errors="replace"))

    def to_payload(self) -> bytes:
        return ERROR_HEADER.pack(self.code, self.detail, self.value) + self.message.encode("ascii")[:48]


def hello_payload(proto_min: int = PROTOCOL_VERSION, proto_max: int = PROTOCOL_VERSION) -> bytes:
    return bytes([proto_min, proto_max])


def load_payload(total: int, offset: int, program_crc: int, data: bytes) -> bytes:
    return LOAD_HEADER.pack(total, offset, program_crc) + bytes(data)


# ---- spike encodings -------------------------------------------------------------------------

def event_width(n: int) -> int:
    """Bytes per count/index in address events for n neurons."""
    return 1 if n <= 255 else 2


def bitmap_bytes(n_steps: int, n: int) -> int:
    return n_steps * ((n + 7) // 8)


def encode_bitmap(spikes: np.ndarray) -> bytes:
    """[n_steps, N] {0,1} -> per step ceil(N/8) bytes, neuron i = bit i%8 of byte i//8."""
    return np.packbits(np.asarray(spikes, dtype=np.uint8), axis=1, bitorder="little").tobytes()


def encode_events(spikes: np.ndarray) -> bytes:
    """[n_steps, N] {0,1} -> per step: count, then the increasing indices of the spiking neurons."""
    spikes = np.asarray(spikes, dtype=np.uint8)
    n_steps, n = spikes.shape
    rows, cols = np.nonzero(spikes)
    counts = np.bincount(rows, minlength=n_steps)
    out = np.empty(n_steps + len(rows), dtype=np.uint8 if event_width(n) == 1 else "<u2")
    starts = np.arange(n_steps) + np.concatenate([[0], np.cumsum(counts)[:-1]])
    out[starts] = counts
    out[np.arange(len(rows)) + rows + 1] = cols  # the k-th spike (row-major) of row r sits at k + r + 1
    return out.tobytes()


def encode_spikes(spikes: np.ndarray) -> tuple[int, bytes]:
    """The shorter of the two encodings (the bitmap on a tie): (encoding id, bytes)."""
    spikes = np.asarray(spikes, dtype=np.uint8)
    n_steps, n = spikes.shape
    events_len = event_width(n) * (n_steps + int(spikes.sum()))
    if events_len < bitmap_bytes(n_steps, n):
        return ENC_EVENTS, encode_events(spikes)
    return ENC_BITMAP, encode_bitmap(spikes)


def decode_spikes(encoding: int, data: bytes, n_steps: int, n: int) -> tuple[np.ndarray, int]:
    """Decode spikes from the start of `data`: ([n_steps, N] uint8, bytes consumed). Raises
    ValueError for a wrong length, an index out of range or out of order, or stray bitmap bits."""
    if encoding == ENC_BITMAP:
        row = (n + 7) // 8
        need = n_steps * row
        if len(data) < need:
            raise ValueError(f"spike bitmap truncated: {len(data)} bytes, need {need}")
        bits = np.unpackbits(np.frombuffer(data, np.uint8, need).reshape(n_steps, row), axis=1,
                             bitorder="little")
        if bits[:, n:].any():
            raise ValueError(f"spike bitmap has bits set beyond neuron {n - 1}")
        return bits[:, :n].copy(), need
    if encoding != ENC_EVENTS:
        raise ValueError(f"unknown spike encoding {encoding}")
    w = event_width(n)
    words = np.frombuffer(data[:len(data) - len(data) % w], np.uint8 if w == 1 else "<u2")
    out = np.zeros((n_steps, n), np.uint8)
    r = 0
    for s in range(n_steps):
        if r >= len(words):
            raise ValueError(f"spike events truncated at step {s}")
        c = int(words[r])
        idx = words[r + 1:r + 1 + c]
        if c > n or len(idx) != c:
            raise ValueError(f"spike events truncated or count {c} > {n} at step {s}")
        if c and (int(idx.max()) >= n or (c > 1 and not np.all(np.diff(idx.astype(np.int64)) > 0))):
            raise ValueError(f"spike event index out of range or not increasing at step {s}")
        out[s, idx] = 1
        r += 1 + c
    return out, r * w


def run_payload(flags: int, steps_per_sample: int, first_step: int, spikes: np.ndarray,
                mem_layer: int = 0) -> bytes:
    """A RUN payload for [n_steps, N_in] spikes (encoding chosen by size)."""
    enc, data = encode_spikes(spikes)
    return RUN_HEADER.pack(flags, enc, steps_per_sample, first_step, spikes.shape[0], mem_layer, 0) + data


def encode_values(values: np.ndarray) -> tuple[int, bytes]:
    """Graded input [n_steps, N] int8 -> (encoding, bytes): held values (one vector) when every
    step has the same vector, else values (every step's vector)."""
    values = np.ascontiguousarray(values, dtype=np.int8)
    if values.shape[0] >= 1 and bool((values == values[:1]).all()):
        return ENC_HELD, values[0].tobytes()
    return ENC_VALUES, values.tobytes()


def run_payload_values(flags: int, steps_per_sample: int, first_step: int, values: np.ndarray,
                       mem_layer: int = 0) -> bytes:
    """A RUN payload for [n_steps, N_in] graded int8 input (held values when constant)."""
    enc, data = encode_values(values)
    return RUN_HEADER.pack(flags, enc, steps_per_sample, first_step, values.shape[0], mem_layer, 0) + data


def read_payload(offset: int, max_len: int = 0) -> bytes:
    """A READ payload: record bytes from `offset`, at most `max_len` (0: as many as fit)."""
    return READ_PAYLOAD.pack(offset, max_len)


@dataclass(frozen=True)
class OutputFrame:
    """A decoded OUTPUT: spikes [n_steps, N_out] uint8; counters [(spikes, synops)] per layer or
    None; record_total: bytes of the RUN's recording (None when it asked for none); record: its
    first chunk (the first len(record) bytes)."""

    steps_per_sample: int
    first_step: int
    n_steps: int
    encoding: int
    spikes: np.ndarray
    counters: list[tuple[int, int]] | None
    flags: int = 0
    mem_layer: int = 0
    record_total: int | None = None
    record: bytes = b""
    size: int = 0          # payload bytes of the OUTPUT


def parse_output(p: bytes, n_out: int) -> OutputFrame:
    """Decode an OUTPUT payload for a program with n_out outputs; ValueError when malformed."""
    if len(p) < RUN_HEADER.size:
        raise ValueError(f"OUTPUT payload of {len(p)} bytes is shorter than its header")
    flags, enc, T, first, n_steps, mem_layer, reserved = RUN_HEADER.unpack_from(p, 0)
    if flags & ~(RUN_FLAGS & ~RUN_BEGIN) or reserved:
        raise ValueError(f"OUTPUT has unknown flags 0x{flags:02X} or a non-zero reserved byte")
    spikes, used = decode_spikes(enc, p[RUN_HEADER.size:], n_steps, n_out)
    rest = p[RUN_HEADER.size + used:]
    counters = None
    if flags & RUN_COUNTERS:
        if not rest or len(rest) < 1 + COUNTER.size * rest[0]:
            raise ValueError("OUTPUT counters malformed")
        counters = [COUNTER.unpack_from(rest, 1 + COUNTER.size * k) for k in range(rest[0])]
        rest = rest[1 + COUNTER.size * rest[0]:]
    total, chunk = None, b""
    if flags & (RUN_REC_SPIKES | RUN_REC_MEMBRANE):
        if len(rest) < RECORD_TOTAL.size:
            raise ValueError("OUTPUT record_total missing")
        (total,) = RECORD_TOTAL.unpack_from(rest, 0)
        chunk = bytes(rest[RECORD_TOTAL.size:])
        if len(chunk) > total:
            raise ValueError(f"OUTPUT carries {len(chunk)} record bytes of a {total}-byte recording")
    elif rest:
        raise ValueError(f"OUTPUT has {len(rest)} trailing bytes")
    return OutputFrame(T, first, n_steps, enc, spikes, counters, flags, mem_layer, total, chunk, len(p))


@dataclass(frozen=True)
class RecordChunk:
    """A decoded RECORD: bytes [offset, offset + len(data)) of the `total`-byte recording made by
    the RUN whose first step was `first_step`."""

    first_step: int
    offset: int
    total: int
    data: bytes


def parse_record(p: bytes) -> RecordChunk:
    """Decode a RECORD payload; ValueError when malformed (short, or data past `total`)."""
    if len(p) < RECORD_HEADER.size:
        raise ValueError(f"RECORD payload of {len(p)} bytes is shorter than its header")
    first, offset, total = RECORD_HEADER.unpack_from(p, 0)
    data = bytes(p[RECORD_HEADER.size:])
    if not data or offset + len(data) > total:
        raise ValueError(f"RECORD of {len(data)} bytes at offset {offset} does not fit a {total}-byte recording")
    return RecordChunk(first, offset, total, data)


def record_row_bytes(n: int, counts: bool = False) -> int:
    """Bytes of one layer's row in a recording: a bitmap, or one u8 per output (counts: a
    sum-pooling record)."""
    return n if counts else (n + 7) // 8


def record_step_bytes(layer_sizes, spikes: bool, mem_layer: int | None, count_layers=()) -> int:
    """Bytes per step of a recording: a row per layer (spikes; a bitmap, or u8 counts for the
    sum-pooling records `count_layers`) plus 4 per neuron of layer mem_layer (None: no membranes).
    layer_sizes: neurons (outputs) per program layer."""
    n = sum(record_row_bytes(s, k in count_layers) for k, s in enumerate(layer_sizes)) if spikes else 0
    return n + (4 * layer_sizes[mem_layer] if mem_layer is not None else 0)


def decode_record(data: bytes, n_steps: int, layer_sizes, spikes: bool, mem_layer: int | None,
                  count_layers=()) -> tuple[list[np.ndarray] | None, np.ndarray | None]:
    """A whole recording -> (per layer [n_steps, N_k] uint8 spikes (counts for `count_layers`) or
    None, [n_steps, N_m] int32 membranes of layer mem_layer or None). ValueError for a wrong length
    or stray bitmap bits."""
    step = record_step_bytes(layer_sizes, spikes, mem_layer, count_layers)
    if len(data) != n_steps * step:
        raise ValueError(f"recording of {len(data)} bytes, expected {n_steps} steps x {step}")
    rows = np.frombuffer(data, np.uint8).reshape(n_steps, step)
    out, o = None, 0
    if spikes:
        out = []
        for k, n in enumerate(layer_sizes):
            if k in count_layers:
                out.append(rows[:, o:o + n].copy())
                o += n
                continue
            row = (n + 7) // 8
            bits = np.unpackbits(rows[:, o:o + row], axis=1, bitorder="little")
            if bits[:, n:].any():
                raise ValueError(f"recorded spikes of layer {k} have bits set beyond neuron {n - 1}")
            out.append(bits[:, :n].copy())
            o += row
    mem = None
    if mem_layer is not None:
        mem = rows[:, o:].copy().view("<i4").astype(np.int32)
    return out, mem
