"""Errors of the serial link. All are `hw.device.DeviceError`s (RuntimeError), so callers that
handle device failures handle these too; each message names the port and what went wrong."""

from __future__ import annotations

from hw.device import DeviceError

from .messages import BoardErrorInfo, ErrorCode


class SerialLinkError(DeviceError):
    """The serial link failed."""


class LinkTimeoutError(SerialLinkError):
    """No valid answer after every retry."""


class LinkDisconnectedError(SerialLinkError):
    """The port closed or failed (cable pulled, board gone, firmware process ended)."""


class ProtocolError(SerialLinkError):
    """The peer answered with something the protocol does not allow (not a spikeloop board?)."""


class ProtocolVersionError(SerialLinkError):
    """The board speaks a serial protocol version this host does not."""


class FirmwareRestartError(SerialLinkError):
    """The board restarted (lost its program) during a run, more often than allowed."""


class BoardError(SerialLinkError):
    """The board refused a request with an ERROR frame. `code` is an `ErrorCode`."""

    def __init__(self, request: str, err: BoardErrorInfo, port: str = ""):
        self.request = request
        self.error = err
        self.code = err.code
        where = f" on {port}" if port else ""
        text = f": {err.message}" if err.message else ""
        super().__init__(f"board{where} refused {request}: {err.code_name}{text}")

    def is_code(self, code: ErrorCode) -> bool:
        return self.code == int(code)
