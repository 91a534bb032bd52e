"""Malformed and hostile input found by an outside test campaign: non-finite weights, corrupted
checkpoint bytes, element-wise RLeaky checkpoints, absurd resource sizes, and temporary files
left by killed writers. Each test pins the exact refusal (message text) or a bit-exact round trip."""

from __future__ import annotations

import hashlib
import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import nir
import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save

import snn.model
import snn.training
from snn.checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, DIGEST_KEY, CheckpointError, CheckpointWarning,
                            load_checkpoint, save_checkpoint)
from snn.data import subset
from snn.finite import NonFiniteError, require_finite
from snn.model import build_model
from snn.spec import (MAX_NUM_STEPS, Flatten, Leaky, Linear, ModelSpec, ResourceLimitError, RLeaky, check_memory,
                      estimate_memory, format_bytes)
from snn.training import DivergedError, TrainConfig, Trainer, evaluate

REPO = Path(__file__).resolve().parents[1]


def fc_spec(hidden=5, **kw) -> ModelSpec:
    return ModelSpec(layers=(Linear(4, hidden), Leaky(beta=0.8), Linear(hidden, 3), Leaky()),
                     input_shape=(4,), num_steps=6, **kw)


def poisoned(spec, key="layers.0.weight", nan=3, inf=0):
    """A state dict of `spec` with `nan` NaN and `inf` +Inf entries in tensor `key`."""
    sd = {k: v.clone() for k, v in build_model(spec).state_dict().items()}
    flat = sd[key].view(-1)
    flat[:nan] = float("nan")
    flat[nan:nan + inf] = float("inf")
    return sd


# =========================================================================== 1. non-finite weights


def test_require_finite_names_each_tensor_and_counts():
    t = {"layers.2.weight": torch.tensor([1.0, float("inf"), -float("inf")]),
         "layers.0.bias": np.array([np.nan, 0.0, np.nan, np.inf]),
         "layers.1.reset_mechanism_val": torch.tensor(0), "ok": torch.zeros(3)}
    with pytest.raises(NonFiniteError) as e:
        require_finite(t, "ctx")
    assert str(e.value) == ("ctx: non-finite weights: layers.0.bias has 2 NaN and 1 infinite values; "
                            "layers.2.weight has 2 infinite values")
    with pytest.raises(NonFiniteError, match=r"^non-finite weights: x has 1 NaN value$"):
        require_finite({"x": torch.tensor([float("nan")])})
    require_finite({"a": torch.ones(2), "b": np.zeros(2, dtype=np.int64)}, "fine")  # no error


def test_build_model_refuses_non_finite_weights():
    with pytest.raises(NonFiniteError, match=r"^non-finite weights: layers.0.weight has 3 NaN values$"):
        build_model(fc_spec(), poisoned(fc_spec()))


def test_evaluate_refuses_a_model_whose_weights_became_nan():
    model = build_model(fc_spec())
    with torch.no_grad():
        model.layers[2].weight[1, 1] = float("nan")
    with pytest.raises(NonFiniteError, match=r"^evaluate: non-finite weights: layers.2.weight has 1 NaN value$"):
        evaluate(model, torch.rand(4, 4), torch.zeros(4, dtype=torch.long))


def test_checkpoint_save_and_load_refuse_non_finite_weights(tmp_path):
    spec, sd = fc_spec(), poisoned(fc_spec(), "layers.2.bias", nan=0, inf=2)
    with pytest.raises(NonFiniteError, match=r"^refusing to save a checkpoint: non-finite weights: "
                                             r"layers.2.bias has 2 infinite values$"):
        save_checkpoint(tmp_path / "m.safetensors", spec, sd)
    assert not (tmp_path / "m.safetensors").exists()
    # a file written by another tool, with a valid digest of its (NaN) tensors
    from snn.checkpoint import metadata_digest, tensor_digest
    sd = poisoned(spec, "layers.0.weight", nan=3)
    meta = {"format": CHECKPOINT_FORMAT, "format_version": str(CHECKPOINT_VERSION), "spec": spec.to_json(),
            DIGEST_KEY: tensor_digest(sd)}
    meta["metadata_sha256"] = metadata_digest(meta)
    path = tmp_path / "nan.safetensors"
    path.write_bytes(st_save(sd, metadata=meta))
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: non-finite weights: layers.0.weight has 3 NaN "
                                                        "values")):
        load_checkpoint(path)


