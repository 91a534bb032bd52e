"""Data-parallel training: `spikeloop train` under torchrun with 2 gloo processes on CPU gives the
weights of single-process training on the same global batches."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from experiments.cli import main
from snn.checkpoint import load_checkpoint
from snn.model import build_model
from snn.training import _shard

# 180 training samples (200 less the 10% validation split) in global batches of 49: the last
# batch of 33 splits 17/16 over two ranks, so uneven shards are covered.
ARGS = ["train", "--dataset", "digits", "--hidden", "16", "--num-steps", "6", "--max-train", "200",
        "--max-test", "60", "--epochs", "2", "--batch-size", "49", "--lr", "5e-3", "--loss", "ce_count",
        "--seed", "5", "--no-progress", "--json"]


def test_shards_cover_the_batch():
    for n in (0, 1, 7, 33, 64):
        for world in (1, 2, 3):
            parts = [_shard(n, r, world) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(parts[i][1] == parts[i + 1][0] for i in range(world - 1))
            sizes = [hi - lo for lo, hi in parts]
            assert max(sizes) - min(sizes) <= 1


@pytest.mark.slow
def test_torchrun_two_gloo_ranks_match_single_process(tmp_path, capsys):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available in this torch build")
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env |= {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    ddp_out = tmp_path / "ddp"
    proc = subprocess.run(
        [torchrun, "--standalone", "--nnodes", "1", "--nproc_per_node", "2", "-m", "experiments.cli",
         *ARGS, "--out", str(ddp_out)],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [l for l in proc.stdout.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stdout  # only rank 0 prints
    ddp = json.loads(lines[0])
    assert ddp["world_size"] == 2 and ddp["epochs"] == 2

    single_out = tmp_path / "single"
    assert main([*ARGS, "--out", str(single_out)]) == 0
    single = json.loads(capsys.readouterr().out)
    assert single["world_size"] == 1

    a = load_file(ddp_out / "model.safetensors")
    b = load_file(single_out / "model.safetensors")
    assert set(a) == set(b)
    for k in a:
        # same updates up to float summation order (the gradient all-reduce adds two half sums)
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-5, msg=k)
    # training moved the weights: the comparison is not between two untouched initialisations
    torch.manual_seed(5)
    init = build_model(load_checkpoint(single_out / "model.safetensors").spec).state_dict()
    assert (a["layers.1.weight"] - init["layers.1.weight"]).abs().max() > 1e-3
    assert ddp["test_accuracy"] == pytest.approx(single["test_accuracy"], abs=1 / 60 + 1e-9)
    ddp_hist = [json.loads(l) for l in (ddp_out / "metrics.jsonl").read_text().splitlines()]
    single_hist = [json.loads(l) for l in (single_out / "metrics.jsonl").read_text().splitlines()]
    for hd, hs in zip(ddp_hist, single_hist, strict=True):
        assert hd["train_loss"] == pytest.approx(hs["train_loss"], rel=1e-5)
        assert hd["train_accuracy"] == pytest.approx(hs["train_accuracy"], abs=1e-9)
        assert hd["val_accuracy"] == pytest.approx(hs["val_accuracy"], abs=1e-9)


@pytest.mark.slow
def test_torchrun_ranks_share_a_continual_study(tmp_path, capsys):
    """`spikeloop continual --seeds` under torchrun: each of 2 ranks runs its share of the
    (strategy, seed) jobs into one --out, one of them merges, and the per-seed results equal a
    single-process run's."""
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env |= {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    study = ["continual", "--benchmark", "permuted-digits", "--tasks", "2", "--train-per-task", "96",
             "--test-per-task", "40", "--num-steps", "3", "--hidden", "16", "--lr", "5e-3",
             "--strategy", "finetune,gpm", "--seeds", "2", "--no-progress", "--json"]
    proc = subprocess.run([torchrun, "--standalone", "--nnodes", "1", "--nproc_per_node", "2", "-m",
                           "experiments.cli", *study, "--out", str(tmp_path / "ranks")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outs = [json.loads(l) for l in proc.stdout.splitlines() if l.strip()]
    assert sorted(o["meta"]["rank"] for o in outs) == [0, 1]
    assert all(o["meta"]["world_size"] == 2 and len(o["meta"]["jobs_run_here"]) == 2 for o in outs)
    merged = [o for o in outs if o["meta"]["complete"]]
    assert merged  # the rank that finished last found every job file
    assert main([*study, "--workers", "1", "--out", str(tmp_path / "single")]) == 0
    single = json.loads(capsys.readouterr().out)
    for name in ("finetune", "gpm"):
        for seed in ("0", "1"):
            a = merged[0]["strategies"][name]["per_seed"][seed]
            b = single["strategies"][name]["per_seed"][seed]
            assert a["accuracy_matrix"] == b["accuracy_matrix"] and a["weights_digest"] == b["weights_digest"]
