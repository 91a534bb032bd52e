"""Checkpoints: round trip, atomic writes, and a clear CheckpointError for every kind of bad file."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

import snn.atomic
from snn.checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, DIGEST_KEY, METADATA_DIGEST_KEY, CheckpointError,
                             load_checkpoint, metadata_digest, save_checkpoint, tensor_digest)
from snn.model import build_model
from snn.spec import Leaky, Linear, ModelSpec, RLeaky, Synaptic


def small_spec(hidden: int = 5) -> ModelSpec:
    return ModelSpec(layers=(Linear(4, hidden), Synaptic(alpha=0.6, beta=0.8, learn_beta=True),
                             Linear(hidden, 3), RLeaky(beta=0.7, all_to_all=True)),
                     input_shape=(4,), num_steps=6, name="small")


@pytest.fixture
def saved(tmp_path):
    spec = small_spec()
    torch.manual_seed(0)
    model = build_model(spec)
    path = save_checkpoint(tmp_path / "ck" / "model.safetensors", spec, model,
                           metrics={"test_accuracy": 0.5, "history": [{"epoch": 1}]},
                           extra={"dataset": "digits"})
    return path, spec, model


def test_round_trip_values(saved):
    path, spec, model = saved
    ck = load_checkpoint(path)
    assert ck.spec == spec
    assert ck.metrics == {"test_accuracy": 0.5, "history": [{"epoch": 1}]}
    assert ck.extra == {"dataset": "digits"}
    own = model.state_dict()
    assert set(ck.state_dict) == set(own)
    for k, v in own.items():
        assert torch.equal(ck.state_dict[k], v), k
    rebuilt = ck.build()
    x = (torch.rand(6, 3, 4, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    with torch.no_grad():
        a, b = model(x, record=True), rebuilt(x, record=True)
    assert torch.equal(a.spikes, b.spikes) and torch.equal(a.mem, b.mem)
    assert ck.build(dtype=torch.float64).layers[0].weight.dtype == torch.float64


def test_file_is_plain_safetensors_with_versioned_metadata(saved):
    path, spec, _ = saved
    with safe_open(str(path), framework="pt") as f:  # no pickle involved: a safetensors reader opens it
        meta = f.metadata()
        assert "layers.0.weight" in set(f.keys())
    assert meta["format"] == CHECKPOINT_FORMAT
    assert meta["format_version"] == str(CHECKPOINT_VERSION)
    assert json.loads(meta["spec"]) == spec.to_dict()


def test_accepts_a_state_dict(tmp_path):
    spec = small_spec()
    sd = build_model(spec).state_dict()
    path = save_checkpoint(tmp_path / "m.safetensors", spec, sd)
    ck = load_checkpoint(path)
    assert ck.metrics == {} and ck.extra == {}
    assert all(torch.equal(ck.state_dict[k], v) for k, v in sd.items())


# --------------------------------------------------------------------------- atomic writes


def _boom(*args, **kwargs):
    raise OSError("disk full (simulated)")


@pytest.mark.parametrize("fail_at", ["fsync", "replace"])
def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch, fail_at):
    spec = small_spec()
    model = build_model(spec)
    monkeypatch.setattr(snn.atomic.os, fail_at, _boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "model.safetensors", spec, model)
    assert os.listdir(tmp_path) == []  # neither the target nor a temp file


def test_failed_overwrite_keeps_the_old_checkpoint(saved, monkeypatch):
    path, spec, model = saved
    before = path.read_bytes()
    monkeypatch.setattr(snn.atomic.os, "replace", _boom)
    with pytest.raises(OSError):
        save_checkpoint(path, small_spec(hidden=7), build_model(small_spec(hidden=7)))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == [path.name]
    assert load_checkpoint(path).spec == spec


# --------------------------------------------------------------------------- bad files


def _rewrite(path, tensors, **meta_changes):
    """Write `tensors` with valid metadata (digest included) except for `meta_changes` (None: drop the key)."""
    meta = {"format": CHECKPOINT_FORMAT, "format_version": str(CHECKPOINT_VERSION),
            "spec": small_spec().to_json(), "metrics": "{}", "extra": "{}", DIGEST_KEY: tensor_digest(tensors)}
    meta.update(meta_changes)
    meta = {k: v for k, v in meta.items() if v is not None}
    if DIGEST_KEY in meta and METADATA_DIGEST_KEY not in meta_changes:
        meta[METADATA_DIGEST_KEY] = metadata_digest(meta)
    path.write_bytes(st_save(tensors, metadata=meta))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "none.safetensors")


@pytest.mark.parametrize("cut", [0, 5, 8, 40])
def test_truncated_header(saved, cut):
    path = saved[0]
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)


def test_truncated_tensor_data(saved):
    path = saved[0]
    data = path.read_bytes()
    path.write_bytes(data[:-7])
    with pytest.raises(CheckpointError, match="corrupt checkpoint data"):
        load_checkpoint(path)


def test_garbage_file(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00" + b"\xff\xfe not json at all \x00\x01")
    with pytest.raises(CheckpointError, match="corrupt checkpoint header"):
        load_checkpoint(path)


def test_a_torch_pickle_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(build_model(small_spec()).state_dict(), path)
    with pytest.raises(CheckpointError, match="not a spikeloop checkpoint"):
        load_checkpoint(path)


def test_foreign_safetensors_file(tmp_path):
    path = tmp_path / "other.safetensors"
    path.write_bytes(st_save({"w": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=r"not a spikeloop checkpoint \(format None\)"):
        load_checkpoint(path)
    _rewrite(path, {"w": torch.zeros(2)}, format="someone-else")
    with pytest.raises(CheckpointError, match="format 'someone-else'"):
        load_checkpoint(path)


def test_wrong_version(tmp_path):
    path = tmp_path / "v.safetensors"
    _rewrite(path, dict(build_model(small_spec()).state_dict()), format_version=str(CHECKPOINT_VERSION + 1))
    with pytest.raises(CheckpointError, match=f"format version {CHECKPOINT_VERSION + 1} is not supported"):
        load_checkpoint(path)


def test_invalid_spec_in_metadata(tmp_path):
    path = tmp_path / "s.safetensors"
    sd = dict(build_model(small_spec()).state_dict())
    _rewrite(path, sd, spec="{broken")
    with pytest.raises(CheckpointError, match="invalid spec"):
        load_checkpoint(path)
    bad = small_spec().to_dict()
    bad["layers"][1]["beta"] = 3.0
    _rewrite(path, sd, spec=json.dumps(bad))
    with pytest.raises(CheckpointError, match="invalid spec.*beta"):
        load_checkpoint(path)
    _rewrite(path, sd, spec=None)
    with pytest.raises(CheckpointError, match=r"s.safetensors: checkpoint has no model spec \(metadata key 'spec' "
                                              r"is missing\)$"):
        load_checkpoint(path)


def test_damaged_metadata_key_is_refused_not_read_as_an_old_checkpoint(tmp_path):
    """A flipped byte in the digest's key name must not turn a checkpoint into a digest-less
    'old' one that loads with only a warning."""
    path = tmp_path / "k.safetensors"
    sd = build_model(small_spec()).state_dict()
    _rewrite(path, sd, **{DIGEST_KEY: None, "tensor_sha25f": tensor_digest(sd)})
    with pytest.raises(CheckpointError, match=r"unknown metadata key\(s\) \['tensor_sha25f'\]"):
        load_checkpoint(path)


@pytest.mark.parametrize("field, value", [("spec", small_spec().to_json().replace('"name": "', '"name": "x')),
                                          ("metrics", '{"acc": 0.9}'), ("extra", '{"dataset": "mnist"}')])
def test_changed_metadata_is_refused_by_the_metadata_digest(tmp_path, field, value):
    """One flipped byte in the spec (here its name, which still parses) must not load silently."""
    path = tmp_path / "m.safetensors"
    sd = build_model(small_spec()).state_dict()
    _rewrite(path, sd)
    meta = dict(st_load_meta(path))
    assert meta[field] != value
    _rewrite(path, sd, **{field: value, METADATA_DIGEST_KEY: meta[METADATA_DIGEST_KEY]})
    with pytest.raises(CheckpointError, match=r"metadata \(spec, metrics, extra\) does not match the metadata_sha256"):
        load_checkpoint(path)


def test_checkpoint_with_tensor_digest_only_loads_with_a_warning(tmp_path):
    from snn.checkpoint import CheckpointWarning
    path = tmp_path / "t.safetensors"
    sd = build_model(small_spec()).state_dict()
    _rewrite(path, sd, **{METADATA_DIGEST_KEY: None})
    with pytest.warns(CheckpointWarning, match="no metadata digest"):
        ckpt = load_checkpoint(path)
    assert all(torch.equal(ckpt.state_dict[k], v) for k, v in sd.items())


def st_load_meta(path):
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n])["__metadata__"]


def test_weights_that_do_not_fit_the_spec(tmp_path):
    path = tmp_path / "w.safetensors"
    other = build_model(small_spec(hidden=9)).state_dict()
    save_checkpoint(path, small_spec(hidden=5), other)
    with pytest.raises(CheckpointError, match=r"weights do not fit its spec.*layers.0.weight: spec \(5, 4\) vs "
                                              r"weights \(9, 4\)"):
        load_checkpoint(path)
    sd = dict(build_model(small_spec()).state_dict())
    del sd["layers.3.recurrent.weight"]
    save_checkpoint(path, small_spec(), sd)
    with pytest.raises(CheckpointError, match=r"missing \['layers.3.recurrent.weight'\]"):
        load_checkpoint(path)


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)  # the CLI reports ValueErrors as clean errors


def test_weights_saved_with_another_reset_mode_are_refused():
    """The reset mode lives in the spec; a state dict from a model with the other mode must not
    silently override it."""
    import pytest as _pytest

    from snn.model import build_model
    from snn.presets import fc

    sub = build_model(fc((4,), 3, hidden=5, reset="subtract"))
    with _pytest.raises(ValueError, match=r"layer 1 was saved with reset 'subtract' but the spec says 'zero'"):
        build_model(fc((4,), 3, hidden=5, reset="zero"), sub.state_dict())


def test_a_corrupt_reset_buffer_is_refused_naming_its_value():
    """A reset-mode buffer holding no reset mode (e.g. weights scaled as a whole: 1.0 * 3) gives the
    clear error, not an IndexError."""
    import pytest as _pytest

    from snn.model import build_model
    from snn.presets import fc

    spec = fc((4,), 3, hidden=5, reset="zero")
    sd = {k: v * 3 for k, v in build_model(spec).state_dict().items()}
    with _pytest.raises(ValueError, match=r"layer 1 was saved with reset value 3 \(no reset mode\) but the spec "
                                          r"says 'zero'"):
        build_model(spec, sd)
