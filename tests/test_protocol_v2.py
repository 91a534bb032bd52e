"""Serial protocol version 2 (docs/protocol.md): version negotiation in HELLO against old hosts and
old boards, and observation over the link — RUN recording every layer's spikes and one layer's
membranes, replied in chunks (OUTPUT, then READ/RECORD). Recordings through the emulated board are
checked bit for bit against the `sim` device's probe (an independent implementation of
docs/fixed_point.md), on random programs of every neuron type and on a trained digits model."""

from __future__ import annotations

import shutil
import struct
import subprocess
import time

import numpy as np
import pytest
import torch

from hw.compiler import compile_model
from hw.deploy import device_inputs
from hw.device import open_device
from hw.emulator import EmulatorDevice, FirmwareProcess, firmware_dir
from hw.serial import (PROTOCOL_VERSION, BoardError, ErrorCode, Frame, FrameReceiver, MsgType,
                       ProtocolVersionError, SerialDevice, SerialLinkError)
from hw.serial.frame import FrameError
from hw.serial.messages import (ENC_BITMAP, RUN_BEGIN, RUN_COUNTERS, RUN_REC_MEMBRANE, RUN_REC_SPIKES,
                                BoardErrorInfo, BoardInfo, decode_record, parse_output, parse_record,
                                read_payload, record_step_bytes, run_payload)
from snn.checkpoint import load_checkpoint
from test_emulator import NEURONS, _load_chunks, emulator, random_program, random_spikes  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None,
                                reason="the emulator builds the firmware with make and a C compiler")


def sim_probe(program, spikes):
    with open_device("sim", profile="mcu") as sim:
        sim.load(program)
        return sim.run(spikes, probe=True)


def assert_probe_equal(got, ref, mem_layers):
    assert torch.equal(got.output_spikes, ref.output_spikes)
    assert got.counters == ref.counters
    assert sorted(got.layer_spikes) == sorted(ref.layer_spikes)
    for k, s in ref.layer_spikes.items():
        assert got.layer_spikes[k].dtype == torch.uint8 and torch.equal(got.layer_spikes[k], s), f"layer {k}"
    assert sorted(got.membranes) == sorted(mem_layers)
    for k in mem_layers:
        assert got.membranes[k].dtype == torch.int32
        assert torch.equal(got.membranes[k], ref.membranes[k]), f"membranes of layer {k}"


# ---- recording through the emulated board, against sim --------------------------------------------

@pytest.mark.parametrize("kind", sorted(NEURONS))
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_probe_matches_sim_for_every_neuron_type_layer_and_reset(emulator, kind, reset):
    prog = random_program(kind, reset, seed=len(kind) + 7)
    x = random_spikes(12, 16, 40, seed=5)
    ref = sim_probe(prog, x)
    for k in ref.layer_spikes:   # a test that can fail: both layers spike, not always
        assert 0 < int(ref.layer_spikes[k].sum()) < ref.layer_spikes[k].numel()
    assert int((ref.membranes[0] < 0).sum()) > 0 and int((ref.membranes[0] > 0).sum()) > 0
    emulator.load(prog)
    for mem in (0, 1, -1, None):
        got = emulator.run(x, probe=True, membrane_layer=mem)
        assert_probe_equal(got, ref, [] if mem is None else [mem % 2])
    plain = emulator.run(x)
    assert plain.layer_spikes is None and plain.membranes is None
    assert torch.equal(plain.output_spikes, ref.output_spikes)


@pytest.mark.parametrize("kind", ["leaky", "synaptic", "rleaky_dense"])
def test_probe_of_a_non_ideal_chip_matches_sim_with_the_same_chip(kind):
    """Mismatch and membrane noise on (docs/fixed_point.md "Non-ideal chips"): the board's recorded
    spikes and membranes equal `sim`'s probe of the same chip, and differ from the ideal chip's."""
    chip = "chip=7&mismatch=0.15&noise=0.02"
    prog = random_program(kind, "subtract", seed=4)
    x = random_spikes(12, 16, 40, seed=3)
    with open_device(f"sim?{chip}") as sim:
        sim.load(prog)
        ref = sim.run(x, probe=True)
    assert not torch.equal(ref.membranes[0], sim_probe(prog, x).membranes[0])
    with open_device(f"emulator:host?{chip}", membrane_layer=0, frame_payload=128) as dev:
        dev.load(prog)
        assert_probe_equal(dev.run(x, probe=True), ref, [0])


