"""`spikeloop devices`: list serial ports and identify spikeloop boards by their HELLO answer."""

from __future__ import annotations

from experiments.args import add_number
from experiments.output import add_json_flag, emit


def register(sub) -> None:
    p = sub.add_parser("devices", help="list serial ports and identify spikeloop boards (HELLO)")
    p.add_argument("--port", action="append", default=[], metavar="PORT",
                   help="also probe this port or pyserial URL (repeatable; e.g. a pty)")
    p.add_argument("--emulator", action="store_true",
                   help="also start the emulator firmware on a pty and probe it")
    p.add_argument("--no-probe", action="store_true", help="only list ports, send nothing")
    add_number(p, "--baud", default=115200, help="baud rate for probing (default 115200)")
    add_number(p, "--timeout-s", default=0.3, help="HELLO answer timeout per try")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from hw.serial.discovery import discover

    proc = None
    extra = list(args.port)
    try:
        if args.emulator:
            from hw.emulator import FirmwareProcess, firmware_binary
            proc = FirmwareProcess(firmware_binary("host"))
            extra.append(proc.start())
        ports = discover(extra, probe=not args.no_probe, baud=args.baud, timeout_s=args.timeout_s)
    finally:
        if proc is not None:
            proc.stop()
    boards = [p for p in ports if p["spikeloop"]]
    result = {"ports": ports, "num_ports": len(ports), "num_spikeloop_boards": len(boards)}
    if args.json:
        emit(result, True)
        return 0
    print(f"{len(ports)} serial port(s), {len(boards)} spikeloop board(s)")
    for p in ports:
        if p["spikeloop"]:
            i = p["info"]
            what = (f"spikeloop board {i['name']!r}, firmware {i['firmware_version']}, protocol "
                    f"{i['protocol_version']}, profile {i['profile']}" if i else f"spikeloop board ({p['error']})")
        else:
            what = p["error"] or "-"
        print(f"  {p['port']:<20} {p['description'] or '':<28} {what}")
    return 0
