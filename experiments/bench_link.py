"""Benchmark of the serial link to the board, measured on the emulator (the host firmware on a pty,
driven through pyserial): link efficiency, time steps per second and host overhead per frame, with
recording (observation, docs/protocol.md section 3.1) off and on.

    python -m experiments.bench_link --json                      # digits inputs, fc 64-64-10, T=20
    python -m experiments.bench_link --recording off,spikes,membrane --payloads 256,1024 --json
    python -m experiments.bench_link --checkpoint runs/digits/model.safetensors --json
    python -m experiments.bench_link --port /dev/ttyACM0 --baud 115200 --json   # a real board

Input spikes are the digits test set rate-encoded as for evaluation (`hw.deploy.device_inputs`), so
the RUN frames carry typical spike traffic. For each frame payload size (64 ... the board's
maximum) and each recording mode (--recording: `off` = output spikes only; `spikes` = every layer's
spikes, `Device.run(probe=True)`; `membrane` = also the membranes of layer 0, the hidden layer) it
runs the whole set once and reports:
- `link_efficiency`: payload bytes / bytes on the wire (both directions, every byte counted);
  `to_board` and `from_board` separately (target >= 0.9 for typical spike frames);
  `spike_data_efficiency` counts only the spike and recording bytes as payload (not the 12-byte
  RUN/OUTPUT sub-headers, the per-layer counters, record_total, or READ/RECORD sub-headers);
- `bytes_per_sample` (wire bytes, both directions) and `samples_per_s`; `read_frames` (READ
  requests for recording chunks beyond the OUTPUT's first);
- `timesteps_per_s` over the link, next to the `sim` device's on the same program and input (with
  probe when recording), measured in the same process (`emulator_over_sim`); every run's output
  spikes, layer spikes and membranes are checked bit for bit against sim;
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

BENCH_VERSION = 2   # 2: protocol v2, recording modes, bytes_per_sample, samples_per_s
RECORDING = {"off": (False, None), "spikes": (True, None), "membrane": (True, 0)}  # probe, membrane layer


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


def run_once(uri: str, prog, inputs: torch.Tensor, frame_payload: int | None, batch: int,
             recording: str = "off"):
    """One pass over `inputs` in batches: (RunResults concatenated over B as a dict of tensors,
    seconds, link counter deltas, board max_payload, RUN frames sent)."""
    probe, mem = RECORDING[recording]
    kw = {} if frame_payload is None else {"frame_payload": frame_payload}
    with open_device(uri, **kw) as dev:
        dev.load(prog)
        before = dev.link_stats()
        t0 = time.perf_counter()
        res = [dev.run(inputs[:, lo:lo + batch], probe=probe, membrane_layer=mem)
               for lo in range(0, inputs.shape[1], batch)]
        seconds = time.perf_counter() - t0
        after = dev.link_stats()
        max_payload = dev.board.max_payload
        per_frame = dev._frame_steps(probe, mem)
    T = inputs.shape[0]
    runs = sum(-(-T * r.output_spikes.shape[1] // per_frame) for r in res)
    d = {k: after[k] - before[k] for k in ("payload_tx", "payload_rx", "wire_tx", "wire_rx", "frames_tx",
                                           "requests", "retransmissions", "host_s")}
    return _cat(res, probe, mem), seconds, d, max_payload, runs


def _cat(results, probe: bool, mem) -> dict:
    out = {"output": torch.cat([r.output_spikes for r in results], dim=1)}
    if probe:
        for k in results[0].layer_spikes:
            out[f"spikes{k}"] = torch.cat([r.layer_spikes[k] for r in results], dim=1)
        if mem is not None:
            out[f"mem{mem}"] = torch.cat([r.membranes[mem] for r in results], dim=1)
    return out


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
    ap.add_argument("--recording", default="off,spikes,membrane",
                    help="recording modes to compare: off, spikes (every layer), membrane (+ layer 0 membranes)")
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

    modes = args.recording.split(",")
    for m in modes:
        if m not in RECORDING:
            ap.error(f"--recording: unknown mode {m!r}; choose from {sorted(RECORDING)}")
    sim_best, refs = {}, {}
    with open_device("sim", profile="mcu") as sim:
        sim.load(prog)
        for mode in modes:
            probe, mem = RECORDING[mode]
            sim_best[mode] = float("inf")
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                res = [sim.run(inputs[:, lo:lo + args.batch], probe=probe) for lo in range(0, B, args.batch)]
                sim_best[mode] = min(sim_best[mode], time.perf_counter() - t0)
            if mem is not None:
                for r in res:   # a board records one layer's membranes: compare that one
                    r.membranes = {mem: r.membranes[mem]}
            refs[mode] = _cat(res, probe, mem)
    ref = refs[modes[0]]["output"]

    rows = []
    sizes = [int(s) for s in args.payloads.split(",")]
    L = len(prog.layers)
    for mode, size in tqdm([(m, s) for m in modes for s in sizes], desc="recording x frame payload",
                           file=sys.stderr):
        best = None
        for _ in range(args.repeats):
            out, seconds, d, max_payload, runs = run_once(uri, prog, inputs, size, args.batch, mode)
            bad = [k for k in refs[mode] if not torch.equal(out[k], refs[mode][k])]
            if bad:
                raise RuntimeError(f"{uri} differs from sim ({', '.join(bad)}) at frame payload {size}, "
                                   f"recording {mode}")
            if best is None or seconds < best[0]:
                best = (seconds, d, max_payload, runs)
        seconds, d, max_payload, runs = best
        frames, reads = d["frames_tx"], d["requests"] - runs
        probe = RECORDING[mode][0]
        # sub-headers: RUN + OUTPUT (12 each), counters, record_total; READ (6) + RECORD (12)
        headers = runs * (2 * 12 + 1 + 8 * L + (4 if probe else 0)) + reads * (6 + 12)
        wire = d["wire_tx"] + d["wire_rx"]
        rows.append({
            "recording": mode, "frame_payload": min(size, max_payload), "frames": frames,
            "run_frames": runs, "read_frames": reads, "seconds": seconds,
            "timesteps_per_s": T * B / seconds, "sim_timesteps_per_s": T * B / sim_best[mode],
            "samples_per_s": B / seconds, "bytes_per_sample": wire / B,
            "emulator_over_sim": sim_best[mode] / seconds,
            "link_efficiency": (d["payload_tx"] + d["payload_rx"]) / wire,
            "to_board_efficiency": d["payload_tx"] / d["wire_tx"],
            "from_board_efficiency": d["payload_rx"] / d["wire_rx"],
            # stricter: only the spike/recording bytes count (no sub-headers, counters)
            "spike_data_efficiency": (d["payload_tx"] + d["payload_rx"] - headers) / wire,
            "host_us_per_frame": 1e6 * d["host_s"] / frames,
            "wall_us_per_frame": 1e6 * seconds / frames,
            "retransmissions": d["retransmissions"],
        })
    density = float(inputs.float().mean())
    result = {"bench": "link", "bench_version": BENCH_VERSION, "device": uri, "num_steps": T,
              "samples": B, "num_inputs": n_in, "num_outputs": prog.num_outputs,
              "input_spike_density": density, "output_spikes_per_step": float(ref.float().sum() / (T * B)),
              "program_bytes": prog.size_bytes(), "layer_sizes": [l.num_neurons for l in prog.layers],
              "bit_exact_vs_sim": True, "rows": rows,
              "best": {m: max((r for r in rows if r["recording"] == m), key=lambda r: r["timesteps_per_s"])
                       for m in modes}}
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
            print(f"  {r['recording']:8s} payload {r['frame_payload']:5d}: efficiency {r['link_efficiency']:.3f} "
                  f"(spike bytes only {r['spike_data_efficiency']:.3f}) "
                  f"(to board {r['to_board_efficiency']:.3f}, from board {r['from_board_efficiency']:.3f}), "
                  f"{r['timesteps_per_s']:.0f} steps/s (sim {r['sim_timesteps_per_s']:.0f}), "
                  f"{r['bytes_per_sample']:.0f} B/sample, {r['samples_per_s']:.0f} samples/s, "
                  f"host {r['host_us_per_frame']:.0f} of {r['wall_us_per_frame']:.0f} us/frame")
        for f in result.get("faults", []):
            print(f"  faults {f['byte_fault_rate']:g}/byte: {f['identical']} identical, {f['link_errors']} "
                  f"link errors, {f['wrong']} wrong of {f['runs']} runs ({f['faults_injected']} faults, "
                  f"{f['retransmissions']} retransmissions)")
    return 0


def plot(rows, path):
    from experiments.plots import _save, plt
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    for mode, style in zip(RECORDING, ("o-", "s--", "^:")):
        rs = [r for r in rows if r["recording"] == mode]
        if not rs:
            continue
        p = [r["frame_payload"] for r in rs]
        a1.plot(p, [r["link_efficiency"] for r in rs], style, label=f"recording {mode}")
        a2.plot(p, [r["samples_per_s"] for r in rs], style, label=f"recording {mode}")
    a1.axhline(0.9, color="gray", lw=0.8, ls=":")
    a1.set(xscale="log", xlabel="frame payload (bytes)", ylabel="payload / wire bytes", title="link efficiency")
    a1.legend(fontsize=8)
    a2.set(xscale="log", yscale="log", xlabel="frame payload (bytes)", ylabel="samples / s",
           title="throughput (emulator over pty)")
    a2.legend(fontsize=8)
    return _save(fig, path)


if __name__ == "__main__":
    sys.exit(main())
