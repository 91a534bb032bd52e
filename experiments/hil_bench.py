"""Hardware in the loop on non-ideal chips: naive transfer, noise-aware float training, per-chip
calibration and in-the-loop training side by side, on several chip identities of `sim`.

    python -m experiments.hil_bench --json --plot runs/hil_bench.png
    python -m experiments.hil_bench --chips 1,2,3 --mismatch 0.2 --noise 0.02 --epochs 4 --json

For each chip (sim?chip=C&mismatch=σ&noise=σ_n) it reports the device test accuracy of
- naive: the float model compiled and run as is;
- calibration: `hw.loop_training.calibrate` (per-neuron gains from probed firing rates, no labels,
  no retraining);
- noise-aware: the float model fine-tuned in float with random float chips of the same σ
  (`FloatMismatch`: the statistics, not this chip), the same for every chip;
- in-the-loop: `InTheLoopTrainer` from the float model, through this chip;
- transfer: the in-the-loop model of chip C run on the next chip (shows the chip was learned).
Also the in-the-loop epoch time on `sim` against a float training epoch (`snn.training.Trainer`)
on the same data and batch size, measured in the same run (ratio). One JSON object with --json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from experiments.args import add_number
from experiments.output import add_json_flag, emit
from experiments.plots import _save, plt


def loop_curve(start_accuracy: float, history: list[dict]) -> list[tuple[int, float, float]]:
    """An in-the-loop run as an `accuracy_plot` curve: (0, 0, start_accuracy), then per epoch record
    (epoch, cumulative device_seconds, test_device_accuracy)."""
    dev_s, curve = 0.0, [(0, 0.0, start_accuracy)]
    for h in history:
        dev_s += h["device_seconds"]
        curve.append((h["epoch"], dev_s, h["test_device_accuracy"]))
    return curve


def accuracy_plot(curves: dict[str, list[tuple[int, float, float]]], path, title: str = "",
                  reference: dict[str, float] | None = None) -> Path:
    """Accuracy against epochs and against device seconds. curves: {label: [(epoch, device_s,
    accuracy), ...]}; reference: horizontal lines {label: accuracy}."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for label, pts in curves.items():
        a1.plot([p[0] for p in pts], [p[2] for p in pts], "o-", label=label, ms=3)
        a2.plot([p[1] for p in pts], [p[2] for p in pts], "o-", label=label, ms=3)
    for label, acc in (reference or {}).items():
        for a in (a1, a2):
            a.axhline(acc, ls="--", lw=1, color="gray")
        a1.text(0, acc, f" {label}", va="bottom", fontsize=7, color="gray")
    a1.set(xlabel="epoch (calibration: round)", ylabel="device test accuracy")
    a2.set(xlabel="device seconds (cumulative)", ylabel="device test accuracy")
    a1.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.hil_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None, help="float model (default: train an fc one on --dataset)")
    p.add_argument("--dataset", default="digits", help="digits (embedded) or fashion-mnist")
    add_number(p, "--hidden", default=64, help="hidden neurons of the fc model trained here")
    add_number(p, "--num-steps", default=20, help="time steps of the fc model trained here")
    add_number(p, "--max-train", default=None, help="at most N training samples (stratified)")
    add_number(p, "--max-test", default=None, help="at most N test samples (stratified)")
    p.add_argument("--chips", default="1,2,3", help="chip identities, comma-separated")
    add_number(p, "--mismatch", default=0.25, help="σ of threshold, leak and gain")
    add_number(p, "--noise", default=0.02, help="σ of the membrane noise (units of θ)")
    add_number(p, "--epochs", default=4, help="in-the-loop and noise-aware epochs")
    add_number(p, "--float-epochs", default=15, help="epochs of the float model trained when no --checkpoint")
    add_number(p, "--batch-size", default=32)
    add_number(p, "--lr", default=1e-3)
    add_number(p, "--calib-rounds", default=4)
    add_number(p, "--calib-samples", default=256, help="training samples probed per calibration round")
    add_number(p, "--seed", default=0)
    p.add_argument("--plot", default="runs/hil_bench.png")
    p.add_argument("--out", default="runs/hil_bench", help="folder for the float model when trained here")
    add_json_flag(p)
    return p


