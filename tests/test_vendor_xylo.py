"""The xylosim profiles (xylo-imu, xylo-audio2) against xylosim 0.1.3 (SynSense's C++ Xylo simulator,
`xylosim.v2.XyloLayer`, in-process), bit for bit: per layer and step, spikes, Vmem and Isyn of 100
random networks (int16 saturation after every event, spike caps 31 and 1, dash_syn 0, the dash_mem 0
wrap, both chips), of 60 random networks of 2 and 3 hidden layers mapped into the chip's one hidden
pool (block-structured weights_rec, one shared weight_shift_rec), and of digits models pooled to the
chip's 16 inputs (the registered dataset digits4x4), trained with one and two hidden layers,
compiled for xylo-imu and run on the 360 test samples; `spikeloop train`/`deploy --device
xylosim`/`export --format xylo` end to end; the chips' limits refused. Also that what does not match, does not (the xylo-like
arithmetic; `sim` without the readout delay), and the mapping without xylosim.

    python -m pytest -m vendor tests/test_vendor_xylo.py

The vendor tests skip only when xylosim is not importable, with the reason; under CI (CI set) or
SPIKELOOP_REQUIRE_VENDOR=1 they fail instead of skipping.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from hw import fixed_point as fxp
from hw.device import open_device
from hw.program import LayerProgram, Program
from hw.vendor.xylo import (XYLOSIM_VERSION, XylosimUnavailable, compare_with_sim, run_on_xylosim, sim_traces,
                            xylo_specification, xylosim_version)

vendor = pytest.mark.vendor
NUM_RANDOM = 100
MAX16, MIN16 = 2 ** 15 - 1, -2 ** 15


@pytest.fixture(scope="module")
def xylosim():
    try:
        version = xylosim_version()
    except XylosimUnavailable as e:
        if os.environ.get("CI") or os.environ.get("SPIKELOOP_REQUIRE_VENDOR"):
            pytest.fail(f"xylosim is required here (CI/SPIKELOOP_REQUIRE_VENDOR set) but: {e}")
        pytest.skip(str(e))
    assert version == XYLOSIM_VERSION, f"these checks are for xylosim {XYLOSIM_VERSION}, found {version}"
    return version


# ------------------------------------------------------------------------------- random networks

FEATURES = ("sat_order", "sat_neg", "cap31", "readout_cap", "dash_syn0", "wrap", "no_bias", "shift0", "bias_max", None)


def _layer(rng, n, m, cap, feature, role):
    shift = 0 if feature == "shift0" else 7 if feature in ("sat_order", "sat_neg", "wrap", "cap31") \
        else int(rng.integers(0, 8))
    w = rng.integers(-128, 128, (n, m))
    typical = 74 * 2 ** shift * np.sqrt(max(m * (0.5 if role == "hidden" else 0.3), 1.0))
    th = np.clip(np.round(typical * rng.uniform(0.2, 1.5, n)), 1, MAX16).astype(np.int64)
    b = np.where(rng.random(n) < 0.4, 0, np.round(rng.uniform(-0.3, 0.3, n) * th)).astype(np.int64)
    dm, ds = rng.integers(0, 16, n), rng.integers(1, 16, n)
    if feature == "sat_order" and role == "hidden":  # +3 x 16256 saturates before -16384 arrives
        w[0, :4] = [127, 127, 127, -128]
        w[1, :4] = [-128, 127, 127, 127]
    if feature == "sat_neg":
        w = -np.abs(w)
        w[0, 0] = -128
        b = np.minimum(np.abs(b) + th, MAX16)  # no excitatory input: the bias makes it fire
    if feature == "cap31" and role == "hidden":
        th[: max(1, n // 2)] = rng.integers(1, 40, max(1, n // 2))  # V up to 32767 = 800 thresholds
    if feature == "readout_cap" and role == "readout":
        th[:] = rng.integers(1, 30, n)
    if feature == "dash_syn0":
        ds[: max(1, n // 3)] = 0       # the current receives nothing
    if feature == "wrap" and role == "hidden":
        dm[:] = 0                      # dash_mem 0 and V = -32768: -(-32768) wraps in int16
        w[0], ds[0], b[0] = -128, 15, -100  # I reaches -32767 (dash_syn 15 decays by 1), V = I + b clips
    if feature == "no_bias":
        b[:] = 0
    if feature == "bias_max":
        b[0], b[-1] = MAX16, MIN16
    return LayerProgram("synaptic", "subtract", shift, w, b, th, dm, decay_syn=ds, max_spikes=cap)


def random_network(seed: int):
    """(program, spikes [T, B, N_in]) of a random xylo-imu or xylo-audio2 network whose layers both
    spike somewhere (redrawn until so), with one edge feature chosen by the seed."""
    rng = np.random.default_rng(seed)
    profile = "xylo-audio2" if seed % 3 == 2 else "xylo-imu"
    feature = FEATURES[seed % len(FEATURES)]
    m = 16 if feature in ("sat_order", "wrap") else int(rng.integers(4, 17))
    h = int(rng.integers(2, 200 if profile == "xylo-audio2" else 129)) if seed % 7 else 128
    o = int(rng.integers(1, 9 if profile == "xylo-audio2" else 17))
    T, B = int(rng.integers(5, 25)), int(rng.integers(1, 7))
    for _ in range(200):
        prog = Program(profile, (_layer(rng, h, m, 31, feature, "hidden"), _layer(rng, o, h, 1, feature, "readout")),
                       num_steps=T)
        x = (rng.random((T, B, m)) < rng.uniform(0.2, 0.7)).astype(np.uint8)
        with open_device("sim", profile=profile) as dev:
            dev.load(prog)
            run = dev.run(torch.as_tensor(x), probe=True)
        if all(run.layer_spikes[k].any() for k in (0, 1)):
            return prog, x
    raise RuntimeError(f"seed {seed}: no active network drawn")  # pragma: no cover


@pytest.fixture(scope="module")
def random_corpus():
    return [random_network(seed) for seed in range(NUM_RANDOM)]


def _sequential_differs(prog: Program, x: np.ndarray, tr: dict) -> int:
    """Hidden (step, sample, neuron) where saturating after every event (xylosim) gives another
    current than one saturation of the exact sum would."""
    layer = prog.layers[0]
    w = layer.weights.astype(np.int64) << int(layer.w_shift)      # [H, M]
    cur = tr["currents"][0].astype(np.int64)                      # after the decay of each step
    count = 0
    for t in range(x.shape[0]):
        prev = cur[t - 1] if t else np.zeros_like(cur[0])
        for b in range(x.shape[1]):
            seq = prev[b].copy()
            for j in np.flatnonzero(x[t, b]):
                seq = np.clip(seq + w[:, j], MIN16, MAX16)
            once = np.clip(prev[b] + w @ x[t, b].astype(np.int64), MIN16, MAX16)
            count += int((seq != once).sum())
    return count


def test_random_corpus_covers_the_edges(random_corpus):
    """The corpus holds what a wrong arithmetic would get wrong: per-event saturation changing the
    current, V saturated at -32768, the hidden cap of 31 spikes and the readout's cap of 1 reached,
    currents with dash_syn 0 (no input), the dash_mem 0 wrap, shifts 0 and 7, both chips, no-bias
    networks, 128 hidden neurons on xylo-imu and more than 128 on xylo-audio2."""
    layers = [l for p, _ in random_corpus for l in p.layers]
    assert {0, 7} <= {int(l.w_shift) for l in layers}
    assert {p.profile for p, _ in random_corpus} == {"xylo-imu", "xylo-audio2"}
    assert any(not p.layers[0].bias.any() and not p.layers[1].bias.any() for p, _ in random_corpus)
    assert max(p.layers[0].num_neurons for p, _ in random_corpus if p.profile == "xylo-imu") == 128
    assert max(p.layers[0].num_neurons for p, _ in random_corpus if p.profile == "xylo-audio2") > 128
    seq = neg = cap31 = cap1 = silent = wraps = 0
    for p, x in random_corpus:
        tr = sim_traces(p, x)
        seq += _sequential_differs(p, x, tr)
        neg += sum(int((tr["membranes"][k] == MIN16).sum()) for k in (0, 1))
        cap31 += int((tr["layer_spikes"][0] == 31).sum())
        # the readout fired once and is still at or above threshold: a second spike was capped
        r = p.layers[1]
        cap1 += int(((tr["layer_spikes"][1] == 1) & (tr["membranes"][1] >= r.threshold.astype(np.int64))).sum())
        h = p.layers[0]
        ds0 = h.decay_syn == 0
        if ds0.any():
            silent += 1
            assert not tr["currents"][0][:, :, ds0].any()
        v, i = tr["membranes"][0].astype(np.int64), tr["currents"][0].astype(np.int64)
        dm0 = h.decay_mem == 0
        b = h.bias.astype(np.int64)
        # dash_mem 0 at V = -32768: without the int16 wrap V would become I + b, clipped
        unwrapped = np.clip(MIN16 + np.clip(np.clip(-MIN16 + i[1:], MIN16, MAX16) + b, MIN16, MAX16), MIN16, MAX16)
        at_min = (v[:-1] == MIN16) & dm0
        wraps += int((at_min & (unwrapped != v[1:] + h.threshold.astype(np.int64) * tr["layer_spikes"][0][1:])).sum())
    assert seq > 0 and neg > 0 and cap31 > 0 and cap1 > 0 and silent > 0 and wraps > 0, \
        dict(seq=seq, neg=neg, cap31=cap31, cap1=cap1, silent=silent, wraps=wraps)


@vendor
def test_random_networks_identical_to_xylosim(xylosim, random_corpus):
    """Every layer's spikes, Vmem and Isyn at every step of every sample, all 100 networks."""
    t0 = time.perf_counter()
    bad, samples, values = [], 0, 0
    for i, (prog, x) in enumerate(random_corpus):
        res = run_on_xylosim(prog, x)
        assert res["meta"]["xylosim"] == XYLOSIM_VERSION
        rep = compare_with_sim(prog, x, res)
        samples += x.shape[1]
        values += sum(3 * a.size for a in res["membranes"].values())
        if not rep.identical:
            bad.append(f"network {i} ({prog.profile}): {rep.summary()}")
    print(f"\n{len(random_corpus)} random networks, {samples} samples, {values} values (spikes, Vmem, Isyn) "
          f"compared with xylosim {xylosim} in {time.perf_counter() - t0:.1f} s")
    assert not bad, "\n".join(bad)


