"""`spikeloop train`: train a preset or a spec file on a dataset, write checkpoint, metrics and plots."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.distributed as dist

from experiments.args import add_number, torch_device
from experiments.output import add_json_flag, emit
from experiments.plots import learning_curves, spike_raster
from snn.atomic import write_text_atomic
from snn.data import load_dataset, subset
from snn.encoding import encode_samples
from snn.presets import PRESETS, preset
from snn.spec import load_spec
from snn.training import EVAL_SEED, Trainer, TrainConfig, init_distributed_from_env


# --encoder choices for presets: encoders whose parameters all have sensible defaults
PRESET_ENCODERS = {"rate": {"type": "rate", "gain": 1.0}, "direct": {"type": "direct"}}


def register(sub) -> None:
    p = sub.add_parser("train", help="train a spiking network with surrogate gradients")
    add_dataset_args(p)
    p.add_argument("--model", default="fc", help=f"preset ({', '.join(PRESETS)}) or a spec file (.json/.toml)")
    add_number(p, "--epochs", default=20)
    add_number(p, "--batch-size", default=32)
    add_number(p, "--lr", default=5e-3)
    p.add_argument("--loss", default="ce_count", choices=["ce_rate", "ce_count", "mse_count"])
    add_number(p, "--num-steps", default=None, help="time steps T (presets; default 25)")
    add_number(p, "--hidden", default=None, help="hidden neurons of the fc preset (default 256)")
    p.add_argument("--encoder", default=None, choices=PRESET_ENCODERS,
                   help="input encoding of a preset: rate (Bernoulli spikes, the default) or direct "
                        "(analog currents: deploys as graded int8 input on profiles with supports_graded_input, mcu)")
    add_number(p, "--patience", default=None, help="early stop after N epochs without val gain")
    add_number(p, "--val-fraction", default=0.1, help="share of the training set held out (0: none)")
    add_number(p, "--seed", default=0)
    p.add_argument("--device", default=None, type=torch_device,
                   help="cpu, cuda, cuda:1 ... (default: CUDA when present)")
    p.add_argument("--out", default="runs/train", help="output folder")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--in-the-loop", default=None, metavar="DEVICE",
                   help="train through a device (any URI: 'sim?chip=7&mismatch=0.15&noise=0.02', "
                        "'emulator?chip=7&mismatch=0.15', 'serial:///dev/ttyACM0'): forward pass on the device "
                        "with every layer's spikes recorded, surrogate gradients from the float model "
                        "(hw/loop_training.py); fc presets or Leaky spec files")
    p.add_argument("--init", default=None, metavar="CKPT",
                   help="--in-the-loop: start from this checkpoint's weights (e.g. a float-trained model)")
    add_json_flag(p)
    p.set_defaults(func=run)


def add_dataset_args(p) -> None:
    p.add_argument("--dataset", default="digits", help="digits (embedded), digits4x4 (the digits pooled to 4x4: "
                   "16 inputs, for the Xylo chips), fashion-mnist or mnist")
    p.add_argument("--data-dir", default=None, help="folder with IDX files (fashion-mnist, mnist)")
    p.add_argument("--download", action="store_true", help="mnist: download with torchvision if missing")
    add_number(p, "--max-train", default=None, help="use at most N training samples (stratified)")
    add_number(p, "--max-test", default=None, help="use at most N test samples (stratified)")


def load_data(args):
    data = load_dataset(args.dataset, data_dir=args.data_dir, download=getattr(args, "download", False))
    # two calls: the test subset must not depend on --max-train, so that `spikeloop eval CKPT
    # --max-test N` sees the same test samples as the training run did
    if args.max_test is not None:
        data = subset(data, max_test=args.max_test, seed=0)
    if args.max_train is not None:
        data = subset(data, max_train=args.max_train, seed=0)
    return data


def checkpoint_data(ckpt, max_test: int | None = None):
    """The dataset a checkpoint was trained on (its `extra["dataset"]`, else digits), test set
    subset as `--max-test` does; for scripts that take a checkpoint but no dataset options."""
    import argparse
    return load_data(argparse.Namespace(dataset=ckpt.extra.get("dataset", "digits"), data_dir=None,
                                        download=False, max_test=max_test, max_train=None))


def make_spec(args, data):
    if args.model in PRESETS:
        kw = {}
        if args.num_steps is not None:
            kw["num_steps"] = args.num_steps
        if args.hidden is not None:
            if args.model != "fc":
                raise ValueError(f"--hidden applies to the fc preset, not to {args.model!r}")
            kw["hidden"] = args.hidden
        if args.encoder is not None:
            kw["encoder"] = PRESET_ENCODERS[args.encoder]
        return preset(args.model, data.input_shape, data.num_classes, **kw)
    if not Path(args.model).exists() and Path(args.model).suffix not in (".json", ".toml"):
        preset(args.model, data.input_shape, data.num_classes)  # raises: unknown preset, names the known ones
    given = [flag for flag, v in (("--num-steps", args.num_steps), ("--hidden", args.hidden),
                                  ("--encoder", args.encoder)) if v is not None]
    if given:
        raise ValueError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to the presets "
                         f"({', '.join(PRESETS)}); the spec file {args.model} sets its own")
    spec = load_spec(args.model)
    if spec.input_shape != tuple(data.input_shape) and spec.input_shape != (int(torch.tensor(data.input_shape).prod()),):
        raise ValueError(f"spec input_shape {spec.input_shape} does not fit dataset {args.dataset} "
                         f"samples of shape {tuple(data.input_shape)}")
    return spec


def fit_inputs(spec, x):
    """Reshape dataset samples [N, C, H, W] to the spec's input shape (e.g. flat [N, 784])."""
    return x.reshape(x.shape[0], *spec.input_shape)


