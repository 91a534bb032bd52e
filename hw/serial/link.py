"""The host side of the protocol's reliability layer (docs/protocol.md, section 4): one request in
flight, sequence numbers, timeouts, retransmission on timeout or NACK, stale-answer filtering,
version checks, and byte counters for link efficiency."""

from __future__ import annotations

import collections
import random
import time
from dataclasses import asdict, dataclass

from .errors import (BoardError, LinkDisconnectedError, LinkTimeoutError, ProtocolError,
                     ProtocolVersionError)
from .frame import PROTOCOL_VERSION, SEQ_NACK, Frame, FrameError, FrameReceiver, max_wire_bytes
from .messages import (NACK_CODES, RESPONSE_BIT, BoardErrorInfo, BoardInfo, ErrorCode, MsgType,
                       hello_payload, type_name)


@dataclass
class LinkStats:
    """Counters since the link was made; tx = host -> board. payload_*: payload bytes of the
    requests answered and of their answers (each counted once); wire_*: every byte written to and
    read from the port (COBS, headers, crc, delimiters, retransmissions, NACKs, noise included)."""

    requests: int = 0
    frames_tx: int = 0
    frames_rx: int = 0
    payload_tx: int = 0
    payload_rx: int = 0
    wire_tx: int = 0
    wire_rx: int = 0
    retransmissions: int = 0
    timeouts: int = 0
    nacks: int = 0
    bad_frames: int = 0
    stale_frames: int = 0
    host_s: float = 0.0   # host CPU time spent building and parsing frames (not waiting)

    @property
    def link_efficiency(self) -> float:
        """Payload bytes / wire bytes, both directions, accepted frames only."""
        wire = self.wire_tx + self.wire_rx
        return (self.payload_tx + self.payload_rx) / wire if wire else float("nan")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["link_efficiency"] = self.link_efficiency
        return d


def _wire_time_s(n_bytes: int, baud: int | None) -> float:
    return 0.0 if not baud else n_bytes * 10.0 / baud  # 8N1: 10 bit times per byte


