"""Training: losses equal snnTorch's mean losses, one trainer step equals a hand-written snnTorch step,
CPU reproducibility, best-epoch restore and early stop, metrics files, evaluation."""

from __future__ import annotations

import json

import pytest
import snntorch.functional as snn_fn
import torch
import torch.nn.functional as F

from snn.checkpoint import load_checkpoint
from snn.data import subset
from snn.encoding import encode_batch
from snn.model import build_model
from snn.presets import fc
from snn.spec import Leaky, Linear, ModelSpec
from snn.training import LOSSES, TrainConfig, Trainer, _loss_sum, evaluate, loss_normalizer, predict

# --------------------------------------------------------------------------- losses


def _hand_loss(name, spk, y):
    """The snnTorch definitions written out: ce_rate averages the per-step cross entropy over time,
    ce_count is the cross entropy of the counts, mse_count compares counts with int(0.8 T) for the
    label and int(0.2 T) elsewhere, divided by T."""
    T, B, C = spk.shape
    if name == "ce_rate":
        return sum(F.cross_entropy(spk[t], y) for t in range(T)) / T
    if name == "ce_count":
        return F.cross_entropy(spk.sum(0), y)
    target = torch.full((B, C), float(int(0.2 * T)), dtype=spk.dtype)
    target[torch.arange(B), y] = float(int(0.8 * T))
    return ((spk.sum(0) - target) ** 2).mean() / T


SNN_MEAN = {
    "ce_rate": snn_fn.ce_rate_loss(),
    "ce_count": snn_fn.ce_count_loss(),
    "mse_count": snn_fn.mse_count_loss(correct_rate=0.8, incorrect_rate=0.2),
}


@pytest.mark.parametrize("name", LOSSES)
def test_losses_equal_snntorch_mean_losses(name):
    g = torch.Generator().manual_seed(0)
    spk = (torch.rand(13, 6, 4, generator=g) < 0.3).float()
    y = torch.tensor([0, 3, 1, 1, 2, 3])
    ours = (_loss_sum(name, spk, y) / (len(y) * loss_normalizer(name, 4))).reshape(())
    torch.testing.assert_close(ours, SNN_MEAN[name](spk, y).reshape(()), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ours, _hand_loss(name, spk, y), rtol=1e-6, atol=1e-7)


def test_predict_ties_go_to_lowest_index():
    counts = torch.tensor([[3.0, 5.0, 5.0], [0.0, 0.0, 0.0], [1.0, 0.0, 1.0]])
    assert predict(counts).tolist() == [1, 0, 0]


# --------------------------------------------------------------------------- trainer


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("params", [{}, {"gain": 0.5}, {"gain": 0.7, "offset": 0.3}])
def test_rate_encoding_fast_path_equals_the_encoder(params, dtype):
    """snn.encoding's CPU path for the rate code gives exactly encoders.encode's spikes and
    dtype, from a generator, an int seed and the global RNG; bad intensities are still refused."""
    import encoders

    spec = fc((1, 5, 7), 10, num_steps=9, encoder={"type": "rate", **params})
    x = torch.rand(6, 1, 5, 7, generator=torch.Generator().manual_seed(2), dtype=dtype)
    for make in (lambda: torch.Generator().manual_seed(11), lambda: 11):
        got = encode_batch(spec, x, make())
        want = encoders.encode("rate", x, 9, generator=make(), **params)
        assert got.dtype == want.dtype == dtype and torch.equal(got, want)
    torch.manual_seed(5)
    got = encode_batch(spec, x, None)
    torch.manual_seed(5)
    assert torch.equal(got, encoders.encode("rate", x, 9, **params))
    assert 0 < got.mean() < 1
    with pytest.raises(ValueError, match="x must lie in"):
        encode_batch(spec, x + 1, None)


@pytest.fixture(scope="module")
def small_digits(digits):
    return subset(digits, max_train=300, max_test=100, seed=0)


def tiny_spec(num_steps=8, encoder=None):
    return fc((1, 8, 8), 10, hidden=24, num_steps=num_steps, encoder=encoder)


def _cfg(**kw):
    base = dict(epochs=2, batch_size=50, lr=5e-3, loss="ce_count", seed=3, val_fraction=0.2, progress=False)
    return TrainConfig(**(base | kw))


