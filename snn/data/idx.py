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

`read_idx` streams: it checks the header (and the payload size it declares, against
`DEFAULT_MAX_BYTES` or `max_bytes=`) before reading the payload, then reads exactly that many
bytes, so a small gzip file that expands to gigabytes is refused without using the memory.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

from snn.atomic import write_bytes_atomic

__all__ = ["DEFAULT_MAX_BYTES", "IdxFormatError", "read_idx", "write_idx", "IDX_TYPE_CODES"]

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
# numpy arrays have at most 32 axes before numpy 2.0, 64 since; IDX allows 255
_NUMPY_MAX_NDIM = 64 if int(np.__version__.split(".")[0]) >= 2 else 32

# Largest payload read_idx reads unless told otherwise (MNIST's training images are 47 MB).
# Checked against the header before anything is read, so a small (gzip) file whose header
# announces a huge array fails at once instead of filling memory.
DEFAULT_MAX_BYTES = 1 << 30

_CHUNK = 1 << 20  # bytes per read of the payload and of any trailing data
# A gzip stream can go on after the payload without end (a "zip bomb" of zeros); this many
# trailing bytes are counted, then reading stops.
_MAX_TRAILING_COUNTED = 1 << 20


class IdxFormatError(ValueError):
    """The bytes of a file are not a valid IDX array; the message names the file."""


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes} bytes ({nbytes / scale:.1f} {unit})"
    return f"{nbytes} bytes"


class _Reader:
    """Reads a plain or gzip stream, turning gzip errors into IdxFormatError naming the file."""

    def __init__(self, path: Path, stream, compressed: bool) -> None:
        self.path, self.stream = path, stream
        self.where = f"{path} (after gzip decompression)" if compressed else str(path)

    def _gzip_error(self, exc: Exception) -> IdxFormatError:
        return IdxFormatError(f"{self.path}: corrupt or truncated gzip stream ({exc})")

    def read(self, n: int) -> bytes:
        """Up to n bytes (fewer only at the end of the stream)."""
        out = b""
        try:
            while len(out) < n:
                chunk = self.stream.read(n - len(out))
                if not chunk:
                    break
                out += chunk
        except (OSError, EOFError, zlib.error) as exc:
            # EOFError: gzip stream cut short; OSError (BadGzipFile) / zlib.error: corrupt.
            raise self._gzip_error(exc) from exc
        return out

    def readinto(self, view: memoryview) -> int:
        """Fill `view` in chunks; returns how many bytes arrived (less than len(view) at the end)."""
        got = 0
        try:
            while got < len(view):
                n = self.stream.readinto(view[got:got + _CHUNK])
                if not n:
                    break
                got += n
        except (OSError, EOFError, zlib.error) as exc:
            raise self._gzip_error(exc) from exc
        return got

    def count_rest(self, limit: int) -> int:
        """Bytes left in the stream, counted up to just over `limit` (then reading stops)."""
        n = 0
        while n <= limit:
            chunk = self.read(min(_CHUNK, limit + 1 - n))
            if not chunk:
                break
            n += len(chunk)
        return n


def _describe(dims: tuple[int, ...], dtype: np.dtype) -> str:
    return f"dims {dims} of {dtype.name}"


def _check_expected_shape(where: str, dims: tuple[int, ...], expected_shape) -> None:
    if expected_shape is None:
        return
    expected = tuple(expected_shape)
    if len(dims) != len(expected) or any(e is not None and d != e for d, e in zip(dims, expected)):
        shown = "[" + ", ".join("N" if e is None else str(e) for e in expected) + "]"
        raise IdxFormatError(f"{where}: header declares shape {list(dims)}, expected {shown}")


