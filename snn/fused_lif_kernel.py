"""C loops of the fused Leaky and Synaptic layers on the CPU (snn/fused_lif.py): all T steps of the
forward and of the backward in one call, float32 and float64.

The forward repeats the torch-op loop of snn/fused_lif.py operation by operation (which is
snnTorch's order): Leaky U = (beta*U + X) - R*theta or beta*((1 - R)*U) + X; Synaptic
I = alpha*I + X, V = beta*U + I, U = V - R*theta or V - V*R; S = [U > theta]. Each operation is
rounded on its own (compiled by `snn.cbuild` with -ffp-contract=off, no -ffast-math), so spikes,
currents and membranes are bit-identical to the torch path and to snnTorch. `narrow`: the float64
layer with a 0-dim threshold, where snnTorch's float32 reset makes R*theta a float32 product.

The backward computes the surrogate derivative with the formulas of `fused_lif.surrogate_grad`
(same operations in the same precision; sigmoid's exp is libm's, within an ulp of torch's) and
runs the membrane (and current) recurrence backwards in time; the parameter gradients' per-neuron
partial sums are accumulated in float64 here and reduced to the parameters' shapes by the caller.

Built at first use into $SPIKELOOP_CACHE_DIR; `available()` is False when no C compiler is found
or SPIKELOOP_LIF_KERNEL=0 (snn/fused_lif.py then runs its torch-op loops).
"""

from __future__ import annotations

import ctypes
import math

import torch

from .cbuild import LazyLibrary, build_library

KERNEL_ENV = "SPIKELOOP_LIF_KERNEL"  # "0": the torch-op loops of snn/fused_lif.py
SURROGATE_CODES = {"atan": 0, "fast_sigmoid": 1, "sigmoid": 2, "straight_through": 3, "triangular": 4}

_HEADER = r"""
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <math.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(SL_NO_CLONES)
#define SL_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SL_CLONES
#endif
"""

