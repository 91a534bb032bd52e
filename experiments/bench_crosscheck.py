"""Benchmark: cost of a Brian2 cross-check per target vs snnTorch's forward pass (one JSON object on stdout).

    python experiments/bench_crosscheck.py [--samples 1,10] [--steps 100] [--hidden 1000] \
        [--targets numpy,cython,cpp_standalone] [--repeats 2] [--cache-dir DIR] \
        [--network fc|conv] [--encoder rate|direct]

Network (`--network fc`, default): 784-1000-10 fully connected, Leaky (subtract) layers, weights
multiples of 2^-8 (so the float64 runs must agree bit for bit), Bernoulli input spikes at `--rate`.
`--network conv`: the conv preset on 1x28x28 input (12C3-MP2-32C3-MP2-FC10, max pooling as Brian2
stages), weights on the same grid; with `--encoder direct` the input is analog, intensities k/16
repeated every step, instead of Bernoulli spikes. For every target the
cross-check runs `--repeats` times in this process: the first run of a compiled target compiles
(or loads its cache), later runs use the cache. snnTorch is timed on the same input in the same
process on one thread, like Brian2 (float64 forward on CPU, the pass the cross-check compares
against; float32 for scale). The ratio `brian2_seconds / snntorch_seconds` compares times measured
side by side in one process; each batch size B is one case.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from snn.brian2_ref import crosscheck, run_snntorch
from snn.model import build_model
from snn.presets import conv
from snn.spec import Leaky, Linear, ModelSpec


def make_network(n_in: int, hidden: int, n_out: int, steps: int, seed: int):
    """Spec and weights on the 2^-8 grid: hidden weights in [-12, 13]/256, output in [-8, 9]/256 (about
    15% of hidden bins spike at input rate 0.1, like a trained rate-coded network)."""
    spec = ModelSpec(layers=(Linear(n_in, hidden), Leaky(beta=0.9), Linear(hidden, n_out), Leaky(beta=0.9)),
                     input_shape=(n_in,), num_steps=steps, name=f"fc{n_in}-{hidden}-{n_out}")
    g = torch.Generator().manual_seed(seed)
    sd = build_model(spec).state_dict()
    sd["layers.0.weight"] = torch.randint(-12, 14, (hidden, n_in), generator=g).float() / 256
    sd["layers.0.bias"] = torch.zeros(hidden)
    sd["layers.2.weight"] = torch.randint(-8, 10, (n_out, hidden), generator=g).float() / 256
    sd["layers.2.bias"] = torch.zeros(n_out)
    return spec, sd


def make_conv_network(steps: int, encoder: str, seed: int):
    """The conv preset on [1, 28, 28] with every weight and bias a multiple of 2^-8 in [-24, 48]/256."""
    spec = conv((1, 28, 28), 10, num_steps=steps, encoder={"type": encoder, "gain": 1.0})
    g = torch.Generator().manual_seed(seed)
    sd = build_model(spec).state_dict()
    for k, v in sd.items():
        if k.endswith(("weight", "bias")):
            sd[k] = torch.randint(-24, 49, v.shape, generator=g).float() / 256
    return spec, sd


def make_input(spec, samples: int, rate: float, seed: int) -> torch.Tensor:
    """[T, B, *input_shape]: Bernoulli(rate) spikes, or for `direct` intensities k/16 every step."""
    g = torch.Generator().manual_seed(seed + 1)
    shape = (samples, *spec.input_shape)
    if spec.encoder["type"] == "direct":
        x = torch.randint(0, 17, shape, generator=g).float() / 16
        return x.unsqueeze(0).expand(spec.num_steps, *shape).contiguous()
    return (torch.rand(spec.num_steps, *shape, generator=g) < rate).float()


def bench_case(spec, sd, samples: int, rate: float, seed: int, targets: list[str], repeats: int, cache_dir):
    """One batch size: snnTorch forward times and Brian2 cross-check times per target."""
    x = make_input(spec, samples, rate, seed)
    snn64 = [run_snntorch(spec, sd, x, torch.float64)[1] for _ in range(3)]
    snn32 = [run_snntorch(spec, sd, x, torch.float32)[1] for _ in range(3)]
    results = {}
    for target in targets:
        runs = []
        for r in range(repeats):
            print(f"bench: B={samples} {target} run {r + 1}/{repeats}", file=sys.stderr)
            rep = crosscheck((spec, sd), x, target=target, cache_dir=cache_dir)
            d = rep.to_dict(per_neuron=False)
            runs.append({"brian2_seconds": d["brian2_seconds"], "brian2_build_seconds": d["brian2_build_seconds"],
                         "brian2_run_seconds": d["brian2_run_seconds"], "snntorch_seconds": d["snntorch_seconds"],
                         "ratio": d["brian2_seconds"] / d["snntorch_seconds"], "exact": d["exact"],
                         "spike_agreement": d["spike_agreement"]})
        cached = runs[1:] or runs  # the first run of a compiled target compiles or loads its cache
        results[target] = {"runs": runs, "cached_brian2_seconds": min(r["brian2_seconds"] for r in cached),
                           "cached_ratio": min(r["ratio"] for r in cached)}
    layers = rep.to_dict(per_neuron=False)["layers"] if targets else []
    inp = {"input_spike_fraction" if spec.encoder["type"] == "rate" else "input_mean_current": float(x.mean())}
    return {"samples": samples, **inp,
            "spike_fraction_by_layer": [l["spikes_brian2"] / (spec.num_steps * samples * l["neurons"]) for l in layers],
            "snntorch_seconds_float64": min(snn64), "snntorch_seconds_float32": min(snn32), "targets": results}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", default="1,10", help="comma-separated batch sizes B (samples per cross-check)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--hidden", type=int, default=1000)
    p.add_argument("--rate", type=float, default=0.1, help="input spike probability per step")
    p.add_argument("--targets", default="numpy,cython,cpp_standalone")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--network", default="fc", choices=["fc", "conv"])
    p.add_argument("--encoder", default="rate", choices=["rate", "direct"], help="conv network's input")
    args = p.parse_args(argv)
    if args.network == "fc" and args.encoder != "rate":
        p.error("--encoder direct needs --network conv")
    torch.set_num_threads(1)  # Brian2 runs on one core: compare like with like
    spec, sd = (make_network(784, args.hidden, 10, args.steps, args.seed) if args.network == "fc"
                else make_conv_network(args.steps, args.encoder, args.seed))
    targets = [t for t in args.targets.split(",") if t]
    t0 = time.perf_counter()
    cases = [bench_case(spec, sd, int(b), args.rate, args.seed, targets, args.repeats, args.cache_dir)
             for b in args.samples.split(",")]
    import brian2

    cython = {c["samples"]: c["targets"]["cython"]["cached_ratio"] for c in cases if "cython" in c["targets"]}
    out = {
        "benchmark": "crosscheck", "network": spec.name, "encoder": spec.encoder["type"], "num_steps": args.steps,
        "input_rate": args.rate if spec.encoder["type"] == "rate" else None,
        "torch_threads": torch.get_num_threads(), "cases": cases,
        "cython_cached_ratio_by_samples": cython, "target_ratio_max": 10.0,
        "cython_cached_within_target": {b: r <= 10.0 for b, r in cython.items()},
        "seconds": time.perf_counter() - t0,
        "versions": {"brian2": brian2.__version__, "torch": torch.__version__},
    }
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
