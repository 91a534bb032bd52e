"""Fuzzing benchmark of the firmware's frame decoder, dispatcher and program reader
(firmware_stubs/tests/fuzz_frame.c): builds the libFuzzer binary when clang is available (else the
standalone random driver, both with ASan+UBSan) and runs it for --runs inputs, oversize frames
included, then reports what ran and that nothing broke.

    python -m experiments.bench_fuzz --json                        # 1,000,000 inputs, libFuzzer
    python -m experiments.bench_fuzz --runs 200000 --engine standalone --json

libFuzzer starts from a seed corpus written here (PING frames of every boundary length around
max_payload and the receive buffer, in zero and non-zero fills, each followed by a retransmission;
COBS runs around the buffer size; RUN/LOAD/HELLO records, RUNs that record spikes and membranes with
READs of their recording in chunks; a valid program), with -max_len 8192 so
that it can also grow frames past the protocol's 4096-byte payload. The standalone driver runs its
boundary sweep and seeded random campaign in chunks (a new seed per chunk) so progress can be shown.
Progress goes to stderr; the result (one JSON object with --json) has `inputs_run` (inputs the
harness ran; libFuzzer's `executions` also counts its empty first input), `crashes`
(inputs that made the harness abort or a sanitizer fire, saved as artifacts: must be 0),
`sanitizer_reports` (ASan/UBSan/LSan reports in the output: must be 0), `seconds`, and the
harness's own counters (`oversize_frames`: request frames above SL_MAX_PAYLOAD, each of which got
its OVERFLOW NACK; `overflow_nacks`, `retransmissions`, `cobs_runs`, `programs_accepted`).
"""

from __future__ import annotations

import argparse
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from experiments.output import emit
from hw.emulator import firmware_dir
from hw.program import LayerProgram, Program
from hw.serial.frame import Frame

BENCH_VERSION = 2   # 2: protocol v2 seeds (recording RUNs, READ), recording counters
PING, HELLO, RESET, RUN, READ = 0x02, 0x01, 0x03, 0x05, 0x06
PROTOCOL = 2           # the firmware's protocol version (docs/protocol.md)
RX_BUF = 1040          # the firmware's receive buffer (SL_MAX_WIRE for SL_MAX_PAYLOAD 1024)
MAX_PAYLOAD = 1024
SANITIZER = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer)|runtime error:")
STAT = re.compile(r"^(\w+): (\d+)$", re.M)


def responses(text: str, into: dict | None = None) -> dict:
    """{response type "0x85": count} from the harness's `responses:` line, added to `into`."""
    into = {} if into is None else into
    for line in re.findall(r"^responses:(.*)$", text, re.M):
        for t, n in re.findall(r"(0x[0-9A-F]{2})=(\d+)", line):
            into[t] = into.get(t, 0) + int(n)
    return into


def log(msg: str) -> None:
    print(f"bench_fuzz: {msg}", file=sys.stderr, flush=True)


def _record_fill(msg_type: int, n: int, fill: int) -> bytes:
    """A mode-1 record: a frame of n copies of `fill` (fuzz_frame.c header comment)."""
    return bytes([msg_type]) + struct.pack("<H", 0x8000 | n) + bytes([fill])


def _record(msg_type: int, payload: bytes) -> bytes:
    return bytes([msg_type]) + struct.pack("<H", len(payload)) + payload


def _retransmit() -> bytes:
    return bytes([PING]) + b"\xff\xff"


