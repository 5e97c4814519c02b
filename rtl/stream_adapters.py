"""Adapters between the DMA's bus-width beats and the engines' byte and row streams.

Tensors are byte-addressed (a channel slice of a concatenation starts mid-word and skips the other
branches' channels in every pixel), while the DMA moves aligned words. The adapters walk the aligned
region that covers a tensor one byte per cycle and keep exactly the tensor's bytes: ``lead`` bytes
before it, then pixels of ``channels`` bytes every ``stride`` bytes, ``span`` bytes in all.
"""

from amaranth.hdl import Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

__all__ = ["RegionLayout", "WordsToBytes", "BytesToWords", "WordSplitter", "SkidBuffer", "FifoSlice"]


class RegionLayout(data.StructLayout):
    """Where a tensor's bytes sit in a word-aligned region.

    Members
    -------
    words : unsigned(24)
        Bus words in the region.
    lead : unsigned(6)
        Bytes of the first word before the tensor starts (its address modulo the bus width).
    span : unsigned(24)
        Bytes from the tensor's first to its last byte: ``(pixels - 1) * stride + channels``.
    stride, channels : unsigned(16)
        Bytes between pixels, and the pixel's bytes that belong to the tensor.
    """

    def __init__(self):
        super().__init__({"words": unsigned(24), "lead": unsigned(6), "span": unsigned(24),
                          "stride": unsigned(16), "channels": unsigned(16)})


class _Walk:
    """A byte counter over the region and whether the current byte is one of the tensor's.

    Each of "past the lead", "within the span", "within the pixel's channels" and "done" is the sign bit
    of a down-counter loaded at ``reset`` (the stride's wrap too), so ``keep`` and ``done`` come from
    registers: ``>=``/``<`` compares on up-counters sat at the head of ``i.ready``, that is of the DMA
    read handshake and the counters behind it. Needs ``stride >= 1`` (the sequencer ensures it).
    """

    def __init__(self, m, region, data_bytes):
        self._lane_bits = data_bytes.bit_length() - 1
        self.index = Signal(max(1, self._lane_bits))   # byte lane of the current byte
        self._data_bytes = data_bytes
        # Bytes (of the region; after the lead: of the tensor; of the pixel) left minus one: negative
        # once the limit is reached. The rel/pixel counters stop when negative.
        self._left = Signal(signed(24 + 3 + 1))       # to the region's end: done
        self._lead = Signal(signed(7))                # to the tensor's first byte: past the lead
        self._span = Signal(signed(24 + 1))           # to the tensor's end
        self._ch = Signal(signed(17))                 # to the end of the pixel's channels
        self._wrap = Signal(signed(18))               # stride - 2 - in_pixel: negative at the pixel's last byte
        self._stride_m2 = Signal(signed(18))
        self._ch_m1 = Signal(signed(17))
        # ``keep`` (past the lead, within the span and the pixel's channels) is a register too, computed
        # with the step from the counters' zero tests: as three sign bits ANDed it was one more LUT in
        # front of the byte handshake (b2w._lead -> keep -> out_skid.o.valid -> step -> b2w._ch CE, 10.8 ns
        # in the whole 8x8 design).
        self.keep = Signal()
        self.word_end = Signal()
        self.done = Signal()
        m.d.comb += [
            self.done.eq(self._left[-1]),
            self.word_end.eq(self.index[:self._lane_bits] == data_bytes - 1 if self._lane_bits else 1),
        ]

    def reset(self, m, region):
        """Start on ``region`` (the value being loaded into the region register this cycle)."""
        m.d.sync += [
            self.keep.eq((region.lead == 0) & (region.span != 0) & (region.channels != 0)),
            self.index.eq(0),
            self._left.eq(region.words * self._data_bytes - 1),
            self._lead.eq(region.lead - 1),
            self._span.eq(region.span - 1),
            self._ch.eq(region.channels - 1), self._ch_m1.eq(region.channels - 1),
            self._wrap.eq(region.stride - 2), self._stride_m2.eq(region.stride - 2),
        ]

    def advance(self, m):
        m.d.sync += [self.index.eq(self.index + 1), self._left.eq(self._left - 1)]
        # The sign bits after this step (a counter at 0 turns negative), for ``keep``.
        span_neg = self._span[-1] | (self._span == 0)
        ch_neg = Mux(self._wrap[-1], self._ch_m1[-1], self._ch[-1] | (self._ch == 0))
        with m.If(~self._lead[-1]):
            m.d.sync += [self._lead.eq(self._lead - 1),
                         self.keep.eq((self._lead == 0) & ~self._span[-1] & ~self._ch[-1])]
        with m.Else():
            m.d.sync += self.keep.eq(~span_neg & ~ch_neg)
            with m.If(~self._span[-1]):
                m.d.sync += self._span.eq(self._span - 1)
            with m.If(self._wrap[-1]):
                m.d.sync += [self._wrap.eq(self._stride_m2), self._ch.eq(self._ch_m1)]
            with m.Else():
                m.d.sync += self._wrap.eq(self._wrap - 1)
                with m.If(~self._ch[-1]):
                    m.d.sync += self._ch.eq(self._ch - 1)


