"""C loops of the fast paths: the `mcu` time loop of `SimulatedDevice` (one call per layer, CPU),
the membrane recurrence of the in-the-loop host pass (`hw.loop_training._DeviceLayer`) and the
elementwise part of the compiler's per-row scale search (`hw.compiler.row_scales`).

`hw.fixed_point.mcu_step` advances a layer by one step as a dozen torch operations; at batch 1
their per-call overhead, not the arithmetic, sets the device's speed. `mcu_layer` runs all T steps
of one layer in C, with the same int64 operations in the same order as docs/fixed_point.md and
`mcu_drive`/`mcu_step` (the non-ideal gain and the counter-based noise of `hw.nonideal`
included), so its spikes and membranes are those of the torch loop bit for bit
(tests/test_sim_fast.py compares them on every neuron type and reset, with mismatch and noise).
The synaptic input of all steps is one exact GEMM before the loop: int8 x int8 -> int32
(`int8_gemm`, where `int8_gemm_exact()`), else `hw.fixed_point.exact_dot_float`. (Summing the
weight rows of the inputs that spiked, event by event, was measured slower than the float GEMM
here: 7-18 ms against 8 ms for 784-128 at T·B = 3200 and 20 % input rate.)

The C source below is compiled once per machine with the system C compiler (`cc`, or $CC) into
$SPIKELOOP_CACHE_DIR (default ~/.cache/spikeloop), written atomically (`snn.cbuild.build_library`);
`available()` is False when no compiler is found or SPIKELOOP_SIM_KERNEL=0, and `SimulatedDevice`
then uses the torch loop.
"""

from __future__ import annotations

import ctypes

import torch

from snn.cbuild import LazyLibrary, build_library

from . import fixed_point as fxp

NEURON_CODES = {"leaky": 0, "synaptic": 1, "rleaky_dense": 2, "rleaky_elementwise": 3}
RESET_CODES = {"subtract": 0, "zero": 1}

