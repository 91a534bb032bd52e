"""Export a model spec to NIR (nir >= 1.0.6) and import NIR graphs into a model spec.

Time constants (docs/neuron_semantics.md, "Time constants"): NIR's neurons are ODEs, spikeloop's
are discrete maps. The one convention is forward Euler with the graph's step `dt_s`
(`snn.spec.beta_from_tau`/`tau_from_beta`) — how NIR's consumers (snnTorch's `import_from_nir`,
Norse) discretise NIR's LIF — so that a consumer stepping with the same `dt_s` gets the spec's
update exactly:

    LIF      tau = dt/(1 − β), r = tau/dt, v_leak = 0          → v = β·v + I
    CubaLIF  tau_syn = dt/(1 − α), w_in = tau_syn/dt,
             tau_mem = dt/(1 − β), r = tau_mem/dt               → I = α·I + x;  v = β·v + I
    IF       (β = 1) r = 1/dt                                   → v = v + I
    RLeaky   a sub-graph {input → lif → output, lif → w_rec → lif} (snnTorch's layout);
             w_rec is Affine (dense, with bias) or Linear(diag(V)) (elementwise)

Every neuron node has `v_reset = 0` and metadata `{"spikeloop_reset": "subtract"|"zero", "dt_s": dt}`.
NIR has no subtractive reset: a consumer that ignores the metadata simulates **reset to v_reset = 0**
(immediately after the spike), which reproduces spikeloop's `zero` reset exactly for `leaky` layers
but not `subtract`; `spikeloop` reads the metadata back and restores `subtract`.

Targets (`TARGETS`, `spikeloop export --nir-target`): `generic` writes the graph above; the others
write the same network in the form one consumer's importer reads right, working around what it
assumes or drops (measured per neuron kind and reset in tests/test_nir_interop.py):
`snntorch` (its importer hard-codes dt = 1e-4 s), `norse` (its LIF ignores `r`: `r = 1` with
tau/dt folded into the weights in front), `nirtorch` (nirtorch 2.6's default Affine map drops the
bias: Linear nodes, the bias moved into the next LIF's `v_leak = r·b`).

Graph metadata (JSON-compatible scalars; the encoder as a JSON string): `dt_s` (the Euler step of
the time constants), `model_dt_s` (the spec's own dt_s), `num_steps`, `name`, `encoder`,
`spikeloop_nir_version`, `nir_target`, `discretization`. Import refuses a graph that records no
dt anywhere unless `dt_s` is given. Max pooling has no NIR node and is refused, and so are weights
holding NaN or Inf, on export and on import (`NIRError` naming the tensor and node). `write_nir`
writes through `snn.atomic` (unique temporary name, fsync, rename); `read_nir` reads a file in a
forked child with a time limit (a damaged HDF5 file can hang libhdf5). docs/nir_interop.md has the
targets and what each consumer reproduces.
"""

from __future__ import annotations

import ast
import json
import math
import multiprocessing
from dataclasses import dataclass
from pathlib import Path

import nir
import numpy as np
import torch

from snn.atomic import atomic_path
from snn.finite import require_finite
from snn.model import build_model
from snn.spec import AvgPool2d, Conv2d, Flatten, Leaky, Linear, MaxPool2d, ModelSpec, RLeaky, Synaptic

NIR_EXPORT_VERSION = 2  # 2: encoder as JSON, model_dt_s, nir_target; 1 wrote the encoder as a Python repr
READABLE_VERSIONS = (1, 2)
RESET_KEY = "spikeloop_reset"
SNNTORCH_DT_S = 1e-4  # the dt snnTorch 1.0's import_from_nir hard-codes (snntorch/import_nir.py)
# The step the time constants are written for when none is asked for: snnTorch's, so that its importer
# runs the CLI's default export as spikeloop does (leaky layers with reset zero, spike for spike). The
# model's own step is kept in the metadata as `model_dt_s`.
DEFAULT_DT_S = SNNTORCH_DT_S
DISCRETIZATION = "forward_euler"


class NIRError(ValueError):
    """A model or graph that cannot be mapped (names the node/layer and why)."""


@dataclass(frozen=True)
class NIRTarget:
    """How `export_nir` writes a graph for one consumer.

    fixed_dt_s: the Euler step the consumer hard-codes (None: `dt_s`, default `DEFAULT_DT_S`).
    lif_gain: "r" — LIF input gain as NIR's `r = tau/dt`; "weights" — `r = 1` and tau/dt folded
        into the weights (and biases) of the weight node in front (for a consumer that ignores r).
    bias: "affine" — Affine nodes; "v_leak" — Linear nodes, a bias b moved into the next LIF's
        `v_leak = r·b` (for a consumer that drops Affine biases).
    pool_as_conv: AvgPool2d written as the equal Conv2d (weight 1/k² from channel c to c), for a
        consumer that has no AvgPool2d mapping.
    one_threshold: refuse layers whose neurons have different thresholds (the consumer asserts one).
    if_nodes: whether the consumer maps NIR's IF (β = 1 layers) right; refused otherwise.
    exact: the (spiking layer type, reset) pairs the consumer reproduces spike for spike, measured
        by tests/test_nir_interop.py (which fails if a consumer starts or stops matching).
    consumer: the package (and entry point) this target is for."""

    name: str
    fixed_dt_s: float | None
    lif_gain: str
    bias: str
    pool_as_conv: bool
    one_threshold: bool
    if_nodes: bool
    exact: frozenset
    consumer: str

    def __post_init__(self):
        if self.lif_gain not in ("r", "weights"):
            raise ValueError(f"NIRTarget.lif_gain must be 'r' or 'weights', got {self.lif_gain!r}")
        if self.bias not in ("affine", "v_leak"):
            raise ValueError(f"NIRTarget.bias must be 'affine' or 'v_leak', got {self.bias!r}")


