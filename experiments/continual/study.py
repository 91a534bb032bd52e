"""A multi-seed continual-learning study: every strategy on every seed, run as independent
(strategy, seed) jobs in parallel worker processes, each job's result written atomically to
`<out>/jobs/<strategy>-seed<seed>.json` (resumable), then merged into statistics over seeds.

Jobs. A job is a pure function of (study config, strategy, seed): the seed's task stream, initial
weights, data order and spikes are rebuilt from the seed inside the job (the same for every
strategy of that seed), so a job gives bit-identical accuracy matrices and weights whether it runs
in the main process or in a worker (both with `threads` torch threads, default 1). Workers are
processes forked from a forkserver (`--workers`, default: the cores this process may use, divided by torchrun's
LOCAL_WORLD_SIZE).

Resuming. A job file records the format version, a key (SHA-256 of the config parts that change
results, the strategy and the seed) and a checksum of its result. On a repeated command with the
same `--out`, a job whose file checks out is not rerun; a file that does not parse or whose checksum
or format is wrong is reported and recomputed; a file with another key (the same `--out` used for a
different configuration) stops the command with an error naming the file.

Across machines. Under torchrun (or any launcher that sets RANK and WORLD_SIZE) rank r runs the
jobs i with i % WORLD_SIZE == r of the deterministic job list into the shared `--out`; a rank that
finds every job file present merges (writes results.json and the plots). Re-running the command on
any machine merges too (no job is rerun).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from experiments.output import _jsonable
from snn.atomic import write_text_atomic

JOB_FORMAT_VERSION = 1
STUDY_FORMAT_VERSION = 1
JOB_KIND = "spikeloop-continual-job"
METRICS = ("acc", "bwt", "forgetting")


class StudyError(ValueError):
    """A study that cannot run or merge as asked (bad seeds, a job file of another configuration)."""


def parse_seeds(text: str) -> tuple[int, ...]:
    """'5' -> seeds 0..4; '0,1,2' or '7,' -> exactly those (distinct, >= 0, order kept)."""
    text = text.strip()
    try:
        values = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise StudyError(f"--seeds must be a count (5) or a comma-separated list of seeds (0,1,2 or 7,), "
                         f"got {text!r}") from None
    if "," not in text:
        if not values or values[0] < 1:
            raise StudyError(f"--seeds: a count must be >= 1, got {text!r}")
        return tuple(range(values[0]))
    seeds = values
    if not seeds or any(s < 0 or s >= 2 ** 32 for s in seeds):
        raise StudyError(f"--seeds: seeds must be integers in [0, 2**32 - 1], got {text!r}")
    if len(set(seeds)) != len(seeds):
        raise StudyError(f"--seeds: repeated seed in {text!r}")
    return seeds


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def launcher_rank() -> tuple[int, int, int]:
    """(rank, world_size, local_world_size) from torchrun's RANK / WORLD_SIZE / LOCAL_WORLD_SIZE
    ((0, 1, 1) without a launcher); StudyError for inconsistent values."""
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    except ValueError:
        raise StudyError("RANK, WORLD_SIZE and LOCAL_WORLD_SIZE must be integers") from None
    if world < 1 or not 0 <= rank < world or local < 1:
        raise StudyError(f"bad launcher environment: RANK={rank}, WORLD_SIZE={world}, LOCAL_WORLD_SIZE={local}")
    return rank, world, local


def job_list(strategies, seeds) -> list[tuple[str, int]]:
    """Every (strategy, seed), seed-major (so a rank's share mixes strategies)."""
    return [(name, seed) for seed in seeds for name in strategies]


def rank_share(jobs: list, rank: int, world: int) -> list:
    """The jobs i with i % world == rank."""
    return [j for i, j in enumerate(jobs) if i % world == rank]


def job_key(config: dict, strategy: str, seed: int) -> str:
    """SHA-256 of what determines a job's result: the config without run-local fields, strategy, seed."""
    keep = {k: v for k, v in config.items() if k not in ("progress", "data_dir", "strategies")}
    text = json.dumps({"config": keep, "strategy": strategy, "seed": seed}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def job_path(out: str | Path, strategy: str, seed: int) -> Path:
    return Path(out) / "jobs" / f"{strategy}-seed{seed}.json"


def _checksum(result: dict) -> str:
    return hashlib.sha256(json.dumps(result, sort_keys=True).encode()).hexdigest()


def load_job(path: Path, key: str) -> tuple[dict | None, str | None]:
    """(result, None) for a valid job file of this key; (None, why) for a missing or corrupt one
    (to recompute); StudyError for a valid file of another configuration."""
    if not path.exists():
        return None, None
    try:
        rec = json.loads(path.read_text())
        if not isinstance(rec, dict) or rec.get("kind") != JOB_KIND:
            return None, f"{path}: not a continual job file"
        if rec.get("format_version") != JOB_FORMAT_VERSION:
            return None, f"{path}: job format {rec.get('format_version')!r}, expected {JOB_FORMAT_VERSION}"
        result = rec["result"]
        if _checksum(result) != rec.get("checksum"):
            return None, f"{path}: checksum mismatch (corrupt or edited)"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        return None, f"{path}: unreadable ({type(e).__name__}: {e})"
    if rec.get("key") != key:
        raise StudyError(f"{path} holds a result of another configuration (key {str(rec.get('key'))[:12]}..., "
                         f"this run {key[:12]}...); use another --out or delete the file")
    return result, None


_DATA_CACHE: dict = {}


def _stream(config: dict, seed: int):
    from snn.continual import make_stream, parse_benchmark
    from snn.data import load_dataset
    _, dataset = parse_benchmark(config["benchmark"])
    ck = (dataset, config.get("data_dir"), config.get("download", False))
    if ck not in _DATA_CACHE:
        _DATA_CACHE[ck] = load_dataset(dataset, data_dir=ck[1], download=ck[2])
    s = config["schedule"]
    return make_stream(config["benchmark"], config["tasks"], seed=seed, train_per_task=s["train_per_task"],
                       test_per_task=s["test_per_task"], data=_DATA_CACHE[ck])


def run_job(config: dict, strategy: str, seed: int, out: str | Path | None = None,
            position: int | None = None) -> dict:
    """Run one (strategy, seed) job of a study `config` (see `study_config`); write its job file
    atomically under `out` (when given) and return its result (the JSON data of the file)."""
    from experiments.continual.schedules import mlp_spec
    from snn.checkpoint import tensor_digest
    from snn.continual import (MULTITASK, ContinualConfig, encode_test_sets, initial_state, run_multitask,
                               run_sequential)

    cpu0 = time.process_time()
    stream = _stream(config, seed)
    s = config["schedule"]
    spec = mlp_spec(stream.input_shape[0], stream.num_outputs, tuple(s["hidden"]), s["num_steps"])
    cfg = ContinualConfig(epochs=s["epochs"], batch_size=s["batch_size"], lr=s["lr"], seed=seed,
                          device=config.get("device"), progress=config.get("progress", False))
    init = initial_state(spec, seed)
    test_spikes = encode_test_sets(spec, stream)
    hook = None
    if config.get("device_eval"):
        from experiments.continual.device_eval import DeviceEvaluator
        hook = DeviceEvaluator(spec, stream, config["device_eval"], config.get("device_uri", "sim"))
    desc = f"{strategy} s{seed}"
    if strategy == MULTITASK:
        r = run_multitask(spec, stream, cfg, init, test_spikes, progress_desc=desc, progress_position=position,
                          on_task_end=hook)
    else:
        r = run_sequential(spec, stream, strategy, cfg, init, test_spikes,
                           config["options"].get(strategy, {}), progress_desc=desc,
                           progress_position=position, on_task_end=hook)
    d = r.to_dict()
    task_end = d["extra"].pop("task_end", None)
    d["seed"] = seed
    d["weights_digest"] = tensor_digest(r.extra["model"].state_dict())
    d["threads"] = torch.get_num_threads()
    d["job_cpu_seconds"] = time.process_time() - cpu0  # this process's CPU time for the whole job
    if task_end is not None:
        from experiments.continual.device_eval import device_matrices
        from snn.continual import summarize
        dm = device_matrices(task_end, len(stream))
        d["device"] = {"profile": config["device_eval"], "uri": config.get("device_uri", "sim"), **dm}
        for which, mat in (("device", dm["accuracy_matrix"]), ("float_same_input", dm["float_accuracy_matrix"])):
            for metric, v in summarize(mat).items():
                d["device"][f"{which}_{metric}"] = v
    result = json.loads(json.dumps(_jsonable(d)))  # exactly what a reader of the file gets
    if out is not None:
        rec = {"kind": JOB_KIND, "format_version": JOB_FORMAT_VERSION, "key": job_key(config, strategy, seed),
               "strategy": strategy, "seed": seed, "result": result, "checksum": _checksum(result)}
        path = job_path(out, strategy, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(rec, indent=1))
    return result


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


def run_jobs(config: dict, jobs: list[tuple[str, int]], out, workers: int, threads: int = 1,
             progress: bool = True) -> dict[tuple[str, int], dict]:
    """Run `jobs` (with `workers` > 1: in that many worker processes, at most `workers` at a time,
    each with its own progress line); results keyed by (strategy, seed)."""
    results: dict[tuple[str, int], dict] = {}
    if not jobs:
        return results
    overall = tqdm(total=len(jobs), desc="jobs", position=0, disable=not progress, leave=True)
    if workers <= 1:
        for strategy, seed in jobs:
            results[(strategy, seed)] = run_job(config, strategy, seed, out, position=1 if progress else None)
            overall.update(1)
        overall.close()
        return results
    free = list(range(1, workers + 1))  # tqdm lines 1..workers, one per running job
    pending = list(jobs)
    running: dict = {}
    # forkserver: a fresh interpreter (no torch thread pools or locks of this process are forked)
    # imports torch and this module once, and every worker is forked from it
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "experiments.continual.study", "snn.continual", "snn.data"])
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                initargs=(threads,)) as pool:
        while pending or running:
            while pending and free:
                job, pos = pending.pop(0), free.pop(0)
                running[pool.submit(run_job, config, job[0], job[1], out, pos if progress else None)] = (job, pos)
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                job, pos = running.pop(fut)
                results[job] = fut.result()  # a failing job raises here, stopping the study
                free.append(pos)
                free.sort()
                overall.update(1)
                overall.set_postfix_str(f"last {job[0]} s{job[1]}")
    overall.close()
    return results


