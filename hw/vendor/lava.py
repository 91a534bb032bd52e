"""Run a `loihi` program on Lava (lava-nc 0.10.0, `Loihi1SimCfg(select_tag="fixed_pt")`) and compare.

    from hw.vendor.lava import run_on_lava, compare_with_sim
    res = run_on_lava(program, spikes)          # spikes: [T, B, N_in] {0, 1}
    report = compare_with_sim(program, spikes, res)   # per layer and step; report.identical

The program is mapped onto Lava's processes (`lava_layers`, docs/fixed_point.md "Running a loihi
program on Lava"), written to an .npz, run by `hw/vendor/lava_runner.py` in the side venv
(`hw/vendor/lava_env.py`) as a subprocess, and Lava's traces are shifted back by Lava's one step of
delay per layer so that step t of every layer lines up with step t of the `sim` device.

    res = run_on_lava(program, spikes, **FAST)  # 100 samples side by side (Sparse): ~90x faster
    write_lava_net(program, "m.npz")            # the exported network file (spikeloop export --format lava)
    run_lava_net("m.npz", spikes)               # ... run through the runner's command line
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..device import as_program
from ..profiles import get_profile
from ..program import Program
from .lava_env import ensure_lava_env

from .lava_runner import CONNECTIONS, NET_FORMAT, NET_FORMATS, RESULT_FORMAT, RUN_FORMAT  # the runner imports only numpy

RUNNER = Path(__file__).with_name("lava_runner.py")
LAVA_DU_LEAKY = 4095     # du + ds_offset(1) = 4096: the current keeps nothing of the previous step
INT32_LIMIT = 2 ** 31    # Lava computes a << 6 in int32; spikeloop in int64 (equal while |a << 6| < 2**31)


class LavaRunError(RuntimeError):
    """The Lava runner failed; the message has its stderr."""


def split_bias(b: np.ndarray, mant_bits: int = 13, max_exp: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """b [N] int -> (bias_mant, bias_exp) with bias_mant << bias_exp == b, the smallest such exp and
    |bias_mant| < 2**(mant_bits - 1). ValueError naming the first bias that has none."""
    m_max = 2 ** (mant_bits - 1) - 1
    mant = np.zeros(len(b), dtype=np.int64)
    exp = np.zeros(len(b), dtype=np.int64)
    for i, v in enumerate(int(x) for x in b):
        for e in range(max_exp + 1):
            if v % (1 << e) == 0 and abs(v >> e) <= m_max:
                mant[i], exp[i] = v >> e, e
                break
        else:
            raise ValueError(f"bias[{i}] = {v} is not mant << exp with |mant| <= {m_max}, exp <= {max_exp}")
    return mant, exp


@dataclass(frozen=True)
class LavaLayer:
    """One program layer as Lava's processes take it, neurons in Lava's order (`order`).

    weights: int32 [N, M] = 2·W (Lava's bit-accurate Dense keeps mixed-sign weights as even values in
    [-256, 254]); weight_exp = w_shift − 1; bias_mant, bias_exp: [N]; du: 4095 (leaky);
    group: [N] index of the LIF process holding each neuron; vth, dv: [G] per LIF process.
    kind "conv": weights int32 [C_out, kx, ky, C_in] = W[o, c, k−1−ky, k−1−kx] (Lava's Conv
    convolves, torch's correlates: the kernel flipped, in Lava's (W, H) axis order), weight_exp 0,
    input_shape (W, H, C_in), stride, padding. order [N]: the program neuron index of each Lava
    neuron (maps in Lava's (x, y, c) C-order, identity for a dense layer that no conv reads);
    in_order [M]: the same for the layer's inputs (the previous layer's order)."""

    weights: np.ndarray
    weight_exp: int
    bias_mant: np.ndarray
    bias_exp: np.ndarray
    du: int
    group: np.ndarray
    vth: np.ndarray
    dv: np.ndarray
    int32_overflow_possible: bool
    kind: str = "dense"
    input_shape: tuple | None = None
    stride: int = 1
    padding: int = 0
    order: np.ndarray | None = None
    in_order: np.ndarray | None = None

    @property
    def num_neurons(self) -> int:
        return int(self.group.shape[0])

    @property
    def fan_in(self) -> int:
        return int(np.prod(self.input_shape)) if self.kind == "conv" else int(self.weights.shape[1])

    def arrays(self, prefix: str) -> dict:
        d = {prefix + "weights": self.weights.astype(np.int32), prefix + "weight_exp": self.weight_exp,
             prefix + "bias_mant": self.bias_mant.astype(np.int32),
             prefix + "bias_exp": self.bias_exp.astype(np.int32), prefix + "du": self.du,
             prefix + "group": self.group.astype(np.int32), prefix + "vth": self.vth.astype(np.int32),
             prefix + "dv": self.dv.astype(np.int32)}
        if self.kind == "conv":
            d |= {prefix + "kind": np.array("conv"), prefix + "input_shape": np.array(self.input_shape, np.int32),
                  prefix + "stride": self.stride, prefix + "padding": self.padding}
        return d


def map_order(c: int, h: int, w: int) -> np.ndarray:
    """Lava position -> program index of a (C, H, W) map: spikeloop stores maps C-major ((c·H + y)·W
    + x, torch's flatten), Lava's Conv takes them as (W, H, C) arrays, flattened in C order."""
    return np.arange(c * h * w).reshape(c, h, w).transpose(2, 1, 0).reshape(-1)


def _orders(program: Program) -> list[np.ndarray]:
    """[L + 1] Lava orders: of the network input, then of each layer's neurons (`map_order` where a
    conv layer writes or reads the map, identity elsewhere)."""
    layers = program.layers
    orders = []
    for k in range(-1, len(layers)):
        n = program.num_inputs if k < 0 else layers[k].num_neurons
        if k >= 0 and layers[k].conv is not None:
            g = layers[k].conv
            orders.append(map_order(g.out_channels, g.out_height, g.out_width))
        elif k + 1 < len(layers) and layers[k + 1].conv is not None:
            g = layers[k + 1].conv
            orders.append(map_order(g.in_channels, g.in_height, g.in_width))
        else:
            orders.append(np.arange(n))
    return orders


def lava_layers(program: Program) -> list[LavaLayer]:
    """The Lava parameters of each layer of a `loihi` program (ValueError for other programs)."""
    if program.profile != "loihi":
        raise ValueError(f"Lava runs loihi programs only, this one is for profile {program.profile!r}")
    prof = get_profile("loihi")
    orders = _orders(program)
    out = []
    for k, layer in enumerate(program.layers):
        if layer.neuron_type != "leaky" or layer.reset != "zero":
            raise ValueError(f"layer {k}: Lava's LIF maps leaky/zero layers only, got "
                             f"{layer.neuron_type}/{layer.reset}")
        order, in_order = orders[k + 1], orders[k]
        mant, exp = split_bias(layer.bias[order], prof.bias_mant_bits, prof.max_bias_exp)
        # One LIF process per distinct (threshold, dv): Lava's LIF holds both as one scalar.
        pairs = np.stack([layer.threshold[order].astype(np.int64), layer.decay_mem[order].astype(np.int64)], axis=1)
        uniq, group = np.unique(pairs, axis=0, return_inverse=True)
        w = layer.weights.astype(np.int64)
        rows = w.reshape(w.shape[0], -1)
        # the largest |a << 6| any input can give: Lava holds it in int32, spikeloop in int64
        reach = np.maximum(rows.clip(min=0).sum(axis=1), (-rows).clip(min=0).sum(axis=1)) << (int(layer.w_shift) + 6)
        common = dict(bias_mant=mant, bias_exp=exp, du=LAVA_DU_LEAKY, group=group.reshape(-1), vth=uniq[:, 0],
                      dv=uniq[:, 1], int32_overflow_possible=bool(reach.max() >= INT32_LIMIT), order=order,
                      in_order=in_order)
        g = layer.conv
        if g is None:
            out.append(LavaLayer(weights=2 * w[order][:, in_order], weight_exp=int(layer.w_shift) - 1, **common))
            continue
        # w_shift is 0 and there is no pool: a loihi program cannot hold others (rules 8.7, 6.12)
        per_channel = common["group"].reshape(-1, g.out_channels)  # Lava order (x, y, c): channel = index % C_out
        if (per_channel != per_channel[:1]).any():
            raise ValueError(f"layer {k}: the neurons of a conv channel have different (threshold, decay_mem); "
                             f"Lava runs a channel in one LIF process, so each channel needs one pair")
        kernel = np.ascontiguousarray(w.transpose(0, 3, 2, 1)[:, ::-1, ::-1, :])  # [o, kx, ky, c], flipped
        out.append(LavaLayer(weights=kernel, weight_exp=0, kind="conv",
                             input_shape=(g.in_width, g.in_height, g.in_channels), stride=g.stride,
                             padding=g.padding, **common))
    return out


def _spikes_np(spikes, n_in: int) -> np.ndarray:
    a = spikes.detach().cpu().numpy() if hasattr(spikes, "detach") else np.asarray(spikes)
    if a.ndim != 3 or a.shape[2] != n_in or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"spikes must be [T, B, {n_in}] (the program's inputs), got {list(a.shape)}")
    if not np.isin(a, (0, 1)).all():
        raise ValueError("spikes must be 0 or 1")
    return a.astype(np.uint8)


FAST = {"copies": 100, "connection": "sparse"}  # the fastest setting measured (experiments/vendor_check.py --bench)
MAX_LIF_PER_LAYER = 16  # each LIF process is an OS process stepping in lock-step (~0.6 ms per step each)


def program_jobs(jobs, max_lif_per_layer: int = MAX_LIF_PER_LAYER) -> list[tuple[list[LavaLayer], np.ndarray]]:
    """[(program, spikes [T, B, N_in])] -> [(lava_layers(program), spikes as uint8 numpy)]; ValueError
    for a layer needing more than `max_lif_per_layer` LIF processes (distinct (threshold, dv) pairs)."""
    out = []
    for j, (prog, spikes) in enumerate(jobs):
        prog = as_program(prog)
        layers = lava_layers(prog)
        for k, L in enumerate(layers):
            if len(L.vth) > max_lif_per_layer:
                raise ValueError(f"program {j} layer {k}: {len(L.vth)} distinct (threshold, decay_mem) pairs need "
                                 f"{len(L.vth)} Lava LIF processes (Lava's LIF holds one vth and one dv), more "
                                 f"than max_lif_per_layer={max_lif_per_layer}; compile with one threshold per layer "
                                 f"(docs/fixed_point.md, Running a loihi program on Lava)")
        out.append((layers, _spikes_np(spikes, prog.num_inputs)))
    return out


def _to_lava(a: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    """[..., N] in program order -> Lava order (`LavaLayer.order`)."""
    return a if order is None else np.ascontiguousarray(a[..., order])


def _to_program(a: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    """[..., N] in Lava order -> program order."""
    if order is None:
        return a
    out = np.empty_like(a)
    out[..., order] = a
    return out


def run_lava_layers(nets, record_u: bool = True, reset: str = "set", gap_steps: int = 0,
                    python: str | Path | None = None, workdir: str | Path | None = None,
                    timeout_s: float = 3600, keep_raw: bool = False, copies: int = 1,
                    connection: str = "dense", host_io: bool = False) -> list[dict]:
    """Run [(list of LavaLayer, spikes [T, B, N_in] uint8)] in one runner call; see `run_on_lava`.

    keep_raw: also return each layer's unshifted traces in Lava time under "raw" ({layer:
    {"spikes"|"v"|"u": [B, W, N]}}, W = T + L + gap_steps Lava steps per sample).
    copies: samples run side by side as independent copies of each layer (block-diagonal weights;
    the runner's docstring); connection: "dense" (Lava's Dense) or "sparse" (Lava's Sparse, whose
    block-diagonal matrix costs C·N·M instead of C²·N·M). host_io: reset and read back through
    Lava's host-side Var.set / Var.get (one message per element: slow; for measuring only)."""
    if not isinstance(copies, int) or isinstance(copies, bool) or copies < 1:
        raise ValueError(f"copies must be an integer >= 1, got {copies!r}")
    if connection not in CONNECTIONS:
        raise ValueError(f"connection must be one of {CONNECTIONS}, got {connection!r}")
    data = {"format": np.array(RUN_FORMAT), "num_networks": len(nets), "record_u": record_u,
            "reset": np.array(reset), "host_io": bool(host_io)}
    for i, (layers, x) in enumerate(nets):
        data[f"n{i}_input"] = _to_lava(x, layers[0].in_order)
        data[f"n{i}_steps_per_sample"] = x.shape[0] + len(layers) + int(gap_steps)
        data[f"n{i}_num_layers"] = len(layers)
        data[f"n{i}_copies"] = min(copies, x.shape[1])
        data[f"n{i}_connection"] = np.array(connection)
        for k, L in enumerate(layers):
            data.update(L.arrays(f"n{i}_l{k}_"))
    if python is None:
        python = ensure_lava_env().python
    with tempfile.TemporaryDirectory(prefix="spikeloop-lava-", dir=workdir) as tmp:
        inp, outp = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(inp, **data)
        t0 = time.perf_counter()
        # -I: the runner's folder must not be on sys.path (this module would shadow the lava package)
        proc = subprocess.run([str(python), "-I", str(RUNNER), str(inp), str(outp)], capture_output=True, text=True,
                              timeout=timeout_s, stdin=subprocess.DEVNULL)
        wall_s = time.perf_counter() - t0
        if proc.returncode != 0 or not outp.exists():
            raise LavaRunError(f"lava_runner exited {proc.returncode}:\n{proc.stderr.strip()[-4000:]}")
        with np.load(outp, allow_pickle=False) as f:
            got = {k: f[k] for k in f.files}
    if str(got["format"]) != RESULT_FORMAT:
        raise LavaRunError(f"lava_runner wrote format {str(got['format'])!r}, expected {RESULT_FORMAT!r}")
    meta = json.loads(str(got["meta"]))
    meta["runner_wall_s"] = round(wall_s, 3)
    results = []
    for i, (layers, x) in enumerate(nets):
        T = x.shape[0]
        res = {"layer_spikes": {}, "membranes": {}, "currents": {} if record_u else None,
               "lava_steps": {}, "int32_overflow_possible": [L.int32_overflow_possible for L in layers],
               "meta": {k: v for k, v in meta.items() if k != "networks"} | meta["networks"][i]}
        if keep_raw:
            res["raw"] = {}
        for k in range(len(layers)):
            # Layer k (0-based) runs step t (0-based) of the sample at Lava step t + k + 1 (0-based):
            # every Dense, the input's included, delivers its sum one step late.
            lag = k + 1
            res["lava_steps"][k] = lag
            for key, name in (("layer_spikes", "spikes"), ("membranes", "v"), ("currents", "u")):
                if res[key] is None:
                    continue
                a = _to_program(got[f"n{i}_l{k}_{name}"], layers[k].order)  # [B, W, N] in Lava time
                res[key][k] = np.ascontiguousarray(a[:, lag:lag + T].transpose(1, 0, 2))  # [T, B, N]
                if keep_raw:
                    res["raw"].setdefault(k, {})[name] = a
        res["output_spikes"] = res["layer_spikes"][len(layers) - 1]
        results.append(res)
    return results


