"""The range of every numeric command-line option, and the argparse types that enforce them.

`RANGES` is the one table: option name -> `Range`. A sub-command adds a numeric option with
`add_number(p, "--epochs", default=20, help=...)`, which takes the type (int or float) and the
allowed range from the table; a parser built elsewhere (the continual benchmark's) gets the same
checks with `bound_numbers(p)`. An option missing from the table is an error when the parser is
built, and `tests/test_cli_args.py` walks every sub-command's parser so that none slips through.

A value outside its range is refused by argparse (exit status 2) before the command runs:

    spikeloop train: error: argument --num-steps: must be an integer in [1, 100000], got 0

`torch_device` does the same for `--device` of the commands that run torch on a device
(train, continual): cpu, cuda, cuda:N (N < number of GPUs), mps, each only where usable.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    """Allowed values of one numeric option: `kind` (int or float) in [lo, hi], either end open
    for floats when `lo_open` / `hi_open`."""

    kind: type
    lo: int | float
    hi: int | float
    lo_open: bool = False
    hi_open: bool = False

    def __post_init__(self) -> None:
        if self.kind not in (int, float):
            raise ValueError(f"Range.kind must be int or float, got {self.kind!r}")
        if not self.lo <= self.hi:
            raise ValueError(f"Range.lo must be <= Range.hi, got [{self.lo}, {self.hi}]")
        if self.kind is int and (self.lo_open or self.hi_open):
            raise ValueError("Range of int: give closed bounds (lo_open/hi_open are for floats)")

    def describe(self) -> str:
        """'an integer in [1, 100000]' or 'a number in (0, 1)'."""
        what = "an integer" if self.kind is int else "a number"
        lo, hi = (f"{self.lo}", f"{self.hi}") if self.kind is int else (f"{self.lo:g}", f"{self.hi:g}")
        return f"{what} in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"

    def contains(self, value: int | float) -> bool:
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below

    def parse(self, text: str) -> int | float:
        """`text` as `kind`; ArgumentTypeError 'must be <describe()>, got <text>' otherwise."""
        try:
            value = self.kind(text)
        except (TypeError, ValueError):
            value = None
        # isfinite: nan compares false with everything, inf lies outside every finite range
        if value is None or not math.isfinite(value) or not self.contains(value):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}"
                                             if value is None else f"must be {self.describe()}, got {text}")
        return value


_MANY = 10**9  # sample counts: more than any dataset here holds

RANGES: dict[str, Range] = {
    # training (train, run, continual)
    "--epochs": Range(int, 1, 100_000),
    "--batch-size": Range(int, 1, 1_000_000),
    "--lr": Range(float, 0.0, 10.0, lo_open=True),
    "--num-steps": Range(int, 1, 100_000),
    "--hidden": Range(int, 1, 1_000_000),
    "--patience": Range(int, 1, 100_000),
    "--val-fraction": Range(float, 0.0, 1.0, hi_open=True),  # 0: no validation split
    "--seed": Range(int, 0, 2**32 - 1),
    "--threads": Range(int, 1, 4096),
    "--rounds": Range(int, 1, 1000),  # benchmarks (bench_train): interleaved timing rounds
    # datasets
    "--max-train": Range(int, 1, _MANY),
    "--max-test": Range(int, 1, _MANY),
    # Brian2 cross-check (crosscheck, run)
    "--samples": Range(int, 1, 100_000),
    "--first-sample": Range(int, 0, _MANY),
    "--plot-sample": Range(int, 0, 100_000 - 1),
    "--crosscheck-samples": Range(int, 1, 100_000),
    # hardware (deploy, export, devices)
    "--max-spikes": Range(int, 1, 15),
    "--baud": Range(int, 50, 20_000_000),
    "--timeout-s": Range(float, 0.0, 3600.0, lo_open=True),
    "--dt-s": Range(float, 0.0, 1.0, lo_open=True),  # export --format nir: Euler step of the time constants
    "--chunk": Range(int, 1, 100_000),         # vendor_check: samples per Lava runner call
    "--copies": Range(int, 1, 10_000),         # vendor_check: samples side by side in one Lava network
    "--bench-samples": Range(int, 1, 100_000),  # vendor_check --bench: samples of the slow settings
    # hil_bench: non-ideal chips (hw/nonideal.py) and the alternatives to in-the-loop training
    "--mismatch": Range(float, 0.0, 1.0),
    "--noise": Range(float, 0.0, 1.0),
    "--float-epochs": Range(int, 1, 100_000),
    "--calib-rounds": Range(int, 0, 1000),
    "--calib-samples": Range(int, 1, _MANY),
    # continual learning
    "--tasks": Range(int, 1, 1000),
    "--train-per-task": Range(int, 1, _MANY),
    "--test-per-task": Range(int, 1, _MANY),
    "--ewc-lambda": Range(float, 0.0, 1e12),
    "--gpm-threshold": Range(float, 0.0, 1.0, lo_open=True),
    "--hlop-iterations": Range(int, 1, 100_000),
    "--workers": Range(int, 1, 4096),  # continual study: parallel processes
    "--repeats": Range(int, 1, 1000),  # continual parallel_bench: runs of each variant
}


def option_range(option: str) -> Range:
    """The table's range of `option` (e.g. '--epochs'); ValueError naming the table if absent."""
    try:
        return RANGES[option]
    except KeyError:
        raise ValueError(f"numeric option {option} has no range in experiments.args.RANGES; "
                         f"add one there") from None


