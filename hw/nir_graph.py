"""Export a model spec to NIR (nir >= 1.0.6) and import NIR graphs into a model spec.

Discretization: NIR's neurons are ODEs; spikeloop's are discrete (docs/neuron_semantics.md). The
mapping is forward Euler with the time step `dt_s` — the convention snnTorch's NIR export/import
uses — so that a discrete consumer with the same `dt_s` gets the spec's update exactly:

    LIF      tau = dt/(1 − β), r = tau/dt, v_leak = 0          → v = β·v + I
    CubaLIF  tau_syn = dt/(1 − α), w_in = tau_syn/dt,
             tau_mem = dt/(1 − β), r = tau_mem/dt               → I = α·I + x;  v = β·v + I
    IF       (β = 1) r = 1/dt                                   → v = v + I
    RLeaky   a sub-graph {input → lif → output, lif → w_rec → lif} (snnTorch's layout);
             w_rec is Affine (dense, with bias) or Linear(diag(V)) (elementwise)

Every neuron node has `v_reset = 0` and metadata `{"spikeloop_reset": "subtract"|"zero", "dt_s": dt}`.
NIR has no subtractive reset: a consumer that ignores the metadata simulates **reset to v_reset = 0**
(immediately after the spike), which reproduces spikeloop's `zero` reset exactly for `leaky` layers
but not `subtract`; `spikeloop` reads the metadata back and restores `subtract`. The graph's metadata
records `dt_s`, `num_steps`, the encoder and the spikeloop version. Max pooling has no NIR node and
is refused, and so are weights holding NaN or Inf, on export and on import (`NIRError` naming the
tensor and node). `write_nir` writes through `snn.atomic` (unique temporary name, fsync, rename).
"""

from __future__ import annotations

import math
from pathlib import Path

import nir
import numpy as np
import torch

from snn.atomic import atomic_path
from snn.finite import require_finite
from snn.model import build_model
from snn.spec import (AvgPool2d, Conv2d, Flatten, Leaky, Linear, MaxPool2d, ModelSpec, RLeaky, Synaptic)

NIR_EXPORT_VERSION = 1
RESET_KEY = "spikeloop_reset"
SNNTORCH_DT_S = 1e-4  # the dt snnTorch's import_nir assumes; the default when a graph records none


class NIRError(ValueError):
    """A model or graph that cannot be mapped (names the node/layer and why)."""


def _tau(decay: np.ndarray, dt: float) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(decay >= 1.0, np.inf, dt / (1.0 - decay))


