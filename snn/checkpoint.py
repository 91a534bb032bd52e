"""Checkpoints: model spec + weights + metrics in one safetensors file (no pickle, written atomically).

Layout: the safetensors tensors are the model's state dict; the header metadata holds
`format` = "spikeloop-checkpoint", `format_version`, `spec` (JSON), `metrics` (JSON), `extra`
(JSON) and `tensor_sha256`. Loading never executes code from the file.

Integrity: `metadata_sha256` is the SHA-256 of the other metadata values (`metadata_digest`: the
spec, metrics and extra, so a flipped byte in the spec is caught as well), and `tensor_sha256` is the SHA-256 (hex) of a canonical serialization of the tensors
(`tensor_digest`): for each tensor in sorted name order, the UTF-8 line
"<name>\n<dtype>\n<comma-separated shape>\n<byte count>\n" followed by its raw little-endian
bytes in C order, after the prefix line "spikeloop-tensors-v1\n". `load_checkpoint` recomputes it
and refuses a mismatch (flipped or overwritten bytes) with a CheckpointError. Checkpoints written
before the digest existed (same `format_version` 1, no `tensor_sha256` key) still load, with a
`CheckpointWarning` that their weights cannot be verified; loading and saving one again adds the
digest; one with `tensor_sha256` but no `metadata_sha256` loads with a warning too. The digests are
optional keys of version 1, not a new version: a reader that ignores it
reads the file exactly as before.

Weights holding NaN or Inf are refused when saving and when loading (`snn.finite`). A state dict
with tensors that share memory (snnTorch's element-wise `RLeaky` registers its recurrent weight as
both `layers.<i>.V` and `layers.<i>.recurrent.V`) is saved with each name as its own copy of the
data, and loads back into the shared parameter.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .atomic import write_bytes_atomic
from .finite import require_finite
from .model import SpikingNetwork, build_model
from .spec import ModelSpec, ResourceLimitError

CHECKPOINT_FORMAT = "spikeloop-checkpoint"
CHECKPOINT_VERSION = 1
DIGEST_KEY = "tensor_sha256"
METADATA_DIGEST_KEY = "metadata_sha256"
_DIGEST_PREFIX = b"spikeloop-tensors-v1\n"
_METADATA_DIGEST_PREFIX = b"spikeloop-metadata-v1\n"


class CheckpointError(ValueError):
    """A checkpoint file that is missing, corrupt, of another format/version, or mismatched."""


class CheckpointWarning(UserWarning):
    """A checkpoint that loads but cannot be fully verified (written without a tensor digest)."""


def tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 hex digest of the canonical serialization described in the module docstring."""
    h = hashlib.sha256(_DIGEST_PREFIX)
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        raw = t.reshape(-1).view(torch.uint8)  # raw bytes of any dtype, no copy
        shape = ",".join(str(d) for d in t.shape)
        h.update(f"{name}\n{str(t.dtype).removeprefix('torch.')}\n{shape}\n{raw.numel()}\n".encode())
        h.update(raw.numpy())
    return h.hexdigest()


def metadata_digest(meta: Mapping[str, str]) -> str:
    """SHA-256 hex digest of the metadata other than the two digests: after the prefix line
    "spikeloop-metadata-v1\n", for each key in sorted order "<key>\n<byte count>\n<UTF-8 value>"."""
    h = hashlib.sha256(_METADATA_DIGEST_PREFIX)
    for key in sorted(set(meta) - {DIGEST_KEY, METADATA_DIGEST_KEY}):
        value = str(meta[key]).encode()
        h.update(f"{key}\n{len(value)}\n".encode() + value)
    return h.hexdigest()


