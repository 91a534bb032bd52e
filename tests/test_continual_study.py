"""Multi-seed continual studies (`spikeloop continual --seeds`): per-seed results equal separate
single-seed runs, parallel workers equal a sequential run bit for bit (accuracy matrices and final
weights digests), finished jobs are reused and corrupt job files recomputed, torchrun-style ranks
share the jobs, and the device evaluation scores each task on its head like a direct sim run."""

import json

import pytest
import torch

from experiments.cli import main

TINY = ["continual", "--benchmark", "permuted-digits", "--tasks", "2", "--train-per-task", "96",
        "--test-per-task", "40", "--num-steps", "3", "--hidden", "16", "--batch-size", "32", "--lr", "5e-3",
        "--no-progress", "--json"]


def _cli(capsys, *args):
    rc = main([*TINY, *args])
    captured = capsys.readouterr()
    return rc, (json.loads(captured.out) if rc == 0 else None), captured.err


def _per_seed(study, name):
    return study["strategies"][name]["per_seed"]


def _results(per_seed):
    """Per seed: everything but the timings."""
    return {s: {k: v for k, v in d.items() if k not in ("seconds", "job_cpu_seconds")} for s, d in per_seed.items()}


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    """A 2-seed study of finetune and gpm run in this process (workers 1)."""
    out = tmp_path_factory.mktemp("seq")
    rc = main([*TINY, "--strategy", "finetune,gpm", "--seeds", "0,1", "--workers", "1", "--out", str(out),
               "--json"])
    assert rc == 0
    return out, json.loads((out / "results.json").read_text())


def test_two_seed_study_equals_single_seed_runs(tmp_path, capsys):
    rc, study, _ = _cli(capsys, "--strategy", "finetune,multitask", "--seeds", "0,1", "--workers", "1",
                        "--out", str(tmp_path / "study"))
    assert rc == 0 and study["meta"]["complete"] and study["meta"]["seeds"] == [0, 1]
    for seed in (0, 1):
        rc, single, _ = _cli(capsys, "--strategy", "finetune,multitask", "--seed", str(seed),
                             "--out", str(tmp_path / f"single{seed}"))
        assert rc == 0
        for name in ("finetune", "multitask"):
            got = _per_seed(study, name)[str(seed)]
            assert got["accuracy_matrix"] == single[name]["accuracy_matrix"]
            assert got["acc"] == single[name]["acc"]
    ft = study["strategies"]["finetune"]
    accs = [_per_seed(study, "finetune")[s]["acc"] for s in ("0", "1")]
    assert accs[0] != accs[1]  # the seeds differ, so the statistics below are not of equal values
    assert ft["acc"]["mean"] == pytest.approx(sum(accs) / 2)
    assert ft["acc"]["std"] == pytest.approx(abs(accs[0] - accs[1]) / 2 ** 0.5)
    R0, R1 = (_per_seed(study, "finetune")[s]["accuracy_matrix"] for s in ("0", "1"))
    assert ft["accuracy_matrix_mean"][1][0] == pytest.approx((R0[1][0] + R1[1][0]) / 2)
    assert ft["accuracy_matrix_mean"][0][1] is None
    assert study["strategies"]["multitask"]["bwt"]["mean"] is None  # no diagonal: no BWT
    acc_pair = [c for c in study["paired"] if c["metric"] == "acc"]
    assert len(acc_pair) == 1 and acc_pair[0]["a"] == "finetune" and acc_pair[0]["b"] == "multitask"
    mt = [_per_seed(study, "multitask")[s]["acc"] for s in ("0", "1")]
    assert acc_pair[0]["differences"] == pytest.approx([accs[0] - mt[0], accs[1] - mt[1]])
    assert not any(c["metric"] == "bwt" for c in study["paired"])
    for png in ("accuracy_matrix.png", "task_curves.png", "metrics.png"):
        assert (tmp_path / "study" / png).read_bytes()[:4] == b"\x89PNG"


def test_parallel_workers_equal_sequential(sequential, tmp_path, capsys):
    _, seq = sequential
    rc, par, _ = _cli(capsys, "--strategy", "finetune,gpm", "--seeds", "0,1", "--workers", "2",
                      "--out", str(tmp_path))
    assert rc == 0 and par["meta"]["workers"] == 2 and len(par["meta"]["jobs_run_here"]) == 4
    digests = set()
    for name in ("finetune", "gpm"):
        for seed in ("0", "1"):
            a, b = _per_seed(seq, name)[seed], _per_seed(par, name)[seed]
            assert a["accuracy_matrix"] == b["accuracy_matrix"]
            assert a["weights_digest"] == b["weights_digest"]
            digests.add(a["weights_digest"])
    assert len(digests) == 4  # every job trained different weights: equal digests are not trivial


