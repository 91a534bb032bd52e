"""`spikeloop train` / `spikeloop eval` on a tiny digits run: one JSON object with the documented
keys, files written, eval reproduces train's test accuracy, clean errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from experiments.cli import main
from snn.checkpoint import load_checkpoint
from snn.presets import fc

TINY = ["--dataset", "digits", "--hidden", "16", "--num-steps", "6", "--max-train", "200", "--max-test", "60",
        "--epochs", "2", "--batch-size", "40", "--no-progress"]


def _json_out(capsys) -> dict:
    out = capsys.readouterr().out
    lines = [l for l in out.splitlines() if l.strip()]
    assert len(lines) == 1, out  # exactly one JSON object on stdout
    return json.loads(lines[0])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_train")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["train", *TINY, "--out", str(out), "--json"])
    assert rc == 0
    return out, json.loads(buf.getvalue())


def test_train_json_keys_and_files(tiny_run):
    out, res = tiny_run
    assert {"test_accuracy", "train_samples_per_s", "epochs", "checkpoint"} <= set(res)
    assert 0.0 <= res["test_accuracy"] <= 1.0 and res["train_samples_per_s"] > 0
    assert res["epochs"] == 2 and res["num_steps"] == 6 and res["dataset"] == "digits"
    assert res["train_samples"] == 180  # 200 less the 10% validation split
    ck = load_checkpoint(res["checkpoint"])
    assert ck.extra["dataset"] == "digits"
    assert ck.spec == fc((1, 8, 8), 10, hidden=16, num_steps=6)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    for name in ("learning_curves", "spike_raster"):
        path = res["plots"][name]
        assert os.path.getsize(path) > 1000 and open(path, "rb").read(4) == b"\x89PNG"
    assert json.loads((out / "spec.json").read_text()) == ck.spec.to_dict()


def test_eval_reproduces_train_accuracy(tiny_run, capsys):
    out, res = tiny_run
    assert main(["eval", res["checkpoint"], "--max-test", "60", "--json"]) == 0
    ev = _json_out(capsys)
    assert ev["dataset"] == "digits"  # taken from the checkpoint
    assert ev["test_samples"] == 60
    assert ev["test_accuracy"] == res["test_accuracy"]
    assert ev["checkpoint"] == res["checkpoint"]


def test_human_readable_output(tiny_run, capsys):
    _, res = tiny_run
    assert main(["eval", res["checkpoint"], "--max-test", "60"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("evaluated ") and "test_accuracy:" in text


def test_progress_goes_to_stderr(tmp_path, capfd):
    """With progress on (the default), stdout still holds exactly the one JSON object."""
    args = ["train", "--dataset", "digits", "--hidden", "8", "--num-steps", "4", "--max-train", "100",
            "--max-test", "20", "--epochs", "2", "--out", str(tmp_path), "--json"]
    assert main(args) == 0
    out, err = capfd.readouterr()
    lines = [l for l in out.splitlines() if l.strip()]
    assert len(lines) == 1 and json.loads(lines[0])["epochs"] == 2, out
    assert '"epoch": 1' in err  # the per-epoch records are logged on stderr


def test_train_from_a_spec_file(tmp_path, capsys):
    spec = fc((64,), 10, hidden=8, num_steps=4)  # flat input: the CLI reshapes 1x8x8 images to 64
    path = tmp_path / "spec.json"
    path.write_text(spec.to_json())
    args = ["train", "--model", str(path), "--dataset", "digits", "--max-train", "100", "--max-test", "20",
            "--epochs", "1", "--no-progress", "--out", str(tmp_path / "run"), "--json"]
    assert main(args) == 0
    res = _json_out(capsys)
    assert load_checkpoint(res["checkpoint"]).spec == spec


def test_errors_are_reported_cleanly(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    assert main(["eval", str(bad), "--json"]) == 2
    err = capsys.readouterr()
    assert err.out == "" and "spikeloop eval: error:" in err.err and "not a spikeloop checkpoint" in err.err
    spec = fc((1, 28, 28), 10, hidden=8)
    path = tmp_path / "mnist_spec.json"
    path.write_text(spec.to_json())
    assert main(["train", "--model", str(path), "--dataset", "digits", "--epochs", "1",
                 "--out", str(tmp_path / "x")]) == 2
    assert "does not fit dataset digits" in capsys.readouterr().err
    assert main(["train", "--model", "resnet", "--epochs", "1", "--out", str(tmp_path / "y")]) == 2
    assert "unknown model preset 'resnet'" in capsys.readouterr().err


def test_console_script(tiny_run):
    """The installed `spikeloop` command (pyproject [project.scripts]) runs the same CLI."""
    exe = shutil.which("spikeloop") or os.path.join(os.path.dirname(sys.executable), "spikeloop")
    if not os.path.exists(exe):
        pytest.skip("spikeloop console script not installed (pip install -e .)")
    _, res = tiny_run
    proc = subprocess.run([exe, "eval", res["checkpoint"], "--max-test", "60", "--json"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["test_accuracy"] == res["test_accuracy"]
