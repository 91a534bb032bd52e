"""`spikeloop export` and `spikeloop deploy` end to end on the trained digits checkpoint: exactly one
JSON object on stdout, the files they write, and clear errors."""

from __future__ import annotations

import json

import nir
import pytest

from experiments.cli import main
from hw.program import Program


def run_json(capsys, argv):
    assert main(argv) == 0
    out = capsys.readouterr().out
    return json.loads(out)  # exactly one JSON object


def test_export_program_and_nir(tmp_path, capsys, trained_digits_checkpoint):
    ck = str(trained_digits_checkpoint)
    res = run_json(capsys, ["export", ck, "--format", "program", "--profile", "mcu",
                            "--out", str(tmp_path / "d.slpg"), "--json"])
    prog = Program.load(tmp_path / "d.slpg", expected_profile="mcu")
    assert res["bytes"] == (tmp_path / "d.slpg").stat().st_size == prog.size_bytes()
    assert res["crc32"] == f"0x{prog.checksum:08x}" and (prog.num_inputs, prog.num_outputs) == (64, 10)
    view = json.loads((tmp_path / "d.slpg.json").read_text())
    assert view["crc32"] == res["crc32"] and len(view["layers"]) == 2
    assert [r["spec_layers"] for r in res["report"]["layers"]] == [[1, 2], [3, 4]]
    res = run_json(capsys, ["export", ck, "--format", "nir", "--out", str(tmp_path / "d.nir"), "--json"])
    graph = nir.read(str(tmp_path / "d.nir"))
    assert set(res["nodes"]) == set(graph.nodes) and isinstance(graph.nodes["layer2"], nir.LIF)


def test_deploy_sim_json(capsys, trained_digits_checkpoint):
    res = run_json(capsys, ["deploy", str(trained_digits_checkpoint), "--device", "sim", "--profile", "mcu",
                            "--max-test", "60", "--no-progress", "--json"])
    for key in ("device_accuracy", "float_accuracy", "agreement_with_float", "timesteps_per_s", "synops"):
        assert key in res
    assert res["test_samples"] == 60 and res["agreement_with_float"] >= 0.95
    assert res["synops"] == sum(c["synops"] for c in res["layer_counters"].values()) > 0
    assert "agreement_with_sim" not in res  # only for devices other than sim


def test_deploy_other_backend_reports_agreement_with_sim(capsys, trained_digits_checkpoint):
    """A registered backend other than sim (here: sim under another scheme, with link_stats) gets
    agreement_with_sim and link_efficiency."""
    from hw.device import register_backend
    from hw.sim import SimulatedDevice

    class Linked(SimulatedDevice):
        def link_stats(self):
            return {"link_efficiency": 0.93, "bytes": 1}

    register_backend("linkedsim", lambda uri, profile="mcu", **kw: Linked(profile))
    res = run_json(capsys, ["deploy", str(trained_digits_checkpoint), "--device", "linkedsim", "--profile", "xylo",
                            "--max-test", "40", "--no-progress", "--json"])
    assert res["agreement_with_sim"] == 1.0 and res["link_efficiency"] == 0.93


def test_cli_errors(tmp_path, capsys, trained_digits_checkpoint):
    ck = str(trained_digits_checkpoint)
    assert main(["export", ck, "--profile", "loihi", "--out", str(tmp_path / "x.slpg")]) == 2
    assert "reset 'subtract' is not supported by profile 'loihi'" in capsys.readouterr().err
    assert main(["deploy", ck, "--device", "warp://x", "--max-test", "10", "--no-progress"]) == 2
    assert "unknown device backend 'warp'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", ck, "--format", "onnx", "--out", str(tmp_path / "x")])