class WordsToBytes(wiring.Component):
    """Bus words of a region in, the tensor's bytes out (one per cycle).

    ``start`` (a pulse, with ``region`` valid) begins a region; ``busy`` until every word is consumed.
    """

    def __init__(self, data_width=64):
        self._data_bytes = data_width // 8
        super().__init__({
            "region": In(RegionLayout()),
            "start": In(1),
            "busy": Out(1),
            "i": In(stream.Signature(data_width)),
            "o": Out(stream.Signature(8)),
        })

    def elaborate(self, platform):
        m = Module()
        nb = self._data_bytes
        region = Signal(RegionLayout())
        walk = _Walk(m, region, nb)
        active = Signal()
        m.d.comb += self.busy.eq(active)
        lane = walk.index[:nb.bit_length() - 1]
        byte = Signal(8)
        m.d.comb += byte.eq(self.i.payload.word_select(lane, 8))
        with m.If(active):
            with m.If(walk.done):
                m.d.sync += active.eq(0)
            with m.Else():
                # Keep a byte when the consumer takes it; skip others at once.
                m.d.comb += [self.o.valid.eq(self.i.valid & walk.keep), self.o.payload.eq(byte)]
                step = Signal()
                m.d.comb += step.eq(self.i.valid & (~walk.keep | self.o.ready))
                m.d.comb += self.i.ready.eq(step & walk.word_end)
                with m.If(step):
                    walk.advance(m)
        # ``start`` comes only while idle (the sequencer waits for ``busy`` to fall), so it need not gate
        # the handshake above: it did, and the start pulse's fan-out ran through ``i.ready`` into the
        # DMA read stream's skid buffer (10.4 ns in the 8x8 SoC).
        with m.If(self.start):
            m.d.sync += [region.eq(self.region), active.eq(1)]
            walk.reset(m, self.region)
        return m


class BytesToWords(wiring.Component):
    """The tensor's bytes in, bus words of the region out with byte strobes (0 where not the tensor's).

    Pairs with :class:`~scalenet.rtl.dma.DMAWriter` built with ``strobes=True``. The run begins the cycle
    after the ``start`` pulse (``busy`` from the cycle after it), with ``region`` as it is then.
    """

    def __init__(self, data_width=64):
        from .dma import write_data_layout
        self._data_bytes = data_width // 8
        super().__init__({
            "region": In(RegionLayout()),
            "start": In(1),
            "busy": Out(1),
            "i": In(stream.Signature(8)),
            "o": Out(stream.Signature(write_data_layout(data_width))),
        })

    def elaborate(self, platform):
        m = Module()
        nb = self._data_bytes
        region = Signal(RegionLayout())
        walk = _Walk(m, region, nb)
        active = Signal()
        lane = walk.index[:nb.bit_length() - 1]
        word, strb = Signal(8 * nb), Signal(nb)            # the word being assembled
        out_word, out_strb = Signal(8 * nb), Signal(nb)    # the finished word on offer
        o_valid = Signal()
        # A second finished word waits behind it, so the walk steps on ``full`` (a register of this
        # module) instead of on ``o.ready``: the write skid's ready came from across the die through the
        # walk's step logic into its counters' enables (10.1 ns in the 8x8 SoC). Measured since: the path
        # starts at ``full`` and was as long in one of five builds (10.86 ns) -- the step logic and its
        # ~170 enables make it, not the route from the skid (docs/boards.md, tenth round).
        b_word, b_strb = Signal(8 * nb), Signal(nb)
        b_valid, full = Signal(), Signal()
        push = Signal()                                    # a word is finished this cycle
        new_word, new_strb = Signal(8 * nb), Signal(nb)
        # The run starts a cycle after ``start``, from a register of its own: the sequencer's pulse came
        # from across the die into the walk counters' enables (2.8 ns of route at the head of a 10.6 ns
        # path in the 8x8 SoC). ``busy`` covers that cycle.
        start = Signal()
        m.d.sync += start.eq(self.start)
        m.d.comb += [self.busy.eq(start | active | o_valid | b_valid), self.o.valid.eq(o_valid),
                     self.o.payload.data.eq(out_word), self.o.payload.strb.eq(out_strb)]
        a_free = Signal()                                  # the word on offer leaves (or there is none)
        m.d.comb += a_free.eq(~o_valid | self.o.ready)
        with m.If(a_free):
            m.d.sync += [o_valid.eq(b_valid | push), out_word.eq(Mux(b_valid, b_word, new_word)),
                         out_strb.eq(Mux(b_valid, b_strb, new_strb)), b_valid.eq(b_valid & push),
                         full.eq(b_valid & push)]
        with m.Elif(push):
            m.d.sync += [b_valid.eq(1), full.eq(1)]
        with m.If(push):
            m.d.sync += [b_word.eq(new_word), b_strb.eq(new_strb)]
        with m.If(start):
            m.d.sync += [region.eq(self.region), active.eq(1), strb.eq(0)]
            walk.reset(m, self.region)
        with m.Elif(active):
            with m.If(walk.done):
                m.d.sync += active.eq(0)
            with m.Else():
                step = Signal()
                m.d.comb += [
                    self.i.ready.eq(~full & walk.keep),
                    step.eq(~full & (~walk.keep | self.i.valid)),
                ]
                with m.If(step):
                    walk.advance(m)
                    m.d.comb += [new_word.eq(word), new_strb.eq(strb)]
                    with m.If(walk.keep):
                        m.d.comb += [new_word.word_select(lane, 8).eq(self.i.payload),
                                     new_strb.bit_select(lane, 1).eq(1)]
                    with m.If(walk.word_end):
                        m.d.comb += push.eq(1)
                        m.d.sync += [word.eq(0), strb.eq(0)]
                    with m.Else():
                        m.d.sync += [word.eq(new_word), strb.eq(new_strb)]
        return m


