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

import numpy as np
from tqdm import tqdm

from experiments.output import add_json_flag, emit


def check_lava(checkpoint: str, max_test: int | None, chunk: int) -> dict:
    from experiments.commands.train import fit_inputs, load_data
    from hw.compiler import compile_model
    from hw.deploy import device_inputs
    from hw.vendor.lava import run_many_on_lava, sim_traces
    from snn.checkpoint import load_checkpoint
    from snn.training import EVAL_SEED

    ckpt = load_checkpoint(checkpoint)
    data = load_data(argparse.Namespace(dataset=ckpt.extra.get("dataset", "digits"), data_dir=None,
                                        download=False, max_test=max_test, max_train=None))
    prog = compile_model(ckpt.spec, ckpt.state_dict, "loihi")
    x = fit_inputs(ckpt.spec, data.test_x)
    spikes = device_inputs(ckpt.spec, x, range(len(x)), EVAL_SEED).numpy()  # [T, N, N_in]
    n = spikes.shape[1]
    same_raster = 0
    layers = {k: {"spikes_equal": 0, "v_equal": 0, "values": 0} for k in range(len(prog.layers))}
    t0 = time.perf_counter()
    for s in tqdm(range(0, n, chunk), desc="lava", file=sys.stderr):
        xs = spikes[:, s:s + chunk]
        res = run_many_on_lava([(prog, xs)])[0]
        out_lava = res["output_spikes"]
        sim = sim_traces(prog, xs)
        out_sim = sim["layer_spikes"][len(prog.layers) - 1]
        same_raster += int((out_lava == out_sim).reshape(out_sim.shape[0], out_sim.shape[1], -1).all(axis=(0, 2)).sum())
        for k in layers:
            a, b = res["layer_spikes"][k], sim["layer_spikes"][k]
            layers[k]["spikes_equal"] += int((a == b).sum())
            layers[k]["v_equal"] += int((res["membranes"][k] == sim["membranes"][k]).sum())
            layers[k]["values"] += int(a.size)
    return {"vendor": "lava", "profile": "loihi", "checkpoint": checkpoint, "dataset": data.name,
            "samples": n, "num_steps": int(spikes.shape[0]), "identical_output_rasters": same_raster,
            "layers": layers, "identical": same_raster == n and all(
                l["spikes_equal"] == l["values"] == l["v_equal"] for l in layers.values()),
            "lava_groups_per_layer": [len(np.unique(np.stack([l.threshold, l.decay_mem]), axis=1).T)
                                      for l in prog.layers],
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
