"""Named image datasets as tensors: one registry, the loaders, and deterministic splits/subsets.

Every dataset arrives as a `DatasetSplits`: images `[N, C, H, W]` float32 in [0, 1] and labels
`[N]` int64. Names (see `available_datasets()`):

* ``digits``: scikit-learn's bundled 8x8 digits (1797 images, no files needed). Pixel values
  0..16 are divided by 16. Train/test is a fixed stratified split,
  ``train_test_split(test_size=0.2, stratify=y, random_state=0)``: 1437 train, 360 test.
* ``digits4x4``: the same images and split, each pooled to 4x4 (the mean of every 2x2 block): 16
  inputs, what Xylo's 16 input channels take (profiles xylo-imu, xylo-audio2).
* ``fashion-mnist``: IDX files, by default from ``/usr/share/datasets/fashion-mnist`` (Debian
  package ``dataset-fashion-mnist``), or from ``data_dir``.
* ``mnist``: IDX files from ``data_dir``; with ``download=True`` and torchvision installed,
  missing files are fetched with ``torchvision.datasets.MNIST``.

IDX datasets are looked up by the standard file names (``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``), each
with or without ``.gz``, in ``data_dir`` and in ``data_dir/<TorchvisionClass>/raw`` (where
torchvision puts them).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from snn.data.idx import read_idx

__all__ = [
    "DatasetSplits",
    "DatasetSpec",
    "FASHION_MNIST_DEBIAN_DIR",
    "IDX_FILE_STEMS",
    "DIGITS_TEST_FRACTION",
    "DIGITS_SPLIT_SEED",
    "available_datasets",
    "load_dataset",
    "validation_split",
    "subset",
]

FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_DEBIAN_PACKAGE = "dataset-fashion-mnist"

# Standard IDX file names (without .gz) shared by MNIST and Fashion-MNIST, by split field.
IDX_FILE_STEMS: dict[str, str] = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0

PathLike = str | os.PathLike


# --------------------------------------------------------------------------- record


def _check_xy(
    name: str, x_field: str, x: torch.Tensor, y_field: str, y: torch.Tensor,
    num_classes: int, input_shape: tuple[int, ...],
) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError(f"{name}: {x_field} and {y_field} must be torch tensors")
    if x.dtype != torch.float32 or x.dim() != 4:
        raise ValueError(
            f"{name}: {x_field} must be float32 [N, C, H, W], got {x.dtype} {tuple(x.shape)}"
        )
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(
            f"{name}: {x_field} sample shape {tuple(x.shape[1:])} != input_shape {input_shape}"
        )
    if y.dtype != torch.int64 or y.dim() != 1:
        raise ValueError(f"{name}: {y_field} must be int64 [N], got {y.dtype} {tuple(y.shape)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{name}: {x_field} has {x.shape[0]} samples but {y_field} has {y.shape[0]} labels"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name}: {x_field} is empty")
    lo, hi = torch.aminmax(x)
    if not (lo >= 0.0 and hi <= 1.0):  # also false for NaN
        raise ValueError(f"{name}: {x_field} values must lie in [0, 1], got [{lo}, {hi}]")
    y_lo, y_hi = torch.aminmax(y)
    if y_lo < 0 or y_hi >= num_classes:
        raise ValueError(
            f"{name}: {y_field} labels must lie in [0, {num_classes}), got [{y_lo}, {y_hi}]"
        )


@dataclass(frozen=True, eq=False)  # eq=False: tensors do not compare to a single bool
class DatasetSplits:
    """A dataset's train and test split as tensors; validated on construction.

    Attributes:
        train_x: [N_train, C, H, W] float32, values in [0, 1].
        train_y: [N_train] int64, values in [0, num_classes).
        test_x: [N_test, C, H, W] float32, values in [0, 1].
        test_y: [N_test] int64, values in [0, num_classes).
        num_classes: number of classes (labels are 0 .. num_classes - 1).
        input_shape: (C, H, W) of one sample.
        name: registry name of the dataset, e.g. "digits".
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    input_shape: tuple[int, int, int]
    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        n = self.num_classes
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{self.name}: num_classes must be an int >= 1, got {n!r}")
        shape = tuple(self.input_shape)
        if len(shape) != 3 or not all(isinstance(d, int) and d >= 1 for d in shape):
            raise ValueError(
                f"{self.name}: input_shape must be (C, H, W) of positive ints, "
                f"got {self.input_shape!r}"
            )
        object.__setattr__(self, "input_shape", shape)
        _check_xy(self.name, "train_x", self.train_x, "train_y", self.train_y,
                  self.num_classes, shape)
        _check_xy(self.name, "test_x", self.test_x, "test_y", self.test_y,
                  self.num_classes, shape)


