"""Tests of encoders/: statistics of the rate codes, hand-computed latency and delta codes, agreement
with snntorch.spikegen where the definitions coincide, decoders, the registry, and every ValueError."""

import itertools
import math
from statistics import NormalDist

import numpy as np
import pytest
import torch

import encoders as E

import snntorch.spikegen as snn_spikegen  # a declared dependency: a missing one must fail, not skip

Z_999 = NormalDist().inv_cdf(1 - 0.001 / 2)  # two-sided 99.9 %
FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def seeded(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- rate: Bernoulli


@pytest.mark.parametrize("gain,offset", [(1.0, 0.0), (0.5, 0.25), (2.0, -0.1)])
def test_bernoulli_mean_within_binomial_bound(gain, offset):
    x = torch.tensor([0.05, 0.2, 0.45]).repeat(64, 1)  # [B=64, N=3]
    T = 500
    spikes = E.bernoulli(x, T, gain, offset, generator=seeded(1))
    assert spikes.shape == (T, 64, 3)
    for j, xj in enumerate([0.05, 0.2, 0.45]):
        p = gain * xj + offset
        n = T * 64
        half_width = Z_999 * math.sqrt(p * (1 - p) / n)
        # the test has power: a p off by 0.02 (e.g. a gain wrong by 10 %) falls outside the bound
        assert half_width < 0.01
        mean = spikes[:, :, j].mean().item()
        assert abs(mean - p) <= half_width, (p, mean, half_width)


def test_bernoulli_values_and_certain_probabilities():
    x = torch.tensor([[0.0, 1.0, 0.5]])
    spikes = E.bernoulli(x, 50, generator=0)
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}
    assert torch.all(spikes[:, 0, 0] == 0) and torch.all(spikes[:, 0, 1] == 1)
    # gain and offset move p onto exactly 1 and 0
    assert torch.all(E.bernoulli(torch.full((2, 2), 0.5), 20, gain=2.0, generator=0) == 1)
    assert torch.all(E.bernoulli(torch.full((2, 2), 0.5), 20, gain=-2.0, offset=1.0, generator=0) == 0)
    # 0.7 * 1 + 0.3 rounds above 1 in some dtypes; it is a valid p and must not be refused
    assert torch.all(E.bernoulli(torch.ones(1, 4), 5, gain=0.7, offset=0.3, generator=0) == 1)


def test_bernoulli_seeded_reproducibility():
    x = torch.rand(8, 16, generator=seeded(0))
    a = E.bernoulli(x, 30, generator=123)
    b = E.bernoulli(x, 30, generator=123)
    c = E.bernoulli(x, 30, generator=124)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # an int seed is a fresh Generator seeded with it
    assert torch.equal(a, E.bernoulli(x, 30, generator=seeded(123)))
    # one Generator advances between calls
    g = seeded(5)
    assert not torch.equal(E.bernoulli(x, 30, generator=g), E.bernoulli(x, 30, generator=g))


def test_bernoulli_explicit_generator_leaves_global_rng_alone():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    E.bernoulli(torch.rand(4, 4, generator=seeded(0)), 10, generator=seeded(1))
    assert torch.equal(torch.get_rng_state(), state)


def test_bernoulli_without_generator_uses_global_rng():
    x = torch.full((4, 8), 0.5)
    torch.manual_seed(9)
    a = E.bernoulli(x, 20)
    torch.manual_seed(9)
    b = E.bernoulli(x, 20)
    assert torch.equal(a, b)
    assert torch.equal(a, E.bernoulli(x, 20, generator=9))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gain,offset", [(1, 0), (0.5, 0.2), (1.5, -0.3)])
def test_bernoulli_matches_snntorch_rate_with_same_random_source(dtype, gain, offset):
    # snnTorch draws torch.bernoulli(gain * x + offset) from the global RNG; seeded alike, the
    # same p gives the same spikes. Inputs keep p in [0, 1], where snnTorch's clamp does nothing.
    x = torch.rand(6, 10, generator=seeded(2), dtype=dtype)
    if gain > 1:
        x = x * 0.5 + 0.2
    torch.manual_seed(77)
    ref = snn_spikegen.rate(x, num_steps=25, gain=gain, offset=offset)
    mine = E.bernoulli(x, 25, gain, offset, generator=seeded(77))
    assert mine.dtype == dtype
    assert torch.equal(ref, mine)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(3, 5), (7, 1, 8, 8), (1, 784)])
