"""Run a `xylo-imu` / `xylo-audio2` program on xylosim (SynSense's C++ Xylo simulator) and compare.

    from hw.vendor.xylo import run_on_xylosim, compare_with_sim
    res = run_on_xylosim(program, spikes)              # spikes: [T, B, N_in] {0, 1}, N_in <= 16
    report = compare_with_sim(program, spikes, res)    # per layer and step; report.identical

xylosim 0.1.3 (`pip install xylosim==0.1.3`, an sdist built with pybind11; the `vendor` extra) is
imported in spikeloop's own environment, in-process: it needs nothing else. It is driven directly
through `xylosim.v2.XyloLayer`, the class rockpool's `XyloSim` wraps for Xylo IMU (SYNS63300) and
Xylo Audio 2 (SYNS61201); rockpool is not used (its `rockpool.devices.xylo` import needs samna,
whose registry packages are stubs that install from a foreign index). How the program maps onto it
(`xylo_specification`, `XyloSimNetwork`): docs/vendor_checks.md, "Driving xylosim"; the arithmetic
both run: docs/fixed_point.md, profiles xylo-imu and xylo-audio2.

A program of several hidden layers is one hidden pool: layer 1 on the first neurons (weights_in),
layer j+1 after layer j, fed through the block weights_rec[layer j, layer j+1], the last hidden
layer feeding weights_out (rockpool's mapper places them the same way). No time alignment is
needed: the `sim` device reproduces the chip's timing itself (hidden layer j+1 and the readout read
the spikes of the step before), so step t of xylosim is step t of `sim`.
"""

from __future__ import annotations

import importlib.metadata
import time
from dataclasses import dataclass, field

import numpy as np

from ..device import as_program
from ..profiles import get_profile
from ..program import Program

XYLOSIM_VERSION = "0.1.3"  # the version these mappings were checked against (docs/vendor_checks.md)
XYLOSIM_PROFILES = ("xylo-imu", "xylo-audio2")


class XylosimUnavailable(RuntimeError):
    """xylosim cannot be imported (the message says how to install it)."""


def xylosim_version() -> str:
    """The installed xylosim's version; `XylosimUnavailable` naming the install command if absent."""
    try:
        import xylosim.v2  # noqa: F401  (the compiled module: a broken build fails here)
        return importlib.metadata.version("xylosim")
    except (ImportError, importlib.metadata.PackageNotFoundError) as e:
        raise XylosimUnavailable(f"xylosim is not importable ({e}); install it with "
                                 f"`pip install xylosim=={XYLOSIM_VERSION}` or `pip install -e '.[vendor]'` "
                                 f"(an sdist: needs a C++ compiler, about 2 minutes)") from None