@pytest.mark.parametrize("nan, inf, what", [(2, 0, "2 NaN values"), (0, 1, "1 infinite value")])
def test_compiler_refuses_non_finite_weights(nan, inf, what):
    """Before: NaN failed with "bias must hold integers in the int32 range"; Inf compiled to a row of zeros."""
    from hw.compiler import CompileError, compile_model

    with pytest.raises(CompileError, match=rf"^cannot compile for profile 'mcu': non-finite weights: "
                                           rf"layers.0.weight has {what}$"):
        compile_model(fc_spec(), poisoned(fc_spec(), nan=nan, inf=inf), "mcu")


def test_nir_export_refuses_non_finite_weights():
    from hw.nir_graph import NIRError, export_nir

    with pytest.raises(NIRError, match=r"^NIR export: non-finite weights: layers.0.weight has 3 NaN values$"):
        export_nir(fc_spec(), poisoned(fc_spec()))


def test_nir_import_refuses_non_finite_weights(tmp_path):
    from hw.nir_graph import NIRError, export_nir, import_nir, write_nir

    graph = export_nir(fc_spec(), build_model(fc_spec()).state_dict())
    w = np.array(graph.nodes["layer2"].weight)
    w[0, :2] = np.nan
    graph.nodes["layer2"] = nir.Affine(weight=w, bias=graph.nodes["layer2"].bias)
    path = write_nir(graph, tmp_path / "nan.nir")
    with pytest.raises(NIRError, match=r"^NIR graph: non-finite weights: layers.2.weight \(NIR node 'layer2'\) "
                                       r"has 2 NaN values$"):
        import_nir(path)


@pytest.fixture(scope="module")
def few_digits(digits):
    return subset(digits, max_train=60, max_test=20, seed=0)


def test_training_start_refuses_non_finite_initial_weights(few_digits, tmp_path, monkeypatch):
    real = snn.training.build_model

    def nan_model(spec, *a, **kw):
        m = real(spec, *a, **kw)
        with torch.no_grad():
            m.layers[1].weight[0, 0] = float("nan")
        return m

    monkeypatch.setattr(snn.training, "build_model", nan_model)
    spec = _digits_spec()
    cfg = TrainConfig(epochs=1, batch_size=30, seed=0, progress=False, val_fraction=0)
    with pytest.raises(NonFiniteError, match=r"^training start: non-finite weights: layers.1.weight has 1 NaN value$"):
        Trainer(spec, few_digits.train_x, few_digits.train_y, cfg, tmp_path).fit()
    assert list(tmp_path.iterdir()) == []  # stopped before the first epoch wrote metrics


def test_training_that_diverges_stops_without_a_checkpoint(few_digits, tmp_path, monkeypatch):
    real = snn.training._loss_sum
    calls = []

    def nan_after_first_batch(name, spikes, y):
        calls.append(1)
        loss = real(name, spikes, y)
        return loss * float("nan") if len(calls) > 1 else loss

    monkeypatch.setattr(snn.training, "_loss_sum", nan_after_first_batch)
    cfg = TrainConfig(epochs=3, batch_size=20, seed=0, progress=False, val_fraction=0)
    with pytest.raises(DivergedError, match=r"^training diverged in epoch 1: the epoch's training loss is nan "
                                            r"\(try a lower learning rate, now 0.002\); no checkpoint written$"):
        Trainer(_digits_spec(), few_digits.train_x, few_digits.train_y, cfg, tmp_path).fit()
    assert not (tmp_path / "model.safetensors").exists()
    assert len(calls) == 3  # one epoch of 60 samples / 20, then stopped


# =========================================================================== 2. checkpoint integrity


