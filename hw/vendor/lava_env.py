"""Create or find the side venv (Python 3.10) that runs Lava for `hw/vendor/lava.py`; never imports Lava.

lava-nc 0.10.0 needs Python >= 3.10, < 3.11 and numpy < 2, while spikeloop runs on Python 3.11, so
Lava lives in a venv of its own and is only ever run as a subprocess (`hw/vendor/lava_runner.py`).

    python -m hw.vendor.lava_env            # create it if needed, print its python
    python -m hw.vendor.lava_env --json     # the same as a JSON object (versions, paths, seconds)
    python -m hw.vendor.lava_env --no-create  # only report; exit 1 if it is not there

Where: $SPIKELOOP_LAVA_VENV, else $XDG_CACHE_HOME/spikeloop/lava-venv, else
~/.cache/spikeloop/lava-venv. Which Python 3.10: $SPIKELOOP_PY310 if set (and then only it), else
`python3.10` on PATH, else pyenv's `$PYENV_ROOT/versions/3.10.*` (PYENV_ROOT defaults to ~/.pyenv).
The venv is complete once its marker file (`MARKER`, with the installed versions) is written; a
folder without a valid marker is rebuilt. A lock file serialises concurrent creators.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ENV_FORMAT = "spikeloop-lava-env 1"
LAVA_REQUIREMENT = "lava-nc==0.10.0"
# lava-nc 0.10.0 requires numpy >= 1.24.4, < 2.0; 1.26.4 is the last 1.x release.
NUMPY_REQUIREMENT = "numpy==1.26.4"
REQUIREMENTS = (LAVA_REQUIREMENT, NUMPY_REQUIREMENT)
PYTHON_SERIES = (3, 10)
MARKER = "spikeloop-lava.json"
INSTALL_LOG = "spikeloop-lava-install.log"
PIP_TIMEOUT_S = 1800
_PROBE = ("import sys, venv, ensurepip; "
          "print('%d.%d.%d' % sys.version_info[:3])")


class LavaEnvError(RuntimeError):
    """The Lava side venv cannot be found or created; the message says what is missing."""


@dataclass(frozen=True)
class LavaEnv:
    """A ready side venv: `python` runs Lava; `versions` maps package names to installed versions."""

    venv: Path
    python: Path
    versions: dict
    created: bool       # created by this call (False: found ready)
    seconds: float      # time this call took

    def to_dict(self) -> dict:
        return {"format": ENV_FORMAT, "venv": str(self.venv), "python": str(self.python),
                "versions": dict(self.versions), "created": self.created, "seconds": round(self.seconds, 3)}


def venv_dir() -> Path:
    """$SPIKELOOP_LAVA_VENV, $XDG_CACHE_HOME/spikeloop/lava-venv or ~/.cache/spikeloop/lava-venv."""
    env = os.environ.get("SPIKELOOP_LAVA_VENV")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "spikeloop" / "lava-venv"


def _probe(python: str) -> str | None:
    """The Python version string of `python` if it runs and has venv + ensurepip, else None."""
    try:
        out = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _series_ok(version: str | None) -> bool:
    return version is not None and tuple(int(x) for x in version.split(".")[:2]) == PYTHON_SERIES


def find_python310() -> tuple[str, str]:
    """(path, version) of a Python 3.10 with venv and ensurepip; LavaEnvError naming every place looked."""
    tried = []
    explicit = os.environ.get("SPIKELOOP_PY310")
    if explicit:
        v = _probe(explicit)
        if _series_ok(v):
            return explicit, v
        raise LavaEnvError(f"SPIKELOOP_PY310={explicit!r} is not a working Python 3.10 with venv and "
                           f"ensurepip (it reported {v or 'nothing: it did not run'})")
    tried.append("$SPIKELOOP_PY310 (unset)")
    on_path = shutil.which("python3.10")
    if on_path:
        v = _probe(on_path)
        if _series_ok(v):
            return on_path, v
        tried.append(f"python3.10 on PATH ({on_path}: {'reports ' + v if v else 'does not run'})")
    else:
        tried.append("python3.10 on PATH (none)")
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    cands = sorted(root.glob("3.10.*/bin/python3.10"), reverse=True) if root.is_dir() else []
    for c in cands:
        v = _probe(str(c))
        if _series_ok(v):
            return str(c), v
    tried.append(f"pyenv versions under {root} ({len(cands)} 3.10.x that run)" if cands
                 else f"pyenv versions under {root} (no 3.10.x)")
    raise LavaEnvError("no Python 3.10 found for Lava (lava-nc 0.10.0 needs Python >=3.10,<3.11); looked at: "
                       + "; ".join(tried) + ". Install one (e.g. `pyenv install 3.10`) or set SPIKELOOP_PY310.")


def _python_in(venv: Path) -> Path:
    return venv / "bin" / "python"


def read_marker(venv: Path) -> dict | None:
    """The marker of a complete venv for `REQUIREMENTS`, or None if absent, stale or unreadable."""
    try:
        m = json.loads((venv / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict) or m.get("format") != ENV_FORMAT or m.get("requirements") != list(REQUIREMENTS):
        return None
    return m if _python_in(venv).exists() else None


def _check_imports(python: Path) -> dict:
    """Import lava and numpy in the venv; their versions, or LavaEnvError with the error."""
    code = ("import json, platform, numpy; from importlib import metadata; import lava.proc.lif.models; "
            "print(json.dumps({'lava-nc': metadata.version('lava-nc'), 'numpy': numpy.__version__, "
            "'python': platform.python_version()}))")
    try:
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as e:
        raise LavaEnvError(f"the Lava venv's python {python} does not run: {e}") from None
    if out.returncode != 0:
        raise LavaEnvError(f"importing lava in {python} failed:\n{out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def _lock(venv: Path):
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / (venv.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run_logged(cmd: list[str], log: Path, what: str) -> None:
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        try:
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=PIP_TIMEOUT_S,
                                stdin=subprocess.DEVNULL).returncode
        except subprocess.TimeoutExpired:
            rc = f"timeout after {PIP_TIMEOUT_S} s"
        except OSError as e:
            rc = str(e)
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise LavaEnvError(f"{what} failed ({rc}); full log: {log}\n{tail}")


def ensure_lava_env(create: bool = True, verify: bool = False) -> LavaEnv:
    """The side venv with `REQUIREMENTS`, created when missing (and `create`).

    verify: also import lava in a found venv (a created one is always verified).
    Raises LavaEnvError naming what is missing (no Python 3.10, pip failure, not created)."""
    t0 = time.perf_counter()
    venv = venv_dir()
    marker = read_marker(venv)
    if marker is None and not create:
        raise LavaEnvError(f"no Lava venv at {venv} (create it with `python -m hw.vendor.lava_env`)")
    created = False
    if marker is None:
        with _lock(venv):
            marker = read_marker(venv)  # another process may have finished it meanwhile
            if marker is None:
                marker = _create(venv)
                created = True
    elif verify:
        _check_imports(_python_in(venv))
    return LavaEnv(venv, _python_in(venv), marker["versions"], created, time.perf_counter() - t0)


def _create(venv: Path) -> dict:
    python, version = find_python310()
    if venv.exists():
        shutil.rmtree(venv)  # incomplete (no valid marker): start again
    venv.mkdir(parents=True)
    log = venv / INSTALL_LOG
    t0 = time.perf_counter()
    _run_logged([python, "-m", "venv", str(venv)], log, f"creating a venv with {python}")
    py = str(_python_in(venv))
    _run_logged([py, "-m", "pip", "install", "--no-input", "--disable-pip-version-check", *REQUIREMENTS],
                log, f"pip install {' '.join(REQUIREMENTS)} into {venv}")
    versions = _check_imports(_python_in(venv))
    freeze = subprocess.run([py, "-m", "pip", "freeze", "--disable-pip-version-check"], capture_output=True,
                            text=True, timeout=120).stdout.split()
    marker = {"format": ENV_FORMAT, "requirements": list(REQUIREMENTS), "versions": versions,
              "base_python": python, "base_python_version": version, "freeze": freeze,
              "install_seconds": round(time.perf_counter() - t0, 1)}
    tmp = venv / (MARKER + ".tmp")
    tmp.write_text(json.dumps(marker, indent=1) + "\n")
    tmp.replace(venv / MARKER)  # the marker appears only once everything above succeeded
    return marker


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hw.vendor.lava_env", description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print a JSON object instead of the python path")
    ap.add_argument("--no-create", action="store_true", help="do not create the venv; exit 1 if missing")
    ap.add_argument("--verify", action="store_true", help="import lava in a found venv too")
    args = ap.parse_args(argv)
    try:
        env = ensure_lava_env(create=not args.no_create, verify=args.verify)
    except LavaEnvError as e:
        if args.json:
            print(json.dumps({"format": ENV_FORMAT, "error": str(e), "venv": str(venv_dir())}))
        print(f"lava_env: {e}", file=sys.stderr)
        return 1
    print(json.dumps(env.to_dict(), indent=1) if args.json else env.python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
