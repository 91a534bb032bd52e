"""Task streams for continual learning: Permuted-X (domain-incremental, shared head) and Split-X
(task-incremental, one output group per task).

A `Task` holds flat samples `[N, n_in]` in [0, 1], labels as output-neuron indices, and its `head`:
the output neurons that compete for this task's samples (all of them for a shared head). A stream
is a tuple of tasks built once from a dataset and a seed, so every strategy sees identical data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..data import DatasetSplits, load_dataset, subset

STREAM_KINDS = ("permuted", "split")
_TASK_SEED_STRIDE = 7919


@dataclass(frozen=True)
class Task:
    """One task. train_x/test_x: [N, n_in] float32 in [0, 1]; train_y/test_y: [N] int64 output
    indices; head: the output indices this task is scored on (sorted tuple); name: for tables."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    head: tuple[int, ...]
    permutation: torch.Tensor | None = None  # [n_in] pixel order of a permuted task

    def __post_init__(self):
        for f in ("train", "test"):
            x, y = getattr(self, f"{f}_x"), getattr(self, f"{f}_y")
            if x.dim() != 2 or y.dim() != 1 or x.shape[0] != y.shape[0]:
                raise ValueError(f"task {self.name}: {f}_x must be [N, n_in] and {f}_y [N], got "
                                 f"{tuple(x.shape)} and {tuple(y.shape)}")
            if x.shape[0] == 0:
                raise ValueError(f"task {self.name}: {f} set is empty")
            bad = set(torch.unique(y).tolist()) - set(self.head)
            if bad:
                raise ValueError(f"task {self.name}: {f}_y has labels {sorted(bad)} outside its head {self.head}")
        if self.train_x.shape[1] != self.test_x.shape[1]:
            raise ValueError(f"task {self.name}: train and test inputs differ in size")
        object.__setattr__(self, "head", tuple(sorted(int(h) for h in self.head)))

    @property
    def num_inputs(self) -> int:
        return self.train_x.shape[1]


@dataclass(frozen=True)
class TaskStream:
    """The tasks of one benchmark, in order. num_outputs: output neurons of the network;
    multi_head: True when tasks have disjoint heads (task-incremental)."""

    name: str
    tasks: tuple[Task, ...]
    num_outputs: int
    input_shape: tuple[int, ...]
    multi_head: bool

    def __post_init__(self):
        if not self.tasks:
            raise ValueError(f"stream {self.name}: needs at least one task")
        object.__setattr__(self, "tasks", tuple(self.tasks))
        n_in = math.prod(self.input_shape)
        for t in self.tasks:
            if t.num_inputs != n_in:
                raise ValueError(f"stream {self.name}: task {t.name} has {t.num_inputs} inputs, expected {n_in}")
            if max(t.head) >= self.num_outputs:
                raise ValueError(f"stream {self.name}: task {t.name} head {t.head} exceeds {self.num_outputs} outputs")

    def __len__(self) -> int:
        return len(self.tasks)

    def head_mask(self, task: int, device=None) -> torch.Tensor:
        """[num_outputs] bool: the output neurons of task `task`."""
        m = torch.zeros(self.num_outputs, dtype=torch.bool, device=device)
        m[list(self.tasks[task].head)] = True
        return m


def _per_task_subset(data: DatasetSplits, task: int, train_per_task: int | None,
                     test_per_task: int | None, seed: int) -> DatasetSplits:
    if train_per_task is None and test_per_task is None:
        return data
    return subset(data, max_train=train_per_task, max_test=test_per_task,
                  seed=seed * _TASK_SEED_STRIDE + task)


def permuted_stream(data: DatasetSplits, num_tasks: int, seed: int = 0, train_per_task: int | None = None,
                    test_per_task: int | None = None) -> TaskStream:
    """Permuted-X: task k applies a fixed random pixel permutation (drawn from `seed`) to every
    image; all tasks share the data set's classes and one output head. Each task uses its own
    stratified subset of train_per_task / test_per_task samples (all when None)."""
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
    n_in = math.prod(data.input_shape)
    gen = torch.Generator().manual_seed(seed)
    tasks = []
    for k in range(num_tasks):
        perm = torch.randperm(n_in, generator=gen)
        part = _per_task_subset(data, k, train_per_task, test_per_task, seed)
        tasks.append(Task(
            name=f"perm{k}",
            train_x=part.train_x.reshape(len(part.train_x), n_in)[:, perm].contiguous(),
            train_y=part.train_y.clone(),
            test_x=part.test_x.reshape(len(part.test_x), n_in)[:, perm].contiguous(),
            test_y=part.test_y.clone(),
            head=tuple(range(data.num_classes)),
            permutation=perm,
        ))
    return TaskStream(f"permuted-{data.name}", tuple(tasks), data.num_classes, (n_in,), multi_head=False)


