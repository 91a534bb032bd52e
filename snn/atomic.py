"""Atomic file writes: a reader sees the old file or the whole new one, never a torn write.

Every writer in spikeloop goes through `atomic_path` (or `write_bytes_atomic` on top of it): the
data goes to a unique temporary file `.<name>.<pid>.<random>.tmp` in the target's folder, is
fsynced, renamed over the target, and the folder is fsynced. No temporary file outlives the write:

- an exception (disk full, a failing writer) removes it;
- SIGTERM with the default disposition is turned into an exception for the duration of the write,
  the file is removed, and the signal is re-delivered so the process still ends as terminated
  (a Python SIGTERM handler the program installed itself is left alone, and an ignored SIGTERM
  stays ignored); only the main thread can install handlers, so writes from other threads rely on
  the next point;
- SIGKILL cannot be caught: the next write of the same target removes the temporary files of that
  target whose pid is not a running process (pids are per machine: on a folder shared between
  machines, a live writer elsewhere whose pid is free here would lose its temporary file and fail
  at the rename, never leave a torn target).
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class _Terminated(BaseException):
    """SIGTERM arrived while writing (BaseException: no `except Exception` in a writer swallows it)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def stale_temp_files(path: str | Path) -> list[Path]:
    """Temporary files of `path` left by processes that no longer run (killed mid-write)."""
    path = Path(path)
    prefix, out = f".{path.name}.", []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return out
    for e in entries:
        if not (e.name.startswith(prefix) and e.name.endswith(".tmp")):
            continue
        middle = e.name[len(prefix):-len(".tmp")].split(".")
        if len(middle) != 2 or not middle[0].isdigit():
            continue  # not one of ours (or of another target whose name extends this one's)
        pid = int(middle[0])
        if pid != os.getpid() and not _pid_alive(pid):
            out.append(Path(e.path))
    return out


def remove_stale_temp_files(path: str | Path) -> list[Path]:
    """Remove `stale_temp_files(path)`; returns those removed."""
    removed = []
    for p in stale_temp_files(path):
        try:
            p.unlink()
            removed.append(p)
        except FileNotFoundError:  # another writer cleaned it first
            pass
    return removed


@contextmanager
def _sigterm_raises() -> Iterator[bool]:
    """While inside, SIGTERM raises _Terminated (if its disposition is the default and this is the
    main thread). Yields whether the handler is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield False
        return

    def handler(signum, frame):
        raise _Terminated()

    signal.signal(signal.SIGTERM, handler)
    try:
        yield True
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable; not every platform/file system lets a folder be opened or synced."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a unique temporary path beside `path` for the caller to write (by name); on leaving
    normally, fsync it and rename it over `path`; on an exception or SIGTERM, remove it.

        with atomic_path("out/graph.nir") as tmp:
            nir.write(str(tmp), graph)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path)
    tmp = None
    try:
        with _sigterm_raises():
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
            tmp = Path(name)
            os.close(fd)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual mode of a new file
            yield tmp
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
            tmp = None
    except _Terminated:
        _remove(tmp)
        os.kill(os.getpid(), signal.SIGTERM)  # the default disposition is back: end as terminated
        raise SystemExit(128 + signal.SIGTERM) from None  # only if SIGTERM is blocked in this thread
    except BaseException:
        _remove(tmp)
        raise
    _fsync_dir(path.parent)


def _remove(tmp: Path | None) -> None:
    if tmp is not None:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write `data` to a unique temp file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))
