"""`SimulatedDevice`: runs a device program with its profile's integer arithmetic in torch.

Bit-exact to docs/fixed_point.md (tests compare it with a NumPy reference step by step), batched over
samples, on CUDA when asked (`sim:cuda`). Layers run one after another over all T·B samples at once
(each layer at step t depends only on the previous layer at step t and on its own state, as in the
float model), so each layer is one exact GEMM plus a loop over time of elementwise integer updates.
On CPU the `mcu` profile runs that loop in C, after an exact int8 GEMM (`hw.sim_kernel`; the same
integers bit for bit; `fused=False` or SPIKELOOP_SIM_KERNEL=0 keeps the torch step loop).
URIs: `sim` (CPU) and `sim:cuda`, both taking `profile=` (default mcu). The xylosim profiles
(xylo-imu, xylo-audio2) run with `hw.fixed_point.xylosim_layer` and the chip's hidden → readout delay.
A non-ideal `mcu` chip (`hw.nonideal`, docs/fixed_point.md "Non-ideal chips") is asked for with
`sim?chip=7&mismatch=0.15&noise=0.02` (or `chip=ChipModel(...)`).
Programs of format version 2 (convolution and pooling records, graded int8 input; profile mcu;
loihi: convolution records only) run through `_run_maps`: each layer's synaptic input for all T·B steps at once (an exact
convolution, `hw.fixed_point.conv_input`; pooling records `pool_record`), then the same time
loop as a dense layer (the C kernel on CPU, the torch steps elsewhere).
"""

from __future__ import annotations

import torch

from . import fixed_point as fxp
from . import nonideal as ni
from . import sim_kernel
from .device import Device, DeviceError, DeviceInfo, DeviceURI, RunResult, as_program, check_input
from .device import register_backend
from .profiles import get_profile
from .program import Program

SIM_VERSION = "spikeloop-sim 1"
MAP_ARITHMETIC = ("mcu", "loihi")  # the arithmetic of the profiles whose programs may hold conv records