def _reference_digest(tensors: dict) -> str:
    """The canonical serialization as the snn.checkpoint docstring states it, written independently."""
    h = hashlib.sha256(b"spikeloop-tensors-v1\n")
    for name in sorted(tensors):
        a = tensors[name].numpy()
        h.update(f"{name}\n{str(tensors[name].dtype)[6:]}\n{','.join(map(str, a.shape))}\n{a.nbytes}\n".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _data_offset(data: bytes) -> int:
    return 8 + int.from_bytes(data[:8], "little")


def test_digest_is_the_documented_sha256(tmp_path):
    from safetensors import safe_open

    spec = fc_spec()
    path = save_checkpoint(tmp_path / "m.safetensors", spec, build_model(spec))
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    assert meta[DIGEST_KEY] == _reference_digest(tensors)
    assert meta["format_version"] == "1"


@pytest.mark.parametrize("flips", [1, 200])
def test_flipped_bytes_in_the_weights_are_refused(tmp_path, flips):
    """Before: 200 flipped bytes loaded silently (and evaluated at 22.5 % instead of 97.5 %). Even one
    flipped low mantissa bit (a finite, nearly equal value) must be refused."""
    spec = fc_spec(hidden=60)
    path = save_checkpoint(tmp_path / "m.safetensors", spec, build_model(spec))
    data = bytearray(path.read_bytes())
    start = _data_offset(data)
    rng = np.random.default_rng(0)
    for off in rng.choice(np.arange(start, len(data)), size=flips, replace=False):
        data[off] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: corrupt checkpoint data: the tensors' SHA-256 ")
                       + r"[0-9a-f]{16}\.\.\. does not match the tensor_sha256 [0-9a-f]{16}\.\.\. recorded when it "
                         r"was saved$"):
        load_checkpoint(path)


def test_checkpoint_without_digest_loads_with_a_warning(tmp_path):
    spec = fc_spec()
    sd = build_model(spec).state_dict()
    path = tmp_path / "old.safetensors"
    path.write_bytes(st_save(dict(sd), metadata={"format": CHECKPOINT_FORMAT, "format_version": "1",
                                                 "spec": spec.to_json(), "metrics": "{}", "extra": "{}"}))
    with pytest.warns(CheckpointWarning, match=re.escape(f"{path}: checkpoint has no tensor digest (tensor_sha256; "
                                                         "written by an older spikeloop)")):
        ck = load_checkpoint(path)
    assert all(torch.equal(ck.state_dict[k], v) for k, v in sd.items())
    save_checkpoint(path, ck.spec, ck.state_dict)  # re-saving adds the digest: no warning any more
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_checkpoint(path)


# =========================================================================== 3. element-wise RLeaky


def _rleaky_v_spec(input_shape=(4,), per_neuron=False, classes=3):
    """linear -> leaky -> linear -> element-wise rleaky (default learn_recurrent=True) -> linear -> leaky."""
    n_in = int(np.prod(input_shape))
    layers = (() if len(input_shape) == 1 else (Flatten(),)) + (
        Linear(n_in, 7), Leaky(beta=0.8), Linear(7, 6),
        RLeaky(beta=0.7, all_to_all=False, V=0.5, per_neuron=per_neuron), Linear(6, classes), Leaky())
    return ModelSpec(layers=layers, input_shape=input_shape, num_steps=8)


@pytest.mark.parametrize("per_neuron", [False, True])
def test_elementwise_rleaky_checkpoint_round_trip_is_bit_exact(tmp_path, per_neuron):
    spec = _rleaky_v_spec(per_neuron=per_neuron)
    assert spec.layers[3].learn_recurrent  # the default that made save fail
    torch.manual_seed(0)
    model = build_model(spec)
    with torch.no_grad():  # a trained-looking V, distinct per neuron when per_neuron
        model.layers[3].V.copy_(torch.linspace(-0.9, 1.3, model.layers[3].V.numel()).reshape(model.layers[3].V.shape))
    path = save_checkpoint(tmp_path / "r.safetensors", spec, model)
    ck = load_checkpoint(path)
    rebuilt = ck.build()
    assert torch.equal(rebuilt.layers[3].V, model.layers[3].V)
    assert rebuilt.layers[3].V is rebuilt.layers[3].recurrent.V  # still one shared parameter after load
    x = (torch.rand(8, 5, 4, generator=torch.Generator().manual_seed(1)) < 0.6).float()
    with torch.no_grad():
        a, b = model(x, record=True), rebuilt(x, record=True)
    assert a.spikes.sum() > 0
    for i in a.record:
        for k in a.record[i]:
            assert torch.equal(a.record[i][k], b.record[i][k]), (i, k)


