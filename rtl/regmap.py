"""The register map and the layer-descriptor layout: defined once, here, for RTL, driver, docs and C.

This module is plain Python (no Amaranth import) so the driver and the docs can use it where no HDL
tooling is loaded; :func:`descriptor_layout` builds the ``lib.data`` layout the RTL uses from the same
field table, and :func:`markdown` / :func:`c_header` generate the documentation and the C header.

Registers are 32 bits on an AXI4-Lite slave, word aligned. Descriptors are 64 bytes, little endian,
packed LSB first in the order of :data:`DESCRIPTOR_FIELDS`, stored back to back in memory; the sequencer
runs ``DESC_COUNT`` of them from ``DESC_ADDR`` per start.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from scalenet.errors import HardwareLimitError

__all__ = [
    "Access", "Field", "Register", "REGISTERS", "by_name", "by_offset", "pack", "unpack",
    "ID_MAGIC", "VERSION", "Opcode", "ErrorCode",
    "DescField", "DESCRIPTOR_FIELDS", "DESCRIPTOR_BYTES", "descriptor_layout", "pack_descriptor",
    "unpack_descriptor", "markdown", "c_header",
]

ID_MAGIC = 0x53434E54
"""``"SCNT"``: what the ID register reads, so a driver knows it talks to SCALENet."""
VERSION = (0, 1, 0)


class Access(enum.Enum):
    RO = "ro"          #: read only; writes are answered SLVERR
    RW = "rw"          #: read and write
    W1C = "w1c"        #: read; writing 1 clears a bit
    WO = "wo"          #: write only (pulses); reads return 0


@dataclass(frozen=True)
class Field:
    name: str
    lsb: int
    width: int
    doc: str
    reset: int = 0

    @property
    def mask(self):
        return ((1 << self.width) - 1) << self.lsb


@dataclass(frozen=True)
class Register:
    name: str
    offset: int
    access: Access
    doc: str
    fields: tuple = ()
    reset: int = 0

    def __post_init__(self):
        used = 0
        for f in self.fields:
            if f.lsb + f.width > 32 or used & f.mask:
                raise ValueError(f"register {self.name}: field {f.name} overlaps or exceeds 32 bits")
            used |= f.mask


class Opcode(enum.IntEnum):
    """Layer operations the sequencer dispatches (descriptor field ``opcode``)."""

    CONV = 1
    DENSE = 2
    MAXPOOL = 3
    AVGPOOL = 4
    GLOBAL_AVGPOOL = 5
    ADD = 6


class ErrorCode(enum.IntEnum):
    """Values of ``ERROR.code``: why the accelerator stopped."""

    NONE = 0
    READ_SLVERR = 1
    READ_DECERR = 2
    WRITE_SLVERR = 3
    WRITE_DECERR = 4
    BAD_OPCODE = 5
    BAD_DESCRIPTOR = 6      #: a field beyond the configured hardware's limits
    ABORTED = 7
    WATCHDOG = 8


def _reg(name, offset, access, doc, *fields, reset=0):
    return Register(name, offset, access, doc, tuple(Field(*f) for f in fields), reset)


def _counter(name, offset, doc):
    return (_reg(f"{name}_LO", offset, Access.RO, f"{doc} (bits 31:0)"),
            _reg(f"{name}_HI", offset + 4, Access.RO, f"{doc} (bits 63:32)"))


REGISTERS: tuple = (
    _reg("ID", 0x000, Access.RO, "Reads 0x53434E54 (\"SCNT\").", reset=ID_MAGIC),
    _reg("VERSION", 0x004, Access.RO, "Gateware version.",
         ("patch", 0, 8, "patch"), ("minor", 8, 8, "minor"), ("major", 16, 8, "major"),
         reset=(VERSION[0] << 16) | (VERSION[1] << 8) | VERSION[2]),
    _reg("CONFIG0", 0x008, Access.RO, "PE array and bus configuration.",
         ("rows", 0, 8, "PE array rows (output channels in parallel)"),
         ("cols", 8, 8, "PE array columns (output pixels in parallel)"),
         ("max_kernel", 16, 4, "largest kernel size K (KxK)"),
         ("data_bytes", 20, 5, "AXI4 data width in bytes")),
    _reg("CONFIG1", 0x00C, Access.RO, "Buffer limits.",
         ("max_width", 0, 16, "largest input feature-map width the line buffers hold"),
         ("max_channels", 16, 16, "largest channel count per layer")),
    _reg("CTRL", 0x010, Access.RW, "Control. START, ABORT and SOFT_RESET are pulses and read back 0.",
         ("start", 0, 1, "write 1: run DESC_COUNT descriptors from DESC_ADDR (ignored while busy: START_WHILE_BUSY)"),
         ("abort", 1, 1, "write 1: stop at the next safe point, finish outstanding bursts, report ABORTED"),
         ("soft_reset", 2, 1, "write 1: reset the datapath and status (not the registers)"),
         ("irq_enable", 8, 1, "raise the interrupt line on done or error")),
    _reg("STATUS", 0x014, Access.RO, "State.",
         ("busy", 0, 1, "a run is in progress"),
         ("done", 1, 1, "the last run finished without error"),
         ("error", 2, 1, "the last run stopped with an error (see ERROR)"),
         ("start_while_busy", 3, 1, "a START was written while busy and ignored")),
    _reg("ERROR", 0x018, Access.RO, "Why the last run stopped.",
         ("code", 0, 8, "an ErrorCode"), ("layer", 8, 16, "index of the descriptor that failed")),
    _reg("IRQ_STATUS", 0x01C, Access.W1C, "Interrupt causes; write 1 to clear.",
         ("done", 0, 1, "a run finished"), ("error", 1, 1, "a run stopped with an error")),
    _reg("DESC_ADDR", 0x020, Access.RW, "Byte address of the first descriptor (64-byte aligned)."),
    _reg("DESC_COUNT", 0x024, Access.RW, "Number of descriptors to run per START.",
         ("count", 0, 16, "descriptors")),
    _reg("LAYER", 0x028, Access.RO, "Index of the descriptor being run.", ("index", 0, 16, "descriptor index")),
    _reg("PERF_CTRL", 0x02C, Access.WO, "Performance counters.", ("clear", 0, 1, "write 1: zero all counters")),
    *_counter("PERF_CYCLES", 0x040, "cycles while busy"),
    *_counter("PERF_MAC_ACTIVE", 0x048, "MAC operations performed (PE-cycles with a valid MAC)"),
    *_counter("PERF_DMA_RD_BYTES", 0x050, "bytes read by the DMA"),
    *_counter("PERF_DMA_WR_BYTES", 0x058, "bytes written by the DMA"),
    *_counter("PERF_DMA_STALL", 0x060, "cycles the datapath waited for the DMA"),
)

_BY_NAME = {r.name: r for r in REGISTERS}
_BY_OFFSET = {r.offset: r for r in REGISTERS}
assert len(_BY_NAME) == len(REGISTERS) == len(_BY_OFFSET), "duplicate register name or offset"
assert all(r.offset % 4 == 0 for r in REGISTERS)


def by_name(name) -> Register:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no register named {name!r}") from None


def by_offset(offset) -> Register | None:
    """The register at a byte offset, or None for a reserved address."""
    return _BY_OFFSET.get(offset)


def pack(name, **fields) -> int:
    """A register value from field values, each checked against its width."""
    reg = by_name(name)
    known = {f.name: f for f in reg.fields}
    value = 0
    for key, v in fields.items():
        if key not in known:
            raise KeyError(f"register {name} has no field {key!r} (fields: {', '.join(known)})")
        f = known[key]
        if not 0 <= int(v) < (1 << f.width):
            raise ValueError(f"{name}.{key} = {v} does not fit in {f.width} bits")
        value |= int(v) << f.lsb
    return value


def unpack(name, value) -> dict:
    reg = by_name(name)
    return {f.name: (int(value) >> f.lsb) & ((1 << f.width) - 1) for f in reg.fields}


# ---------------------------------------------------------------------------------------------------------
# Layer descriptors


@dataclass(frozen=True)
class DescField:
    name: str
    width: int
    doc: str
    signed: bool = False

    @property
    def lo(self):
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def hi(self):
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1


DESCRIPTOR_BYTES = 64

DESCRIPTOR_FIELDS: tuple = (
    DescField("opcode", 4, "an Opcode"),
    DescField("in_signed", 1, "input activations are int8 (1) or uint8 (0)"),
    DescField("out_signed", 1, "output activations are int8 (1) or uint8 (0)"),
    DescField("pool_after", 2, "fused max pool after a conv: 0 none, 2 = 2x2/2, 3 = 3x3/2 (out_height/out_width "
              "stay the conv's; the pooled tensor is written)"),
    DescField("pool_ceil", 1, "fused max pool in ceil mode: a last window may overhang the conv output"),
    DescField("kernel_h", 4, "kernel height (1..max_kernel)"),
    DescField("kernel_w", 4, "kernel width (1..max_kernel)"),
    DescField("stride_h", 3, "vertical stride"),
    DescField("stride_w", 3, "horizontal stride"),
    DescField("pad_top", 4, "zero-point padding rows above"),
    DescField("pad_left", 4, "zero-point padding columns left"),
    DescField("pad_bottom", 4, "zero-point padding rows below"),
    DescField("pad_right", 4, "zero-point padding columns right"),
    DescField("in_channels", 16, "input channels"),
    DescField("in_height", 16, "input height (1 for 1-D and dense)"),
    DescField("in_width", 16, "input width"),
    DescField("out_channels", 16, "output channels (dense: output features)"),
    DescField("out_height", 16, "output height"),
    DescField("out_width", 16, "output width"),
    DescField("groups", 16, "convolution groups (in_channels for depthwise)"),
    DescField("x_zero_point", 9, "input zero point", signed=True),
    DescField("y_zero_point", 9, "output zero point", signed=True),
    DescField("b_zero_point", 9, "second input's zero point (ADD)", signed=True),
    DescField("clamp_lo", 9, "output lower clamp (ReLU: the zero point)", signed=True),
    DescField("clamp_hi", 9, "output upper clamp (ReLU6)", signed=True),
    DescField("count_include_pad", 1, "average pooling counts padding"),
    DescField("in_pixel_stride", 16, "bytes between input pixels (> in_channels for a channel slice)"),
    DescField("out_pixel_stride", 16, "bytes between output pixels (> out_channels when writing a slice of a concatenation)"),
    DescField("weight_bytes", 24, "bytes of weight blocks the layer reads from weight_addr"),
    DescField("param_bytes", 16, "bytes of parameters the layer reads from param_addr"),
    DescField("in_addr", 32, "input activations, HWC bytes (any byte address)"),
    DescField("b_addr", 32, "second input (ADD), HWC bytes, same pixel stride as the input"),
    DescField("weight_addr", 32, "weights in R x C blocks (docs/architecture.md)"),
    DescField("param_addr", 32, "bias and requantisation parameters (docs/architecture.md)"),
    DescField("out_addr", 32, "output activations, HWC bytes (any byte address: a channel slice starts mid-pixel)"),
)

_DESC_BITS = sum(f.width for f in DESCRIPTOR_FIELDS)
assert _DESC_BITS <= DESCRIPTOR_BYTES * 8, f"descriptor needs {_DESC_BITS} bits"


def descriptor_layout():
    """The descriptor as an Amaranth ``data.StructLayout`` (padded to 512 bits), for the RTL."""
    from amaranth.hdl import signed, unsigned
    from amaranth.lib import data
    members = {f.name: (signed(f.width) if f.signed else unsigned(f.width)) for f in DESCRIPTOR_FIELDS}
    members["_reserved"] = unsigned(DESCRIPTOR_BYTES * 8 - _DESC_BITS)
    return data.StructLayout(members)


def pack_descriptor(**values) -> bytes:
    """64 descriptor bytes; every field is range-checked, unknown fields are refused."""
    known = {f.name: f for f in DESCRIPTOR_FIELDS}
    for key in values:
        if key not in known:
            raise KeyError(f"descriptor has no field {key!r}")
    word, lsb = 0, 0
    for f in DESCRIPTOR_FIELDS:
        v = int(values.get(f.name, 0))
        if not f.lo <= v <= f.hi:
            raise HardwareLimitError(f"descriptor field {f.name} = {v} is outside [{f.lo}, {f.hi}]")
        word |= (v & ((1 << f.width) - 1)) << lsb
        lsb += f.width
    return word.to_bytes(DESCRIPTOR_BYTES, "little")


def unpack_descriptor(raw: bytes) -> dict:
    if len(raw) != DESCRIPTOR_BYTES:
        raise ValueError(f"a descriptor is {DESCRIPTOR_BYTES} bytes, got {len(raw)}")
    word = int.from_bytes(raw, "little")
    out, lsb = {}, 0
    for f in DESCRIPTOR_FIELDS:
        v = (word >> lsb) & ((1 << f.width) - 1)
        if f.signed and v >> (f.width - 1):
            v -= 1 << f.width
        out[f.name] = v
        lsb += f.width
    return out


# ---------------------------------------------------------------------------------------------------------
# Generated documentation


def markdown() -> str:
    lines = ["# SCALENet register map", "",
             "Generated from `rtl/regmap.py` by `scalenet regmap --markdown`; do not edit by hand.", "",
             "| offset | name | access | reset | fields | description |",
             "|---|---|---|---|---|---|"]
    for r in REGISTERS:
        fields = "<br>".join(f"`[{f.lsb + f.width - 1}:{f.lsb}]` {f.name}: {f.doc}" if f.width > 1
                             else f"`[{f.lsb}]` {f.name}: {f.doc}" for f in r.fields)
        lines.append(f"| 0x{r.offset:03X} | {r.name} | {r.access.value} | 0x{r.reset:08X} | {fields} | {r.doc} |")
    lines += ["", "## Layer descriptor", "",
              f"{DESCRIPTOR_BYTES} bytes, little endian, fields packed from bit 0 in this order.", "",
              "| bits | field | type | description |", "|---|---|---|---|"]
    lsb = 0
    for f in DESCRIPTOR_FIELDS:
        kind = f"{'s' if f.signed else 'u'}{f.width}"
        lines.append(f"| {lsb + f.width - 1}:{lsb} | {f.name} | {kind} | {f.doc} |")
        lsb += f.width
    lines += ["", "## Opcodes", "", "| value | op |", "|---|---|"]
    lines += [f"| {o.value} | {o.name} |" for o in Opcode]
    lines += ["", "## Error codes", "", "| value | code |", "|---|---|"]
    lines += [f"| {e.value} | {e.name} |" for e in ErrorCode]
    return "\n".join(lines) + "\n"


def c_header() -> str:
    out = ["/* SCALENet register map: generated from rtl/regmap.py; do not edit. */",
           "#ifndef SCALENET_REGS_H", "#define SCALENET_REGS_H", "",
           f"#define SCALENET_ID_MAGIC 0x{ID_MAGIC:08X}u", f"#define SCALENET_DESCRIPTOR_BYTES {DESCRIPTOR_BYTES}u", ""]
    for r in REGISTERS:
        out.append(f"#define SCALENET_{r.name}_OFFSET 0x{r.offset:03X}u")
        for f in r.fields:
            out.append(f"#define SCALENET_{r.name}_{f.name.upper()}_SHIFT {f.lsb}u")
            out.append(f"#define SCALENET_{r.name}_{f.name.upper()}_MASK 0x{f.mask:08X}u")
    out.append("")
    for o in Opcode:
        out.append(f"#define SCALENET_OP_{o.name} {o.value}u")
    for e in ErrorCode:
        out.append(f"#define SCALENET_ERR_{e.name} {e.value}u")
    out.append("")
    lsb = 0
    for f in DESCRIPTOR_FIELDS:
        out.append(f"#define SCALENET_DESC_{f.name.upper()}_LSB {lsb}u")
        out.append(f"#define SCALENET_DESC_{f.name.upper()}_WIDTH {f.width}u")
        lsb += f.width
    out += ["", "#endif /* SCALENET_REGS_H */", ""]
    return "\n".join(out)
