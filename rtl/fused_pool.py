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

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .collisions import UNDEFINED_COLLISIONS
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

    Timing (ECP5, >= 100 MHz): every per-run quantity is registered at ``start`` and every counter
    compare is a registered "last" flag computed one byte ahead (down counters compared with constants),
    so no input port or counter feeds a carry chain into the flow control. The running-max memory is
    read one cycle ahead (its address is the next byte's, known before the byte arrives), so the
    block RAM's slow clock-to-out only reaches a register, and that register only feeds a second one
    (stage 1b) before any logic; it is written a cycle late from a register (so its data pins see no
    logic either), and the writes that read cannot see (those of the four cycles before the byte's
    stage 2) are forwarded. Latency and throughput are those of a plain 3-stage pipeline.

    Members
    -------
    start : In(1)
    kernel3, ceil, signed : In(1)
        3-wide windows (else 2), ceil mode (a last window may overhang the line count), int8 bytes.
    inner, outer : In(16)
        Bytes per line = ``inner * outer`` (counted, never multiplied).
    lines, groups : In(16)
        Lines per group ``N`` and groups per run; a group has ``P = (N - k + ceil) // 2 + 1`` windows.
    busy : Out(1)
    i : In(stream.Signature(8))
    o : Out(stream.Signature(8))
    """

    def __init__(self, depth):
        self._depth = depth
        super().__init__({
            "start": In(1), "kernel3": In(1), "ceil": In(1), "signed": In(1),
            "inner": In(16), "outer": In(16), "lines": In(16), "groups": In(16),
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
        # A word read while its address is written is never used: all four writes the reads cannot see
        # are forwarded (below), so synthesis may leave the collision undefined (:mod:`.collisions`).
        # Two banks, even and odd entries, each one write and one read port: the next byte's entry and
        # the one after it are consecutive, so one is even and the other odd -- except across a line's
        # end (the last entry, then entry 0), for which entry 0 also lives in the register ``e0``. Half the
        # block RAM of one memory read through two ports (Yosys duplicates such a memory per read port:
        # 16 blocks for the 8x8's 16384-entry row buffer, now 8).
        banks = []
        for name, depth in (("even", (self._depth + 1) // 2), ("odd", max(self._depth // 2, 1))):
            mem = Memory(shape=8, depth=depth, init=[], attrs=UNDEFINED_COLLISIONS)
            m.submodules[name] = mem
            banks.append((mem.write_port(), mem.read_port()))
        (wr_e, rd_e), (wr_o, rd_o) = banks
        e0 = Signal(8)                   # entry 0, written with the banks

        active = Signal()
        addr = Signal(aw)         # entry of the next byte within its line

        # Per-run values, registered at start (keeps the subtractions off every per-byte path).
        kc = Signal(2)                          # k - ceil: line n is in window n // 2 iff (n & ~1) + kc <= N
        m.d.comb += kc.eq(Mux(self.kernel3, 3, 2) - self.ceil)
        inner_m1, outer_m1, lines_m1 = Signal(16), Signal(16), Signal(16)
        inner_1, outer_1, lines_1, win0 = Signal(), Signal(), Signal(), Signal()
        thr = Signal(signed(18))                # odd line n: the next line is in a window iff n < N - kc

        # Down counters with "last" flags registered one byte ahead (compares with constants only).
        ci, co, nr, gr = Signal(16), Signal(16), Signal(16), Signal(16)
        ci_last, co_last, g_last = Signal(), Signal(), Signal()
        # The current line's state: n (its index), even, n != 0, last line of the group, q < P, q <= P.
        n = Signal(16)
        even, nz, last, in_win, q_le = Signal(), Signal(), Signal(), Signal(), Signal()

        # What this line's bytes do (depends on the line only).
        close, close_mem, store, store_mem = Signal(), Signal(), Signal(), Signal()
        with m.If(self.kernel3):
            m.d.comb += [
                close.eq((even & nz & q_le) | (~even & in_win & last)),
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

        # Stage 1: the accepted byte, its flags and the running max read for it the cycle before.
        # ``b``: the byte, its line's flags, its entry and what was read for it (carried on to stage 1b).
        byte = data.StructLayout({"valid": 1, "v": 8, "close": 1, "close_mem": 1, "store": 1, "store_mem": 1,
                                  "addr": aw, "de": 8, "do": 8, "e0": 8})
        s1 = Signal(data.StructLayout({"b": byte, "a0": 1, "w1hit": 1, "w1data": 8, "w2hit": 1, "w2data": 8,
                                       "hit": 1}))
        # Stage 1b: the same byte a cycle later. The block RAM's outputs only go register to register here
        # (s1 -> s1b), so each bit's first register can sit beside its block (the 16384-entry buffer's
        # blocks are 1 or 2 bits wide and spread over the die; with the compare behind s1 that route was
        # 4.0-5.4 ns in 6 of 7 builds of the 8x8 SoC). The three older forwarded writes are resolved into
        # one (fsel, fdata) on the way; the write stage 2 makes meanwhile is ``hit``.
        s1b = Signal(data.StructLayout({"b": byte, "sel_e0": 1, "sel_o": 1, "fsel": 1, "fdata": 8, "hit": 1}))
        fwd = Signal(8)                         # the running max written last cycle
        o_valid, o_data = Signal(), Signal(8)
        # A skid register behind the output: the pipeline advances on a register (skid empty), not on
        # o.ready -- the top level's ready (its descriptor decode) ran through adv into the counters'
        # resets, 9.9 ns in the whole 8x8 design. A byte stage 2 emits while o is stalled waits in the skid.
        sk_valid, sk_data = Signal(), Signal(8)
        adv = Signal()
        m.d.comb += [adv.eq(~sk_valid), self.o.valid.eq(o_valid), self.o.payload.eq(o_data)]
        m.d.comb += self.busy.eq(active | s1.b.valid | s1b.b.valid | o_valid | sk_valid)

        take = Signal()
        m.d.comb += [self.i.ready.eq(adv & active), take.eq(self.i.valid & self.i.ready)]
        line_end = Signal()
        m.d.comb += line_end.eq(ci_last & co_last)
        line_end_1 = Signal()                   # line_end once a byte is taken (the flags' next values)
        m.d.comb += line_end_1.eq(Mux(ci_last, inner_1, ci == 1)
                                  & Mux(ci_last, Mux(co_last, outer_1, co == 1), co_last))
        # The next byte's address (addr) and the one after it (addr1, 0 after a line's last byte) are both
        # registers and both are read every cycle: the byte's data is ready when it arrives whether or not
        # a byte arrived the cycle before, and no read address depends on ``take`` (yosys compares read and
        # write addresses for the collision rule, on the way into a register).
        addr1 = Signal(aw)
        with m.If(self.start):
            m.d.sync += [addr.eq(0), addr1.eq(Mux((self.inner == 1) & (self.outer == 1), 0, 1))]
        with m.Elif(take):
            m.d.sync += [addr.eq(addr1), addr1.eq(Mux(line_end_1, 0, addr1 + 1))]
        # Read the next byte's entry every cycle: its data is ready when the byte arrives. Both banks'
        # outputs (and e0) go straight into stage-1 registers (block-RAM clock-to-out is 5.8 ns in
        # nextpnr's ECP5 model and the blocks may sit far from the logic: a port select or forwarding mux
        # in front of the register was the whole 8x8 design's longest path), and on into stage 1b's; the
        # selects happen in stage 2. The writes that read cannot see are forwarded: stage 2's in the cycle
        # the byte arrives (``s1.hit``) and in the next (``s1b.hit``), and the two before it (w1, w2).
        # Not a transparent port: yosys would compare the late read address with the write address on the
        # way into a register.
        # The memory is written a cycle late, from the register w1: stage 2's forwarding select, compare
        # and max ran on into 3.4 ns of route to the block's data pins (10.4 ns in the whole 8x8 design).
        # That makes four writes the read cannot see: stage 2's two (``s1.hit``, ``s1b.hit``), w1's and
        # w2's (written at the edge of the read).
        wn = Signal(data.StructLayout({"en": 1, "addr": aw, "data": 8}))      # stage 2's write
        w1 = Signal.like(wn)
        w2 = Signal.like(wn)
        m.d.sync += [w1.eq(wn), w2.eq(w1)]
        m.d.comb += [wr_e.en.eq(w1.en & ~w1.addr[0]), wr_o.en.eq(w1.en & w1.addr[0])]
        for wr in (wr_e, wr_o):
            m.d.comb += [wr.addr.eq(w1.addr[1:]), wr.data.eq(w1.data)]
        with m.If(w1.en & (w1.addr == 0)):
            m.d.sync += e0.eq(w1.data)
        # The even bank reads whichever of addr, addr1 is even, the odd bank the odd one (addr1 = 0 after
        # an even last entry: the odd bank's word is then unused and e0 serves).
        m.d.comb += [rd_e.addr.eq(Mux(addr[0], addr1, addr)[1:]), rd_o.addr.eq(Mux(addr[0], addr, addr1)[1:]),
                     rd_e.en.eq(1), rd_o.en.eq(1)]
        with m.If(adv):
            m.d.sync += [s1.b.valid.eq(take), s1.b.v.eq(self.i.payload), s1.b.close.eq(close),
                         s1.b.close_mem.eq(close_mem), s1.b.store.eq(store), s1.b.store_mem.eq(store_mem),
                         s1.b.addr.eq(addr), s1.b.de.eq(rd_e.data), s1.b.do.eq(rd_o.data), s1.b.e0.eq(e0),
                         s1.a0.eq(addr == 0),
                         s1.w1hit.eq(w1.en & (w1.addr == addr)), s1.w1data.eq(w1.data),
                         s1.w2hit.eq(w2.en & (w2.addr == addr)), s1.w2data.eq(w2.data),
                         s1.hit.eq(wn.en & (wn.addr == addr))]
            # fwd holds stage 2's write of the cycle s1 was taken (s1.hit), the newest of the three.
            m.d.sync += [s1b.b.eq(s1.b),
                         # Where the byte's entry was read: entry 0 from e0 (the only place it can be
                         # read when it follows an even last entry), the others from their bank.
                         s1b.sel_e0.eq(s1.a0), s1b.sel_o.eq(s1.b.addr[0]),
                         s1b.fsel.eq(s1.hit | s1.w1hit | s1.w2hit),
                         s1b.fdata.eq(Mux(s1.hit, fwd, Mux(s1.w1hit, s1.w1data, s1.w2data))),
                         s1b.hit.eq(wn.en & (wn.addr == s1.b.addr))]

        def new_group():
            return [n.eq(0), even.eq(1), nz.eq(0), nr.eq(lines_m1), last.eq(lines_1), in_win.eq(win0),
                    q_le.eq(1)]

        with m.If(self.start):
            m.d.sync += [
                inner_m1.eq(self.inner - 1), outer_m1.eq(self.outer - 1), lines_m1.eq(self.lines - 1),
                inner_1.eq(self.inner == 1), outer_1.eq(self.outer == 1), lines_1.eq(self.lines == 1),
                win0.eq(kc <= self.lines), thr.eq(self.lines - kc),
                active.eq(1),
                ci.eq(self.inner - 1), ci_last.eq(self.inner == 1),
                co.eq(self.outer - 1), co_last.eq(self.outer == 1),
                gr.eq(self.groups - 1), g_last.eq(self.groups == 1),
                n.eq(0), even.eq(1), nz.eq(0), nr.eq(self.lines - 1), last.eq(self.lines == 1),
                in_win.eq(kc <= self.lines), q_le.eq(1),
            ]
        with m.Elif(take):
            m.d.sync += [ci.eq(ci - 1), ci_last.eq(ci == 1)]
            with m.If(ci_last):
                m.d.sync += [ci.eq(inner_m1), ci_last.eq(inner_1), co.eq(co - 1), co_last.eq(co == 1)]
                with m.If(co_last):
                    m.d.sync += [co.eq(outer_m1), co_last.eq(outer_1),
                                 n.eq(n + 1), even.eq(~even), nz.eq(1), nr.eq(nr - 1), last.eq(nr == 1)]
                    with m.If(~even):
                        m.d.sync += [in_win.eq(n < thr), q_le.eq(in_win)]
                    with m.If(last):
                        m.d.sync += [*new_group(), gr.eq(gr - 1), g_last.eq(gr == 1)]
                        with m.If(g_last):
                            m.d.sync += active.eq(0)

        # Stage 2: combine with the stored running max; emit and/or write back.
        flip = Cat(Const(0, 7), self.signed)         # order int8 as unsigned by flipping the MSB
        old = Signal(8)
        m.d.comb += old.eq(Mux(s1b.hit, fwd, Mux(s1b.fsel, s1b.fdata,
                                                 Mux(s1b.sel_e0, s1b.b.e0, Mux(s1b.sel_o, s1b.b.do, s1b.b.de)))))
        mx = Signal(8)
        m.d.comb += mx.eq(Mux((old ^ flip) > (s1b.b.v ^ flip), old, s1b.b.v))
        m.d.comb += [wn.addr.eq(s1b.b.addr), wn.data.eq(Mux(s1b.b.store_mem, mx, s1b.b.v)),
                     wn.en.eq(adv & s1b.b.valid & s1b.b.store)]
        emit, emit_data = Signal(), Signal(8)        # stage 2's output byte (only while adv)
        m.d.comb += [emit.eq(adv & s1b.b.valid & s1b.b.close), emit_data.eq(Mux(s1b.b.close_mem, mx, s1b.b.v))]
        with m.If(adv):
            m.d.sync += fwd.eq(wn.data)
        with m.If(~o_valid | self.o.ready):
            m.d.sync += [o_valid.eq(sk_valid | emit), o_data.eq(Mux(sk_valid, sk_data, emit_data)),
                         sk_valid.eq(0)]
        with m.Elif(emit):
            m.d.sync += [sk_valid.eq(1), sk_data.eq(emit_data)]
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
        The pooled geometry of ``shape``, **registered**: valid one cycle after ``shape`` changes (so the
        carry chains computing them stay off the reader's paths). Contract with the top level: it drives
        ``shape`` from the layer descriptor, stable from at least 2 cycles before ``start`` until the
        layer ends, and reads these no earlier than 2 cycles after the descriptor changes.
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
            m.d.sync += dst.eq(((size - k + s.ceil) >> 1) + 1)

        # The vertical stage starts a cycle late: its line length is the registered out_width, valid one
        # cycle after shape even when shape and start change together; its first byte comes >= 2 cycles
        # after that from the horizontal stage, so the delay costs nothing.
        # It also takes its parameters from a registered copy of shape (valid at v_start for the same
        # reason): the descriptor's route and the start-time arithmetic on it (lines - k + ceil) into the
        # stage's registers were 9.6 ns in the whole 8x8 design.
        v_start = Signal()
        m.d.sync += v_start.eq(self.start)
        s_q = Signal(PoolShape())
        m.d.sync += s_q.eq(s)
        for stage, sh in ((h, s), (v, s_q)):
            m.d.comb += [stage.kernel3.eq(sh.kernel3), stage.ceil.eq(sh.ceil),
                         stage.signed.eq(sh.signed), stage.inner.eq(sh.channels)]
        m.d.comb += [
            h.start.eq(self.start), h.outer.eq(1), h.lines.eq(s.width), h.groups.eq(s.height),
            v.start.eq(v_start), v.outer.eq(self.out_width), v.lines.eq(s_q.height), v.groups.eq(1),
        ]
        # The input goes through a register with a skid (ready is a register too): the top level's valid
        # (its descriptor decode) ran through the horizontal stage's take into its counters' resets, 9.6 ns
        # in the whole 8x8 design. Ready only while the horizontal stage is busy, as before.
        i_valid, i_data, sk_valid, sk_data = Signal(), Signal(8), Signal(), Signal(8)
        i_take = Signal()
        m.d.comb += [self.i.ready.eq(~sk_valid & h.busy), i_take.eq(self.i.valid & self.i.ready),
                     h.i.valid.eq(i_valid), h.i.payload.eq(i_data),
                     self.busy.eq(h.busy | v.busy | v_start | i_valid | sk_valid)]
        with m.If(~i_valid | h.i.ready):
            m.d.sync += [i_valid.eq(sk_valid | i_take), i_data.eq(Mux(sk_valid, sk_data, self.i.payload)),
                         sk_valid.eq(0)]
        with m.Elif(i_take):
            m.d.sync += [sk_valid.eq(1), sk_data.eq(self.i.payload)]
        wiring.connect(m, h.o, v.i)
        wiring.connect(m, v.o, wiring.flipped(self.o))
        return m
