"""The serial link against the host firmware on a pty, through pyserial: handshake and version
negotiation, garbage on the line, unknown message types, silent and vanishing ports, duplicate
suppression and retransmission (docs/protocol.md, sections 2-4)."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import time

import pytest
import serial
import torch

from hw.device import open_device
from hw.emulator import FirmwareProcess, firmware_binary
from hw.serial import (PROTOCOL_VERSION, BoardError, ErrorCode, Frame, LinkDisconnectedError, LinkTimeoutError, MsgType,
                       ProtocolVersionError, SerialDevice)
from hw.serial.link import Link
from hw.serial.transport import PySerialTransport

pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None,
                                reason="needs the host firmware (make and a C compiler)")


@pytest.fixture
def firmware():
    proc = FirmwareProcess(firmware_binary("host"))
    proc.start()
    yield proc
    assert proc.stop() == 0


def test_handshake_reports_the_board(firmware):
    with SerialDevice(firmware.pty_path) as dev:
        b = dev.board
        assert (b.proto_version, b.profile, b.name, b.program_loaded) == (2, "mcu", "host-posix", False)
        assert (b.proto_min, b.proto_max) == (2, 2)
        assert b.max_payload == 1024 and b.max_program_bytes == 131072 and b.max_record_bytes == 16384
        payload = bytes(range(256)) * 4
        assert dev.ping(payload) == payload
        info = dev.info()
        assert info.backend == "serial" and info.extra["port"] == firmware.pty_path


def test_serial_uri_opens_the_board(firmware):
    with open_device(f"serial://{firmware.pty_path}?baud=9600&timeout_s=0.5") as dev:
        assert dev.baud == 9600 and dev.timeout_s == 0.5
        assert dev.info().profile == "mcu"
    with pytest.raises(ValueError, match="names no port"):
        open_device("serial:")
    with pytest.raises(ValueError, match="baud must be a number"):
        open_device(f"serial://{firmware.pty_path}?baud=fast")


def test_incompatible_protocol_version_is_refused_with_both_versions(firmware):
    """A host that speaks only version 1 (HELLO in a v1 frame, range 1..1) against this board."""
    with pytest.raises(ProtocolVersionError,
                       match=r"speaks serial protocol 2 \(supports 2\.\.2\), this host speaks 1 \(supports 1\.\.1\)"):
        SerialDevice(firmware.pty_path, protocol_version=1).open()
    with pytest.raises(ProtocolVersionError, match=r"speaks serial protocol 2 .* this host speaks 3"):
        SerialDevice(firmware.pty_path, protocol_version=3).open()
    # The board is still fine for a compatible host afterwards.
    with SerialDevice(firmware.pty_path) as dev:
        assert dev.ping(b"ok") == b"ok"


def test_garbage_before_the_handshake_and_between_requests(firmware):
    with serial.Serial(firmware.pty_path, timeout=0.1) as raw:
        raw.write(bytes(range(1, 200)) + b"\x00\x00\xff\xfe" + os.urandom(300).replace(b"\x00", b"\x01"))
    with SerialDevice(firmware.pty_path) as dev:
        assert dev.board.name == "host-posix"
        dev.link.send_raw(b"\x17\x00noise\x00\x05\x01\x02")
        assert dev.ping(b"after noise") == b"after noise"


def test_unknown_message_type_gets_a_clear_board_error(firmware):
    with SerialDevice(firmware.pty_path) as dev:
        with pytest.raises(BoardError, match="refused type 0x3C: UNKNOWN_TYPE: unknown message type 60") as e:
            dev.link.request(0x3C, b"")
        assert e.value.is_code(ErrorCode.UNKNOWN_TYPE)


def test_silent_port_times_out_with_a_clear_message():
    master, slave = os.openpty()   # a tty on which nothing answers
    try:
        t0 = time.monotonic()
        with pytest.raises(LinkTimeoutError, match=r"no valid answer to HELLO .* after 2 tries"):
            SerialDevice(os.ttyname(slave), timeout_s=0.1, retries=1).open()
        assert time.monotonic() - t0 < 5
    finally:
        os.close(master)
        os.close(slave)


def test_missing_port_and_vanishing_board_raise_disconnect_errors():
    with pytest.raises(LinkDisconnectedError, match="cannot open serial port /dev/does-not-exist"):
        SerialDevice("/dev/does-not-exist").open()
    proc = FirmwareProcess(firmware_binary("host"))
    dev = SerialDevice(proc.start()).open()
    try:
        os.kill(proc.proc.pid, signal.SIGKILL)
        proc.proc.wait()
        with pytest.raises(LinkDisconnectedError, match=proc.pty_path):
            dev.ping(b"anyone?")
    finally:
        dev.close()
        proc.stop()


def _run_frame(first: int, n: int, flags: int, bits: bytes) -> bytes:
    return struct.pack("<BBHIHBB", flags, 0, 20, first, n, 0, 0) + bits


def test_duplicate_run_frame_is_answered_from_cache_not_rerun(firmware):
    """The same RUN frame twice (a retransmission) gets byte-identical answers, and the board's
    step counter advanced once: a frame at step 4 is refused (BAD_STEP, counter 2), one at 2 runs."""
    from hw.compiler import compile_model
    from snn.model import build_model
    from snn.spec import Leaky, Linear, ModelSpec

    torch.manual_seed(0)
    spec = ModelSpec(layers=(Linear(16, 8), Leaky(beta=0.9, threshold=0.3)), input_shape=(16,), num_steps=20)
    prog = compile_model(spec, {k: v * 4 for k, v in build_model(spec).state_dict().items()}, "mcu")
    with SerialDevice(firmware.pty_path) as dev:
        dev.load(prog)
        link = dev.link
        frame = Frame(PROTOCOL_VERSION, MsgType.RUN, 4242, _run_frame(0, 2, 1, b"\xff\xff\x0f\xf0")).encode()
        link.send_raw(frame + frame)
        answers = []
        deadline = time.monotonic() + 5
        while len(answers) < 2 and time.monotonic() < deadline:
            data = link.transport.read(0.2)
            answers += [e for e in link._rx.feed(data) if isinstance(e, Frame)]
        assert len(answers) == 2 and answers[0] == answers[1] and answers[0].type == MsgType.OUTPUT
        with pytest.raises(BoardError, match="BAD_STEP") as e:
            link.request(MsgType.RUN, _run_frame(4, 1, 0, b"\x00\x00"))
        assert e.value.error.value == 2        # the board ran the two steps once
        f = link.request(MsgType.RUN, _run_frame(2, 1, 0, b"\x00\x00"))
        assert f.type == MsgType.OUTPUT


class _DropFirst:
    """A transport wrapper that loses the first write to the board or the first answer from it."""

    def __init__(self, inner, direction: str):
        self.inner, self.direction, self.name, self.dropped = inner, direction, inner.name, False

    def write(self, data):
        if self.direction == "to_board" and not self.dropped and len(data) > 1:
            self.dropped = True
            return
        self.inner.write(data)

    def read(self, timeout_s):
        data = self.inner.read(timeout_s)
        if self.direction == "from_board" and not self.dropped and data:
            self.dropped = True
            return b""
        return data

    def drain(self, *a):
        return self.inner.drain(*a)

    def close(self):
        self.inner.close()


@pytest.mark.parametrize("direction", ["to_board", "from_board"])
def test_lost_request_or_answer_is_retransmitted(firmware, direction):
    link = Link(_DropFirst(PySerialTransport(firmware.pty_path), direction), timeout_s=0.2, retries=3)
    try:
        info = link.hello()
        assert info.name == "host-posix"
        assert link.stats.retransmissions >= 1 and link.stats.timeouts >= 1   # >= : a loaded CPU may add one
        assert link.ping(b"x") == b"x"
    finally:
        link.close()


def test_a_peer_that_is_not_a_spikeloop_board_is_refused():
    """pyserial's loop:// URL echoes every byte: our HELLO comes back as a HELLO, not an INFO."""
    from hw.serial import ProtocolError
    with pytest.raises(ProtocolError, match="expected INFO in answer to HELLO, got HELLO"):
        SerialDevice("loop://", timeout_s=0.2).open()
