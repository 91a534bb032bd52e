"""Compile a C source string once per machine into a shared library and load it with ctypes.

The library lands in $SPIKELOOP_CACHE_DIR (default ~/.cache/spikeloop) as `<name>_<hash>.so`,
the hash over the source, the compiler and the flags, written atomically (a concurrent build
writes the same bytes). Flags: -O3 -ffp-contract=off (no -ffast-math, no contraction: each float
operation rounded as torch rounds it) plus `extra_flags`; when the build fails (e.g. a toolchain
without `target_clones`) it is retried with -DSL_NO_CLONES. Used by hw/sim_kernel.py and
snn/fused_lif_kernel.py.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("SPIKELOOP_CACHE_DIR") or Path.home() / ".cache" / "spikeloop")


def build_library(name: str, source: str, extra_flags: tuple[str, ...] = ()) -> ctypes.CDLL | None:
    """The loaded library of `source`, compiled on first use; None when no C compiler is found
    ($CC, cc, gcc, clang) or the compilation fails."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        return None
    flags = ["-O3", "-ffp-contract=off", *extra_flags]
    tag = hashlib.sha256((source + cc + (" ".join(extra_flags) if extra_flags else "")).encode()).hexdigest()[:16]
    lib_path = cache_dir() / f"{name}_{tag}.so"
    if not lib_path.exists():
        lib_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=lib_path.parent) as tmp:
            src, tmp_lib = Path(tmp) / f"{name}.c", Path(tmp) / "k.so"
            src.write_text(source)
            cmd = [cc, *flags, "-shared", "-fPIC", "-o", str(tmp_lib), str(src)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:  # a toolchain without target_clones (ifunc): one generic version
                r = subprocess.run(cmd + ["-DSL_NO_CLONES"], capture_output=True, text=True)
            if r.returncode != 0:
                return None
            os.replace(tmp_lib, lib_path)  # atomic: a concurrent build writes the same bytes
    return ctypes.CDLL(str(lib_path))


class LazyLibrary:
    """A C library built on first use: `available()` is True once `build()` returned a library and
    the environment switch `env` is not "0"; `lib` is then the loaded CDLL (None before/without)."""

    def __init__(self, build, env: str):
        self._build, self.env = build, env
        self.lib: ctypes.CDLL | None = None
        self._tried = False

    def available(self) -> bool:
        if os.environ.get(self.env, "1") == "0":
            return False
        if not self._tried:
            self._tried = True
            try:
                self.lib = self._build()
            except OSError:
                self.lib = None
        return self.lib is not None