# instantiated for real_t = float (suffix f32) and double (f64)
_TEMPLATE = r"""
/* Leaky over T steps, state [M = B*N], per-neuron beta, thr [N]; spk, mem [T, B, N] out. */
SL_CLONES
void sl_leaky_fwd_SFX(int64_t T, int64_t B, int64_t N, int subtract, int narrow, const real_t *z,
                      const real_t *beta, const real_t *thr, real_t *spk, real_t *mem)
{
    const int64_t M = B * N;
    real_t *zero = calloc((size_t)(2 * N), sizeof(real_t)), *r0 = zero + N;
    for (int64_t n = 0; n < N; n++) r0[n] = (zero[n] - thr[n]) > 0;  /* R[1] = H(0 - theta) */
    for (int64_t t = 0; t < T; t++)
        for (int64_t b = 0; b < B; b++) {
            const int64_t k0 = t * M + b * N;
            const real_t *u = t ? mem + k0 - M : zero, *r = t ? spk + k0 - M : r0, *x = z + k0;
            real_t *m = mem + k0, *s = spk + k0;
            if (subtract && narrow)
                for (int64_t n = 0; n < N; n++) {
                    const real_t p = beta[n] * u[n], q = p + x[n];
                    const real_t rt = (real_t)((float)r[n] * (float)thr[n]);
                    m[n] = q - rt;
                }
            else if (subtract)
                for (int64_t n = 0; n < N; n++) {
                    const real_t p = beta[n] * u[n], q = p + x[n], rt = r[n] * thr[n];
                    m[n] = q - rt;
                }
            else
                for (int64_t n = 0; n < N; n++) {
                    const real_t keep = 1 - r[n], ku = keep * u[n], p = beta[n] * ku;
                    m[n] = p + x[n];
                }
            for (int64_t n = 0; n < N; n++) s[n] = m[n] > thr[n];
        }
    free(zero);
}

/* the surrogate term of one row: ds[n] = S'(mem[n] - thr[n]) * g[n] (fused_lif.surrogate_grad's
   operations; c1, c2: its scalar factors), or 0 without g */
static inline void sg_row_SFX(int sg, real_t c1, real_t c2, int64_t N, const real_t *mem, const real_t *thr,
                              const real_t *g, real_t *ds)
{
    if (!g) { for (int64_t n = 0; n < N; n++) ds[n] = 0; return; }
    switch (sg) {
    case 0:  /* atan: c1 = pi/2*slope, c2 = slope/2: ((1/((c1*x)^2 + 1))*c2)*g */
        for (int64_t n = 0; n < N; n++) {
            real_t x = mem[n] - thr[n], y = x * c1;
            y = y * y; y = y + 1; y = 1 / y; y = y * c2;
            ds[n] = y * g[n];
        }
        break;
    case 1:  /* fast_sigmoid: c1 = slope: g / (c1*|x| + 1)^2 */
        for (int64_t n = 0; n < N; n++) {
            real_t x = mem[n] - thr[n], d = (x < 0 ? -x : x) * c1;
            d = d + 1; d = d * d;
            ds[n] = g[n] / d;
        }
        break;
    case 2:  /* sigmoid: c1 = -slope, c2 = slope: ((g*c2)*e) / ((e + 1)^2), e = exp(c1*x) */
        for (int64_t n = 0; n < N; n++) {
            real_t x = mem[n] - thr[n], e = EXP(x * c1), q = e + 1;
            q = q * q;
            ds[n] = ((g[n] * c2) * e) / q;
        }
        break;
    case 3:
        for (int64_t n = 0; n < N; n++) ds[n] = g[n];
        break;
    default:  /* triangular: c1 = slope: -(g*c1) at x >= 0, g*c1 below */
        for (int64_t n = 0; n < N; n++) {
            const real_t x = mem[n] - thr[n], gg = g[n] * c1;
            ds[n] = x >= 0 ? -gg : gg;
        }
    }
}

/* Leaky backward. gs, gm: dL/dS, dL/dU [T, B, N] or NULL; dz [T, B, N] out: dL/dU = dL/dX;
   ds [N] scratch; sums [N] float64, NULL when not wanted (zeroed by the caller):
   acc_ds += dL/dS*S', acc_r += dL/dU[t]*R[t], acc_beta += dL/dU[t]*P[t-1] (t >= 1), with
   P = U (subtract) or (1 - S)*U (zero). */
SL_CLONES
void sl_leaky_bwd_SFX(int64_t T, int64_t B, int64_t N, int subtract, int sg, double c1d, double c2d,
                      const real_t *mem, const real_t *spk, const real_t *beta, const real_t *thr,
                      const real_t *gs, const real_t *gm, real_t *dz, real_t *ds,
                      double *acc_ds, double *acc_r, double *acc_beta)
{
    const int64_t M = B * N;
    const real_t c1 = (real_t)c1d, c2 = (real_t)c2d;
    for (int64_t t = T - 1; t >= 0; t--)
        for (int64_t b = 0; b < B; b++) {
            const int64_t k0 = t * M + b * N;
            const real_t *mt = mem + k0, *st = spk + k0, *gmt = gm ? gm + k0 : NULL;
            real_t *d = dz + k0;
            sg_row_SFX(sg, c1, c2, N, mt, thr, gs ? gs + k0 : NULL, ds);
            if (gmt) for (int64_t n = 0; n < N; n++) d[n] = ds[n] + gmt[n];
            else for (int64_t n = 0; n < N; n++) d[n] = ds[n];
            if (t < T - 1) {
                const real_t *dn = d + M;
                if (subtract)
                    for (int64_t n = 0; n < N; n++) { const real_t c = dn[n] * beta[n]; d[n] = d[n] + c; }
                else
                    for (int64_t n = 0; n < N; n++) {
                        const real_t a = (1 - st[n]) * beta[n], c = dn[n] * a;
                        d[n] = d[n] + c;
                    }
            }
            if (acc_ds) for (int64_t n = 0; n < N; n++) acc_ds[n] += (double)ds[n];
            if (acc_r && t > 0) {
                const real_t *r = spk + k0 - M;
                for (int64_t n = 0; n < N; n++) acc_r[n] += (double)(d[n] * r[n]);
            } else if (acc_r)
                for (int64_t n = 0; n < N; n++) {
                    const real_t r0 = (0 - thr[n]) > 0;
                    acc_r[n] += (double)(d[n] * r0);
                }
            if (acc_beta && t > 0) {
                const real_t *up = mem + k0 - M, *sp = spk + k0 - M;
                if (subtract)
                    for (int64_t n = 0; n < N; n++) acc_beta[n] += (double)(d[n] * up[n]);
                else
                    for (int64_t n = 0; n < N; n++) {
                        const real_t p = (1 - sp[n]) * up[n];
                        acc_beta[n] += (double)(d[n] * p);
                    }
            }
        }
}

/* Synaptic over T steps: syn, mem, spk [T, B, N] out. */
SL_CLONES
void sl_synaptic_fwd_SFX(int64_t T, int64_t B, int64_t N, int subtract, int narrow, const real_t *z,
                         const real_t *alpha, const real_t *beta, const real_t *thr,
                         real_t *spk, real_t *syn, real_t *mem)
{
    const int64_t M = B * N;
    real_t *zero = calloc((size_t)(2 * N), sizeof(real_t)), *r0 = zero + N;
    for (int64_t n = 0; n < N; n++) r0[n] = (zero[n] - thr[n]) > 0;
    for (int64_t t = 0; t < T; t++)
        for (int64_t b = 0; b < B; b++) {
            const int64_t k0 = t * M + b * N;
            const real_t *u = t ? mem + k0 - M : zero, *r = t ? spk + k0 - M : r0;
            const real_t *ip = t ? syn + k0 - M : zero, *x = z + k0;
            real_t *i = syn + k0, *m = mem + k0, *s = spk + k0;
            for (int64_t n = 0; n < N; n++) { const real_t p = alpha[n] * ip[n]; i[n] = p + x[n]; }
            if (subtract && narrow)
                for (int64_t n = 0; n < N; n++) {
                    const real_t p = beta[n] * u[n], v = p + i[n];
                    const real_t rt = (real_t)((float)r[n] * (float)thr[n]);
                    m[n] = v - rt;
                }
            else if (subtract)
                for (int64_t n = 0; n < N; n++) {
                    const real_t p = beta[n] * u[n], v = p + i[n], rt = r[n] * thr[n];
                    m[n] = v - rt;
                }
            else
                for (int64_t n = 0; n < N; n++) {
                    const real_t p = beta[n] * u[n], v = p + i[n], vr = v * r[n];
                    m[n] = v - vr;
                }
            for (int64_t n = 0; n < N; n++) s[n] = m[n] > thr[n];
        }
    free(zero);
}

/* Synaptic backward. gs, gi, gm: dL/dS, dL/dI, dL/dU [T, B, N] or NULL; dz [T, B, N] out:
   dL/dI = dL/dX; du [T, B, N] out: dL/dU; dv [M] scratch (dL/dV of the next step); ds [N] scratch;
   sums [N] float64 or NULL: acc_ds += dL/dS*S', acc_r += dL/dU[t]*R[t],
   acc_alpha += dL/dI[t]*I[t-1], acc_beta += dL/dV[t]*U[t-1] (t >= 1). */
SL_CLONES
void sl_synaptic_bwd_SFX(int64_t T, int64_t B, int64_t N, int subtract, int sg, double c1d, double c2d,
                         const real_t *mem, const real_t *syn, const real_t *spk, const real_t *alpha,
                         const real_t *beta, const real_t *thr, const real_t *gs, const real_t *gi,
                         const real_t *gm, real_t *dz, real_t *dv, real_t *ds,
                         double *acc_ds, double *acc_r, double *acc_alpha, double *acc_beta)
{
    const int64_t M = B * N;
    const real_t c1 = (real_t)c1d, c2 = (real_t)c2d;
    for (int64_t t = T - 1; t >= 0; t--)
        for (int64_t b = 0; b < B; b++) {
            const int64_t k0 = t * M + b * N;
            const real_t *mt = mem + k0, *gmt = gm ? gm + k0 : NULL, *git = gi ? gi + k0 : NULL;
            const real_t *r = t ? spk + k0 - M : NULL;
            real_t *di = dz + k0, *v = dv + b * N;
            sg_row_SFX(sg, c1, c2, N, mt, thr, gs ? gs + k0 : NULL, ds);
            for (int64_t n = 0; n < N; n++) {
                real_t h = ds[n];
                if (gmt) h = h + gmt[n];
                if (t < T - 1) { const real_t c = v[n] * beta[n]; h = h + c; }  /* dL/dU[t] */
                const real_t rn = r ? r[n] : (real_t)((0 - thr[n]) > 0);
                if (acc_r) acc_r[n] += (double)(h * rn);
                const real_t vn = subtract ? h : h * (1 - rn);  /* dL/dV[t] */
                v[n] = vn;
                real_t g = git ? git[n] : 0;
                g = g + vn;
                if (t < T - 1) { const real_t c = di[M + n] * alpha[n]; g = g + c; }
                di[n] = g;
            }
            if (acc_ds) for (int64_t n = 0; n < N; n++) acc_ds[n] += (double)ds[n];
            if (t > 0 && acc_alpha) {
                const real_t *ip = syn + k0 - M;
                for (int64_t n = 0; n < N; n++) acc_alpha[n] += (double)(di[n] * ip[n]);
            }
            if (t > 0 && acc_beta) {
                const real_t *up = mem + k0 - M;
                for (int64_t n = 0; n < N; n++) acc_beta[n] += (double)(v[n] * up[n]);
            }
        }
}
"""

