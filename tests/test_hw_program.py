"""Device program bytes: the layout of docs/program_format.md read back with `struct` (not with
hw.program), a bitwise CRC-32, round trips, and refusal of corrupt, truncated, other-version and
out-of-profile programs with clear errors."""

from __future__ import annotations

import json
import struct

from pathlib import Path

import numpy as np
import pytest

from hw.program import LayerProgram, MapGeometry, Program, ProgramError


def crc32_bitwise(data: bytes) -> int:
    """CRC-32/ISO-HDLC written out from its definition (reflected poly 0xEDB88320)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def conv_program():
    """The version-2 worked example of docs/program_format.md."""
    g = MapGeometry(1, 3, 3, 1, 2, 1, 0, "max", 2, 2)
    layer = LayerProgram("leaky", "subtract", 3, np.array([[[[1, -2], [3, 4]]]]), np.array([5]), np.array([100]),
                         np.array([410]), conv=g)
    return Program("mcu", (layer,), num_steps=25, dt_ns=1_000_000, name="conv", graded_input=True, input_scale=127.0)


def test_worked_examples_of_the_format_doc_are_the_bytes():
    """The two hex dumps of docs/program_format.md are exactly what the writer produces."""
    import re
    doc = (Path(__file__).parent.parent / "docs" / "program_format.md").read_text()
    dumps = re.split(r"^## Worked example", doc, flags=re.M)[1:]
    assert len(dumps) == 2
    for text, prog in zip(dumps, (small_program(), conv_program())):
        rows = re.findall(r"^    ([0-9a-f]{4}): ((?:[0-9a-f]{2} ?)+)", text, flags=re.M)
        blob = bytes.fromhex("".join(r[1].replace(" ", "") for r in rows))
        assert blob == prog.to_bytes()
        assert Program.from_bytes(blob).to_bytes() == blob


def small_program(profile="mcu"):
    l0 = LayerProgram("synaptic", "subtract", 3, np.array([[1, -2, 3], [127, -128, 0]]),
                      np.array([5, -6]), np.array([100, 200]), np.array([410, 0]), decay_syn=np.array([7, 8]))
    l1 = LayerProgram("rleaky_dense", "zero", 0, np.array([[4, 5]]), np.array([0]), np.array([9]),
                      np.array([4096]), rec_weights=np.array([[-3]]), rec_shift=2)
    return Program(profile, (l0, l1), num_steps=25, dt_ns=1_000_000, name="tiny")


def test_crc_definition():
    assert crc32_bitwise(b"123456789") == 0xCBF43926


def test_header_and_record_layout_by_hand():
    blob = small_program().to_bytes()
    assert blob[:4] == b"SLPG"
    version, pid, flags, total, crc = struct.unpack_from("<HBBII", blob, 4)
    assert (version, pid, flags, total) == (1, 1, 0, len(blob))
    assert crc == crc32_bitwise(blob[:12] + blob[16:])
    assert struct.unpack_from("<HHHHII", blob, 16) == (2, 3, 1, 25, 1_000_000, 0)
    assert blob[32:48] == b"tiny" + b"\0" * 12
    # record 0: synaptic (2), subtract (0), w_shift 3, fan_in 3, N 2
    rtype, ntype, reset, wsh, fan_in, n, rsh, fl, res, size = struct.unpack_from("<BBBBHHBBHI", blob, 48)
    assert (rtype, ntype, reset, wsh, fan_in, n, rsh, fl, res) == (1, 2, 0, 3, 3, 2, 0, 0, 0)
    # 16 + pad4(6) + 8 + 8 + pad4(4) + pad4(4) = 48
    assert size == 48
    off = 48 + 16
    assert list(struct.unpack_from("<6b", blob, off)) == [1, -2, 3, 127, -128, 0]
    assert blob[off + 6: off + 8] == b"\0\0"
    assert struct.unpack_from("<2i2i2H2H", blob, off + 8) == (5, -6, 100, 200, 410, 0, 7, 8)
    # record 1: rleaky dense (3), zero (1), rec_shift 2; 16 + 4 + 4 + 4 + 4 + 4 = 36
    r1 = 48 + 48
    assert struct.unpack_from("<BBBBHHBBHI", blob, r1) == (1, 3, 1, 0, 2, 1, 2, 0, 0, 36)
    assert struct.unpack_from("<2b", blob, r1 + 16) == (4, 5)
    assert struct.unpack_from("<iiH", blob, r1 + 20) == (0, 9, 4096)
    assert struct.unpack_from("<b", blob, r1 + 32) == (-3,)
    assert len(blob) == 48 + 48 + 36
    assert all(x % 4 == 0 for x in (48, 96, len(blob)))


def test_round_trip_and_json_view():
    prog = small_program()
    blob = prog.to_bytes()
    back = Program.from_bytes(blob)
    assert back.to_bytes() == blob
    for a, b in zip(prog.layers, back.layers):
        for (name, x), (_, y) in zip(a.sections(), b.sections()):
            assert np.array_equal(x, y), name
    view = json.loads(prog.to_json())
    assert view["crc32"] == f"0x{crc32_bitwise(blob[:12] + blob[16:]):08x}"
    assert view["layers"][0]["weights"] == [[1, -2, 3], [127, -128, 0]]
    assert view["layers"][1]["rec_shift"] == 2 and view["size_bytes"] == len(blob)


def test_save_and_load(tmp_path):
    prog = small_program()
    path = prog.save(tmp_path / "p.slpg")
    assert Program.load(path).to_bytes() == prog.to_bytes()
    with pytest.raises(FileNotFoundError, match="not found"):
        Program.load(tmp_path / "missing.slpg")


def test_every_single_byte_corruption_is_refused():
    blob = small_program().to_bytes()
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x5A
        with pytest.raises(ProgramError):
            Program.from_bytes(bytes(bad))


@pytest.mark.parametrize("cut", [0, 10, 47, 48, 60, 131])
def test_truncated_is_refused(cut):
    blob = small_program().to_bytes()
    with pytest.raises(ProgramError, match="truncated"):
        Program.from_bytes(blob[:cut])


def _restamp(blob: bytearray) -> bytes:
    """Fix the CRC after an edit so the check under test is the one that fires."""
    struct.pack_into("<I", blob, 12, crc32_bitwise(bytes(blob[:12] + blob[16:])))
    return bytes(blob)


def test_other_version_magic_trailing_and_profile_are_refused():
    blob = bytearray(small_program().to_bytes())
    v2 = bytearray(blob)
    struct.pack_into("<H", v2, 4, 2)  # version 2 holds version 1's dense records unchanged
    assert Program.from_bytes(_restamp(v2)).version == 2
    for v in (0, 3):
        other = bytearray(blob)
        struct.pack_into("<H", other, 4, v)
        with pytest.raises(ProgramError, match=rf"version {v} is not supported.*versions \[1, 2\]"):
            Program.from_bytes(_restamp(other))
    bad_magic = bytearray(blob)
    bad_magic[:4] = b"ELF\x7f"
    with pytest.raises(ProgramError, match="magic"):
        Program.from_bytes(_restamp(bad_magic))
    with pytest.raises(ProgramError, match="trailing"):
        Program.from_bytes(bytes(blob) + b"\0\0\0\0")
    with pytest.raises(ProgramError, match="for profile 'mcu'.*'xylo'"):
        Program.from_bytes(bytes(blob), expected_profile="xylo")
    unknown = bytearray(blob)
    unknown[6] = 9
    with pytest.raises(ProgramError, match="unknown profile id 9"):
        Program.from_bytes(_restamp(unknown))
    pad = bytearray(blob)
    pad[48 + 16 + 6] = 1  # padding after the first weights
    with pytest.raises(ProgramError, match="padding"):
        Program.from_bytes(_restamp(pad))
    size = bytearray(blob)
    struct.pack_into("<I", size, 48 + 12, 52)
    with pytest.raises(ProgramError, match="record_size 52"):
        Program.from_bytes(_restamp(size))


def test_layer_validation_messages():
    w = np.zeros((2, 3), dtype=np.int64)
    ok = dict(bias=np.zeros(2, int), threshold=np.ones(2, int), decay_mem=np.zeros(2, int))
    with pytest.raises(ProgramError, match="decay_syn is required"):
        LayerProgram("synaptic", "subtract", 0, w, **ok)
    with pytest.raises(ProgramError, match="neuron_type must be one of"):
        LayerProgram("izhikevich", "subtract", 0, w, **ok)
    with pytest.raises(ProgramError, match="weights must hold integers in the int8 range"):
        LayerProgram("leaky", "subtract", 0, w + 200, **ok)
    with pytest.raises(ProgramError, match="bias must have shape"):
        LayerProgram("leaky", "subtract", 0, w, **(ok | {"bias": np.zeros(3, int)}))
    with pytest.raises(ProgramError, match="w_shift"):
        LayerProgram("leaky", "subtract", 21, w, **ok)


def test_profile_limits_are_enforced():
    big = LayerProgram("leaky", "subtract", 0, np.zeros((2, 3), int), np.zeros(2, int),
                       np.array([1, 40000]), np.zeros(2, int))
    Program("mcu", (big,))
    with pytest.raises(ProgramError, match=r"max_spikes must be in \[1, 15\] for profile 'xylo', got 0"):
        Program("xylo", (big,))
    big_x = LayerProgram("leaky", "subtract", 0, np.zeros((2, 3), int), np.zeros(2, int),
                         np.array([1, 40000]), np.zeros(2, int), max_spikes=2)
    with pytest.raises(ProgramError, match=r"layer 0: thresholds must be in \[1, 32767\].*xylo"):
        Program("xylo", (big_x,))
    multi = LayerProgram("leaky", "subtract", 0, np.zeros((2, 3), int), np.zeros(2, int), np.ones(2, int),
                         np.zeros(2, int), max_spikes=2)
    with pytest.raises(ProgramError, match="max_spikes must be 0 for profile 'mcu'"):
        Program("mcu", (multi,))
    with pytest.raises(ProgramError, match="reset 'subtract' is not supported by profile 'loihi'"):
        Program("loihi", (big,))
    wide = LayerProgram("leaky", "subtract", 0, np.zeros((4097, 2), int), np.zeros(4097, int),
                        np.ones(4097, int), np.zeros(4097, int))
    with pytest.raises(ProgramError, match="4097 neurons exceed.*max_neurons_per_layer=4096"):
        Program("mcu", (wide,))
    a = LayerProgram("leaky", "subtract", 0, np.zeros((2, 3), int), np.zeros(2, int), np.ones(2, int),
                     np.zeros(2, int))
    with pytest.raises(ProgramError, match="layer 1: fan-in 3 does not match the 2 neurons"):
        Program("mcu", (a, a))
    odd_bias = LayerProgram("leaky", "zero", 0, np.zeros((1, 3), int), np.array([4097]), np.ones(1, int),
                            np.zeros(1, int))
    with pytest.raises(ProgramError, match="mantissa"):
        Program("loihi", (odd_bias,))  # 4097 is odd and above the 12-bit mantissa


def test_xylo_max_spikes_is_record_byte_9():
    layer = LayerProgram("synaptic", "subtract", 2, np.array([[3, -4]]), np.array([1]), np.array([50]),
                         np.array([3]), decay_syn=np.array([2]), max_spikes=7)
    blob = Program("xylo", (layer,)).to_bytes()
    assert blob[6] == 3 and blob[48 + 9] == 7
    back = Program.from_bytes(blob)
    assert back.layers[0].max_spikes == 7 and back.to_bytes() == blob
    bad = bytearray(blob)
    bad[48 + 9] = 0
    with pytest.raises(ProgramError, match=r"max_spikes must be in \[1, 15\]"):
        Program.from_bytes(_restamp(bad))


def test_refusals_name_their_rule_of_the_table():
    """ProgramError.rule is the id in docs/program_format.md "Validation" (the firmware names the
    same one, tests/test_program_corpus.py); the message ends with it."""
    blob = small_program().to_bytes()

    def rule_of(b, **kw):
        with pytest.raises(ProgramError) as e:
            Program.from_bytes(b, **kw)
        assert str(e.value).endswith(f"(rule {e.value.rule})")
        assert e.value.check == int(e.value.rule.split(".")[0])
        return e.value.rule

    assert rule_of(blob[:47]) == "1.1"
    assert rule_of(blob[:60]) == "3.1"
    assert rule_of(b"ELF\x7f" + blob[4:]) == "1.2"
    assert rule_of(blob, expected_profile="xylo") == "5.1"
    for v in (0, 3, 0xFFFF):
        other = bytearray(blob)
        struct.pack_into("<H", other, 4, v)
        assert rule_of(_restamp(other)) == "2.1"
    assert rule_of(blob[:12] + bytes(4) + blob[16:]) == "4.1"
    for off, value, rule in ((22, 0, "8.2"), (24, 0, "8.3"), (16, 9, "6.2"), (20, 2, "7.2")):
        bad = bytearray(blob)
        bad[off:off + 2] = struct.pack("<H", value)
        if off == 24:
            bad[24:28] = bytes(4)
        assert rule_of(_restamp(bad)) == rule, (off, value)
    for name, rule in ((b"\xe9", "5.3"), (b"ab\0c", "5.3")):
        bad = bytearray(blob)
        bad[32:48] = name.ljust(16, b"\0")
        assert rule_of(_restamp(bad)) == rule


def test_constructed_programs_are_checked_with_the_same_rules():
    layer = small_program().layers[1]
    one = LayerProgram("leaky", "zero", 0, np.array([[4, 5]]), np.array([0]), np.array([9]), np.array([4096]))
    for kwargs, rule in (({"num_steps": 0}, "8.2"), ({"dt_ns": 0}, "8.3"), ({"name": "caf\u00e9"}, "5.3"),
                         ({"name": "a" * 17}, "5.3")):
        with pytest.raises(ProgramError) as e:
            Program("mcu", (one,), **kwargs)
        assert e.value.rule == rule, kwargs
    with pytest.raises(ProgramError) as e:
        Program("mcu", (one, layer))
    assert e.value.rule == "7.1"  # layer 1 (fan-in 2) after a layer of 1 neuron


def test_program_error_keeps_its_rule_through_pickle():
    import pickle
    e = pickle.loads(pickle.dumps(ProgramError("num_steps=0", "8.2")))
    assert (e.rule, e.check, str(e)) == ("8.2", 8, "num_steps=0 (rule 8.2)")
    plain = pickle.loads(pickle.dumps(ProgramError("no rule")))
    assert (plain.rule, plain.check, str(plain)) == (None, None, "no rule")


# ---- format version 2: convolution, pooling, graded input --------------------------------------

def v2_program(graded: bool = False) -> Program:
    """conv 2@2x2/s1/p0 + sum pool 2/1 over a 1x4x4 map (-> 2x2x2) -> max pool record 2/2 (-> 2x1x1)
    -> dense 2 -> 1 (synaptic)."""
    from hw.program import MapGeometry, PoolProgram
    g = MapGeometry(1, 4, 4, 2, 2, 1, 0, "sum", 2, 1)
    conv = LayerProgram("leaky", "zero", 2, np.arange(8).reshape(2, 1, 2, 2) - 4, np.arange(8) - 3,
                        np.arange(8) + 1, np.full(8, 410), conv=g)
    pool = PoolProgram(MapGeometry(2, 2, 2, 2, pool="max", pool_kernel=2, pool_stride=2))
    dense = LayerProgram("synaptic", "subtract", 0, np.array([[7, -9]]), np.array([1]), np.array([5]),
                         np.array([4096]), decay_syn=np.array([12]))
    return Program("mcu", (conv, pool, dense), num_steps=3, name="v2", graded_input=graded,
                   input_scale=42.5 if graded else 0.0)


@pytest.mark.parametrize("graded", [False, True])
def test_v2_layout_and_round_trip(graded):
    prog = v2_program(graded)
    blob = prog.to_bytes()
    version, pid, flags, total, crc = struct.unpack_from("<HBBII", blob, 4)
    assert (version, pid, flags, total) == (2, 1, int(graded), len(blob))
    assert crc == crc32_bitwise(blob[:12] + blob[16:])
    assert struct.unpack_from("<f", blob, 28)[0] == (42.5 if graded else 0.0)
    assert struct.unpack_from("<HH", blob, 18) == (16, 1)
    # conv record: type 2, leaky, zero reset, w_shift 2, fan_in 16, N 8, size 32 + 8 + 32 + 32 + 16
    assert struct.unpack_from("<BBBBHHBBHI", blob, 48) == (2, 1, 1, 2, 16, 8, 0, 0, 0, 120)
    assert struct.unpack_from("<HHHHBBBBBBH", blob, 64) == (1, 4, 4, 2, 2, 1, 0, 2, 2, 1, 0)
    assert struct.unpack_from("<8b", blob, 80) == tuple(range(-4, 4))
    # pooling record: type 3, all neuron fields 0, fan_in 8, N 2, size 32
    at = 48 + 120
    assert struct.unpack_from("<BBBBHHBBHI", blob, at) == (3, 0, 0, 0, 8, 2, 0, 0, 0, 32)
    assert struct.unpack_from("<HHHHBBBBBBH", blob, at + 16) == (2, 2, 2, 2, 0, 0, 0, 1, 2, 2, 0)
    back = Program.from_bytes(blob, expected_profile="mcu")
    assert back.to_bytes() == blob
    assert (back.version, back.graded_input, back.input_scale) == (2, graded, 42.5 if graded else 0.0)
    assert [l.kind for l in back.layers] == ["conv", "pool", "dense"]
    assert back.layers[0].conv == prog.layers[0].conv
    assert np.array_equal(back.layers[0].weights, prog.layers[0].weights)
    assert back.layers[1].geometry == prog.layers[1].geometry


def test_v1_programs_stay_version_1():
    assert small_program().version == 1 and small_program().to_bytes()[4] == 1
