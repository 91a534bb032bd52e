"""Brian2 reference (numpy target) against snnTorch and against hand-computed trajectories.

Random networks use weights and biases that are multiples of 2^-8, so every synaptic sum is exact in
float64 whatever order either simulator adds in: spikes must agree 100% and membranes bit for bit.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from snn.brian2_ref import crosscheck, plot_crosscheck, run_brian2, translate
from snn.brian2_ref import equations
from snn.model import build_model
from snn.spec import AvgPool2d, Conv2d, Flatten, Leaky, Linear, ModelSpec, RLeaky, Synaptic


def grid_state(spec: ModelSpec, seed: int, scale: int = 96) -> dict:
    """State dict with every weight/bias a random multiple of 2^-8 in [-scale/2, scale]/256 (recurrent
    weights smaller); neuron parameters stay as the spec sets them."""
    g = torch.Generator().manual_seed(seed)
    sd = build_model(spec).state_dict()
    for k, v in sd.items():
        if k.endswith(("weight", "bias")):
            s = scale // 3 if "recurrent" in k else scale
            sd[k] = torch.randint(-s // 2, s + 1, v.shape, generator=g).float() / 256
    return sd


def random_input(spec: ModelSpec, batch: int, seed: int, rate: float = 0.4) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + seed)
    return (torch.rand(spec.num_steps, batch, *spec.input_shape, generator=g) < rate).float()


def mixed_spec(reset: str, seed: int) -> ModelSpec:
    """Every neuron kind in one network, per-neuron beta/alpha/threshold drawn from the seed."""
    rng = np.random.default_rng(seed)

    def per(n, lo, hi):
        return [float(v) for v in rng.uniform(lo, hi, n)]
    return ModelSpec(layers=(
        Linear(10, 12), Leaky(beta=per(12, 0.6, 0.95), threshold=per(12, 0.5, 1.0), reset=reset),
        Linear(12, 10), Synaptic(alpha=per(10, 0.3, 0.9), beta=per(10, 0.6, 0.95), threshold=0.75, reset=reset),
        Linear(10, 8), RLeaky(all_to_all=True, beta=0.875, threshold=per(8, 0.4, 0.8), reset=reset),
        Linear(8, 6), RLeaky(all_to_all=False, V=per(6, -0.5, 0.5), beta=per(6, 0.7, 0.9), threshold=0.5, reset=reset),
    ), input_shape=(10,), num_steps=25, name=f"mixed-{reset}-{seed}")


def assert_exact(report, active_layers: bool = True):
    d = report.to_dict()
    assert d["spike_agreement"] == 1.0, d
    assert d["first_divergence_step"] is None
    assert d["max_membrane_abs_diff"] == 0.0  # bit-exact: all sums are exact on the 2^-8 grid
    assert d["exact"] is True
    for layer in d["layers"]:
        if layer["type"] == "synaptic":
            assert layer["max_syn_abs_diff"] == 0.0
        if active_layers:  # the check must exercise spikes and resets, not agree on silence
            bins = report.num_steps * report.samples * layer["neurons"]
            assert 0 < layer["spikes_brian2"] < bins, layer


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_mixed_networks_bit_exact(reset, seed):
    spec = mixed_spec(reset, seed)
    report = crosscheck((spec, grid_state(spec, seed)), random_input(spec, 3, seed), target="numpy")
    assert_exact(report)
    assert [l.kind for l in report.layers] == ["leaky", "synaptic", "rleaky", "rleaky"]


@pytest.mark.parametrize("kind", ["leaky", "synaptic", "rleaky_all", "rleaky_elementwise"])
def test_each_kind_with_mixed_reset_modes_bit_exact(kind):
    """A hidden layer of `kind` with zero reset feeding an output layer of the same kind with subtract."""
    def make(reset, n):
        if kind == "leaky":
            return Leaky(beta=0.9, threshold=0.625, reset=reset)
        if kind == "synaptic":
            return Synaptic(alpha=0.7, beta=0.9, threshold=0.625, reset=reset)
        if kind == "rleaky_all":
            return RLeaky(beta=0.9, threshold=0.625, reset=reset)
        return RLeaky(all_to_all=False, V=[0.25 * (i % 3) - 0.25 for i in range(n)], beta=0.9, threshold=0.625,
                      reset=reset)
    spec = ModelSpec(layers=(Linear(16, 20), make("zero", 20), Linear(20, 7), make("subtract", 7)),
                     input_shape=(16,), num_steps=30)
    report = crosscheck((spec, grid_state(spec, 7)), random_input(spec, 2, 7), target="numpy")
    assert_exact(report)


def test_conv_avgpool_network_bit_exact():
    spec = ModelSpec(layers=(Conv2d(1, 3, 3, padding=1), AvgPool2d(2), Leaky(beta=0.875, threshold=0.25),
                             Conv2d(3, 4, 3, stride=2, padding=1), Leaky(beta=0.875, threshold=0.25, reset="zero"),
                             Flatten(), Linear(4 * 2 * 2, 5), Synaptic(alpha=0.5, beta=0.875, threshold=2.0)),
                     input_shape=(1, 8, 8), num_steps=20)
    report = crosscheck((spec, grid_state(spec, 3)), random_input(spec, 2, 3, rate=0.5), target="numpy")
    assert_exact(report)


def test_trained_digits_checkpoint_float64_agrees(trained_digits_checkpoint, digits):
    from snn.checkpoint import load_checkpoint
    from snn.encoding import encode_samples
    from snn.training import EVAL_SEED

    ckpt = load_checkpoint(trained_digits_checkpoint)
    ids = list(range(12))
    x = encode_samples(ckpt.spec, digits.test_x[ids].reshape(len(ids), *ckpt.spec.input_shape), ids, EVAL_SEED)
    report = crosscheck(trained_digits_checkpoint, x, target="numpy", dtype="float64")
    d = report.to_dict()
    assert d["spike_agreement"] == 1.0 and d["first_divergence_step"] is None
    assert d["max_membrane_abs_diff"] <= 1e-12
    assert d["prediction_agreement"] == 1.0 and d["exact"]
    assert all(layer["spikes_brian2"] > 0 for layer in d["layers"])


def test_float32_drift_is_reported_not_hidden():
    """snnTorch in float32 vs the float64 reference: membranes differ by float32 rounding, which the
    report measures (and labels not exact) instead of calling it agreement."""
    spec = ModelSpec(layers=(Linear(20, 30), Leaky(beta=0.9, threshold=1.0), Linear(30, 5), Leaky(beta=0.9)),
                     input_shape=(20,), num_steps=40)
    g = torch.Generator().manual_seed(5)
    sd = build_model(spec).state_dict()
    sd["layers.0.weight"] = torch.randn(30, 20, generator=g) * 0.3  # not on a grid: float32 sums round
    report = crosscheck((spec, sd), random_input(spec, 4, 5), target="numpy", dtype="float32")
    d = report.to_dict()
    assert d["dtype"] == "float32" and d["exact"] is False
    assert 0 < d["max_membrane_abs_diff_before_divergence"] < 1e-4
    assert 0.0 <= d["diverged_fraction"] <= 1.0
    if d["first_divergence_step"] is None:
        assert d["spike_agreement"] == 1.0
    else:
        assert d["diverged_fraction"] > 0


@pytest.mark.parametrize("swap_layer", [1, 3, 5, 7])
def test_reset_mode_swapped_is_detected(swap_layer):
    """The check can fail: simulating the same weights with one layer's reset mode swapped in Brian2
    must show disagreement (spikes and membranes) and a first divergence step."""
    spec = mixed_spec("subtract", 0)
    layers = list(spec.layers)
    layers[swap_layer] = dataclasses.replace(layers[swap_layer], reset="zero")
    wrong = spec.replace(layers=tuple(layers))
    report = crosscheck((spec, grid_state(spec, 0)), random_input(spec, 3, 0), target="numpy", brian2_spec=wrong)
    d = report.to_dict()
    assert d["spike_agreement"] < 1.0 and d["exact"] is False
    assert d["first_divergence_step"] is not None and d["max_membrane_abs_diff"] > 0
    swapped = next(l for l in d["layers"] if l["layer"] == swap_layer)
    assert swapped["train_agreement"] < 1.0
    # layers before the swapped one are untouched
    for layer in d["layers"]:
        if layer["layer"] < swap_layer:
            assert layer["spike_agreement"] == 1.0 and layer["max_membrane_abs_diff"] == 0.0


# ----- Brian2 against hand-computed trajectories (no snnTorch involved) -----

def _one_neuron_spec(layer) -> ModelSpec:
    return ModelSpec(layers=(Linear(1, 1, bias=False), layer), input_shape=(1,), num_steps=6)


def _run_one(layer, weight: float, inputs: list[int]):
    spec = _one_neuron_spec(layer)
    sd = build_model(spec).state_dict()
    sd["layers.0.weight"] = torch.tensor([[weight]])
    x = np.array(inputs, dtype=float).reshape(-1, 1, 1)
    res = run_brian2(translate(spec, sd), x)
    return res.layers[1]["mem"][:, 0, 0], res.layers[1]["spikes"][:, 0, 0]


def test_hand_computed_leaky_subtract_and_strict_threshold():
    # beta 0.5, theta 1, w 0.5, input every step:
    # U1 = .5, U2 = .75, U3 = .875, U4 = .9375, U5 = .96875, U6 = .984375: approaches but never exceeds 1
    mem, spk = _run_one(Leaky(beta=0.5, threshold=1.0), 0.5, [1] * 6)
    np.testing.assert_array_equal(mem, [0.5, 0.75, 0.875, 0.9375, 0.96875, 0.984375])
    assert spk.sum() == 0
    # w 1.0, beta 0: U = 1.0 = theta every step -> strict test: never spikes
    mem, spk = _run_one(Leaky(beta=0.0, threshold=1.0), 1.0, [1] * 6)
    np.testing.assert_array_equal(mem, [1.0] * 6)
    assert spk.sum() == 0
    # w 1.25, beta 0.5, subtract: U1 = 1.25 (spike), U2 = .625 + 1.25 - 1 = .875, U3 = .4375 + 1.25 = 1.6875 (spike)
    # U4 = .84375 + 1.25 - 1 = 1.09375 (spike), U5 = .546875 + 1.25 - 1 = .796875, U6 = .3984375 + 1.25 = 1.6484375
    mem, spk = _run_one(Leaky(beta=0.5, threshold=1.0), 1.25, [1] * 6)
    np.testing.assert_array_equal(mem, [1.25, 0.875, 1.6875, 1.09375, 0.796875, 1.6484375])
    np.testing.assert_array_equal(spk, [1, 0, 1, 1, 0, 1])


def test_hand_computed_leaky_zero_keeps_same_step_input():
    # zero reset: U[t] = beta*((1-R)U[t-1]) + X[t]; with w 1.25 every step the neuron spikes each step
    # and U stays 1.25 (the same-step input survives the reset)
    mem, spk = _run_one(Leaky(beta=0.5, threshold=1.0, reset="zero"), 1.25, [1, 1, 1, 0, 1, 0])
    np.testing.assert_array_equal(mem, [1.25, 1.25, 1.25, 0.0, 1.25, 0.0])
    np.testing.assert_array_equal(spk, [1, 1, 1, 0, 1, 0])


def test_hand_computed_synaptic_zero_drops_same_step_input():
    # alpha .5, beta .5, w 1: I = .5 I + 1; V = .5 U + I; zero: U = (1-R) V
    # t1: I 1, U 1 (no spike, strict). t2: I 1.5, U 2 (spike). t3: I 1.75, R=1 -> U 0.
    # t4 (no input): I .875, U .875. t5: I 1.4375, U 1.875 (spike). t6: I 1.71875, R=1 -> U 0
    mem, spk = _run_one(Synaptic(alpha=0.5, beta=0.5, threshold=1.0, reset="zero"), 1.0, [1, 1, 1, 0, 1, 1])
    np.testing.assert_array_equal(mem, [1.0, 2.0, 0.0, 0.875, 1.875, 0.0])
    np.testing.assert_array_equal(spk, [0, 1, 0, 0, 1, 0])


def test_hand_computed_rleaky_elementwise_recurrence_is_one_step_late():
    # V = -0.5, beta .5, w 1.5 at t1 only: U1 = 1.5 (spike); U2 = .75 + 0 + V*S1 - theta = .75 - .5 - 1 = -.75
    # U3 = -.375 (S2 = 0, no recurrence, no reset); U4 = -.1875 ...
    mem, spk = _run_one(RLeaky(all_to_all=False, V=-0.5, beta=0.5, threshold=1.0), 1.5, [1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(mem, [1.5, -0.75, -0.375, -0.1875, -0.09375, -0.046875])
    np.testing.assert_array_equal(spk, [1, 0, 0, 0, 0, 0])


def test_non_strict_threshold_would_be_detected(monkeypatch):
    """The U == theta case is exercised: a Brian2 threshold of `>=` disagrees with snnTorch."""
    spec = ModelSpec(layers=(Linear(1, 1, bias=False), Leaky(beta=0.0, threshold=1.0)), input_shape=(1,), num_steps=4)
    sd = build_model(spec).state_dict()
    sd["layers.0.weight"] = torch.tensor([[1.0]])
    x = torch.ones(4, 1, 1)
    assert crosscheck((spec, sd), x).exact
    monkeypatch.setattr(equations, "THRESHOLD", "v >= threshold")
    d = crosscheck((spec, sd), x).to_dict()
    assert d["spike_agreement"] < 1.0 and d["first_divergence_step"] == 0


def test_samples_are_independent_of_batching():
    """Samples run back to back in Brian2: state must reset between them (a sample alone gives the same)."""
    spec = mixed_spec("zero", 4)
    sd = grid_state(spec, 4)
    x = random_input(spec, 3, 4)
    plan = translate(spec, sd)
    together = run_brian2(plan, x.numpy())
    alone = run_brian2(plan, x[:, 2:3].numpy())
    for i in together.layers:
        np.testing.assert_array_equal(together.layers[i]["mem"][:, 2:3], alone.layers[i]["mem"])
        np.testing.assert_array_equal(together.layers[i]["spikes"][:, 2:3], alone.layers[i]["spikes"])


def test_bad_input_rejected():
    spec = mixed_spec("subtract", 0)
    sd = grid_state(spec, 0)
    with pytest.raises(ValueError, match="0 or 1"):
        crosscheck((spec, sd), torch.full((25, 1, 10), 0.5))
    with pytest.raises(ValueError, match="input_spikes must be"):
        crosscheck((spec, sd), torch.zeros(24, 1, 10))
    with pytest.raises(ValueError, match="target"):
        crosscheck((spec, sd), torch.zeros(25, 1, 10), target="gpu")
    with pytest.raises(ValueError, match="dtype"):
        crosscheck((spec, sd), torch.zeros(25, 1, 10), dtype="float16")


def test_report_dict_and_plot(tmp_path):
    spec = mixed_spec("subtract", 1)
    report = crosscheck((spec, grid_state(spec, 1)), random_input(spec, 2, 1))
    d = json.loads(json.dumps(report.to_dict()))  # JSON-serialisable
    for key in ("spike_agreement", "max_membrane_abs_diff", "first_divergence_step", "layers", "brian2_seconds",
                "snntorch_seconds", "versions", "target", "dtype"):
        assert key in d
    assert d["brian2_seconds"] > 0 and d["snntorch_seconds"] > 0
    layer = d["layers"][0]
    assert len(layer["neuron_agreement"]) == layer["neurons"] == 12
    assert layer["spike_count_correlation"] == 1.0
    path = plot_crosscheck(report, tmp_path / "cc.png", sample=1)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    with pytest.raises(ValueError, match="sample"):
        plot_crosscheck(report, tmp_path / "x.png", sample=2)


def test_cli_crosscheck_json(trained_digits_checkpoint, tmp_path, capsys):
    from experiments.cli import main

    rc = main(["crosscheck", str(trained_digits_checkpoint), "--samples", "4", "--json", "--out", str(tmp_path)])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert d["spike_agreement"] == 1.0 and d["first_divergence_step"] is None and d["samples"] == 4
    assert d["max_membrane_abs_diff"] <= 1e-12 and d["sample_ids"] == [0, 1, 2, 3]
    assert {"brian2_seconds", "snntorch_seconds", "layers"} <= set(d)
    assert (tmp_path / "crosscheck.png").exists()
    assert json.loads((tmp_path / "crosscheck.json").read_text())["spike_agreement"] == 1.0
    assert main(["crosscheck", str(trained_digits_checkpoint), "--samples", "100000", "--json",
                 "--out", str(tmp_path)]) == 2


@pytest.mark.parametrize("encoder", ["rate", "direct"])
def test_cli_crosscheck_conv_preset_maxpool_and_analog_input(encoder, tmp_path, capsys):
    from experiments.cli import main
    from snn.checkpoint import save_checkpoint
    from snn.presets import conv

    spec = conv((1, 8, 8), 10, channels=(2, 4), num_steps=5, encoder={"type": encoder, "gain": 1.0})
    model = build_model(spec)
    with torch.no_grad():  # initial weights scaled up so that every layer spikes
        for name, p in model.named_parameters():
            if name.endswith("weight"):
                p.mul_(4)
    path = save_checkpoint(tmp_path / "conv.safetensors", spec, model, extra={"dataset": "digits"})
    assert main(["crosscheck", str(path), "--samples", "3", "--json", "--out", str(tmp_path)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["spike_agreement"] == 1.0 and d["max_membrane_abs_diff"] <= 1e-12, d["layers"]
    assert [l["layer"] for l in d["layers"]] == [2, 5, 8] and all(l["spikes_brian2"] > 0 for l in d["layers"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: snnTorch side on the GPU")
def test_snntorch_on_cuda_float64_agrees_bit_exact():
    spec = mixed_spec("zero", 2)
    report = crosscheck((spec, grid_state(spec, 2)), random_input(spec, 3, 2), device="cuda")
    assert_exact(report)
