"""Residual-add engine: runs one ADD descriptor, bit-exact with :func:`scalenet.quant.requantize_add`.

``y = sat(y_zp + sign(t) * rne(|t| / 2**shift))`` with ``t = (qa - x_zp) * a_mult + (qb - b_zp) * b_mult``,
one output byte per cycle. The two inputs are consumed in lock-step (one byte of each per output byte),
both raster HWC of the same shape, so no buffering is needed. The 16-byte parameter record arrives as two
64-bit beats (``a_mult`` u32 | ``b_mult`` u32, then ``shift`` u8 and seven reserved bytes).

Pipeline (one enable ``~out.valid | out.ready``, as in :mod:`scalenet.rtl.requant`):

====  ==============================================================
S1    ``qa - x_zp``, ``qb - b_zp`` (int8/uint8 per ``in_signed``)
S2    the two products (registered multiplier outputs)
S3    their sum, sign and magnitude
S4    ``min(rne(|t| / 2**shift), 2**20)``
S5    sign, ``y_zp``, saturation to the output type and ``[clamp_lo, clamp_hi]`` -- output register
====  ==============================================================
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In

from .config import AcceleratorConfig
from .engine_ports import check_config, engine_members
from .requant import SATURATION

__all__ = ["AddEngine"]


def _value9(byte, is_signed):
    return Cat(byte, is_signed & byte[7]).as_signed()


def rne_shift(value, amount):
    """``rne(value / 2**amount)`` (round half to even) for unsigned ``value`` and ``amount``.

    One barrel shift of ``value`` extended by a zero guard position gives quotient and guard; the sticky
    bit (anything below the guard) is ``value`` masked by a thermometer code of ``amount``.
    """
    extended = Cat(Const(0, 1), value)
    shifted = extended >> amount
    guard = shifted[0]
    quotient = shifted[1:len(extended)]
    below_guard = Cat(*(amount > i + 1 for i in range(len(value))))
    sticky = (value & below_guard).any()
    return quotient + (guard & (sticky | quotient[0]))


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

    LATENCY = 5

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

        en = Signal()
        m.d.comb += en.eq(~self.out.valid | self.out.ready)

        # Input byte counters (channel, x, y) and output byte counters.
        ic, ix, iy = Signal(16), Signal(16), Signal(17)
        oc, ox, oy = Signal(16), Signal(16), Signal(17)
        in_left = Signal()
        m.d.comb += in_left.eq(running & (p_count == 2) & (iy != d.in_height))

        take = Signal()
        both = self.pixels.valid & self.pixels_b.valid
        m.d.comb += [
            take.eq(en & in_left & both),
            self.pixels.ready.eq(en & in_left & both),
            self.pixels_b.ready.eq(en & in_left & both),
            self.params.ready.eq(running & (p_count != 2)),
        ]

        def count(m, cc, cx, cy):
            m.d.sync += cc.eq(cc + 1)
            with m.If(cc == d.in_channels - 1):
                m.d.sync += [cc.eq(0), cx.eq(cx + 1)]
                with m.If(cx == d.in_width - 1):
                    m.d.sync += [cx.eq(0), cy.eq(cy + 1)]

        with m.If(take):
            count(m, ic, ix, iy)
        with m.If(self.out.valid & self.out.ready):
            count(m, oc, ox, oy)

        with m.If(self.params.valid & self.params.ready):
            m.d.sync += p_count.eq(p_count + 1)
            with m.If(p_count == 0):
                m.d.sync += [a_mult.eq(self.params.payload[:32]), b_mult.eq(self.params.payload[32:])]
            with m.Else():
                m.d.sync += shift.eq(self.params.payload[:8])

        # S1
        s1_valid = Signal()
        da = Signal(signed(11))
        db = Signal(signed(11))
        # S2
        s2_valid = Signal()
        pa = Signal(signed(44))
        pb = Signal(signed(44))
        # S3
        s3_valid = Signal()
        s3_sign = Signal()
        s3_mag = Signal(unsigned(45))
        # S4
        s4_valid = Signal()
        s4_sign = Signal()
        s4_mag = Signal(range(SATURATION + 1))

        total = Signal(signed(45))
        m.d.comb += total.eq(pa + pb)
        amount = Signal(6)
        m.d.comb += amount.eq(Mux(shift > 63, 63, shift[:6]))
        shifted = Signal(46)
        m.d.comb += shifted.eq(rne_shift(s3_mag, amount))

        value = Signal(signed(23))
        m.d.comb += value.eq(Mux(s4_sign, -s4_mag, s4_mag) + d.y_zero_point)
        t_lo = Mux(d.out_signed, -128, 0)
        t_hi = Mux(d.out_signed, 127, 255)
        lo = Signal(signed(10))
        hi = Signal(signed(10))
        m.d.comb += [
            lo.eq(Mux(d.clamp_lo > t_lo, d.clamp_lo, t_lo)),
            hi.eq(Mux(d.clamp_hi < t_hi, d.clamp_hi, t_hi)),
        ]
        low = Signal(signed(23))
        result = Signal(signed(23))
        m.d.comb += [
            low.eq(Mux(value < lo, lo, value)),
            result.eq(Mux(low > hi, hi, low)),
        ]

        with m.If(en):
            m.d.sync += [
                s1_valid.eq(take),
                da.eq(_value9(self.pixels.payload, d.in_signed) - d.x_zero_point),
                db.eq(_value9(self.pixels_b.payload, d.in_signed) - d.b_zero_point),
                s2_valid.eq(s1_valid),
                pa.eq(da * a_mult),
                pb.eq(db * b_mult),
                s3_valid.eq(s2_valid),
                s3_sign.eq(total < 0),
                s3_mag.eq(Mux(total < 0, -total, total)),
                s4_valid.eq(s3_valid),
                s4_sign.eq(s3_sign),
                s4_mag.eq(Mux(shifted > SATURATION, SATURATION, shifted)),
                self.out.valid.eq(s4_valid),
                self.out.payload.eq(result[:8]),
            ]

        m.d.comb += self.done.eq(0)
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [
                        running.eq(1), p_count.eq(0),
                        ic.eq(0), ix.eq(0), iy.eq(0), oc.eq(0), ox.eq(0), oy.eq(0),
                    ]
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(oy == d.in_height):
                    m.d.comb += self.done.eq(1)
                    m.d.sync += running.eq(0)
                    m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m
