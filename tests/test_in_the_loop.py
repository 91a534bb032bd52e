"""In-the-loop training (hw/loop_training.py): the host pass against snn/model.py's forward and
autograd, training through a mismatched `sim` chip, calibration, the CLI, and the same run through
the emulated board over the serial link."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from hw.device import DeviceError, RunResult, open_device
from hw.loop_training import (FloatMismatch, InTheLoopTrainer, LoopConfig, calibrate, device_accuracy,
                              flat_inputs, host_forward, stages_for)
from snn.checkpoint import load_checkpoint
from snn.model import build_model
from snn.presets import fc

CHIP = "sim?chip=1&mismatch=0.3&noise=0.02"


@pytest.fixture(scope="module")
def float_model(trained_digits_checkpoint):
    ck = load_checkpoint(trained_digits_checkpoint)
    return ck.spec, ck.state_dict


def _flat(x):
    return x.reshape(len(x), -1)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_host_pass_is_the_float_model_and_its_gradient(reset):
    """Without device spikes, host_forward's spikes equal SpikingNetwork's; fed with the float
    model's own spikes as the 'device' spikes, the loss gradient equals autograd through
    SpikingNetwork.forward (the straight-through pass reduces to BPTT)."""
    torch.manual_seed(0)
    spec = fc((64,), 10, hidden=24, num_steps=12, reset=reset)
    model = build_model(spec)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(3)
    x = (torch.rand(12, 8, 64, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    ref = model(x, record=True)
    stages = stages_for(spec, "mcu")
    plain = host_forward(model, stages, x)
    assert torch.equal(plain[-1], ref.spikes)
    assert 0 < float(ref.spikes.detach().sum()) < ref.spikes.numel()
    w = torch.randn(12, 8, 10, generator=torch.Generator().manual_seed(2))
    (ref.spikes * w).sum().backward()
    want = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    dev = {k: ref.record[st.neuron]["spikes"].detach() for k, st in enumerate(stages)}
    outs = host_forward(model, stages, x, dev)
    (outs[-1] * w).sum().backward()
    got = [p.grad for p in model.parameters()]
    assert any(float(g.abs().sum()) > 0 for g in want)
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)


def test_forward_values_come_from_the_device():
    torch.manual_seed(0)
    spec = fc((64,), 10, hidden=16, num_steps=6)
    model = build_model(spec)
    x = (torch.rand(6, 4, 64) < 0.3).float()
    fake = {0: (torch.rand(6, 4, 16) < 0.5).to(torch.uint8), 1: (torch.rand(6, 4, 10) < 0.5).to(torch.uint8)}
    outs = host_forward(model, stages_for(spec, "mcu"), x, fake)
    for k in fake:
        assert torch.equal(outs[k], fake[k].float())
    outs[-1].sum().backward()
    assert float(model.layers[0].weight.grad.abs().sum()) > 0  # reaches the first layer through layer 0


def test_in_the_loop_recovers_a_mismatched_chip(float_model, digits):
    spec, sd = float_model
    tx, ty = _flat(digits.test_x), digits.test_y
    with open_device("sim") as ideal:
        ideal_acc = device_accuracy(ideal, spec, sd, tx, ty)
    with open_device(CHIP) as dev:
        tr = InTheLoopTrainer(spec, dev, _flat(digits.train_x[:640]), digits.train_y[:640],
                              LoopConfig(epochs=1, batch_size=32, lr=1e-3, progress=False), sd, tx, ty)
        res = tr.fit()
    naive = res.initial["test_device_accuracy"]
    after = res.history[-1]["test_device_accuracy"]
    assert naive < ideal_acc - 0.05          # the chip costs accuracy
    assert after > naive + 0.05              # one epoch through it recovers most of it
    h = res.history[-1]
    assert h["device_seconds"] > 0 and h["host_seconds"] > 0 and "link_bytes" not in h


def test_noise_aware_training_runs_without_a_device(float_model, digits):
    spec, sd = float_model
    tr = InTheLoopTrainer(spec, None, _flat(digits.train_x[:128]), digits.train_y[:128],
                          LoopConfig(epochs=1, batch_size=64, progress=False), sd,
                          mismatch=FloatMismatch(0.2, 0.2, 0.2, 0.02))
    res = tr.fit(lambda epoch, model: {"seen": epoch})
    assert res.history[0]["seen"] == 1 and "test_device_accuracy" not in res.history[0]
    assert not torch.equal(res.model.state_dict()["layers.1.weight"], sd["layers.1.weight"])
    with pytest.raises(ValueError, match="FloatMismatch.sigma_gain"):
        FloatMismatch(sigma_gain=2.0)


def test_calibration_recovers_a_mismatched_chip_without_labels(float_model, digits):
    spec, sd = float_model
    tx, ty = _flat(digits.test_x), digits.test_y
    with open_device(CHIP) as dev:
        naive = device_accuracy(dev, spec, sd, tx, ty)
        cal, report = calibrate(dev, spec, sd, _flat(digits.train_x[:256]), rounds=4)
        after = device_accuracy(dev, spec, cal, tx, ty)
    assert after > naive + 0.05
    first, last = report[0]["mean_abs_log_rate_ratio"], report[-1]["mean_abs_log_rate_ratio"]
    assert last[0] < first[0]  # the hidden layer's rates moved toward the float model's


class NoRecording:
    """A device whose run() ignores probe (as a board without recording would)."""

    def __init__(self, dev):
        self.dev, self.uri = dev, "norec"

    def info(self):
        return self.dev.info()

    def load(self, p):
        self.dev.load(p)

    def run(self, x, probe=False):
        r = self.dev.run(x)
        return RunResult(r.output_spikes, r.counters)


def test_a_device_without_layer_spikes_is_refused(float_model, digits):
    spec, sd = float_model
    with open_device("sim") as dev:
        tr = InTheLoopTrainer(spec, NoRecording(dev), _flat(digits.train_x[:32]), digits.train_y[:32],
                              LoopConfig(epochs=1, batch_size=32, progress=False), sd)
        with pytest.raises(DeviceError, match="no per-layer spikes"):
            tr.fit()


def test_cli_train_in_the_loop(trained_digits_checkpoint, tmp_path, capsys):
    from experiments.cli import main
    out = tmp_path / "loop"
    assert main(["train", "--in-the-loop", CHIP, "--init", str(trained_digits_checkpoint), "--epochs", "1",
                 "--max-train", "320", "--batch-size", "32", "--lr", "1e-3", "--out", str(out), "--no-progress",
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["device"] == CHIP and res["profile"] == "mcu" and res["epochs"] == 1
    assert res["test_device_accuracy"] > res["initial_device_accuracy"]
    assert (out / "model.safetensors").is_file() and (out / "in_the_loop.png").is_file()
    ck = load_checkpoint(out / "model.safetensors")
    assert ck.extra["in_the_loop"] == CHIP
    assert main(["train", "--init", str(trained_digits_checkpoint), "--out", str(out)]) != 0
    assert "--init applies to --in-the-loop" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None,
                    reason="the emulator builds the firmware with make and a C compiler")
def test_same_trajectory_through_the_emulated_board(float_model, digits):
    """The board and sim are bit-exact with mismatch and noise, so in-the-loop training through
    either gives the same weights, batch for batch (link bytes reported for the serial path)."""
    spec, sd = float_model
    q = "chip=5&mismatch=0.25&noise=0.02"
    x, y = _flat(digits.train_x[:96]), digits.train_y[:96]
    results = []
    for uri in ("sim?" + q, "emulator?" + q):
        with open_device(uri) as dev:
            tr = InTheLoopTrainer(spec, dev, x, y, LoopConfig(epochs=1, batch_size=32, progress=False), sd)
            results.append(tr.fit())
    a, b = (r.model.state_dict() for r in results)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["layers.1.weight"], sd["layers.1.weight"])
    assert results[1].history[0]["link_bytes"] > 0
