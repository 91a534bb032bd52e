"""The fast paths of in-the-loop training and of `sim` against their references, bit for bit:
the C time loop of `sim` (hw/sim_kernel.py) against the torch step loop (`fused=False`, itself
checked against the NumPy reference and the firmware in test_hw_reference.py / test_emulator.py /
test_nonideal.py), `Recompiler` against `compile_model`, and the fused host pass
(`host_forward(fused=True)`) against the step-by-step autograd loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hw import sim_kernel
from hw.compiler import CompileError, Recompiler, compile_model
from hw.device import open_device
from hw.loop_training import host_forward, stages_for
from hw.program import Program
from snn.model import build_model
from snn.presets import fc
from snn.spec import Leaky, Linear, ModelSpec

from test_emulator import NEURONS, random_program, random_spikes

QUERY = "chip=7&mismatch=0.15&noise=0.05"
needs_kernel = pytest.mark.skipif(not sim_kernel.available(), reason="needs a C compiler for hw.sim_kernel")


def _runs(prog, x, query, fused, runs=2):
    with open_device("sim" + query, fused=fused) as d:
        d.load(prog)
        return [d.run(x, probe=True) for _ in range(runs)]


def _assert_same(a, b):
    assert torch.equal(a.output_spikes, b.output_spikes)
    assert a.counters == b.counters
    for k in a.membranes:
        assert torch.equal(a.membranes[k], b.membranes[k]), f"layer {k} membranes"
        assert torch.equal(a.layer_spikes[k], b.layer_spikes[k]), f"layer {k} spikes"


@pytest.fixture(params=["int8 GEMM", "float GEMM"])
def gemm(request, monkeypatch):
    """Both synaptic-input paths of the C kernel: the exact int8 GEMM (where the probe accepts it)
    and the exact float GEMM."""
    if request.param == "float GEMM":  # (where the probe refuses the int8 GEMM both params run this)
        monkeypatch.setattr(sim_kernel, "_INT8_GEMM", False)
    return request.param


@needs_kernel
@pytest.mark.parametrize("kind", sorted(NEURONS))
@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("query", ["", "?" + QUERY])
def test_fused_sim_equals_the_step_loop(kind, reset, query, gemm):
    prog = random_program(kind, reset, seed=len(kind) + 3)
    x = random_spikes(12, 9, 40, seed=4)
    fast, ref = _runs(prog, x, query, True), _runs(prog, x, query, False)
    for a, b in zip(fast, ref):
        _assert_same(a, b)
    assert 0 < int(ref[0].layer_spikes[0].sum()) < ref[0].layer_spikes[0].numel()  # the test can fail
    if query:
        assert not torch.equal(ref[0].output_spikes, ref[1].output_spikes)  # the noise moved on


@needs_kernel
def test_fused_sim_saturates_like_the_step_loop(gemm):
    """Bias and threshold at the profile's limits drive U into the int32 saturation."""
    prog = random_program("synaptic", "subtract", seed=1)
    big = []
    for layer in prog.layers:
        from dataclasses import replace
        n = layer.num_neurons
        big.append(replace(layer, bias=np.full(n, prog.profile_obj.bias_max, dtype=np.int64),
                           threshold=np.full(n, prog.profile_obj.threshold_max, dtype=np.int64)))
    prog = Program(profile=prog.profile, layers=tuple(big), num_steps=prog.num_steps, dt_ns=prog.dt_ns,
                   name="sat")
    x = random_spikes(12, 3, 40, seed=2)
    a, b = _runs(prog, x, "?" + QUERY, True, 1)[0], _runs(prog, x, "?" + QUERY, False, 1)[0]
    _assert_same(a, b)
    assert int(b.membranes[0].max()) == 2 ** 31 - 1 or int(b.membranes[0].abs().max()) > 2 ** 30


def _specs():
    yield "leaky-subtract", fc((40,), 10, hidden=24, num_steps=8)
    yield "leaky-zero", fc((40,), 10, hidden=24, num_steps=8, reset="zero")
    for kind in sorted(NEURONS):
        yield kind, ModelSpec(layers=(Linear(40, 24), NEURONS[kind]("subtract"), Linear(24, 10),
                                      Leaky(beta=0.8, threshold=0.5)), input_shape=(40,), num_steps=8, name=kind)


