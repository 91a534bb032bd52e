"""How many distinct weight scales a `loihi` layer needs: device accuracy of checkpoints compiled
with 1, 2, 4, 8 levels and with one scale per neuron (hw.compiler.LOIHI_MAX_SCALES), on `sim`.

Lava's LIF process holds one threshold and one decay, so each distinct scale of a layer (with a
shared float threshold) is one LIF process on Lava; this measures what fewer of them cost.

    python -m experiments.loihi_scale_levels CKPT [CKPT ...] --json
"""

from __future__ import annotations

import argparse
import sys

from experiments.output import add_json_flag, emit


def measure(checkpoint: str, levels: list[int | None], max_test: int | None = None) -> dict:
    from experiments.commands.deploy import deploy_checkpoint
    from experiments.commands.train import checkpoint_data
    from hw import compiler
    from snn.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    data = checkpoint_data(ckpt, max_test)
    rows, saved = [], compiler.LOIHI_MAX_SCALES
    try:
        for g in levels:
            compiler.LOIHI_MAX_SCALES = g if g is not None else 10 ** 9
            dep = deploy_checkpoint(ckpt, data, "sim", "loihi", progress=False).result
            rmse = [r["weight_relative_rmse"] for r in dep["compile_report"]]
            rows.append({"levels": g if g is not None else "per-neuron",
                         "float_accuracy": dep["float_accuracy"], "device_accuracy": dep["device_accuracy"],
                         "drop_points": round(dep["accuracy_drop_points"], 2),
                         "agreement_with_float": dep["agreement_with_float"], "weight_relative_rmse": rmse})
            print(f"[loihi_scale_levels] {checkpoint}: {rows[-1]}", file=sys.stderr)
    finally:
        compiler.LOIHI_MAX_SCALES = saved
    return {"checkpoint": checkpoint, "dataset": data.name, "test_samples": len(data.test_y), "rows": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--levels", default="1,2,4,8,0", help="comma list; 0 = one scale per neuron")
    add_json_flag(p)
    a = p.parse_args(argv)
    levels = [int(v) or None for v in a.levels.split(",")]
    out = {"bench": "loihi_scale_levels", "results": [measure(c, levels) for c in a.checkpoints]}
    emit(out, a.json, title="loihi weight-scale levels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
