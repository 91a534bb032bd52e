"""`spikeloop continual`: HLOP and its baselines on a continual-learning benchmark, side by side."""

from __future__ import annotations

from experiments.args import bound_numbers, set_type, torch_device
from experiments.continual.bench import add_arguments, report
from experiments.continual.bench import run as run_benchmark


def register(sub) -> None:
    p = sub.add_parser("continual", help="continual learning: HLOP, GPM, EWC, fine-tuning, multitask on "
                                         "permuted/split benchmarks")
    add_arguments(p)
    # the benchmark's parser is shared with `python -m experiments.continual.bench`; the CLI adds
    # the ranges of experiments.args and the device check
    bound_numbers(p)
    set_type(p, "--device", torch_device)
    p.set_defaults(func=run)


def run(args) -> int:
    report(run_benchmark(args), args.json)
    return 0
