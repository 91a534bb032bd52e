"""Finding spikeloop boards: list serial ports (`serial.tools.list_ports`) and identify boards by
their answer to HELLO (docs/protocol.md). Probing writes a HELLO frame to each port it checks."""

from __future__ import annotations

from serial.tools import list_ports

from .errors import LinkDisconnectedError, LinkTimeoutError, ProtocolError, ProtocolVersionError
from .link import Link
from .transport import PySerialTransport


def list_serial_ports() -> list[dict]:
    """The serial ports the OS reports: [{port, description, hwid, vid, pid, serial_number}]."""
    return [{"port": p.device, "description": p.description, "hwid": p.hwid, "vid": p.vid,
             "pid": p.pid, "serial_number": p.serial_number}
            for p in sorted(list_ports.comports(), key=lambda p: p.device)]


def probe_port(port: str, baud: int = 115200, timeout_s: float = 0.3, retries: int = 1) -> dict:
    """Send HELLO to `port`: {"spikeloop": bool, "compatible": bool, "info": INFO as a dict or None,
    "error": why not, or None}. Never raises for a port that is absent, busy, silent or foreign."""
    try:
        transport = PySerialTransport(port, baud)
    except LinkDisconnectedError as e:
        return {"spikeloop": False, "compatible": False, "info": None, "error": str(e)}
    link = Link(transport, timeout_s=timeout_s, retries=retries, baud=baud)
    try:
        link.flush_line()
        info = link.hello()
        return {"spikeloop": True, "compatible": True, "info": info.to_dict(), "error": None}
    except ProtocolVersionError as e:
        return {"spikeloop": True, "compatible": False, "info": None, "error": str(e)}
    except (LinkTimeoutError, ProtocolError):
        return {"spikeloop": False, "compatible": False, "info": None,
                "error": "no spikeloop answer to HELLO"}
    except LinkDisconnectedError as e:
        return {"spikeloop": False, "compatible": False, "info": None, "error": str(e)}
    finally:
        link.close()


def discover(extra_ports=(), probe: bool = True, baud: int = 115200, timeout_s: float = 0.3) -> list[dict]:
    """Every listed port plus `extra_ports` (e.g. a pty), each probed with HELLO when `probe`."""
    entries = list_serial_ports()
    known = {e["port"] for e in entries}
    entries += [{"port": p, "description": "given on the command line", "hwid": None, "vid": None,
                 "pid": None, "serial_number": None} for p in extra_ports if p not in known]
    for e in entries:
        e.update(probe_port(e["port"], baud, timeout_s) if probe else
                 {"spikeloop": None, "compatible": None, "info": None, "error": "not probed"})
    return entries
