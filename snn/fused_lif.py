"""Fused multi-step Leaky, Synaptic and RLeaky layers for training: each time loop in one autograd Function.

`leaky_multistep(z, beta, threshold, ...)`, `synaptic_multistep(z, alpha, beta, threshold, ...)` and
`rleaky_multistep(z, beta, threshold, ..., weight=/V=)` compute exactly what stepping snnTorch's
`Leaky` / `Synaptic` / `RLeaky` over time computes (docs/neuron_semantics.md, `reset_delay=True`,
unit spikes): the forward repeats the same float operations in the same order (for the dense
RLeaky the same `F.linear` call on the previous spikes each step), so spikes, currents and
membranes are bit-identical; the backward is written by hand. Autograd through the step-by-step
path records ~10 nodes per time step and runs the surrogate derivative once per step; here the
surrogate and the parameter gradients are computed once over all T steps and only the membrane
(and current) recurrence runs step by step (for the dense RLeaky one [B, N] x [N, N] product per
step, the recurrent weight gradient one product over all steps). Parameter gradients other than
the dense recurrent weight are summed in float64.

On CPU float32/float64 tensors the Leaky and Synaptic loops run as compiled C
(snn/fused_lif_kernel.py: all T steps of the forward, and of the backward, in one call each; the
same operations in the same order, so the same bits); elsewhere (CUDA, other dtypes, the RLeaky,
or SPIKELOOP_LIF_KERNEL=0) the torch-op loops below run. A float64 layer with a 0-dim threshold
subtracts float32(R*theta), as snnTorch does (its reset signal is float32), on every path.

tests/test_fused_lif.py checks forward bits and gradients (within 1e-6 of the gradient's scale in
float64) against snnTorch's modules and autograd, on both the C and the torch-op loops. The torch
ops run on CUDA too (no Triton/CUDA kernel yet).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import fused_lif_kernel as _kernel
from .spec import SURROGATES, Surrogate


def surrogate_grad(name: str, slope: float, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """d spike / dx times `grad`, for spike = H(x), with snnTorch 1.0's surrogate formulas
    (`snntorch/surrogate.py`, same expressions): x, grad: same shape. `slope` is the spec's
    `Surrogate.slope` (snnTorch's alpha / slope / threshold argument)."""
    # in-place chains of the same operations snnTorch applies (a Python scalar over a tensor is
    # reciprocal then multiply in torch), so no temporaries beyond the result
    if name == "atan":
        return (math.pi / 2 * slope * x).pow_(2).add_(1).reciprocal_().mul_(slope / 2).mul_(grad)
    if name == "fast_sigmoid":
        return torch.div(grad, (slope * torch.abs(x)).add_(1.0).pow_(2))
    if name == "sigmoid":
        e = torch.exp(-slope * x)
        return grad * slope * e / ((e + 1) ** 2)
    if name == "straight_through":
        return grad.clone()
    if name == "triangular":
        g = grad * slope
        return torch.where(x >= 0, -g, g)
    raise ValueError(f"surrogate must be one of {SURROGATES}, got {name!r}")


def _narrow_reset(z: torch.Tensor, thr: torch.Tensor) -> bool:
    """Whether snnTorch's R*theta is a float32 product for this layer: its reset signal R is
    float32 (its surrogates' forward returns `.float()`), and with a 0-dim threshold torch's
    promotion keeps the product float32, so a float64 layer subtracts float32(theta)."""
    return torch.result_type(torch.empty(1, dtype=torch.float32, device=z.device), thr) != z.dtype


def _use_kernel(z: torch.Tensor, params: list[torch.Tensor], sg_name: str) -> bool:
    """Whether the C loops of snn/fused_lif_kernel.py run this call (CPU float32/float64, the
    kernel built and not disabled by SPIKELOOP_LIF_KERNEL=0); else the torch-op loops below."""
    return _kernel.applies(z, params, sg_name)


def _sum_to(grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Sum a [T, B, *F] gradient down to a parameter's shape (0-dim or broadcastable to F)."""
    if like.dim() == 0:
        return grad.sum().reshape(())
    return grad.sum_to_size(like.shape)



def _kernel_threshold_grad(threshold, feat, *sums):
    """dL/dθ from the C kernel's per-element sums (the surrogate and reset terms), each reduced to
    θ's shape in float64 and subtracted, as the torch-op backward does."""
    g = torch.zeros(threshold.shape, dtype=torch.float64)
    for part in sums:
        if part is not None:
            g -= _kernel.reduce_sum(part, threshold, feat)
    return g.to(threshold.dtype)

class _LeakyMultistep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, beta, threshold, subtract, sg_name, sg_slope):
        T = z.shape[0]
        thr = threshold.detach()
        narrow = subtract and _narrow_reset(z, thr)  # float64 layer, 0-dim threshold: float32 R*theta
        ctx.cfg = (subtract, sg_name, sg_slope)
        ctx.set_materialize_grads(False)
        ctx.kernel = None
        if _use_kernel(z, [beta, threshold], sg_name):
            feat = z.shape[2:]
            bv, tv = _kernel.vec(beta, feat), _kernel.vec(thr, feat)
            spk, mem = _kernel.leaky_forward(z, bv, tv, subtract, narrow)
            ctx.kernel = (bv, tv)
            ctx.save_for_backward(mem, spk, None, beta, threshold)
            return spk, mem
        spk = torch.empty_like(z)
        mem = torch.empty_like(z)
        u = torch.zeros_like(z[0])
        # R[1] = H(U[0] - theta) with U[0] = 0: zero for every positive threshold
        r0 = (u - thr > 0).to(z.dtype)
        r = r0
        tmp = torch.empty_like(u)
        for t in range(T):
            m = mem[t]
            if subtract:  # U = (beta*U + X) - R*theta, the snnTorch expression's rounding order
                torch.mul(beta, u, out=m)
                m.add_(z[t])
                if narrow:
                    m.sub_(torch.mul(r.to(torch.float32), thr))
                else:
                    torch.mul(r, thr, out=tmp)
                    m.sub_(tmp)
            else:  # U = beta*((1 - R)*U) + X
                torch.sub(1, r, out=tmp)
                tmp.mul_(u)
                torch.mul(beta, tmp, out=m)
                m.add_(z[t])
            # H(U - theta) with a strict test: U - theta > 0 exactly when U > theta (IEEE, subnormals kept)
            torch.gt(m, thr, out=spk[t])
            u, r = m, spk[t]
        ctx.save_for_backward(mem, spk, r0, beta, threshold)
        return spk, mem

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_spk, g_mem):
        mem, spk, r0, beta, threshold = ctx.saved_tensors
        subtract, sg_name, sg_slope = ctx.cfg
        T = mem.shape[0]
        need_z, need_beta, need_thr = ctx.needs_input_grad[:3]
        thr = threshold.detach()
        if ctx.kernel is not None:
            if g_spk is None and g_mem is None:
                return None, None, None, None, None, None
            bv, tv = ctx.kernel
            feat = mem.shape[2:]
            dm, s_ds, s_r, s_beta = _kernel.leaky_backward(mem, spk, bv, tv, g_spk, g_mem, subtract, sg_name,
                                                           sg_slope, need_thr, need_beta)
            g_beta = _kernel.reduce_sum(s_beta, beta, feat).to(beta.dtype) if need_beta else None
            g_thr = _kernel_threshold_grad(threshold, feat, s_ds, s_r) if need_thr else None
            return (dm if need_z else None), g_beta, g_thr, None, None, None
        ds = None  # surrogate term dL/dS * dS/dU, [T, B, *F]
        if g_spk is not None:
            ds = surrogate_grad(sg_name, sg_slope, mem - thr, g_spk)
        if ds is None and g_mem is None:
            return None, None, None, None, None, None
        if g_mem is None:  # ds is a fresh tensor: the recurrence may overwrite it unless needed below
            dm = ds.clone() if need_thr else ds
        else:
            dm = g_mem.clone() if ds is None else ds + g_mem
        # dL/dU[t] = h[t] + a[t+1] * dL/dU[t+1], a = beta (subtract) or beta*(1 - R[t+1]) (zero);
        # R[t+1] = S[t]
        keep = None
        if subtract:
            b = beta.detach()
            for t in range(T - 2, -1, -1):
                dm[t].addcmul_(dm[t + 1], b)
        else:
            keep = 1 - spk[:-1]
            a = keep * beta.detach()
            for t in range(T - 2, -1, -1):
                dm[t].addcmul_(dm[t + 1], a[t])
        g_beta = g_thr = None
        if need_beta and T > 1:
            prev = mem[:-1] if subtract else keep * mem[:-1]  # the term beta multiplies at steps 2..T
            g_beta = _sum_to((dm[1:] * prev).double(), beta).to(beta.dtype)
        elif need_beta:
            g_beta = torch.zeros_like(beta)
        if need_thr:
            # summed separately, in float64: the two terms can be large and cancel
            g_thr = torch.zeros(threshold.shape, dtype=torch.float64, device=threshold.device)
            if ds is not None:
                g_thr -= _sum_to(ds.double(), threshold)
            if subtract:
                r = torch.cat([r0.expand_as(mem[:1]), spk[:-1]]) if T > 1 else r0.expand_as(mem)
                g_thr -= _sum_to((dm * r).double(), threshold)
            g_thr = g_thr.to(threshold.dtype)
        return (dm if need_z else None), g_beta, g_thr, None, None, None


