"""Block-RAM line buffer: a raster stream of pixel words in, padded ``K x K`` windows (stride 1 or 2) out.

Why this shape
--------------
A convolution or pooling engine needs every ``K x K`` neighbourhood of the input once; storing only the
last ``K - 1`` rows is what makes a layer's input streamable from DRAM in one pass. One input beat is one
**pixel word** of ``data_width`` bits: the buffer never looks inside it, so a caller that processes ``C``
channels in parallel packs a channel vector into the word (``8 * C`` bits), and a caller that does
channels one at a time runs the image once per channel with ``data_width = 8``.

How
---
The buffer walks the *padded* image, ``(H + 2 pad) x (W + 2 pad)`` positions in raster order, at one
position per cycle. Positions inside the image take the next input beat; positions in the border take
``pad_value`` (the zero point, so padding contributes nothing after the zero point is subtracted) without
consuming input. Padding is therefore the same as any other pixel to the rest of the logic.

A single memory of ``max_width + 2 (kmax - 1)`` words, each holding a column of ``kmax - 1`` pixel words
(rows ``y-K+1 .. y-1`` at column ``x``), replaces ``K - 1`` separate line memories: one synchronous read
and one write per cycle, which maps to DP16KD block RAM on ECP5 (and RAMB on Xilinx). The column read at
``x`` plus the incoming word is the window's newest column; it is shifted into a ``kmax x kmax`` register
window, and the column is written back moved up by one row. The read of column ``x + 1`` overlaps the
write of column ``x``; the two addresses coincide only when the padded width is 1, and then ``K = 1``,
which does not use the memory, so the read port needs no write-through logic.

Both shifts insert at index ``K - 1`` (runtime ``K``) instead of at the far end, so a 2:1 multiplexer per
register keeps every window **top-left aligned**: ``window[r][c]`` is padded pixel
``(oy * stride + r, ox * stride + c)`` for ``r, c < K``; entries at ``K`` or beyond are unspecified.

A window is emitted at every position where it is complete and on the stride grid, so the output is
``OH x OW`` windows with ``OH = (H + 2 pad - K) // stride + 1`` (ONNX floor mode, symmetric pads), in
raster order; ``last`` marks a frame's final window. Frames follow each other without a gap.

Measured (ECP5 85F, out of context, ``max_width=256, kmax=7``, 8-bit words): 2 DP16KD, ~590 LUT4,
~570 FF, 94 MHz after routing.

The runtime registers (``width``, ``height``, ``kernel``, ``stride``, ``pad``, ``pad_value``) must be
held stable while a frame is in flight; ``pad <= kmax - 1`` and ``width <= max_width``.
"""

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["WindowLayout", "LineBuffer"]


class WindowLayout(data.StructLayout):
    """``window[r][c]``: ``kmax x kmax`` pixel words, top-left aligned; ``last`` on a frame's final window."""

    def __init__(self, kmax, data_width):
        super().__init__({
            "window": data.ArrayLayout(data.ArrayLayout(unsigned(data_width), kmax), kmax),
            "last": unsigned(1),
        })


def _check(name, value, minimum):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise TypeError(f"{name} must be an integer greater than or equal to {minimum}, not {value!r}")


