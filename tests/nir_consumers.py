"""Run a NIR graph in the real NIR consumers that install here, one sample at a time, and give the
output raster: snnTorch 1.0's `import_from_nir`, Norse 1.1.0's `from_nir`, nirtorch 2.6's `nir_to_torch`
with its default maps and a forward-Euler neuron map written from NIR's equations, and Rockpool
3.1.0's `from_nir`.

NIR graphs have no batch axis (the exported Flatten has start_dim=0), so each sample runs alone and
the state starts empty for each. Every runner: (graph, x [T, B, *input_shape] float {0, 1}, dt_s)
-> output spikes [T, B, N] float {0, 1}. Used by tests/test_nir_interop.py.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import nir
import numpy as np
import torch


def _per_sample(step, x: torch.Tensor) -> torch.Tensor:
    """step(x_t [*input_shape], state) -> (out [N], state), state None at t = 0 of each sample."""
    out = []
    with torch.no_grad():
        for b in range(x.shape[1]):
            state, steps = None, []
            for t in range(x.shape[0]):
                o, state = step(x[t, b], state)
                steps.append(o)
            out.append(torch.stack(steps))
    return torch.stack(out, dim=1)


def run_snntorch(graph: nir.NIRGraph, x: torch.Tensor, dt_s: float | None = None) -> torch.Tensor:
    """snnTorch 1.0 `snntorch.import_nir.import_from_nir(graph)`; dt_s is not an input (the importer
    hard-codes 1e-4 s). Its neurons keep hidden state (init_hidden=True), reset per sample."""
    import snntorch.import_nir

    with contextlib.redirect_stdout(io.StringIO()):  # the importer prints progress and warnings
        net = snntorch.import_nir.import_from_nir(graph)

    def step(xt, state):
        if state is None:
            for m in net.modules():
                if hasattr(m, "reset_hidden"):
                    m.reset_hidden()
        o = net(xt)
        return (o[0] if isinstance(o, tuple) else o), True

    return _per_sample(step, x)


def run_norse(graph: nir.NIRGraph, x: torch.Tensor, dt_s: float) -> torch.Tensor:
    """Norse 1.1.0 `norse.torch.from_nir(graph, dt=dt_s)` (nirtorch's GraphExecutor, state passed
    back in every step)."""
    import norse.torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nirtorch.load's DeprecationWarning
        logging.disable(logging.WARNING)  # Norse logs a warning for every LIF with r != 1
        try:
            net = norse.torch.from_nir(graph, dt=dt_s)
        finally:
            logging.disable(logging.NOTSET)
    return _per_sample(lambda xt, s: net(xt, s), x)


def _f32(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float32))


class EulerLIF(torch.nn.Module):
    """NIR's LIF `tau dv/dt = (v_leak − v) + r·I`, one forward-Euler step of dt, spike when
    v > v_threshold, then v = v_reset (NIR's reset)."""

    def __init__(self, node: nir.LIF, dt_s: float):
        super().__init__()
        self.k, self.r, self.v_leak = _f32(dt_s / np.asarray(node.tau, float)), _f32(node.r), _f32(node.v_leak)
        self.v_th, self.v_reset = _f32(node.v_threshold), _f32(node.v_reset)

    def forward(self, x, state=None):
        v = torch.zeros_like(x) if state is None else state
        v = v + self.k * ((self.v_leak - v) + self.r * x)
        z = (v > self.v_th).to(x.dtype)
        return z, torch.where(z > 0, self.v_reset, v)


class EulerCubaLIF(torch.nn.Module):
    """NIR's CubaLIF `tau_syn di/dt = −i + w_in·I`, `tau_mem dv/dt = (v_leak − v) + r·i`, forward
    Euler (i first), NIR's reset of v."""

    def __init__(self, node: nir.CubaLIF, dt_s: float):
        super().__init__()
        self.ks, self.km = _f32(dt_s / np.asarray(node.tau_syn, float)), _f32(dt_s / np.asarray(node.tau_mem, float))
        self.w_in, self.r, self.v_leak = _f32(node.w_in), _f32(node.r), _f32(node.v_leak)
        self.v_th, self.v_reset = _f32(node.v_threshold), _f32(node.v_reset)

    def forward(self, x, state=None):
        i, v = (torch.zeros_like(x), torch.zeros_like(x)) if state is None else state
        i = i + self.ks * (self.w_in * x - i)
        v = v + self.km * ((self.v_leak - v) + self.r * i)
        z = (v > self.v_th).to(x.dtype)
        return z, (i, torch.where(z > 0, self.v_reset, v))


def run_nirtorch(graph: nir.NIRGraph, x: torch.Tensor, dt_s: float) -> torch.Tensor:
    """nirtorch 2.6 `nirtorch.nir_to_torch(graph, neuron_map)`: its default maps for Affine, Linear,
    Conv2d, AvgPool2d and Flatten, `EulerLIF`/`EulerCubaLIF` for the neurons. Built under a fixed
    torch seed: the default Affine map leaves torch.nn.Linear's random initial bias in place (its bug),
    so the result would otherwise depend on the global RNG."""
    import nirtorch

    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nirtorch.nir_to_torch(graph, {nir.LIF: lambda n: EulerLIF(n, dt_s),
                                            nir.CubaLIF: lambda n: EulerCubaLIF(n, dt_s)})
    return _per_sample(lambda xt, s: net(xt, s), x)




def run_rockpool(graph: nir.NIRGraph, x: torch.Tensor, dt_s: float | None = None) -> torch.Tensor:
    """Rockpool 3.1.0 `rockpool.nn.modules.torch.nir.from_nir(graph)` (it takes no dt: each neuron's
    `dt = min(tau/(1 + r))`); nirtorch's GraphExecutor over Rockpool modules, which evolve a
    [1, T, N] sample, keep their state between calls (reset per sample) and return spike counts."""
    from rockpool.nn.modules.torch.nir import from_nir

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = from_nir(graph)
    out = []
    with torch.no_grad():
        for b in range(x.shape[1]):
            for m in net.modules():  # Rockpool modules keep their state between calls
                if m is not net and hasattr(m, "reset_state"):
                    m.reset_state()
            o = net(x[:, b].reshape(1, x.shape[0], -1))
            out.append((o[0] if isinstance(o, tuple) else o)[0])
    return torch.stack(out, dim=1)


RUNNERS = {"snntorch": run_snntorch, "norse": run_norse, "nirtorch": run_nirtorch, "rockpool": run_rockpool}