def test_elementwise_rleaky_loads_from_either_name_and_refuses_disagreeing_copies(tmp_path):
    """A de-duplicating writer (safetensors' save_model) keeps one of the two names of V."""
    from snn.checkpoint import tensor_digest

    spec = _rleaky_v_spec(per_neuron=True)
    model = build_model(spec)
    with torch.no_grad():
        model.layers[3].V.copy_(torch.arange(6.0) / 4)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    for drop in ("layers.3.V", "layers.3.recurrent.V"):
        one = {k: v for k, v in sd.items() if k != drop}
        assert torch.equal(build_model(spec, one).layers[3].V, model.layers[3].V)
    sd["layers.3.recurrent.V"][0] = 9.0
    with pytest.raises(ValueError, match=r"^weights do not match the model spec: layers.3.V and layers.3.recurrent.V "
                                         r"are one shared parameter but hold different values$"):
        build_model(spec, sd)


def test_elementwise_rleaky_trains_and_saves(few_digits, tmp_path):
    """Before: the run trained to the end and then failed in save ("Some tensors share memory")."""
    spec = _rleaky_v_spec(input_shape=(1, 8, 8), classes=10)
    cfg = TrainConfig(epochs=1, batch_size=30, seed=0, progress=False, val_fraction=0)
    res = Trainer(spec, few_digits.train_x, few_digits.train_y, cfg, tmp_path).fit()
    rebuilt = load_checkpoint(res.checkpoint).build()
    x = (torch.rand(8, 5, 1, 8, 8, generator=torch.Generator().manual_seed(2)) < 0.5).float()
    with torch.no_grad():
        a, b = res.model(x), rebuilt(x)
    assert torch.equal(a.spikes, b.spikes) and torch.equal(a.mem, b.mem)


def test_an_unsaveable_run_fails_before_training(few_digits, tmp_path):
    """What the final save would refuse must fail at the start, not after the whole run."""
    cfg = TrainConfig(epochs=1, batch_size=30, seed=0, progress=False, val_fraction=0)
    trainer = Trainer(_digits_spec(), few_digits.train_x, few_digits.train_y, cfg, tmp_path,
                      extra={"not json": object()})
    with pytest.raises(TypeError, match="not JSON serializable"):
        trainer.fit()
    assert list(tmp_path.iterdir()) == []  # no epoch ran (it would have written metrics.jsonl)


def _digits_spec():
    return ModelSpec(layers=(Flatten(), Linear(64, 12), Leaky(), Linear(12, 10), Leaky()), input_shape=(1, 8, 8),
                     num_steps=6)


# =========================================================================== 4. resource limits


def test_spec_limits_name_the_layer():
    with pytest.raises(ResourceLimitError) as e:
        ModelSpec(layers=(Linear(784, 10 ** 9), Leaky()), input_shape=(784,))
    assert str(e.value) == ("layer 0 (linear): 1000000000 outputs per time step (shape [1000000000]), above the "
                            "limit of 10000000 per layer (snn.spec.MAX_NEURONS_PER_LAYER)")
    with pytest.raises(ResourceLimitError) as e:
        ModelSpec(layers=(Linear(784, 10), Leaky()), input_shape=(784,), num_steps=10 ** 9)
    assert str(e.value) == ("model spec: num_steps=1000000000 is above the limit of 100000 steps "
                            "(snn.spec.MAX_NUM_STEPS)")
    with pytest.raises(ResourceLimitError) as e:
        ModelSpec(layers=(Linear(100_000, 20_000), Leaky()), input_shape=(100_000,))
    assert str(e.value) == ("layer 0 (linear): 20000 x 100000 weights = 2000020000 parameters (8.0 GB of float32), "
                            "above the limit of 1000000000 parameters (snn.spec.MAX_PARAMETERS)")
    with pytest.raises(ResourceLimitError) as e:  # each layer fits, the sum does not
        ModelSpec(layers=(Linear(30_000, 30_000), Leaky(), Linear(30_000, 30_000), Leaky()), input_shape=(30_000,))
    assert str(e.value) == ("model spec: 1800060004 parameters in all (7.2 GB of float32; largest layer 0 (linear): "
                            "30000 x 30000 weights), above the limit of 1000000000 (snn.spec.MAX_PARAMETERS)")
    with pytest.raises(ResourceLimitError, match=r"^model spec: input_shape \[20000000\] has 20000000 features"):
        ModelSpec(layers=(Leaky(),), input_shape=(20_000_000,))
    ModelSpec(layers=(Linear(784, 10), Leaky()), input_shape=(784,), num_steps=MAX_NUM_STEPS)  # at the limit: fine
    with pytest.raises(ResourceLimitError):  # also from a file
        ModelSpec.from_dict({"input_shape": [4], "num_steps": 10 ** 9, "layers": [{"type": "leaky"}]})