_ALL = frozenset((k, r) for k in ("leaky", "synaptic", "rleaky") for r in ("zero", "subtract"))
TARGETS: dict[str, NIRTarget] = {t.name: t for t in (
    NIRTarget("generic", None, "r", "affine", False, False, True, _ALL,
              "spikeloop's import_nir (reads the reset metadata)"),
    NIRTarget("snntorch", SNNTORCH_DT_S, "r", "affine", False, True, False, frozenset({("leaky", "zero")}),
              "snntorch 1.0 snntorch.import_nir.import_from_nir"),
    NIRTarget("norse", None, "weights", "affine", True, False, True, frozenset({("leaky", "zero")}),
              "norse 1.1.0 norse.torch.from_nir(graph, dt=<dt_s>)"),
    NIRTarget("nirtorch", None, "r", "v_leak", False, False, True, frozenset({("leaky", "zero")}),
              "nirtorch 2.6 nirtorch.nir_to_torch with its default maps and a forward-Euler neuron map"),
)}


def target_report(spec: ModelSpec, target: str) -> list[dict]:
    """Per spiking layer: whether `target`'s consumer reproduces it spike for spike
    (`NIRTarget.exact`), as [{"layer": i, "type": ..., "reset": ..., "exact": bool}]."""
    t = _target(target)
    return [{"layer": i, "type": l.type_name, "reset": l.reset, "exact": (l.type_name, l.reset) in t.exact}
            for i, l in enumerate(spec.layers) if l.spiking]


def _target(name: str) -> NIRTarget:
    try:
        return TARGETS[name]
    except KeyError:
        raise NIRError(f"unknown NIR target {name!r}; known: {', '.join(TARGETS)}") from None


