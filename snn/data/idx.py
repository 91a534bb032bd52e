"""Reader and writer for the IDX array format used by MNIST and Fashion-MNIST.

Layout (all integers big-endian)::

    byte 0, 1   0x00 0x00                magic
    byte 2      type code                0x08 ubyte, 0x09 byte, 0x0B short,
                                         0x0C int, 0x0D float, 0x0E double
    byte 3      ndim
    4 * ndim    dimension sizes          uint32 each
    rest        prod(dims) elements      row-major, big-endian

A gzip-compressed file is recognised by its content (the gzip magic 0x1f 0x8b), not by
its name, so `train-images-idx3-ubyte.gz` and a decompressed copy read the same.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from snn.atomic import write_bytes_atomic

__all__ = ["IdxFormatError", "read_idx", "write_idx", "IDX_TYPE_CODES"]

# Type code -> big-endian numpy dtype. The single table both reader and writer use.
IDX_TYPE_CODES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"
_MAX_DIM = 2**32 - 1


class IdxFormatError(ValueError):
    """The bytes of a file are not a valid IDX array; the message names the file."""


def _decompress(path: Path, raw: bytes) -> bytes:
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        # EOFError: gzip stream cut short; OSError (BadGzipFile) / zlib.error: corrupt.
        raise IdxFormatError(f"{path}: corrupt or truncated gzip stream ({exc})") from exc


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file, plain or gzip-compressed, into a numpy array.

    Args:
        path: file to read.

    Returns:
        array of shape `dims` as stored in the header (e.g. [N, 28, 28] for idx3 images,
        [N] for idx1 labels), native byte order, writable, dtype one of
        uint8 / int8 / int16 / int32 / float32 / float64 per the header's type code.

    Raises:
        FileNotFoundError: the file does not exist.
        IdxFormatError (a ValueError): empty file, wrong magic, unknown type code,
            truncated header or data, or bytes left over after the data the header
            announces; the message names the file.
    """
    path = Path(path)
    raw = path.read_bytes()
    if not raw:
        raise IdxFormatError(f"{path}: empty file, expected an IDX header")
    compressed = raw[:2] == _GZIP_MAGIC
    data = _decompress(path, raw) if compressed else raw
    where = f"{path} (after gzip decompression)" if compressed else str(path)
    if not data:
        raise IdxFormatError(f"{where}: empty, expected an IDX header")
    if len(data) < 4:
        raise IdxFormatError(f"{where}: truncated header, {len(data)} bytes, need at least 4")
    if data[0] != 0 or data[1] != 0:
        raise IdxFormatError(
            f"{where}: wrong magic {data[:4].hex(' ')}, an IDX file starts with 00 00 <type> <ndim>"
        )
    type_code, ndim = data[2], data[3]
    if type_code not in IDX_TYPE_CODES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_TYPE_CODES)
        raise IdxFormatError(f"{where}: unknown IDX type code 0x{type_code:02X}, known: {known}")
    dtype = IDX_TYPE_CODES[type_code]
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise IdxFormatError(
            f"{where}: truncated header, {len(data)} bytes, {ndim} dims need {header_len}"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    count = math.prod(dims)
    expected = count * dtype.itemsize
    have = len(data) - header_len
    if have < expected:
        raise IdxFormatError(
            f"{where}: truncated data, dims {dims} of {dtype.name} need {expected} bytes "
            f"after the header, file has {have}"
        )
    if have > expected:
        raise IdxFormatError(
            f"{where}: {have - expected} trailing bytes after the {expected} data bytes "
            f"that dims {dims} of {dtype.name} announce"
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header_len).reshape(dims)
    # astype copies: the result is writable and in native byte order.
    return array.astype(dtype.newbyteorder("="))


def _type_code(dtype: np.dtype) -> int:
    for code, idx_dtype in IDX_TYPE_CODES.items():
        if dtype.kind == idx_dtype.kind and dtype.itemsize == idx_dtype.itemsize:
            return code
    raise ValueError(
        f"array dtype {dtype} has no IDX type code; supported: uint8, int8, int16, int32, "
        "float32, float64 (convert explicitly, write_idx does not cast)"
    )


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write `array` as an IDX file, gzip-compressed when `path` ends in `.gz`.

    Written with `snn.atomic.write_bytes_atomic` (temp file in the same directory, fsync,
    `os.replace`), so a reader never sees a half-written file; missing parent directories
    are created. Gzip output has mtime 0, so the same array always gives the same bytes.

    Args:
        path: destination file.
        array: any shape with 0..255 axes, each of length < 2**32; dtype uint8, int8,
            int16, int32, float32 or float64 (any byte order). No casting is done.

    Raises:
        ValueError: unsupported dtype, too many axes, or an axis too long for uint32.
    """
    path = Path(path)
    array = np.asarray(array)
    code = _type_code(array.dtype)
    if array.ndim > 255:
        raise ValueError(f"array has {array.ndim} axes, IDX stores at most 255")
    if any(d > _MAX_DIM for d in array.shape):
        raise ValueError(f"array shape {array.shape} has an axis longer than 2**32 - 1")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    body = np.ascontiguousarray(array, dtype=IDX_TYPE_CODES[code]).tobytes()
    payload = header + body
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)

    write_bytes_atomic(path, payload)
