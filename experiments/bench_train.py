"""Training throughput of spikeloop's Trainer against a plain snnTorch tutorial-style loop.

Both train the same network (Flatten -> Linear -> Leaky -> Linear -> Leaky, atan surrogate), from
the same initial weights, on the same data, batch size, T, loss (snnTorch's ce_count_loss, mean)
and optimizer (Adam), with rate-coded inputs drawn every batch. They run in one process,
alternating round by round so machine load hits both alike; the result is the ratio of the
median throughputs (samples per second), which must be >= 1.0.

The reference loop is what the snnTorch tutorials write by hand: an nn.Module holding
`nn.Linear` and `snn.Leaky` layers stepped with a Python for-loop over time, `spikegen.rate` for
the input, `SF.ce_count_loss()`, `torch.optim.Adam`. Batches are drawn by slicing a shuffled
index tensor (no DataLoader, whose per-sample collation would only slow the reference down).

    python -m experiments.bench_train --json
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import time

import snntorch as snn
import snntorch.functional as SF
import torch
from snntorch import spikegen
from torch import nn
from tqdm.auto import tqdm

from experiments.output import add_json_flag, emit
from snn.data import load_dataset
from snn.encoding import encode_batch
from snn.model import build_model
from snn.presets import fc
from snn.training import TrainConfig, Trainer

BENCH_VERSION = 1


class TutorialNet(nn.Module):
    """snnTorch tutorial 5's network, stepped by hand over time."""

    def __init__(self, num_inputs: int, num_hidden: int, num_outputs: int, beta: float):
        super().__init__()
        self.fc1 = nn.Linear(num_inputs, num_hidden)
        self.lif1 = snn.Leaky(beta=beta)
        self.fc2 = nn.Linear(num_hidden, num_outputs)
        self.lif2 = snn.Leaky(beta=beta)

    def forward(self, x):
        """x: [T, B, num_inputs] -> output spikes [T, B, num_outputs]."""
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        spk2_rec = []
        for step in range(x.shape[0]):
            cur1 = self.fc1(x[step])
            spk1, mem1 = self.lif1(cur1, mem1)
            cur2 = self.fc2(spk1)
            spk2, mem2 = self.lif2(cur2, mem2)
            spk2_rec.append(spk2)
        return torch.stack(spk2_rec)


def tutorial_net_like(model, spec) -> TutorialNet:
    """A TutorialNet holding exactly the weights of our fc preset `model`."""
    lin = [i for i, l in enumerate(spec.layers) if l.type_name == "linear"]
    w1 = model.layers[lin[0]].weight
    net = TutorialNet(w1.shape[1], w1.shape[0], spec.num_outputs, spec.layers[lin[0] + 1].beta)
    with torch.no_grad():
        for dst, i in ((net.fc1, lin[0]), (net.fc2, lin[1])):
            dst.weight.copy_(model.layers[i].weight)
            dst.bias.copy_(model.layers[i].bias)
    return net


def train_tutorial(net: TutorialNet, x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int,
                   num_steps: int, lr: float, seed: int) -> tuple[float, float]:
    """The hand-written loop. x: [N, num_inputs] in [0, 1]. Returns (seconds, last epoch mean loss)."""
    torch.manual_seed(seed)
    loss_fn = SF.ce_count_loss()
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    t0 = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        total = 0.0
        for b in range(0, len(x), batch_size):
            idx = order[b:b + batch_size]
            data = spikegen.rate(x[idx], num_steps=num_steps)
            spk_rec = net(data)
            loss_val = loss_fn(spk_rec, y[idx])
            optimizer.zero_grad()
            loss_val.backward()
            optimizer.step()
            total += loss_val.item() * len(idx)
    return time.perf_counter() - t0, total / len(x)