@vendor
def test_the_xylo_like_arithmetic_and_an_undelayed_readout_do_not_match(xylosim, random_corpus):
    """The comparison can fail: the same weights under the xylo-like rules, or `sim` with the readout
    reading the same step, give other rasters than xylosim on most networks."""
    like_same = nodelay_same = 0
    nets = random_corpus[:20]
    for prog, x in nets:
        res = run_on_xylosim(prog, x)
        like = Program("xylo-like", tuple(LayerProgram(**{**_fields(l), "max_spikes": 15}) for l in prog.layers))
        with open_device("sim", profile="xylo-like") as dev:
            dev.load(like)
            out = dev.run(torch.as_tensor(x)).output_spikes.numpy()
        like_same += bool(np.array_equal(out, res["output_spikes"]))
        h, mc = torch.as_tensor(x).float(), 1
        for layer in prog.layers:  # no delay before the readout
            p = fxp.layer_params(layer, "cpu")
            h, _, _ = fxp.xylosim_layer(h, p, mc)
            mc = p.max_spikes
        nodelay_same += bool(np.array_equal(h.numpy(), res["output_spikes"]))
    assert like_same <= 2 and nodelay_same <= 2, (like_same, nodelay_same)


def _fields(l: LayerProgram) -> dict:
    return {k: getattr(l, k) for k in ("neuron_type", "reset", "w_shift", "weights", "bias", "threshold",
                                       "decay_mem", "decay_syn")}


