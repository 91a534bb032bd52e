"""The fused multi-step Leaky, Synaptic and RLeaky (snn/fused_lif.py) against snnTorch's neurons
stepped over time: forward bit-identical, gradients equal to autograd's through snnTorch within
1e-6 of their scale."""

from __future__ import annotations

import math
import random

import pytest
import snntorch
import torch

from torch import nn

from snn import fused_lif_kernel
from snn.fused_lif import SURROGATES, leaky_multistep, rleaky_multistep, surrogate_grad, synaptic_multistep
from snn.fused_lif_kernel import KERNEL_ENV
from snn.model import build_model, surrogate_fn
from snn.presets import fc
from snn.spec import Conv2d, Flatten, Leaky, Linear, MaxPool2d, ModelSpec, RLeaky, Surrogate, Synaptic

GRAD_RTOL = 1e-6


@pytest.fixture(params=["c", "torch"])
def lif_backend(request, monkeypatch):
    """The fused Leaky/Synaptic run their C loops (snn/fused_lif_kernel.py, "c") or their torch-op
    loops ("torch", SPIKELOOP_LIF_KERNEL=0); the test fails if "c" silently falls back."""
    monkeypatch.setenv(KERNEL_ENV, "1" if request.param == "c" else "0")
    if request.param == "c" and not fused_lif_kernel.available():
        pytest.skip("no C compiler for the fused LIF kernel")
    calls = []
    for name in ("leaky_forward", "synaptic_forward"):
        f = getattr(fused_lif_kernel, name)
        monkeypatch.setattr(fused_lif_kernel, name, lambda *a, _f=f, **k: calls.append(1) or _f(*a, **k))
    yield request.param
    assert bool(calls) == (request.param == "c"), f"C kernel calls: {len(calls)} with backend {request.param}"


def _snntorch_run(z, beta, threshold, reset, surrogate, learn_beta, learn_threshold):
    """Step an snnTorch Leaky (the reference) over z [T, B, *F]; returns spikes, mems, module."""
    lif = snntorch.Leaky(beta=beta.clone(), threshold=threshold.clone(), spike_grad=surrogate_fn(surrogate),
                         learn_beta=learn_beta, learn_threshold=learn_threshold, reset_mechanism=reset)
    lif = lif.to(z.dtype)
    mem = torch.zeros_like(z[0])
    spk_t, mem_t = [], []
    for t in range(z.shape[0]):
        spk, mem = lif(z[t], mem)
        spk_t.append(spk.to(mem.dtype))
        mem_t.append(mem)
    return torch.stack(spk_t), torch.stack(mem_t), lif


def _case(rng: random.Random, dtype=torch.float32):
    T, B = rng.randint(1, 30), rng.randint(1, 6)
    feat = (rng.randint(1, 9),) if rng.random() < 0.7 else (rng.randint(1, 3), rng.randint(1, 4))
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    per_neuron_beta, per_neuron_thr = rng.random() < 0.5, rng.random() < 0.5
    beta = (torch.rand(feat, generator=gen) if per_neuron_beta else torch.tensor(rng.random())).to(dtype)
    thr = (torch.rand(feat, generator=gen) * 1.5 + 0.1 if per_neuron_thr
           else torch.tensor(rng.uniform(0.2, 1.5))).to(dtype)
    if rng.random() < 0.5:  # graded currents
        z = torch.randn(T, B, *feat, generator=gen, dtype=dtype) * rng.uniform(0.3, 2.0)
    else:  # binary input spikes times a weight
        z = (torch.rand(T, B, *feat, generator=gen) < 0.4).to(dtype) * rng.uniform(0.5, 1.5)
    return dict(z=z, beta=beta, threshold=thr, reset=rng.choice(["subtract", "zero"]),
                surrogate=Surrogate(rng.choice(SURROGATES), rng.choice([1.0, 2.0, 5.0, 25.0])),
                learn_beta=rng.random() < 0.6, learn_threshold=rng.random() < 0.6,
                w_spk=torch.randn(T, B, *feat, generator=gen, dtype=dtype),
                w_mem=torch.randn(T, B, *feat, generator=gen, dtype=dtype) if rng.random() < 0.7 else None)


def _close(got, ref, what, slack=0.0):
    """max |got - ref| <= 1e-6 of ref's largest magnitude (+ slack)."""
    scale = ref.abs().max().item()
    err = (got - ref).abs().max().item()
    assert err <= GRAD_RTOL * max(scale, 1e-30) + slack, f"{what}: max error {err:.3g} vs scale {scale:.3g}"


def _grads_snntorch(c, dtype):
    z = c["z"].to(dtype).clone().requires_grad_()
    spk, mem, lif = _snntorch_run(z, c["beta"].to(dtype), c["threshold"].to(dtype), c["reset"], c["surrogate"],
                                  c["learn_beta"], c["learn_threshold"])
    _loss(c, spk, mem, dtype).backward()
    return spk, mem, {"input": z.grad, "beta": lif.beta.grad, "threshold": lif.threshold.grad}


