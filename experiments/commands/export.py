"""`spikeloop export CKPT --format program|nir`: a device program (binary + JSON view) or a NIR graph."""

from __future__ import annotations

from pathlib import Path

from experiments.args import add_number
from experiments.output import add_json_flag, emit
from snn.checkpoint import load_checkpoint


def register(sub) -> None:
    p = sub.add_parser("export", help="compile a checkpoint to a device program, or export it to NIR")
    p.add_argument("checkpoint")
    p.add_argument("--format", choices=["program", "nir"], default="program")
    p.add_argument("--profile", default="mcu", help="chip profile for --format program (mcu, loihi, xylo)")
    add_number(p, "--max-spikes", default=1, help="xylo: spikes per neuron per step")
    p.add_argument("--out", required=True, help="output file (.slpg program; .nir/.h5 NIR graph)")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    ckpt = load_checkpoint(args.checkpoint)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.format == "nir":
        from hw.nir_graph import export_nir, write_nir
        graph = export_nir(ckpt.spec, ckpt.state_dict)
        write_nir(graph, out)
        emit({"format": "nir", "out": out, "nodes": sorted(graph.nodes), "bytes": out.stat().st_size},
             args.json, title=f"wrote NIR graph {out}")
        return 0
    from hw.compiler import compile_model
    prog = compile_model(ckpt.spec, ckpt.state_dict, args.profile, max_spikes=args.max_spikes)
    prog.save(out)
    view = prog.save_json(out.with_name(out.name + ".json"))
    emit({"format": "program", "profile": prog.profile, "out": out, "json_view": view,
          "bytes": prog.size_bytes(), "crc32": f"0x{prog.checksum:08x}", "num_inputs": prog.num_inputs,
          "num_outputs": prog.num_outputs, "layers": len(prog.layers), "report": prog.report},
         args.json, title=f"compiled {args.checkpoint} for {prog.profile} -> {out}")
    return 0