@pytest.mark.parametrize("profile", ["mcu", "loihi", "xylo-like"])
def test_recompiler_equals_compile_model(profile):
    checked = 0
    for name, spec in _specs():
        torch.manual_seed(0)
        model = build_model(spec)
        try:
            compile_model(spec, model.state_dict(), profile)
        except CompileError:
            continue  # the profile cannot run this neuron type: nothing to compare
        rc = Recompiler(spec, profile)
        for step in range(3):  # new weights each time (a training step), then a changed beta
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.05 * torch.randn_like(p))
            sd = model.state_dict()
            if step == 2:
                key = next(k for k in sd if k.endswith(".beta"))
                sd[key] = sd[key] * 0.9
            want, got = compile_model(spec, sd, profile), rc(sd)
            assert got.to_bytes() == want.to_bytes(), (name, step)
            assert got.report == want.report, (name, step)
            checked += 1
    assert checked >= 3  # at least one spec (leaky subtract) compiles on every profile
    bad = dict(sd)
    bad["layers.0.weight"] = bad["layers.0.weight"].clone()
    bad["layers.0.weight"][0, 0] = float("nan")
    with pytest.raises(CompileError, match="layers.0.weight"):
        rc(bad)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("loops", ["C", "torch"])
def test_fused_host_pass_is_bit_identical(reset, loops, monkeypatch):
    from hw.loop_training import _DeviceLayer
    monkeypatch.setattr(_DeviceLayer, "use_kernel", loops == "C")
    torch.manual_seed(0)
    spec = fc((40,), 10, hidden=24, num_steps=12, reset=reset)
    model = build_model(spec)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(3)
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(12, 8, 40, generator=g) < 0.3).float()
    stages = stages_for(spec, "mcu")
    dev = {0: (torch.rand(12, 8, 24, generator=g) < 0.3).to(torch.uint8),
           1: (torch.rand(12, 8, 10, generator=g) < 0.3).to(torch.uint8)}
    w = torch.randn(12, 8, 10, generator=g)
    res = []
    for fused in (False, True):
        model.zero_grad()
        outs = host_forward(model, stages, x, dev, fused=fused)
        (outs[-1] * w).sum().backward()
        res.append(([o.detach() for o in outs], [p.grad.clone() for p in model.parameters()]))
    assert all(torch.equal(a, b) for a, b in zip(res[0][0], res[1][0]))
    assert all(torch.equal(a, dev[k].float()) for k, a in enumerate(res[1][0]))
    assert any(float(gr.abs().sum()) > 0 for gr in res[0][1])
    for a, b in zip(res[0][1], res[1][1]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("elementwise", ["C", "torch"])
def test_row_scales_equal_the_per_row_search(elementwise, monkeypatch):
    """The vectorised search (elementwise in C or torch, NumPy means) gives `best_weight_scale` of
    every row, the scalar reference, exactly; rows of quarter-integers make near-ties, zero rows 1.0."""
    from hw.compiler import best_weight_scale, row_scales
    if elementwise == "torch":
        monkeypatch.setattr(sim_kernel, "available", lambda: False)
    rng = np.random.default_rng(3)
    for i in range(40):
        w = rng.normal(size=(int(rng.integers(1, 40)), int(rng.integers(1, 200)))) * rng.uniform(0.01, 3)
        if i % 3 == 0:
            w = np.round(w * 4) / 4
        w[0] = 0 if i % 5 == 0 else w[0]
        want = np.array([best_weight_scale(r)[0] for r in w])
        assert np.array_equal(row_scales(w), want)


def test_bench_device_reports_the_gemm_bound(capsys):
    """The benchmark runs end to end on a tiny network and reports what the README quotes (no
    timing is asserted: speed claims come from the benchmark itself)."""
    import json

    from experiments import bench_device
    bench_device.main(["--inputs", "20", "--hidden", "8", "--outputs", "4", "--T", "5", "--batch", "4",
                       "--T-sweep", "3,5", "--B-sweep", "2,4", "--repeats", "1", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert [r["B"] for r in out["gemm_bound"]] == [1, 32, 128]
    for r in out["gemm_bound"]:
        assert r["sim_s"] > 0 and r["gemm_s"] > 0 and r["fraction_of_gemm_bound"] == r["gemm_s"] / r["sim_s"]
    assert out["sim_over_snntorch_step_float_B128"] > 0
