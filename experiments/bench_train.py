"""Training throughput on the CPU: spikeloop's model step (fused Leaky and the per-step snnTorch
path it replaced), its Trainer, the snnTorch tutorial loop, Norse and SpikingJelly, side by side.

Every contender trains the same network (784 -> hidden -> 10 by default: Flatten -> Linear -> LIF
-> Linear -> LIF) from the same initial weights on the same samples (Fashion-MNIST), with the same
batch size, T, loss (snnTorch's ce_count_loss, mean) and optimizer (Adam), one epoch per round:

- `model_step`: spikeloop's `SpikingNetwork` (fused multi-step Leaky, snn/fused_lif.py) on input
  spikes encoded beforehand: forward + backward + Adam and nothing else (the "raw model step").
- `model_step_torch_ops`: the same model step with the fused Functions' torch-op loops
  (SPIKELOOP_LIF_KERNEL=0) instead of their C loops (snn/fused_lif_kernel.py, `model_step`'s
  default on the CPU).
- `model_step_snntorch_lif`: the same with `fused_lif = False`, Leaky layers stepped one time step
  at a time with snnTorch's arithmetic (the model step before the fused Leaky).
- `trainer`: `Trainer.fit` for one epoch on the raw samples (it encodes every batch itself,
  on a worker thread overlapped with the step); `trainer_in_line` encodes in line.
- `snntorch_loop`: the snnTorch tutorial loop (`nn.Linear` + `snn.Leaky` stepped per time step,
  `spikegen.rate` input drawn every batch).
- `norse`: Norse's `LIFBoxCell` (LIF without synaptic current, SuperSpike surrogate), linear
  layers batched over time like spikeloop's, on the same pre-encoded spikes.
- `spikingjelly`: SpikingJelly's multi-step `LIFNode` (2.0: its torch implementation), same; skipped
  with a note when the package does not import.
- `gemm_bound`: the step's matrix products alone (forward, weight and input gradients of every
  Linear, same shapes): the ceiling of any LIF speed-up, since every path runs these products.

Contenders alternate within each round (the order rotates round by round) so machine load hits all
alike; ratios are medians over rounds of per-round ratios. CPU time (`process_time`, all threads
of the process) is reported beside wall time: the trainer's encoding thread uses a second core.

    python -m experiments.bench_train --json
    python -m experiments.bench_train --hidden 256 --threads 1 --rounds 3 --json
"""

from __future__ import annotations

import argparse
import importlib.metadata
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

from experiments.args import add_number
from experiments.bench_fused_lif import lif_kernel
from experiments.output import add_json_flag, emit
from snn.data import load_dataset
from snn.encoding import encode_batch
from snn.model import build_model
from snn.presets import fc
from snn.training import TrainConfig, Trainer

BENCH_VERSION = 3
TARGETS = {"fused_vs_snntorch_lif": {256: 1.4, 1000: 1.2}, "trainer_vs_model_step": 0.95}


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


def _copy_linears(model, spec, dst: list[nn.Linear]) -> None:
    lin = [i for i, l in enumerate(spec.layers) if l.type_name == "linear"]
    with torch.no_grad():
        for d, i in zip(dst, lin):
            d.weight.copy_(model.layers[i].weight)
            d.bias.copy_(model.layers[i].bias)


def _fc_dims(model, spec) -> tuple[int, int, int, float]:
    """(inputs, hidden, outputs, beta of the first spiking layer) of our fc preset `model`."""
    w1 = model.layers[[i for i, l in enumerate(spec.layers) if l.type_name == "linear"][0]].weight
    return w1.shape[1], w1.shape[0], spec.num_outputs, [l for l in spec.layers if l.spiking][0].beta


def tutorial_net_like(model, spec) -> TutorialNet:
    """A TutorialNet holding exactly the weights of our fc preset `model`."""
    net = TutorialNet(*_fc_dims(model, spec))
    _copy_linears(model, spec, [net.fc1, net.fc2])
    return net


class NorseNet(nn.Module):
    """784 -> hidden -> 10 with Norse LIFBoxCell layers (decay 1 - dt/tau_mem = beta), linear layers
    applied once over all T*B samples, LIF cells stepped over time."""

    def __init__(self, num_inputs: int, num_hidden: int, num_outputs: int, beta: float):
        super().__init__()
        import norse.torch as norse

        p = norse.LIFBoxParameters(tau_mem_inv=torch.tensor((1 - beta) / 1e-3), v_th=torch.tensor(1.0))
        self.fc1, self.fc2 = nn.Linear(num_inputs, num_hidden), nn.Linear(num_hidden, num_outputs)
        self.lif1, self.lif2 = norse.LIFBoxCell(p, dt=1e-3), norse.LIFBoxCell(p, dt=1e-3)

    def _run(self, lif, z):
        state, out = None, []
        for z_t in z.unbind(0):
            s, state = lif(z_t, state)
            out.append(s)
        return torch.stack(out)

    def forward(self, x):
        """x: [T, B, num_inputs] -> output spikes [T, B, num_outputs]."""
        T, B = x.shape[:2]
        s1 = self._run(self.lif1, self.fc1(x.reshape(T * B, -1)).reshape(T, B, -1))
        return self._run(self.lif2, self.fc2(s1.reshape(T * B, -1)).reshape(T, B, -1))