def wide_program(seed: int = 0) -> "Program":
    """40-256-10: a hidden layer whose membranes (1024 bytes a step) do not fit one OUTPUT, so a
    recording of them always needs READs."""
    from snn.model import build_model
    from snn.spec import Leaky, Linear, ModelSpec, Synaptic
    torch.manual_seed(seed)
    spec = ModelSpec(layers=(Linear(40, 256), Synaptic(alpha=0.7, beta=0.85, threshold=0.6), Linear(256, 10),
                             Leaky(beta=0.8, threshold=0.5)), input_shape=(40,), num_steps=12, name="wide")
    sd = {k: v * 3 if k.endswith("weight") else v for k, v in build_model(spec).state_dict().items()}
    return compile_model(spec, sd, "mcu")


class Spy:
    """A transport wrapper keeping every intact frame the board sent."""

    def __init__(self, inner, seen):
        self.inner, self.name, self.rx, self.seen = inner, inner.name, FrameReceiver(), seen

    def write(self, data):
        self.inner.write(data)

    def read(self, timeout_s):
        data = self.inner.read(timeout_s)
        self.seen.extend(f for f in self.rx.feed(data) if isinstance(f, Frame))
        return data

    def close(self):
        self.inner.close()

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.parametrize("frame_payload", [64, None])
def test_recording_split_over_read_chunks(frame_payload):
    """Layer 0's 256 membranes: 1058 recorded bytes a step (32 + 2 spike bytes + 1024), more than
    an OUTPUT holds. The OUTPUT carries the first chunk, READs the rest, in order, each exactly as
    long as docs/protocol.md 3.1 says (at most frame_payload - 12 bytes when it is set)."""
    prog = wide_program()
    x = random_spikes(12, 6, 40, p=0.5, seed=1)
    seen = []
    with EmulatorDevice(frame_payload=frame_payload, membrane_layer=0,
                        transport_wrapper=lambda t: Spy(t, seen)) as dev:
        dev.load(prog)
        got = dev.run(x, probe=True)
        max_payload = dev.board.max_payload
    assert_probe_equal(got, sim_probe(prog, x), [0])
    outputs = [parse_output(f.payload, 10) for f in seen if f.type == MsgType.OUTPUT]
    records = [parse_record(f.payload) for f in seen if f.type == MsgType.RECORD]
    step = record_step_bytes([256, 10], True, 0)
    assert step == 32 + 2 + 4 * 256
    assert sum(o.n_steps for o in outputs) == 12 * 6 and records
    limit = (frame_payload or max_payload) - 12
    for o in outputs:   # per RUN frame: the inline chunk, then READs continuing where the last ended
        assert o.record_total == o.n_steps * step and o.size == max_payload
        chunks = [c for c in records if c.first_step == o.first_step]
        assert [c.offset for c in chunks] == list(np.cumsum([len(o.record)] + [len(c.data) for c in chunks[:-1]]))
        assert all(len(c.data) == min(limit, c.total - c.offset) for c in chunks)
        assert len(o.record) + sum(len(c.data) for c in chunks) == o.record_total


def test_host_sizes_recording_runs_for_the_fewest_round_trips():
    """Spikes of 24 + 10 neurons (5 bytes a step) fit the OUTPUT: no READ at all; the wide layer's
    membranes with 1024-byte frames: many steps per RUN, the recording fetched in full chunks."""
    seen = []
    x = random_spikes(12, 30, 40, seed=2)
    with EmulatorDevice(membrane_layer=None, transport_wrapper=lambda t: Spy(t, seen)) as dev:
        dev.load(random_program("leaky", seed=1))
        dev.run(x, probe=True)
    assert not [f for f in seen if f.type == MsgType.RECORD]
    seen.clear()
    with EmulatorDevice(membrane_layer=0, transport_wrapper=lambda t: Spy(t, seen)) as dev:
        dev.load(wide_program())
        dev.run(x, probe=True)
    outputs = [parse_output(f.payload, 10) for f in seen if f.type == MsgType.OUTPUT]
    records = [f for f in seen if f.type == MsgType.RECORD]
    assert max(o.n_steps for o in outputs) == 16384 // 1058 and len(records) > len(outputs)