@dataclass(frozen=True)
class XyloSpec:
    """A program as the chip's configuration, in rockpool's `from_specification` names (pre-synaptic
    index first): weights_in [16, H], weights_rec [H, H] (block-structured: layer j's rows feed layer
    j+1's columns; zero for one hidden layer), weights_out [H, O] int8, H the pool's neurons in use;
    per hidden neuron dash_mem, dash_syn, dash_syn_2 (xylo-audio2's unused second synapse; None on
    xylo-imu), threshold, bias [H]; per readout neuron dash_mem_out, dash_syn_out, threshold_out,
    bias_out [O]; one weight shift per matrix. Input channels beyond the program's fan-in have no
    synapses. hidden_layers: the sizes of the hidden layers in pool order (not a rockpool argument;
    default: one layer of H)."""

    profile: str
    weights_in: np.ndarray
    weights_rec: np.ndarray
    weights_out: np.ndarray
    dash_mem: np.ndarray
    dash_syn: np.ndarray
    dash_syn_2: np.ndarray | None
    threshold: np.ndarray
    bias: np.ndarray
    dash_mem_out: np.ndarray
    dash_syn_out: np.ndarray
    threshold_out: np.ndarray
    bias_out: np.ndarray
    weight_shift_in: int
    weight_shift_rec: int
    weight_shift_out: int
    hidden_layers: tuple[int, ...] | None = None

    def __post_init__(self):
        H = len(self.threshold)
        try:
            layers = tuple(int(n) for n in (self.hidden_layers or (H,)))
        except (TypeError, ValueError):
            layers = ()
        if not layers or any(n < 1 for n in layers) or sum(layers) != H:
            raise ValueError(f"xylo specification: hidden_layers {list(layers)} must be positive sizes summing to "
                             f"the {H} hidden neurons")
        object.__setattr__(self, "hidden_layers", layers)

    def to_dict(self) -> dict:
        """Plain lists and ints (JSON-ready; aliases empty, as the program has none); the rockpool
        arguments only (hidden_layers is not one)."""
        out = {"profile": self.profile, "aliases": [[] for _ in range(len(self.threshold))]}
        for k in self.__dataclass_fields__:
            v = getattr(self, k)
            if k not in ("profile", "hidden_layers"):
                out[k] = v.tolist() if isinstance(v, np.ndarray) else v
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "XyloSpec":
        """The inverse of `to_dict` (shapes and integer ranges checked; ValueError naming the field)."""
        missing = [k for k in cls.__dataclass_fields__ if k not in d and k != "hidden_layers"]
        if missing:
            raise ValueError(f"xylo specification lacks {missing}")
        if d.get("aliases") and any(d["aliases"]):
            raise ValueError("xylo specification: aliases are not supported (spikeloop writes none)")
        kw = {"profile": str(d["profile"]), "hidden_layers": d.get("hidden_layers")}
        for k in cls.__dataclass_fields__:
            if k in ("profile", "hidden_layers"):
                continue
            v = d[k]
            if k.startswith("weight_shift"):
                if not isinstance(v, int) or not 0 <= v <= 15:
                    raise ValueError(f"xylo specification: {k} must be an integer in [0, 15], got {v!r}")
                kw[k] = v
            elif v is None and k == "dash_syn_2":
                kw[k] = None
            else:
                a = np.asarray(v)
                if a.dtype.kind not in "iu" and a.size:
                    raise ValueError(f"xylo specification: {k} must hold integers, got {a.dtype}")
                kw[k] = a.astype(np.int8 if k.startswith("weights") else np.int64)
                if k.startswith("weights") and not np.array_equal(kw[k], a):
                    raise ValueError(f"xylo specification: {k} must be int8 weights")
        H, O = len(kw["threshold"]), len(kw["threshold_out"])
        shapes = {"weights_in": (kw["weights_in"].shape[0], H), "weights_rec": (H, H), "weights_out": (H, O)}
        for k, shape in shapes.items():
            if kw[k].shape != shape:
                raise ValueError(f"xylo specification: {k} has shape {kw[k].shape}, expected {shape}")
        for k in ("dash_mem", "dash_syn", "bias") + (("dash_syn_2",) if kw["dash_syn_2"] is not None else ()):
            if kw[k].shape != (H,):
                raise ValueError(f"xylo specification: {k} must have {H} entries, got {kw[k].shape}")
        for k in ("dash_mem_out", "dash_syn_out", "bias_out"):
            if kw[k].shape != (O,):
                raise ValueError(f"xylo specification: {k} must have {O} entries, got {kw[k].shape}")
        return cls(**kw)


SPEC_FORMAT = "spikeloop-xylo-spec 1"


def write_xylo_spec(program: Program | bytes, path) -> "Path":
    """Write a xylo-imu / xylo-audio2 program as JSON (atomically): {"format": SPEC_FORMAT,
    "profile", "chip", "xylosim": the version it was checked against, "program_crc32",
    "hidden_layers": the hidden layers' sizes in pool order,
    "specification": the keyword arguments of rockpool's `XyloSim.from_specification` /
    `config_from_specification` (weights_in [16, H], weights_rec [H, H], weights_out [H, O] int8;
    dash_mem, dash_syn, dash_syn_2 (null on xylo-imu), threshold, bias [H]; dash_mem_out,
    dash_syn_out, threshold_out, bias_out [O]; weight_shift_in/rec/out; aliases)}.
    `read_xylo_spec` reads it back."""
    import json
    from pathlib import Path

    from snn.atomic import write_text_atomic

    prog = as_program(program)
    spec = xylo_specification(prog)
    d = spec.to_dict()
    profile = d.pop("profile")
    doc = {"format": SPEC_FORMAT, "profile": profile, "chip": get_profile(profile).extra["chip"],
           "xylosim": XYLOSIM_VERSION, "program_crc32": f"0x{prog.checksum:08x}",
           "timing": "hidden layers 2.. and the readout read the spikes of the step before (as xylosim); "
                     "no alignment", "hidden_layers": list(spec.hidden_layers), "specification": d}
    return write_text_atomic(Path(path), json.dumps(doc) + "\n")


