"""Benchmark: SimulatedDevice throughput vs the snnTorch float forward pass on the same network and
batch, measured side by side (alternating, best of N) in one process; scaling in T and batch size.

    python -m experiments.bench_device --json                 # fc 784-128-10, mcu, CPU
    python -m experiments.bench_device --device cuda --json   # sim:cuda vs the float model on CUDA
    python -m experiments.bench_device --threads 1 --in-the-loop --json   # + in-the-loop epoch time

Prints one JSON object: per (T, B) the seconds and time steps per second of both, their ratio
(`sim_over_float`, target >= 0.5), and log-log slopes of time vs T and vs B (1.0 = linear).
`gemm_bound`: at B = 1, 32, 128 (T = --T) the seconds of `sim`, of the dense float32 GEMMs alone
(the products [T·B, M] x [M, N] of every layer, the bound of issue 16), of the int8 GEMMs that
`sim` runs on CPU where they are exact (`hw.sim_kernel.int8_gemm_exact`; its own bound, reported
beside) and of the float forward pass (`float_s`: `SpikingNetwork` with its fused multi-step LIF;
`snntorch_step_float_s`: the same with snnTorch's neurons one step at a time, `fused_lif=False`),
measured alternately, best of --repeats;
`fraction_of_gemm_bound` = float32 GEMM seconds / sim seconds (targets: >= 0.25 at B = 1, sim >=
1.0x the float pass at B = 128; above 1 where the int8 GEMM beats the float32 one). With --in-the-loop: one in-the-loop
training epoch through a mismatched `sim` chip against one float training epoch on the same data
(digits fc 64-64-10, T = 20, batch 32; `experiments.hil_bench.epoch_times`, alternated --repeats
times, medians; target ratio <= 3).
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


def gemm_bound(spec, sd, profile, device, T, B, repeats, rate=0.2, seed=1) -> dict:
    """sim, its GEMMs alone and the float forward at (T, B), alternated, best of `repeats`."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(T, B, spec.input_shape[0], generator=g) < rate).to(torch.uint8)
    prog = compile_model(spec, sd, profile)
    model = build_model(spec, sd).to(device).eval()
    step_model = build_model(spec, sd).to(device).eval()
    step_model.fused_lif = False  # snnTorch's neurons one step at a time (the model's reference path)
    xf = x.to(device=device, dtype=torch.float32)
    ws = [torch.as_tensor(l.weights.astype("float32").T.copy(), device=device) for l in prog.layers]
    hs = [xf.reshape(T * B, -1)] + [torch.zeros(T * B, w.shape[1], device=device) for w in ws[:-1]]
    uri = "sim:cuda" if device.type == "cuda" else "sim"
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def gemms():
        for h, w in zip(hs, ws):
            h @ w

    from hw import sim_kernel
    int8 = device.type == "cpu" and sim_kernel.int8_gemm_exact()
    ws8 = [w.to(torch.int8) for w in ws] if int8 else []
    hs8 = [h.to(torch.int8) for h in hs] if int8 else []

    def gemms8():
        for h, w in zip(hs8, ws8):
            torch._int_mm(h, w)

    with open_device(uri, profile=profile) as dev, torch.no_grad():
        dev.load(prog)
        xs = x.to(device)
        dev.run(xs), model(xf), step_model(xf), gemms(), gemms8()  # warm-up
        t_sim = t_gemm = t_float = t_step = t_gemm8 = math.inf
        for _ in range(repeats):
            t_sim = min(t_sim, _time(lambda: dev.run(xs), sync))
            t_gemm = min(t_gemm, _time(gemms, sync))
            t_float = min(t_float, _time(lambda: model(xf), sync))
            t_step = min(t_step, _time(lambda: step_model(xf), sync))
            if int8:
                t_gemm8 = min(t_gemm8, _time(gemms8, sync))
        fused = getattr(dev, "fused", False) and device.type == "cpu"
    row = {"T": T, "B": B, "sim_s": t_sim, "gemm_s": t_gemm, "float_s": t_float, "snntorch_step_float_s": t_step,
           "fraction_of_gemm_bound": t_gemm / t_sim, "sim_over_float": t_float / t_sim,
           "sim_over_snntorch_step_float": t_step / t_sim,
           "sim_path": ("C time loop, " + ("exact int8 GEMM" if int8 else "exact float GEMM")) if fused
           else "torch step loop, exact float GEMM"}
    if int8:  # the GEMM sim itself runs: its bound
        row |= {"int8_gemm_s": t_gemm8, "fraction_of_int8_gemm_bound": t_gemm8 / t_sim}
    return row


def in_the_loop_epoch(repeats: int) -> dict:
    """`hil_bench.epoch_times` on digits fc 64-64-10 (T = 20, batch 32) through
    sim?chip=1&mismatch=0.25&noise=0.02, from a float model trained here for 3 epochs."""
    from experiments.hil_bench import epoch_times
    from hw.nonideal import ChipModel
    from snn.data import load_dataset, validation_split
    from snn.presets import fc
    from snn.training import TrainConfig, Trainer
    data = load_dataset("digits")
    spec = fc(data.input_shape, data.num_classes, hidden=64, num_steps=20)
    cfg = TrainConfig(epochs=3, batch_size=32, lr=5e-3, loss="ce_count", seed=0, progress=False, device="cpu")
    sd = Trainer(spec, data.train_x, data.train_y, cfg).fit().model.state_dict()
    x, y, _, _ = validation_split(data.train_x, data.train_y, 0.1, seed=0)
    uri = "sim?" + ChipModel(1, 0.25, 0.25, 0.25, 0.02).uri_query()
    r = epoch_times(spec, sd, uri, x.reshape(len(x), *spec.input_shape), y, 32, 1e-3, 0, repeats)
    return r | {"target_ratio": 3.0, "target_met": r["ratio"] <= 3.0}


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
    p.add_argument("--in-the-loop", action="store_true", help="also time an in-the-loop epoch against a float one")
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
    bound = [gemm_bound(spec, sd, args.profile, device, args.T, b, args.repeats)
             for b in tqdm((1, 32, 128), desc="gemm bound", file=sys.stderr)]
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
        "gemm_bound": bound,
        "fraction_of_gemm_bound_B1": bound[0]["fraction_of_gemm_bound"], "target_fraction_B1": 0.25,
        "sim_over_float_B128": bound[2]["sim_over_float"],
        "sim_over_snntorch_step_float_B128": bound[2]["sim_over_snntorch_step_float"],
        "target_sim_over_float_B128": 1.0,
    }
    if args.in_the_loop:
        out["in_the_loop_epoch"] = in_the_loop_epoch(args.repeats)
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
