"""The `spikeloop` command line: one sub-command per module in `COMMANDS`.

Each command module defines `register(subparsers)` that adds its parser and sets `func`.
Commands that produce results take `--json` and then print exactly one JSON object on stdout
(progress bars and logs go to stderr). Bad arguments (numeric ranges: `experiments.args`) and
errors a user can fix (bad files, missing packages, unavailable devices) end with one
`spikeloop COMMAND: error: ...` line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = [
    "experiments.commands.run",
    "experiments.commands.devices",
    "experiments.commands.train",
    "experiments.commands.evaluate",
    "experiments.commands.export",
    "experiments.commands.deploy",
    "experiments.commands.crosscheck",
    "experiments.commands.continual",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spikeloop", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ImportError as e:
        # an optional package the command needs (torchvision for --download, brian2, nir ...)
        msg = str(e)
        if isinstance(e, ModuleNotFoundError) and e.name and msg == f"No module named {e.name!r}":
            msg += f": this command needs the Python package {e.name.split('.')[0]!r}, which is not installed"
        print(f"spikeloop {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as e:
        print(f"spikeloop {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