def read_idx(path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES,
             expected_shape: tuple[int | None, ...] | None = None) -> np.ndarray:
    """Read one IDX file, plain or gzip-compressed, into a numpy array.

    Streaming: the header (magic, type code, ndim, dims) is read and checked first, from the
    gzip stream if the file is compressed; the size it declares is checked against
    `max_bytes` and `expected_shape` before any of the payload is read; then exactly the
    declared number of bytes is read into the result, and the file must end there. Memory
    use is the size of the result, whatever the file expands to.

    Args:
        path: file to read.
        max_bytes: largest payload (prod(dims) * item size) accepted, default
            `DEFAULT_MAX_BYTES` (1 GiB); raise it to read larger files.
        expected_shape: if given, the dims the header must declare, None for any length
            (e.g. (None, 28, 28) for MNIST images, (None,) for labels).

    Returns:
        array of shape `dims` as stored in the header (e.g. [N, 28, 28] for idx3 images,
        [N] for idx1 labels), native byte order, writable, dtype one of
        uint8 / int8 / int16 / int32 / float32 / float64 per the header's type code.

    Raises:
        FileNotFoundError: the file does not exist.
        IdxFormatError (a ValueError): empty file, wrong magic, unknown type code, more
            dims than numpy supports, a shape other than `expected_shape`, a payload
            larger than `max_bytes`, truncated header or data, bytes left over after the
            data the header announces, or a corrupt gzip stream; the message names the file.
    """
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(2)
        if not magic:
            raise IdxFormatError(f"{path}: empty file, expected an IDX header")
        compressed = magic == _GZIP_MAGIC
        f.seek(0)
        if compressed:
            with gzip.GzipFile(fileobj=f, mode="rb") as gz:
                return _read_stream(_Reader(path, gz, True), None, max_bytes, expected_shape)
        return _read_stream(_Reader(path, f, False), os.fstat(f.fileno()).st_size, max_bytes, expected_shape)


def _read_stream(r: _Reader, file_size: int | None, max_bytes: int, expected_shape) -> np.ndarray:
    where = r.where
    head = r.read(4)
    if not head:
        raise IdxFormatError(f"{where}: empty, expected an IDX header")
    if len(head) < 4:
        raise IdxFormatError(f"{where}: truncated header, {len(head)} bytes, need at least 4")
    if head[0] != 0 or head[1] != 0:
        raise IdxFormatError(
            f"{where}: wrong magic {head.hex(' ')}, an IDX file starts with 00 00 <type> <ndim>"
        )
    type_code, ndim = head[2], head[3]
    if type_code not in IDX_TYPE_CODES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_TYPE_CODES)
        raise IdxFormatError(f"{where}: unknown IDX type code 0x{type_code:02X}, known: {known}")
    dtype = IDX_TYPE_CODES[type_code]
    if ndim > _NUMPY_MAX_NDIM:
        raise IdxFormatError(
            f"{where}: header declares {ndim} dimensions, numpy {np.__version__} arrays have at "
            f"most {_NUMPY_MAX_NDIM}"
        )
    header_len = 4 + 4 * ndim
    dim_bytes = r.read(4 * ndim)
    if len(dim_bytes) < 4 * ndim:
        raise IdxFormatError(
            f"{where}: truncated header, {4 + len(dim_bytes)} bytes, {ndim} dims need {header_len}"
        )
    dims = struct.unpack(f">{ndim}I", dim_bytes)
    _check_expected_shape(where, dims, expected_shape)
    count = math.prod(dims)
    expected = count * dtype.itemsize
    if expected > max_bytes:
        raise IdxFormatError(
            f"{where}: header declares {_describe(dims, dtype)}, {_size(expected)}, more than the "
            f"limit of {_size(max_bytes)} (pass max_bytes= to read_idx to allow more)"
        )
    if file_size is not None:  # a plain file: its length is known before reading
        _check_length(where, dims, dtype, file_size - header_len)
    # read the big-endian payload straight into the result, then swap bytes in place
    out = np.empty(count, dtype=dtype.newbyteorder("="))
    have = r.readinto(memoryview(out).cast("B")) if expected else 0
    if have < expected:
        _check_length(where, dims, dtype, have)
    if file_size is None:  # gzip: count what follows the payload, up to a limit
        trailing = r.count_rest(_MAX_TRAILING_COUNTED)
        if trailing > _MAX_TRAILING_COUNTED:
            raise IdxFormatError(
                f"{where}: more than {_MAX_TRAILING_COUNTED} trailing bytes after the {expected} "
                f"data bytes that {_describe(dims, dtype)} announce"
            )
        _check_length(where, dims, dtype, have + trailing)
    if dtype.itemsize > 1 and sys.byteorder == "little":
        out.byteswap(inplace=True)  # the file is big-endian, `out` native
    return out.reshape(dims)


def _check_length(where: str, dims: tuple[int, ...], dtype: np.dtype, have: int) -> None:
    """Refuse a payload of `have` bytes where `dims` of `dtype` need exactly prod(dims) items."""
    expected = math.prod(dims) * dtype.itemsize
    if have < expected:
        raise IdxFormatError(
            f"{where}: truncated data, {_describe(dims, dtype)} need {expected} bytes "
            f"after the header, file has {have}"
        )
    if have > expected:
        raise IdxFormatError(
            f"{where}: {have - expected} trailing bytes after the {expected} data bytes "
            f"that {_describe(dims, dtype)} announce"
        )


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