def study_config(benchmark: str, tasks: int, strategies, sched, options: dict, device: str | None = None,
                 data_dir=None, download: bool = False, device_eval: str | None = None,
                 device_uri: str = "sim", progress: bool = True) -> dict:
    """The JSON-able description every job is rebuilt from."""
    return _jsonable({"benchmark": benchmark, "tasks": tasks, "strategies": list(strategies),
                      "schedule": sched.to_dict(), "options": options, "device": device,
                      "data_dir": str(data_dir) if data_dir else None, "download": bool(download),
                      "device_eval": device_eval, "device_uri": device_uri if device_eval else None,
                      "progress": progress})


def run_study(config: dict, seeds, out, workers: int | None = None, threads: int = 1,
              progress: bool = True) -> dict:
    """Run this rank's share of the (strategy, seed) jobs not already done in `out`, then merge
    when every job file is there. Returns the study result ("complete": False with the missing
    jobs when other ranks still run)."""
    t0 = time.perf_counter()
    out = Path(out)
    rank, world, local = launcher_rank()
    if workers is None:
        workers = max(1, available_cores() // local)
    names = config["strategies"]
    jobs = job_list(names, seeds)
    done: dict = {}
    recomputed, reused = [], []
    todo = []
    for strategy, seed in jobs:
        res, why = load_job(job_path(out, strategy, seed), job_key(config, strategy, seed))
        if res is not None:
            done[(strategy, seed)] = res
            reused.append(f"{strategy}-seed{seed}")
        else:
            if why:
                print(f"recomputing {strategy} seed {seed}: {why}", file=sys.stderr)
                recomputed.append({"job": f"{strategy}-seed{seed}", "why": why})
            todo.append((strategy, seed))
    mine = [j for j in rank_share(jobs, rank, world) if j in todo]
    workers = max(1, min(workers, len(mine))) if mine else workers
    done |= run_jobs(config, mine, out, workers, threads, progress)
    missing = [j for j in jobs if j not in done]
    for strategy, seed in list(missing):  # other ranks may have finished theirs meanwhile
        res, _ = load_job(job_path(out, strategy, seed), job_key(config, strategy, seed))
        if res is not None:
            done[(strategy, seed)] = res
            missing.remove((strategy, seed))
    run_meta = {"rank": rank, "world_size": world, "workers": workers, "threads_per_worker": threads,
                "jobs_total": len(jobs), "jobs_run_here": [f"{s}-seed{x}" for s, x in mine],
                "jobs_reused": reused, "jobs_recomputed": recomputed, "seconds": time.perf_counter() - t0,
                "command": " ".join(sys.argv)}
    if missing:
        return {"meta": {"complete": False, "missing": [f"{s}-seed{x}" for s, x in missing], "seeds": list(seeds),
                         "strategies": names, **run_meta}}
    result = merge(config, seeds, done)
    result["meta"] |= {"complete": True} | run_meta
    return result


def merge(config: dict, seeds, done: dict) -> dict:
    """Statistics over seeds of finished job results `done[(strategy, seed)]`."""
    from experiments.continual.stats import describe, matrix_mean_std, paired
    names = config["strategies"]
    strategies: dict = {}
    for name in names:
        per = [done[(name, s)] for s in seeds]
        entry = {"per_seed": {str(s): {k: r[k] for k in ("acc", "bwt", "forgetting", "accuracy_matrix", "seconds",
                                                          "job_cpu_seconds", "weights_digest") if k in r}
                              for s, r in zip(seeds, per)}}
        entry |= {m: describe([r[m] for r in per], f"{name} {m}") for m in METRICS}
        entry["accuracy_matrix_mean"], entry["accuracy_matrix_std"] = matrix_mean_std([r["accuracy_matrix"] for r in per])
        entry["seconds"] = describe([r["seconds"] for r in per], f"{name} seconds")
        entry["options"] = per[0].get("options", {})
        if all("device" in r for r in per):
            dev = {"profile": per[0]["device"]["profile"], "uri": per[0]["device"]["uri"]}
            for which in ("device", "float_same_input"):
                for m in METRICS:
                    dev[f"{which}_{m}"] = describe([r["device"][f"{which}_{m}"] for r in per], f"{name} {which} {m}")
            for mk in ("accuracy_matrix", "float_accuracy_matrix", "agreement_matrix"):
                dev[f"{mk}_mean"], dev[f"{mk}_std"] = matrix_mean_std([r["device"][mk] for r in per])
            for m in METRICS:  # device minus float on the same input, paired over seeds
                a = [r["device"][f"device_{m}"] for r in per]
                b = [r["device"][f"float_same_input_{m}"] for r in per]
                if None not in a and None not in b:
                    dev[f"{m}_device_minus_float"] = paired(a, b, f"{name} device-float {m}")
            dev["compile_reports"] = {str(s): r["device"]["compile_reports"] for s, r in zip(seeds, per)}
            entry["device"] = dev
        strategies[name] = entry
    comparisons = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for m in METRICS:
                va = [done[(a, s)][m] for s in seeds]
                vb = [done[(b, s)][m] for s in seeds]
                if None in va or None in vb:
                    continue
                comparisons.append({"a": a, "b": b, "metric": m} | paired(va, vb, f"{a}-{b} {m}"))
    return {"strategies": strategies, "paired": comparisons,
            "meta": {"format_version": STUDY_FORMAT_VERSION, "seeds": list(seeds), "strategies": names,
                     "config": config}}


def _pm(s: dict, scale: float = 100.0) -> str:
    if s is None or s.get("mean") is None:
        return "-"
    if s.get("std") is None:
        return f"{scale * s['mean']:.2f}"
    lo, hi = s["ci"]
    return f"{scale * s['mean']:.2f} ± {scale * s['std']:.2f} [{scale * lo:.2f}, {scale * hi:.2f}]"


def format_study(result: dict) -> str:
    """Text tables: mean ± std [95 % t interval] in points per strategy, device columns when
    present, and the paired comparisons."""
    meta = result["meta"]
    lines = [f"{len(meta['seeds'])} seeds {meta['seeds']}: mean ± std [95 % t interval], points"]
    head = f"{'strategy':<10} {'ACC':>30} {'BWT':>30} {'forgetting':>30}"
    lines += [head, "-" * len(head)]
    for name, e in result["strategies"].items():
        lines.append(f"{name:<10} {_pm(e['acc']):>30} {_pm(e['bwt']):>30} {_pm(e['forgetting']):>30}")
    dev = {n: e["device"] for n, e in result["strategies"].items() if "device" in e}
    if dev:
        prof = next(iter(dev.values()))
        lines += ["", f"on the device ({prof['profile']}, {prof['uri']}) vs the float model on the same input spikes"]
        head = f"{'strategy':<10} {'device ACC':>30} {'float ACC':>30} {'device BWT':>30} {'float BWT':>30}"
        lines += [head, "-" * len(head)]
        for n, d in dev.items():
            lines.append(f"{n:<10} {_pm(d['device_acc']):>30} {_pm(d['float_same_input_acc']):>30} "
                         f"{_pm(d['device_bwt']):>30} {_pm(d['float_same_input_bwt']):>30}")
    if result["paired"]:
        lines += ["", "paired over seeds, a - b (points): mean [95 % t interval], paired t p, Wilcoxon p"]
        for c in result["paired"]:
            ci = "" if c["ci"] is None else f" [{100 * c['ci'][0]:+.2f}, {100 * c['ci'][1]:+.2f}]"
            pt = "-" if c["p_t"] is None else f"{c['p_t']:.3g}"
            pw = "-" if c["p_wilcoxon"] is None else f"{c['p_wilcoxon']:.3g}"
            lines.append(f"  {c['a']} - {c['b']} {c['metric']:<10} {100 * c['mean']:+.2f}{ci}  p_t {pt}  p_W {pw}")
    return "\n".join(lines)
