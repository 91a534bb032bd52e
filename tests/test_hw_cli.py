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


def test_deploy_a_nir_graph_runs_like_its_checkpoint(tmp_path, capsys, trained_digits_checkpoint):
    """Import then deploy: the checkpoint exported to NIR and deployed from the .nir file gives the
    same program and the same device and float results as deploying the checkpoint (emulated board)."""
    ck = str(trained_digits_checkpoint)
    run_json(capsys, ["export", ck, "--format", "nir", "--out", str(tmp_path / "m.nir"), "--json"])
    args = ["--device", "emulator", "--profile", "mcu", "--dataset", "digits", "--max-test", "40",
            "--no-progress", "--json"]
    from_ckpt = run_json(capsys, ["deploy", ck, *args])
    from_nir = run_json(capsys, ["deploy", str(tmp_path / "m.nir"), *args])
    for key in ("device_accuracy", "float_accuracy", "agreement_with_float", "agreement_with_sim",
                "spikes", "synops", "test_samples", "program_crc32"):
        assert from_nir[key] == from_ckpt[key], key
    assert from_nir["agreement_with_sim"] == 1.0 and from_nir["test_samples"] == 40
    # a foreign graph without dt needs --dt-s; a checkpoint refuses it
    assert main(["deploy", ck, "--dt-s", "0.001", *args]) == 2
    assert "--dt-s and --nir-producer apply to a NIR graph" in capsys.readouterr().err


def test_deploy_a_foreign_nir_graph_needs_its_time_step(tmp_path, capsys):
    """A hand-built continuous-time graph (no dt anywhere) is refused until --dt-s says its step."""
    import numpy as np
    rng = np.random.default_rng(0)
    tau = np.full(10, 0.02)
    graph = nir.NIRGraph.from_list(
        nir.Input(input_type=np.array([64])),
        nir.Affine(weight=rng.normal(0, 0.6, (10, 64)).astype(np.float32), bias=np.zeros(10, np.float32)),
        nir.LIF(tau=tau, r=tau / 1e-3, v_leak=np.zeros(10), v_threshold=np.ones(10), v_reset=np.zeros(10)),
        nir.Output(output_type=np.array([10])))
    nir.write(str(tmp_path / "g.nir"), graph)
    args = ["deploy", str(tmp_path / "g.nir"), "--dataset", "digits", "--max-test", "20", "--no-progress", "--json"]
    assert main(args) == 2
    assert "dt" in capsys.readouterr().err
    res = run_json(capsys, args + ["--dt-s", "0.001"])
    assert res["test_samples"] == 20 and res["program_bytes"] > 0 and res["spikes"] > 0
