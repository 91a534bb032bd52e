"""One Leaky layer's forward + backward on the CPU, five ways, side by side (and RLeaky two ways): the
per-step snnTorch arithmetic under autograd (the model's path before the fused Leaky), the fused
multi-step Function with its torch-op loops (`fused_torch_ops`, SPIKELOOP_LIF_KERNEL=0) and with
its C loops (`fused_c_kernel`, snn/fused_lif_kernel.py: what spikeloop runs on the CPU),
`torch.compile` of the per-step loop, and `torch.compile` of the fused torch-op Function
(`torch_compile_fused_torch_ops`).

Each contender runs z [T, B, N] -> (spikes, membranes), then backward of sum(g * spikes) with a
fixed random g; subtract reset, beta 0.9, threshold 1, atan surrogate (slope 2). Rounds are
interleaved, medians reported; forward bits and input gradients are checked against the per-step
path. Compile times are reported separately.

RLeaky (`rleaky` in the JSON): snnTorch's `RLeaky` module stepped one time step at a time under
autograd, as the model's reference path (`fused_lif=False`) steps it, against `rleaky_multistep`,
for the dense recurrence (all_to_all: an N x N Linear with bias) and the elementwise one
(per-neuron V), each with subtract and zero reset (`dense_subtract`, ...; snnTorch's zero reset
evaluates the recurrent map twice per step); learnable recurrence, beta 0.9, threshold 1, atan
(slope 2), backward of sum(g * spikes). Forward bits, input and recurrent-weight gradients are
checked. The dense recurrence is matrix-product bound (T products forward, 2T backward, the same
count on both paths), which caps its fused speed-up with subtract reset.

    python -m experiments.bench_fused_lif --json
    python -m experiments.bench_fused_lif --layers rleaky --threads 1 --json
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import time

import snntorch
import snntorch.surrogate as snn_surrogate
import torch
from torch import nn
from tqdm.auto import tqdm

from experiments.args import add_number
from experiments.output import add_json_flag, emit
from snn import fused_lif_kernel
from snn.fused_lif import leaky_multistep, rleaky_multistep
from snn.fused_lif_kernel import KERNEL_ENV
from snn.spec import Surrogate

@contextlib.contextmanager
def lif_kernel(on: bool):
    """Run the fused Functions with (on) or without the C loops of snn/fused_lif_kernel.py."""
    saved = os.environ.get(KERNEL_ENV)
    os.environ[KERNEL_ENV] = "1" if on else "0"
    try:
        yield
    finally:
        if saved is None:
            del os.environ[KERNEL_ENV]
        else:
            os.environ[KERNEL_ENV] = saved


def with_kernel(f, on: bool):
    def g(*args):
        with lif_kernel(on):
            return f(*args)
    return g


def run(T: int, B: int, N: int, rounds: int, threads: int, with_compile: bool) -> dict:
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    z0 = torch.randn(T, B, N, generator=gen) * 0.6
    g = torch.randn(T, B, N, generator=gen)
    beta, thr, slope = torch.tensor(0.9), torch.tensor(1.0), 2.0
    spike = snn_surrogate.atan(slope)

    def per_step(z):
        mem = torch.zeros_like(z[0])
        reset = torch.zeros_like(z[0])
        spk_t, mem_t = [], []
        for zt in z.unbind(0):
            mem = beta * mem + zt - reset * thr
            s = spike(mem - thr)
            reset = s.detach()
            spk_t.append(s)
            mem_t.append(mem)
        return torch.stack(spk_t), torch.stack(mem_t)

    def fused(z):
        return leaky_multistep(z, beta, thr, "subtract", Surrogate("atan", slope))

    contenders = {"per_step_autograd": per_step, "fused_torch_ops": with_kernel(fused, False)}
    notes, compile_s = {}, {}
    t0 = time.perf_counter()
    with lif_kernel(True):
        have_c = fused_lif_kernel.available()  # builds it on first use (cached in ~/.cache/spikeloop)
    compile_s["fused_c_kernel"] = time.perf_counter() - t0
    if have_c:
        contenders["fused_c_kernel"] = with_kernel(fused, True)
    else:
        notes["fused_c_kernel"] = "C kernel not available (no C compiler?)"

    def step(f):
        z = z0.clone().requires_grad_()
        spk, mem = f(z)
        (spk * g).sum().backward()
        return spk, mem, z.grad

    if with_compile:
        def surrogate_free(z):  # torch.compile cannot trace snnTorch's autograd.Function closures
            mem = torch.zeros_like(z[0])
            reset = torch.zeros_like(z[0])
            spk_t, mem_t = [], []
            for zt in z.unbind(0):
                mem = beta * mem + zt - reset * thr
                x = mem - thr
                hard = (x > 0).to(x.dtype)
                soft = torch.atan(math.pi / 2 * slope * x) / math.pi  # derivative: snnTorch's atan surrogate
                s = hard + (soft - soft.detach())
                reset = s.detach()
                spk_t.append(s)
                mem_t.append(mem)
            return torch.stack(spk_t), torch.stack(mem_t)
        t0 = time.perf_counter()
        try:
            compiled = torch.compile(surrogate_free)
            step(compiled)
            contenders["torch_compile"] = compiled
            notes["torch_compile"] = "per-step loop with a straight-through atan (same surrogate derivative)"
        except Exception as e:  # noqa: BLE001 - a compile failure is a result, reported
            notes["torch_compile"] = f"torch.compile failed: {type(e).__name__}: {str(e)[:200]}"
        compile_s["torch_compile"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        try:  # the fused Function's torch-op loop (kernel off) under torch.compile
            compiled_fused = with_kernel(torch.compile(fused), False)
            step(compiled_fused)
            contenders["torch_compile_fused_torch_ops"] = compiled_fused
        except Exception as e:  # noqa: BLE001 - a compile failure is a result, reported
            notes["torch_compile_fused_torch_ops"] = f"torch.compile failed: {type(e).__name__}: {str(e)[:200]}"
        compile_s["torch_compile_fused_torch_ops"] = time.perf_counter() - t0

    ref = step(per_step)
    checks = {}
    for name, f in contenders.items():
        spk, mem, dz = step(f)
        checks[name] = {"spikes_equal": bool(torch.equal(spk, ref[0])), "mem_equal": bool(torch.equal(mem, ref[1])),
                        "input_grad_max_rel_err": ((dz - ref[2]).abs().max() / ref[2].abs().max()).item()}
    ms = _interleaved_medians(step, contenders, rounds)
    return {"bench": "fused_lif_layer", "shape": [T, B, N], "threads": threads, "rounds": rounds,
            "forward_backward_ms": ms,
            "speedup_vs_per_step": {k: ms["per_step_autograd"] / v for k, v in ms.items()},
            "checks": checks, "compile_seconds": compile_s, "notes": notes, "torch": torch.__version__}


def _interleaved_medians(step, contenders: dict, rounds: int) -> dict[str, float]:
    """Median milliseconds of step(f) per contender; the order rotates round by round."""
    times = {k: [] for k in contenders}
    names = list(contenders)
    for r in tqdm(range(rounds), desc="rounds", file=sys.stderr, disable=not sys.stderr.isatty(), leave=False):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            step(contenders[name])
            times[name].append(time.perf_counter() - t0)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def _rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    """max |got - ref| over max |ref| (the absolute error where ref is all zero)."""
    return ((got - ref).abs().max() / ref.abs().max().clamp_min(1.0 if not ref.any() else 0.0)).item()


def run_rleaky(T: int, B: int, N: int, rounds: int, threads: int) -> dict:
    """RLeaky forward + backward, per-step snnTorch module vs fused, dense and elementwise, both resets."""
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    z0 = torch.randn(T, B, N, generator=gen) * 0.6
    g = torch.randn(T, B, N, generator=gen)
    w0 = torch.randn(N, N, generator=gen) * (0.5 / math.sqrt(N))
    b0 = torch.randn(N, generator=gen) * 0.1
    v0 = torch.randn(N, generator=gen) * 0.5
    sg = Surrogate("atan", 2.0)
    out = {}
    for kind, reset in [(k, r) for k in ("dense", "elementwise") for r in ("subtract", "zero")]:
        if kind == "dense":
            lif = snntorch.RLeaky(beta=torch.tensor(0.9), threshold=torch.tensor(1.0), all_to_all=True,
                                  linear_features=N, spike_grad=snn_surrogate.atan(sg.slope), reset_mechanism=reset)
            with torch.no_grad():
                lif.recurrent.weight.copy_(w0)
                lif.recurrent.bias.copy_(b0)
            rec_params = [lif.recurrent.weight, lif.recurrent.bias]
            fused_rec = {"weight": lif.recurrent.weight, "bias": lif.recurrent.bias}
        else:
            lif = snntorch.RLeaky(beta=torch.tensor(0.9), threshold=torch.tensor(1.0), all_to_all=False,
                                  V=v0.clone(), spike_grad=snn_surrogate.atan(sg.slope), reset_mechanism=reset)
            rec_params = [lif.V]
            fused_rec = {"V": lif.V}

        def per_step(z, lif=lif):  # snn/model.py `_step` for RLeaky, T times
            spk = mem = torch.zeros_like(z[0])
            spk_t, mem_t = [], []
            for zt in z.unbind(0):
                spk, mem = lif(zt, spk, mem)
                spk = spk.to(mem.dtype)
                spk_t.append(spk)
                mem_t.append(mem)
            return torch.stack(spk_t), torch.stack(mem_t)

        def fused(z, lif=lif, rec=fused_rec, reset=reset):
            return rleaky_multistep(z, lif.beta.clamp(0, 1), lif.threshold, reset, sg, **rec)

        def step(f, rec_params=rec_params):
            for p in rec_params:
                p.grad = None
            z = z0.clone().requires_grad_()
            spk, mem = f(z)
            (spk * g).sum().backward()
            return spk, mem, z.grad, rec_params[0].grad.clone()

        ref = step(per_step)
        spk, mem, dz, dw = step(fused)
        check = {"spikes_equal_bits": bool(torch.equal(spk.view(torch.int32), ref[0].view(torch.int32))),
                 "mem_equal_bits": bool(torch.equal(mem.view(torch.int32), ref[1].view(torch.int32))),
                 "spike_rate": spk.mean().item(),
                 "input_grad_max_rel_err": _rel_err(dz, ref[2]),
                 # elementwise V with zero reset has a zero gradient: the reset clears V*S[t-1]
                 "recurrent_grad_max_rel_err": _rel_err(dw, ref[3])}
        ms = _interleaved_medians(step, {"per_step_autograd": per_step, "fused_torch_ops": fused}, rounds)
        out[f"{kind}_{reset}"] = {"forward_backward_ms": ms,
                                  "speedup_fused_vs_per_step": ms["per_step_autograd"] / ms["fused_torch_ops"],
                                  "checks": check}
    return {"bench": "fused_rleaky_layer", "shape": [T, B, N], "threads": threads, "rounds": rounds,
            "surrogate": "atan(2)", **out, "torch": torch.__version__}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.bench_fused_lif", description=__doc__.splitlines()[0])
    add_number(p, "--num-steps", default=25)
    add_number(p, "--batch-size", default=128)
    add_number(p, "--hidden", default=256)
    add_number(p, "--rounds", default=15)
    add_number(p, "--threads", default=1)
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow to compile)")
    p.add_argument("--layers", default="leaky,rleaky",
                   help="comma-separated: leaky (four contenders), rleaky (dense and elementwise)")
    add_json_flag(p)
    a = p.parse_args(argv)
    layers = {x.strip() for x in a.layers.split(",") if x.strip()}
    if not layers or layers - {"leaky", "rleaky"}:
        p.error(f"--layers takes leaky and/or rleaky, got {a.layers!r}")
    res, ok = {}, True
    if "leaky" in layers:
        res = run(a.num_steps, a.batch_size, a.hidden, a.rounds, a.threads, not a.no_compile)
        ok = res["checks"]["fused_torch_ops"]["spikes_equal"]
    if "rleaky" in layers:
        res["rleaky"] = run_rleaky(a.num_steps, a.batch_size, a.hidden, a.rounds, a.threads)
        ok = ok and all(res["rleaky"][k]["checks"]["spikes_equal_bits"] and res["rleaky"][k]["checks"]["mem_equal_bits"]
                        for k in ("dense_subtract", "dense_zero", "elementwise_subtract", "elementwise_zero"))
    emit(res, a.json, title="one Leaky / RLeaky layer, forward + backward")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
