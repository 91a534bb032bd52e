"""Turn dataset intensities into the input spikes a `ModelSpec` expects (its `encoder` entry)."""

from __future__ import annotations

import inspect

import torch

import encoders

from .spec import ModelSpec

_SEED_STRIDE = 1_000_003  # sample seeds: seed * stride + sample index


def require_spike_input(spec: ModelSpec, consumer: str) -> None:
    """ValueError unless the spec's encoder emits spikes: `consumer` (a device, Brian2) takes spike
    trains and cannot be fed the real-valued currents of an analog encoder ("direct")."""
    kind = spec.encoder["type"]
    if not encoders.is_spike_encoder(kind):
        raise ValueError(f"model spec {spec.name!r} uses the analog encoder {kind!r} (real-valued input "
                         f"currents); {consumer} takes spike input only: train the model with a spike "
                         f"encoder ({', '.join(sorted(set(encoders.ENCODERS) - encoders.ANALOG_ENCODERS))})")


def encode_batch(spec: ModelSpec, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """x: [B, *spec.input_shape] intensities in [0, 1] -> spikes [T, B, *spec.input_shape]."""
    params = {k: v for k, v in spec.encoder.items() if k != "type"}
    if "dt_s" in params and params["dt_s"] != spec.dt_s:
        raise ValueError(f"encoder dt_s={params['dt_s']} differs from the model's dt_s={spec.dt_s}")
    if "dt_s" in inspect.signature(encoders.ENCODERS[spec.encoder["type"]]).parameters:
        params["dt_s"] = spec.dt_s  # time-based encoders (poisson) use the model's time step
    return encoders.encode(spec.encoder["type"], x, spec.num_steps, generator=generator, **params)


def encode_samples(spec: ModelSpec, x: torch.Tensor, sample_ids, seed: int) -> torch.Tensor:
    """Like `encode_batch`, but sample i's spikes depend only on (seed, sample_ids[i]), never on
    batching: the float model, the Brian2 reference and every device see identical inputs.

    x: [B, *input_shape]; sample_ids: B integers (e.g. indices in the test set)."""
    ids = [int(i) for i in sample_ids]
    if len(ids) != x.shape[0]:
        raise ValueError(f"sample_ids has {len(ids)} entries for a batch of {x.shape[0]}")
    gen = torch.Generator(device=x.device)
    out = []
    for row, i in zip(x, ids):
        gen.manual_seed((seed * _SEED_STRIDE + i) % (2**63 - 1))
        out.append(encode_batch(spec, row.unsqueeze(0), gen))
    return torch.cat(out, dim=1)
