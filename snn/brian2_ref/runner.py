"""Build a Brian2 network from a `NetworkPlan`, run it on input spikes or currents, return spikes and membranes.

Schedule (all objects in Brian2's `thresholds` slot of every step, in this `order`):

    0             input: SpikeGeneratorGroup emits the spikes of step t, or (analog input) a
                  group sets y = the currents of step t from a TimedArray
    100k + 4j + 1 stage j in front of layer k (`plan.Stage`): clear (s = 0 / y = 0)
    100k + 4j + 2   synapses into the stage (s_post += w, y_post += 1, or the summed s = sum w*y_pre),
                    or the max stage's y = max(linked window elements)
    100k + 4j + 3   linear stage: y = s + b; 'or' stage: threshold y > 0 (its spikes of step t)
    100k + 91     feed-forward synapses into layer k (X_post += w from spikes of step t, or the
                  summed X = sum w*y_pre from a real-valued source)
    100k + 92     layer k's update (run_regularly: the snnTorch step, reads R and Xrec)
    100k + 93     layer k's threshold (v > threshold)
    100k + 94     layer k's reset (R = 1, used by the next step's update)
    100k + 95     layer k's recurrent synapses (Xrec_post += w; consumed at step t + 1)

so one Brian2 time step is one snnTorch step with no synaptic delay between layers or stages. Samples run
back to back in one Brian2 run (the update zeroes the state on each sample's first step).

Targets: "numpy" (default, no compiler), "cython" (compiled once per code text, cached), and
"cpp_standalone" (a whole C++ project, built in a subprocess because Brian2's device is global
state; the project folder is cached per network structure). Compiled targets use
`STRICT_FP_FLAGS` instead of Brian2's default `-ffast-math`, which would reorder float
arithmetic. Cache root: `$SPIKELOOP_BRIAN2_CACHE`, else `$XDG_CACHE_HOME/spikeloop/brian2`,
else `~/.cache/spikeloop/brian2` (see `cache_root`).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import equations as eq
from .plan import Connection, NetworkPlan, Stage, plan_to_arrays

TARGETS = ("numpy", "cython", "cpp_standalone")
# Brian2's default GCC flags minus -ffast-math/-march=native, and no fused multiply-add contraction:
# every statement of the update rounds exactly as snnTorch's separate tensor ops do.
STRICT_FP_FLAGS = ["-w", "-O3", "-fno-fast-math", "-ffp-contract=off", "-std=c++11"]

_PREFS_LOCK = threading.Lock()


@dataclass
class Brian2Result:
    """What Brian2 computed, per spiking layer (spec index):
    layers[i] = {"spikes": [T, B, N] float64 {0,1}, "mem": [T, B, N] float64 (, "syn": [T, B, N])}.
    seconds: wall time of building and running (compilation included); build/run split in `timing`."""

    layers: dict[int, dict[str, np.ndarray]]
    seconds: float
    target: str
    timing: dict[str, float]


def cache_root() -> Path:
    """Folder for compiled Brian2 code: $SPIKELOOP_BRIAN2_CACHE, $XDG_CACHE_HOME/spikeloop/brian2
    or ~/.cache/spikeloop/brian2."""
    env = os.environ.get("SPIKELOOP_BRIAN2_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "spikeloop" / "brian2"


def check_inputs(plan: NetworkPlan, inputs: np.ndarray) -> np.ndarray:
    """inputs: [T, B, *input_shape] -> [T, B, n_input]: bool spikes (input_kind "spikes", values
    0 or 1) or float64 currents (input_kind "analog", finite); ValueError otherwise."""
    inputs = np.asarray(inputs)
    want = (plan.num_steps, "B") + tuple(plan.input_shape)
    what = "input spikes" if plan.input_kind == "spikes" else "input currents"
    if inputs.ndim != 2 + len(plan.input_shape) or tuple(inputs.shape[2:]) != tuple(plan.input_shape) \
            or inputs.shape[0] != plan.num_steps or inputs.shape[1] < 1:
        raise ValueError(f"{what} must be [T, B, *input_shape] = {list(want)}, got {list(inputs.shape)}")
    flat = inputs.reshape(inputs.shape[0], inputs.shape[1], -1)
    if plan.input_kind == "analog":
        if not (np.issubdtype(flat.dtype, np.floating) or np.issubdtype(flat.dtype, np.integer)
                or flat.dtype == bool) or not np.all(np.isfinite(flat)):
            raise ValueError("input currents must be finite real numbers (the model's analog encoder output)")
        return flat.astype(np.float64)
    if not np.all((inputs == 0) | (inputs == 1)):
        raise ValueError("input spikes must be 0 or 1 (this model uses a spike encoder; analog currents "
                         "are taken only from a model with an analog encoder such as 'direct')")
    return flat.astype(bool)


@contextlib.contextmanager
def brian2_prefs(target: str, cache_dir: Path | None = None):
    """Set Brian2's global code-generation preferences for `target` and restore them afterwards."""
    from brian2 import prefs

    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    new = {
        "codegen.target": "numpy" if target == "cpp_standalone" else target,
        "codegen.cpp.extra_compile_args_gcc": list(STRICT_FP_FLAGS),
        "codegen.runtime.cython.cache_dir": str(root / "cython"),
        "codegen.runtime.cython.multiprocess_safe": True,
        "core.default_float_dtype": np.float64,
    }
    with _PREFS_LOCK:
        old = {k: prefs[k] for k in new}
        try:
            for k, v in new.items():
                prefs[k] = v
            yield
        finally:
            for k, v in old.items():
                prefs[k] = v


