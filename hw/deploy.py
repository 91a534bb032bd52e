"""Run a compiled model on a device over a dataset and compare with the float model.

The device sees exactly the float model's input: sample i of the set is encoded with
`snn.encoding.encode_samples(spec, x, ids, EVAL_SEED)` and flattened to [T, B, N_in]; the prediction
is `snn.training.predict` (argmax of output spike counts, ties to the lowest index).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from snn.encoding import encode_samples
from snn.spec import ModelSpec
from snn.training import EVAL_SEED, predict

from encoders import is_spike_encoder

from .device import Device, RunResult
from .fixed_point import quantize_input
from .program import Program


def device_inputs(spec: ModelSpec, x: torch.Tensor, sample_ids, seed: int = EVAL_SEED,
                  program: Program | None = None) -> torch.Tensor:
    """x: [B, *input_shape] intensities -> the device input [T, B, N_in] (flattened features):
    spikes as uint8, or, for a model with an analog encoder (`direct`) compiled with graded input,
    the encoder's currents quantized with the program's input_scale as int8
    (`hw.fixed_point.quantize_input`; `program` is then required)."""
    s = encode_samples(spec, x.reshape(x.shape[0], *spec.input_shape), sample_ids, seed)
    s = s.reshape(s.shape[0], s.shape[1], -1)
    if is_spike_encoder(spec.encoder["type"]):
        return s.to(torch.uint8)
    if program is None or not program.graded_input:
        raise ValueError(f"model spec {spec.name!r} uses the analog encoder {spec.encoder['type']!r}: its device "
                         f"input is graded (int8 currents); pass the compiled program (with graded input) "
                         f"so that its input_scale quantizes them")
    return quantize_input(s, program.input_scale)


@dataclass
class DeviceRun:
    """Output of `run_dataset`: per-sample output rasters and predictions, counters, timing."""

    output_spikes: torch.Tensor      # [T, N, N_out] uint8 over the whole set
    predictions: torch.Tensor        # [N] int64
    counters: dict[int, dict[str, int]]
    seconds: float                   # wall time inside Device.run

    @property
    def counts(self) -> torch.Tensor:
        return self.output_spikes.to(torch.int64).sum(0)


def run_dataset(device: Device, spec: ModelSpec, x: torch.Tensor, batch_size: int = 256,
                seed: int = EVAL_SEED, progress: bool = False, inputs: torch.Tensor | None = None,
                program: Program | None = None) -> DeviceRun:
    """Run every sample of `x` ([N, *input_shape]) through a loaded device in batches.

    inputs: precomputed `device_inputs` ([T, N, N_in]); encoded here when None (with `program`, the
    loaded one, for graded input)."""
    n = x.shape[0]
    outs, counters, seconds = [], {}, 0.0
    starts = range(0, n, batch_size)
    for lo in tqdm(starts, desc=f"run {device.uri or type(device).__name__}", disable=not progress):
        ids = list(range(lo, min(n, lo + batch_size)))
        s = inputs[:, lo:lo + len(ids)] if inputs is not None else device_inputs(spec, x[lo:lo + len(ids)], ids, seed, program)
        t0 = time.perf_counter()
        res: RunResult = device.run(s)
        seconds += time.perf_counter() - t0
        outs.append(res.output_spikes)
        for k, c in res.counters.items():
            acc = counters.setdefault(k, {"spikes": 0, "synops": 0})
            for key in acc:
                acc[key] += int(c[key])
    raster = torch.cat(outs, dim=1)
    return DeviceRun(raster, predict(raster.to(torch.int64).sum(0)), counters, seconds)


def float_predictions(model, spec: ModelSpec, x: torch.Tensor, batch_size: int = 256,
                      seed: int = EVAL_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """The float model's (output spikes [T, N, N_out], predictions [N]) on the same encoded input."""
    outs = []
    dev = next(model.parameters()).device if any(True for _ in model.parameters()) else torch.device("cpu")
    with torch.no_grad():
        for lo in range(0, x.shape[0], batch_size):
            ids = list(range(lo, min(x.shape[0], lo + batch_size)))
            s = encode_samples(spec, x[lo:lo + len(ids)].reshape(len(ids), *spec.input_shape), ids, seed)
            outs.append(model(s.to(dev)).spikes.cpu())
    raster = torch.cat(outs, dim=1)
    return raster, predict(raster.sum(0))
