"""NIR export/import on spike trains: spikeloop -> NIR file -> nir.read -> spikeloop gives identical
spikes for every neuron type and both resets; graphs written by snnTorch's exporter and by hand
import correctly; unmappable input is refused. What other consumers (snnTorch's importer, Norse,
nirtorch) make of spikeloop's files is the matrix in tests/test_nir_interop.py."""

from __future__ import annotations

import contextlib
import io

import nir
import numpy as np
import pytest
import torch
from snntorch.export_nir import export_to_nir  # needs nirtorch, a declared dependency: fails, never skips

from hw.nir_graph import NIRError, export_nir, import_nir, write_nir
from snn.model import build_model
from snn.spec import AvgPool2d, Conv2d, Flatten, Leaky, Linear, MaxPool2d, ModelSpec, RLeaky, Synaptic

def active_model(spec, seed=0, gain=3.0):
    """Random weights scaled up so every layer spikes."""
    torch.manual_seed(seed)
    model = build_model(spec)
    sd = {k: (v * gain if k.endswith("weight") else v) for k, v in model.state_dict().items()}
    return sd


def spikes_of(spec, sd, x):
    with torch.no_grad():
        return build_model(spec, sd)(x).spikes


def fc_spec(neuron, reset, **kw):
    make = {"leaky": lambda: Leaky(beta=0.85, reset=reset, **kw),
            "synaptic": lambda: Synaptic(alpha=0.6, beta=0.85, reset=reset, **kw),
            "rleaky": lambda: RLeaky(beta=0.85, reset=reset, all_to_all=True, **kw),
            "rleaky_v": lambda: RLeaky(beta=0.85, reset=reset, all_to_all=False,
                                       V=tuple(np.linspace(-0.5, 0.5, 16)), per_neuron=True, **kw)}[neuron]
    last = Leaky(beta=0.7, threshold=0.8, reset=reset)
    return ModelSpec(layers=(Flatten(), Linear(24, 16), make(), Linear(16, 5), last), input_shape=(2, 3, 4),
                     num_steps=20, dt_s=2e-3)


def input_spikes(shape, T=20, B=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, *shape, generator=g) < 0.4).float()


@pytest.mark.parametrize("neuron", ["leaky", "synaptic", "rleaky", "rleaky_v"])
@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_round_trip_through_a_file_gives_identical_spikes(tmp_path, neuron, reset):
    spec = fc_spec(neuron, reset)
    sd = active_model(spec)
    graph = export_nir(spec, sd)
    path = write_nir(graph, tmp_path / "m.nir")
    spec2, sd2 = import_nir(nir.read(str(path)))
    assert [l.type_name for l in spec2.layers] == [l.type_name for l in spec.layers]
    assert spec2.layers[2].reset == reset and spec2.dt_s == spec.dt_s and spec2.num_steps == 20
    x = input_spikes(spec.input_shape)
    ref = spikes_of(spec, sd, x)
    assert ref.sum() > 20
    assert torch.equal(spikes_of(spec2, sd2, x), ref)
    spec3, sd3 = import_nir(graph)  # in memory, without the file
    assert torch.equal(spikes_of(spec3, sd3, x), ref)


def test_conv_avgpool_round_trip(tmp_path):
    spec = ModelSpec(layers=(Conv2d(1, 4, 3, padding=1), AvgPool2d(2), Leaky(beta=0.9, reset="zero"),
                             Flatten(), Linear(4 * 4 * 4, 3), Leaky(reset="zero")), input_shape=(1, 8, 8))
    sd = active_model(spec, gain=4.0)
    spec2, sd2 = import_nir(nir.read(str(write_nir(export_nir(spec, sd), tmp_path / "c.nir"))))
    x = input_spikes(spec.input_shape)
    ref = spikes_of(spec, sd, x)
    assert ref.sum() > 0 and torch.equal(spikes_of(spec2, sd2, x), ref)


def test_conv_avgpool_round_trip_compiles_to_the_same_device_program(tmp_path):
    """NIR → spikeloop → mcu: the convolution record (shared weights, sum pool with the average's
    1/pk² folded) of the imported model is byte for byte the original's."""
    from hw.compiler import compile_model
    spec = ModelSpec(layers=(Conv2d(1, 4, 3, padding=1), AvgPool2d(2), Leaky(beta=0.9, reset="zero"),
                             Flatten(), Linear(4 * 4 * 4, 3), Leaky(reset="zero")), input_shape=(1, 8, 8))
    sd = active_model(spec, gain=4.0)
    spec2, sd2 = import_nir(nir.read(str(write_nir(export_nir(spec, sd), tmp_path / "c.nir"))))
    a, b = compile_model(spec, sd, "mcu"), compile_model(spec2, sd2, "mcu")
    assert [l.kind for l in a.layers] == ["conv", "dense"] and a.layers[0].conv.pool == "sum"
    assert [l.to_bytes() for l in a.layers] == [l.to_bytes() for l in b.layers]