def read_xylo_spec(path) -> XyloSpec:
    """The `XyloSpec` of a file from `write_xylo_spec`; ValueError naming what is wrong."""
    import json

    with open(path, encoding="utf-8") as f:
        try:
            doc = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != SPEC_FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"{path}: format {got!r}, expected {SPEC_FORMAT!r} (spikeloop export --format xylo)")
    if doc.get("profile") not in XYLOSIM_PROFILES:
        raise ValueError(f"{path}: profile {doc.get('profile')!r} is not one of {XYLOSIM_PROFILES}")
    return XyloSpec.from_dict(dict(doc["specification"], profile=doc["profile"],
                                   hidden_layers=doc.get("hidden_layers")))


def xylo_specification(program: Program | bytes) -> XyloSpec:
    """The xylosim configuration of a xylo-imu / xylo-audio2 program (ValueError for other profiles).
    Layers 0..k-1 are the hidden pool in order (pool offsets o_j): layer 0's weights become
    weights_in[:, o_0 block] (transposed), layer j's (j >= 1) the block weights_rec[o_{j-1} block,
    o_j block] (pre-synaptic rows), all with the one shared weight_shift_rec; layer k, the readout,
    reads the last hidden layer: weights_out[o_{k-1} block]."""
    prog = as_program(program)
    if get_profile(prog.profile).arithmetic != "xylosim":
        raise ValueError(f"xylosim runs the profiles {XYLOSIM_PROFILES}; this program is for {prog.profile!r}")
    prof = get_profile(prog.profile)
    hidden, readout = prog.layers[:-1], prog.layers[-1]  # Program validation guarantees the roles
    sizes = [l.num_neurons for l in hidden]
    off = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    H = int(off[-1])
    n_ch = prof.extra["chip"]["input_channels"]
    w_in = np.zeros((n_ch, H), dtype=np.int8)
    w_in[:hidden[0].fan_in, off[0]:off[1]] = hidden[0].weights.T
    w_rec = np.zeros((H, H), dtype=np.int8)
    for j in range(1, len(hidden)):
        w_rec[off[j - 1]:off[j], off[j]:off[j + 1]] = hidden[j].weights.T
    w_out = np.zeros((H, readout.num_neurons), dtype=np.int8)
    w_out[off[-2]:off[-1]] = readout.weights.T
    shifts = {int(l.w_shift) for l in hidden[1:]}
    if len(shifts) > 1:  # Program validation refuses this already (rule 7.4)
        raise ValueError(f"hidden layers 1.. must share one w_shift (weight_shift_rec), got {sorted(shifts)}")
    two = prof.extra["chip"]["synapses_per_hidden_neuron"] == 2
    cat = lambda name: np.concatenate([getattr(l, name).astype(np.int64) for l in hidden])  # noqa: E731
    return XyloSpec(
        profile=prof.name, weights_in=w_in, weights_rec=w_rec, weights_out=w_out,
        dash_mem=cat("decay_mem"), dash_syn=cat("decay_syn"),
        dash_syn_2=np.ones(H, dtype=np.int64) if two else None,
        threshold=cat("threshold"), bias=cat("bias"),
        dash_mem_out=readout.decay_mem.astype(np.int64), dash_syn_out=readout.decay_syn.astype(np.int64),
        threshold_out=readout.threshold.astype(np.int64), bias_out=readout.bias.astype(np.int64),
        weight_shift_in=int(hidden[0].w_shift), weight_shift_rec=shifts.pop() if shifts else 0,
        weight_shift_out=int(readout.w_shift), hidden_layers=tuple(sizes))


