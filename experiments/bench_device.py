"""Benchmark: SimulatedDevice throughput vs the snnTorch float forward pass on the same network and
batch, measured side by side (alternating, best of N) in one process; scaling in T and batch size.

    python -m experiments.bench_device --json                 # fc 784-128-10, mcu, CPU
    python -m experiments.bench_device --device cuda --json   # sim:cuda vs the float model on CUDA

Prints one JSON object: per (T, B) the seconds and time steps per second of both, their ratio
(`sim_over_float`, target >= 0.5), and log-log slopes of time vs T and vs B (1.0 = linear).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from hw.compiler import compile_model
from hw.device import open_device
from snn.model import build_model
from snn.spec import Leaky, Linear, ModelSpec


def make_network(n_in: int, hidden: int, n_out: int, beta: float, seed: int = 0):
    """fc n_in-hidden-n_out with random weights scaled so both layers spike (about 5-20 %)."""
    spec = ModelSpec(layers=(Linear(n_in, hidden), Leaky(beta=beta), Linear(hidden, n_out), Leaky(beta=beta)),
                     input_shape=(n_in,), num_steps=25, name="bench")
    torch.manual_seed(seed)
    model = build_model(spec)
    sd = model.state_dict()
    sd["layers.0.weight"] = sd["layers.0.weight"] * 4
    sd["layers.2.weight"] = sd["layers.2.weight"] * 4
    return spec, sd


def _time(fn, sync) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def measure(spec, sd, profile, device, T, B, repeats, rate=0.2, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(T, B, spec.input_shape[0], generator=g) < rate).to(torch.uint8)
    model = build_model(spec, sd).to(device).eval()
    xf = x.to(device=device, dtype=torch.float32)
    prog = compile_model(spec, sd, profile)
    uri = "sim:cuda" if device.type == "cuda" else "sim"
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with open_device(uri, profile=profile) as dev:
        dev.load(prog)
        xs = x.to(device)
        with torch.no_grad():
            model(xf)  # warm-up both
            res = dev.run(xs)
            t_float, t_sim = math.inf, math.inf
            for _ in range(repeats):  # alternate so that load changes hit both alike
                t_float = min(t_float, _time(lambda: model(xf), sync))
                t_sim = min(t_sim, _time(lambda: dev.run(xs), sync))
    hidden_rate = res.counters[0]["spikes"] / (T * B * prog.layers[0].num_neurons)
    return {"T": T, "B": B, "float_s": t_float, "sim_s": t_sim,
            "float_timesteps_per_s": T * B / t_float, "sim_timesteps_per_s": T * B / t_sim,
            "sim_over_float": t_float / t_sim, "hidden_spike_rate": hidden_rate}


def slope(xs, ys) -> float:
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def plot(rows_T, rows_B, path):
    from experiments.plots import _save, plt
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, rows, key in ((axes[0], rows_T, "T"), (axes[1], rows_B, "B")):
        xs = [r[key] for r in rows]
        ax.loglog(xs, [r["float_s"] for r in rows], "o-", label="snnTorch float forward")
        ax.loglog(xs, [r["sim_s"] for r in rows], "s-", label="SimulatedDevice (integer)")
        ax.set(xlabel=key, ylabel="seconds per run", title=f"time vs {key}")
        ax.legend()
    return _save(fig, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="mcu")
    p.add_argument("--device", default="cpu")
    p.add_argument("--inputs", type=int, default=784)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--outputs", type=int, default=10)
    p.add_argument("--beta", type=float, default=0.9)
    p.add_argument("--T", type=int, default=25, help="time steps of the side-by-side comparison")
    p.add_argument("--batch", type=int, default=128, help="batch of the side-by-side comparison")
    p.add_argument("--T-sweep", default="12,25,50,100")
    p.add_argument("--B-sweep", default="32,64,128,256")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--plot", default=None, help="write time-vs-T/B plot to this PNG")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    spec, sd = make_network(args.inputs, args.hidden, args.outputs, args.beta)
    Ts = [int(v) for v in args.T_sweep.split(",")]
    Bs = [int(v) for v in args.B_sweep.split(",")]
    jobs = [("main", args.T, args.batch)] + [("T", t, args.batch) for t in Ts] + [("B", args.T, b) for b in Bs]
    rows = {"main": [], "T": [], "B": []}
    for kind, T, B in tqdm(jobs, desc="bench_device", file=sys.stderr):
        rows[kind].append(measure(spec, sd, args.profile, device, T, B, args.repeats))
    main_row = rows["main"][0]
    out = {
        "benchmark": "bench_device", "profile": args.profile, "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "network": f"{args.inputs}-{args.hidden}-{args.outputs} fc, leaky subtract, beta {args.beta}",
        "T": args.T, "batch": args.batch, "repeats": args.repeats,
        "sim_timesteps_per_s": main_row["sim_timesteps_per_s"],
        "float_timesteps_per_s": main_row["float_timesteps_per_s"],
        "sim_over_float": main_row["sim_over_float"], "target_sim_over_float": 0.5,
        "target_met": main_row["sim_over_float"] >= 0.5,
        "sim_time_vs_T_loglog_slope": slope([r["T"] for r in rows["T"]], [r["sim_s"] for r in rows["T"]]),
        "sim_time_vs_B_loglog_slope": slope([r["B"] for r in rows["B"]], [r["sim_s"] for r in rows["B"]]),
        "float_time_vs_T_loglog_slope": slope([r["T"] for r in rows["T"]], [r["float_s"] for r in rows["T"]]),
        "float_time_vs_B_loglog_slope": slope([r["B"] for r in rows["B"]], [r["float_s"] for r in rows["B"]]),
        "sweep_T": rows["T"], "sweep_B": rows["B"], "main": main_row,
    }
    if args.plot:
        out["plot"] = str(plot(rows["T"], rows["B"], Path(args.plot)))
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            if not isinstance(v, (list, dict)):
                print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
