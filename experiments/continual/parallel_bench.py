"""Benchmark: a multi-seed continual study run in parallel worker processes against the same study
run one job after another, side by side in one run; prints one JSON object.

    python -m experiments.continual.parallel_bench --workers 2 -- --benchmark permuted-fashion-mnist \\
        --tasks 3 --train-per-task 2000 --test-per-task 500 --strategy hlop,gpm,finetune --seeds 2

The arguments after `--` are `spikeloop continual`'s (without --workers and --out). Every run
starts from an empty job folder under --out (removed first). With --repeats R the two variants
alternate A B B A A B ... (A = parallel unless --sequential-first), so a drifting load on a shared
machine biases neither. The JSON has per run the wall time, the CPU time (this process's, plus with
workers the CPU time each job measured in its worker; the forkserver's one-off import and the
workers' fork are left out), CPU / wall (how much of the cores the run
got) and the 1-minute load average before and after; the medians of both variants and their ratio
parallel / sequential (wall and CPU); and whether every run gave the same accuracy matrices and
final weights digests for every (strategy, seed).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

from experiments.args import add_number
from experiments.continual.bench import add_arguments, run
from experiments.output import emit


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def _study(argv: list[str], out: Path, workers: int) -> tuple[dict, dict]:
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args([*argv, "--workers", str(workers), "--out", str(out), "--no-progress"])
    if args.seeds is None:
        raise ValueError("give --seeds in the study arguments (after --)")
    load0, c0, t0 = os.getloadavg()[0], _cpu_seconds(), time.perf_counter()
    result = run(args)  # the worker pool is shut down (children joined) when this returns
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    if workers > 1:  # the workers are forked by the forkserver, not our children: add their jobs' CPU
        cpu += sum(d["job_cpu_seconds"] for e in result["strategies"].values() for d in e["per_seed"].values())
    return result, {"workers": workers, "seconds": wall, "cpu_seconds": cpu, "cpu_per_wall": cpu / wall,
                    "load_avg_1min_before": load0, "load_avg_1min_after": os.getloadavg()[0],
                    "job_seconds_sum": sum(d["seconds"] for e in result["strategies"].values()
                                           for d in e["per_seed"].values())}


def _job_results(study: dict) -> dict:
    return {(n, s): (d["accuracy_matrix"], d["weights_digest"])
            for n, e in study["strategies"].items() for s, d in e["per_seed"].items()}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    study_argv = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_number(p, "--workers", default=2, help="worker processes of the parallel run")
    p.add_argument("--out", default="runs/continual-parallel-bench")
    p.add_argument("--sequential-first", action="store_true")
    add_number(p, "--repeats", default=1, help="runs of each variant, alternating (ABBA...)")
    p.add_argument("--json", action="store_true", help="print one JSON object (always JSON; kept for symmetry)")
    args = p.parse_args(own)
    root = Path(args.out)
    variants = [("parallel", args.workers), ("sequential", 1)]
    if args.sequential_first:
        variants.reverse()
    order = []
    for i in range(2 * args.repeats):  # A B B A A B ...
        order.append(variants[(i + 1) // 2 % 2])
    runs, results = [], []
    for i, (name, workers) in enumerate(order):
        out = root / f"{name}-{i}"
        shutil.rmtree(out, ignore_errors=True)  # a benchmark must not reuse finished jobs
        study, stats = _study(study_argv, out, workers)
        runs.append({"variant": name, "out": str(out)} | stats)
        results.append(_job_results(study))
    med = {v: {k: statistics.median(r[k] for r in runs if r["variant"] == v) for k in ("seconds", "cpu_seconds")}
           for v, _ in variants}
    same = all(r == results[0] for r in results)
    result = {
        "benchmark": "continual study: parallel workers vs one job after another",
        "study_arguments": study_argv, "workers": args.workers, "jobs": study["meta"]["jobs_total"],
        "repeats": args.repeats, "runs": runs,
        "sequential_seconds": med["sequential"]["seconds"], "parallel_seconds": med["parallel"]["seconds"],
        "parallel_over_sequential": med["parallel"]["seconds"] / med["sequential"]["seconds"],
        "sequential_cpu_seconds": med["sequential"]["cpu_seconds"], "parallel_cpu_seconds": med["parallel"]["cpu_seconds"],
        "parallel_over_sequential_cpu": med["parallel"]["cpu_seconds"] / med["sequential"]["cpu_seconds"],
        "cores": os.cpu_count(), "identical_results": same,
        "acc_mean": {n: e["acc"]["mean"] for n, e in study["strategies"].items()},
        "command": " ".join(sys.argv),
    }
    emit(result, True)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
