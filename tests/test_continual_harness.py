"""The continual-learning loop: projection keeps a linear layer's old-task outputs, identical streams
across strategies, a tiny end-to-end run of every strategy, and the `spikeloop continual` command."""

import json

import pytest
import torch

from snn.continual import (ContinualConfig, Task, TaskStream, initial_state, run_sequential,
                           run_strategies)
from snn.continual.streams import permuted_stream
from snn.presets import fc

N_IN = 64


def _pattern_task(name, seed, n_patterns=8, copies=40):
    """Binary patterns (pixels exactly 0 or 1, so rate-coded spikes equal the pattern at every step):
    the task's inputs span an n_patterns-dimensional subspace exactly."""
    gen = torch.Generator().manual_seed(seed)
    P = (torch.rand(n_patterns, N_IN, generator=gen) < 0.3).float()
    labels = torch.randint(0, 10, (n_patterns,), generator=gen)
    x = P.repeat(copies, 1)
    y = labels.repeat(copies)
    return Task(name, x, y, P.clone(), labels.clone(), head=tuple(range(10))), P


def _two_pattern_tasks():
    t1, P1 = _pattern_task("a", 1)
    t2, _ = _pattern_task("b", 2)
    return TaskStream("patterns", (t1, t2), 10, (N_IN,), multi_head=False), P1


CFG = ContinualConfig(epochs=3, batch_size=32, lr=5e-3, seed=0, progress=False)
SPEC = fc((N_IN,), 10, hidden=32, num_steps=4)


def _first_layer_change(strategy, **options):
    stream, P1 = _two_pattern_tasks()
    init = initial_state(SPEC, 0)
    # the same run stopped after task 0 gives the reference outputs of the first linear layer
    one = TaskStream("first", stream.tasks[:1], 10, (N_IN,), multi_head=False)
    before = run_sequential(SPEC, one, strategy, CFG, init, strategy_options=options).extra["model"]
    after = run_sequential(SPEC, stream, strategy, CFG, init, strategy_options=options).extra["model"]
    with torch.no_grad():
        y0, y1 = before.layers[0](P1), after.layers[0](P1)
        w_change = (after.layers[0].weight - before.layers[0].weight).abs().max()
    return (y1 - y0).abs().max().item(), w_change.item()


def test_finetune_changes_old_outputs():
    change, w_change = _first_layer_change("finetune")
    assert w_change > 1e-2 and change > 1e-2  # so the checks below can fail


def test_gpm_keeps_old_outputs_of_a_linear_layer():
    change, w_change = _first_layer_change("gpm", threshold_first=0.999999, threshold=0.99)
    assert w_change > 1e-2  # the layer did learn task 2 ...
    assert change < 1e-5    # ... without moving its outputs on task-1 inputs


def test_hlop_keeps_old_outputs_of_a_linear_layer():
    # 10 subspace neurons for the 8-dimensional input span of task 1; with 20 Hebbian iterations per
    # batch the rule converges to it within float32 precision
    change, w_change = _first_layer_change("hlop", sizes={"layers.0": [10, 6], "layers.2": [8, 8]},
                                           lr=0.05, iterations=20)
    assert w_change > 1e-2
    assert change < 1e-5


def test_every_strategy_end_to_end_on_identical_streams(digits):
    stream = permuted_stream(digits, 3, seed=0, train_per_task=150, test_per_task=60)
    spec = fc((64,), 10, hidden=32, num_steps=4)
    cfg = ContinualConfig(epochs=1, batch_size=32, lr=5e-3, seed=1, progress=False)
    names = ("finetune", "ewc", "gpm", "hlop", "replay", "multitask")
    res = run_strategies(spec, stream, names, cfg, options={"ewc": {"fisher_samples": 20}})
    assert list(res) == list(names)
    for name, r in res.items():
        R = r.accuracy_matrix
        assert len(R) == 3 and all(len(row) == 3 for row in R)
        assert 0.0 <= r.acc <= 1.0
        assert r.seconds > 0 and len(r.epoch_seconds) == (1 if name == "multitask" else 3)
        if name == "multitask":
            assert R[0] == [None] * 3 and R[1] == [None] * 3 and None not in R[2] and r.bwt is None
        else:
            assert [[v is None for v in row] for row in R] == [[j > i for j in range(3)] for i in range(3)]
            assert r.bwt == pytest.approx(((R[2][0] - R[0][0]) + (R[2][1] - R[1][1])) / 2)
    # task 0 is learned identically by every sequential strategy: same initial weights, data order,
    # input spikes and test spikes (projection, penalties and replay only act from task 1 on)
    first = {res[n].accuracy_matrix[0][0] for n in names if n != "multitask"}
    assert len(first) == 1
    assert res["hlop"].extra["subspace_sizes"][0] == {"layers.0": 7, "layers.2": 4}
    assert len(res["gpm"].extra["basis_sizes"]) == 3