def _synapses(XyloSynapse, w: np.ndarray, synapse_id: int = 0) -> list:
    """w [pre, post] -> per pre-synaptic neuron the list of its synapses, targets ascending."""
    return [[XyloSynapse(int(j), synapse_id, int(w[i, j])) for j in np.flatnonzero(w[i])] for i in range(w.shape[0])]


class XyloSimNetwork:
    """A `xylosim.v2.XyloLayer` built from a `XyloSpec`. It holds the synapse objects: XyloLayer
    keeps raw pointers to them, and frees nothing (if they were garbage-collected, xylosim would
    read freed memory: measured as a segfault)."""

    def __init__(self, spec: XyloSpec):
        xylosim_version()
        from xylosim.v2 import XyloLayer, XyloSynapse

        self.spec = spec
        H = len(spec.threshold)
        self._syn = (_synapses(XyloSynapse, spec.weights_in), _synapses(XyloSynapse, spec.weights_rec),
                     _synapses(XyloSynapse, spec.weights_out))
        dash_syns = ([[int(a), int(b)] for a, b in zip(spec.dash_syn, spec.dash_syn_2)] if spec.dash_syn_2 is not None
                     else [[int(a)] for a in spec.dash_syn])
        has_bias = bool(np.any(spec.bias != 0) or np.any(spec.bias_out != 0))  # as rockpool's from_specification
        self.layer = XyloLayer(
            synapses_in=self._syn[0], synapses_rec=self._syn[1], synapses_out=self._syn[2],
            aliases=[[] for _ in range(H)], threshold=spec.threshold.tolist(),
            threshold_out=spec.threshold_out.tolist(), has_bias=has_bias, bias=spec.bias.tolist(),
            bias_out=spec.bias_out.tolist(), weight_shift_inp=spec.weight_shift_in,
            weight_shift_rec=spec.weight_shift_rec, weight_shift_out=spec.weight_shift_out,
            dash_mem=spec.dash_mem.tolist(), dash_mem_out=spec.dash_mem_out.tolist(), dash_syns=dash_syns,
            dash_syns_out=[[int(d)] for d in spec.dash_syn_out], name="spikeloop")

    def run(self, raster: np.ndarray) -> dict:
        """One sample from the reset state: raster [T, 16] input counts -> {"hidden_spikes",
        "hidden_vmem", "hidden_isyn", "hidden_isyn2" (None with one synapse), "readout_spikes",
        "readout_vmem", "readout_isyn"}, each [T, N] int64 (xylosim's recordings after each step)."""
        L = self.layer
        L.reset_all()
        out = np.asarray(L.evolve(raster.astype(int).tolist()), dtype=np.int64)
        rec = lambda a: np.asarray(a, dtype=np.int64).reshape(-1, raster.shape[0]).T  # noqa: E731  [N, T] -> [T, N]
        isyn2 = rec(L.rec_i_syn2) if self.spec.dash_syn_2 is not None else None
        return {"hidden_spikes": np.asarray(L.rec_recurrent_spikes, dtype=np.int64), "hidden_vmem": rec(L.rec_v_mem),
                "hidden_isyn": rec(L.rec_i_syn), "hidden_isyn2": isyn2, "readout_spikes": out,
                "readout_vmem": rec(L.rec_v_mem_out), "readout_isyn": rec(L.rec_i_syn_out)}


def _spikes_np(spikes, n_in: int) -> np.ndarray:
    a = spikes.detach().cpu().numpy() if hasattr(spikes, "detach") else np.asarray(spikes)
    if a.ndim != 3 or a.shape[2] != n_in or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"spikes must be [T, B, {n_in}] (the program's inputs), got {list(a.shape)}")
    if not np.isin(a, (0, 1)).all():
        raise ValueError("spikes must be 0 or 1")
    return a.astype(np.uint8)