def run_many_on_lava(jobs, max_lif_per_layer: int = MAX_LIF_PER_LAYER, **kwargs) -> list[dict]:
    """`run_on_lava` for several (program, spikes) pairs in one runner call (one Lava import; each
    network is still its own Lava runtime, built once for all its samples). One result per pair.

    record_u: record the current u too. reset: how the runner separates samples ("set": u, v set to 0
    when each layer starts, the only exact way; "gap": nothing but `gap_steps` extra steps of zero
    input, for measuring). python: the side venv's python (default: `ensure_lava_env()`, which
    creates the venv when missing). max_lif_per_layer: refuse programs needing more LIF processes.
    copies, connection: samples side by side (see `run_lava_layers`; `FAST` is the fastest measured
    setting)."""
    return run_lava_layers(program_jobs(jobs, max_lif_per_layer), **kwargs)


def run_on_lava(program: Program | bytes, spikes, **kwargs) -> dict:
    """Run a `loihi` program on Lava's bit-accurate models; traces aligned with the `sim` device.

    spikes: [T, B, N_in] {0, 1} (torch or numpy). Returns a dict of numpy arrays:
    output_spikes [T, B, N_out] uint8; layer_spikes, membranes (v after the step, int32) and
    currents (u, int32; None unless record_u) as {layer index: [T, B, N]}; lava_steps {layer: lag in
    Lava steps}; int32_overflow_possible [L] (where Lava's int32 current could differ from the
    int64 rule); meta (lava-nc/numpy/python versions, processes, seconds).
    Keyword arguments: see `run_many_on_lava`."""
    return run_many_on_lava([(program, spikes)], **kwargs)[0]


