"""The fused multi-step Leaky (snn/fused_lif.py) against snnTorch's `Leaky` stepped over time:
forward bit-identical, gradients equal to autograd's through snnTorch within 1e-6 of their scale."""

from __future__ import annotations

import random

import pytest
import snntorch
import torch

from snn.fused_lif import SURROGATES, leaky_multistep, surrogate_grad, synaptic_multistep
from snn.model import build_model, surrogate_fn
from snn.presets import fc
from snn.spec import Leaky, Linear, ModelSpec, Surrogate, Synaptic

GRAD_RTOL = 1e-6


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
def test_fused_leaky_equals_snntorch_random(seed, dtype):
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
def test_fused_synaptic_equals_snntorch_random(seed):
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
def test_model_uses_fused_path_with_snntorch_results(reset, monkeypatch):
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
def test_model_synaptic_uses_fused_path_with_snntorch_results(reset):
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
