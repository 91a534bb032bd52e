"""The serial link to spikeloop boards (docs/protocol.md): COBS/CRC-32 framing (`frame`, `cobs`),
messages and spike encodings (`messages`), the reliable request/response layer (`link`), pyserial
and fault-injecting transports (`transport`), the `SerialDevice` backend (`device`, registered as
`serial://...`), and port discovery (`discovery`)."""

from hw.device import register_backend

from .device import SerialDevice, _factory
from .errors import (BoardError, FirmwareRestartError, LinkDisconnectedError, LinkTimeoutError,
                     ProtocolError, ProtocolVersionError, SerialLinkError)
from .frame import PROTOCOL_VERSION, Frame, FrameError, FrameReceiver
from .link import Link, LinkStats
from .messages import BoardInfo, ErrorCode, MsgType
from .transport import FaultyTransport, PySerialTransport

register_backend("serial", _factory)

__all__ = ["SerialDevice", "BoardError", "FirmwareRestartError", "LinkDisconnectedError",
           "LinkTimeoutError", "ProtocolError", "ProtocolVersionError", "SerialLinkError",
           "PROTOCOL_VERSION", "Frame", "FrameError", "FrameReceiver", "Link", "LinkStats", "BoardInfo",
           "ErrorCode", "MsgType", "FaultyTransport", "PySerialTransport"]