def _connect(b2, source, target, conn: Connection, on_pre: str, order: int, clock, name: str):
    """Event-driven synapses (a spike of the source adds `w` to the target's variable)."""
    syn = b2.Synapses(source, target, eq.SYNAPSE_MODEL, on_pre=on_pre, clock=clock, name=name)
    if len(conn.pre):
        syn.connect(i=conn.pre, j=conn.post)
        syn.w[:] = conn.weight
    syn.pre.when = "thresholds"
    syn.pre.order = order
    return syn


def _connect_summed(b2, source, target, conn: Connection, variable: str, order: int, clock, name: str):
    """Synapses from a real-valued source: every step the target's `variable` becomes
    sum_k w[k] * y_pre[k] (a Brian2 summed variable; a target with no synapse gets 0)."""
    syn = b2.Synapses(source, target, eq.summed_model(variable), clock=clock, name=name)
    if len(conn.pre):
        syn.connect(i=conn.pre, j=conn.post)
        syn.w[:] = conn.weight
    upd = syn.summed_updaters[f"{variable}_post"]
    upd.when = "thresholds"
    upd.order = order
    return syn


def _stage_objects(b2, st: Stage, source, source_spikes: bool, base: int, clock, name: str):
    """The Brian2 group (and synapses) of one stage at schedule slots base+1 .. base+3; returns
    (group, objects)."""
    if st.kind == "linear":
        g = b2.NeuronGroup(st.n_out, eq.LINEAR_STAGE_MODEL, clock=clock, name=f"{name}*")
        g.b = st.bias
        objs = [g, g.run_regularly(eq.STAGE_FINISH_CODE, when="thresholds", order=base + 3, name=f"{name}_y*")]
        if source_spikes:
            objs.append(g.run_regularly(eq.STAGE_CLEAR_CODE, when="thresholds", order=base + 1, name=f"{name}_c*"))
            objs.append(_connect(b2, source, g, st.conn, eq.STAGE_SPIKE_ON_PRE, base + 2, clock, f"{name}_syn*"))
        else:
            objs.append(_connect_summed(b2, source, g, st.conn, "s", base + 2, clock, f"{name}_syn*"))
        return g, objs
    if st.kind == "or":
        g = b2.NeuronGroup(st.n_out, eq.OR_STAGE_MODEL, threshold=eq.OR_THRESHOLD, reset="", clock=clock,
                           name=f"{name}*")  # nothing to reset: y is cleared every step
        g.thresholder["spike"].when = "thresholds"
        g.thresholder["spike"].order = base + 3
        pre = st.windows.reshape(-1)
        post = np.repeat(np.arange(st.n_out, dtype=np.int64), st.windows.shape[1])
        syn = b2.Synapses(source, g, on_pre=eq.OR_ON_PRE, clock=clock, name=f"{name}_syn*")
        syn.connect(i=pre, j=post)
        syn.pre.when = "thresholds"
        syn.pre.order = base + 2
        clear = g.run_regularly(eq.OR_CLEAR_CODE, when="thresholds", order=base + 1, name=f"{name}_c*")
        return g, [g, syn, clear]
    k = st.windows.shape[1]
    g = b2.NeuronGroup(st.n_out, eq.max_stage_model(k), clock=clock, name=f"{name}*")
    for j in range(k):
        setattr(g, f"m{j}", b2.linked_var(source, "y", index=st.windows[:, j]))
    upd = g.run_regularly(eq.max_stage_code(k), when="thresholds", order=base + 2, name=f"{name}_max*")
    return g, [g, upd]


