"""Training step on a CUDA GPU: spikeloop's model step (fused multi-step Leaky, snn/fused_lif.py, torch
ops on CUDA), the same model stepping Leaky one time step at a time, and the snnTorch tutorial loop,
side by side; also checks the fused forward on CUDA against the CPU. Runs in well under 5 minutes
on one GPU; without CUDA it prints a JSON object saying so and exits 0.

Network 784 -> hidden -> 10 (Flatten -> Linear -> Leaky -> Linear -> Leaky, atan surrogate), T = 25,
batch 128, ce_count loss, Adam; random rate-coded input spikes drawn once (the step alone is timed,
with torch.cuda.synchronize around it). Contenders alternate within each round; medians.

    python -m experiments.bench_gpu_train --json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import snntorch as snn
import snntorch.functional as SF
import torch

from experiments.args import add_number
from experiments.bench_train import tutorial_net_like
from experiments.output import add_json_flag, emit
from snn.model import build_model
from snn.presets import fc

TARGET_VS_TUTORIAL_1000 = 5.0  # issue 16: >= 5x the snnTorch tutorial loop at 1000 hidden on a GPU


def _time_steps(step, steps: int) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def bench_shape(hidden: int, num_steps: int, batch: int, rounds: int, steps: int) -> dict:
    dev = torch.device("cuda")
    spec = fc((1, 28, 28), 10, hidden=hidden, num_steps=num_steps)
    torch.manual_seed(0)
    init = build_model(spec)
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand(num_steps, batch, 1, 28, 28, generator=gen) < 0.2).float()
    y = torch.randint(0, 10, (batch,), generator=gen)
    xd, yd = x.to(dev), y.to(dev)
    loss_fn = SF.ce_count_loss()

    def model_step(fused: bool):
        m = build_model(spec, init.state_dict(), device=dev)
        m.fused_lif = fused
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)

        def step():
            loss = loss_fn(m(xd).spikes, yd)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    def tutorial_step():
        net = tutorial_net_like(init, spec).to(dev)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        xf = xd.flatten(2)

        def step():
            loss = loss_fn(net(xf), yd)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    steps_fn = {"model_step": model_step(True), "model_step_snntorch_lif": model_step(False),
                "snntorch_loop": tutorial_step()}
    for f in steps_fn.values():  # warm-up: cuBLAS handles, allocator, kernels
        _time_steps(f, 2)
    per_round = []
    names = list(steps_fn)
    for r in range(rounds):
        rec = {}
        for name in names[r % len(names):] + names[:r % len(names)]:
            rec[name] = batch / _time_steps(steps_fn[name], steps)
        per_round.append(rec)
    with torch.no_grad():  # the fused forward on CUDA against the CPU
        cpu = build_model(spec, init.state_dict())(x)
        gpu = build_model(spec, init.state_dict(), device=dev)(xd)
    med = {n: statistics.median(r[n] for r in per_round) for n in names}
    ratio = lambda a, b: statistics.median(r[a] / r[b] for r in per_round)  # noqa: E731
    return {"hidden": hidden, "samples_per_s": med,
            "ratios": {"model_step_vs_snntorch_loop": ratio("model_step", "snntorch_loop"),
                       "fused_vs_snntorch_lif": ratio("model_step", "model_step_snntorch_lif")},
            "cuda_output_spikes_equal_cpu": bool(torch.equal(gpu.spikes.cpu(), cpu.spikes)),
            "cuda_output_spike_mismatch_fraction": (gpu.spikes.cpu() != cpu.spikes).float().mean().item(),
            "per_round": per_round}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.bench_gpu_train", description=__doc__.splitlines()[0])
    p.add_argument("--hidden", default="256,1000", help="comma list of hidden sizes")
    add_number(p, "--num-steps", default=25)
    add_number(p, "--batch-size", default=128)
    add_number(p, "--rounds", default=5)
    add_json_flag(p)
    a = p.parse_args(argv)
    base = {"benchmark": "gpu_train_step", "num_steps": a.num_steps, "batch_size": a.batch_size,
            "torch": torch.__version__, "snntorch": snn.__version__}
    if not torch.cuda.is_available():
        emit(base | {"skipped": "no CUDA device: nothing measured"}, a.json, title="GPU training step")
        return 0
    shapes = [bench_shape(int(h), a.num_steps, a.batch_size, a.rounds, steps=20) for h in a.hidden.split(",")]
    targets = [{"what": "model step / snnTorch tutorial loop, hidden 1000, GPU", "required": TARGET_VS_TUTORIAL_1000,
                "ratio": s["ratios"]["model_step_vs_snntorch_loop"],
                "met": s["ratios"]["model_step_vs_snntorch_loop"] >= TARGET_VS_TUTORIAL_1000}
               for s in shapes if s["hidden"] == 1000]
    emit(base | {"device": torch.cuda.get_device_name(0), "shapes": shapes, "targets": targets}, a.json,
         title="GPU training step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
