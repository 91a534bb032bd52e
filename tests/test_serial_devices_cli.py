"""`spikeloop devices`: lists ports and tells spikeloop boards (HELLO answered) from other ports."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from experiments.cli import main
from hw.emulator import FirmwareProcess, firmware_binary
from hw.serial import discovery

pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None,
                                reason="needs the host firmware (make and a C compiler)")


@pytest.fixture
def no_system_ports(monkeypatch):
    """Probe only the ports a test names (the machine's own serial ports may be slow or busy)."""
    monkeypatch.setattr(discovery.list_ports, "comports", lambda: [])


def test_devices_identifies_a_board_and_a_silent_port(no_system_ports, capsys):
    proc = FirmwareProcess(firmware_binary("host"))
    board = proc.start()
    master, slave = os.openpty()
    silent = os.ttyname(slave)
    try:
        rc = main(["devices", "--port", board, "--port", silent, "--timeout-s", "0.1", "--json"])
    finally:
        os.close(master)
        os.close(slave)
        assert proc.stop() == 0
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["num_ports"] == 2 and out["num_spikeloop_boards"] == 1
    by_port = {p["port"]: p for p in out["ports"]}
    assert by_port[board]["spikeloop"] and by_port[board]["compatible"]
    assert by_port[board]["info"]["name"] == "host-posix" and by_port[board]["info"]["profile"] == "mcu"
    assert by_port[silent]["spikeloop"] is False and "no spikeloop answer" in by_port[silent]["error"]


def test_devices_text_output_with_emulator_and_no_probe(no_system_ports, capsys):
    assert main(["devices", "--emulator"]) == 0
    text = capsys.readouterr().out
    assert "1 spikeloop board(s)" in text and "host-posix" in text
    assert main(["devices", "--port", "/dev/does-not-exist", "--no-probe", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ports"][0]["spikeloop"] is None and out["ports"][0]["error"] == "not probed"


def test_list_serial_ports_uses_pyserial(monkeypatch):
    class P:
        device, description, hwid, vid, pid, serial_number = "/dev/ttyACM7", "Nucleo", "USB VID:PID=0483:374B", 0x483, 0x374B, "X1"

    monkeypatch.setattr(discovery.list_ports, "comports", lambda: [P()])
    (entry,) = discovery.list_serial_ports()
    assert entry == {"port": "/dev/ttyACM7", "description": "Nucleo", "hwid": "USB VID:PID=0483:374B",
                     "vid": 0x483, "pid": 0x374B, "serial_number": "X1"}