def test_split_stream_scores_each_task_on_its_own_head(digits):
    from snn.continual import split_stream
    stream = split_stream(digits, 5, train_per_task=80, test_per_task=40)
    spec = fc((64,), 10, hidden=32, num_steps=4)
    cfg = ContinualConfig(epochs=4, batch_size=16, lr=1e-2, seed=0, progress=False)
    r = run_sequential(spec, stream, "hlop", cfg)
    # two classes per task: chance is 50 %, a trained head is far above it
    assert min(r.accuracy_matrix[i][i] for i in range(5)) > 0.6
    # the per-task output heads are not projected (their rows are disjoint)
    assert list(r.extra["subspace_sizes"][0]) == ["layers.0"]


def test_bad_config_and_mismatched_spec(digits):
    with pytest.raises(ValueError, match="optimizer"):
        ContinualConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="lr"):
        ContinualConfig(lr=0)
    stream = permuted_stream(digits, 1, train_per_task=20, test_per_task=10)
    with pytest.raises(ValueError, match="outputs"):
        run_sequential(fc((64,), 5, hidden=8, num_steps=2), stream, "finetune", CFG)
    with pytest.raises(ValueError, match="unknown strategy"):
        run_sequential(SPEC, stream, "si", CFG)


def test_cli_prints_one_json_object_per_strategy(tmp_path, capsys):
    from experiments.cli import main
    rc = main(["continual", "--benchmark", "permuted-digits", "--tasks", "2", "--strategy", "finetune,hlop",
               "--train-per-task", "64", "--test-per-task", "30", "--num-steps", "3", "--hidden", "16",
               "--hlop-lr", "input=0.02,hidden=0.2", "--hlop-lr-schedule", "cosine",
               "--out", str(tmp_path), "--no-progress", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"finetune", "hlop", "meta"}
    for name in ("finetune", "hlop"):
        assert {"acc", "bwt", "accuracy_matrix", "seconds"} <= set(out[name])
    assert out["hlop"]["epoch_cpu_time_ratio_vs_finetune"] > 0
    assert out["hlop"]["options"]["lr"] == {"input": 0.02, "hidden": 0.2}
    assert out["hlop"]["options"]["lr_schedule"] == "cosine"
    assert out["meta"]["format_version"] == 1 and out["meta"]["tasks"] == 2
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["hlop"]["accuracy_matrix"] == out["hlop"]["accuracy_matrix"]
    assert (tmp_path / "accuracy_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "task_curves.png").exists()
    assert main(["continual", "--benchmark", "permuted-digits", "--strategy", "nope", "--out", str(tmp_path)]) == 2


def test_conv_layers_are_projected_on_unfolded_patches(digits):
    from snn.continual import make_strategy
    from snn.presets import conv
    stream = permuted_stream(digits, 2, seed=0, train_per_task=128, test_per_task=32)
    spec = conv((1, 8, 8), 10, channels=(4, 8), num_steps=3)
    cfg = ContinualConfig(epochs=1, batch_size=32, lr=5e-3, seed=0, progress=False)
    init = initial_state(spec, 0)
    one = TaskStream("first", stream.tasks[:1], 10, (64,), multi_head=False)
    before = run_sequential(spec, one, "gpm", cfg, init).extra["model"]
    gpm = make_strategy("gpm", threshold_first=0.6, threshold=0.6)
    after = run_sequential(spec, stream, gpm, cfg, init).extra["model"]
    for name, idx in (("layers.0", 0), ("layers.3", 3)):
        basis = gpm.bases[name]  # after task 1: the memory of both tasks; check against task 0's part
        k0 = gpm.sizes[0][name]
        assert 0 < k0 < basis.shape[1]  # part of the patch space is protected, part is free
        dW = (after.layers[idx].weight - before.layers[idx].weight).reshape(after.layers[idx].weight.shape[0], -1)
        assert dW.abs().max() > 1e-3  # the layer learned task 1 ...
        assert (dW @ basis[:k0].T).abs().max() < 1e-5  # ... only outside task 0's patch subspace
