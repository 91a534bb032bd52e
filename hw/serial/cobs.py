"""COBS (Consistent Overhead Byte Stuffing): byte strings without 0x00, for 0x00-delimited frames.

Standard COBS (Cheshire & Baker 1999), the same bytes as the firmware's `sl_cobs_encode`
(docs/protocol.md, section 1): a block of 254 data bytes has code 0xFF and no implied zero; data
that ends on such a block gets no extra empty block.
"""

from __future__ import annotations


class CobsError(ValueError):
    """Encoded bytes that are not valid COBS (a 0x00 inside, or a code running past the end)."""


def cobs_encode(data: bytes) -> bytes:
    """Encode `data` (no delimiter added). len(out) <= len(data) + len(data) // 254 + 1."""
    out = bytearray()
    parts = bytes(data).split(b"\x00")
    last = len(parts) - 1
    for k, part in enumerate(parts):
        while len(part) >= 254:
            out.append(0xFF)
            out += part[:254]
            part = part[254:]
            if not part and k == last:
                return bytes(out)  # ends on a full block: no trailing empty block
        out.append(len(part) + 1)
        out += part
    return bytes(out)


def cobs_decode(enc: bytes) -> bytes:
    """Decode COBS bytes (without the delimiter); raises `CobsError` when they are malformed."""
    enc = bytes(enc)
    out = bytearray()
    i, n = 0, len(enc)
    while i < n:
        code = enc[i]
        if code == 0:
            raise CobsError(f"COBS: zero byte at offset {i}")
        end = i + code
        if end > n:
            raise CobsError(f"COBS: block at offset {i} runs past the end ({code - 1} bytes, {n - i - 1} left)")
        block = enc[i + 1:end]
        if 0 in block:
            raise CobsError(f"COBS: zero byte inside the block at offset {i}")
        out += block
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)
