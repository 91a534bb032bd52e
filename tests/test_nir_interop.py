"""The NIR interoperability matrix, against the real consumers that install here: snnTorch 1.0's
`import_from_nir`, Norse 1.1.0's `from_nir`, nirtorch 2.6's `nir_to_torch` (tests/nir_consumers.py).

Every cell exports one model (leaky / synaptic / dense rleaky / elementwise rleaky / conv + avg-pool,
each with reset zero and subtract) with the CLI's default export (`generic`, the model's dt) and with
`--nir-target <consumer>`, runs the consumer on the same input spikes and counts the output bins
(T·B·N) that differ from spikeloop's. `MATRIX` holds what was measured: 0 (identical), a count with
the reason, or the refusal. A change on either side (a consumer fixing a bug, spikeloop changing its
export) fails the cell, and `NIRTarget.exact` (what `spikeloop export` reports) must agree with the
identical cells. Other tests pin each reason with the smallest reproduction. docs/nir_interop.md has
the table. Also here: the one β↔τ convention both ways, metadata, dt refusal, the CLI options.

Norse is not a declared dependency (its hard torchvision requirement pulls a CUDA build that does not
import beside CPU torch): `pip install --no-deps norse==1.1.0`; its cells skip without it (and
fail under .ci/run, which installs it).
"""

from __future__ import annotations

import json
import logging
import math
import warnings

import nir
import numpy as np
import pytest
import torch

from experiments.cli import main
from hw import nir_graph
from hw.nir_graph import TARGETS, NIRError, export_nir, import_nir, target_report, write_nir
from nir_consumers import RUNNERS, run_snntorch
from snn.checkpoint import save_checkpoint
from snn.model import build_model
from snn.spec import (AvgPool2d, Conv2d, Flatten, Leaky, Linear, ModelSpec, RLeaky, Synaptic, beta_from_tau,
                      tau_from_beta)

B = 6  # samples; T = 20 steps each


def model(kind: str, reset: str) -> ModelSpec:
    """The matrix's models: a hidden layer of `kind` between two Linear layers (biases on) and a
    leaky output layer, or a conv/avg-pool/leaky front; dt_s = 2 ms (not snnTorch's 1e-4)."""
    if kind == "conv":
        return ModelSpec(layers=(Conv2d(1, 4, 3, padding=1), AvgPool2d(2), Leaky(beta=0.9, reset=reset), Flatten(),
                                 Linear(64, 3), Leaky(reset=reset)), input_shape=(1, 8, 8), num_steps=20, dt_s=2e-3)
    hidden = {"leaky": lambda: Leaky(beta=0.85, reset=reset),
              "synaptic": lambda: Synaptic(alpha=0.6, beta=0.85, reset=reset),
              "rleaky": lambda: RLeaky(beta=0.85, reset=reset, all_to_all=True),
              "rleaky_v": lambda: RLeaky(beta=0.85, reset=reset, all_to_all=False,
                                         V=tuple(np.linspace(-0.5, 0.5, 16)), per_neuron=True)}[kind]()
    return ModelSpec(layers=(Flatten(), Linear(24, 16), hidden, Linear(16, 5),
                             Leaky(beta=0.7, threshold=0.8, reset=reset)),
                     input_shape=(2, 3, 4), num_steps=20, dt_s=2e-3)


def weights(spec: ModelSpec) -> dict:
    """Seeded random weights scaled up so every layer spikes."""
    torch.manual_seed(3)
    gain = 4.0 if isinstance(spec.layers[0], Conv2d) else 3.0
    return {k: (v * gain if k.endswith("weight") else v) for k, v in build_model(spec).state_dict().items()}


def inputs(spec: ModelSpec, batch: int = B) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return (torch.rand(spec.num_steps, batch, *spec.input_shape, generator=g) < 0.4).float()


def spikeloop_out(spec, sd, x) -> torch.Tensor:
    with torch.no_grad():
        return build_model(spec, sd)(x).spikes


# Reasons, each pinned by a test below.
DT = ("snnTorch hard-codes dt = 1e-4 s: tau written for the model's 2 ms gives it β' = 1 - 0.05(1 - β) "
      "and a 20x threshold: no spikes")
R_IGNORED = "Norse's LIF ignores r: input gain dt/tau = 1 - beta instead of 1"
BIAS = "nirtorch's default Affine map drops the bias (the Linear keeps its random init)"
SUB = "NIR has no subtractive reset: the consumer resets to v_reset = 0 (= spikeloop's reset-zero twin)"
SUB_SYN = "NIR has no subtractive reset: the consumer resets to v_reset = 0 right after the spike"
DROP = ("the consumer resets right after the spike (NIR); spikeloop's synaptic/rleaky zero reset "
        "(snnTorch reset_delay=True) also drops the next step's input")
NORSE_CUBA_DIFF = 203  # of 450 bins: Norse 412 spikes, spikeloop 209 (DROP), measured below
ROCKPOOL_CUBA = (114, 266, 151)  # (spikeloop spikes, Rockpool spike counts, differing bins of 600)
ROCKPOOL_FLATTEN = r"Cannot convert <class 'nir.ir.flatten.Flatten'> to rockpool module"
ROCKPOOL_CONV = r"Cannot convert <class 'nir.ir.conv.Conv2d'> to rockpool module"
POOL = ("Norse maps no AvgPool2d: nirtorch.load drops the node, and its GraphExecutor then picks a start node "
        "from a set (memory-order dependent): a shape error, or a raster of the wrong shape")