class SpikingJellyNet(nn.Module):
    """The same network with SpikingJelly multi-step LIFNode layers (torch backend, tau = 1/(1-beta),
    hard reset to 0, ATan surrogate)."""

    def __init__(self, num_inputs: int, num_hidden: int, num_outputs: int, beta: float):
        super().__init__()
        from spikingjelly.activation_based import neuron, surrogate

        # SpikingJelly 2.0's LIFNode has one (torch) implementation; older versions took backend="torch"
        kw = dict(tau=1 / (1 - beta), decay_input=False, v_threshold=1.0, step_mode="m",
                  surrogate_function=surrogate.ATan())
        self.fc1, self.fc2 = nn.Linear(num_inputs, num_hidden), nn.Linear(num_hidden, num_outputs)
        self.lif1, self.lif2 = neuron.LIFNode(**kw), neuron.LIFNode(**kw)

    def forward(self, x):
        from spikingjelly.activation_based import functional

        functional.reset_net(self)
        T, B = x.shape[:2]
        s1 = self.lif1(self.fc1(x.reshape(T * B, -1)).reshape(T, B, -1))
        return self.lif2(self.fc2(s1.reshape(T * B, -1)).reshape(T, B, -1))


def _peer(name: str, init, spec):
    """(network, None) or (None, reason it cannot run)."""
    cls = {"norse": NorseNet, "spikingjelly": SpikingJellyNet}[name]
    try:
        net = cls(*_fc_dims(init, spec))
    except ImportError as e:
        return None, f"{name} not importable ({e}); not installed in this environment"
    _copy_linears(init, spec, [net.fc1, net.fc2])
    return net, None