# ---------------------------------------------------------------------------- trained digits model

@pytest.fixture(scope="module")
def digits4x4_model():
    """16 -> 64 synaptic -> 10 synaptic trained 12 epochs on the digits pooled to 4x4 (about 5 s)."""
    from hw.vendor.xylo_digits import digits_4x4, train_digits_4x4
    data = digits_4x4()
    spec, model = train_digits_4x4(data, epochs=12, seed=0)
    return data, spec, model


@pytest.fixture(scope="module")
def digits4x4_checkpoint(digits4x4_model, tmp_path_factory):
    from snn.checkpoint import save_checkpoint
    _, spec, model = digits4x4_model
    return save_checkpoint(tmp_path_factory.mktemp("d4") / "model.safetensors", spec, model,
                           extra={"dataset": "digits4x4"})


@vendor
def test_trained_digits4x4_identical_on_xylosim(xylosim, digits4x4_model):
    """The whole test set (360 samples x 40 steps) on xylosim and on `sim`: identical output rasters
    and hidden/readout spikes, Vmem and Isyn; the device within 2 points of float (measured: −0.83)."""
    from hw.vendor.xylo_digits import check_on_xylo
    data, spec, model = digits4x4_model
    res = check_on_xylo(spec, model, data, "xylo-imu")
    rep = res["comparison"]
    assert rep.identical, rep.summary()
    assert res["identical_output_rasters"] == res["samples"] == 360
    assert res["xylosim_accuracy"] == res["device_accuracy"]
    assert all(l.sim_spikes > 0 for l in rep.layers)
    print(f"\ndigits 4x4 16-64-10 on xylo-imu: 360 samples x {res['steps']} steps identical on xylosim {xylosim} "
          f"({rep.summary()}); float {100 * res['float_accuracy']:.2f} %, device {100 * res['device_accuracy']:.2f} %, "
          f"agreement {100 * res['agreement_with_float']:.1f} %, hidden bins with > 1 spike "
          f"{100 * res['hidden_multi_spike_fraction']:.1f} %")
    assert res["float_accuracy"] > 0.7
    assert res["device_accuracy"] >= res["float_accuracy"] - 0.02


# ----------------------------------------------------------------------- the mapping, without xylosim

def test_specification_transposes_pads_and_keeps_one_shift_per_matrix():
    rng = np.random.default_rng(0)
    h = LayerProgram("synaptic", "subtract", 3, rng.integers(-128, 128, (5, 7)), np.arange(5), np.full(5, 9),
                     np.full(5, 2), decay_syn=np.full(5, 1), max_spikes=31)
    r = LayerProgram("synaptic", "subtract", 6, rng.integers(-128, 128, (2, 5)), np.array([0, -4]), np.full(2, 7),
                     np.full(2, 4), decay_syn=np.full(2, 3), max_spikes=1)
    spec = xylo_specification(Program("xylo-imu", (h, r)))
    assert spec.weights_in.shape == (16, 5) and not spec.weights_in[7:].any()
    assert (spec.weights_in[:7] == h.weights.T).all() and (spec.weights_out == r.weights.T).all()
    assert (spec.weight_shift_in, spec.weight_shift_rec, spec.weight_shift_out) == (3, 0, 6)
    assert spec.dash_syn_2 is None and not spec.weights_rec.any()
    assert spec.bias_out.tolist() == [0, -4] and spec.threshold.tolist() == [9] * 5
    d = spec.to_dict()
    assert len(d["aliases"]) == 5 and d["weights_in"][0] == h.weights.T[0].tolist()
    audio = xylo_specification(Program("xylo-audio2", (h, r)))
    assert audio.dash_syn_2.tolist() == [1] * 5  # the second synapse exists but gets no weights
    with pytest.raises(ValueError, match="xylosim runs the profiles"):
        xylo_specification(Program("xylo-like", (LayerProgram(**{**_fields(h), "max_spikes": 1}),)))