# (consumer, export, model, reset) -> (differing output bins, reason); ("refused", regex): the export
# or the consumer raises; ("broken", reason): raises or gives a raster of the wrong shape
MATRIX = {
    # the default export (dt 1e-4 s, nir_graph.DEFAULT_DT_S) is what snnTorch's importer assumes:
    # the same cells as --nir-target snntorch
    **{("snntorch", e, k, r): v for e in ("generic", "snntorch") for (k, r), v in {
        ("leaky", "zero"): (0, ""), ("leaky", "subtract"): (46, SUB),
        ("synaptic", "zero"): (56, DROP), ("synaptic", "subtract"): (40, SUB_SYN),
        ("rleaky", "zero"): (103, DROP), ("rleaky", "subtract"): (147, SUB_SYN),
        ("rleaky_v", "zero"): (41, DROP), ("rleaky_v", "subtract"): (38, SUB_SYN),
        ("conv", "zero"): (0, ""), ("conv", "subtract"): (15, SUB)}.items()},
    # `--dt-s` = the model's own 2 ms: snnTorch still steps 1e-4 s
    ("snntorch", "model_dt", "leaky", "zero"): (41, DT), ("snntorch", "model_dt", "leaky", "subtract"): (39, DT),
    ("snntorch", "model_dt", "synaptic", "zero"): ("refused", "r not supported in CubaLIF"),
    ("snntorch", "model_dt", "synaptic", "subtract"): ("refused", "r not supported in CubaLIF"),
    ("snntorch", "model_dt", "rleaky", "zero"): (83, DT), ("snntorch", "model_dt", "rleaky", "subtract"): (199, DT),
    ("snntorch", "model_dt", "rleaky_v", "zero"): (40, DT),
    ("snntorch", "model_dt", "rleaky_v", "subtract"): (39, DT),
    ("snntorch", "model_dt", "conv", "zero"): (18, DT), ("snntorch", "model_dt", "conv", "subtract"): (21, DT),

    ("norse", "generic", "leaky", "zero"): (41, R_IGNORED), ("norse", "norse", "leaky", "zero"): (0, ""),
    ("norse", "generic", "leaky", "subtract"): (39, R_IGNORED), ("norse", "norse", "leaky", "subtract"): (46, SUB),
    ("norse", "generic", "synaptic", "zero"): (43, R_IGNORED), ("norse", "norse", "synaptic", "zero"): (56, DROP),
    ("norse", "generic", "synaptic", "subtract"): (57, R_IGNORED),
    ("norse", "norse", "synaptic", "subtract"): (40, SUB_SYN),
    ("norse", "generic", "rleaky", "zero"): (83, R_IGNORED), ("norse", "norse", "rleaky", "zero"): (106, DROP),
    ("norse", "generic", "rleaky", "subtract"): (199, R_IGNORED),
    ("norse", "norse", "rleaky", "subtract"): (122, SUB_SYN),
    ("norse", "generic", "rleaky_v", "zero"): (40, R_IGNORED), ("norse", "norse", "rleaky_v", "zero"): (44, DROP),
    ("norse", "generic", "rleaky_v", "subtract"): (39, R_IGNORED),
    ("norse", "norse", "rleaky_v", "subtract"): (35, SUB_SYN),
    ("norse", "generic", "conv", "zero"): ("broken", POOL), ("norse", "norse", "conv", "zero"): (0, ""),
    ("norse", "generic", "conv", "subtract"): ("broken", POOL),
    ("norse", "norse", "conv", "subtract"): (15, SUB),

    ("nirtorch", "generic", "leaky", "zero"): (48, BIAS), ("nirtorch", "nirtorch", "leaky", "zero"): (0, ""),
    ("nirtorch", "generic", "leaky", "subtract"): (56, BIAS),
    ("nirtorch", "nirtorch", "leaky", "subtract"): (46, SUB),
    ("nirtorch", "generic", "synaptic", "zero"): (56, BIAS),
    ("nirtorch", "nirtorch", "synaptic", "zero"): ("refused", "synaptic .CubaLIF. currents have no leak term"),
    ("nirtorch", "generic", "synaptic", "subtract"): (64, BIAS),
    ("nirtorch", "nirtorch", "synaptic", "subtract"): ("refused", "synaptic .CubaLIF. currents have no leak term"),
    ("nirtorch", "generic", "rleaky", "zero"): (134, BIAS), ("nirtorch", "nirtorch", "rleaky", "zero"): (101, DROP),
    ("nirtorch", "generic", "rleaky", "subtract"): (142, BIAS),
    ("nirtorch", "nirtorch", "rleaky", "subtract"): (123, SUB_SYN),
    ("nirtorch", "generic", "rleaky_v", "zero"): (51, BIAS), ("nirtorch", "nirtorch", "rleaky_v", "zero"): (44, DROP),
    ("nirtorch", "generic", "rleaky_v", "subtract"): (48, BIAS),
    ("nirtorch", "nirtorch", "rleaky_v", "subtract"): (35, SUB_SYN),
    ("nirtorch", "generic", "conv", "zero"): (19, BIAS), ("nirtorch", "nirtorch", "conv", "zero"): (0, ""),
    ("nirtorch", "generic", "conv", "subtract"): (20, BIAS), ("nirtorch", "nirtorch", "conv", "subtract"): (15, SUB),

    **{("rockpool", "generic", k, r): ("refused", ROCKPOOL_FLATTEN if k != "conv" else ROCKPOOL_CONV)
       for k in ("leaky", "synaptic", "rleaky", "rleaky_v", "conv") for r in ("zero", "subtract")},
}
KINDS = ("leaky", "synaptic", "rleaky", "rleaky_v", "conv")
# the exports each consumer is measured on: the default, its own target where one exists, and for
# snnTorch the model's own dt
EXPORTS = {"snntorch": ("generic", "snntorch", "model_dt"), "norse": ("generic", "norse"),
           "nirtorch": ("generic", "nirtorch"), "rockpool": ("generic",)}


