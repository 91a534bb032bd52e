"""The C firmware from pytest (CI runs pytest): its unit tests and a bounded fuzz campaign under
ASan+UBSan, the STM32 port compile check, and C <-> Python cross-tests of the framing through the
host firmware on stdin/stdout (C encodes, Python decodes, and the other way round), including
frames above the board's max_payload and programs both readers must refuse for the same rule."""

from __future__ import annotations

import re
import shutil
import subprocess
import zlib

import numpy as np
import pytest

import program_corpus as pc
from hw.emulator import firmware_binary, firmware_dir
from hw.program import Program, ProgramError
from hw.serial.frame import PROTOCOL_VERSION, Frame, FrameReceiver
from hw.serial.messages import BoardErrorInfo, BoardInfo, ErrorCode, MsgType, load_payload

BOARD_MAX_PAYLOAD = 1024  # SL_MAX_PAYLOAD of the host build (firmware_stubs/sl_config.h)

pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None,
                                reason="needs make and a C compiler")


def _make(*targets, **vars_):
    args = ["make", "-C", str(firmware_dir()), *targets, *(f"{k}={v}" for k, v in vars_.items())]
    return subprocess.run(args, capture_output=True, text=True, timeout=600)


def test_c_unit_tests_pass_under_sanitizers():
    r = _make("test")
    assert r.returncode == 0, r.stdout + r.stderr
    runs = re.findall(r"(\d+) checks, (\d+) failed", r.stdout)  # test_firmware, test_respond_fault
    assert len(runs) == 2 and int(runs[0][0]) > 1000 and int(runs[1][0]) > 10, r.stdout
    assert all(failed == "0" for _, failed in runs), r.stdout


def test_bounded_fuzz_campaign_reaches_deep_paths_without_crash():
    r = _make("fuzz", FUZZ_RUNS=4000)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert "4000 inputs, no crash" in r.stdout
    stat = {k: int(v) for k, v in re.findall(r"^(\w+): (\d+)$", r.stdout, re.M)}
    # the boundary sweep: 2 fills x every PING length 0..1040+8, and as many COBS runs
    assert stat["boundary_inputs"] == 4 * (1040 + 9)
    assert stat["oversize_frames"] >= 2 * (1040 + 8 - BOARD_MAX_PAYLOAD)  # each got an OVERFLOW NACK
    assert stat["overflow_nacks"] >= stat["oversize_frames"]
    assert stat["retransmissions"] >= 2 * (1040 + 9) and stat["cobs_runs"] >= 2 * (1040 + 9)
    responses = dict(re.findall(r"0x([0-9A-F]{2})=(\d+)", r.stdout.split("responses:")[1].split("\n")[0]))
    codes = dict(re.findall(r"(\d+)=(\d+)", r.stdout.split("error_codes:")[1].split("\n")[0]))
    assert int(responses.get("85", 0)) > 0       # RUN frames were executed (OUTPUT answers)
    assert int(responses.get("84", 0)) > 0       # LOAD chunks accepted
    assert int(responses.get("86", 0)) > 0       # READ chunks of recordings (protocol v2)
    assert stat["recordings"] > 0 and stat["record_sweeps"] > 0 and stat["record_chunks"] >= stat["record_sweeps"]
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
    hello = Frame(2, MsgType.HELLO, 1, bytes([2, 2])).encode()
    pings = b"".join(Frame(2, MsgType.PING, 100 + i, p).encode() for i, p in enumerate(payloads))
    out = _stdio_session(b"\x00" + hello + pings)
    wires = [w + b"\x00" for w in out.split(b"\x00")[:-1]]
    assert len(wires) == 1 + len(payloads)
    info = BoardInfo.from_payload(FrameReceiver().feed(wires[0])[0].payload)
    assert info.name == "host-posix" and info.profile == "mcu" and info.proto_version == 2
    for i, (p, w) in enumerate(zip(payloads, wires[1:])):
        assert w == Frame(2, MsgType.PONG, 100 + i, p).encode(), f"payload {i}"
        (f,) = FrameReceiver().feed(w)
        assert f.payload == p