def seed_inputs() -> list[bytes]:
    """Seeds for libFuzzer: boundary frames, COBS runs, typical requests and a valid program."""
    seeds = []
    lengths = sorted({0, 1, 253, 254, 255, 508, *range(MAX_PAYLOAD - 2, MAX_PAYLOAD + 8),
                      *range(RX_BUF - 12, RX_BUF + 9), 2000, 4096})
    for n in lengths:
        for fill in (0x00, 0x5A):
            seeds.append(b"\x01" + _record_fill(PING, n, fill) + _retransmit())
    for n in (RX_BUF - 1, RX_BUF, RX_BUF + 1, RX_BUF + 100, 3 * RX_BUF):
        for code in (0xFF, 0x02, 0x20):
            seeds.append(b"\x03" + struct.pack("<H", n) + bytes([code, 0x41]))
    run = bytes([1, 0]) + struct.pack("<HIHBB", 4, 0, 2, 0, 0) + b"\x0f\x00\x01\x0f"   # 12 inputs, 2 steps
    seeds.append(b"\x01" + _record(HELLO, bytes([PROTOCOL, PROTOCOL])) + _record(RUN, run) + _retransmit()
                 + _record(RESET, b"\x00") + _record(RUN, run))
    # recording RUNs (spikes of both layers, membranes of layer 0 or 1), each followed by a READ
    # sweep in chunks of 4 x the next record's first byte, then READs at the edges
    for flags, mem, steps in ((0x07, 0, 2), (0x0F, 1, 30), (0x0F, 0, 40), (0x0E, 1, 1)):
        rec = bytes([flags, 0]) + struct.pack("<HIHBB", 5, 0, steps, mem, 0) + bytes([0x0F, 0x03] * steps)
        seeds.append(b"\x01" + _record(RUN, rec) + _record(READ, struct.pack("<IH", 0, 0))
                     + _record(READ, struct.pack("<IH", 2**32 - 1, 1)) + _retransmit())
    seeds.append(b"\x00" + Frame(PROTOCOL, PING, 3, b"abc").encode() + b"\x13\x37\x00"
                 + Frame(PROTOCOL, PING, 4, bytes(MAX_PAYLOAD + 1)).encode()
                 + Frame(1, HELLO, 5, b"\x01\x01").encode())
    rng = np.random.default_rng(0)
    layer = LayerProgram("synaptic", "subtract", 2, rng.integers(-128, 128, (6, 5)), np.zeros(6, int),
                         np.full(6, 40), np.full(6, 300), decay_syn=np.full(6, 900))
    seeds.append(b"\x02" + Program("mcu", (layer,), num_steps=8, name="seed").to_bytes())
    return seeds