def epoch_times(spec, state_dict, uri, x, y, batch_size, lr, seed, repeats=3) -> dict:
    """Seconds of one float training epoch (`snn.training.Trainer`, CPU) and of one in-the-loop
    epoch through `uri` on the same samples and batch size, alternated `repeats` times so that
    both see the same load on a shared machine; medians and their ratio."""
    from hw.device import open_device
    from hw.loop_training import InTheLoopTrainer, LoopConfig
    from snn.training import Trainer, TrainConfig
    f_s, l_s = [], []
    for r in range(repeats):
        cfg = TrainConfig(epochs=1, batch_size=batch_size, lr=lr, loss="ce_count", seed=seed + r, val_fraction=0,
                          progress=False, device="cpu", lr_schedule=None)
        f_s.append(Trainer(spec, x, y, cfg).fit().history[0]["epoch_seconds"])
        with open_device(uri) as d:
            tr = InTheLoopTrainer(spec, d, x, y, LoopConfig(epochs=1, batch_size=batch_size, lr=lr, seed=seed + r,
                                                            progress=False), state_dict)
            l_s.append(tr.fit().history[0]["epoch_seconds"])
    f_med, l_med = statistics.median(f_s), statistics.median(l_s)
    return {"device": uri, "samples": len(x), "batch_size": batch_size, "float_epoch_s_median": f_med,
            "in_the_loop_epoch_s_median": l_med, "ratio": l_med / f_med, "float_epochs_s": f_s,
            "in_the_loop_epochs_s": l_s}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from hw.device import open_device
    from hw.loop_training import FloatMismatch, InTheLoopTrainer, LoopConfig, calibrate, device_accuracy
    from hw.nonideal import ChipModel
    from snn.checkpoint import load_checkpoint
    from snn.data import validation_split
    from snn.presets import fc
    from snn.training import Trainer, TrainConfig, evaluate
    from snn.model import build_model

    torch.set_num_threads(1)
    t_start = time.perf_counter()
    chips = [int(c) for c in args.chips.split(",") if c.strip()]
    if not chips:
        raise ValueError("--chips names no chip")
    from experiments.commands.train import load_data
    data = load_data(argparse.Namespace(dataset=args.dataset, data_dir=None, download=False,
                                        max_test=args.max_test, max_train=args.max_train))
    if args.checkpoint:
        ck = load_checkpoint(args.checkpoint)
        spec, float_sd = ck.spec, ck.state_dict
        if ck.extra.get("dataset", data.name) != data.name:
            raise ValueError(f"--checkpoint was trained on {ck.extra.get('dataset')!r}, not {data.name!r}")
    else:
        spec = fc(data.input_shape, data.num_classes, hidden=args.hidden, num_steps=args.num_steps)
        cfg = TrainConfig(epochs=args.float_epochs, batch_size=32, lr=5e-3, loss="ce_count", seed=args.seed,
                          progress=False, device="cpu")
        res = Trainer(spec, data.train_x, data.train_y, cfg, args.out, test_x=data.test_x, test_y=data.test_y,
                      extra={"dataset": data.name}).fit()
        float_sd = res.model.state_dict()
    train_x, train_y, _, _ = validation_split(data.train_x, data.train_y, 0.1, seed=args.seed)
    train_x = train_x.reshape(len(train_x), *spec.input_shape)
    test_x, test_y = data.test_x.reshape(len(data.test_x), *spec.input_shape), data.test_y
    float_acc = evaluate(build_model(spec, float_sd), test_x, test_y)["accuracy"]
    with open_device("sim") as ideal:
        ideal_acc = device_accuracy(ideal, spec, float_sd, test_x, test_y)
    cfg = LoopConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, progress=False)
    models = [ChipModel(c, args.mismatch, args.mismatch, args.mismatch, args.noise) for c in chips]
    uris = [f"sim?{m.uri_query()}" for m in models]

    def acc_on(uri, sd):
        with open_device(uri) as d:
            return device_accuracy(d, spec, sd, test_x, test_y)

    # noise-aware float training: one model for all chips (it never sees a chip), evaluated on each
    t0 = time.perf_counter()

    def eval_all(epoch, model):
        sd = model.state_dict()
        return {"chip_accuracy": {u: acc_on(u, sd) for u in uris}}

    na = InTheLoopTrainer(spec, None, train_x, train_y, cfg, float_sd, mismatch=FloatMismatch.of(models[0]))
    na_res = na.fit(eval_all)
    na_seconds = time.perf_counter() - t0

    rows, curves_first = [], {}
    for i, (m, uri) in enumerate(zip(models, uris)):
        row = {"chip": m.chip, "uri": uri}
        row["naive"] = acc_on(uri, float_sd)
        # calibration
        with open_device(uri) as d:
            t0 = time.perf_counter()
            cal_sd, cal_report = calibrate(d, spec, float_sd, train_x[:args.calib_samples], args.calib_rounds,
                                           seed=args.seed)
            cal_seconds = time.perf_counter() - t0
            row["calibration"] = device_accuracy(d, spec, cal_sd, test_x, test_y)
        row["calibration_seconds"] = cal_seconds
        row["calibration_rate_error"] = [r["mean_abs_log_rate_ratio"] for r in cal_report]
        row["noise_aware"] = na_res.history[-1]["chip_accuracy"][uri]
        # in the loop
        with open_device(uri) as d:
            tr = InTheLoopTrainer(spec, d, train_x, train_y, cfg, float_sd, test_x, test_y)
            res = tr.fit()
        hist = res.history
        row["in_the_loop"] = hist[-1]["test_device_accuracy"]
        row["in_the_loop_history"] = [{k: h[k] for k in ("epoch", "train_loss", "train_accuracy",
                                                         "test_device_accuracy", "epoch_seconds",
                                                         "device_seconds", "compile_seconds", "host_seconds")}
                                      for h in hist]
        other = uris[(i + 1) % len(uris)]
        if other != uri:
            row["in_the_loop_on_next_chip"] = {"uri": other, "accuracy": acc_on(other, res.model.state_dict()),
                                               "that_chip_naive": None}
        rows.append(row)
        if i == 0:
            curves_first = {
                "in-the-loop": loop_curve(row["naive"], hist),
                "noise-aware (float)": [(0, 0.0, row["naive"])] + [
                    (h["epoch"], 0.0, h["chip_accuracy"][uri]) for h in na_res.history],
                "calibration": [(0, 0.0, row["naive"]), (args.calib_rounds, cal_seconds, row["calibration"])],
            }
    for i, row in enumerate(rows):  # fill in the next chip's naive accuracy for the transfer rows
        if "in_the_loop_on_next_chip" in row:
            row["in_the_loop_on_next_chip"]["that_chip_naive"] = rows[(i + 1) % len(rows)]["naive"]

    # epoch time: in-the-loop on sim vs float training, same data and batch size, this run
    timing = epoch_times(spec, float_sd, uris[0], train_x, train_y, args.batch_size, args.lr, args.seed)
    mean = lambda k: statistics.mean(r[k] for r in rows)  # noqa: E731
    result = {
        "dataset": data.name, "model": spec.name, "num_steps": spec.num_steps, "train_samples": len(train_x),
        "test_samples": len(test_x), "mismatch": args.mismatch, "noise": args.noise, "epochs": args.epochs,
        "batch_size": args.batch_size, "lr": args.lr,
        "float_accuracy": float_acc, "ideal_device_accuracy": ideal_acc,
        "chips": rows,
        "mean": {k: mean(k) for k in ("naive", "calibration", "noise_aware", "in_the_loop")},
        "naive_loss_points": [100 * (ideal_acc - r["naive"]) for r in rows],
        "in_the_loop_gap_points": [100 * (ideal_acc - r["in_the_loop"]) for r in rows],
        "noise_aware_seconds": na_seconds,
        "epoch_time": timing,
        "seconds": time.perf_counter() - t_start,
    }
    if args.plot:
        result["plot"] = accuracy_plot(curves_first, args.plot,
                                       f"{data.name} {spec.name}, {uris[0]} (σ {args.mismatch}, noise {args.noise})",
                                       {"ideal device": ideal_acc})
    emit(result, args.json, title="hardware in the loop on non-ideal sim chips")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
