"""The sanitizer (ASan+UBSan) build of the firmware under random frames over the pty: frames with
valid CRCs but random types and payloads (RUN and LOAD shaped ones included), damaged frames and raw
noise. The board must keep answering (no hang), exit cleanly, and report nothing."""

from __future__ import annotations

import shutil
import struct
import zlib

import numpy as np
import pytest
import torch

from hw.compiler import compile_model
from hw.device import open_device
from hw.serial import PROTOCOL_VERSION, Frame, MsgType
from hw.serial.frame import SEQ_NACK
from snn.model import build_model
from snn.spec import Leaky, Linear, ModelSpec, RLeaky

pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None,
                                reason="needs the sanitizer firmware build (make and a C compiler)")


def _random_frame(rng: np.random.Generator, seq: int, blob: bytes) -> bytes:
    kind = rng.integers(0, 6)
    if kind == 0:       # RUN shaped: random flags (recording ones too)/encoding/T/first_step/n_steps/mem_layer
        n = int(rng.integers(1, 30))
        head = struct.pack("<BBHIHBB", int(rng.integers(0, 16)), int(rng.integers(0, 3)),
                           int(rng.integers(0, 25)), int(rng.integers(0, 3)) * int(rng.integers(0, 60)), n,
                           int(rng.integers(0, 3)), 0)
        payload = head + rng.integers(0, 256, int(rng.integers(0, 5 * n + 4)), dtype=np.uint8).tobytes()
        mtype = MsgType.RUN
    elif kind == 1:     # LOAD shaped: chunks of a valid program at random offsets, some CRCs wrong
        off = int(rng.integers(0, len(blob)))
        chunk = blob[off:off + int(rng.integers(0, 400))]
        crc = zlib.crc32(blob) ^ int(rng.integers(0, 2))
        payload = struct.pack("<III", len(blob), off if rng.random() < 0.7 else 0, crc) + chunk
        mtype = MsgType.LOAD
    elif kind == 2:     # any type, random bytes
        mtype = int(rng.integers(0, 256))
        payload = rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8).tobytes()
    elif kind == 3:     # RESET / HELLO with random payloads
        mtype = int(rng.choice([MsgType.RESET, MsgType.HELLO]))
        payload = rng.integers(0, 4, int(rng.integers(0, 4)), dtype=np.uint8).tobytes()
    elif kind == 4:     # noise (no zero bytes, then a delimiter)
        return rng.integers(1, 256, int(rng.integers(1, 300)), dtype=np.uint8).tobytes() + b"\x00"
    else:               # a valid frame with one byte damaged
        wire = bytearray(Frame(PROTOCOL_VERSION, MsgType.PING, seq, b"damaged").encode())
        wire[int(rng.integers(0, len(wire) - 1))] ^= 0x21
        return bytes(wire)
    return Frame(PROTOCOL_VERSION, mtype, seq, payload).encode()


def test_random_frames_over_pty_with_sanitizers():
    torch.manual_seed(3)
    spec = ModelSpec(layers=(Linear(20, 12), RLeaky(beta=0.8, threshold=0.4), Linear(12, 5), Leaky(beta=0.9)),
                     input_shape=(20,), num_steps=10)
    prog = compile_model(spec, {k: v * 3 for k, v in build_model(spec).state_dict().items()}, "mcu")
    blob = prog.to_bytes()
    x = (torch.rand(10, 6, 20, generator=torch.Generator().manual_seed(1)) < 0.4).to(torch.uint8)
    rng = np.random.default_rng(2024)
    with open_device("emulator:asan") as dev:
        dev.load(prog)
        before = dev.run(x)
        # the random frames' sequence numbers lie half the sequence space away from the link's own: an
        # answer is matched to its request by sequence number, so an equal one would be taken for the
        # answer to the PING (a stale ERROR answer to a random RESET once was, in CI)
        base = (dev.link.last_seq + SEQ_NACK // 2) % SEQ_NACK
        for batch in range(20):
            dev.link.send_raw(b"".join(_random_frame(rng, (base + 20 * batch + i) % SEQ_NACK, blob)
                                       for i in range(20)))
            assert dev.ping(b"still there?") == b"still there?"   # answers within the timeout: no hang
        assert dev.process.alive()
        dev.load(prog)          # the random LOADs/RESETs may have replaced or dropped the program
        after = dev.run(x)
    assert dev.exit_code == 0, dev.firmware_stderr
    assert "runtime error" not in dev.firmware_stderr and "Sanitizer" not in dev.firmware_stderr
    assert torch.equal(before.output_spikes, after.output_spikes)
    with open_device("sim", profile="mcu") as sim:
        sim.load(prog)
        assert torch.equal(after.output_spikes, sim.run(x).output_spikes)
