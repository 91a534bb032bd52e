"""Property-based fuzzing of every Python decoder that reads bytes from outside (hypothesis).

Each decoder gets random bytes and targeted mutations of a valid input (with checksums repaired, so
the mutation reaches the checks behind the CRC) and must either return a value that satisfies the
format's own invariants or raise its documented error type with a message. Any other exception
(IndexError, struct.error, KeyError, OverflowError, MemoryError, ...) is a bug. The number of
examples per property is bounded for CI; `SPIKELOOP_FUZZ_EXAMPLES=20000 pytest tests/test_fuzz_decoders.py`
runs a longer campaign.
"""

from __future__ import annotations

import json
import os
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hw.program import HEADER_SIZE, Program, ProgramError, crc32_of
from hw.serial.cobs import CobsError, cobs_decode, cobs_encode
from hw.serial.frame import Frame, FrameError, FrameReceiver, decode_wire
from hw.serial.messages import (RUN_HEADER, BoardErrorInfo, BoardInfo, decode_record, decode_spikes,
                                parse_output, parse_record, record_step_bytes)
from snn.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from snn.model import build_model
from snn.spec import Leaky, Linear, ModelSpec, RLeaky, Synaptic

EXAMPLES = int(os.environ.get("SPIKELOOP_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


def _small_program() -> Program:
    from hw.program import LayerProgram
    rng = np.random.default_rng(0)
    l0 = LayerProgram("synaptic", "subtract", 3, rng.integers(-128, 128, (5, 7)),
                      rng.integers(-50, 50, 5), rng.integers(1, 300, 5), rng.integers(0, 4097, 5),
                      decay_syn=rng.integers(0, 4097, 5))
    l1 = LayerProgram("rleaky_dense", "zero", 1, rng.integers(-128, 128, (3, 5)), np.zeros(3, np.int32),
                      np.full(3, 9), np.full(3, 4096), rec_weights=rng.integers(-128, 128, (3, 3)),
                      rec_shift=2)
    l2 = LayerProgram("rleaky_elementwise", "subtract", 0, rng.integers(-128, 128, (2, 3)),
                      np.zeros(2, np.int32), np.full(2, 40), np.full(2, 100), rec_gain=np.array([-7, 12]))
    return Program("mcu", (l0, l1, l2), num_steps=25, name="fuzz")


VALID_BLOB = _small_program().to_bytes()


def _with_crc(blob: bytes) -> bytes:
    """Repair the CRC field (when the blob is long enough to have one)."""
    if len(blob) < 16:
        return blob
    return blob[:12] + struct.pack("<I", crc32_of(blob)) + blob[16:]


def _check_program(blob: bytes) -> None:
    try:
        prog = Program.from_bytes(blob)
    except ProgramError as e:
        assert str(e)
        return
    # accepted: the decoder's view must re-encode to exactly these bytes
    assert prog.to_bytes() == bytes(blob)


@FUZZ
@given(st.binary(max_size=600))
def test_program_decoder_random_bytes(data):
    _check_program(data)
    _check_program(_with_crc(data))


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(VALID_BLOB) - 1), st.integers(0, 255)), min_size=1, max_size=6),
       st.booleans())
def test_program_decoder_mutated_valid_blob(edits, fix_crc):
    blob = bytearray(VALID_BLOB)
    for pos, val in edits:
        blob[pos] = val
    blob = bytes(blob)
    _check_program(_with_crc(blob) if fix_crc else blob)


@FUZZ
@given(st.integers(0, len(VALID_BLOB) + 8), st.binary(max_size=8))
def test_program_decoder_truncated_or_extended(cut, tail):
    blob = VALID_BLOB[:cut] + tail
    if len(blob) >= 12:  # a consistent total_size, so truncation is caught by the record checks
        blob = blob[:8] + struct.pack("<I", len(blob)) + blob[12:]
    _check_program(_with_crc(blob))


# ---- frames, COBS and message payloads -------------------------------------------------------

