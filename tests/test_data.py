"""Tests for snn.data: the IDX reader/writer, the dataset registry, splits and subsets."""

from __future__ import annotations

import gzip
import struct
import sys
import tracemalloc
import types
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

import snn.data.idx as idx_module
from snn.data import (
    FASHION_MNIST_DEBIAN_DIR,
    IDX_FILE_STEMS,
    DatasetSplits,
    IdxFormatError,
    available_datasets,
    load_dataset,
    read_idx,
    subset,
    validation_split,
    write_idx,
)

# ----------------------------------------------------------------------------- IDX


def _idx_bytes(type_code: int, dims: tuple[int, ...], body: bytes) -> bytes:
    """An IDX file built by hand, independently of write_idx."""
    return bytes([0, 0, type_code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + body


ROUND_TRIP_ARRAYS = {
    "uint8": np.array([[0, 1, 127], [128, 254, 255]], dtype=np.uint8),
    "int8": np.array([-128, -1, 0, 1, 127], dtype=np.int8),
    "int16": np.array([[-32768, -1], [0, 32767]], dtype=np.int16),
    "int32": np.array([-(2**31), -1, 0, 1, 2**31 - 1], dtype=np.int32).reshape(5, 1, 1),
    "float32": np.array([-1.5, 0.0, 1e-38, 3.25, np.inf, -np.inf], dtype=np.float32),
    "float64": np.array([[np.pi, -np.e], [1e-300, 1e300]], dtype=np.float64),
}


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("kind", sorted(ROUND_TRIP_ARRAYS))
def test_round_trip_exact(tmp_path: Path, kind: str, suffix: str) -> None:
    array = ROUND_TRIP_ARRAYS[kind]
    path = tmp_path / f"a.idx{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == array.dtype
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable
    assert back.dtype.isnative
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_write_idx_bytes_match_hand_built_layout(tmp_path: Path) -> None:
    array = np.array([[1, -2, 3]], dtype=np.int16)
    write_idx(tmp_path / "a.idx", array)
    expected = _idx_bytes(0x0B, (1, 3), struct.pack(">3h", 1, -2, 3))
    assert (tmp_path / "a.idx").read_bytes() == expected
    write_idx(tmp_path / "a.idx.gz", array)
    assert gzip.decompress((tmp_path / "a.idx.gz").read_bytes()) == expected


def test_read_hand_built_file(tmp_path: Path) -> None:
    path = tmp_path / "labels"
    path.write_bytes(_idx_bytes(0x08, (4,), bytes([3, 1, 4, 1])))
    np.testing.assert_array_equal(read_idx(path), np.array([3, 1, 4, 1], dtype=np.uint8))
    path.write_bytes(_idx_bytes(0x0D, (2,), struct.pack(">2f", 0.5, -2.0)))
    back = read_idx(path)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, [0.5, -2.0])


def test_gzip_detected_by_content_not_name(tmp_path: Path) -> None:
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    write_idx(tmp_path / "a.gz", array)
    (tmp_path / "no-suffix").write_bytes((tmp_path / "a.gz").read_bytes())
    np.testing.assert_array_equal(read_idx(tmp_path / "no-suffix"), array)


def test_big_endian_input_array_writes_same_values(tmp_path: Path) -> None:
    array = np.array([1, 256, -70000], dtype=">i4")
    write_idx(tmp_path / "a", array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), [1, 256, -70000])


def test_write_idx_replaces_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "a"
    write_idx(path, np.zeros(3, dtype=np.uint8))
    write_idx(path, np.ones((2, 2), dtype=np.float64))
    np.testing.assert_array_equal(read_idx(path), np.ones((2, 2)))
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("dtype", [np.int64, np.bool_, np.float16, np.uint16])
def test_write_idx_rejects_unsupported_dtype(tmp_path: Path, dtype) -> None:
    with pytest.raises(ValueError, match="no IDX type code"):
        write_idx(tmp_path / "a", np.zeros(2, dtype=dtype))
    assert list(tmp_path.iterdir()) == []


GOOD = _idx_bytes(0x08, (2, 3), bytes(range(6)))