def test_bernoulli_fast_path_draws_exactly_torch_bernoulli(dtype, shape):
    """The CPU path (uniforms from torch.rand compared with p) must give the bits torch.bernoulli
    gives on the time-repeated p, for every dtype, p = 0 and p = 1 included."""
    x = torch.rand(shape, generator=seeded(5)).to(dtype)
    x.view(-1)[:2] = torch.tensor([0.0, 1.0], dtype=dtype)
    p = x.to(torch.float64 if dtype == torch.float64 else torch.float32)
    ref = torch.bernoulli(p.unsqueeze(0).expand(11, *shape).contiguous(), generator=seeded(9)).to(dtype)
    mine = E.bernoulli(x, 11, generator=seeded(9))
    assert mine.dtype == dtype and torch.equal(mine, ref)


# ---------------------------------------------------------------- rate: Poisson counts


@pytest.mark.parametrize("x_value,max_rate_hz,dt_s", [(0.5, 1000.0, 1e-3), (1.0, 200.0, 1e-2), (0.25, 80.0, 5e-3)])
def test_poisson_count_mean_and_variance(x_value, max_rate_hz, dt_s):
    lam = x_value * max_rate_hz * dt_s  # 0.5, 2.0, 0.1 expected spikes per step
    T, B = 400, 500
    counts = E.poisson_count(torch.full((B, 1), x_value), T, max_rate_hz=max_rate_hz, dt_s=dt_s,
                             generator=seeded(3))
    assert counts.shape == (T, B, 1) and counts.dtype == torch.float32
    assert torch.equal(counts, counts.round()) and counts.min() >= 0
    n = counts.numel()
    mean = counts.mean().item()
    var = counts.var().item()
    assert abs(mean - lam) <= Z_999 * math.sqrt(lam / n)
    # Var of the sample variance of a Poisson(lam) sample is about (lam + 2 lam^2) / n
    assert abs(var - lam) <= Z_999 * math.sqrt((lam + 2 * lam**2) / n)
    if lam >= 2:
        assert counts.max() >= 3  # more than one spike per step: not a Bernoulli code


def test_poisson_count_units():
    # 50 Hz for 10 ms steps: 0.5 expected spikes per step; over T steps 50 Hz * T * dt_s spikes
    T, B = 200, 200
    counts = E.poisson_count(torch.ones(B, 1), T, max_rate_hz=50.0, dt_s=0.01, generator=4)
    total_per_element = counts.sum(0).mean().item()
    expected = 50.0 * T * 0.01
    assert abs(total_per_element - expected) <= Z_999 * math.sqrt(expected / B)
    # x = 0 or max_rate_hz = 0 never fires
    assert torch.all(E.poisson_count(torch.zeros(3, 3), 10, max_rate_hz=100.0, dt_s=1e-3, generator=0) == 0)
    assert torch.all(E.poisson_count(torch.ones(3, 3), 10, max_rate_hz=0.0, dt_s=1e-3, generator=0) == 0)


def test_poisson_count_reproducible():
    x = torch.rand(5, 7, generator=seeded(0))
    kw = dict(max_rate_hz=300.0, dt_s=1e-3)
    assert torch.equal(E.poisson_count(x, 40, generator=8, **kw), E.poisson_count(x, 40, generator=8, **kw))
    assert not torch.equal(E.poisson_count(x, 40, generator=8, **kw), E.poisson_count(x, 40, generator=9, **kw))


# ---------------------------------------------------------------- latency


def fst(spikes):
    return E.first_spike_time(spikes).tolist()


def test_latency_linear_hand_computed():
    x = torch.tensor([[1.0, 0.5, 0.25, 0.0]])
    # normalize: tau = T - 1 = 4, s = 4 (1 - max(x, 0.01)) = [0, 2, 3, 3.96]
    spikes = E.latency(x, 5, normalize=True)
    assert spikes.shape == (5, 1, 4)
    assert fst(spikes) == [[0, 2, 3, 4]]
    assert spikes.sum(0).tolist() == [[1, 1, 1, 1]]
    # clip: x = 0 < threshold does not fire (first_spike_time -> T = 5)
    assert fst(E.latency(x, 5, normalize=True, clip=True)) == [[0, 2, 3, 5]]
    # explicit tau = 10, T = 6: s = [0, 5, 7.5, 9.9] -> 0, 5 (last step), then after the window
    assert fst(E.latency(x, 6, tau=10.0)) == [[0, 5, 6, 6]]


