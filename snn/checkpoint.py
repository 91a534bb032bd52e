"""Checkpoints: model spec + weights + metrics in one safetensors file (no pickle, written atomically).

Layout: the safetensors tensors are the model's state dict; the header metadata holds
`format` = "spikeloop-checkpoint", `format_version`, `spec` (JSON), `metrics` (JSON) and
`extra` (JSON). Loading never executes code from the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .atomic import write_bytes_atomic
from .model import SpikingNetwork, build_model
from .spec import ModelSpec

CHECKPOINT_FORMAT = "spikeloop-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that is missing, corrupt, of another format/version, or mismatched."""


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
        except ValueError as e:
            raise CheckpointError(f"checkpoint weights do not fit its spec: {e}") from None


def save_checkpoint(path: str | Path, spec: ModelSpec, model_or_state: SpikingNetwork | dict,
                    metrics: dict | None = None, extra: dict | None = None) -> Path:
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    meta = {
        "format": CHECKPOINT_FORMAT,
        "format_version": str(CHECKPOINT_VERSION),
        "spec": spec.to_json(),
        "metrics": json.dumps(metrics or {}),
        "extra": json.dumps(extra or {}),
    }
    return write_bytes_atomic(path, st_save(tensors, metadata=meta))


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
    try:
        tensors = st_load(data)
    except (SafetensorError, Exception) as e:  # safetensors raises several types on corrupt payloads
        raise CheckpointError(f"{path}: corrupt checkpoint data: {e}") from None
    try:
        spec = ModelSpec.from_json(meta["spec"])
        metrics, extra = json.loads(meta.get("metrics", "{}")), json.loads(meta.get("extra", "{}"))
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid spec/metrics in checkpoint: {e}") from None
    ckpt = Checkpoint(spec, tensors, metrics, extra)
    ckpt.build()  # validates that weights match the spec
    return ckpt
