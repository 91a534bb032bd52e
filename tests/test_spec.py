"""The model spec: validation errors name the field, dict/JSON/TOML round trips, shape inference."""

from __future__ import annotations

import json
import math

import pytest

from snn import presets
from snn.spec import (LAYER_TYPES, SPEC_FORMAT_VERSION, AvgPool2d, Conv2d, Flatten, Leaky, Linear,
                      MaxPool2d, ModelSpec, RLeaky, Surrogate, Synaptic, beta_from_tau, layer_from_dict,
                      load_spec, tau_from_beta)

# One example of every registered layer type, with non-default values in every field so a field
# that is dropped or renamed on the way through a dict or a file shows up as a difference.
EXAMPLES = {
    "linear": Linear(in_features=12, out_features=7, bias=False),
    "conv2d": Conv2d(in_channels=2, out_channels=5, kernel_size=3, stride=2, padding=1, bias=False),
    "maxpool2d": MaxPool2d(kernel_size=3, stride=1),
    "avgpool2d": AvgPool2d(kernel_size=2, stride=None),
    "flatten": Flatten(),
    "leaky": Leaky(beta=(0.5, 0.25, 0.125), threshold=0.75, reset="zero", learn_beta=True,
                   learn_threshold=True, per_neuron=True, surrogate=Surrogate("fast_sigmoid", 25.0)),
    "synaptic": Synaptic(alpha=0.6, beta=0.7, threshold=(1.0, 2.0, 0.5), reset="zero", learn_alpha=True,
                         surrogate=Surrogate("sigmoid", 5.0)),
    "rleaky": RLeaky(beta=0.8, all_to_all=False, V=(0.5, -1.5, 2.0), learn_recurrent=False,
                     surrogate=Surrogate("triangular", 0.5)),
}


def full_spec() -> ModelSpec:
    """A spec using every layer type: conv -> pools -> flatten -> linear -> three neuron kinds."""
    layers = (
        EXAMPLES["conv2d"],            # [2, 8, 8] -> [5, 4, 4]
        EXAMPLES["maxpool2d"],         # -> [5, 2, 2]
        Leaky(beta=0.9),
        EXAMPLES["avgpool2d"],         # -> [5, 1, 1]
        EXAMPLES["flatten"],           # -> [5]
        Linear(5, 12),
        Leaky(),
        EXAMPLES["linear"],            # -> [7]
        Synaptic(alpha=0.5, beta=0.5, reset="zero"),
        Linear(7, 3),
        EXAMPLES["leaky"],
        EXAMPLES["synaptic"],
        EXAMPLES["rleaky"],
        Linear(3, 3),
        RLeaky(beta=0.7, all_to_all=True, learn_recurrent=True),
    )
    return ModelSpec(layers=layers, input_shape=(2, 8, 8), dt_s=5e-4, num_steps=11,
                     encoder={"type": "latency", "tau": 5.0, "normalize": True}, name="everything")


def test_examples_cover_every_registered_layer_type():
    assert set(EXAMPLES) == set(LAYER_TYPES)
    for name, layer in EXAMPLES.items():
        assert type(layer) is LAYER_TYPES[name]


@pytest.mark.parametrize("name", sorted(LAYER_TYPES))
def test_layer_dict_round_trip(name):
    layer = EXAMPLES[name]
    d = layer.to_dict()
    assert d["type"] == name
    back = layer_from_dict(json.loads(json.dumps(d)))
    assert back == layer
    assert back.to_dict() == d


def test_spec_dict_and_json_round_trip(tmp_path):
    spec = full_spec()
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    assert ModelSpec.from_json(spec.to_json()) == spec
    path = tmp_path / "spec.json"
    path.write_text(spec.to_json())
    loaded = load_spec(path)
    assert loaded == spec
    assert loaded.to_dict() == spec.to_dict()
    # per-neuron values come back as tuples of floats, not lists
    assert loaded.layers[12].V == (0.5, -1.5, 2.0)