# ------------------------------------------------------------------------- network file (export)

def write_lava_net(program: Program | bytes, path: str | Path) -> Path:
    """Write a `loihi` program as the Lava runner's network file (format `NET_FORMAT`, an .npz of
    plain integer arrays, no pickles; written atomically): `num_layers`, per layer `l{k}_weights`,
    `l{k}_weight_exp`, `l{k}_bias_mant`, `l{k}_bias_exp`, `l{k}_du`, `l{k}_group`, `l{k}_vth`,
    `l{k}_dv` exactly as Lava's processes take them (`lava_layers`; conv layers also `l{k}_kind`,
    `l{k}_input_shape`, `l{k}_stride`, `l{k}_padding`), `l{k}_int32_overflow_possible`, the program
    index of each Lava neuron `l{k}_order` and input `input_order` (maps are (x, y, c) in Lava), and `meta` (JSON: the program's profile, CRC-32, sizes, the lava-nc version the mapping was
    checked against, the timing convention). `python -I hw/vendor/lava_runner.py NET.npz OUT.npz
    --input SPIKES.npy` runs it; `read_lava_net` reads it back."""
    from snn.atomic import atomic_path

    prog = as_program(program)
    layers = lava_layers(prog)
    meta = {"format": NET_FORMAT, "profile": prog.profile, "program_crc32": f"0x{prog.checksum:08x}",
            "num_inputs": prog.num_inputs, "num_outputs": prog.num_outputs,
            "layer_sizes": [L.num_neurons for L in layers], "layer_kinds": [L.kind for L in layers],
            "lif_processes_per_layer": [len(L.vth) for L in layers],
            "checked_against": {"lava-nc": "0.10.0", "run_config": 'Loihi1SimCfg(select_tag="fixed_pt")'},
            "timing": "layer k (0-based) runs sample step t at Lava step t + k + 1; run T + L steps per sample "
                      "and zero u, v of layer k after its step k + 1 (docs/fixed_point.md)"}
    data = {"format": np.array(NET_FORMAT), "meta": np.array(json.dumps(meta)), "num_layers": np.array(len(layers))}
    data["input_order"] = layers[0].in_order.astype(np.int32)
    for k, L in enumerate(layers):
        data.update({key: np.asarray(v) for key, v in L.arrays(f"l{k}_").items()})
        data[f"l{k}_int32_overflow_possible"] = np.array(L.int32_overflow_possible)
        data[f"l{k}_order"] = L.order.astype(np.int32)
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **data)
    return path