def run_on_xylosim(program: Program | bytes, spikes) -> dict:
    """Run a xylo-imu / xylo-audio2 program on xylosim, each sample from the reset state.

    spikes: [T, B, N_in] {0, 1} (torch or numpy), zero-padded to the chip's 16 channels. Returns numpy
    arrays: output_spikes [T, B, N_out]; layer_spikes, membranes (Vmem) and currents (Isyn) as
    {0..k-1: the hidden layers (the pool split by layer), k: readout} -> [T, B, N] int64;
    currents2: the hidden pool's second synapse [T, B, H] (xylo-audio2; None on xylo-imu); spec:
    the `XyloSpec`; meta: xylosim version, module, samples, seconds."""
    prog = as_program(program)
    res = run_xylosim_spec(xylo_specification(prog), _spikes_np(spikes, prog.num_inputs))
    res["meta"]["profile"] = prog.profile
    return res


def run_xylosim_spec(spec: XyloSpec, spikes) -> dict:
    """`run_on_xylosim` for a `XyloSpec` (e.g. read back with `read_xylo_spec`); spikes
    [T, B, N_in] {0, 1} with N_in <= the chip's input channels."""
    x = np.asarray(spikes.detach().cpu().numpy() if hasattr(spikes, "detach") else spikes)
    if x.ndim != 3 or min(x.shape) < 1 or x.shape[2] > spec.weights_in.shape[0] or not np.isin(x, (0, 1)).all():
        raise ValueError(f"spikes must be [T, B, N_in] 0/1 with N_in <= {spec.weights_in.shape[0]}, got "
                         f"{list(x.shape)}")
    T, B, _ = x.shape
    padded = np.zeros((T, B, spec.weights_in.shape[0]), dtype=np.uint8)
    padded[:, :, :x.shape[2]] = x
    t0 = time.perf_counter()
    net = XyloSimNetwork(spec)
    runs = [net.run(padded[:, b]) for b in range(B)]
    wall_s = time.perf_counter() - t0
    stack = lambda key: np.stack([r[key] for r in runs], axis=1)  # noqa: E731  [T, B, N]
    off = np.concatenate([[0], np.cumsum(spec.hidden_layers)]).astype(int)
    k = len(spec.hidden_layers)

    def per_layer(hidden_key: str, readout_key: str) -> dict:
        pool = stack(hidden_key)
        return {j: pool[:, :, off[j]:off[j + 1]] for j in range(k)} | {k: stack(readout_key)}

    res = {"layer_spikes": per_layer("hidden_spikes", "readout_spikes"),
           "membranes": per_layer("hidden_vmem", "readout_vmem"),
           "currents": per_layer("hidden_isyn", "readout_isyn"),
           "currents2": stack("hidden_isyn2") if spec.dash_syn_2 is not None else None, "spec": spec,
           "meta": {"xylosim": xylosim_version(), "module": "xylosim.v2.XyloLayer", "profile": spec.profile,
                    "samples": B, "steps": T, "seconds": round(wall_s, 3)}}
    res["output_spikes"] = res["layer_spikes"][k]
    return res


# ------------------------------------------------------------------------------------ comparison

FIELDS = (("spikes", "layer_spikes"), ("vmem", "membranes"), ("isyn", "currents"))


@dataclass
class LayerDiff:
    """Agreement of one layer between `sim` and xylosim over [T, B, N].

    mismatches: {"spikes"|"vmem"|"isyn": number of differing values}; steps: {field: [T] differing
    values per step}; first: the first difference (step, sample, neuron, field, sim, xylosim) in step
    order, or None."""

    layer: int
    role: str
    n: int
    sim_spikes: int
    xylosim_spikes: int
    mismatches: dict
    steps: dict
    first: dict | None = None

    @property
    def identical(self) -> bool:
        return not any(self.mismatches.values())

    def to_dict(self) -> dict:
        return {"layer": self.layer, "role": self.role, "n": self.n, "sim_spikes": self.sim_spikes,
                "xylosim_spikes": self.xylosim_spikes, "identical": self.identical,
                "mismatches": dict(self.mismatches),
                "mismatching_steps": {k: [int(t) for t in np.flatnonzero(v)] for k, v in self.steps.items()},
                "first": self.first}


@dataclass
class XyloComparison:
    """`compare_with_sim`'s report: one `LayerDiff` per layer (the hidden layers, the readout)."""

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
                parts.append(f"layer {l.layer} ({l.role}): identical ({l.sim_spikes} spikes)")
            elif l.first is None:  # only xylo-audio2's second synapse
                parts.append(f"layer {l.layer} ({l.role}): {l.mismatches} differ")
            else:
                f = l.first
                parts.append(f"layer {l.layer} ({l.role}): {l.mismatches} differ, first at step {f['step']} "
                             f"sample {f['sample']} neuron {f['neuron']} {f['field']}: sim {f['sim']} "
                             f"xylosim {f['xylosim']}")
        return "; ".join(parts)


