"""Continual-learning strategies as hooks into one training loop (`snn.continual.harness`).

Every strategy sees the same calls, in this order, for each task k:
  begin_task(k)                                  before the first batch
  per batch: augment(k, x, y, task_ids)          may add samples (replay)
             penalty()                           added to the loss (EWC)
             before_step(k, activity)            after backward, before the optimizer (projection)
             after_step(k, activity)             after the optimizer (Hebbian subspace learning)
  end_task(k, task)                              after the last batch (memories, Fisher, freezing)
`needs_activity(k)` tells the loop whether to record presynaptic activity of every batch.

Registry: `STRATEGIES` maps a name to its class; `make_strategy(name, **options)`.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field

import torch

from .activity import ACTIVITY_MODES, WeightLayer, representation
from .subspace import (HebbianSubspace, complement_projector, energy_captured, gpm_extend, project_out,
                       spike_quantizer)

STRATEGIES: dict[str, type["Strategy"]] = {}


def _register(cls):
    STRATEGIES[cls.name] = cls
    return cls


class Strategy:
    """Base class: plain sequential fine-tuning does nothing in any hook."""

    name = "base"

    def setup(self, ctx: "TrainContext") -> None:
        self.ctx = ctx

    def needs_activity(self, k: int) -> bool:
        return False

    def begin_task(self, k: int) -> None:
        pass

    def augment(self, k, x, y, task_ids):
        return x, y, task_ids

    def penalty(self) -> torch.Tensor | None:
        return None

    def before_step(self, k: int, activity: dict | None) -> None:
        pass

    def after_step(self, k: int, activity: dict | None) -> None:
        pass

    def end_task(self, k: int, task) -> None:
        pass

    def summary(self) -> dict:
        """Per-strategy facts for the result (subspace sizes, ...)."""
        return {}

    def options(self) -> dict:
        return {}


@dataclass
class TrainContext:
    """What a strategy may use: the model, its weight layers, the stream and helpers of the loop.

    protected: the weight layers projection methods protect (the per-task output heads of a
    multi-head stream are left out: their rows are disjoint, nothing to protect).
    forward_activity(x_flat, task_ids) -> {layer name: [T, R, n]} runs the model on training samples
    (encoded with a fixed seed) and returns their presynaptic activity.
    loss_fn(x_flat, y, task_ids) -> per-sample losses [B] (for the Fisher information).
    """

    model: torch.nn.Module
    layers: list[WeightLayer]
    protected: list[WeightLayer]
    stream: object
    generator: torch.Generator
    forward_activity: object
    loss_fn: object
    device: torch.device
    steps_per_task: list = field(default_factory=list)  # optimizer steps of each task
    history: list = field(default_factory=list)


@_register
class FineTune(Strategy):
    """Lower bound: train each task in turn with no protection."""

    name = "finetune"


@_register
class EWC(Strategy):
    """Elastic Weight Consolidation (Kirkpatrick et al. 2017), online form: the diagonal Fisher
    information of every task is summed, and the anchor is the weights after the latest task.
    penalty = lam / 2 * sum_i F_i (theta_i - theta*_i)^2. The Fisher is the mean squared gradient of
    the per-sample loss over `fisher_samples` training samples of the task (empirical Fisher)."""

    name = "ewc"

    def __init__(self, lam: float = 10.0, fisher_samples: int = 200):
        if not lam >= 0:
            raise ValueError(f"ewc: lam must be >= 0, got {lam}")
        if fisher_samples < 1:
            raise ValueError(f"ewc: fisher_samples must be >= 1, got {fisher_samples}")
        self.lam, self.fisher_samples = float(lam), int(fisher_samples)
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def options(self):
        return {"lam": self.lam, "fisher_samples": self.fisher_samples}

    def penalty(self):
        if not self.fisher:
            return None
        params = dict(self.ctx.model.named_parameters())
        total = 0.0
        for name, f in self.fisher.items():
            p = params[name]
            if p.requires_grad:
                total = total + (f * (p - self.anchor[name]) ** 2).sum()
        return 0.5 * self.lam * total

    def end_task(self, k, task):
        model = self.ctx.model
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        n = min(self.fisher_samples, len(task.train_y))
        idx = torch.randperm(len(task.train_y), generator=self.ctx.generator)[:n]
        fisher = {name: torch.zeros_like(p) for name, p in params.items()}
        was_training = model.training
        model.train()
        for i in idx.tolist():
            x = task.train_x[i:i + 1]
            loss = self.ctx.loss_fn(x, task.train_y[i:i + 1], torch.tensor([k]), sample_ids=[i])[0]
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for (name, _), g in zip(params.items(), grads):
                if g is not None:
                    fisher[name] += g.detach() ** 2
        model.train(was_training)
        for name in fisher:
            fisher[name] /= n
            self.fisher[name] = self.fisher.get(name, 0) + fisher[name]
            self.anchor[name] = params[name].detach().clone()


class _ProjectionStrategy(Strategy, abc.ABC):
    """Shared part of GPM and HLOP: every protected weight gradient G [out, n] becomes
    G - (G Bᵀ) B before the optimizer step, with B the orthonormal basis of the old tasks'
    presynaptic subspace, and the step the optimizer then takes, dW, is projected the same way
    (Adam rescales coordinates, which would move dW out of the free subspace; for SGD it is a no-op
    up to rounding). So W changes only in directions orthogonal to the protected inputs."""

    @abc.abstractmethod
    def _project(self, layer: WeightLayer, G: torch.Tensor) -> torch.Tensor:
        """G [out, n] with the protected input directions removed."""

    @abc.abstractmethod
    def _active(self, layer: WeightLayer) -> bool:
        """Whether `layer` has a protected subspace yet."""

    @torch.no_grad()
    def before_step(self, k, activity):
        self._before = {}
        for layer in self.ctx.protected:
            if not self._active(layer):
                continue
            w = layer.weight(self.ctx.model)
            self._before[layer.name] = w.detach().clone()
            if w.grad is not None:
                G = w.grad.reshape(w.shape[0], -1)
                w.grad.copy_(self._project(layer, G).reshape(w.grad.shape))

    @torch.no_grad()
    def after_step(self, k, activity):
        for layer in self.ctx.protected:
            old = getattr(self, "_before", {}).get(layer.name)
            if old is None:
                continue
            w = layer.weight(self.ctx.model)
            dW = (w - old).reshape(w.shape[0], -1)
            w.copy_(old + self._project(layer, dW).reshape(w.shape))
        self._before = {}


@_register
class GPM(_ProjectionStrategy):
    """Gradient Projection Memory (Saha et al., ICLR 2021): at the end of each task, the presynaptic
    activity of `samples` training samples of every protected layer is added to an SVD memory
    (`gpm_extend`, energy thresholds: `threshold_first` for the first weight layer, `threshold` for
    the others, as the paper's PMNIST setting 0.95 / 0.99); later gradients are projected out of it."""

    name = "gpm"

    def __init__(self, threshold_first: float = 0.95, threshold: float = 0.99, samples: int = 300,
                 activity: str = "rate", trace_beta: float = 0.9):
        for nm, v in (("threshold_first", threshold_first), ("threshold", threshold)):
            if not 0.0 < v <= 1.0:
                raise ValueError(f"gpm: {nm} must be in (0, 1], got {v}")
        if samples < 1:
            raise ValueError(f"gpm: samples must be >= 1, got {samples}")
        if activity not in ACTIVITY_MODES:
            raise ValueError(f"gpm: activity must be one of {ACTIVITY_MODES}, got {activity!r}")
        self.threshold_first, self.threshold, self.samples = threshold_first, threshold, samples
        self.activity, self.trace_beta = activity, trace_beta
        self.bases: dict[str, torch.Tensor] = {}
        self._proj: dict[str, torch.Tensor | None] = {}
        self.sizes: list[dict] = []
        self.energy: list[dict] = []

    def options(self):
        return {"threshold_first": self.threshold_first, "threshold": self.threshold,
                "samples": self.samples, "activity": self.activity}

    def _active(self, layer):
        b = self.bases.get(layer.name)
        return b is not None and b.shape[0] > 0

    def _project(self, layer, G):
        return project_out(G, self.bases[layer.name], self._proj.get(layer.name))

    def begin_task(self, k):
        self._proj = {name: complement_projector(b) for name, b in self.bases.items()}

    @torch.no_grad()
    def end_task(self, k, task):
        n = min(self.samples, len(task.train_y))
        idx = torch.randperm(len(task.train_y), generator=self.ctx.generator)[:n]
        steps = self.ctx.forward_activity(task.train_x[idx], torch.full((n,), k), idx.tolist())
        sizes, energy = {}, {}
        for i, layer in enumerate(self.ctx.protected):
            A = representation(steps[layer.name], self.activity, self.trace_beta)
            thr = self.threshold_first if layer is self.ctx.layers[0] else self.threshold
            self.bases[layer.name] = gpm_extend(self.bases.get(layer.name), A.cpu(), thr).to(self.ctx.device)
            sizes[layer.name] = int(self.bases[layer.name].shape[0])
            energy[layer.name] = energy_captured(self.bases[layer.name].cpu(), A.cpu())
        self.sizes.append(sizes)
        self.energy.append(energy)

    def summary(self):
        return {"basis_sizes": self.sizes, "energy_captured": self.energy,
                "input_dims": {l.name: l.in_dim for l in self.ctx.protected}}


# The paper's PMNIST schedule (3 weight layers of widths 784, 800, 800): subspace neurons added on
# the first task and on each later task; the increment drops by 20 every 3 tasks.
PAPER_FIRST = {"input": 80 / 784, "hidden": 200 / 800, "output": 100 / 800}
PAPER_INCREMENT = {"input": 70 / 784, "hidden": 70 / 800, "output": 70 / 800}
PAPER_DECAY = {"input": 20 / 784, "hidden": 20 / 800, "output": 20 / 800}
PAPER_DECAY_EVERY = 3
PAPER_HEBB_LR = {"input": 1e-3, "hidden": 1e-2, "output": 1e-2}


def layer_role(layer_pos: int, num_layers: int) -> str:
    """'input' for the first weight layer, 'output' for the last, 'hidden' between."""
    if layer_pos == 0:
        return "input"
    return "output" if layer_pos == num_layers - 1 else "hidden"


def paper_subspace_size(n: int, role: str, task: int, scale: float = 1.0) -> int:
    """Neurons added to a layer with n inputs on task `task`, by the paper's schedule scaled from its
    layer widths to n (and by `scale`): first task round(n * first); task k >= 1
    round(n * (increment - decay * (k // 3))), never below 0."""
    if task == 0:
        frac = PAPER_FIRST[role]
    else:
        frac = max(0.0, PAPER_INCREMENT[role] - PAPER_DECAY[role] * (task // PAPER_DECAY_EVERY))
    return max(0, round(n * frac * scale))


@_register
class HLOP(_ProjectionStrategy):
    """Hebbian Learning based Orthogonal Projection (Xiao et al., ICLR 2024).

    Every protected layer gets lateral subspace neurons (`HebbianSubspace`) that learn the principal
    subspace of its presynaptic activity with Oja's subspace rule, `iterations` steps per training
    batch (lr per layer role: 1e-3 for the first layer, 1e-2 for the others, momentum 0.9, clip 10,
    as the reference code). Task 0: the subspace learns, nothing is projected. At each task end the
    neurons are merged and frozen; the next task adds new neurons (`sizes`, default the paper's
    schedule scaled to the layer widths, times `size_scale`: a number, or {role or layer name:
    number}) that learn the residual while gradients
    are projected out of the frozen subspace. `lr_schedule="cosine"` decays each layer's Hebbian
    learning rate from its value to 0 over every task's steps (lets a larger rate converge
    without the fluctuation it keeps at a constant value). `spiking=True` quantizes the lateral outputs y to
    spike counts (`spike_quantizer(spiking_scale, spiking_levels)`), the neuromorphic variant."""

    name = "hlop"

    def __init__(self, iterations: int = 5, lr: dict | float | None = None, momentum: float | None = 0.9,
                 clip: float = 10.0, activity: str = "rate", trace_beta: float = 0.9,
                 sizes: dict | None = None, size_scale: float | dict = 1.0, lr_schedule: str = "constant",
                 spiking: bool = False,
                 spiking_scale: float = 20.0, spiking_levels: float = 40.0):
        if activity not in ACTIVITY_MODES:
            raise ValueError(f"hlop: activity must be one of {ACTIVITY_MODES}, got {activity!r}")
        if iterations < 1:
            raise ValueError(f"hlop: iterations must be >= 1, got {iterations}")
        scales = size_scale.values() if isinstance(size_scale, dict) else [size_scale]
        if not all(isinstance(v, (int, float)) and v > 0 for v in scales):
            raise ValueError(f"hlop: size_scale must be > 0 (a number, or a dict of role/layer name -> "
                             f"number), got {size_scale!r}")
        if lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"hlop: lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
        self.lr_schedule = lr_schedule
        self._step = 0
        self._base_lr: dict[str, float] = {}
        self.iterations, self.momentum, self.clip = iterations, momentum, clip
        self.lr = lr
        self.activity, self.trace_beta = activity, trace_beta
        self.sizes, self.size_scale = sizes or {}, size_scale
        self.spiking, self.spiking_scale, self.spiking_levels = spiking, spiking_scale, spiking_levels
        self.subspaces: dict[str, HebbianSubspace] = {}
        self.size_history: list[dict] = []
        self.energy: list[dict] = []

    def options(self):
        return {"iterations": self.iterations, "lr": self.lr, "momentum": self.momentum, "clip": self.clip,
                "activity": self.activity, "sizes": self.sizes, "size_scale": self.size_scale,
                "lr_schedule": self.lr_schedule,
                "spiking": self.spiking, "spiking_scale": self.spiking_scale,
                "spiking_levels": self.spiking_levels}

    def _role(self, layer):
        return layer_role(self.ctx.layers.index(layer), len(self.ctx.layers))

    def _lr(self, layer):
        if isinstance(self.lr, (int, float)):
            return float(self.lr)
        table = dict(PAPER_HEBB_LR) | dict(self.lr or {})
        return float(table.get(layer.name, table[self._role(layer)]))

    def _size(self, layer, k):
        if layer.name in self.sizes:
            seq = self.sizes[layer.name]
            return int(seq[k]) if k < len(seq) else 0
        scale = self.size_scale
        if isinstance(scale, dict):  # per role or layer name, like lr
            scale = float(scale.get(layer.name, scale.get(self._role(layer), 1.0)))
        return paper_subspace_size(layer.in_dim, self._role(layer), k, scale)

    def setup(self, ctx):
        super().setup(ctx)
        quant = spike_quantizer(self.spiking_scale, self.spiking_levels) if self.spiking else None
        for layer in ctx.protected:
            self._base_lr[layer.name] = self._lr(layer)
            self.subspaces[layer.name] = HebbianSubspace(
                layer.in_dim, self._lr(layer), self.iterations, self.momentum, self.clip, quant,
                device=ctx.device, dtype=layer.weight(ctx.model).dtype)

    def needs_activity(self, k):
        return any(s.frozen < s.size for s in self.subspaces.values())

    def begin_task(self, k):
        self._k, self._step = k, 0
        for layer in self.ctx.protected:
            self.subspaces[layer.name].add_neurons(self._size(layer, k), self.ctx.generator)

    def _active(self, layer):
        return self.subspaces[layer.name].frozen > 0

    def _project(self, layer, G):
        return self.subspaces[layer.name].project(G)

    @torch.no_grad()
    def after_step(self, k, activity):
        super().after_step(k, activity)
        if activity is None:
            return
        decay = 1.0
        if self.lr_schedule == "cosine" and k < len(self.ctx.steps_per_task):
            decay = 0.5 * (1.0 + math.cos(math.pi * min(self._step / max(self.ctx.steps_per_task[k], 1), 1.0)))
        self._step += 1
        for layer in self.ctx.protected:
            sub = self.subspaces[layer.name]
            sub.lr = self._base_lr[layer.name] * decay
            if sub.frozen < sub.size:
                sub.update(representation(activity[layer.name], self.activity, self.trace_beta))

    @torch.no_grad()
    def end_task(self, k, task):
        # diagnostic: how much of this task's activity the learned subspace holds
        n = min(300, len(task.train_y))
        idx = torch.randperm(len(task.train_y), generator=self.ctx.generator)[:n]
        steps = self.ctx.forward_activity(task.train_x[idx], torch.full((n,), k), idx.tolist())
        sizes, energy = {}, {}
        for layer in self.ctx.protected:
            sub = self.subspaces[layer.name]
            sub.freeze()
            sizes[layer.name] = sub.size
            A = representation(steps[layer.name], self.activity, self.trace_beta)
            energy[layer.name] = energy_captured(sub.basis.cpu(), A.cpu())
        self.size_history.append(sizes)
        self.energy.append(energy)

    def summary(self):
        return {"subspace_sizes": self.size_history, "energy_captured": self.energy,
                "input_dims": {l.name: l.in_dim for l in self.ctx.protected}}


@_register
class Replay(Strategy):
    """A small episodic memory: `memory_per_task` random training samples of every finished task;
    each batch of a later task gets `replay_batch` samples drawn from the memory appended."""

    name = "replay"

    def __init__(self, memory_per_task: int = 50, replay_batch: int = 16):
        if memory_per_task < 1 or replay_batch < 1:
            raise ValueError("replay: memory_per_task and replay_batch must be >= 1")
        self.memory_per_task, self.replay_batch = memory_per_task, replay_batch
        self.mem_x, self.mem_y, self.mem_t = [], [], []

    def options(self):
        return {"memory_per_task": self.memory_per_task, "replay_batch": self.replay_batch}

    def augment(self, k, x, y, task_ids):
        if not self.mem_x:
            return x, y, task_ids
        mx, my, mt = torch.cat(self.mem_x), torch.cat(self.mem_y), torch.cat(self.mem_t)
        pick = torch.randint(len(my), (min(self.replay_batch, len(my)),), generator=self.ctx.generator)
        return (torch.cat([x, mx[pick]]), torch.cat([y, my[pick]]), torch.cat([task_ids, mt[pick]]))

    def end_task(self, k, task):
        n = min(self.memory_per_task, len(task.train_y))
        idx = torch.randperm(len(task.train_y), generator=self.ctx.generator)[:n]
        self.mem_x.append(task.train_x[idx])
        self.mem_y.append(task.train_y[idx])
        self.mem_t.append(torch.full((n,), k, dtype=torch.int64))


MULTITASK = "multitask"  # joint training on every task at once: handled by the harness, not a hook set
STRATEGY_NAMES = tuple(STRATEGIES) + (MULTITASK,)
DEFAULT_SET = ("finetune", "ewc", "gpm", "hlop", MULTITASK)


def make_strategy(name: str, **options) -> Strategy:
    """A fresh strategy by registry name, with its options (ValueError for unknown names)."""
    cls = STRATEGIES.get(name)
    if cls is None:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(STRATEGY_NAMES)}")
    return cls(**options)
