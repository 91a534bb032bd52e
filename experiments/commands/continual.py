"""`spikeloop continual`: HLOP and its baselines on a continual-learning benchmark, side by side."""

from __future__ import annotations

from experiments.continual.bench import add_arguments, report
from experiments.continual.bench import run as run_benchmark


def register(sub) -> None:
    p = sub.add_parser("continual", help="continual learning: HLOP, GPM, EWC, fine-tuning, multitask on "
                                         "permuted/split benchmarks")
    add_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    report(run_benchmark(args), args.json)
    return 0
