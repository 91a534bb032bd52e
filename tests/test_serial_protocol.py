"""The Python side of docs/protocol.md without a board: COBS against the standard's examples,
frames and the resyncing receiver, spike encodings, INFO/ERROR payloads."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from hw.serial.cobs import CobsError, cobs_decode, cobs_encode
from hw.serial.frame import Frame, FrameError, FrameReceiver, decode_wire, parse_raw
from hw.serial.messages import (ENC_BITMAP, ENC_EVENTS, BoardErrorInfo, BoardInfo, decode_spikes,
                                encode_bitmap, encode_events, encode_spikes, parse_output,
                                run_payload)

# Cheshire & Baker / Wikipedia's COBS examples (the firmware's C tests use the same ones).
COBS_VECTORS = [
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x00\x11\x00", b"\x01\x02\x11\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (b"", b"\x01"),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
    (bytes(range(0, 255)), b"\x01\xff" + bytes(range(1, 255))),
    (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
]


@pytest.mark.parametrize("raw,enc", COBS_VECTORS)
def test_cobs_standard_vectors(raw, enc):
    assert cobs_encode(raw) == enc
    assert cobs_decode(enc) == raw


def test_cobs_random_round_trip_and_no_zero():
    rng = np.random.default_rng(1)
    for n in list(range(0, 600, 7)) + [253, 254, 255, 508, 509, 510]:
        # Mostly non-zero with some zeros, so blocks of every length occur.
        data = np.where(rng.random(n) < 0.03, 0, rng.integers(1, 256, n)).astype(np.uint8).tobytes()
        enc = cobs_encode(data)
        assert 0 not in enc
        assert len(enc) <= n + n // 254 + 1
        assert cobs_decode(enc) == data


@pytest.mark.parametrize("bad", [b"\x03\x11\x00", b"\x05\x11\x22", b"\x00", b"\x02"])
def test_cobs_rejects_malformed(bad):
    if bad == b"\x02":  # a code promising one more byte than there is
        with pytest.raises(CobsError, match="runs past the end"):
            cobs_decode(bad)
        return
    with pytest.raises(CobsError):
        cobs_decode(bad)


def test_frame_layout_by_hand():
    f = Frame(1, 0x02, 0x1234, b"\x00ab")
    raw = f.raw()
    head = bytes([1, 0x02, 0x34, 0x12, 3, 0]) + b"\x00ab"
    assert raw == head + struct.pack("<I", zlib.crc32(head))
    wire = f.encode()
    assert wire.endswith(b"\x00") and 0 not in wire[:-1]
    g = decode_wire(wire)
    assert (g.version, g.type, g.seq, g.payload) == (1, 0x02, 0x1234, b"\x00ab")


@pytest.mark.parametrize("field,value", [("seq", 0x10000), ("type", -1), ("version", 256)])
def test_frame_rejects_out_of_range_fields(field, value):
    kw = {"version": 1, "type": 1, "seq": 0, field: value}
    with pytest.raises(ValueError, match=f"Frame.{field}"):
        Frame(**kw)


def test_frame_rejects_oversize_payload():
    with pytest.raises(ValueError, match="4096"):
        Frame(1, 1, 0, bytes(4097))


def test_every_single_byte_corruption_is_detected():
    wire = Frame(1, 0x05, 77, bytes(range(256)) * 2).encode()
    for k in range(len(wire) - 1):
        bad = bytearray(wire)
        bad[k] ^= 0x5A
        if bad[k] == 0:
            continue
        events = FrameReceiver().feed(bytes(bad))
        assert not any(isinstance(e, Frame) for e in events), k


def test_receiver_resyncs_after_garbage_and_overflow():
    good = Frame(1, 0x82, 5, b"hi").encode()
    rx = FrameReceiver(max_payload=64)
    events = rx.feed(b"\x13\x37\xff\x02\x00\x00\x55" + good + good)
    frames = [e for e in events if isinstance(e, Frame)]
    errors = [e for e in events if isinstance(e, FrameError)]
    assert len(frames) == 1 and frames[0].payload == b"hi"   # the 0x55 spoils the first copy
    assert len(errors) == 2
    events = rx.feed(b"\x41" * 500 + b"\x00" + good)
    assert isinstance(events[0], FrameError) and events[0].kind == "overflow"
    assert isinstance(events[1], Frame)
    # Bytes split at every position arrive as the same frame.
    for cut in range(1, len(good)):
        rx = FrameReceiver()
        assert rx.feed(good[:cut]) == []
        (f,) = rx.feed(good[cut:])
        assert f.payload == b"hi"


def _raw_frame(payload: bytes) -> bytes:
    """A CRC-correct raw frame built by hand (Frame refuses payloads above the protocol limit)."""
    head = struct.pack("<BBHH", 1, 0x02, 9, len(payload) & 0xFFFF) + payload
    return head + struct.pack("<I", zlib.crc32(head))


@pytest.mark.parametrize("n", [1025, 1027, 1029])
def test_receiver_refuses_payload_above_its_max_payload_within_cobs_slack(n):
    """Zero-heavy frames of max_payload+1..+5 bytes fit the COBS-sized receive buffer; the receiver
    must refuse them on the decoded size (the firmware's defect of issue 12, host side)."""
    wire = cobs_encode(_raw_frame(bytes(n))) + b"\x00"
    rx = FrameReceiver(max_payload=1024)
    assert len(wire) - 1 <= rx.max_wire          # gets past the wire-length check
    (e,) = rx.feed(wire)
    assert isinstance(e, FrameError) and e.kind == "overflow" and "max_payload 1024" in str(e)
    (f,) = rx.feed(Frame(1, 2, 10, bytes(1024)).encode())  # the limit itself still arrives
    assert isinstance(f, Frame) and len(f.payload) == 1024


def test_receiver_refuses_payload_above_protocol_limit_as_frame_error():
    (e,) = FrameReceiver().feed(cobs_encode(_raw_frame(bytes(4100))) + b"\x00")
    assert isinstance(e, FrameError) and e.kind == "overflow"
    with pytest.raises(ValueError, match="max_payload"):
        FrameReceiver(max_payload=8)


def test_parse_raw_length_and_crc():
    raw = Frame(1, 1, 1, b"abc").raw()
    with pytest.raises(FrameError, match="runt"):
        parse_raw(raw[:5])
    with pytest.raises(FrameError, match="length field"):
        parse_raw(raw[:-1])
    bad = bytearray(raw)
    bad[7] ^= 1
    with pytest.raises(FrameError, match="CRC"):
        parse_raw(bytes(bad))


# ---- spike encodings ---------------------------------------------------------------------------

def test_bitmap_layout_by_hand():
    spikes = np.zeros((2, 10), np.uint8)
    spikes[0, [0, 3, 9]] = 1
    spikes[1, 8] = 1
    assert encode_bitmap(spikes) == bytes([0b00001001, 0b10, 0, 0b1])


def test_events_layout_by_hand():
    spikes = np.zeros((3, 300), np.uint8)
    spikes[0, [2, 299]] = 1
    spikes[2, 256] = 1
    assert encode_events(spikes) == struct.pack("<6H", 2, 2, 299, 0, 1, 256)
    small = np.zeros((2, 12), np.uint8)
    small[1, [0, 11]] = 1
    assert encode_events(small) == bytes([0, 2, 0, 11])


@pytest.mark.parametrize("n", [1, 7, 8, 9, 64, 255, 256, 700])
@pytest.mark.parametrize("density", [0.0, 0.02, 0.5, 1.0])
def test_spike_encodings_round_trip(n, density):
    rng = np.random.default_rng(n)
    spikes = (rng.random((13, n)) < density).astype(np.uint8)
    for enc, data in ((ENC_BITMAP, encode_bitmap(spikes)), (ENC_EVENTS, encode_events(spikes))):
        back, used = decode_spikes(enc, data + b"\xaa", 13, n)
        assert used == len(data)
        np.testing.assert_array_equal(back, spikes)
    enc, data = encode_spikes(spikes)
    assert len(data) == min(len(encode_bitmap(spikes)), len(encode_events(spikes)))
    assert enc == (ENC_EVENTS if len(encode_events(spikes)) < len(encode_bitmap(spikes)) else ENC_BITMAP)


def test_decode_spikes_rejects_bad_data():
    with pytest.raises(ValueError, match="truncated"):
        decode_spikes(ENC_BITMAP, b"\x01", 2, 8)
    with pytest.raises(ValueError, match="beyond neuron"):
        decode_spikes(ENC_BITMAP, b"\x80", 1, 7)
    with pytest.raises(ValueError, match="out of range"):
        decode_spikes(ENC_EVENTS, bytes([1, 9]), 1, 9)
    with pytest.raises(ValueError, match="not increasing"):
        decode_spikes(ENC_EVENTS, bytes([2, 3, 3]), 1, 9)
    with pytest.raises(ValueError, match="truncated"):
        decode_spikes(ENC_EVENTS, bytes([1, 0, 3]), 2, 9)
    with pytest.raises(ValueError, match="unknown spike encoding"):
        decode_spikes(7, b"", 1, 9)


def test_run_payload_and_output_parse():
    spikes = np.zeros((4, 64), np.uint8)
    spikes[:, 5] = 1
    p = run_payload(3, 20, 40, spikes)
    flags, enc, T, first, n, mem_layer, reserved = struct.unpack_from("<BBHIHBB", p)
    assert (flags, T, first, n, mem_layer, reserved) == (3, 20, 40, 4, 0, 0)
    assert enc == ENC_EVENTS and p[12:] == bytes([1, 5] * 4)  # 8 bytes of events < 32 of bitmap
    assert run_payload(0x0C, 20, 40, spikes, mem_layer=3)[10] == 3
    out = struct.pack("<BBHIHBB", 2, ENC_BITMAP, 20, 40, 2, 0, 0) + bytes([0b101, 0, 0, 0b10]) + \
        bytes([1]) + struct.pack("<II", 7, 99)
    o = parse_output(out, 10)
    assert (o.first_step, o.n_steps, o.steps_per_sample) == (40, 2, 20)
    np.testing.assert_array_equal(o.spikes[0, :3], [1, 0, 1])
    np.testing.assert_array_equal(o.spikes[1, :10], [0] * 9 + [1])
    assert o.counters == [(7, 99)] and o.record_total is None
    with pytest.raises(ValueError, match="counters"):
        parse_output(out[:-1], 10)
    with pytest.raises(ValueError, match="trailing"):
        parse_output(out + b"\x00", 10)


def test_info_and_error_payloads():
    fixed = struct.pack("<BBBBBBBBHIHHHIIII", 2, 2, 0, 1, 2, 1, 1, 3, 1024, 131072, 8, 512, 1024,
                        0xDEADBEEF, 0x01020304, 0xCAFEF00D, 16384)
    info = BoardInfo.from_payload(fixed + bytes([4]) + b"test")
    assert info.profile == "mcu" and info.firmware_version_str == "0.1.2"
    assert (info.proto_version, info.proto_min, info.proto_max, info.max_record_bytes) == (2, 2, 3, 16384)
    assert info.to_payload() == fixed + bytes([4]) + b"test"
    assert BoardInfo.versions(fixed) == (2, 2, 3)
    assert BoardInfo.versions(bytes([1, 1, 0, 1, 2, 1, 0, 0])) == (1, 1, 1)   # a v1 INFO: no proto_max
    assert info.program_loaded and info.max_payload == 1024 and info.max_neurons == 512
    assert info.to_dict()["boot_id"] == "01020304" and info.name == "test"
    with pytest.raises(ValueError, match="malformed"):
        BoardInfo.from_payload(fixed + bytes([5]) + b"test")
    err = BoardErrorInfo(3, 0x3C, 60, "unknown message type 60")
    back = BoardErrorInfo.from_payload(err.to_payload())
    assert back == err and back.code_name == "UNKNOWN_TYPE"
