"""A trained checkpoint on a vendor simulator against spikeloop's `sim` device, sample by sample:
compile for the profile, encode test samples exactly as `spikeloop deploy` does, run both, and
report identical output rasters, per-layer spikes and membranes, and float vs device accuracy (one
JSON object with --json).

    python -m experiments.vendor_check CKPT --vendor lava --max-test 2000 --json
    python -m experiments.vendor_check CKPT --vendor lava --bench --max-test 100 --json   # speed

`lava` (profile loihi) runs in the Python 3.10 side venv (hw/vendor/lava_env.py); samples go in
chunks of `--chunk` per runner call (progress shows, memory stays bounded), `--copies` of them side
by side in one Lava network on `--connection sparse` (hw/vendor/lava_runner.py, "Copies").

`--bench` runs the first `--bench-samples` samples with the runner as it was (one sample at a time,
reset and read back through Lava's host-side Var.set / Var.get) and with the recorder doing both
inside Lava, and all `--max-test` samples with the copies, in one process one after another; it
prints seconds per sample, the ratios and whether each setting was identical to `sim`.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from tqdm import tqdm

from experiments.output import add_json_flag, emit


def _prepare(checkpoint: str, max_test: int | None):
    """(checkpoint, data, loihi program, spikes [T, N, N_in] numpy, labels [N])."""
    from experiments.commands.train import checkpoint_data, fit_inputs
    from hw.compiler import compile_model
    from hw.deploy import device_inputs
    from snn.checkpoint import load_checkpoint
    from snn.training import EVAL_SEED

    ckpt = load_checkpoint(checkpoint)
    data = checkpoint_data(ckpt, max_test)
    prog = compile_model(ckpt.spec, ckpt.state_dict, "loihi")
    x = fit_inputs(ckpt.spec, data.test_x)
    spikes = device_inputs(ckpt.spec, x, range(len(x)), EVAL_SEED).numpy()
    return ckpt, data, prog, spikes, data.test_y


def compare_chunks(prog, spikes: np.ndarray, chunk: int, progress: bool = True, **lava_kwargs) -> dict:
    """Run spikes [T, N, N_in] on Lava and on `sim` in chunks; per-layer mismatch counts, identical
    output rasters, Lava's output spike counts [N, N_out] and the seconds spent in the runner."""
    from hw.vendor.lava import compare_with_sim, run_many_on_lava, sim_traces

    n, last = spikes.shape[1], len(prog.layers) - 1
    same_raster, counts, lava_s = 0, [], 0.0
    layers = {k: {"values": 0, "sim_spikes": 0, "lava_spikes": 0, "mismatches": {}} for k in range(len(prog.layers))}
    for s in tqdm(range(0, n, chunk), desc="lava", file=sys.stderr, disable=not progress):
        xs = spikes[:, s:s + chunk]
        t0 = time.perf_counter()
        res = run_many_on_lava([(prog, xs)], **lava_kwargs)[0]
        lava_s += time.perf_counter() - t0
        sim = sim_traces(prog, xs)
        rep = compare_with_sim(prog, xs, res, sim)
        same_raster += int((res["output_spikes"] == sim["layer_spikes"][last]).all(axis=(0, 2)).sum())
        counts.append(res["output_spikes"].astype(np.int64).sum(0))
        for diff in rep.layers:
            acc = layers[diff.layer]
            acc["values"] += int(xs.shape[0] * xs.shape[1] * diff.n)
            acc["sim_spikes"] += diff.sim_spikes
            acc["lava_spikes"] += diff.lava_spikes
            for field, m in diff.mismatches.items():
                acc["mismatches"][field] = acc["mismatches"].get(field, 0) + m
    identical = same_raster == n and not any(m for l in layers.values() for m in l["mismatches"].values())
    return {"samples": n, "identical_output_rasters": same_raster, "identical": identical, "layers": layers,
            "lava_counts": np.concatenate(counts), "lava_seconds": lava_s, "meta": res["meta"]}


