"""An independent NumPy reference of the `mcu` profile for programs of format version 2: dense,
convolution and pooling records and graded input, written from docs/fixed_point.md ("Convolution,
pooling and graded input", "Profile mcu") with explicit loops over kernel taps and pooling windows
(no torch, no im2col), int64 throughout (the doc's exactness bound keeps every value below 2^56).

`reference_run(program, x)` -> dict with the output spikes [T, B, N_out], every layer's outputs
[T, B, N_k] (spikes; pool counts for pooling records), every neuron layer's membranes U [T, B, N_k]
and the counters per layer (spikes, synops) summed over steps and samples. Tests compare the `sim`
device and the firmware (emulator) against it."""

from __future__ import annotations

import numpy as np

I32_MIN, I32_MAX = -(2 ** 31), 2 ** 31 - 1


def quantize_input(v: np.ndarray, scale: float) -> np.ndarray:
    """q = clamp(sign(v) * floor(|v| * S + 0.5), -128, 127), S the float32 input_scale, in float64."""
    v = np.asarray(v, dtype=np.float64)
    s = float(np.float32(scale))
    q = np.sign(v) * np.floor(np.abs(v) * s + 0.5)
    return np.clip(q, -128, 127).astype(np.int64)


def sat32(x: np.ndarray) -> np.ndarray:
    return np.clip(x, I32_MIN, I32_MAX)


def dec(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Q0.12 decay, round half away from zero."""
    m = (np.abs(x) * (4096 - d.astype(np.int64)) + 2048) >> 12
    return np.sign(x) * m


def conv_map(g, W: np.ndarray, s: np.ndarray) -> np.ndarray:
    """C[b, o, y, x] over the convolution map; s [B, C_in, H, W] int64, W [C_out, C_in, k, k]."""
    B = s.shape[0]
    k, st, p = g.kernel, g.stride, g.padding
    out = np.zeros((B, g.out_channels, g.conv_height, g.conv_width), dtype=np.int64)
    W = W.astype(np.int64)
    for y in range(g.conv_height):
        for x in range(g.conv_width):
            acc = np.zeros((B, g.out_channels), dtype=np.int64)
            for ky in range(k):
                iy = y * st - p + ky
                if not 0 <= iy < g.in_height:
                    continue
                for kx in range(k):
                    ix = x * st - p + kx
                    if not 0 <= ix < g.in_width:
                        continue
                    acc += s[:, :, iy, ix] @ W[:, :, ky, kx].T
            out[:, :, y, x] = acc
    return out


def pool_map(g, m: np.ndarray, kind: str) -> np.ndarray:
    """Max or sum of m [B, C, Hc, Wc] over every window -> [B, C, Ho, Wo]."""
    pk, ps = g.pool_kernel, g.pool_stride
    out = np.zeros(m.shape[:2] + (g.out_height, g.out_width), dtype=np.int64)
    for y in range(g.out_height):
        for x in range(g.out_width):
            win = m[:, :, y * ps: y * ps + pk, x * ps: x * ps + pk]
            out[:, :, y, x] = win.max(axis=(2, 3)) if kind == "max" else win.sum(axis=(2, 3))
    return out


def used_positions(g) -> np.ndarray:
    """[Hc, Wc] bool: convolution map positions inside at least one pooling window (all without a pool)."""
    used = np.zeros((g.conv_height, g.conv_width), dtype=bool)
    if g.pool == "none":
        used[:] = True
        return used
    for y in range(g.out_height):
        for x in range(g.out_width):
            used[y * g.pool_stride: y * g.pool_stride + g.pool_kernel,
                 x * g.pool_stride: x * g.pool_stride + g.pool_kernel] = True
    return used


def conv_synops(g, e: np.ndarray) -> int:
    """Σ over used (o, y, x) of Σ e_j over the inputs its kernel reads; e [B, C_in, H, W] events."""
    ones = np.ones((g.out_channels, g.in_channels, g.kernel, g.kernel), dtype=np.int64)
    per_pos = conv_map(g, ones, e)  # [B, C_out, Hc, Wc]: events each output reads
    return int(per_pos[:, :, used_positions(g)].sum())


def reference_run(program, x: np.ndarray) -> dict:
    """Run an mcu `Program` on input x [T, B, N_in] (spikes 0/1, or int8 values with graded input)."""
    x = np.asarray(x, dtype=np.int64)
    T, B = x.shape[:2]
    layers = program.layers
    state = [dict(u=np.zeros((B, l.num_neurons), np.int64), i=np.zeros((B, l.num_neurons), np.int64),
                  r=np.zeros((B, l.num_neurons), np.int64)) for l in layers]
    outs = [np.zeros((T, B, l.num_neurons), np.int64) for l in layers]
    mems = [np.zeros((T, B, l.num_neurons), np.int64) for l in layers]
    counters = [{"spikes": 0, "synops": 0} for _ in layers]
    for t in range(T):
        s = x[t]
        graded = program.graded_input
        for k, L in enumerate(layers):
            e = (s != 0).astype(np.int64) if graded else s
            if L.kind == "pool":
                g = L.geometry
                m = s.reshape(B, g.in_channels, g.in_height, g.in_width)
                s = pool_map(g, m, g.pool).reshape(B, -1)
                outs[k][t] = s
                graded = False
                continue
            if L.kind == "conv":
                g = L.conv
                m = s.reshape(B, g.in_channels, g.in_height, g.in_width)
                C = conv_map(g, L.weights, m)
                A = C if g.pool == "none" else pool_map(g, C, g.pool)
                A = A.reshape(B, -1) << int(L.w_shift)
                counters[k]["synops"] += conv_synops(g, e.reshape(m.shape))
            else:
                A = (s @ L.weights.astype(np.int64).T) << int(L.w_shift)
                counters[k]["synops"] += int(e.sum()) * L.num_neurons
            st = state[k]
            X = sat32(A + L.bias.astype(np.int64))
            th = L.threshold.astype(np.int64)
            R = st["r"]
            if L.neuron_type == "leaky":
                if L.reset == "subtract":
                    U = sat32(dec(st["u"], L.decay_mem) + X - R * th)
                else:
                    U = np.where(R == 1, X, sat32(dec(st["u"], L.decay_mem) + X))
            elif L.neuron_type == "synaptic":
                st["i"] = sat32(dec(st["i"], L.decay_syn) + X)
                V = dec(st["u"], L.decay_mem) + st["i"]
                U = sat32(V - R * th) if L.reset == "subtract" else np.where(R == 1, 0, sat32(V))
            else:
                raise NotImplementedError(f"reference covers leaky and synaptic layers, got {L.neuron_type}")
            S = (U > th).astype(np.int64)
            st["u"], st["r"] = U, S
            outs[k][t], mems[k][t] = S, U
            counters[k]["spikes"] += int(S.sum())
            s, graded = S, False
    return {"output": outs[-1], "layers": outs, "membranes": mems, "counters": counters}
