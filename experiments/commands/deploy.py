"""`spikeloop deploy CKPT --device URI --profile P`: run a compiled checkpoint on a device over the
test set and compare with the float model (and, for devices other than `sim`, with `sim`).

CKPT is a spikeloop checkpoint (.safetensors) or a NIR graph (.nir, from spikeloop or another tool,
read by `hw.nir_graph.import_nir`; `--dt-s` gives the time step of a graph that records none)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from experiments.args import add_number
from experiments.commands.train import add_dataset_args, fit_inputs, load_data
from experiments.output import add_json_flag, emit
from snn.checkpoint import load_checkpoint
from snn.training import EVAL_SEED


def register(sub) -> None:
    p = sub.add_parser("deploy", help="run a checkpoint on a device (sim, sim:cuda, emulator, serial://..., lava, xylosim)")
    p.add_argument("checkpoint", help="a checkpoint (.safetensors) or a NIR graph (.nir)")
    p.add_argument("--device", default="sim", help="device URI: sim, sim:cuda, emulator, serial:///dev/ttyACM0?baud=..., "
                                                   "lava (Lava 0.10 in its side venv), xylosim (the vendor extra)")
    p.add_argument("--profile", default=None, help="chip profile: mcu, loihi, xylo-imu, xylo-audio2, xylo-like "
                                                   "(default: loihi on lava, xylo-imu on xylosim, else mcu)")
    add_number(p, "--max-spikes", default=1, help="xylo: spikes per neuron per step")
    add_dataset_args(p)
    p.set_defaults(dataset=None)
    add_number(p, "--batch-size", default=256, help="samples per Device.run call")
    add_number(p, "--seed", default=EVAL_SEED, help="input encoding seed")
    add_number(p, "--dt-s", default=None, help="NIR input: time step in seconds of a graph that records none")
    p.add_argument("--nir-producer", default="nir", choices=["nir", "norse"],
                   help="NIR input: the tool that wrote the graph, where its time constants need a correction "
                        "(norse: Norse 1.1's to_nir writes dt*tau; hw.nir_graph.PRODUCERS)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--plot", default=None, help="write a PNG: device vs float output spike counts, per-layer errors")
    add_json_flag(p)
    p.set_defaults(func=run)


@dataclass
class Deployment:
    """Everything a deployment produced: the JSON-able `result` and the raw pieces behind it."""

    result: dict
    program: object            # hw.program.Program
    float_predictions: object  # [N] int64
    float_raster: object       # [T, N, N_out]
    device_run: object         # hw.deploy.DeviceRun
    labels: object             # [N] int64


def deploy_checkpoint(ckpt, data, device_uri: str, profile: str, seed: int = EVAL_SEED,
                      batch_size: int = 256, progress: bool = True, program=None,
                      max_spikes: int = 1) -> Deployment:
    """Compile `ckpt` for `profile` (unless `program` is given), run the test set of `data` on the
    device at `device_uri` and on the float model, and compare (and with `sim` for other devices)."""
    import torch

    from hw.compiler import compile_model
    from hw.deploy import device_inputs, float_predictions, run_dataset
    from hw.device import open_device

    spec = ckpt.spec
    x, y = fit_inputs(spec, data.test_x), data.test_y
    prog = program if program is not None else compile_model(spec, ckpt.state_dict, profile,
                                                             max_spikes=max_spikes)
    model = ckpt.build(dtype=torch.float32).eval()
    fraster, fpred = float_predictions(model, spec, x, seed=seed)
    inputs = device_inputs(spec, x, range(len(x)), seed, prog)
    link = None
    with open_device(device_uri, profile=prog.profile) as dev:
        info = dev.info()
        dev.load(prog.to_bytes())
        run = run_dataset(dev, spec, x, batch_size, seed, progress=progress, inputs=inputs)
        if hasattr(dev, "link_stats"):
            link = dev.link_stats()
    n, T = len(y), spec.num_steps
    result = {
        "dataset": data.name, "device": device_uri, "profile": prog.profile,
        "device_info": info.to_dict(), "test_samples": n, "num_steps": T,
        "device_accuracy": (run.predictions == y).float().mean().item(),
        "float_accuracy": (fpred == y).float().mean().item(),
        "agreement_with_float": (run.predictions == fpred).float().mean().item(),
        "timesteps_per_s": n * T / run.seconds if run.seconds > 0 else None,
        "samples_per_s": n / run.seconds if run.seconds > 0 else None,
        "synops": sum(c["synops"] for c in run.counters.values()),
        "spikes": sum(c["spikes"] for c in run.counters.values()),
        "synops_per_sample": sum(c["synops"] for c in run.counters.values()) / n,
        "layer_counters": run.counters, "program_bytes": prog.size_bytes(),
        "program_crc32": f"0x{prog.checksum:08x}", "compile_report": prog.report["layers"],
    }
    result["accuracy_drop_points"] = 100 * (result["float_accuracy"] - result["device_accuracy"])
    if device_uri.strip().lower() != "sim":
        with open_device("sim", profile=prog.profile) as sim:
            sim.load(prog.to_bytes())
            ref = run_dataset(sim, spec, x, batch_size, seed, inputs=inputs)
        same = (ref.output_spikes == run.output_spikes).flatten(2).all(dim=2).all(dim=0)
        result["agreement_with_sim"] = same.float().mean().item()
    if link is not None:
        result["link_stats"] = link
        if isinstance(link, dict) and "link_efficiency" in link:
            result["link_efficiency"] = link["link_efficiency"]
    return Deployment(result, prog, fpred, fraster, run, y)


# the profile a vendor simulator runs when --profile is not given (every other device: mcu)
VENDOR_DEFAULT_PROFILES = {"lava": "loihi", "xylosim": "xylo-imu"}


def default_profile(device_uri: str) -> str:
    from hw.device import parse_uri
    return VENDOR_DEFAULT_PROFILES.get(parse_uri(device_uri).scheme, "mcu")


def load_model_file(path: str, dt_s: float | None = None, producer: str = "nir"):
    """A `Checkpoint` from a .safetensors checkpoint or, for a .nir file, from its NIR graph (no
    metrics; the dataset defaults to digits unless --dataset says otherwise). producer: see
    `hw.nir_graph.PRODUCERS`."""
    from pathlib import Path

    if Path(path).suffix.lower() != ".nir":
        if dt_s is not None or producer != "nir":
            raise ValueError("--dt-s and --nir-producer apply to a NIR graph (.nir) only; a checkpoint has its "
                             "own dt_s")
        return load_checkpoint(path)
    from hw.nir_graph import import_nir
    from snn.checkpoint import Checkpoint
    spec, state = import_nir(path, dt_s=dt_s, producer=producer)
    return Checkpoint(spec, state, metrics={}, extra={"source": "nir"})


def run(args) -> int:
    t_start = time.perf_counter()
    ckpt = load_model_file(args.checkpoint, args.dt_s, args.nir_producer)
    args.dataset = args.dataset or ckpt.extra.get("dataset", "digits")
    data = load_data(args)
    dep = deploy_checkpoint(ckpt, data, args.device, args.profile or default_profile(args.device), args.seed,
                            args.batch_size,
                            progress=not args.no_progress, max_spikes=args.max_spikes)
    result = {"checkpoint": args.checkpoint} | dep.result
    if args.plot:
        result["plot"] = _plot(dep.float_raster.sum(0), dep.device_run.counts, dep.program.report["layers"],
                               args.plot, f"{data.name} on {args.device} ({dep.program.profile})")
    result["seconds"] = time.perf_counter() - t_start
    emit(result, args.json, title=f"deployed {args.checkpoint} on {args.device} ({dep.program.profile})")
    return 0


def _plot(float_counts, device_counts, layers, path, title):
    """Left: output spike count per sample and class, device vs float. Right: per-layer weight error
    and |beta_eff - beta| from the compile report."""
    from experiments.plots import _save, plt
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    f, d = float_counts.flatten().numpy(), device_counts.flatten().numpy()
    a1.scatter(f, d, s=4, alpha=0.3)
    hi = max(float(f.max()), float(d.max()), 1.0)
    a1.plot([0, hi], [0, hi], "k--", lw=0.8)
    a1.set(xlabel="float model output spikes", ylabel="device output spikes", title=title)
    names = [f"layer {r['device_layer']}" for r in layers]
    xs = range(len(layers))
    a2.bar([i - 0.2 for i in xs], [r["weight_relative_rmse"] for r in layers], 0.4, label="weight rel. RMSE")
    a2.bar([i + 0.2 for i in xs], [r["beta"]["max_abs_error"] for r in layers], 0.4, label="max |beta error|")
    a2.set_xticks(list(xs), names)
    a2.set(title="compile report", ylabel="error")
    a2.legend()
    return _save(fig, path)