def test_memory_estimate_by_hand():
    spec = ModelSpec(layers=(Linear(4, 5), Leaky(beta=0.8), Linear(5, 3), RLeaky(all_to_all=True, per_neuron=True)),
                     input_shape=(4,), num_steps=10)
    # parameters: 4*5+5, beta and threshold scalars, 5*3+3, per-neuron beta/threshold 3+3 and 3x3+3 recurrent
    params = [25, 2, 18, 6 + 12]
    assert [m.num_bytes for m in estimate_memory(spec)] == [4 * p for p in params]
    ev = estimate_memory(spec, batch_size=7)
    assert [m.num_bytes for m in ev[4:]] == [4 * 10 * 7 * 4, 4 * 10 * 7 * 5]  # input, largest output
    tr = estimate_memory(spec, batch_size=7, training=True, dtype_bytes=8)
    assert sum(m.num_bytes for m in tr[4:]) == 8 * 10 * 7 * (4 + 5 + 5 + 3 + 3)
    with pytest.raises(ResourceLimitError) as e:
        check_memory(spec, 2000, "evaluating", batch_size=7)
    assert str(e.value) == ("evaluating: layer 0 (linear): 10 x 7 x 5 outputs (steps x batch x neurons) = 1.4 kB of "
                            "float32 (at least 2.8 kB in all), above the memory limit (2.0 kB)")
    assert check_memory(spec, 2800, "evaluating", batch_size=7) == 4 * (sum(params) + 280 + 350)
    assert format_bytes(784e9 * 4) == "3.1 TB" and format_bytes(999) == "999 B"


def test_build_model_checks_memory_before_allocating(monkeypatch):
    monkeypatch.setattr(snn.model, "memory_limit_bytes", lambda device: 3_000_000)
    spec = ModelSpec(layers=(Linear(1000, 1000), Leaky()), input_shape=(1000,))
    with pytest.raises(ResourceLimitError) as e:
        build_model(spec)
    assert str(e.value) == ("building the model: layer 0 (linear): 1000 x 1000 weights = 4.0 MB of float32 "
                            "(at least 4.0 MB in all), above the memory of cpu (3.0 MB)")


def _huge_run_spec():
    """Inside the spec limits, tiny to build, but one evaluation batch of 16 keeps
    1e5 steps x 16 x 1e5 neurons = 640 GB of outputs."""
    return ModelSpec(layers=(Linear(8, 100_000), Leaky(), Linear(100_000, 2), Leaky()), input_shape=(8,),
                     num_steps=100_000)


def test_evaluate_and_training_refuse_a_batch_larger_than_memory(tmp_path):
    spec = _huge_run_spec()
    model = build_model(spec)
    x, y = torch.rand(16, 8), torch.zeros(16, dtype=torch.long)
    msg = (r"^evaluating batches of 16 samples: layer 0 \(linear\): 100000 x 16 x 100000 outputs "
           r"\(steps x batch x neurons\) = 640\.0 GB of float32 \(at least 6\d\d\.\d GB in all\), above the memory "
           r"of cpu \(.*\)$")
    with pytest.raises(ResourceLimitError, match=msg):
        evaluate(model, x, y)
    cfg = TrainConfig(epochs=1, batch_size=16, progress=False, val_fraction=0, device="cpu")
    with pytest.raises(ResourceLimitError, match=r"^training with batches of 16 samples: layer 0 \(linear\): "
                                                 r"100000 x 16 x 100000 outputs"):
        Trainer(spec, x, y, cfg, tmp_path).fit()


# =========================================================================== 5. temp files, signals


def test_a_failing_nir_write_leaves_nothing(tmp_path, monkeypatch):
    from hw.nir_graph import export_nir, write_nir

    graph = export_nir(fc_spec(), build_model(fc_spec()).state_dict())

    def half_write(name, g):
        Path(name).write_bytes(b"\x89HDF partial")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(nir, "write", half_write)
    with pytest.raises(OSError, match="disk full"):
        write_nir(graph, tmp_path / "g.nir")
    assert os.listdir(tmp_path) == []


