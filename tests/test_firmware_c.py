"""The C firmware from pytest (CI runs pytest): its unit tests and a bounded fuzz campaign under
ASan+UBSan, the STM32 port compile check, and C <-> Python cross-tests of the framing through the
host firmware on stdin/stdout (C encodes, Python decodes, and the other way round)."""

from __future__ import annotations

import re
import shutil
import subprocess
import zlib

import numpy as np
import pytest

from hw.emulator import firmware_binary, firmware_dir
from hw.serial.frame import Frame, FrameReceiver
from hw.serial.messages import BoardErrorInfo, BoardInfo, ErrorCode, MsgType, load_payload

pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None,
                                reason="needs make and a C compiler")


def _make(*targets, **vars_):
    args = ["make", "-C", str(firmware_dir()), *targets, *(f"{k}={v}" for k, v in vars_.items())]
    return subprocess.run(args, capture_output=True, text=True, timeout=600)


def test_c_unit_tests_pass_under_sanitizers():
    r = _make("test")
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"(\d+) checks, (\d+) failed", r.stdout)
    assert m and int(m.group(1)) > 1000 and m.group(2) == "0", r.stdout


def test_bounded_fuzz_campaign_reaches_deep_paths_without_crash():
    r = _make("fuzz", FUZZ_RUNS=4000)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert "4000 inputs, no crash" in r.stdout
    responses = dict(re.findall(r"0x([0-9A-F]{2})=(\d+)", r.stdout.split("responses:")[1].split("\n")[0]))
    codes = dict(re.findall(r"(\d+)=(\d+)", r.stdout.split("error_codes:")[1].split("\n")[0]))
    assert int(responses.get("85", 0)) > 0       # RUN frames were executed (OUTPUT answers)
    assert int(responses.get("84", 0)) > 0       # LOAD chunks accepted
    assert len(codes) >= 8                        # and many different refusals
    assert int(re.search(r"programs_accepted: (\d+)", r.stdout).group(1)) > 0


def test_stm32_port_skeleton_compiles():
    r = _make("port-check")
    assert r.returncode == 0, r.stdout + r.stderr


def _stdio_session(frames_bytes: bytes, variant: str = "asan") -> bytes:
    """Feed bytes to the host firmware on stdin; returns everything it wrote until stdin closed."""
    binary = firmware_binary(variant)
    r = subprocess.run([str(binary), "--stdio"], input=frames_bytes, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    assert b"runtime error" not in r.stderr and b"AddressSanitizer" not in r.stderr
    return r.stdout


def test_python_encodes_c_decodes_and_c_encodes_python_decodes():
    """PING payloads chosen for COBS edge cases: the C encoder's answer must be byte-identical to
    the Python encoding of the expected PONG, and decode in Python."""
    payloads = [b"", b"\x00", b"\x00" * 300, bytes(range(1, 255)), bytes(range(1, 256)),
                bytes(range(0, 255)), bytes(253) + b"\x01", b"\x01" * 508, b"\x01" * 509,
                np.random.default_rng(0).integers(0, 256, 1024, dtype=np.uint8).tobytes()]
    hello = Frame(1, MsgType.HELLO, 1, bytes([1, 1])).encode()
    pings = b"".join(Frame(1, MsgType.PING, 100 + i, p).encode() for i, p in enumerate(payloads))
    out = _stdio_session(b"\x00" + hello + pings)
    wires = [w + b"\x00" for w in out.split(b"\x00")[:-1]]
    assert len(wires) == 1 + len(payloads)
    info = BoardInfo.from_payload(FrameReceiver().feed(wires[0])[0].payload)
    assert info.name == "host-posix" and info.profile == "mcu" and info.proto_version == 1
    for i, (p, w) in enumerate(zip(payloads, wires[1:])):
        assert w == Frame(1, MsgType.PONG, 100 + i, p).encode(), f"payload {i}"
        (f,) = FrameReceiver().feed(w)
        assert f.payload == p


def test_c_nacks_a_damaged_python_frame_and_answers_the_next():
    good = Frame(1, MsgType.PING, 7, b"abc").encode()
    bad = bytearray(good)
    bad[4] ^= 0x10
    out = _stdio_session(bytes(bad) + good)
    frames = FrameReceiver().feed(out)
    assert len(frames) == 2
    nack = frames[0]
    assert nack.type == MsgType.ERROR and nack.seq == 0xFFFF
    assert BoardErrorInfo.from_payload(nack.payload).code in (ErrorCode.BAD_CRC, ErrorCode.BAD_FRAMING)
    assert frames[1].type == MsgType.PONG and frames[1].payload == b"abc"


def test_c_refuses_a_python_program_whose_whole_crc_is_wrong():
    blob = bytes(64)
    req = Frame(1, MsgType.LOAD, 3, load_payload(len(blob), 0, zlib.crc32(blob) ^ 1, blob)).encode()
    (f,) = FrameReceiver().feed(_stdio_session(req))
    err = BoardErrorInfo.from_payload(f.payload)
    assert err.code == ErrorCode.CHECKSUM_MISMATCH and err.value == zlib.crc32(blob)