C_SOURCE = (_HEADER + _TEMPLATE.replace("real_t", "float").replace("SFX", "f32").replace("EXP", "expf")
            + _TEMPLATE.replace("real_t", "double").replace("SFX", "f64").replace("EXP", "exp"))

_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}


def _build() -> ctypes.CDLL | None:
    lib = build_library("sl_fused_lif", C_SOURCE)  # expf/exp: libm, already in the process
    if lib is None:
        return None
    P, I64, INT, D = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_double
    for sfx in _SUFFIX.values():
        sig = {"sl_leaky_fwd": [I64, I64, I64, INT, INT] + [P] * 5,
               "sl_leaky_bwd": [I64, I64, I64, INT, INT, D, D] + [P] * 11,
               "sl_synaptic_fwd": [I64, I64, I64, INT, INT] + [P] * 7,
               "sl_synaptic_bwd": [I64, I64, I64, INT, INT, D, D] + [P] * 16}
        for name, argtypes in sig.items():
            f = getattr(lib, f"{name}_{sfx}")
            f.argtypes, f.restype = argtypes, None
    return lib


_KERNEL = LazyLibrary(_build, KERNEL_ENV)


def available() -> bool:
    """True when the kernel is built (or could be built now) and not disabled by SPIKELOOP_LIF_KERNEL=0."""
    return _KERNEL.available()


