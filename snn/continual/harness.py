"""The continual-learning loop: train a spiking network on a task stream with one strategy, measure
the accuracy matrix; and joint multitask training on the same stream (the upper bound).

Reproducibility and fairness: every strategy run starts from the same initial weights
(`init_state`), sees each task's samples in the same order (permutation seeded by
(seed, task, epoch)) with the same input spikes (generator seeded by (seed, task, epoch, batch)),
and is scored on the same test spikes (`encode_test_sets`, per-sample seeded by EVAL_SEED).

Training: Adam (default, as spikeloop's trainer; a fresh optimizer per task) or SGD, cross-entropy on
the output spike counts restricted to the task's head. Projection strategies project both the
gradient and the optimizer's resulting weight update (Adam's per-coordinate scaling would otherwise
move the update out of the free subspace; for plain SGD the two are the same). With `freeze_after_first`, after task 0 only the weight
matrices of the weight layers keep learning (biases, learnable beta/threshold are frozen), as the
HLOP reference code does for every method.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..encoding import encode_batch, encode_samples
from ..model import SpikingNetwork, build_model, default_device
from ..spec import ModelSpec
from ..training import EVAL_SEED
from .activity import ActivityRecorder, weight_layers
from .metrics import summarize
from .strategies import MULTITASK, Strategy, TrainContext, make_strategy
from .streams import TaskStream

RESULT_FORMAT_VERSION = 1
OPTIMIZERS = ("adam", "sgd")
_TEST_ID_STRIDE = 1_000_000  # test sample ids: task * stride + index, so tasks get distinct spikes
_MAX_CACHED_TEST_BYTES = 2 << 30


@dataclass(frozen=True)
class ContinualConfig:
    """Hyper-parameters of the loop, shared by every strategy of a comparison.

    epochs: passes over each task's training set (multitask: over the union of all tasks).
    optimizer: "adam" or "sgd" (lr; momentum for SGD only). batch_size: samples per step. seed: data order, input spikes, initial
    weights (through `initial_state`) and strategy randomness. device: None = CUDA when present.
    """

    epochs: int = 1
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    seed: int = 0
    freeze_after_first: bool = True
    device: str | None = None
    eval_batch_size: int = 500
    progress: bool = True

    def __post_init__(self):
        for name in ("epochs", "batch_size", "eval_batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ContinualConfig.{name} must be a positive integer, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"ContinualConfig.lr must be a positive number, got {self.lr!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"ContinualConfig.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"ContinualConfig.momentum must be in [0, 1), got {self.momentum!r}")


@dataclass
class StrategyResult:
    """accuracy_matrix: [K][K] with None where not measured; acc/bwt/forgetting as fractions;
    seconds: wall time of the whole run; epoch_seconds: wall-clock training time of each epoch (no
    evaluation); epoch_cpu_seconds: the process CPU time of each epoch (the fairer measure on a
    shared CPU; meaningless for asynchronous GPU work)."""

    strategy: str
    accuracy_matrix: list[list[float | None]]
    acc: float
    bwt: float | None
    forgetting: float | None
    seconds: float
    train_seconds: float
    epoch_seconds: list[float]
    epoch_cpu_seconds: list[float] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def mean_epoch_seconds(self) -> float:
        return sum(self.epoch_seconds) / len(self.epoch_seconds)

    @property
    def mean_epoch_cpu_seconds(self) -> float:
        return sum(self.epoch_cpu_seconds) / max(len(self.epoch_cpu_seconds), 1)

    def to_dict(self) -> dict:
        """Plain data for JSON (the trained model in extra is left out)."""
        d = asdict(self)
        d["extra"] = {k: v for k, v in self.extra.items() if k != "model"}
        d["mean_epoch_seconds"] = self.mean_epoch_seconds
        d["mean_epoch_cpu_seconds"] = self.mean_epoch_cpu_seconds
        return d


def initial_state(spec: ModelSpec, seed: int) -> dict:
    """The initial weights every strategy starts from (torch's default init under `seed`)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(spec)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def check_spec(spec: ModelSpec, stream: TaskStream) -> None:
    """ValueError unless the spec's input and output sizes fit the stream."""
    if math.prod(spec.input_shape) != math.prod(stream.input_shape):
        raise ValueError(f"model spec input {spec.input_shape} does not fit stream {stream.name} "
                         f"inputs {stream.input_shape}")
    if spec.num_outputs != stream.num_outputs:
        raise ValueError(f"model spec has {spec.num_outputs} outputs, stream {stream.name} needs "
                         f"{stream.num_outputs}")


def encode_test_sets(spec: ModelSpec, stream: TaskStream, seed: int = EVAL_SEED) -> list[torch.Tensor] | None:
    """Input spikes of every task's test set, [T, N, *input_shape] (bool when every value is 0 or 1),
    per-sample seeded (the same for every strategy and independent of batching). None when they
    would take over 2 GiB (then `evaluate_task` encodes on the fly, with the same result)."""
    if sum(spec.num_steps * t.test_x.numel() for t in stream.tasks) > _MAX_CACHED_TEST_BYTES:
        return None  # too big even at one byte per value
    out, used = [], 0
    for k, task in enumerate(stream.tasks):
        x = task.test_x.reshape(len(task.test_x), *spec.input_shape)
        ids = [k * _TEST_ID_STRIDE + i for i in range(len(x))]
        s = encode_samples(spec, x, ids, seed)
        # 0/1 spikes are cached as bool (4x smaller); counts, signed spikes and currents as they are
        s = s.to(torch.bool) if bool(((s == 0) | (s == 1)).all()) else s
        used += s.numel() * s.element_size()
        if used > _MAX_CACHED_TEST_BYTES:
            return None
        out.append(s)
    return out


@torch.no_grad()
def evaluate_task(model: SpikingNetwork, stream: TaskStream, k: int, test_spikes=None,
                  batch_size: int = 500, seed: int = EVAL_SEED) -> float:
    """Accuracy on task k's test set, predictions restricted to its head (argmax of output spike
    counts over the head, ties to the lowest index)."""
    model.eval()
    spec, task = model.spec, stream.tasks[k]
    dev = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    mask = stream.head_mask(k, dev)
    correct = 0
    for s in range(0, len(task.test_y), batch_size):
        if test_spikes is not None:
            spk = test_spikes[k][:, s:s + batch_size].to(dev, dtype)
        else:
            x = task.test_x[s:s + batch_size].reshape(-1, *spec.input_shape).to(dev, dtype)
            spk = encode_samples(spec, x, [k * _TEST_ID_STRIDE + i for i in range(s, s + len(x))], seed)
        counts = model(spk).spikes.sum(0)
        pred = counts.masked_fill(~mask, -1.0).argmax(1)
        correct += int((pred.cpu() == task.test_y[s:s + batch_size]).sum())
    return correct / len(task.test_y)


def _masked_ce(counts, y, masks, reduction="mean"):
    return F.cross_entropy(counts.masked_fill(~masks, float("-inf")), y, reduction=reduction)


def _gen(*keys) -> torch.Generator:
    seed = 0
    for k in keys:
        seed = (seed * 1_000_003 + int(k)) % (2 ** 63 - 1)
    return torch.Generator().manual_seed(seed)


class _Loop:
    """State shared by the sequential and the multitask runs: model, optimizer factory, timing."""

    def __init__(self, spec, stream, config, init_state):
        check_spec(spec, stream)
        self.spec, self.stream, self.cfg = spec, stream, config
        self.device = torch.device(config.device) if config.device else default_device()
        self.model = build_model(spec, state_dict=init_state, device=self.device)
        self.layers = weight_layers(self.model)
        if not self.layers:
            raise ValueError("the model spec has no linear/conv2d layer to train")
        self.head_masks = torch.stack([stream.head_mask(k) for k in range(len(stream))]).to(self.device)
        self.epoch_seconds: list[float] = []
        self.epoch_cpu_seconds: list[float] = []

    def start_epoch(self):
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def end_epoch(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.epoch_seconds.append(time.perf_counter() - self._t0)
        self.epoch_cpu_seconds.append(time.process_time() - self._c0)

    def batch_spikes(self, x_flat, gen):
        x = x_flat.reshape(len(x_flat), *self.spec.input_shape)
        return encode_batch(self.spec, x, gen).to(self.device)

    def optimizer(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.cfg.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.cfg.lr)
        return torch.optim.SGD(params, lr=self.cfg.lr, momentum=self.cfg.momentum)

    def freeze_non_weights(self):
        keep = {id(layer.weight(self.model)) for layer in self.layers}
        for p in self.model.parameters():
            if id(p) not in keep:
                p.requires_grad_(False)


def run_sequential(spec: ModelSpec, stream: TaskStream, strategy: Strategy | str, config: ContinualConfig,
                   init_state: dict | None = None, test_spikes=None, strategy_options: dict | None = None,
                   progress_desc: str | None = None, progress_position: int | None = None,
                   on_task_end=None) -> StrategyResult:
    """Learn the tasks of `stream` one after another with `strategy`; evaluate every seen task after
    each task. Returns the accuracy matrix (entries j > i are None), ACC, BWT and timings.

    progress_position: tqdm line of the progress bar (one per worker of a parallel study).
    on_task_end(k, model) -> JSON-able value: called after task k's evaluation (e.g. a device
    evaluation); must not change the model. Its values land in result.extra["task_end"]."""
    t_start = time.perf_counter()
    if isinstance(strategy, str):
        strategy = make_strategy(strategy, **(strategy_options or {}))
    cfg = config
    loop = _Loop(spec, stream, cfg, init_state if init_state is not None else initial_state(spec, cfg.seed))
    model, K = loop.model, len(stream)
    strat_gen = _gen(cfg.seed, 17)
    protected = [l for l in loop.layers
                 if not (stream.multi_head and l is loop.layers[-1] and l.name.count(".") == 1)]

    def forward_activity(x_flat, task_ids, sample_ids):
        x = x_flat.reshape(len(x_flat), *spec.input_shape).to(loop.device)
        chunks = []
        with torch.no_grad(), ActivityRecorder(model, loop.layers, spec.num_steps) as rec:
            for s in range(0, len(x), cfg.eval_batch_size):
                rec.clear()
                model(encode_samples(spec, x[s:s + cfg.eval_batch_size], sample_ids[s:s + cfg.eval_batch_size],
                                     cfg.seed + 1))
                chunks.append(rec.steps())
        return {name: torch.cat([c[name] for c in chunks], 1) for name in chunks[0]}

    def loss_fn(x_flat, y, task_ids, sample_ids):
        x = x_flat.reshape(len(x_flat), *spec.input_shape).to(loop.device)
        out = model(encode_samples(spec, x, sample_ids, cfg.seed + 2))
        return _masked_ce(out.spikes.sum(0), y.to(loop.device), loop.head_masks[task_ids.to(loop.device)],
                          reduction="none")

    ctx = TrainContext(model=model, layers=loop.layers, protected=protected, stream=stream,
                       generator=strat_gen, forward_activity=forward_activity, loss_fn=loss_fn,
                       device=loop.device,
                       steps_per_task=[math.ceil(len(t.train_y) / cfg.batch_size) * cfg.epochs
                                       for t in stream.tasks])
    strategy.setup(ctx)
    R: list[list[float | None]] = [[None] * K for _ in range(K)]
    total_batches = sum(math.ceil(len(t.train_y) / cfg.batch_size) for t in stream.tasks) * cfg.epochs
    bar = tqdm(total=total_batches, desc=progress_desc or strategy.name, leave=False,
               disable=not cfg.progress, position=progress_position)
    task_end = []
    for k, task in enumerate(stream.tasks):
        strategy.begin_task(k)
        opt = loop.optimizer()
        n = len(task.train_y)
        for epoch in range(cfg.epochs):
            model.train()
            order = torch.randperm(n, generator=_gen(cfg.seed, k, epoch))
            loop.start_epoch()
            for b, s in enumerate(range(0, n, cfg.batch_size)):
                idx = order[s:s + cfg.batch_size]
                x, y = task.train_x[idx], task.train_y[idx]
                tids = torch.full((len(idx),), k, dtype=torch.int64)
                x, y, tids = strategy.augment(k, x, y, tids)
                spk = loop.batch_spikes(x, _gen(cfg.seed, k, epoch, b))
                record = strategy.needs_activity(k)
                if record:
                    with ActivityRecorder(model, protected, spec.num_steps) as rec:
                        out = model(spk)
                    activity = rec.steps()
                else:
                    out, activity = model(spk), None
                loss = _masked_ce(out.spikes.sum(0), y.to(loop.device), loop.head_masks[tids.to(loop.device)])
                pen = strategy.penalty()
                if pen is not None:
                    loss = loss + pen
                opt.zero_grad(set_to_none=True)
                loss.backward()
                strategy.before_step(k, activity)
                opt.step()
                strategy.after_step(k, activity)
                bar.update(1)
            loop.end_epoch()
        strategy.end_task(k, task)
        if k == 0 and cfg.freeze_after_first:
            loop.freeze_non_weights()
        for j in range(k + 1):
            R[k][j] = evaluate_task(model, stream, j, test_spikes, cfg.eval_batch_size)
        bar.set_postfix(task=k, acc=f"{sum(R[k][:k + 1]) / (k + 1):.3f}")
        if on_task_end is not None:
            task_end.append(on_task_end(k, model))
    bar.close()
    extra = strategy.summary() | {"model": model} | ({"task_end": task_end} if on_task_end is not None else {})
    return _result(strategy.name, R, t_start, loop, strategy.options(), extra)


def run_multitask(spec: ModelSpec, stream: TaskStream, config: ContinualConfig, init_state: dict | None = None,
                  test_spikes=None, progress_desc: str | None = None, progress_position: int | None = None,
                  on_task_end=None) -> StrategyResult:
    """Upper bound: one network trained jointly on the union of every task's training set for
    `config.epochs` epochs (the same number of sample presentations as the sequential runs), each
    sample scored on its own task's head. Only the last row of the accuracy matrix exists; BWT is None.
    progress_position, on_task_end: as `run_sequential` (called once, with k = K - 1)."""
    t_start = time.perf_counter()
    cfg = config
    loop = _Loop(spec, stream, cfg, init_state if init_state is not None else initial_state(spec, cfg.seed))
    model, K = loop.model, len(stream)
    X = torch.cat([t.train_x for t in stream.tasks])
    Y = torch.cat([t.train_y for t in stream.tasks])
    TID = torch.cat([torch.full((len(t.train_y),), k, dtype=torch.int64) for k, t in enumerate(stream.tasks)])
    n = len(Y)
    opt = loop.optimizer()
    bar = tqdm(total=math.ceil(n / cfg.batch_size) * cfg.epochs, desc=progress_desc or MULTITASK,
               leave=False, disable=not cfg.progress, position=progress_position)
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(n, generator=_gen(cfg.seed, 10_007, epoch))
        loop.start_epoch()
        for b, s in enumerate(range(0, n, cfg.batch_size)):
            idx = order[s:s + cfg.batch_size]
            spk = loop.batch_spikes(X[idx], _gen(cfg.seed, 10_007, epoch, b))
            out = model(spk)
            loss = _masked_ce(out.spikes.sum(0), Y[idx].to(loop.device), loop.head_masks[TID[idx].to(loop.device)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update(1)
        loop.end_epoch()
    bar.close()
    R: list[list[float | None]] = [[None] * K for _ in range(K)]
    R[K - 1] = [evaluate_task(model, stream, j, test_spikes, cfg.eval_batch_size) for j in range(K)]
    extra = {"model": model} | ({"task_end": [on_task_end(K - 1, model)]} if on_task_end is not None else {})
    return _result(MULTITASK, R, t_start, loop, {}, extra)


def _result(name, R, t_start, loop, options, extra) -> StrategyResult:
    s = summarize(R)
    return StrategyResult(strategy=name, accuracy_matrix=R, acc=s["acc"], bwt=s["bwt"],
                          forgetting=s["forgetting"], seconds=time.perf_counter() - t_start,
                          train_seconds=sum(loop.epoch_seconds), epoch_seconds=list(loop.epoch_seconds),
                          epoch_cpu_seconds=list(loop.epoch_cpu_seconds), options=options, extra=extra)


def run_strategies(spec: ModelSpec, stream: TaskStream, names, config: ContinualConfig,
                   options: dict[str, dict] | None = None, init_state: dict | None = None) -> dict[str, StrategyResult]:
    """Run each named strategy (or "multitask") on the identical stream, initial weights, data order
    and test spikes; results keyed by name in the given order. Models are left in result.extra["model"]."""
    options = options or {}
    for name in names:
        if name != MULTITASK:
            make_strategy(name, **options.get(name, {}))  # fail fast on bad names/options
    init = init_state if init_state is not None else initial_state(spec, config.seed)
    test_spikes = encode_test_sets(spec, stream)
    results = {}
    for i, name in enumerate(names):
        desc = f"{name} ({i + 1}/{len(names)})"
        if name == MULTITASK:
            results[name] = run_multitask(spec, stream, config, init, test_spikes, progress_desc=desc)
        else:
            results[name] = run_sequential(spec, stream, name, config, init, test_spikes,
                                           options.get(name, {}), progress_desc=desc)
    return results
