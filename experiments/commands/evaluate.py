"""`spikeloop eval CKPT`: test accuracy of a checkpoint on its dataset."""

from __future__ import annotations

import time

from experiments.args import add_number
from experiments.commands.train import add_dataset_args, fit_inputs, load_data
from experiments.output import add_json_flag, emit
from snn.checkpoint import load_checkpoint
from snn.model import default_device
from snn.training import EVAL_SEED, evaluate


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint on a dataset's test set")
    p.add_argument("checkpoint")
    add_dataset_args(p)
    p.set_defaults(dataset=None)
    add_number(p, "--seed", default=EVAL_SEED, help="input encoding seed")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    ckpt = load_checkpoint(args.checkpoint)
    args.dataset = args.dataset or ckpt.extra.get("dataset", "digits")
    data = load_data(args)
    model = ckpt.build(device=default_device())
    t0 = time.perf_counter()
    res = evaluate(model, fit_inputs(ckpt.spec, data.test_x), data.test_y, seed=args.seed)
    emit({"checkpoint": args.checkpoint, "dataset": data.name, "test_accuracy": res["accuracy"],
          "test_samples": len(data.test_y), "seconds": time.perf_counter() - t0},
         args.json, title=f"evaluated {args.checkpoint}")
    return 0
