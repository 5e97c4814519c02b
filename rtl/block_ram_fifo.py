"""A synchronous FIFO whose storage is one block RAM read straight into a register.

Why not Amaranth's ``SyncFIFOBuffered``: its block RAM's output is the FIFO's ``r_data``, so the consumer's
logic sits behind a 5.8 ns block-RAM clock-to-out (nextpnr's ECP5 model), and its memory is not marked
:data:`~.collisions.UNDEFINED_COLLISIONS`, so Yosys adds a collision multiplexer behind every output bit.
As the add engine's first-input FIFO it was the whole 8x8 design's critical path (75.6 MHz).

Here the block's output only loads a register (``hold``), which only loads another (``hold2``: so the
first can sit beside the block -- with the queue's LUT RAM behind it, that route was 4.3-5.0 ns in 2 of 7
builds of the 8x8 SoC); entries then pass through a small LUT-RAM FIFO whose ``r_data`` the consumer
sees. Reads are issued against credits for that queue (:class:`~.credit_queue.CreditQueue`: the
consumer's ``r_en`` only pops it), so nothing in flight ever waits. Same-address collisions cannot be
used: a read is issued only for an entry written in an earlier cycle, and the writer never reaches an
unread entry.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .collisions import UNDEFINED_COLLISIONS
from .credit_queue import CreditQueue

__all__ = ["BlockRamFIFO"]

OUT_QUEUE = 5
"""Output queue entries: the issue-to-pop round trip (block, ``hold``, queue, credit back) for one entry
per cycle. It reads combinationally, so it is LUT RAM, never a block."""


class BlockRamFIFO(wiring.Component):
    """``depth`` entries of ``width`` bits; the ports of :class:`amaranth.lib.fifo.SyncFIFO`
    (``w_data``/``w_en``/``w_rdy``, ``r_data``/``r_en``/``r_rdy``), ``level`` counting every entry held."""

    def __init__(self, *, width, depth):
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive integer, not {width!r}")
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive integer, not {depth!r}")
        self.width, self.depth = width, depth
        super().__init__({
            "w_data": In(width), "w_en": In(1), "w_rdy": Out(1),
            "r_data": Out(width), "r_en": In(1), "r_rdy": Out(1),
            "level": Out(range(depth + OUT_QUEUE + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        depth = self.depth
        m.submodules.storage = storage = Memory(shape=self.width, depth=depth, init=[],
                                                attrs=UNDEFINED_COLLISIONS)
        wr = storage.write_port()
        rd = storage.read_port()
        m.submodules.queue = queue = CreditQueue(width=self.width, depth=OUT_QUEUE)

        w_ptr, r_ptr = Signal(range(depth)), Signal(range(depth))
        stored = Signal(range(depth + 1))              # in the block, not yet issued
        write, issue = Signal(), Signal()
        p1, p2, p3 = Signal(), Signal(), Signal()      # an issued read: on rd.data, in hold, in hold2
        hold, hold2 = Signal(self.width), Signal(self.width)

        def advance(ptr):
            return ptr.eq(0) if depth == 1 else ptr.eq(Mux(ptr == depth - 1, 0, ptr + 1))

        m.d.comb += [
            self.w_rdy.eq((stored != depth) | issue), write.eq(self.w_en & self.w_rdy),
            wr.addr.eq(w_ptr), wr.data.eq(self.w_data), wr.en.eq(write),
            issue.eq((stored != 0) & queue.ok), queue.issue.eq(issue),
            rd.addr.eq(r_ptr), rd.en.eq(issue),
            queue.w_data.eq(hold2), queue.w_en.eq(p3),
            self.r_data.eq(queue.out.payload), self.r_rdy.eq(queue.out.valid), queue.out.ready.eq(self.r_en),
            self.level.eq(stored + queue.owed),
        ]
        m.d.sync += [stored.eq(stored + write - issue), p1.eq(issue), p2.eq(p1), p3.eq(p2)]
        with m.If(p1):
            m.d.sync += hold.eq(rd.data)
        with m.If(p2):
            m.d.sync += hold2.eq(hold)
        with m.If(write):
            m.d.sync += advance(w_ptr)
        with m.If(issue):
            m.d.sync += advance(r_ptr)
        return m