def _tau(decay: np.ndarray, dt: float) -> np.ndarray:
    """snn.spec.tau_from_beta elementwise, the same float64 operation (dt/(1 − β)); inf for decay 1.
    Vectorised: a NIR layer may hold millions of neurons."""
    decay = np.asarray(decay, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(decay >= 1.0, np.inf, dt / (1.0 - decay))


def _export_dt(spec: ModelSpec, dt_s, t: NIRTarget) -> float:
    if t.fixed_dt_s is not None:
        if dt_s is not None and float(dt_s) != t.fixed_dt_s:
            raise NIRError(f"NIR target {t.name!r}: {t.consumer} hard-codes dt = {t.fixed_dt_s:g} s, so dt_s "
                           f"must be {t.fixed_dt_s:g} or omitted, got {dt_s!r}")
        return t.fixed_dt_s
    dt = float(DEFAULT_DT_S if dt_s is None else dt_s)
    if not (dt > 0 and math.isfinite(dt)):
        raise NIRError(f"dt_s must be a positive number of seconds, got {dt_s!r}")
    return dt


def export_nir(spec: ModelSpec, state_dict: dict, dt_s: float | None = None,
               target: str = "generic") -> nir.NIRGraph:
    """The NIR graph of `spec` with trained `state_dict`.

    dt_s: the Euler step in seconds the time constants are written for (default `DEFAULT_DT_S`,
    1e-4, whatever the spec's own dt_s, which is recorded as `model_dt_s`; the `snntorch` target
    allows 1e-4 only). target: a name in `TARGETS` — the consumer whose importer the graph is written for."""
    t = _target(target)
    dt = _export_dt(spec, dt_s, t)
    require_finite(state_dict, "NIR export", NIRError)
    model = build_model(spec, state_dict, dtype=torch.float64)
    params = model.neuron_parameters()
    sd = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    shapes = spec.shapes()
    in_shapes = [spec.input_shape] + shapes[:-1]
    chain: list[list] = [["input", nir.Input(input_type={"input": np.array(spec.input_shape)}), None]]
    for i, layer in enumerate(spec.layers):
        where = f"layer {i} ({layer.type_name})"
        if isinstance(layer, Linear):
            w = sd[f"layers.{i}.weight"]
            node = (nir.Affine(weight=w, bias=sd[f"layers.{i}.bias"]) if layer.bias else nir.Linear(weight=w))
        elif isinstance(layer, Conv2d):
            bias = sd[f"layers.{i}.bias"] if layer.bias else np.zeros(layer.out_channels)
            node = nir.Conv2d(input_shape=tuple(in_shapes[i][1:]), weight=sd[f"layers.{i}.weight"],
                              stride=layer.stride, padding=layer.padding, dilation=1, groups=1, bias=bias)
        elif isinstance(layer, AvgPool2d):
            k, s = layer.kernel_size, layer.effective_stride
            if t.pool_as_conv:
                c = in_shapes[i][0]
                w = np.zeros((c, c, k, k))
                w[np.arange(c), np.arange(c)] = 1.0 / (k * k)
                node = nir.Conv2d(input_shape=tuple(in_shapes[i][1:]), weight=w, stride=s, padding=0, dilation=1,
                                  groups=1, bias=np.zeros(c))
            else:
                node = nir.AvgPool2d(kernel_size=np.array([k, k]), stride=np.array([s, s]), padding=np.array([0, 0]))
        elif isinstance(layer, MaxPool2d):
            raise NIRError(f"{where}: NIR 1.0 has no max-pooling node (only AvgPool2d/SumPool2d)")
        elif isinstance(layer, Flatten):
            node = nir.Flatten(input_type={"input": np.array(in_shapes[i])}, start_dim=0, end_dim=-1)
        elif layer.spiking:
            node = _neuron_node(layer, params[i], shapes[i], sd, i, dt, t)
        else:  # pragma: no cover - every spec layer type is handled above
            raise NIRError(f"{where}: no NIR mapping")
        chain.append([f"layer{i}", node, where])
    if t.lif_gain == "weights":
        _fold_lif_gain(chain, t)
    if t.bias == "v_leak":
        _move_bias_to_v_leak(chain, t)
    chain.append(["output", nir.Output(output_type={"output": np.array(shapes[-1])}), None])
    nodes = {name: node for name, node, _ in chain}
    edges = [(a[0], b[0]) for a, b in zip(chain[:-1], chain[1:])]
    meta = {"dt_s": dt, "model_dt_s": float(spec.dt_s), "num_steps": spec.num_steps,
            "spikeloop_nir_version": NIR_EXPORT_VERSION, "name": spec.name,
            "encoder": json.dumps(spec.encoder, sort_keys=True), "nir_target": t.name,
            "discretization": DISCRETIZATION}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def _neuron_node(layer, p: dict, shape, sd, i, dt, t: NIRTarget):
    shape = tuple(shape)
    where = f"layer {i} ({layer.type_name})"
    beta = p["beta"].numpy().reshape(shape)
    thr = p["threshold"].numpy().reshape(shape)
    meta = {RESET_KEY: layer.reset, "dt_s": dt}
    zeros = np.zeros(shape)
    if t.one_threshold and np.unique(thr).size > 1:
        raise NIRError(f"{where}: {t.consumer} needs one threshold per layer "
                       f"(it asserts np.unique(v_threshold).size == 1)")
    if isinstance(layer, Synaptic):
        alpha = p["alpha"].numpy().reshape(shape)
        if (alpha >= 1).any() or (beta >= 1).any():
            raise NIRError(f"{where}: alpha or beta = 1 has no finite CubaLIF time constant")
        tau_syn, tau_mem = _tau(alpha, dt), _tau(beta, dt)
        return nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=tau_mem / dt, v_leak=zeros, v_threshold=thr,
                           v_reset=zeros, w_in=tau_syn / dt, metadata=meta)
    if not t.if_nodes and (beta >= 1).any():
        raise NIRError(f"{where}: beta = 1 (a NIR IF node): {t.consumer} does not map IF right (snnTorch "
                       "1.0 maps it to Leaky(beta=0.9) and refuses r != 1)")
    lif = _lif(beta, thr, dt, meta, where)
    if not isinstance(layer, RLeaky):
        return lif
    n = shape[0]
    if layer.all_to_all:
        rec = nir.Affine(weight=sd[f"layers.{i}.recurrent.weight"], bias=sd[f"layers.{i}.recurrent.bias"])
    else:
        rec = nir.Linear(weight=np.diag(p["V"].numpy()))
    return nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([n])}), "lif": lif,
                               "w_rec": rec, "output": nir.Output(output_type={"output": np.array([n])})},
                        edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")],
                        metadata={RESET_KEY: layer.reset, "dt_s": dt, "spikeloop_type": "rleaky"})


def _lif(beta, thr, dt, meta, where):
    if (beta >= 1).all():
        return nir.IF(r=np.full(beta.shape, 1.0 / dt), v_threshold=thr, v_reset=np.zeros(beta.shape), metadata=meta)
    if (beta >= 1).any():
        raise NIRError(f"{where}: mixes beta = 1 and beta < 1; NIR needs one node type (IF or LIF) per layer")
    tau = _tau(beta, dt)
    return nir.LIF(tau=tau, r=tau / dt, v_leak=np.zeros(beta.shape), v_threshold=thr,
                   v_reset=np.zeros(beta.shape), metadata=meta)


def _lif_of(node):
    """The LIF node of a neuron entry (itself, or the LIF inside a recurrent sub-graph), else None."""
    if isinstance(node, nir.LIF):
        return node
    if isinstance(node, nir.NIRGraph) and isinstance(node.nodes.get("lif"), nir.LIF):
        return node.nodes["lif"]
    return None