def check_lava(checkpoint: str, max_test: int | None, chunk: int, copies: int = 100,
               connection: str = "sparse", progress: bool = True) -> dict:
    """The whole comparison of `checkpoint` (compiled for loihi) on Lava; see the module docstring."""
    import torch

    from experiments.commands.train import fit_inputs
    from hw.deploy import float_predictions
    from snn.training import predict

    ckpt, data, prog, spikes, y = _prepare(checkpoint, max_test)
    t0 = time.perf_counter()
    got = compare_chunks(prog, spikes, chunk, progress, copies=copies, connection=connection)
    lava_pred = predict(torch.as_tensor(got["lava_counts"]))
    # the float model on the same encoded input (float_predictions encodes with EVAL_SEED, as _prepare)
    _, fpred = float_predictions(ckpt.build(dtype=torch.float32).eval(), ckpt.spec, fit_inputs(ckpt.spec, data.test_x))
    return {"vendor": "lava", "lava-nc": got["meta"]["lava-nc"], "profile": "loihi", "checkpoint": checkpoint,
            "dataset": data.name, "samples": got["samples"], "num_steps": int(spikes.shape[0]),
            "identical": got["identical"], "identical_output_rasters": got["identical_output_rasters"],
            "layers": got["layers"], "float_accuracy": (fpred == y).float().mean().item(),
            "lava_accuracy": (lava_pred == y).float().mean().item(),
            "agreement_with_float": (lava_pred == fpred).float().mean().item(),
            "lava_groups_per_layer": prog_groups(prog), "layer_kinds": [l.kind for l in prog.layers],
            "copies": copies, "connection": connection,
            "chunk": chunk,
            "lava_seconds": round(got["lava_seconds"], 1),
            "lava_s_per_sample": round(got["lava_seconds"] / got["samples"], 4),
            "seconds": round(time.perf_counter() - t0, 1)}


def bench_lava(checkpoint: str, max_test: int, bench_samples: int, chunk: int, copies: int,
               connection: str) -> dict:
    """Seconds per sample of the runner's settings on the same samples, measured one after another
    in this process (see the module docstring)."""
    _, data, prog, spikes, _ = _prepare(checkpoint, max_test)
    slow = spikes[:, :bench_samples]
    settings = [("host_var_get_set", slow, dict(host_io=True)),
                ("recorder_io", slow, dict()),
                (f"recorder_io_{copies}_copies_{connection}", spikes, dict(copies=copies, connection=connection))]
    rows = {}
    for name, xs, kw in settings:
        got = compare_chunks(prog, xs, chunk, progress=False, **kw)
        rows[name] = {"samples": got["samples"], "identical": got["identical"],
                      "lava_seconds": round(got["lava_seconds"], 2),
                      "s_per_sample": got["lava_seconds"] / got["samples"]}
    base = rows["host_var_get_set"]["s_per_sample"]
    for r in rows.values():
        r["speedup_vs_host_var_get_set"] = round(base / r["s_per_sample"], 2)
        r["s_per_sample"] = round(r["s_per_sample"], 4)
    return {"benchmark": "lava runner", "checkpoint": checkpoint, "dataset": data.name,
            "num_steps": int(spikes.shape[0]), "lava_groups_per_layer": prog_groups(prog), "settings": rows,
            "identical": all(r["identical"] for r in rows.values())}


def prog_groups(prog) -> list[int]:
    from hw.vendor.lava import lava_layers
    return [len(L.vth) for L in lava_layers(prog)]


def main(argv=None) -> int:
    from experiments.args import bound_numbers

    p = argparse.ArgumentParser(prog="python -m experiments.vendor_check", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--vendor", default="lava", choices=["lava"])
    p.add_argument("--max-test", type=int, default=None, help="at most N test samples (stratified)")
    p.add_argument("--chunk", type=int, default=500, help="samples per runner call")
    p.add_argument("--copies", type=int, default=100, help="samples side by side in one Lava network")
    p.add_argument("--connection", choices=["sparse", "dense"], default="sparse",
                   help="Lava connection process holding the block-diagonal weights")
    p.add_argument("--bench", action="store_true", help="measure the runner's settings instead (see above)")
    p.add_argument("--bench-samples", type=int, default=10, help="--bench: samples for the slow settings")
    p.add_argument("--no-progress", action="store_true")
    add_json_flag(p)
    bound_numbers(p)
    a = p.parse_args(argv)
    if a.bench:
        res = bench_lava(a.checkpoint, a.max_test or 100, a.bench_samples, a.chunk, a.copies, a.connection)
    else:
        res = check_lava(a.checkpoint, a.max_test, a.chunk, a.copies, a.connection, not a.no_progress)
    emit(res, a.json, title=f"{a.checkpoint} on {a.vendor}")
    return 0 if res["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