@pytest.mark.parametrize("loss", LOSSES)
def test_one_trainer_step_is_a_plain_snntorch_step(loss, small_digits):
    """One batch holding the whole (deterministically encoded) set: the trainer's update equals
    build -> forward -> snnTorch mean loss -> Adam step written by hand."""
    spec = tiny_spec(encoder={"type": "latency", "normalize": True})
    x, y = small_digits.train_x[:40], small_digits.train_y[:40]
    cfg = _cfg(epochs=1, batch_size=40, loss=loss, val_fraction=0.0, lr_schedule=None)
    trained = Trainer(spec, x, y, cfg).fit().model

    torch.manual_seed(cfg.seed)
    model = build_model(spec)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    # in the trainer's shuffled order: Adam's first step is lr * g / (|g| + eps), so the rounding
    # of another summation order moves a weight whose gradient is near eps by far more than 1e-6
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg.seed * 7919))
    out = model(encode_batch(spec, x[order], None))
    SNN_MEAN[loss](out.spikes, y[order]).sum().backward()
    opt.step()
    for k, v in model.state_dict().items():
        # equal up to the rounding of snnTorch's mean against the trainer's sum * (1 / B)
        torch.testing.assert_close(trained.state_dict()[k], v, rtol=0, atol=1e-6, msg=k)
    assert not torch.equal(trained.layers[1].weight, build_model(spec).layers[1].weight)


def _weights(result):
    return {k: v.clone() for k, v in result.model.state_dict().items()}


def test_same_seed_gives_identical_weights(small_digits):
    d = small_digits
    runs = [Trainer(tiny_spec(), d.train_x, d.train_y, _cfg(seed=s)).fit() for s in (3, 3, 4)]
    a, b, c = (_weights(r) for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert runs[0].history == [{**h, "epoch_seconds": runs[0].history[i]["epoch_seconds"]}
                               for i, h in enumerate(runs[1].history)]
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_fit_equals_a_hand_written_loop_with_the_same_seeds(small_digits):
    """Trainer.fit (prefetching the next batch's encoding on a worker thread) gives bit for bit the
    weights of a plain loop written out here: same initial weights, epoch shuffles, per-batch
    encoding seeds, snnTorch summed loss over the batch size, Adam, in line."""
    spec, d = tiny_spec(), small_digits
    x, y = d.train_x[:130], d.train_y[:130]  # 3 batches of 50, the last of 30
    cfg = _cfg(epochs=2, val_fraction=0.0, lr_schedule=None)
    trainer = Trainer(spec, x, y, cfg)
    assert trainer.prefetch
    trained = trainer.fit().model.state_dict()

    torch.manual_seed(cfg.seed)
    model = build_model(spec)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = snn_fn.ce_count_loss(reduction="sum")
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch))
        for b, s in enumerate(range(0, len(x), cfg.batch_size)):
            idx = order[s:s + cfg.batch_size]
            gen = torch.Generator().manual_seed((cfg.seed * 1_000_003 + epoch) * 100_003 + b)
            out = model(encode_batch(spec, x[idx], gen))
            loss = loss_fn(out.spikes, y[idx]).sum() * (1 / len(idx))
            opt.zero_grad()
            loss.backward()
            opt.step()
    for k, v in model.state_dict().items():
        assert torch.equal(trained[k], v), k