def _scaled(node, gain: np.ndarray):
    """A weight node with its output rows (and bias) multiplied by `gain` (per output or scalar)."""
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = node.weight * gain.reshape(-1, 1)
        return nir.Affine(weight=w, bias=node.bias * gain.reshape(-1)) if isinstance(node, nir.Affine) \
            else nir.Linear(weight=w)
    g = float(gain.reshape(-1)[0])  # Conv2d: only a layer-wide scalar reaches here
    return nir.Conv2d(input_shape=node.input_shape, weight=node.weight * g, stride=node.stride,
                      padding=node.padding, dilation=node.dilation, groups=node.groups, bias=node.bias * g)


def _fold_lif_gain(chain: list, t: NIRTarget) -> None:
    """`r = 1` on every LIF, its r = tau/dt multiplied into the weight node in front (through
    Flatten/AvgPool2d when r is one value for the layer) and into a recurrent w_rec: the same
    network for a consumer whose LIF ignores r (Norse 1.1: v += dt/tau·(x − v))."""
    for j, (name, node, where) in enumerate(chain):
        lif = _lif_of(node)
        if lif is None:
            continue
        gain = np.asarray(lif.r, dtype=np.float64).reshape(-1)
        k = j - 1
        while isinstance(chain[k][1], (nir.Flatten, nir.AvgPool2d)):
            k -= 1
        front = chain[k][1]
        uniform = np.all(gain == gain[0])
        if not isinstance(front, (nir.Affine, nir.Linear, nir.Conv2d)) or (
                (k != j - 1 or isinstance(front, nir.Conv2d)) and not uniform):
            raise NIRError(f"{where}: NIR target {t.name!r} folds the LIF input gain r = tau/dt into the weights "
                           "in front, but there is no Linear/Conv2d layer directly in front (or r differs "
                           "between neurons behind a conv/pooling layer); use --nir-target generic")
        chain[k][1] = _scaled(front, gain if k == j - 1 and not isinstance(front, nir.Conv2d) else gain[:1])
        new_lif = nir.LIF(tau=lif.tau, r=np.ones_like(lif.r), v_leak=lif.v_leak, v_threshold=lif.v_threshold,
                          v_reset=lif.v_reset, metadata=dict(lif.metadata))
        if isinstance(node, nir.NIRGraph):
            sub = dict(node.nodes, lif=new_lif, w_rec=_scaled(node.nodes["w_rec"], gain))
            chain[j][1] = nir.NIRGraph(nodes=sub, edges=node.edges, metadata=dict(node.metadata))
        else:
            chain[j][1] = new_lif


def _move_bias_to_v_leak(chain: list, t: NIRTarget) -> None:
    """Every Affine written as Linear, its bias b moved into the next LIF as `v_leak = r·b` (forward
    Euler: tau dv/dt = v_leak − v + r·I adds dt/tau·v_leak = r·dt/tau·b per step, the bias through
    the input gain); a recurrent Affine's bias joins it. A bias that is zero simply goes."""
    for j, (name, node, where) in enumerate(chain):
        if not isinstance(node, nir.Affine):
            continue
        bias = np.asarray(node.bias, dtype=np.float64)
        nxt = chain[j + 1][1] if j + 1 < len(chain) else None
        lif = _lif_of(nxt)
        rec = nxt.nodes["w_rec"] if isinstance(nxt, nir.NIRGraph) else None
        if rec is not None and isinstance(rec, nir.Affine):
            bias = bias + np.asarray(rec.bias, dtype=np.float64)
        chain[j][1] = nir.Linear(weight=node.weight)
        if not np.any(bias):
            continue
        if lif is None:
            raise NIRError(f"{where}: NIR target {t.name!r} moves biases into the next LIF's v_leak, but "
                           f"the layer after it is not a LIF or recurrent LIF ({type(nxt).__name__}); "
                           "synaptic (CubaLIF) currents have no leak term to hold a bias")
        new_lif = nir.LIF(tau=lif.tau, r=lif.r, v_leak=np.asarray(lif.r) * bias.reshape(lif.r.shape),
                          v_threshold=lif.v_threshold, v_reset=lif.v_reset, metadata=dict(lif.metadata))
        if isinstance(nxt, nir.NIRGraph):
            sub = dict(nxt.nodes, lif=new_lif, w_rec=nir.Linear(weight=rec.weight))
            chain[j + 1][1] = nir.NIRGraph(nodes=sub, edges=nxt.edges, metadata=dict(nxt.metadata))
        else:
            chain[j + 1][1] = new_lif
    for j, (name, node, where) in enumerate(chain):  # a recurrent Affine after a bias-free Linear
        if isinstance(node, nir.NIRGraph) and isinstance(node.nodes.get("w_rec"), nir.Affine):
            rec = node.nodes["w_rec"]
            lif = _lif_of(node)
            sub = dict(node.nodes, w_rec=nir.Linear(weight=rec.weight),
                       lif=nir.LIF(tau=lif.tau, r=lif.r, v_leak=lif.v_leak + lif.r * rec.bias,
                                   v_threshold=lif.v_threshold, v_reset=lif.v_reset, metadata=dict(lif.metadata)))
            chain[j][1] = nir.NIRGraph(nodes=sub, edges=node.edges, metadata=dict(node.metadata))


def write_nir(graph: nir.NIRGraph, path: str | Path) -> Path:
    """Write with nir.write to a unique temporary name beside `path`, fsync, then rename over it
    (`snn.atomic.atomic_path`: a reader sees the old file or the whole new one)."""
    with atomic_path(path) as tmp:
        nir.write(str(tmp), graph)
    return Path(path)