def export_nir(spec: ModelSpec, state_dict: dict, dt_s: float | None = None) -> nir.NIRGraph:
    """The NIR graph of `spec` with trained `state_dict`. dt_s: the Euler step used for the time
    constants (default: spec.dt_s; pass 1e-4 for snnTorch's importer, which assumes it)."""
    dt = float(spec.dt_s if dt_s is None else dt_s)
    if not dt > 0:
        raise NIRError(f"dt_s must be positive, got {dt_s!r}")
    require_finite(state_dict, "NIR export", NIRError)
    model = build_model(spec, state_dict, dtype=torch.float64)
    params = model.neuron_parameters()
    sd = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    shapes = spec.shapes()
    in_shapes = [spec.input_shape] + shapes[:-1]
    nodes = {"input": nir.Input(input_type={"input": np.array(spec.input_shape)})}
    order = ["input"]
    for i, layer in enumerate(spec.layers):
        name = f"layer{i}"
        where = f"layer {i} ({layer.type_name})"
        if isinstance(layer, Linear):
            w = sd[f"layers.{i}.weight"]
            nodes[name] = (nir.Affine(weight=w, bias=sd[f"layers.{i}.bias"]) if layer.bias
                           else nir.Linear(weight=w))
        elif isinstance(layer, Conv2d):
            bias = sd[f"layers.{i}.bias"] if layer.bias else np.zeros(layer.out_channels)
            nodes[name] = nir.Conv2d(input_shape=tuple(in_shapes[i][1:]), weight=sd[f"layers.{i}.weight"],
                                     stride=layer.stride, padding=layer.padding, dilation=1, groups=1, bias=bias)
        elif isinstance(layer, AvgPool2d):
            k, s = layer.kernel_size, layer.effective_stride
            nodes[name] = nir.AvgPool2d(kernel_size=np.array([k, k]), stride=np.array([s, s]),
                                        padding=np.array([0, 0]))
        elif isinstance(layer, MaxPool2d):
            raise NIRError(f"{where}: NIR 1.0 has no max-pooling node (only AvgPool2d/SumPool2d)")
        elif isinstance(layer, Flatten):
            nodes[name] = nir.Flatten(input_type={"input": np.array(in_shapes[i])}, start_dim=0, end_dim=-1)
        elif layer.spiking:
            nodes[name] = _neuron_node(layer, params[i], shapes[i], sd, i, dt)
        else:  # pragma: no cover - every spec layer type is handled above
            raise NIRError(f"{where}: no NIR mapping")
        order.append(name)
    nodes["output"] = nir.Output(output_type={"output": np.array(shapes[-1])})
    order.append("output")
    edges = list(zip(order[:-1], order[1:]))
    meta = {"dt_s": dt, "num_steps": spec.num_steps, "spikeloop_nir_version": NIR_EXPORT_VERSION,
            "name": spec.name, "encoder": str(spec.encoder),
            "discretization": "forward Euler: beta = 1 - dt/tau; reset per node metadata spikeloop_reset"}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def _neuron_node(layer, p: dict, shape, sd, i, dt):
    shape = tuple(shape)
    beta = p["beta"].numpy().reshape(shape)
    thr = p["threshold"].numpy().reshape(shape)
    meta = {RESET_KEY: layer.reset, "dt_s": dt}
    zeros = np.zeros(shape)
    if isinstance(layer, Synaptic):
        alpha = p["alpha"].numpy().reshape(shape)
        if (alpha >= 1).any() or (beta >= 1).any():
            raise NIRError(f"layer {i} (synaptic): alpha or beta = 1 has no finite CubaLIF time constant")
        tau_syn, tau_mem = _tau(alpha, dt), _tau(beta, dt)
        return nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=tau_mem / dt, v_leak=zeros, v_threshold=thr,
                           v_reset=zeros, w_in=tau_syn / dt, metadata=meta)
    lif = _lif(beta, thr, dt, meta)
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


def _lif(beta, thr, dt, meta):
    if (beta >= 1).all():
        return nir.IF(r=np.full(beta.shape, 1.0 / dt), v_threshold=thr, v_reset=np.zeros(beta.shape), metadata=meta)
    if (beta >= 1).any():
        raise NIRError("a layer mixes beta = 1 and beta < 1; NIR needs one node type (IF or LIF) per layer")
    tau = _tau(beta, dt)
    return nir.LIF(tau=tau, r=tau / dt, v_leak=np.zeros(beta.shape), v_threshold=thr,
                   v_reset=np.zeros(beta.shape), metadata=meta)


def write_nir(graph: nir.NIRGraph, path: str | Path) -> Path:
    """Write with nir.write to a unique temporary name beside `path`, fsync, then rename over it
    (`snn.atomic.atomic_path`: a reader sees the old file or the whole new one)."""
    with atomic_path(path) as tmp:
        nir.write(str(tmp), graph)
    return Path(path)


# ------------------------------------------------------------------------------------------- import

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