def _loss(c, spk, mem, dtype):
    loss = (spk * c["w_spk"].to(dtype)).sum()
    return loss + (mem * c["w_mem"].to(dtype)).sum() if c["w_mem"] is not None else loss


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", range(30))
def test_fused_leaky_equals_snntorch_random(seed, dtype, lif_backend):
    """Seeded random shapes, resets, surrogates, scalar/per-neuron and learnable beta/threshold,
    graded and binary inputs; gradients of sum(w_spk*S) + sum(w_mem*U).

    Forward: bit-identical. Gradients: within 1e-6 of their scale in float64. In float32 the
    input gradient is within 1e-6 plus twice snnTorch's own float32 error (its distance to
    snnTorch in float64); a parameter gradient sums T*B*N terms that can cancel (the two threshold
    terms have opposite signs), which the two paths sum in another order, so there the bound is
    rounding's: 4 eps32 times the summed magnitude of the terms (bounded from the float64
    membrane gradients dL/dU), plus the same twice-snnTorch's-error."""
    c = _case(random.Random(seed))
    spk_ref, mem_ref, ref = _grads_snntorch(c, dtype)
    slack = {k: 0.0 for k in ref}
    if dtype == torch.float32:
        _, mem64, ref64 = _grads_snntorch(c, torch.float64)
        slack = {k: 2 * (ref[k].double() - ref64[k]).abs().max().item() if ref64[k] is not None else 0.0
                 for k in ref}
        eps, dm_abs = torch.finfo(torch.float32).eps, ref64["input"].abs().sum().item()
        w_mem_abs = c["w_mem"].abs().sum().item() if c["w_mem"] is not None else 0.0
        slack["beta"] += 4 * eps * dm_abs * mem64.abs().max().item()  # terms dL/dU[t] * U[t-1]
        slack["threshold"] += 4 * eps * (3 * dm_abs + w_mem_abs)  # terms dL/dS*S' and dL/dU*R

    z = c["z"].to(dtype).clone().requires_grad_()
    beta = c["beta"].to(dtype).clone().requires_grad_(c["learn_beta"])
    thr = c["threshold"].to(dtype).clone().requires_grad_(c["learn_threshold"])
    spk, mem = leaky_multistep(z, beta.clamp(0, 1), thr, c["reset"], c["surrogate"])
    assert torch.equal(spk, spk_ref) and torch.equal(mem, mem_ref)
    _loss(c, spk, mem, dtype).backward()
    _close(z.grad, ref["input"], "input", slack["input"])
    if c["learn_beta"]:
        _close(beta.grad, ref["beta"], "beta", slack["beta"])
    if c["learn_threshold"]:
        _close(thr.grad, ref["threshold"], "threshold", slack["threshold"])


def _synaptic_case(seed):
    rng = random.Random(1000 + seed)
    c = _case(rng)
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    feat = tuple(c["z"].shape[2:])
    c["alpha"] = torch.rand(feat, generator=gen) if rng.random() < 0.5 else torch.tensor(rng.random())
    c["learn_alpha"] = rng.random() < 0.6
    c["w_syn"] = torch.randn(c["z"].shape, generator=gen) if rng.random() < 0.5 else None
    c["z"] = c["z"] * 0.5  # the current integrates the input: keep spiking away from saturation
    return c


def _synaptic_snntorch(c, dtype):
    lif = snntorch.Synaptic(alpha=c["alpha"].to(dtype).clone(), beta=c["beta"].to(dtype).clone(),
                            threshold=c["threshold"].to(dtype).clone(), spike_grad=surrogate_fn(c["surrogate"]),
                            learn_alpha=c["learn_alpha"], learn_beta=c["learn_beta"],
                            learn_threshold=c["learn_threshold"], reset_mechanism=c["reset"]).to(dtype)
    z = c["z"].to(dtype).clone().requires_grad_()
    syn = mem = torch.zeros_like(z[0])
    out = {"spk": [], "syn": [], "mem": []}
    for t in range(z.shape[0]):
        spk, syn, mem = lif(z[t], syn, mem)
        for k, v in (("spk", spk.to(mem.dtype)), ("syn", syn), ("mem", mem)):
            out[k].append(v)
    out = {k: torch.stack(v) for k, v in out.items()}
    _synaptic_loss(c, out, dtype).backward()
    return out, {"input": z.grad, "alpha": lif.alpha.grad, "beta": lif.beta.grad, "threshold": lif.threshold.grad}


def _synaptic_loss(c, out, dtype):
    loss = (out["spk"] * c["w_spk"].to(dtype)).sum()
    if c["w_mem"] is not None:
        loss = loss + (out["mem"] * c["w_mem"].to(dtype)).sum()
    if c["w_syn"] is not None:
        loss = loss + (out["syn"] * c["w_syn"].to(dtype)).sum()
    return loss


@pytest.mark.parametrize("seed", range(20))
def test_fused_synaptic_equals_snntorch_random(seed, lif_backend):
    """Synaptic: forward bit-identical in float32 and float64 (spikes, currents, membranes);
    gradients (input, alpha, beta, threshold) within 1e-6 of their scale in float64."""
    c = _synaptic_case(seed)
    for dtype in (torch.float32, torch.float64):
        ref_out, ref = _synaptic_snntorch(c, dtype)
        z = c["z"].to(dtype).clone().requires_grad_()
        params = {k: c[k].to(dtype).clone().requires_grad_(c[f"learn_{k}"]) for k in ("alpha", "beta", "threshold")}
        spk, syn, mem = synaptic_multistep(z, params["alpha"].clamp(0, 1), params["beta"].clamp(0, 1),
                                           params["threshold"], c["reset"], c["surrogate"])
        for k, v in (("spk", spk), ("syn", syn), ("mem", mem)):
            assert torch.equal(v, ref_out[k]), (dtype, k)
        if dtype != torch.float64:
            continue
        _synaptic_loss(c, {"spk": spk, "syn": syn, "mem": mem}, dtype).backward()
        _close(z.grad, ref["input"], "input")
        for k in ("alpha", "beta", "threshold"):
            if c[f"learn_{k}"]:
                _close(params[k].grad, ref[k], k)


def test_synaptic_cases_spike():
    rates = []
    for s in range(20):
        c = _synaptic_case(s)
        spk, _, _ = synaptic_multistep(c["z"], c["alpha"].clamp(0, 1), c["beta"].clamp(0, 1), c["threshold"],
                                       c["reset"], c["surrogate"])
        rates.append(spk.mean().item())
    assert sum(0.02 < r < 0.98 for r in rates) >= 12


