"""`spikeloop run`: the main job end to end — train (or reuse) a model, cross-check it against Brian2,
compile it for a chip profile, deploy it on a device, compare float vs device, and write a report
(`report.html`, self-contained, and `report.json` with the same numbers)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from experiments.args import add_number
from experiments.commands import deploy as deploy_cmd
from experiments.commands import train as train_cmd
from experiments.output import add_json_flag, emit
from experiments.plots import confusion_matrices, learning_curves
from experiments.report import Section, write_report
from snn.atomic import write_text_atomic
from snn.checkpoint import load_checkpoint
from snn.encoding import encode_samples
from snn.training import EVAL_SEED

STAGES = ("train", "crosscheck", "compile", "deploy", "report")


def register(sub) -> None:
    p = sub.add_parser("run", help="the main job: train, Brian2 cross-check, compile, deploy, report")
    p.add_argument("--dataset", default="digits", help="digits (embedded), fashion-mnist or mnist")
    p.add_argument("--data-dir", default=None, help="folder with IDX files (fashion-mnist, mnist)")
    p.add_argument("--device", default="emulator",
                   help="device URI: sim, sim:cuda, emulator (host firmware on a pty), serial:///dev/ttyACM0?baud=...")
    p.add_argument("--profile", default="mcu", help="chip profile: mcu, loihi, xylo-imu, xylo-audio2, xylo-like")
    p.add_argument("--out", default="runs/main", help="output folder (checkpoint, program, plots, report)")
    p.add_argument("--checkpoint", default=None, help="use this checkpoint instead of training")
    p.add_argument("--retrain", action="store_true", help="train even if OUT/model.safetensors exists")
    add_number(p, "--epochs", default=None, help="training epochs (default: spikeloop train's)")
    add_number(p, "--hidden", default=None, help="hidden neurons of the fc preset")
    add_number(p, "--num-steps", default=None, help="time steps T")
    add_number(p, "--max-train", default=None, help="use at most N training samples")
    add_number(p, "--max-test", default=None, help="evaluate on at most N test samples")
    add_number(p, "--crosscheck-samples", default=8, help="test samples simulated in Brian2")
    p.add_argument("--target", default="numpy", help="Brian2 target: numpy, cython or cpp_standalone")
    p.add_argument("--no-progress", action="store_true")
    add_json_flag(p)
    p.set_defaults(func=run)


def _log(msg: str) -> None:
    print(f"[spikeloop run] {msg}", file=sys.stderr, flush=True)


def _train_args(args) -> argparse.Namespace:
    """`spikeloop train`'s arguments with its defaults, overridden by what `run` was given."""
    parser = argparse.ArgumentParser()
    train_cmd.register(parser.add_subparsers())
    argv = ["train", "--dataset", args.dataset, "--out", args.out]
    for flag, value in (("--data-dir", args.data_dir), ("--epochs", args.epochs), ("--hidden", args.hidden),
                        ("--num-steps", args.num_steps), ("--max-train", args.max_train),
                        ("--max-test", args.max_test)):
        if value is not None:
            argv += [flag, str(value)]
    if args.no_progress:
        argv.append("--no-progress")
    return parser.parse_args(argv)


def stage_train(args, out: Path) -> tuple[dict, object, object]:
    """Train, or reuse a checkpoint: returns (summary, Checkpoint, DatasetSplits)."""
    targs = _train_args(args)
    data = train_cmd.load_data(targs)
    ckpt_path = Path(args.checkpoint) if args.checkpoint is not None else out / "model.safetensors"
    reuse = args.checkpoint is not None or (ckpt_path.exists() and not args.retrain)
    if reuse:
        ckpt = load_checkpoint(ckpt_path)
        if ckpt.extra.get("dataset") not in (None, data.name):
            raise ValueError(f"checkpoint {ckpt_path} was trained on {ckpt.extra['dataset']!r}, not {data.name!r}"
                             " (pass --retrain or another --out)")
        _log(f"reusing {ckpt_path} (pass --retrain to train again)")
        history = ckpt.metrics.get("history", [])
        summary = {"reused": True, "checkpoint": ckpt_path, "dataset": data.name, "model": ckpt.spec.name,
                   "test_accuracy": ckpt.metrics.get("test_accuracy"), "epochs": len(history),
                   "train_samples_per_s": ckpt.metrics.get("train_samples_per_s"), "history": history,
                   "plots": {}}
        if history:
            summary["plots"]["learning_curves"] = learning_curves(history, out / "learning_curves.png")
    else:
        _log(f"training on {data.name} -> {out}")
        summary = train_cmd.train_and_summarize(targs, data) | {"reused": False}
        ckpt = load_checkpoint(summary["checkpoint"])
    model = ckpt.build().eval()
    summary["plots"]["spike_raster"] = train_cmd.sample_raster(model, data, out / "spike_raster.png")
    return summary, ckpt, data


