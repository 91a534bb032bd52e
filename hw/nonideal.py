"""A seeded non-ideal chip (docs/fixed_point.md, "Non-ideal chips"): fixed-pattern mismatch and
temporal membrane noise in the `mcu` integer arithmetic, as pure functions of integer tensors.

The same rules are implemented in C in firmware_stubs/sl_nonideal.c; `sim` and the emulated board
agree bit for bit. Every random number comes from the counter-based hash `hash32` of
(chip, quantity, layer, neuron, sample, step), so nothing depends on a generator's state or on the
order in which neurons are evaluated.

    chip = ChipModel(chip=7, sigma_threshold=0.15, sigma_leak=0.15, sigma_gain=0.15, sigma_noise=0.02)
    eff = mismatched_layer(layer_program, k, chip)     # at program load
    u = add_noise(u, noise_q(eff, chip, k, samples, t)) # every step, before the spike test
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from .program import LayerProgram

MASK32 = 0xFFFFFFFF
Q16 = 1 << 16
GOLDEN32 = 0x9E3779B9       # second hash word of a normal draw: hash32(a ^ GOLDEN32)
NORMAL_SCALE = 56756        # Σ of four uniform u16, minus its mean, times 56756 / 2^16: std ≈ 2^15
NORMAL_OFFSET = 131070      # 4 · 65535 / 2: the mean of the sum of four uniform u16
# quantity tags (the `q` of the hash key)
TAG_THRESHOLD, TAG_DECAY_MEM, TAG_DECAY_SYN, TAG_GAIN, TAG_NOISE = 1, 2, 3, 4, 5
URI_KEYS = ("chip", "mismatch", "mismatch_threshold", "mismatch_leak", "mismatch_gain", "noise")


def sigma_q16(sigma: float) -> int:
    """σ as the integer the device uses: floor(σ · 2^16 + 0.5)."""
    return int(math.floor(sigma * Q16 + 0.5))


@dataclass(frozen=True)
class ChipModel:
    """One chip's identity and the σ of each non-ideal quantity (relative, e.g. 0.15 = 15 %).

    chip: uint32 chip identity (the seed of its fixed pattern); sigma_threshold, sigma_leak
    (of the decay constants d), sigma_gain (per-neuron synaptic gain): the fixed-pattern mismatch;
    sigma_noise: membrane noise per step, in units of the neuron's nominal threshold."""

    chip: int = 0
    sigma_threshold: float = 0.0
    sigma_leak: float = 0.0
    sigma_gain: float = 0.0
    sigma_noise: float = 0.0

    def __post_init__(self):
        if isinstance(self.chip, bool) or not isinstance(self.chip, int) or not 0 <= self.chip <= MASK32:
            raise ValueError(f"ChipModel.chip must be an integer in [0, 2^32 - 1], got {self.chip!r}")
        for name in ("sigma_threshold", "sigma_leak", "sigma_gain", "sigma_noise"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 1:
                raise ValueError(f"ChipModel.{name} must be a number in [0, 1], got {v!r}")

    @property
    def q16(self) -> tuple[int, int, int, int]:
        """(threshold, leak, gain, noise) σ in Q16 (`sigma_q16`)."""
        return tuple(sigma_q16(s) for s in (self.sigma_threshold, self.sigma_leak, self.sigma_gain,
                                            self.sigma_noise))

    @property
    def ideal(self) -> bool:
        """True when every σ rounds to 0: the device is the ideal one, whatever the chip id."""
        return not any(self.q16)

    @property
    def has_mismatch(self) -> bool:
        return any(self.q16[:3])

    def to_dict(self) -> dict:
        return {"chip": self.chip, "sigma_threshold": self.sigma_threshold, "sigma_leak": self.sigma_leak,
                "sigma_gain": self.sigma_gain, "sigma_noise": self.sigma_noise}

    def firmware_args(self) -> tuple[str, ...]:
        """Command-line flags of the host firmware (ports/host/main.c) for this chip."""
        return ("--chip", str(self.chip), "--sigma-q16", ",".join(str(v) for v in self.q16))

    def uri_query(self) -> str:
        """The query of a device URI for this chip, e.g. 'chip=7&mismatch_threshold=0.15&...'."""
        return "&".join(f"{k}={v}" for k, v in (
            ("chip", self.chip), ("mismatch_threshold", self.sigma_threshold),
            ("mismatch_leak", self.sigma_leak), ("mismatch_gain", self.sigma_gain),
            ("noise", self.sigma_noise)))

    @classmethod
    def from_uri_params(cls, params: dict, where: str) -> "ChipModel | None":
        """Pop the non-ideal keys (URI_KEYS) from a URI's query `params`; None when none is given.
        `mismatch` sets the three mismatch σ, `mismatch_<quantity>` overrides one of them."""
        given = {k: params.pop(k) for k in URI_KEYS if k in params}
        if not given:
            return None
        vals = {}
        for k, v in given.items():
            try:
                vals[k] = int(v) if k == "chip" else float(v)
            except ValueError:
                raise ValueError(f"{where}: {k} must be {'an integer' if k == 'chip' else 'a number'}, "
                                 f"got {v!r}") from None
        m = vals.get("mismatch", 0.0)
        try:
            return cls(chip=vals.get("chip", 0), sigma_threshold=vals.get("mismatch_threshold", m),
                       sigma_leak=vals.get("mismatch_leak", m), sigma_gain=vals.get("mismatch_gain", m),
                       sigma_noise=vals.get("noise", 0.0))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None


# ------------------------------------------------------------------------------------ generator

def mul32(a: torch.Tensor, b: int) -> torch.Tensor:
    """a · b mod 2^32 for int64 tensors a in [0, 2^32) and a constant b in [0, 2^32), without
    int64 overflow: (a_lo · b + ((a_hi · b_lo) << 16)) mod 2^32 (the a_hi · b_hi term is ≡ 0)."""
    return ((a & 0xFFFF) * b + (((a >> 16) * (b & 0xFFFF)) << 16)) & MASK32


def hash32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 (C. Wellons): a bijective mix of uint32 values, as int64 tensors in [0, 2^32)."""
    x = x ^ (x >> 16)
    x = mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def key_prefix(chip: int, tag: int, layer: int, neuron: torch.Tensor) -> torch.Tensor:
    """hash32(hash32(chip) ^ (tag << 24 | layer << 16 | neuron)): the part of a draw's key fixed by
    (chip, quantity, layer, neuron). neuron: int64 tensor of indices < 2^16."""
    c = hash32(torch.tensor(chip, dtype=torch.int64))
    return hash32(c ^ ((tag << 24) | (layer << 16) | neuron))


def normal_q15(a: torch.Tensor) -> torch.Tensor:
    """An approximately standard normal integer in Q15 (std 2^15 · 1.0000, |z| ≤ 113 511) from a
    hash word a: b = hash32(a ^ GOLDEN32); S = the four 16-bit halves of a and b summed, minus
    131 070; z = sign(S) · ((|S| · 56756 + 2^15) >> 16)."""
    b = hash32(a ^ GOLDEN32)
    s = (a & 0xFFFF) + (a >> 16) + (b & 0xFFFF) + (b >> 16) - NORMAL_OFFSET
    return ((s.abs() * NORMAL_SCALE + (1 << 15)) >> 16) * s.sign()


def draw_q15(prefix: torch.Tensor, sample: torch.Tensor | int = 0, step: torch.Tensor | int = 0) -> torch.Tensor:
    """z = normal_q15(hash32(hash32(prefix ^ sample) ^ step)), broadcast over the arguments
    (sample, step: uint32 counters; 0 and 0 for the fixed pattern)."""
    return normal_q15(hash32(hash32(prefix ^ sample) ^ step))


def scaled_q16(sigma_q: int, z: torch.Tensor) -> torch.Tensor:
    """σ·z in Q16: sign(z) · ((σ_q · |z| + 2^14) >> 15)."""
    return ((sigma_q * z.abs() + (1 << 14)) >> 15) * z.sign()


def mul_q16(v: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """v · g / 2^16 rounded half away from zero: sign(v·g) · ((|v| · |g| + 2^15) >> 16)."""
    return ((v.abs() * g.abs() + (1 << 15)) >> 16) * (v.sign() * g.sign())


def mul_q15(v: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """v · z / 2^15 rounded half away from zero (v ≥ 0): sign(z) · ((v · |z| + 2^14) >> 15)."""
    return ((v * z.abs() + (1 << 14)) >> 15) * z.sign()


# ------------------------------------------------------------------------------------ the chip

class NonidealLayer(NamedTuple):
    """What a non-ideal chip adds to one loaded layer (all int64 [N]): gain in Q16 (None: 1),
    noise amplitude a = round(θ_nominal · σ_noise) in state units (None: no noise) and the noise
    key prefix of each neuron."""

    gain_q16: torch.Tensor | None
    noise_amp: torch.Tensor | None
    noise_prefix: torch.Tensor | None


@functools.lru_cache(maxsize=256)
def pattern_q15(chip: int, tag: int, layer: int, n: int) -> torch.Tensor:
    """The fixed-pattern draws z [n] (Q15) of quantity `tag` for neurons 0..n−1 of a layer:
    draw_q15(key_prefix(chip, tag, layer, i)). Cached: a device reloading programs every batch
    (in-the-loop training) draws each chip's pattern once. Do not modify the result."""
    return draw_q15(key_prefix(chip, tag, layer, torch.arange(n, dtype=torch.int64)))


@functools.lru_cache(maxsize=256)
def noise_prefix(chip: int, layer: int, n: int) -> torch.Tensor:
    """key_prefix(chip, TAG_NOISE, layer, i) for neurons 0..n−1 (cached like `pattern_q15`; do not
    modify the result)."""
    return key_prefix(chip, TAG_NOISE, layer, torch.arange(n, dtype=torch.int64))


@functools.lru_cache(maxsize=256)
def _scaled_pattern(chip: int, tag: int, sigma_q: int, k: int, n: int) -> torch.Tensor:
    """scaled_q16(σ_q, pattern_q15(...)): σ·z in Q16 of each neuron (cached; do not modify)."""
    return scaled_q16(sigma_q, pattern_q15(chip, tag, k, n))


def _deviate(chip: ChipModel, tag: int, sigma_q: int, k: int, v: torch.Tensor) -> torch.Tensor:
    """v + round(v · σ · z), z drawn for (chip, tag, layer k, neuron i, sample 0, step 0)."""
    return v + mul_q16(v, _scaled_pattern(chip.chip, tag, sigma_q, k, v.shape[0]))


def mismatched_layer(layer: LayerProgram, k: int, chip: ChipModel) -> tuple[LayerProgram, NonidealLayer]:
    """Layer `k` of a program as chip `chip` realises it (docs/fixed_point.md, "Non-ideal chips"):
    thresholds clamp(θ + round(θσz), 1, 2^31 − 1), decays clamp(d + round(dσz), 0, 4096), and the
    per-neuron gain max(0, 2^16 + round(2^16σz)) and noise amplitude of the step rules.
    A convolution layer's neuron i is its output-map index (o·Ho + y)·Wo + x; a pooling record
    (no neurons) comes back unchanged with an empty NonidealLayer (k still counts it: program index)."""
    if layer.kind == "pool":  # a pooling record has no neurons: nothing varies
        return layer, NonidealLayer(None, None, None)
    if layer.num_neurons >= 1 << 16:
        raise ValueError(f"layer {k}: the non-ideal model indexes at most 65535 neurons per layer")
    sq_t, sq_l, sq_g, sq_n = chip.q16
    as_t = lambda a: torch.as_tensor(a.astype("int64"))  # noqa: E731
    thr = as_t(layer.threshold)
    eff_thr = _deviate(chip, TAG_THRESHOLD, sq_t, k, thr).clamp(1, 2 ** 31 - 1) if sq_t else thr
    d_mem = as_t(layer.decay_mem)
    eff_mem = _deviate(chip, TAG_DECAY_MEM, sq_l, k, d_mem).clamp(0, 4096) if sq_l else d_mem
    eff_syn = None
    if layer.decay_syn is not None:
        d_syn = as_t(layer.decay_syn)
        eff_syn = _deviate(chip, TAG_DECAY_SYN, sq_l, k, d_syn).clamp(0, 4096) if sq_l else d_syn
    n = thr.shape[0]
    gain = None
    if sq_g:
        gain = (Q16 + _scaled_pattern(chip.chip, TAG_GAIN, sq_g, k, n)).clamp(min=0)
    amp = prefix = None
    if sq_n:
        amp = (thr * sq_n + (1 << 15)) >> 16
        prefix = noise_prefix(chip.chip, k, n)
    fields = {f: getattr(layer, f) for f in ("neuron_type", "reset", "w_shift", "weights", "bias",
                                             "rec_weights", "rec_shift", "rec_gain", "max_spikes", "conv")}
    eff = LayerProgram(threshold=eff_thr.numpy(), decay_mem=eff_mem.numpy(),
                       decay_syn=None if eff_syn is None else eff_syn.numpy(), **fields)
    return eff, NonidealLayer(gain, amp, prefix)


def apply_gain(a: torch.Tensor, nl: NonidealLayer) -> torch.Tensor:
    """A' = sign(A') · ((|A'| · G + 2^15) >> 16) with A' = sat_40(A): the feed-forward synaptic input
    through the gain (the saturation keeps the product in int64; docs/fixed_point.md)."""
    if nl.gain_q16 is None:
        return a
    return mul_q16(a.clamp(-(1 << 39), (1 << 39) - 1), nl.gain_q16.to(a.device))


def noise_q(nl: NonidealLayer, samples: torch.Tensor, num_steps: int) -> torch.Tensor | None:
    """Membrane noise [T, B, N] int64 of a layer for the samples with counters `samples` [B]
    (samples run since the device started) at steps 0..T−1: mul_q15(a, draw_q15(prefix, n, t))."""
    if nl.noise_amp is None:
        return None
    dev = samples.device
    t = torch.arange(num_steps, dtype=torch.int64, device=dev)[:, None, None]
    z = draw_q15(nl.noise_prefix.to(dev)[None, None, :], (samples.to(torch.int64) & MASK32)[None, :, None], t)
    return mul_q15(nl.noise_amp.to(dev)[None, None, :], z)


def add_noise(u: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """U ← sat_32(U + n)."""
    return (u + n).clamp(-(2 ** 31), 2 ** 31 - 1)
