"""BPTT training with surrogate gradients, single process or under `torchrun` (DistributedDataParallel).

Inputs are encoded per batch with a generator seeded from (seed, epoch, batch), so a run is
reproducible on CPU; under DDP every rank encodes the same global batch and keeps its shard, so
2 ranks give the same updates as 1 process on the same global batch.

A run fails at its start, not after training, when it could not finish: the initial weights must
be finite, the model and a batch must fit the device's memory (`snn.model.require_memory`) and the
checkpoint must be writable (its bytes are built once before the first epoch). A run that diverges
(non-finite epoch loss or weights) stops with `DivergedError` instead of saving NaN weights.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import snntorch.functional as snn_fn
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from .atomic import write_text_atomic
from .checkpoint import checkpoint_bytes, save_checkpoint
from .data import validation_split
from .encoding import encode_batch, encode_samples
from .finite import non_finite_report, require_finite
from .model import SpikingNetwork, build_model, default_device, require_memory
from .spec import ModelSpec

LOSSES = ("ce_rate", "ce_count", "mse_count")
EVAL_SEED = 1234  # the encoding seed for validation/test sets (sample-indexed, see encode_samples)


class DivergedError(RuntimeError):
    """Training produced a non-finite loss or non-finite weights; no checkpoint is written."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters. lr in Adam units; batch_size is the global batch (split across DDP ranks)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    loss: str = "ce_rate"
    seed: int = 0
    val_fraction: float = 0.1
    patience: int | None = None  # early stop after this many epochs without val improvement
    lr_schedule: str | None = "cosine"  # "cosine" or None
    weight_decay: float = 0.0
    eval_seed: int = EVAL_SEED
    device: str | None = None  # None: CUDA when present, else CPU
    progress: bool = True

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.lr_schedule not in (None, "cosine"):
            raise ValueError(f"lr_schedule must be 'cosine' or None, got {self.lr_schedule!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass
class TrainResult:
    model: SpikingNetwork
    history: list[dict]
    best_epoch: int
    val_accuracy: float | None
    test_accuracy: float | None
    train_samples_per_s: float
    train_seconds: float
    checkpoint: Path | None = None
    extra: dict = field(default_factory=dict)


def _loss_sum(name: str, spikes: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed (not averaged) snnTorch loss over the batch; mse is also summed over classes."""
    if name == "ce_rate":
        return snn_fn.ce_rate_loss(reduction="sum")(spikes, y)
    if name == "ce_count":
        return snn_fn.ce_count_loss(reduction="sum")(spikes, y)
    return snn_fn.mse_count_loss(correct_rate=0.8, incorrect_rate=0.2, reduction="sum")(spikes, y)


def loss_normalizer(name: str, num_classes: int) -> int:
    """snnTorch's 'mean' reduction = sum / (batch * this)."""
    return num_classes if name == "mse_count" else 1


def predict(counts: torch.Tensor) -> torch.Tensor:
    """Class = argmax of output spike counts [B, C]; ties go to the lowest index."""
    return counts.argmax(dim=1)


@torch.no_grad()
def evaluate(model: SpikingNetwork, x: torch.Tensor, y: torch.Tensor, seed: int = EVAL_SEED,
             batch_size: int = 256, sample_ids=None) -> dict:
    """Accuracy of `model` on intensities x [N, *input_shape] with labels y [N].

    Returns {"accuracy", "predictions" [N], "counts" [N, C]}; inputs are encoded by sample index.
    Refuses weights holding NaN/Inf (NonFiniteError) and a batch that cannot fit the device's
    memory (ResourceLimitError naming the layer) before encoding anything."""
    model.eval()
    dev = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    require_finite(model.state_dict(), "evaluate")
    if len(x):
        b = min(batch_size, len(x))
        require_memory(model.spec, f"evaluating batches of {b} samples", dev, dtype, batch_size=b)
    ids = list(range(len(x))) if sample_ids is None else list(sample_ids)
    counts = []
    for s in range(0, len(x), batch_size):
        # encode on the CPU, then move: CUDA generators draw other numbers than CPU ones, and
        # every device must see the same input spikes for a sample
        xb = x[s:s + batch_size].to("cpu", dtype)
        spk = encode_samples(model.spec, xb, ids[s:s + batch_size], seed).to(dev)
        counts.append(model(spk).spikes.sum(0).cpu())
    counts = torch.cat(counts) if counts else torch.zeros(0, model.spec.num_outputs)
    pred = predict(counts)
    acc = (pred == y.cpu()).float().mean().item() if len(y) else float("nan")
    return {"accuracy": acc, "predictions": pred, "counts": counts}


def _dist_info():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed_from_env(device: str | None = None) -> bool:
    """Start torch.distributed when launched by torchrun (WORLD_SIZE > 1): NCCL on GPUs, gloo on
    CPU (also when `device` asks for the CPU on a machine with GPUs). Returns whether it started
    a process group (the caller then destroys it)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        on_gpu = torch.cuda.is_available() and not (device or "").startswith("cpu")
        dist.init_process_group("nccl" if on_gpu else "gloo")
        if on_gpu:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        return True
    return False


def _encoded_batches(spec: ModelSpec, x: torch.Tensor, y: torch.Tensor, order: torch.Tensor, batch_size: int,
                     seed: int, epoch: int, prefetch: bool = True):
    """Yield (idx, input spikes [T, b, *input_shape] on the CPU, labels [b]) for the batches of one
    epoch, batch b encoded with a generator seeded from (seed, epoch, b): the global batch, the
    same on every rank.

    prefetch: encode batch b+1 on a worker thread while the caller trains on batch b. Encoding is
    about as long as a training step and releases the GIL, so it runs on another core; each batch
    has its own seeded generator, so the spikes are the same as encoding in line."""
    nb = math.ceil(len(x) / batch_size)

    def encode(b):
        idx = order[b * batch_size:(b + 1) * batch_size]
        gen = torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 100_003 + b)
        return idx, encode_batch(spec, x[idx], gen), y[idx]

    if not prefetch or nb < 2:
        for b in range(nb):
            yield encode(b)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="spikeloop-encode") as pool:
        pending = pool.submit(encode, 0)
        for b in range(nb):
            batch = pending.result()
            if b + 1 < nb:
                pending = pool.submit(encode, b + 1)
            yield batch


class Trainer:
    """Trains a `ModelSpec` on a dataset split; writes metrics.jsonl and model.safetensors to out_dir.

    `prefetch` (attribute, default True): encode the next batch on a worker thread during the
    current step (same spikes, same results; False encodes in line)."""

    prefetch = True

    def __init__(self, spec: ModelSpec, train_x, train_y, config: TrainConfig, out_dir: str | Path | None = None,
                 test_x=None, test_y=None, extra: dict | None = None):
        self.spec, self.config, self.extra = spec, config, dict(extra or {})
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.rank, self.world = _dist_info()
        self.device = torch.device(config.device) if config.device else default_device()
        if self.world > 1 and self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per rank
        if config.val_fraction > 0:
            self.train_x, self.train_y, self.val_x, self.val_y = validation_split(
                train_x, train_y, config.val_fraction, seed=config.seed)
        else:
            self.train_x, self.train_y, self.val_x, self.val_y = train_x, train_y, None, None
        self.test_x, self.test_y = test_x, test_y
        self.num_classes = spec.num_outputs

    def fit(self) -> TrainResult:
        cfg, spec = self.config, self.spec
        require_memory(spec, f"training with batches of {cfg.batch_size} samples", self.device,
                       batch_size=math.ceil(min(cfg.batch_size, max(len(self.train_x), 1)) / self.world),
                       training=True)
        torch.manual_seed(cfg.seed)
        model = build_model(spec, device=self.device)
        require_finite(model.state_dict(), "training start")
        if self.out_dir is not None and self.rank == 0:
            # the checkpoint written at the end must not fail after hours of training: build its
            # bytes once now (shared tensors, dtypes, JSON-able extra), then drop them
            checkpoint_bytes(spec, model, {"config": asdict(cfg)}, self.extra)
        net = model
        if self.world > 1:
            net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                **_no_buffer_sync())
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs) if cfg.lr_schedule else None
        norm = loss_normalizer(cfg.loss, self.num_classes)
        n = len(self.train_x)
        history, best_val, best_epoch, best_state, bad_epochs = [], -1.0, 0, None, 0
        train_time, samples_seen = 0.0, 0
        for epoch in range(cfg.epochs):
            model.train()
            order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch))
            nb = math.ceil(n / cfg.batch_size)
            bar = tqdm(total=nb, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                       disable=not cfg.progress or self.rank != 0)
            # [summed loss, correct, samples] of this rank's shards, kept on the device (no per-batch sync)
            stats = torch.zeros(3, dtype=torch.float64, device=self.device)
            t0 = time.perf_counter()
            batches = _encoded_batches(spec, self.train_x, self.train_y, order, cfg.batch_size, cfg.seed, epoch,
                                       prefetch=self.prefetch)
            for b, (idx, spk_in, y) in enumerate(batches):
                lo, hi = _shard(len(idx), self.rank, self.world)
                spk_in, y = spk_in[:, lo:hi].to(self.device), y[lo:hi].to(self.device)
                out = net(spk_in)
                loss_sum = _loss_sum(cfg.loss, out.spikes, y).sum()
                # DDP averages gradients over ranks, so scale by world: the update is that of the
                # global batch's mean loss (snnTorch's reduction="mean")
                loss = loss_sum * (self.world / (len(idx) * norm))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    correct = (predict(out.spikes.sum(0)) == y).sum()
                    stats[0] += loss_sum.detach().double() / norm
                    stats[1] += correct
                    stats[2] += hi - lo
                samples_seen += len(idx)
                if not bar.disable and (b % 20 == 0 or b == nb - 1):  # a device sync: only when shown
                    s_loss, s_correct, s_n = stats.tolist()
                    bar.set_postfix(loss=f"{s_loss / max(s_n, 1):.3f}", acc=f"{s_correct / max(s_n, 1):.3f}")
                bar.update(1)
            bar.close()
            train_time += time.perf_counter() - t0
            if sched:
                sched.step()
            if self.world > 1:
                dist.all_reduce(stats)  # whole-epoch totals over all ranks
            s_loss, s_correct, s_n = stats.tolist()
            self._check_diverged(epoch + 1, s_loss, model)
            rec = {"epoch": epoch + 1, "train_loss": s_loss / max(s_n, 1),
                   "train_accuracy": s_correct / max(s_n, 1), "lr": opt.param_groups[0]["lr"],
                   "epoch_seconds": time.perf_counter() - t0}
            if self.val_x is not None:
                rec["val_accuracy"] = evaluate(model, self.val_x, self.val_y, cfg.eval_seed)["accuracy"]
                # Ties go to the later epoch (more training at the same validation score); patience
                # counts epochs without a strict improvement.
                bad_epochs = 0 if rec["val_accuracy"] > best_val else bad_epochs + 1
                if rec["val_accuracy"] >= best_val:
                    best_val, best_epoch = rec["val_accuracy"], epoch + 1
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            history.append(rec)
            if self.rank == 0:
                if cfg.progress:
                    tqdm.write(json.dumps(rec), file=sys.stderr)  # stdout is for the command's --json result
                self._write_metrics(history)
            if cfg.patience is not None and bad_epochs >= cfg.patience:
                break
        if best_state is not None:
            model.load_state_dict(best_state)
        else:
            best_epoch = len(history)
        test_acc = None
        if self.test_x is not None:
            test_acc = evaluate(model, self.test_x, self.test_y, cfg.eval_seed)["accuracy"]
        result = TrainResult(model=model, history=history, best_epoch=best_epoch,
                             val_accuracy=best_val if self.val_x is not None else None,
                             test_accuracy=test_acc, train_samples_per_s=samples_seen / max(train_time, 1e-9),
                             train_seconds=train_time)
        if self.out_dir is not None and self.rank == 0:
            metrics = {"test_accuracy": test_acc, "val_accuracy": result.val_accuracy,
                       "best_epoch": best_epoch, "epochs": len(history),
                       "train_samples_per_s": result.train_samples_per_s, "history": history,
                       "config": asdict(cfg)}
            result.checkpoint = save_checkpoint(self.out_dir / "model.safetensors", spec, model, metrics,
                                                self.extra)
        return result

    def _check_diverged(self, epoch: int, loss_sum: float, model: SpikingNetwork) -> None:
        """Stop a diverged run (every rank sees the same reduced loss and the same weights)."""
        if not math.isfinite(loss_sum):
            raise DivergedError(f"training diverged in epoch {epoch}: the epoch's training loss is {loss_sum} "
                                f"(try a lower learning rate, now {self.config.lr}); no checkpoint written")
        bad = non_finite_report(model.state_dict())
        if bad:
            raise DivergedError(f"training diverged in epoch {epoch}: non-finite weights: {'; '.join(bad[:5])} "
                                f"(try a lower learning rate, now {self.config.lr}); no checkpoint written")

    def _write_metrics(self, history):
        if self.out_dir is not None:
            write_text_atomic(self.out_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))


def _no_buffer_sync() -> dict:
    """DDP options that stop the per-forward buffer broadcast: snnTorch neurons keep their last
    state in buffers whose shape follows the per-rank batch, and there is nothing in them to
    synchronise (torch >= 2.13 names the option forward_sync_buffers)."""
    params = inspect.signature(torch.nn.parallel.DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}


def _shard(n: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous [lo, hi) of a batch of n for this rank (sizes differ by at most 1)."""
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)