def _need(consumer: str) -> None:
    if consumer == "norse":
        pytest.importorskip("norse.torch", reason="Norse is not installed: pip install --no-deps norse==1.1.0")


def _export(spec, sd, export):
    """export: a target name, or "model_dt" (the generic graph written for the model's own dt)."""
    if export == "model_dt":
        return export_nir(spec, sd, dt_s=spec.dt_s)
    return export_nir(spec, sd, target=export)


def _cell(consumer, export, kind, reset):
    spec = model(kind, reset)
    sd, x = weights(spec), inputs(spec)
    ref = spikeloop_out(spec, sd, x)
    expected = MATRIX[(consumer, export, kind, reset)]
    where = f"{consumer} on the {export} export of {kind}/{reset}"
    if expected[0] == "refused":
        with pytest.raises(Exception, match=expected[1]):
            graph = _export(spec, sd, export)
            RUNNERS[consumer](graph, x, graph.metadata["dt_s"])
        return spec, sd, x, ref, None
    graph = _export(spec, sd, export)
    if expected[0] == "broken":
        try:
            got = RUNNERS[consumer](graph, x, graph.metadata["dt_s"])
        except RuntimeError:
            return spec, sd, x, ref, None
        assert got.shape != ref.shape, f"{where}: runs now ({int((got != ref).sum())} differing bins); update MATRIX"
        return spec, sd, x, ref, None
    got = RUNNERS[consumer](graph, x, graph.metadata["dt_s"])
    assert got.shape == ref.shape and ref.sum() >= 15, where
    differing = int((got != ref).sum())
    assert differing == expected[0], (f"{where}: measured {differing} differing bins of {ref.numel()} "
                                      f"(spikeloop {int(ref.sum())} spikes, consumer {int(got.sum())}); the matrix "
                                      f"says {expected[0]} ({expected[1] or 'identical'})")
    return spec, sd, x, ref, got


@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("consumer", list(RUNNERS))
def test_interop_matrix(consumer, kind, reset):
    _need(consumer)
    for export in EXPORTS[consumer]:
        spec, sd, x, ref, got = _cell(consumer, export, kind, reset)
        if export == consumer:  # what `spikeloop export --nir-target` reports agrees with the measurement
            identical = got is not None and torch.equal(got, ref)
            assert all(l["exact"] for l in target_report(spec, consumer)) == identical
        if MATRIX[(consumer, export, kind, reset)][1] == SUB:
            # the reason: the consumer runs the model as its reset-zero twin, bin for bin
            twin = model(kind, "zero")  # same seed, same weights; its reset buffers say "zero"
            assert torch.equal(got, spikeloop_out(twin, weights(twin), x))
        if MATRIX[(consumer, export, kind, reset)][1] == DT:
            assert got.sum() == 0  # the reason: with the model's dt, snnTorch's thresholds are never reached
        if MATRIX[(consumer, export, kind, reset)][1] == R_IGNORED:
            assert got.sum() < ref.sum() / 2  # the reason: input gain 1 - β (0.15 or 0.3) instead of 1


def test_every_target_round_trips_through_spikeloop():
    """Whatever the target, spikeloop's importer reads the file back to the same spikes (the
    snntorch file's tau is for 1e-4 s; model_dt_s restores the spec's own dt)."""
    for target in TARGETS:
        for kind in KINDS:
            spec = model(kind, "zero" if kind in ("leaky", "conv") else "subtract")
            sd, x = weights(spec), inputs(spec, batch=3)
            if target == "nirtorch" and kind == "synaptic":
                continue  # refused (the matrix)
            spec2, sd2 = import_nir(export_nir(spec, sd, target=target))
            assert spec2.dt_s == spec.dt_s and spec2.encoder == spec.encoder
            assert torch.equal(spikeloop_out(spec2, sd2, x), spikeloop_out(spec, sd, x)), (target, kind)


# ------------------------------------------------------------------- the reasons, smallest cases

def _one_neuron(hidden, beta=0.5) -> tuple[ModelSpec, dict]:
    spec = ModelSpec(layers=(Linear(1, 1, bias=False), hidden), input_shape=(1,), num_steps=8, dt_s=1e-3)
    return spec, {**build_model(spec).state_dict(), "layers.0.weight": torch.ones(1, 1)}