def test_prefetch_does_not_change_results(small_digits):
    """Encoding in line and on the worker thread: identical weights and history (val split, cosine)."""
    d, runs = small_digits, []
    for prefetch in (False, True):
        t = Trainer(tiny_spec(), d.train_x, d.train_y, _cfg(epochs=2))
        t.prefetch = prefetch
        runs.append(t.fit())
    a, b = (_weights(r) for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda h: [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in h]  # noqa: E731
    assert strip(runs[0].history) == strip(runs[1].history)


def test_best_epoch_weights_are_restored(small_digits):
    """Without an LR schedule, epochs 1..k of a longer run are the same as a k-epoch run, so the
    long run's restored weights equal the short run's final (= best) weights."""
    d = small_digits
    cfg = _cfg(epochs=5, lr=2e-2, lr_schedule=None)
    long = Trainer(tiny_spec(), d.train_x, d.train_y, cfg).fit()
    vals = [h["val_accuracy"] for h in long.history]
    k = len(vals) - vals[::-1].index(max(vals))  # ties go to the later epoch
    assert long.best_epoch == k and long.val_accuracy == max(vals)
    short = Trainer(tiny_spec(), d.train_x, d.train_y, _cfg(epochs=k, lr=2e-2, lr_schedule=None)).fit()
    a, b = _weights(long), _weights(short)
    assert all(torch.equal(a[k_], b[k_]) for k_ in a)


def test_early_stop_after_patience(small_digits):
    # lr = 0: validation accuracy cannot improve after epoch 1, so patience 2 stops after epoch 3
    d = small_digits
    res = Trainer(tiny_spec(), d.train_x, d.train_y, _cfg(epochs=10, lr=0.0, patience=2)).fit()
    assert [h["epoch"] for h in res.history] == [1, 2, 3]
    assert res.best_epoch == 3  # equal validation accuracy: the later epoch is kept
    assert len({h["val_accuracy"] for h in res.history}) == 1


def test_learns_and_writes_metrics_and_checkpoint(small_digits, tmp_path):
    d = small_digits
    spec = tiny_spec(num_steps=10)
    res = Trainer(spec, d.train_x, d.train_y, _cfg(epochs=4, batch_size=30), tmp_path,
                  test_x=d.test_x, test_y=d.test_y, extra={"dataset": "digits"}).fit()
    assert res.test_accuracy > 0.5  # chance is 0.1
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    assert res.train_samples_per_s > 0 and res.train_seconds > 0
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l) for l in lines] == res.history
    assert set(res.history[0]) >= {"epoch", "train_loss", "train_accuracy", "lr", "epoch_seconds", "val_accuracy"}
    ck = load_checkpoint(res.checkpoint)
    assert ck.spec == spec and ck.extra == {"dataset": "digits"}
    assert ck.metrics["test_accuracy"] == res.test_accuracy and ck.metrics["epochs"] == 4
    # the stored weights reproduce the reported test accuracy
    again = evaluate(ck.build(), d.test_x, d.test_y)["accuracy"]
    assert again == res.test_accuracy


def test_cosine_schedule_reaches_zero(small_digits):
    d = small_digits
    res = Trainer(tiny_spec(), d.train_x, d.train_y, _cfg(epochs=2, lr=1e-2)).fit()
    assert res.history[0]["lr"] == pytest.approx(5e-3) and res.history[1]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_evaluate_does_not_depend_on_batching(trained_digits_checkpoint, digits):
    model = load_checkpoint(trained_digits_checkpoint).build()
    a = evaluate(model, digits.test_x, digits.test_y, batch_size=360)
    b = evaluate(model, digits.test_x, digits.test_y, batch_size=7)
    assert torch.equal(a["counts"], b["counts"]) and a["accuracy"] == b["accuracy"]
    assert a["counts"].shape == (360, 10)
    assert a["accuracy"] == (a["predictions"] == digits.test_y).float().mean().item()
    c = evaluate(model, digits.test_x[5:9], digits.test_y[5:9], sample_ids=range(5, 9))
    assert torch.equal(c["counts"], a["counts"][5:9])  # sample-indexed encoding


@pytest.mark.parametrize("kw, field", [
    ({"loss": "hinge"}, "loss"), ({"lr_schedule": "step"}, "lr_schedule"), ({"epochs": 0}, "epochs"),
    ({"batch_size": 0}, "batch_size"), ({"val_fraction": 1.0}, "val_fraction"),
])
def test_config_validation(kw, field):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**kw)


def test_trains_any_spec_shape():
    """A flat-input spec with a Synaptic output trains on synthetic data without the presets."""
    spec = ModelSpec(layers=(Linear(6, 8), Leaky(beta=0.8), Linear(8, 2), Leaky(beta=0.8)),
                     input_shape=(6,), num_steps=6)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 6, generator=g)
    y = (x[:, 0] > x[:, 1]).long()
    res = Trainer(spec, x, y, _cfg(epochs=1, batch_size=16, val_fraction=0.25)).fit()
    assert len(res.history) == 1 and 0 <= res.val_accuracy <= 1


@pytest.mark.gpu
def test_trains_on_cuda_and_checkpoint_loads_on_cpu(small_digits, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    d = small_digits
    res = Trainer(tiny_spec(num_steps=10), d.train_x, d.train_y, _cfg(epochs=4, batch_size=30, device="cuda"),
                  tmp_path, test_x=d.test_x, test_y=d.test_y).fit()
    assert next(res.model.parameters()).device.type == "cuda"
    assert res.test_accuracy > 0.5
    cpu_acc = evaluate(load_checkpoint(res.checkpoint).build(), d.test_x, d.test_y)["accuracy"]
    # same weights and the same (CPU-drawn) input spikes; float differences may flip a few output spikes
    assert abs(cpu_acc - res.test_accuracy) <= 0.02