def read_lava_net(path: str | Path) -> tuple[list[LavaLayer], dict]:
    """(layers, meta) of a network file from `write_lava_net`; ValueError naming what is wrong."""
    with np.load(path, allow_pickle=False) as f:
        data = {k: f[k] for k in f.files}
    fmt = str(data.get("format", np.array("")).reshape(()))
    if fmt not in NET_FORMATS:
        raise ValueError(f"{path}: format {fmt!r}, expected {NET_FORMAT!r} (spikeloop export --format lava)")
    from .lava_runner import RunnerError, read_network
    if "l0_weights" not in data or "num_layers" not in data:
        raise ValueError(f"{path}: a {NET_FORMAT!r} file without num_layers / l0_weights")
    n_in = (int(np.prod(data["l0_input_shape"])) if "l0_input_shape" in data else int(data["l0_weights"].shape[1]))
    probe = dict(data, input=np.zeros((1, 1, n_in), np.uint8), steps_per_sample=np.array(1 + int(data["num_layers"])))
    try:
        net = read_network(probe, None)  # the runner's own checks of shapes and groups
    except RunnerError as e:
        raise ValueError(f"{path}: {e}") from None
    orders = [data.get("input_order")] + [data.get(f"l{k}_order") for k in range(len(net["layers"]))]
    for k, o in enumerate(orders):
        n = n_in if k == 0 else net["layers"][k - 1]["group"].shape[0]
        if o is not None and not np.array_equal(np.sort(o), np.arange(n)):
            raise ValueError(f"{path}: {'input_order' if k == 0 else f'l{k - 1}_order'} is not a permutation of "
                             f"0..{n - 1}")
    layers = [LavaLayer(weights=L["weights"], weight_exp=int(L["weight_exp"]), bias_mant=L["bias_mant"],
                        bias_exp=L["bias_exp"], du=int(L["du"]), group=L["group"], vth=L["vth"], dv=L["dv"],
                        int32_overflow_possible=bool(data.get(f"l{k}_int32_overflow_possible", False)),
                        kind=L["kind"], input_shape=L.get("input_shape"), stride=L.get("stride", 1),
                        padding=L.get("padding", 0), order=orders[k + 1], in_order=orders[k])
              for k, L in enumerate(net["layers"])]
    return layers, json.loads(str(data["meta"]))