@pytest.mark.parametrize("consumer", ["snntorch", "norse", "nirtorch"])
@pytest.mark.parametrize("kind", ["synaptic", "rleaky"])
def test_reset_zero_of_synaptic_and_rleaky_drops_the_next_input_in_spikeloop_only(consumer, kind):
    """DROP, by hand. Input 1 every step, θ = 1, zero reset.
    synaptic α = β = 0.5: I = 1, 1.5, 1.75, 1.875 ...; spikeloop U = 1, 2 (spike), 0 (R = 1: the
    step's input is dropped), 1.875 (spike), 0, ... -> 0 1 0 1 0 1 0 1. A consumer resetting right
    after the spike has U = I from then on: 1.75, 1.875, ... -> 0 1 1 1 1 1 1 1.
    rleaky β = 0.5, V = 0: spikeloop 1, 1.5 (spike), 0, 1, 1.5, 0, 1, 1.5 -> 0 1 0 0 1 0 0 1; the
    consumer 1, 1.5, 1, 1.5 ... -> 0 1 0 1 0 1 0 1."""
    _need(consumer)
    hidden = (Synaptic(alpha=0.5, beta=0.5, threshold=1.0, reset="zero") if kind == "synaptic"
              else RLeaky(beta=0.5, threshold=1.0, reset="zero", all_to_all=False, V=0.0))
    spec, sd = _one_neuron(hidden)
    x = torch.ones(8, 1, 1)
    ours = {"synaptic": [0, 1, 0, 1, 0, 1, 0, 1], "rleaky": [0, 1, 0, 0, 1, 0, 0, 1]}[kind]
    theirs = {"synaptic": [0, 1, 1, 1, 1, 1, 1, 1], "rleaky": [0, 1, 0, 1, 0, 1, 0, 1]}[kind]
    assert spikeloop_out(spec, sd, x).flatten().tolist() == ours
    graph = export_nir(spec, sd, target=consumer)
    assert RUNNERS[consumer](graph, x, graph.metadata["dt_s"]).flatten().tolist() == theirs


def test_nirtorch_default_affine_map_drops_the_bias():
    """BIAS, smallest reproduction (nirtorch 2.6, nirtorch/nir_interpreter.py `_default_map_affine`
    assigns `module.weight.bias = ...` instead of `module.bias.data = ...`):

        m = nirtorch.nir_to_torch(nir.NIRGraph.from_list(nir.Affine(weight=np.eye(2), bias=[1, 2])), {})
        m(torch.zeros(2))[0]   # -> the Linear's random init bias, not [1, 2]

    Workaround: --nir-target nirtorch (Linear nodes, the bias in the next LIF's v_leak = r·b)."""
    import nirtorch

    g = nir.NIRGraph.from_list(nir.Affine(weight=np.eye(2, dtype=np.float32), bias=np.array([1.0, 2.0], np.float32)))
    torch.manual_seed(0)
    out = nirtorch.nir_to_torch(g, {})(torch.zeros(2))[0]
    assert not torch.equal(out, torch.tensor([1.0, 2.0])), "nirtorch keeps Affine biases now: update MATRIX/targets"


def _norse_quiet(graph, dt_s):
    import norse.torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            return norse.torch.from_nir(graph, dt=dt_s)
        finally:
            logging.disable(logging.NOTSET)


def test_norse_lif_ignores_r_and_drops_avgpool():
    """R_IGNORED and POOL, smallest reproductions (Norse 1.1.0, norse/torch/utils/import_nir.py):
    a LIF with tau = 10 ms, r = 10 at dt = 1 ms after input 1 holds v = dt/tau·r = 1.0 by NIR's
    equation; Norse gives v = dt/tau = 0.1 (r only logs a warning). An AvgPool2d has no mapping and
    is skipped: 16 outputs instead of 4. Workaround: --nir-target norse (r = 1 with tau/dt folded
    into the weights in front; AvgPool2d as the equal Conv2d)."""
    _need("norse")
    lif = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([1])}),
                              "lif": nir.LIF(tau=np.array([0.01]), r=np.array([10.0]), v_leak=np.array([0.0]),
                                             v_threshold=np.array([0.5]), v_reset=np.array([0.0])),
                              "output": nir.Output(output_type={"output": np.array([1])})},
                       edges=[("input", "lif"), ("lif", "output")])
    z, state = _norse_quiet(lif, 1e-3)(torch.ones(1))
    assert z.item() == 0.0 and state.state["lif"][0].v.item() == pytest.approx(0.1)
    pool = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([1, 4, 4])}),
                               "pool": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                                     padding=np.array([0, 0])),
                               "flat": nir.Flatten(input_type={"input": np.array([1, 2, 2])}, start_dim=0, end_dim=-1),
                               "output": nir.Output(output_type={"output": np.array([4])})},
                        edges=[("input", "pool"), ("pool", "flat"), ("flat", "output")])
    assert _norse_quiet(pool, 1e-3)(torch.ones(1, 4, 4))[0].shape == (16,)


# ---------------------------------------------------------------------- the one β <-> τ convention

