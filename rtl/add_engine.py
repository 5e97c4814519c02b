"""Residual-add engine: runs one ADD descriptor, bit-exact with :func:`scalenet.quant.requantize_add`.

``y = sat(y_zp + sign(t) * rne(|t| / 2**shift))`` with ``t = (qa - x_zp) * a_mult + (qb - b_zp) * b_mult``,
one output byte per cycle. The two inputs are consumed in lock-step (one byte of each per output byte),
both raster HWC of the same shape, so no buffering is needed. The 16-byte parameter record arrives as two
64-bit beats (``a_mult`` u32 | ``b_mult`` u32, then ``shift`` u8 and seven reserved bytes).

Pipeline: never stalls; a byte pair is taken only while the output queue at its end has room for it
and every byte still in flight (:class:`~.credit_queue.CreditQueue`), so no enable fans out from the
output handshake into the stages (the stall enable into the input counters was 10.2 ns in the whole
8x8 design). The ``shift``
and the clamp bounds are per-layer constants, so the shifter's selects, the sticky mask and the bounds
are registers and never part of an element's path:

====  ==============================================================
S1    ``qa - x_zp``, ``qb - b_zp`` (int8/uint8 per ``in_signed``)
S1b   the same, copied                                                 -- multiplier inputs
S2    the four partial products (each multiplier 11 x 17 or 11 x 15: one MULT18X18D)
S3    ``t`` = their sum
S4    sign and ``|t|``; the sticky bit (``t`` under the mask ``shift > i + 1``)
S5    ``|t|`` shifted right by the whole bytes of ``shift``
S6    shifted on by the rest (0..7): guard and quotient (21 bits and "any above")
S7    ``min(quotient + round-up, 2**20)``
S8    ``y_zp +/- magnitude``
S9    clamp to ``[max(clamp_lo, type_lo), min(clamp_hi, type_hi)]``  -- into the output queue
====  ==============================================================

The element counters (channel, x, y, for input and output) keep a registered "at the last index" flag
each, updated a cycle ahead against per-layer ``n - 2`` constants, so that no compare against the
descriptor sits between a counter and the stream handshakes.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In

from .config import AcceleratorConfig
from .credit_queue import CreditQueue
from .engine_ports import check_config, engine_members
from .requant import SATURATION

OUT_QUEUE = 12
"""Output queue entries: a take reaches the queue 8 cycles later; 3 more keep one byte per cycle."""

__all__ = ["AddEngine"]


def _value9(byte, is_signed):
    return Cat(byte, is_signed & byte[7]).as_signed()


class _Extent:
    """Per-layer constants of one dimension of ``n`` elements: ``n - 2`` and ``n == 1``, registered at ``start``."""

    def __init__(self, m, start, n, name):
        self.n_minus_2 = Signal(16, name=f"{name}_n_minus_2")
        self.one = Signal(name=f"{name}_one")
        self.first_last = n == 1                      # the "at last" flag of a fresh count, read at start
        with m.If(start):
            m.d.sync += [self.n_minus_2.eq(n - 2), self.one.eq(n == 1)]


def _wrap_counter(m, start, step, extent, name):
    """Counts ``0 .. n - 1`` on ``step`` and wraps; returns the registered flag "at ``n - 1``".

    The flag is computed from the count before the step (``count == n - 2`` means the step lands on the
    last index), so users of the flag see a register rather than a compare behind the counter.
    """
    count = Signal(16, name=f"{name}_count")
    last = Signal(name=f"{name}_last")
    with m.If(start):
        m.d.sync += [count.eq(0), last.eq(extent.first_last)]
    with m.Elif(step):
        with m.If(last):
            m.d.sync += [count.eq(0), last.eq(extent.one)]
        with m.Else():
            m.d.sync += [count.eq(count + 1), last.eq(count == extent.n_minus_2)]
    return last


class AddEngine(wiring.Component):
    """One ADD descriptor.

    Members
    -------
    desc : In(descriptor_layout())
        Stable from ``start`` until ``done``.
    start : In(1)
    busy : Out(1)
    done : Out(1)
        One-cycle pulse after the last output byte was accepted.
    params : In(stream.Signature(64))
        The 16-byte ADD parameter record, two beats.
    pixels : In(stream.Signature(8))
        Input a, raster HWC (``in_height * in_width * in_channels`` bytes).
    pixels_b : In(stream.Signature(8))
        Input b, same shape; taken in the same cycles as ``pixels``.
    out : Out(stream.Signature(8))
        Output bytes, raster HWC.
    """

    LATENCY = 10

    def __init__(self, config: AcceleratorConfig | None = None):
        self._config = check_config(config)
        super().__init__(engine_members(pixels_b=In(stream.Signature(8))))

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        d = self.desc

        a_mult = Signal(32)
        b_mult = Signal(32)
        shift = Signal(8)
        p_count = Signal(2)
        running = Signal()
        launch = Signal()                 # start accepted in IDLE: the per-layer registers load
        in_done = Signal()                # every input byte taken
        out_done = Signal()               # every output byte accepted: done next

        m.submodules.out_q = out_q = CreditQueue(width=8, depth=OUT_QUEUE)
        wiring.connect(m, wiring.flipped(self.out), out_q.out)

        take = Signal()
        # "Parameters in, layer running" a cycle late as one register (it only rises late, and in_done
        # stops the inputs on time): fewer inputs in front of the handshake with the two input streams
        # (pxb_skid -> take -> pxb_skid, 9.8 ns in the whole 8x8 design).
        in_open = Signal()
        m.d.sync += in_open.eq(running & (p_count == 2))
        in_left = in_open & ~in_done
        both = self.pixels.valid & self.pixels_b.valid
        m.d.comb += [
            take.eq(out_q.ok & in_left & both),
            out_q.issue.eq(take),
            self.pixels.ready.eq(out_q.ok & in_left & both),
            self.pixels_b.ready.eq(out_q.ok & in_left & both),
            self.params.ready.eq(running & (p_count != 2)),
        ]

        # Input and output byte counters (channel, x, y), raster HWC: only their "last" flags are used.
        ext_c = _Extent(m, launch, d.in_channels, "c")
        ext_x = _Extent(m, launch, d.in_width, "x")
        ext_y = _Extent(m, launch, d.in_height, "y")
        for step, done_flag, prefix in ((take, in_done, "in"), (self.out.valid & self.out.ready, out_done, "out")):
            c_last = _wrap_counter(m, launch, step, ext_c, f"{prefix}_c")
            x_last = _wrap_counter(m, launch, step & c_last, ext_x, f"{prefix}_x")
            y_last = _wrap_counter(m, launch, step & c_last & x_last, ext_y, f"{prefix}_y")
            with m.If(launch):
                m.d.sync += done_flag.eq(0)
            with m.Elif(step & c_last & x_last & y_last):
                m.d.sync += done_flag.eq(1)

        with m.If(self.params.valid & self.params.ready):
            m.d.sync += p_count.eq(p_count + 1)
            with m.If(p_count == 0):
                m.d.sync += [a_mult.eq(self.params.payload[:32]), b_mult.eq(self.params.payload[32:])]
            with m.Else():
                m.d.sync += shift.eq(self.params.payload[:8])

        # Per-layer constants, registered (the first byte reaches their users several cycles after the
        # parameters and the descriptor settle): the shift split for the two shifter stages, the sticky
        # mask (bit i of |t| lies below the guard when amount > i + 1), the clamp bounds.
        amount = Signal(6)
        below = Signal(45)
        lo = Signal(signed(10))
        hi = Signal(signed(10))
        crossed = Signal()
        amount_next = Mux(shift > 63, 63, shift[:6])
        t_lo = Mux(d.out_signed, -128, 0)
        t_hi = Mux(d.out_signed, 127, 255)
        lo_next = Mux(d.clamp_lo > t_lo, d.clamp_lo, t_lo)
        hi_next = Mux(d.clamp_hi < t_hi, d.clamp_hi, t_hi)
        m.d.sync += [
            amount.eq(amount_next),
            below.eq(Cat(*(amount_next > i + 1 for i in range(45)))),
            lo.eq(lo_next),
            hi.eq(hi_next),
            crossed.eq(lo > hi),                      # a cycle after lo and hi: off the descriptor's path
        ]

        valid = [Signal(name=f"s{i}_valid") for i in range(1, 9)]
        def sig(name, shape=1):
            return Signal(shape, name=name)

        da, db = sig("s1_da", signed(11)), sig("s1_db", signed(11))
        # The multipliers' operands are copied into registers of their own (S1b; the multipliers too
        # from copies of a_mult and b_mult, per-layer constants): the route from S1 (or from the
        # parameter registers) to the MULT18X18D, its 3.9 ns and the route out were one cycle, 10.3 ns in
        # the whole 8x8 design; the copies can sit at the DSP blocks.
        da_q, db_q = sig("s1b_da", signed(11)), sig("s1b_db", signed(11))
        a_mult_q, b_mult_q = Signal(32), Signal(32)
        m.d.sync += [a_mult_q.eq(a_mult), b_mult_q.eq(b_mult)]
        valid_1b = Signal(name="s1b_valid")
        pla, pha = sig("s2_pla", signed(29)), sig("s2_pha", signed(27))
        plb, phb = sig("s2_plb", signed(29)), sig("s2_phb", signed(27))
        total = sig("s3_total", signed(45))
        s4_sign, s4_mag, s4_sticky = sig("s4_sign"), sig("s4_mag", 45), sig("s4_sticky")
        s5_sign, s5_sticky, s5_c, s5_c_hi = sig("s5_sign"), sig("s5_sticky"), sig("s5_c", 29), sig("s5_c_hi")
        s6_sign, s6_sticky, s6_guard = sig("s6_sign"), sig("s6_sticky"), sig("s6_guard")
        s6_q, s6_q_hi = sig("s6_q", 21), sig("s6_q_hi")
        s7_sign, s7_mag = sig("s7_sign"), sig("s7_mag", range(SATURATION + 1))
        s8_value = sig("s8_value", signed(23))

        # S5: whole bytes of the shift (an 8:1 multiplexer on a register's select), keeping 29 bits for
        # S6 (guard, 21 quotient bits, 7 more for the remaining shift) and whether anything is above.
        extended = Cat(Const(0, 1), s4_mag)
        coarse = extended >> (amount[3:] << 3)
        # S6: the rest of the shift; the quotient's bits from 21 up only matter as "saturate".
        fine = s5_c >> amount[:3]
        # S7: round half to even, then saturate: q + up > 2**20 without waiting for the sum.
        up = s6_guard & (s6_sticky | s6_q[0])
        saturate = s6_q_hi | (s6_q > SATURATION) | ((s6_q == SATURATION) & up)
        # S9: np.clip(value, lo, hi) (the upper bound wins when the bounds cross): compares side by side.
        result = Mux(crossed, hi, Mux(s8_value < lo, lo, Mux(s8_value > hi, hi, s8_value)))

        m.d.comb += [out_q.w_en.eq(valid[7]), out_q.w_data.eq(result[:8])]
        m.d.sync += [
            valid[0].eq(take),
            da.eq(_value9(self.pixels.payload, d.in_signed) - d.x_zero_point),
            db.eq(_value9(self.pixels_b.payload, d.in_signed) - d.b_zero_point),
            valid_1b.eq(valid[0]),
            da_q.eq(da),
            db_q.eq(db),
            valid[1].eq(valid_1b),
            pla.eq(da_q * a_mult_q[:17]),
            pha.eq(da_q * a_mult_q[17:]),
            plb.eq(db_q * b_mult_q[:17]),
            phb.eq(db_q * b_mult_q[17:]),
            valid[2].eq(valid[1]),
            total.eq((pla + plb) + ((pha + phb) << 17)),
            valid[3].eq(valid[2]),
            s4_sign.eq(total < 0),
            s4_mag.eq(Mux(total < 0, -total, total)),
            s4_sticky.eq((total.as_unsigned() & below).any()),   # |t| and t agree mod 2**n
            valid[4].eq(valid[3]),
            s5_sign.eq(s4_sign),
            s5_sticky.eq(s4_sticky),
            s5_c.eq(coarse[:29]),
            s5_c_hi.eq(coarse[29:].any()),
            valid[5].eq(valid[4]),
            s6_sign.eq(s5_sign),
            s6_sticky.eq(s5_sticky),
            s6_guard.eq(fine[0]),
            s6_q.eq(fine[1:22]),
            s6_q_hi.eq(fine[22:].any() | s5_c_hi),
            valid[6].eq(valid[5]),
            s7_sign.eq(s6_sign),
            s7_mag.eq(Mux(saturate, SATURATION, s6_q + up)),
            valid[7].eq(valid[6]),
            s8_value.eq(Mux(s7_sign, d.y_zero_point - s7_mag, d.y_zero_point + s7_mag)),
        ]

        m.d.comb += [self.done.eq(0), launch.eq(0)]
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.comb += launch.eq(1)
                    m.d.sync += [running.eq(1), p_count.eq(0)]
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(out_done):
                    m.d.comb += self.done.eq(1)
                    m.d.sync += running.eq(0)
                    m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m