def build_network(plan: NetworkPlan, inputs: np.ndarray):
    """Create the Brian2 objects (under the current device/prefs). inputs: [T, B, n_input], bool
    spikes or float64 currents by `plan.input_kind` (`check_inputs`).
    Returns (Network, {spec index: (StateMonitor, SpikeMonitor)}, total steps)."""
    import brian2 as b2

    T, B, n_in = inputs.shape
    clock = b2.Clock(dt=plan.dt_s * b2.second, name="spikeloop_clock*")
    if plan.input_kind == "analog":
        # sample b, step t -> Brian2 step b*T + t -> row b*T + t of the TimedArray
        values = b2.TimedArray(np.ascontiguousarray(inputs.transpose(1, 0, 2).reshape(B * T, n_in),
                                                    dtype=np.float64), dt=clock.dt, name="spikeloop_values*")
        inp = b2.NeuronGroup(n_in, eq.ANALOG_INPUT_MODEL, clock=clock, namespace={"input_values": values},
                             name="spikeloop_input*")
        objects = [inp, inp.run_regularly(eq.ANALOG_INPUT_CODE, when="thresholds", order=0,
                                          name="spikeloop_input_set*")]
        source_spikes = False
    else:
        t_idx, b_idx, ch = np.nonzero(inputs)
        steps = b_idx.astype(np.int64) * T + t_idx
        order = np.lexsort((ch, steps))
        inp = b2.SpikeGeneratorGroup(n_in, ch[order].astype(np.int64), steps[order] * clock.dt, clock=clock,
                                     when="thresholds", order=0, sorted=True, name="spikeloop_input*")
        objects = [inp]
        source_spikes = True
    monitors = {}
    source = inp
    for k, layer in enumerate(plan.layers, start=1):
        base = 100 * k
        for j, st in enumerate(layer.stages):
            source, objs = _stage_objects(b2, st, source, source_spikes, base + 4 * j, clock,
                                          f"spikeloop_stage{layer.spec_index}_{j}")
            objects += objs
            source_spikes = st.emits_spikes
        g = b2.NeuronGroup(layer.n, eq.model_equations(layer.kind), threshold=eq.THRESHOLD, reset=eq.RESET,
                           clock=clock, namespace={"num_steps": T}, name=f"spikeloop_layer{layer.spec_index}*")
        for name, values in layer.params.items():
            setattr(g, name, values)
        g.thresholder["spike"].when = "thresholds"
        g.thresholder["spike"].order = base + 93
        g.resetter["spike"].when = "thresholds"
        g.resetter["spike"].order = base + 94
        upd = g.run_regularly(eq.update_code(layer.kind, layer.reset), when="thresholds", order=base + 92,
                              name=f"spikeloop_update{layer.spec_index}*")
        ff_name = f"spikeloop_ff{layer.spec_index}*"
        ff = _connect(b2, source, g, layer.feedforward, eq.FEEDFORWARD_ON_PRE, base + 91, clock, ff_name) \
            if source_spikes else _connect_summed(b2, source, g, layer.feedforward, "X", base + 91, clock, ff_name)
        objects += [g, upd, ff]
        if layer.recurrent is not None:
            objects.append(_connect(b2, g, g, layer.recurrent, eq.RECURRENT_ON_PRE, base + 95, clock,
                                    f"spikeloop_rec{layer.spec_index}*"))
        variables = ["v", "I"] if layer.kind == "synaptic" else ["v"]
        state_mon = b2.StateMonitor(g, variables, record=True, when="end", clock=clock)
        spike_mon = b2.SpikeMonitor(g, when="end")
        objects += [state_mon, spike_mon]
        monitors[layer.spec_index] = (state_mon, spike_mon)
        source, source_spikes = g, True
    return b2.Network(*objects), monitors, T * B


def collect(plan: NetworkPlan, monitors, T: int, B: int) -> dict[int, dict[str, np.ndarray]]:
    """Monitor contents as {spec index: {"spikes"|"mem"|"syn": [T, B, N] float64}}."""
    out = {}
    for layer in plan.layers:
        state_mon, spike_mon = monitors[layer.spec_index]
        v = np.asarray(state_mon.v_, dtype=np.float64)
        if v.shape != (layer.n, T * B):
            raise RuntimeError(f"Brian2 recorded {v.shape[1]} steps of layer {layer.spec_index}, expected {T * B}")
        rec = {"mem": v.reshape(layer.n, B, T).transpose(2, 1, 0).copy()}
        if layer.kind == "synaptic":
            rec["syn"] = np.asarray(state_mon.I_, dtype=np.float64).reshape(layer.n, B, T).transpose(2, 1, 0).copy()
        spikes = np.zeros((B * T, layer.n))
        step = np.rint(np.asarray(spike_mon.t_) / plan.dt_s).astype(np.int64)
        spikes[step, np.asarray(spike_mon.i, dtype=np.int64)] = 1.0
        rec["spikes"] = spikes.reshape(B, T, layer.n).transpose(1, 0, 2).copy()
        out[layer.spec_index] = rec
    return out