TOML_TEXT = """
name = "everything"
input_shape = [2, 8, 8]
dt_s = 5e-4
num_steps = 11
version = 1

[encoder]
type = "latency"
tau = 5.0
normalize = true

[[layers]]
type = "conv2d"
in_channels = 2
out_channels = 5
kernel_size = 3
stride = 2
padding = 1
bias = false

[[layers]]
type = "maxpool2d"
kernel_size = 3
stride = 1

[[layers]]
type = "leaky"
beta = 0.9

[[layers]]
type = "avgpool2d"
kernel_size = 2

[[layers]]
type = "flatten"

[[layers]]
type = "linear"
in_features = 5
out_features = 12

[[layers]]
type = "leaky"

[[layers]]
type = "linear"
in_features = 12
out_features = 7
bias = false

[[layers]]
type = "synaptic"
alpha = 0.5
beta = 0.5
reset = "zero"

[[layers]]
type = "linear"
in_features = 7
out_features = 3

[[layers]]
type = "leaky"
beta = [0.5, 0.25, 0.125]
threshold = 0.75
reset = "zero"
learn_beta = true
learn_threshold = true
per_neuron = true
surrogate = { name = "fast_sigmoid", slope = 25.0 }

[[layers]]
type = "synaptic"
alpha = 0.6
beta = 0.7
threshold = [1.0, 2.0, 0.5]
reset = "zero"
learn_alpha = true
surrogate = { name = "sigmoid", slope = 5.0 }

[[layers]]
type = "rleaky"
beta = 0.8
all_to_all = false
V = [0.5, -1.5, 2.0]
learn_recurrent = false
surrogate = { name = "triangular", slope = 0.5 }

[[layers]]
type = "linear"
in_features = 3
out_features = 3

[[layers]]
type = "rleaky"
beta = 0.7
all_to_all = true
learn_recurrent = true
"""