def import_nir(graph: nir.NIRGraph | str | Path, dt_s: float | None = None, num_steps: int | None = None,
               name: str = "nir") -> tuple[ModelSpec, dict]:
    """A (ModelSpec, state_dict) from a NIR graph (an object or a file written by nir.write).

    dt_s: Euler step for the time constants; default the graph's metadata `dt_s`, else the node
    metadata, else 1e-4 (snnTorch's convention). Neuron input gains (r·dt/tau, w_in) are folded into
    the threshold. Reset: the node metadata `spikeloop_reset`, else `zero` (NIR's v_reset semantics;
    v_reset must be 0)."""
    if isinstance(graph, (str, Path)):
        if not Path(graph).exists():
            raise FileNotFoundError(f"NIR file not found: {graph}")
        path = graph
        try:
            graph = nir.read(str(path))
        except Exception as e:  # h5py raises OSError, RuntimeError, KeyError, ... on damaged files
            raise NIRError(f"{path}: not a readable NIR file ({type(e).__name__}: {e})") from None
    gmeta = _meta(graph)
    order = _chain(graph)
    if dt_s is None:
        dt_s = gmeta.get("dt_s")
    if dt_s is None:
        node_dts = {_meta(graph.nodes[k]).get("dt_s") for k in order} - {None}
        dt_s = node_dts.pop() if len(node_dts) == 1 else SNNTORCH_DT_S
    dt = float(dt_s)
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
            add(_import_neuron(node, dt, where, tensors, i), where)
        else:
            raise NIRError(f"{where}: node type not supported by spikeloop's importer")
        node_of.update({k: key for k in tensors if k not in node_of})
    require_finite({f"{k} (NIR node {node_of[k]!r})": v for k, v in tensors.items()}, "NIR graph", NIRError)
    steps = num_steps or int(gmeta.get("num_steps", 25))
    spec = ModelSpec(layers=tuple(layers), input_shape=input_shape, dt_s=dt, num_steps=steps,
                     name=str(gmeta.get("name", name)))
    model = build_model(spec)
    sd = model.state_dict()
    for k, v in tensors.items():
        if k not in sd:
            raise NIRError(f"internal: no parameter {k} in the built model")
        if tuple(sd[k].shape) != v.shape:
            raise NIRError(f"parameter {k}: NIR shape {v.shape} does not match the layer ({tuple(sd[k].shape)})")
        sd[k] = torch.as_tensor(v, dtype=sd[k].dtype)
    return spec, sd


def _reset_of(node, where) -> str:
    reset = _meta(node).get(RESET_KEY, "zero")
    if reset not in ("zero", "subtract"):
        raise NIRError(f"{where}: metadata {RESET_KEY}={reset!r} is not 'zero' or 'subtract'")
    if not np.allclose(getattr(node, "v_reset", 0.0), 0.0):
        raise NIRError(f"{where}: v_reset must be 0 (spikeloop resets to zero or subtracts the threshold)")
    return reset


def _import_neuron(node, dt, where, tensors, i):
    if isinstance(node, nir.NIRGraph):
        lifs = [n for n in node.nodes.values() if isinstance(n, (nir.LIF, nir.IF))]
        recs = [n for n in node.nodes.values() if isinstance(n, (nir.Affine, nir.Linear))]
        if len(node.nodes) != 4 or len(lifs) != 1 or len(recs) != 1:
            raise NIRError(f"{where}: a sub-graph must be a recurrent layer (input, LIF, Affine/Linear, output)")
        lif, rec = lifs[0], recs[0]
        beta, thr = _lif_params(lif, dt, where)
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
        alpha, beta = 1.0 - dt / tau_syn, 1.0 - dt / tau_mem
        gain = (np.asarray(node.w_in, float) * dt / tau_syn) * (np.asarray(node.r, float) * dt / tau_mem)
        thr = np.asarray(node.v_threshold, float) / gain
        _check_decay(alpha, "alpha", where, dt)
        _check_decay(beta, "beta", where, dt)
        vals = [_scalar_or_list(alpha), _scalar_or_list(beta), _scalar_or_list(thr)]
        return Synaptic(alpha=vals[0], beta=vals[1], threshold=vals[2], reset=reset,
                        per_neuron=any(isinstance(v, tuple) for v in vals))
    beta, thr = _lif_params(node, dt, where)
    return Leaky(beta=beta, threshold=thr, reset=reset,
                 per_neuron=isinstance(beta, tuple) or isinstance(thr, tuple))


def _check_decay(x, name, where, dt):
    if np.any(x < 0) or np.any(x > 1):
        raise NIRError(f"{where}: {name} = 1 - dt/tau outside [0, 1] with dt = {dt} s (time constant "
                       "shorter than the time step); pass a smaller dt_s")


def _lif_params(node, dt, where):
    if isinstance(node, nir.IF):
        beta = np.ones_like(np.asarray(node.v_threshold, float))
        gain = np.asarray(node.r, float) * dt
    else:
        if not np.allclose(node.v_leak, 0.0):
            raise NIRError(f"{where}: v_leak must be 0")
        tau = np.asarray(node.tau, float)
        beta = 1.0 - dt / tau
        gain = np.asarray(node.r, float) * dt / tau
        _check_decay(beta, "beta", where, dt)
    thr = np.asarray(node.v_threshold, float) / gain
    return _scalar_or_list(beta), _scalar_or_list(thr)
