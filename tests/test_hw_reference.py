"""The SimulatedDevice against an independent pure-Python integer reference written from
docs/fixed_point.md, step by step and bit for bit, for every profile, neuron type and reset mode,
including saturation and wrap-around; plus hand-computed trajectories and decay values. The xylosim
profiles (xylo-imu, xylo-audio2) have their own reference, event by event in xylosim's order
(`ref_xylosim_run`); tests/test_vendor_xylo.py checks both against xylosim itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hw import fixed_point as fxp
from hw.device import open_device
from hw.program import LayerProgram, Program

# ------------------------------------------------------------------ the reference (pure Python ints)


def sat(x, bits):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return lo if x < lo else hi if x > hi else x


def mcu_dec(x, d):
    m = (abs(x) * (4096 - d) + 2048) >> 12
    return -m if x < 0 else m


def loihi_dec(x, d):
    m = (abs(x) * (4096 - d)) >> 12
    return -m if x < 0 else m


def xylo_dec(x, dash):
    q = x >> dash  # Python's >> floors negative numbers, as the doc's floor(x / 2^dash)
    if q == 0 and x != 0:
        q = 1 if x > 0 else -1
    return q


def ref_layer_step(profile, L, s_in, st):
    """One step of one layer for one sample. L: dict of Python lists; st: dict u, i, r lists."""
    n, m = len(L["bias"]), len(s_in)
    A = [sum(L["W"][i][j] * s_in[j] for j in range(m)) << L["w_shift"] for i in range(n)]
    u, cur, r = list(st["u"]), list(st["i"]), list(st["r"])
    out = [0] * n
    for i in range(n):
        th, b = L["threshold"][i], L["bias"][i]
        if profile == "mcu":
            X = sat(A[i] + b, 32)
            R = r[i]
            t = L["type"]
            if t == "leaky":
                if L["reset"] == "subtract":
                    u[i] = sat(mcu_dec(u[i], L["dm"][i]) + X - R * th, 32)
                else:
                    u[i] = X if R else sat(mcu_dec(u[i], L["dm"][i]) + X, 32)
            else:
                if t == "synaptic":
                    cur[i] = sat(mcu_dec(cur[i], L["ds"][i]) + X, 32)
                    V = mcu_dec(u[i], L["dm"][i]) + cur[i]
                elif t == "rleaky_dense":
                    Q = sum(L["Wr"][i][j] * r[j] for j in range(n)) << L["rec_shift"]
                    V = mcu_dec(u[i], L["dm"][i]) + X + Q
                else:
                    V = mcu_dec(u[i], L["dm"][i]) + X + L["g"][i] * R
                if L["reset"] == "subtract":
                    u[i] = sat(V - R * th, 32)
                else:
                    u[i] = 0 if R else sat(V, 32)
            out[i] = 1 if u[i] > th else 0
        elif profile == "loihi":
            du = L["ds"][i] if L["ds"] is not None else 4095
            c = loihi_dec(cur[i], du + 1) + (A[i] << 6)
            if c > 2 ** 23:
                c -= 2 ** 24
            elif c <= -2 ** 23:
                c += 2 ** 24
            cur[i] = c
            v = loihi_dec(u[i], L["dm"][i]) + c + b
            v = max(-2 ** 23 + 1, min(2 ** 23 - 1, v))
            out[i] = 1 if v > (th << 6) else 0
            u[i] = 0 if out[i] else v
        else:  # xylo-like (and its deprecated name xylo)
            ds = L["ds"][i] if L["ds"] is not None else 0
            cur[i] = sat(cur[i] - xylo_dec(cur[i], ds) + A[i], 16)
            v = sat(u[i] - xylo_dec(u[i], L["dm"][i]) + cur[i] + b, 16)
            k = 0
            while v >= th and k < L["max_spikes"]:
                v -= th
                k += 1
            u[i], out[i] = v, k
    return out, {"u": u, "i": cur, "r": out}


def as_ref(layer: LayerProgram) -> dict:
    return {"type": layer.neuron_type, "reset": layer.reset, "w_shift": int(layer.w_shift),
            "W": layer.weights.astype(int).tolist(), "bias": layer.bias.astype(int).tolist(),
            "threshold": layer.threshold.astype(int).tolist(), "dm": layer.decay_mem.astype(int).tolist(),
            "ds": None if layer.decay_syn is None else layer.decay_syn.astype(int).tolist(),
            "Wr": None if layer.rec_weights is None else layer.rec_weights.astype(int).tolist(),
            "rec_shift": int(layer.rec_shift),
            "g": None if layer.rec_gain is None else layer.rec_gain.astype(int).tolist(),
            "max_spikes": int(layer.max_spikes)}


def ref_run(program: Program, spikes):
    """spikes: [T][B][N_in] ints -> (outputs [T][B][N_out], membranes {layer: [T][B][N]}, counters)."""
    T, B = len(spikes), len(spikes[0])
    layers = [as_ref(l) for l in program.layers]
    outs = [[None] * B for _ in range(T)]
    mems = {k: [[None] * B for _ in range(T)] for k in range(len(layers))}
    counters = {k: {"spikes": 0, "synops": 0} for k in range(len(layers))}
    for b in range(B):
        states = [{"u": [0] * len(L["bias"]), "i": [0] * len(L["bias"]), "r": [0] * len(L["bias"])}
                  for L in layers]
        for t in range(T):
            s = list(spikes[t][b])
            for k, L in enumerate(layers):
                n = len(L["bias"])
                counters[k]["synops"] += sum(s) * n
                if L["type"] == "rleaky_dense":
                    counters[k]["synops"] += sum(states[k]["r"]) * n
                elif L["type"] == "rleaky_elementwise":
                    counters[k]["synops"] += sum(states[k]["r"])
                s, states[k] = ref_layer_step(program.profile, L, s, states[k])
                counters[k]["spikes"] += sum(s)
                mems[k][t][b] = list(states[k]["u"])
            outs[t][b] = s
    return outs, mems, counters


# ----------------------------------------------------------------------- random programs to compare

def random_layer(rng, profile, ntype, reset, m, n, big=False):
    w = rng.integers(-128, 128, size=(n, m))
    kw = {}
    if profile == "mcu":
        shift = int(rng.integers(14, 21)) if big else int(rng.integers(0, 5))
        th = rng.integers(1, 2 ** 30 if big else 400, size=n)
        bias = rng.integers(-2 ** 31 if big else -50, 2 ** 31 - 1 if big else 50, size=n)
        dm = rng.integers(0, 4097, size=n)
        if ntype == "synaptic":
            kw["decay_syn"] = rng.integers(0, 4097, size=n)
        if ntype == "rleaky_dense":
            kw["rec_weights"] = rng.integers(-128, 128, size=(n, n))
            kw["rec_shift"] = int(rng.integers(0, 3))
        if ntype == "rleaky_elementwise":
            kw["rec_gain"] = rng.integers(-300, 300, size=n)
    elif profile == "loihi":
        shift = int(rng.integers(4, 8)) if big else int(rng.integers(0, 3))
        th = rng.integers(1, 2 ** 17 if big else 300, size=n)
        e = rng.integers(0, 8, size=n)
        bias = rng.integers(-4095, 4096, size=n) << e
        dm = rng.integers(0, 4096, size=n)
    else:
        shift = int(rng.integers(3, 8)) if big else int(rng.integers(0, 3))
        th = rng.integers(1, 32768 if big else 400, size=n)
        bias = rng.integers(-32768 if big else -30, 32768 if big else 30, size=n)
        dm = rng.integers(0, 16, size=n)
        kw["max_spikes"] = int(rng.integers(1, 16))
        if ntype == "synaptic":
            kw["decay_syn"] = rng.integers(0, 16, size=n)
    return LayerProgram(ntype, reset, shift, w, bias, th, dm, **kw)


CASES = [("mcu", t, r) for t in ("leaky", "synaptic", "rleaky_dense", "rleaky_elementwise")
         for r in ("subtract", "zero")] + [("loihi", "leaky", "zero"), ("xylo-like", "leaky", "subtract"),
                                           ("xylo-like", "synaptic", "subtract"), ("xylo", "synaptic", "subtract")]


@pytest.mark.parametrize("big", [False, True], ids=["normal", "saturating"])
@pytest.mark.parametrize("profile,ntype,reset", CASES)
def test_sim_matches_reference_bit_for_bit(profile, ntype, reset, big):
    rng = np.random.default_rng(hash((profile, ntype, reset, big)) % 2 ** 32)
    sizes = [7, 9, 5]
    layers = tuple(random_layer(rng, profile, ntype, reset, sizes[k], sizes[k + 1], big) for k in range(2))
    prog = Program(profile, layers, num_steps=12)
    T, B = 12, 3
    spikes = torch.from_numpy(rng.random((T, B, sizes[0])) < 0.5).to(torch.uint8)
    with open_device("sim", profile=profile) as dev:
        dev.load(prog.to_bytes())
        res = dev.run(spikes, probe=True)
    outs, mems, counters = ref_run(prog, spikes.tolist())
    assert res.output_spikes.tolist() == outs
    for k in mems:
        assert res.membranes[k].tolist() == mems[k], f"layer {k} membranes differ"
    assert res.counters == counters
    if not big:  # the comparison is only meaningful when something happens
        assert sum(c["spikes"] for c in counters.values()) > 0


def _run_single(profile, layer, T, value=1):
    prog = Program(profile, (layer,), num_steps=T)
    spikes = torch.full((T, 1, layer.fan_in), value, dtype=torch.uint8)
    with open_device("sim", profile=profile) as dev:
        dev.load(prog)
        res = dev.run(spikes, probe=True)
    outs, mems, _ = ref_run(prog, spikes.tolist())
    assert res.output_spikes.tolist() == outs and res.membranes[0].tolist() == mems[0]
    return res.output_spikes.flatten().tolist(), res.membranes[0].flatten().tolist()


def test_mcu_saturates_at_int32():
    # A = 9 * 127 << 20 = 1.2e9, + bias 2^31 - 1 saturates X; U stays at the limit, U = theta: no spike
    top = 2 ** 31 - 1
    layer = LayerProgram("leaky", "subtract", 20, np.full((1, 9), 127), np.array([top]), np.array([top]),
                         np.array([0]))
    assert _run_single("mcu", layer, 3) == ([0, 0, 0], [top] * 3)
    layer = LayerProgram("leaky", "subtract", 20, np.full((1, 9), -128), np.array([-2 ** 31]),
                         np.array([5]), np.array([0]))
    assert _run_single("mcu", layer, 2) == ([0, 0], [-2 ** 31] * 2)


def test_loihi_current_wraps_and_voltage_clips_as_lava():
    # a = 9 * 127 << 7 = 146304; a << 6 = 9363456 > 2^23 wraps to 9363456 - 2^24 = -7413760;
    # v = -7413760, then -14827520 clipped to -(2^23 - 1)
    layer = LayerProgram("leaky", "zero", 7, np.full((1, 9), 127), np.array([0]), np.array([100]),
                         np.array([0]))
    assert _run_single("loihi", layer, 2) == ([0, 0], [-7413760, -(2 ** 23 - 1)])


def test_xylo_like_saturates_at_int16():
    # A = 9 * -128 << 7 = -147456 -> I = -32768 -> V = -32768; next: V - (V >> 1) + I = -49152 -> -32768
    layer = LayerProgram("leaky", "subtract", 7, np.full((1, 9), -128), np.array([0]), np.array([100]),
                         np.array([1]), max_spikes=15)
    assert _run_single("xylo-like", layer, 2) == ([0, 0], [-32768, -32768])
    # positive: I = 32767, V = 32767 -> min(15, 32767 // 1000) = 15 spikes, V = 32767 - 15000
    layer = LayerProgram("leaky", "subtract", 7, np.full((1, 9), 127), np.array([0]), np.array([1000]),
                         np.array([15]), max_spikes=15)
    assert _run_single("xylo-like", layer, 1) == ([15], [17767])
    capped = LayerProgram("leaky", "subtract", 7, np.full((1, 9), 127), np.array([0]), np.array([1000]),
                          np.array([15]), max_spikes=4)  # the chip's per-step cap: 4 spikes, V = 32767 - 4000
    assert _run_single("xylo-like", capped, 1) == ([4], [28767])


# ------------------------------------------------------------------------------ hand-computed values

def test_decay_values_from_the_doc():
    x = torch.tensor([1000, -1000, 5, -5, 1, 0])
    d = torch.tensor([410, 410, 2048, 2048, 3000, 100])
    assert fxp.mcu_decay(x, d).tolist() == [900, -900, 3, -3, 0, 0]
    # Lava truncates toward zero: 1000 * 3686 / 4096 = 899.9 -> 899
    assert fxp.loihi_decay(torch.tensor([1000, -1000]), 410).tolist() == [899, -899]
    # Xylo: decrement x >> dash (floor), at least one unit toward 0
    assert fxp.xylo_decay(torch.tensor([100, -100, 3, -1, 0]), 3).tolist() == [12, -13, 1, -1, 0]


def _one_neuron(profile, ntype, reset, w, th, dm, spikes, **kw):
    layer = LayerProgram(ntype, reset, 0, np.array([[w]]), np.array([0]), np.array([th]), np.array([dm]), **kw)
    with open_device("sim", profile=profile) as dev:
        dev.load(Program(profile, (layer,)))
        res = dev.run(torch.tensor(spikes, dtype=torch.uint8).reshape(-1, 1, 1), probe=True)
    return res.output_spikes.flatten().tolist(), res.membranes[0].flatten().tolist()


def test_mcu_leaky_trajectory_by_hand():
    # theta 100, beta 0.5 (d = 2048), w = 60; worked out in docs/fixed_point.md's rules:
    # 60; 30 + 60 = 90; 45 + 60 = 105 > 100 spike; round(52.5) = 53 - 100 = -47; round(-23.5) = -24
    s, u = _one_neuron("mcu", "leaky", "subtract", 60, 100, 2048, [1, 1, 1, 0, 0])
    assert s == [0, 0, 1, 0, 0] and u == [60, 90, 105, -47, -24]
    s, u = _one_neuron("mcu", "leaky", "zero", 60, 100, 2048, [1, 1, 1, 1, 0])
    assert s == [0, 0, 1, 0, 0] and u == [60, 90, 105, 60, 30]  # after the spike U = X (input kept)


def test_mcu_synaptic_zero_drops_the_step_after_a_spike():
    # I: 80, 40 + 80 = 120, 60, 30; V = U/2 + I: 80, 40 + 120 = 160 > 150 spike;
    # t=3 is the reset step: U = 0 (the current I = 60 is dropped from U but kept in I); t=4: 0 + 30
    s, u = _one_neuron("mcu", "synaptic", "zero", 80, 150, 2048, [1, 1, 0, 0], decay_syn=np.array([2048]))
    assert s == [0, 1, 0, 0] and u == [80, 160, 0, 30]


def test_loihi_trajectory_by_hand():
    # a = 2 -> u = 2 << 6 = 128; dv = 2048: v = 128, 64 + 128 = 192 > vth 3 << 6 = 192? no (strict);
    # then 96 + 128 = 224 > 192 spike -> v = 0; then 0 + 128
    s, u = _one_neuron("loihi", "leaky", "zero", 2, 3, 2048, [1, 1, 1, 1])
    assert s == [0, 0, 1, 0] and u == [128, 192, 0, 128]


def test_xylo_like_multi_spike_trajectory_by_hand():
    # dash_mem 1 (beta 0.5), w = 100, theta 30: V = 100 -> 3 spikes, V = 10; then 10 - 5 + 100 = 105
    # -> 3 spikes, V = 15; then 15 - 7 = 8 (no input)
    s, u = _one_neuron("xylo-like", "leaky", "subtract", 100, 30, 1, [1, 1, 0], max_spikes=15)
    assert s == [3, 3, 0] and u == [10, 15, 8]


def test_exact_dot_float_path_is_exact_at_the_bound():
    """Sums near 2**24 (float32 path) and above it (float64 path) equal integer arithmetic."""
    g = torch.Generator().manual_seed(0)
    for m, count in ((1024, 1), (1024, 15), (4096, 15)):
        w = torch.randint(-128, 128, (m, 3), generator=g)
        w[:, 0] = -128  # the extreme column: |sum| = m * 128 * count
        s = torch.full((2, m), count, dtype=torch.int64)
        s[1] = torch.randint(0, count + 1, (m,), generator=g)
        assert torch.equal(fxp.exact_dot(s, w.to(torch.float32), count), s @ w)


# ------------------------------------------------- xylosim (xylo-imu, xylo-audio2), event by event

def ref_xylosim_run(program: Program, spikes):
    """xylosim 0.1.3's `XyloLayer::evolve` in pure Python ints, from docs/fixed_point.md: every step,
    (1) each input spike is one event adding W << w_shift to the hidden current, saturating to int16
    after each event, sources in index order; (2) the hidden spikes of the previous step reach the
    readout the same way (a count n is n events); (3) every neuron evolves: I -= xdec(I, dash_syn);
    dv = -xdec(V, dash_mem) as int16; dv = sat(dv + I); dv = sat(dv + b); V = sat(V + dv); spikes
    while V >= θ, at most 31 (hidden) or 1 (readout). spikes: [T][B][N_in] ints ->
    (outputs [T][B][N_out], membranes and currents {layer: [T][B][N]}, counters)."""
    hid, out_l = (as_ref(l) for l in program.layers)
    caps = (31, 1)
    T, B = len(spikes), len(spikes[0])
    outs = [[None] * B for _ in range(T)]
    mems = {k: [[None] * B for _ in range(T)] for k in (0, 1)}
    curs = {k: [[None] * B for _ in range(T)] for k in (0, 1)}
    counters = {k: {"spikes": 0, "synops": 0} for k in (0, 1)}
    for b in range(B):
        st = [{"u": [0] * len(L["bias"]), "i": [0] * len(L["bias"])} for L in (hid, out_l)]
        prev = [0] * len(hid["bias"])
        for t in range(T):
            for k, (L, events) in enumerate(((hid, spikes[t][b]), (out_l, prev))):
                counters[k]["synops"] += sum(events) * len(L["bias"])
                for j, count in enumerate(events):
                    for _ in range(count):
                        for i in range(len(L["bias"])):
                            st[k]["i"][i] = sat(st[k]["i"][i] + (L["W"][i][j] << L["w_shift"]), 16)
            fired = []
            for k, L in enumerate((hid, out_l)):
                n_out = []
                for i in range(len(L["bias"])):
                    cur = st[k]["i"][i] - xylo_dec(st[k]["i"][i], L["ds"][i])
                    v = st[k]["u"][i]
                    dv = -xylo_dec(v, L["dm"][i])
                    if dv == 32768:  # int16_t: -(-32768) wraps to -32768
                        dv = -32768
                    dv = sat(sat(dv + cur, 16) + L["bias"][i], 16)
                    v = sat(v + dv, 16)
                    n = 0
                    while v >= L["threshold"][i] and n < caps[k]:
                        v -= L["threshold"][i]
                        n += 1
                    st[k]["i"][i], st[k]["u"][i] = cur, v
                    n_out.append(n)
                counters[k]["spikes"] += sum(n_out)
                mems[k][t][b], curs[k][t][b] = list(st[k]["u"]), list(st[k]["i"])
                fired.append(n_out)
            prev = fired[0]
            outs[t][b] = fired[1]
    return outs, mems, curs, counters


def random_xylosim_program(rng, profile, big=False, sizes=(7, 9, 5)):
    m, h, o = sizes
    layers = []
    for n, fan_in, cap in ((h, m, 31), (o, h, 1)):
        shift = int(rng.integers(5, 8)) if big else int(rng.integers(0, 3))
        th = rng.integers(1, 3000 if big else 400, size=n)
        bias = rng.integers(-32768 if big else -30, 32768 if big else 30, size=n)
        layers.append(LayerProgram("synaptic", "subtract", shift, rng.integers(-128, 128, (n, fan_in)), bias, th,
                                   rng.integers(0, 16, n), decay_syn=rng.integers(0, 16, n), max_spikes=cap))
    return Program(profile, tuple(layers), num_steps=12)


def _xylosim_sim(prog, spikes):
    with open_device("sim", profile=prog.profile) as dev:
        dev.load(prog.to_bytes())
        return dev.run(spikes, probe=True)


@pytest.mark.parametrize("big", [False, True], ids=["normal", "saturating"])
@pytest.mark.parametrize("profile", ["xylo-imu", "xylo-audio2"])
def test_xylosim_sim_matches_event_by_event_reference(profile, big):
    rng = np.random.default_rng(hash((profile, big)) % 2 ** 32)
    prog = random_xylosim_program(rng, profile, big)
    spikes = torch.from_numpy(rng.random((12, 3, 7)) < 0.5).to(torch.uint8)
    res = _xylosim_sim(prog, spikes)
    outs, mems, curs, counters = ref_xylosim_run(prog, spikes.tolist())
    assert res.output_spikes.tolist() == outs
    for k in (0, 1):
        assert res.membranes[k].tolist() == mems[k], f"layer {k} membranes differ"
    assert res.counters == counters
    assert counters[0]["spikes"] > 0 and counters[1]["spikes"] > 0
    if big:  # both saturations happen
        assert any(32767 in row or -32768 in row for step in mems[0] for row in step)


def _xylo_chip(w_in, th0, dm0, ds0, w_out=((1,),), th1=(30000,), bias0=(0,), shift0=0):
    """A xylo-imu program with hidden weights w_in [H, M] and a readout that never fires."""
    h = np.array(w_in)
    hidden = LayerProgram("synaptic", "subtract", shift0, h, np.array(bias0), np.array(th0), np.array(dm0),
                          decay_syn=np.array(ds0), max_spikes=31)
    wo = np.array(w_out) if np.array(w_out).shape[1] == h.shape[0] else np.ones((1, h.shape[0]), int)
    readout = LayerProgram("synaptic", "subtract", 0, wo, np.zeros(wo.shape[0], int), np.array(th1),
                           np.ones(wo.shape[0], int), decay_syn=np.ones(wo.shape[0], int), max_spikes=1)
    return Program("xylo-imu", (hidden, readout))


def _hidden_trace(prog, spikes):
    res = _xylosim_sim(prog, torch.tensor(spikes, dtype=torch.uint8).reshape(len(spikes), 1, -1))
    ref = ref_xylosim_run(prog, torch.tensor(spikes).reshape(len(spikes), 1, -1).tolist())
    assert res.membranes[0].tolist() == ref[1][0]
    return res.layer_spikes[0][:, 0].tolist(), res.membranes[0][:, 0].tolist(), [c[0] for c in ref[2][0]]


def test_xylosim_input_is_decayed_in_the_step_it_arrives():
    # w 100, dash_syn 1, dash_mem 1, θ 60. t0: I = 100 - 50 = 50; V = 0 + 50 = 50.
    # t1: I = 50 + 100 = 150 - 75 = 75; dv = -25 + 75 = 50: V = 100 >= 60, one spike, V = 40.
    # t2 (no input): I = 75 - 37 = 38; dv = -20 + 38 = 18: V = 58
    s, v, i = _hidden_trace(_xylo_chip([[100]], [60], [1], [1]), [[1], [1], [0]])
    assert (s, v, i) == ([[0], [1], [0]], [[50], [40], [58]], [[50], [75], [38]])


def test_xylosim_saturates_after_every_event_in_source_order():
    # shift 7: 127 -> 16256, -128 -> -16384. Sources 0..3 = 127, 127, 127, -128: 16256, 32512, 32767
    # (saturated), 16383; the other order reaches 32384 without saturating. dash_syn 15: I - 1.
    fwd = _xylo_chip([[127, 127, 127, -128]], [30000], [15], [15], shift0=7)
    rev = _xylo_chip([[-128, 127, 127, 127]], [30000], [15], [15], shift0=7)
    assert _hidden_trace(fwd, [[1, 1, 1, 1]])[2] == [[16382]]
    assert _hidden_trace(rev, [[1, 1, 1, 1]])[2] == [[32383]]


def test_xylosim_current_with_dash_syn_zero_receives_nothing():
    s, v, i = _hidden_trace(_xylo_chip([[127]], [5], [3], [0]), [[1], [1], [1]])
    assert (s, v, i) == ([[0]] * 3, [[0]] * 3, [[0]] * 3)


def test_xylosim_dash_mem_zero_wraps_at_minus_32768():
    # shift 7, weights -128, -128, 127, 127. t0 (sources 0, 1): I' = -32768, dash_syn 15: I = -32767;
    # bias -100: V = sat(-32767 - 100) = -32768. t1 (sources 2, 3): I' = -32767 + 32512 = -255,
    # I = -254; dv = -xdec(-32768, 0) = 32768 wraps to -32768 (int16_t), so dv = sat(-32768 - 254 - 100)
    # and V stays -32768. Without the wrap: dv = 32768 - 254 - 100 = 32414 and V = -354.
    prog = _xylo_chip([[-128, -128, 127, 127]], [100], [0], [15], bias0=[-100], shift0=7)
    s, v, i = _hidden_trace(prog, [[1, 1, 0, 0], [0, 0, 1, 1]])
    assert i == [[-32767], [-254]] and v == [[-32768], [-32768]] and s == [[0], [0]]


def test_xylosim_readout_reads_the_hidden_spikes_of_the_step_before():
    # hidden: w 127, dash_syn 1, dash_mem 0, θ 1, input at t0 only. t0: I = 127 - 63 = 64, V = 64:
    # 31 spikes (the cap), V = 33. t1: I = 32, dv = -33 + 32: V = 32, 31 spikes, V = 1. t2: I = 16,
    # V = 16: 16 spikes, V = 0.
    # readout: w 10, θ 5, dash_syn 15, dash_mem 0. t0: nothing has arrived, V = 0. t1: the 31 spikes
    # of t0 are 31 events of 10: I = 310 - 1 = 309, V = 309: one spike (the cap), V = 304.
    # t2: I = 309 + 310 - 1 = 618, dv = -304 + 618: V = 618, one spike, V = 613.
    hidden = LayerProgram("synaptic", "subtract", 0, np.array([[127]]), np.array([0]), np.array([1]), np.array([0]),
                          decay_syn=np.array([1]), max_spikes=31)
    readout = LayerProgram("synaptic", "subtract", 0, np.array([[10]]), np.array([0]), np.array([5]), np.array([0]),
                           decay_syn=np.array([15]), max_spikes=1)
    prog = Program("xylo-imu", (hidden, readout))
    res = _xylosim_sim(prog, torch.tensor([1, 0, 0], dtype=torch.uint8).reshape(3, 1, 1))
    assert res.layer_spikes[0].flatten().tolist() == [31, 31, 16]
    assert res.membranes[0].flatten().tolist() == [33, 1, 0]
    assert res.output_spikes.flatten().tolist() == [0, 1, 1]
    assert res.membranes[1].flatten().tolist() == [0, 304, 613]
    assert res.counters[1]["synops"] == 31 + 31  # the events delivered: t0's and t1's hidden spikes