def run(args) -> int:
    """Train; under `torchrun` (WORLD_SIZE > 1) every rank trains its shard of each global batch
    with DistributedDataParallel and only rank 0 writes files and prints."""
    started = init_distributed_from_env(args.device)
    try:
        return _run(args)
    finally:
        if started and dist.is_initialized():
            dist.destroy_process_group()


def _run(args) -> int:
    if args.init is not None and args.in_the_loop is None:
        raise ValueError("--init applies to --in-the-loop training")
    if args.in_the_loop is not None:
        summary = train_in_the_loop(args)
        emit(summary, args.json, title=f"trained {summary['model']} on {summary['dataset']} in the loop "
                                       f"through {summary['device']} -> {summary['checkpoint']}")
        return 0
    summary = train_and_summarize(args)
    if summary is not None:
        emit(summary, args.json, title=f"trained {summary['model']} on {summary['dataset']} -> "
                                       f"{summary['checkpoint']}")
    return 0


def train_and_summarize(args, data=None) -> dict | None:
    """Train as `spikeloop train` does (args from its parser), write spec, checkpoint, metrics and
    plots to args.out, and return the summary dict (None on ranks other than 0)."""
    t_start = time.perf_counter()
    data = data if data is not None else load_data(args)
    spec = make_spec(args, data)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, loss=args.loss, seed=args.seed,
                      val_fraction=args.val_fraction, patience=args.patience, device=args.device,
                      progress=not args.no_progress)
    out = Path(args.out)
    trainer = Trainer(spec, fit_inputs(spec, data.train_x), data.train_y, cfg, out,
                      test_x=fit_inputs(spec, data.test_x), test_y=data.test_y,
                      extra={"dataset": data.name})
    result = trainer.fit()
    if trainer.rank != 0:
        return None
    write_text_atomic(out / "spec.json", spec.to_json())
    plots = {"learning_curves": learning_curves(result.history, out / "learning_curves.png")}
    plots["spike_raster"] = sample_raster(result.model.cpu().eval(), data, out / "spike_raster.png")
    return {
        "dataset": data.name, "model": spec.name, "test_accuracy": result.test_accuracy,
        "val_accuracy": result.val_accuracy, "best_epoch": result.best_epoch, "epochs": len(result.history),
        "num_steps": spec.num_steps, "train_samples": len(trainer.train_x),
        "train_samples_per_s": result.train_samples_per_s, "train_seconds": result.train_seconds,
        "seconds": time.perf_counter() - t_start, "device": str(trainer.device), "world_size": trainer.world,
        "checkpoint": result.checkpoint, "metrics": out / "metrics.jsonl", "plots": plots,
        "history": result.history,
    }