def test_missing_xylosim_names_the_install(monkeypatch):
    import builtins
    real = builtins.__import__

    def no_xylosim(name, *a, **k):
        if name.startswith("xylosim"):
            raise ImportError("No module named 'xylosim'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_xylosim)
    with pytest.raises(XylosimUnavailable, match=r"pip install xylosim==0\.1\.3"):
        xylosim_version()


# ------------------------------------------------------------- export --format xylo, the xylosim device

def _rockpool_from_specification_args(chip: str) -> set[str]:
    """The parameter names of rockpool 3.1.0's `XyloSim.from_specification` for `chip`, read from its
    source with `ast` (importing `rockpool.devices.xylo` needs samna, which must never be installed)."""
    import ast
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("rockpool")
    assert spec is not None, "rockpool 3.1.0 is in the dev extra"
    src = (Path(spec.submodule_search_locations[0]) / "devices" / "xylo" / chip / "xylo_sim.py").read_text()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.FunctionDef) and node.name == "from_specification":
            return {a.arg for a in node.args.args + node.args.kwonlyargs} - {"cls"}
    raise AssertionError(f"no from_specification in rockpool's {chip} xylo_sim.py")


@vendor
def test_exported_xylo_specification_fed_to_xylosim_gives_the_sim_rasters(xylosim, digits4x4_model,
                                                                          digits4x4_checkpoint, tmp_path, capsys):
    """`spikeloop export --format xylo` writes JSON whose `specification` holds exactly rockpool's
    `from_specification` arguments (minus dt, verify_config, output_mode); read back and fed to xylosim
    directly it gives `sim`'s spikes, Vmem and Isyn on all 360 test samples."""
    import json

    from experiments.cli import main
    from hw.compiler import compile_model
    from hw.deploy import device_inputs
    from hw.vendor.xylo import SPEC_FORMAT, read_xylo_spec, run_xylosim_spec

    data, spec, model = digits4x4_model
    out = tmp_path / "d4.json"
    assert main(["export", str(digits4x4_checkpoint), "--format", "xylo", "--out", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    doc = json.loads(out.read_text())
    assert doc["format"] == res["file_format"] == SPEC_FORMAT and doc["profile"] == "xylo-imu"
    assert set(doc["specification"]) == _rockpool_from_specification_args("syns63300") - {
        "dt", "verify_config", "output_mode"}
    prog = compile_model(spec, model.state_dict(), "xylo-imu")
    assert doc["program_crc32"] == res["program_crc32"] == f"0x{prog.checksum:08x}"
    x = device_inputs(spec, data.test_x, range(len(data.test_x))).numpy()
    got = run_xylosim_spec(read_xylo_spec(out), x)
    rep = compare_with_sim(prog, x, got)
    assert rep.identical, rep.summary()
    assert np.array_equal(got["output_spikes"], sim_traces(prog, x)["layer_spikes"][1])
    assert main(["export", str(digits4x4_checkpoint), "--format", "xylo", "--profile", "xylo-audio2",
                 "--out", str(tmp_path / "a2.json")]) != 0  # 10 readout neurons: Xylo Audio 2 has 8
    assert "limit of 8 readout neurons" in capsys.readouterr().err
    assert main(["export", str(digits4x4_checkpoint), "--format", "xylo", "--profile", "loihi",
                 "--out", str(tmp_path / "l.json")]) != 0
    assert "--format xylo writes profile xylo-imu or xylo-audio2, not 'loihi'" in capsys.readouterr().err


@vendor
def test_exported_specifications_of_random_networks_run_identically(xylosim, random_corpus, tmp_path):
    """Every random network (both chips) through `write_xylo_spec` -> file -> `read_xylo_spec` -> xylosim:
    identical to `sim`; the xylo-audio2 files hold rockpool's syns61201 argument names."""
    import json

    from hw.vendor.xylo import read_xylo_spec, run_xylosim_spec, write_xylo_spec

    bad = []
    for i, (prog, x) in enumerate(random_corpus):
        path = write_xylo_spec(prog, tmp_path / f"n{i}.json")
        chip = "syns61201" if prog.profile == "xylo-audio2" else "syns63300"
        assert set(json.loads(path.read_text())["specification"]) <= _rockpool_from_specification_args(chip)
        rep = compare_with_sim(prog, x, run_xylosim_spec(read_xylo_spec(path), x))
        if not rep.identical:
            bad.append(f"network {i}: {rep.summary()}")
    assert not bad, "\n".join(bad)


def test_xylo_spec_file_refusals(tmp_path):
    import json

    from hw.vendor.xylo import SPEC_FORMAT, read_xylo_spec, write_xylo_spec

    rng = np.random.default_rng(1)
    h = LayerProgram("synaptic", "subtract", 3, rng.integers(-128, 128, (5, 7)), np.arange(5), np.full(5, 9),
                     np.full(5, 2), decay_syn=np.full(5, 1), max_spikes=31)
    r = LayerProgram("synaptic", "subtract", 6, rng.integers(-128, 128, (2, 5)), np.array([0, -4]), np.full(2, 7),
                     np.full(2, 4), decay_syn=np.full(2, 3), max_spikes=1)
    prog = Program("xylo-imu", (h, r))
    path = write_xylo_spec(prog, tmp_path / "s.json")
    back, orig = read_xylo_spec(path), xylo_specification(prog)
    for k in orig.__dataclass_fields__:
        a, b = getattr(back, k), getattr(orig, k)
        assert (a is None and b is None) or np.array_equal(a, b), k
    doc = json.loads(path.read_text())
    (tmp_path / "f.json").write_text(json.dumps(doc | {"format": "other 1"}))
    with pytest.raises(ValueError, match=f"expected {SPEC_FORMAT!r}"):
        read_xylo_spec(tmp_path / "f.json")
    bad = json.loads(path.read_text())
    bad["specification"]["weights_out"] = bad["specification"]["weights_out"][:-1]
    (tmp_path / "w.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"weights_out has shape \(4, 2\), expected \(5, 2\)"):
        read_xylo_spec(tmp_path / "w.json")
    bad = json.loads(path.read_text())
    bad["specification"]["weights_in"][0][0] = 300
    (tmp_path / "i8.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="weights_in must be int8"):
        read_xylo_spec(tmp_path / "i8.json")


@vendor
def test_deploy_on_the_xylosim_device_matches_sim(xylosim, digits4x4_model, digits4x4_checkpoint):
    """`deploy_checkpoint` (what `spikeloop deploy` runs) on the `xylosim` device: agreement_with_sim 1.0
    and the same accuracy and per-layer spike / synop counters as `sim` on the 360 test samples."""
    from experiments.commands.deploy import deploy_checkpoint
    from snn.checkpoint import load_checkpoint

    data, _, _ = digits4x4_model
    ckpt = load_checkpoint(digits4x4_checkpoint)
    xs = deploy_checkpoint(ckpt, data, "xylosim", "xylo-imu", progress=False).result
    sim = deploy_checkpoint(ckpt, data, "sim", "xylo-imu", progress=False).result
    assert xs["agreement_with_sim"] == 1.0 and xs["device_info"]["firmware_version"].startswith("xylosim 0.1.3")
    for key in ("device_accuracy", "float_accuracy", "agreement_with_float", "spikes", "synops", "layer_counters"):
        assert xs[key] == sim[key], key


@vendor
def test_xylosim_device_probe_and_refusals(xylosim, random_corpus):
    from hw.device import make_device

    prog, x = random_corpus[2]
    with open_device("xylosim", profile=prog.profile) as dev:
        dev.load(prog.to_bytes())
        got = dev.run(torch.as_tensor(x), probe=True)
    with open_device("sim", profile=prog.profile) as dev:
        dev.load(prog)
        ref = dev.run(torch.as_tensor(x), probe=True)
    assert torch.equal(got.output_spikes, ref.output_spikes) and got.counters == ref.counters
    for k in ref.membranes:
        assert torch.equal(got.membranes[k], ref.membranes[k]) and torch.equal(got.layer_spikes[k], ref.layer_spikes[k])
    with pytest.raises(ValueError, match="runs profile xylo-imu or xylo-audio2, not 'xylo-like'"):
        make_device("xylosim", profile="xylo-like")
    with pytest.raises(ValueError, match="takes no target or parameters"):
        make_device("xylosim?x=1", profile="xylo-imu")


# ------------------------------------------------- several hidden layers in the one hidden pool

NUM_DEEP = 60


def random_deep_network(seed: int):
    """(program, spikes) of a random network of 2 or 3 hidden layers and a readout for xylo-imu or
    xylo-audio2 (hidden layers 2.. share one w_shift: the chip's weight_shift_rec), every layer
    spiking somewhere, with one edge feature chosen by the seed (saturation, caps, dash_syn 0 ...)."""
    rng = np.random.default_rng(1000 + seed)
    profile = "xylo-audio2" if seed % 2 else "xylo-imu"
    feature = FEATURES[seed % len(FEATURES)]
    k = 2 + (seed // 2) % 2
    m = 16 if feature in ("sat_order", "wrap") else int(rng.integers(4, 17))
    first_max, last_max = (128, 128) if profile == "xylo-imu" else (300, 300)
    sizes = [int(rng.integers(2, first_max + 1))] + [int(rng.integers(2, 120)) for _ in range(k - 2)] \
        + [int(rng.integers(2, last_max + 1))]
    if seed % 11 == 0 and profile == "xylo-imu":
        sizes[0], sizes[-1] = 128, 128
    o = int(rng.integers(1, 9 if profile == "xylo-audio2" else 17))
    T, B = int(rng.integers(5, 20)), int(rng.integers(1, 5))
    shift = 0 if feature == "shift0" else 7 if feature in ("cap31", "sat_order") else int(rng.integers(0, 8))
    for _ in range(200):
        layers, fan_in = [], m
        for j, n in enumerate(sizes):
            l = _layer(rng, n, fan_in, 31, feature, "hidden")
            if j:  # the shared shift, and a threshold for inputs of up to 31 spikes per source
                l = LayerProgram(**{**_fields(l), "w_shift": shift, "max_spikes": 31,
                                    "threshold": np.clip(l.threshold * 2 ** shift // 2 ** int(l.w_shift), 1, MAX16)})
            layers.append(l)
            fan_in = n
        layers.append(_layer(rng, o, fan_in, 1, feature, "readout"))
        prog = Program(profile, tuple(layers), num_steps=T)
        x = (rng.random((T, B, m)) < rng.uniform(0.2, 0.7)).astype(np.uint8)
        with open_device("sim", profile=profile) as dev:
            dev.load(prog)
            run = dev.run(torch.as_tensor(x), probe=True)
        if all(run.layer_spikes[j].any() for j in range(len(layers))):
            return prog, x
    raise RuntimeError(f"seed {seed}: no active network drawn")  # pragma: no cover


@pytest.fixture(scope="module")
def deep_corpus():
    return [random_deep_network(seed) for seed in range(NUM_DEEP)]


def test_deep_corpus_covers_the_edges(deep_corpus):
    """Both chips, 2 and 3 hidden layers, shared shifts 0 and 7, and a deeper hidden layer that
    receives several spikes from one source in a step, saturates V or fires 31 times."""
    assert {p.profile for p, _ in deep_corpus} == {"xylo-imu", "xylo-audio2"}
    assert {len(p.layers) for p, _ in deep_corpus} == {3, 4}
    assert {0, 7} <= {int(p.layers[1].w_shift) for p, _ in deep_corpus}
    multi = cap31 = neg = 0
    for p, x in deep_corpus:
        tr = sim_traces(p, x)
        for j in range(1, len(p.layers) - 1):
            multi += int((tr["layer_spikes"][j - 1] > 1).sum())
            cap31 += int((tr["layer_spikes"][j] == 31).sum())
            neg += int((tr["membranes"][j] == MIN16).sum())
    assert multi > 0 and cap31 > 0 and neg > 0, dict(multi=multi, cap31=cap31, neg=neg)


@vendor
def test_deep_random_networks_identical_to_xylosim(xylosim, deep_corpus):
    """Every hidden layer's and the readout's spikes, Vmem and Isyn at every step of every sample,
    with the hidden layers as blocks of xylosim's one recurrent pool; and the comparison can fail:
    hidden layers reading the previous layer's spikes of the same step (no pool delay) differ."""
    t0 = time.perf_counter()
    bad, nodelay_same, samples = [], 0, 0
    for i, (prog, x) in enumerate(deep_corpus):
        res = run_on_xylosim(prog, x)
        rep = compare_with_sim(prog, x, res)
        samples += x.shape[1]
        assert len(rep.layers) == len(prog.layers)
        if not rep.identical:
            bad.append(f"network {i} ({prog.profile}, {len(prog.layers) - 1} hidden): {rep.summary()}")
        h, mc = torch.as_tensor(x).float(), 1
        for k, layer in enumerate(prog.layers):  # the readout delayed, the hidden layers not
            p = fxp.layer_params(layer, "cpu")
            if k == len(prog.layers) - 1:
                h = torch.cat([torch.zeros_like(h[:1]), h[:-1]])
            h, _, _ = fxp.xylosim_layer(h, p, mc)
            mc = p.max_spikes
        nodelay_same += bool(np.array_equal(h.numpy(), res["output_spikes"]))
    print(f"\n{len(deep_corpus)} random 2-3 hidden-layer networks, {samples} samples, identical with xylosim "
          f"{xylosim} in {time.perf_counter() - t0:.1f} s; without the pool delay {nodelay_same} rasters equal")
    assert not bad, "\n".join(bad)
    assert nodelay_same <= len(deep_corpus) // 5, nodelay_same


def test_deep_specification_is_block_structured(tmp_path):
    """Layer 0 in weights_in, layer j+1 in the block weights_rec[layer j rows, layer j+1 columns],
    the last hidden layer in weights_out; one shared weight_shift_rec; the file keeps the layers."""
    from hw.vendor.xylo import read_xylo_spec, write_xylo_spec

    rng = np.random.default_rng(5)
    def syn(n, m, shift, cap=31):
        return LayerProgram("synaptic", "subtract", shift, rng.integers(-128, 128, (n, m)), rng.integers(-9, 9, n),
                            rng.integers(1, 99, n), rng.integers(0, 16, n), decay_syn=rng.integers(1, 16, n),
                            max_spikes=cap)
    layers = (syn(5, 7, 1), syn(4, 5, 3), syn(6, 4, 3), syn(2, 6, 6, cap=1))
    prog = Program("xylo-imu", layers)
    spec = xylo_specification(prog)
    assert spec.hidden_layers == (5, 4, 6) and spec.weights_rec.shape == (15, 15)
    assert (spec.weights_in[:7, :5] == layers[0].weights.T).all() and not spec.weights_in[:, 5:].any()
    expect = np.zeros((15, 15), np.int64)
    expect[0:5, 5:9], expect[5:9, 9:15] = layers[1].weights.T, layers[2].weights.T
    assert (spec.weights_rec == expect).all()
    assert (spec.weights_out[9:] == layers[3].weights.T).all() and not spec.weights_out[:9].any()
    assert (spec.weight_shift_in, spec.weight_shift_rec, spec.weight_shift_out) == (1, 3, 6)
    assert spec.threshold.tolist() == [int(v) for l in layers[:3] for v in l.threshold]
    back = read_xylo_spec(write_xylo_spec(prog, tmp_path / "deep.json"))
    assert back.hidden_layers == (5, 4, 6) and (back.weights_rec == spec.weights_rec).all()


def test_deep_programs_refuse_what_the_chips_cannot_hold():
    """Rule 7.4: the hidden pool (496 / 1000 neurons), xylo-imu's 128 input- and 128 output-
    expansion neurons, one weight_shift_rec, at most 7 hidden layers; the compiler says the same
    and refuses recurrent layers with the reason."""
    from hw.compiler import CompileError, compile_model
    from hw.program import ProgramError
    from snn.model import build_model
    from snn.spec import Linear, ModelSpec, RLeaky, Synaptic

    def layer(n, m, cap=31, shift=0):
        return LayerProgram("synaptic", "subtract", shift, np.ones((n, m), int), np.zeros(n, int), np.full(n, 5),
                            np.ones(n, int), decay_syn=np.ones(n, int), max_spikes=cap)
    assert len(Program("xylo-imu", (layer(128, 16), layer(240, 128), layer(128, 240), layer(16, 128, 1))).layers) == 4
    bad = {("xylo-imu", "128 \\+ 300 \\+ 100 = 528 neurons\\) exceed the 496-neuron hidden pool"):
               (layer(128, 16), layer(300, 128), layer(100, 300), layer(4, 100, 1)),
           ("xylo-audio2", "= 1001 neurons\\) exceed the 1000-neuron hidden pool"):
               (layer(500, 16), layer(501, 500), layer(4, 501, 1)),
           ("xylo-imu", "layer 2 \\(readout\\): fan-in 129 exceeds the 128 hidden neurons it can read .*last 128"):
               (layer(8, 16), layer(129, 8), layer(4, 129, 1)),
           ("xylo-imu", "129 neurons exceed the profile 'xylo-imu' limit of 128 hidden neurons"):
               (layer(129, 16), layer(8, 129), layer(4, 8, 1)),
           ("xylo-imu", "layers \\[1, 2\\] \\(hidden\\) must share one w_shift .*got \\[1, 2\\]"):
               (layer(8, 16), layer(8, 8, shift=1), layer(8, 8, shift=2), layer(4, 8, 1)),
           ("xylo-imu", "9 layers exceed the profile 'xylo-imu' limit max_layers=8"):
               (layer(4, 16),) + (layer(4, 4),) * 7 + (layer(2, 4, 1),)}
    for (profile, msg), layers in bad.items():
        with pytest.raises(ProgramError, match=msg) as e:
            Program(profile, layers)
        assert e.value.rule in ("7.4", "6.2")

    def spec_of(sizes, neuron=Synaptic):
        body = []
        for a, b in zip(sizes, sizes[1:]):
            body += [Linear(a, b, bias=False), neuron(alpha=0.5, beta=0.75) if neuron is Synaptic else neuron(beta=0.75)]
        return ModelSpec(layers=tuple(body), input_shape=(sizes[0],), num_steps=10)
    for sizes, msg in (([16, 128, 300, 100, 10], "528 neurons\\) exceed the 496-neuron hidden pool"),
                       ([16, 64, 200, 10], "fan-in 200 exceeds the 128 hidden neurons it can read")):
        s = spec_of(sizes)
        with pytest.raises(CompileError, match=msg):
            compile_model(s, build_model(s).state_dict(), "xylo-imu")
    rec = ModelSpec(layers=(Linear(16, 8, bias=False), Synaptic(alpha=0.5, beta=0.75), Linear(8, 8, bias=False),
                            RLeaky(beta=0.75, all_to_all=True), Linear(8, 4, bias=False), Synaptic(alpha=0.5, beta=0.75)),
                    input_shape=(16,), num_steps=10)
    with pytest.raises(CompileError, match="'rleaky' is not supported .*diagonal of weights_rec.*no synaptic current"):
        compile_model(rec, build_model(rec).state_dict(), "xylo-imu")


@vendor
def test_compiler_chooses_the_shared_recurrent_shift_and_reports_its_cost(xylosim):
    """Hidden layers 2.. get the smallest of their own shifts (a layer with a large threshold gets a
    small one); the lowered layer is recompiled at it, its report names the loss, and the program
    runs identically on xylosim."""
    from hw.compiler import compile_model
    from snn.model import build_model
    from snn.spec import Linear, ModelSpec, Synaptic

    syn = dict(alpha=0.5, beta=0.75)
    spec = ModelSpec(layers=(Linear(16, 24, bias=False), Synaptic(**syn), Linear(24, 20, bias=False),
                             Synaptic(**syn), Linear(20, 12, bias=False), Synaptic(threshold=8.0, **syn),
                             Linear(12, 5, bias=False), Synaptic(**syn)), input_shape=(16,), num_steps=15)
    torch.manual_seed(0)
    model = build_model(spec)
    prog = compile_model(spec, model.state_dict(), "xylo-imu")
    reps = prog.report["layers"]
    own = [reps[k]["shared_w_shift"]["own_w_shift"] for k in (1, 2)]
    assert own[0] > own[1], own  # the threshold 8 layer can afford less shift
    assert int(prog.layers[1].w_shift) == int(prog.layers[2].w_shift) == min(own)
    assert reps[1]["shared_w_shift"]["resolution_loss_factor"] == 2 ** (own[0] - own[1])
    assert any("weight_shift_rec is shared" in n for n in reps[1]["notes"])
    assert xylo_specification(prog).weight_shift_rec == min(own)
    rng = np.random.default_rng(0)
    x = (rng.random((15, 6, 16)) < 0.5).astype(np.uint8)
    rep = compare_with_sim(prog, x, run_on_xylosim(prog, x))
    assert rep.identical, rep.summary()


def test_digits4x4_is_registered_as_the_pooled_digits():
    from hw.vendor.xylo_digits import digits_4x4, pool_images
    from snn.data import load_dataset

    d, full = digits_4x4(), load_dataset("digits")
    assert d.name == "digits4x4" and d.input_shape == (1, 4, 4) and len(d.test_x) == 360
    assert torch.equal(d.test_x, pool_images(full.test_x)) and torch.equal(d.train_y, full.train_y)
    # the mean of one 2x2 block, by hand
    assert d.test_x[3, 0, 1, 2] == full.test_x[3, 0, 2:4, 4:6].mean()


@vendor
def test_trained_two_hidden_layer_digits4x4_on_xylosim(xylosim):
    """16 -> 64 -> 64 -> 10 synaptic, trained on digits4x4, compiled for xylo-imu (two hidden layers
    in the hidden pool): the 360 test samples identical on xylosim in every layer, and the device
    within 2 points of float (measured: −0.28; seeds 1, 2: 0.00, +0.28)."""
    from hw.vendor.xylo_digits import check_on_xylo, digits_4x4, train_digits_4x4
    data = digits_4x4()
    spec, model = train_digits_4x4(data, epochs=12, seed=0, hidden_layers=2)
    res = check_on_xylo(spec, model, data, "xylo-imu")
    rep = res["comparison"]
    assert rep.identical, rep.summary()
    assert res["identical_output_rasters"] == 360 and len(rep.layers) == 3
    print(f"\ndigits 4x4 16-64-64-10 on xylo-imu: float {100 * res['float_accuracy']:.2f} %, device "
          f"{100 * res['device_accuracy']:.2f} %, hidden bins with > 1 spike {100 * res['hidden_multi_spike_fraction']:.1f} %")
    assert res["float_accuracy"] > 0.8 and res["device_accuracy"] >= res["float_accuracy"] - 0.02


@vendor
def test_cli_train_and_deploy_on_xylosim(xylosim, tmp_path, capsys):
    """`spikeloop train --dataset digits4x4 --model SPEC` and `spikeloop deploy CKPT --device xylosim
    --json` through `experiments.cli.main`: a two-hidden-layer model, agreement_with_sim 1.0."""
    import json

    from experiments.cli import main
    from hw.vendor.xylo_digits import xylo_digits_spec

    spec_path = tmp_path / "spec.json"
    spec_path.write_text(xylo_digits_spec(hidden=32, num_steps=20, hidden_layers=2).to_json())
    assert main(["train", "--dataset", "digits4x4", "--model", str(spec_path), "--epochs", "2", "--max-train", "300",
                 "--out", str(tmp_path / "run"), "--no-progress", "--device", "cpu", "--json"]) == 0
    capsys.readouterr()
    assert main(["deploy", str(tmp_path / "run" / "model.safetensors"), "--device", "xylosim", "--max-test", "60",
                 "--no-progress", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["device"], out["profile"], out["dataset"], out["test_samples"]) == ("xylosim", "xylo-imu", "digits4x4", 60)
    assert out["agreement_with_sim"] == 1.0 and len(out["layer_counters"]) == 3
    assert out["device_info"]["firmware_version"].startswith("xylosim 0.1.3")
    # `spikeloop export --format xylo` writes the pool: layer 2 as the block weights_rec[0:32, 32:64]
    from hw.vendor.xylo import read_xylo_spec
    assert main(["export", str(tmp_path / "run" / "model.safetensors"), "--format", "xylo",
                 "--out", str(tmp_path / "deep.json")]) == 0
    spec = read_xylo_spec(tmp_path / "deep.json")
    assert spec.hidden_layers == (32, 32) and spec.weights_rec.shape == (64, 64)
    assert spec.weights_rec[:32, 32:].any() and not spec.weights_rec[32:].any() and not spec.weights_rec[:, :32].any()


@pytest.mark.gpu
def test_deep_networks_on_sim_cuda_match_cpu(deep_corpus):
    """The pool's delays and per-event saturation on `sim:cuda` give the CPU's spikes and Vmem."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA (no GPU here)")
    for prog, x in deep_corpus[:12]:
        with open_device("sim", profile=prog.profile) as cpu, open_device("sim:cuda", profile=prog.profile) as gpu:
            cpu.load(prog)
            gpu.load(prog)
            a, b = cpu.run(torch.as_tensor(x), probe=True), gpu.run(torch.as_tensor(x), probe=True)
        assert torch.equal(a.output_spikes, b.output_spikes) and a.counters == b.counters
        assert all(torch.equal(a.membranes[k], b.membranes[k]) for k in a.membranes)
