"""A memory deeper than one block RAM, read through a register per block.

Why: a memory deeper than one block (16384 x 1 bits, DP16KD's deepest shape) is several blocks in depth
with a multiplexer behind them. Block-RAM clock-to-out is 5.8 ns in nextpnr's ECP5 timing model and the
blocks of a large memory spread over the die, so clock-to-out, a route across the die and the depth
multiplexer in one cycle does not fit 10 ns. Here every bank's output is registered first and the bank
is selected one cycle later, so the only path out of a block is a route to its own register.

Read latency is two enabled cycles: ``r_addr`` presented with ``r_en`` in one enabled cycle appears on
``r_data`` after the second enabled cycle; with ``r_en`` low everything holds, so a stalling pipeline
reads through it with one enable. With ``read_latency=3`` every bank's output passes a second register
before the bank multiplexer, so the first feeds nothing but the second (the pool line buffer's bank
registers ended 10.0-11.7 ns after the clock in 8 of 12 routes of the whole 8x8 design). Measured, that
did not shorten the route into the first register: the placer still leaves blocks at the die's edge and
their registers near the logic (10.24-11.33 ns in 6 of the 11 routes since; docs/boards.md, ninth round).
Writes are single-cycle, with one enable per ``granularity`` bits. A read in the cycle of a write to the
same address is undefined in hardware (the old word in simulation): synthesis is told so
(:mod:`.collisions`), so no collision logic sits behind the blocks; every user either never reads an
address while writing it or discards that word.

With ``registered_write=True`` a write reaches the blocks one cycle later, from registers (the address,
the data and each bank's decoded enables): the write enables of a deep memory fan out to blocks far apart
(routes of 3-6 ns), so the bank decode and whatever computes the address must not share a cycle with
that route (the pool line buffer's write enables were 11.4 ns in the whole 8x8 design). A word is then
readable from the second cycle after its write is presented; the user must not read it earlier.
"""

from amaranth.hdl import Array, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .collisions import UNDEFINED_COLLISIONS

__all__ = ["BankedMemory", "BANK_DEPTH"]

BANK_DEPTH = 16384
"""Entries per bank: the deepest block-RAM shape (ECP5 DP16KD and 7-series RAMB18 in their 1-bit mode)."""


class BankedMemory(wiring.Component):
    """``depth`` entries of ``width`` bits in banks of at most ``bank_depth`` entries.

    Members
    -------
    w_addr, w_data : In
        Write port.
    w_en : In(width // granularity)
        One write enable per ``granularity`` bits (all of ``width`` by default).
    r_addr, r_en : In
        Read address and the pipeline enable (the read and both register stages advance with it).
    r_data : Out(width)
        The entry read ``read_latency`` (2 or 3) enabled cycles before.

    ``registered_write``: the write port is registered in front of the blocks; ``read_latency=3``: a
    second register per bank (see the module docstring for both).
    """

    def __init__(self, width, depth, bank_depth=BANK_DEPTH, *, granularity=None, registered_write=False,
                 read_latency=2):
        if depth < 1 or bank_depth < 1 or bank_depth & (bank_depth - 1):
            raise ValueError(f"depth must be positive and bank_depth a power of two, not {depth}, {bank_depth}")
        if read_latency not in (2, 3):
            raise ValueError(f"read_latency must be 2 or 3, not {read_latency!r}")
        granularity = width if granularity is None else granularity
        if granularity < 1 or width % granularity:
            raise ValueError(f"granularity ({granularity}) must divide the width ({width})")
        self.width, self.depth, self.granularity = width, depth, granularity
        self.registered_write, self.read_latency = registered_write, read_latency
        self.bank_depth = min(bank_depth, 1 << ceil_log2(max(depth, 2)))
        self.banks = -(-depth // self.bank_depth)
        aw = ceil_log2(max(depth, 2))
        super().__init__({
            "w_addr": In(aw), "w_data": In(width), "w_en": In(width // granularity),
            "r_addr": In(aw), "r_en": In(1), "r_data": Out(width),
        })

    def elaborate(self, platform):
        m = Module()
        lo = ceil_log2(self.bank_depth)
        outs = []
        w_addr, w_data = self.w_addr, self.w_data
        if self.registered_write:
            w_addr, w_data = Signal.like(self.w_addr, name="w_addr_q"), Signal.like(self.w_data, name="w_data_q")
            m.d.sync += [w_addr.eq(self.w_addr), w_data.eq(self.w_data)]
        for b in range(self.banks):
            mem = memory.Memory(shape=self.width, depth=min(self.bank_depth, self.depth - b * self.bank_depth),
                                init=[], attrs=UNDEFINED_COLLISIONS)
            m.submodules[f"bank{b}"] = mem
            wp = mem.write_port(granularity=self.granularity if self.granularity < self.width else None)
            rp = mem.read_port()
            q = Signal(self.width, name=f"q{b}")
            w_en = Mux(self.w_addr[lo:] == b, self.w_en, 0) if self.banks > 1 else self.w_en
            if self.registered_write:           # decoded before the register: nothing between it and WE
                w_en_q = Signal.like(self.w_en, name=f"w_en{b}_q")
                m.d.sync += w_en_q.eq(w_en)
                w_en = w_en_q
            m.d.comb += [wp.addr.eq(w_addr[:lo]), wp.data.eq(w_data), wp.en.eq(w_en),
                         rp.addr.eq(self.r_addr[:lo]), rp.en.eq(self.r_en)]
            with m.If(self.r_en):
                m.d.sync += q.eq(rp.data)
            if self.read_latency == 3:
                q2 = Signal(self.width, name=f"q{b}_2")
                with m.If(self.r_en):
                    m.d.sync += q2.eq(q)
                q = q2
            outs.append(q)
        if self.banks == 1:
            m.d.comb += self.r_data.eq(outs[0])
            return m
        # The bank of each read in flight, one register per stage; the last selects.
        sel = [Signal(range(self.banks), name=f"sel{i + 1}") for i in range(self.read_latency)]
        with m.If(self.r_en):
            m.d.sync += [sel[0].eq(self.r_addr[lo:]), *(b.eq(a) for a, b in zip(sel, sel[1:]))]
        m.d.comb += self.r_data.eq(Array(outs)[sel[-1]])
        return m