@pytest.mark.parametrize("dt", [1e-4, 1e-3, 2e-3])
def test_tau_from_beta_and_back(dt):
    """Forward Euler both ways (docs/neuron_semantics.md): tau = dt/(1 − β), β = 1 − dt/tau; back to
    the same β within 2 float64 ulps, and exactly in the model's float32."""
    assert tau_from_beta(0.85, 1e-3) == pytest.approx(1e-3 / 0.15, rel=1e-15)
    assert beta_from_tau(20e-3, 1e-3) == pytest.approx(0.95, rel=1e-15)
    for beta in [0.0, 0.3, 0.5, 0.85, 0.8999999761581421, 0.95, 0.999]:
        back = beta_from_tau(tau_from_beta(beta, dt), dt)
        assert abs(back - beta) <= 2 * math.ulp(1.0)
        assert np.float32(back) == np.float32(beta)
    for tau in [dt, 3 * dt, 20e-3, 1.0]:
        assert tau_from_beta(beta_from_tau(tau, dt), dt) == pytest.approx(tau, rel=1e-9)
    betas = np.array([0.0, 0.3, 0.85, 0.95, 0.999])  # the exporter's/importer's elementwise forms are the same
    assert np.array_equal(nir_graph._tau(betas, dt), [tau_from_beta(b, dt) for b in betas])
    taus = np.array([dt, 3 * dt, 20e-3, 1.0])
    assert np.array_equal(nir_graph._decay(taus, dt, "beta", "x"), [beta_from_tau(t, dt) for t in taus])
    # what an exact continuous-time consumer would make of the file's tau (documented, not used)
    assert math.exp(-dt / tau_from_beta(0.85, dt)) == pytest.approx(0.8607, abs=5e-5)


@pytest.mark.parametrize("dt", [None, 2e-3])
def test_exported_time_constants_follow_the_convention_and_import_back_exactly(dt):
    """tau = dt/(1 − β) for the default step (1e-4 s) and for the model's own (2 ms)."""
    step = nir_graph.DEFAULT_DT_S if dt is None else dt
    assert nir_graph.DEFAULT_DT_S == 1e-4
    for kind in ("leaky", "synaptic", "rleaky"):
        spec = model(kind, "zero")
        sd = weights(spec)
        params = build_model(spec, sd, dtype=torch.float64).neuron_parameters()[2]
        g = export_nir(spec, sd, dt_s=dt)
        assert g.metadata["dt_s"] == step and g.metadata["model_dt_s"] == 2e-3
        node = g.nodes["layer2"]
        node = node.nodes["lif"] if isinstance(node, nir.NIRGraph) else node
        beta = params["beta"].numpy()
        if kind == "synaptic":
            assert np.array_equal(node.tau_mem, [tau_from_beta(b, step) for b in beta])
            assert np.array_equal(node.tau_syn, [tau_from_beta(a, step) for a in params["alpha"].numpy()])
            assert np.array_equal(node.r, node.tau_mem / step) and np.array_equal(node.w_in, node.tau_syn / step)
        else:
            assert np.array_equal(node.tau, [tau_from_beta(b, step) for b in beta])
            assert np.array_equal(node.r, node.tau / step)
        spec2, sd2 = import_nir(g)
        p2 = build_model(spec2, sd2, dtype=torch.float64).neuron_parameters()[2]
        for name in params:
            assert torch.equal(p2[name].float(), params[name].float()), (kind, name)


# ------------------------------------------------------------------------------- metadata, dt

def test_graph_metadata_is_json_not_a_python_repr(tmp_path):
    spec = model("leaky", "zero").replace(encoder={"type": "rate", "gain": 0.5})
    g = nir.read(str(write_nir(export_nir(spec, weights(spec)), tmp_path / "m.nir")))
    meta = {k: (v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v)
            for k, v in g.metadata.items()}
    assert json.loads(meta["encoder"]) == {"type": "rate", "gain": 0.5}
    assert meta["dt_s"] == 1e-4 and meta["model_dt_s"] == 2e-3 and meta["nir_target"] == "generic"
    assert meta["discretization"] == "forward_euler" and meta["spikeloop_nir_version"] == 2
    json.dumps(meta)  # every value a JSON scalar
    assert import_nir(g)[0].encoder == spec.encoder
    old = nir.NIRGraph(nodes=g.nodes, edges=g.edges,  # version 1 wrote the encoder as a Python repr
                       metadata={**meta, "spikeloop_nir_version": 1, "encoder": "{'type': 'rate', 'gain': 0.5}"})
    assert import_nir(old)[0].encoder == spec.encoder
    with pytest.raises(NIRError, match="format version 9; this spikeloop reads versions 1, 2"):
        import_nir(nir.NIRGraph(nodes=g.nodes, edges=g.edges, metadata={**meta, "spikeloop_nir_version": 9}))


def test_graph_without_dt_is_refused_unless_dt_is_given():
    spec = model("leaky", "zero")
    sd, x = weights(spec), inputs(spec, batch=2)
    g = export_nir(spec, sd, dt_s=2e-3)
    bare = nir.NIRGraph(nodes={k: (nir.LIF(tau=n.tau, r=n.r, v_leak=n.v_leak, v_threshold=n.v_threshold,
                                           v_reset=n.v_reset) if isinstance(n, nir.LIF) else n)
                               for k, n in g.nodes.items()},
                        edges=g.edges)  # a foreign graph: no dt in the graph or its nodes (reset: NIR's, zero)
    with pytest.raises(NIRError, match=r"records no time step .*pass dt_s.*assumes 0.0001 s"):
        import_nir(bare)
    spec2, sd2 = import_nir(bare, dt_s=2e-3)
    assert spec2.dt_s == 2e-3 and torch.equal(spikeloop_out(spec2, sd2, x), spikeloop_out(spec, sd, x))
    with pytest.raises(NIRError, match="positive number of seconds"):
        import_nir(bare, dt_s=0.0)
    with pytest.raises(NIRError, match="beta = 1 - dt/tau outside"):
        import_nir(bare, dt_s=1.0)  # a step longer than the time constants


