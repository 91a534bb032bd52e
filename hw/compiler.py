"""Compile a model spec with float weights into a device `Program` for one chip profile.

Each spiking layer and the dense synapses before it become one `LayerProgram`. Per layer the compiler
picks the scale `K` (state units per float unit) that minimises the weights' quantization error,
maps beta/alpha/threshold/bias to the profile's representation (docs/fixed_point.md) and reports
per-layer weight error, clipped fraction and effective beta vs requested. What a profile cannot
represent (unsupported layer type, neuron type or reset, too many neurons, too large a fan-in or
program) raises `CompileError` naming the layer and the limit — never silently approximated; so do
weights holding NaN or Inf (naming the tensor).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

import encoders
from snn.finite import require_finite
from snn.model import build_model
from snn.spec import AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, ModelSpec, RLeaky, Synaptic

from . import sim_kernel
from .profiles import PROFILES, Profile, get_profile
from .program import (NAME_BYTES, LayerProgram, MapGeometry, PoolProgram, Program, ProgramError,
                      bias_representable)

COMPILER_VERSION = 1
INT8_MIN, INT8_MAX = -128, 127
SCALE_CANDIDATES = np.linspace(1.0, 2.0, 41)  # multiples of 127 / max|W| tried per neuron
LOIHI_MAX_SCALES = 8  # distinct per-row weight scales per loihi layer (see _compile_loihi)
XYLO_THRESHOLD_CAP = 2 ** 12  # θ·K at most 2^12: V (int16) holds 8 thresholds before saturating


class CompileError(ValueError):
    """The model cannot be represented on the profile (message names the layer and the limit)."""


@dataclass(frozen=True)
class Stage:
    """One device layer: spec index of its synapses (dense `Linear`, or `Conv2d` for kind "conv";
    None: identity) and of its neurons (for kind "pool": of the pooling layer itself).

    kind: "dense", "conv" (a convolution record, optionally pooling its accumulations: spec index
    `pool`) or "pool" (a pooling record of the previous layer's spikes). geometry: the record's
    MapGeometry (conv, pool). input_gain: the float value of one unit of the stage's integer input
    (1/input_scale for graded input, 1/pk² after an average pool of spikes, else 1), folded into
    its weights; input_max: the largest input value (127 graded, pk² after a sum pool, else 1)."""

    linear: int | None
    neuron: int
    fan_in: int
    num_neurons: int
    kind: str = "dense"
    pool: int | None = None
    geometry: MapGeometry | None = None
    input_gain: float = 1.0
    input_max: int = 1


def input_scale_for(spec: ModelSpec) -> float:
    """Graded input: the program's input_scale S = 127 / max|v| for the analog encoder's currents
    v = gain·x, x in [0, 1] (docs/fixed_point.md, "Graded input"), as the float32 it is stored in."""
    gain = float(spec.encoder.get("gain", 1.0))
    if not math.isfinite(gain) or gain == 0:
        raise CompileError(f"encoder gain must be finite and non-zero to quantize graded input, got {gain!r}")
    return float(np.float32(127.0 / abs(gain)))


def _graded_input(spec: ModelSpec, profile: Profile) -> bool:
    """Whether the program takes graded input; refuses analog models on spike-only profiles."""
    if encoders.is_spike_encoder(spec.encoder["type"]):
        return False
    if not profile.supports_graded_input:
        graded = [n for n, pr in PROFILES.items() if pr.supports_graded_input]
        raise CompileError(f"model spec {spec.name!r} uses the analog encoder {spec.encoder['type']!r} (real-valued "
                           f"input currents); profile {profile.name!r} takes spike input only "
                           f"(supports_graded_input=false; profiles with graded input: {graded}); train the model "
                           f"with a spike encoder ({', '.join(sorted(set(encoders.ENCODERS) - encoders.ANALOG_ENCODERS))})")
    return True


_POOL_KIND = {MaxPool2d: "max", AvgPool2d: "sum"}  # the device's pool kind of each spec pooling layer


def _pool_geometry(layer, shape, conv: MapGeometry | None = None) -> MapGeometry:
    kind = _POOL_KIND[type(layer)]
    if conv is not None:
        return MapGeometry(conv.in_channels, conv.in_height, conv.in_width, conv.out_channels, conv.kernel,
                           conv.stride, conv.padding, kind, layer.kernel_size, layer.effective_stride)
    c, h, w = shape
    return MapGeometry(c, h, w, c, pool=kind, pool_kernel=layer.kernel_size, pool_stride=layer.effective_stride)


def plan_stages(spec: ModelSpec, profile: Profile) -> list[Stage]:
    """Group spec layers into device layers, refusing what the profile cannot run.

    Linear → neuron: a dense layer. Conv2d [→ MaxPool2d | AvgPool2d] → neuron: a convolution
    record (pooling its integer accumulations). neuron → MaxPool2d | AvgPool2d: a pooling record of
    the spikes (OR / count; an average pool's 1/pk² goes into the next layer's weights). Flatten is
    free (maps are stored C-major, torch's flatten order)."""
    shapes = spec.shapes()
    in_shapes = [spec.input_shape] + shapes[:-1]
    graded = _graded_input(spec, profile)
    stages: list[Stage] = []
    pending, pend_pool, conv_geo = None, None, None
    gain, in_max = (1.0 / input_scale_for(spec), 127) if graded else (1.0, 1)
    for i, layer in enumerate(spec.layers):
        where = f"layer {i} ({layer.type_name})"
        if isinstance(layer, (Conv2d, MaxPool2d, AvgPool2d)) and not profile.supports_conv:
            why = "convolution" if isinstance(layer, Conv2d) else "pooling"
            with_conv = [n for n, pr in PROFILES.items() if pr.supports_conv]
            raise CompileError(f"{where}: profile {profile.name!r} does not support {why} layers "
                               f"(supports_conv=false; profiles with convolution: {with_conv}); only dense "
                               f"(linear) networks compile for it")
        if isinstance(layer, (MaxPool2d, AvgPool2d)) and _POOL_KIND[type(layer)] not in profile.pool_kinds:
            with_pool = [n for n, pr in PROFILES.items() if pr.supports_conv and pr.pool_kinds]
            raise CompileError(f"{where}: profile {profile.name!r} has no {_POOL_KIND[type(layer)]} pooling "
                               f"(pool_kinds={list(profile.pool_kinds)}; profiles with pooling: {with_pool})"
                               + ("; downsample with a strided Conv2d instead" if not profile.pool_kinds else ""))
        if isinstance(layer, Flatten):
            continue
        if isinstance(layer, (Linear, Conv2d)):
            if pending is not None:
                raise CompileError(f"{where}: two synapse layers without a spiking layer between them "
                                   f"(layers {pending} and {i}); the device needs neurons after every synapse layer")
            pending = i
            if isinstance(layer, Conv2d):
                c, h, w = in_shapes[i]
                try:
                    conv_geo = MapGeometry(c, h, w, layer.out_channels, layer.kernel_size, layer.stride,
                                           layer.padding)
                except ProgramError as e:
                    raise CompileError(f"{where}: {e.message}") from None
            continue
        if isinstance(layer, (MaxPool2d, AvgPool2d)):
            if pending is not None and conv_geo is not None and pend_pool is None:
                pend_pool = i  # pools the convolution's accumulations
                try:
                    conv_geo = _pool_geometry(layer, None, conv_geo)
                except ProgramError as e:
                    raise CompileError(f"{where}: {e.message}") from None
                continue
            if pending is not None:
                raise CompileError(f"{where}: pooling after a linear layer (or a second pool after a convolution) "
                                   f"has no device representation; pool a convolution's output or a spiking "
                                   f"layer's spikes")
            if not stages or stages[-1].kind == "pool":
                raise CompileError(f"{where}: pooling must follow a spiking layer or a convolution (the device "
                                   f"pools a neuron layer's spikes, not the network input nor another pool)")
            try:
                geo = _pool_geometry(layer, in_shapes[i])
            except ProgramError as e:
                raise CompileError(f"{where}: {e.message}") from None
            stages.append(Stage(None, i, geo.fan_in, geo.num_outputs, kind="pool", geometry=geo))
            pk2 = layer.kernel_size ** 2
            gain, in_max = (1.0 / pk2, pk2) if isinstance(layer, AvgPool2d) else (1.0, 1)
            continue
        if not layer.spiking:
            raise CompileError(f"{where}: layer type {layer.type_name!r} has no device representation")
        family = layer.type_name
        if family not in profile.neuron_types:
            why = profile.unsupported_reasons.get(family)
            raise CompileError(f"{where}: neuron type {family!r} is not supported by profile {profile.name!r} "
                               f"(supported: {list(profile.neuron_types)})" + (f": {why}" if why else ""))
        if layer.reset not in profile.reset_modes:
            raise CompileError(f"{where}: reset {layer.reset!r} is not supported by profile {profile.name!r} "
                               f"(supported: {list(profile.reset_modes)})")
        if conv_geo is not None and family not in ("leaky", "synaptic"):
            raise CompileError(f"{where}: a convolution feeds leaky or synaptic neurons on the device, not {family!r}")
        n = math.prod(shapes[i])
        fan_in = math.prod(in_shapes[pending]) if pending is not None else math.prod(in_shapes[i])
        # a chip of fixed shape (layer_roles) is checked per role below, with its own limits
        if n > profile.max_neurons_per_layer and not profile.layer_roles:
            raise CompileError(f"{where}: {n} neurons exceed the profile {profile.name!r} limit "
                               f"max_neurons_per_layer={profile.max_neurons_per_layer}")
        window = conv_geo.window_fan_in if conv_geo is not None else 0
        if max(fan_in, window) > profile.max_fan_in and not profile.layer_roles:
            raise CompileError(f"{where}: fan-in {max(fan_in, window)} exceeds the profile {profile.name!r} limit "
                               f"max_fan_in={profile.max_fan_in}")
        if pending is None and fan_in != n:
            raise CompileError(f"{where}: a spiking layer without a linear layer before it must keep its "
                               f"input size ({fan_in} -> {n})")
        if pending is None and (gain != 1.0 or in_max != 1):
            raise CompileError(f"{where}: a spiking layer right after graded input or an average pool needs "
                               f"weights before it (the device folds the input's scale into them)")
        kind = "conv" if conv_geo is not None else "dense"
        stages.append(Stage(pending, i, fan_in, n, kind=kind, pool=pend_pool, geometry=conv_geo,
                            input_gain=gain, input_max=in_max))
        pending, pend_pool, conv_geo = None, None, None
        gain, in_max = 1.0, 1
    if pending is not None:
        raise CompileError(f"layer {pending} ({spec.layers[pending].type_name}): no spiking layer after it")
    total = sum(st.num_neurons for st in stages)
    if profile.max_neurons_total is not None and total > profile.max_neurons_total:
        raise CompileError(f"the device layers hold {total} neurons together, above the profile {profile.name!r} "
                           f"limit max_neurons_total={profile.max_neurons_total}")
    roles = profile.roles_for(len(stages)) if profile.layer_roles else ()
    if profile.layer_roles and roles is None:
        raise CompileError(f"{len(stages)} device layers: " + profile.role_violation(0, len(stages), 0, 0, 0))
    for k, (st, role) in enumerate(zip(stages, roles)):
        why = profile.role_violation(k, len(roles), st.fan_in, st.num_neurons, role.max_spikes)
        if why:
            raise CompileError(f"layer {st.neuron} ({spec.layers[st.neuron].type_name}, the {role.role} layer): "
                               + why.split(": ", 1)[1])
    if roles:  # the chip's shared pool (the shift is chosen by the compiler, so pass a common one)
        why = profile.pool_violation([st.num_neurons for st in stages], [0] * len(stages))
        if why:
            raise CompileError(f"spec layers {[st.neuron for st in stages]}: " + why)
    if len(stages) > profile.max_layers:
        raise CompileError(f"{len(stages)} device layers exceed the profile {profile.name!r} limit "
                           f"max_layers={profile.max_layers}")
    return stages


def best_weight_scale(w: np.ndarray) -> tuple[float, float]:
    """Scale s minimising Σ(W − clip(round(W·s))/s)² over s = c·127/max|W|, c ∈ [1, 2]
    (c > 1 clips the largest weights to gain resolution for the rest). Returns (s, mse)."""
    wmax = float(np.abs(w).max())
    if wmax == 0:
        return 1.0, 0.0
    best = (127.0 / wmax, math.inf)
    for c in SCALE_CANDIDATES:
        s = c * 127.0 / wmax
        q = np.clip(np.round(w * s), INT8_MIN, INT8_MAX)
        mse = float(np.mean((w - q / s) ** 2))
        if mse < best[1] - 1e-18:
            best = (s, mse)
    return best


def row_scales(w: np.ndarray) -> np.ndarray:
    """Per-neuron (row) weight scales [N]: `best_weight_scale` of each row. Each neuron's state has
    its own units K_i = s_i · 2^w_shift (threshold and bias are per-neuron integers, and a neuron's
    spikes do not depend on the units of its membrane), so per-row scales are exact to represent."""
    w = np.atleast_2d(w)
    # `best_weight_scale` of every row at once (the same candidates, float operations and strict
    # first-improvement rule, so the same scales; the per-row loop cost 22 ms for a 64x64 layer)
    wmax = np.abs(w).max(axis=1)
    nz = wmax > 0
    base = np.where(nz, 127.0 / np.where(nz, wmax, 1.0), 1.0)
    best_s, best_mse = base.copy(), np.full(w.shape[0], math.inf)
    s_all = (SCALE_CANDIDATES[:, None] * 127.0) / np.where(nz, wmax, 1.0)[None, :]   # [C, N]
    # candidates per vectorised block: about 1 MB of float64, so that the block's six elementwise
    # passes stay in cache (128x784: 5.3 ms against 9.4 ms with 16 MB blocks)
    chunk = max(1, 131_072 // max(w.size, 1))
    fused = sim_kernel.available()
    wt = None if fused else torch.from_numpy(np.ascontiguousarray(w, dtype=np.float64))
    for lo in range(0, len(s_all), chunk):
        sc = s_all[lo:lo + chunk]
        # (w - clip(round(w·s))/s)² elementwise (IEEE operations, rounding half to even like
        # np.round: the same values as NumPy's) in one C pass or in torch, in place; the mean over
        # each contiguous row in NumPy (its summation order, as before)
        if fused:
            err2 = sim_kernel.scale_errors(w, sc)
        else:
            sct = torch.from_numpy(sc)[:, :, None]
            q = torch.mul(wt[None], sct).round_().clamp_(INT8_MIN, INT8_MAX)
            q = torch.sub(wt[None], q.div_(sct), out=q)
            err2 = q.mul_(q).numpy()
        for s, mse in zip(sc, np.mean(err2, axis=2)):
            better = nz & (mse < best_mse - 1e-18)
            best_s, best_mse = np.where(better, s, best_s), np.where(better, mse, best_mse)
    return best_s


def _quantize_int8(w: np.ndarray, s) -> tuple[np.ndarray, float]:
    raw = np.round(w * s)
    q = np.clip(raw, INT8_MIN, INT8_MAX)
    return q.astype(np.int8), float(np.mean(raw != q)) if raw.size else 0.0


def _decay_q12(beta: np.ndarray, d_max: int) -> np.ndarray:
    return np.clip(np.round(4096.0 * (1.0 - beta)), 0, d_max).astype(np.int64)


def _decay_dash(beta: np.ndarray, dash_max: int) -> np.ndarray:
    """The dash with 1 − 2^−dash closest to beta (dash = 0: no memory)."""
    cands = 1.0 - 2.0 ** -np.arange(dash_max + 1, dtype=np.float64)
    cands[0] = 0.0
    return np.abs(beta[:, None] - cands[None, :]).argmin(axis=1).astype(np.int64)


def effective_decay(profile: Profile, d: np.ndarray) -> np.ndarray:
    """The float factor a decay field stands for (mcu/loihi: (4096 − d)/4096; xylo: 1 − 2^−d)."""
    if profile.decay["kind"] == "q12_multiplicative":
        return (4096.0 - d) / 4096.0
    return np.where(d == 0, 0.0, 1.0 - 2.0 ** -d.astype(np.float64))


def _stats(requested: np.ndarray, effective: np.ndarray) -> dict:
    return {"requested_mean": float(requested.mean()), "effective_mean": float(effective.mean()),
            "max_abs_error": float(np.abs(requested - effective).max())}


def _shift_for(profile: Profile, w_q: np.ndarray | None, bias_f: np.ndarray, thr_f: np.ndarray, s: np.ndarray,
               input_max: int = 1, row_abs: np.ndarray | None = None) -> int:
    """Per-layer left shift: the largest that keeps the profile's state range clear of overflow
    (mcu: |input| and θ below 2^28 of 2^31; xylo: θ below 2^12 of 2^15; loihi: see _compile_loihi).
    The largest |A| of neuron i is Σ_j |W_q[i, j]| · input_max (or `row_abs` given per neuron)."""
    row = row_abs if row_abs is not None else np.abs(w_q.astype(np.int64)).sum(axis=1) * input_max
    cap = {"mcu": 2 ** 28, "xylo-like": XYLO_THRESHOLD_CAP, "xylosim": XYLO_THRESHOLD_CAP}[profile.arithmetic]
    max_shift = min(profile.max_w_shift, 16)
    shift = 0
    for k in range(max_shift + 1):
        K = s * 2 ** k
        big = float((thr_f * K).max())
        if profile.arithmetic == "mcu":
            big = max(big, float((row * 2 ** k + np.abs(bias_f) * K).max()))
        if big <= cap:
            shift = k
    return shift


def compile_model(spec: ModelSpec, state_dict: dict, profile: str | Profile, name: str | None = None,
                  max_spikes: int = 1) -> Program:
    """Compile `spec` with trained `state_dict` for `profile` -> Program (with `.report`).

    max_spikes: spikes per neuron per step on xylo-like (1..15). The float model emits at most one,
    so the default 1 configures the chip like the model; larger values let a neuron far above
    threshold fire several times per step (a different model). The xylosim profiles (xylo-imu,
    xylo-audio2) have fixed caps, 31 hidden and 1 readout: there only the default is accepted."""
    prof = get_profile(profile)
    if prof.layer_roles and max_spikes != 1:
        raise CompileError(f"profile {prof.name!r} has fixed spike caps ("
                           + ", ".join(dict.fromkeys(f"{r.role} {r.max_spikes}" for r in prof.layer_roles))
                           + f"); max_spikes={max_spikes} does not apply")
    # NaN would surface as a misleading int32-range error and Inf as all-zero weights
    require_finite(state_dict, f"cannot compile for profile {prof.name!r}", CompileError)
    stages = plan_stages(spec, prof)
    model = build_model(spec, state_dict, dtype=torch.float64)
    nparams = model.neuron_parameters()
    sd = {k: v.detach().to(torch.float64).cpu().numpy() for k, v in model.state_dict().items()}
    layers, reports, xylo_inputs = [], [], []
    for k, st in enumerate(stages):
        if st.kind == "pool":
            layers.append(PoolProgram(st.geometry))
            reports.append(_pool_report(k, st))
            continue
        lspec = spec.layers[st.neuron]
        where = f"layer {st.neuron} ({lspec.type_name})"
        w, b, rec_w = _stage_synapses(st, lspec, sd)
        p = {n: v.numpy() for n, v in nparams[st.neuron].items()}
        try:
            role = prof.roles_for(len(stages))[k] if prof.layer_roles else None
            layer, rep = _compile_stage(prof, lspec, w, b, p, rec_w, where, max_spikes, role, st)
        except ProgramError as e:
            raise CompileError(str(e)) from None
        layers.append(layer)
        reports.append(_stage_report(k, st, layer, rep))
        if prof.arithmetic == "xylosim":
            xylo_inputs.append((lspec, w, b, p, row_scales(w), where, role))
    if prof.arithmetic == "xylosim":
        _share_xylosim_shift(prof, stages, layers, reports, xylo_inputs)
    return _assemble_program(prof, spec, name, layers, reports)


def _stage_synapses(st, lspec, arrays: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(w, b [N], rec_w [N, N] or None) of one stage from float64 arrays by state-dict key: w is
    [N, fan_in] (dense) or [C_out, C_in, k, k] (conv), times the stage's input_gain; b per neuron (a
    conv's channel bias repeated over the output map, times pk² under a sum pool); identity and zero
    bias for a stage with no linear layer; a dense recurrent bias added to b."""
    if st.linear is None:
        w, b = np.eye(st.num_neurons), np.zeros(st.num_neurons)
    else:
        w = arrays[f"layers.{st.linear}.weight"] * st.input_gain
        if st.kind == "conv":
            g = st.geometry
            b_c = arrays.get(f"layers.{st.linear}.bias", np.zeros(g.out_channels))
            b = np.repeat(b_c, g.out_height * g.out_width)  # an average pool keeps a channel's bias as is
        else:
            b = arrays.get(f"layers.{st.linear}.bias", np.zeros(st.num_neurons))
    rec_w = None
    if isinstance(lspec, RLeaky) and lspec.all_to_all:
        rec_w = arrays[f"layers.{st.neuron}.recurrent.weight"]
        rec_b = arrays.get(f"layers.{st.neuron}.recurrent.bias")
        if rec_b is not None:
            b = b + rec_b
    return w, b, rec_w


def _stage_report(k: int, st, layer, rep: dict) -> dict:
    return ({"device_layer": k, "kind": st.kind,
             "spec_layers": [i for i in (st.linear, st.pool, st.neuron) if i is not None],
             "neuron_type": layer.neuron_type, "reset": layer.reset, "fan_in": st.fan_in,
             "num_neurons": st.num_neurons}
            | ({"geometry": st.geometry.to_dict()} if st.geometry is not None else {}) | rep)


def _pool_report(k: int, st) -> dict:
    return {"device_layer": k, "kind": "pool", "spec_layers": [st.neuron], "fan_in": st.fan_in,
            "num_neurons": st.num_neurons, "geometry": st.geometry.to_dict()}


def _assemble_program(prof: Profile, spec: ModelSpec, name: str | None, layers: list, reports: list) -> Program:
    prog_name = (name or spec.name)[:NAME_BYTES]
    report = {"compiler_version": COMPILER_VERSION, "profile": prof.name, "layers": reports}
    graded = _graded_input(spec, prof)
    scale = input_scale_for(spec) if graded else 0.0
    if graded:
        report["input"] = {"kind": "graded", "input_scale": scale, "encoder": dict(spec.encoder),
                           "levels": "q = clamp(round(v * input_scale), -128, 127)"}
    try:
        prog = Program(profile=prof.name, layers=tuple(layers), num_steps=spec.num_steps,
                       dt_ns=max(1, round(spec.dt_s * 1e9)), name=prog_name.encode("ascii", "replace").decode(),
                       report=report, graded_input=graded, input_scale=scale)
    except ProgramError as e:
        raise CompileError(str(e)) from None
    report["program_bytes"] = prog.size_bytes()
    return prog


def _compile_stage(prof: Profile, lspec, w, b, p, rec_w, where, max_spikes=1, role=None, st: Stage | None = None):
    thr_f = p["threshold"]
    beta = p["beta"]
    if (thr_f <= 0).any():
        raise CompileError(f"{where}: thresholds must be positive to compile, got min {thr_f.min():.4g}")
    in_max = st.input_max if st is not None else 1
    conv = st.geometry if st is not None and st.kind == "conv" else None
    if prof.arithmetic == "loihi":
        return _compile_loihi(prof, lspec, w, b, p, where, conv)
    if conv is not None:  # per output channel scales, shared by the channel's neurons
        rows = w.reshape(conv.out_channels, -1)
        s_c = row_scales(rows)
        w_q4, clipped = _quantize_int8(w, s_c[:, None, None, None])
        per = conv.out_height * conv.out_width
        unit = conv.pool_kernel ** 2 if conv.pool == "sum" else 1  # the device sums what the model averages
        s = np.repeat(s_c, per) * unit
        row_abs = np.repeat(np.abs(w_q4.astype(np.int64)).reshape(conv.out_channels, -1).sum(axis=1), per) * unit
        shift = _shift_for(prof, None, b, thr_f, s, row_abs=row_abs * in_max)
        w_q, w_rows, s_rows = w_q4, rows, s_c
    else:
        s = row_scales(w)
    if prof.arithmetic == "xylosim":
        return _compile_xylosim(prof, lspec, w, b, p, s, where, role)
    if conv is None and prof.arithmetic == "xylo-like":
        s = np.minimum(s, XYLO_THRESHOLD_CAP / thr_f)  # keep θ·K inside int16 with headroom
    if conv is None:
        w_q, clipped = _quantize_int8(w, s[:, None])
        shift = _shift_for(prof, w_q, b, thr_f, s, in_max)
        w_rows, s_rows = w, s
    K = s * 2 ** shift
    notes = []
    bias_q = np.round(b * K)
    bias_clipped = float(np.mean((bias_q < prof.bias_min) | (bias_q > prof.bias_max)))
    bias_q = np.clip(bias_q, prof.bias_min, prof.bias_max).astype(np.int64)
    thr_q = np.round(thr_f * K)
    if prof.arithmetic == "xylo-like":
        thr_q = thr_q + 1  # Xylo fires on V >= θ; the float model on U > θ: on integers, U > q ⟺ U >= q + 1
    if thr_q.max() > prof.threshold_max:
        raise CompileError(f"{where}: threshold {thr_q.max():.0f} exceeds the profile {prof.name!r} limit "
                           f"{prof.threshold_max} at the chosen scale")
    thr_q = np.maximum(thr_q, 1).astype(np.int64)
    if prof.decay["kind"] == "q12_multiplicative":
        d_mem = _decay_q12(beta, prof.decay_max)
    else:
        d_mem = _decay_dash(beta, prof.decay_max)
    kw = {}
    rep = {}
    neuron_type = lspec.type_name
    if isinstance(lspec, Synaptic):
        alpha = p["alpha"]
        kw["decay_syn"] = (_decay_q12(alpha, prof.decay_max) if prof.decay["kind"] == "q12_multiplicative"
                           else _decay_dash(alpha, prof.decay_max))
        rep["alpha"] = _stats(alpha, effective_decay(prof, kw["decay_syn"]))
    if isinstance(lspec, RLeaky):
        if lspec.all_to_all:
            neuron_type = "rleaky_dense"
            rmax = float((np.abs(rec_w).max(axis=1) * K).max())
            rec_shift = 0
            while rmax / 2 ** rec_shift > INT8_MAX + 0.5 and rec_shift < prof.max_w_shift:
                rec_shift += 1
            rq, rclip = _quantize_int8(rec_w, (K / 2 ** rec_shift)[:, None])
            kw["rec_weights"], kw["rec_shift"] = rq, rec_shift
            err = rec_w - rq.astype(np.float64) * 2 ** rec_shift / K[:, None]
            rep["recurrent"] = {"rec_shift": rec_shift, "clipped_fraction": rclip,
                                "relative_rmse": float(np.sqrt(np.mean(err ** 2)) /
                                                       max(np.sqrt(np.mean(rec_w ** 2)), 1e-30))}
        else:
            neuron_type = "rleaky_elementwise"
            g = np.round(p["V"] * K)
            kw["rec_gain"] = np.clip(g, prof.bias_min, prof.bias_max).astype(np.int64)
            rep["recurrent"] = {"gain_clipped_fraction": float(np.mean(g != kw["rec_gain"]))}
    if prof.max_spikes_per_step > 1:
        if not 1 <= max_spikes <= prof.max_spikes_per_step:
            raise CompileError(f"{where}: max_spikes must be in [1, {prof.max_spikes_per_step}] for profile "
                               f"{prof.name!r}, got {max_spikes}")
        kw["max_spikes"] = max_spikes
        rep["max_spikes"] = max_spikes
    if prof.arithmetic == "xylo-like" and lspec.reset == "subtract":
        notes.append("xylo-like subtracts the threshold before the next decay (effectively beta*threshold)")
    layer = LayerProgram(neuron_type=neuron_type, reset=lspec.reset, w_shift=shift, weights=w_q,
                         bias=bias_q, threshold=thr_q, decay_mem=d_mem, conv=conv, **kw)
    rep = _weight_report(w_rows, w_q.reshape(w_rows.shape), s_rows, clipped) | {
        "w_shift": shift, "scale": _scale_stats(K), "bias_clipped_fraction": bias_clipped,
        "threshold": _stats(thr_f, (thr_q - (1 if prof.arithmetic == "xylo-like" else 0)) / K),
        "beta": _stats(beta, effective_decay(prof, d_mem))} | rep
    if notes:
        rep["notes"] = notes
    return layer, rep


def _compile_xylosim(prof: Profile, lspec, w, b, p, s, where, role, shift: int | None = None):
    """xylo-imu / xylo-audio2 (xylosim's arithmetic, docs/fixed_point.md). The current is
    I[t] = α_e·(I[t−1] + A[t]): xylosim decays the input in the step it arrives, so I = α_e·K·syn for
    the float current syn when A = K·X, and the membrane's units are K_v = α_e·K: the threshold is
    round(θ·K_v) + 1 (V >= θ on the chip, U > θ in the float model). dash_syn >= 1: with 0 the
    current would receive nothing. A Linear bias enters snnTorch's current; the chip adds its bias
    to V, so it is mapped to its steady-state share of V per step, b·K_v/(1 − α_e) (the transient
    differs, noted in the report). shift: force this w_shift (at most the one chosen here; Xylo's
    shared weight_shift_rec, see `_share_xylosim_shift`)."""
    thr_f, beta, alpha = p["threshold"], p["beta"], p["alpha"]
    s = np.minimum(s, XYLO_THRESHOLD_CAP / thr_f)  # keep θ·K inside int16 with headroom
    w_q, clipped = _quantize_int8(w, s[:, None])
    own = _shift_for(prof, w_q, b, thr_f, s)
    shift = own if shift is None else min(int(shift), own)
    K = s * 2 ** shift
    d_syn = np.maximum(_decay_dash(alpha, prof.decay_max), 1)
    d_mem = _decay_dash(beta, prof.decay_max)
    a_eff = effective_decay(prof, d_syn)
    K_v = K * a_eff
    thr_q = np.round(thr_f * K_v) + 1
    if thr_q.max() > prof.threshold_max:
        raise CompileError(f"{where}: threshold {thr_q.max():.0f} exceeds the profile {prof.name!r} limit "
                           f"{prof.threshold_max} at the chosen scale")
    thr_q = np.maximum(thr_q, 1).astype(np.int64)
    notes = ["the input is added to the current before it decays (I = alpha*(I + A)): threshold and bias "
             "are in units alpha*K",
             "xylosim subtracts the threshold before the next decay (effectively beta*threshold); up to "
             f"{role.max_spikes} spike(s) per neuron per step"]
    bias_t = b * K_v / (1.0 - a_eff)
    bias_q = np.round(bias_t)
    bias_clipped = float(np.mean((bias_q < prof.bias_min) | (bias_q > prof.bias_max)))
    bias_q = np.clip(bias_q, prof.bias_min, prof.bias_max).astype(np.int64)
    if np.any(b != 0):
        notes.append("the Linear bias (into the current in snnTorch) is added to V, as its steady state "
                     "b/(1 - alpha) per step; the first steps differ")
    layer = LayerProgram(neuron_type="synaptic", reset=lspec.reset, w_shift=shift, weights=w_q, bias=bias_q,
                         threshold=thr_q, decay_mem=d_mem, decay_syn=d_syn, max_spikes=role.max_spikes)
    rep = _weight_report(w, w_q, s, clipped) | {
        "w_shift": shift, "scale": _scale_stats(K_v), "bias_clipped_fraction": bias_clipped,
        "threshold": _stats(thr_f, (thr_q - 1) / K_v), "beta": _stats(beta, effective_decay(prof, d_mem)),
        "alpha": _stats(alpha, a_eff), "max_spikes": role.max_spikes, "role": role.role}
    if role.input_delay_steps:
        notes.append(f"the {role.role} reads the previous layer's spikes of the step before (xylosim's "
                     "delivery; the float model: the same step), so the last step's spikes are not read")
    rep["notes"] = notes
    return layer, rep


def _share_xylosim_shift(prof: Profile, stages, layers: list, reports: list, inputs: list) -> None:
    """Xylo has one weight_shift_rec for all of weights_rec, so the hidden layers after the first
    (roles with shared_w_shift) take the smallest of the shifts each would get alone (the largest
    that keeps every block's threshold in range) and are compiled again at it. A layer lowered by
    d steps keeps its int8 weights; its units K are 2^d smaller, so threshold and bias (and the
    state) have 2^d times coarser resolution: the report's "shared_w_shift" says so per layer.
    inputs: per layer the arguments of `_compile_xylosim` after prof."""
    roles = prof.roles_for(len(stages))
    shared = [k for k, r in enumerate(roles) if r.shared_w_shift]
    if not shared:
        return
    common = min(int(layers[k].w_shift) for k in shared)
    for k in shared:
        own = int(layers[k].w_shift)
        if own != common:
            keep = {key: reports[k][key] for key in ("device_layer", "spec_layers", "neuron_type", "reset",
                                                     "fan_in", "num_neurons")}
            layers[k], rep = _compile_xylosim(prof, *inputs[k], shift=common)
            rep["notes"].append(f"weight_shift_rec is shared by hidden layers {shared}: this layer's shift {own} "
                                f"lowered to {common} (threshold and bias in units 2^{own - common} coarser)")
            reports[k] = keep | rep
        reports[k]["shared_w_shift"] = {"w_shift": common, "own_w_shift": own,
                                        "resolution_loss_factor": 2 ** (own - common)}


def _scale_stats(K: np.ndarray) -> dict:
    return {"min": float(K.min()), "max": float(K.max())}


def _weight_report(w, w_q, s, clipped) -> dict:
    err = w - w_q.astype(np.float64) / s[:, None]
    rms = max(float(np.sqrt(np.mean(w ** 2))), 1e-30)
    return {"weight_relative_rmse": float(np.sqrt(np.mean(err ** 2))) / rms,
            "weight_max_abs_error": float(np.abs(err).max()), "weight_clipped_fraction": clipped}


def scale_levels(s: np.ndarray, max_levels: int) -> np.ndarray:
    """Per-row scales [N] snapped down to at most `max_levels` distinct values: rows sorted by scale
    are cut into equal-count groups and each row takes its group's smallest scale, so no row's
    weights clip more than at its own scale (they only lose resolution, by the ratio to the level)."""
    s = np.asarray(s, dtype=np.float64)
    if np.unique(s).size <= max_levels:
        return s.copy()
    order = np.argsort(s, kind="stable")
    out = np.empty_like(s)
    for group in np.array_split(order, max_levels):
        out[group] = s[group].min()
    return out


def _compile_loihi(prof: Profile, lspec, w, b, p, where, conv: MapGeometry | None = None):
    """Loihi: v units are K = s·2^e·64 (the input is (Σ w·s_j) << e << 6); threshold mantissa
    vth = θ·s·2^e ≤ 2^17 − 1; bias = mant << exp with a 13-bit mantissa. A convolution (w
    [C_out, C_in, k, k]) has one scale per output channel, shared by the channel's neurons, and
    e ≤ conv_max_w_shift (0: Lava's Conv applies no weight exponent).

    Scales are snapped to at most LOIHI_MAX_SCALES levels (`scale_levels`): Lava's LIF process,
    like a Loihi compartment prototype, holds one vth and one dv for all its neurons, so a layer
    with a shared float threshold and beta runs on Lava as at most that many LIF processes
    (hw/vendor/lava.py). Measured (python -m experiments.loihi_scale_levels): on a fashion-mnist
    reset-zero model, agreement with float 98.03 % with one level, 98.61 % with 8, 98.54 % per row."""
    thr_f, beta = p["threshold"], p["beta"]
    per = 1 if conv is None else conv.out_height * conv.out_width  # neurons per scale (a conv channel's map)
    rows = w.reshape(len(w), -1)  # one row per scale: a dense neuron, or a conv output channel
    thr_rows = thr_f.reshape(-1, per).max(axis=1)
    s = np.minimum(row_scales(rows), prof.threshold_max / thr_rows)  # θ mantissa must fit 17 bits
    s = scale_levels(s, LOIHI_MAX_SCALES)
    w_q, clipped = _quantize_int8(w, s.reshape((-1,) + (1,) * (w.ndim - 1)))
    q_rows = w_q.reshape(rows.shape).astype(np.int64)
    e, e_max = 0, prof.max_w_shift if conv is None else prof.conv_w_shift_max
    while e < e_max and float((thr_rows * s).max()) * 2 ** (e + 1) <= min(2 ** 12, prof.threshold_max):
        e += 1
    # Lava forms the synaptic input a << 6 in int32 (docs/fixed_point.md, "Where Lava departs"):
    # lower the exponent until no row's input can reach 2^31, so the program runs alike on Lava.
    bound = int(np.maximum(q_rows.clip(min=0).sum(axis=1), (-q_rows).clip(min=0).sum(axis=1)).max()) << 6
    while e > 0 and bound << e >= 2 ** 31:
        e -= 1
    if bound << e >= 2 ** 31:
        raise CompileError(f"{where}: the summed input of a neuron can reach {bound} >= 2^31 even at "
                           "weight exponent 0; Lava computes it in int32 (fewer inputs per neuron needed)")
    s_n = np.repeat(s, per)
    vth = np.maximum(np.round(thr_f * s_n * 2 ** e), 1).astype(np.int64)
    K = s_n * 2 ** e * 64
    bias_q = _loihi_bias(b * K, prof)
    bias_clipped = float(np.mean(np.abs(b * K) > prof.bias_max + 0.5))
    d_mem = _decay_q12(beta, prof.decay_max)
    layer = LayerProgram(neuron_type="leaky", reset=lspec.reset, w_shift=e, weights=w_q, bias=bias_q,
                         threshold=vth, decay_mem=d_mem, conv=conv)
    row = np.abs(q_rows).sum(axis=1) * 2 ** e * 64
    rep = _weight_report(rows, q_rows, s, clipped) | {
        "w_shift": e, "scale": _scale_stats(K), "bias_clipped_fraction": bias_clipped,
        "threshold": _stats(thr_f, vth * 64 / K), "beta": _stats(beta, effective_decay(prof, d_mem)),
        "max_input_current": int(row.max()), "current_wraps_possible": bool(row.max() > 2 ** 23)}
    if row.max() > 2 ** 23:
        rep["notes"] = ["the summed input can exceed Loihi's 24-bit current, which wraps as in Lava"]
    return layer, rep


def _loihi_bias(target: np.ndarray, prof: Profile) -> np.ndarray:
    """Nearest mant << exp (|mant| ≤ 2^12 − 1, exp ≤ 7) to each target bias."""
    m_max = 2 ** (prof.bias_mant_bits - 1) - 1
    out = np.zeros(target.shape, dtype=np.int64)
    for i, t in enumerate(target):
        e = 0
        while e < prof.max_bias_exp and abs(t) / 2 ** e > m_max:
            e += 1
        m = int(np.clip(np.round(t / 2 ** e), -m_max, m_max))
        out[i] = m << e if m >= 0 else -((-m) << e)
    assert_ok = bias_representable(out, prof)
    if not assert_ok.all():  # pragma: no cover - construction guarantees it
        raise CompileError("internal: loihi bias not representable")
    return out


def compile_checkpoint(path, profile: str | Profile) -> Program:
    """Load a checkpoint (`snn.checkpoint`) and compile it."""
    from snn.checkpoint import load_checkpoint
    ckpt = load_checkpoint(path)
    return compile_model(ckpt.spec, ckpt.state_dict, profile)


class Recompiler:
    """`compile_model(spec, state_dict, profile)` again and again for one spec and profile, as
    in-the-loop training does once per batch: the same Program (every layer field, the report,
    the name), without the per-call work that only depends on the spec and on the neuron
    parameters (planning the stages, building the float64 model for β/θ). The neuron parameters
    are rebuilt whenever a non-synapse entry of the state dict (β, θ, ...) changes; weights and
    biases are read straight from the state dict as float64, exactly as the model would hold them.
    Profiles of fixed shape (`layer_roles`, xylosim) are compiled by `compile_model` itself.

        rc = Recompiler(spec, "mcu")
        prog = rc(model.state_dict())      # == compile_model(spec, model.state_dict(), "mcu")"""

    def __init__(self, spec: ModelSpec, profile: str | Profile, name: str | None = None):
        self.spec, self.prof, self.name = spec, get_profile(profile), name
        self.stages = plan_stages(spec, self.prof)
        synapse_keys = set()
        for st in self.stages:
            if st.linear is not None:
                synapse_keys |= {f"layers.{st.linear}.weight", f"layers.{st.linear}.bias"}
            synapse_keys |= {f"layers.{st.neuron}.recurrent.weight", f"layers.{st.neuron}.recurrent.bias"}
        self._synapse_keys = frozenset(synapse_keys)
        self._neuron_key = None
        self._nparams = None

    def _neuron_params(self, state_dict: dict) -> dict:
        rest = {k: v for k, v in state_dict.items() if k not in self._synapse_keys}
        key = tuple((k, v.dtype, tuple(v.shape), v.detach().cpu().numpy().tobytes()) if isinstance(v, torch.Tensor)
                    else (k, repr(v)) for k, v in sorted(rest.items()))
        if key != self._neuron_key:
            model = build_model(self.spec, state_dict, dtype=torch.float64)
            self._nparams = {i: {n: v.numpy() for n, v in p.items()} for i, p in model.neuron_parameters().items()}
            self._neuron_key = key
        return self._nparams

    def __call__(self, state_dict: dict, max_spikes: int = 1) -> Program:
        prof, spec = self.prof, self.spec
        if prof.layer_roles:  # chips of fixed shape (xylosim) share state across layers: the full path
            return compile_model(spec, state_dict, prof, self.name, max_spikes)
        arrays = {k: state_dict[k].detach().to(torch.float64).cpu().numpy()
                  for k in self._synapse_keys if k in state_dict}
        if not all(np.isfinite(a).all() for a in arrays.values()):
            require_finite(state_dict, f"cannot compile for profile {prof.name!r}", CompileError)
        nparams = self._neuron_params(state_dict)
        layers, reports = [], []
        for k, st in enumerate(self.stages):
            if st.kind == "pool":
                layers.append(PoolProgram(st.geometry))
                reports.append(_pool_report(k, st))
                continue
            lspec = spec.layers[st.neuron]
            where = f"layer {st.neuron} ({lspec.type_name})"
            w, b, rec_w = _stage_synapses(st, lspec, arrays)
            try:
                layer, rep = _compile_stage(prof, lspec, w, b, nparams[st.neuron], rec_w, where, max_spikes, None, st)
            except ProgramError as e:
                raise CompileError(str(e)) from None
            reports.append(_stage_report(k, st, layer, rep))
            layers.append(layer)
        return _assemble_program(prof, spec, self.name, layers, reports)
