"""Benchmark: the `sim` device on the conv preset (snn.presets.conv((1, 28, 28), 10): Conv 3x3 ->
MaxPool 2 -> Leaky, twice, then Linear -> Leaky; 2352 + 1568 + 10 neurons) compiled for `mcu`
(program format version 2: convolution records with max pooling of the accumulations) against the
snnTorch float forward pass of the same model on the same input spikes, side by side.

    python -m experiments.bench_conv_device --json                # CPU (--threads N, default 1)
    python -m experiments.bench_conv_device --device cuda --json  # sim:cuda vs the float model on CUDA

Random weights (seed 0, scaled so every layer spikes), rate-coded input spikes (20 %). The
program is `hw.compiler.compile_model(spec, sd, "mcu")`. For each
(T, B) in T = 15, 30 and B = 1, 32, 128: rounds alternating float and sim, medians of the seconds;
time steps per second (T·B / s), `sim_over_float` = float_s / sim_s (target >= 0.5), and log-log
slopes of time vs T (per B) and vs B (per T) (1.0 = linear).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys

import torch

from experiments.bench_device import _time
from hw.compiler import compile_model
from hw.device import open_device
from snn.model import build_model
from snn.presets import conv


def make_model(T: int, seed: int = 0):
    """The conv preset with random weights scaled so that every layer spikes."""
    spec = conv((1, 28, 28), 10, num_steps=T)
    torch.manual_seed(seed)
    model = build_model(spec)
    sd = model.state_dict()
    for k, f in (("layers.0.weight", 2.0), ("layers.3.weight", 2.0), ("layers.7.weight", 3.0)):
        sd[k] = sd[k] * f
    return spec, sd


def measure(T: int, B: int, device: torch.device, rounds: int, seed: int = 1) -> dict:
    spec, sd = make_model(T)
    prog = compile_model(spec, sd, "mcu")
    model = build_model(spec, sd).to(device).eval()
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(T, B, 1, 28, 28, generator=g) < 0.2).to(torch.uint8)
    xf = x.to(device=device, dtype=torch.float32)
    xs = x.reshape(T, B, -1).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with open_device("sim:cuda" if device.type == "cuda" else "sim") as dev, torch.no_grad():
        dev.load(prog)
        res = dev.run(xs)
        model(xf)  # warm-up both
        tf, ts = [], []
        for _ in range(rounds):  # interleaved, so load changes hit both alike
            tf.append(_time(lambda: model(xf), sync))
            ts.append(_time(lambda: dev.run(xs), sync))
    t_float, t_sim = statistics.median(tf), statistics.median(ts)
    rates = {k: c["spikes"] / (T * B * prog.layers[k].num_neurons) for k, c in res.counters.items()}
    return {"T": T, "B": B, "float_s": t_float, "sim_s": t_sim, "float_timesteps_per_s": T * B / t_float,
            "sim_timesteps_per_s": T * B / t_sim, "sim_over_float": t_float / t_sim,
            "spike_rates": rates, "layers": [l.kind for l in prog.layers]}


def _slope(pts):
    (x0, y0), (x1, y1) = pts[0], pts[-1]
    return math.log(y1 / y0) / math.log(x1 / x0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--T", type=int, nargs="+", default=[15, 30])
    ap.add_argument("--B", type=int, nargs="+", default=[1, 32, 128])
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    rows = [measure(T, B, device, a.rounds) for T in a.T for B in a.B]
    out = {"benchmark": "sim conv preset vs snnTorch float forward", "device": str(device), "threads": a.threads,
           "rounds": a.rounds, "statistic": "median", "program": "hw.compiler.compile_model(spec, sd, 'mcu')", "rows": rows,
           "slope_time_vs_T": {B: _slope([(r["T"], r["sim_s"]) for r in rows if r["B"] == B]) for B in a.B}
           if len(a.T) > 1 else None,
           "slope_time_vs_B": {T: _slope([(r["B"], r["sim_s"]) for r in rows if r["T"] == T]) for T in a.T}
           if len(a.B) > 1 else None,
           "min_sim_over_float": min(r["sim_over_float"] for r in rows), "target_sim_over_float": 0.5}
    json.dump(out, sys.stdout, indent=1 if a.json else None)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