# --------------------------------------------------------------------------- loaders

Arrays = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class DatasetSpec:
    """One registry entry: what a dataset is and the function that loads it.

    `load(spec, data_dir, download)` returns (train_x, train_y, test_x, test_y) tensors in the
    `DatasetSplits` layout; `load_dataset` wraps and validates them.
    """

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    description: str
    load: Callable[[DatasetSpec, Path | None, bool], Arrays]


def _load_digits(spec: DatasetSpec, data_dir: Path | None, download: bool) -> Arrays:
    # data_dir and download do not apply: scikit-learn ships these images.
    # Imported here so `import snn.data` stays fast.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)  # x: [1797, 64] float64 in 0..16
    x = (x.reshape(-1, *spec.input_shape) / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, stratify=y, random_state=DIGITS_SPLIT_SEED
    )
    return (
        torch.from_numpy(np.ascontiguousarray(x_tr)),
        torch.from_numpy(y_tr.astype(np.int64)),
        torch.from_numpy(np.ascontiguousarray(x_te)),
        torch.from_numpy(y_te.astype(np.int64)),
    )


def _load_digits_4x4(spec: DatasetSpec, data_dir: Path | None, download: bool) -> Arrays:
    """`digits` with every 8x8 image pooled to 4x4: the mean of each 2x2 block."""
    full = dataclasses.replace(spec, input_shape=(1, 8, 8))
    train_x, train_y, test_x, test_y = _load_digits(full, data_dir, download)
    pool = torch.nn.functional.avg_pool2d
    return pool(train_x, 2), train_y, pool(test_x, 2), test_y


def _find_idx_files(search_dirs: Sequence[Path]) -> dict[str, Path | None]:
    found: dict[str, Path | None] = {}
    for field, stem in IDX_FILE_STEMS.items():
        found[field] = next(
            (d / n for d in search_dirs for n in (stem, stem + ".gz") if (d / n).is_file()),
            None,
        )
    return found


def _download_with_torchvision(data_dir: Path, class_name: str, name: str) -> None:
    try:
        import torchvision.datasets as tv_datasets
    except ImportError as exc:
        raise ImportError(
            f"{name}: download=True needs torchvision, which is not installed. Either "
            f"`pip install torchvision`, or put the IDX files "
            f"({', '.join(IDX_FILE_STEMS.values())}, each optionally .gz) in a directory "
            f"and pass it as data_dir (--data-dir on the command line)."
        ) from exc
    data_dir.mkdir(parents=True, exist_ok=True)
    # download() fetches all four files into data_dir/<class_name>/raw whatever `train` is.
    getattr(tv_datasets, class_name)(root=str(data_dir), train=True, download=True)