class LineBuffer(wiring.Component):
    """Raster pixel words in, ``K x K`` windows out.

    Parameters
    ----------
    max_width : int
        Widest image (unpadded) the memory holds.
    kmax : int
        Largest kernel (default 7).
    data_width : int
        Bits per pixel word (default 8).
    height_bits : int
        Width of the height register (default 16).

    Members
    -------
    i : In(stream.Signature(unsigned(data_width)))
        Pixel words, raster order, ``width * height`` per frame.
    o : Out(stream.Signature(WindowLayout(kmax, data_width)))
        Windows, raster order.
    width, height, kernel, stride, pad, pad_value : In(...)
        Runtime configuration (``stride`` is 1 or 2).
    """

    def __init__(self, *, max_width, kmax=7, data_width=8, height_bits=16):
        _check("max_width", max_width, 1)
        _check("kmax", kmax, 1)
        _check("data_width", data_width, 1)
        _check("height_bits", height_bits, 1)
        self._max_width, self._kmax, self._data_width = max_width, kmax, data_width
        self._depth = max_width + 2 * (kmax - 1)
        super().__init__({
            "i": In(stream.Signature(unsigned(data_width))),
            "o": Out(stream.Signature(WindowLayout(kmax, data_width))),
            "width": In(range(max_width + 1)),
            "height": In(height_bits),
            "kernel": In(range(kmax + 1)),
            "stride": In(range(1, 3)),
            "pad": In(range(kmax)),
            "pad_value": In(data_width),
        })

    @property
    def max_width(self):
        return self._max_width

    @property
    def kmax(self):
        return self._kmax

    @property
    def data_width(self):
        return self._data_width

    def elaborate(self, platform):
        m = Module()
        kmax, dw = self._kmax, self._data_width
        k = self.kernel

        wp = Signal(range(self._depth + 1))
        hp = Signal(len(self.height) + 1 + 3)
        m.d.comb += [wp.eq(self.width + 2 * self.pad), hp.eq(self.height + 2 * self.pad)]

        # Stage A: the padded position being fetched.
        ax = Signal(range(self._depth))
        ay = Signal.like(hp)
        inside = ((ax >= self.pad) & (ax < self.pad + self.width)
                  & (ay >= self.pad) & (ay < self.pad + self.height))

        # Stage B: the position whose memory column is being read; it shifts into the window.
        b_valid = Signal()
        b_word = Signal(dw)
        b_x = Signal.like(ax)
        b_y = Signal.like(ay)

        process = Signal()
        m.d.comb += process.eq(b_valid & (~self.o.valid | self.o.ready))
        b_free = ~b_valid | process
        step = Signal()
        m.d.comb += [
            self.i.ready.eq(inside & b_free),
            step.eq((~inside | self.i.valid) & b_free),
        ]

        if kmax > 1:
            m.submodules.columns = columns = Memory(
                shape=data.ArrayLayout(unsigned(dw), kmax - 1), depth=self._depth, init=[])
            w_port = columns.write_port()
            r_port = columns.read_port()
            m.d.comb += [r_port.addr.eq(ax), r_port.en.eq(step)]
            column = r_port.data
        else:
            column = []

        with m.If(step):
            m.d.sync += [
                b_word.eq(Mux(inside, self.i.payload, self.pad_value)),
                b_x.eq(ax),
                b_y.eq(ay),
            ]
            with m.If(ax == wp - 1):
                m.d.sync += ax.eq(0)
                with m.If(ay == hp - 1):
                    m.d.sync += ay.eq(0)
                with m.Else():
                    m.d.sync += ay.eq(ay + 1)
            with m.Else():
                m.d.sync += ax.eq(ax + 1)
        with m.If(b_free):
            m.d.sync += b_valid.eq(step)

        # The newest window column: rows y-K+1 .. y-1 from memory, row y (index K-1) from the input.
        newest = [Signal(dw, name=f"newest{r}") for r in range(kmax)]
        for r in range(kmax - 1):
            m.d.comb += newest[r].eq(Mux(k == r + 1, b_word, column[r]))
        m.d.comb += newest[kmax - 1].eq(b_word)

        window = self.o.payload.window
        on_grid = Signal()
        m.d.comb += on_grid.eq(
            (b_y + 1 >= k) & (b_x + 1 >= k)
            & ((self.stride == 1) | (((b_y + 1 - k)[0] == 0) & ((b_x + 1 - k)[0] == 0))))
        final = (b_y + self.stride >= hp) & (b_x + self.stride >= wp)

        with m.If(process):
            if kmax > 1:
                m.d.comb += [w_port.addr.eq(b_x), w_port.en.eq(1)]
                for r in range(kmax - 1):
                    above = column[r + 1] if r + 1 < kmax - 1 else b_word
                    m.d.comb += w_port.data[r].eq(Mux(k == r + 2, b_word, above))
            for r in range(kmax):
                for c in range(kmax):
                    right = window[r][c + 1] if c + 1 < kmax else newest[r]
                    m.d.sync += window[r][c].eq(Mux(k == c + 1, newest[r], right))
            m.d.sync += [self.o.valid.eq(on_grid), self.o.payload.last.eq(on_grid & final)]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m
