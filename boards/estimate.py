"""Resource pre-check: multipliers and block RAMs a design needs, counted from its RTLIL, before synthesis.

Why from RTLIL and not a formula of the configuration: the design is the one source of truth. Every
``$mul`` whose operands are both signals becomes hardware multipliers, every memory with synchronous
read ports becomes block RAM; counting them in the RTLIL the build is about to synthesise covers the PE
array (rows x cols), both requantisers (4 each) and the sequencer's address arithmetic without a list
that drifts from the RTL. The mapping rules follow what Yosys does (``mul2dsp`` splits operands wider
than the DSP into 17-bit parts; ``memory_libmap`` packs 1/2/4/8/16/32 data bits per block in the
16384x1 ... 512x36 aspect ratios, duplicates a memory per read port, and takes distributed RAM instead
where its cost -- 4 per 16x4 LUT RAM against 128 per block -- is lower, a tie going to block RAM). On the 8x8 default the estimate
is 92 multipliers and 159 DP16KD against 90 and 159 after synth_ecp5, on the 2x2 SoC 34 and 9 against
31 and 9: block RAM exact, multipliers over by at most a few (Yosys narrows some control products).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from scalenet.errors import HardwareLimitError

from .targets import Device

__all__ = ["ResourceError", "Estimate", "estimate_rtlil", "check_fit", "MemoryUse", "MulUse", "DATAPATH_MODULES"]

DATAPATH_MODULES = ("array", "rq.pipeline", "add")
"""Modules whose multipliers are per-element datapath (PE array, requantisers, the add engine's rescale);
the others compute addresses and sizes once per layer and may go to LUTs when DSPs run short."""


class ResourceError(HardwareLimitError):
    """A configuration that cannot fit the board's device; the message gives the estimate and the limit."""


@dataclass(frozen=True)
class MulUse:
    module: str
    src: str
    a_width: int
    b_width: int
    dsps: int


@dataclass(frozen=True)
class MemoryUse:
    module: str
    name: str
    width: int
    depth: int
    read_ports: int
    sync: bool
    brams: int


@dataclass
class Estimate:
    family: str
    muls: list = field(default_factory=list)
    memories: list = field(default_factory=list)

    @property
    def dsps(self) -> int:
        return sum(m.dsps for m in self.muls)

    @property
    def brams(self) -> int:
        return sum(m.brams for m in self.memories)

    @property
    def memory_bits(self) -> int:
        return sum(m.width * m.depth for m in self.memories if m.sync)

    def dsp_breakdown(self) -> dict:
        """Multipliers per module (short names: ``conv.array``, ``conv.rq.pipeline`` ...)."""
        out = {}
        for m in self.muls:
            out[m.module] = out.get(m.module, 0) + m.dsps
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def bram_breakdown(self) -> dict:
        return {f"{m.module}.{m.name}" if m.module else m.name: m.brams
                for m in sorted(self.memories, key=lambda m: -m.brams) if m.brams}

    def modules_named(self, *short) -> list:
        """Modules with multipliers whose name is, or ends in, one of ``short`` (e.g. ``"array"``)."""
        return sorted({m.module for m in self.muls if any(m.module == s or m.module.endswith("." + s) for s in short)})

    def control_modules(self) -> list:
        """Modules with multipliers outside :data:`DATAPATH_MODULES`."""
        return sorted({m.module for m in self.muls} - set(self.modules_named(*DATAPATH_MODULES)))

    def with_soft_multipliers(self, modules) -> "Estimate":
        """The estimate after the multipliers of ``modules`` are mapped to LUTs."""
        muls = [MulUse(m.module, m.src, m.a_width, m.b_width, 0) if m.module in modules else m for m in self.muls]
        return Estimate(self.family, muls, list(self.memories))

    def as_dict(self) -> dict:
        return {"dsps": self.dsps, "brams": self.brams, "dsp_breakdown": self.dsp_breakdown(),
                "bram_breakdown": self.bram_breakdown()}


# Block RAM aspect ratios (depth, data bits used per block). ECP5 DP16KD/PDPW16KD: the 9th bit of a
# byte is parity that Yosys leaves unused unless the width is a multiple of 9. 7-series RAMB18E1 the same.
_BRAM_MODES = {
    "ecp5": ((16384, 1), (8192, 2), (4096, 4), (2048, 8), (1024, 16), (512, 32)),
    "xc7": ((16384, 1), (8192, 2), (4096, 4), (2048, 8), (1024, 16), (512, 32)),
}
# Multiplier operand limits (signed bits): ECP5 MULT18X18D 18x18, 7-series DSP48E1 25x18.
_DSP_WIDTHS = {"ecp5": (18, 18), "xc7": (25, 18)}

_MODULE = re.compile(r"^module \\?(\S+)$", re.M)
_CELL = re.compile(r"^  cell (\$mul|\$memrd_v2|\$memrd) (\S+)\n((?:    .*\n)*?)  end$", re.M)
_MEMORY = re.compile(r"^  memory (.*?)\\?(\S+)$", re.M)
_CONST = re.compile(r"^\d+'[01xz]+$")


def _parts(width, signed, limit):
    """Operand parts mul2dsp makes: one if it fits, else 17-bit unsigned parts and a signed top part."""
    if width <= limit:
        return 1
    return 1 + math.ceil((width - limit) / (limit - 1))


def _mul_dsps(a_width, b_width, a_signed, b_signed, family):
    la, lb = _DSP_WIDTHS[family]
    # mul2dsp swaps the operands so the wider one goes to the wider port.
    a, b = max(a_width, b_width), min(a_width, b_width)
    return _parts(a, a_signed, la) * _parts(b, b_signed, lb)


def _blocks(width, depth, family):
    return min(math.ceil(width / w) * math.ceil(depth / d) for d, w in _BRAM_MODES[family])


_BRAM_COST = 128          # memory_libmap costs (share/lattice/brams_16kd.txt, lutrams_trellis.txt)


def _lutram_cost(width, depth, reads, family):
    """Cost memory_libmap gives distributed RAM: ECP5 TRELLIS_DPR16X4 (16x4, cost 4) per read port;
    7-series RAM64X1D-class cells (64x1, about 2 per LUT pair): modelled at the same cost per bit."""
    if family == "ecp5":
        return 4 * math.ceil(depth / 16) * math.ceil(width / 4) * max(1, reads)
    return 4 * math.ceil(depth / 64) * width * max(1, reads)


def _short(module, top):
    return module[len(top) + 1:] if module.startswith(top + ".") else ("" if module == top else module)


def estimate_rtlil(text: str, family: str = "ecp5") -> Estimate:
    """Count multipliers and block RAMs in RTLIL ``text`` (as ``amaranth.back.rtlil.convert`` emits it)."""
    if family not in _DSP_WIDTHS:
        raise ValueError(f"unknown FPGA family {family!r}")
    est = Estimate(family)
    modules = [(m.start(), m.group(1)) for m in _MODULE.finditer(text)]
    if not modules:
        raise ValueError("not RTLIL: no module found")
    top = min((name for _, name in modules), key=len)
    bounds = [start for start, _ in modules] + [len(text)]
    for (start, name), end in zip(modules, bounds[1:]):
        body = text[start:end]
        short = _short(name, top)
        mems = {}
        for mm in _MEMORY.finditer(body):
            attrs = dict(re.findall(r"(\w+) (\d+)", mm.group(1)))
            mems[mm.group(2)] = [int(attrs.get("width", 1)), int(attrs.get("size", 1)), 0, True]
        for cm in _CELL.finditer(body):
            kind, cbody = cm.group(1), cm.group(3)
            params = dict(re.findall(r"parameter \\(\w+) (\S+)", cbody))
            if kind == "$mul":
                conns = dict(re.findall(r"connect \\(\w+) (.*)", cbody))
                if _CONST.match(conns.get("A", "")) or _CONST.match(conns.get("B", "")):
                    continue              # a constant factor: shifts and adds, no multiplier
                aw, bw = int(params["A_WIDTH"]), int(params["B_WIDTH"])
                src = re.search(r'\\src "([^"]*)"', body[max(0, cm.start() - 200):cm.start()])
                est.muls.append(MulUse(short, src.group(1).split("/")[-1] if src else "", aw, bw,
                                       _mul_dsps(aw, bw, params["A_SIGNED"] == "1",
                                                 params["B_SIGNED"] == "1", family)))
            else:
                memid = params.get("MEMID", "").strip('"').lstrip("\\")
                if memid in mems:
                    mems[memid][2] += 1
                    if params.get("CLK_ENABLE", "1") == "0":
                        mems[memid][3] = False      # an asynchronous read: LUT RAM, not block RAM
        for mname, (w, d, reads, sync) in mems.items():
            brams = _blocks(w, d, family) * max(1, reads) if sync and reads else 0
            if brams and _lutram_cost(w, d, reads, family) < _BRAM_COST * brams:
                brams = 0                 # memory_libmap picks the cheaper distributed RAM
            est.memories.append(MemoryUse(short, mname, w, d, reads, sync, brams))
    return est


def check_fit(est: Estimate, device: Device, *, what: str = "this configuration") -> None:
    """Raise :class:`ResourceError` when the estimate exceeds the device's multipliers or block RAMs."""
    problems = []
    dsp_name = "MULT18X18D" if device.family == "ecp5" else "DSP48E1"
    bram_name = "DP16KD" if device.family == "ecp5" else "RAMB18"
    if est.dsps > device.dsps:
        parts = ", ".join(f"{k or 'top'} {v}" for k, v in list(est.dsp_breakdown().items())[:4])
        problems.append(f"{est.dsps} {dsp_name} multipliers needed ({parts}), the {device.part} has "
                        f"{device.dsps}")
    if est.brams > device.brams:
        parts = ", ".join(f"{k} {v}" for k, v in list(est.bram_breakdown().items())[:4])
        problems.append(f"{est.brams} {bram_name} block RAMs needed ({parts}), the {device.part} has "
                        f"{device.brams}")
    if problems:
        raise ResourceError(f"{what} does not fit: " + "; ".join(problems))