def applies(z: torch.Tensor, params: list[torch.Tensor], sg_name: str) -> bool:
    """Whether the kernel takes this call: CPU float32/float64 z [T, B, *F], parameters 0-dim or
    broadcastable to F, a surrogate it knows, and the kernel available."""
    if z.device.type != "cpu" or z.dtype not in _SUFFIX or sg_name not in SURROGATE_CODES or z.dim() < 2:
        return False
    feat = z.shape[2:]
    for p in params:
        if p.dim() > len(feat) or any(a != 1 and a != b for a, b in zip(reversed(p.shape), reversed(feat))):
            return False
    return available()


def vec(p: torch.Tensor, feat) -> torch.Tensor:
    """A parameter (0-dim or broadcastable to feat) as a contiguous [prod(feat)] vector."""
    return p.detach().expand(feat).reshape(-1).contiguous()


def reduce_sum(acc: torch.Tensor, like: torch.Tensor, feat) -> torch.Tensor:
    """Per-neuron float64 sums [prod(feat)] -> like's shape (0-dim or broadcastable to feat), float64."""
    acc = acc.reshape(feat)
    return acc.sum().reshape(()) if like.dim() == 0 else acc.sum_to_size(like.shape)


def _sg_consts(sg_name: str, slope: float) -> tuple[float, float]:
    """The scalar factors of `fused_lif.surrogate_grad`'s formulas (the same Python expressions)."""
    if sg_name == "atan":
        return math.pi / 2 * slope, slope / 2
    if sg_name == "sigmoid":
        return -slope, slope
    return slope, 0.0


def _p(t: torch.Tensor | None):
    return None if t is None else t.data_ptr()


def _flat(feat):
    return math.prod(feat) if len(feat) else 1