def test_random_cases_cover_spikes_resets_and_surrogates():
    """The random cases above really exercise spiking, both resets and every surrogate."""
    cases = [_case(random.Random(s)) for s in range(30)]
    assert {c["reset"] for c in cases} == {"subtract", "zero"}
    assert {c["surrogate"].name for c in cases} == set(SURROGATES)
    rates = []
    for c in cases:
        spk, _ = leaky_multistep(c["z"], c["beta"].clamp(0, 1), c["threshold"], c["reset"], c["surrogate"])
        rates.append(spk.mean().item())
    assert sum(0.02 < r < 0.98 for r in rates) >= 25


def _snntorch_layer_run(kind, z, beta, threshold, reset, surrogate, alpha=None):
    """snnTorch's Leaky or Synaptic (float32 0-dim/per-neuron parameters, cast with .to(z.dtype) as a
    model is) stepped over z; returns the stacked (spikes, membranes[, currents])."""
    kw = dict(beta=beta.clone(), threshold=threshold.clone(), spike_grad=surrogate_fn(surrogate), reset_mechanism=reset)
    lif = (snntorch.Leaky(**kw) if kind == "leaky" else snntorch.Synaptic(alpha=alpha.clone(), **kw)).to(z.dtype)
    mem = syn = torch.zeros_like(z[0])
    out = []
    for t in range(z.shape[0]):
        if kind == "leaky":
            spk, mem = lif(z[t], mem)
            out.append((spk.to(z.dtype), mem))
        else:
            spk, syn, mem = lif(z[t], syn, mem)
            out.append((spk.to(z.dtype), mem, syn))
    return [torch.stack(v) for v in zip(*out)], lif


@pytest.mark.parametrize("kind", ["leaky", "synaptic"])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_float64_threshold_off_float32_grid(kind, reset, lif_backend):
    """float64 layers whose 0-dim threshold is off the float32 grid: snnTorch's reset R is float32,
    so R*theta is a float32 product there (float32(theta) subtracted); a per-neuron threshold
    promotes to float64. The fused forward repeats both, bit for bit, on both backends."""
    gen = torch.Generator().manual_seed(7)
    z = torch.randn(30, 4, 6, generator=gen, dtype=torch.float64) * 0.8
    alpha = torch.tensor(0.6)
    for thr0 in (torch.tensor(0.7, dtype=torch.float64) + 1e-9,
                 torch.rand(6, generator=gen, dtype=torch.float64) * 0.5 + 0.5 + 1e-9):
        assert thr0.float().double().ne(thr0).all()  # really off the float32 grid
        ref, _ = _snntorch_layer_run(kind, z, torch.tensor(0.9), thr0, reset, Surrogate(), alpha)
        beta, thr = torch.tensor(0.9).double(), thr0  # snnTorch: the float32 beta cast by .to()
        if kind == "leaky":
            got = leaky_multistep(z, beta, thr, reset, Surrogate())
        else:
            spk, syn, mem = synaptic_multistep(z, alpha.double(), beta, thr, reset, Surrogate())
            got = (spk, mem, syn)
        assert 0 < ref[0].mean() < 1
        for g, r in zip(got, ref):
            assert torch.equal(_bits(g), _bits(r)), (kind, reset, thr0.dim())


