"""Task streams (permuted, split) and the presynaptic-activity recorder."""

import pytest
import torch
import torch.nn.functional as F

from snn.continual.activity import ActivityRecorder, representation, weight_layers
from snn.continual.streams import make_stream, parse_benchmark, permuted_stream, split_stream
from snn.model import build_model
from snn.presets import fc
from snn.spec import Conv2d, Flatten, Leaky, Linear, MaxPool2d, ModelSpec, RLeaky


def test_permuted_stream_applies_fixed_permutations(digits):
    s = permuted_stream(digits, 3, seed=4)
    flat = digits.train_x.reshape(len(digits.train_x), -1)
    assert len(s) == 3 and s.num_outputs == 10 and not s.multi_head and s.input_shape == (64,)
    for t in s.tasks:
        assert torch.equal(t.train_x, flat[:, t.permutation])  # every image, same pixel order
        assert torch.equal(t.train_y, digits.train_y)
        assert t.head == tuple(range(10))
    assert not torch.equal(s.tasks[0].permutation, s.tasks[1].permutation)
    again = permuted_stream(digits, 3, seed=4)
    assert all(torch.equal(a.permutation, b.permutation) for a, b in zip(s.tasks, again.tasks))
    other = permuted_stream(digits, 3, seed=5)
    assert not torch.equal(other.tasks[0].permutation, s.tasks[0].permutation)


def test_permuted_stream_subsets_per_task(digits):
    s = permuted_stream(digits, 2, seed=0, train_per_task=100, test_per_task=50)
    assert [len(t.train_y) for t in s.tasks] == [100, 100] and len(s.tasks[0].test_y) == 50
    assert torch.bincount(s.tasks[0].train_y, minlength=10).min() >= 9  # stratified


def test_split_stream_heads_and_labels(digits):
    s = split_stream(digits, 5)
    assert s.multi_head and s.num_outputs == 10 and len(s) == 5
    heads = [t.head for t in s.tasks]
    assert heads == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    for k, t in enumerate(s.tasks):
        assert set(t.train_y.tolist()) == set(t.head)
        # samples of classes 2k, 2k+1 only, with their images unchanged
        keep = (digits.train_y == 2 * k) | (digits.train_y == 2 * k + 1)
        assert torch.equal(t.train_x, digits.train_x[keep].reshape(int(keep.sum()), -1))
        assert torch.equal(s.head_mask(k), torch.arange(10).unsqueeze(0).eq(torch.tensor(t.head).unsqueeze(1)).any(0))
    shuffled = split_stream(digits, 5, seed=3, shuffle_classes=True)
    assert [t.head for t in shuffled.tasks] == heads  # output groups stay in order, classes move
    assert shuffled.tasks[0].name != s.tasks[0].name
    with pytest.raises(ValueError, match="cannot split"):
        split_stream(digits, 4, classes_per_task=3)


def test_benchmark_names():
    assert parse_benchmark("permuted-fashion-mnist") == ("permuted", "fashion-mnist")
    assert parse_benchmark("split-digits") == ("split", "digits")
    with pytest.raises(ValueError, match="unknown benchmark"):
        parse_benchmark("rotated-mnist")
    with pytest.raises(ValueError, match="num_tasks"):
        make_stream("permuted-digits", 0)


def test_recorder_sees_inputs_and_hidden_spikes():
    spec = fc((64,), 10, hidden=32, num_steps=5)
    torch.manual_seed(0)
    model = build_model(spec)
    layers = weight_layers(model)
    assert [l.name for l in layers] == ["layers.0", "layers.2"] and [l.in_dim for l in layers] == [64, 32]
    x = (torch.rand(5, 3, 64) < 0.5).float()
    with ActivityRecorder(model, layers, 5) as rec:
        out = model(x, record=True)
    steps = rec.steps()
    assert torch.equal(steps["layers.0"], x)
    assert torch.equal(steps["layers.2"], out.record[1]["spikes"])
    # hooks are removed on exit
    rec.clear()
    model(x)
    with pytest.raises(RuntimeError, match="no activity"):
        rec.steps()


def test_recorder_unfolds_conv_patches_and_sees_recurrent_input():
    spec = ModelSpec(layers=(Conv2d(1, 3, 3, padding=1), MaxPool2d(2), Leaky(), Flatten(),
                             Linear(3 * 16, 8), RLeaky(all_to_all=True)), input_shape=(1, 8, 8), num_steps=4)
    torch.manual_seed(1)
    model = build_model(spec)
    layers = weight_layers(model)
    assert [(l.name, l.kind, l.in_dim) for l in layers] == [
        ("layers.0", "conv2d", 9), ("layers.4", "linear", 48), ("layers.5.recurrent", "linear", 8)]
    x = (torch.rand(4, 2, 1, 8, 8) < 0.4).float()
    with ActivityRecorder(model, layers, 4) as rec:
        out = model(x, record=True)
    steps = rec.steps()
    conv = model.layers[0]
    P = steps["layers.0"]  # [T, B*L, 9]
    assert P.shape == (4, 2 * 64, 9)
    # patches times the flattened kernel give the convolution (independent: F.conv2d)
    ref = F.conv2d(x.reshape(8, 1, 8, 8), conv.weight, conv.bias, padding=1)  # [T*B, 3, 8, 8]
    got = (P.reshape(8, 64, 9) @ conv.weight.reshape(3, 9).T + conv.bias).transpose(1, 2).reshape(8, 3, 8, 8)
    assert torch.allclose(got, ref, atol=1e-6)
    # the recurrent map sees the previous step's output spikes (zeros at t=0)
    rec_in = steps["layers.5.recurrent"]
    spk = out.record[5]["spikes"]
    assert torch.equal(rec_in[0], torch.zeros_like(rec_in[0]))
    assert torch.equal(rec_in[1:], spk[:-1])


def test_representations():
    steps = torch.arange(2 * 3 * 2, dtype=torch.float64).reshape(2, 3, 2)  # T=2, R=3, n=2
    assert torch.equal(representation(steps, "rate"), (steps[0] + steps[1]) / 2)
    w = torch.tensor([0.5, 1.0], dtype=torch.float64)  # beta^(T-1-t) for beta=0.5
    assert torch.allclose(representation(steps, "trace", 0.5), (w[0] * steps[0] + w[1] * steps[1]) / 1.5)
    assert representation(steps, "steps").shape == (6, 2)
    with pytest.raises(ValueError, match="activity mode"):
        representation(steps, "mean")