def number_type(option: str) -> Callable[[str], int | float]:
    """The argparse `type=` for `option`: parses and range-checks with the table's `Range`."""
    rng = option_range(option)

    def parse(text: str) -> int | float:
        return rng.parse(text)

    parse.__name__ = rng.kind.__name__  # argparse names the type in some messages
    parse.range = rng
    return parse


def _with_range(help_text: str | None, rng: Range) -> str:
    return f"{help_text} ({rng.describe()})" if help_text else rng.describe()


def add_number(p: argparse.ArgumentParser, option: str, *, help: str | None = None, **kwargs):
    """`p.add_argument(option, type=<int or float with the table's range>, **kwargs)`; the help
    text gets the range appended."""
    if "type" in kwargs:
        raise ValueError(f"add_number({option!r}): the type comes from RANGES, do not pass type=")
    rng = option_range(option)
    return p.add_argument(option, type=number_type(option), help=_with_range(help, rng), **kwargs)


def _option_name(action: argparse.Action) -> str:
    longs = [s for s in action.option_strings if s.startswith("--")]
    return longs[0] if longs else (action.option_strings or [action.dest])[0]


def bound_numbers(p: argparse.ArgumentParser) -> None:
    """Give every `type=int` / `type=float` option of `p` (added by code outside this package's
    commands) the table's range; ValueError for an option the table lacks or whose kind differs."""
    for action in p._actions:
        if action.type not in (int, float):
            continue
        option = _option_name(action)
        rng = option_range(option)
        if rng.kind is not action.type:
            raise ValueError(f"{option} is declared {action.type.__name__}, RANGES says {rng.kind.__name__}")
        action.type = number_type(option)
        action.help = _with_range(action.help, rng)


def set_type(p: argparse.ArgumentParser, option: str, type_: Callable[[str], object]) -> None:
    """Replace the `type=` of an option already added to `p` (e.g. `--device` -> torch_device)."""
    for action in p._actions:
        if option in action.option_strings:
            action.type = type_
            return
    raise ValueError(f"parser {p.prog!r} has no option {option}")


def available_torch_devices() -> list[str]:
    """Torch device names usable on this machine: cpu, cuda and cuda:0 .. cuda:N-1, mps."""
    import torch

    names = ["cpu"]
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n:
        names += ["cuda"] + [f"cuda:{i}" for i in range(n)]
    if torch.backends.mps.is_available():
        names.append("mps")
    return names


def check_torch_device(text: str) -> str:
    """`text` if it names a torch device usable here (cpu, cuda, cuda:N, mps); ValueError naming
    the problem and the devices that are available otherwise."""
    import torch

    available = available_torch_devices()
    here = f"available here: {', '.join(available)}"
    if text in available:
        return text
    m = re.fullmatch(r"cuda(?::(\d+))?", text)
    if m:
        if "cuda" not in available:
            why = (f"torch {torch.__version__} was built without CUDA" if torch.version.cuda is None
                   else "no CUDA GPU is visible")
            raise ValueError(f"{text!r} is not available: {why}; {here}")
        n = torch.cuda.device_count()
        raise ValueError(f"{text!r} is not available: this machine has {n} CUDA device(s), "
                         f"cuda:0 .. cuda:{n - 1}; {here}")
    if text == "mps":
        raise ValueError(f"'mps' is not available (no Apple Metal GPU); {here}")
    raise ValueError(f"{text!r} is not a device; use cpu, cuda, cuda:N or mps ({here})")


def torch_device(text: str) -> str:
    """argparse `type=` for `--device` of the torch commands: `check_torch_device` at parse time."""
    try:
        return check_torch_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


torch_device.__name__ = "device"