class SimulatedDevice(Device):
    """A software device for `profile` on `device` ("cpu" or "cuda")."""

    def __init__(self, profile: str = "mcu", device: str | torch.device = "cpu",
                 chip: ni.ChipModel | None = None, fused: bool | None = None):
        """fused: run `mcu` layers on CPU with the C time loop (`hw.sim_kernel`, bit-identical);
        None: whenever it is available, False: always the torch step loop (the reference)."""
        self.profile = get_profile(profile)
        self.fused = sim_kernel.available() if fused is None else bool(fused)
        if self.fused and not sim_kernel.available():
            raise DeviceError("fused=True needs the sim C kernel, which could not be built here (no C compiler?)")
        if chip is not None and not isinstance(chip, ni.ChipModel):
            raise TypeError(f"chip must be a hw.nonideal.ChipModel, got {type(chip).__name__}")
        if chip is not None and not chip.ideal and self.profile.arithmetic != "mcu":
            raise ValueError(f"the non-ideal chip model is defined for the mcu profile, not {self.profile.name!r}")
        self.chip = None if chip is None or chip.ideal else chip
        self._nonideal: list[ni.NonidealLayer] = []
        self._samples = 0  # samples run since open(): the noise counter (docs/fixed_point.md)
        self._maps = False
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise DeviceError("sim:cuda needs a CUDA GPU, and none is available here (use 'sim')")
        self.program: Program | None = None
        self._params: list[fxp.LayerParams] = []
        self._w_i8: list[torch.Tensor] | None = None
        self._open = False

    @property
    def backend(self) -> str:
        return "sim:cuda" if self.device.type == "cuda" else "sim"

    def open(self) -> "SimulatedDevice":
        if not self._open:
            self._samples = 0
        self._open = True
        return self

    def close(self) -> None:
        self._open = False
        self.program, self._params = None, []

    def _check_open(self):
        if not self._open:
            raise DeviceError(f"{self.backend} device is not open (use open() or a with block)")

    def info(self) -> DeviceInfo:
        extra = {"torch_device": str(self.device)}
        if self.chip is not None:
            extra["chip"] = self.chip.to_dict()
        return DeviceInfo(self.backend, self.profile.name, SIM_VERSION, self.profile.capacities(), extra)

    def load(self, program: Program | bytes) -> None:
        """Load a program; bytes are decoded and validated exactly as a board would."""
        self._check_open()
        prog = as_program(program, self.profile.name)
        layers = prog.layers
        if self.chip is not None:  # the chip's fixed pattern, applied once per load
            pairs = [ni.mismatched_layer(l, k, self.chip) for k, l in enumerate(layers)]
            layers = [p[0] for p in pairs]
            self._nonideal = [ni.NonidealLayer(*(None if t is None else t.to(self.device) for t in p[1]))
                              for p in pairs]
        maps = prog.graded_input or any(l.kind != "dense" for l in layers)
        if maps and self.profile.arithmetic not in MAP_ARITHMETIC:
            raise DeviceError(f"convolution/pooling records and graded input run on profiles with the "
                              f"{sorted(MAP_ARITHMETIC)} arithmetic, this device runs {self.profile.name!r}")
        self._maps = maps  # the version-2 path (`_run_maps`)
        self._params = [None if l.kind == "pool" else fxp.layer_params(l, self.device) for l in layers]
        self._w_i8 = None  # W^T as int8 [M, N] per layer, for the exact int8 GEMM of `_run_kernel`
        if not maps and self._use_kernel() and sim_kernel.int8_gemm_exact():
            self._w_i8 = [p.weights_t.to(torch.int8).contiguous() for p in self._params]
        self.program = prog

    def reset(self) -> None:
        """Every run starts from the reset state, so there is nothing to clear between runs."""
        self._check_open()

    def run(self, spikes: torch.Tensor, probe: bool = False) -> RunResult:
        """spikes: [T, B, N_in] {0, 1} (a graded-input program: int8 values in [-128, 127], e.g.
        `hw.fixed_point.quantize_input(currents, program.input_scale)`) -> RunResult(output_spikes
        [T, B, N_out] uint8, counters, membranes/layer_spikes [T, B, N] when probe; a pooling
        record's layer_spikes are its outputs: 0/1, or counts for a sum pool)."""
        self._check_open()
        if self.program is None:
            raise DeviceError("no program loaded: call load(program) first")
        x = check_input(spikes, self.program).to(self.device)
        T, B = x.shape[:2]
        if self._maps:
            return self._run_maps(x, probe)
        if self.profile.arithmetic == "xylosim":
            return self._run_xylosim(x, probe)
        if self._use_kernel():
            return self._run_kernel(x, probe)
        h = x.reshape(T * B, -1).to(torch.float32)  # spikes/counts as exact small floats for the GEMM
        max_count = 1
        drive_fn, step_fn = fxp.arithmetic(self.profile.name)
        counters, membranes, layer_spikes = {}, {}, {}
        samples = torch.arange(self._samples, self._samples + B, dtype=torch.int64, device=self.device)
        self._samples += B
        for k, p in enumerate(self._params):
            nl = self._nonideal[k] if self.chip is not None else None
            n = p.threshold.shape[0]
            # one GEMM for all steps; conversion and drive per step keep the large tensors few
            a = fxp.exact_dot_float(h, p.weights_t_shifted, max_count).reshape(T, B, n)
            in_count = fxp.count_exact(h)
            noise = ni.noise_q(nl, samples, T) if nl is not None else None
            out, mem = self._time_loop(a, p, nl, noise, probe, step_fn, drive_fn)
            synops = in_count * n
            if p.neuron_type.startswith("rleaky"):  # recurrent events: the layer's spikes of steps 1..T-1
                prev = int(out[:-1].sum(dtype=torch.float64))
                synops += prev * n if p.neuron_type == "rleaky_dense" else prev
            counters[k] = {"spikes": None, "synops": synops}
            if k:
                counters[k - 1]["spikes"] = in_count  # this layer's input is the previous layer's output
            if probe:
                membranes[k], layer_spikes[k] = mem.cpu(), out.to(torch.uint8).cpu()
            h = out.reshape(T * B, n)
            max_count = p.max_spikes
        counters[len(self._params) - 1]["spikes"] = fxp.count_exact(h)
        return RunResult(h.reshape(T, B, -1).to(torch.uint8).cpu(), counters,
                         membranes if probe else None, layer_spikes if probe else None)

    def _use_kernel(self) -> bool:
        return self.fused and self.profile.arithmetic == "mcu" and self.device.type == "cpu"

    def _run_kernel(self, x: torch.Tensor, probe: bool) -> RunResult:
        """mcu on CPU: every layer in one `sim_kernel.mcu_layer` call (synaptic input and the time
        loop; the same integers as the torch path below, bit for bit)."""
        T, B = x.shape[:2]
        sample0, self._samples = self._samples, self._samples + B
        counters, membranes, layer_spikes = {}, {}, {}
        s = x.reshape(T * B, -1)  # uint8 {0, 1}
        in_count = sim_kernel.count_u8(s)
        for k, p in enumerate(self._params):
            nl = self._nonideal[k] if self.chip is not None else None
            n = p.threshold.shape[0]
            if self._w_i8 is not None:  # W·s in int32, exact (sim_kernel.int8_gemm_exact)
                a = sim_kernel.int8_gemm(s.view(torch.int8), self._w_i8[k])
            else:  # A = (W·s) << w_shift in float, exact (fxp.exact_dot_float)
                a = fxp.exact_dot_float(s.to(torch.float32), p.weights_t_shifted, 1)
            out, mem, prev, total = sim_kernel.mcu_layer(a.reshape(T, B, n), p, nl, sample0, probe)
            synops = in_count * n
            if p.neuron_type.startswith("rleaky"):  # recurrent events: the layer's spikes of steps 1..T-1
                synops += prev * n if p.neuron_type == "rleaky_dense" else prev
            counters[k] = {"spikes": total, "synops": synops}
            if probe:
                membranes[k], layer_spikes[k] = mem, out
            s, in_count = out.reshape(T * B, n), total
        return RunResult(out, counters, membranes if probe else None, layer_spikes if probe else None)

    def _run_maps(self, x: torch.Tensor, probe: bool) -> RunResult:
        """mcu and loihi programs of format version 2 (docs/fixed_point.md, "Convolution, pooling and graded
        input"): x [T, B, N_in] uint8 spikes or int8 graded values. Each layer's synaptic input A for
        all T·B rows at once (dense: `exact_dot_float`; conv: `conv_input`; a pooling record:
        `pool_record`), then the time loop (C kernel on CPU when fused, else the torch steps)."""
        T, B = x.shape[:2]
        R = T * B
        sample0, self._samples = self._samples, self._samples + B
        samples = torch.arange(sample0, sample0 + B, dtype=torch.int64, device=self.device)
        drive_fn, step_fn = fxp.arithmetic(self.profile.name)
        kernel = self._use_kernel()
        counters, membranes, layer_spikes = {}, {}, {}
        h = x.reshape(R, -1)
        graded = self.program.graded_input
        max_abs = 128 if graded else 1  # bound on |s_j| (graded int8, pool counts pk², spikes 1)
        out = None
        for k, (layer, p) in enumerate(zip(self.program.layers, self._params)):
            if layer.kind == "pool":
                g = layer.geometry
                h = fxp.pool_record(h, g)
                max_abs = g.pool_kernel ** 2 if g.pool == "sum" else 1
                counters[k] = {"spikes": 0, "synops": 0}
                if probe:
                    layer_spikes[k] = h.reshape(T, B, -1).to(torch.uint8).cpu()
                continue
            nl = self._nonideal[k] if self.chip is not None else None
            n = p.threshold.shape[0]
            e = fxp.input_events(h, graded)
            if p.conv is not None:
                a = fxp.conv_input(h, p, max_abs)
                synops = fxp.conv_synops(e, p)
            else:
                a = fxp.exact_dot_float(h.to(torch.float32), p.weights_t_shifted, max_abs)
                synops = fxp.count_exact(e) * n
            a = a.reshape(T, B, n)
            if kernel:
                out, mem, _, total = sim_kernel.mcu_layer(a, p, nl, sample0, probe)
            else:
                noise = ni.noise_q(nl, samples, T) if nl is not None else None
                out, mem = self._time_loop(a, p, nl, noise, probe, step_fn, drive_fn)
                out = out.to(torch.uint8)
                total = fxp.count_exact(out.reshape(R, n).to(torch.float32))
            counters[k] = {"spikes": total, "synops": synops}
            if probe:
                membranes[k], layer_spikes[k] = mem.cpu(), out.cpu()
            h, graded, max_abs = out.reshape(R, n), False, 1
        return RunResult(out.cpu(), counters, membranes if probe else None, layer_spikes if probe else None)

    def _time_loop(self, a, p, nl, noise, probe, step_fn, drive_fn):
        """One layer step by step in torch (CUDA, loihi, xylo-like, or fused=False): a [T, B, N]
        synaptic input -> (spikes [T, B, N] float32, U [T, B, N] int32 when probe)."""
        T, B, n = a.shape
        state = fxp.init_state(B, n, self.device, counts=self.profile.max_spikes_per_step > 1)
        out = torch.empty(T, B, n, dtype=torch.float32, device=self.device)
        mem = torch.empty(T, B, n, dtype=torch.int32, device=self.device) if probe else None
        if nl is not None and nl.gain_q16 is not None:
            a = ni.apply_gain(a.to(torch.int64), nl)  # all steps at once (int64, exact)
        for t in range(T):
            s, state = step_fn(drive_fn(a[t].to(torch.int64), p), state, p)
            if noise is not None:  # membrane noise before the spike test
                u = ni.add_noise(state.u, noise[t])
                s = u > p.threshold
                state = fxp.NeuronState(u, state.i, s)
            out[t] = s
            if probe:
                mem[t] = state.u
        return out, mem

    def _run_xylosim(self, x: torch.Tensor, probe: bool) -> RunResult:
        """xylo-imu / xylo-audio2: each layer with `fxp.xylosim_layer`; a layer whose role has
        input_delay_steps = 1 (hidden layers 2.. and the readout) reads the previous layer's spikes
        of the step before (xylosim delivers the hidden pool's spikes, through weights_rec and
        weights_out, one step later: at step 0 none). Feed-forward blocks of weights_rec give each
        neuron events from one layer only, in source order, so one layer at a time is exact."""
        T, B = x.shape[:2]
        h = x.to(torch.float32)
        max_count = 1
        counters, membranes, layer_spikes = {}, {}, {}
        roles = self.profile.roles_for(len(self._params))
        for k, p in enumerate(self._params):
            n = p.threshold.shape[0]
            if roles[k].input_delay_steps:
                h = torch.cat([torch.zeros_like(h[:1]), h[:-1]])
            out, mem, _ = fxp.xylosim_layer(h, p, max_count, probe=probe)
            counters[k] = {"spikes": fxp.count_exact(out.reshape(T * B, n)),
                           "synops": fxp.count_exact(h.reshape(T * B, -1)) * n}
            if probe:
                membranes[k], layer_spikes[k] = mem.cpu(), out.to(torch.uint8).cpu()
            h, max_count = out, p.max_spikes
        return RunResult(h.to(torch.uint8).cpu(), counters, membranes if probe else None,
                         layer_spikes if probe else None)


def _sim_factory(uri: DeviceURI, profile: str = "mcu", **kwargs) -> SimulatedDevice:
    target = uri.target or uri.params.get("device", "cpu")
    if target not in ("cpu", "cuda") and not target.startswith("cuda:"):
        raise ValueError(f"sim target must be cpu or cuda (e.g. 'sim:cuda'), got {target!r}")
    chip = kwargs.pop("chip", None)
    fused = kwargs.pop("fused", None)
    if kwargs:
        raise TypeError(f"sim device got unexpected options {sorted(kwargs)}")
    params = dict(uri.params)
    from_uri = ni.ChipModel.from_uri_params(params, f"sim URI {uri.raw!r}")
    if from_uri is not None and chip is not None:
        raise ValueError(f"sim URI {uri.raw!r} names a chip and chip= was given too; use one")
    return SimulatedDevice(profile=params.get("profile", profile), device=target, chip=from_uri or chip,
                           fused=fused)


register_backend("sim", _sim_factory)