def test_probe_on_trained_digits_model_matches_sim(trained_digits_checkpoint, digits):
    ckpt = load_checkpoint(trained_digits_checkpoint)
    prog = compile_model(ckpt.spec, ckpt.state_dict, "mcu")
    x = device_inputs(ckpt.spec, digits.test_x[:120], range(120))
    ref = sim_probe(prog, x)
    assert int(ref.layer_spikes[0].sum()) > 120 and int(ref.output_spikes.sum()) > 120
    with open_device("emulator", membrane_layer=-1) as dev:
        dev.load(prog.to_bytes())
        got = dev.run(x, probe=True)
        stats = dev.link_stats()
    assert_probe_equal(got, ref, [len(prog.layers) - 1])
    assert stats["link_efficiency"] > 0.9


def test_probe_survives_a_board_restart_mid_run():
    prog = random_program("leaky", seed=2)
    x = random_spikes(12, 40, 40, seed=4)
    # HELLO + LOAD chunks + RUN + 2 READs, then the board restarts (in the middle of the READs)
    with EmulatorDevice(reboot_after=1 + _load_chunks(prog, 256) + 3, frame_payload=256, membrane_layer=0) as dev:
        dev.load(prog)
        got = dev.run(x, probe=True)
        assert dev.link_stats()["recoveries"] == 1
    assert "simulated board restart" in dev.firmware_stderr
    assert_probe_equal(got, sim_probe(prog, x), [0])


def test_recording_limits_and_read_errors(emulator):
    """A recording above the board's record buffer is refused before any step (OVERFLOW detail 3),
    one that fits is accepted; READ without a recording or past its end gets BAD_OFFSET."""
    prog = random_program("leaky", seed=3)
    emulator.load(prog)
    link, limit = emulator.link, emulator.board.max_record_bytes
    step = record_step_bytes([24, 10], True, 0)              # 101 bytes
    n_ok = limit // step
    flags = RUN_BEGIN | RUN_COUNTERS | RUN_REC_SPIKES | RUN_REC_MEMBRANE
    x = np.zeros((n_ok + 1, 40), np.uint8)
    with pytest.raises(BoardError) as e:
        link.request(MsgType.RUN, run_payload(flags, 12, 0, x, mem_layer=0))
    assert e.value.is_code(ErrorCode.OVERFLOW) and e.value.error.detail == 3 and e.value.error.value == limit
    o = parse_output(link.request(MsgType.RUN, run_payload(flags, 12, 0, x[:n_ok], mem_layer=0)).payload, 10)
    assert o.record_total == n_ok * step and len(o.record) > 0
    c = parse_record(link.request(MsgType.READ, read_payload(o.record_total - 5)).payload)
    assert (c.offset, c.total, len(c.data)) == (o.record_total - 5, o.record_total, 5)
    with pytest.raises(BoardError, match="BAD_OFFSET") as e:
        link.request(MsgType.READ, read_payload(o.record_total))
    assert e.value.error.value == o.record_total
    with pytest.raises(BoardError, match="BAD_INPUT"):                   # mem_layer beyond the program
        link.request(MsgType.RUN, run_payload(flags, 12, 0, x[:1], mem_layer=2))
    link.request(MsgType.RESET, b"\x00")                                 # RESET ends the recording
    with pytest.raises(BoardError, match="BAD_OFFSET") as e:
        link.request(MsgType.READ, read_payload(0))
    assert e.value.error.value == 0
    with pytest.raises(BoardError, match="BAD_LENGTH"):
        link.request(MsgType.READ, b"\x00" * 5)
    with pytest.raises(ValueError, match="membrane_layer must be a layer index in \\[-2, 2\\)"):
        emulator.run(torch.zeros(2, 1, 40), probe=True, membrane_layer=2)