def leaky_forward(z, beta_v, thr_v, subtract: bool, narrow: bool):
    """z [T, B, *F] contiguous; beta_v, thr_v [N] (`vec`). Returns (spk, mem) [T, B, *F]."""
    T, B = z.shape[:2]
    spk, mem = torch.empty_like(z), torch.empty_like(z)
    getattr(_KERNEL.lib, f"sl_leaky_fwd_{_SUFFIX[z.dtype]}")(T, B, _flat(z.shape[2:]), int(subtract), int(narrow),
                                                      z.data_ptr(), beta_v.data_ptr(), thr_v.data_ptr(),
                                                      spk.data_ptr(), mem.data_ptr())
    return spk, mem


def leaky_backward(mem, spk, beta_v, thr_v, g_spk, g_mem, subtract: bool, sg_name: str, slope: float,
                   need_thr: bool, need_beta: bool):
    """dL/dX [T, B, *F] and the float64 per-neuron sums [N] (None where not asked):
    (dz, sum dL/dS*S', sum dL/dU*R, sum dL/dU[t]*P[t-1])."""
    T, B = mem.shape[:2]
    N = _flat(mem.shape[2:])
    gs = None if g_spk is None else g_spk.contiguous()
    gm = None if g_mem is None else g_mem.contiguous()
    dz = torch.empty_like(mem)
    ds = torch.empty(N, dtype=mem.dtype)
    acc = [torch.zeros(N, dtype=torch.float64) if w else None
           for w in (need_thr and gs is not None, need_thr and subtract, need_beta)]
    c1, c2 = _sg_consts(sg_name, slope)
    getattr(_KERNEL.lib, f"sl_leaky_bwd_{_SUFFIX[mem.dtype]}")(
        T, B, N, int(subtract), SURROGATE_CODES[sg_name], c1, c2, mem.data_ptr(), spk.data_ptr(),
        beta_v.data_ptr(), thr_v.data_ptr(), _p(gs), _p(gm), dz.data_ptr(), ds.data_ptr(), *map(_p, acc))
    return (dz, *acc)


def synaptic_forward(z, alpha_v, beta_v, thr_v, subtract: bool, narrow: bool):
    """z [T, B, *F] contiguous; alpha_v, beta_v, thr_v [N]. Returns (spk, syn, mem) [T, B, *F]."""
    T, B = z.shape[:2]
    spk, syn, mem = torch.empty_like(z), torch.empty_like(z), torch.empty_like(z)
    getattr(_KERNEL.lib, f"sl_synaptic_fwd_{_SUFFIX[z.dtype]}")(
        T, B, _flat(z.shape[2:]), int(subtract), int(narrow), z.data_ptr(), alpha_v.data_ptr(), beta_v.data_ptr(),
        thr_v.data_ptr(), spk.data_ptr(), syn.data_ptr(), mem.data_ptr())
    return spk, syn, mem


def synaptic_backward(mem, syn, spk, alpha_v, beta_v, thr_v, g_spk, g_syn, g_mem, subtract: bool, sg_name: str,
                      slope: float, need_thr: bool, need_alpha: bool, need_beta: bool):
    """(dL/dX [T, B, *F], sum dL/dS*S', sum dL/dU*R, sum dL/dI[t]*I[t-1], sum dL/dV[t]*U[t-1]),
    the sums float64 [N] or None where not asked."""
    T, B = mem.shape[:2]
    N = _flat(mem.shape[2:])
    gs, gi, gm = (None if g is None else g.contiguous() for g in (g_spk, g_syn, g_mem))
    dz = torch.empty_like(mem)
    dv = torch.empty(B * N, dtype=mem.dtype)
    ds = torch.empty(N, dtype=mem.dtype)
    acc = [torch.zeros(N, dtype=torch.float64) if w else None
           for w in (need_thr and gs is not None, need_thr and subtract, need_alpha, need_beta)]
    c1, c2 = _sg_consts(sg_name, slope)
    getattr(_KERNEL.lib, f"sl_synaptic_bwd_{_SUFFIX[mem.dtype]}")(
        T, B, N, int(subtract), SURROGATE_CODES[sg_name], c1, c2, mem.data_ptr(), syn.data_ptr(), spk.data_ptr(),
        alpha_v.data_ptr(), beta_v.data_ptr(), thr_v.data_ptr(), _p(gs), _p(gi), _p(gm), dz.data_ptr(),
        dv.data_ptr(), ds.data_ptr(), *map(_p, acc))
    return (dz, *acc)