C_SOURCE = r"""
#include <stdint.h>
#include <stddef.h>

#define I32MIN (-2147483648LL)
#define I32MAX 2147483647LL

static inline int64_t sat32(int64_t x) { return x < I32MIN ? I32MIN : (x > I32MAX ? I32MAX : x); }
static inline int64_t sgn(int64_t x) { return (x > 0) - (x < 0); }
static inline int64_t iabs(int64_t x) { return x < 0 ? -x : x; }
/* mcu_decay: sign(x) * ((|x| * (4096 - d) + 2048) >> 12) */
static inline int64_t decay(int64_t x, int64_t d) { return ((iabs(x) * (4096 - d) + 2048) >> 12) * sgn(x); }
/* hw.nonideal.mul_q16: sign(v*g) * ((|v| * |g| + 2^15) >> 16) */
static inline int64_t mul_q16(int64_t v, int64_t g) { return ((iabs(v) * iabs(g) + 32768) >> 16) * (sgn(v) * sgn(g)); }

/* hw.nonideal.hash32 (lowbias32) on uint32 */
static inline uint32_t hash32(uint32_t x) {
    x ^= x >> 16; x *= 0x7FEB352DU; x ^= x >> 15; x *= 0x846CA68BU; return x ^ (x >> 16);
}
/* hw.nonideal.noise_q for one (neuron, sample, step):
   mul_q15(amp, normal_q15(hash32(hash32(prefix ^ sample) ^ step))) */
static inline int64_t noise_at(int64_t amp, uint32_t prefix, uint32_t sample, uint32_t step) {
    const uint32_t a = hash32(hash32(prefix ^ sample) ^ step);
    const uint32_t b = hash32(a ^ 0x9E3779B9U);
    const int64_t s = (int64_t)(a & 0xFFFF) + (a >> 16) + (b & 0xFFFF) + (b >> 16) - 131070;
    const int64_t z = ((iabs(s) * 56756 + 32768) >> 16) * sgn(s);
    return ((amp * iabs(z) + 16384) >> 15) * sgn(z);
}

/* the noise of one sample and step for neurons 0..N-1 (branch-free, so the compiler vectorises
   it; with GCC on x86-64 also for AVX2 / AVX-512, chosen at run time) */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(SL_NO_CLONES)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
static void noise_row(int64_t N, const int64_t *amp, const int64_t *prefix, uint32_t sample, uint32_t step,
                      int64_t *out)
{
    for (int64_t n = 0; n < N; n++) out[n] = noise_at(amp[n], (uint32_t)prefix[n], sample, step);
}

/* One mcu layer over T steps for B samples of N neurons (docs/fixed_point.md, profile mcu).
   a: [T, B, N] synaptic input: A = (W . s) << w_shift as float32 (a_kind 0) or float64 (1) holding
   exact integers (hw.fixed_point.exact_dot_float, conv_input), or W . s as int32 (a_kind 2, an exact
   int8 GEMM), then A = a << w_shift here, or A itself as int64 (a_kind 3, hw.fixed_point.conv_input's
   integer path); gain [N] Q16 or NULL; bias, thr, dm [N];
   ds [N] (synaptic) or NULL; rec_gain [N] or NULL;
   rec_w [N, N] (source-major: rec_w[j * N + n]) or NULL; noise_amp, noise_prefix [N] or NULL
   (no noise), sample0: the noise counter of sample b = 0 (sample b: (sample0 + b) mod 2^32);
   state u, i [B, N] int64 and r [B, N] uint8, in and out (zeros to start); nz [N]: scratch;
   out: spikes [T, B, N] uint8; out_f: the same as float32 (the next layer's GEMM input) or NULL;
   mem [T, B, N] int32 or NULL (U after each step).
   counts[0]: spikes of steps 0..T-2 (the recurrent events), counts[1]: spikes of all steps. */
void sl_mcu_layer(int64_t T, int64_t B, int64_t N, int ntype, int reset,
                  const void *a, int a_kind, int64_t w_shift, const int64_t *gain,
                  const int64_t *bias, const int64_t *thr, const int64_t *dm, const int64_t *ds,
                  const int64_t *rec_gain, const int64_t *rec_w, int64_t rec_shift,
                  const int64_t *noise_amp, const int64_t *noise_prefix, int64_t sample0,
                  int64_t *u, int64_t *i, uint8_t *r, int64_t *nz, uint8_t *out, float *out_f, int32_t *mem,
                  int64_t *counts)
{
    int64_t prev = 0, last = 0;
    for (int64_t t = 0; t < T; t++) {
        for (int64_t b = 0; b < B; b++) {
            const int64_t row = (t * B + b) * N;
            int64_t *ub = u + b * N, *ib = i + b * N;
            uint8_t *rb = r + b * N;
            if (noise_amp)
                noise_row(N, noise_amp, noise_prefix, (uint32_t)((sample0 + b) & 0xFFFFFFFFLL), (uint32_t)t, nz);
            for (int64_t n = 0; n < N; n++) {
                int64_t A = a_kind == 0 ? (int64_t)((const float *)a)[row + n]
                          : a_kind == 1 ? (int64_t)((const double *)a)[row + n]
                          : a_kind == 3 ? ((const int64_t *)a)[row + n]
                          : (int64_t)((const int32_t *)a)[row + n] * ((int64_t)1 << w_shift);
                if (gain) A = mul_q16(A < -(1LL << 39) ? -(1LL << 39) : A > (1LL << 39) - 1 ? (1LL << 39) - 1 : A, gain[n]); /* sat_40 */
                const int64_t x = sat32(A + bias[n]);
                const int64_t rr = rb[n];
                int64_t un, in_ = ib[n];
                if (ntype == 0) {
                    if (reset == 0) un = sat32(decay(ub[n], dm[n]) + x - rr * thr[n]);
                    else un = rr ? x : sat32(decay(ub[n], dm[n]) + x);
                } else {
                    int64_t v;
                    if (ntype == 1) {
                        in_ = sat32(decay(ib[n], ds[n]) + x);
                        v = decay(ub[n], dm[n]) + in_;
                    } else if (ntype == 2) {
                        int64_t q = 0;
                        for (int64_t j = 0; j < N; j++)
                            if (rb[j]) q += rec_w[j * N + n];
                        v = decay(ub[n], dm[n]) + x + q * ((int64_t)1 << rec_shift);
                    } else {
                        v = decay(ub[n], dm[n]) + x + rec_gain[n] * rr;
                    }
                    if (reset == 0) un = sat32(v - rr * thr[n]);
                    else un = rr ? 0 : sat32(v);
                }
                if (noise_amp) un = sat32(un + nz[n]);
                ub[n] = un;
                ib[n] = in_;
                out[row + n] = un > thr[n];
                if (out_f) out_f[row + n] = (float)out[row + n];
                if (mem) mem[row + n] = (int32_t)un;
            }
            /* the new spikes become R only after every neuron of this sample used the old ones
               (rleaky_dense reads all of R) */
            for (int64_t n = 0; n < N; n++) {
                rb[n] = out[row + n];
                if (t < T - 1) prev += rb[n]; else last += rb[n];
            }
        }
    }
    counts[0] = prev;
    counts[1] = prev + last;
}

/* In-the-loop host pass (hw.loop_training._DeviceLayer), float32, the operations of its torch loop
   one by one (compiled with -ffp-contract=off: no fused multiply-add, each result rounded as torch
   rounds it). mems[t] = beta * mems[t-1] + z[t] - dev[t-1] * thr (subtract) or
   beta * ((1 - dev[t-1]) * mems[t-1]) + z[t] (zero), from mem = reset = 0; beta, thr [N]. */
void sl_leaky_mem_f32(int64_t T, int64_t B, int64_t N, int subtract, const float *z, const float *dev,
                      const float *beta, const float *thr, float *mems)
{
    for (int64_t t = 0; t < T; t++)
        for (int64_t b = 0; b < B; b++)
            for (int64_t n = 0; n < N; n++) {
                const int64_t k = (t * B + b) * N + n, km = k - B * N;
                const float mem = t ? mems[km] : 0.0f, reset = t ? dev[km] : 0.0f;
                float m;
                if (subtract) {
                    const float p = beta[n] * mem, q = p + z[k], rt = reset * thr[n];
                    m = q - rt;
                } else {
                    const float keep = 1.0f - reset, km2 = keep * mem, p = beta[n] * km2;
                    m = p + z[k];
                }
                mems[k] = m;
            }
}

/* gz[t] = gx[t] + c(gz[t+1]) backwards in time, c(g) = g * beta (subtract) or
   (g * beta) * (1 - dev[t]) (zero): the membrane gradient of the host pass. */
void sl_leaky_grad_f32(int64_t T, int64_t B, int64_t N, int subtract, const float *gx, const float *dev,
                       const float *beta, float *gz)
{
    for (int64_t t = T - 1; t >= 0; t--)
        for (int64_t b = 0; b < B; b++)
            for (int64_t n = 0; n < N; n++) {
                const int64_t k = (t * B + b) * N + n, kp = k + B * N;
                if (t == T - 1) { gz[k] = gx[k]; continue; }
                const float p = gz[kp] * beta[n];
                float c;
                if (subtract) c = p;
                else { const float keep = 1.0f - dev[k]; c = p * keep; }
                gz[k] = gx[k] + c;
            }
}

/* The squared quantisation errors of the compiler's per-row scale search (hw.compiler.row_scales):
   out[c, i, j] = (w[i, j] - clamp(rint(w[i, j] * s[c, i]), -128, 127) / s[c, i])^2 for C candidate
   scales s [C, N] of the rows of w [N, M], float64, each operation rounded as NumPy and torch round
   it (rint: half to even in the default rounding mode; no contraction). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(SL_NO_CLONES)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void sl_scale_errors(const double *w, int64_t N, int64_t M, const double *s, int64_t C, double *out)
{
    for (int64_t c = 0; c < C; c++)
        for (int64_t i = 0; i < N; i++) {
            const double sc = s[c * N + i];
            const double *wi = w + i * M;
            double *o = out + (c * N + i) * M;
            for (int64_t j = 0; j < M; j++) {
                double q = __builtin_rint(wi[j] * sc);
                q = q < -128.0 ? -128.0 : (q > 127.0 ? 127.0 : q);
                const double e = wi[j] - q / sc;
                o[j] = e * e;
            }
        }
}

/* the number of non-zero bytes of s [n] */
int64_t sl_count_u8(const uint8_t *s, int64_t n)
{
    int64_t c = 0;
    for (int64_t k = 0; k < n; k++) c += s[k] != 0;
    return c;
}
"""



