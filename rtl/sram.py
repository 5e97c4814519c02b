"""On-chip memory behind an AXI4 slave, for boards without DRAM.

One :class:`~amaranth.lib.memory.Memory` of bus-wide words with a synchronous read port and a write
port with byte enables, so it maps to block RAM (DP16KD on ECP5) rather than LUTs. Reads and writes are
independent (one burst of each in progress); INCR bursts of any length stream one beat per cycle.
A burst touching addresses beyond the memory is answered DECERR (reads return zeros, writes are dropped).
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In

from . import axi

__all__ = ["AxiSram"]


class AxiSram(wiring.Component):
    """``mem_bytes`` of block RAM on an AXI4 slave port ``bus`` (``In(axi.Signature(...))``)."""

    def __init__(self, mem_bytes, *, data_bytes=8, addr_width=32, id_width=0):
        if data_bytes not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"data_bytes must be a power of two up to 32, not {data_bytes!r}")
        if mem_bytes < data_bytes or mem_bytes % data_bytes:
            raise ValueError(f"mem_bytes ({mem_bytes}) must be a positive multiple of the bus width ({data_bytes})")
        self.mem_bytes, self.data_bytes = mem_bytes, data_bytes
        super().__init__({"bus": In(axi.Signature(addr_width=addr_width, data_width=8 * data_bytes,
                                                  id_width=id_width))})

    def elaborate(self, platform):
        m = Module()
        nb = self.data_bytes
        log2 = nb.bit_length() - 1
        depth = self.mem_bytes // nb
        bus = self.bus
        has_id = bus.signature.id_width > 0
        m.submodules.mem = mem = Memory(shape=8 * nb, depth=depth, init=[])
        rp = mem.read_port()
        wp = mem.write_port(granularity=8)

        def beyond(addr, length):
            first = addr[log2:]
            return first + length >= depth       # length is beats - 1

        # ---- reads ----------------------------------------------------------------------------------
        raddr = Signal(len(bus.ar.addr))
        left = Signal(9)
        rv, rlast, rerr = Signal(), Signal(), Signal()
        advance = Signal()
        m.d.comb += [
            advance.eq(~rv | bus.r.ready),
            rp.addr.eq(raddr), rp.en.eq(advance),
            bus.r.valid.eq(rv), bus.r.last.eq(rlast),
            bus.r.data.eq(Mux(rerr, 0, rp.data)),
            bus.r.resp.eq(Mux(rerr, axi.Resp.DECERR, axi.Resp.OKAY)),
        ]
        rid = Signal(max(1, bus.signature.id_width))
        if has_id:
            m.d.comb += bus.r.id.eq(rid)
        with m.FSM(name="read"):
            with m.State("IDLE"):
                m.d.comb += bus.ar.ready.eq(1)
                with m.If(bus.ar.valid):
                    m.d.sync += [raddr.eq(bus.ar.addr[log2:]), left.eq(bus.ar.len + 1),
                                 rerr.eq(beyond(bus.ar.addr, bus.ar.len))]
                    if has_id:
                        m.d.sync += rid.eq(bus.ar.id)
                    m.next = "BEATS"
            with m.State("BEATS"):
                with m.If(advance):
                    with m.If(left != 0):
                        m.d.sync += [rv.eq(1), rlast.eq(left == 1), raddr.eq(raddr + 1), left.eq(left - 1)]
                    with m.Else():
                        m.d.sync += [rv.eq(0), rlast.eq(0)]
                        m.next = "IDLE"

        # ---- writes ---------------------------------------------------------------------------------
        waddr = Signal(len(bus.aw.addr))
        werr = Signal()
        wid = Signal(max(1, bus.signature.id_width))
        m.d.comb += [wp.addr.eq(waddr), wp.data.eq(bus.w.data),
                     bus.b.resp.eq(Mux(werr, axi.Resp.DECERR, axi.Resp.OKAY))]
        if has_id:
            m.d.comb += bus.b.id.eq(wid)
        with m.FSM(name="write"):
            with m.State("IDLE"):
                m.d.comb += bus.aw.ready.eq(1)
                with m.If(bus.aw.valid):
                    m.d.sync += [waddr.eq(bus.aw.addr[log2:]), werr.eq(beyond(bus.aw.addr, bus.aw.len))]
                    if has_id:
                        m.d.sync += wid.eq(bus.aw.id)
                    m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += bus.w.ready.eq(1)
                with m.If(bus.w.valid):
                    m.d.comb += wp.en.eq(Mux(werr, 0, bus.w.strb))
                    m.d.sync += waddr.eq(waddr + 1)
                    with m.If(bus.w.last):
                        m.next = "RESP"
            with m.State("RESP"):
                m.d.comb += bus.b.valid.eq(1)
                with m.If(bus.b.ready):
                    m.next = "IDLE"
        return m
