"""Continual-learning benchmark: every strategy on one identical task stream, accuracy matrices,
ACC/BWT, timings, a JSON file and plots.

    python -m experiments.continual.bench --benchmark permuted-fashion-mnist --tasks 10 --strategy all --json
    spikeloop continual ...   (the same, as a CLI command)

The result object has one entry per strategy name ({"acc", "bwt", "forgetting", "accuracy_matrix",
"seconds", "mean_epoch_seconds", "mean_epoch_cpu_seconds", "epoch_time_ratio_vs_finetune", ...})
and one "meta" entry (benchmark, schedule, model spec, versions, comparison table, plots, files).
Accuracies are fractions in [0, 1]; "points" in the docs are 100 x these.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import sys
import time
from pathlib import Path

import torch

from experiments.continual.plots import accuracy_heatmaps, metric_bars, task_curves
from experiments.continual.schedules import SCHEDULES, mlp_spec
from experiments.output import _jsonable, add_json_flag, emit
from snn.atomic import write_text_atomic
from snn.continual import (DEFAULT_SET, MULTITASK, RESULT_FORMAT_VERSION, STRATEGY_NAMES, ContinualConfig,
                           make_stream, parse_benchmark, run_strategies)

DEFAULT_TASKS = {"permuted": 10, "split": 5}


def parse_strategies(text: str) -> tuple[str, ...]:
    """'all' -> the default set; otherwise a comma-separated list of known names (order kept)."""
    if text == "all":
        return DEFAULT_SET
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [n for n in names if n not in STRATEGY_NAMES]
    if not names or unknown:
        raise ValueError(f"unknown strategy {', '.join(unknown) or text!r}; known: {', '.join(STRATEGY_NAMES)} or all")
    return names


def strategy_options(args, sched) -> dict[str, dict]:
    """Per-strategy options: the schedule's, overridden by the command line's."""
    opts: dict[str, dict] = {"ewc": dict(sched.ewc), "gpm": dict(sched.gpm), "hlop": dict(sched.hlop), "replay": {}}
    if args.gpm_threshold is not None:
        opts["gpm"]["threshold_first"], opts["gpm"]["threshold"] = args.gpm_threshold
    if args.ewc_lambda is not None:
        opts["ewc"]["lam"] = args.ewc_lambda
    if args.hlop_lr is not None:
        opts["hlop"]["lr"] = parse_role_values(args.hlop_lr)
    if args.hlop_lr_schedule is not None:
        opts["hlop"]["lr_schedule"] = args.hlop_lr_schedule
    if args.hlop_iterations is not None:
        opts["hlop"]["iterations"] = args.hlop_iterations
    if args.hlop_size_scale is not None:
        opts["hlop"]["size_scale"] = parse_role_values(args.hlop_size_scale, "--hlop-size-scale")
    if args.hlop_activity is not None:
        opts["hlop"]["activity"] = args.hlop_activity
        opts["gpm"]["activity"] = args.hlop_activity
    if args.hlop_spiking:
        opts["hlop"]["spiking"] = True
    return opts


def parse_role_values(text: str, flag: str = "--hlop-lr"):
    """A per-layer HLOP option (`flag`: --hlop-lr, --hlop-size-scale): '0.01' -> 0.01 (every layer);
    'input=0.01,hidden=0.1' -> {role or layer name: value}."""
    try:
        if "=" not in text:
            return float(text)
        out = {}
        for part in text.split(","):
            key, _, val = part.partition("=")
            out[key.strip()] = float(val)
        return out
    except ValueError:
        raise ValueError(f"{flag} must be a number or role=value pairs (input, hidden, output or a "
                         f"layer name like layers.2), got {text!r}") from None


def run(args) -> dict:
    """Run the benchmark described by parsed arguments; returns the result object (also written
    to <out>/results.json with the plots beside it). With --seeds or --device-eval: a multi-seed
    study (`run_study_args`)."""
    if args.seeds is not None or args.device_eval is not None:
        return run_study_args(args)
    t_start = time.perf_counter()
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    kind, _ = parse_benchmark(args.benchmark)
    names = parse_strategies(args.strategy)
    sched = _schedule(args)
    tasks = args.tasks or DEFAULT_TASKS[kind]
    if tasks < 1:
        raise ValueError(f"--tasks must be >= 1, got {tasks}")
    stream = make_stream(args.benchmark, tasks, seed=args.seed, train_per_task=sched.train_per_task,
                         test_per_task=sched.test_per_task, data_dir=args.data_dir, download=args.download)
    spec = mlp_spec(stream.input_shape[0], stream.num_outputs, sched.hidden, sched.num_steps)
    config = ContinualConfig(epochs=sched.epochs, batch_size=sched.batch_size, lr=sched.lr, seed=args.seed,
                             device=args.device, progress=not args.no_progress)
    results = run_strategies(spec, stream, names, config, options=strategy_options(args, sched))

    out: dict = {}
    base = results.get("finetune")
    for name, r in results.items():
        d = r.to_dict()
        if base is not None:
            d["epoch_time_ratio_vs_finetune"] = r.mean_epoch_seconds / base.mean_epoch_seconds
            d["epoch_cpu_time_ratio_vs_finetune"] = r.mean_epoch_cpu_seconds / base.mean_epoch_cpu_seconds
        out[name] = d
    out_dir = Path(args.out)
    title = f"{args.benchmark}, {tasks} tasks, {sched.name} schedule"
    mats = {name: r.accuracy_matrix for name, r in results.items()}
    plots = {"accuracy_matrix": accuracy_heatmaps(mats, out_dir / "accuracy_matrix.png", title),
             "task_curves": task_curves(mats, out_dir / "task_curves.png", title)}
    out["meta"] = {
        "format_version": RESULT_FORMAT_VERSION,
        "spikeloop_version": _version(),
        "torch_version": torch.__version__,
        "benchmark": args.benchmark, "tasks": tasks, "strategies": list(names), "seed": args.seed,
        "schedule": sched.to_dict(),
        "config": {k: v for k, v in vars(config).items()},
        "model": spec.to_dict(),
        "train_samples_per_task": [len(t.train_y) for t in stream.tasks],
        "test_samples_per_task": [len(t.test_y) for t in stream.tasks],
        "device": str(torch.device(config.device) if config.device else _default_device()),
        "threads": torch.get_num_threads(), "platform": platform.platform(),
        "comparison": comparison_rows(results),
        "plots": plots,
        "seconds": time.perf_counter() - t_start,
        "command": " ".join(sys.argv),
    }
    out["meta"]["results_json"] = out_dir / "results.json"
    write_text_atomic(out_dir / "results.json", json.dumps(_jsonable(out), indent=1))
    return out


def _schedule(args):
    if args.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {args.schedule!r}; known: {', '.join(SCHEDULES)}")
    return SCHEDULES[args.schedule].replace(
        train_per_task=args.train_per_task, test_per_task=args.test_per_task, epochs=args.epochs,
        num_steps=args.num_steps, hidden=tuple(args.hidden) if args.hidden else None,
        batch_size=args.batch_size, lr=args.lr)


def run_study_args(args) -> dict:
    """The multi-seed study of `experiments.continual.study` from parsed arguments: every strategy
    on every seed of --seeds (default: --seed alone), in --workers processes, resumable in --out;
    writes <out>/results.json and the plots once every job is done."""
    from experiments.continual.study import parse_seeds, run_study, study_config
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    kind, _ = parse_benchmark(args.benchmark)
    names = parse_strategies(args.strategy)
    sched = _schedule(args)
    tasks = args.tasks or DEFAULT_TASKS[kind]
    seeds = parse_seeds(args.seeds) if args.seeds is not None else (args.seed,)
    if args.device_eval is not None:
        from hw.profiles import get_profile
        get_profile(args.device_eval)  # ValueError naming the known profiles
    config = study_config(args.benchmark, tasks, names, sched, strategy_options(args, sched), device=args.device,
                          data_dir=args.data_dir, download=args.download, device_eval=args.device_eval,
                          device_uri=args.device_uri, progress=not args.no_progress)
    out_dir = Path(args.out)
    result = run_study(config, seeds, out_dir, workers=args.workers, threads=args.threads,
                       progress=not args.no_progress)
    meta = result["meta"]
    meta |= {"benchmark": args.benchmark, "tasks": tasks, "schedule": sched.to_dict(), "out": out_dir,
             "torch_version": torch.__version__, "spikeloop_version": _version(), "platform": platform.platform()}
    if not meta["complete"]:
        return result
    title = f"{args.benchmark}, {tasks} tasks, {sched.name} schedule, {len(seeds)} seeds"
    ents = result["strategies"]
    means = {n: e["accuracy_matrix_mean"] for n, e in ents.items()}
    stds = {n: e["accuracy_matrix_std"] for n, e in ents.items()}
    plots = {"accuracy_matrix": accuracy_heatmaps(means, out_dir / "accuracy_matrix.png", title + " (mean ± std)",
                                                  spread=stds),
             "task_curves": task_curves(means, out_dir / "task_curves.png", title, spread=stds),
             "metrics": metric_bars(result, out_dir / "metrics.png", title)}
    dev = {n: e["device"] for n, e in ents.items() if "device" in e}
    if dev:
        prof = next(iter(dev.values()))["profile"]
        mats, spread = {}, {}
        for n, d in dev.items():
            mats[f"{n} float"], spread[f"{n} float"] = d["float_accuracy_matrix_mean"], d["float_accuracy_matrix_std"]
            mats[f"{n} {prof}"], spread[f"{n} {prof}"] = d["accuracy_matrix_mean"], d["accuracy_matrix_std"]
        plots["device_accuracy_matrix"] = accuracy_heatmaps(
            mats, out_dir / "device_accuracy_matrix.png", f"{title}: float vs {prof} (same input spikes)",
            spread=spread, cols=2)
    meta["plots"] = plots
    meta["results_json"] = out_dir / "results.json"
    write_text_atomic(out_dir / "results.json", json.dumps(_jsonable(result), indent=1))
    return result


def comparison_rows(results) -> list[dict]:
    base = results.get("finetune")
    rows = []
    for name, r in results.items():
        rows.append({"strategy": name, "acc": r.acc, "bwt": r.bwt, "seconds": r.seconds,
                     "epoch_seconds": r.mean_epoch_seconds, "epoch_cpu_seconds": r.mean_epoch_cpu_seconds,
                     "epoch_cpu_ratio": (r.mean_epoch_cpu_seconds / base.mean_epoch_cpu_seconds) if base else None})
    return rows


def format_table(rows: list[dict]) -> str:
    """The comparison as a fixed-width text table (ACC/BWT in points)."""
    head = f"{'strategy':<10} {'ACC %':>7} {'BWT %':>7} {'seconds':>8} {'epoch s':>8} {'cpu ratio':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        bwt = "-" if r["bwt"] is None else f"{100 * r['bwt']:.2f}"
        ratio = "-" if r["epoch_cpu_ratio"] is None else f"{r['epoch_cpu_ratio']:.2f}"
        lines.append(f"{r['strategy']:<10} {100 * r['acc']:>7.2f} {bwt:>7} {r['seconds']:>8.1f} "
                     f"{r['epoch_seconds']:>8.2f} {ratio:>9}")
    return "\n".join(lines)


def _version() -> str:
    try:
        return importlib.metadata.version("spikeloop")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _default_device():
    from snn.model import default_device
    return default_device()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--benchmark", default="permuted-fashion-mnist",
                   help="permuted-X or split-X for X in fashion-mnist, mnist, digits")
    p.add_argument("--tasks", type=int, default=None, help="number of tasks (default 10 permuted, 5 split)")
    p.add_argument("--strategy", default="all",
                   help=f"one or more of {', '.join(STRATEGY_NAMES)} (comma-separated) or all "
                        f"(= {', '.join(DEFAULT_SET)})")
    p.add_argument("--schedule", default="cpu", choices=sorted(SCHEDULES))
    p.add_argument("--train-per-task", type=int, default=None, help="override the schedule's samples per task")
    p.add_argument("--test-per-task", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--num-steps", type=int, default=None, help="time steps T")
    p.add_argument("--hidden", type=int, nargs="+", default=None, help="hidden layer widths")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--ewc-lambda", type=float, default=None, help="EWC penalty strength (default 10)")
    p.add_argument("--gpm-threshold", type=float, nargs=2, metavar=("FIRST", "OTHERS"), default=None,
                   help="GPM energy thresholds of the first and the other layers (default 0.95 0.99)")
    p.add_argument("--hlop-lr", default=None,
                   help="Hebbian learning rate: one number for every layer, or role=value pairs "
                        "(input=0.01,hidden=0.1,output=0.1; default: the schedule's)")
    p.add_argument("--hlop-lr-schedule", choices=["constant", "cosine"], default=None,
                   help="Hebbian learning rate over each task (default constant)")
    p.add_argument("--hlop-iterations", type=int, default=None,
                   help="Hebbian iterations per batch (default: the schedule's, else 5)")
    p.add_argument("--hlop-size-scale", default=None,
                   help="scale the paper's subspace sizes: one number for every layer, or role=value "
                        "pairs (input=1,hidden=1,output=2; default: the schedule's)")
    p.add_argument("--hlop-activity", choices=["rate", "trace", "steps"], default=None,
                   help="presynaptic activity the subspaces learn from (HLOP and GPM; default rate)")
    p.add_argument("--hlop-spiking", action="store_true", help="spiking (quantized) lateral neurons")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", default=None,
                   help="multi-seed study: a count N (seeds 0..N-1) or a list (0,1,2; one seed: 7,); "
                        "every strategy on every seed, statistics over seeds")
    p.add_argument("--workers", type=int, default=None,
                   help="study: parallel worker processes (default: the usable cores / torchrun's "
                        "LOCAL_WORLD_SIZE); each uses --threads torch threads")
    p.add_argument("--device-eval", default=None, metavar="PROFILE",
                   help="after every task, compile for this chip profile (mcu, loihi, ...) and evaluate "
                        "every seen task on the device too (a study; with --seed alone: one seed)")
    p.add_argument("--device-uri", default="sim", help="device for --device-eval (default sim)")
    p.add_argument("--data-dir", default=None, help="folder with IDX files (fashion-mnist, mnist)")
    p.add_argument("--download", action="store_true", help="mnist: download with torchvision if missing")
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: CUDA when present)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on a shared machine more threads spin and slow down)")
    p.add_argument("--out", default="runs/continual",
                   help="folder for results.json and plots (a study: also jobs/, one file per finished "
                        "(strategy, seed), reused when the command is repeated)")
    p.add_argument("--no-progress", action="store_true")
    add_json_flag(p)


def report(result: dict, as_json: bool) -> None:
    """Print the result: the JSON object, or the comparison table and the files for people."""
    if as_json:
        emit(result, True)
        return
    meta = result["meta"]
    if "strategies" in result or not meta.get("complete", True):
        _report_study(result)
        return
    print(f"{meta['benchmark']}, {meta['tasks']} tasks, {meta['schedule']['name']} schedule "
          f"({meta['seconds']:.0f} s, device {meta['device']})")
    print(format_table(meta["comparison"]))
    for name in meta["strategies"]:
        R = result[name]["accuracy_matrix"]
        print(f"{name} accuracy matrix (%):")
        for row in R:
            print("  " + " ".join("  -  " if v is None else f"{100 * v:5.1f}" for v in row))
    print(f"results: {meta['results_json']}; plots: {', '.join(str(p) for p in meta['plots'].values())}")


def _report_study(result: dict) -> None:
    from experiments.continual.study import format_study
    meta = result["meta"]
    done = f"rank {meta['rank']}/{meta['world_size']}, {meta['workers']} workers, {meta['seconds']:.0f} s; " \
           f"jobs run here {len(meta['jobs_run_here'])}, reused {len(meta['jobs_reused'])}"
    if not meta["complete"]:
        print(f"{done}; waiting for other ranks: {', '.join(meta['missing'])} (re-run the same command to merge)")
        return
    print(f"{meta['benchmark']}, {meta['tasks']} tasks, {meta['schedule']['name']} schedule ({done})")
    print(format_study(result))
    print(f"results: {meta['results_json']}; plots: {', '.join(str(p) for p in meta['plots'].values())}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p)
    args = p.parse_args(argv)
    report(run(args), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