@pytest.mark.parametrize("shape", [(), (4,), (3, 1), (1, 4), (3, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_c_kernel_equals_torch_ops_broadcast_params(shape, dtype, monkeypatch):
    """Parameters broadcast to the features [3, 4] in every way: the C loops' spikes, currents and
    membranes equal the torch-op loops' bits (and snnTorch's), their gradients within 1e-6 of scale
    (float64) or 1e-5 (float32); every surrogate, both resets, all parameters learnable."""
    if not fused_lif_kernel.available():
        pytest.skip("no C compiler for the fused LIF kernel")
    gen = torch.Generator().manual_seed(11)
    z0 = torch.randn(12, 5, 3, 4, generator=gen, dtype=dtype)
    w = torch.randn(3, 12, 5, 3, 4, generator=gen, dtype=dtype)
    params0 = {"alpha": torch.rand(shape, generator=gen, dtype=dtype),
               "beta": torch.rand(shape, generator=gen, dtype=dtype) * 0.5 + 0.5,
               "threshold": torch.rand(shape, generator=gen, dtype=dtype) * 0.5 + 0.5}
    tol = GRAD_RTOL if dtype == torch.float64 else 1e-5
    for name in SURROGATES:
        for reset in ("subtract", "zero"):
            for kind in ("leaky", "synaptic"):
                res = {}
                for backend in ("1", "0"):
                    monkeypatch.setenv(KERNEL_ENV, backend)
                    z = z0.clone().requires_grad_()
                    p = {k: v.clone().requires_grad_() for k, v in params0.items()}
                    sg = Surrogate(name, 3.0)
                    if kind == "leaky":
                        outs = leaky_multistep(z, p["beta"], p["threshold"], reset, sg)
                    else:
                        outs = synaptic_multistep(z, p["alpha"], p["beta"], p["threshold"], reset, sg)
                    sum((o * wi).sum() for o, wi in zip(outs, w)).backward()
                    grads = {"input": z.grad, **{k: v.grad for k, v in p.items() if v.grad is not None}}
                    res[backend] = ([o.detach() for o in outs], grads)
                (c_out, c_g), (t_out, t_g) = res["1"], res["0"]
                for a, b in zip(c_out, t_out):
                    assert torch.equal(_bits(a), _bits(b)), (name, reset, kind)
                assert set(c_g) == set(t_g)
                for k in t_g:
                    err, scale = (c_g[k] - t_g[k]).abs().max().item(), t_g[k].abs().max().item()
                    assert err <= tol * scale, (name, reset, kind, k, err, scale)
                if name == "atan" and dtype == torch.float32:
                    ref, _ = _snntorch_layer_run(kind, z0, params0["beta"], params0["threshold"], reset, Surrogate(),
                                                 params0["alpha"])
                    assert 0 < ref[0].mean() < 1
                    for a, b in zip(c_out if kind == "leaky" else (c_out[0], c_out[2], c_out[1]), ref):
                        assert torch.equal(_bits(a), _bits(b)), (reset, kind)


def test_kernel_switch_and_applicability(monkeypatch):
    """SPIKELOOP_LIF_KERNEL=0 turns the C loops off (the torch-op loops run, same bits); they
    apply only to CPU float32/float64 tensors with a known surrogate and parameters broadcastable
    to the features."""
    z = torch.randn(5, 2, 3)
    p = [torch.tensor(0.9), torch.ones(3)]
    monkeypatch.setenv(KERNEL_ENV, "0")
    assert not fused_lif_kernel.available() and not fused_lif_kernel.applies(z, p, "atan")
    off = leaky_multistep(z, p[0], p[1], "subtract", Surrogate())
    monkeypatch.delenv(KERNEL_ENV)
    if not fused_lif_kernel.available():
        pytest.skip("no C compiler for the fused LIF kernel")
    assert fused_lif_kernel.applies(z, p, "atan") and fused_lif_kernel.applies(z.double(), [q.double() for q in p],
                                                                              "triangular")
    assert not fused_lif_kernel.applies(z.half(), p, "atan")
    assert not fused_lif_kernel.applies(z, p, "no_such_surrogate")
    assert not fused_lif_kernel.applies(z, [torch.ones(2)], "atan")
    on = leaky_multistep(z, p[0], p[1], "subtract", Surrogate())
    assert all(torch.equal(a, b) for a, b in zip(on, off))


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_hand_computed_trajectory(reset):
    """beta 0.5, theta 1, input 0.8 every step, by hand."""
    z = torch.full((5, 1, 1), 0.8)
    spk, mem = leaky_multistep(z, torch.tensor(0.5), torch.tensor(1.0), reset, Surrogate())
    if reset == "subtract":  # 0.8, 1.2 (spike), 0.6+0.8-1 = 0.4, 1.0 (no spike: strict), 1.3 (spike)
        expect_u, expect_s = [0.8, 1.2, 0.4, 1.0, 1.3], [0, 1, 0, 0, 1]
    else:  # 0.8, 1.2 (spike), 0 + 0.8, 1.2 (spike), 0.8
        expect_u, expect_s = [0.8, 1.2, 0.8, 1.2, 0.8], [0, 1, 0, 1, 0]
    torch.testing.assert_close(mem.flatten(), torch.tensor(expect_u), rtol=0, atol=1e-6)
    assert spk.flatten().tolist() == expect_s


def test_surrogate_grad_matches_snntorch_functions():
    x = torch.linspace(-2, 2, 41)
    g = torch.rand(41, generator=torch.Generator().manual_seed(0))
    for name in SURROGATES:
        s = Surrogate(name, 3.0)
        xr = x.clone().requires_grad_()
        surrogate_fn(s)(xr).backward(g)
        torch.testing.assert_close(surrogate_grad(name, 3.0, x, g), xr.grad, rtol=1e-6, atol=0, msg=name)


def test_bad_arguments_are_refused():
    z = torch.zeros(3, 2, 4)
    with pytest.raises(ValueError, match="reset"):
        leaky_multistep(z, torch.tensor(0.9), torch.tensor(1.0), "none", Surrogate())
    with pytest.raises(ValueError, match="beta must have z's dtype"):
        leaky_multistep(z, torch.tensor(0.9, dtype=torch.float64), torch.tensor(1.0), "zero", Surrogate())
    with pytest.raises(ValueError, match=r"\[T, B"):
        leaky_multistep(torch.zeros(3), torch.tensor(0.9), torch.tensor(1.0), "zero", Surrogate())


def _net_grads(model, x):
    out = model(x, record=True)
    (out.spikes.sum() + out.mem.pow(2).sum() + out.record[1]["mem"].sum()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return out, grads


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_model_uses_fused_path_with_snntorch_results(reset, monkeypatch, lif_backend):
    """SpikingNetwork picks the fused Leaky by default; outputs equal the snnTorch module path
    bit for bit (fused_lif=False and the hand step function disabled) and gradients agree."""
    import snn.fused_lif as fl
    import snn.model as model_mod

    spec = ModelSpec(layers=(
        Linear(12, 9), Leaky(beta=0.85, threshold=0.6, reset=reset, learn_beta=True, learn_threshold=True),
        Linear(9, 4), Leaky(beta=(0.9, 0.5, 0.7, 0.95), threshold=0.5, reset=reset, learn_beta=True),
    ), input_shape=(12,), num_steps=20)
    x = (torch.rand(20, 5, 12, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    torch.manual_seed(3)
    init = {k: v * (3.0 if k.endswith("weight") else 1.0) for k, v in build_model(spec).state_dict().items()}

    calls = []
    orig = fl._LeakyMultistep.apply
    monkeypatch.setattr(fl._LeakyMultistep, "apply", lambda *a: calls.append(1) or orig(*a))
    fused_out, fused_g = _net_grads(build_model(spec, init), x)
    assert len(calls) == 2  # both Leaky layers went through the fused Function
    monkeypatch.setattr(model_mod, "_leaky_step_fn", lambda layer: None)
    ref_model = build_model(spec, init)
    ref_model.fused_lif = False
    ref_out, ref_g = _net_grads(ref_model, x)
    assert len(calls) == 2
    assert torch.equal(fused_out.spikes, ref_out.spikes) and torch.equal(fused_out.mem, ref_out.mem)
    for i in (1, 3):
        assert torch.equal(fused_out.record[i]["spikes"], ref_out.record[i]["spikes"])
        assert torch.equal(fused_out.record[i]["mem"], ref_out.record[i]["mem"])
    assert 0 < fused_out.record[1]["spikes"].mean() < 1
    for k in ref_g:
        _close(fused_g[k], ref_g[k], k)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_model_synaptic_uses_fused_path_with_snntorch_results(reset, lif_backend):
    """A network with a Synaptic layer: fused (default) and snnTorch modules give the same
    recorded spikes, currents and membranes bit for bit, and close gradients."""
    spec = ModelSpec(layers=(
        Linear(10, 7), Synaptic(alpha=0.8, beta=0.9, threshold=0.7, reset=reset, learn_alpha=True, learn_beta=True,
                                learn_threshold=True),
        Linear(7, 3), Leaky(beta=0.85, reset=reset),
    ), input_shape=(10,), num_steps=15)
    x = (torch.rand(15, 4, 10, generator=torch.Generator().manual_seed(2)) < 0.5).float()
    torch.manual_seed(4)
    init = {k: v * (2.0 if k.endswith("weight") else 1.0) for k, v in build_model(spec).state_dict().items()}
    outs = []
    for fused in (True, False):
        m = build_model(spec, init)
        m.fused_lif = fused
        outs.append(_net_grads(m, x))
    (f_out, f_g), (r_out, r_g) = outs
    for k in ("spikes", "syn", "mem"):
        assert torch.equal(f_out.record[1][k], r_out.record[1][k]), k
    assert torch.equal(f_out.spikes, r_out.spikes) and 0 < f_out.record[1]["spikes"].mean() < 1
    for k in r_g:
        scale = r_g[k].abs().max().item()
        assert (f_g[k] - r_g[k]).abs().max().item() <= 1e-5 * scale, k  # float32, summation order


def test_env_switch_forces_snntorch_path(monkeypatch):
    monkeypatch.setenv("SPIKELOOP_FUSED_LIF", "0")
    assert build_model(fc((1, 8, 8), 10, hidden=8)).fused_lif is False
    monkeypatch.setenv("SPIKELOOP_FUSED_LIF", "1")
    assert build_model(fc((1, 8, 8), 10, hidden=8)).fused_lif is True


@pytest.mark.gpu
def test_fused_leaky_on_cuda_equals_cpu():
    """The same torch ops on CUDA: spikes and membranes equal the CPU result, gradients close."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    for seed in range(8):
        c = _case(random.Random(seed))
        res = {}
        for dev in ("cpu", "cuda"):
            z = c["z"].to(dev).requires_grad_()
            beta = c["beta"].to(dev).requires_grad_(c["learn_beta"])
            thr = c["threshold"].to(dev).requires_grad_(c["learn_threshold"])
            spk, mem = leaky_multistep(z, beta.clamp(0, 1), thr, c["reset"], c["surrogate"])
            ((spk * c["w_spk"].to(dev)).sum() + mem.sum()).backward()
            res[dev] = (spk.cpu(), mem.cpu(), z.grad.cpu())
        assert torch.equal(res["cpu"][0], res["cuda"][0])
        torch.testing.assert_close(res["cuda"][1], res["cpu"][1], rtol=1e-6, atol=1e-6)
        _close(res["cuda"][2], res["cpu"][2], "input")


# --------------------------------------------------------------------------- RLeaky


def _bits(x):
    """The raw bits of a float tensor (so -0.0 and 0.0 differ), for bit-identity checks."""
    return x.view(torch.int64 if x.dtype == torch.float64 else torch.int32)


def _rleaky_case(seed):
    """Seeded random RLeaky: dense (even seeds; Linear recurrence, bias or none) or elementwise
    (odd; V scalar or per neuron, features flat or 2-D); scalar/per-neuron, learnable or fixed
    beta/threshold/recurrence; both resets; every surrogate. Tensors are float64 (values on the
    float32 grid except, in some cases, the threshold: see the float64 note in the test)."""
    rng = random.Random(5000 + seed)
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    dense = seed % 2 == 0
    T, B = rng.randint(1, 25), rng.randint(1, 6)
    feat = (rng.randint(1, 24),) if dense or rng.random() < 0.6 else (rng.randint(1, 3), rng.randint(1, 4))
    n = feat[0] if len(feat) == 1 else feat[0] * feat[1]
    beta = torch.rand(feat, generator=gen) if rng.random() < 0.5 else torch.tensor(rng.random())
    thr = torch.rand(feat, generator=gen) + 0.3 if rng.random() < 0.5 else torch.tensor(rng.uniform(0.3, 1.5))
    thr = thr.double()
    if rng.random() < 0.4:  # a threshold off the float32 grid (a float64 model after training)
        thr = thr + 1e-9 * torch.rand(thr.shape, generator=gen, dtype=torch.float64)
    c = dict(dense=dense, beta=beta.double(), threshold=thr, reset=rng.choice(["subtract", "zero"]),
             surrogate=Surrogate(rng.choice(SURROGATES), rng.choice([1.0, 2.0, 5.0])),
             learn_beta=rng.random() < 0.6, learn_threshold=rng.random() < 0.6,
             learn_recurrent=rng.random() < 0.75, bias=None, weight=None, V=None)
    if dense:
        c["weight"] = (torch.randn(n, n, generator=gen) * (rng.uniform(0.3, 1.5) / n**0.5)).double()
        if rng.random() < 0.75:
            c["bias"] = (torch.randn(n, generator=gen) * 0.2).double()
    else:
        c["V"] = (torch.randn(feat, generator=gen) if rng.random() < 0.5 else torch.tensor(rng.uniform(-1, 1))).double()
    if rng.random() < 0.5:
        z = torch.randn(T, B, *feat, generator=gen) * rng.uniform(0.3, 1.2)
    else:
        z = (torch.rand(T, B, *feat, generator=gen) < 0.4).float() * rng.uniform(0.5, 1.5)
    c["z"] = z.double()
    c["w_spk"] = torch.randn(T, B, *feat, generator=gen, dtype=torch.float64)
    c["w_mem"] = torch.randn(T, B, *feat, generator=gen, dtype=torch.float64) if rng.random() < 0.7 else None
    return c


def _exact_spike_fn(s: Surrogate):
    """A spike function in the input's dtype with snnTorch's surrogate derivative, for a float64
    reference: H(x) + (f(x) - f(x).detach()) with f an antiderivative of the surrogate written out
    here (snnTorch's own spike functions return float32, so its float64 gradients pass through
    float32 at every spike)."""
    a = s.slope

    def soft(x):
        if s.name == "atan":  # d/dx atan(pi/2 a x)/pi = (a/2) / (1 + (pi/2 a x)^2)
            return torch.atan(math.pi / 2 * a * x) / math.pi
        if s.name == "fast_sigmoid":  # d/dx x/(1 + a|x|) = 1/(1 + a|x|)^2
            return x / (1 + a * x.abs())
        if s.name == "sigmoid":  # d/dx sigmoid(a x) = a e^(-ax) / (1 + e^(-ax))^2
            return torch.sigmoid(a * x)
        if s.name == "straight_through":
            return x
        return torch.where(x >= 0, -a * x, a * x)  # triangular: -a at x >= 0, a below (snnTorch's sign)

    def spike(x):
        f = soft(x)
        return (x > 0).to(x.dtype) + (f - f.detach())

    return spike


def _rleaky_snntorch(c, dtype, keep_state_grads=False, exact_spikes=False):
    """Step snnTorch's RLeaky over z as the model's reference path does (snn/model.py `_step`:
    spikes cast to the membrane dtype and fed back); backward of the case's loss. exact_spikes:
    the same module with `_exact_spike_fn` as its spike function (a float64 reference).
    Returns (spikes, mems, {gradient name: tensor}, state grads {"mem": dL/dU} when asked)."""
    n = c["z"][0, 0].numel()
    spike_fn = _exact_spike_fn(c["surrogate"]) if exact_spikes else surrogate_fn(c["surrogate"])
    kw = dict(beta=c["beta"].to(dtype).clone(), threshold=c["threshold"].to(dtype).clone(),
              spike_grad=spike_fn, learn_beta=c["learn_beta"],
              learn_threshold=c["learn_threshold"], reset_mechanism=c["reset"], learn_recurrent=c["learn_recurrent"])
    if c["dense"]:
        lif = snntorch.RLeaky(all_to_all=True, linear_features=n, **kw)
        lif.recurrent = nn.Linear(n, n, bias=c["bias"] is not None)
        with torch.no_grad():
            lif.recurrent.weight.copy_(c["weight"])
            if c["bias"] is not None:
                lif.recurrent.bias.copy_(c["bias"])
        lif.recurrent.requires_grad_(c["learn_recurrent"])
    else:
        lif = snntorch.RLeaky(all_to_all=False, V=c["V"].to(dtype).clone(), **kw)
    lif = lif.to(dtype)
    z = c["z"].to(dtype).clone().requires_grad_()
    spk = mem = torch.zeros_like(z[0])
    spk_t, mem_t = [], []
    for t in range(z.shape[0]):
        spk, mem = lif(z[t], spk, mem)
        spk = spk.to(mem.dtype)
        if keep_state_grads:
            mem.retain_grad()
        spk_t.append(spk)
        mem_t.append(mem)
    spk_all, mem_all = torch.stack(spk_t), torch.stack(mem_t)
    _loss(c, spk_all, mem_all, dtype).backward()
    grads = {"input": z.grad, "beta": lif.beta.grad, "threshold": lif.threshold.grad}
    if c["dense"]:
        grads["weight"] = lif.recurrent.weight.grad
        grads["bias"] = lif.recurrent.bias.grad if c["bias"] is not None else None
    else:
        grads["V"] = lif.V.grad
    state = {"mem": torch.stack([m.grad for m in mem_t])} if keep_state_grads else None
    return spk_all, mem_all, grads, state


def _rleaky_fused(c, dtype):
    z = c["z"].to(dtype).clone().requires_grad_()
    beta = c["beta"].to(dtype).clone().requires_grad_(c["learn_beta"])
    thr = c["threshold"].to(dtype).clone().requires_grad_(c["learn_threshold"])
    rec = {k: c[k].to(dtype).clone().requires_grad_(c["learn_recurrent"]) for k in ("weight", "bias", "V")
           if c[k] is not None}
    spk, mem = rleaky_multistep(z, beta.clamp(0, 1), thr, c["reset"], c["surrogate"], **rec)
    _loss(c, spk, mem, dtype).backward()
    grads = {"input": z.grad, "beta": beta.grad, "threshold": thr.grad} | {k: v.grad for k, v in rec.items()}
    return spk, mem, grads


def _rleaky_learned(c):
    """The gradient names the case learns."""
    out = ["input"] + [k for k in ("beta", "threshold") if c[f"learn_{k}"]]
    if c["learn_recurrent"]:
        out += ["weight"] + (["bias"] if c["bias"] is not None else []) if c["dense"] else ["V"]
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", range(32))
def test_fused_rleaky_equals_snntorch_random(seed, dtype):
    """RLeaky, dense and elementwise recurrence: spikes and membranes bit-identical (raw bits) to
    snnTorch's RLeaky stepped like the model's reference path; gradients (input, beta, threshold,
    recurrent weight and bias or V, where learnable) of sum(w_spk*S) + sum(w_mem*U).

    float64: snnTorch's reset signal is float32 (its surrogates return `.float()`), so with a 0-dim
    threshold R*theta is a float32 product; the cases with a threshold off the float32 grid check
    the fused forward repeats that. The same float32 spikes round snnTorch's float64 gradients
    to float32 at every spike (up to ~3e-6 relative after cancellation in the threshold sum), so
    the float64 gradient reference is snnTorch's RLeaky with `_exact_spike_fn` (same surrogate
    derivative, float64 throughout): within 1e-6 of its scale; and within 1e-6 plus twice
    snnTorch's own distance to it of snnTorch's float64 gradients.
    float32: within 1e-6 of snnTorch's float32 gradients plus twice snnTorch's own float32 error
    (its distance to the float64 reference) and, for the sums over T*B (parameters), 4 eps32
    times the summed magnitude of the terms, bounded from the float64 gradients dL/dX and dL/dU
    (as for Leaky above)."""
    c = _rleaky_case(seed)
    spk_ref, mem_ref, ref, _ = _rleaky_snntorch(c, dtype)
    spk, mem, got = _rleaky_fused(c, dtype)
    assert torch.equal(_bits(spk), _bits(spk_ref)) and torch.equal(_bits(mem), _bits(mem_ref))
    mem64, ref64, state64 = _rleaky_snntorch(c, torch.float64, keep_state_grads=True, exact_spikes=True)[1:]
    learned = _rleaky_learned(c)
    assert all(torch.isfinite(ref[k]).all() and torch.isfinite(ref64[k]).all() for k in learned)
    own = {k: 2 * (ref[k].double() - ref64[k]).abs().max().item() for k in learned}  # snnTorch's own error
    if dtype == torch.float64:
        for k in learned:
            _close(got[k], ref64[k], k)
            _close(got[k], ref[k], f"{k} (snnTorch float64)", own[k])
    else:
        slack = dict(own)
        eps = torch.finfo(torch.float32).eps
        dx_abs, du_abs = ref64["input"].abs().sum().item(), state64["mem"].abs().sum().item()
        w_mem_abs = c["w_mem"].abs().sum().item() if c["w_mem"] is not None else 0.0
        if "beta" in slack:  # terms dL/dB[t] * U[t-1]
            slack["beta"] += 4 * eps * dx_abs * mem64.abs().max().item()
        if "threshold" in slack:  # terms S'*dL/dS (each at most |dL/dU| + |w_mem| + |dL/dB|) and dL/dB * R
            slack["threshold"] += 4 * eps * (2 * du_abs + w_mem_abs + 2 * dx_abs)
        for k in set(slack) & {"weight", "bias", "V"}:  # terms dL/dB[t] * S[t-1] and dL/dB[t]
            slack[k] += 4 * eps * dx_abs
        for k in learned:
            _close(got[k], ref[k], k, slack[k])
    for k in set(got) - set(learned):
        assert got[k] is None, k


def test_rleaky_cases_cover_kinds_resets_and_spiking():
    cases = [_rleaky_case(s) for s in range(32)]
    assert {(c["dense"], c["reset"]) for c in cases} == {(d, r) for d in (True, False) for r in ("subtract", "zero")}
    assert {c["surrogate"].name for c in cases} == set(SURROGATES)
    assert any(c["dense"] and c["bias"] is None for c in cases)
    assert any(not c["dense"] and c["V"].dim() == 0 for c in cases) and any(c["z"].dim() == 4 for c in cases)
    assert any(c["threshold"].dim() == 0 and c["threshold"].float().double() != c["threshold"] for c in cases)
    rates = [_rleaky_fused(c, torch.float32)[0].mean().item() for c in cases]
    assert sum(0.02 < r < 0.98 for r in rates) >= 24


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_rleaky_hand_computed_trajectories(reset):
    """beta 0.5, theta 1. Dense: neuron 0 excites neuron 1 (weight 0.75), bias 0.125 on neuron 1,
    inputs (1.5, 0.5) at step 1 only. Elementwise: V = -0.5, input 1.5 at step 1 only."""
    z = torch.zeros(4, 1, 2)
    z[0, 0] = torch.tensor([1.5, 0.5])
    w, b = torch.tensor([[0.0, 0.0], [0.75, 0.0]]), torch.tensor([0.0, 0.125])
    spk, mem = rleaky_multistep(z, torch.tensor(0.5), torch.tensor(1.0), reset, Surrogate(), weight=w, bias=b)
    if reset == "subtract":  # n1 step 2: 0.3125 + 0.75 + 0.125 = 1.1875 (spike), step 3: 0.59375 + 0.125 - 1
        expect = [[1.5, 0.625], [-0.25, 1.1875], [-0.125, -0.28125], [-0.0625, -0.015625]]
    else:  # reset to zero after a spike; then only the bias reaches neuron 1
        expect = [[1.5, 0.625], [0.0, 1.1875], [0.0, 0.0], [0.0, 0.125]]
    assert mem[:, 0].tolist() == expect
    assert spk[:, 0].tolist() == [[1, 0], [0, 1], [0, 0], [0, 0]]
    z1 = torch.tensor([1.5, 0, 0, 0]).reshape(4, 1, 1)
    spk, mem = rleaky_multistep(z1, torch.tensor(0.5), torch.tensor(1.0), reset, Surrogate(), V=torch.tensor(-0.5))
    # subtract: 1.5 (spike), 0.75 - 0.5 - 1, halving; zero: the reset clears V's share too
    expect = [1.5, -0.75, -0.375, -0.1875] if reset == "subtract" else [1.5, 0.0, 0.0, 0.0]
    assert mem.flatten().tolist() == expect and spk.flatten().tolist() == [1, 0, 0, 0]


def test_rleaky_bad_arguments_are_refused():
    z, s = torch.zeros(3, 2, 4), Surrogate()
    beta, thr = torch.tensor(0.9), torch.tensor(1.0)
    with pytest.raises(ValueError, match="exactly one of weight"):
        rleaky_multistep(z, beta, thr, "zero", s)
    with pytest.raises(ValueError, match="exactly one of weight"):
        rleaky_multistep(z, beta, thr, "zero", s, weight=torch.zeros(4, 4), V=torch.tensor(1.0))
    with pytest.raises(ValueError, match="weight \\[N, N\\]"):
        rleaky_multistep(z, beta, thr, "zero", s, weight=torch.zeros(4, 3))
    with pytest.raises(ValueError, match="weight \\[N, N\\]"):
        rleaky_multistep(torch.zeros(3, 2, 2, 2), beta, thr, "zero", s, weight=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="bias belongs"):
        rleaky_multistep(z, beta, thr, "zero", s, V=torch.tensor(1.0), bias=torch.zeros(4))
    with pytest.raises(ValueError, match="weight must have z's dtype"):
        rleaky_multistep(z, beta, thr, "zero", s, weight=torch.zeros(4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="reset"):
        rleaky_multistep(z, beta, thr, "none", s, V=torch.tensor(1.0))


def _rleaky_specs(reset):
    dense_first = ModelSpec(layers=(
        Linear(10, 8), RLeaky(beta=0.85, threshold=0.6, all_to_all=True, reset=reset, per_neuron=True,
                              learn_beta=True, learn_threshold=True),
        Linear(8, 6), RLeaky(beta=0.7, threshold=0.5, all_to_all=False, V=(0.5, -0.7, 1.2, 0.1, -0.2, 0.3),
                             reset=reset, learn_beta=True, learn_threshold=True),
    ), input_shape=(10,), num_steps=20)
    conv = ModelSpec(layers=(  # elementwise RLeaky on [C, H, W] features (channels-last conv output)
        Conv2d(1, 3, 3, padding=1), MaxPool2d(2), RLeaky(beta=0.8, threshold=0.5, all_to_all=False, V=-0.4,
                                                         reset=reset, per_neuron=True, learn_threshold=True),
        Flatten(), Linear(48, 6), RLeaky(beta=0.9, threshold=0.7, all_to_all=True, reset=reset, learn_beta=True),
    ), input_shape=(1, 8, 8), num_steps=12)
    return {"dense_first": dense_first, "conv": conv}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("which", ["dense_first", "conv"])
def test_model_rleaky_uses_fused_path_with_reference_results(which, reset, dtype, monkeypatch):
    """SpikingNetwork runs both RLeaky kinds through the fused Function by default; recorded
    spikes and membranes equal the reference path (fused_lif=False: snnTorch's RLeaky stepped)
    bit for bit, and every parameter gradient (weights, recurrent weights and biases, V, beta,
    threshold) agrees: within 1e-6 of its scale in float64, 1e-5 in float32 (summation order)."""
    import snn.fused_lif as fl

    spec = _rleaky_specs(reset)[which]
    T = spec.num_steps
    x = (torch.rand(T, 5, *spec.input_shape, generator=torch.Generator().manual_seed(1)) < 0.5).to(dtype)
    torch.manual_seed(3)
    init = {k: v * (2.0 if k.endswith("weight") and "recurrent" not in k else 1.0)
            for k, v in build_model(spec).state_dict().items()}
    calls = []
    orig = fl._RLeakyMultistep.apply
    monkeypatch.setattr(fl._RLeakyMultistep, "apply", lambda *a: calls.append(1) or orig(*a))
    outs = []
    for fused in (True, False):
        m = build_model(spec, init, dtype=dtype)
        m.fused_lif = fused
        outs.append(_net_grads_rec(m, x, spec))
        assert len(calls) == 2  # both RLeaky layers fused, none in the reference run
    (f_out, f_g), (r_out, r_g) = outs
    for i in spec.spiking_layers():
        for k in ("spikes", "mem"):
            assert torch.equal(_bits(f_out.record[i][k]), _bits(r_out.record[i][k])), (i, k)
        assert 0 < f_out.record[i]["spikes"].mean() < 1, i
    tol = 1e-6 if dtype == torch.float64 else 1e-5
    assert set(f_g) == set(r_g)
    for k in r_g:
        scale = r_g[k].abs().max().item()
        assert (f_g[k] - r_g[k]).abs().max().item() <= tol * scale, k


def _net_grads_rec(model, x, spec):
    out = model(x, record=True)
    first = spec.spiking_layers()[0]
    (out.spikes.sum() + out.mem.pow(2).sum() + out.record[first]["mem"].sum()).backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters()}


def test_model_rleaky_outside_the_fused_cases_steps_snntorch(monkeypatch):
    """An RLeaky the fused Function does not cover (here reset_delay=False) takes snnTorch's path."""
    import snn.fused_lif as fl

    spec = _rleaky_specs("subtract")["dense_first"]
    m = build_model(spec)
    m.layers[1].reset_delay = False
    calls = []
    orig = fl._RLeakyMultistep.apply
    monkeypatch.setattr(fl._RLeakyMultistep, "apply", lambda *a: calls.append(1) or orig(*a))
    m(torch.ones(spec.num_steps, 2, 10))
    assert len(calls) == 1  # layer 3 only


def test_trainer_smoke_with_rleaky(digits, tmp_path, monkeypatch):
    """Trainer.fit on an RLeaky network (dense hidden layer, elementwise learnable-V output): the
    fused RLeaky runs, losses stay finite, recurrent weights and V move, accuracy beats chance."""
    import snn.fused_lif as fl
    from snn.data import subset
    from snn.training import TrainConfig, Trainer

    d = subset(digits, max_train=300, max_test=100, seed=0)
    spec = ModelSpec(layers=(
        Flatten(), Linear(64, 32), RLeaky(beta=0.9, all_to_all=True, learn_beta=True, learn_threshold=True),
        Linear(32, 10), RLeaky(beta=0.9, all_to_all=False, V=0.2, per_neuron=True, reset="zero"),
    ), input_shape=(1, 8, 8), num_steps=10, encoder={"type": "rate", "gain": 1.0})
    calls = []
    orig = fl._RLeakyMultistep.apply
    monkeypatch.setattr(fl._RLeakyMultistep, "apply", lambda *a: calls.append(1) or orig(*a))
    cfg = TrainConfig(epochs=3, batch_size=50, lr=5e-3, seed=0, val_fraction=0.0, progress=False)
    torch.manual_seed(0)
    init = build_model(spec).state_dict()
    res = Trainer(spec, d.train_x, d.train_y, cfg, tmp_path, test_x=d.test_x, test_y=d.test_y).fit()
    assert calls
    assert all(math.isfinite(h["train_loss"]) for h in res.history)
    sd = res.model.state_dict()
    assert not torch.equal(sd["layers.2.recurrent.weight"], init["layers.2.recurrent.weight"])
    assert res.test_accuracy > 0.3