def _frame_strategy():
    return st.builds(Frame, st.integers(0, 255), st.integers(0, 255), st.integers(0, 0xFFFF),
                     st.binary(max_size=300))


@FUZZ
@given(st.binary(max_size=2000))
def test_cobs_decoder_random_bytes(data):
    try:
        out = cobs_decode(data)
    except CobsError as e:
        assert str(e)
        return
    assert 0 not in cobs_encode(out)  # decoded data re-encodes to valid COBS
    assert len(out) <= len(data)


@FUZZ
@given(st.binary(max_size=2000))
def test_wire_decoder_random_bytes(data):
    try:
        f = decode_wire(data)
    except FrameError as e:
        assert e.kind in ("bad_crc", "bad_framing", "overflow") and str(e)
        return
    assert decode_wire(f.encode()) == f


@FUZZ
@given(st.lists(_frame_strategy(), max_size=4), st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)),
                                                         max_size=8),
       st.lists(st.integers(1, 64), max_size=6), st.sampled_from([64, 256, 1024]))
def test_frame_receiver_never_raises_and_keeps_sync(frames, noise, splits, max_payload):
    """Any byte stream (frames with line noise, cut into arbitrary chunks) gives only Frames and
    FrameErrors; an intact frame after a delimiter is always recovered; no frame above the
    receiver's max_payload is ever delivered."""
    stream = bytearray(b"".join(f.encode() for f in frames))
    for pos, val in noise:
        if stream:
            stream[pos % len(stream)] = val
    probe = Frame(1, 2, 7, b"probe")
    stream = bytes(stream) + b"\x00" + probe.encode()
    rx, events, i = FrameReceiver(max_payload=max_payload), [], 0
    for n in splits + [len(stream)]:
        events += rx.feed(stream[i:i + n])
        i += n
    for e in events:
        assert isinstance(e, (Frame, FrameError))
        if isinstance(e, Frame):
            assert len(e.payload) <= max_payload
    assert events and events[-1] == Frame(1, 2, 7, b"probe", events[-1].crc)


@FUZZ
@given(st.binary(max_size=200), st.integers(1, 600))
def test_output_payload_decoder(data, n_out):
    try:
        out = parse_output(data, n_out)
    except ValueError as e:
        assert str(e)
        return
    assert out.spikes.shape == (out.n_steps, n_out)
    assert set(np.unique(out.spikes)) <= {0, 1}


@FUZZ
@given(st.integers(0, 15), st.integers(0, 1), st.integers(0, 30), st.integers(0, 255), st.binary(max_size=300),
       st.integers(1, 300))
def test_output_payload_decoder_with_recording(flags, enc, n_steps, mem_layer, body, n_out):
    """OUTPUTs whose header asks for counters and/or a recording (protocol v2), with random bodies:
    a decoded one has its record_total and an inline chunk no longer than it."""
    data = RUN_HEADER.pack(flags, enc, 20, 0, n_steps, mem_layer, 0) + body
    try:
        out = parse_output(data, n_out)
    except ValueError as e:
        assert str(e)
        return
    assert out.spikes.shape == (n_steps, n_out) and out.size == len(data)
    if flags & 0x0C:
        assert out.record_total is not None and len(out.record) <= out.record_total
    else:
        assert out.record_total is None and out.record == b""


@FUZZ
@given(st.binary(max_size=80))
def test_record_payload_decoder(data):
    try:
        c = parse_record(data)
    except ValueError as e:
        assert str(e)
        return
    assert 0 < len(c.data) and c.offset + len(c.data) <= c.total


@FUZZ
@given(st.binary(max_size=300), st.integers(0, 12), st.lists(st.integers(1, 40), min_size=1, max_size=4),
       st.booleans(), st.integers(-1, 3))