def _steps(net, batches, lr: float, flat: bool) -> float:
    """Forward + backward + Adam over pre-encoded batches [(spikes [T, B, ...], y)]; last loss."""
    loss_fn = SF.ce_count_loss()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    loss = None
    for spk, y in batches:
        out = net(spk.flatten(2) if flat else spk)
        loss = loss_fn(out if flat else out.spikes, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return loss.item()


def _gemm_steps(init, spec, batches) -> float:
    """Only the matrix products of one model step, on the same shapes: per Linear layer the forward
    addmm over all T*B rows, the weight gradient (and, past the first layer, the input gradient)
    against a fixed stand-in output gradient. Its samples/s bounds what any LIF implementation can
    reach: fused / per-step <= gemm_bound / per-step."""
    lin = [init.layers[i] for i, l in enumerate(spec.layers) if l.type_name == "linear"]
    w = [(l.weight.detach().clone(), l.bias.detach().clone()) for l in lin]
    g = [torch.full((batches[0][0].shape[0] * batches[0][0].shape[1], wt.shape[0]), 1e-3) for wt, _ in w]
    total = 0.0
    for spk, _ in batches:
        h = spk.reshape(spk.shape[0] * spk.shape[1], -1)
        for k, (wt, b) in enumerate(w):
            gk = g[k][:h.shape[0]]
            out = torch.addmm(b, h, wt.t())
            total += float(torch.mm(gk.t(), h)[0, 0])  # weight gradient
            if k:
                torch.mm(gk, wt)  # input gradient
            h = (out > 0).to(out.dtype)
    return total


def train_tutorial(net: TutorialNet, x: torch.Tensor, y: torch.Tensor, batch_size: int, num_steps: int,
                   lr: float, seed: int) -> float:
    """The hand-written loop, one epoch. x: [N, num_inputs] in [0, 1]. Returns the mean loss."""
    torch.manual_seed(seed)
    loss_fn = SF.ce_count_loss()
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
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
    return total / len(x)


def _model(init, spec, fused: bool):
    m = build_model(spec, init.state_dict())
    m.fused_lif = fused
    return m


def _checks(init, spec, x) -> dict:
    """Same input spikes -> identical output spikes: fused vs per-step model, model vs tutorial."""
    spk_in = encode_batch(spec, x, torch.Generator().manual_seed(0))
    with torch.no_grad():
        with lif_kernel(True):
            fused = _model(init, spec, True)(spk_in)
        stepped = _model(init, spec, False)(spk_in)
        tutorial = tutorial_net_like(init, spec)(spk_in.flatten(2))
        with lif_kernel(False):
            torch_ops = _model(init, spec, True)(spk_in)
    return {"fused_equals_snntorch_lif": bool(torch.equal(fused.spikes, stepped.spikes)
                                              and torch.equal(fused.mem, stepped.mem)),
            "fused_torch_ops_equals_snntorch_lif": bool(torch.equal(torch_ops.spikes, stepped.spikes)
                                                        and torch.equal(torch_ops.mem, stepped.mem)),
            "model_equals_snntorch_loop": bool(torch.equal(fused.spikes, tutorial))}


def bench_shape(data, hidden: int, num_steps: int, batch_size: int, train: int, rounds: int, lr: float,
                seed: int, contenders: list[str], progress: bool) -> dict:
    """Interleaved rounds of every contender on one network shape, at the current thread count."""
    x, y = data.train_x[:train], data.train_y[:train]
    spec = fc(data.input_shape, data.num_classes, hidden=hidden, num_steps=num_steps)
    cfg = TrainConfig(epochs=1, batch_size=batch_size, lr=lr, loss="ce_count", seed=seed, val_fraction=0.0,
                      lr_schedule=None, device="cpu", progress=False)
    torch.manual_seed(seed)
    init = build_model(spec)  # the Trainer builds the same initial weights from cfg.seed
    x_flat = x.reshape(len(x), -1)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=gen)
    batches = [(encode_batch(spec, x[order[b:b + batch_size]], gen), y[order[b:b + batch_size]])
               for b in range(0, len(x), batch_size)]
    notes = {}
    for name in ("norse", "spikingjelly"):
        if name in contenders:
            net, why = _peer(name, init, spec)
            if net is None:
                notes[name] = why

    def run(side: str) -> float:
        if side == "model_step":
            with lif_kernel(True):
                return _steps(_model(init, spec, True), batches, lr, flat=False)
        if side == "model_step_torch_ops":
            with lif_kernel(False):
                return _steps(_model(init, spec, True), batches, lr, flat=False)
        if side == "model_step_snntorch_lif":
            return _steps(_model(init, spec, False), batches, lr, flat=False)
        if side in ("trainer", "trainer_in_line"):
            t = Trainer(spec, x, y, cfg)
            t.prefetch = side == "trainer"
            return t.fit().history[-1]["train_loss"]
        if side == "gemm_bound":
            return _gemm_steps(init, spec, batches)
        if side == "snntorch_loop":
            return train_tutorial(tutorial_net_like(init, spec), x_flat, y, batch_size, num_steps, lr, seed)
        net, _ = _peer(side, init, spec)  # fresh copy of the initial weights every round
        return _steps(net, batches, lr, flat=True)

    sides = [c for c in contenders if c not in notes]
    for side in sides:  # warm-up, not timed: lazy initialisation in torch and the allocator
        run(side)
    per_round = []
    for r in tqdm(range(rounds), desc=f"hidden {hidden}, {torch.get_num_threads()} thread(s)", file=sys.stderr,
                  disable=not progress, leave=False):
        rec = {}
        for side in sides[r % len(sides):] + sides[:r % len(sides)]:
            w0, c0 = time.perf_counter(), time.process_time()
            loss = run(side)
            rec[side] = {"samples_per_s": len(x) / (time.perf_counter() - w0),
                         "samples_per_cpu_s": len(x) / (time.process_time() - c0), "loss": loss}
        per_round.append(rec)

    def ratio(a: str, b: str, key: str = "samples_per_s"):
        if a not in sides or b not in sides:
            return None
        return statistics.median(r[a][key] / r[b][key] for r in per_round)

    out = {
        "hidden": hidden, "network": f"{spec.input_shape} -> {hidden} -> {data.num_classes}",
        "threads": torch.get_num_threads(), "train_samples": len(x), "batches": len(batches),
        **_checks(init, spec, x[:64]),
        "samples_per_s": {s: statistics.median(r[s]["samples_per_s"] for r in per_round) for s in sides},
        "samples_per_cpu_s": {s: statistics.median(r[s]["samples_per_cpu_s"] for r in per_round) for s in sides},
        "ratios": {
            "fused_vs_snntorch_lif": ratio("model_step", "model_step_snntorch_lif"),
            "fused_torch_ops_vs_snntorch_lif": ratio("model_step_torch_ops", "model_step_snntorch_lif"),
            "fused_kernel_vs_torch_ops": ratio("model_step", "model_step_torch_ops"),
            # the ceiling of fused_vs_snntorch_lif: a step that were nothing but its GEMMs
            "gemm_bound_vs_snntorch_lif": ratio("gemm_bound", "model_step_snntorch_lif"),
            "model_step_vs_gemm_bound": ratio("model_step", "gemm_bound"),
            "trainer_vs_model_step": ratio("trainer", "model_step"),
            "trainer_vs_model_step_cpu_time": ratio("trainer", "model_step", "samples_per_cpu_s"),
            "trainer_in_line_vs_model_step": ratio("trainer_in_line", "model_step"),
            "trainer_vs_snntorch_loop": ratio("trainer", "snntorch_loop"),
            "model_step_vs_snntorch_loop": ratio("model_step", "snntorch_loop"),
            "model_step_vs_norse": ratio("model_step", "norse"),
            "model_step_vs_spikingjelly": ratio("model_step", "spikingjelly"),
        },
        "skipped": notes,
        "per_round": per_round,
    }
    return out


