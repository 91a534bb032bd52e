"""Dataset layer: the IDX file format and named image datasets as [N, C, H, W] tensors."""

from snn.data.datasets import (
    DIGITS_SPLIT_SEED,
    DIGITS_TEST_FRACTION,
    FASHION_MNIST_DEBIAN_DIR,
    IDX_FILE_STEMS,
    DatasetSpec,
    DatasetSplits,
    available_datasets,
    load_dataset,
    subset,
    validation_split,
)
from snn.data.idx import IdxFormatError, read_idx, write_idx

__all__ = [
    "DIGITS_SPLIT_SEED",
    "DIGITS_TEST_FRACTION",
    "FASHION_MNIST_DEBIAN_DIR",
    "IDX_FILE_STEMS",
    "DatasetSpec",
    "DatasetSplits",
    "IdxFormatError",
    "available_datasets",
    "load_dataset",
    "read_idx",
    "subset",
    "validation_split",
    "write_idx",
]