def run_lava_net(path: str | Path, spikes, python: str | Path | None = None, copies: int = 1,
                 connection: str = "dense", timeout_s: float = 3600) -> dict:
    """Run a network file (`write_lava_net`) on spikes [T, B, N_in] {0, 1} the way a Lava user would,
    through the runner's command line (`lava_runner.py NET OUT --input SPIKES.npy`), and return
    its traces aligned with the `sim` device as `run_on_lava` does (output_spikes, layer_spikes,
    membranes, currents, meta)."""
    layers, _ = read_lava_net(path)
    x = _spikes_np(spikes, layers[0].fan_in)
    python = python or ensure_lava_env().python
    with tempfile.TemporaryDirectory(prefix="spikeloop-lava-net-") as tmp:
        inp, outp = Path(tmp) / "spikes.npy", Path(tmp) / "out.npz"
        np.save(inp, _to_lava(x, layers[0].in_order))
        cmd = [str(python), "-I", str(RUNNER), str(path), str(outp), "--input", str(inp), "--copies", str(copies),
               "--connection", connection]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
        if proc.returncode != 0 or not outp.exists():
            raise LavaRunError(f"lava_runner exited {proc.returncode}:\n{proc.stderr.strip()[-4000:]}")
        with np.load(outp, allow_pickle=False) as f:
            got = {k: f[k] for k in f.files}
    T = x.shape[0]
    res = {"layer_spikes": {}, "membranes": {}, "currents": {}, "meta": json.loads(str(got["meta"]))}
    for k in range(len(layers)):
        for key, name in (("layer_spikes", "spikes"), ("membranes", "v"), ("currents", "u")):
            a = _to_program(got[f"n0_l{k}_{name}"], layers[k].order)
            res[key][k] = np.ascontiguousarray(a[:, k + 1:k + 1 + T].transpose(1, 0, 2))
    res["output_spikes"] = res["layer_spikes"][len(layers) - 1]
    return res