def _simulate(plan: NetworkPlan, inputs: np.ndarray, standalone_dir: Path | None = None, progress: bool = False):
    """Build and run under the current prefs/device; returns (layers, timing).

    Brian2's Network.run() starts with a full gc.collect() (only to warn about stray Brian2
    objects); with torch loaded, that scan of the whole heap was a third of a small run. The heap
    that exists before the build is frozen for the call, so the collections only scan this
    network's objects. The network is collected before returning: its object names (which appear
    in the generated code, hence in the compiled-code cache key) are free again for the next run."""
    import brian2 as b2

    T, B, _ = inputs.shape
    freeze = gc.get_freeze_count() == 0  # leave a caller's own gc.freeze() alone
    if freeze:
        gc.freeze()
    try:
        t0 = time.perf_counter()
        net, monitors, n_steps = build_network(plan, inputs)
        t1 = time.perf_counter()
        net.run(n_steps * plan.dt_s * b2.second, namespace={}, report="stderr" if progress else None)
        if standalone_dir is not None:
            b2.device.build(directory=str(standalone_dir), compile=True, run=True, with_output=False)
        t2 = time.perf_counter()
        layers = collect(plan, monitors, T, B)
        del net, monitors
        gc.collect()
    finally:
        if freeze:
            gc.unfreeze()
    return layers, {"build_seconds": t1 - t0, "run_seconds": t2 - t1}


def run_brian2(plan: NetworkPlan, inputs, target: str = "numpy", cache_dir: str | Path | None = None,
               progress: bool = False) -> Brian2Result:
    """Simulate `plan` in Brian2 on its input [T, B, *input_shape] (spikes 0/1, or real currents when
    `plan.input_kind` is "analog") with the given target.

    Brian2 always computes in float64. numpy and cython run in this process (preferences are set
    for the call and restored); cpp_standalone runs in a subprocess (`python -m
    snn.brian2_ref.standalone`) in a project folder cached per network structure.
    progress: Brian2 reports the run's progress on stderr (numpy and cython)."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    inputs = check_inputs(plan, inputs)
    import brian2  # imported before the clock starts: a one-time cost, not the simulation's

    t0 = time.perf_counter()
    if target == "cpp_standalone":
        layers, timing = _run_standalone(plan, inputs, cache_dir)
    else:
        device = brian2.get_device()
        if type(device).__name__ != "RuntimeDevice":
            raise RuntimeError(f"Brian2's device in this process is {type(device).__name__}, not the runtime device "
                               "the numpy/cython targets need (was set_device() called elsewhere?)")
        with brian2_prefs(target, cache_dir):
            layers, timing = _simulate(plan, inputs, progress=progress)
    return Brian2Result(layers, time.perf_counter() - t0, target, timing)


# ---------------------------------------------------------------------------------------------
# cpp_standalone: the plan and inputs go to a subprocess as one .npz file (`plan.plan_to_arrays`).

def _structure_key(plan: NetworkPlan, inputs: np.ndarray) -> str:
    """Hash of what the generated C++ code depends on (sizes, kinds, reset modes, stages, run length)."""
    import brian2

    desc = {"brian2": brian2.__version__, "flags": STRICT_FP_FLAGS, "steps": list(inputs.shape),
            "dt_s": plan.dt_s, "input_kind": plan.input_kind,
            "layers": [(l.kind, l.reset, l.n, l.feedforward.n_pre, l.recurrent is not None,
                        [(st.kind, st.n_in, st.n_out) + (() if st.windows is None else (st.windows.shape[1],))
                         for st in l.stages]) for l in plan.layers]}
    return hashlib.sha256(json.dumps(desc).encode()).hexdigest()[:16]


def _run_standalone(plan: NetworkPlan, inputs: np.ndarray, cache_dir):
    try:
        from filelock import FileLock  # installed with torch
    except ImportError:  # pragma: no cover
        from brian2.utils.filelock import FileLock

    root = Path(cache_dir) if cache_dir is not None else cache_root()
    project = root / "cpp_standalone" / _structure_key(plan, inputs)
    project.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="spikeloop_b2sa_") as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(src, inputs=inputs, **plan_to_arrays(plan))
        with FileLock(str(project) + ".lock"):
            proc = subprocess.run([sys.executable, "-m", "snn.brian2_ref.standalone", str(src), str(dst),
                                   str(project), str(root)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"Brian2 cpp_standalone run failed (exit {proc.returncode}):\n"
                               f"{proc.stderr[-3000:]}")
        with np.load(dst) as z:
            layers: dict[int, dict[str, np.ndarray]] = {}
            for key in z.files:
                if key == "timing":
                    continue
                idx, name = key.split("_", 1)
                layers.setdefault(int(idx), {})[name] = z[key]
            timing = json.loads(bytes(z["timing"]).decode())
    return layers, timing