def _build() -> ctypes.CDLL | None:
    # same file name as before the build moved to snn.cbuild (the hash is over source and compiler)
    lib = build_library("sl_sim_kernel", C_SOURCE)
    if lib is None:
        return None
    f = lib.sl_mcu_layer
    P, I64, INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    f.argtypes = [I64, I64, I64, INT, INT, P, INT, I64, P, P, P, P, P, P, P, I64, P, P, I64, P, P, P, P, P, P, P, P]
    f.restype = None
    lib.sl_count_u8.argtypes, lib.sl_count_u8.restype = [P, I64], I64
    lib.sl_scale_errors.argtypes, lib.sl_scale_errors.restype = [P, I64, I64, P, I64, P], None
    for name in ("sl_leaky_mem_f32", "sl_leaky_grad_f32"):
        g = getattr(lib, name)
        g.argtypes, g.restype = [I64, I64, I64, INT, P, P, P, P] + ([P] if name == "sl_leaky_mem_f32" else []), None
    return lib


_KERNEL = LazyLibrary(_build, "SPIKELOOP_SIM_KERNEL")


def available() -> bool:
    """True when the C kernel is built (or could be built now) and not disabled by
    SPIKELOOP_SIM_KERNEL=0."""
    return _KERNEL.available()


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def mcu_layer(a: torch.Tensor, p: fxp.LayerParams, nonideal=None, sample0: int = 0, probe: bool = False
              ) -> tuple[torch.Tensor, torch.Tensor | None, int, int]:
    """All T steps of one `mcu` layer from the zero state, on CPU. a: [T, B, N] synaptic input:
    A itself (`hw.fixed_point.exact_dot_float` or `conv_input`: float32/float64 of exact integers,
    or int64) or W·s as int32 (`int8_gemm`; the kernel applies << w_shift); nonideal: the layer's
    `hw.nonideal.NonidealLayer` (gain before the drive, membrane noise `noise_q` of samples
    sample0 .. sample0 + B − 1 before the spike test, drawn here with the same generator) or None.
    Returns (spikes [T, B, N] uint8 {0, 1}, U after each step [T, B, N] int32 when probe else None,
    spikes in steps 0..T−2, spikes in all steps)."""
    if not available():
        raise RuntimeError("the sim C kernel is not available (no C compiler, or SPIKELOOP_SIM_KERNEL=0)")
    if p.neuron_type not in NEURON_CODES or p.reset not in RESET_CODES:
        raise ValueError(f"no fused mcu kernel for neuron_type {p.neuron_type!r}, reset {p.reset!r}")
    kinds = {torch.float32: 0, torch.float64: 1, torch.int32: 2, torch.int64: 3}
    if a.dtype not in kinds or a.device.type != "cpu":
        raise ValueError(f"a must be a CPU float32/float64/int32/int64 tensor, got {a.dtype} on {a.device}")
    T, B, N = a.shape
    a = a.contiguous()
    u = torch.zeros(B, N, dtype=torch.int64)
    i = torch.zeros(B, N, dtype=torch.int64)
    r = torch.zeros(B, N, dtype=torch.uint8)
    nz = torch.empty(N, dtype=torch.int64)
    out = torch.empty(T, B, N, dtype=torch.uint8)
    mem = torch.empty(T, B, N, dtype=torch.int32) if probe else None
    rec_w = None if p.rec_weights_t is None else p.rec_weights_t.to(torch.int64).contiguous()  # [N_src, N_dst]
    gain = amp = prefix = None
    if nonideal is not None:
        gain, amp, prefix = (None if v is None else v.to(torch.int64).contiguous() for v in nonideal)
    counts = torch.zeros(2, dtype=torch.int64)
    _KERNEL.lib.sl_mcu_layer(T, B, N, NEURON_CODES[p.neuron_type], RESET_CODES[p.reset], a.data_ptr(), kinds[a.dtype],
                      int(p.w_shift), _ptr(gain), p.bias.data_ptr(), p.threshold.data_ptr(), p.decay_mem.data_ptr(),
                      _ptr(p.decay_syn), _ptr(p.rec_gain), _ptr(rec_w), int(p.rec_shift), _ptr(amp), _ptr(prefix),
                      int(sample0), u.data_ptr(), i.data_ptr(), r.data_ptr(), nz.data_ptr(), out.data_ptr(), None,
                      _ptr(mem), counts.data_ptr())
    c = counts.tolist()
    return out, mem, c[0], c[1]