def test_toml_file_gives_the_same_spec(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text(TOML_TEXT)
    assert load_spec(path) == full_spec()


def test_load_spec_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_spec(tmp_path / "nope.json")
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("layers = [\n")
    with pytest.raises(ValueError, match="invalid TOML"):
        load_spec(bad_toml)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    with pytest.raises(ValueError, match="invalid JSON"):
        load_spec(bad_json)


def test_presets_round_trip():
    for spec in (presets.fc((1, 28, 28), 10), presets.conv((1, 28, 28), 10), presets.fc((64,), 10)):
        assert ModelSpec.from_json(spec.to_json()) == spec


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("make, field", [
    (lambda: Linear(0, 3), "in_features"),
    (lambda: Linear(3, -1), "out_features"),
    (lambda: Linear(2.5, 3), "in_features"),
    (lambda: Conv2d(1, 4, 0), "kernel_size"),
    (lambda: Conv2d(1, 4, 3, stride=0), "stride"),
    (lambda: Conv2d(1, 4, 3, padding=-1), "padding"),
    (lambda: Conv2d(0, 4, 3), "in_channels"),
    (lambda: MaxPool2d(kernel_size=0), "kernel_size"),
    (lambda: AvgPool2d(kernel_size=2, stride=0), "stride"),
    (lambda: Leaky(beta=1.5), "beta"),
    (lambda: Leaky(beta=-0.1), "beta"),
    (lambda: Leaky(beta=float("nan")), "beta"),
    (lambda: Leaky(beta=[]), "beta"),
    (lambda: Leaky(beta=[0.5, "x"]), "beta"),
    (lambda: Leaky(threshold=0.0), "threshold"),
    (lambda: Leaky(threshold=float("inf")), "threshold"),
    (lambda: Leaky(reset="none"), "reset"),
    (lambda: Leaky(surrogate={"name": "relu"}), "surrogate.name"),
    (lambda: Leaky(surrogate={"name": "atan", "slope": 0}), "surrogate.slope"),
    (lambda: Synaptic(alpha=1.01), "alpha"),
    (lambda: RLeaky(V=float("nan")), "V"),
])
def test_layer_validation_names_the_field(make, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        make()


def _spec_dict(**changes):
    d = presets.fc((4,), 2, hidden=3).to_dict()
    d.update(changes)
    return d


@pytest.mark.parametrize("changes, pattern", [
    ({"dt_s": 0}, "dt_s"),
    ({"dt_s": float("inf")}, "dt_s"),
    ({"num_steps": 0}, "num_steps"),
    ({"num_steps": 2.0}, "num_steps"),
    ({"input_shape": [0]}, "input_shape"),
    ({"encoder": {"gain": 1.0}}, "encoder"),
    ({"encoder": {"type": "morse"}}, "unknown encoder type 'morse'"),
    ({"version": SPEC_FORMAT_VERSION + 1}, "version"),
    ({"layers": []}, "layers"),
    ({"colour": "red"}, r"unknown field.*colour"),
    ({"layers": [{"type": "dense", "in_features": 4, "out_features": 2}]}, r"layer 0.*unknown layer type 'dense'"),
    ({"layers": [{"in_features": 4}]}, r"layer 0.*'type'"),
    ({"layers": [{"type": "linear", "in_features": 4, "out_features": 2, "bais": True},
                 {"type": "leaky"}]}, r"layer 0 \(linear\).*bais"),
    ({"layers": [{"type": "linear", "in_features": 4}, {"type": "leaky"}]}, r"layer 0 \(linear\).*out_features"),
    ({"layers": [{"type": "linear", "in_features": 4, "out_features": 2},
                 {"type": "leaky", "beta": 2.0}]}, r"leaky.*beta"),
    ({"layers": [{"type": "linear", "in_features": 4, "out_features": 2}]}, "last layer must be spiking"),
    ({"layers": [{"type": "linear", "in_features": 5, "out_features": 2}, {"type": "leaky"}]},
     r"layer 0: linear expects input shape \(5,\), got \(4,\)"),
    ({"layers": [{"type": "linear", "in_features": 4, "out_features": 2},
                 {"type": "leaky", "beta": [0.5, 0.5, 0.5]}]}, r"layer 1: beta has 3 values but the layer has 2"),
])
def test_spec_validation_names_the_problem(changes, pattern):
    with pytest.raises(ValueError, match=pattern):
        ModelSpec.from_dict(_spec_dict(**changes))


def test_from_dict_rejects_non_tables_and_missing_keys():
    with pytest.raises(ValueError, match="table/object"):
        ModelSpec.from_dict([1, 2])
    with pytest.raises(ValueError, match="'layers' and 'input_shape' are required"):
        ModelSpec.from_dict({"layers": []})


def test_spatial_layers_need_spatial_input():
    with pytest.raises(ValueError, match=r"layer 0: conv2d expects \[C=1, H, W\]"):
        ModelSpec(layers=(Conv2d(1, 2, 3), Leaky()), input_shape=(2, 8, 8))
    with pytest.raises(ValueError, match="layer 0: conv2d kernel 5 larger than input 4x4"):
        ModelSpec(layers=(Conv2d(1, 2, 5), Leaky()), input_shape=(1, 4, 4))
    with pytest.raises(ValueError, match="layer 0: maxpool2d expects"):
        ModelSpec(layers=(MaxPool2d(2), Leaky()), input_shape=(16,))
    with pytest.raises(ValueError, match="layer 0: avgpool2d kernel 3 larger than 2x2"):
        ModelSpec(layers=(AvgPool2d(3), Leaky()), input_shape=(1, 2, 2))
    with pytest.raises(ValueError, match="rleaky with all_to_all needs flat"):
        ModelSpec(layers=(Conv2d(1, 2, 3), RLeaky(all_to_all=True)), input_shape=(1, 4, 4))
    # elementwise recurrence works on any feature shape
    spec = ModelSpec(layers=(Conv2d(1, 2, 3), RLeaky(all_to_all=False)), input_shape=(1, 4, 4))
    assert spec.shapes() == [(2, 2, 2), (2, 2, 2)]


# --------------------------------------------------------------------------- shapes


def test_shape_inference_by_hand():
    # conv: floor((8 + 2*1 - 3) / 2) + 1 = 4; maxpool k3 s1: 4 - 3 + 1 = 2; avgpool k2 (s=k): 1
    spec = full_spec()
    assert spec.shapes() == [(5, 4, 4), (5, 2, 2), (5, 2, 2), (5, 1, 1), (5,), (12,), (12,), (7,), (7,),
                             (3,), (3,), (3,), (3,), (3,), (3,)]
    assert spec.spiking_layers() == [2, 6, 8, 10, 11, 12, 14]
    assert spec.num_outputs == 3


def test_preset_shapes():
    c = presets.conv((1, 28, 28), 10)
    # 'same' 3x3 conv keeps 28, pool halves: 28 -> 14 -> 7; 32 * 7 * 7 = 1568 inputs to the readout
    assert c.shapes()[:6] == [(12, 28, 28), (12, 14, 14), (12, 14, 14), (32, 14, 14), (32, 7, 7), (32, 7, 7)]
    assert c.layers[7] == Linear(1568, 10)
    assert c.num_outputs == 10
    f = presets.fc((1, 8, 8), 10, hidden=40)
    assert f.shapes() == [(64,), (40,), (40,), (10,), (10,)]
    assert presets.conv((1, 8, 8), 10).shapes()[-1] == (10,)
    with pytest.raises(ValueError, match="unknown model preset 'mlp'"):
        presets.preset("mlp", (1, 8, 8), 10)


def test_odd_sizes_floor_like_torch():
    import torch

    spec = ModelSpec(layers=(Conv2d(3, 4, 4, stride=3, padding=2), MaxPool2d(2), AvgPool2d(2, stride=1),
                             Leaky()), input_shape=(3, 13, 11))
    x = torch.zeros(1, 3, 13, 11)
    x = torch.nn.Conv2d(3, 4, 4, stride=3, padding=2)(x)
    x = torch.nn.MaxPool2d(2)(x)
    x = torch.nn.AvgPool2d(2, stride=1)(x)
    assert spec.shapes()[2] == tuple(x.shape[1:])


def test_scalar_and_per_neuron_params_are_normalised():
    l = Leaky(beta=[0.5, 1], threshold=2)
    assert l.beta == (0.5, 1.0) and isinstance(l.beta[1], float)
    assert l.threshold == 2.0 and isinstance(l.threshold, float)
    assert Leaky(surrogate={"name": "atan", "slope": 3.0}).surrogate == Surrogate("atan", 3.0)


# --------------------------------------------------------------------------- units


def test_beta_tau_conversion():
    # forward Euler (docs/neuron_semantics.md): tau = 20 ms, dt = 1 ms: beta = 1 - 1/20 = 0.95
    assert beta_from_tau(20e-3, 1e-3) == pytest.approx(0.95, rel=1e-15)
    assert tau_from_beta(0.95, 1e-3) == pytest.approx(20e-3, rel=1e-12)
    assert beta_from_tau(1e-3, 1e-3) == 0.0 and tau_from_beta(0.0, 1e-3) == 1e-3
    with pytest.raises(ValueError, match="tau_s"):
        beta_from_tau(0.0, 1e-3)
    with pytest.raises(ValueError, match="shorter than dt_s"):
        beta_from_tau(0.5e-3, 1e-3)
    with pytest.raises(ValueError, match="beta"):
        tau_from_beta(1.0, 1e-3)


# --------------------------------------------------------------------------- resource limits


@pytest.mark.parametrize("layers, input_shape", [
    ((Flatten(), Linear(48, 9), Leaky(per_neuron=True), Linear(9, 4, bias=False), RLeaky(all_to_all=True)), (3, 4, 4)),
    ((Conv2d(2, 3, 3, padding=1), Synaptic(alpha=(0.5,) * 48, per_neuron=False), AvgPool2d(2), Flatten(),
      Linear(12, 5), RLeaky(all_to_all=False, V=(0.5, 1.0, -1.0, 2.0, 0.0))), (2, 4, 4)),
    ((MaxPool2d(1), Flatten(), Linear(32, 6), RLeaky(all_to_all=False, per_neuron=True)), (2, 4, 4)),
])
def test_parameter_shapes_match_the_built_model(layers, input_shape):
    """The sizes the limits and the memory estimate use are those snnTorch builds (state dict)."""
    from snn.model import build_model
    from snn.spec import estimate_memory

    spec = ModelSpec(layers=layers, input_shape=input_shape)
    sd = build_model(spec).state_dict()
    shapes = spec.shapes()
    expected_total = 0
    for i, layer in enumerate(spec.layers):
        p = layer.parameter_shapes(spec.input_shape if i == 0 else shapes[i - 1], shapes[i])
        for name, shape in p.items():
            assert tuple(sd[f"layers.{i}.{name}"].shape) == shape, (i, name)
        # snnTorch's fixed buffers, and element-wise RLeaky's second name for V, are not parameters
        own = {k for k in sd if k.startswith(f"layers.{i}.")
               and not k.endswith(("graded_spikes_factor", "reset_mechanism_val", "recurrent.V"))}
        assert own == {f"layers.{i}.{n}" for n in p}, i
        expected_total += sum(math.prod(s) for s in p.values())
    assert sum(m.num_bytes for m in estimate_memory(spec)) == 4 * expected_total