def test_record_decoder(data, n_steps, sizes, spikes, mem):
    mem_layer = None if mem < 0 or mem >= len(sizes) else mem
    try:
        spk, membranes = decode_record(data, n_steps, sizes, spikes, mem_layer)
    except ValueError as e:
        assert str(e)
        return
    assert len(data) == n_steps * record_step_bytes(sizes, spikes, mem_layer)
    if spikes:
        assert [a.shape for a in spk] == [(n_steps, n) for n in sizes]
        assert all(set(np.unique(a)) <= {0, 1} for a in spk)
    if mem_layer is not None:
        assert membranes.shape == (n_steps, sizes[mem_layer]) and membranes.dtype == np.int32


@FUZZ
@given(st.integers(0, 3), st.binary(max_size=200), st.integers(0, 40), st.integers(1, 300))
def test_spike_decoder(enc, data, n_steps, n):
    try:
        spikes, used = decode_spikes(enc, data, n_steps, n)
    except ValueError as e:
        assert str(e)
        return
    assert spikes.shape == (n_steps, n) and 0 <= used <= len(data)


@FUZZ
@given(st.binary(max_size=120))
def test_info_and_error_payload_decoders(data):
    for cls in (BoardInfo, BoardErrorInfo):
        try:
            cls.from_payload(data)
        except ValueError as e:
            assert str(e)


# ---- checkpoints -----------------------------------------------------------------------------

SPECS = [
    ModelSpec(layers=(Linear(4, 6), Leaky(beta=0.9), Linear(6, 3), Synaptic(alpha=0.5, beta=0.8)), input_shape=(4,),
              num_steps=5),
    ModelSpec(layers=(Linear(3, 5), RLeaky(beta=0.8, all_to_all=True), Linear(5, 2), Leaky(beta=0.9)),
              input_shape=(3,), num_steps=4),
]


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    out = []
    for k, spec in enumerate(SPECS):
        torch.manual_seed(k)
        path = tmp_path_factory.mktemp("ckpt") / "m.safetensors"
        save_checkpoint(path, spec, build_model(spec), metrics={"acc": 0.5})
        out.append(path.read_bytes())
    return out


def _rewrite_header(data: bytes, header: dict) -> bytes:
    """`data` with its header replaced; the metadata digest is recomputed (when the header keeps one)
    so that the mutation reaches the spec and metrics parsers behind it."""
    from snn.checkpoint import METADATA_DIGEST_KEY, metadata_digest
    meta = header.get("__metadata__", {})
    if METADATA_DIGEST_KEY in meta:
        meta[METADATA_DIGEST_KEY] = metadata_digest(meta)
    n = int.from_bytes(data[:8], "little")
    body = data[8 + n:]
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return len(h).to_bytes(8, "little") + h + body


def _check_checkpoint(tmp_path, data: bytes) -> None:
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(data)
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as e:
        assert str(e)
        return
    ckpt.build()  # accepted: must build


@FUZZ
@given(st.integers(0, 1), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1,
                                   max_size=200))
def test_checkpoint_loader_byte_flips(tmp_path, checkpoint_bytes, which, flips):
    """Flipped bytes anywhere (header or tensor data) load exactly as saved or are refused."""
    data = bytearray(checkpoint_bytes[which])
    for pos, val in flips:
        data[pos % len(data)] = val
    path = tmp_path / "flip.safetensors"
    path.write_bytes(bytes(data))
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as e:
        assert str(e)
        return
    # accepted: the tensors must be exactly the saved ones (the digest guards the data)
    orig = tmp_path / "orig.safetensors"
    orig.write_bytes(checkpoint_bytes[which])
    ref = load_checkpoint(orig)
    assert ckpt.spec == ref.spec
    assert ckpt.state_dict.keys() == ref.state_dict.keys()
    for k, v in ref.state_dict.items():
        assert torch.equal(ckpt.state_dict[k], v), k


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@FUZZ
@given(st.integers(0, 1), st.sampled_from(["spec", "metrics", "extra", "format", "format_version", "sha256"]),
       st.one_of(_json_values.map(json.dumps), st.text(max_size=40)), st.booleans())
