"""The two program readers of one format agree: every blob of the shared corpus
(tests/program_corpus.py) goes through Python `Program.from_bytes(blob, expected_profile="mcu")` and
through the firmware's `sl_program_parse` (firmware_stubs/tests/validate_program.c, built with
ASan+UBSan, all blobs in one process), and both must accept or refuse it as the corpus says, naming
the same rule of docs/program_format.md "Validation" (Python: `ProgramError.rule`; firmware: the
BAD_PROGRAM/PROGRAM_TOO_LARGE detail is the check number and the message starts with the rule id).
A seeded random mutation campaign then compares the two readers on blobs nobody wrote by hand."""

from __future__ import annotations

import json
import random
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

import program_corpus as pc
from hw.emulator import firmware_dir
from hw.program import Program, ProgramError

pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None,
                                reason="needs make and a C compiler")

DOC = Path(__file__).resolve().parents[1] / "docs" / "program_format.md"
CASES = pc.cases()
LINE = re.compile(r"^(\d+) status=(\d+) detail=(\d+) value=(\d+) msg=(.*)$")


def run_firmware_reader(blobs: list[bytes]) -> tuple[dict, list[dict]]:
    """(this build's limits, one result per blob) from the firmware's reader."""
    root = firmware_dir()
    r = subprocess.run(["make", "-C", str(root), "validate-program"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    batch = b"".join(struct.pack("<I", len(b)) + b for b in blobs)
    r = subprocess.run([str(root / "build" / "validate_program")], input=batch, capture_output=True,
                       timeout=300)
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 0 and "runtime error" not in err and "Sanitizer" not in err, err[-4000:]
    first, *lines = r.stdout.decode().splitlines()
    limits = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", first)}
    results = []
    for i, line in enumerate(lines):
        m = LINE.match(line)
        assert m and int(m.group(1)) == i, line
        results.append({"status": int(m.group(2)), "detail": int(m.group(3)),
                        "value": int(m.group(4)), "msg": m.group(5)})
    assert len(results) == len(blobs)
    return limits, results


def firmware_rule(res: dict) -> str | None:
    """The rule the firmware named (the message's first word), None when it accepted."""
    return None if res["status"] == pc.OK else res["msg"].split(" ", 1)[0]


def python_rule(blob: bytes) -> str | None:
    try:
        Program.from_bytes(blob, expected_profile="mcu")
    except ProgramError as e:
        assert e.rule is not None, f"refusal without a rule id: {e}"
        return e.rule
    return None


@pytest.fixture(scope="module")
def firmware():
    return run_firmware_reader([c.blob for c in CASES])


def _doc_rules() -> dict[str, str]:
    """rule id -> table row, from the table in docs/program_format.md "Validation"."""
    text = DOC.read_text()
    section = text.split("## Validation", 1)[1].split("\n## ", 1)[0]
    return {m.group(1): m.group(0) for m in re.finditer(r"^\| (\d+\.\d+) \|.*$", section, re.M)}


def test_rule_table_and_corpus_cover_each_other():
    rules = _doc_rules()
    assert len(rules) >= 30
    named = {c.rule for c in CASES if c.rule}
    assert named <= set(rules), f"corpus rules missing from the docs table: {named - set(rules)}"
    untested = {r for r, row in rules.items() if r not in named and "no mcu check" not in row}
    assert not untested, f"rules without an invalid blob in the corpus: {sorted(untested)}"
    for r in rules:  # ids are <check>.<n>, check 1..8 as in firmware_stubs/sl_program.h
        assert 1 <= int(r.split(".")[0]) <= 8


def test_firmware_limits_are_the_mcu_profile(firmware):
    limits, _ = firmware
    mcu = json.loads((Path(__file__).resolve().parents[1] / "hw" / "profiles" / "mcu.json").read_text())
    assert limits == {"max_program_bytes": mcu["max_program_bytes"], "max_layers": mcu["max_layers"],
                      "max_neurons": mcu["max_neurons_per_layer"],
                      "max_neurons_total": mcu["max_neurons_total"], "max_inputs": mcu["max_fan_in"],
                      "max_shift": mcu["max_w_shift"]}


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c.name for c in CASES])
def test_both_readers_give_the_corpus_verdict(firmware, index):
    case = CASES[index]
    _, results = firmware
    res = results[index]
    assert python_rule(case.blob) == case.rule
    assert (res["status"], firmware_rule(res)) == (case.status, case.rule), res
    if case.rule is None:
        assert Program.from_bytes(case.blob, expected_profile="mcu").to_bytes() == case.blob
    else:
        assert res["detail"] == case.check
        if case.rule in pc.TOO_LARGE_LIMITS:
            assert res["value"] == pc.TOO_LARGE_LIMITS[case.rule]


def _mutants(seed: int, count: int) -> list[bytes]:
    """Valid corpus blobs with 1-4 random edits (byte values biased to boundaries), most with the
    CRC restamped so the edit reaches the checks behind it; some truncated or extended with a
    consistent total_size."""
    rng = random.Random(seed)
    seeds = pc.valid_blobs()
    special = [0, 1, 2, 3, 4, 5, 0x7F, 0x80, 0xFE, 0xFF, 20, 21, 0x10, 0x11]
    out = []
    for _ in range(count):
        b = bytearray(rng.choice(seeds))
        kind = rng.random()
        if kind < 0.15:
            cut = rng.randrange(0, len(b) + 9)
            b = b[:cut] + bytes(rng.randrange(0, 256) for _ in range(max(0, cut - len(b))))
            if len(b) >= 12:
                b[8:12] = struct.pack("<I", len(b))
        else:
            for _ in range(rng.randint(1, 4)):
                at = rng.randrange(len(b)) if rng.random() < 0.5 else rng.randrange(min(len(b), 80))
                b[at] = rng.choice(special) if rng.random() < 0.6 else rng.randrange(256)
        blob = bytes(b)
        out.append(pc.restamp(blob) if len(blob) >= 16 and rng.random() < 0.9 else blob)
    return out


def test_random_mutants_get_the_same_verdict_from_both_readers():
    blobs = _mutants(seed=20240601, count=3000)
    _, results = run_firmware_reader(blobs)
    mismatches, seen = [], set()
    for i, (blob, res) in enumerate(zip(blobs, results)):
        py, fw = python_rule(blob), firmware_rule(res)
        seen.add(py)
        if py != fw or (fw is not None and res["detail"] != int(fw.split(".")[0])):
            mismatches.append((i, py, fw, res["msg"], blob.hex()))
    assert not mismatches, f"{len(mismatches)} disagreements, first: {mismatches[:3]}"
    assert None in seen and len(seen) >= 20, sorted(map(str, seen))  # the campaign reached far