def test_export_refusals():
    spec = model("leaky", "zero")
    sd = weights(spec)
    with pytest.raises(NIRError, match="hard-codes dt = 0.0001 s, so dt_s must be 0.0001 or omitted"):
        export_nir(spec, sd, dt_s=1e-3, target="snntorch")
    with pytest.raises(NIRError, match="unknown NIR target 'brian2'"):
        export_nir(spec, sd, target="brian2")
    two = ModelSpec(layers=(Linear(24, 8), Leaky(reset="zero"), Leaky(reset="zero")), input_shape=(24,))
    with pytest.raises(NIRError, match=r"layer 2 \(leaky\): NIR target 'norse' folds the LIF input gain"):
        export_nir(two, build_model(two).state_dict(), target="norse")
    per = ModelSpec(layers=(Linear(24, 4), Leaky(threshold=(1.0, 2.0, 1.0, 1.0), per_neuron=True)), input_shape=(24,))
    with pytest.raises(NIRError, match="import_from_nir needs one threshold per layer"):
        export_nir(per, build_model(per).state_dict(), target="snntorch")
    integrator = ModelSpec(layers=(Linear(24, 4), Leaky(beta=1.0, reset="zero")), input_shape=(24,))
    with pytest.raises(NIRError, match=r"layer 1 \(leaky\): beta = 1 \(a NIR IF node\)"):
        export_nir(integrator, build_model(integrator).state_dict(), target="snntorch")
    with pytest.raises(AssertionError, match="r != 1 not supported"):  # why: snnTorch's own IF mapping
        run_snntorch(export_nir(integrator, build_model(integrator).state_dict()), torch.ones(2, 1, 24))


# ------------------------------------------------------------------------------------------- CLI

def _cli_json(capsys, argv) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_export_options_and_snntorch_from_the_command_line(tmp_path, capsys):
    """The target cell from the command line: the default `spikeloop export --format nir` (dt 1e-4 s),
    `--nir-target snntorch` and `--dt-s 1e-4` are reproduced by snnTorch's importer bin for bin;
    written for the model's own dt (`--dt-s 2e-3`) it gives no spikes."""
    spec = model("leaky", "zero")
    sd, x = weights(spec), inputs(spec)
    ck = str(save_checkpoint(tmp_path / "m.safetensors", spec, sd))
    ref = spikeloop_out(spec, sd, x)
    base = ["export", ck, "--format", "nir", "--json"]
    res = _cli_json(capsys, base + ["--out", str(tmp_path / "d.nir"), "--dt-s", "2e-3"])
    assert res["dt_s"] == res["model_dt_s"] == 2e-3 and res["nir_target"] == "generic" and res["consumer_exact"]
    assert run_snntorch(nir.read(str(tmp_path / "d.nir")), x).sum() == 0
    for extra in ([], ["--nir-target", "snntorch"], ["--dt-s", "1e-4"]):
        res = _cli_json(capsys, base + ["--out", str(tmp_path / "s.nir")] + extra)
        assert res["dt_s"] == 1e-4 and res["model_dt_s"] == 2e-3
        assert torch.equal(run_snntorch(nir.read(str(tmp_path / "s.nir")), x), ref)
    res = _cli_json(capsys, base + ["--out", str(tmp_path / "s.nir"), "--nir-target", "snntorch"])
    assert res["consumer_exact"] and [l["exact"] for l in res["layers"]] == [True, True]
    sub = model("leaky", "subtract")
    ck2 = str(save_checkpoint(tmp_path / "sub.safetensors", sub, weights(sub)))
    res = _cli_json(capsys, ["export", ck2, "--format", "nir", "--json", "--out", str(tmp_path / "t.nir"),
                             "--nir-target", "snntorch"])
    assert not res["consumer_exact"] and res["layers"][0] == {"layer": 2, "type": "leaky", "reset": "subtract",
                                                              "exact": False}


