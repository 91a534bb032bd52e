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
    n{i}_l{k}_kind              str           "dense" (default) or "conv" (format 3)
    n{i}_l{k}_weights           int32 [N, M]  Dense weights (already the even values Lava keeps); conv:
                                int32 [C_out, kx, ky, C_in], Lava's Conv kernel (it convolves: flipped)
    n{i}_l{k}_weight_exp        int           Dense weight_exp (may be negative); conv: 0
    n{i}_l{k}_input_shape       int [3]       conv only: the input map as Lava holds it, (W, H, C)
    n{i}_l{k}_stride, _padding  int           conv only: the same in x and y
    n{i}_l{k}_bias_mant         int32 [N]     LIF bias_mant (13-bit signed)
    n{i}_l{k}_bias_exp          int32 [N]     LIF bias_exp (0..7)
    n{i}_l{k}_du                int           LIF du (shared by the layer)
    n{i}_l{k}_group             int32 [N]     LIF process (0..G-1) each neuron belongs to
    n{i}_l{k}_vth, n{i}_l{k}_dv int32 [G]     vth and dv of each of the layer's LIF processes
    n{i}_copies                 int C >= 1    samples run side by side (optional, default 1)
    n{i}_connection             str           "dense" (default) or "sparse": Lava's Dense or Sparse
    record_u                    bool          also record the current u
    reset                       str           how samples are separated: "set" (default) or "gap"
    host_io                     bool          reset and read back through the host's Var.set/get
                                              (optional, default false; slow, kept to measure)

Neurons are numbered as Lava holds them: a conv layer's N = Wo·Ho·C_out in (x, y, c) C-order, and
so is every layer read by a conv layer (the host permutes weights, biases and input to match).

A network file written by `spikeloop export --format lava` (format `NET_FORMAT`) holds one network's
keys without the `n{i}_` prefix and no input; `python -I lava_runner.py NET.npz OUT.npz --input
SPIKES.npy` runs it on the spikes [T, B, N_in] of the .npy (its traces are written as network 0).

**Copies** (C > 1): Lava spends most of a step passing messages between its processes, whatever
their width, so C samples run at once as C independent copies of every layer: each LIF process is
C layers wide (bias tiled) and each connection holds the block-diagonal matrix diag(W, ..., W)
(C blocks), so copy c of a layer sees only copy c of the layer before — per copy exactly the
computation of one sample. Samples b = r·C + c run in round r (B padded with zero-input samples to
a multiple of C; the padding is dropped). "sparse" uses `lava.proc.sparse.Sparse`, whose
`PySparseModelBitAcc` (tags bit_accurate_loihi, fixed_pt) applies the same clip, truncation and
exponent as `PyDenseModelBitAcc` to a scipy CSR matrix, so the block-diagonal matrix costs C times
one layer's weights, not C².

**Conv layers** become one Lava `Conv` process per group (the kernel's other output channels 0; a
group must hold whole channels) in place of the Dense, reading the flat spike vector of the layer
before through a reshape to (W, H, C) and writing its (Wo, Ho, C_out) output flattened into a 1-D
LIF; `Conv`, like `Dense`, delivers a step's sum one step late. With C copies a conv layer is one
`Conv` of C groups over a (W, H, C·C_in) map (the kernel tiled C times): the copy-major spike vector
goes in through reshape (C, W, H, C_in) → transpose → reshape, and the output comes back the same
way, so copy c's channels see only copy c.

Each layer becomes one `LIF` process per group (Lava's LIF holds vth and dv as one scalar per
process), each as wide as the layer, with one `Dense` process holding the group's rows of the weight
matrix (the other rows 0): the other groups' neurons in it stay at u = v = 0 and never spike, so the
sum of the groups' `s_out` (an InPort adds all OutPorts connected to it) is the layer's spike vector,
which every Dense of the next layer reads. A layer with G groups costs G LIF + G Dense. One recorder
process per network reads every LIF's v (and u) after each step and receives its s_out. The input
is a `RingBuffer` source holding every sample back to back. All samples run on one runtime, built
once, W steps per sample. Every Dense (the input's included) delivers its sum one step late, so layer
k (0-based) runs its first real step at Lava step k + 2 of the sample; before that it has only
integrated its bias and the previous sample's tail. With reset "set" the recorder, after Lava step
k + 1 of every sample, writes 0 to u and v of layer k's LIF processes through its RefPorts (and
reads them back): each layer then starts every sample from the reset state, exactly as a new
network would, while its Dense already holds the previous layer's first real output. The whole run
is one `run` call; the recorder saves its recordings to a file at the last step (with host_io the
host does both through Var.set / Var.get between one-step runs, as the runner first did). Reset "gap" only runs all B·W steps in
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