def test_checkpoint_loader_metadata(tmp_path, checkpoint_bytes, which, key, value, drop):
    """Any metadata value, or a missing key, loads or is refused with a CheckpointError."""
    data = checkpoint_bytes[which]
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    meta = dict(header.get("__metadata__", {}))
    if drop:
        meta.pop(key, None)
    else:
        meta[key] = value
    header["__metadata__"] = meta
    _check_checkpoint(tmp_path, _rewrite_header(data, header))


@FUZZ
@given(st.integers(0, 1), st.data())
def test_checkpoint_loader_spec_fields(tmp_path, checkpoint_bytes, which, draw):
    """Mutating one field of the stored spec (sizes, num_steps, decays) is refused or builds."""
    data = checkpoint_bytes[which]
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    spec = json.loads(header["__metadata__"]["spec"])
    layer = draw.draw(st.integers(0, len(spec["layers"]) - 1))
    fields = [k for k in spec["layers"][layer] if k != "type"] or ["type"]
    field_ = draw.draw(st.sampled_from(fields + ["num_steps", "input_shape", "dt_s"]))
    value = draw.draw(st.one_of(st.integers(-5, 10**12), st.floats(allow_nan=True), st.text(max_size=5),
                                st.lists(st.integers(-3, 10**10), max_size=3), st.none()))
    if field_ in ("num_steps", "input_shape", "dt_s"):
        spec[field_] = value
    else:
        spec["layers"][layer][field_] = value
    header["__metadata__"]["spec"] = json.dumps(spec)
    _check_checkpoint(tmp_path, _rewrite_header(data, header))


# ---- NIR -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nir_file(tmp_path_factory):
    from hw.nir_graph import export_nir, write_nir
    spec = SPECS[0]
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("nir") / "m.nir"
    write_nir(export_nir(spec, build_model(spec).state_dict()), path)
    return path.read_bytes()


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=50))
def test_nir_file_import_byte_flips(tmp_path, nir_file, flips):
    """A damaged NIR (HDF5) file imports or is refused with a ValueError/OSError naming the file."""
    from hw.nir_graph import import_nir
    data = bytearray(nir_file)
    for pos, val in flips:
        data[pos % len(data)] = val
    path = tmp_path / "flip.nir"
    path.write_bytes(bytes(data))
    try:
        spec, sd = import_nir(path)
    except (ValueError, OSError) as e:
        assert str(e)
        return
    build_model(spec, sd)
    for k, v in sd.items():
        assert torch.isfinite(torch.as_tensor(v)).all(), k


@FUZZ
@given(st.data())
def test_nir_graph_import_mutated_params(draw):
    """A graph whose node parameters are replaced by arbitrary arrays imports or raises ValueError."""
    import nir
    from hw.nir_graph import export_nir, import_nir
    spec = SPECS[draw.draw(st.integers(0, 1))]
    torch.manual_seed(0)
    graph = export_nir(spec, build_model(spec).state_dict())
    name = draw.draw(st.sampled_from(sorted(graph.nodes)))
    node = graph.nodes[name]
    params = [k for k, v in vars(node).items() if isinstance(v, np.ndarray)]
    if not params:
        return
    key = draw.draw(st.sampled_from(params))
    shape = draw.draw(st.sampled_from([getattr(node, key).shape, (), (0,), (2, 2), (7,)]))
    fill = draw.draw(st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -1.0, 1e30, 0.5, 2.0]))
    arr = np.full(shape, fill, dtype=np.float32)
    try:
        setattr(node, key, arr)
    except Exception:
        return  # the nir node itself refused the value
    try:
        out_spec, sd = import_nir(graph)
    except ValueError as e:
        assert str(e)
        return
    for k, v in sd.items():
        assert torch.isfinite(torch.as_tensor(v)).all(), f"{name}.{key}={fill}: non-finite {k} accepted"
    build_model(out_spec, sd)
