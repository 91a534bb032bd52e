"""The integer arithmetic of each chip profile as pure torch functions (docs/fixed_point.md).

`step(profile, x, state, params) -> (spikes, state)` advances one layer by one time step: `x` is the
layer's drive for the step, `drive(profile, A, params)` of its synaptic input `A = (W · s) << w_shift`
(the part of the update that does not depend on the state, computed for all steps at once),
`[B, N]` int64; `state` a `NeuronState` of `[B, N]` int64 tensors; `params` the layer's `LayerParams`. Every operation is exact
integer arithmetic on int64 tensors (CPU or CUDA); `exact_dot` computes the weighted spike sums with a
float GEMM only where the result is provably exact, otherwise in float64 (exact below 2**53).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import torch

from .program import LayerProgram, MapGeometry

F32_EXACT = 2 ** 24   # every integer of magnitude <= 2**24 is a float32
F64_EXACT = 2 ** 53


class NeuronState(NamedTuple):
    """u: membrane (loihi: voltage v); i: synaptic current (loihi: current u; unused by leaky mcu);
    r: the layer's spikes of the previous step (bool; int64 counts for xylo-like/xylosim). All [B, N]."""

    u: torch.Tensor
    i: torch.Tensor
    r: torch.Tensor


class LayerParams(NamedTuple):
    """A `LayerProgram` as device tensors: per-neuron int64 [N] vectors, weights as float [M, N]
    (transposed, for `exact_dot`) plus the bound on |weight| used to prove exactness."""

    neuron_type: str
    reset: str
    w_shift: int
    weights_t: torch.Tensor          # [M, N] float32, integer valued
    weights_t_shifted: torch.Tensor  # [M, N] float32: W^T · 2**w_shift (see exact_dot_float)
    bias: torch.Tensor
    threshold: torch.Tensor
    decay_mem: torch.Tensor
    decay_syn: torch.Tensor | None
    rec_weights_t: torch.Tensor | None  # [N, N] float32 (rleaky_dense), transposed
    rec_shift: int
    rec_gain: torch.Tensor | None
    max_spikes: int                  # spikes per step (1 for mcu/loihi)
    conv: MapGeometry | None = None  # a convolution record: weights_t is then W [C_out, C_in, k, k]
    max_abs_weight: int = 128        # max |W| of the layer (conv: the exactness bound of `conv_input`)
    input_cover: torch.Tensor | None = None  # conv: [H, W] float64, `conv_input_cover`


def layer_params(layer: LayerProgram, device: torch.device | str) -> LayerParams:
    """The device tensors of a dense or convolution `LayerProgram` (not of a pooling record)."""
    def vec(a):
        return None if a is None else torch.as_tensor(a.astype("int64"), device=device)

    def mat_t(a):
        return None if a is None else torch.as_tensor(a.astype("float32").T.copy(), device=device)

    g = layer.conv
    if g is None:
        w_t = mat_t(layer.weights)
        conv = {}
    else:  # conv: W itself (float32 [C_out, C_in, k, k], exact int8 values), no transpose
        w_t = torch.as_tensor(layer.weights.astype("float32"), device=device)
        cover = torch.as_tensor(conv_input_cover(g).astype("float64"), device=device)
        conv = dict(conv=g, max_abs_weight=max(1, int(abs(layer.weights.astype("int64")).max())),
                    input_cover=cover)
    return LayerParams(layer.neuron_type, layer.reset, int(layer.w_shift), w_t, w_t * float(2 ** layer.w_shift),
                       vec(layer.bias), vec(layer.threshold), vec(layer.decay_mem), vec(layer.decay_syn),
                       mat_t(layer.rec_weights), int(layer.rec_shift), vec(layer.rec_gain),
                       max(1, int(layer.max_spikes)), **conv)


def init_state(batch: int, n: int, device, counts: bool = False) -> NeuronState:
    """Zero state; r is bool (one spike per step) or int64 spike counts (`counts`, xylo-like/xylosim)."""
    z = torch.zeros(batch, n, dtype=torch.int64, device=device)
    return NeuronState(z, z, z if counts else torch.zeros(batch, n, dtype=torch.bool, device=device))