@pytest.mark.parametrize("argv, message", [
    (["--format", "nir", "--dt-s", "0"], "argument --dt-s: must be a number in (0, 1], got 0"),
    (["--format", "nir", "--dt-s", "nan"], "argument --dt-s: must be a number in (0, 1], got nan"),
    (["--format", "nir", "--nir-target", "lava"], "argument --nir-target: invalid choice: 'lava'"),
])
def test_cli_export_refuses_bad_nir_options_at_parse_time(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(["export", "ck.safetensors", "--out", str(tmp_path / "x.nir")] + argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_cli_export_refuses_nir_options_that_do_not_apply(tmp_path, capsys):
    spec = model("leaky", "zero")
    ck = str(save_checkpoint(tmp_path / "m.safetensors", spec, weights(spec)))
    assert main(["export", ck, "--format", "nir", "--nir-target", "snntorch", "--dt-s", "1e-3",
                 "--out", str(tmp_path / "x.nir")]) == 2
    assert "hard-codes dt = 0.0001 s, so dt_s must be 0.0001 or omitted, got 0.001" in capsys.readouterr().err
    assert main(["export", ck, "--format", "program", "--dt-s", "1e-3", "--out", str(tmp_path / "x.slpg")]) == 2
    assert "--dt-s and --nir-target apply to --format nir only" in capsys.readouterr().err


# ------------------------------------------------------------------- foreign graphs: Norse, Rockpool

def _norse_net(cell: str):
    """Linear(12, 8) → cell → Linear(8, 3) → cell, Norse 1.1.0, excitatory weights so both layers spike."""
    import norse.torch as norse
    from norse.torch.module.lif import LIFCell, LIFParameters
    from norse.torch.module.lif_box import LIFBoxCell, LIFBoxParameters

    torch.manual_seed(0)
    if cell == "lif_box":  # NIR LIF
        c1 = LIFBoxCell(LIFBoxParameters(tau_mem_inv=torch.tensor(100.0), v_th=torch.tensor(0.5),
                                         v_leak=torch.tensor(0.0), v_reset=torch.tensor(0.0)))
        c2 = LIFBoxCell(LIFBoxParameters(tau_mem_inv=torch.tensor(200.0), v_th=torch.tensor(0.3),
                                         v_leak=torch.tensor(0.0), v_reset=torch.tensor(0.0)))
    else:  # LIFCell: NIR CubaLIF
        c1 = LIFCell(LIFParameters(tau_mem_inv=torch.tensor(100.0), tau_syn_inv=torch.tensor(200.0),
                                   v_th=torch.tensor(0.5), v_leak=torch.tensor(0.0), v_reset=torch.tensor(0.0)))
        c2 = LIFCell(LIFParameters(tau_mem_inv=torch.tensor(200.0), tau_syn_inv=torch.tensor(250.0),
                                   v_th=torch.tensor(0.3), v_leak=torch.tensor(0.0), v_reset=torch.tensor(0.0)))
    net = norse.SequentialState(torch.nn.Linear(12, 8), c1, torch.nn.Linear(8, 3), c2)
    with torch.no_grad():
        for lin in (net[0], net[2]):
            lin.weight.abs_().mul_(6 if cell == "lif_box" else 2)
    return net


def _norse_spikes(net, x):
    with torch.no_grad():
        state, out = None, []
        for t in range(x.shape[0]):
            o, state = net(x[t], state)
            out.append(o)
    return torch.stack(out)


@pytest.mark.parametrize("cell, differing", [("lif_box", 0), ("lif", NORSE_CUBA_DIFF)])
def test_graph_written_by_norse_imports_and_reproduces_norse(cell, differing):
    """Norse 1.1.0 `to_nir(module, sample, dt)` writes `tau = dt / tau_mem_inv` (dt·τ, not τ; its own
    `from_nir` inverts that as 1/tau, so its round trip is not the identity either) and no dt: read
    as NIR, every time constant is shorter than the step and the import is refused with the hint;
    `producer="norse"` divides by dt. Then LIFBoxCell (NIR LIF) reproduces Norse's own raster bin for
    bin. LIFCell (CubaLIF) adds the input to its current with gain 1 where NIR's forward Euler has
    dt/τ_syn·w_in, and writes w_in = 1 (pinned below); `producer="norse"` writes w_in = τ_syn/dt.
    The raster still differs (measured bins asserted) for the DROP reason: a foreign CubaLIF imports
    as spikeloop's `synaptic` with zero reset, which drops the step after a spike (snnTorch's
    reset_delay), where Norse and NIR keep integrating: about half of Norse's spikes."""
    _need("norse")
    import norse.torch as norse

    net = _norse_net(cell)
    g = norse.to_nir(net, torch.rand(1, 12), dt=1e-3)
    assert g.metadata == {}  # no dt recorded
    x = (torch.rand(30, 5, 12, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    ref = _norse_spikes(net, x)
    with pytest.raises(NIRError, match="records no time step"):
        import_nir(g)
    with pytest.raises(NIRError, match=r"outside \[0, 1\] with dt = 0.001 s .*producer='norse'"):
        import_nir(g, dt_s=1e-3)
    spec, sd = import_nir(g, dt_s=1e-3, producer="norse")
    assert spec.input_shape == (1, 12)  # Norse's Input type keeps the sample's batch axis
    got = spikeloop_out(spec, sd, x[:, :, None]).reshape(ref.shape)
    assert ref.sum() > 50 and got.sum() > 5
    assert int((got != ref).sum()) == differing, (int(ref.sum()), int(got.sum()), int((got != ref).sum()))
    with pytest.raises(NIRError, match="unknown NIR producer 'sinabs'"):
        import_nir(g, dt_s=1e-3, producer="sinabs")


def test_norse_lifcell_is_not_nir_cubalif():
    """Smallest case: one LIFCell (τ_mem = 10 ms, τ_syn = 5 ms, dt = 1 ms), input 1 at step 0.
    NIR's CubaLIF with Norse's w_in = 1, forward Euler: i = dt/τ_syn·1 = 0.2, v = dt/τ_mem·i = 0.02.
    Norse 1.1.0 (lif_feed_forward_step): i = 0 + 1, v = dt/τ_mem·1 = 0.1, and it stores the
    decayed i·(1 − dt/τ_syn) = 0.8: a current τ_syn/dt = 5 times NIR's."""
    _need("norse")
    from norse.torch.module.lif import LIFCell, LIFParameters

    cell = LIFCell(LIFParameters(tau_mem_inv=torch.tensor(100.0), tau_syn_inv=torch.tensor(200.0),
                                 v_th=torch.tensor(1.0), v_leak=torch.tensor(0.0), v_reset=torch.tensor(0.0)))
    _, state = cell(torch.ones(1))
    assert state.v.item() == pytest.approx(0.1) and state.i.item() == pytest.approx(0.8)


def test_rockpool_from_nir_cannot_read_nir_lif_flatten_or_conv():
    """ROCKPOOL_*, smallest reproductions (Rockpool 3.1.0, rockpool/nn/modules/torch/nir.py): a NIR
    `LIF` is read through `node.tau_mem`, which `nir.LIF` does not have (AttributeError); Flatten and
    Conv2d have no mapping (NotImplementedError). So of spikeloop's graphs (a Flatten in front of
    every dense model, a leaky output layer) none loads; the matrix asserts it per model."""
    from rockpool.nn.modules.torch.nir import from_nir

    lif = nir.NIRGraph.from_list(nir.LIF(tau=np.array([0.01]), r=np.array([10.0]), v_leak=np.array([0.0]),
                                         v_threshold=np.array([1.0]), v_reset=np.array([0.0])))
    with pytest.raises(AttributeError, match="'LIF' object has no attribute 'tau_mem'"):
        from_nir(lif)


def test_rockpool_runs_cubalif_graphs_with_its_own_neuron():
    """A graph Rockpool 3.1.0 does load — no Flatten, CubaLIF only — runs with Rockpool's `LIFTorch`
    semantics, not NIR's forward Euler: `dt = min(tau_mem/(1 + r))`, exponential decays exp(−dt/τ),
    and several spikes per step (floor(v/θ), no cap set by from_nir): it emits counts above 1, and
    its raster differs from spikeloop's in the measured number of bins (asserted)."""
    spec = ModelSpec(layers=(Linear(24, 16), Synaptic(alpha=0.6, beta=0.85, reset="subtract"), Linear(16, 5),
                             Synaptic(alpha=0.5, beta=0.7, threshold=0.8, reset="subtract")),
                     input_shape=(24,), num_steps=20, dt_s=2e-3)
    sd, x = weights(spec), inputs(spec)
    ref = spikeloop_out(spec, sd, x)
    got = RUNNERS["rockpool"](export_nir(spec, sd), x)
    assert got.shape == ref.shape and got.max() > 1
    assert (int(ref.sum()), int(got.sum()), int((got != ref).sum())) == ROCKPOOL_CUBA


def test_cli_deploys_a_norse_graph_with_nir_producer(tmp_path, capsys):
    """`spikeloop deploy g.nir --dt-s 1e-3 --nir-producer norse`: a Norse LIFBoxCell network on the
    digits (input type [1, 64], reshaped from the 8×8 images) compiles and runs on `sim`; without
    the producer the graph is refused with the hint (its time constants are dt·τ)."""
    _need("norse")
    import norse.torch as norse
    from norse.torch.module.lif_box import LIFBoxCell, LIFBoxParameters

    torch.manual_seed(0)

    def cell(n):  # per-neuron (1-D) parameters: nir.write refuses Norse's 0-d tensors (h5py scalar datasets)
        return LIFBoxCell(LIFBoxParameters(tau_mem_inv=torch.full((n,), 100.0), v_th=torch.full((n,), 0.5),
                                           v_leak=torch.zeros(n), v_reset=torch.zeros(n)))
    net = norse.SequentialState(torch.nn.Linear(64, 16), cell(16), torch.nn.Linear(16, 10), cell(10))
    path = tmp_path / "norse.nir"
    nir.write(str(path), norse.to_nir(net, torch.rand(1, 64), dt=1e-3))
    base = ["deploy", str(path), "--device", "sim", "--dt-s", "1e-3", "--max-test", "20", "--no-progress"]
    assert main(base) == 2
    assert "producer='norse'" in capsys.readouterr().err
    res = _cli_json(capsys, base + ["--nir-producer", "norse", "--json"])
    assert res["test_samples"] == 20 and res["profile"] == "mcu" and 0 <= res["device_accuracy"] <= 1
    assert main(["deploy", "ck.safetensors", "--nir-producer", "norse"]) == 2
    assert "--nir-producer apply to a NIR graph (.nir) only" in capsys.readouterr().err


@pytest.mark.parametrize("r", [0.0, -2.0, np.inf])
def test_import_refuses_a_lif_without_a_positive_input_gain(r):
    g = nir.NIRGraph(nodes={"in": nir.Input(input_type={"input": np.array([2])}),
                            "fc": nir.Linear(weight=np.ones((1, 2))),
                            "lif": nir.LIF(tau=np.array([0.01]), r=np.array([r]), v_leak=np.array([0.0]),
                                           v_threshold=np.array([1.0])),
                            "out": nir.Output(output_type={"output": np.array([1])})},
                     edges=[("in", "fc"), ("fc", "lif"), ("lif", "out")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused, not a divide-by-zero warning on the way
        with pytest.raises(NIRError, match=r"NIR node 'lif' \(LIF\): the input gain .* must be a positive finite"):
            import_nir(g, dt_s=1e-3)
