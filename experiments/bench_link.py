"""Benchmark of the serial link to the board, measured on the emulator (the host firmware on a pty,
driven through pyserial): link efficiency, time steps per second and host overhead per frame.

    python -m experiments.bench_link --json                      # digits inputs, fc 64-64-10, T=20
    python -m experiments.bench_link --checkpoint runs/digits/model.safetensors --json
    python -m experiments.bench_link --port /dev/ttyACM0 --baud 115200 --json   # a real board

Input spikes are the digits test set rate-encoded as for evaluation (`hw.deploy.device_inputs`), so
the RUN frames carry typical spike traffic. For each frame payload size (64 ... the board's
maximum) it runs the whole set once and reports:
- `link_efficiency`: payload bytes / bytes on the wire (both directions, every byte counted);
  `to_board` and `from_board` separately (target >= 0.9 for typical spike frames);
  `spike_data_efficiency` counts only the spike bytes as payload (not the 10-byte RUN/OUTPUT
  sub-headers or the per-layer counters);
- `timesteps_per_s` over the link, next to the `sim` device's on the same program and input,
  measured in the same process (`emulator_over_sim`);
- `host_us_per_frame`: host CPU time building and parsing one frame (Python), out of the wall time
  per frame (`wall_us_per_frame`).
With --faults R1,R2,... it also runs the set over a `FaultyTransport` that corrupts, drops and
duplicates bytes at each per-byte rate R (all three, both directions) for --fault-seeds seeds,
and reports how many runs completed with results identical to sim, how many raised a link error,
and how many gave a wrong result (must be 0).
Prints one JSON object (--json) and writes a plot (--plot PATH).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from tqdm.auto import tqdm

from experiments.output import emit
from hw.compiler import compile_model
from hw.deploy import device_inputs
from hw.device import open_device
from snn.data import load_dataset
from snn.model import build_model
from snn.presets import fc

BENCH_VERSION = 1


def network(checkpoint: str | None):
    """(spec, state_dict): the checkpoint's, or fc 64-64-10 (T=20) with random weights scaled so
    both layers spike."""
    if checkpoint:
        from snn.checkpoint import load_checkpoint
        ckpt = load_checkpoint(checkpoint)
        return ckpt.spec, ckpt.state_dict
    spec = fc((1, 8, 8), 10, hidden=64, num_steps=20)
    torch.manual_seed(0)
    sd = {k: v * 3 if k.endswith("weight") else v for k, v in build_model(spec).state_dict().items()}
    return spec, sd


def run_once(uri: str, prog, inputs: torch.Tensor, frame_payload: int | None, batch: int):
    kw = {} if frame_payload is None else {"frame_payload": frame_payload}
    with open_device(uri, **kw) as dev:
        dev.load(prog)
        before = dev.link_stats()
        t0 = time.perf_counter()
        outs = [dev.run(inputs[:, lo:lo + batch]).output_spikes for lo in range(0, inputs.shape[1], batch)]
        seconds = time.perf_counter() - t0
        after = dev.link_stats()
        max_payload = dev.board.max_payload
    d = {k: after[k] - before[k] for k in ("payload_tx", "payload_rx", "wire_tx", "wire_rx", "frames_tx",
                                           "requests", "retransmissions", "host_s")}
    return torch.cat(outs, dim=1), seconds, d, max_payload


def fault_sweep(prog, inputs, ref, rates, seeds: int, batch: int, frame_payload: int) -> list[dict]:
    """Runs over a faulty line: per rate, outcomes over `seeds` seeds (see module docstring)."""
    from hw.emulator import EmulatorDevice
    from hw.serial import FaultyTransport, SerialLinkError
    out = []
    for rate in rates:
        row = {"byte_fault_rate": rate, "runs": seeds, "identical": 0, "link_errors": 0, "wrong": 0,
               "retransmissions": 0, "faults_injected": 0, "errors": []}
        for seed in tqdm(range(seeds), desc=f"faults {rate:g}", file=sys.stderr):
            made = []

            def wrap(t, seed=seed):
                made.append(FaultyTransport(t, corrupt_rate=rate, drop_rate=rate, duplicate_rate=rate, seed=seed))
                return made[-1]

            dev = EmulatorDevice(transport_wrapper=wrap, timeout_s=0.2, retries=8, frame_payload=frame_payload)
            try:
                dev.open()
                dev.load(prog)
                got = torch.cat([dev.run(inputs[:, lo:lo + batch]).output_spikes
                                 for lo in range(0, inputs.shape[1], batch)], dim=1)
                row["identical" if torch.equal(got, ref) else "wrong"] += 1
            except SerialLinkError as e:
                row["link_errors"] += 1
                row["errors"].append(str(e)[:200])
            finally:
                if dev.link is not None:
                    row["retransmissions"] += dev.link.stats.retransmissions
                dev.close()
            row["faults_injected"] += sum(made[-1].injected.values()) if made else 0
        out.append(row)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="a digits checkpoint (default: fc 64-64-10 with random weights)")
    ap.add_argument("--port", help="a real board's port instead of the emulator")
    ap.add_argument("--baud", type=int, default=115200)
    ap.add_argument("--payloads", default="64,256,1024", help="frame payload sizes to compare")
    ap.add_argument("--samples", type=int, default=360, help="digits test samples (max 360)")
    ap.add_argument("--batch", type=int, default=360, help="samples per Device.run call")
    ap.add_argument("--repeats", type=int, default=3, help="best of N runs per setting")
    ap.add_argument("--plot", help="write a PNG of efficiency and steps/s vs frame payload")
    ap.add_argument("--faults", default="", help="per-byte fault rates to test, e.g. 1e-4,1e-3 (emulator only)")
    ap.add_argument("--fault-seeds", type=int, default=5)
    ap.add_argument("--fault-payload", type=int, default=256, help="frame payload for the fault runs")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    spec, sd = network(args.checkpoint)
    prog = compile_model(spec, sd, "mcu")
    data = load_dataset("digits")
    x = data.test_x[:args.samples]
    inputs = device_inputs(spec, x, range(len(x)))
    T, B, n_in = inputs.shape
    uri = f"serial://{args.port}?baud={args.baud}" if args.port else "emulator"

    with open_device("sim", profile="mcu") as sim:
        sim.load(prog)
        sim_best, ref = float("inf"), None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ref = torch.cat([sim.run(inputs[:, lo:lo + args.batch]).output_spikes
                             for lo in range(0, B, args.batch)], dim=1)
            sim_best = min(sim_best, time.perf_counter() - t0)

    rows = []
    sizes = [int(s) for s in args.payloads.split(",")]
    for size in tqdm(sizes, desc="frame payloads", file=sys.stderr):
        best = None
        for _ in range(args.repeats):
            out, seconds, d, max_payload = run_once(uri, prog, inputs, size, args.batch)
            if not torch.equal(out, ref):
                raise RuntimeError(f"{uri} output differs from sim at frame payload {size}")
            if best is None or seconds < best[0]:
                best = (seconds, d, max_payload)
        seconds, d, max_payload = best
        frames = d["frames_tx"]
        rows.append({
            "frame_payload": min(size, max_payload), "frames": frames, "seconds": seconds,
            "timesteps_per_s": T * B / seconds, "sim_timesteps_per_s": T * B / sim_best,
            "emulator_over_sim": sim_best / seconds,
            "link_efficiency": (d["payload_tx"] + d["payload_rx"]) / (d["wire_tx"] + d["wire_rx"]),
            "to_board_efficiency": d["payload_tx"] / d["wire_tx"],
            "from_board_efficiency": d["payload_rx"] / d["wire_rx"],
            # stricter: only the spike bytes count (no RUN/OUTPUT sub-headers, no counters)
            "spike_data_efficiency": (d["payload_tx"] + d["payload_rx"] - frames * (2 * 10 + 1 + 8 * len(prog.layers)))
            / (d["wire_tx"] + d["wire_rx"]),
            "host_us_per_frame": 1e6 * d["host_s"] / frames,
            "wall_us_per_frame": 1e6 * seconds / frames,
            "retransmissions": d["retransmissions"],
        })
    density = float(inputs.float().mean())
    result = {"bench": "link", "bench_version": BENCH_VERSION, "device": uri, "num_steps": T,
              "samples": B, "num_inputs": n_in, "num_outputs": prog.num_outputs,
              "input_spike_density": density, "output_spikes_per_step": float(ref.float().sum() / (T * B)),
              "program_bytes": prog.size_bytes(), "bit_exact_vs_sim": True, "rows": rows,
              "best": max(rows, key=lambda r: r["timesteps_per_s"])}
    if args.faults:
        if args.port:
            raise ValueError("--faults runs on the emulator only")
        result["faults"] = fault_sweep(prog, inputs, ref, [float(r) for r in args.faults.split(",")],
                                       args.fault_seeds, args.batch, args.fault_payload)
    if args.plot:
        result["plot"] = str(plot(rows, args.plot))
    emit(result, args.json, title=f"serial link benchmark on {uri}")
    if not args.json:
        for r in rows:
            print(f"  payload {r['frame_payload']:5d}: efficiency {r['link_efficiency']:.3f} "
                  f"(spike bytes only {r['spike_data_efficiency']:.3f}) "
                  f"(to board {r['to_board_efficiency']:.3f}, from board {r['from_board_efficiency']:.3f}), "
                  f"{r['timesteps_per_s']:.0f} steps/s (sim {r['sim_timesteps_per_s']:.0f}), "
                  f"host {r['host_us_per_frame']:.0f} of {r['wall_us_per_frame']:.0f} us/frame")
        for f in result.get("faults", []):
            print(f"  faults {f['byte_fault_rate']:g}/byte: {f['identical']} identical, {f['link_errors']} "
                  f"link errors, {f['wrong']} wrong of {f['runs']} runs ({f['faults_injected']} faults, "
                  f"{f['retransmissions']} retransmissions)")
    return 0


def plot(rows, path):
    from experiments.plots import _save, plt
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    p = [r["frame_payload"] for r in rows]
    a1.plot(p, [r["link_efficiency"] for r in rows], "o-", label="both directions")
    a1.plot(p, [r["to_board_efficiency"] for r in rows], "s--", label="to board (RUN)")
    a1.plot(p, [r["from_board_efficiency"] for r in rows], "^--", label="from board (OUTPUT)")
    a1.axhline(0.9, color="gray", lw=0.8, ls=":")
    a1.set(xscale="log", xlabel="frame payload (bytes)", ylabel="payload / wire bytes", title="link efficiency")
    a1.legend(fontsize=8)
    a2.plot(p, [r["timesteps_per_s"] for r in rows], "o-", label="emulator over pty")
    a2.plot(p, [r["sim_timesteps_per_s"] for r in rows], "k:", label="sim device (same run)")
    a2.set(xscale="log", yscale="log", xlabel="frame payload (bytes)", ylabel="time steps / s", title="throughput")
    a2.legend(fontsize=8)
    return _save(fig, path)


if __name__ == "__main__":
    sys.exit(main())
