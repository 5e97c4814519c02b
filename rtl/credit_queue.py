"""The output queue of a pipeline that never stalls: items are issued against credits.

Why: a pipeline that stalls on its consumer's ``ready`` drives one enable, ``~valid | ready``, into
every register it has and into the clock enables of its block RAMs, which lie far apart on the die:
the consumer's handshake, a LUT and a route across the chip in one cycle. In the whole 8x8 SoC the pool
engine's enable was that path (12.56 ns, 10.4 ns of it route). Here the pipeline's registers and blocks
advance every cycle; its first stage issues an item only while the queue at its end has room for every
item issued and not yet popped (``ok``, a register), and the item arrives any number of cycles later
(``w_en``). The queue is LUT RAM (:class:`amaranth.lib.fifo.SyncFIFO`), never a block.

For full rate with an always-ready consumer, ``depth`` must exceed the issue-to-push latency by about 3
(the queue's own cycle and the credit's way back to ``ok``); a smaller depth is correct, only slower.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

__all__ = ["CreditQueue"]


class CreditQueue(wiring.Component):
    """``depth`` items of ``width`` bits.

    Members
    -------
    ok : Out(1)
        Registered: an item may be issued this cycle (fewer than ``depth`` are owed).
    issue : In(1)
        An item is issued this cycle; only with ``ok``. Each issue must be followed by exactly one
        ``w_en``, in issue order.
    w_data, w_en : In
        An issued item arriving.
    out : Out(stream.Signature(width))
        The items, in order.
    owed : Out(range(depth + 1))
        Items issued and not yet popped (a register).
    idle : Out(1)
        Registered: nothing owed.
    """

    def __init__(self, *, width, depth):
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive integer, not {width!r}")
        if not isinstance(depth, int) or depth < 2:
            raise ValueError(f"depth must be an integer of at least 2, not {depth!r}")
        self.width, self.depth = width, depth
        super().__init__({
            "ok": Out(1, init=1), "issue": In(1), "w_data": In(width), "w_en": In(1),
            "out": Out(stream.Signature(width)), "owed": Out(range(depth + 1)), "idle": Out(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFO(width=self.width, depth=self.depth)
        owed = self.owed
        pop = Signal()
        m.d.comb += [
            fifo.w_data.eq(self.w_data), fifo.w_en.eq(self.w_en),
            self.out.payload.eq(fifo.r_data), self.out.valid.eq(fifo.r_rdy), fifo.r_en.eq(self.out.ready),
            pop.eq(fifo.r_rdy & self.out.ready),
        ]
        # ``issue`` (decided from ``ok`` by the pipeline's first stage) and ``pop`` (the consumer's ready
        # and the queue's level) come last: they only select among counts and compares made from the
        # register ``owed``, never feed a carry chain (ok -> issue logic -> adder -> compare -> ok was
        # 9.97 ns in the 8x8 SoC, the queue's level -> pop -> two adders -> owed 10.02 ns).
        with m.If(self.issue & ~pop):
            m.d.sync += [owed.eq(owed + 1), self.ok.eq(owed < self.depth - 1), self.idle.eq(0)]
        with m.Elif(pop & ~self.issue):
            m.d.sync += [owed.eq(owed - 1), self.ok.eq(1), self.idle.eq(owed == 1)]
        with m.Else():
            m.d.sync += [self.ok.eq(owed < self.depth), self.idle.eq(owed == 0)]
        return m