def test_latency_linear_threshold_saturates():
    # threshold 0.4: x in {0.1, 0.3} both become 0.4 -> s = 8 * 0.6 = 4.8 -> step 5
    x = torch.tensor([[0.1, 0.3, 0.4, 0.9]])
    assert fst(E.latency(x, 9, normalize=True, threshold=0.4)) == [[5, 5, 5, 1]]
    assert fst(E.latency(x, 9, normalize=True, threshold=0.4, clip=True)) == [[9, 9, 5, 1]]


def test_latency_rounds_half_to_even():
    # exact binary fractions: s = 2 (1 - 0.75) = 0.5 -> 0; 2 (1 - 0.25) = 1.5 -> 2; 5 (1 - 0.5) = 2.5 -> 2
    assert fst(E.latency(torch.tensor([[0.75, 0.25]]), 4, tau=2.0)) == [[0, 2]]
    assert fst(E.latency(torch.tensor([[0.5]]), 4, tau=5.0)) == [[2]]
    s = E.latency_times(torch.tensor([[0.75, 0.25, 0.5]]), 4, tau=2.0)
    assert s.tolist() == [[0.5, 1.5, 1.0]]


def test_latency_log_hand_computed():
    x = torch.tensor([[1.0, 0.75, 0.6, 0.25]])
    # s = 3 ln(x / (x - 0.5)) = 3 ln 2, 3 ln 3, 3 ln 6 = 2.079, 3.296, 5.375 -> steps 2, 3, 5;
    # x = 0.25 is saturated at 0.5 + 1e-7: s ~ 3 ln(5e6) ~ 46, after the 8-step window
    spikes = E.latency(x, 8, tau=3.0, threshold=0.5, method="log")
    assert fst(spikes) == [[2, 3, 5, 8]]
    s = E.latency_times(x, 8, tau=3.0, threshold=0.5, method="log")
    expected = [3 * math.log(2), 3 * math.log(3), 3 * math.log(6)]
    assert s[0, :3].tolist() == pytest.approx(expected, rel=1e-6)
    assert s[0, 3].item() > 40


def test_latency_log_normalize_is_tensor_wide():
    x = torch.tensor([[1.0, 0.75, 0.6]])
    # s = ln 2, ln 3, ln 6 scaled by (T - 1) / ln 6 = 10 / ln 6 -> 3.87, 6.13, 10
    assert fst(E.latency(x, 11, threshold=0.5, method="log", normalize=True)) == [[4, 6, 10]]
    # another batch entry with a later time (x = 0.55: ln 11) rescales the first one: 10 ln 2 / ln 11
    x2 = torch.tensor([[1.0, 0.75, 0.6], [0.55, 0.55, 0.55]])
    out = fst(E.latency(x2, 11, threshold=0.5, method="log", normalize=True))
    assert out == [[round(10 * math.log(2) / math.log(11)), round(10 * math.log(3) / math.log(11)),
                    round(10 * math.log(6) / math.log(11))], [10, 10, 10]]
    assert out[0] == [3, 5, 7]