def _check_args(z, reset, **params):
    if reset not in ("subtract", "zero"):
        raise ValueError(f"reset must be 'subtract' or 'zero' for the fused neurons, got {reset!r}")
    if z.dim() < 2 or z.shape[0] < 1:
        raise ValueError(f"z must be [T, B, ...] with T >= 1, got {list(z.shape)}")
    for name, p in params.items():
        if p.dtype != z.dtype or p.device != z.device:
            raise ValueError(f"{name} must have z's dtype and device ({z.dtype}, {z.device}), "
                             f"got {p.dtype}, {p.device}")


def leaky_multistep(z: torch.Tensor, beta: torch.Tensor, threshold: torch.Tensor, reset: str,
                    surrogate: Surrogate) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a Leaky layer over all time steps.

    z: [T, B, *F] synaptic input (float32 or float64); beta: the decay already clamped to [0, 1],
    and threshold: 0-dim or broadcastable to F (per neuron), same dtype and device as z; either may
    require grad. reset: "subtract" or "zero". surrogate: the spec's surrogate (backward only).
    returns (spikes [T, B, *F] {0, 1} in z's dtype, membranes U[1..T] [T, B, *F]).
    """
    _check_args(z, reset, beta=beta, threshold=threshold)
    return _LeakyMultistep.apply(z.contiguous(), beta, threshold, reset == "subtract", surrogate.name,
                                 float(surrogate.slope))


class _SynapticMultistep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, alpha, beta, threshold, subtract, sg_name, sg_slope):
        T = z.shape[0]
        thr = threshold.detach()
        narrow = subtract and _narrow_reset(z, thr)  # float64 layer, 0-dim threshold: float32 R*theta
        ctx.cfg = (subtract, sg_name, sg_slope)
        ctx.set_materialize_grads(False)
        ctx.kernel = None
        if _use_kernel(z, [alpha, beta, threshold], sg_name):
            feat = z.shape[2:]
            av, bv, tv = (_kernel.vec(p, feat) for p in (alpha, beta, thr))
            spk, syn, mem = _kernel.synaptic_forward(z, av, bv, tv, subtract, narrow)
            ctx.kernel = (av, bv, tv)
            ctx.save_for_backward(mem, syn, spk, None, alpha, beta, threshold)
            return spk, syn, mem
        spk, mem, syn = torch.empty_like(z), torch.empty_like(z), torch.empty_like(z)
        u = torch.zeros_like(z[0])
        i_prev = u
        r0 = (u - thr > 0).to(z.dtype)
        r = r0
        v = torch.empty_like(u)
        tmp = torch.empty_like(u)
        for t in range(T):
            i_t, m = syn[t], mem[t]
            torch.mul(alpha, i_prev, out=i_t)  # I = alpha*I + X
            i_t.add_(z[t])
            torch.mul(beta, u, out=v)  # V = beta*U + I
            v.add_(i_t)
            if narrow:  # U = V - float32(R*theta)
                torch.sub(v, torch.mul(r.to(torch.float32), thr), out=m)
            elif subtract:  # U = V - R*theta
                torch.mul(r, thr, out=tmp)
                torch.sub(v, tmp, out=m)
            else:  # U = V - V*R (snnTorch subtracts the recomputed V times the reset)
                torch.mul(v, r, out=tmp)
                torch.sub(v, tmp, out=m)
            torch.gt(m, thr, out=spk[t])
            u, r, i_prev = m, spk[t], i_t
        ctx.save_for_backward(mem, syn, spk, r0, alpha, beta, threshold)
        return spk, syn, mem

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_spk, g_syn, g_mem):
        mem, syn, spk, r0, alpha, beta, threshold = ctx.saved_tensors
        subtract, sg_name, sg_slope = ctx.cfg
        T = mem.shape[0]
        need_z, need_alpha, need_beta, need_thr = ctx.needs_input_grad[:4]
        thr = threshold.detach()
        if g_spk is None and g_syn is None and g_mem is None:
            return (None,) * 7
        if ctx.kernel is not None:
            av, bv, tv = ctx.kernel
            feat = mem.shape[2:]
            di, s_ds, s_r, s_alpha, s_beta = _kernel.synaptic_backward(
                mem, syn, spk, av, bv, tv, g_spk, g_syn, g_mem, subtract, sg_name, sg_slope, need_thr,
                need_alpha, need_beta)
            g_alpha = _kernel.reduce_sum(s_alpha, alpha, feat).to(alpha.dtype) if need_alpha else None
            g_beta = _kernel.reduce_sum(s_beta, beta, feat).to(beta.dtype) if need_beta else None
            g_thr = _kernel_threshold_grad(threshold, feat, s_ds, s_r) if need_thr else None
            return (di if need_z else None), g_alpha, g_beta, g_thr, None, None, None
        ds = surrogate_grad(sg_name, sg_slope, mem - thr, g_spk) if g_spk is not None else None
        h = torch.zeros_like(mem) if ds is None else ds.clone()
        if g_mem is not None:
            h += g_mem
        r = torch.cat([r0.expand_as(mem[:1]), spk[:-1]])  # R[t]
        keep = None if subtract else 1 - r
        a, b = alpha.detach(), beta.detach()
        dv = torch.empty_like(mem)  # dL/dV[t]
        di = torch.zeros_like(mem) if g_syn is None else g_syn.clone()  # becomes dL/dI[t]
        for t in range(T - 1, -1, -1):
            dm = h[t] if t == T - 1 else h[t].addcmul_(dv[t + 1], b)  # dL/dU[t]
            if subtract:
                dv[t] = dm
            else:
                torch.mul(dm, keep[t], out=dv[t])
            di[t].add_(dv[t])
            if t < T - 1:
                di[t].addcmul_(di[t + 1], a)
        g_alpha = g_beta = g_thr = None
        if need_alpha:
            g_alpha = (_sum_to((di[1:] * syn[:-1]).double(), alpha).to(alpha.dtype) if T > 1
                       else torch.zeros_like(alpha))
        if need_beta:
            g_beta = (_sum_to((dv[1:] * mem[:-1]).double(), beta).to(beta.dtype) if T > 1
                      else torch.zeros_like(beta))
        if need_thr:
            g_thr = torch.zeros(threshold.shape, dtype=torch.float64, device=threshold.device)
            if ds is not None:
                g_thr -= _sum_to(ds.double(), threshold)
            if subtract:  # h now holds dL/dU
                g_thr -= _sum_to((h * r).double(), threshold)
            g_thr = g_thr.to(threshold.dtype)
        return (di if need_z else None), g_alpha, g_beta, g_thr, None, None, None


def synaptic_multistep(z: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, threshold: torch.Tensor,
                       reset: str, surrogate: Surrogate) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run a Synaptic layer over all time steps (docs/neuron_semantics.md).

    z: [T, B, *F] input; alpha, beta: decays already clamped to [0, 1], threshold: 0-dim or
    broadcastable to F, same dtype and device as z. returns (spikes, synaptic currents I[1..T],
    membranes U[1..T]), each [T, B, *F].
    """
    _check_args(z, reset, alpha=alpha, beta=beta, threshold=threshold)
    return _SynapticMultistep.apply(z.contiguous(), alpha, beta, threshold, reset == "subtract", surrogate.name,
                                    float(surrogate.slope))


def _surrogate_deriv(name: str, slope: float, x: torch.Tensor) -> torch.Tensor:
    """d spike / dx (`surrogate_grad` with a unit gradient), overwriting the fresh tensor x for
    the formulas that allow it."""
    if name == "atan":
        return x.mul_(math.pi / 2 * slope).pow_(2).add_(1).reciprocal_().mul_(slope / 2)
    if name == "fast_sigmoid":
        return x.abs_().mul_(slope).add_(1.0).pow_(2).reciprocal_()
    if name == "straight_through":
        return torch.ones_like(x)
    return surrogate_grad(name, slope, x, torch.ones((), dtype=x.dtype, device=x.device))


def _sum_to64(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`_sum_to` accumulated in float64 without a float64 copy of x: [T, B, *F] -> like's shape."""
    if like.dim() == 0:
        return x.sum(dtype=torch.float64).reshape(())
    lead = x.dim() - like.dim()
    out = x.sum(dim=tuple(range(lead)), dtype=torch.float64) if lead else x.double()
    return out.sum_to_size(like.shape)


class _RLeakyMultistep(torch.autograd.Function):
    """RLeaky: B[t] = (beta*U[t-1] + X[t]) + rec(S[t-1]), U[t] = B[t] - R[t]*theta (subtract) or
    B[t] - R[t]*B[t] (zero), S[t] = H(U[t] - theta), R[t] = H(U[t-1] - theta), U[0] = S[0] = 0;
    rec(S) = F.linear(S, weight, bias) (dense) or S*weight (elementwise, weight = V)."""

    @staticmethod
    def forward(ctx, z, beta, threshold, weight, bias, subtract, dense, sg_name, sg_slope):
        T = z.shape[0]
        spk, mem = torch.empty_like(z), torch.empty_like(z)
        u = torch.zeros_like(z[0])
        s = u  # S[0] = 0: snnTorch's first recurrent input (rec(0) is computed too: the bias, or signed zeros)
        thr, w = threshold.detach(), weight.detach()
        b = bias.detach() if bias is not None else None
        r0 = (u - thr > 0).to(z.dtype)  # R[1] = H(U[0] - theta)
        r = r0
        tmp = torch.empty_like(u)
        # snnTorch's reset R is float32 (its surrogates' forward returns `.float()`), and R*theta
        # follows torch's promotion: for a float64 layer with a 0-dim threshold the product is
        # float32, so the float64 RLeaky subtracts float32(theta); repeated here
        narrow = subtract and _narrow_reset(z, thr)
        # F.linear's input: a slice of spk when it sits on the alignment of a fresh tensor (what
        # snnTorch passes: 64 bytes on the CPU, 512 on CUDA), else a fresh copy. The BLAS result
        # depends on it: a misaligned [B, N] view gives other float32 bits for some shapes
        align = 512 if z.is_cuda else 64
        aligned = (z[0].numel() * z.element_size()) % align == 0 and spk.data_ptr() % align == 0
        for t in range(T):
            m = mem[t]
            torch.mul(beta, u, out=m)  # (beta*U + X) + rec(S), snnTorch's rounding order
            m.add_(z[t])
            m.add_(F.linear(s, w, b) if dense else torch.mul(s, w))
            if narrow:
                m.sub_(torch.mul(r.to(torch.float32), thr))
            elif subtract:  # U = B - R*theta
                torch.mul(r, thr, out=tmp)
            else:  # U = B - R*B (snnTorch recomputes B: the same value)
                torch.mul(r, m, out=tmp)
            if not narrow:
                m.sub_(tmp)
            torch.gt(m, thr, out=spk[t])
            u, r = m, spk[t]
            s = spk[t] if (aligned or not dense) else spk[t].clone()
        ctx.save_for_backward(mem, spk, r0, beta, threshold, weight)
        ctx.cfg = (subtract, dense, sg_name, sg_slope, bias is not None)
        ctx.set_materialize_grads(False)
        return spk, mem

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_spk, g_mem):
        mem, spk, r0, beta, threshold, weight = ctx.saved_tensors
        subtract, dense, sg_name, sg_slope, has_bias = ctx.cfg
        need_z, need_beta, need_thr, need_w, need_b = ctx.needs_input_grad[:5]
        if g_spk is None and g_mem is None:
            return (None,) * 9
        T = mem.shape[0]
        thr, w, bt = threshold.detach(), weight.detach(), beta.detach()
        # full-size temporaries are few: each is a fresh (page-faulting) allocation of T*B*N
        sgp = _surrogate_deriv(sg_name, sg_slope, mem - thr)  # dS[t]/dU[t]
        g_thr = torch.zeros(threshold.shape, dtype=torch.float64, device=threshold.device) if need_thr else None
        if g_spk is None:
            h = g_mem.clone(memory_format=torch.contiguous_format)
        else:
            h = sgp * g_spk  # the output spikes' surrogate term
            if need_thr:
                g_thr -= _sum_to64(h, threshold)
            if g_mem is not None:
                h += g_mem
        keep = r = None  # R[t] = S[t-1] (R[1] = r0); zero reset: dB[t] = (1 - R[t]) * dL/dU[t]
        if not subtract:
            keep = torch.empty_like(mem)
            torch.sub(1, r0.expand_as(mem[0]), out=keep[0])
            torch.sub(1, spk[:-1], out=keep[1:])
            h.mul_(keep)
        elif need_thr:
            r = torch.cat([r0.expand_as(mem[:1]), spk[:-1]])
        # dL/dU[t] = h[t] + S'[t] * rec^T(dB[t+1]) + beta*dB[t+1]; dB[t] = dL/dB[t] = dL/dX[t]
        rec_g = None  # dense: rec^T(dB[t+1]) = dB[t+1] @ W per step (zero at the last step)
        if dense:
            rec_g = torch.zeros_like(mem)
            sk, a = (sgp, bt) if keep is None else (sgp * keep, keep * bt)
            db = h  # rows become dB from the last step back
            for t in range(T - 2, -1, -1):
                torch.mm(db[t + 1], w, out=rec_g[t])
                db[t].addcmul_(sk[t], rec_g[t]).addcmul_(a if keep is None else a[t], db[t + 1])
            if need_thr and T > 1:  # the spikes' share of the recurrent gradient
                g_thr -= _sum_to64(rec_g[:-1].mul_(sgp[:-1]), threshold)
        else:
            # the elementwise map folds into one coefficient per element: S'*V + beta
            a = torch.addcmul(bt, sgp, w) if need_thr else sgp.mul_(w).add_(bt)
            if keep is not None:
                a.mul_(keep)
            db = h
            for t in range(T - 2, -1, -1):
                db[t].addcmul_(a[t], db[t + 1])
            if need_thr and T > 1:
                g_thr -= _sum_to64(sgp[:-1].mul_(w).mul_(db[1:]), threshold)
        g_beta = g_w = g_b = None
        if need_beta:
            g_beta = (_sum_to64(db[1:] * mem[:-1], beta).to(beta.dtype) if T > 1 else torch.zeros_like(beta))
        if need_thr:
            if subtract:
                g_thr -= _sum_to64(db * r, threshold)
            g_thr = g_thr.to(threshold.dtype)
        if need_w:
            if T == 1:
                g_w = torch.zeros_like(weight)
            elif dense:  # sum over t, b of dB[t] S[t-1]^T, one matrix product
                g_w = db[1:].reshape(-1, w.shape[0]).t() @ spk[:-1].reshape(-1, w.shape[1])
            else:
                g_w = _sum_to64(db[1:] * spk[:-1], weight).to(weight.dtype)
        if need_b and has_bias:
            g_b = torch.sum(db.reshape(-1, db.shape[-1]), 0, dtype=torch.float64).to(db.dtype)
        return (db if need_z else None), g_beta, g_thr, g_w, g_b, None, None, None, None


def rleaky_multistep(z: torch.Tensor, beta: torch.Tensor, threshold: torch.Tensor, reset: str,
                     surrogate: Surrogate, *, weight: torch.Tensor | None = None,
                     bias: torch.Tensor | None = None, V: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run an RLeaky layer over all time steps (docs/neuron_semantics.md): the recurrent input
    of step t is rec(S[t-1]), with S[0] = 0.

    Dense recurrence (`all_to_all`): z [T, B, N], weight [N, N] and optional bias [N] (snnTorch's
    `recurrent` nn.Linear, rec(S) = S W^T + b). Elementwise: z [T, B, *F], V 0-dim or broadcastable
    to F (rec(S) = S*V). Give exactly one of weight / V. beta: clamped to [0, 1], threshold: 0-dim
    or broadcastable to F; all the same dtype and device as z; any may require grad.
    returns (spikes [T, B, *F] {0, 1} in z's dtype, membranes U[1..T] [T, B, *F]).
    Like snnTorch, a float64 layer with a 0-dim threshold subtracts the float32 product R*theta
    (snnTorch's reset signal is float32); elementwise V with reset "zero" has no effect (the
    reset clears V*S[t-1] at the step it arrives), so V's gradient is zero there.
    """
    if (weight is None) == (V is None):
        raise ValueError("rleaky_multistep needs exactly one of weight (dense recurrence) or V (elementwise)")
    if V is not None and bias is not None:
        raise ValueError("rleaky_multistep: bias belongs to the dense recurrence (weight), not to V")
    extra = {"weight": weight} if weight is not None else {"V": V}
    if bias is not None:
        extra["bias"] = bias
    _check_args(z, reset, beta=beta, threshold=threshold, **extra)
    if weight is not None:
        n = z.shape[-1]
        if z.dim() != 3 or tuple(weight.shape) != (n, n) or (bias is not None and tuple(bias.shape) != (n,)):
            raise ValueError(f"dense rleaky needs z [T, B, N], weight [N, N] and bias [N], got z {list(z.shape)}, "
                             f"weight {list(weight.shape)}"
                             + (f", bias {list(bias.shape)}" if bias is not None else ""))
    return _RLeakyMultistep.apply(z.contiguous(), beta, threshold, weight if weight is not None else V, bias,
                                  reset == "subtract", weight is not None, surrogate.name, float(surrogate.slope))
