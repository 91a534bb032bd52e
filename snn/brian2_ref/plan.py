"""The simulator-neutral network plan: populations, synapse lists and per-neuron parameters (numpy only).

`mapping.translate` builds a `NetworkPlan` from a model spec and weights; `runner` turns it into
Brian2 objects. Kept free of torch so the cpp_standalone subprocess starts quickly.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

NEURON_KINDS = ("leaky", "synaptic", "rleaky")
STAGE_KINDS = ("linear", "max", "or")
INPUT_KINDS = ("spikes", "analog")
MAX_STAGES = 20  # per population: the schedule leaves 20 slots in front of a layer (runner.py)


@dataclass(frozen=True)
class Connection:
    """Synapses from a population of `n_pre` neurons to one of `n_post`: `w[k]` from `pre[k]` to `post[k]`.

    pre, post: int64 [S]; weight: float64 [S]. The target's input of a step is
    `X[post] = sum_k weight[k] * S_pre[pre[k]]` over the synapses whose source spiked."""

    pre: np.ndarray
    post: np.ndarray
    weight: np.ndarray
    n_pre: int
    n_post: int

    def __post_init__(self):
        for name in ("pre", "post", "weight"):
            a = getattr(self, name)
            if not isinstance(a, np.ndarray) or a.ndim != 1:
                raise ValueError(f"Connection.{name} must be a 1-D numpy array")
        if not (len(self.pre) == len(self.post) == len(self.weight)):
            raise ValueError(f"Connection: pre/post/weight lengths differ "
                             f"({len(self.pre)}, {len(self.post)}, {len(self.weight)})")
        if self.n_pre < 1 or self.n_post < 1:
            raise ValueError(f"Connection: n_pre and n_post must be >= 1, got {self.n_pre}, {self.n_post}")
        if len(self.pre) and (self.pre.min() < 0 or self.pre.max() >= self.n_pre):
            raise ValueError(f"Connection.pre indices outside [0, {self.n_pre})")
        if len(self.post) and (self.post.min() < 0 or self.post.max() >= self.n_post):
            raise ValueError(f"Connection.post indices outside [0, {self.n_post})")
        if not np.all(np.isfinite(self.weight)):
            raise ValueError("Connection.weight must be finite")

    @classmethod
    def from_matrix(cls, m) -> "Connection":
        """From a dense or scipy.sparse matrix [n_post, n_pre] (torch's weight layout: out x in);
        exact zeros are dropped."""
        import scipy.sparse as sp

        coo = sp.coo_matrix(m)
        keep = coo.data != 0
        pre, post, w = coo.col[keep].astype(np.int64), coo.row[keep].astype(np.int64), coo.data[keep]
        # Source-major order: each spike's synapses are contiguous in memory (Brian2 walks them per
        # spiking source; post-major order made every synapse a cache miss, ~4x slower).
        order = np.lexsort((post, pre))
        return cls(pre[order], post[order], w[order].astype(np.float64), coo.shape[1], coo.shape[0])

    def to_dense(self) -> np.ndarray:
        """Dense [n_post, n_pre] float64 matrix (for tests and small networks)."""
        m = np.zeros((self.n_post, self.n_pre))
        np.add.at(m, (self.post, self.pre), self.weight)
        return m


@dataclass(frozen=True)
class Stage:
    """One stateless step in front of a population that the synapse list cannot absorb (it follows
    or precedes a max pooling); in Brian2 it is an intermediate group recomputed every step.

    kind "linear": out = conn·src + bias (conn: Connection [n_in -> n_out], bias: float64 [n_out]);
                   the output is real-valued.
    kind "max":    out[o] = max_k src[windows[o, k]] of a real-valued source (max pooling).
    kind "or":     out[o] = OR_k src[windows[o, k]] of a spike source: the max of {0, 1} values,
                   itself spikes (max pooling of spikes).
    windows: int64 [n_out, K] indices into the flattened source (each window's K elements)."""

    kind: str
    n_in: int
    n_out: int
    conn: Connection | None = None
    bias: np.ndarray | None = None
    windows: np.ndarray | None = None

    def __post_init__(self):
        if self.kind not in STAGE_KINDS:
            raise ValueError(f"Stage.kind must be one of {STAGE_KINDS}, got {self.kind!r}")
        if self.n_in < 1 or self.n_out < 1:
            raise ValueError(f"Stage ({self.kind}): n_in and n_out must be >= 1, got {self.n_in}, {self.n_out}")
        if self.kind == "linear":
            if self.conn is None or self.conn.n_pre != self.n_in or self.conn.n_post != self.n_out:
                raise ValueError(f"Stage (linear): conn must be a Connection [{self.n_in} -> {self.n_out}]")
            if self.bias is None or self.bias.shape != (self.n_out,) or not np.all(np.isfinite(self.bias)):
                raise ValueError(f"Stage (linear): bias must be finite float64 [{self.n_out}]")
        else:
            w = self.windows
            if not isinstance(w, np.ndarray) or not np.issubdtype(w.dtype, np.integer) or w.ndim != 2 \
                    or w.shape[0] != self.n_out or w.shape[1] < 1:
                raise ValueError(f"Stage ({self.kind}): windows must be an int array [{self.n_out}, K >= 1]")
            if w.min() < 0 or w.max() >= self.n_in:
                raise ValueError(f"Stage ({self.kind}): windows index outside the source [0, {self.n_in})")

    @property
    def emits_spikes(self) -> bool:
        return self.kind == "or"


@dataclass(frozen=True)
class LayerPlan:
    """One spiking layer as one population of `n` neurons.

    kind: "leaky" | "synaptic" | "rleaky"; reset: "subtract" | "zero".
    params: float64 [n] arrays "beta", "threshold", "bias" (composed bias of the feed-forward
    chain) and, by kind, "alpha" (synaptic) and "rec_bias" (rleaky; zeros when elementwise).
    stages: what runs between the previous population (or the input) and `feedforward` when the
    stateless layers contain a max pooling (empty otherwise); see `Stage`.
    feedforward: synapses from the previous population (or the input, or the last stage) after
    unrolling the stateless layers `chain` (spec indices). recurrent: rleaky only, from the
    population to itself (all-to-all weights, or one-to-one with weight V for elementwise)."""

    spec_index: int
    kind: str
    reset: str
    shape: tuple[int, ...]
    params: dict[str, np.ndarray]
    feedforward: Connection
    recurrent: Connection | None = None
    chain: tuple[int, ...] = ()
    stages: tuple[Stage, ...] = ()

    def __post_init__(self):
        if self.kind not in NEURON_KINDS:
            raise ValueError(f"LayerPlan.kind must be one of {NEURON_KINDS}, got {self.kind!r}")
        if self.reset not in ("subtract", "zero"):
            raise ValueError(f"LayerPlan.reset must be 'subtract' or 'zero', got {self.reset!r}")
        needed = {"beta", "threshold", "bias"} | ({"alpha"} if self.kind == "synaptic" else set()) \
            | ({"rec_bias"} if self.kind == "rleaky" else set())
        missing = needed - set(self.params)
        if missing:
            raise ValueError(f"LayerPlan.params (layer {self.spec_index}) misses {sorted(missing)}")
        for k, v in self.params.items():
            if v.shape != (self.n,):
                raise ValueError(f"LayerPlan.params[{k!r}] (layer {self.spec_index}) must have shape "
                                 f"({self.n},), got {v.shape}")
        if self.feedforward.n_post != self.n:
            raise ValueError(f"LayerPlan.feedforward (layer {self.spec_index}) targets "
                             f"{self.feedforward.n_post} neurons, the layer has {self.n}")
        if (self.recurrent is None) != (self.kind != "rleaky"):
            raise ValueError(f"LayerPlan.recurrent (layer {self.spec_index}) must be set exactly for rleaky")
        if len(self.stages) > MAX_STAGES:
            raise ValueError(f"LayerPlan.stages (layer {self.spec_index}): at most {MAX_STAGES}, "
                             f"got {len(self.stages)}")
        for a, b in zip(self.stages, self.stages[1:]):
            if a.n_out != b.n_in:
                raise ValueError(f"LayerPlan.stages (layer {self.spec_index}): a {a.kind} stage of {a.n_out} "
                                 f"outputs feeds a {b.kind} stage of {b.n_in} inputs")
        if self.stages and self.feedforward.n_pre != self.stages[-1].n_out:
            raise ValueError(f"LayerPlan.feedforward (layer {self.spec_index}) takes {self.feedforward.n_pre} "
                             f"inputs, its last stage has {self.stages[-1].n_out}")

    @property
    def n_source(self) -> int:
        """Size of what the layer reads: the previous population or the input."""
        return self.stages[0].n_in if self.stages else self.feedforward.n_pre

    @property
    def n(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class NetworkPlan:
    """The whole network: `n_input` input channels (flattened `input_shape`) feeding `layers` in order.

    input_kind: "spikes" (input [T, B, n_input] in {0, 1}, delivered as spike events) or "analog"
    (real-valued currents, e.g. the `direct` encoder's, set as a value per channel and step)."""

    layers: tuple[LayerPlan, ...]
    input_shape: tuple[int, ...]
    num_steps: int
    dt_s: float
    input_kind: str = "spikes"

    def __post_init__(self):
        if not self.layers:
            raise ValueError("NetworkPlan.layers must not be empty")
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(f"NetworkPlan.input_kind must be one of {INPUT_KINDS}, got {self.input_kind!r}")
        n_src = self.n_input
        spikes = self.input_kind == "spikes"  # populations always emit spikes
        for layer in self.layers:
            if layer.n_source != n_src:
                raise ValueError(f"NetworkPlan: layer {layer.spec_index} expects {layer.n_source} "
                                 f"inputs but its source has {n_src}")
            for st in layer.stages:
                if st.kind == "or" and not spikes:
                    raise ValueError(f"NetworkPlan: layer {layer.spec_index} has an 'or' stage on a "
                                     "real-valued source (max pooling of values needs a 'max' stage)")
                if st.kind == "max" and spikes:
                    raise ValueError(f"NetworkPlan: layer {layer.spec_index} has a 'max' stage on a spike "
                                     "source (max pooling of spikes is an 'or' stage)")
                spikes = st.emits_spikes
            n_src, spikes = layer.n, True
        if not (self.dt_s > 0 and math.isfinite(self.dt_s)):
            raise ValueError(f"NetworkPlan.dt_s must be a positive number of seconds, got {self.dt_s}")

    @property
    def n_input(self) -> int:
        return math.prod(self.input_shape)


def plan_to_arrays(plan: NetworkPlan) -> dict[str, np.ndarray]:
    """A plan as flat numpy arrays (with a JSON header under "meta") for `np.savez`."""
    meta = {"input_shape": list(plan.input_shape), "num_steps": plan.num_steps, "dt_s": plan.dt_s,
            "input_kind": plan.input_kind, "layers": []}
    arrays = {}
    for k, layer in enumerate(plan.layers):
        meta["layers"].append({"spec_index": layer.spec_index, "kind": layer.kind, "reset": layer.reset,
                               "shape": list(layer.shape), "params": sorted(layer.params),
                               "recurrent": layer.recurrent is not None, "chain": list(layer.chain),
                               "n_pre": layer.feedforward.n_pre,
                               "stages": [[st.kind, st.n_in, st.n_out] for st in layer.stages]})
        for j, st in enumerate(layer.stages):
            if st.kind == "linear":
                arrays[f"l{k}_s{j}_pre"], arrays[f"l{k}_s{j}_post"] = st.conn.pre, st.conn.post
                arrays[f"l{k}_s{j}_w"], arrays[f"l{k}_s{j}_bias"] = st.conn.weight, st.bias
            else:
                arrays[f"l{k}_s{j}_windows"] = st.windows
        for name, v in layer.params.items():
            arrays[f"l{k}_p_{name}"] = v
        for tag, conn in (("ff", layer.feedforward), ("rec", layer.recurrent)):
            if conn is not None:
                arrays[f"l{k}_{tag}_pre"], arrays[f"l{k}_{tag}_post"] = conn.pre, conn.post
                arrays[f"l{k}_{tag}_w"] = conn.weight
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    return arrays


def plan_from_arrays(arrays) -> NetworkPlan:
    meta = json.loads(bytes(arrays["meta"]).decode())
    layers = []
    n_src = int(np.prod(meta["input_shape"]))
    for k, m in enumerate(meta["layers"]):
        n = int(np.prod(m["shape"]))
        stages = []
        for j, (kind, n_in, n_out) in enumerate(m.get("stages", [])):
            if kind == "linear":
                conn = Connection(arrays[f"l{k}_s{j}_pre"], arrays[f"l{k}_s{j}_post"], arrays[f"l{k}_s{j}_w"],
                                  n_in, n_out)
                stages.append(Stage(kind, n_in, n_out, conn=conn, bias=arrays[f"l{k}_s{j}_bias"]))
            else:
                stages.append(Stage(kind, n_in, n_out, windows=arrays[f"l{k}_s{j}_windows"]))
        n_ff = stages[-1].n_out if stages else n_src
        ff = Connection(arrays[f"l{k}_ff_pre"], arrays[f"l{k}_ff_post"], arrays[f"l{k}_ff_w"], n_ff, n)
        rec = Connection(arrays[f"l{k}_rec_pre"], arrays[f"l{k}_rec_post"], arrays[f"l{k}_rec_w"], n, n) \
            if m["recurrent"] else None
        layers.append(LayerPlan(m["spec_index"], m["kind"], m["reset"], tuple(m["shape"]),
                                {p: arrays[f"l{k}_p_{p}"] for p in m["params"]}, ff, rec, tuple(m["chain"]),
                                tuple(stages)))
        n_src = n
    return NetworkPlan(tuple(layers), tuple(meta["input_shape"]), meta["num_steps"], meta["dt_s"],
                       meta.get("input_kind", "spikes"))