# ------------------------------------------------------------------------------------ comparison

@dataclass
class LayerDiff:
    """Agreement of one layer between `sim` and Lava over [T, B, N].

    mismatches: {"spikes"|"v"|"u": number of differing values}; steps: {field: [T] differing values
    per step}; first: the first difference (step, sample, neuron, field, sim value, lava value) in
    step order, or None."""

    layer: int
    n: int
    sim_spikes: int
    lava_spikes: int
    mismatches: dict
    steps: dict
    first: dict | None = None

    @property
    def identical(self) -> bool:
        return not any(self.mismatches.values())

    def to_dict(self) -> dict:
        return {"layer": self.layer, "n": self.n, "sim_spikes": self.sim_spikes, "lava_spikes": self.lava_spikes,
                "identical": self.identical, "mismatches": dict(self.mismatches),
                "mismatching_steps": {k: [int(t) for t in np.flatnonzero(v)] for k, v in self.steps.items()},
                "first": self.first}


@dataclass
class LavaComparison:
    """`compare_with_sim`'s report: one `LayerDiff` per layer."""

    layers: list[LayerDiff] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        return all(l.identical for l in self.layers)

    def to_dict(self) -> dict:
        return {"identical": self.identical, "layers": [l.to_dict() for l in self.layers], "meta": self.meta}

    def summary(self) -> str:
        parts = []
        for l in self.layers:
            if l.identical:
                parts.append(f"layer {l.layer}: identical ({l.sim_spikes} spikes)")
            else:
                f = l.first
                parts.append(f"layer {l.layer}: {l.mismatches} differ, first at step {f['step']} sample "
                             f"{f['sample']} neuron {f['neuron']} {f['field']}: sim {f['sim']} lava {f['lava']}")
        return "; ".join(parts)