def count_u8(s: torch.Tensor) -> int:
    """Σ of a CPU uint8 {0, 1} tensor, exactly."""
    s = s.contiguous()
    return int(_KERNEL.lib.sl_count_u8(s.data_ptr(), s.numel()))


_INT8_GEMM: bool | None = None


def int8_gemm_exact() -> bool:
    """Whether `torch._int_mm` (int8 x int8 -> int32) computes S·W exactly for spikes S in {0, 1}
    and int8 weights on this CPU. Every partial sum is at most fan-in · 128 <= 4096 · 128 < 2^31,
    so an int32 accumulation is exact; the probe checks that the implementation accumulates so
    (no int16 saturation of intermediate pairs, as non-VNNI u8·s8 code paths can have): all-ones
    spikes against weights of −128 and of 127 at fan-in 4096 (the extreme partial sums of both
    signs) and random spikes and weights, each against int64 arithmetic. False: the float GEMM."""
    global _INT8_GEMM
    if _INT8_GEMM is None:
        ok = hasattr(torch, "_int_mm")
        try:
            g = torch.Generator().manual_seed(0)
            cases = [(torch.ones(33, 4096, dtype=torch.int8), torch.full((4096, 16), v, dtype=torch.int8))
                     for v in (-128, 127)]
            cases.append(((torch.rand(40, 784, generator=g) < 0.3).to(torch.int8),
                          torch.randint(-128, 128, (784, 24), generator=g, dtype=torch.int8)))
            cases.append((torch.ones(1, 3, dtype=torch.int8), torch.randint(-128, 128, (3, 5), generator=g,
                                                                             dtype=torch.int8)))
            for a, w in cases:
                ok = ok and torch.equal(torch._int_mm(a, w).to(torch.int64), a.to(torch.int64) @ w.to(torch.int64))
        except (RuntimeError, AttributeError):
            ok = False
        _INT8_GEMM = bool(ok)
    return _INT8_GEMM