def test_resume_reuses_and_recomputes_corrupt_jobs(sequential, capsys):
    out, first = sequential
    args = ["--strategy", "finetune,gpm", "--seeds", "0,1", "--workers", "1", "--out", str(out)]
    rc, again, _ = _cli(capsys, *args)
    assert rc == 0 and again["meta"]["jobs_run_here"] == [] and len(again["meta"]["jobs_reused"]) == 4
    assert again["strategies"]["gpm"]["per_seed"] == first["strategies"]["gpm"]["per_seed"]
    # a torn file and an edited result: both recomputed, never used
    torn = out / "jobs" / "gpm-seed1.json"
    torn.write_text(torn.read_text()[:200])
    edited = out / "jobs" / "finetune-seed0.json"
    rec = json.loads(edited.read_text())
    rec["result"]["acc"] = 0.123
    edited.write_text(json.dumps(rec))
    rc, fixed, err = _cli(capsys, *args)
    assert rc == 0 and "checksum" in err and "unreadable" in err
    assert sorted(fixed["meta"]["jobs_run_here"]) == ["finetune-seed0", "gpm-seed1"]
    for name in ("finetune", "gpm"):
        assert _results(_per_seed(fixed, name)) == _results(_per_seed(first, name))
    # the same --out with another configuration is refused, naming the file
    rc, _, err = _cli(capsys, "--strategy", "gpm", "--seeds", "0,", "--epochs", "2", "--out", str(out))
    assert rc == 2 and "gpm-seed0.json" in err and "another configuration" in err


def test_launcher_ranks_share_the_jobs(sequential, tmp_path, capsys, monkeypatch):
    _, seq = sequential
    args = ["--strategy", "finetune,gpm", "--seeds", "0,1", "--workers", "1", "--out", str(tmp_path)]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    rc, r0, _ = _cli(capsys, *args)
    # seed-major job list finetune-0, gpm-0, finetune-1, gpm-1: rank 0 takes the even positions
    assert rc == 0 and not r0["meta"]["complete"]
    assert r0["meta"]["jobs_run_here"] == ["finetune-seed0", "finetune-seed1"]
    assert sorted(r0["meta"]["missing"]) == ["gpm-seed0", "gpm-seed1"]
    assert not (tmp_path / "results.json").exists()
    monkeypatch.setenv("RANK", "1")
    rc, r1, _ = _cli(capsys, *args)
    assert rc == 0 and r1["meta"]["complete"] and r1["meta"]["jobs_run_here"] == ["gpm-seed0", "gpm-seed1"]
    for name in ("finetune", "gpm"):
        assert _results(_per_seed(r1, name)) == _results(_per_seed(seq, name))
    monkeypatch.setenv("RANK", "2")
    rc, _, err = _cli(capsys, *args)
    assert rc == 2 and "RANK=2" in err


def test_device_eval_scores_each_task_on_its_head(digits):
    from experiments.continual.device_eval import DeviceEvaluator, device_matrices
    from experiments.continual.schedules import mlp_spec
    from hw.compiler import compile_model
    from hw.deploy import device_inputs, run_dataset
    from hw.device import open_device
    from snn.continual import ContinualConfig, run_sequential, split_stream

    stream = split_stream(digits, 2, train_per_task=80, test_per_task=40)
    spec = mlp_spec(64, 10, (24,), 4)
    cfg = ContinualConfig(epochs=3, batch_size=16, lr=1e-2, seed=0, progress=False)
    r = run_sequential(spec, stream, "gpm", cfg, on_task_end=DeviceEvaluator(spec, stream, "mcu", "sim"))
    dm = device_matrices(r.extra["task_end"], 2)
    assert [[v is None for v in row] for row in dm["accuracy_matrix"]] == [[False, True], [False, False]]
    assert [c["task"] for c in dm["compile_reports"]] == [0, 1]
    assert all(0 <= layer["weight_relative_rmse"] < 0.05 for layer in dm["compile_reports"][1]["layers"])
    # the last row by hand: compile the final weights, run each task's test set on sim, argmax of the
    # output spike counts over the task's two classes
    model = r.extra["model"]
    prog = compile_model(spec, model.state_dict(), "mcu")
    expected = []
    with open_device("sim", profile="mcu") as dev:
        dev.load(prog.to_bytes())
        for j, task in enumerate(stream.tasks):
            x = task.test_x
            run = run_dataset(dev, spec, x, 64, inputs=device_inputs(spec, x, range(len(x))))
            head = list(stream.tasks[j].head)
            pred = torch.tensor(head)[run.counts[:, head].argmax(1)]
            expected.append((pred == task.test_y).float().mean().item())
    assert dm["accuracy_matrix"][1] == pytest.approx(expected, abs=1e-12)
    assert min(expected) > 0.6  # two classes per task: trained heads are far above chance (50 %)
    for i in range(2):  # the device and the float model disagree on at most 1 - agreement of the samples
        for j in range(i + 1):
            gap = abs(dm["accuracy_matrix"][i][j] - dm["float_accuracy_matrix"][i][j])
            assert gap <= 1 - dm["agreement_matrix"][i][j] + 1e-12