# ---- version negotiation against old hosts and old boards --------------------------------------

def _firmware_speaking(version: int, out_dir) -> str:
    """The host firmware built from this tree with SL_PROTOCOL_VERSION overridden (a board that
    answers HELLO like a board of that version: its version check runs before anything else)."""
    root = firmware_dir()
    binary = out_dir / f"fw-v{version}"
    srcs = sorted(str(p) for p in root.glob("*.c")) + [str(root / "ports/host/main.c")]
    r = subprocess.run(["cc", "-std=c99", "-O1", f"-DSL_PROTOCOL_VERSION={version}",
                        "-DSL_BOARD_NAME=\"host-posix\"", f"-I{root}", "-o", str(binary), *srcs],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return str(binary)


def test_new_host_refuses_a_v1_board_naming_both_versions(tmp_path):
    proc = FirmwareProcess(_firmware_speaking(1, tmp_path))
    proc.start()
    try:
        with pytest.raises(ProtocolVersionError,
                           match=r"board on .* speaks serial protocol 1 \(supports 1\.\.1\), this host speaks 2 "
                                 r"\(supports 2\.\.2\): update the firmware or spikeloop"):
            SerialDevice(proc.pty_path).open()
    finally:
        assert proc.stop() == 0


def test_old_v1_host_is_refused_by_the_board_and_the_board_stays_usable(emulator):
    """A v1 host's HELLO (v1 frame, range 1..1) and any v1 frame: VERSION_MISMATCH naming 2..2."""
    link = emulator.link
    for frame in (Frame(1, MsgType.HELLO, 11, bytes([1, 1])), Frame(1, MsgType.PING, 12, b"v1")):
        link.send_raw(frame.encode())
        deadline, answer = time.monotonic() + 5, None
        while answer is None and time.monotonic() < deadline:
            ev = link._next_event(deadline)
            if isinstance(ev, Frame) and ev.seq == frame.seq:
                answer = ev
        assert answer is not None and answer.version == 2 and answer.type == MsgType.ERROR
        err = BoardErrorInfo.from_payload(answer.payload)
        assert (err.code, err.detail, err.value) == (ErrorCode.VERSION_MISMATCH, 2, 0x0202)
    assert emulator.ping(b"still v2") == b"still v2"


class FakeBoard:
    """A transport that plays a board: answers each request frame with `answer(frame) -> Frame`."""

    def __init__(self, answer):
        self.answer, self.name, self.rx, self.out = answer, "fake-board", FrameReceiver(), b""

    def write(self, data):
        for f in self.rx.feed(data):
            if isinstance(f, Frame):
                self.out += self.answer(f).encode()

    def read(self, timeout_s):
        out, self.out = self.out, b""
        if not out:
            time.sleep(min(timeout_s, 0.01))
        return out

    def close(self):
        pass


def _info(**kw) -> bytes:
    base = dict(proto_version=2, proto_min=2, firmware_version=(0, 1, 0), profile_id=1, program_loaded=False,
                max_payload=1024, max_program_bytes=131072, max_layers=8, max_neurons=512, max_inputs=1024,
                build_id=1, boot_id=2, program_crc=0, name="fake", proto_max=2, max_record_bytes=16384)
    return BoardInfo(**{**base, **kw}).to_payload()


def _v1_board(f: Frame) -> Frame:
    """What the version-1 firmware (git history) answers: a frame whose header version is not 1
    gets VERSION_MISMATCH (detail 1, value 1 | 1 << 8) before anything else; a v1 INFO otherwise."""
    if f.version != 1:
        return Frame(1, MsgType.ERROR, f.seq, BoardErrorInfo(5, 1, 0x0101, "board speaks protocol 1").to_payload())
    return Frame(1, MsgType.INFO, f.seq, _info(proto_version=1, proto_min=1, proto_max=0)[:32] + b"\x04fake")


@pytest.mark.parametrize("board,match", [
    (_v1_board, r"speaks serial protocol 1 \(supports 1\.\.1\), this host speaks 2 \(supports 2\.\.2\)"),
    # a board that chose a version the host did not offer (in a v2 frame)
    (lambda f: Frame(2, MsgType.INFO, f.seq, _info(proto_version=3, proto_min=2, proto_max=3)),
     r"speaks serial protocol 3 \(supports 2\.\.3\), this host speaks 2"),
    (lambda f: Frame(3, MsgType.INFO, f.seq, _info(proto_version=3, proto_min=3, proto_max=3)),
     r"answered with serial protocol 3, this host speaks 2"),
])
def test_new_host_refuses_fake_boards_of_other_versions(board, match):
    from hw.serial.link import Link
    link = Link(FakeBoard(board), timeout_s=0.5, retries=0)
    with pytest.raises(ProtocolVersionError, match=match):
        link.hello()


def test_v1_host_against_the_python_reference_of_the_v1_board_still_agrees():
    """The v1 fake above answers a v1 host normally: it plays the old firmware, not a broken one."""
    from hw.serial.link import Link
    link = Link(FakeBoard(_v1_board), protocol_version=1, timeout_s=0.5, retries=0)
    f = link.request(MsgType.HELLO, bytes([1, 1]))
    assert BoardInfo.versions(f.payload) == (1, 1, 1)


# ---- the host's recording decoders: hand-made, truncated and corrupt frames ---------------------

def test_record_layout_by_hand():
    """2 steps of layers of 3 and 9 neurons (1 + 2 bitmap bytes) and membranes of layer 0."""
    rec = bytes([0b101, 0xFF, 0x01]) + struct.pack("<iii", -5, 0, 2**31 - 1) + \
        bytes([0b010, 0x00, 0x00]) + struct.pack("<iii", 7, -2**31, 1)
    spk, mem = decode_record(rec, 2, [3, 9], True, 0)
    np.testing.assert_array_equal(spk[0], [[1, 0, 1], [0, 1, 0]])
    np.testing.assert_array_equal(spk[1], [[1] * 9, [0] * 9])
    np.testing.assert_array_equal(mem, [[-5, 0, 2**31 - 1], [7, -2**31, 1]])
    assert mem.dtype == np.int32
    assert record_step_bytes([3, 9], True, 0) == 15 and record_step_bytes([3, 9], False, 1) == 36
    spk, mem = decode_record(bytes([0b101, 0xFF, 0x01]), 1, [3, 9], True, None)
    assert mem is None and spk[1].sum() == 9
    with pytest.raises(ValueError, match="expected 2 steps x 15"):
        decode_record(rec[:-1], 2, [3, 9], True, 0)
    with pytest.raises(ValueError, match="layer 1 have bits set beyond neuron 8"):
        decode_record(bytes([0, 0, 0x02]), 1, [3, 9], True, None)
    with pytest.raises(ValueError, match="layer 0 have bits set beyond neuron 2"):
        decode_record(bytes([0x08, 0, 0]), 1, [3, 9], True, None)


def test_output_and_record_payloads_by_hand_and_truncated():
    head = struct.pack("<BBHIHBB", RUN_COUNTERS | RUN_REC_SPIKES, ENC_BITMAP, 20, 40, 1, 0, 0)
    out = head + bytes([0b1]) + bytes([1]) + struct.pack("<II", 3, 9) + struct.pack("<I", 5) + b"\x01\x02"
    o = parse_output(out, 4)
    assert (o.record_total, o.record, o.counters) == (5, b"\x01\x02", [(3, 9)])
    for cut in range(len(head) + 1 + 9 + 4):       # every truncation before the inline chunk
        with pytest.raises(ValueError):
            parse_output(out[:cut], 4)
    with pytest.raises(ValueError, match="carries 6 record bytes of a 5-byte"):
        parse_output(out + b"\x03\x04\x05\x06", 4)
    with pytest.raises(ValueError, match="unknown flags"):
        parse_output(bytes([0x10]) + out[1:], 4)
    rec = struct.pack("<III", 40, 2, 5) + b"\x03\x04\x05"
    c = parse_record(rec)
    assert (c.first_step, c.offset, c.total, c.data) == (40, 2, 5, b"\x03\x04\x05")
    for bad, why in ((rec[:11], "shorter than its header"), (rec[:12], "does not fit"),
                     (rec + b"\x06", "does not fit"), (struct.pack("<III", 40, 2**32 - 1, 5) + b"x", "does not fit")):
        with pytest.raises(ValueError, match=why):
            parse_record(bad)


def test_receiver_drops_truncated_and_corrupt_record_frames_and_resyncs():
    """RECORD frames cut short, with a flipped byte, or with their length field changed: each is a
    FrameError (never a Frame with wrong data), and the intact frame after the next delimiter
    arrives."""
    payload = struct.pack("<III", 0, 0, 1000) + bytes(range(256)) * 3 + bytes(244)   # 1012 bytes
    wire = Frame(PROTOCOL_VERSION, MsgType.RECORD, 9, payload).encode()
    good = Frame(PROTOCOL_VERSION, MsgType.RECORD, 10, payload[:40] + b"").encode()
    cases = [wire[:k] + b"\x00" for k in (1, 5, 11, 300, len(wire) - 2)]
    for i in range(0, len(wire) - 1, 97):
        flipped = bytearray(wire)
        flipped[i] = flipped[i] ^ 0x41 or 0x01
        cases.append(bytes(flipped))
    for stream in cases:
        events = FrameReceiver(max_payload=1024).feed(stream + good)
        assert all(isinstance(e, FrameError) for e in events[:-1]) and len(events) >= 2
        assert isinstance(events[-1], Frame) and events[-1].seq == 10


class _Rewrite:
    """A transport wrapper that rewrites (with a valid CRC) the first board answer of a type."""

    def __init__(self, inner, msg_type, change):
        self.inner, self.name, self.type, self.change, self.done = inner, inner.name, msg_type, change, False
        self.rx = FrameReceiver()

    def write(self, data):
        self.inner.write(data)

    def read(self, timeout_s):
        data = self.inner.read(timeout_s)
        out = b""
        for f in self.rx.feed(data):
            if isinstance(f, Frame) and f.type == self.type and not self.done:
                self.done = True
                f = Frame(f.version, f.type, f.seq, self.change(f.payload))
            out += f.encode() if isinstance(f, Frame) else b""
        return out

    def close(self):
        self.inner.close()

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _set_record_total(p: bytes, total: int) -> bytes:
    o = parse_output(p, 10)   # the wide program's 10 outputs
    at = o.size - len(o.record) - 4
    return p[:at] + struct.pack("<I", total) + p[at + 4:]


@pytest.mark.parametrize("msg_type,change,match", [
    (MsgType.RECORD, lambda p: p[:-1], "answered a READ"),                          # one byte short
    (MsgType.RECORD, lambda p: p[:4] + struct.pack("<I", 1) + p[8:], "answered a READ"),  # wrong offset
    (MsgType.RECORD, lambda p: struct.pack("<I", 99) + p[4:], "answered a READ"),   # another run's
    (MsgType.RECORD, lambda p: p[:12], "malformed RECORD"),                         # no data
    (MsgType.OUTPUT, lambda p: p[:-3], "not as many as fit"),                       # inline chunk cut
    (MsgType.OUTPUT, lambda p: bytes([p[0] & ~RUN_REC_MEMBRANE]) + p[1:], "flags"),  # flags changed
    (MsgType.OUTPUT, lambda p: _set_record_total(p, 2**32 - 1), "announced a 4294967295-byte"),
])
def test_host_refuses_damaged_recording_answers_with_valid_crc(msg_type, change, match):
    """Frames that pass the CRC but whose recording is wrong: a clear SerialLinkError, never a
    silently wrong probe."""
    prog = wide_program()
    x = random_spikes(12, 4, 40, seed=2)
    with EmulatorDevice(membrane_layer=0, transport_wrapper=lambda t: _Rewrite(t, msg_type, change)) as dev:
        dev.load(prog)
        with pytest.raises(SerialLinkError, match=match):
            dev.run(x, probe=True)