# ------------------------------------------------------------------------------------------- import

def _read_timeout_s(size_bytes: int) -> float:
    """5 s plus 1 s per 10 MB: nir.read of a sound file reads far faster than 10 MB/s."""
    return 5.0 + size_bytes / 10e6


def _read_in_child(path: str, conn) -> None:
    try:
        conn.send((True, nir.read(path, type_check=False)))
    except BaseException as e:  # noqa: BLE001 - everything goes back to the parent as a message
        conn.send((False, f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


def read_nir(path: str | Path) -> nir.NIRGraph:
    """nir.read(path, type_check=False) in a forked child process with a time limit (`_read_timeout_s`).

    A damaged HDF5 file can send libhdf5 into a loop that never returns — measured: one flipped
    byte in the variable-length string heap behind `node/edges` (tests/test_fuzz_decoders.py found
    it) — or crash it, and neither can be stopped from Python in-process; the child is killed
    instead and the file refused with NIRError. Where fork is unavailable, nir.read in-process.
    NIR's own type inference is off: graphs from other tools fail it where they are still clear
    (Norse 1.1's Input type keeps the sample's batch axis, [1, N] in front of an Affine of N
    inputs); `import_nir` checks every node's shapes itself."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"NIR file not found: {path}")
    if "fork" not in multiprocessing.get_all_start_methods():  # pragma: no cover - Windows
        try:
            return nir.read(str(path), type_check=False)
        except Exception as e:  # h5py raises OSError, RuntimeError, KeyError, ... on damaged files
            raise NIRError(f"{path}: not a readable NIR file ({type(e).__name__}: {e})") from None
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_read_in_child, args=(str(path), send), daemon=True)
    proc.start()
    send.close()
    limit = _read_timeout_s(path.stat().st_size)
    try:
        if not recv.poll(limit):
            proc.kill()
            raise NIRError(f"{path}: not a readable NIR file (nir.read did not finish in {limit:.0f} s; a "
                           "damaged HDF5 file can make libhdf5 loop)")
        try:
            ok, payload = recv.recv()
        except EOFError:
            proc.join()
            raise NIRError(f"{path}: not a readable NIR file (the reader died, exit code {proc.exitcode})") from None
    finally:
        recv.close()
        proc.join()
    if not ok:
        raise NIRError(f"{path}: not a readable NIR file ({payload})")
    return payload


def _meta(node) -> dict:
    out = {}
    for k, v in (getattr(node, "metadata", None) or {}).items():
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, np.ndarray) and v.shape == ():
            v = v.item()
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v.decode() if isinstance(v, bytes) else v
    return out


def _chain(graph: nir.NIRGraph) -> list[str]:
    inputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]
    if len(inputs) != 1:
        raise NIRError(f"expected exactly one Input node, found {len(inputs)}")
    succ: dict[str, list[str]] = {}
    for a, b in graph.edges:
        succ.setdefault(a, []).append(b)
    order, cur, seen = [inputs[0]], inputs[0], {inputs[0]}
    while not isinstance(graph.nodes[cur], nir.Output):
        nxt = succ.get(cur, [])
        if len(nxt) != 1:
            raise NIRError(f"node {cur!r} has {len(nxt)} successors; only chains (feed-forward layer "
                           "sequences, recurrence inside sub-graphs) can be imported")
        cur = nxt[0]
        if cur in seen:
            raise NIRError(f"cycle through {cur!r} outside a sub-graph")
        seen.add(cur)
        order.append(cur)
    if len(seen) != len(graph.nodes):
        raise NIRError(f"nodes not on the input-output chain: {sorted(set(graph.nodes) - seen)}")
    return order


def _scalar_or_list(a: np.ndarray):
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    return float(a[0]) if np.all(a == a[0]) else tuple(float(x) for x in a)


def _shape_of(types: dict) -> tuple[int, ...]:
    return tuple(int(x) for x in np.asarray(next(iter(types.values()))).reshape(-1))


# Producers whose graphs need a correction before NIR's equations hold (`import_nir(producer=...)`):
# Norse 1.1.0's `to_nir` writes `tau = dt / tau_mem_inv` (norse/torch/utils/export_nir.py), i.e.
# dt·τ instead of τ, for LIF, CubaLIF (tau_mem and tau_syn) and LI; dividing by dt restores τ. And its
# LIFCell (written as CubaLIF with w_in = 1) adds the input to the current with gain 1, where NIR's
# forward Euler gives dt/τ_syn·w_in: the equal NIR node has w_in = τ_syn/dt.
PRODUCERS = {"nir": "a graph that follows NIR's equations (spikeloop, snnTorch, hand-written)",
             "norse": "Norse 1.1.0 norse.torch.to_nir(module, sample, dt): time constants written as dt·tau, "
                      "LIFCell's current gain 1 written as w_in = 1"}


def _from_producer(node, producer: str, dt: float):
    """`node` with the time constants it means, for graphs from `producer` (see PRODUCERS)."""
    if producer == "nir" or not isinstance(node, (nir.LIF, nir.CubaLIF)):
        return node
    if isinstance(node, nir.LIF):
        return nir.LIF(tau=np.asarray(node.tau, np.float64) / dt, r=node.r, v_leak=node.v_leak,
                       v_threshold=node.v_threshold, v_reset=node.v_reset, metadata=node.metadata)
    tau_syn = np.asarray(node.tau_syn, np.float64) / dt
    return nir.CubaLIF(tau_mem=np.asarray(node.tau_mem, np.float64) / dt, tau_syn=tau_syn, r=node.r,
                       v_leak=node.v_leak, v_threshold=node.v_threshold, v_reset=node.v_reset,
                       w_in=np.asarray(node.w_in, np.float64) * tau_syn / dt, metadata=node.metadata)


def import_nir(graph: nir.NIRGraph | str | Path, dt_s: float | None = None, num_steps: int | None = None,
               name: str = "nir", producer: str = "nir") -> tuple[ModelSpec, dict]:
    """A (ModelSpec, state_dict) from a NIR graph (an object or a file written by nir.write).

    dt_s: the Euler step the graph's time constants are discretised with (β = 1 − dt/τ, the one
    convention); default the graph's metadata `dt_s`, else the neurons' metadata `dt_s`. A graph
    that records none is refused unless `dt_s` is given: NIR's time constants are in seconds and
    mean nothing without the step (snnTorch's `export_to_nir` writes none and uses 1e-4 s).
    The spec's dt_s is the graph's `model_dt_s` when recorded (spikeloop's own files), else dt_s.
    Neuron input gains (r·dt/tau, w_in) are folded into the threshold, a LIF's `v_leak` into the bias
    of the Linear in front (b = v_leak/r). Reset: the node metadata `spikeloop_reset`, else `zero`
    (NIR's v_reset semantics; v_reset must be 0).
    producer: a key of `PRODUCERS`; "norse" corrects Norse 1.1's `to_nir` time constants (dt·τ)."""
    if producer not in PRODUCERS:
        raise NIRError(f"unknown NIR producer {producer!r}; known: {', '.join(PRODUCERS)}")
    if isinstance(graph, (str, Path)):
        if not Path(graph).exists():
            raise FileNotFoundError(f"NIR file not found: {graph}")
        graph = read_nir(graph)
    gmeta = _meta(graph)
    version = gmeta.get("spikeloop_nir_version")
    if version is not None and version not in READABLE_VERSIONS:
        raise NIRError(f"graph written by spikeloop NIR format version {version!r}; this spikeloop reads "
                       f"versions {', '.join(map(str, READABLE_VERSIONS))}")
    order = _chain(graph)
    dt = _import_dt(graph, gmeta, order, dt_s)
    model_dt = gmeta.get("model_dt_s", dt)
    try:
        model_dt = float(model_dt)
    except (TypeError, ValueError):
        raise NIRError(f"graph metadata model_dt_s={model_dt!r} is not a number") from None
    encoder = _encoder_of(gmeta, version)
    shape = _shape_of(graph.nodes[order[0]].input_type)
    input_shape = shape
    layers, tensors, node_of = [], {}, {}

    def add(layer, where):
        nonlocal shape
        try:
            shape = layer.output_shape(shape, where)
        except ValueError as e:
            raise NIRError(str(e)) from None
        layers.append(layer)

    for key in order[1:-1]:
        node, i = graph.nodes[key], len(layers)
        where = f"NIR node {key!r} ({type(node).__name__})"
        if isinstance(node, (nir.Affine, nir.Linear)):
            w = np.asarray(node.weight, dtype=np.float64)
            if w.ndim != 2:
                raise NIRError(f"{where}: weight must be 2-D, got shape {w.shape}")
            if shape != (w.shape[1],):
                if math.prod(shape) == w.shape[1]:
                    add(Flatten(), where)
                    i += 1
                else:
                    raise NIRError(f"{where}: expects {w.shape[1]} inputs, the previous node gives {shape}")
            has_bias = isinstance(node, nir.Affine)
            add(Linear(w.shape[1], w.shape[0], bias=has_bias), where)
            tensors[f"layers.{i}.weight"] = w
            if has_bias:
                tensors[f"layers.{i}.bias"] = np.asarray(node.bias, dtype=np.float64)
        elif isinstance(node, nir.Conv2d):
            w = np.asarray(node.weight, dtype=np.float64)
            kh, kw = w.shape[-2:]
            stride, pad = np.broadcast_to(node.stride, 2), np.broadcast_to(node.padding, 2)
            if (kh != kw or stride[0] != stride[1] or np.any(np.broadcast_to(node.dilation, 2) != 1)
                    or int(node.groups) != 1 or isinstance(node.padding, str) or pad[0] != pad[1]):
                raise NIRError(f"{where}: only square kernels, equal strides/padding, dilation 1 and groups 1 "
                               "are supported")
            add(Conv2d(w.shape[1], w.shape[0], int(kh), stride=int(stride[0]), padding=int(pad[0])), where)
            tensors[f"layers.{i}.weight"] = w
            tensors[f"layers.{i}.bias"] = np.asarray(node.bias, dtype=np.float64)
        elif isinstance(node, nir.AvgPool2d):
            k, s, pad = (np.broadcast_to(node.kernel_size, 2), np.broadcast_to(node.stride, 2),
                         np.broadcast_to(node.padding, 2))
            if k[0] != k[1] or s[0] != s[1] or np.any(pad != 0):
                raise NIRError(f"{where}: only square kernels, equal strides and no padding are supported")
            add(AvgPool2d(int(k[0]), int(s[0])), where)
        elif isinstance(node, nir.Flatten):
            if node.start_dim not in (0, -len(shape)) or node.end_dim != -1:
                raise NIRError(f"{where}: only full flattening (start_dim 0, end_dim -1) is supported")
            add(Flatten(), where)
        elif isinstance(node, (nir.LIF, nir.IF, nir.CubaLIF, nir.NIRGraph)):
            leak = {}
            add(_import_neuron(_from_producer(node, producer, dt), dt, where, tensors, i, leak), where)
            if "bias" in leak:
                _leak_into_bias(leak["bias"], layers, tensors, i, where)
        else:
            raise NIRError(f"{where}: node type not supported by spikeloop's importer")
        node_of.update({k: key for k in tensors if k not in node_of})
    require_finite({f"{k} (NIR node {node_of[k]!r})": v for k, v in tensors.items()}, "NIR graph", NIRError)
    steps = num_steps or int(gmeta.get("num_steps", 25))
    extra = {} if encoder is None else {"encoder": encoder}
    try:
        spec = ModelSpec(layers=tuple(layers), input_shape=input_shape, dt_s=model_dt, num_steps=steps,
                         name=str(gmeta.get("name", name)), **extra)
    except ValueError as e:
        raise NIRError(f"NIR graph: {e}") from None
    model = build_model(spec)
    sd = model.state_dict()
    for k, v in tensors.items():
        if k not in sd:
            raise NIRError(f"internal: no parameter {k} in the built model")
        if tuple(sd[k].shape) != v.shape:
            raise NIRError(f"parameter {k}: NIR shape {v.shape} does not match the layer ({tuple(sd[k].shape)})")
        sd[k] = torch.as_tensor(v, dtype=sd[k].dtype)
    return spec, sd


def _import_dt(graph, gmeta: dict, order: list[str], dt_s) -> float:
    where = "dt_s argument"
    if dt_s is None:
        dt_s, where = gmeta.get("dt_s"), "graph metadata dt_s"
    if dt_s is None:
        node_dts = {_meta(graph.nodes[k]).get("dt_s") for k in order} - {None}
        if len(node_dts) > 1:
            raise NIRError(f"the neurons' metadata record different dt_s {sorted(node_dts)} and the graph none; "
                           "pass dt_s")
        dt_s, where = (node_dts.pop(), "node metadata dt_s") if node_dts else (None, "")
    if dt_s is None:
        raise NIRError("the NIR graph records no time step (no dt_s in its or its neurons' metadata); its time "
                       "constants are in seconds, so the decay per step depends on the step: pass dt_s, the step "
                       f"the graph was made for (snnTorch's export_to_nir assumes {SNNTORCH_DT_S:g} s)")
    try:
        dt = float(dt_s)
    except (TypeError, ValueError):
        raise NIRError(f"{where}={dt_s!r} is not a number") from None
    if not (dt > 0 and math.isfinite(dt)):
        raise NIRError(f"{where} must be a positive number of seconds, got {dt_s!r}")
    return dt


def _encoder_of(gmeta: dict, version) -> dict | None:
    """The spec's encoder from the metadata: a JSON string (version 2), a Python dict repr (1)."""
    text = gmeta.get("encoder")
    if text is None or version is None:  # a foreign graph: the spec's default encoder
        return None
    try:
        enc = json.loads(text) if version >= 2 else ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError):
        raise NIRError(f"graph metadata encoder={text!r} is not {'JSON' if version >= 2 else 'a dict'}") from None
    if not isinstance(enc, dict):
        raise NIRError(f"graph metadata encoder={text!r} is not a JSON object")
    return enc


def _reset_of(node, where) -> str:
    reset = _meta(node).get(RESET_KEY, "zero")
    if reset not in ("zero", "subtract"):
        raise NIRError(f"{where}: metadata {RESET_KEY}={reset!r} is not 'zero' or 'subtract'")
    if not np.allclose(getattr(node, "v_reset", 0.0), 0.0):
        raise NIRError(f"{where}: v_reset must be 0 (spikeloop resets to zero or subtracts the threshold)")
    return reset


def _leak_into_bias(bias: np.ndarray, layers: list, tensors: dict, i: int, where: str) -> None:
    """A LIF's v_leak as the bias (in weight units, v_leak/r) of the Linear layer right in front."""
    if i == 0 or not isinstance(layers[i - 1], Linear):
        raise NIRError(f"{where}: v_leak != 0 needs a Linear/Affine node right in front to hold it as a bias")
    lin = layers[i - 1]
    key = f"layers.{i - 1}.bias"
    if not lin.bias:
        layers[i - 1] = Linear(lin.in_features, lin.out_features, bias=True)
    tensors[key] = tensors.get(key, np.zeros(lin.out_features)) + bias.reshape(-1)


def _import_neuron(node, dt, where, tensors, i, leak):
    if isinstance(node, nir.NIRGraph):
        lifs = [n for n in node.nodes.values() if isinstance(n, (nir.LIF, nir.IF))]
        recs = [n for n in node.nodes.values() if isinstance(n, (nir.Affine, nir.Linear))]
        if len(node.nodes) != 4 or len(lifs) != 1 or len(recs) != 1:
            raise NIRError(f"{where}: a sub-graph must be a recurrent layer (input, LIF, Affine/Linear, output)")
        lif, rec = lifs[0], recs[0]
        beta, thr = _lif_params(lif, dt, where, leak)
        reset = _meta(node).get(RESET_KEY) or _reset_of(lif, where)
        _reset_of(lif, where)
        w = np.asarray(rec.weight, dtype=np.float64)
        diagonal = isinstance(rec, nir.Linear) and np.array_equal(w, np.diag(np.diag(w)))
        if diagonal:
            return RLeaky(beta=beta, threshold=thr, reset=reset, all_to_all=False,
                          V=_scalar_or_list(np.diag(w)), per_neuron=isinstance(_scalar_or_list(np.diag(w)), tuple))
        tensors[f"layers.{i}.recurrent.weight"] = w
        tensors[f"layers.{i}.recurrent.bias"] = (np.asarray(rec.bias, dtype=np.float64) if isinstance(rec, nir.Affine)
                                                 else np.zeros(w.shape[0]))
        return RLeaky(beta=beta, threshold=thr, reset=reset, all_to_all=True)
    reset = _reset_of(node, where)
    if isinstance(node, nir.CubaLIF):
        if not np.allclose(node.v_leak, 0.0):
            raise NIRError(f"{where}: v_leak must be 0")
        tau_syn, tau_mem = np.asarray(node.tau_syn, float), np.asarray(node.tau_mem, float)
        alpha, beta = _decay(tau_syn, dt, "alpha", where), _decay(tau_mem, dt, "beta", where)
        gain = (np.asarray(node.w_in, float) * dt / tau_syn) * (np.asarray(node.r, float) * dt / tau_mem)
        thr = _threshold(node, gain, where)
        vals = [_scalar_or_list(alpha), _scalar_or_list(beta), _scalar_or_list(thr)]
        return Synaptic(alpha=vals[0], beta=vals[1], threshold=vals[2], reset=reset,
                        per_neuron=any(isinstance(v, tuple) for v in vals))
    beta, thr = _lif_params(node, dt, where, leak)
    return Leaky(beta=beta, threshold=thr, reset=reset,
                 per_neuron=isinstance(beta, tuple) or isinstance(thr, tuple))


def _decay(tau: np.ndarray, dt: float, name: str, where: str) -> np.ndarray:
    """snn.spec.beta_from_tau elementwise, the same float64 operation (1 − dt/τ, the one convention)
    and domain (τ ≥ dt); NIRError naming the node otherwise."""
    tau = np.asarray(tau, dtype=np.float64)
    if not np.all(tau >= dt):  # also NaN
        raise NIRError(f"{where}: {name} = 1 - dt/tau outside [0, 1] with dt = {dt} s (time constant "
                       "shorter than the time step, or not positive); pass a smaller dt_s (a graph from "
                       "Norse's to_nir, which writes dt·tau: producer='norse')")
    return 1.0 - dt / tau


def _lif_params(node, dt, where, leak: dict):
    """(beta, threshold in input units) of a LIF/IF; a nonzero LIF v_leak goes to leak["bias"]
    (v_leak/r: forward Euler adds dt/tau·v_leak per step, the input r·dt/tau per unit)."""
    if isinstance(node, nir.IF):
        beta = np.ones_like(np.asarray(node.v_threshold, float))
        gain = np.asarray(node.r, float) * dt
    else:
        tau = np.asarray(node.tau, float)
        beta = _decay(tau, dt, "beta", where)
        r = np.asarray(node.r, float)
        gain = r * dt / tau
        v_leak = np.asarray(node.v_leak, float)
        if np.any(v_leak != 0):
            if v_leak.shape not in ((), beta.shape) or r.shape not in ((), beta.shape):
                raise NIRError(f"{where}: v_leak {v_leak.shape} and r {r.shape} must have tau's shape {beta.shape}")
            if not (np.all(np.isfinite(v_leak)) and np.all(r != 0)):
                raise NIRError(f"{where}: v_leak must be finite and r nonzero")
            leak["bias"] = np.broadcast_to(v_leak / r, beta.shape)
    return _scalar_or_list(beta), _scalar_or_list(_threshold(node, gain, where))


def _threshold(node, gain: np.ndarray, where: str) -> np.ndarray:
    """v_threshold in units of the input (the input gain r·dt/τ, and w_in·dt/τ_syn, folded in);
    NIRError for a gain that is not a positive finite number (r = 0 or w_in = 0: no input at all)."""
    gain = np.asarray(gain, dtype=np.float64)
    if not np.all(np.isfinite(gain) & (gain > 0)):
        raise NIRError(f"{where}: the input gain (r·dt/tau, times w_in·dt/tau_syn for CubaLIF) must be a "
                       "positive finite number; r or w_in is 0, negative or not finite")
    return np.asarray(node.v_threshold, float) / gain
