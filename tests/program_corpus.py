"""The shared validation corpus of device programs: valid and invalid blobs for every rule of
docs/program_format.md "Validation", for the `mcu` profile.

Blobs are built here with `struct` from the byte layout of docs/program_format.md — not with
hw.program's encoder — so they are a reference for both readers (Python `Program.from_bytes` and the
firmware's `sl_program_parse`, compared in tests/test_program_corpus.py). For every rule there are
blobs exactly at each boundary (valid) and just past it (invalid), each `Case` tagged with the rule
id the readers must name (`None`: the blob is valid) and the status the firmware must give.

    from program_corpus import cases
    for c in cases(): print(c.name, c.rule, len(c.blob))
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

MCU = json.loads((Path(__file__).resolve().parents[1] / "hw" / "profiles" / "mcu.json").read_text())
MAX_LAYERS = MCU["max_layers"]                  # 8
MAX_NEURONS = MCU["max_neurons_per_layer"]      # 4096
MAX_TOTAL = MCU["max_neurons_total"]            # 4096 (the state pool)
MAX_FAN_IN = MCU["max_fan_in"]                  # 4096
MAX_PROGRAM_BYTES = MCU["max_program_bytes"]    # 131072
MAX_SHIFT = MCU["max_w_shift"]                  # 20
DECAY_MAX = MCU["decay"]["max"]                 # 4096
I32_MIN, I32_MAX = -2**31, 2**31 - 1

# Firmware statuses (firmware_stubs/sl_status.h, docs/protocol.md "Error codes").
OK, PROGRAM_TOO_LARGE, BAD_PROGRAM = 0, 7, 10
# Rules the firmware answers with PROGRAM_TOO_LARGE (a capacity), value = the limit.
TOO_LARGE_LIMITS = {"8.1": MAX_PROGRAM_BYTES, "6.2": MAX_LAYERS, "8.5": MAX_NEURONS, "8.6": MAX_FAN_IN}


def pad4(n: int) -> int:
    return (n + 3) // 4 * 4


def crc_of(blob: bytes) -> int:
    """The header CRC: CRC-32 of bytes [0, 12) then [16, end)."""
    return zlib.crc32(blob[:12] + blob[16:]) & 0xFFFFFFFF


@dataclass(frozen=True)
class Layer:
    """One layer record; arrays default to valid values (weights 1, bias 0, threshold 1, decay 0).
    Overrides (`record_type`, `record_size`, `pad_fill`, ...) make it invalid on purpose."""

    neuron_type: int = 1             # 1 leaky, 2 synaptic, 3 rleaky dense, 4 rleaky elementwise
    reset: int = 0
    fan_in: int = 1
    n: int = 1
    w_shift: int = 0
    rec_shift: int = 0
    max_spikes: int = 0
    reserved: bytes = b"\0\0"
    record_type: int = 1
    weights: tuple | None = None      # N*M int8
    bias: tuple | None = None         # N int32
    threshold: tuple | None = None    # N int32
    decay_mem: tuple | None = None    # N uint16
    decay_syn: tuple | None = None    # N uint16 (type 2)
    rec_weights: tuple | None = None  # N*N int8 (type 3)
    rec_gain: tuple | None = None     # N int32 (type 4)
    record_size: int | None = None    # None: computed from the fields
    pad_fill: dict = field(default_factory=dict)  # section name -> byte written into its padding

    def sections(self) -> list[tuple[str, bytes]]:
        N, M = self.n, self.fan_in
        out = [("weights", struct.pack(f"<{N * M}b", *(self.weights or (1,) * (N * M)))),
               ("bias", struct.pack(f"<{N}i", *(self.bias or (0,) * N))),
               ("threshold", struct.pack(f"<{N}i", *(self.threshold or (1,) * N))),
               ("decay_mem", struct.pack(f"<{N}H", *(self.decay_mem or (0,) * N)))]
        if self.neuron_type == 2:
            out.append(("decay_syn", struct.pack(f"<{N}H", *(self.decay_syn or (0,) * N))))
        if self.neuron_type == 3:
            out.append(("rec_weights", struct.pack(f"<{N * N}b", *(self.rec_weights or (0,) * (N * N)))))
        if self.neuron_type == 4:
            out.append(("rec_gain", struct.pack(f"<{N}i", *(self.rec_gain or (0,) * N))))
        return out

    def computed_size(self) -> int:
        """record_size from the fields (docs: 16 + pad4(N*M) + 4N + 4N + pad4(2N) [+ ...])."""
        N, M = self.n, self.fan_in
        size = 16 + pad4(N * M) + 4 * N + 4 * N + pad4(2 * N)
        size += {2: pad4(2 * N), 3: pad4(N * N), 4: 4 * N}.get(self.neuron_type, 0)
        return size

    def encode(self) -> bytes:
        body = b""
        for name, raw in self.sections():
            pad = pad4(len(raw)) - len(raw)
            body += raw + bytes([self.pad_fill.get(name, 0)]) * pad
        size = self.computed_size() if self.record_size is None else self.record_size
        head = struct.pack("<BBBBHHBB", self.record_type, self.neuron_type, self.reset, self.w_shift,
                           self.fan_in, self.n, self.rec_shift, self.max_spikes) + self.reserved
        return head + struct.pack("<I", size) + body


@dataclass(frozen=True)
class MapLayer:
    """A version-2 convolution (record_type 2) or pooling (3) record, from the byte layout of
    docs/program_format.md "Version 2". geo: (C_in, H, W, C_out, k, stride, padding, pool,
    pool_kernel, pool_stride); fan_in / n default to the geometry's (C_in*H*W, C_out*Ho*Wo);
    arrays default to valid values (weights 1, bias 0, threshold 1, decay 0)."""

    geo: tuple = (1, 3, 3, 1, 2, 1, 0, 0, 0, 0)
    record_type: int = 2
    neuron_type: int = 1
    reset: int = 0
    w_shift: int = 0
    rec_shift: int = 0
    max_spikes: int = 0
    reserved: bytes = b"\0\0"
    geo_reserved: int = 0
    fan_in_override: int | None = None
    n_override: int | None = None
    threshold: tuple | None = None
    record_size: int | None = None
    pad_fill: dict = field(default_factory=dict)

    def maps(self) -> tuple[int, int]:
        """(Ho, Wo) per the doc's formulas (0 when the geometry does not fit)."""
        c, h, w, co, k, st, p, pool, pk, ps = self.geo
        if self.record_type == 3 or not k:
            hc, wc = h, w
        else:
            hc = (h + 2 * p - k) // max(st, 1) + 1 if h + 2 * p >= k else 0
            wc = (w + 2 * p - k) // max(st, 1) + 1 if w + 2 * p >= k else 0
        if pool:
            return ((hc - pk) // max(ps, 1) + 1 if hc >= pk else 0), ((wc - pk) // max(ps, 1) + 1 if wc >= pk else 0)
        return hc, wc

    @property
    def fan_in(self) -> int:
        c, h, w = self.geo[:3]
        return c * h * w if self.fan_in_override is None else self.fan_in_override

    @property
    def n(self) -> int:
        ho, wo = self.maps()
        return self.geo[3] * ho * wo if self.n_override is None else self.n_override

    def sections(self) -> list[tuple[str, bytes]]:
        if self.record_type == 3:
            return []
        c, _, _, co, k = self.geo[:5]
        N = self.n
        out = [("weights", struct.pack(f"<{co * c * k * k}b", *(1,) * (co * c * k * k))),
               ("bias", struct.pack(f"<{N}i", *(0,) * N)),
               ("threshold", struct.pack(f"<{N}i", *(self.threshold or (1,) * N))),
               ("decay_mem", struct.pack(f"<{N}H", *(0,) * N))]
        if self.neuron_type == 2:
            out.append(("decay_syn", struct.pack(f"<{N}H", *(0,) * N)))
        return out

    def computed_size(self) -> int:
        return 32 + sum(pad4(len(raw)) for _, raw in self.sections())

    def encode(self) -> bytes:
        body = b""
        for name, raw in self.sections():
            body += raw + bytes([self.pad_fill.get(name, 0)]) * (pad4(len(raw)) - len(raw))
        size = self.computed_size() if self.record_size is None else self.record_size
        head = struct.pack("<BBBBHHBB", self.record_type, self.neuron_type, self.reset, self.w_shift,
                           self.fan_in & 0xFFFF, self.n & 0xFFFF, self.rec_shift, self.max_spikes) + self.reserved
        return head + struct.pack("<I", size) + struct.pack("<HHHHBBBBBBH", *self.geo, self.geo_reserved) + body


def pool_rec(c: int, h: int, w: int, pool: int = 1, pk: int = 2, ps: int = 2, **kw) -> MapLayer:
    """A pooling record (type 3) over a C x H x W map of spikes."""
    return MapLayer(geo=(c, h, w, c, 0, 0, 0, pool, pk, ps), record_type=3, **{"neuron_type": 0, **kw})


def program(layers: list[Layer], *, num_layers: int | None = None, num_inputs: int | None = None,
            num_outputs: int | None = None, num_steps: int = 4, dt_ns: int = 1000,
            name: bytes = b"corpus", magic: bytes = b"SLPG", version: int = 1, profile_id: int = 1,
            flags: int = 0, reserved: int = 0, extra: bytes = b"", total_size: int | None = None,
            crc: int | None = None) -> bytes:
    """A program blob (header + records + `extra`); header fields default to the consistent
    values, the CRC is computed unless given."""
    body = b"".join(l.encode() for l in layers) + extra
    total = 48 + len(body) if total_size is None else total_size
    head = struct.pack("<4sHBBIIHHHHII16s", magic, version, profile_id, flags, total, 0,
                       len(layers) if num_layers is None else num_layers,
                       layers[0].fan_in if num_inputs is None else num_inputs,
                       layers[-1].n if num_outputs is None else num_outputs,
                       num_steps, dt_ns, reserved, name.ljust(16, b"\0"))
    blob = head + body
    c = crc_of(blob) if crc is None else crc
    return blob[:12] + struct.pack("<I", c) + blob[16:]


def v2(layers: list, *, graded: bool = False, scale: float | int | None = None, **kw) -> bytes:
    """A version-2 program; graded: GRADED_INPUT with input_scale `scale` (a float, or raw bits
    when an int)."""
    if graded:
        bits = scale if isinstance(scale, int) else struct.unpack("<I", struct.pack("<f", 1.0 if scale is None else scale))[0]
        kw.setdefault("flags", 1)
        kw.setdefault("reserved", bits)
    return program(layers, version=2, **kw)


def restamp(blob: bytes) -> bytes:
    """Recompute the CRC field after an edit."""
    return blob[:12] + struct.pack("<I", crc_of(blob)) + blob[16:]


def set_bytes(blob: bytes, off: int, data: bytes, fix_crc: bool = True) -> bytes:
    out = blob[:off] + data + blob[off + len(data):]
    return restamp(out) if fix_crc else out


@dataclass(frozen=True)
class Case:
    """One blob and what both readers must say: `rule` None = accept, else the rule id they name;
    `status` the firmware's (OK, BAD_PROGRAM or PROGRAM_TOO_LARGE)."""

    name: str
    blob: bytes
    rule: str | None

    @property
    def check(self) -> int | None:
        return None if self.rule is None else int(self.rule.split(".")[0])

    @property
    def status(self) -> int:
        if self.rule is None:
            return OK
        return PROGRAM_TOO_LARGE if self.rule in TOO_LARGE_LIMITS else BAD_PROGRAM


def chain(k: int) -> list[Layer]:
    """k leaky 1 -> 1 layers."""
    return [Layer() for _ in range(k)]


def sized_program(total: int) -> bytes:
    """A valid-in-every-other-respect 2-layer program of exactly `total` bytes:
    layer 0 leaky N x M, layer 1 leaky 1 x N (searched for the smallest N that fits)."""
    for n in range(1, MAX_NEURONS + 1):
        fixed = 48 + (16 + 8 * n + pad4(2 * n)) + (16 + pad4(n) + 12)
        for m in range(MAX_FAN_IN, 0, -1):
            if fixed + pad4(n * m) == total:
                return program([Layer(fan_in=m, n=n), Layer(fan_in=n, n=1)])
            if fixed + pad4(n * m) < total:
                break
    raise ValueError(f"no 2-layer program of exactly {total} bytes")


def cases() -> list[Case]:
    """Every corpus case, in the order of the rule table."""
    out: list[Case] = []

    def add(name, blob, rule=None):
        out.append(Case(name, blob, rule))

    base = program(chain(1))                               # 80 bytes, the smallest program
    two = program([Layer(fan_in=3, n=2), Layer(fan_in=2, n=1)])
    add("valid: smallest program (1 leaky neuron, 80 bytes)", base)
    for t, extra in ((1, {}), (2, {"decay_syn": (DECAY_MAX, 0)}), (3, {"rec_shift": MAX_SHIFT}),
                     (4, {"rec_gain": (I32_MIN, I32_MAX)})):
        add(f"valid: neuron_type {t}, both resets", program([Layer(neuron_type=t, fan_in=3, n=2, **extra),
                                                             Layer(neuron_type=t, reset=1, fan_in=2, n=1)]))

    # 1: size and magic
    add("1.1 empty blob", b"", "1.1")
    add("1.1 47 bytes (one short of the header)", base[:47], "1.1")
    header_only = replace_field(set_bytes(base[:48], 8, struct.pack("<I", 48), False), 16, 0)
    add("1.1 at the limit: a 48-byte blob passes rule 1 (and has no layers: 6.1)", header_only, "6.1")
    for m in (b"SLPF", b"slpg", b"\0\0\0\0", b"GPLS"):
        add(f"1.2 magic {m!r}", set_bytes(base, 0, m), "1.2")

    # 2: version
    add("valid: version 2 with a dense record", set_bytes(base, 4, struct.pack("<H", 2)))
    for v in (0, 3, 0xFFFF):
        add(f"2.1 version {v}", set_bytes(base, 4, struct.pack("<H", v)), "2.1")

    # 3: total_size
    add("3.1 truncated by 4 (total_size says 80)", base[:-4], "3.1")
    add("3.1 truncated by 1", base[:-1], "3.1")
    add("3.1 4 trailing bytes", base + b"\0" * 4, "3.1")
    add("3.1 total_size = bytes + 4", set_bytes(base, 8, struct.pack("<I", 84)), "3.1")
    add("3.1 total_size = bytes - 4", set_bytes(base, 8, struct.pack("<I", 76)), "3.1")
    odd = base + b"\0"
    add("3.2 total_size = bytes = 81 (not a multiple of 4)", set_bytes(odd, 8, struct.pack("<I", 81)), "3.2")

    # 4: CRC
    add("4.1 CRC field off by one", set_bytes(base, 12, struct.pack("<I", crc_of(base) ^ 1), False), "4.1")
    add("4.1 a weight byte changed, CRC not", set_bytes(base, 64, b"\x02", False), "4.1")
    add("4.1 a header byte (dt_ns) changed, CRC not", set_bytes(base, 24, b"\x01", False), "4.1")

    # 5: profile, zero bytes, name
    for pid in (0, 2, 3, 4, 255):
        add(f"5.1 profile_id {pid} (board runs mcu = 1)", set_bytes(base, 6, bytes([pid])), "5.1")
    add("5.2 header flags 1", set_bytes(base, 7, b"\x01"), "5.2")
    for k in range(4):
        add(f"5.2 header reserved byte {28 + k} = 1", set_bytes(base, 28 + k, b"\x01"), "5.2")
    add("valid: name of 16 ASCII characters (no NUL)", program(chain(1), name=b"ABCDEFGHIJKLMNOP"))
    add("valid: empty name (16 NULs)", program(chain(1), name=b""))
    add("valid: name bytes 0x01 and 0x7F", program(chain(1), name=b"\x01\x7f"))
    add("5.3 name byte 0x80", program(chain(1), name=b"\x80"), "5.3")
    add("5.3 name byte 0xFF in the last position", program(chain(1), name=b"ABCDEFGHIJKLMNO\xff"), "5.3")
    add("5.3 name 'ab' NUL 'c' (a byte after the NUL padding)", program(chain(1), name=b"ab\0c"), "5.3")
    add("5.3 name NUL then 'x' in the last position", program(chain(1), name=b"\0" * 15 + b"x"), "5.3")

    # 8.1: program size (checked once the profile is known)
    add(f"valid: program of exactly max_program_bytes ({MAX_PROGRAM_BYTES})", sized_program(MAX_PROGRAM_BYTES))
    add(f"8.1 program of max_program_bytes + 4 ({MAX_PROGRAM_BYTES + 4})", sized_program(MAX_PROGRAM_BYTES + 4), "8.1")

    # 6.1 / 6.2: number of layers
    add("6.1 num_layers 0 (a record follows)", program(chain(1), num_layers=0), "6.1")
    add("valid: 1 layer", base)
    add(f"valid: num_layers = max_layers ({MAX_LAYERS})", program(chain(MAX_LAYERS)))
    add(f"6.2 num_layers = max_layers + 1 ({MAX_LAYERS + 1}, records present)", program(chain(MAX_LAYERS + 1)), "6.2")
    add("6.2 num_layers 0xFFFF", program(chain(1), num_layers=0xFFFF), "6.2")

    # 8.2 / 8.3: num_steps, dt_ns
    add("8.2 num_steps 0", program(chain(1), num_steps=0), "8.2")
    add("valid: num_steps 1", program(chain(1), num_steps=1))
    add("valid: num_steps 65535", program(chain(1), num_steps=0xFFFF))
    add("8.3 dt_ns 0", program(chain(1), dt_ns=0), "8.3")
    add("valid: dt_ns 1", program(chain(1), dt_ns=1))
    add("valid: dt_ns 2**32 - 1", program(chain(1), dt_ns=0xFFFFFFFF))

    # 6.3 .. 6.6: record header
    one = Layer().encode()
    add("6.3 num_layers 2, nothing after the first record", program(chain(1), num_layers=2), "6.3")
    add("6.3 num_layers 2, 12 bytes of a second record header", program(chain(1), num_layers=2, extra=one[:12]), "6.3")
    for rt in (0, 2, 255):
        add(f"6.4 record_type {rt}", program([Layer(record_type=rt)]), "6.4")
    for nt in (0, 5, 255):
        add(f"6.5 neuron_type {nt}", program([Layer(neuron_type=nt)]), "6.5")
    add("6.5 neuron_type 5 in layer 1 of 2", program([Layer(), Layer(neuron_type=5)]), "6.5")
    for r in (2, 255):
        add(f"6.6 reset_mode {r}", program([Layer(reset=r)]), "6.6")
    # 5.4 / 5.5: record zero bytes
    for ms in (1, 15, 255):
        add(f"5.4 max_spikes {ms} (mcu: one spike per step, must be 0)", program([Layer(max_spikes=ms)]), "5.4")
    add("5.5 record reserved byte 10 = 1", program([Layer(reserved=b"\x01\0")]), "5.5")
    add("5.5 record reserved byte 11 = 1", program([Layer(reserved=b"\0\x01")]), "5.5")

    # 8.4 .. 8.8: record fields against the profile
    add("8.4 fan_in 0", program([Layer(fan_in=0)], num_inputs=0), "8.4")
    add("8.4 num_neurons 0", program([Layer(n=0)], num_outputs=0), "8.4")
    add(f"valid: num_neurons = max ({MAX_NEURONS}, the whole state pool)", program([Layer(n=MAX_NEURONS)]))
    add(f"8.5 num_neurons = max + 1 ({MAX_NEURONS + 1})", program([Layer(n=MAX_NEURONS + 1), Layer(fan_in=MAX_NEURONS + 1)]), "8.5")
    add("8.5 num_neurons 65535 (record otherwise that of 1 neuron)", set_bytes(base, 48 + 6, b"\xff\xff"), "8.5")
    add(f"valid: fan_in = max ({MAX_FAN_IN})", program([Layer(fan_in=MAX_FAN_IN)]))
    add(f"8.6 fan_in = max + 1 ({MAX_FAN_IN + 1})", program([Layer(fan_in=MAX_FAN_IN + 1)]), "8.6")
    add(f"valid: w_shift = max ({MAX_SHIFT})", program([Layer(w_shift=MAX_SHIFT)]))
    add(f"8.7 w_shift = max + 1 ({MAX_SHIFT + 1})", program([Layer(w_shift=MAX_SHIFT + 1)]), "8.7")
    add("8.7 w_shift 255", program([Layer(w_shift=255)]), "8.7")
    add(f"valid: rec_shift = max ({MAX_SHIFT}) on rleaky dense", program([Layer(neuron_type=3, rec_shift=MAX_SHIFT)]))
    add(f"8.8 rec_shift = max + 1 ({MAX_SHIFT + 1}) on rleaky dense", program([Layer(neuron_type=3, rec_shift=MAX_SHIFT + 1)]), "8.8")
    for t in (1, 2, 4):
        add(f"8.8 rec_shift 1 on neuron_type {t}", program([Layer(neuron_type=t, rec_shift=1)]), "8.8")

    # 6.7 / 6.8: record size
    for d in (-4, -1, 1, 4):
        l = Layer(fan_in=3, n=2)
        add(f"6.7 record_size {d:+d}", program([replace(l, record_size=l.computed_size() + d)]), "6.7")
    add("6.7 record_size of a leaky layer on a synaptic one",
        program([Layer(neuron_type=2, n=2, record_size=Layer(n=2).computed_size())]), "6.7")
    cut = program([Layer(fan_in=3, n=2)])[:-4]
    add("6.8 record runs past total_size (total_size consistent with the cut)",
        set_bytes(cut, 8, struct.pack("<I", len(cut))), "6.8")
    cut2 = program([Layer(), Layer(fan_in=1, n=3)])[:-12]
    add("6.8 second record runs past total_size", set_bytes(cut2, 8, struct.pack("<I", len(cut2))), "6.8")

    # 5.6: padding
    add("valid: sections with padding, all zero", program([Layer(neuron_type=2, fan_in=3, n=1)]))
    add("5.6 padding after weights", program([Layer(fan_in=3, n=1, pad_fill={"weights": 1})]), "5.6")
    add("5.6 padding after decay_mem", program([Layer(n=1, pad_fill={"decay_mem": 0x80})]), "5.6")
    add("5.6 padding after decay_syn", program([Layer(neuron_type=2, n=1, pad_fill={"decay_syn": 1})]), "5.6")
    add("5.6 padding after rec_weights", program([Layer(neuron_type=3, n=1, pad_fill={"rec_weights": 1})]), "5.6")

    # 8.9 .. 8.12: array values
    add("valid: thresholds 1 and INT32_MAX", program([Layer(n=2, threshold=(1, I32_MAX))]))
    for th in ((0, 1), (1, 0), (-1, 5), (I32_MIN, 1)):
        add(f"8.9 thresholds {th}", program([Layer(n=2, threshold=th)]), "8.9")
    add("valid: bias INT32_MIN and INT32_MAX (mcu: any int32)", program([Layer(n=2, bias=(I32_MIN, I32_MAX))]))
    add(f"valid: decay_mem {DECAY_MAX}", program([Layer(n=2, decay_mem=(DECAY_MAX, 0))]))
    for dm in ((DECAY_MAX + 1, 0), (0, 0xFFFF)):
        add(f"8.11 decay_mem {dm}", program([Layer(n=2, decay_mem=dm)]), "8.11")
    add(f"valid: decay_syn {DECAY_MAX}", program([Layer(neuron_type=2, n=2, decay_syn=(0, DECAY_MAX))]))
    add(f"8.11 decay_syn {DECAY_MAX + 1}", program([Layer(neuron_type=2, n=2, decay_syn=(0, DECAY_MAX + 1))]), "8.11")
    add("valid: rec_gain INT32_MIN and INT32_MAX (mcu: any int32)",
        program([Layer(neuron_type=4, n=2, rec_gain=(I32_MIN, I32_MAX))]))

    # 7: the chain
    add("7.1 num_inputs = fan_in + 1", program([Layer(fan_in=3, n=2)], num_inputs=4), "7.1")
    add("7.1 num_inputs = fan_in - 1", program([Layer(fan_in=3, n=2)], num_inputs=2), "7.1")
    add("7.1 layer 1 fan_in != layer 0 num_neurons", program([Layer(fan_in=3, n=2), Layer(fan_in=3, n=1)]), "7.1")
    add("7.1 conv fan_in (C*H*W) != num_inputs", v2([MapLayer()], num_inputs=8), "7.1")
    add("7.1 pooling record fan_in != previous num_neurons",
        v2([Layer(n=16), pool_rec(1, 3, 3), Layer(fan_in=1)]), "7.1")
    add("7.2 num_outputs = last num_neurons + 1", replace_field(two, 20, 2), "7.2")
    add("7.2 num_outputs 0", replace_field(two, 20, 0), "7.2")
    for k in (4, 16, 36):
        add(f"7.3 {k} bytes after the last record", program(chain(1), extra=b"\0" * k), "7.3")

    # Version 2: convolution, pooling, graded input (and the state pool, 8.5)
    out.extend(v2_cases())

    # Several violations: the first in table order is the one named.
    add("order: version 3 and a bad CRC -> 2.1", set_bytes(set_bytes(base, 4, b"\x03"), 12, b"\0\0\0\0", False), "2.1")
    add("order: bad CRC and profile 2 -> 4.1", set_bytes(set_bytes(base, 6, b"\x02"), 12, b"\0\0\0\0", False), "4.1")
    add("order: profile 2 and flags 1 -> 5.1", program(chain(1), profile_id=2, flags=1), "5.1")
    add("order: bad name and num_layers 0 -> 5.3", program(chain(1), name=b"\xff", num_layers=0), "5.3")
    add("order: num_steps 0 and dt_ns 0 -> 8.2", program(chain(1), num_steps=0, dt_ns=0), "8.2")
    add("order: dt_ns 0 and a bad record_type -> 8.3", program([Layer(record_type=9)], dt_ns=0), "8.3")
    add("order: max_spikes 1 and fan_in 0 -> 5.4", program([Layer(max_spikes=1, fan_in=0)], num_inputs=0), "5.4")
    add("order: w_shift 21 and a wrong record_size -> 8.7", program([Layer(w_shift=21, record_size=20)]), "8.7")
    add("order: padding and threshold 0 -> 5.6",
        program([Layer(fan_in=3, threshold=(0,), pad_fill={"weights": 1})]), "5.6")
    add("order: decay_mem 4097 before threshold 0 of a later neuron -> 8.9 (arrays in table order)",
        program([Layer(n=2, decay_mem=(DECAY_MAX + 1, 0), threshold=(1, 0))]), "8.9")
    add("order: layer 0 fan_in != num_inputs and layer 1 neuron_type 5 -> 7.1",
        program([Layer(fan_in=2), Layer(neuron_type=5)], num_inputs=3), "7.1")
    add("order: num_outputs wrong and trailing bytes -> 7.2", program(chain(1), num_outputs=2, extra=b"\0" * 4), "7.2")
    return out


def v2_cases() -> list[Case]:
    """The rules of format version 2 (2.1, 5.2, 5.7, 6.4, 6.9, 6.10, 6.11, 6.5, 8.5 total, 8.6
    window, 7.5), each at its boundary, and valid conv / pool / graded programs (mutation seeds)."""
    out: list[Case] = []

    def add(name, blob, rule=None):
        out.append(Case(name, blob, rule))

    conv = MapLayer()                                             # 1x3x3 conv 1@2x2 -> 1x2x2
    dense4 = Layer(fan_in=4, n=2)
    # valid shapes (small: they seed the mutation campaign)
    add("valid v2: conv 1@2x2 -> dense", v2([conv, dense4]))
    add("valid v2: conv synaptic 2@3x3/s2/p1 + max pool 2/1, zero reset",
        v2([MapLayer(geo=(2, 5, 5, 2, 3, 2, 1, 1, 2, 1), neuron_type=2, reset=1), Layer(fan_in=8, n=1)]))
    add("valid v2: conv + sum pool 3/2 (overlap) -> dense",
        v2([MapLayer(geo=(1, 7, 7, 1, 2, 1, 0, 2, 3, 2), w_shift=3), Layer(fan_in=4, n=1)]))
    add("valid v2: dense -> max pool record 2/2 -> dense", v2([Layer(fan_in=2, n=16), pool_rec(1, 4, 4), dense4]))
    add("valid v2: conv -> sum pool record -> conv -> dense",
        v2([MapLayer(geo=(1, 5, 5, 2, 2, 1, 0, 0, 0, 0)), pool_rec(2, 4, 4, pool=2, pk=2, ps=2),
            MapLayer(geo=(2, 2, 2, 1, 1, 1, 0, 0, 0, 0)), Layer(fan_in=4, n=1)]))
    add("valid v2: graded dense (input_scale 1.0)", v2([Layer(fan_in=3, n=2)], graded=True))
    add("valid v2: graded conv (input_scale 127/3)", v2([conv, dense4], graded=True, scale=127 / 3))
    add("valid v2: graded, smallest positive float32 (denormal) scale", v2([Layer()], graded=True, scale=1))
    add("valid v2: graded, largest float32 scale", v2([Layer()], graded=True, scale=0x7F7FFFFF))
    add("valid v2: pool kernel 15", v2([MapLayer(geo=(1, 16, 16, 1, 2, 1, 0, 1, 15, 1)), Layer()]))
    add("valid v2: padding k-1 (3x3, p2)", v2([MapLayer(geo=(1, 1, 1, 1, 3, 1, 2, 0, 0, 0)), Layer(fan_in=9)]))

    # 2.1 (version 1 and 2 only) is above; 5.2 flags / reserved
    add("5.2 version 1 with flags 1 (graded needs v2)", program([Layer()], flags=1, reserved=0x3F800000), "5.2")
    add("5.2 version 2 flags 2", v2([Layer()], flags=2), "5.2")
    add("5.2 version 2 flags 0x81", v2([Layer()], graded=True, flags=0x81), "5.2")
    add("5.2 version 2 bytes 28-31 non-zero without GRADED_INPUT", v2([Layer()], reserved=0x3F800000), "5.2")
    # 5.7 input_scale
    for what, bits in (("0", 0), ("-0", 0x80000000), ("-1", 0xBF800000), ("NaN", 0x7FC00000),
                       ("inf", 0x7F800000), ("-inf", 0xFF800000)):
        add(f"5.7 graded input_scale {what}", v2([Layer()], graded=True, scale=bits), "5.7")
    add("order: graded scale 0 and a bad name -> 5.7", v2([Layer()], graded=True, scale=0, name=b"\xff"), "5.7")
    # 6.4 record types
    add("6.4 record_type 2 in version 1", program([conv, dense4]), "6.4")
    add("6.4 record_type 3 in version 1", program([Layer(n=16), pool_rec(1, 4, 4), dense4]), "6.4")
    for rt in (0, 4, 255):
        add(f"6.4 record_type {rt} in version 2", v2([Layer(record_type=rt)]), "6.4")
    # 6.9 geometry past the end
    whole = v2([Layer(), conv], num_outputs=4)
    for keep in (16, 20, 28):
        cut = whole[:80 + keep]
        add(f"6.9 conv geometry cut after {keep} record bytes", set_bytes(cut, 8, struct.pack("<I", len(cut))), "6.9")
    # 6.10 geometry
    bad_geo = {
        "in_channels 0": dict(geo=(0, 3, 3, 1, 2, 1, 0, 0, 0, 0), fan_in_override=9, n_override=4),
        "in_height 0": dict(geo=(1, 0, 3, 1, 2, 1, 0, 0, 0, 0), fan_in_override=9, n_override=4),
        "out_channels 0": dict(geo=(1, 3, 3, 0, 2, 1, 0, 0, 0, 0), n_override=4),
        "kernel 0 on a conv record": dict(geo=(1, 3, 3, 1, 0, 1, 0, 0, 0, 0), n_override=4),
        "stride 0": dict(geo=(1, 3, 3, 1, 2, 0, 0, 0, 0, 0), n_override=4),
        "padding = kernel": dict(geo=(1, 3, 3, 1, 2, 1, 2, 0, 0, 0), n_override=4),
        "pool kind 3": dict(geo=(1, 3, 3, 1, 2, 1, 0, 3, 1, 1), n_override=4),
        "pool_kernel 1 without a pool": dict(geo=(1, 3, 3, 1, 2, 1, 0, 0, 1, 0)),
        "pool_stride 1 without a pool": dict(geo=(1, 3, 3, 1, 2, 1, 0, 0, 0, 1)),
        "pool_kernel 0 with a pool": dict(geo=(1, 3, 3, 1, 2, 1, 0, 1, 0, 1), n_override=4),
        "pool_kernel 16": dict(geo=(1, 17, 17, 1, 2, 1, 0, 1, 16, 1), n_override=1),
        "pool_stride 0": dict(geo=(1, 3, 3, 1, 2, 1, 0, 1, 1, 0), n_override=4),
        "kernel larger than the padded input": dict(geo=(1, 2, 2, 1, 3, 1, 0, 0, 0, 0), n_override=1),
        "pool window larger than the map": dict(geo=(1, 3, 3, 1, 2, 1, 0, 1, 3, 1), n_override=1),
        "geometry reserved 1": dict(geo_reserved=1),
        "fan_in = C*H*W + 1": dict(fan_in_override=10),
        "num_neurons = C_out*Ho*Wo - 1": dict(n_override=3),
    }
    for what, kw in bad_geo.items():
        l = MapLayer(**kw)
        add(f"6.10 conv {what}", v2([l, Layer(fan_in=l.n & 0xFFFF or 1, n=1)]), "6.10")
    bad_pool = {
        "out_channels != in_channels": dict(geo=(1, 4, 4, 2, 0, 0, 0, 1, 2, 2), n_override=4),
        "kernel 1": dict(geo=(1, 4, 4, 1, 1, 0, 0, 1, 2, 2)),
        "stride 1": dict(geo=(1, 4, 4, 1, 0, 1, 0, 1, 2, 2)),
        "padding 1": dict(geo=(1, 4, 4, 1, 0, 0, 1, 1, 2, 2)),
        "pool none": dict(geo=(1, 4, 4, 1, 0, 0, 0, 0, 0, 0), n_override=4),
    }
    for what, kw in bad_pool.items():
        l = MapLayer(record_type=3, neuron_type=0, **kw)
        add(f"6.10 pooling record {what}", v2([Layer(fan_in=2, n=16), l, dense4]), "6.10")
    # 6.11 pooling record fields
    for what, kw in (("neuron_type 1", dict(neuron_type=1)), ("reset_mode 1", dict(reset=1)),
                     ("w_shift 1", dict(w_shift=1)), ("rec_shift 1", dict(rec_shift=1)),
                     ("max_spikes 1", dict(max_spikes=1))):
        add(f"6.11 pooling record {what}", v2([Layer(fan_in=2, n=16), pool_rec(1, 4, 4, **kw), dense4]), "6.11")
    add("5.5 pooling record reserved byte 10 = 1",
        v2([Layer(fan_in=2, n=16), pool_rec(1, 4, 4, reserved=b"\x01\0"), dense4]), "5.5")
    # 6.5 conv neuron types
    for nt in (3, 4):
        add(f"6.5 conv record with neuron_type {nt}", v2([MapLayer(neuron_type=nt), dense4]), "6.5")
    add("6.5 conv record with neuron_type 0", v2([MapLayer(neuron_type=0), dense4]), "6.5")
    # 8.5 the state pool (max_neurons_total), 8.6 the conv window
    add(f"valid v2: layers together = max_neurons_total ({MAX_TOTAL})",
        program([Layer(n=MAX_TOTAL - 1), Layer(fan_in=MAX_TOTAL - 1, n=1)]))
    add(f"8.5 layers together = max_neurons_total + 1 ({MAX_TOTAL + 1})",
        program([Layer(n=MAX_TOTAL - 1), Layer(fan_in=MAX_TOTAL - 1, n=2)]), "8.5")
    add("8.5 a pooling record's outputs count in the state pool",
        v2([Layer(n=MAX_TOTAL - 8), pool_rec(1, 4, (MAX_TOTAL - 8) // 4, pk=1, ps=1), Layer(fan_in=MAX_TOTAL - 8)]),
        "8.5")
    c_ok = MAX_FAN_IN // 16
    add(f"valid v2: conv window C_in*k*k = max_fan_in ({MAX_FAN_IN})",
        v2([MapLayer(geo=(c_ok, 2, 2, 1, 4, 1, 1, 0, 0, 0)), Layer()]))
    add(f"8.6 conv window C_in*k*k = max_fan_in + 16 (fan_in C*H*W only {(c_ok + 1) * 4})",
        v2([MapLayer(geo=(c_ok + 1, 2, 2, 1, 4, 1, 1, 0, 0, 0)), Layer()]), "8.6")
    # 6.7 / 6.8 / 5.6 / 8.9 on conv and pool records
    for d in (-4, 4):
        add(f"6.7 conv record_size {d:+d}", v2([MapLayer(record_size=conv.computed_size() + d), dense4]), "6.7")
        add(f"6.7 pooling record_size {32 + d}",
            v2([Layer(fan_in=2, n=16), pool_rec(1, 4, 4, record_size=32 + d), dense4]), "6.7")
    cut = v2([MapLayer()])[:-4]
    add("6.8 conv record runs past total_size", set_bytes(cut, 8, struct.pack("<I", len(cut))), "6.8")
    add("5.6 padding after conv weights",
        v2([MapLayer(geo=(3, 3, 3, 1, 1, 1, 0, 0, 0, 0), pad_fill={"weights": 1}), Layer(fan_in=9, n=1)]), "5.6")
    add("8.9 conv threshold 0", v2([MapLayer(threshold=(1, 1, 0, 1)), dense4]), "8.9")
    # 7.5 pool placement
    add("7.5 pooling record first", v2([pool_rec(1, 4, 4), dense4]), "7.5")
    add("7.5 pooling record last", v2([Layer(fan_in=2, n=16), pool_rec(1, 4, 4)]), "7.5")
    add("7.5 pooling record right after another",
        v2([Layer(fan_in=2, n=64), pool_rec(1, 8, 8), pool_rec(1, 4, 4), dense4]), "7.5")
    add("order: pool last and trailing bytes -> 7.3", v2([Layer(fan_in=2, n=16), pool_rec(1, 4, 4)], extra=b"\0" * 4), "7.3")
    return out


def replace_field(blob: bytes, off: int, value: int) -> bytes:
    """Set the u16 header field at `off` and fix the CRC."""
    return set_bytes(blob, off, struct.pack("<H", value))


def valid_blobs() -> list[bytes]:
    """The valid corpus blobs under 4 KiB (seeds for random mutation)."""
    return [c.blob for c in cases() if c.rule is None and len(c.blob) <= 4096]
