"""`spikeloop export CKPT --format program|nir|lava|xylo`: a device program (binary + JSON view), a NIR
graph, or a vendor simulator's own input.

lava: the `loihi` program as the network file Lava's runner builds its processes from
(`hw.vendor.lava.write_lava_net`, an .npz of integer arrays, format `spikeloop-lava-net 2`); xylo:
the `xylo-imu` / `xylo-audio2` program as the keyword arguments of rockpool's
`XyloSim.from_specification` (`hw.vendor.xylo.write_xylo_spec`, JSON, format `spikeloop-xylo-spec 1`).
Both are described in docs/vendor_checks.md, "Exported files".

NIR: `--dt-s` is the Euler step of the time constants (default 1e-4 s, `hw.nir_graph.DEFAULT_DT_S`:
the step snnTorch's importer hard-codes; the model's own step is kept as `model_dt_s`);
`--nir-target` writes the graph in the form one consumer's importer reads right (`hw.nir_graph.TARGETS`:
generic, snntorch, norse, nirtorch). The result names, per spiking layer, whether that consumer
reproduces it spike for spike (measured in tests/test_nir_interop.py)."""

from __future__ import annotations

from pathlib import Path

from experiments.args import add_number
from experiments.output import add_json_flag, emit
from hw.nir_graph import TARGETS, export_nir, target_report, write_nir
from snn.checkpoint import load_checkpoint


def register(sub) -> None:
    p = sub.add_parser("export", help="compile a checkpoint to a device program, or export it to NIR, Lava or xylosim")
    p.add_argument("checkpoint")
    p.add_argument("--format", choices=["program", "nir", "lava", "xylo"], default="program")
    p.add_argument("--profile", default=None,
                   help="chip profile for --format program (default mcu; loihi, xylo-imu, ...) and xylo "
                        "(default xylo-imu; xylo-audio2); --format lava is loihi")
    add_number(p, "--max-spikes", default=1, help="xylo: spikes per neuron per step")
    add_number(p, "--dt-s", default=None,
               help="--format nir: the Euler step in seconds the NIR time constants are written for "
                    "(tau = dt/(1 - beta)); default 1e-4, the step snnTorch's importer hard-codes (the model's own step is recorded as model_dt_s)")
    p.add_argument("--nir-target", choices=list(TARGETS), default=None,
                   help="--format nir: the consumer to write for: generic (default; spikeloop reads it back "
                        "exactly), snntorch (import_from_nir hard-codes dt = 1e-4 s), norse (from_nir ignores "
                        "LIF r and AvgPool2d), nirtorch (its default Affine map drops the bias)")
    p.add_argument("--out", required=True, help="output file (.slpg program; .nir/.h5 NIR graph; .npz lava; "
                                                ".json xylo)")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.format != "nir" and (args.dt_s is not None or args.nir_target is not None):
        raise ValueError("--dt-s and --nir-target apply to --format nir only")
    ckpt = load_checkpoint(args.checkpoint)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.format == "nir":
        target = args.nir_target or "generic"
        graph = export_nir(ckpt.spec, ckpt.state_dict, dt_s=args.dt_s, target=target)
        write_nir(graph, out)
        layers = target_report(ckpt.spec, target)
        emit({"format": "nir", "out": out, "nir_target": target, "consumer": TARGETS[target].consumer,
              "dt_s": graph.metadata["dt_s"],
              "model_dt_s": ckpt.spec.dt_s, "nodes": sorted(graph.nodes), "bytes": out.stat().st_size,
              "consumer_exact": all(l["exact"] for l in layers),
              "not_reproduced": ", ".join(f"layer {l['layer']} ({l['type']}, {l['reset']})"
                                          for l in layers if not l["exact"]) or "none",
              "layers": layers},
             args.json, title=f"wrote NIR graph {out} for {target}")
        return 0
    if args.format in ("lava", "xylo"):
        return _vendor(args, ckpt, out)
    from hw.compiler import compile_model
    prog = compile_model(ckpt.spec, ckpt.state_dict, args.profile or "mcu", max_spikes=args.max_spikes)
    prog.save(out)
    view = prog.save_json(out.with_name(out.name + ".json"))
    emit({"format": "program", "profile": prog.profile, "out": out, "json_view": view,
          "bytes": prog.size_bytes(), "crc32": f"0x{prog.checksum:08x}", "num_inputs": prog.num_inputs,
          "num_outputs": prog.num_outputs, "layers": len(prog.layers), "report": prog.report},
         args.json, title=f"compiled {args.checkpoint} for {prog.profile} -> {out}")
    return 0


def _vendor(args, ckpt, out: Path) -> int:
    """--format lava / xylo: compile for the vendor's profile and write its file."""
    from hw.compiler import compile_model
    from hw.vendor.devices import LavaDevice, XylosimDevice

    allowed = (LavaDevice if args.format == "lava" else XylosimDevice).profiles
    profile = args.profile or allowed[0]
    if profile not in allowed:
        raise ValueError(f"--format {args.format} writes profile {' or '.join(allowed)}, not {profile!r}")
    prog = compile_model(ckpt.spec, ckpt.state_dict, profile, max_spikes=args.max_spikes)
    common = {"format": args.format, "profile": prog.profile, "out": out, "program_crc32": f"0x{prog.checksum:08x}",
              "num_inputs": prog.num_inputs, "num_outputs": prog.num_outputs, "layers": len(prog.layers)}
    if args.format == "lava":
        from hw.vendor.lava import NET_FORMAT, lava_layers, write_lava_net
        write_lava_net(prog, out)
        emit(common | {"file_format": NET_FORMAT, "bytes": out.stat().st_size,
                       "lif_processes_per_layer": [len(L.vth) for L in lava_layers(prog)],
                       "run": f"python -I hw/vendor/lava_runner.py {out} OUT.npz --input SPIKES.npy "
                              f"(in the Lava venv: python -m hw.vendor.lava_env)"},
             args.json, title=f"wrote the Lava network file {out}")
        return 0
    from hw.vendor.xylo import SPEC_FORMAT, write_xylo_spec
    write_xylo_spec(prog, out)
    emit(common | {"file_format": SPEC_FORMAT, "bytes": out.stat().st_size,
                   "hidden_neurons": prog.layers[0].num_neurons,
                   "run": "XyloSim.from_specification(**json.load(open(OUT))['specification']) (rockpool), "
                          "or hw.vendor.xylo.read_xylo_spec"},
         args.json, title=f"wrote the xylosim specification {out}")
    return 0