class Link:
    """Request/response over a transport. `request(type, payload)` returns the response `Frame` or
    raises: `BoardError` (the board refused), `LinkTimeoutError` (no answer after `retries`
    retransmissions), `LinkDisconnectedError`, `ProtocolVersionError`, `ProtocolError`.

    timeout_s: wait for an answer, plus the wire time of both frames at `baud`. retries: resends
    after a timeout. max_nacks: resends after a NACK — counted apart, because a NACK carries no
    sequence number: NACKs the board sent for earlier noise on the line arrive while a request waits
    and must not use up its retries."""

    def __init__(self, transport, *, timeout_s: float = 1.0, retries: int = 5, baud: int | None = None,
                 protocol_version: int = PROTOCOL_VERSION, seq_seed: int | None = None,
                 max_nacks: int = 64):
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
        if not isinstance(max_nacks, int) or max_nacks < 0:
            raise ValueError(f"max_nacks must be an integer >= 0, got {max_nacks!r}")
        self.max_nacks = max_nacks
        self.transport = transport
        self.timeout_s = float(timeout_s)
        self.retries = retries
        self.baud = baud
        self.version = protocol_version
        self.stats = LinkStats()
        self.max_payload = 4096
        self._rx = FrameReceiver()
        self._pending: collections.deque = collections.deque()
        self._seq = random.Random(seq_seed).randrange(0, SEQ_NACK)

    @property
    def name(self) -> str:
        return self.transport.name

    @property
    def last_seq(self) -> int:
        """The sequence number of the last request sent (tests that put hand-made frames on the line
        pick theirs away from it: an answer is matched to its request by sequence number alone)."""
        return self._seq

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % SEQ_NACK  # 0..0xFFFE; 0xFFFF is the NACK seq
        return self._seq

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (tests use this to put garbage or hand-made frames on the line)."""
        self.transport.write(data)

    def flush_line(self) -> None:
        """A lone delimiter ends any partial frame the board holds; then drop stale input."""
        self.transport.write(b"\x00")
        self.stats.wire_tx += 1
        drain = getattr(self.transport, "drain", None)
        if drain:
            drain()
        self._pending.clear()
        self._rx = FrameReceiver()

    def _next_event(self, deadline: float):
        while not self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            data = self.transport.read(remaining)
            if data:
                self.stats.wire_rx += len(data)
                t0 = time.perf_counter()
                self._pending.extend(self._rx.feed(data))
                self.stats.host_s += time.perf_counter() - t0
        return self._pending.popleft()

    def request(self, msg_type: int, payload: bytes = b"", *, timeout_s: float | None = None) -> Frame:
        t0 = time.perf_counter()
        seq = self._next_seq()
        wire = Frame(self.version, int(msg_type), seq, bytes(payload)).encode()
        self.stats.host_s += time.perf_counter() - t0
        name = type_name(msg_type)
        wait_s = (timeout_s or self.timeout_s) + _wire_time_s(len(wire) + max_wire_bytes(self.max_payload),
                                                              self.baud)
        self.stats.requests += 1
        tries, reasons = 0, []

        def send():
            self.transport.write(wire)
            self.stats.frames_tx += 1
            self.stats.wire_tx += len(wire)
            return time.monotonic() + wait_s

        deadline = send()
        nacks = damaged = 0
        while True:
            ev = self._next_event(deadline)
            if ev is None:
                self.stats.timeouts += 1
                reasons.append(f"timeout after {wait_s:.2f}s")
                tries += 1
                if tries > self.retries:
                    hint = ("the board answers but frames arrive damaged: a noisy line" if nacks or damaged
                            else "is a spikeloop board connected and running?")
                    raise LinkTimeoutError(f"no valid answer to {name} from {self.name} after {tries} tries "
                                           f"({', '.join(reasons[-3:])}); {hint}")
                self.stats.retransmissions += 1
                deadline = send()
                continue
            if isinstance(ev, Frame) and ev.seq == SEQ_NACK and ev.type == MsgType.ERROR and self._is_nack(ev):
                self.stats.nacks += 1
                nacks += 1
                reasons.append(f"NACK {BoardErrorInfo.from_payload(ev.payload).code_name}")
                if nacks > self.max_nacks:
                    raise LinkTimeoutError(
                        f"the board on {self.name} NACKed {nacks} frames while {name} waited for its "
                        f"answer ({', '.join(reasons[-3:])}); the line is too noisy")
                self.stats.retransmissions += 1
                deadline = send()
                continue
            if isinstance(ev, FrameError):
                self.stats.bad_frames += 1
                damaged += 1
                continue
            if ev.seq != seq:
                self.stats.stale_frames += 1
                continue
            return self._accept(ev, msg_type, name, len(payload))

    @staticmethod
    def _is_nack(f: Frame) -> bool:
        try:
            return BoardErrorInfo.from_payload(f.payload).code in NACK_CODES
        except ValueError:
            return False

    def _accept(self, f: Frame, msg_type: int, name: str, payload_tx: int) -> Frame:
        self.stats.frames_rx += 1
        self.stats.payload_tx += payload_tx
        self.stats.payload_rx += len(f.payload)
        if f.type == MsgType.ERROR:
            try:
                err = BoardErrorInfo.from_payload(f.payload)
            except ValueError as e:
                raise ProtocolError(f"{self.name}: malformed ERROR answer to {name}: {e}") from None
            if err.code == ErrorCode.VERSION_MISMATCH:
                lo, hi = err.value & 0xFF, (err.value >> 8) & 0xFF
                raise ProtocolVersionError(
                    f"board on {self.name} speaks serial protocol {err.detail} (supports {lo}..{hi}), "
                    f"this host speaks {self.version} (supports {self.version}..{self.version}): "
                    "update the firmware or spikeloop")
            raise BoardError(name, err, self.name)
        if f.version != self.version:
            raise ProtocolVersionError(f"board on {self.name} answered with serial protocol {f.version}, "
                                       f"this host speaks {self.version}: update the firmware or spikeloop")
        if f.type != (int(msg_type) | RESPONSE_BIT):
            raise ProtocolError(f"{self.name}: expected {type_name(int(msg_type) | RESPONSE_BIT)} in "
                                f"answer to {name}, got {type_name(f.type)}")
        return f

    # ---- convenience ----------------------------------------------------------------------------

    def hello(self, proto_min: int | None = None, proto_max: int | None = None) -> BoardInfo:
        """Handshake: HELLO (the versions this host speaks) -> INFO (the version the board chose),
        refusing a board that chose, or only speaks, another version (docs/protocol.md section 2).
        proto_min/proto_max override the range stated (tests use it to play other hosts)."""
        lo, hi = proto_min or self.version, proto_max or self.version
        f = self.request(MsgType.HELLO, hello_payload(lo, hi))
        try:
            chosen, board_lo, board_hi = BoardInfo.versions(f.payload)
        except ValueError as e:
            raise ProtocolError(f"{self.name}: malformed INFO: {e}") from None
        if chosen != self.version:
            raise ProtocolVersionError(
                f"board on {self.name} speaks serial protocol {chosen} (supports {board_lo}..{board_hi}), "
                f"this host speaks {self.version} (supports {self.version}..{self.version}): update the "
                "firmware or spikeloop")
        try:
            info = BoardInfo.from_payload(f.payload)
        except ValueError as e:
            raise ProtocolError(f"{self.name}: malformed INFO: {e}") from None
        self.max_payload = info.max_payload
        return info

    def ping(self, data: bytes = b"") -> bytes:
        return self.request(MsgType.PING, data).payload

    def close(self) -> None:
        try:
            self.transport.close()
        except LinkDisconnectedError:
            pass
