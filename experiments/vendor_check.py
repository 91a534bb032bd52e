"""A trained checkpoint on a vendor simulator against spikeloop's `sim` device, sample by sample:
compile for the profile, encode test samples exactly as `spikeloop deploy` does, run both, and
report identical output rasters, per-layer spikes and membranes (one JSON object with --json).

    python -m experiments.vendor_check CKPT --vendor lava --max-test 2000 --json

`lava` (profile loihi) runs in the Python 3.10 side venv (hw/vendor/lava_env.py); samples go in
chunks so progress shows and a long run keeps memory bounded.
"""

from __future__ import annotations

import argparse
import sys
import time

from tqdm import tqdm

from experiments.output import add_json_flag, emit


def check_lava(checkpoint: str, max_test: int | None, chunk: int) -> dict:
    from experiments.commands.train import checkpoint_data, fit_inputs
    from hw.compiler import compile_model
    from hw.deploy import device_inputs
    from hw.vendor.lava import compare_with_sim, lava_layers, run_many_on_lava, sim_traces
    from snn.checkpoint import load_checkpoint
    from snn.training import EVAL_SEED

    ckpt = load_checkpoint(checkpoint)
    data = checkpoint_data(ckpt, max_test)
    prog = compile_model(ckpt.spec, ckpt.state_dict, "loihi")
    x = fit_inputs(ckpt.spec, data.test_x)
    spikes = device_inputs(ckpt.spec, x, range(len(x)), EVAL_SEED).numpy()  # [T, N, N_in]
    n, last = spikes.shape[1], len(prog.layers) - 1
    same_raster = 0
    layers = {k: {"values": 0, "mismatches": {}} for k in range(len(prog.layers))}
    t0 = time.perf_counter()
    for s in tqdm(range(0, n, chunk), desc="lava", file=sys.stderr):
        xs = spikes[:, s:s + chunk]
        res = run_many_on_lava([(prog, xs)])[0]
        sim = sim_traces(prog, xs)
        rep = compare_with_sim(prog, xs, res, sim)
        same_raster += int((res["output_spikes"] == sim["layer_spikes"][last]).all(axis=(0, 2)).sum())
        for diff in rep.layers:
            acc = layers[diff.layer]
            acc["values"] += int(xs.shape[0] * xs.shape[1] * diff.n)
            for field, m in diff.mismatches.items():
                acc["mismatches"][field] = acc["mismatches"].get(field, 0) + m
    return {"vendor": "lava", "profile": "loihi", "checkpoint": checkpoint, "dataset": data.name,
            "samples": n, "num_steps": int(spikes.shape[0]), "identical_output_rasters": same_raster,
            "layers": layers, "identical": same_raster == n and not any(
                m for l in layers.values() for m in l["mismatches"].values()),
            "lava_groups_per_layer": [len(L.vth) for L in lava_layers(prog)],
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.vendor_check", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--vendor", default="lava", choices=["lava"])
    p.add_argument("--max-test", type=int, default=None, help="at most N test samples (stratified)")
    p.add_argument("--chunk", type=int, default=100, help="samples per runner call")
    add_json_flag(p)
    a = p.parse_args(argv)
    res = check_lava(a.checkpoint, a.max_test, a.chunk)
    emit(res, a.json, title=f"{a.checkpoint} on {a.vendor}")
    return 0 if res["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