def _read_idx_pair(
    spec: DatasetSpec, x_path: Path, y_path: Path
) -> tuple[torch.Tensor, torch.Tensor]:
    c, h, w = spec.input_shape
    # the shapes are checked against the headers before the payloads are read
    images = read_idx(x_path, expected_shape=(None, h, w))
    labels = read_idx(y_path, expected_shape=(None,))
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (h, w):
        raise ValueError(
            f"{spec.name}: {x_path} must hold uint8 images [N, {h}, {w}], "
            f"got {images.dtype} {images.shape}"
        )
    if labels.dtype.kind not in "ui" or labels.ndim != 1:
        raise ValueError(
            f"{spec.name}: {y_path} must hold integer labels [N], got {labels.dtype} {labels.shape}"
        )
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{spec.name}: {y_path} has {labels.shape[0]} labels but {x_path} has "
            f"{images.shape[0]} images"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise ValueError(
            f"{spec.name}: {y_path} has labels in [{labels.min()}, {labels.max()}], "
            f"expected [0, {spec.num_classes})"
        )
    x = torch.from_numpy(images).unsqueeze(1).to(torch.float32).div_(255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def _load_idx_dataset(
    spec: DatasetSpec, data_dir: Path | None, download: bool, *,
    default_dir: Path | None, torchvision_class: str, hint: str,
) -> Arrays:
    if data_dir is None:
        if default_dir is None:
            raise ValueError(
                f"{spec.name} has no default directory: pass data_dir (--data-dir on the "
                f"command line) holding {', '.join(IDX_FILE_STEMS.values())} (each optionally "
                f".gz), or naming where download=True (--download, needs torchvision) "
                f"should save them"
            )
        data_dir = default_dir
    search_dirs = [data_dir, data_dir / torchvision_class / "raw"]
    found = _find_idx_files(search_dirs)
    if download and None in found.values():
        if data_dir == default_dir:
            raise ValueError(
                f"{spec.name}: IDX files missing from the default directory {data_dir}; "
                f"download=True needs data_dir to say where to save them"
            )
        _download_with_torchvision(data_dir, torchvision_class, spec.name)
        found = _find_idx_files(search_dirs)
    missing = [IDX_FILE_STEMS[f] for f, p in found.items() if p is None]
    if missing:
        raise FileNotFoundError(
            f"{spec.name}: missing IDX files in {data_dir} (also looked in "
            f"{search_dirs[1]}): {', '.join(missing)} (each with or without .gz){hint}"
        )
    train_x, train_y = _read_idx_pair(spec, found["train_x"], found["train_y"])
    test_x, test_y = _read_idx_pair(spec, found["test_x"], found["test_y"])
    return train_x, train_y, test_x, test_y


def _registry(*specs: DatasetSpec) -> dict[str, DatasetSpec]:
    registry: dict[str, DatasetSpec] = {}
    for spec in specs:
        if spec.name in registry:
            raise ValueError(f"dataset name {spec.name!r} registered twice")
        registry[spec.name] = spec
    return registry


_DATASETS: dict[str, DatasetSpec] = _registry(
    DatasetSpec(
        name="digits",
        num_classes=10,
        input_shape=(1, 8, 8),
        description="scikit-learn 8x8 digits, fixed stratified 80/20 split (random_state=0)",
        load=_load_digits,
    ),
    DatasetSpec(
        name="digits4x4",
        num_classes=10,
        input_shape=(1, 4, 4),
        description="the digits pooled to 4x4 (mean of each 2x2 block; 16 inputs, Xylo's), the same split",
        load=_load_digits_4x4,
    ),
    DatasetSpec(
        name="mnist",
        num_classes=10,
        input_shape=(1, 28, 28),
        description="MNIST 28x28 handwritten digits from IDX files (60000 train, 10000 test)",
        load=functools.partial(
            _load_idx_dataset, default_dir=None, torchvision_class="MNIST",
            hint="; or pass download=True (--download) with torchvision installed.",
        ),
    ),
    DatasetSpec(
        name="fashion-mnist",
        num_classes=10,
        input_shape=(1, 28, 28),
        description="Fashion-MNIST 28x28 clothing images from IDX files (60000 train, 10000 test)",
        load=functools.partial(
            _load_idx_dataset, default_dir=FASHION_MNIST_DEBIAN_DIR,
            torchvision_class="FashionMNIST",
            hint=(f". On Debian/Ubuntu `apt-get install {FASHION_MNIST_DEBIAN_PACKAGE}` puts "
                  f"them in {FASHION_MNIST_DEBIAN_DIR}, the default; or pass download=True "
                  f"(--download) with torchvision installed."),
        ),
    ),
)


def available_datasets() -> tuple[str, ...]:
    """Names accepted by `load_dataset`, sorted."""
    return tuple(sorted(_DATASETS))


def load_dataset(
    name: str, data_dir: PathLike | None = None, download: bool = False
) -> DatasetSplits:
    """Load a registered dataset by name.

    Args:
        name: one of `available_datasets()`: "digits", "digits4x4", "fashion-mnist", "mnist".
        data_dir: directory holding the IDX files (ignored by "digits"); for
            "fashion-mnist" defaults to /usr/share/datasets/fashion-mnist, "mnist" has
            no default.
        download: for IDX datasets, fetch missing files into data_dir with torchvision.

    Returns:
        DatasetSplits with train_x/test_x [N, C, H, W] float32 in [0, 1] and
        train_y/test_y [N] int64.

    Raises:
        ValueError: unknown name; data_dir missing where needed; malformed files
            (IdxFormatError), label count != image count, labels >= num_classes.
        FileNotFoundError: IDX files missing (names the directory and the file names).
        ImportError: download=True but torchvision is not installed.
    """
    spec = _DATASETS.get(name)
    if spec is None:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(available_datasets())}")
    train_x, train_y, test_x, test_y = spec.load(
        spec, None if data_dir is None else Path(data_dir), download
    )
    return DatasetSplits(
        train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
        num_classes=spec.num_classes, input_shape=spec.input_shape, name=spec.name,
    )


# --------------------------------------------------------------------------- splits