@pytest.mark.parametrize("method", ["linear", "log"])
def test_latency_brighter_fires_earlier_and_at_most_once(method):
    x = torch.rand(3, 200, generator=seeded(11))
    spikes = E.latency(x, 30, method=method, normalize=True, threshold=0.05, clip=True)
    assert spikes.sum(0).max() <= 1
    order = torch.argsort(x, dim=1, descending=True)
    times = E.first_spike_time(spikes).gather(1, order)
    assert torch.all(times[:, 1:] >= times[:, :-1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", ["linear", "log"])
@pytest.mark.parametrize("normalize,clip", list(itertools.product([False, True], [False, True])))
def test_latency_matches_snntorch(dtype, method, normalize, clip):
    g = seeded(21)
    for trial in range(6):
        x = torch.rand(4, 40, generator=g, dtype=dtype)
        x[0, :6] = torch.tensor([0.0, 1.0, 0.01, 0.5, 0.25, 0.2], dtype=dtype)  # edges and ties
        T = int(torch.randint(1, 40, (1,), generator=g))
        for threshold in (0.01, 0.2, 0.5):
            for tau in ([None] if normalize else [1.0, 3.0, 7.5, 25.0]):
                # bypass=True: snnTorch drops spikes after the window instead of raising
                ref = snn_spikegen.latency(
                    x, num_steps=T, threshold=threshold, tau=1 if tau is None else tau, clip=clip,
                    normalize=normalize, linear=(method == "linear"), bypass=True)
                mine = E.latency(x, T, tau=tau, threshold=threshold, method=method,
                                 normalize=normalize, clip=clip)
                assert mine.dtype == dtype
                assert torch.equal(ref.to(dtype), mine), (T, threshold, tau)


# ---------------------------------------------------------------- delta


def col(values):
    return torch.tensor(values).view(-1, 1)  # [T, B=1]


def test_delta_hand_computed():
    a = col([1.0, 2.0, 2.9, 3.0, 3.9])
    assert E.delta(a, 1.0).flatten().tolist() == [1, 1, 0, 0, 0]
    assert E.delta(a, 1.0, padding=True).flatten().tolist() == [0, 1, 0, 0, 0]
    b = col([1.0, 2.0, 0.0, 2.0, 2.9])
    assert E.delta(b, 1.0, off_spike=True).flatten().tolist() == [1, 1, -1, 1, 0]
    assert E.delta(b, 1.0, off_spike=True, padding=True).flatten().tolist() == [0, 1, -1, 1, 0]
    # off-spikes are only emitted when asked for
    assert E.delta(b, 1.0).flatten().tolist() == [1, 1, 0, 1, 0]
    # a change of exactly threshold fires, in both directions
    c = col([0.0, 0.5, 1.0, 0.5])
    assert E.delta(c, 0.5, off_spike=True).flatten().tolist() == [0, 1, 1, -1]


@pytest.mark.parametrize("off_spike,padding", list(itertools.product([False, True], [False, True])))
def test_delta_matches_snntorch(off_spike, padding):
    g = seeded(31)
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(12, 3, 5, generator=g, dtype=dtype).cumsum(0)
        for threshold in (0.1, 0.5, 1.0):
            ref = snn_spikegen.delta(x, threshold=threshold, padding=padding, off_spike=off_spike)
            mine = E.delta(x, threshold, off_spike=off_spike, padding=padding)
            assert mine.dtype == dtype and mine.shape == x.shape
            assert torch.equal(ref, mine)


# ---------------------------------------------------------------- decoders


def test_decoders_hand_computed():
    spikes = torch.tensor([  # [T=4, B=2, N=2]
        [[0.0, 1.0], [0.0, 0.0]],
        [[1.0, 0.0], [0.0, 0.0]],
        [[1.0, 1.0], [0.0, 2.0]],
        [[0.0, 1.0], [0.0, 0.0]],
    ])
    assert E.spike_count(spikes).tolist() == [[2, 3], [0, 2]]
    assert E.spike_rate(spikes).tolist() == [[0.5, 0.75], [0.0, 0.5]]
    first = E.first_spike_time(spikes)
    assert first.dtype == torch.int64
    assert first.tolist() == [[1, 0], [4, 2]]
    assert E.first_spike_time(spikes, never=-1).tolist() == [[1, 0], [-1, 2]]


def test_decoders_keep_dtype_and_roundtrip_latency():
    x = torch.tensor([[1.0, 0.5, 0.25]], dtype=torch.float64)
    spikes = E.latency(x, 5, normalize=True)
    assert E.spike_count(spikes).dtype == torch.float64
    assert E.spike_rate(spikes).tolist() == [[0.2, 0.2, 0.2]]
    assert E.first_spike_time(spikes).tolist() == [[0, 2, 3]]


# ---------------------------------------------------------------- dtypes, shapes, numpy, registry


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_outputs_keep_dtype_and_shape(dtype):
    x = torch.rand(2, 1, 3, 3, generator=seeded(0)).to(dtype)  # [B, C, H, W]
    outs = [
        E.bernoulli(x, 7, generator=0),
        E.poisson_count(x, 7, max_rate_hz=100.0, dt_s=1e-3, generator=0),
        E.latency(x, 7, normalize=True),
        E.latency(x, 7, method="log", normalize=True),
    ]
    for out in outs:
        assert out.dtype == dtype and out.shape == (7, 2, 1, 3, 3) and out.device == x.device
    series = torch.randn(7, 2, 3).to(dtype)
    assert E.delta(series, 0.5, off_spike=True).dtype == dtype
    assert E.spike_count(outs[0]).dtype == dtype and E.spike_rate(outs[0]).dtype == dtype


def test_numpy_input_is_converted():
    x_np = np.random.default_rng(0).random((3, 4)).astype(np.float32)
    out = E.bernoulli(x_np, 10, generator=5)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert torch.equal(out, E.bernoulli(torch.from_numpy(x_np), 10, generator=5))
    assert E.latency(x_np.astype(np.float64), 6, normalize=True).dtype == torch.float64
    assert E.spike_count(np.ones((3, 2), dtype=np.float32)).tolist() == [3, 3]


def test_registry_and_encode():
    assert set(E.ENCODERS) == {"rate", "poisson", "latency", "delta", "direct"}
    assert all(fn.__name__ in E.__all__ for fn in E.ENCODERS.values())
    x = torch.rand(3, 5, generator=seeded(0))
    # the spec's default encoder {"type": "rate", "gain": 1.0}
    spec = {"type": "rate", "gain": 1.0}
    params = {k: v for k, v in spec.items() if k != "type"}
    assert torch.equal(E.encode(spec["type"], x, 9, 4, **params), E.bernoulli(x, 9, 1.0, generator=4))
    assert torch.equal(E.encode("poisson", x, 9, 4, max_rate_hz=500.0, dt_s=1e-3),
                       E.poisson_count(x, 9, max_rate_hz=500.0, dt_s=1e-3, generator=4))
    # deterministic encoders ignore the generator
    assert torch.equal(E.encode("latency", x, 9, seeded(1), method="log", normalize=True),
                       E.latency(x, 9, method="log", normalize=True))
    series = torch.randn(9, 3, 5, generator=seeded(2))
    assert torch.equal(E.encode("delta", series, 9, None, threshold=0.3, off_spike=True),
                       E.delta(series, 0.3, off_spike=True))


# ---------------------------------------------------------------- every ValueError path

X = torch.full((2, 3), 0.5)
SERIES = torch.zeros(4, 2, 3)
SPIKES = torch.zeros(4, 2, 3)

ERROR_CASES = [
    # x: type, dtype, ndim, finiteness, range
    ("x list", lambda: E.bernoulli([[0.5]], 3), "x must be a torch.Tensor"),
    ("x int tensor", lambda: E.bernoulli(torch.ones(2, 3, dtype=torch.int64), 3), "x must have a floating dtype"),
    ("x uint8 image", lambda: E.latency(torch.zeros(2, 3, dtype=torch.uint8), 3), "x must have a floating dtype"),
    ("x bool", lambda: E.poisson_count(torch.ones(2, 3, dtype=torch.bool), 3, max_rate_hz=1.0, dt_s=1.0), "x must have a floating dtype"),
    ("x complex", lambda: E.bernoulli(torch.ones(2, 3, dtype=torch.complex64), 3), "x must have a floating dtype"),
    ("x numpy int", lambda: E.bernoulli(np.ones((2, 3), dtype=np.int32), 3), "x must have a floating dtype"),
    ("x 0-d", lambda: E.bernoulli(torch.tensor(0.5), 3), r"x must have at least 1 dims \[B, \.\.\.\]"),
    ("x nan", lambda: E.bernoulli(torch.tensor([[0.5, float("nan")]]), 3), "x contains NaN or inf"),
    ("x inf", lambda: E.latency(torch.tensor([[float("inf")]]), 3), "x contains NaN or inf"),
    ("x above 1", lambda: E.bernoulli(torch.tensor([[1.5]]), 3), r"x must lie in \[0.0, 1.0\]"),
    ("x below 0", lambda: E.latency(torch.tensor([[-0.1]]), 3), r"x must lie in \[0.0, 1.0\]"),
    ("x above 1 poisson", lambda: E.poisson_count(torch.tensor([[2.0]]), 3, max_rate_hz=1.0, dt_s=1.0), r"x must lie in"),
    # num_steps
    ("num_steps 0", lambda: E.bernoulli(X, 0), "num_steps must be >= 1"),
    ("num_steps negative", lambda: E.latency(X, -2), "num_steps must be >= 1"),
    ("num_steps float", lambda: E.bernoulli(X, 2.5), "num_steps must be an integer"),
    ("num_steps bool", lambda: E.poisson_count(X, True, max_rate_hz=1.0, dt_s=1.0), "num_steps must be an integer"),
    # bernoulli
    ("p above 1", lambda: E.bernoulli(X, 3, gain=3.0), r"p = gain \* x \+ offset must lie in \[0.0, 1.0\]"),
    ("p below 0", lambda: E.bernoulli(X, 3, offset=-0.6), r"p = gain \* x \+ offset must lie"),
    ("gain nan", lambda: E.bernoulli(X, 3, gain=float("nan")), "gain must be a finite number"),
    ("offset str", lambda: E.bernoulli(X, 3, offset="0"), "offset must be a finite number"),
    ("generator type", lambda: E.bernoulli(X, 3, generator="seed"), "generator must be a torch.Generator"),
    ("generator bool", lambda: E.bernoulli(X, 3, generator=True), "generator must be a torch.Generator"),
    ("generator negative seed", lambda: E.bernoulli(X, 3, generator=-1), r"generator seed must lie in \[0, 2\*\*64\)"),
    # poisson
    ("max_rate_hz negative", lambda: E.poisson_count(X, 3, max_rate_hz=-1.0, dt_s=1e-3), "max_rate_hz must lie in"),
    ("max_rate_hz inf", lambda: E.poisson_count(X, 3, max_rate_hz=float("inf"), dt_s=1e-3), "max_rate_hz must be a finite number"),
    ("dt_s zero", lambda: E.poisson_count(X, 3, max_rate_hz=1.0, dt_s=0.0), r"dt_s must lie in \(0.0, inf\]"),
    ("dt_s nan", lambda: E.poisson_count(X, 3, max_rate_hz=1.0, dt_s=float("nan")), "dt_s must be a finite number"),
    ("poisson overflow", lambda: E.poisson_count(X, 3, max_rate_hz=1e300, dt_s=1e10), "overflows"),
    # latency
    ("method", lambda: E.latency(X, 3, method="exp"), "method must be one of"),
    ("tau zero", lambda: E.latency(X, 3, tau=0.0), r"tau must lie in \(0.0, inf\]"),
    ("tau negative", lambda: E.latency(X, 3, tau=-1.0, method="log"), "tau must lie in"),
    ("tau with normalize", lambda: E.latency(X, 3, tau=2.0, normalize=True), "tau must be None when normalize=True"),
    ("tau overflow", lambda: E.latency(X, 3, tau=1e38, threshold=0.49, method="log"), "tau=1e\\+38 makes spike times overflow"),
    ("threshold 1 linear", lambda: E.latency(X, 3, threshold=1.0), r"threshold must lie in \[0.0, 1.0\)"),
    ("threshold negative linear", lambda: E.latency(X, 3, threshold=-0.1), "threshold must lie in"),
    ("threshold 0 log", lambda: E.latency(X, 3, threshold=0.0, method="log"), r"threshold must lie in \(0.0, 1.0\)"),
    ("epsilon zero", lambda: E.latency(X, 3, method="log", epsilon=0.0), "epsilon must lie in"),
    ("epsilon vanishes", lambda: E.latency(X, 3, method="log", threshold=0.9, epsilon=1e-12), "epsilon=1e-12 vanishes"),
    ("normalize not bool", lambda: E.latency(X, 3, normalize=1), "normalize must be True or False"),
    ("clip not bool", lambda: E.latency(X, 3, clip="yes"), "clip must be True or False"),
    # delta
    ("delta 1-d", lambda: E.delta(torch.zeros(5), 0.1), r"x must have at least 2 dims \[T, B, \.\.\.\]"),
    ("delta int", lambda: E.delta(torch.zeros(5, 2, dtype=torch.int32), 0.1), "x must have a floating dtype"),
    ("delta nan", lambda: E.delta(torch.tensor([[0.0], [float("nan")]]), 0.1), "x contains NaN or inf"),
    ("delta threshold 0", lambda: E.delta(SERIES, 0.0), r"threshold must lie in \(0.0, inf\]"),
    ("delta threshold negative", lambda: E.delta(SERIES, -1.0), "threshold must lie in"),
    ("delta off_spike", lambda: E.delta(SERIES, 0.1, off_spike=None), "off_spike must be True or False"),
    ("delta padding", lambda: E.delta(SERIES, 0.1, padding=0), "padding must be True or False"),
    # decoders
    ("count 1-d", lambda: E.spike_count(torch.zeros(4)), r"spikes must have at least 2 dims \[T, B, \.\.\.\]"),
    ("rate 1-d", lambda: E.spike_rate(torch.zeros(4)), "spikes must have at least 2 dims"),
    ("first 1-d", lambda: E.first_spike_time(torch.zeros(4)), "spikes must have at least 2 dims"),
    ("count T=0", lambda: E.spike_count(torch.zeros(0, 2)), "spikes must have at least one time step"),
    ("rate T=0", lambda: E.spike_rate(torch.zeros(0, 2)), "spikes must have at least one time step"),
    ("count int", lambda: E.spike_count(torch.zeros(4, 2, dtype=torch.int64)), "spikes must have a floating dtype"),
    ("first bool", lambda: E.first_spike_time(torch.zeros(4, 2, dtype=torch.bool)), "spikes must have a floating dtype"),
    ("rate nan", lambda: E.spike_rate(torch.tensor([[float("nan")], [0.0]])), "spikes contains NaN or inf"),
    ("count negative", lambda: E.spike_count(-SPIKES - 1), "spikes must be non-negative"),
    ("first never float", lambda: E.first_spike_time(SPIKES, never=1.5), "never must be an int or None"),
    ("first never bool", lambda: E.first_spike_time(SPIKES, never=False), "never must be an int or None"),
    # encode / registry
    ("encode unknown name", lambda: E.encode("ttfs", X, 3), "encoder name must be one of"),
    ("encode name not str", lambda: E.encode(None, X, 3), "encoder name must be one of"),
    ("encode unknown param", lambda: E.encode("rate", X, 3, gian=1.0), r"encoder 'rate': unknown parameter\(s\) \['gian'\]"),
    ("encode missing param", lambda: E.encode("poisson", X, 3, dt_s=1e-3), r"encoder 'poisson': missing required parameter\(s\) \['max_rate_hz'\]"),
    ("encode delta no threshold", lambda: E.encode("delta", SERIES, 4), r"missing required parameter\(s\) \['threshold'\]"),
    ("encode delta T mismatch", lambda: E.encode("delta", SERIES, 5, threshold=0.1), "x has T=4 steps but num_steps=5"),
    ("encode delta num_steps 0", lambda: E.encode("delta", SERIES, 0, threshold=0.1), "num_steps must be >= 1"),
    ("encode passes through validation", lambda: E.encode("rate", X, 3, gain=5.0), "p = gain"),
]


@pytest.mark.parametrize("label,call,match", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_value_errors(label, call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------- CUDA


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_follows_input():
    x_cpu = torch.rand(4, 6, generator=seeded(0))
    x = x_cpu.cuda()
    outs = [
        E.bernoulli(x, 8, generator=1),
        E.poisson_count(x, 8, max_rate_hz=100.0, dt_s=1e-3, generator=1),
        E.latency(x, 8, normalize=True),
        E.latency(x, 8, method="log", normalize=True, clip=True),
        E.delta(torch.randn(8, 4, 6, device="cuda"), 0.5, off_spike=True),
    ]
    for out in outs:
        assert out.is_cuda and out.dtype == torch.float32 and out.shape == (8, 4, 6)
    assert E.spike_count(outs[0]).is_cuda and E.first_spike_time(outs[2]).is_cuda
    # same seed on the same device: same spikes; a CUDA Generator is accepted
    assert torch.equal(outs[0], E.bernoulli(x, 8, generator=1))
    g = torch.Generator(device="cuda").manual_seed(1)
    assert torch.equal(outs[0], E.bernoulli(x, 8, generator=g))
    # deterministic codes agree with the CPU result
    assert torch.equal(outs[2].cpu(), E.latency(x_cpu, 8, normalize=True))
    assert torch.equal(outs[3].cpu(), E.latency(x_cpu, 8, method="log", normalize=True, clip=True))
    with pytest.raises(ValueError, match="generator is on cpu but the input is on cuda"):
        E.bernoulli(x, 8, generator=seeded(1))
