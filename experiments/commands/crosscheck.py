"""`spikeloop crosscheck CKPT`: re-simulate a checkpoint in Brian2 on N encoded test samples and compare."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from experiments.args import add_number
from experiments.commands.train import add_dataset_args, fit_inputs, load_data
from experiments.output import add_json_flag, emit
from snn.atomic import write_text_atomic
from snn.brian2_ref import TARGETS, crosscheck, plot_crosscheck
from snn.checkpoint import load_checkpoint
from snn.encoding import encode_samples
from snn.training import EVAL_SEED


def register(sub) -> None:
    p = sub.add_parser("crosscheck", help="compare a checkpoint's snnTorch simulation with a Brian2 reference")
    p.add_argument("checkpoint")
    add_number(p, "--samples", default=10, help="number of test samples to simulate (default 10)")
    add_number(p, "--first-sample", default=0, help="index of the first test sample")
    p.add_argument("--target", default="numpy", choices=TARGETS, help="Brian2 code generation target")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"],
                   help="snnTorch precision (Brian2 always runs float64)")
    add_number(p, "--seed", default=EVAL_SEED, help="input encoding seed")
    add_number(p, "--plot-sample", default=0, help="which of the simulated samples to plot (< --samples)")
    p.add_argument("--cache-dir", default=None, help="compiled-code cache (default $SPIKELOOP_BRIAN2_CACHE "
                                                     "or ~/.cache/spikeloop/brian2)")
    p.add_argument("--out", default="runs/crosscheck", help="folder for crosscheck.json and crosscheck.png")
    add_dataset_args(p)
    p.set_defaults(dataset=None)
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.plot_sample >= args.samples:  # checked before the slow simulation, not after it
        raise ValueError(f"--plot-sample {args.plot_sample} is not one of the {args.samples} simulated "
                         f"samples (0 .. {args.samples - 1})")
    t0 = time.perf_counter()
    ckpt = load_checkpoint(args.checkpoint)
    args.dataset = args.dataset or ckpt.extra.get("dataset", "digits")
    data = load_data(args)
    n_test = len(data.test_y)
    if not 0 <= args.first_sample or args.first_sample + args.samples > n_test:
        raise ValueError(f"samples {args.first_sample}..{args.first_sample + args.samples - 1} are outside the "
                         f"{n_test} test samples of {data.name}")
    ids = list(range(args.first_sample, args.first_sample + args.samples))
    x = fit_inputs(ckpt.spec, data.test_x[ids])
    spikes = encode_samples(ckpt.spec, x, ids, args.seed)
    print(f"crosscheck: {args.samples} samples x {ckpt.spec.num_steps} steps, Brian2 target {args.target}",
          file=sys.stderr)
    report = crosscheck(ckpt, spikes, target=args.target, dtype=args.dtype, cache_dir=args.cache_dir,
                        progress=True)
    out = Path(args.out)
    result = report.to_dict()
    result |= {"checkpoint": args.checkpoint, "dataset": data.name, "sample_ids": ids, "seed": args.seed,
               "labels": [int(v) for v in data.test_y[ids]],
               "predictions_snntorch": report.predictions_snntorch.tolist(),
               "predictions_brian2": report.predictions_brian2.tolist()}
    plot = plot_crosscheck(report, out / "crosscheck.png", sample=args.plot_sample)
    result["plot"] = str(plot)
    result["report"] = str(out / "crosscheck.json")
    result["seconds"] = time.perf_counter() - t0
    write_text_atomic(out / "crosscheck.json", json.dumps(result, indent=1) + "\n")
    emit(result, args.json, title=f"crosscheck {args.checkpoint}: snnTorch {args.dtype} vs Brian2 {args.target}")
    if not args.json:
        for layer in result["layers"]:
            print(f"  layer {layer['layer']} ({layer['type']}, {layer['neurons']} neurons): spike agreement "
                  f"{layer['spike_agreement']:.6f}, diverged trains {layer['diverged_fraction']:.4f}, "
                  f"first divergence {layer['first_divergence_step']}, max |dU| {layer['max_membrane_abs_diff']:.3g}")
    return 0