def _float32_gemm_is_exact(device: torch.device) -> bool:
    """float32 GEMMs are exact on integers below 2**24 only at full fp32 precision (no TF32/bf16)."""
    if torch.get_float32_matmul_precision() != "highest":
        return False
    if device.type == "cuda":
        try:
            return not torch.backends.cuda.matmul.allow_tf32
        except (AttributeError, RuntimeError):
            return False
    return True


def count_exact(s: torch.Tensor) -> int:
    """Σ s over a [B, M] float tensor of small non-negative integers, exactly: row sums (each at most
    M · 15 < 2**24, exact in float32 whatever the summation order), added in float64."""
    return int(s.sum(dim=1).to(torch.float64).sum())


def exact_dot(s: torch.Tensor, w_t: torch.Tensor, max_count: int, shift: int = 0) -> torch.Tensor:
    """(Σ_j s[b, j] · W[j, n]) << shift exactly, as int64 [B, N] (see `exact_dot_float`)."""
    return exact_dot_float(s, w_t, max_count, shift).to(torch.int64)


def exact_dot_float(s: torch.Tensor, w_t: torch.Tensor, max_count: int, shift: int = 0) -> torch.Tensor:
    """(Σ_j s[b, j] · W[j, n]) << shift exactly, as a float32/float64 tensor [B, N] of integers
    (every value converts to int64 without rounding).

    `w_t` may already hold W · 2**k (`LayerParams.weights_t_shifted`): every product and partial sum
    is then an integer below the bound times 2**k, which a float holds exactly (only the exponent
    differs), so the same bound proves exactness.

    s: [B, M] non-negative integer counts (≤ max_count; spikes are 0/1), any dtype; w_t: [M, N] integer-valued
    float32 with |W| ≤ 128. Every partial sum is bounded by M · 128 · max_count; below 2**24 a float32
    GEMM is exact whatever its summation order, below 2**53 a float64 GEMM is. The shift is a
    multiplication by 2**shift in floating point, exact for any integer result (only the exponent
    changes), before the conversion to int64."""
    bound = w_t.shape[0] * 128 * max(int(max_count), 1)
    if bound <= F32_EXACT and _float32_gemm_is_exact(w_t.device):
        out = s.to(torch.float32) @ w_t
    elif bound <= F64_EXACT:
        out = s.to(torch.float64) @ w_t.to(torch.float64)
    else:  # pragma: no cover - excluded by the profile limits (fan-in <= 4096, counts <= 15)
        raise ValueError(f"weighted sum bound {bound} exceeds 2**53; no exact GEMM path")
    if shift:
        out *= float(2 ** shift)
    return out