class WordSplitter(wiring.Component):
    """Wide words in, ``in_width // out_width`` narrower words out, least significant first."""

    def __init__(self, in_width=64, out_width=32):
        if in_width % out_width:
            raise ValueError(f"in_width {in_width} must be a multiple of out_width {out_width}")
        self._ratio = in_width // out_width
        super().__init__({
            "i": In(stream.Signature(in_width)),
            "o": Out(stream.Signature(out_width)),
        })

    def elaborate(self, platform):
        m = Module()
        if self._ratio == 1:
            wiring.connect(m, wiring.flipped(self.i), wiring.flipped(self.o))
            return m
        part = Signal(range(self._ratio))
        m.d.comb += [self.o.valid.eq(self.i.valid),
                     self.o.payload.eq(self.i.payload.word_select(part, len(self.o.payload))),
                     self.i.ready.eq(self.o.ready & (part == self._ratio - 1))]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += part.eq(Mux(part == self._ratio - 1, 0, part + 1))
        return m


class SkidBuffer(wiring.Component):
    """A register slice for a stream: ``o.valid``/``o.payload`` and ``i.ready`` all come from registers,
    at one beat per cycle (a second, "skid" register parks the beat that arrives while ``o`` stalls).

    Why: without it, a ready/valid handshake is one combinational chain from the last consumer back to the
    first producer (AXI R channel -> DMA -> adapter -> engine and back), the longest paths of the design.
    """

    def __init__(self, shape):
        self._shape = shape
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        skid = Signal(self._shape)
        skid_valid = Signal()
        m.d.comb += self.i.ready.eq(~skid_valid)
        with m.If(~self.o.valid | self.o.ready):
            with m.If(skid_valid):
                m.d.sync += [self.o.payload.eq(skid), self.o.valid.eq(1), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(self.i.valid)]
        with m.Elif(self.i.valid & ~skid_valid):
            m.d.sync += [skid.eq(self.i.payload), skid_valid.eq(1)]
        return m


class FifoSlice(wiring.Component):
    """A register slice in which the consumer's ``ready`` moves a pointer, not the payload: a two-entry
    LUT-RAM FIFO. ``i.ready`` and ``o.valid`` come from its level register, one beat per cycle.

    Why: in a :class:`SkidBuffer` ``o.ready`` enables every payload and skid register. Where ``ready`` is
    an OR over several consumers (the DMA read stream: descriptor, parameters, weights, two pixel
    streams), that ready logic, its route and a fan-out to 130 enables were 10.1-11.1 ns in the 8x8 SoC;
    here it reaches the read pointer and the level, and the payload is read from LUT RAM at the pointer.
    """

    def __init__(self, shape):
        self._shape = shape
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFO(width=Shape.cast(self._shape).width, depth=2)
        m.d.comb += [
            fifo.w_data.eq(self.i.payload), fifo.w_en.eq(self.i.valid), self.i.ready.eq(fifo.w_rdy),
            self.o.payload.eq(fifo.r_data), self.o.valid.eq(fifo.r_rdy), fifo.r_en.eq(self.o.ready),
        ]
        return m
