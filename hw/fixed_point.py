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

import torch

from .program import LayerProgram

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


def layer_params(layer: LayerProgram, device: torch.device | str) -> LayerParams:
    def vec(a):
        return None if a is None else torch.as_tensor(a.astype("int64"), device=device)

    def mat_t(a):
        return None if a is None else torch.as_tensor(a.astype("float32").T.copy(), device=device)

    w_t = mat_t(layer.weights)
    return LayerParams(layer.neuron_type, layer.reset, int(layer.w_shift), w_t, w_t * float(2 ** layer.w_shift),
                       vec(layer.bias), vec(layer.threshold), vec(layer.decay_mem), vec(layer.decay_syn),
                       mat_t(layer.rec_weights), int(layer.rec_shift), vec(layer.rec_gain),
                       max(1, int(layer.max_spikes)))


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
