"""The `emulator` device: the host build of the board firmware on a pty, driven by SerialDevice
through pyserial. Checked against the `sim` device (mcu profile) — an independent implementation of
docs/fixed_point.md — output raster for output raster."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import struct
import zlib

import pytest
import torch

from hw.compiler import compile_model
from hw.deploy import device_inputs
from hw.device import DeviceError, open_device
from hw.emulator import EmulatorDevice
from hw.program import Program, ProgramError
from hw.serial import BoardError, ErrorCode, FirmwareRestartError, MsgType
from hw.serial.messages import LOAD_HEADER, load_payload
from snn.checkpoint import load_checkpoint
from snn.model import build_model
from snn.spec import Leaky, Linear, ModelSpec, RLeaky, Synaptic

pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None,
                                reason="the emulator builds the firmware with make and a C compiler")

NEURONS = {
    "leaky": lambda reset: Leaky(beta=0.85, threshold=0.6, reset=reset),
    "synaptic": lambda reset: Synaptic(alpha=0.7, beta=0.85, threshold=0.6, reset=reset),
    "rleaky_dense": lambda reset: RLeaky(beta=0.85, threshold=0.6, reset=reset, all_to_all=True),
    "rleaky_elementwise": lambda reset: RLeaky(beta=0.85, threshold=0.6, reset=reset, all_to_all=False,
                                               V=(0.4,) * 24, per_neuron=True),
}


def random_program(kind: str = "leaky", reset: str = "subtract", seed: int = 0, n_in: int = 40) -> Program:
    """A 40-24-10 network with random weights large enough that both layers spike."""
    torch.manual_seed(seed)
    spec = ModelSpec(layers=(Linear(n_in, 24), NEURONS[kind](reset), Linear(24, 10),
                             Leaky(beta=0.8, threshold=0.5, reset=reset)),
                     input_shape=(n_in,), num_steps=12, name=f"t-{kind}")
    sd = {k: v * 3 if k.endswith("weight") else v for k, v in build_model(spec).state_dict().items()}
    return compile_model(spec, sd, "mcu")


def random_spikes(T: int, B: int, n: int, p: float = 0.3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, n, generator=g) < p).to(torch.uint8)


def sim_run(program, spikes):
    with open_device("sim", profile="mcu") as sim:
        sim.load(program)
        return sim.run(spikes)


@pytest.fixture(scope="module")
def emulator():
    with open_device("emulator") as dev:
        yield dev


@pytest.mark.parametrize("kind", sorted(NEURONS))
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_matches_sim_for_every_neuron_type_and_reset(emulator, kind, reset):
    prog = random_program(kind, reset, seed=len(kind))
    x = random_spikes(12, 16, 40, seed=3)
    emulator.load(prog)
    got, ref = emulator.run(x), sim_run(prog, x)
    assert got.output_spikes.dtype == torch.uint8 and got.output_spikes.shape == (12, 16, 10)
    assert 0 < int(ref.output_spikes.sum()) < ref.output_spikes.numel()   # a test that can fail
    assert torch.equal(got.output_spikes, ref.output_spikes)
    assert got.counters == ref.counters


def test_samples_split_across_small_frames_match_sim():
    """64-byte frames: every RUN frame holds a few steps, samples straddle frames."""
    prog = random_program("synaptic", seed=5)
    x = random_spikes(7, 30, 40, p=0.5, seed=1)
    with open_device("emulator:host?frame_payload=64") as dev:
        dev.load(prog)
        got = dev.run(x)
        stats = dev.link_stats()
    assert torch.equal(got.output_spikes, sim_run(prog, x).output_spikes)
    # HELLO, LOAD chunks of 52 bytes, RUN frames of (64 - 10) // 5 = 10 steps of 40 input bits.
    assert stats["requests"] == 1 + _load_chunks(prog, 64) + math.ceil(7 * 30 / 10)


def test_bit_exact_on_trained_digits_whole_test_set(trained_digits_checkpoint, digits):
    ckpt = load_checkpoint(trained_digits_checkpoint)
    prog = compile_model(ckpt.spec, ckpt.state_dict, "mcu")
    x = digits.test_x
    assert len(x) == 360
    inputs = device_inputs(ckpt.spec, x, range(len(x)))
    with open_device("emulator") as dev:
        dev.load(prog.to_bytes())
        got = dev.run(inputs)
    ref = sim_run(prog, inputs)
    assert got.output_spikes.shape == (ckpt.spec.num_steps, 360, 10)
    assert int(ref.output_spikes.sum()) > 360
    assert torch.equal(got.output_spikes, ref.output_spikes)
    assert got.counters == ref.counters


def test_deploy_cli_on_emulator_reports_sim_agreement_and_link_efficiency(trained_digits_checkpoint, capsys):
    from experiments.cli import main
    rc = main(["deploy", str(trained_digits_checkpoint), "--device", "emulator", "--max-test", "100",
               "--no-progress", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("device_accuracy", "float_accuracy", "agreement_with_float", "timesteps_per_s", "synops",
                "agreement_with_sim", "link_efficiency"):
        assert key in out, key
    assert out["agreement_with_sim"] == 1.0
    assert out["link_efficiency"] >= 0.9
    assert out["device_info"]["backend"] == "emulator"


def _load_chunks(prog: Program, payload: int = 1024) -> int:
    return math.ceil(len(prog.to_bytes()) / (payload - LOAD_HEADER.size))


def test_firmware_restart_mid_run_is_recovered_with_identical_results():
    prog = random_program("leaky", seed=2)
    x = random_spikes(12, 40, 40, seed=4)
    # HELLO + LOAD chunks + 2 RUN frames, then the board restarts (once) and loses its program.
    reboot_after = 1 + _load_chunks(prog, 128) + 2
    with EmulatorDevice(reboot_after=reboot_after, frame_payload=128) as dev:
        dev.load(prog)
        boot_before = dev.board.boot_id
        got = dev.run(x)
        assert dev.link_stats()["recoveries"] == 1
        assert dev.board.boot_id != boot_before
        again = dev.run(x)   # and the reloaded board keeps working
    assert "simulated board restart" in dev.firmware_stderr
    ref = sim_run(prog, x)
    assert torch.equal(got.output_spikes, ref.output_spikes)
    assert got.counters == ref.counters
    assert torch.equal(again.output_spikes, ref.output_spikes)


def test_firmware_restart_without_recovery_raises_a_clear_error():
    prog = random_program("leaky", seed=2)
    with EmulatorDevice(reboot_after=1 + _load_chunks(prog, 128) + 1, max_recoveries=0, frame_payload=128) as dev:
        dev.load(prog)
        with pytest.raises(FirmwareRestartError, match="restarted during a run and lost its program"):
            dev.run(random_spikes(12, 40, 40))


def test_oversize_program_is_refused_by_host_and_by_board(emulator):
    prog = random_program()
    small = dataclasses.replace(emulator.board, max_program_bytes=1000)
    real, emulator.board = emulator.board, small
    try:
        with pytest.raises(DeviceError, match=r"program has \d+ bytes; the board on .* holds at most 1000"):
            emulator.load(prog)
    finally:
        emulator.board = real
    limit = emulator.board.max_program_bytes
    with pytest.raises(BoardError, match="PROGRAM_TOO_LARGE") as e:
        emulator.link.request(MsgType.LOAD, load_payload(limit + 4, 0, 0, b""))
    assert e.value.is_code(ErrorCode.PROGRAM_TOO_LARGE) and e.value.error.value == limit


def _raw_load(dev, blob: bytes, crc: int | None = None):
    crc = zlib.crc32(blob) if crc is None else crc
    step = dev.board.max_payload - LOAD_HEADER.size
    for off in range(0, len(blob), step):
        f = dev.link.request(MsgType.LOAD, load_payload(len(blob), off, crc, blob[off:off + step]))
    return f


def _with_crc(blob: bytearray) -> bytes:
    struct.pack_into("<I", blob, 12, zlib.crc32(bytes(blob[:12]) + bytes(blob[16:])))
    return bytes(blob)


def _corruptions(good: bytes):
    b = bytearray(good); b[0] = ord("X"); yield "magic", bytes(b)
    b = bytearray(good); struct.pack_into("<H", b, 4, 3); yield "version", _with_crc(b)  # 1, 2 are read
    yield "truncated", good[:-4]
    b = bytearray(good); b[100] ^= 0x01; yield "crc", bytes(b)
    b = bytearray(good); b[6] = 2; yield "profile", _with_crc(b)
    b = bytearray(good); struct.pack_into("<H", b, 18, 41); yield "chain", _with_crc(b)
    b = bytearray(good); b[48 + 1] = 9; yield "neuron_type", _with_crc(b)


def test_corrupt_programs_are_refused_by_host_and_board_and_board_stays_usable(emulator):
    prog = random_program(seed=7)
    good = prog.to_bytes()
    x = random_spikes(12, 4, 40)
    for what, blob in _corruptions(good):
        with pytest.raises(ProgramError):
            Program.from_bytes(blob)
        with pytest.raises(ProgramError):          # SerialDevice validates before sending
            emulator.load(blob)
        with pytest.raises(BoardError, match="BAD_PROGRAM") as e:    # and the board on its own
            _raw_load(emulator, blob)
        assert e.value.error.message, what
        with pytest.raises(BoardError, match="NOT_LOADED"):
            emulator.link.request(MsgType.RUN, struct.pack("<BBHIHBB", 1, 0, 12, 0, 1, 0, 0) + bytes(5))
    with pytest.raises(BoardError, match="CHECKSUM_MISMATCH"):
        _raw_load(emulator, good, crc=zlib.crc32(good) ^ 0xFFFF)
    emulator.load(prog)
    assert torch.equal(emulator.run(x).output_spikes, sim_run(prog, x).output_spikes)


def test_clear_errors_for_misuse(emulator):
    dev = EmulatorDevice()
    with pytest.raises(DeviceError, match="not open"):
        dev.run(random_spikes(2, 1, 40))
    prog = random_program()
    emulator.load(prog)
    with pytest.raises(ValueError, match=r"\[T, B, 40\]"):
        emulator.run(random_spikes(3, 2, 41))
    with pytest.raises(ValueError, match="0 or 1"):
        emulator.run(random_spikes(3, 2, 40) * 2)
    with pytest.raises(ValueError, match="membrane_layer"):      # probes: tests/test_protocol_v2.py
        emulator.run(random_spikes(3, 2, 40), probe=True, membrane_layer=2)
    with pytest.raises(ValueError, match="mcu"):
        open_device("emulator", profile="loihi")
    with pytest.raises(ValueError, match="unknown parameters"):
        open_device("emulator:?colour=blue")
    with pytest.raises(ValueError, match="variant"):
        open_device("emulator:fast")


def test_reset_info_and_clean_stop():
    with open_device("emulator") as dev:
        info = dev.info()
        assert info.backend == "emulator" and info.profile == "mcu"
        assert info.capacities["max_neurons_per_layer"] == 4096     # hw/profiles/mcu.json (INFO u16 fields)
        assert info.capacities["max_fan_in"] == 4096
        assert info.capacities["max_program_bytes"] == 131072
        dev.load(random_program())
        dev.reset()
        proc = dev.process.proc
    assert proc.poll() is not None and dev.exit_code == 0 and dev.firmware_stderr == ""


def test_bench_link_prints_one_json_object_with_efficiency(capsys):
    from experiments.bench_link import main as bench
    assert bench(["--samples", "24", "--batch", "24", "--payloads", "64,1024", "--repeats", "1",
                  "--recording", "off,membrane", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    small, big, rec_small, rec_big = out["rows"]
    assert out["bit_exact_vs_sim"] and out["samples"] == 24 and out["num_steps"] == 20
    assert [r["recording"] for r in out["rows"]] == ["off", "off", "membrane", "membrane"]
    assert small["frames"] > big["frames"]
    assert small["link_efficiency"] < big["link_efficiency"]
    assert big["link_efficiency"] >= 0.9 and big["spike_data_efficiency"] >= 0.9
    for key in ("timesteps_per_s", "sim_timesteps_per_s", "host_us_per_frame", "wall_us_per_frame",
                "samples_per_s"):
        assert big[key] > 0
    # recording 64 + 10 spikes and 64 membranes (4 bytes) per step: 8 + 2 + 256 recorded bytes a
    # step on top of the output raster, so at least 24 * 20 * 266 more bytes from the board
    assert rec_big["bytes_per_sample"] - big["bytes_per_sample"] >= 20 * 266
    assert rec_big["read_frames"] > 0 and rec_big["link_efficiency"] >= 0.9
    assert rec_small["bytes_per_sample"] > rec_big["bytes_per_sample"]


def test_firmware_binary_builds_when_missing_or_stale_and_reports_failures(tmp_path, monkeypatch):
    import os
    import time

    from hw.emulator import firmware_binary, firmware_dir
    src = firmware_dir()
    root = tmp_path / "fw"
    shutil.copytree(src, root, ignore=shutil.ignore_patterns("build"))
    monkeypatch.setenv("SPIKELOOP_FIRMWARE_DIR", str(root))
    with pytest.raises(DeviceError, match="missing or stale"):
        firmware_binary("host", build=False)
    binary = firmware_binary("host")
    assert binary == root / "build" / "spikeloop-fw-host" and binary.is_file()
    built = binary.stat().st_mtime_ns
    assert firmware_binary("host").stat().st_mtime_ns == built          # fresh: not rebuilt
    future = time.time() + 5
    os.utime(root / "sl_core.c", (future, future))
    assert firmware_binary("host").stat().st_mtime_ns > built           # a newer source: rebuilt
    (root / "sl_core.c").write_text((root / "sl_core.c").read_text() + "\nint broken(void) { return }\n")
    with pytest.raises(DeviceError, match=r"(?s)building the firmware failed .*sl_core\.c.*error"):
        firmware_binary("host")
