"""Frames on the wire (docs/protocol.md, section 1): COBS(header payload crc32) 0x00, and a
receiver that splits a byte stream into frames and drops damaged ones (resync at each 0x00).

header = version:u8 type:u8 seq:u16 len:u16 (little-endian); crc = CRC-32/ISO-HDLC (zlib.crc32)
of header and payload.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .cobs import CobsError, cobs_decode, cobs_encode

PROTOCOL_VERSION = 2       # the version this host speaks (it speaks no other: docs/protocol.md section 2)
HEADER = struct.Struct("<BBHH")
HEADER_BYTES = HEADER.size
CRC_BYTES = 4
MAX_PAYLOAD = 4096          # protocol limit (a board may accept less: INFO max_payload)
MIN_BOARD_PAYLOAD = 64
SEQ_NACK = 0xFFFF
FRAME_OVERHEAD = HEADER_BYTES + CRC_BYTES + 1   # + COBS bytes


def max_wire_bytes(payload_bytes: int) -> int:
    """Largest wire size (COBS + delimiter) of a frame with this payload size."""
    raw = HEADER_BYTES + payload_bytes + CRC_BYTES
    return raw + raw // 254 + 1 + 1


class FrameError(ValueError):
    """A frame that cannot be built or did not arrive intact. kind: bad_crc | bad_framing | overflow."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Frame:
    """One protocol frame. type: message type (hw.serial.messages.MsgType); payload: bytes."""

    version: int
    type: int
    seq: int
    payload: bytes = b""
    crc: int = 0  # filled in by `parse_raw`; ignored by `encode`

    def __post_init__(self):
        for name, hi in (("version", 0xFF), ("type", 0xFF), ("seq", 0xFFFF)):
            v = getattr(self, name)
            if not isinstance(v, int) or not 0 <= v <= hi:
                raise ValueError(f"Frame.{name} must be an integer in [0, {hi}], got {v!r}")
        if len(self.payload) > MAX_PAYLOAD:
            raise ValueError(f"Frame.payload has {len(self.payload)} bytes, the protocol allows {MAX_PAYLOAD}")

    def raw(self) -> bytes:
        """header + payload + crc (before COBS)."""
        head = HEADER.pack(self.version, self.type, self.seq, len(self.payload)) + bytes(self.payload)
        return head + struct.pack("<I", zlib.crc32(head))

    def encode(self) -> bytes:
        """The bytes on the wire: COBS(raw) followed by the 0x00 delimiter."""
        return cobs_encode(self.raw()) + b"\x00"


def parse_raw(raw: bytes, max_payload: int = MAX_PAYLOAD) -> Frame:
    """A COBS-decoded frame -> `Frame`; `FrameError` when damaged (bad_framing, bad_crc) or when its
    payload would exceed `max_payload` (overflow; checked on the decoded size, as the firmware does,
    since COBS slack lets a few bytes more than max_payload fit the receive buffer)."""
    if len(raw) < HEADER_BYTES + CRC_BYTES:
        raise FrameError("bad_framing", f"runt frame of {len(raw)} bytes")
    if len(raw) > HEADER_BYTES + max_payload + CRC_BYTES:
        raise FrameError("overflow", f"frame of {len(raw) - HEADER_BYTES - CRC_BYTES} payload bytes, "
                                     f"above max_payload {max_payload}")
    version, mtype, seq, length = HEADER.unpack_from(raw, 0)
    if length + HEADER_BYTES + CRC_BYTES != len(raw):
        raise FrameError("bad_crc", f"length field {length} does not match the {len(raw)}-byte frame")
    crc = zlib.crc32(raw[:-CRC_BYTES])
    if crc != struct.unpack_from("<I", raw, len(raw) - CRC_BYTES)[0]:
        raise FrameError("bad_crc", "frame CRC-32 mismatch")
    return Frame(version, mtype, seq, bytes(raw[HEADER_BYTES:-CRC_BYTES]), crc)


def decode_wire(wire: bytes) -> Frame:
    """One wire frame (with or without its trailing 0x00) -> `Frame`."""
    wire = bytes(wire)
    if wire.endswith(b"\x00"):
        wire = wire[:-1]
    try:
        return parse_raw(cobs_decode(wire))
    except CobsError as e:
        raise FrameError("bad_framing", str(e)) from None


class FrameReceiver:
    """Splits received bytes into frames. `feed(data)` returns, in order, a `Frame` for each intact
    frame and a `FrameError` for each dropped one; empty frames (lone delimiters) are skipped.
    More than `max_wire` bytes without a delimiter are dropped up to the next 0x00 (overflow)."""

    def __init__(self, max_payload: int = MAX_PAYLOAD):
        if not MIN_BOARD_PAYLOAD <= max_payload <= MAX_PAYLOAD:
            raise ValueError(f"max_payload must be in [{MIN_BOARD_PAYLOAD}, {MAX_PAYLOAD}], got {max_payload}")
        self.max_payload = max_payload
        self.max_wire = max_wire_bytes(max_payload)
        self._buf = bytearray()
        self._overflow = False

    def feed(self, data: bytes) -> list:
        events: list = []
        start = 0
        data = bytes(data)
        while True:
            end = data.find(b"\x00", start)
            chunk = data[start:] if end < 0 else data[start:end]
            if not self._overflow:
                self._buf += chunk
                if len(self._buf) > self.max_wire:
                    self._overflow = True
                    self._buf.clear()
            if end < 0:
                return events
            start = end + 1
            if self._overflow:
                self._overflow = False
                events.append(FrameError("overflow", f"frame longer than {self.max_wire} bytes"))
                continue
            if not self._buf:
                continue
            wire = bytes(self._buf)
            self._buf.clear()
            try:
                events.append(parse_raw(cobs_decode(wire), self.max_payload))
            except CobsError as e:
                events.append(FrameError("bad_framing", str(e)))
            except FrameError as e:
                events.append(e)

    def pending(self) -> int:
        """Bytes of an unfinished frame held back."""
        return len(self._buf)
