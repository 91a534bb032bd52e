"""End to end: `spikeloop run` on a tiny configuration, checked stage by stage against independent
recomputation (the checkpoint re-evaluated, the program file re-read, the report re-parsed)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from experiments.cli import main
from hw.program import Program
from snn.checkpoint import load_checkpoint
from snn.data import load_dataset, subset
from snn.training import EVAL_SEED, evaluate

TINY = ["--epochs", "2", "--hidden", "24", "--num-steps", "10", "--max-train", "300", "--max-test", "60",
        "--crosscheck-samples", "2", "--no-progress", "--json"]


def _run(capsys, *argv) -> dict:
    assert main(["run", *argv]) == 0
    return json.loads(capsys.readouterr().out)


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["run", "--out", str(out), "--device", "emulator", *TINY]) == 0
    return out, json.loads(buf.getvalue())


def test_every_stage_ran_and_wrote_its_files(tiny_run):
    out, res = tiny_run
    assert set(res["stages"]) == {"train", "crosscheck", "compile", "deploy"}
    assert res["trained"] is True and res["stages"]["train"]["reused"] is False
    for name in ("model.safetensors", "metrics.jsonl", "learning_curves.png", "spike_raster.png",
                 "crosscheck.png", "confusion.png", "program.mcu.bin", "program.mcu.json",
                 "report.html", "report.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "report.json").read_text()) == res


def test_numbers_agree_with_independent_recomputation(tiny_run):
    out, res = tiny_run
    # the test subset of `--max-test 60` (chosen independently of --max-train, as `spikeloop eval` does)
    data = subset(load_dataset("digits"), max_test=60, seed=0)
    ckpt = load_checkpoint(out / "model.safetensors")
    n = res["test_samples"]
    assert n == len(data.test_y) == 60
    float_acc = evaluate(ckpt.build(), data.test_x.reshape(n, *ckpt.spec.input_shape), data.test_y,
                         seed=EVAL_SEED)["accuracy"]
    assert res["float_accuracy"] == pytest.approx(float_acc, abs=1e-9)
    d = res["stages"]["deploy"]
    for key, cm in (("float_accuracy", d["confusion_float"]), ("device_accuracy", d["confusion_device"])):
        assert sum(map(sum, cm)) == n
        assert res[key] == pytest.approx(sum(cm[i][i] for i in range(len(cm))) / n, abs=1e-6)
        # rows are true classes: their sums are the label counts
        assert [sum(r) for r in cm] == [int((data.test_y == c).sum()) for c in range(len(cm))]
    # The emulator runs the same integer arithmetic as the simulated device: identical rasters.
    assert res["agreement_with_sim"] == 1.0
    assert 0.0 <= res["link_efficiency"] <= 1.0
    # Brian2 reproduces the float64 snnTorch network exactly.
    assert res["brian2_spike_agreement"] == 1.0
    assert res["brian2_max_membrane_abs_diff"] <= 1e-12
    prog = Program.load(out / "program.mcu.bin")
    assert f"0x{prog.checksum:08x}" == res["stages"]["compile"]["program_crc32"]
    assert prog.size_bytes() == res["stages"]["compile"]["program_bytes"]
    assert res["seconds"] >= sum(res["stage_seconds"].values()) - 1e-6


def test_report_html_is_self_contained_with_every_image(tiny_run):
    out, _ = tiny_run
    page = (out / "report.html").read_text()
    p = _Images()
    p.feed(page)
    p.close()
    assert p.tags[0] == "html" and "body" in p.tags
    assert len(p.srcs) == 4  # learning curves, spike raster, Brian2 overlay, confusion matrices
    for src in p.srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG")


def test_second_run_reuses_the_checkpoint(tiny_run, capsys):
    out, first = tiny_run
    res = _run(capsys, "--out", str(out), "--device", "sim", *TINY)
    assert res["trained"] is False
    assert res["float_accuracy"] == first["float_accuracy"]
    assert res["device_accuracy"] == first["device_accuracy"]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_report_renders_in_headless_chromium(tiny_run, tmp_path):
    out, _ = tiny_run
    shot = tmp_path / "report.png"
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,3000", f"--screenshot={shot}",
           (out / "report.html").as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 20_000
    dom = subprocess.run(cmd[:-2] + ["--dump-dom", (out / "report.html").as_uri()], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<img") == 4 and "Brian2 cross-check" in dom


def test_bad_profile_is_a_clear_error(tiny_run, capsys):
    out, _ = tiny_run
    assert main(["run", "--out", str(out), "--device", "sim", "--profile", "nosuchchip", *TINY]) == 2
    assert "nosuchchip" in capsys.readouterr().err