def test_c_nacks_a_damaged_python_frame_and_answers_the_next():
    good = Frame(PROTOCOL_VERSION, MsgType.PING, 7, b"abc").encode()
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
    req = Frame(PROTOCOL_VERSION, MsgType.LOAD, 3, load_payload(len(blob), 0, zlib.crc32(blob) ^ 1, blob)).encode()
    (f,) = FrameReceiver().feed(_stdio_session(req))
    err = BoardErrorInfo.from_payload(f.payload)
    assert err.code == ErrorCode.CHECKSUM_MISMATCH and err.value == zlib.crc32(blob)


def _pong_or_nack(frames: list, seq: int, payload: bytes) -> bool:
    """One frame: the PONG echo when the payload fits the board, else an OVERFLOW NACK."""
    if len(frames) != 1 or not isinstance(frames[0], Frame):
        return False
    f = frames[0]
    if len(payload) <= BOARD_MAX_PAYLOAD:
        return f.type == MsgType.PONG and f.seq == seq and f.payload == payload
    err = BoardErrorInfo.from_payload(f.payload)
    return f.type == MsgType.ERROR and f.seq == 0xFFFF and err.code == ErrorCode.OVERFLOW


def test_pings_above_max_payload_get_an_overflow_nack_not_an_echo():
    """Zero payloads of 1024..1029 bytes fit the 1040-byte receive buffer once COBS-encoded; only
    1024 may be echoed. A retransmission after each oversize frame gets the original answer."""
    first = Frame(PROTOCOL_VERSION, MsgType.PING, 7, b"hello").encode()
    stream, expect = bytearray(b"\x00" + first), [(7, b"hello")]
    for n in range(BOARD_MAX_PAYLOAD, BOARD_MAX_PAYLOAD + 6):
        big = Frame(PROTOCOL_VERSION, MsgType.PING, 8, bytes(n)).encode()
        assert len(big) <= 1041  # reaches the board's decoder, not its wire-length overflow
        stream += big + first
        expect += [(8, bytes(n)), (7, b"hello")]
    stream += Frame(PROTOCOL_VERSION, MsgType.PING, 9, b"next").encode()
    expect.append((9, b"next"))
    out = _stdio_session(bytes(stream))
    wires = [w + b"\x00" for w in out.split(b"\x00")[:-1]]
    assert len(wires) == len(expect)
    for (seq, payload), w in zip(expect, wires):
        assert _pong_or_nack(FrameReceiver().feed(w), seq, payload), (seq, len(payload), w[:40])
    assert wires[2] == wires[0]  # the retransmission: byte for byte the first PONG


def test_board_and_python_refuse_the_same_programs_over_load():
    """Programs the board used to run although Python refuses them (num_steps 0, dt_ns 0, a name
    that is not NUL-padded ASCII), sent with LOAD: BAD_PROGRAM whose detail and message name the
    rule Python names; a valid one loads."""
    ok = pc.program(pc.chain(2))
    blobs = {"8.2": pc.program(pc.chain(2), num_steps=0), "8.3": pc.program(pc.chain(2), dt_ns=0),
             "5.3": pc.program(pc.chain(2), name=b"ab\0c"), None: ok}
    reqs = b"".join(Frame(PROTOCOL_VERSION, MsgType.LOAD, 20 + i, load_payload(len(b), 0, zlib.crc32(b), b)).encode()
                    for i, b in enumerate(blobs.values()))
    frames = FrameReceiver().feed(_stdio_session(reqs))
    assert len(frames) == len(blobs)
    for (rule, blob), f in zip(blobs.items(), frames):
        if rule is None:
            Program.from_bytes(blob, expected_profile="mcu")
            assert f.type == MsgType.LOAD_ACK and f.payload[4] == 1
            continue
        with pytest.raises(ProgramError) as e:
            Program.from_bytes(blob, expected_profile="mcu")
        assert e.value.rule == rule
        err = BoardErrorInfo.from_payload(f.payload)
        assert (f.type, err.code, err.detail) == (MsgType.ERROR, ErrorCode.BAD_PROGRAM, int(rule[0]))
        assert err.message.startswith(rule + " "), err.message