def stage_crosscheck(args, ckpt, data, out: Path) -> dict:
    from snn.brian2_ref import crosscheck, plot_crosscheck

    n = min(args.crosscheck_samples, len(data.test_y))
    ids = list(range(n))
    spikes = encode_samples(ckpt.spec, train_cmd.fit_inputs(ckpt.spec, data.test_x[ids]), ids, EVAL_SEED)
    _log(f"Brian2 cross-check ({args.target}) on {n} test samples")
    report = crosscheck(ckpt, spikes, target=args.target, progress=not args.no_progress)
    result = report.to_dict(per_neuron=False) | {"sample_ids": ids}
    result["plot"] = plot_crosscheck(report, out / "crosscheck.png")
    return result


def stage_compile(args, ckpt, out: Path) -> tuple[dict, object]:
    from hw.compiler import compile_model

    _log(f"compiling for profile {args.profile}")
    prog = compile_model(ckpt.spec, ckpt.state_dict, args.profile)
    prog.save(out / f"program.{prog.profile}.bin")
    prog.save_json(out / f"program.{prog.profile}.json")
    result = {"profile": prog.profile, "program_bytes": prog.size_bytes(), "program_crc32": f"0x{prog.checksum:08x}",
              "program": out / f"program.{prog.profile}.bin", "layers": prog.report["layers"]}
    return result, prog


def stage_deploy(args, ckpt, data, prog, out: Path) -> dict:
    _log(f"deploying on {args.device}")
    dep = deploy_cmd.deploy_checkpoint(ckpt, data, args.device, prog.profile, EVAL_SEED, program=prog,
                                       progress=not args.no_progress)
    c = data.num_classes
    cm_float = _confusion(dep.labels, dep.float_predictions, c)
    cm_device = _confusion(dep.labels, dep.device_run.predictions, c)
    result = dict(dep.result)
    result.pop("compile_report", None)  # reported by the compile stage
    result["confusion_float"] = cm_float
    result["confusion_device"] = cm_device
    result["plot"] = confusion_matrices({"float (snnTorch)": cm_float, f"device ({args.device})": cm_device},
                                        out / "confusion.png")
    return result


def _confusion(y, pred, c: int) -> list[list[int]]:
    m = torch.zeros(c, c, dtype=torch.int64)
    m.index_put_((y.long(), pred.long()), torch.ones(len(y), dtype=torch.int64), accumulate=True)
    return m.tolist()


def run(args) -> int:
    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stages, seconds = {}, {}
    t = time.perf_counter()
    stages["train"], ckpt, data = stage_train(args, out)
    seconds["train"] = time.perf_counter() - t
    if args.max_test is not None and len(data.test_y) > args.max_test:
        from snn.data import subset
        data = subset(data, max_test=args.max_test, seed=0)
    t = time.perf_counter()
    stages["crosscheck"] = stage_crosscheck(args, ckpt, data, out)
    seconds["crosscheck"] = time.perf_counter() - t
    t = time.perf_counter()
    stages["compile"], prog = stage_compile(args, ckpt, out)
    seconds["compile"] = time.perf_counter() - t
    t = time.perf_counter()
    stages["deploy"] = stage_deploy(args, ckpt, data, prog, out)
    seconds["deploy"] = time.perf_counter() - t
    d, x = stages["deploy"], stages["crosscheck"]
    summary = {
        "dataset": data.name, "device": args.device, "profile": prog.profile,
        "checkpoint": stages["train"]["checkpoint"], "trained": not stages["train"]["reused"],
        "float_accuracy": d["float_accuracy"], "device_accuracy": d["device_accuracy"],
        "agreement_with_float": d["agreement_with_float"], "agreement_with_sim": d.get("agreement_with_sim"),
        "brian2_spike_agreement": x["spike_agreement"], "brian2_max_membrane_abs_diff": x["max_membrane_abs_diff"],
        "test_samples": d["test_samples"], "timesteps_per_s": d["timesteps_per_s"],
        "link_efficiency": d.get("link_efficiency"), "stage_seconds": seconds,
    }
    summary["report_html"] = out / "report.html"
    summary["report_json"] = out / "report.json"
    summary["seconds"] = time.perf_counter() - t0
    result = summary | {"stages": stages}
    write_text_atomic(out / "report.json", json.dumps(_plain(result), indent=2))
    write_report(out / "report.html", f"spikeloop run: {data.name} on {args.device} ({prog.profile})",
                 _sections(summary, stages), subtitle=f"written {time.strftime('%Y-%m-%d %H:%M:%S')}")
    _log(f"report: {out / 'report.html'} (numbers in {out / 'report.json'})")
    emit(result, args.json, title=f"spikeloop run finished; report at {out / 'report.html'}")
    return 0


