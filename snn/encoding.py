"""Turn dataset intensities into the input spikes a `ModelSpec` expects (its `encoder` entry)."""

from __future__ import annotations

import inspect

import torch

import encoders
from encoders import _checks

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


def _rate_cpu(x, num_steps: int, gain, offset, generator) -> torch.Tensor | None:
    """`encoders.bernoulli` on the CPU for float32/float64 x, bit for bit (the same checks, the
    same uniforms u from the generator, the same u < p), with the comparison written into u's own
    memory as float: one pass over the [T, B, ...] spikes instead of three (bool, then a copy to
    float). tests/test_training.py checks it against `encoders.encode`. None: not applicable."""
    if not (isinstance(x, torch.Tensor) and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)):
        return None
    x = _checks.intensities(x)
    num_steps = _checks.num_steps_arg(num_steps)
    gain, offset = _checks.real(gain, "gain"), _checks.real(offset, "offset")
    gen = _checks.generator_for(generator, x.device)
    _checks.check_range(x.double() * gain + offset, "p = gain * x + offset", 0.0, 1.0,
                        hint=f" (gain={gain}, offset={offset})")
    p = (x * gain + offset).clamp_(0.0, 1.0)
    u = torch.rand((num_steps, *p.shape), generator=gen, dtype=p.dtype)
    return torch.lt(u, p, out=u)


def encode_batch(spec: ModelSpec, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """x: [B, *spec.input_shape] intensities in [0, 1] -> spikes [T, B, *spec.input_shape]."""
    params = {k: v for k, v in spec.encoder.items() if k != "type"}
    if spec.encoder["type"] == "rate" and set(params) <= {"gain", "offset"}:
        out = _rate_cpu(x, spec.num_steps, params.get("gain", 1.0), params.get("offset", 0.0), generator)
        if out is not None:
            return out
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