def split_stream(data: DatasetSplits, num_tasks: int = 5, classes_per_task: int | None = None, seed: int = 0,
                 train_per_task: int | None = None, test_per_task: int | None = None,
                 shuffle_classes: bool = False) -> TaskStream:
    """Split-X (task-incremental): the classes are cut into `num_tasks` groups of `classes_per_task`
    (default num_classes // num_tasks), in label order unless `shuffle_classes`; task k is scored
    only on its own output group, output neuron = position of the class in the class order (so
    the network has num_tasks * classes_per_task outputs, one group per task)."""
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
    cpt = classes_per_task or data.num_classes // num_tasks
    if cpt < 1 or cpt * num_tasks > data.num_classes:
        raise ValueError(f"cannot split {data.num_classes} classes into {num_tasks} tasks of {cpt}")
    order = (torch.randperm(data.num_classes, generator=torch.Generator().manual_seed(seed))
             if shuffle_classes else torch.arange(data.num_classes))
    n_in = math.prod(data.input_shape)
    tasks = []
    for k in range(num_tasks):
        classes = order[k * cpt:(k + 1) * cpt]
        out_index = {int(c): k * cpt + i for i, c in enumerate(classes.tolist())}

        def pick(x, y):
            keep = torch.isin(y, classes)
            yy = torch.tensor([out_index[int(v)] for v in y[keep].tolist()], dtype=torch.int64)
            return x[keep].reshape(int(keep.sum()), n_in).contiguous(), yy

        tr_x, tr_y = pick(data.train_x, data.train_y)
        te_x, te_y = pick(data.test_x, data.test_y)
        tr_x, tr_y = _cap(tr_x, tr_y, train_per_task, seed * _TASK_SEED_STRIDE + k)
        te_x, te_y = _cap(te_x, te_y, test_per_task, seed * _TASK_SEED_STRIDE + k + 104_729)
        names = "-".join(str(int(c)) for c in classes)
        tasks.append(Task(f"classes{names}", tr_x, tr_y, te_x, te_y, head=tuple(out_index.values())))
    return TaskStream(f"split-{data.name}", tuple(tasks), num_tasks * cpt, (n_in,), multi_head=True)


def _cap(x, y, cap, seed):
    """At most `cap` samples, stratified by label, original order kept."""
    if cap is None or cap >= len(y):
        return x, y
    gen = torch.Generator().manual_seed(seed)
    classes, sizes = torch.unique(y, return_counts=True)
    n = len(y)
    counts = [cap * int(s) // n for s in sizes]
    for i in sorted(range(len(counts)), key=lambda i: -(cap * int(sizes[i]) % n))[: cap - sum(counts)]:
        counts[i] += 1
    idx = []
    for c, k in zip(classes.tolist(), counts):
        members = torch.nonzero(y == c).squeeze(1)
        idx.append(members[torch.randperm(len(members), generator=gen)[:k]])
    idx = torch.sort(torch.cat(idx)).values
    return x[idx], y[idx]


BENCHMARK_DATASETS = ("fashion-mnist", "mnist", "digits")


def parse_benchmark(name: str) -> tuple[str, str]:
    """'permuted-fashion-mnist' -> ('permuted', 'fashion-mnist')."""
    kind, _, dataset = name.partition("-")
    if kind not in STREAM_KINDS or dataset not in BENCHMARK_DATASETS:
        known = [f"{k}-{d}" for k in STREAM_KINDS for d in BENCHMARK_DATASETS]
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(known)}")
    return kind, dataset


def make_stream(benchmark: str, num_tasks: int, seed: int = 0, train_per_task: int | None = None,
                test_per_task: int | None = None, data_dir=None, download: bool = False,
                data: DatasetSplits | None = None) -> TaskStream:
    """Build a named benchmark stream ("permuted-fashion-mnist", "split-digits", ...)."""
    kind, dataset = parse_benchmark(benchmark)
    if data is None:
        data = load_dataset(dataset, data_dir=data_dir, download=download)
    elif data.name != dataset:
        raise ValueError(f"benchmark {benchmark} needs dataset {dataset}, got {data.name}")
    if kind == "permuted":
        return permuted_stream(data, num_tasks, seed, train_per_task, test_per_task)
    return split_stream(data, num_tasks, seed=seed, train_per_task=train_per_task, test_per_task=test_per_task)