def _plain(v):
    from experiments.output import _jsonable
    return _jsonable(v)


def _sections(summary: dict, stages: dict) -> list[Section]:
    tr, xc, cp, dp = stages["train"], stages["crosscheck"], stages["compile"], stages["deploy"]
    keys = ("float_accuracy", "device_accuracy", "agreement_with_float", "agreement_with_sim",
            "brian2_spike_agreement", "brian2_max_membrane_abs_diff", "test_samples", "seconds")
    secs = [Section("Summary", {k: summary[k] for k in keys},
                    tables=[("seconds per stage", ["stage", "seconds"], list(summary["stage_seconds"].items()))])]
    figs = [(f"learning curves ({tr['epochs']} epochs)", tr["plots"]["learning_curves"])] \
        if "learning_curves" in tr["plots"] else []
    figs.append(("spike raster of test sample 0: input and every spiking layer", tr["plots"]["spike_raster"]))
    secs.append(Section("1. Training", {k: tr.get(k) for k in ("model", "checkpoint", "reused", "test_accuracy",
                                                                "epochs", "train_samples_per_s")}, figures=figs))
    secs.append(Section(
        "2. Brian2 cross-check",
        {k: xc.get(k) for k in ("target", "dtype", "samples", "num_steps", "spike_agreement", "max_membrane_abs_diff",
                                "first_divergence_step", "prediction_agreement", "brian2_seconds", "snntorch_seconds")},
        tables=[("per layer", ["layer", "type", "neurons", "spike agreement", "max |ΔU|", "first divergence",
                               "spike-count r"],
                 [[l["layer"], l["type"], l["neurons"], l["spike_agreement"], l["max_membrane_abs_diff"],
                   l["first_divergence_step"], l["spike_count_correlation"]] for l in xc["layers"]])],
        figures=[("membrane traces and rasters: snnTorch vs Brian2", xc["plot"])],
        text="The trained network re-simulated in Brian2 (float64) on the same input spikes; "
             "see docs/brian2_mapping.md."))
    secs.append(Section(
        f"3. Compile for {cp['profile']}",
        {k: cp[k] for k in ("profile", "program_bytes", "program_crc32", "program")},
        tables=[("per-layer compile report", ["device layer", "type", "neurons", "fan-in", "weight rel. RMSE",
                                              "clipped", "w_shift", "β requested", "β effective"],
                 [[l["device_layer"], l["neuron_type"], l["num_neurons"], l["fan_in"], l["weight_relative_rmse"],
                   l["weight_clipped_fraction"], l["w_shift"], l["beta"]["requested_mean"],
                   l["beta"]["effective_mean"]] for l in cp["layers"]])]))
    link = dp.get("link_stats") or {}
    secs.append(Section(
        f"4. Deploy on {dp['device']}",
        {k: dp.get(k) for k in ("device", "test_samples", "float_accuracy", "device_accuracy", "agreement_with_float",
                                "agreement_with_sim", "timesteps_per_s", "samples_per_s", "synops_per_sample",
                                "link_efficiency")} | {"device info": dp.get("device_info")},
        tables=[("link statistics", ["quantity", "value"], [[k, v] for k, v in link.items()
                                                            if not isinstance(v, (dict, list))])] if link else [],
        figures=[("confusion matrices: float model vs device", dp["plot"])]))
    return secs
