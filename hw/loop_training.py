"""In-the-loop training through any `Device`, and the alternatives it is compared with.

In-the-loop (Cramer et al., PNAS 2022; BrainScaleS-2's hxtorch): per batch the current float
weights are compiled for the device's profile and loaded, the batch runs on the device with every
layer's spikes recorded (`Device.run(x, probe=True).layer_spikes`), the loss is taken on the
device's output spikes, and the gradients come from the float model fed, layer by layer, with the
device's recorded spikes (straight-through: forward values from the device, surrogate gradients
from the host model). `host_forward` is that host pass; with no device spikes it is the plain
float forward (used for noise-aware training with `FloatMismatch`, a random float chip per batch).
`calibrate` is the no-retraining alternative: per-neuron gains estimated from probed firing rates.
Per batch the program comes from `hw.compiler.Recompiler` (compile_model's program, cheaper) and
each host layer fed with device spikes is one `_DeviceLayer` node (the step-by-step loop's values
and gradients, bit for bit).

Every function takes explicit generators/seeds. Shapes are time first: spikes [T, B, N].
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import snntorch.functional as snn_fn
import torch
from tqdm.auto import tqdm

import encoders
from snn.encoding import encode_batch
from snn.model import SpikingNetwork, build_model
from snn.spec import Leaky, ModelSpec
from snn.training import EVAL_SEED, LOSSES, loss_normalizer, predict

from . import sim_kernel
from .compiler import Recompiler, Stage, compile_model, plan_stages
from .deploy import run_dataset
from .device import Device, DeviceError
from .profiles import get_profile


# ------------------------------------------------------------------------------ the host pass

@dataclass(frozen=True)
class FloatMismatch:
    """A float chip drawn from the mismatch statistics (not a chip's realisation): per neuron
    θ·(1 + σ_θ z), leak (1 − β)·(1 + σ_λ z), gain (1 + σ_g z) on W·s, and membrane noise of
    std σ_n·θ per step. The float counterpart of `hw.nonideal.ChipModel`'s σ."""

    sigma_threshold: float = 0.0
    sigma_leak: float = 0.0
    sigma_gain: float = 0.0
    sigma_noise: float = 0.0

    def __post_init__(self):
        for name in ("sigma_threshold", "sigma_leak", "sigma_gain", "sigma_noise"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 1:
                raise ValueError(f"FloatMismatch.{name} must be a number in [0, 1], got {v!r}")

    @classmethod
    def of(cls, chip) -> "FloatMismatch":
        """The statistics of a `hw.nonideal.ChipModel` (its σ; the chip id is not used)."""
        return cls(chip.sigma_threshold, chip.sigma_leak, chip.sigma_gain, chip.sigma_noise)


def _loss_sum(name: str, spikes: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if name == "ce_rate":
        return snn_fn.ce_rate_loss(reduction="sum")(spikes, y)
    if name == "ce_count":
        return snn_fn.ce_count_loss(reduction="sum")(spikes, y)
    return snn_fn.mse_count_loss(correct_rate=0.8, incorrect_rate=0.2, reduction="sum")(spikes, y)


def stages_for(spec: ModelSpec, profile: str) -> list[Stage]:
    """The device layers of `spec` on `profile`; in-the-loop training needs leaky neurons."""
    stages = plan_stages(spec, get_profile(profile))
    if not encoders.is_spike_encoder(spec.encoder["type"]):
        raise ValueError(f"in-the-loop training takes spike-encoded models; {spec.name!r} uses the analog "
                         f"encoder {spec.encoder['type']!r} (deploy it with `spikeloop deploy` instead)")
    for st in stages:
        if st.kind != "dense":
            raise ValueError(f"in-the-loop training supports dense (Linear) layers; device layer of spec "
                             f"layer {st.neuron} is a {st.kind} record (deploy conv models with `spikeloop deploy`)")
        if not isinstance(spec.layers[st.neuron], Leaky):
            raise ValueError(f"in-the-loop training supports Leaky layers; layer {st.neuron} is "
                             f"{spec.layers[st.neuron].type_name!r}")
    return stages


class _DeviceLayer(torch.autograd.Function):
    """One Leaky layer of the host pass fed with the device's spikes, its whole time loop in one
    autograd node: the forward returns the device's spikes, the backward the gradient autograd
    gives the step-by-step loop of `host_forward` (the same float operations in the same order,
    so the same bits): with the reset fixed to the device's spikes, the membrane
    mem_t = β·mem_{t−1} + z_t − r_{t−1}·θ (subtract; zero: β·((1 − r_{t−1})·mem_{t−1}) + z_t) is
    computed without a graph, the surrogate's derivative is taken once on all steps, and
    grad_mem_t = grad_x_t + β·grad_mem_{t+1} (·(1 − r_t) for zero) runs backwards in time.
    Only for β and θ that take no gradient (the step-by-step loop is used otherwise)."""

    use_kernel = True  # the loops in C (hw.sim_kernel.host_leaky_*, the same float32 operations) where built

    @staticmethod
    def forward(ctx, z, dev, beta, thr, subtract, spike_grad):
        T, B, n = z.shape
        ctx.kernel = _DeviceLayer.use_kernel and sim_kernel.host_leaky_ok(z, beta, thr)
        if ctx.kernel:
            mems = sim_kernel.host_leaky_mem(z, dev, beta, thr, subtract)
        else:
            mem = torch.zeros(B, n, dtype=z.dtype)
            reset = torch.zeros(B, n, dtype=z.dtype)
            mems = torch.empty_like(z)
            for t in range(T):
                mem = beta * mem + z[t] - reset * thr if subtract else beta * ((1 - reset) * mem) + z[t]
                mems[t] = mem
                reset = dev[t]
        ctx.save_for_backward(mems, dev, beta, thr)
        ctx.subtract, ctx.spike_grad = subtract, spike_grad
        return dev.clone()

    @staticmethod
    def backward(ctx, g):
        mems, dev, beta, thr = ctx.saved_tensors
        with torch.enable_grad():
            xs = (mems - thr).requires_grad_(True)
            (gx,) = torch.autograd.grad(ctx.spike_grad(xs).to(mems.dtype), xs, g)
        if ctx.kernel:
            return sim_kernel.host_leaky_grad(gx, dev, beta, ctx.subtract), None, None, None, None, None
        gz = torch.empty_like(gx)
        carry = None
        for t in range(gx.shape[0] - 1, -1, -1):
            gm = gx[t] if carry is None else gx[t] + carry
            gz[t] = gm
            if t:
                carry = gm * beta if ctx.subtract else (gm * beta) * (1 - dev[t - 1])
        return gz, None, None, None, None, None


def host_forward(model: SpikingNetwork, stages: list[Stage], x: torch.Tensor,
                 device_spikes: dict[int, torch.Tensor] | None = None, mismatch: FloatMismatch | None = None,
                 generator: torch.Generator | None = None, fused: bool = True) -> list[torch.Tensor]:
    """The float model layer by layer over device layers (`stages`). x: [T, B, N_in] float input
    spikes. Returns every device layer's spikes [T, B, N_k] (float, differentiable).

    device_spikes {k: [T, B, N_k]}: the device's recorded spikes. Then layer k's input is layer
    k−1's output with the device's values and the host's gradient (straight-through), its reset
    signal is the device's previous-step spike, and the returned spikes carry the device's values.
    mismatch + generator: a random float chip for this call (noise-aware training).
    fused: with device spikes, run each layer's time loop as one `_DeviceLayer` node (the same
    values and gradients, bit for bit; False: step by step, the reference)."""
    T, B = x.shape[:2]
    h, outs = x, []
    for k, st in enumerate(stages):
        lin = model.layers[st.linear] if st.linear is not None else None
        neuron = model.layers[st.neuron]
        n = st.num_neurons
        z = lin(h.reshape(T * B, -1)).reshape(T, B, n) if lin is not None else h
        beta = neuron.beta.clamp(0, 1)
        thr = neuron.threshold
        noise_std = None
        if mismatch is not None:
            def draw():
                return torch.randn(n, generator=generator)
            if mismatch.sigma_gain:
                bias = lin.bias if lin is not None and lin.bias is not None else 0.0
                z = (z - bias) * (1 + mismatch.sigma_gain * draw()) + bias
            if mismatch.sigma_threshold:
                thr = thr * (1 + mismatch.sigma_threshold * draw())
            if mismatch.sigma_leak:
                beta = (1 - (1 - beta) * (1 + mismatch.sigma_leak * draw())).clamp(0, 1)
            if mismatch.sigma_noise:
                noise_std = mismatch.sigma_noise * neuron.threshold.detach()
        dev = device_spikes[k].to(z.dtype) if device_spikes is not None else None
        subtract = neuron.reset_mechanism_val == 0
        if fused and dev is not None and mismatch is None and not beta.requires_grad \
                and not thr.requires_grad:
            h = _DeviceLayer.apply(z, dev, beta, thr, bool(subtract), neuron.spike_grad)
            outs.append(h)
            continue
        mem = torch.zeros(B, n, dtype=z.dtype)
        reset = torch.zeros(B, n, dtype=z.dtype)
        spk_t = []
        for t, z_t in enumerate(z.unbind(0)):
            mem = beta * mem + z_t - reset * thr if subtract else beta * ((1 - reset) * mem) + z_t
            if noise_std is not None:
                mem = mem + noise_std * torch.randn(B, n, generator=generator)
            spk = neuron.spike_grad(mem - thr).to(z.dtype)
            if dev is not None:
                spk = spk + (dev[t] - spk).detach()  # the device's value, the host's gradient
            reset = spk.detach()
            spk_t.append(spk)
        h = torch.stack(spk_t)
        outs.append(h)
    return outs


def flat_inputs(spec: ModelSpec, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Intensities x [B, *input_shape] -> encoded input spikes [T, B, N_in] uint8."""
    s = encode_batch(spec, x.reshape(x.shape[0], *spec.input_shape), generator)
    return s.reshape(s.shape[0], s.shape[1], -1).to(torch.uint8)


def device_accuracy(device: Device, spec: ModelSpec, state_dict: dict, x: torch.Tensor, y: torch.Tensor,
                    seed: int = EVAL_SEED, batch_size: int = 256) -> float:
    """Accuracy of `state_dict` compiled for the device's profile and run on `device` (loads it)."""
    device.load(compile_model(spec, state_dict, device.info().profile))
    run = run_dataset(device, spec, x, batch_size=batch_size, seed=seed)
    return float((run.predictions == y.cpu()).float().mean())


def _link_bytes(device: Device) -> tuple[int, int] | None:
    """(bytes on the wire, payload bytes) both directions so far, for a device with a link."""
    stats = getattr(device, "link_stats", None)
    if stats is None:
        return None
    s = stats()
    return (int(s.get("wire_tx", 0) + s.get("wire_rx", 0)), int(s.get("payload_tx", 0) + s.get("payload_rx", 0)))


# -------------------------------------------------------------------------- in-the-loop trainer

@dataclass(frozen=True)
class LoopConfig:
    """Hyper-parameters of in-the-loop (and noise-aware) training; lr in Adam units."""

    epochs: int = 5
    batch_size: int = 64
    lr: float = 2e-3
    loss: str = "ce_count"
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")


@dataclass
class LoopResult:
    model: SpikingNetwork
    history: list[dict]                 # one record per epoch (see InTheLoopTrainer.fit)
    initial: dict                       # device (and float) test accuracy before training
    extra: dict = field(default_factory=dict)


class InTheLoopTrainer:
    """Trains `spec` through `device` (opened by the caller). init_state: starting weights (a
    trained float model, typically), else a fresh model seeded by config.seed.

    `fit()` returns a `LoopResult`; each epoch's record holds train loss and device accuracy,
    device test accuracy (`test_x` given), seconds (epoch, inside Device.run, host compute) and
    link bytes for a serial device."""

    def __init__(self, spec: ModelSpec, device: Device, train_x: torch.Tensor, train_y: torch.Tensor,
                 config: LoopConfig, init_state: dict | None = None, test_x=None, test_y=None,
                 mismatch: FloatMismatch | None = None):
        self.spec, self.device, self.config = spec, device, config
        self.train_x, self.train_y, self.test_x, self.test_y = train_x, train_y, test_x, test_y
        self.profile = device.info().profile if device is not None else "mcu"
        self.stages = stages_for(spec, self.profile)
        self.recompile = Recompiler(spec, self.profile)  # compile_model's programs, per batch cheaper
        self.mismatch = mismatch
        torch.manual_seed(config.seed)
        self.model = build_model(spec, init_state)

    def _test_accuracy(self) -> float | None:
        if self.test_x is None or self.device is None:
            return None
        return device_accuracy(self.device, self.spec, self.model.state_dict(), self.test_x, self.test_y)

    def fit(self, on_epoch=None) -> LoopResult:
        """Train for config.epochs. With device=None and a `mismatch`, this is noise-aware float
        training (a random float chip per batch) and the device columns are absent.
        on_epoch(epoch, model): called after every epoch (e.g. to evaluate on other devices); a
        dict it returns is merged into the epoch's record."""
        cfg, spec, model = self.config, self.spec, self.model
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        norm = loss_normalizer(cfg.loss, spec.num_outputs)
        initial = {"test_device_accuracy": self._test_accuracy()}
        n = len(self.train_x)
        history = []
        for epoch in range(cfg.epochs):
            model.train()
            order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch))
            nb = math.ceil(n / cfg.batch_size)
            bar = tqdm(range(nb), desc=f"in-the-loop epoch {epoch + 1}/{cfg.epochs}", leave=False,
                       disable=not cfg.progress)
            loss_total = correct = seen = 0.0
            dev_s = host_s = compile_s = 0.0
            bytes0 = _link_bytes(self.device) if self.device is not None else None
            t0 = time.perf_counter()
            noise_gen = torch.Generator().manual_seed(cfg.seed * 31 + epoch)
            for b in bar:
                idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                gen = torch.Generator().manual_seed((cfg.seed * 1_000_003 + epoch) * 100_003 + b)
                spk_in = flat_inputs(spec, self.train_x[idx], gen)
                y = self.train_y[idx]
                rec = None
                if self.device is not None:
                    tc = time.perf_counter()
                    prog = self.recompile(model.state_dict())
                    td = time.perf_counter()
                    self.device.load(prog)
                    res = self.device.run(spk_in, probe=True)
                    compile_s += td - tc
                    dev_s += time.perf_counter() - td
                    if not res.layer_spikes or len(res.layer_spikes) != len(self.stages):
                        raise DeviceError(f"device {self.device.uri or type(self.device).__name__} returned no "
                                          f"per-layer spikes for run(probe=True); in-the-loop training needs them")
                    rec = res.layer_spikes
                th = time.perf_counter()
                outs = host_forward(model, self.stages, spk_in.to(torch.float32), rec,
                                    self.mismatch if self.device is None else None, noise_gen)
                out = outs[-1]
                loss_sum = _loss_sum(cfg.loss, out, y).sum()
                opt.zero_grad(set_to_none=True)
                (loss_sum / (len(idx) * norm)).backward()
                opt.step()
                host_s += time.perf_counter() - th
                with torch.no_grad():
                    loss_total += float(loss_sum) / norm
                    correct += int((predict(out.sum(0)) == y).sum())
                    seen += len(idx)
                if b % 10 == 0 or b == nb - 1:
                    bar.set_postfix(loss=f"{loss_total / max(seen, 1):.3f}", acc=f"{correct / max(seen, 1):.3f}")
            epoch_s = time.perf_counter() - t0
            if not math.isfinite(loss_total):
                raise RuntimeError(f"in-the-loop training diverged in epoch {epoch + 1} (loss {loss_total}); "
                                   f"try a lower learning rate, now {cfg.lr}")
            rec_ep = {"epoch": epoch + 1, "train_loss": loss_total / max(seen, 1),
                      "train_accuracy": correct / max(seen, 1), "epoch_seconds": epoch_s,
                      "device_seconds": dev_s, "compile_seconds": compile_s, "host_seconds": host_s}
            if bytes0 is not None:
                wire, payload = (a - b for a, b in zip(_link_bytes(self.device), bytes0))
                rec_ep["link_bytes"] = wire
                rec_ep["link_efficiency"] = payload / wire if wire else float("nan")
            te = time.perf_counter()
            acc = self._test_accuracy()
            if acc is not None:
                rec_ep["test_device_accuracy"] = acc
                rec_ep["eval_seconds"] = time.perf_counter() - te
            if on_epoch is not None:
                rec_ep.update(on_epoch(epoch + 1, model) or {})
            history.append(rec_ep)
            if cfg.progress:
                tqdm.write(str({k: round(v, 4) if isinstance(v, float) else v for k, v in rec_ep.items()}))
        return LoopResult(model, history, initial)


# ------------------------------------------------------------------------------- calibration

@torch.no_grad()
def calibrate(device: Device, spec: ModelSpec, state_dict: dict, x: torch.Tensor, rounds: int = 4,
              seed: int = 0, step: float = 0.5, max_factor: float = 2.0, rate_floor: float = 0.01
              ) -> tuple[dict, list[dict]]:
    """Per-chip calibration without retraining: estimate each neuron's effective gain by probing
    and correct the program. Per round, the calibration samples x [N, *input_shape] (no labels)
    run on the device with probe; every device layer k's firing rate is compared with the float
    model's, fed with the device's own layer k−1 spikes; each neuron's weight row and bias are
    multiplied by ((r_float + ε) / (r_device + ε))^step, clamped to [1/max_factor, max_factor]
    (rates in spikes per step; ε = rate_floor damps neurons that fire too rarely to measure).

    Returns (corrected state dict, one record per round: mean |log rate ratio| per layer)."""
    profile = device.info().profile
    stages = stages_for(spec, profile)
    model = build_model(spec, state_dict)  # the reference: the float model as trained, never changed
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(seed)
    spk = flat_inputs(spec, x, gen)
    eps = rate_floor
    report = []
    for r in range(rounds + 1):
        device.load(compile_model(spec, sd, profile))
        res = device.run(spk, probe=True)
        if not res.layer_spikes:
            raise DeviceError("calibration needs per-layer spikes from run(probe=True)")
        # the float reference of layer k from the device's input to it (layer k-1's device spikes)
        rates_dev, rates_ref = [], []
        for k, st in enumerate(stages):
            inp = spk.to(torch.float32) if k == 0 else res.layer_spikes[k - 1].to(torch.float32)
            ref = host_forward(model, [st], inp)[0]
            rates_dev.append(res.layer_spikes[k].to(torch.float32).mean((0, 1)))
            rates_ref.append(ref.mean((0, 1)))
        logs = [float((torch.log(rr + eps) - torch.log(rd + eps)).abs().mean()) for rr, rd in
                zip(rates_ref, rates_dev)]
        report.append({"round": r, "mean_abs_log_rate_ratio": logs})
        if r == rounds:
            break
        for k, st in enumerate(stages):
            f = ((rates_ref[k] + eps) / (rates_dev[k] + eps)) ** step
            f = f.clamp(1 / max_factor, max_factor).to(torch.float32)
            if st.linear is None:
                continue
            sd[f"layers.{st.linear}.weight"] = sd[f"layers.{st.linear}.weight"] * f[:, None]
            if f"layers.{st.linear}.bias" in sd:
                sd[f"layers.{st.linear}.bias"] = sd[f"layers.{st.linear}.bias"] * f
    return sd, report