def same_outputs(model, net, spec, x) -> bool:
    """Both networks give identical output spikes and membranes on identical input spikes."""
    spk_in = encode_batch(spec, x, torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(spk_in).spikes
        theirs = net(spk_in.flatten(2))
    return bool(torch.equal(ours, theirs))


def run_benchmark(dataset: str = "digits", hidden: int = 256, num_steps: int = 25, batch_size: int = 128,
                  epochs: int = 2, rounds: int = 5, lr: float = 5e-3, max_train: int | None = None,
                  threads: int | None = 1, seed: int = 0) -> dict:
    if threads:
        torch.set_num_threads(threads)
    data = load_dataset(dataset)
    x, y = data.train_x, data.train_y
    if max_train:
        x, y = x[:max_train], y[:max_train]
    spec = fc(data.input_shape, data.num_classes, hidden=hidden, num_steps=num_steps)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, loss="ce_count", seed=seed, val_fraction=0.0,
                      lr_schedule=None, device="cpu", progress=False)
    torch.manual_seed(seed)
    init = build_model(spec)  # the Trainer builds the same initial weights from cfg.seed
    x_flat = x.reshape(len(x), -1)
    check = same_outputs(init, tutorial_net_like(init, spec), spec, x[:32])

    # warm-up (not timed): first calls pay for lazy initialisation in torch and the allocator
    Trainer(spec, x[:batch_size], y[:batch_size], dataclasses.replace(cfg, epochs=1)).fit()
    train_tutorial(tutorial_net_like(init, spec), x_flat[:batch_size], y[:batch_size], 1, batch_size,
                   num_steps, lr, seed)

    rounds_out = []
    n = len(x) * epochs
    for r in tqdm(range(rounds), desc="rounds", file=sys.stderr, disable=not sys.stderr.isatty()):
        rec = {}
        # alternate which side goes first so a load change mid-round is shared out evenly
        for side in (("ours", "snntorch_loop") if r % 2 == 0 else ("snntorch_loop", "ours")):
            w0, c0 = time.perf_counter(), time.process_time()
            if side == "ours":
                res = Trainer(spec, x, y, cfg).fit()
                loss = res.history[-1]["train_loss"]
            else:
                _, loss = train_tutorial(tutorial_net_like(init, spec), x_flat, y, epochs, batch_size, num_steps,
                                         lr, seed)
            rec[side] = {"samples_per_s": n / (time.perf_counter() - w0),
                         "samples_per_cpu_s": n / (time.process_time() - c0), "last_epoch_loss": loss}
        rec["ratio"] = rec["ours"]["samples_per_s"] / rec["snntorch_loop"]["samples_per_s"]
        rec["ratio_cpu_time"] = rec["ours"]["samples_per_cpu_s"] / rec["snntorch_loop"]["samples_per_cpu_s"]
        rounds_out.append(rec)
    med = lambda key, side=None: statistics.median(  # noqa: E731
        r[side][key] if side else r[key] for r in rounds_out)
    ratio = med("ratio")
    return {
        "benchmark": "train_throughput", "version": BENCH_VERSION,
        "dataset": dataset, "train_samples": len(x), "network": f"fc {spec.input_shape}->{hidden}->{data.num_classes}",
        "num_steps": num_steps, "batch_size": batch_size, "epochs_per_round": epochs, "rounds": rounds,
        "loss": "ce_count", "optimizer": "Adam", "lr": lr, "threads": torch.get_num_threads(), "device": "cpu",
        "same_outputs_on_same_input": check,
        "ours_samples_per_s": med("samples_per_s", "ours"),
        "snntorch_loop_samples_per_s": med("samples_per_s", "snntorch_loop"),
        "ratio": ratio, "ratio_cpu_time": med("ratio_cpu_time"), "ratio_required": 1.0,
        "meets_target": ratio >= 1.0,
        "ratio_definition": "median over rounds of ours/snntorch_loop wall-clock samples/s, measured back to back",
        "per_round": rounds_out,
        "torch": torch.__version__, "snntorch": snn.__version__, "python": platform.python_version(),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.bench_train", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--num-steps", type=int, default=25)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2, help="epochs per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--max-train", type=int, default=None)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    add_json_flag(p)
    args = p.parse_args(argv)
    res = run_benchmark(args.dataset, args.hidden, args.num_steps, args.batch_size, args.epochs, args.rounds,
                        max_train=args.max_train, threads=args.threads or None)
    emit(res, args.json, title="training throughput: spikeloop Trainer vs plain snnTorch loop")
    return 0 if res["same_outputs_on_same_input"] else 1


if __name__ == "__main__":
    sys.exit(main())