def sat(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Saturate to a signed `bits`-bit integer."""
    return x.clamp(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


# ---------------------------------------------------------------------------------------------- mcu

def mcu_decay(x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """sign(x) · ((|x| · (4096 − d) + 2048) >> 12): Q0.12 decay rounded half away from zero."""
    return ((x.abs() * (4096 - d) + 2048) >> 12) * x.sign()


def mcu_drive(a: torch.Tensor, p: LayerParams) -> torch.Tensor:
    """X = sat32(A + b): the input current of the step."""
    return sat(a + p.bias, 32)


def mcu_step(x: torch.Tensor, state: NeuronState, p: LayerParams) -> tuple[torch.Tensor, NeuronState]:
    """One step of an `mcu` layer (docs/fixed_point.md, profile mcu). x: X = mcu_drive(A).
    Spikes and R are bool tensors."""
    r = state.r
    i = state.i
    if p.neuron_type == "leaky":
        if p.reset == "subtract":
            u = sat(mcu_decay(state.u, p.decay_mem) + x - r * p.threshold, 32)
        else:
            u = torch.where(r, x, sat(mcu_decay(state.u, p.decay_mem) + x, 32))
    else:
        if p.neuron_type == "synaptic":
            i = sat(mcu_decay(state.i, p.decay_syn) + x, 32)
            v = mcu_decay(state.u, p.decay_mem) + i
        elif p.neuron_type == "rleaky_dense":
            q = exact_dot(r, p.rec_weights_t, 1) << p.rec_shift
            v = mcu_decay(state.u, p.decay_mem) + x + q
        else:  # rleaky_elementwise
            v = mcu_decay(state.u, p.decay_mem) + x + p.rec_gain * r
        if p.reset == "subtract":
            u = sat(v - r * p.threshold, 32)
        else:
            u = torch.where(r, 0, sat(v, 32))
    s = u > p.threshold
    return s, NeuronState(u, i, s)


# -------------------------------------------------------------------------------------------- loihi

LOIHI_UV_MAX = 2 ** 23
LOIHI_DU_LEAKY = 4095  # du of a leaky layer: with ds_offset = 1 the current keeps no memory


def loihi_decay(x: torch.Tensor, d_eff: torch.Tensor | int) -> torch.Tensor:
    """sign(x) · ((|x| · (4096 − d_eff)) >> 12): Lava's decay, truncating toward zero."""
    return ((x.abs() * (4096 - d_eff)) >> 12) * x.sign()


def loihi_drive(a: torch.Tensor, p: LayerParams) -> torch.Tensor:
    """a << 6: Lava's MSB alignment of the synaptic input."""
    return a << 6


def loihi_step(x: torch.Tensor, state: NeuronState, p: LayerParams) -> tuple[torch.Tensor, NeuronState]:
    """One step of a `loihi` layer: Lava's PyLifModelBitAcc arithmetic (docs/fixed_point.md).
    x: a << 6 = loihi_drive(A)."""
    du = p.decay_syn if p.decay_syn is not None else LOIHI_DU_LEAKY
    cur = loihi_decay(state.i, du + 1) + x
    cur = torch.where(cur > LOIHI_UV_MAX, cur - 2 * LOIHI_UV_MAX,
                      torch.where(cur <= -LOIHI_UV_MAX, cur + 2 * LOIHI_UV_MAX, cur))
    v = (loihi_decay(state.u, p.decay_mem) + cur + p.bias).clamp(-LOIHI_UV_MAX + 1, LOIHI_UV_MAX - 1)
    s = v > (p.threshold << 6)
    v = torch.where(s, 0, v)
    return s, NeuronState(v, cur, s)


# ---------------------------------------------------------------------------------------- xylo-like

def xylo_decay(x: torch.Tensor, dash: torch.Tensor | int) -> torch.Tensor:
    """The decrement of Xylo's bit-shift decay: x >> dash (floor), at least one unit toward 0."""
    dv = x >> dash
    return torch.where((dv == 0) & (x != 0), torch.sign(x), dv)


def xylo_drive(a: torch.Tensor, p: LayerParams) -> torch.Tensor:
    """A itself: Xylo adds the input after decaying the current."""
    return a


def xylo_step(x: torch.Tensor, state: NeuronState, p: LayerParams) -> tuple[torch.Tensor, NeuronState]:
    """One step of a `xylo-like` layer (docs/fixed_point.md): returns spike counts 0..p.max_spikes. x: A."""
    ds = p.decay_syn if p.decay_syn is not None else 0
    i = sat(state.i - xylo_decay(state.i, ds) + x, 16)
    v = sat(state.u - xylo_decay(state.u, p.decay_mem) + i + p.bias, 16)
    n = torch.where(v >= p.threshold, torch.div(v, p.threshold, rounding_mode="floor").clamp(max=p.max_spikes),
                    torch.zeros_like(v))
    v = v - n * p.threshold
    return n, NeuronState(v, i, n)


# ---------------------------------------------------------------------- xylosim (xylo-imu, xylo-audio2)

INT16_MIN, INT16_MAX = -2 ** 15, 2 ** 15 - 1


class XyloInput(NamedTuple):
    """The synaptic input of one step of a `xylosim` layer, [B, N] int64 unless stated.

    pos, neg: Σ_j n_j · max(W_ij << w_shift, 0) and Σ_j n_j · min(W_ij << w_shift, 0), exact;
    events: [B, M] the step's input counts n_j (input spikes, or the hidden layer's spike counts),
    used only where a saturation can occur (see `xylosim_accumulate`)."""

    pos: torch.Tensor
    neg: torch.Tensor
    events: torch.Tensor


def xylosim_inputs(h: torch.Tensor, p: LayerParams, max_count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """pos, neg as float tensors [R, N] of integers for all R = T·B rows of input counts h [R, M]
    at once (two exact GEMMs; see `XyloInput`)."""
    w = p.weights_t_shifted
    return (exact_dot_float(h, w.clamp(min=0), max_count), exact_dot_float(h, w.clamp(max=0), max_count))


def xylosim_accumulate(i0: torch.Tensor, x: XyloInput, w_shifted_t: torch.Tensor) -> torch.Tensor:
    """i0 [B, N] plus every incoming event of the step, saturated to int16 after each event, in
    xylosim's order (`XyloLayer::deliver_spikes`: sources by ascending index; `receiveSpike` is a
    saturating add). A count n_j is n_j equal events, whose saturating adds equal one add of
    n_j · w clamped (same sign). w_shifted_t: [M, N] int64, W^T << w_shift.

    Where no running sum can leave int16 (i0 + pos <= 32767 and i0 + neg >= -32768, the bounds of
    every prefix) the result is the exact sum; only the other (b, n) are added event by event."""
    out = (i0 + x.pos + x.neg).clamp(INT16_MIN, INT16_MAX)
    risky = (i0 + x.pos > INT16_MAX) | (i0 + x.neg < INT16_MIN)
    if bool(risky.any()):
        b, n = risky.nonzero(as_tuple=True)
        acc = i0[b, n]
        ev = x.events[b].to(torch.int64)                     # [K, M]
        for j in ev.any(dim=0).nonzero().flatten().tolist():  # sources with an event, in index order
            acc = (acc + ev[:, j] * w_shifted_t[j, n]).clamp(INT16_MIN, INT16_MAX)
        out[b, n] = acc
    return out


def xylosim_step(x: XyloInput, state: NeuronState, p: LayerParams, w_shifted_t: torch.Tensor
                 ) -> tuple[torch.Tensor, NeuronState]:
    """One step of a `xylosim` layer (docs/fixed_point.md, xylo-imu/xylo-audio2): xylosim 0.1.3's
    `XyloIAFNeuron::evolve` after its input was delivered. Returns spike counts 0..p.max_spikes.

    I = acc16(I, events) − xdec(·, dash_syn)      (the input is decayed in the step it arrives)
    dv = sat16(sat16(−xdec(V, dash_mem) + I) + b);  V = sat16(V + dv)
    n = min(max_spikes, floor(V / θ)) if V >= θ;   V −= n·θ"""
    i = xylosim_accumulate(state.i, x, w_shifted_t)
    i = i - xylo_decay(i, p.decay_syn)
    dv = -xylo_decay(state.u, p.decay_mem)
    dv = torch.where(dv == 2 ** 15, INT16_MIN, dv)  # int16_t dv = -decay(V): -(-32768) wraps (dash_mem 0)
    dv = (dv + i).clamp(INT16_MIN, INT16_MAX)
    dv = (dv + p.bias).clamp(INT16_MIN, INT16_MAX)
    v = (state.u + dv).clamp(INT16_MIN, INT16_MAX)
    n = torch.where(v >= p.threshold, torch.div(v, p.threshold, rounding_mode="floor").clamp(max=p.max_spikes),
                    torch.zeros_like(v))
    v = v - n * p.threshold
    return n, NeuronState(v, i, n)


def xylosim_layer(h: torch.Tensor, p: LayerParams, max_count: int, probe: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Run a `xylosim` layer over all steps: h [T, B, M] input counts (float or int, the layer's
    input as it arrives: the readout's is already delayed) -> (spike counts [T, B, N] float32,
    V [T, B, N] int32 and I [T, B, N] int32 after each step when probe, else None)."""
    T, B, M = h.shape
    n = p.threshold.shape[0]
    flat = h.reshape(T * B, M).to(torch.float32)
    pos, neg = (a.reshape(T, B, n) for a in xylosim_inputs(flat, p, max_count))
    w = p.weights_t_shifted.to(torch.int64)
    state = init_state(B, n, h.device, counts=True)
    out = torch.empty(T, B, n, dtype=torch.float32, device=h.device)
    mem = torch.empty(T, B, n, dtype=torch.int32, device=h.device) if probe else None
    cur = torch.empty(T, B, n, dtype=torch.int32, device=h.device) if probe else None
    for t in range(T):
        s, state = xylosim_step(XyloInput(pos[t].to(torch.int64), neg[t].to(torch.int64), h[t]), state, p, w)
        out[t] = s
        if probe:
            mem[t], cur[t] = state.u, state.i
    return out, mem, cur


StepFn = Callable[[torch.Tensor, NeuronState, LayerParams], tuple[torch.Tensor, NeuronState]]
DriveFn = Callable[[torch.Tensor, LayerParams], torch.Tensor]

# The one registry from a profile's arithmetic (Profile.arithmetic) to its (drive, step). The
# xylosim arithmetic is not of this form (its input is not one exact sum per step): sim.py runs it
# layer by layer with `xylosim_layer`, and its entry here is None.
ARITHMETIC: dict[str, tuple[DriveFn, StepFn] | None] = {
    "mcu": (mcu_drive, mcu_step), "loihi": (loihi_drive, loihi_step), "xylo-like": (xylo_drive, xylo_step),
    "xylosim": None}


def arithmetic_name(profile: str) -> str:
    """The ARITHMETIC entry of a profile name (deprecated names included) or of an arithmetic name."""
    if profile in ARITHMETIC:
        return profile
    from .profiles import DEPRECATED_PROFILES, PROFILES
    prof = PROFILES.get(profile) or DEPRECATED_PROFILES.get(profile)
    if prof is None or prof.arithmetic not in ARITHMETIC:
        raise ValueError(f"no arithmetic for profile {profile!r}; known: {sorted(ARITHMETIC)}")
    return prof.arithmetic


def arithmetic(profile: str) -> tuple[DriveFn, StepFn]:
    """(drive, step) of a profile (or arithmetic) name; ValueError for xylosim (see ARITHMETIC)."""
    entry = ARITHMETIC[arithmetic_name(profile)]
    if entry is None:
        raise ValueError(f"profile {profile!r} uses the xylosim arithmetic, which runs layer by layer "
                         f"(hw.fixed_point.xylosim_layer), not as drive + step")
    return entry


def step(profile: str, a: torch.Tensor, state: NeuronState, params: LayerParams
         ) -> tuple[torch.Tensor, NeuronState]:
    """Advance one layer of `profile` by one step. a: [B, N] int64 synaptic input A."""
    drive, step_fn = arithmetic(profile)
    return step_fn(drive(a, params), state, params)


def quantize_input(v, input_scale: float) -> torch.Tensor:
    """Graded input (docs/fixed_point.md, "Graded input"): the int8 values a device receives for real
    currents `v` (any shape, e.g. [T, B, N_in] from the `direct` encoder) and a program's
    `input_scale` S (float32): q = clamp(sign(v) * floor(|v| * S + 0.5), -128, 127), in float64.
    Returns int8 of v's shape, on v's device."""
    v = torch.as_tensor(v)
    if not v.dtype.is_floating_point:
        v = v.to(torch.float64)
    if not bool(torch.isfinite(v).all()):
        raise ValueError("graded input currents must be finite (got NaN or inf)")
    scale = float(torch.tensor(float(input_scale), dtype=torch.float32))
    if not scale > 0:
        raise ValueError(f"input_scale must be > 0, got {input_scale!r}")
    v = v.to(torch.float64)
    q = torch.sign(v) * torch.floor(v.abs() * scale + 0.5)
    return q.clamp_(-128, 127).to(torch.int8)


# ------------------------------------------------ convolution, pooling and graded input (format v2)
# docs/fixed_point.md, Common rules, "Convolution, pooling and graded input". Maps are C-major
# [R, C, H, W] for R = T·B rows (every step of every sample at once: the layers are feed-forward).

def _float32_conv_is_exact(device: torch.device) -> bool:
    """float32 convolutions are exact on integers below 2**24 only at full fp32 precision: on CPU
    oneDNN's direct convolution (or im2col + GEMM) with no bf16/tf32 math mode (NNPACK's Winograd
    is switched off around the call, see `conv_map`); on CUDA `conv_map` uses im2col + GEMM
    (cuDNN may pick Winograd/FFT algorithms, and TF32), so the GEMM rule applies."""
    if not _float32_gemm_is_exact(device):
        return False
    if device.type == "cpu":
        try:
            modes = (torch.backends.mkldnn.fp32_precision, torch.backends.mkldnn.conv.fp32_precision)
        except AttributeError:
            return True
        return all(m in ("none", "ieee") for m in modes)
    return True


def exact_float_dtype(bound: int, device: torch.device, conv: bool = False) -> torch.dtype | None:
    """The float dtype in which sums of products with |partial sums| <= bound are exact on `device`
    (float32 up to 2**24 at full fp32 precision, float64 up to 2**53), or None (use integers)."""
    f32_ok = _float32_conv_is_exact(device) if conv else _float32_gemm_is_exact(device)
    if bound <= F32_EXACT and f32_ok:
        return torch.float32
    if bound <= F64_EXACT:
        return torch.float64
    return None


def _window_slices(m: torch.Tensor, k: int, stride: int, out_h: int, out_w: int):
    """The k·k strided views m[..., dy + stride·y, dx + stride·x] ([R, C, out_h, out_w]) of every
    window offset (dy, dx)."""
    for dy in range(k):
        for dx in range(k):
            yield dy, dx, m[:, :, dy: dy + stride * (out_h - 1) + 1: stride, dx: dx + stride * (out_w - 1) + 1: stride]


def pool_windows(m: torch.Tensor, kind: str, pk: int, ps: int, out_h: int, out_w: int) -> torch.Tensor:
    """Max or sum of m [R, C, Hc, Wc] over the windows Win(y, x) = {(y·ps + dy, x·ps + dx)} ->
    [R, C, out_h, out_w], in m's dtype (exact for integers: max picks a value; a sum of pk² values
    is exact where the caller's bound allows it)."""
    out = None
    for _, _, v in _window_slices(m, pk, ps, out_h, out_w):
        if out is None:
            out = v.clone()
        elif kind == "max":
            torch.maximum(out, v, out=out)
        elif kind == "sum":
            out += v
        else:
            raise ValueError(f"pool kind must be 'max' or 'sum', got {kind!r}")
    return out


def _conv_int64(s: torch.Tensor, w: torch.Tensor, g: MapGeometry) -> torch.Tensor:
    """C [R, C_out, Hc, Wc] int64 by an exact integer sum over kernel taps and input channels
    (elementwise int64 products: no GEMM, any device). Slow; for bounds beyond float64."""
    s = s.to(torch.int64)
    p = g.padding
    if p:
        s = torch.nn.functional.pad(s, (p, p, p, p))
    w = w.to(device=s.device, dtype=torch.int64)
    acc = torch.zeros(s.shape[0], g.out_channels, g.conv_height, g.conv_width, dtype=torch.int64, device=s.device)
    for dy, dx, v in _window_slices(s, g.kernel, g.stride, g.conv_height, g.conv_width):
        for c in range(g.in_channels):
            acc += v[:, c: c + 1] * w[:, c, dy, dx].view(1, -1, 1, 1)
    return acc


def conv_map(s: torch.Tensor, w: torch.Tensor, g: MapGeometry, max_abs_input: int, max_abs_weight: int = 128,
             extra_factor: int = 1, method: str = "auto") -> torch.Tensor:
    """The convolution map C[r, o, y, x] = Σ_c Σ_ky Σ_kx W[o, c, ky, kx] · s[r, c, y·st − p + ky,
    x·st − p + kx] (zero padding) exactly, [R, C_out, Hc, Wc], for s [R, C_in, H, W] integer values
    with |s| <= max_abs_input and W [C_out, C_in, k, k] integer valued (|W| <= max_abs_weight).

    Every partial sum is bounded by window_fan_in · max|W| · max|s| (times `extra_factor`, e.g.
    pk² for a sum pool the caller adds in the same dtype); in float32 below 2**24
    (`exact_float_dtype`), float64 below 2**53, else int64 (`_conv_int64`). Returns float32/float64
    holding exact integers, or int64. method: "auto" (CPU: torch conv2d without NNPACK; CUDA: im2col
    + GEMM), "conv2d", "unfold" (im2col + GEMM) or "int64" (the integer path, forced)."""
    bound = g.window_fan_in * int(max_abs_weight) * max(int(max_abs_input), 1) * max(int(extra_factor), 1)
    dtype = None if method == "int64" else exact_float_dtype(bound, s.device, conv=True)
    if dtype is None:
        return _conv_int64(s, w, g)
    if method == "auto":
        method = "conv2d" if s.device.type == "cpu" else "unfold"
    x, wd = s.to(dtype), w.to(device=s.device, dtype=dtype)
    if method == "conv2d":
        # NNPACK's Winograd/FFT are not exact; oneDNN's direct convolution is (and is faster on
        # channels-last input here; the layout does not change the values)
        with torch.backends.nnpack.flags(enabled=False):
            return torch.nn.functional.conv2d(x.contiguous(memory_format=torch.channels_last), wd,
                                              stride=g.stride, padding=g.padding)
    if method != "unfold":
        raise ValueError(f"method must be auto, conv2d, unfold or int64, got {method!r}")
    cols = torch.nn.functional.unfold(x, g.kernel, padding=g.padding, stride=g.stride)  # [R, C_in·k², L]
    out = wd.reshape(g.out_channels, -1) @ cols                                          # [R, C_out, L]
    return out.reshape(s.shape[0], g.out_channels, g.conv_height, g.conv_width)


def conv_input(s: torch.Tensor, p: LayerParams, max_abs_input: int, method: str = "auto") -> torch.Tensor:
    """A [R, N] of a convolution layer (docs/fixed_point.md): the map C of the layer's input
    s [R, C_in·H·W] (C-major), pooled ("max"/"sum" over the windows) or not, << w_shift, flattened
    as neuron i = (o·Ho + y)·Wo + x. Exact integers as float32/float64 or int64 (`conv_map`)."""
    g = p.conv
    m = s.reshape(s.shape[0], g.in_channels, g.in_height, g.in_width)
    factor = g.pool_kernel ** 2 if g.pool == "sum" else 1
    c = conv_map(m, p.weights_t, g, max_abs_input, p.max_abs_weight, factor, method)
    if g.pool != "none":
        c = pool_windows(c, g.pool, g.pool_kernel, g.pool_stride, g.out_height, g.out_width)
    if p.w_shift:  # exact: float (only the exponent changes) or int64 (|A| < 2**55)
        c = c * (2 ** p.w_shift) if c.dtype == torch.int64 else c * float(2 ** p.w_shift)
    return c.reshape(s.shape[0], -1)


def pool_record(s: torch.Tensor, g: MapGeometry) -> torch.Tensor:
    """A pooling record: per channel, the OR ("max") or count ("sum") of s [R, C·H·W] spikes over
    each window -> [R, C·Ho·Wo] float32 (0/1, or counts 0..pk²; exact)."""
    m = s.reshape(s.shape[0], g.in_channels, g.in_height, g.in_width).to(torch.float32)
    return pool_windows(m, g.pool, g.pool_kernel, g.pool_stride, g.out_height, g.out_width).reshape(s.shape[0], -1)


def conv_input_cover(g: MapGeometry) -> np.ndarray:
    """[H, W] int64: for each input position, how many *used* convolution positions (y, x) read it
    (all of them without a pool, those inside at least one pooling window with one; padding
    excluded). A convolution record's synops are C_out · Σ_j e_j · cover[j] (docs/fixed_point.md)."""
    used = np.zeros((g.conv_height, g.conv_width), dtype=bool)
    if g.pool == "none":
        used[:] = True
    else:
        for y in range(g.out_height):
            for x in range(g.out_width):
                used[y * g.pool_stride: y * g.pool_stride + g.pool_kernel,
                     x * g.pool_stride: x * g.pool_stride + g.pool_kernel] = True
    cover = np.zeros((g.in_height, g.in_width), dtype=np.int64)
    for y, x in zip(*np.nonzero(used)):
        y0, x0 = y * g.stride - g.padding, x * g.stride - g.padding
        cover[max(y0, 0): max(y0 + g.kernel, 0), max(x0, 0): max(x0 + g.kernel, 0)] += 1
    return cover


def input_events(s: torch.Tensor, graded: bool) -> torch.Tensor:
    """e_j as float32 [R, M]: s itself for spikes and pool counts, 1 for each non-zero graded value."""
    return (s != 0).to(torch.float32) if graded else s.to(torch.float32)


def conv_synops(e: torch.Tensor, p: LayerParams) -> int:
    """Σ over used positions (o, y, x) of Σ e_j over the inputs its kernel reads, over all R rows of
    events e [R, C_in·H·W] float32, exactly: per-row channel sums (<= 4096·225 < 2**24, exact in
    float32), then float64 (every total < 2**53)."""
    g = p.conv
    per_pos = e.reshape(e.shape[0], g.in_channels, g.in_height * g.in_width).sum(dim=1)  # [R, H·W]
    return g.out_channels * int((per_pos.to(torch.float64) @ p.input_cover.reshape(-1)).sum())
