"""On-chip memory behind an AXI4 slave, for boards without DRAM.

Bus-wide words in block RAM (DP16KD on ECP5) with byte-enabled writes, through :class:`~.banked_memory.
BankedMemory` so every block's output is registered before anything else sees it. Reads and writes are
independent (one burst of each in progress); INCR bursts of any length stream one beat per cycle.
A burst touching addresses beyond the memory is answered DECERR (reads return zeros, writes are dropped).

Timing (ECP5, >= 100 MHz): block-RAM clock-to-out is 5.8 ns in nextpnr's model and a 256 KiB SRAM spreads
over 128 blocks, so neither the bus's ``r.ready`` nor its ``w.data`` may reach the blocks combinationally.
Reads are issued at a fixed latency against credits for a small output FIFO (``r.ready`` only pops the
LUT-RAM FIFO, which drives the R channel); writes are registered once before the blocks.

"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In

from . import axi
from .banked_memory import BankedMemory
from .credit_queue import CreditQueue

__all__ = ["AxiSram"]

READ_QUEUE = 8
"""Output FIFO entries: at least the issue-to-pop round trip (4 cycles) for one beat per cycle. The FIFO
reads combinationally, so it is LUT RAM (a few LUTs from the R channel), never a block RAM."""


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
        idw = max(1, bus.signature.id_width)
        has_id = bus.signature.id_width > 0
        m.submodules.mem = mem = BankedMemory(8 * nb, depth, granularity=8)

        def beyond(first, length):
            return first + length >= depth       # first word, length is beats - 1

        # An address is checked a cycle after it is accepted (state CHECK), from registers: the add and
        # compare behind the arbiter's grant multiplexer were the tiny SoC's longest path (11.7 ns).

        # ---- reads ----------------------------------------------------------------------------------
        # issue -> (2 cycles: block, bank register + select) -> FIFO -> R channel. A beat is issued only
        # while fewer than READ_QUEUE beats are issued and not yet popped (:class:`~.credit_queue.
        # CreditQueue`), so the FIFO never overflows and nothing in flight ever waits.
        beat = data.StructLayout({"data": 8 * nb, "last": 1, "err": 1, "id": idw})
        m.submodules.rq = rq = CreditQueue(width=beat.size, depth=READ_QUEUE)
        raddr = Signal(len(bus.ar.addr))
        left_1 = Signal()                       # the burst's last beat is the next one issued
        left = Signal(9)
        rerr = Signal()
        rid = Signal(idw)
        issue = Signal()
        p1 = Signal(data.StructLayout({"valid": 1, "last": 1, "err": 1, "id": idw}))
        p2 = Signal.like(p1)
        m.d.sync += [p1.valid.eq(issue), p1.last.eq(left_1), p1.err.eq(rerr), p1.id.eq(rid), p2.eq(p1)]
        m.d.comb += [mem.r_addr.eq(raddr), mem.r_en.eq(1)]
        w_beat = Signal(beat)
        m.d.comb += [
            w_beat.data.eq(Mux(p2.err, 0, mem.r_data)), w_beat.last.eq(p2.last), w_beat.err.eq(p2.err),
            w_beat.id.eq(p2.id),
            rq.w_data.eq(w_beat), rq.w_en.eq(p2.valid),
        ]
        r_beat = Signal(beat)
        m.d.comb += [
            r_beat.eq(rq.out.payload), rq.out.ready.eq(bus.r.ready), rq.issue.eq(issue),
            bus.r.valid.eq(rq.out.valid), bus.r.data.eq(r_beat.data), bus.r.last.eq(r_beat.last),
            bus.r.resp.eq(Mux(r_beat.err, axi.Resp.DECERR, axi.Resp.OKAY)),
        ]
        if has_id:
            m.d.comb += bus.r.id.eq(r_beat.id)
        with m.FSM(name="read"):
            with m.State("IDLE"):
                m.d.comb += bus.ar.ready.eq(1)
                with m.If(bus.ar.valid):
                    m.d.sync += [raddr.eq(bus.ar.addr[log2:]), left.eq(bus.ar.len), left_1.eq(bus.ar.len == 0)]
                    if has_id:
                        m.d.sync += rid.eq(bus.ar.id)
                    m.next = "CHECK"
            with m.State("CHECK"):
                m.d.sync += rerr.eq(beyond(raddr, left))
                m.next = "BEATS"
            with m.State("BEATS"):
                m.d.comb += issue.eq(rq.ok)
                with m.If(issue):
                    m.d.sync += [raddr.eq(raddr + 1), left.eq(left - 1), left_1.eq(left == 1)]
                    with m.If(left_1):
                        m.next = "IDLE"

        # ---- writes ---------------------------------------------------------------------------------
        # Each accepted beat is written one cycle later from registers (the response follows the last
        # write, so a read issued after it sees the data).
        waddr = Signal(len(bus.aw.addr))
        werr = Signal()
        wlen = Signal(len(bus.aw.len))
        wid = Signal(idw)
        wq_addr, wq_data, wq_en = Signal(len(mem.w_addr)), Signal(8 * nb), Signal(nb)
        m.d.sync += wq_en.eq(0)
        m.d.comb += [mem.w_addr.eq(wq_addr), mem.w_data.eq(wq_data), mem.w_en.eq(wq_en),
                     bus.b.resp.eq(Mux(werr, axi.Resp.DECERR, axi.Resp.OKAY))]
        if has_id:
            m.d.comb += bus.b.id.eq(wid)
        with m.FSM(name="write"):
            with m.State("IDLE"):
                m.d.comb += bus.aw.ready.eq(1)
                with m.If(bus.aw.valid):
                    m.d.sync += [waddr.eq(bus.aw.addr[log2:]), wlen.eq(bus.aw.len)]
                    if has_id:
                        m.d.sync += wid.eq(bus.aw.id)
                    m.next = "CHECK"
            with m.State("CHECK"):
                m.d.sync += werr.eq(beyond(waddr, wlen))
                m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += bus.w.ready.eq(1)
                with m.If(bus.w.valid):
                    m.d.sync += [wq_addr.eq(waddr), wq_data.eq(bus.w.data),
                                 wq_en.eq(Mux(werr, 0, bus.w.strb)), waddr.eq(waddr + 1)]
                    with m.If(bus.w.last):
                        m.next = "RESP"
            with m.State("RESP"):
                m.d.comb += bus.b.valid.eq(1)
                with m.If(bus.b.ready):
                    m.next = "IDLE"
        return m
