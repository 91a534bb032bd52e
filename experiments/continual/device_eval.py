"""The accuracy matrix on a device: after every task of a continual run, compile the current weights
for a chip profile (`hw.compiler.compile_model`) and evaluate every task seen so far on the device
with `spikeloop deploy`'s own function (`experiments.commands.deploy.deploy_checkpoint`).

Lives in experiments/ because hw/ depends on snn/: snn.continual only offers the `on_task_end`
hook. Per task j the device and the float model see the same input spikes (deploy's encoding:
sample i of task j's test set with seed EVAL_SEED), so `float_row` is the float model scored on
the device's input, next to the harness's own float matrix (encoded with other ids).
Predictions are restricted to task j's head (argmax of output spike counts, ties to the lowest
index), as in the harness.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from snn.continual import TaskStream
from snn.spec import ModelSpec

REPORT_KEYS = ("device_layer", "fan_in", "num_neurons", "weight_relative_rmse", "weight_max_abs_error",
               "weight_clipped_fraction", "bias_clipped_fraction", "w_shift", "beta", "threshold")


@dataclass(frozen=True)
class _TestSet:
    """What deploy_checkpoint reads of a dataset: name, test_x [N, ...], test_y [N] int64."""

    name: str
    test_x: torch.Tensor
    test_y: torch.Tensor


class DeviceEvaluator:
    """`on_task_end` callback: (k, model) -> {"task", "device_row", "float_row", "compile"}; rows
    hold accuracies (fractions) of tasks 0..k, "compile" the per-layer compile report (weight
    relative RMSE, clipped fractions, shift) and the program size."""

    def __init__(self, spec: ModelSpec, stream: TaskStream, profile: str, device_uri: str = "sim",
                 batch_size: int = 256):
        self.spec, self.stream, self.profile, self.uri, self.batch_size = spec, stream, profile, device_uri, batch_size

    def __call__(self, k: int, model) -> dict:
        from experiments.commands.deploy import deploy_checkpoint
        from hw.compiler import compile_model
        from snn.checkpoint import Checkpoint

        state = {n: v.detach().to("cpu", copy=True) for n, v in model.state_dict().items()}
        prog = compile_model(self.spec, state, self.profile)
        ckpt = Checkpoint(self.spec, state)
        device_row, float_row, agree = [], [], []
        for j in range(k + 1):
            task = self.stream.tasks[j]
            dep = deploy_checkpoint(ckpt, _TestSet(task.name, task.test_x, task.test_y), self.uri, self.profile,
                                    batch_size=self.batch_size, progress=False, program=prog)
            mask = self.stream.head_mask(j)
            dpred = _head_predict(dep.device_run.counts, mask)
            fpred = _head_predict(dep.float_raster.sum(0), mask)
            device_row.append((dpred == dep.labels).float().mean().item())
            float_row.append((fpred == dep.labels).float().mean().item())
            agree.append((dpred == fpred).float().mean().item())
        layers = [{key: rep[key] for key in REPORT_KEYS if key in rep} for rep in prog.report["layers"]]
        return {"task": k, "device_row": device_row, "float_row": float_row, "agreement_row": agree,
                "compile": {"profile": prog.profile, "program_bytes": prog.size_bytes(), "layers": layers}}


def _head_predict(counts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """counts [N, N_out] -> predicted class [N] among the head's outputs (ties to the lowest index)."""
    return counts.to(torch.float64).masked_fill(~mask.cpu(), -1.0).argmax(1)


def device_matrices(task_end: list[dict], K: int) -> dict:
    """Assemble the per-task callback values into K x K matrices (None where not measured):
    {"accuracy_matrix" (device), "float_accuracy_matrix" (float, same input spikes),
    "agreement_matrix", "compile_reports" [one per evaluated task]}."""
    dev = [[None] * K for _ in range(K)]
    flt = [[None] * K for _ in range(K)]
    agr = [[None] * K for _ in range(K)]
    for e in task_end:
        k = e["task"]
        for j, (d, f, a) in enumerate(zip(e["device_row"], e["float_row"], e["agreement_row"])):
            dev[k][j], flt[k][j], agr[k][j] = d, f, a
    return {"accuracy_matrix": dev, "float_accuracy_matrix": flt, "agreement_matrix": agr,
            "compile_reports": [{"task": e["task"]} | e["compile"] for e in task_end]}