def sim_traces(program: Program | bytes, spikes) -> dict:
    """The `sim` device's run of `program` on spikes [T, B, N_in] with probe: layer_spikes and
    membranes {layer: [T, B, N] numpy} from `SimulatedDevice.run`, and currents {layer: [T, B, N]}
    from `hw.fixed_point.xylosim_layer` on the same (delayed) layer inputs, the function the device
    runs; its spikes and V must equal the device's (RuntimeError otherwise)."""
    import torch

    from .. import fixed_point as fxp
    from ..device import open_device

    prog = as_program(program)
    x = torch.as_tensor(_spikes_np(spikes, prog.num_inputs))
    with open_device("sim", profile=prog.profile) as dev:
        dev.load(prog)
        run = dev.run(x, probe=True)
    out = {"layer_spikes": {k: v.numpy() for k, v in run.layer_spikes.items()},
           "membranes": {k: v.numpy() for k, v in run.membranes.items()}, "currents": {}}
    roles = get_profile(prog.profile).roles_for(len(prog.layers))
    h, max_count = x.to(torch.float32), 1
    for k, layer in enumerate(prog.layers):
        p = fxp.layer_params(layer, "cpu")
        if roles[k].input_delay_steps:
            h = torch.cat([torch.zeros_like(h[:1]), h[:-1]])
        s, v, i = fxp.xylosim_layer(h, p, max_count, probe=True)
        if not (np.array_equal(s.numpy(), out["layer_spikes"][k]) and np.array_equal(v.numpy(), out["membranes"][k])):
            raise RuntimeError(f"layer {k}: the replayed xylosim_layer differs from the sim device's run")
        out["currents"][k] = i.numpy()
        h, max_count = s, p.max_spikes
    return out


def _diff(layer: int, role: str, sim: dict, xs: dict) -> LayerDiff:
    mism, steps, first = {}, {}, None
    for name, key in FIELDS:
        a = np.asarray(sim[key][layer], dtype=np.int64)
        b = np.asarray(xs[key][layer], dtype=np.int64)
        if a.shape != b.shape:
            raise ValueError(f"layer {layer} {name}: sim shape {a.shape}, xylosim shape {b.shape}")
        bad = a != b
        mism[name] = int(bad.sum())
        steps[name] = bad.reshape(bad.shape[0], -1).sum(axis=1)
        if mism[name]:
            t, s, n = (int(i) for i in np.argwhere(bad)[0])
            if first is None or t < first["step"]:
                first = {"step": t, "sample": s, "neuron": n, "field": name, "sim": int(a[t, s, n]),
                         "xylosim": int(b[t, s, n])}
    n = np.asarray(sim["layer_spikes"][layer]).shape[2]
    return LayerDiff(layer, role, n, int(np.asarray(sim["layer_spikes"][layer]).sum()),
                     int(np.asarray(xs["layer_spikes"][layer]).sum()), mism, steps, first)


def compare_with_sim(program: Program | bytes, spikes, xylosim_result: dict, sim: dict | None = None
                     ) -> XyloComparison:
    """Compare xylosim's recordings with the `sim` device's, per layer and step (spikes, Vmem, Isyn);
    xylo-audio2's unused second synapse must stay 0 on xylosim (counted under hidden layer 0)."""
    prog = as_program(program)
    sim = sim if sim is not None else sim_traces(prog, spikes)
    roles = get_profile(prog.profile).roles_for(len(prog.layers))
    rep = XyloComparison([_diff(k, roles[k].role, sim, xylosim_result) for k in range(len(prog.layers))],
                         dict(xylosim_result.get("meta", {})))
    i2 = xylosim_result.get("currents2")
    if i2 is not None and np.any(i2):
        rep.layers[0].mismatches["isyn2_nonzero"] = int(np.count_nonzero(i2))
    return rep