def int8_gemm(s: torch.Tensor, w_i8: torch.Tensor) -> torch.Tensor:
    """S·W as int32 [R, N] for s: [R, M] int8 {0, 1}, w_i8: [M, N] int8 (W^T); exact where
    `int8_gemm_exact()`."""
    return torch._int_mm(s, w_i8)


def _vec(v: torch.Tensor, n: int) -> torch.Tensor | None:
    """β or θ (a 0-dim, [1] or [n] float32 tensor) as a contiguous [n] float32 vector; None otherwise."""
    if v.dtype != torch.float32 or v.numel() not in (1, n) or v.device.type != "cpu":
        return None
    return v.detach().reshape(-1).expand(n).contiguous()


def host_leaky_ok(z: torch.Tensor, beta: torch.Tensor, thr: torch.Tensor) -> bool:
    """Whether `host_leaky_mem`/`host_leaky_grad` take these tensors (float32 on CPU, β/θ scalar or
    per neuron) and the kernel is built."""
    n = z.shape[-1]
    return (available() and z.dtype == torch.float32 and z.device.type == "cpu" and z.dim() == 3
            and _vec(beta, n) is not None and _vec(thr, n) is not None)


def host_leaky_mem(z: torch.Tensor, dev: torch.Tensor, beta: torch.Tensor, thr: torch.Tensor,
                   subtract: bool) -> torch.Tensor:
    """The host pass's membranes [T, B, N] float32 of one Leaky layer fed with z [T, B, N] and reset
    by the device's spikes dev [T, B, N] float32 (see `hw.loop_training._DeviceLayer`)."""
    T, B, N = z.shape
    z, dev = z.detach().contiguous(), dev.contiguous()
    mems = torch.empty_like(z)
    b, th = _vec(beta, N), _vec(thr, N)  # bound to names: the C call must not outlive them
    _KERNEL.lib.sl_leaky_mem_f32(T, B, N, int(subtract), z.data_ptr(), dev.data_ptr(), b.data_ptr(), th.data_ptr(),
                          mems.data_ptr())
    return mems


def host_leaky_grad(gx: torch.Tensor, dev: torch.Tensor, beta: torch.Tensor, subtract: bool) -> torch.Tensor:
    """The gradient [T, B, N] of z from that of the membranes' direct use gx [T, B, N] (backwards in
    time through β and the reset; see `hw.loop_training._DeviceLayer.backward`)."""
    T, B, N = gx.shape
    gx, dev = gx.contiguous(), dev.contiguous()
    gz = torch.empty_like(gx)
    b = _vec(beta, N)
    _KERNEL.lib.sl_leaky_grad_f32(T, B, N, int(subtract), gx.data_ptr(), dev.data_ptr(), b.data_ptr(), gz.data_ptr())
    return gz


def scale_errors(w, s):
    """(w − clip(round(w·s), −128, 127)/s)² as float64 [C, N, M] for w [N, M] and candidate scales
    s [C, N] (NumPy float64, C-contiguous), the elementwise part of `hw.compiler.row_scales`."""
    import numpy as np
    w = np.ascontiguousarray(w, dtype=np.float64)
    s = np.ascontiguousarray(s, dtype=np.float64)
    C, (N, M) = s.shape[0], w.shape
    if s.shape[1] != N:
        raise ValueError(f"scales {s.shape} do not match rows of w {w.shape}")
    out = np.empty((C, N, M), dtype=np.float64)
    _KERNEL.lib.sl_scale_errors(w.ctypes.data, N, M, s.ctypes.data, C, out.ctypes.data)
    return out