def sample_raster(model, data, path, sample: int = 0):
    """Spike raster of one test sample: the input spikes and every spiking layer."""
    spec = model.spec
    x0 = fit_inputs(spec, data.test_x[sample:sample + 1])
    spk_in = encode_samples(spec, x0, [sample], EVAL_SEED)
    with torch.no_grad():
        rec = model(spk_in, record=True).record
    layers = {"input": spk_in[:, 0]}
    layers |= {f"layer {i} ({spec.layers[i].type_name})": r["spikes"][:, 0] for i, r in rec.items()}
    return spike_raster(layers, path, f"{data.name} test sample {sample}, label {int(data.test_y[sample])}")


def train_in_the_loop(args) -> dict:
    """`spikeloop train --in-the-loop DEVICE [--init CKPT]`: hw.loop_training.InTheLoopTrainer on
    the training split (--val-fraction held out as in float training), device test accuracy per
    epoch; writes model.safetensors, metrics.json and in_the_loop.png to args.out."""
    import json

    from experiments.hil_bench import accuracy_plot, loop_curve
    from hw.device import open_device
    from hw.loop_training import InTheLoopTrainer, LoopConfig
    from snn.checkpoint import load_checkpoint, save_checkpoint
    from snn.data import validation_split

    if args.device is not None:
        raise ValueError("--device picks the torch device of float training; --in-the-loop trains on the CPU "
                         "host with the device given by its URI")
    t_start = time.perf_counter()
    data = load_data(args)
    init = None
    if args.init is not None:
        ckpt = load_checkpoint(args.init)
        spec, init = ckpt.spec, ckpt.state_dict
        if ckpt.extra.get("dataset", data.name) != data.name:
            raise ValueError(f"--init {args.init} was trained on {ckpt.extra.get('dataset')!r}, not {data.name!r}")
    else:
        spec = make_spec(args, data)
    train_x, train_y = fit_inputs(spec, data.train_x), data.train_y
    if args.val_fraction > 0:
        train_x, train_y, _, _ = validation_split(train_x, train_y, args.val_fraction, seed=args.seed)
    cfg = LoopConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, loss=args.loss, seed=args.seed,
                     progress=not args.no_progress)
    out = Path(args.out)
    with open_device(args.in_the_loop) as dev:
        info = dev.info()
        trainer = InTheLoopTrainer(spec, dev, train_x, train_y, cfg, init, fit_inputs(spec, data.test_x),
                                   data.test_y)
        result = trainer.fit()
    hist = result.history
    metrics = {"in_the_loop": args.in_the_loop, "init": args.init, "initial": result.initial, "history": hist,
               "config": {k: getattr(cfg, k) for k in ("epochs", "batch_size", "lr", "loss", "seed")}}
    ckpt_path = save_checkpoint(out / "model.safetensors", spec, result.model, metrics,
                                {"dataset": data.name, "in_the_loop": args.in_the_loop})
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=1))
    write_text_atomic(out / "spec.json", spec.to_json())
    curve = loop_curve(result.initial["test_device_accuracy"], hist)
    plot = accuracy_plot({args.in_the_loop: curve}, out / "in_the_loop.png",
                         f"{spec.name} on {data.name}: in-the-loop training")
    return {"dataset": data.name, "model": spec.name, "device": args.in_the_loop, "profile": info.profile,
            "init": args.init, "initial_device_accuracy": result.initial["test_device_accuracy"],
            "test_device_accuracy": hist[-1]["test_device_accuracy"], "epochs": len(hist),
            "train_samples": len(train_x), "epoch_seconds": [h["epoch_seconds"] for h in hist],
            "device_seconds": curve[-1][1],
            "link_bytes": sum(h["link_bytes"] for h in hist) if all("link_bytes" in h for h in hist) else None,
            "link_efficiency": hist[-1].get("link_efficiency"),
            "train_samples_per_s": len(train_x) * len(hist) / sum(h["epoch_seconds"] for h in hist),
            "seconds": time.perf_counter() - t_start, "checkpoint": ckpt_path, "metrics": out / "metrics.json",
            "plots": {"in_the_loop": plot}, "history": hist}