CONTENDERS = ("model_step", "model_step_torch_ops", "model_step_snntorch_lif", "gemm_bound", "trainer", "trainer_in_line",
              "snntorch_loop", "norse",
              "spikingjelly")


def run_benchmark(dataset: str = "fashion-mnist", hidden=(256, 1000), threads=(1, 2), num_steps: int = 25,
                  batch_size: int = 128, train: int = 1280, rounds: int = 3, lr: float = 5e-4, seed: int = 0,
                  contenders=CONTENDERS, progress: bool = True) -> dict:
    data = load_dataset(dataset)
    saved = torch.get_num_threads()
    shapes = []
    try:
        for n in threads:
            torch.set_num_threads(n)
            for h in hidden:
                shapes.append(bench_shape(data, h, num_steps, batch_size, train, rounds, lr, seed, list(contenders),
                                          progress))
    finally:
        torch.set_num_threads(saved)
    versions = {"torch": torch.__version__, "snntorch": snn.__version__, "python": platform.python_version()}
    for name in ("norse", "spikingjelly"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    targets = []
    for s in shapes:
        if s["threads"] == 1 and s["hidden"] in TARGETS["fused_vs_snntorch_lif"] and \
                s["ratios"]["fused_vs_snntorch_lif"] is not None:
            need = TARGETS["fused_vs_snntorch_lif"][s["hidden"]]
            targets.append({"what": f"fused model step / per-step model step, hidden {s['hidden']}, 1 thread",
                            "ratio": s["ratios"]["fused_vs_snntorch_lif"], "required": need,
                            "met": s["ratios"]["fused_vs_snntorch_lif"] >= need})
        if s["ratios"]["trainer_vs_model_step"] is not None:
            r = s["ratios"]["trainer_vs_model_step"]
            targets.append({"what": f"Trainer.fit / model step, hidden {s['hidden']}, {s['threads']} thread(s)",
                            "ratio": r, "required": TARGETS["trainer_vs_model_step"],
                            "met": r >= TARGETS["trainer_vs_model_step"]})
    return {
        "benchmark": "train_throughput", "version": BENCH_VERSION, "dataset": dataset, "num_steps": num_steps,
        "batch_size": batch_size, "loss": "ce_count", "optimizer": "Adam", "lr": lr, "rounds": rounds,
        "device": "cpu",
        "ratio_definition": "median over rounds of per-round wall-clock samples/s ratios, contenders interleaved",
        "targets": targets, "shapes": shapes, "versions": versions,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.bench_train", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--hidden", default="256,1000", help="comma list of hidden sizes")
    p.add_argument("--threads", default="1,2", help="comma list of torch CPU thread counts")
    add_number(p, "--num-steps", default=25)
    add_number(p, "--batch-size", default=128)
    add_number(p, "--max-train", default=1280, help="training samples per round (one epoch)")
    add_number(p, "--rounds", default=3)
    p.add_argument("--contenders", default=",".join(CONTENDERS), help="comma list of " + ", ".join(CONTENDERS))
    add_json_flag(p)
    a = p.parse_args(argv)
    try:
        hidden = [int(h) for h in a.hidden.split(",")]
        threads = [int(t) for t in a.threads.split(",")]
    except ValueError:
        p.error(f"--hidden and --threads take comma lists of integers, got {a.hidden!r} and {a.threads!r}")
    if min(hidden) < 1 or min(threads) < 1:
        p.error("--hidden and --threads values must be >= 1")
    contenders = a.contenders.split(",")
    unknown = sorted(set(contenders) - set(CONTENDERS))
    if unknown:
        p.error(f"unknown contenders {unknown}; choose from {', '.join(CONTENDERS)}")
    res = run_benchmark(a.dataset, hidden, threads, a.num_steps, a.batch_size, a.max_train, a.rounds,
                        contenders=contenders, progress=sys.stderr.isatty())
    emit(res, a.json, title="training throughput (CPU)")
    ok = all(s["fused_equals_snntorch_lif"] and s["fused_torch_ops_equals_snntorch_lif"]
             and s["model_equals_snntorch_loop"] for s in res["shapes"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