def test_temp_name_carries_the_pid(tmp_path):
    from snn.atomic import atomic_path

    with atomic_path(tmp_path / "model.safetensors") as tmp:
        assert re.fullmatch(rf"\.model\.safetensors\.{os.getpid()}\.[a-z0-9_]+\.tmp", tmp.name), tmp.name
        tmp.write_bytes(b"x")
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]


WRITERS = {
    "checkpoint": """
        from snn.checkpoint import save_checkpoint
        from snn.model import build_model
        from snn.presets import fc
        spec = fc((4,), 3, hidden=5)
        save_checkpoint(target, spec, build_model(spec))""",
    "nir": """
        from hw.nir_graph import export_nir, write_nir
        from snn.model import build_model
        from snn.presets import fc
        spec = fc((4,), 3, hidden=5)
        write_nir(export_nir(spec, build_model(spec).state_dict()), target)""",
    "plot": """
        from experiments.plots import learning_curves
        learning_curves([{"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5}], target)""",
}

# fsync announces that the temp file is written and then blocks: the writer is caught mid-write
CHILD = """
import os, sys, time
import snn.atomic
target = sys.argv[1]
real_fsync = os.fsync
handled = []  # a program's own SIGTERM handler (test_a_program_sigterm_handler_is_left_alone) appends
def slow_fsync(fd):
    print("in-fsync", flush=True)
    for _ in range(600):
        if handled:
            break
        time.sleep(0.1)
    real_fsync(fd)
snn.atomic.os.fsync = slow_fsync
"""


def _start_writer(kind: str, target: Path, extra: str = "") -> subprocess.Popen:
    code = CHILD + textwrap.dedent(extra) + textwrap.dedent(WRITERS[kind]) + '\nprint("done", flush=True)\n'
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True, env=os.environ | {"PYTHONPATH": str(REPO)})
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    line = proc.stdout.readline() if ready else ""
    if line.strip() != "in-fsync":
        proc.kill()
        proc.wait()
        pytest.fail(f"{kind} writer did not reach fsync of its temporary file (got {line!r})")
    return proc


def _temps(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith(".tmp") or ".tmp." in n)


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_sigterm_mid_write_removes_the_temp_file(tmp_path, kind):
    target = tmp_path / f"out.{kind}"
    proc = _start_writer(kind, target)
    assert len(_temps(tmp_path)) == 1  # caught mid-write
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM  # still ends as terminated
    assert os.listdir(tmp_path) == []


def test_a_program_sigterm_handler_is_left_alone(tmp_path):
    """A program that handles SIGTERM itself (e.g. to finish cleanly) gets its write completed."""
    extra = """
        import signal
        signal.signal(signal.SIGTERM, lambda s, f: (print("handled", flush=True), handled.append(s)))
        """
    proc = _start_writer("checkpoint", tmp_path / "m.safetensors", extra)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    assert out.split()[0] == "handled" and out.split()[-1] == "done"
    assert os.listdir(tmp_path) == ["m.safetensors"]
    load_checkpoint(tmp_path / "m.safetensors")


def test_sigkill_leftovers_are_removed_by_the_next_write(tmp_path):
    from snn.atomic import write_bytes_atomic

    target = tmp_path / "out.checkpoint"
    proc = _start_writer("checkpoint", target)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    left = _temps(tmp_path)
    assert len(left) == 1 and left[0].startswith(f".out.checkpoint.{proc.pid}.")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = tmp_path / f".out.checkpoint.{sleeper.pid}.abcd_123.tmp"  # a live writer's: kept
        other = tmp_path / ".out.checkpoint.notes.tmp"  # not a writer's temp name: kept
        other_target = tmp_path / f".out.checkpoint.bak.{proc.pid}.x.tmp"  # of target "out.checkpoint.bak"
        for p in (alive, other, other_target):
            p.write_bytes(b"")
        write_bytes_atomic(target, b"new")
        assert target.read_bytes() == b"new"
        assert sorted(os.listdir(tmp_path)) == sorted(["out.checkpoint", alive.name, other.name, other_target.name])
    finally:
        sleeper.kill()
        sleeper.wait()