CORRUPT_CASES = {
    "empty": (b"", "empty"),
    "empty_gz": (gzip.compress(b""), "empty"),
    "short_header": (b"\x00\x00", "truncated header"),
    "wrong_magic": (b"\x01\x00" + GOOD[2:], "wrong magic"),
    "text_file": (b"P5\n28 28\n255\n" + bytes(10), "wrong magic"),
    "unknown_type": (b"\x00\x00\x0a" + GOOD[3:], "unknown IDX type code 0x0A"),
    "dims_cut": (GOOD[:9], "truncated header"),
    "data_truncated": (GOOD[:-1], "truncated data"),
    "data_truncated_gz": (gzip.compress(GOOD[:-1]), "truncated data"),
    "trailing_bytes": (GOOD + b"\x00\x00", "2 trailing bytes"),
    "gz_stream_cut": (gzip.compress(GOOD)[:-6], "gzip"),
    "gz_garbage": (b"\x1f\x8b" + bytes(30), "gzip"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT_CASES))
def test_corrupt_files_raise_value_error_naming_file(tmp_path: Path, case: str) -> None:
    data, message = CORRUPT_CASES[case]
    path = tmp_path / f"corrupt-{case}"
    path.write_bytes(data)
    with pytest.raises(IdxFormatError, match=message) as info:
        read_idx(path)
    assert isinstance(info.value, ValueError)
    assert str(path) in str(info.value)


def test_missing_idx_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


def test_more_dims_than_numpy_supports_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "dims255.idx"
    path.write_bytes(_idx_bytes(0x08, (1,) * 255, b"\x07"))
    with pytest.raises(IdxFormatError, match=r"header declares 255 dimensions, numpy .* arrays have at most") as info:
        read_idx(path)
    assert str(info.value).startswith(f"{path}: ")


def _peak_bytes_of(fn) -> tuple[int, BaseException | None]:
    """(peak traced allocation in bytes, the exception raised) while running fn()."""
    tracemalloc.start()
    try:
        fn()
    except Exception as exc:  # returned for the caller to check
        error = exc
    else:
        error = None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, error


