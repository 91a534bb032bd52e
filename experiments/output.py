"""Printing command results: one JSON object with --json, a readable summary otherwise."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "tolist"):
        return _jsonable(v.tolist())
    return v


def emit(result: dict, as_json: bool, title: str = "") -> None:
    """Print `result`: JSON on stdout, or `key: value` lines (scalars only) for people."""
    result = _jsonable(result)
    if as_json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
        return
    if title:
        print(title)
    for k, v in result.items():
        if isinstance(v, (dict, list)):
            continue
        if isinstance(v, float):
            v = f"{v:.4g}"
        print(f"  {k}: {v}")


def add_json_flag(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object with the results")