RUN_FORMAT = "spikeloop-lava-run 3"    # 2: optional copies / connection; 3: conv layers (1, 2 read too)
RUN_FORMATS = ("spikeloop-lava-run 1", "spikeloop-lava-run 2", RUN_FORMAT)
NET_FORMAT = "spikeloop-lava-net 2"    # one network, no input (spikeloop export --format lava); 2: conv layers
NET_FORMATS = ("spikeloop-lava-net 1", NET_FORMAT)
KINDS = ("dense", "conv")
RESULT_FORMAT = "spikeloop-lava-result 1"
SELECT_TAG = "fixed_pt"  # PyLifModelBitAcc + PyDenseModelBitAcc + PySendModelFixed
RESETS = ("set", "gap")
CONNECTIONS = ("dense", "sparse")


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


def _string(data, key: str, default: str) -> str:
    return str(np.asarray(data[key]).reshape(())) if key in data else default


def conv_output_shape(in_shape, kernel: int, stride: int, padding: int, out_channels: int) -> tuple:
    """(Wo, Ho, C_out) of a convolution of an (W, H, C) map, as Lava's Conv computes it."""
    w, h, _ = (int(v) for v in in_shape)
    return ((w + 2 * padding - kernel) // stride + 1, (h + 2 * padding - kernel) // stride + 1, out_channels)


def read_network(data, i: int | None) -> dict:
    """The i-th network of an input file (i None: a network file's unprefixed keys) as plain arrays,
    with its shapes checked."""
    p = "" if i is None else f"n{i}_"
    spikes = _array(data, p + "input", 3)
    if not np.isin(spikes, (0, 1)).all():
        raise RunnerError(f"{p}input must hold spikes 0/1")
    T, B, n_in = spikes.shape
    W = _scalar(data, p + "steps_per_sample")
    layers, fan_in = [], n_in
    for k in range(_scalar(data, p + "num_layers")):
        q = f"{p}l{k}_"
        kind = _string(data, q + "kind", "dense")
        if kind not in KINDS:
            raise RunnerError(f"{q}kind must be one of {KINDS}, got {kind!r}")
        L = {"kind": kind, "weights": _array(data, q + "weights", 2 if kind == "dense" else 4),
             "weight_exp": _scalar(data, q + "weight_exp"),
             "bias_mant": _array(data, q + "bias_mant", 1), "bias_exp": _array(data, q + "bias_exp", 1),
             "du": _scalar(data, q + "du"), "group": _array(data, q + "group", 1),
             "vth": _array(data, q + "vth", 1), "dv": _array(data, q + "dv", 1)}
        if kind == "conv":
            L["input_shape"] = tuple(int(v) for v in _array(data, q + "input_shape", 1))
            L["stride"], L["padding"] = _scalar(data, q + "stride"), _scalar(data, q + "padding")
            co, kx, ky, ci = L["weights"].shape
            if len(L["input_shape"]) != 3 or L["input_shape"][2] != ci or kx != ky or L["weight_exp"] != 0:
                raise RunnerError(f"{q}: a conv layer needs input_shape (W, H, C) with C = the kernel's C_in "
                                  f"({ci}), a square kernel and weight_exp 0 (Lava's Conv applies none)")
            if L["stride"] < 1 or not 0 <= L["padding"] < kx:
                raise RunnerError(f"{q}: stride must be >= 1 and padding in [0, kernel)")
            if int(np.prod(L["input_shape"])) != fan_in:
                raise RunnerError(f"{q}input_shape {L['input_shape']} holds {int(np.prod(L['input_shape']))} "
                                  f"inputs, the layer before has {fan_in}")
            L["output_shape"] = conv_output_shape(L["input_shape"], kx, L["stride"], L["padding"], co)
            if min(L["output_shape"]) < 1:
                raise RunnerError(f"{q}: the kernel does not fit the input map {L['input_shape']}")
            n = int(np.prod(L["output_shape"]))
        else:
            n = L["weights"].shape[0]
            if L["weights"].shape[1] != fan_in:
                raise RunnerError(f"{q}weights has fan-in {L['weights'].shape[1]}, the layer before has {fan_in}")
        for name in ("bias_mant", "bias_exp", "group"):
            if L[name].shape != (n,):
                raise RunnerError(f"{q}{name} must have shape ({n},), got {L[name].shape}")
        G = L["vth"].shape[0]
        if L["dv"].shape != (G,) or G < 1 or sorted(set(L["group"].tolist())) != list(range(G)):
            raise RunnerError(f"{q}group must number the layer's {G} LIF processes 0..{G - 1}, each used")
        if kind == "conv" and (L["group"].reshape(-1, L["output_shape"][2]) != L["group"][:L["output_shape"][2]]).any():
            raise RunnerError(f"{q}group: a conv layer's groups must hold whole output channels (one Conv "
                              f"process per group)")
        layers.append(L)
        fan_in = n
    if not layers:
        raise RunnerError(f"network {i} has no layers")
    if W < T + len(layers):
        raise RunnerError(f"{p}steps_per_sample={W} is below T + L = {T + len(layers)} (one step of delay "
                          f"per layer)")
    copies = _scalar(data, p + "copies") if p + "copies" in data else 1
    if copies < 1:
        raise RunnerError(f"{p}copies must be >= 1, got {copies}")
    connection = _string(data, p + "connection", "dense")
    if connection not in CONNECTIONS:
        raise RunnerError(f"{p}connection must be one of {CONNECTIONS}, got {connection!r}")
    return {"input": spikes.astype(np.int32), "steps_per_sample": W, "layers": layers, "copies": copies,
            "connection": connection}


def _recorder(ref_shapes: list, in_shapes: list, steps: int, period: int = 0, zero_at: dict | None = None,
              out_path: str | None = None):
    """(process, model class) of a recorder: RefPort i reads a Var after each step (post-management,
    as Lava's Monitor does), InPort i receives an OutPort's data of the step; each into a Var
    [steps, *shape]. One recorder per network instead of one Monitor per probe (a Monitor process
    holds one probe, and every process costs time at every step).

    zero_at {ref index: position p}: after reading Var i at step p (1-based) of every `period` steps,
    write zeros to it through the RefPort and read it back (the read is served after the write:
    one FIFO channel), so the Var is 0 before the next step starts. out_path: at the last step, save
    every recording to this .npz (ref_i, in_i) from inside the recorder. Both replace the host's
    `Var.set` / `Var.get`, which Lava 0.10.0 carries one element per channel message (measured:
    they were most of the run time; experiments/vendor_check.py --bench)."""
    from lava.magma.core.decorator import implements, requires
    from lava.magma.core.model.py.model import PyLoihiProcessModel
    from lava.magma.core.model.py.ports import PyInPort, PyRefPort
    from lava.magma.core.model.py.type import LavaPyType
    from lava.magma.core.process.ports.ports import InPort, RefPort
    from lava.magma.core.process.process import AbstractProcess
    from lava.magma.core.process.variable import Var
    from lava.magma.core.resources import CPU
    from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

    zero_at = dict(zero_at or {})
    # With out_path the recordings stay in the model's own arrays; the Vars are never read.
    var_steps = 1 if out_path else steps

    class Recorder(AbstractProcess):
        def __init__(self):
            super().__init__()
            for i, shape in enumerate(ref_shapes):
                setattr(self, f"ref_{i}", RefPort(shape=shape))
                setattr(self, f"ref_data_{i}", Var(shape=(var_steps,) + shape, init=0))
            for i, shape in enumerate(in_shapes):
                setattr(self, f"in_{i}", InPort(shape=shape))
                setattr(self, f"in_data_{i}", Var(shape=(var_steps,) + shape, init=0))

    def post_guard(self):
        return True

    def _store(self, name: str, shape: tuple, t: int, value) -> None:
        if out_path is None:
            getattr(self, name)[t] = value
            return
        rec = self.__dict__.setdefault("_rec", {})
        if name not in rec:
            rec[name] = np.zeros((steps,) + tuple(shape), np.int32)
        rec[name][t] = value

    def run_post_mgmt(self):
        t = self.time_step - 1
        for i, shape in enumerate(ref_shapes):
            port = getattr(self, f"ref_{i}")
            _store(self, f"ref_data_{i}", shape, t, port.read())
            if i in zero_at and t % period + 1 == zero_at[i]:
                port.write(np.zeros(shape, np.int32))
                if np.any(port.read()):
                    raise RuntimeError(f"recorder: Var {i} is not 0 after writing 0 at step {t + 1}")
        if out_path is not None and self.time_step == steps:
            np.savez(out_path, **{k.replace("_data", ""): v for k, v in self._rec.items()})

    def run_spk(self):
        for i, shape in enumerate(in_shapes):
            _store(self, f"in_data_{i}", shape, self.time_step - 1, getattr(self, f"in_{i}").recv())

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


def run_network(net: dict, record_u: bool, reset: str = "set", host_io: bool = False,
                workdir: str = ".") -> tuple[dict, dict]:
    """Build one network in Lava, run every sample, return ({name: array}, info).

    host_io: reset u, v and fetch the recordings from the host with Lava's `Var.set` / `Var.get`
    (one channel message per element; kept to measure against) instead of inside the recorder
    (`_recorder`); workdir: where the recorder writes its file."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi1SimCfg
    from lava.proc.conv.process import Conv
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer
    from lava.proc.lif.process import LIF
    from lava.utils.weightutils import SignMode

    t_build = time.perf_counter()
    spikes = net["input"]
    T, B, n_in = spikes.shape
    W = net["steps_per_sample"]
    C = net.get("copies", 1)
    sparse = net.get("connection", "dense") == "sparse"
    R = -(-B // C)        # rounds: sample b = r * C + c runs in round r as copy c
    total = R * W
    padded = np.zeros((T, R * C, n_in), dtype=np.int32)
    padded[:, :B] = spikes
    data = np.zeros((C * n_in, total), dtype=np.int32)  # RingBuffer: time is the last axis
    for r in range(R):
        for c in range(C):
            data[c * n_in:(c + 1) * n_in, r * W:r * W + T] = padded[:, r * C + c, :].T
    source = RingBuffer(data=data)
    if sparse:
        import scipy.sparse
        from lava.proc.sparse.process import Sparse

    def connection(w: np.ndarray):
        """diag(w, ..., w) (C blocks) as a Dense or Sparse process (see the module docstring)."""
        kw = dict(weight_exp=int(L["weight_exp"]), sign_mode=SignMode.MIXED, num_weight_bits=8)
        if sparse:
            return Sparse(weights=scipy.sparse.block_diag([scipy.sparse.csr_matrix(w)] * C, format="csr",
                                                          dtype=np.int32), **kw)
        return Dense(weights=np.kron(np.eye(C, dtype=np.int32), w).astype(np.int32) if C > 1 else w, **kw)
    # The OutPorts whose point-wise sum is the previous layer's spike vector (an InPort adds what
    # all the OutPorts connected to it send).
    src_ports = [source.s_out]
    lifs, denses = [], []
    for L in net["layers"]:
        conv = L["kind"] == "conv"
        n = int(np.prod(L["output_shape"])) if conv else L["weights"].shape[0]
        layer_lifs = []
        for g in range(L["vth"].shape[0]):
            mine = L["group"] == g
            # The layer's full width in every group's LIF, the other groups' neurons inert (no weights,
            # no bias: u = v = 0 and 0 > vth << 6 never spikes), so the next layer's Dense can read
            # the sum of all groups' s_out as one spike vector.
            lif = LIF(shape=(C * n,), u=0, v=0, du=int(L["du"]), dv=int(L["dv"][g]), vth=int(L["vth"][g]),
                      bias_mant=np.tile(np.where(mine, L["bias_mant"], 0), C).astype(np.int32),
                      bias_exp=np.tile(np.where(mine, L["bias_exp"], 0), C).astype(np.int32))
            if conv:  # neurons in (x, y, c) order: channel = index % C_out; the group's channels only
                chans = mine[:L["output_shape"][2]]
                kernel = np.where(chans[:, None, None, None], L["weights"], 0).astype(np.int32)
                (w, h, ci), (wo, ho, co) = L["input_shape"], L["output_shape"]
                # C copies as C groups of one Conv: copy c's channels are c·C_in.. of a (W, H, C·C_in)
                # map, gathered from the copy-major spike vector (and scattered back) by virtual ports
                syn = Conv(weight=np.tile(kernel, (C, 1, 1, 1)), input_shape=(w, h, C * ci), padding=L["padding"],
                           stride=L["stride"], groups=C)
                for port in src_ports:
                    port.reshape((C, w, h, ci)).transpose([1, 2, 0, 3]).reshape((w, h, C * ci)).connect(syn.s_in)
                syn.a_out.reshape((wo, ho, C, co)).transpose([2, 0, 1, 3]).flatten().connect(lif.a_in)
            else:
                # MIXED whatever the signs: Lava then keeps even weights in [-256, 254] unchanged; left to
                # determine_sign_mode, an all-negative matrix would be clipped at -255.
                syn = connection(np.where(mine[:, None], L["weights"], 0).astype(np.int32))
                for port in src_ports:
                    port.connect(syn.s_in)
                syn.a_out.connect(lif.a_in)
            denses.append(syn)
            layer_lifs.append((lif, np.tile(mine, C)))
        lifs.append(layer_lifs)
        src_ports = [lif.s_out for lif, _ in layer_lifs]
    flat = [(k, g, lif, mine) for k, layer_lifs in enumerate(lifs) for g, (lif, mine) in enumerate(layer_lifs)]
    # u is always read: the recorder zeroes it at each sample's start (it is written out if record_u)
    refs = [(k, g, "v", lif.v) for k, g, lif, _ in flat] + [(k, g, "u", lif.u) for k, g, lif, _ in flat]
    ins = [(k, g, "spikes", lif.s_out) for k, g, lif, _ in flat]
    L = len(lifs)
    # Layer k's first real step is Lava step k + 2 of the sample (one step of delay per Dense, the
    # input's included); before it, it only integrates its bias and the previous sample's tail.
    # Zeroing its u and v after step k + 1 starts it from the reset state, with the Dense already
    # holding the previous layer's first real output.
    zero_at = {i: k + 1 for i, (k, *_) in enumerate(refs)} if reset == "set" and not host_io else None
    rec_path = None if host_io else os.path.join(workdir, f"recorder-{os.getpid()}-{id(net)}.npz")
    recorder, recorder_model = _recorder([r[3].shape for r in refs], [i[3].shape for i in ins], total, W,
                                         zero_at, rec_path)
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
    try:
        if reset == "gap" or not host_io:
            anchor.run(condition=RunSteps(num_steps=total), run_cfg=cfg)
        else:  # the host sets u, v (Lava's Var.set: one channel message per element)
            for _ in range(R):
                for k in range(L):
                    anchor.run(condition=RunSteps(num_steps=1), run_cfg=cfg)
                    for lif, _ in lifs[k]:
                        lif.u.set(np.zeros(lif.u.shape))
                        lif.v.set(np.zeros(lif.v.shape))
                anchor.run(condition=RunSteps(num_steps=W - L), run_cfg=cfg)
        if host_io:
            got = [np.asarray(getattr(recorder, f"ref_data_{i}").get()) for i in range(len(refs))]
            got += [np.asarray(getattr(recorder, f"in_data_{i}").get()) for i in range(len(ins))]
    finally:
        anchor.stop()
    if not host_io:
        with np.load(rec_path, allow_pickle=False) as f:
            got = [f[f"ref_{i}"] for i in range(len(refs))] + [f[f"in_{i}"] for i in range(len(ins))]
        os.remove(rec_path)
    if not record_u:
        got = got[:len(flat)] + got[2 * len(flat):]
        refs = refs[:len(flat)]
    run_s = time.perf_counter() - t_run
    out = {}
    for k, layer_lifs in enumerate(lifs):
        n = C * net["layers"][k]["group"].shape[0]
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
    for key in list(out):  # [R·W, C·n] -> [R·C, W, n] -> the B real samples
        a = out[key].reshape(R, W, C, -1).transpose(0, 2, 1, 3)
        out[key] = np.ascontiguousarray(a.reshape(R * C, W, -1)[:B])
    info = {"lava_processes": 2 + len(denses) + len(flat), "lif_processes": [len(l) for l in lifs],
            "dense_processes": sum(L["kind"] == "dense" for L in net["layers"] for _ in range(L["vth"].shape[0])),
            "conv_processes": sum(L["kind"] == "conv" for L in net["layers"] for _ in range(L["vth"].shape[0])), "connection": "sparse" if sparse else "dense", "copies": C,
            "rounds": R, "lava_steps": total, "samples": B, "steps_per_sample": W, "reset": reset,
            "host_io": host_io,
            "build_s": round(build_s, 3), "run_s": round(run_s, 3)}
    return out, info


def versions() -> dict:
    return {"lava-nc": metadata.version("lava-nc"), "numpy": np.__version__,
            "python": platform.python_version(), "select_tag": SELECT_TAG,
            "run_config": "Loihi1SimCfg"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inp", help="input .npz (format %r) or network file (%r, with --input)" % (RUN_FORMAT, NET_FORMAT))
    ap.add_argument("out", help="output .npz")
    ap.add_argument("--input", default=None, help="for a network file: input spikes [T, B, N_in] 0/1 (.npy)")
    ap.add_argument("--copies", type=int, default=None, help="for a network file: samples side by side")
    ap.add_argument("--connection", choices=CONNECTIONS, default=None, help="for a network file: Dense or Sparse")
    args = ap.parse_args(argv)
    with np.load(args.inp, allow_pickle=False) as f:
        data = {k: f[k] for k in f.files}
    fmt = str(data.get("format", np.array("")).reshape(()))
    if fmt in NET_FORMATS:
        if args.input is None:
            print(f"lava_runner: {args.inp} is a network file ({NET_FORMAT!r}): give its input with --input "
                  f"SPIKES.npy", file=sys.stderr)
            return 2
        net = {f"n0_{k}": v for k, v in data.items() if k not in ("format", "meta")}
        net["n0_input"] = np.load(args.input, allow_pickle=False)
        if net["n0_input"].ndim == 3:
            net["n0_steps_per_sample"] = np.array(net["n0_input"].shape[0] + _scalar(data, "num_layers"))
        for key, val in (("copies", args.copies), ("connection", args.connection)):
            if val is not None:
                net[f"n0_{key}"] = np.array(val)
        data = {"format": np.array(RUN_FORMAT), "num_networks": np.array(1)} | net
    elif fmt not in RUN_FORMATS:
        print(f"lava_runner: input format {fmt!r}, this runner reads {RUN_FORMAT!r} (or {NET_FORMAT!r} with "
              f"--input)", file=sys.stderr)
        return 2
    elif args.input is not None:
        print("lava_runner: --input applies to a network file only", file=sys.stderr)
        return 2
    try:
        nets = [read_network(data, i) for i in range(_scalar(data, "num_networks"))]
    except RunnerError as e:
        print(f"lava_runner: {e}", file=sys.stderr)
        return 2
    record_u = bool(np.asarray(data.get("record_u", True)).reshape(()))
    reset = str(np.asarray(data.get("reset", "set")).reshape(()))
    host_io = bool(np.asarray(data.get("host_io", False)).reshape(()))
    if reset not in RESETS:
        print(f"lava_runner: reset must be one of {RESETS}, got {reset!r}", file=sys.stderr)
        return 2
    out, infos = {}, []
    for i, net in enumerate(nets):
        arrays, info = run_network(net, record_u, reset, host_io, os.path.dirname(os.path.abspath(args.out)))
        out.update({f"n{i}_{k}": v for k, v in arrays.items()})
        infos.append(info)
    meta = versions() | {"networks": infos}
    tmp = args.out + ".tmp"
    with open(tmp, "wb") as fh:  # atomic: a reader never sees half a file
        np.savez_compressed(fh, format=np.array(RESULT_FORMAT), meta=np.array(json.dumps(meta)), **out)
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