def _saveable_tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors, each with its own memory: safetensors refuses tensors that
    share storage (element-wise RLeaky's V under two names), so the second name gets a copy."""
    out, seen = {}, set()
    for k, v in state.items():
        t = v.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[k] = t
    return out


@dataclass
class Checkpoint:
    spec: ModelSpec
    state_dict: dict[str, torch.Tensor]
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def build(self, dtype: torch.dtype = torch.float32, device="cpu") -> SpikingNetwork:
        """The trained network, weights loaded."""
        try:
            return build_model(self.spec, self.state_dict, dtype=dtype, device=device)
        except ResourceLimitError:
            raise
        except ValueError as e:
            raise CheckpointError(f"checkpoint weights do not fit its spec: {e}") from None


def checkpoint_bytes(spec: ModelSpec, model_or_state: SpikingNetwork | dict, metrics: dict | None = None,
                     extra: dict | None = None) -> bytes:
    """The bytes `save_checkpoint` writes. Raises NonFiniteError for NaN/Inf weights, and whatever
    safetensors or JSON raise for a state dict or metrics they cannot store (the Trainer calls this
    before its first epoch so such a run fails at the start, not after training)."""
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    tensors = _saveable_tensors(state)
    require_finite(tensors, "refusing to save a checkpoint")
    meta = {
        "format": CHECKPOINT_FORMAT,
        "format_version": str(CHECKPOINT_VERSION),
        "spec": spec.to_json(),
        "metrics": json.dumps(metrics or {}),
        "extra": json.dumps(extra or {}),
        DIGEST_KEY: tensor_digest(tensors),
    }
    meta[METADATA_DIGEST_KEY] = metadata_digest(meta)
    return st_save(tensors, metadata=meta)


def save_checkpoint(path: str | Path, spec: ModelSpec, model_or_state: SpikingNetwork | dict,
                    metrics: dict | None = None, extra: dict | None = None) -> Path:
    """Write spec, weights (a model or its state dict), metrics and extra atomically to `path`."""
    return write_bytes_atomic(path, checkpoint_bytes(spec, model_or_state, metrics, extra))


METADATA_KEYS = frozenset({"format", "format_version", "spec", "metrics", "extra", DIGEST_KEY, METADATA_DIGEST_KEY})


def _read_header_metadata(data: bytes, path: Path) -> dict:
    if len(data) < 8:
        raise CheckpointError(f"{path}: not a spikeloop checkpoint (file is {len(data)} bytes, truncated?)")
    n = int.from_bytes(data[:8], "little")
    if n <= 0 or 8 + n > len(data):
        raise CheckpointError(f"{path}: not a spikeloop checkpoint or truncated (header length {n}, "
                              f"file {len(data)} bytes)")
    try:
        header = json.loads(data[8:8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: corrupt checkpoint header") from None
    return header.get("__metadata__") or {}


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and validate a checkpoint; raises CheckpointError (a ValueError) with the reason."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    data = path.read_bytes()
    meta = _read_header_metadata(data, path)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a spikeloop checkpoint (format {meta.get('format')!r})")
    if meta.get("format_version") != str(CHECKPOINT_VERSION):
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('format_version')} is not "
                              f"supported (this spikeloop reads version {CHECKPOINT_VERSION})")
    unknown = sorted(set(meta) - METADATA_KEYS)
    if unknown:  # a damaged key name would otherwise hide a missing digest or spec
        raise CheckpointError(f"{path}: corrupt checkpoint header: unknown metadata key(s) {unknown} "
                              f"(known: {sorted(METADATA_KEYS)})")
    try:
        tensors = st_load(data)
    except (SafetensorError, Exception) as e:  # safetensors raises several types on corrupt payloads
        raise CheckpointError(f"{path}: corrupt checkpoint data: {e}") from None
    expected = meta.get(DIGEST_KEY)
    if expected is None:
        warnings.warn(f"{path}: checkpoint has no tensor digest ({DIGEST_KEY}; written by an older spikeloop), "
                      "so corrupted weights cannot be detected; save it again to add one",
                      CheckpointWarning, stacklevel=2)
        if METADATA_DIGEST_KEY in meta:
            raise CheckpointError(f"{path}: corrupt checkpoint header: {METADATA_DIGEST_KEY} without {DIGEST_KEY}")
    else:
        if METADATA_DIGEST_KEY not in meta:
            warnings.warn(f"{path}: checkpoint has no metadata digest ({METADATA_DIGEST_KEY}; written by an older "
                          "spikeloop), so a corrupted spec cannot be detected; save it again to add one",
                          CheckpointWarning, stacklevel=2)
        elif meta[METADATA_DIGEST_KEY] != metadata_digest(meta):
            raise CheckpointError(f"{path}: corrupt checkpoint header: the metadata (spec, metrics, extra) does "
                                  f"not match the {METADATA_DIGEST_KEY} recorded when it was saved")
        actual = tensor_digest(tensors)
        if actual != expected:
            raise CheckpointError(f"{path}: corrupt checkpoint data: the tensors' SHA-256 {actual[:16]}... does "
                                  f"not match the {DIGEST_KEY} {str(expected)[:16]}... recorded when it was saved")
    if "spec" not in meta:
        raise CheckpointError(f"{path}: checkpoint has no model spec (metadata key 'spec' is missing)")
    try:
        spec = ModelSpec.from_json(meta["spec"])
        metrics, extra = json.loads(meta.get("metrics", "{}")), json.loads(meta.get("extra", "{}"))
    except ValueError as e:
        raise CheckpointError(f"{path}: invalid spec/metrics in checkpoint: {e}") from None
    require_finite(tensors, str(path), CheckpointError)
    ckpt = Checkpoint(spec, tensors, metrics, extra)
    ckpt.build()  # validates that weights match the spec
    return ckpt