def _positive_int(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{field} must be an int >= 1, got {value!r}")
    return value


def _check_labels(field: str, y: torch.Tensor, n: int) -> None:
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.dim() != 1:
        raise ValueError(f"{field} must be an int64 tensor [N]")
    if y.shape[0] != n:
        raise ValueError(f"{field} has {y.shape[0]} labels but x has {n} samples")


def _proportional_counts(class_sizes: list[int], n_total: int) -> list[int]:
    """Split n_total across classes in proportion to class_sizes (largest remainder, exact
    integer arithmetic; ties go to the lower class). Each count is within 1 of its exact
    share and never exceeds its class size."""
    n = sum(class_sizes)
    counts = [n_total * s // n for s in class_sizes]
    remainders = [n_total * s % n for s in class_sizes]
    order = sorted(range(len(class_sizes)), key=lambda k: (-remainders[k], k))
    for k in order[: n_total - sum(counts)]:
        counts[k] += 1
    return counts


def _stratified_pick(
    y: torch.Tensor, counts: Callable[[list[int]], list[int]], generator: torch.Generator
) -> torch.Tensor:
    """Indices [K] int64, ascending: counts(class_sizes)[i] random samples of the i-th class
    present in y (classes in ascending order)."""
    classes, sizes = torch.unique(y, return_counts=True)
    per_class = counts(sizes.tolist())
    picked = []
    for c, k in zip(classes.tolist(), per_class):
        members = torch.nonzero(y == c).squeeze(1)
        picked.append(members[torch.randperm(members.numel(), generator=generator)[:k]])
    return torch.sort(torch.cat(picked)).values


def validation_split(
    x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Deterministic stratified split of a training set into train and validation parts.

    round(fraction * N) samples go to validation, spread over classes in proportion to
    their sizes (each class within 1 sample of its exact share); samples keep their
    original relative order. Same inputs and seed give the same split.

    Args:
        x: [N, ...] samples.
        y: [N] int64 labels.
        fraction: share of samples for validation, 0 < fraction < 1.
        seed: seed of the torch.Generator that picks the samples.

    Returns:
        (train_x [N - V, ...], train_y [N - V], val_x [V, ...], val_y [V]).

    Raises:
        ValueError: fraction outside (0, 1), mismatched lengths, or a split that would
            leave either part empty.
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise ValueError("x must be a tensor [N, ...]")
    n = x.shape[0]
    _check_labels("y", y, n)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction!r}")
    n_val = int(fraction * n + 0.5)
    if not 1 <= n_val <= n - 1:
        raise ValueError(
            f"fraction {fraction} of {n} samples gives {n_val} validation samples; "
            "both parts must be non-empty"
        )
    generator = torch.Generator().manual_seed(seed)
    val_idx = _stratified_pick(y, lambda sizes: _proportional_counts(sizes, n_val), generator)
    is_val = torch.zeros(n, dtype=torch.bool)
    is_val[val_idx] = True
    return x[~is_val], y[~is_val], x[is_val], y[is_val]


def _capped_pick(y: torch.Tensor, cap: int, generator: torch.Generator) -> torch.Tensor:
    if cap >= y.shape[0]:
        return torch.arange(y.shape[0])
    return _stratified_pick(y, lambda sizes: _proportional_counts(sizes, cap), generator)


def subset(
    splits: DatasetSplits,
    *,
    train_per_class: int | None = None,
    max_train: int | None = None,
    max_test: int | None = None,
    seed: int,
) -> DatasetSplits:
    """A smaller copy of `splits` for fast runs; deterministic for a given seed.

    Args:
        splits: the full dataset.
        train_per_class: keep exactly this many random train samples of every class
            present (error if a class has fewer). Excludes max_train.
        max_train: keep at most this many train samples, stratified (each class within
            1 sample of its proportional share); all if the train set is not larger.
        max_test: the same cap for the test set.
        seed: seed of the torch.Generator that picks the samples.

    Returns:
        DatasetSplits with the same name, num_classes and input_shape; selected samples
        keep their original relative order.

    Raises:
        ValueError: both train_per_class and max_train given, a count < 1, or a class
            with fewer than train_per_class samples.
    """
    if train_per_class is not None and max_train is not None:
        raise ValueError("give train_per_class or max_train, not both")
    generator = torch.Generator().manual_seed(seed)
    train_idx = test_idx = None
    if train_per_class is not None:
        k = _positive_int("train_per_class", train_per_class)
        classes, sizes = torch.unique(splits.train_y, return_counts=True)
        for c, s in zip(classes.tolist(), sizes.tolist()):
            if s < k:
                raise ValueError(
                    f"{splits.name}: train_per_class={k} but class {c} has only {s} train samples"
                )
        train_idx = _stratified_pick(splits.train_y, lambda sz: [k] * len(sz), generator)
    elif max_train is not None:
        train_idx = _capped_pick(splits.train_y, _positive_int("max_train", max_train), generator)
    if max_test is not None:
        test_idx = _capped_pick(splits.test_y, _positive_int("max_test", max_test), generator)

    changes = {}
    if train_idx is not None:
        changes.update(train_x=splits.train_x[train_idx], train_y=splits.train_y[train_idx])
    if test_idx is not None:
        changes.update(test_x=splits.test_x[test_idx], test_y=splits.test_y[test_idx])
    return dataclasses.replace(splits, **changes) if changes else splits
