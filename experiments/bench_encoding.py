"""Bernoulli rate encoding on the CPU: spikeloop's path (uniforms compared with the broadcast p)
against torch.bernoulli on the time-repeated p (what snnTorch's spikegen.rate does), same bits,
interleaved rounds, medians, at 1 and 2 torch threads. Prints one JSON object with --json.

    python -m experiments.bench_encoding --json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from tqdm import tqdm

from encoders import bernoulli
from experiments.output import add_json_flag, emit


def _reference(x: torch.Tensor, num_steps: int, gen: torch.Generator) -> torch.Tensor:
    return torch.bernoulli(x.unsqueeze(0).expand(num_steps, *x.shape).contiguous(), generator=gen)


def run(batch: int, inputs: int, num_steps: int, rounds: int, threads: list[int]) -> dict:
    x = torch.rand(batch, inputs, generator=torch.Generator().manual_seed(0))
    same = torch.equal(bernoulli(x, num_steps, generator=torch.Generator().manual_seed(1)),
                       _reference(x, num_steps, torch.Generator().manual_seed(1)))
    out = {"bench": "encoding", "batch": batch, "inputs": inputs, "num_steps": num_steps,
           "rounds": rounds, "identical_spikes": same, "threads": {}}
    saved = torch.get_num_threads()
    try:
        for n in threads:
            torch.set_num_threads(n)
            gen = torch.Generator().manual_seed(2)
            t_ref, t_new = [], []
            for _ in tqdm(range(rounds), desc=f"{n} thread(s)", file=sys.stderr, leave=False):
                t0 = time.perf_counter()
                _reference(x, num_steps, gen)
                t1 = time.perf_counter()
                bernoulli(x, num_steps, generator=gen)
                t2 = time.perf_counter()
                t_ref.append(t1 - t0)
                t_new.append(t2 - t1)
            ref_ms, new_ms = 1e3 * statistics.median(t_ref), 1e3 * statistics.median(t_new)
            out["threads"][str(n)] = {"torch_bernoulli_ms": round(ref_ms, 2), "spikeloop_ms": round(new_ms, 2),
                                      "speedup": round(ref_ms / new_ms, 2)}
    finally:
        torch.set_num_threads(saved)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.bench_encoding", description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--inputs", type=int, default=784)
    p.add_argument("--num-steps", type=int, default=25)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", default="1,2", help="comma list of torch thread counts")
    add_json_flag(p)
    a = p.parse_args(argv)
    res = run(a.batch, a.inputs, a.num_steps, a.rounds, [int(t) for t in a.threads.split(",")])
    emit(res, a.json, title="Bernoulli encoding")
    return 0 if res["identical_spikes"] else 1


if __name__ == "__main__":
    sys.exit(main())