def sim_traces(program: Program, spikes) -> dict:
    """The `sim` device's probe of `program` on spikes [T, B, N_in]: layer_spikes and membranes
    {layer: [T, B, N] numpy} and currents {layer: [T, B, N]} (the loihi current u of each step,
    recomputed from the layer's input with the same step function)."""
    import torch

    from .. import fixed_point as fxp
    from ..device import open_device

    x = torch.as_tensor(_spikes_np(spikes, program.num_inputs))
    with open_device("sim", profile=program.profile) as dev:
        dev.load(program)
        run = dev.run(x, probe=True)
    out = {"layer_spikes": {k: v.numpy() for k, v in run.layer_spikes.items()},
           "membranes": {k: v.numpy() for k, v in run.membranes.items()}, "currents": {}}
    h = x.to(torch.float32)
    drive, step = fxp.arithmetic(program.profile)
    for k, layer in enumerate(program.layers):
        p = fxp.layer_params(layer, "cpu")
        T, B = h.shape[:2]
        rows = h.reshape(T * B, -1)
        a = (fxp.conv_input(rows, p, 1).to(torch.int64) if p.conv is not None
             else fxp.exact_dot(rows, p.weights_t_shifted, 1)).reshape(T, B, -1)
        zero = fxp.init_state(B, layer.num_neurons, "cpu")
        # leaky: du + 1 = 4096 forgets the previous current, so u depends on this step's input only
        out["currents"][k] = np.stack([step(drive(a[t], p), zero, p)[1].i.numpy() for t in range(T)])
        h = run.layer_spikes[k].to(torch.float32)
    return out


def _diff(layer: int, sim: dict, lava: dict) -> LayerDiff:
    fields = [("spikes", "layer_spikes"), ("v", "membranes")]
    if lava.get("currents") is not None:
        fields.append(("u", "currents"))
    mism, steps, first = {}, {}, None
    for name, key in fields:
        a = np.asarray(sim[key][layer], dtype=np.int64)
        b = np.asarray(lava[key][layer], dtype=np.int64)
        if a.shape != b.shape:
            raise ValueError(f"layer {layer} {name}: sim shape {a.shape}, lava shape {b.shape}")
        bad = a != b
        mism[name] = int(bad.sum())
        steps[name] = bad.reshape(bad.shape[0], -1).sum(axis=1)
        if mism[name]:
            t, s, n = (int(i) for i in np.argwhere(bad)[0])
            if first is None or t < first["step"]:
                first = {"step": t, "sample": s, "neuron": n, "field": name, "sim": int(a[t, s, n]),
                         "lava": int(b[t, s, n])}
    n = np.asarray(sim["layer_spikes"][layer]).shape[2]
    return LayerDiff(layer, n, int(np.asarray(sim["layer_spikes"][layer]).sum()),
                     int(np.asarray(lava["layer_spikes"][layer]).sum()), mism, steps, first)


def compare_with_sim(program: Program, spikes, lava_result: dict, sim: dict | None = None) -> LavaComparison:
    """Compare Lava's aligned traces with the `sim` device's, per layer and step (spikes, v, u)."""
    sim = sim if sim is not None else sim_traces(program, spikes)
    return LavaComparison([_diff(k, sim, lava_result) for k in range(len(program.layers))],
                          dict(lava_result.get("meta", {})))
