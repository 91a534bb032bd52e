"""The skip guard (tests/skip_guard.py) on a throw-away test tree, run in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TREE = '''
import pytest

def test_runs():
    pass

@pytest.mark.gpu
def test_needs_gpu():
    pytest.skip("needs CUDA")

def test_{name}():
    {body}
'''


def _run(tmp_path, body, name="other", no_skip="1"):
    (tmp_path / "test_tree.py").write_text(TREE.format(name=name, body=body))
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: needs CUDA\n")
    env = dict(os.environ, SPIKELOOP_NO_SKIP=no_skip,
               PYTHONPATH=str(Path(__file__).parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "skip_guard", "-p", "no:cacheprovider",
                        str(tmp_path)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    return r.returncode, r.stdout + r.stderr


def test_unmarked_skip_fails_the_run_and_is_named(tmp_path):
    rc, out = _run(tmp_path, 'pytest.importorskip("no_such_module_xyz")', name="needs_dep")
    assert rc == 1, out
    assert "test_tree.py::test_needs_dep: Skipped: could not import 'no_such_module_xyz'" in out
    assert "test_needs_gpu" not in out.split("SPIKELOOP_NO_SKIP")[-1]   # the gpu skip is allowed


@pytest.mark.parametrize("body, no_skip", [("pass", "1"), ('pytest.skip("x")', "0")])
def test_allowed_skips_and_disabled_guard_pass(tmp_path, body, no_skip):
    rc, out = _run(tmp_path, body, no_skip=no_skip)
    assert rc == 0, out