def test_import_graph_written_by_snntorch():
    import snntorch as snn
    import snntorch.utils  # noqa: F401
    torch.manual_seed(0)
    lif1 = snn.Leaky(beta=torch.full((8,), 0.8), threshold=torch.ones(8), init_hidden=True, reset_mechanism="zero")
    lif2 = snn.Leaky(beta=torch.full((3,), 0.7), threshold=torch.full((3,), 0.5), init_hidden=True,
                     reset_mechanism="zero", output=True)
    net = torch.nn.Sequential(torch.nn.Linear(12, 8), lif1, torch.nn.Linear(8, 3), lif2)
    with torch.no_grad():
        for lin in (net[0], net[2]):
            lin.weight.abs_().mul_(3)  # excitatory, strong: every layer spikes
    with contextlib.redirect_stdout(io.StringIO()):
        graph = export_to_nir(net, torch.rand(1, 12), ignore_dims=[0])
    with pytest.raises(NIRError, match="records no time step .* pass dt_s"):
        import_nir(graph)  # snnTorch writes no dt: refused, not guessed
    spec, sd = import_nir(graph, dt_s=1e-4)  # the step snnTorch's exporter assumes
    assert spec.dt_s == 1e-4 and [l.type_name for l in spec.layers] == ["linear", "leaky", "linear", "leaky"]
    x = input_spikes((12,), B=5)
    with torch.no_grad():
        snntorch.utils.reset(net)
        ref = torch.stack([net(x[t])[0] for t in range(x.shape[0])])
    assert ref.sum() > 10
    assert torch.equal(spikes_of(spec, sd, x), ref)


def test_hand_written_graph_folds_input_gain_into_threshold():
    """LIF with tau = 10 ms, r = 2, dt = 1 ms: v = 0.9 v + 0.2 I; threshold 1 -> 5 in units of I."""
    w = np.array([[1.0, 2.0]])
    g = nir.NIRGraph(nodes={"in": nir.Input(input_type={"input": np.array([2])}),
                            "fc": nir.Linear(weight=w),
                            "lif": nir.LIF(tau=np.array([0.01]), r=np.array([2.0]), v_leak=np.array([0.0]),
                                           v_threshold=np.array([1.0])),
                            "out": nir.Output(output_type={"output": np.array([1])})},
                     edges=[("in", "fc"), ("fc", "lif"), ("lif", "out")])
    spec, sd = import_nir(g, dt_s=1e-3)
    leaky = spec.layers[1]
    assert leaky.beta == pytest.approx(0.9) and leaky.threshold == pytest.approx(5.0)
    assert leaky.reset == "zero" and not spec.layers[0].bias
    # input 3 per step: U = 3, 0.9*3 + 3 = 5.7 > 5 spike; reset to zero keeps the input: 3, 5.7, 3
    x = torch.tensor([[[1.0, 1.0]]]).repeat(5, 1, 1)
    with torch.no_grad():
        out = build_model(spec, sd, dtype=torch.float64)(x.double())
    assert out.spikes.flatten().tolist() == [0, 1, 0, 1, 0]


def test_refusals():
    spec = ModelSpec(layers=(Conv2d(1, 2, 3), MaxPool2d(2), Leaky()), input_shape=(1, 6, 6))
    with pytest.raises(NIRError, match=r"layer 1 \(maxpool2d\): NIR 1.0 has no max-pooling"):
        export_nir(spec, build_model(spec).state_dict())
    lif = dict(tau=np.array([0.01]), r=np.array([10.0]), v_leak=np.array([0.0]), v_threshold=np.array([1.0]))
    bad = nir.NIRGraph(nodes={"in": nir.Input(input_type={"input": np.array([1])}),
                              "lif": nir.LIF(**lif, v_reset=np.array([-0.5])),
                              "out": nir.Output(output_type={"output": np.array([1])})},
                       edges=[("in", "lif"), ("lif", "out")])
    with pytest.raises(NIRError, match="v_reset must be 0"):
        import_nir(bad, dt_s=1e-3)
    fork = nir.NIRGraph(nodes={"in": nir.Input(input_type={"input": np.array([1])}),
                               "a": nir.LIF(**lif), "b": nir.LIF(**lif),
                               "out": nir.Output(output_type={"output": np.array([1])})},
                        edges=[("in", "a"), ("in", "b"), ("a", "out"), ("b", "out")])
    with pytest.raises(NIRError, match="'in' has 2 successors"):
        import_nir(fork, dt_s=1e-3)
    with pytest.raises(NIRError, match="beta = 1 - dt/tau outside"):
        import_nir(bad.__class__(nodes={**bad.nodes, "lif": nir.LIF(**lif)}, edges=bad.edges), dt_s=0.1)
    with pytest.raises(FileNotFoundError, match="NIR file not found"):
        import_nir("/nonexistent/m.nir")
