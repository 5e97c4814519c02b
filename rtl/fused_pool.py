"""Fused max pooling: a conv's requantised output bytes in, the max-pooled tensor out, in one stream.

Why it exists: a Conv followed by a 2x2/2 or 3x3/2 MaxPool would otherwise write the full conv output to
memory and read it back through the pool engine; fused, the conv tensor never leaves the chip and the DMA
writes a quarter of the bytes (descriptor field ``pool_after``, docs/architecture.md).

Semantics are those of :func:`scalenet.kernels.max_pool` with stride 2, no padding, floor or ceil mode
(``pool_ceil``: a last window may overhang the conv output and then takes the max of what exists). The
max of int8/uint8 bytes is exact, and the requantiser's clamp (ReLU) before it commutes with the max.

How: the pool is separable, so two identical :class:`AxisPool` stages run back to back, each one byte per
cycle with a read-modify-write of a running-max memory (synchronous read, transparent for the write):

- horizontal: lines are pixels (``channels`` bytes), windows over the conv columns, the memory holds one
  running max per channel (``max_channels`` bytes);
- vertical: lines are horizontally pooled rows (``pooled_width * channels`` bytes), windows over the conv
  rows, the memory is the row buffer of running maxima (:attr:`AcceleratorConfig.pool_row_bytes` bytes,
  block RAM; the compiler and the sequencer refuse a pooled row that does not fit).

A line ``n`` of a group of ``N`` lines belongs to windows ``w`` with ``2w <= n <= 2w + k - 1`` and
``w < P`` (``P`` pooled lines). Each byte either starts a window (store it), continues one (store the max),
closes one (emit the max) or, for k = 3 on an even line, closes window ``w - 1`` and starts ``w`` with one
read and one write of the same entry. At most one byte leaves per byte in, in raster HWC order.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .engine_ports import check_config

__all__ = ["PoolShape", "AxisPool", "FusedMaxPool"]


class PoolShape(data.StructLayout):
    """What one fused pool run needs from the descriptor.

    Members
    -------
    kernel3 : unsigned(1)
        3x3/2 windows (else 2x2/2).
    ceil : unsigned(1)
        Ceil mode: keep a last window that overhangs the conv output.
    signed : unsigned(1)
        The bytes are int8 (else uint8).
    channels, width, height : unsigned(16)
        The conv output's geometry.
    """

    def __init__(self):
        super().__init__({"kernel3": 1, "ceil": 1, "signed": 1,
                          "channels": 16, "width": 16, "height": 16})


class AxisPool(wiring.Component):
    """Max pooling with stride 2 along one axis of a byte stream of lines.

    The stream is ``groups`` groups of ``lines`` lines of ``inner * outer`` bytes; entry ``e`` of a line
    is pooled with entry ``e`` of the neighbouring lines of its windows. ``start`` (a pulse, parameters
    valid) begins a run; the parameters must stay stable while ``busy``.

    Members
    -------
    start : In(1)
    kernel3, signed : In(1)
    inner, outer : In(16)
        Bytes per line = ``inner * outer`` (counted, never multiplied).
    lines, pooled, groups : In(16)
        Lines per group ``N``, pooled lines per group ``P``, and groups per run.
    busy : Out(1)
    i : In(stream.Signature(8))
    o : Out(stream.Signature(8))
    """

    def __init__(self, depth):
        self._depth = depth
        super().__init__({
            "start": In(1), "kernel3": In(1), "signed": In(1),
            "inner": In(16), "outer": In(16), "lines": In(16), "pooled": In(16), "groups": In(16),
            "busy": Out(1),
            "i": In(stream.Signature(8)),
            "o": Out(stream.Signature(8)),
        })

    @property
    def depth(self):
        return self._depth

    def elaborate(self, platform):
        m = Module()
        aw = ceil_log2(max(self._depth, 2))
        m.submodules.mem = mem = Memory(shape=8, depth=self._depth, init=[])
        wr = mem.write_port()
        rd = mem.read_port(transparent_for=(wr,))

        active = Signal()
        g = Signal(16)            # group
        n = Signal(16)            # line within the group
        ci = Signal(16)           # inner counter
        co = Signal(16)           # outer counter
        addr = Signal(aw)         # entry within the line

        # What this line's bytes do (depends on the line only).
        q = n >> 1
        even = ~n[0]
        last = n + 1 == self.lines
        in_win = q < self.pooled
        close, close_mem, store, store_mem = Signal(), Signal(), Signal(), Signal()
        with m.If(self.kernel3):
            m.d.comb += [
                close.eq((even & (n != 0) & (q <= self.pooled)) | (~even & in_win & last)),
                close_mem.eq(1),
                store.eq(in_win & (even | ~last)),
                store_mem.eq(~even),
            ]
        with m.Else():
            m.d.comb += [
                close.eq(in_win & (~even | last)),
                close_mem.eq(~even),
                store.eq(in_win & even & ~last),
                store_mem.eq(0),
            ]

        # Stage 1: the accepted byte and its flags, while its memory entry is read.
        s1 = Signal(data.StructLayout({"valid": 1, "v": 8, "close": 1, "close_mem": 1, "store": 1,
                                       "store_mem": 1, "addr": aw}))
        o_valid, o_data = Signal(), Signal(8)
        adv = Signal()
        m.d.comb += [adv.eq(~o_valid | self.o.ready), self.o.valid.eq(o_valid), self.o.payload.eq(o_data)]
        m.d.comb += [rd.addr.eq(addr), rd.en.eq(adv)]
        m.d.comb += self.busy.eq(active | s1.valid | o_valid)

        take = Signal()
        m.d.comb += [self.i.ready.eq(adv & active), take.eq(self.i.valid & self.i.ready)]
        with m.If(adv):
            m.d.sync += [s1.valid.eq(take), s1.v.eq(self.i.payload), s1.close.eq(close),
                         s1.close_mem.eq(close_mem), s1.store.eq(store), s1.store_mem.eq(store_mem),
                         s1.addr.eq(addr)]

        with m.If(self.start):
            m.d.sync += [active.eq(1), g.eq(0), n.eq(0), ci.eq(0), co.eq(0), addr.eq(0)]
        with m.Elif(take):
            m.d.sync += [ci.eq(ci + 1), addr.eq(addr + 1)]
            with m.If(ci + 1 == self.inner):
                m.d.sync += [ci.eq(0), co.eq(co + 1)]
                with m.If(co + 1 == self.outer):
                    m.d.sync += [co.eq(0), addr.eq(0), n.eq(n + 1)]
                    with m.If(last):
                        m.d.sync += [n.eq(0), g.eq(g + 1)]
                        with m.If(g + 1 == self.groups):
                            m.d.sync += active.eq(0)

        # Stage 2: combine with the stored running max; emit and/or write back.
        flip = Cat(Const(0, 7), self.signed)         # order int8 as unsigned by flipping the MSB
        mx = Signal(8)
        m.d.comb += mx.eq(Mux((rd.data ^ flip) > (s1.v ^ flip), rd.data, s1.v))
        m.d.comb += [wr.addr.eq(s1.addr), wr.data.eq(Mux(s1.store_mem, mx, s1.v)),
                     wr.en.eq(adv & s1.valid & s1.store)]
        with m.If(adv):
            m.d.sync += [o_valid.eq(s1.valid & s1.close), o_data.eq(Mux(s1.close_mem, mx, s1.v))]
        return m


class FusedMaxPool(wiring.Component):
    """Max pool 2x2/2 or 3x3/2 (floor or ceil mode) of a conv's raster HWC output bytes.

    Members
    -------
    shape : In(PoolShape())
        Stable from ``start`` until not ``busy``.
    start : In(1)
    busy : Out(1)
        From ``start`` until every input byte is consumed and every output byte taken.
    out_width, out_height : Out(16)
        The pooled geometry of ``shape`` (combinational), for the output region.
    i : In(stream.Signature(8))
        ``height * width * channels`` bytes.
    o : Out(stream.Signature(8))
        ``out_height * out_width * channels`` bytes.
    """

    def __init__(self, config=None):
        self._cfg = check_config(config)
        super().__init__({
            "shape": In(PoolShape()), "start": In(1), "busy": Out(1),
            "out_width": Out(16), "out_height": Out(16),
            "i": In(stream.Signature(8)), "o": Out(stream.Signature(8)),
        })

    @property
    def row_bytes(self):
        """Capacity of the vertical stage's row buffer (bytes of one pooled row)."""
        return self._cfg.pool_row_bytes

    def elaborate(self, platform):
        m = Module()
        s = self.shape
        m.submodules.h = h = AxisPool(self._cfg.max_channels)
        m.submodules.v = v = AxisPool(self.row_bytes)

        k = Mux(s.kernel3, 3, 2)
        for dst, size in ((self.out_width, s.width), (self.out_height, s.height)):
            m.d.comb += dst.eq(((size - k + s.ceil) >> 1) + 1)

        for stage in (h, v):
            m.d.comb += [stage.start.eq(self.start), stage.kernel3.eq(s.kernel3),
                         stage.signed.eq(s.signed), stage.inner.eq(s.channels)]
        m.d.comb += [
            h.outer.eq(1), h.lines.eq(s.width), h.pooled.eq(self.out_width), h.groups.eq(s.height),
            v.outer.eq(self.out_width), v.lines.eq(s.height), v.pooled.eq(self.out_height), v.groups.eq(1),
            self.busy.eq(h.busy | v.busy),
        ]
        wiring.connect(m, wiring.flipped(self.i), h.i)
        wiring.connect(m, h.o, v.i)
        wiring.connect(m, v.o, wiring.flipped(self.o))
        return m