def _gzip_zeros(header: bytes, zero_bytes: int) -> bytes:
    """A gzip stream of `header` followed by `zero_bytes` zeros (about 1000:1 compression)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: gzip container
    chunk = bytes(1 << 20)
    parts = [z.compress(header)] + [z.compress(chunk) for _ in range(zero_bytes >> 20)]
    return b"".join(parts + [z.flush()])


def test_gzip_bomb_header_is_refused_before_decompressing(tmp_path: Path) -> None:
    """A 32 KiB file whose header claims 2 GiB and whose stream expands to 32 MiB of zeros: refused
    from the header with the size and the limit, allocating (almost) nothing."""
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(_gzip_zeros(_idx_bytes(0x08, (2**31 - 1,), b""), 32 << 20))
    assert path.stat().st_size < 64 << 10
    peak, error = _peak_bytes_of(lambda: read_idx(path))
    assert isinstance(error, IdxFormatError)
    assert str(error) == (
        f"{path} (after gzip decompression): header declares dims (2147483647,) of uint8, 2147483647 bytes "
        f"(2.0 GiB), more than the limit of 1073741824 bytes (1.0 GiB) (pass max_bytes= to read_idx to allow more)")
    assert peak < 1 << 20, f"peak {peak} bytes"


def test_gzip_stream_going_on_after_the_payload_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    """The header declares 6 bytes, the stream then expands to 64 MiB of zeros: 'trailing bytes',
    counted up to 1 MiB, not decompressed to the end."""
    path = tmp_path / "bomb.gz"
    path.write_bytes(_gzip_zeros(_idx_bytes(0x08, (2, 3), b""), 64 << 20))
    peak, error = _peak_bytes_of(lambda: read_idx(path))
    assert isinstance(error, IdxFormatError)
    assert str(error) == (f"{path} (after gzip decompression): more than 1048576 trailing bytes after the 6 "
                          f"data bytes that dims (2, 3) of uint8 announce")
    assert peak < 8 << 20, f"peak {peak} bytes"


def test_truncated_plain_file_claiming_a_large_array_is_refused_before_allocating(tmp_path: Path) -> None:
    path = tmp_path / "big-claim"
    path.write_bytes(_idx_bytes(0x0D, (128, 1024, 1024), bytes(16)))  # 512 MiB declared, 16 bytes present
    peak, error = _peak_bytes_of(lambda: read_idx(path))
    assert isinstance(error, IdxFormatError) and str(error).startswith(f"{path}: truncated data")
    assert peak < 1 << 20, f"peak {peak} bytes"


def test_max_bytes_limit_and_expected_shape(tmp_path: Path) -> None:
    path = tmp_path / "a.idx.gz"
    write_idx(path, np.arange(100, dtype=np.int16).reshape(4, 25))  # 200 payload bytes
    np.testing.assert_array_equal(read_idx(path, max_bytes=200), np.arange(100).reshape(4, 25))
    with pytest.raises(IdxFormatError, match=r"200 bytes, more than the limit of 199 bytes") as info:
        read_idx(path, max_bytes=199)
    assert str(path) in str(info.value)
    assert read_idx(path, expected_shape=(None, 25)).shape == (4, 25)
    for shape, shown in (((None, 24), "[N, 24]"), ((None,), "[N]"), ((4, 25, None), "[4, 25, N]")):
        with pytest.raises(IdxFormatError) as info:
            read_idx(path, expected_shape=shape)
        assert str(info.value) == f"{path} (after gzip decompression): header declares shape [4, 25], expected {shown}"
    assert idx_module.DEFAULT_MAX_BYTES == 1 << 30


def test_payload_is_read_in_chunks_byte_exact(tmp_path: Path, monkeypatch) -> None:
    """Payloads spanning several read chunks, big-endian multi-byte types, both containers."""
    monkeypatch.setattr(idx_module, "_CHUNK", 7)
    array = np.arange(-50, 50, dtype=np.float64).reshape(10, 10) / 3
    for name in ("c.idx", "c.idx.gz"):
        write_idx(tmp_path / name, array)
        np.testing.assert_array_equal(read_idx(tmp_path / name), array)
    (tmp_path / "t.gz").write_bytes(gzip.compress((tmp_path / "c.idx").read_bytes() + bytes(3)))
    with pytest.raises(IdxFormatError, match="3 trailing bytes after the 800 data bytes"):
        read_idx(tmp_path / "t.gz")


# ----------------------------------------------------------------------------- IDX datasets

N_TRAIN, N_TEST = 20, 10


def _tiny_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_x": rng.integers(0, 256, size=(N_TRAIN, 28, 28), dtype=np.uint8),
        "train_y": (np.arange(N_TRAIN) % 10).astype(np.uint8),
        "test_x": rng.integers(0, 256, size=(N_TEST, 28, 28), dtype=np.uint8),
        "test_y": (np.arange(N_TEST)[::-1] % 10).astype(np.uint8),
    }


def _write_tiny(directory: Path, arrays: dict[str, np.ndarray], gz_fields=("train_x",)) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for field, array in arrays.items():
        suffix = ".gz" if field in gz_fields else ""
        write_idx(directory / (IDX_FILE_STEMS[field] + suffix), array)


def _assert_matches(splits: DatasetSplits, arrays: dict[str, np.ndarray], name: str) -> None:
    assert splits.name == name
    assert splits.num_classes == 10
    assert splits.input_shape == (1, 28, 28)
    assert splits.train_x.shape == (N_TRAIN, 1, 28, 28)
    assert splits.test_x.shape == (N_TEST, 1, 28, 28)
    assert splits.train_x.dtype == torch.float32 and splits.train_y.dtype == torch.int64
    for field in ("train_x", "test_x"):
        expected = torch.from_numpy(arrays[field]).unsqueeze(1).float() / 255.0
        torch.testing.assert_close(getattr(splits, field), expected, rtol=0, atol=0)
    for field in ("train_y", "test_y"):
        assert getattr(splits, field).tolist() == arrays[field].tolist()


@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
def test_load_idx_dataset_from_data_dir(tmp_path: Path, name: str) -> None:
    arrays = _tiny_arrays()
    _write_tiny(tmp_path, arrays, gz_fields=("train_x", "test_y"))
    _assert_matches(load_dataset(name, data_dir=tmp_path), arrays, name)


def test_load_mnist_from_torchvision_layout(tmp_path: Path) -> None:
    arrays = _tiny_arrays(1)
    _write_tiny(tmp_path / "MNIST" / "raw", arrays)
    _assert_matches(load_dataset("mnist", data_dir=str(tmp_path)), arrays, "mnist")


def test_uncompressed_preferred_when_both_exist(tmp_path: Path) -> None:
    arrays = _tiny_arrays()
    _write_tiny(tmp_path, arrays, gz_fields=())
    (tmp_path / (IDX_FILE_STEMS["train_y"] + ".gz")).write_bytes(b"not read")
    _assert_matches(load_dataset("mnist", data_dir=tmp_path), arrays, "mnist")


def test_missing_files_error_names_directory_and_files(tmp_path: Path) -> None:
    arrays = _tiny_arrays()
    del arrays["test_y"]
    _write_tiny(tmp_path, arrays)
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    assert IDX_FILE_STEMS["test_y"] in message
    assert IDX_FILE_STEMS["train_x"] not in message  # only what is missing
    assert "dataset-fashion-mnist" in message
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_dataset("mnist", data_dir=tmp_path / "empty")


def test_mnist_without_data_dir_is_value_error() -> None:
    with pytest.raises(ValueError, match="data_dir"):
        load_dataset("mnist")


def test_download_without_torchvision_explains_alternatives(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` fail
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(ImportError) as info:
        load_dataset("mnist", data_dir=tmp_path, download=True)
    assert "torchvision" in str(info.value)
    assert "--data-dir" in str(info.value)


def test_download_uses_torchvision_raw_folder(tmp_path, monkeypatch) -> None:
    arrays = _tiny_arrays(2)
    calls = []

    class FakeMNIST:  # writes files where torchvision.datasets.MNIST puts them
        def __init__(self, root: str, train: bool, download: bool) -> None:
            calls.append((root, train, download))
            _write_tiny(Path(root) / "MNIST" / "raw", arrays, gz_fields=tuple(arrays))

    fake = types.ModuleType("torchvision")
    fake.datasets = types.ModuleType("torchvision.datasets")
    fake.datasets.MNIST = FakeMNIST
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake.datasets)
    target = tmp_path / "new"
    _assert_matches(load_dataset("mnist", data_dir=target, download=True), arrays, "mnist")
    assert calls == [(str(target), True, True)]
    load_dataset("mnist", data_dir=target, download=True)  # files present: no second download
    assert len(calls) == 1


def test_label_count_mismatch_is_value_error(tmp_path: Path) -> None:
    arrays = _tiny_arrays()
    arrays["train_y"] = arrays["train_y"][:-1]
    _write_tiny(tmp_path, arrays)
    with pytest.raises(ValueError, match="19 labels but .* has 20 images"):
        load_dataset("mnist", data_dir=tmp_path)


def test_label_out_of_range_is_value_error(tmp_path: Path) -> None:
    arrays = _tiny_arrays()
    arrays["test_y"][3] = 10
    _write_tiny(tmp_path, arrays)
    with pytest.raises(ValueError, match=r"expected \[0, 10\)"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_wrong_image_shape_is_value_error(tmp_path: Path) -> None:
    arrays = _tiny_arrays()
    arrays["train_x"] = arrays["train_x"][:, :27, :]
    _write_tiny(tmp_path, arrays)
    # refused from the header, before the images are read
    with pytest.raises(IdxFormatError, match=r"header declares shape \[20, 27, 28\], expected \[N, 28, 28\]") as info:
        load_dataset("mnist", data_dir=tmp_path)
    assert str(tmp_path / IDX_FILE_STEMS["train_x"]) in str(info.value)


def test_corrupt_dataset_file_names_it(tmp_path: Path) -> None:
    _write_tiny(tmp_path, _tiny_arrays(), gz_fields=())
    bad = tmp_path / IDX_FILE_STEMS["test_x"]
    bad.write_bytes(bad.read_bytes()[:-5])
    with pytest.raises(IdxFormatError, match="truncated data") as info:
        load_dataset("mnist", data_dir=tmp_path)
    assert str(bad) in str(info.value)


def test_unknown_dataset_lists_known_names() -> None:
    assert available_datasets() == ("digits", "digits4x4", "fashion-mnist", "mnist")
    with pytest.raises(ValueError, match="digits, digits4x4, fashion-mnist, mnist"):
        load_dataset("cifar10")


@pytest.mark.skipif(
    not FASHION_MNIST_DEBIAN_DIR.is_dir(),
    reason=f"Debian package dataset-fashion-mnist is not installed ({FASHION_MNIST_DEBIAN_DIR})",
)
def test_real_fashion_mnist_from_debian_package() -> None:
    splits = load_dataset("fashion-mnist")
    assert splits.train_x.shape == (60000, 1, 28, 28)
    assert splits.test_x.shape == (10000, 1, 28, 28)
    assert torch.bincount(splits.train_y).tolist() == [6000] * 10
    assert torch.bincount(splits.test_y).tolist() == [1000] * 10
    assert splits.train_x.min() == 0.0 and splits.train_x.max() == 1.0


# ----------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits() -> DatasetSplits:
    return load_dataset("digits")


def test_digits_shapes_and_range(digits: DatasetSplits) -> None:
    assert digits.name == "digits" and digits.num_classes == 10
    assert digits.input_shape == (1, 8, 8)
    assert digits.train_x.shape == (1437, 1, 8, 8)
    assert digits.test_x.shape == (360, 1, 8, 8)
    assert digits.train_x.dtype == torch.float32 and digits.test_y.dtype == torch.int64
    for x in (digits.train_x, digits.test_x):
        assert x.min() == 0.0 and x.max() == 1.0
        assert torch.equal(x * 16, torch.round(x * 16))  # pixel values were 0..16


def test_digits_split_is_stratified(digits: DatasetSplits) -> None:
    train_counts = torch.bincount(digits.train_y, minlength=10)
    test_counts = torch.bincount(digits.test_y, minlength=10)
    totals = train_counts + test_counts
    assert totals.sum() == 1797
    assert torch.all((test_counts - 0.2 * totals).abs() <= 1)
    assert torch.all((train_counts - 0.8 * totals).abs() <= 1)


def test_digits_split_is_deterministic(digits: DatasetSplits) -> None:
    again = load_dataset("digits", data_dir="/ignored")
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(digits, field), getattr(again, field))


def test_digits_split_partitions_the_images(digits: DatasetSplits) -> None:
    from sklearn.datasets import load_digits

    x, _ = load_digits(return_X_y=True)
    expected = sorted(tuple(row) for row in (x / 16.0).astype(np.float32).tolist())
    got = torch.cat([digits.train_x, digits.test_x]).reshape(-1, 64).tolist()
    assert sorted(tuple(row) for row in got) == expected


# ----------------------------------------------------------------------------- splits


def _labelled(n_per_class: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """x[i] = i (so samples can be traced), y grouped by class."""
    y = torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(n_per_class)])
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(7))]
    x = torch.arange(len(y), dtype=torch.float32).reshape(-1, 1)
    return x, y


def test_validation_split_stratified_partition_and_deterministic() -> None:
    sizes = [50, 30, 20, 7, 1]
    x, y = _labelled(sizes)
    tx, ty, vx, vy = validation_split(x, y, 0.2, seed=3)
    assert len(vx) == 22 and len(tx) == 86
    # partition, original order kept, labels travel with their samples
    assert sorted(torch.cat([tx, vx]).flatten().long().tolist()) == list(range(108))
    assert torch.all(tx.flatten().diff() > 0) and torch.all(vx.flatten().diff() > 0)
    assert torch.equal(y[tx.flatten().long()], ty) and torch.equal(y[vx.flatten().long()], vy)
    counts = torch.bincount(vy, minlength=5).float()
    assert torch.all((counts - 0.2 * torch.tensor(sizes, dtype=torch.float32)).abs() <= 1)
    again = validation_split(x, y, 0.2, seed=3)
    assert all(torch.equal(a, b) for a, b in zip((tx, ty, vx, vy), again))
    other = validation_split(x, y, 0.2, seed=4)
    assert not torch.equal(vx, other[2])


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, 0.001])
def test_validation_split_rejects_bad_fraction(fraction: float) -> None:
    x, y = _labelled([10, 10])
    with pytest.raises(ValueError, match="fraction"):
        validation_split(x, y, fraction, seed=0)


def test_validation_split_rejects_mismatched_lengths() -> None:
    x, y = _labelled([10, 10])
    with pytest.raises(ValueError, match="19 labels but x has 20"):
        validation_split(x, y[:-1], 0.5, seed=0)


def _toy_splits() -> DatasetSplits:
    gen = torch.Generator().manual_seed(0)
    train_y = torch.arange(100) % 4
    test_y = torch.arange(40) % 4
    return DatasetSplits(
        train_x=torch.rand(100, 1, 2, 2, generator=gen), train_y=train_y,
        test_x=torch.rand(40, 1, 2, 2, generator=gen), test_y=test_y,
        num_classes=4, input_shape=(1, 2, 2), name="toy",
    )


def test_subset_train_per_class_and_max_test() -> None:
    splits = _toy_splits()
    small = subset(splits, train_per_class=3, max_test=10, seed=1)
    assert torch.bincount(small.train_y).tolist() == [3, 3, 3, 3]
    assert len(small.test_y) == 10
    assert torch.all((torch.bincount(small.test_y) - 2.5).abs() <= 1)
    assert (small.name, small.num_classes, small.input_shape) == ("toy", 4, (1, 2, 2))
    again = subset(splits, train_per_class=3, max_test=10, seed=1)
    assert torch.equal(small.train_x, again.train_x) and torch.equal(small.test_x, again.test_x)
    # selected rows are rows of the original, with their labels
    originals = splits.train_x.reshape(100, -1).tolist()
    rows = [originals.index(r) for r in small.train_x.reshape(12, -1).tolist()]
    assert torch.equal(splits.train_y[rows], small.train_y)


def test_subset_max_train_caps_and_keeps_all_when_larger() -> None:
    splits = _toy_splits()
    small = subset(splits, max_train=10, seed=0)
    assert len(small.train_y) == 10 and torch.equal(small.test_x, splits.test_x)
    assert torch.all((torch.bincount(small.train_y) - 2.5).abs() <= 1)
    full = subset(splits, max_train=1000, max_test=40, seed=0)
    assert torch.equal(full.train_x, splits.train_x) and torch.equal(full.test_y, splits.test_y)
    assert subset(splits, seed=0) is splits


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"train_per_class": 2, "max_train": 5}, "not both"),
        ({"train_per_class": 26}, "class 0 has only 25"),
        ({"train_per_class": 0}, "train_per_class must be an int >= 1"),
        ({"max_train": 0}, "max_train"),
        ({"max_test": 2.5}, "max_test"),
    ],
)
def test_subset_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        subset(_toy_splits(), seed=0, **kwargs)


def test_dataset_splits_validates_fields() -> None:
    good = _toy_splits()
    fields = dict(
        train_x=good.train_x, train_y=good.train_y, test_x=good.test_x, test_y=good.test_y,
        num_classes=4, input_shape=(1, 2, 2), name="toy",
    )
    bad_cases = [
        ({"train_x": good.train_x * 2}, r"train_x values must lie in \[0, 1\]"),
        ({"test_x": torch.full_like(good.test_x, float("nan"))}, "test_x values"),
        ({"train_y": good.train_y.int()}, "train_y must be int64"),
        ({"test_y": good.test_y[:-1]}, "test_x has 40 samples but test_y has 39"),
        ({"num_classes": 3}, r"train_y labels must lie in \[0, 3\)"),
        ({"input_shape": (1, 4, 1)}, "sample shape"),
        ({"train_x": good.train_x.double()}, "float32"),
        ({"name": ""}, "name"),
    ]
    for change, message in bad_cases:
        with pytest.raises(ValueError, match=message):
            DatasetSplits(**{**fields, **change})
