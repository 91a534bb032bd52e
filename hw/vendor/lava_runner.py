"""Run Lava-ready integer networks on Lava's bit-accurate Loihi 1 models and record every layer.

A standalone script for the side venv's Python 3.10 (`hw/vendor/lava_env.py` makes it): it imports
numpy and lava only, never spikeloop or torch, and is driven through files:

    python -I lava_runner.py IN.npz OUT.npz

IN.npz (written by `hw/vendor/lava.py`, format `RUN_FORMAT`) holds one or more networks, each a
feed-forward chain of layers with the parameters exactly as Lava's processes take them:

    format                      str, RUN_FORMAT
    num_networks                int
    n{i}_input                  uint8 [T, B, N_in] input spikes (time first)
    n{i}_steps_per_sample       int W >= T + L: Lava steps run per sample (input is 0 after step T)
    n{i}_num_layers             int L
    n{i}_l{k}_weights           int32 [N, M]  Dense weights (already the even values Lava keeps)
    n{i}_l{k}_weight_exp        int           Dense weight_exp (may be negative)
    n{i}_l{k}_bias_mant         int32 [N]     LIF bias_mant (13-bit signed)
    n{i}_l{k}_bias_exp          int32 [N]     LIF bias_exp (0..7)
    n{i}_l{k}_du                int           LIF du (shared by the layer)
    n{i}_l{k}_group             int32 [N]     LIF process (0..G-1) each neuron belongs to
    n{i}_l{k}_vth, n{i}_l{k}_dv int32 [G]     vth and dv of each of the layer's LIF processes
    record_u                    bool          also record the current u
    reset                       str           how samples are separated: "set" (default) or "gap"

Each layer becomes one `LIF` process per group (Lava's LIF holds vth and dv as one scalar per
process), each as wide as the layer, with one `Dense` process holding the group's rows of the weight
matrix (the other rows 0): the other groups' neurons in it stay at u = v = 0 and never spike, so the
sum of the groups' `s_out` (an InPort adds all OutPorts connected to it) is the layer's spike vector,
which every Dense of the next layer reads. A layer with G groups costs G LIF + G Dense. One recorder
process per network reads every LIF's v (and u) after each step and receives its s_out. The input
is a `RingBuffer` source holding every sample back to back. All samples run on one runtime, built
once, W steps per sample. Every Dense (the input's included) delivers its sum one step late, so layer
k (0-based) runs its first real step at Lava step k + 2 of the sample; before that it has only
integrated its bias and the previous sample's tail. With reset "set" the runner runs the sample's
first L steps one at a time and, after step k + 1, sets u and v of layer k's LIF processes to 0:
each layer then starts every sample from the reset state, exactly as a new network would, while its
Dense already holds the previous layer's first real output. Reset "gap" only runs all B·W steps in
one go, relying on the zero input after step T; it is kept to measure that this is not a reset
(a neuron with dv = 0 or a bias keeps its state).

OUT.npz: `format`, `meta` (JSON: versions, run configuration, per network the number of Lava
processes and the build/run seconds) and per network and layer, in Lava's own time (no alignment):

    n{i}_l{k}_spikes   uint8 [B, W, N]   s_out at each Lava step (1..W as index 0..W-1)
    n{i}_l{k}_v        int32 [B, W, N]   v after the step (after the reset of neurons that spiked)
    n{i}_l{k}_u        int32 [B, W, N]   u after the step (when record_u)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from importlib import metadata

# This file sits beside hw/vendor/lava.py, which `import lava` would find first when the script's
# folder is on sys.path (the host runs it with `python -I`, which leaves it off).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import numpy as np  # noqa: E402

RUN_FORMAT = "spikeloop-lava-run 1"
RESULT_FORMAT = "spikeloop-lava-result 1"
SELECT_TAG = "fixed_pt"  # PyLifModelBitAcc + PyDenseModelBitAcc + PySendModelFixed
RESETS = ("set", "gap")


class RunnerError(ValueError):
    """The input file is not a valid runner input."""


def _scalar(data, key: str) -> int:
    if key not in data:
        raise RunnerError(f"input has no {key!r}")
    return int(np.asarray(data[key]).reshape(()))


def _array(data, key: str, ndim: int) -> np.ndarray:
    if key not in data:
        raise RunnerError(f"input has no {key!r}")
    a = np.asarray(data[key])
    if a.ndim != ndim or a.dtype.kind not in "iub":
        raise RunnerError(f"{key} must be a {ndim}-D integer array, got {a.dtype} {a.shape}")
    return a.astype(np.int64)


def read_network(data, i: int) -> dict:
    """The i-th network of an input file as plain arrays, with its shapes checked."""
    p = f"n{i}_"
    spikes = _array(data, p + "input", 3)
    if not np.isin(spikes, (0, 1)).all():
        raise RunnerError(f"{p}input must hold spikes 0/1")
    T, B, n_in = spikes.shape
    W = _scalar(data, p + "steps_per_sample")
    layers, fan_in = [], n_in
    for k in range(_scalar(data, p + "num_layers")):
        q = f"{p}l{k}_"
        L = {"weights": _array(data, q + "weights", 2), "weight_exp": _scalar(data, q + "weight_exp"),
             "bias_mant": _array(data, q + "bias_mant", 1), "bias_exp": _array(data, q + "bias_exp", 1),
             "du": _scalar(data, q + "du"), "group": _array(data, q + "group", 1),
             "vth": _array(data, q + "vth", 1), "dv": _array(data, q + "dv", 1)}
        n = L["weights"].shape[0]
        if L["weights"].shape[1] != fan_in:
            raise RunnerError(f"{q}weights has fan-in {L['weights'].shape[1]}, the layer before has {fan_in}")
        for name in ("bias_mant", "bias_exp", "group"):
            if L[name].shape != (n,):
                raise RunnerError(f"{q}{name} must have shape ({n},), got {L[name].shape}")
        G = L["vth"].shape[0]
        if L["dv"].shape != (G,) or G < 1 or sorted(set(L["group"].tolist())) != list(range(G)):
            raise RunnerError(f"{q}group must number the layer's {G} LIF processes 0..{G - 1}, each used")
        layers.append(L)
        fan_in = n
    if not layers:
        raise RunnerError(f"network {i} has no layers")
    if W < T + len(layers):
        raise RunnerError(f"{p}steps_per_sample={W} is below T + L = {T + len(layers)} (one step of delay "
                          f"per layer)")
    return {"input": spikes.astype(np.int32), "steps_per_sample": W, "layers": layers}


def _recorder(ref_shapes: list, in_shapes: list, steps: int):
    """(process, model class) of a recorder: RefPort i reads a Var after each step (post-management,
    as Lava's Monitor does), InPort i receives an OutPort's data of the step; each into a Var
    [steps, *shape]. One recorder per network instead of one Monitor per probe (a Monitor process
    holds one probe, and every process costs time at every step)."""
    from lava.magma.core.decorator import implements, requires
    from lava.magma.core.model.py.model import PyLoihiProcessModel
    from lava.magma.core.model.py.ports import PyInPort, PyRefPort
    from lava.magma.core.model.py.type import LavaPyType
    from lava.magma.core.process.ports.ports import InPort, RefPort
    from lava.magma.core.process.process import AbstractProcess
    from lava.magma.core.process.variable import Var
    from lava.magma.core.resources import CPU
    from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

    class Recorder(AbstractProcess):
        def __init__(self):
            super().__init__()
            for i, shape in enumerate(ref_shapes):
                setattr(self, f"ref_{i}", RefPort(shape=shape))
                setattr(self, f"ref_data_{i}", Var(shape=(steps,) + shape, init=0))
            for i, shape in enumerate(in_shapes):
                setattr(self, f"in_{i}", InPort(shape=shape))
                setattr(self, f"in_data_{i}", Var(shape=(steps,) + shape, init=0))

    def post_guard(self):
        return True

    def run_post_mgmt(self):
        for i in range(len(ref_shapes)):
            getattr(self, f"ref_data_{i}")[self.time_step - 1] = getattr(self, f"ref_{i}").read()

    def run_spk(self):
        for i in range(len(in_shapes)):
            getattr(self, f"in_data_{i}")[self.time_step - 1] = getattr(self, f"in_{i}").recv()

    attrs = {"post_guard": post_guard, "run_post_mgmt": run_post_mgmt, "run_spk": run_spk}
    for i in range(len(ref_shapes)):
        attrs[f"ref_{i}"] = LavaPyType(PyRefPort.VEC_DENSE, np.int32)
        attrs[f"ref_data_{i}"] = LavaPyType(np.ndarray, np.int32)
    for i in range(len(in_shapes)):
        attrs[f"in_{i}"] = LavaPyType(PyInPort.VEC_DENSE, np.int32)
        attrs[f"in_data_{i}"] = LavaPyType(np.ndarray, np.int32)
    model = type("PyRecorderModel", (PyLoihiProcessModel,), attrs)
    model = implements(proc=Recorder, protocol=LoihiProtocol)(requires(CPU)(model))
    return Recorder(), model


def run_network(net: dict, record_u: bool, reset: str = "set") -> tuple[dict, dict]:
    """Build one network in Lava, run every sample, return ({name: array}, info)."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi1SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer
    from lava.proc.lif.process import LIF
    from lava.utils.weightutils import SignMode

    t_build = time.perf_counter()
    spikes = net["input"]
    T, B, n_in = spikes.shape
    W = net["steps_per_sample"]
    total = B * W
    data = np.zeros((n_in, total), dtype=np.int32)  # RingBuffer: time is the last axis
    for b in range(B):
        data[:, b * W:b * W + T] = spikes[:, b, :].T
    source = RingBuffer(data=data)
    # The OutPorts whose point-wise sum is the previous layer's spike vector (an InPort adds what
    # all the OutPorts connected to it send).
    src_ports = [source.s_out]
    lifs, denses = [], []
    for L in net["layers"]:
        n = L["weights"].shape[0]
        layer_lifs = []
        for g in range(L["vth"].shape[0]):
            mine = L["group"] == g
            # The layer's full width in every group's LIF, the other groups' neurons inert (no weights,
            # no bias: u = v = 0 and 0 > vth << 6 never spikes), so the next layer's Dense can read
            # the sum of all groups' s_out as one spike vector.
            lif = LIF(shape=(n,), u=0, v=0, du=int(L["du"]), dv=int(L["dv"][g]), vth=int(L["vth"][g]),
                      bias_mant=np.where(mine, L["bias_mant"], 0).astype(np.int32),
                      bias_exp=np.where(mine, L["bias_exp"], 0).astype(np.int32))
            # MIXED whatever the signs: Lava then keeps even weights in [-256, 254] unchanged; left to
            # determine_sign_mode, an all-negative matrix would be clipped at -255.
            dense = Dense(weights=np.where(mine[:, None], L["weights"], 0).astype(np.int32),
                          weight_exp=int(L["weight_exp"]), sign_mode=SignMode.MIXED, num_weight_bits=8)
            for port in src_ports:
                port.connect(dense.s_in)
            dense.a_out.connect(lif.a_in)
            denses.append(dense)
            layer_lifs.append((lif, mine))
        lifs.append(layer_lifs)
        src_ports = [lif.s_out for lif, _ in layer_lifs]
    flat = [(k, g, lif, mine) for k, layer_lifs in enumerate(lifs) for g, (lif, mine) in enumerate(layer_lifs)]
    refs = [(k, g, "v", lif.v) for k, g, lif, _ in flat]
    if record_u:
        refs += [(k, g, "u", lif.u) for k, g, lif, _ in flat]
    ins = [(k, g, "spikes", lif.s_out) for k, g, lif, _ in flat]
    recorder, recorder_model = _recorder([r[3].shape for r in refs], [i[3].shape for i in ins], total)
    for i, (*_, var) in enumerate(refs):
        getattr(recorder, f"ref_{i}").connect_var(var)
    for i, (*_, port) in enumerate(ins):
        port.connect(getattr(recorder, f"in_{i}"))
    anchor = lifs[-1][0][0]
    build_s = time.perf_counter() - t_build
    t_run = time.perf_counter()
    # Keyed by the instance: Lava's compiler then takes this model without searching the recorder's
    # folder for process models (it would import every module beside this script).
    cfg = Loihi1SimCfg(select_tag=SELECT_TAG, exception_proc_model_map={recorder: recorder_model})
    L = len(lifs)
    try:
        if reset == "gap":
            anchor.run(condition=RunSteps(num_steps=total), run_cfg=cfg)
        else:
            for _ in range(B):
                # Layer k's first real step is Lava step k + 2 of the sample (one step of delay per
                # Dense, the input's included); before it, it only integrates its bias and the
                # previous sample's tail. Zeroing its u and v after step k + 1 starts it from the
                # reset state, with the Dense already holding the previous layer's first real output.
                for k in range(L):
                    anchor.run(condition=RunSteps(num_steps=1), run_cfg=cfg)
                    for lif, _ in lifs[k]:
                        lif.u.set(np.zeros(lif.u.shape))
                        lif.v.set(np.zeros(lif.v.shape))
                anchor.run(condition=RunSteps(num_steps=W - L), run_cfg=cfg)
        got = [np.asarray(getattr(recorder, f"ref_data_{i}").get()) for i in range(len(refs))]
        got += [np.asarray(getattr(recorder, f"in_data_{i}").get()) for i in range(len(ins))]
    finally:
        anchor.stop()
    run_s = time.perf_counter() - t_run
    out = {}
    for k, layer_lifs in enumerate(lifs):
        n = net["layers"][k]["weights"].shape[0]
        out[f"l{k}_spikes"] = np.zeros((total, n), np.uint8)
        out[f"l{k}_v"] = np.zeros((total, n), np.int32)
        if record_u:
            out[f"l{k}_u"] = np.zeros((total, n), np.int32)
    for (k, g, name, _), vals in zip(refs + ins, got):
        mine = lifs[k][g][1]
        if not np.array_equal(vals, np.round(vals)):
            raise RuntimeError(f"layer {k}: Lava recorded a non-integer {name}")
        if vals[:, ~mine].any():
            raise RuntimeError(f"layer {k} group {g}: an inert neuron has {name} != 0")
        out[f"l{k}_{name}"][:, mine] = vals[:, mine].astype(np.int64)
    for key in list(out):
        out[key] = out[key].reshape(B, W, -1)
    info = {"lava_processes": 2 + len(denses) + len(flat), "lif_processes": [len(l) for l in lifs],
            "dense_processes": len(denses), "samples": B, "steps_per_sample": W, "reset": reset,
            "build_s": round(build_s, 3), "run_s": round(run_s, 3)}
    return out, info


def versions() -> dict:
    return {"lava-nc": metadata.version("lava-nc"), "numpy": np.__version__,
            "python": platform.python_version(), "select_tag": SELECT_TAG,
            "run_config": "Loihi1SimCfg"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inp", help="input .npz (format %r)" % RUN_FORMAT)
    ap.add_argument("out", help="output .npz")
    args = ap.parse_args(argv)
    with np.load(args.inp, allow_pickle=False) as f:
        data = {k: f[k] for k in f.files}
    fmt = str(data.get("format", np.array("")).reshape(()))
    if fmt != RUN_FORMAT:
        print(f"lava_runner: input format {fmt!r}, this runner reads {RUN_FORMAT!r}", file=sys.stderr)
        return 2
    try:
        nets = [read_network(data, i) for i in range(_scalar(data, "num_networks"))]
    except RunnerError as e:
        print(f"lava_runner: {e}", file=sys.stderr)
        return 2
    record_u = bool(np.asarray(data.get("record_u", True)).reshape(()))
    reset = str(np.asarray(data.get("reset", "set")).reshape(()))
    if reset not in RESETS:
        print(f"lava_runner: reset must be one of {RESETS}, got {reset!r}", file=sys.stderr)
        return 2
    out, infos = {}, []
    for i, net in enumerate(nets):
        arrays, info = run_network(net, record_u, reset)
        out.update({f"n{i}_{k}": v for k, v in arrays.items()})
        infos.append(info)
    meta = versions() | {"networks": infos}
    np.savez_compressed(args.out, format=np.array(RESULT_FORMAT), meta=np.array(json.dumps(meta)), **out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
