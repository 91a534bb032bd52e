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
class LayerPlan:
    """One spiking layer as one population of `n` neurons.

    kind: "leaky" | "synaptic" | "rleaky"; reset: "subtract" | "zero".
    params: float64 [n] arrays "beta", "threshold", "bias" (composed bias of the feed-forward
    chain) and, by kind, "alpha" (synaptic) and "rec_bias" (rleaky; zeros when elementwise).
    feedforward: synapses from the previous population (or the input) after unrolling the
    stateless layers `chain` (spec indices). recurrent: rleaky only, from the population to
    itself (all-to-all weights, or one-to-one with weight V for elementwise)."""

    spec_index: int
    kind: str
    reset: str
    shape: tuple[int, ...]
    params: dict[str, np.ndarray]
    feedforward: Connection
    recurrent: Connection | None = None
    chain: tuple[int, ...] = ()

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

    @property
    def n(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class NetworkPlan:
    """The whole network: `n_input` input channels (flattened `input_shape`) feeding `layers` in order."""

    layers: tuple[LayerPlan, ...]
    input_shape: tuple[int, ...]
    num_steps: int
    dt_s: float

    def __post_init__(self):
        if not self.layers:
            raise ValueError("NetworkPlan.layers must not be empty")
        n_src = self.n_input
        for layer in self.layers:
            if layer.feedforward.n_pre != n_src:
                raise ValueError(f"NetworkPlan: layer {layer.spec_index} expects {layer.feedforward.n_pre} "
                                 f"inputs but its source has {n_src}")
            n_src = layer.n
        if not (self.dt_s > 0 and math.isfinite(self.dt_s)):
            raise ValueError(f"NetworkPlan.dt_s must be a positive number of seconds, got {self.dt_s}")

    @property
    def n_input(self) -> int:
        return math.prod(self.input_shape)


def plan_to_arrays(plan: NetworkPlan) -> dict[str, np.ndarray]:
    """A plan as flat numpy arrays (with a JSON header under "meta") for `np.savez`."""
    meta = {"input_shape": list(plan.input_shape), "num_steps": plan.num_steps, "dt_s": plan.dt_s, "layers": []}
    arrays = {}
    for k, layer in enumerate(plan.layers):
        meta["layers"].append({"spec_index": layer.spec_index, "kind": layer.kind, "reset": layer.reset,
                               "shape": list(layer.shape), "params": sorted(layer.params),
                               "recurrent": layer.recurrent is not None, "chain": list(layer.chain),
                               "n_pre": layer.feedforward.n_pre})
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
        ff = Connection(arrays[f"l{k}_ff_pre"], arrays[f"l{k}_ff_post"], arrays[f"l{k}_ff_w"], n_src, n)
        rec = Connection(arrays[f"l{k}_rec_pre"], arrays[f"l{k}_rec_post"], arrays[f"l{k}_rec_w"], n, n) \
            if m["recurrent"] else None
        layers.append(LayerPlan(m["spec_index"], m["kind"], m["reset"], tuple(m["shape"]),
                                {p: arrays[f"l{k}_p_{p}"] for p in m["params"]}, ff, rec, tuple(m["chain"])))
        n_src = n
    return NetworkPlan(tuple(layers), tuple(meta["input_shape"]), meta["num_steps"], meta["dt_s"])