def build(engine: str) -> Path:
    root = firmware_dir()
    if engine == "libfuzzer":
        target, binary, extra = "fuzz-libfuzzer", "fuzz_frame_libfuzzer", ["CC=clang"]
    else:
        target, binary, extra = "build/fuzz_frame", "fuzz_frame", []
    log(f"building {binary} (make -C {root} {target} {' '.join(extra)})")
    r = subprocess.run(["make", "-C", str(root), target, *extra], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"bench_fuzz: build failed:\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
    return root / "build" / binary


def run_libfuzzer(binary: Path, runs: int, seed: int, work: Path) -> dict:
    corpus, artifacts = work / "corpus", work / "artifacts"
    if corpus.exists() or artifacts.exists():
        raise SystemExit(f"bench_fuzz: {work} holds an earlier run; give an empty --workdir")
    corpus.mkdir()
    artifacts.mkdir()
    seeds = seed_inputs()
    for i, s in enumerate(seeds):
        (corpus / f"seed{i:03d}").write_bytes(s)
    cmd = [str(binary), f"-runs={runs}", "-max_len=8192", f"-seed={seed}", "-timeout=25",
           "-print_final_stats=1", f"-artifact_prefix={artifacts}/", str(corpus)]
    log(f"running {' '.join(cmd)}")
    t0 = time.perf_counter()
    lines, seen = [], [0]
    done = threading.Event()

    def heartbeat():  # libFuzzer reports counts only at powers of two and on new coverage
        while not done.wait(15):
            log(f">= {seen[0]:>9,} / {runs:,} inputs, {time.perf_counter() - t0:6.1f} s")

    threading.Thread(target=heartbeat, daemon=True).start()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace") as proc:
        for line in proc.stdout:
            lines.append(line)
            m = re.match(r"#(\d+)\s", line)
            if m:
                seen[0] = int(m.group(1))
        code = proc.wait()
    done.set()
    log(f"{seen[0]:,} / {runs:,} inputs, {time.perf_counter() - t0:.1f} s, exit code {code}")
    seconds = time.perf_counter() - t0
    out = "".join(lines)
    (work / "fuzz.log").write_text(out)
    stats = {k: int(v) for k, v in STAT.findall(out.split("fuzz_frame stats", 1)[-1])}
    executed = re.search(r"stat::number_of_executed_units: (\d+)", out)
    crashes = sorted(p.name for p in artifacts.iterdir())
    if code != 0 or crashes:
        log(f"libFuzzer exited {code}; artifacts {crashes}; log tail:\n{out[-3000:]}")
    return {"engine": "libfuzzer", "command": " ".join(cmd), "exit_code": code,
            "executions": int(executed.group(1)) if executed else None,
            "inputs_run": stats.get("inputs"), "corpus_seeds": len(seeds), "seconds": seconds,
            "crashes": len(crashes) + (1 if code != 0 and not crashes else 0), "crash_files": crashes,
            "sanitizer_reports": len(SANITIZER.findall(out)), "stats": stats,
            "responses": responses(out.split("fuzz_frame stats", 1)[-1])}


def run_standalone(binary: Path, runs: int, seed: int, chunk: int) -> dict:
    totals: dict[str, int] = {}
    resp: dict[str, int] = {}
    reports = crashes = inputs = 0
    cmds = []
    t0 = time.perf_counter()
    k = 0
    while inputs < runs:
        n = min(chunk, runs - inputs)
        cmd = [str(binary), str(n), str(seed + k)]
        cmds.append(" ".join(cmd))
        r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=3600)
        reports += len(SANITIZER.findall(r.stdout + r.stderr))
        if r.returncode != 0:
            crashes += 1
            log(f"chunk {k} exited {r.returncode}:\n{r.stderr[-3000:]}")
        for key, v in STAT.findall(r.stdout):
            totals[key] = totals.get(key, 0) + int(v)
        responses(r.stdout, resp)
        inputs += n + int(dict(STAT.findall(r.stdout)).get("boundary_inputs", 0))
        k += 1
        log(f"{inputs:>9,} / {runs:,} inputs, {time.perf_counter() - t0:6.1f} s")
    return {"engine": "standalone", "command": f"{cmds[0]} ... ({len(cmds)} chunks, seeds {seed}..{seed + k - 1})",
            "exit_code": 0 if not crashes else 1, "executions": totals.get("inputs"),
            "inputs_run": totals.get("inputs"), "seconds": time.perf_counter() - t0,
            "crashes": crashes, "crash_files": [], "sanitizer_reports": reports, "stats": totals,
            "responses": resp}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1_000_000, help="inputs to run (default 1,000,000)")
    ap.add_argument("--engine", choices=("auto", "libfuzzer", "standalone"), default="auto",
                    help="auto: libFuzzer when clang is on PATH, else the standalone driver")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=100_000, help="standalone: inputs per process")
    ap.add_argument("--workdir", type=Path, help="keep corpus, artifacts and log here (default: temporary)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be >= 1")
    engine = args.engine
    if engine == "auto":
        engine = "libfuzzer" if shutil.which("clang") else "standalone"
    t0 = time.perf_counter()
    binary = build(engine)
    build_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="bench_fuzz_") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if engine == "libfuzzer":
            res = run_libfuzzer(binary, args.runs, args.seed, work)
        else:
            res = run_standalone(binary, args.runs, args.seed, args.chunk)
    cc = "clang" if engine == "libfuzzer" else "cc"
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    stats = res.pop("stats")
    result = {"bench": "fuzz_frame", "bench_version": BENCH_VERSION, **res, "build_s": build_s,
              "inputs_per_s": (res["inputs_run"] or 0) / res["seconds"] if res["seconds"] else None,
              "compiler": version[0] if version else cc, "sanitizers": "address,undefined",
              **{k: stats.get(k) for k in ("oversize_frames", "overflow_nacks", "retransmissions",
                                           "cobs_runs", "programs_accepted", "boundary_inputs",
                                           "recordings", "record_chunks", "record_sweeps")},
              "responses": res.pop("responses")}
    emit(result, args.json, title="fuzz_frame benchmark")
    ok = result["crashes"] == 0 and result["sanitizer_reports"] == 0 and result["exit_code"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
