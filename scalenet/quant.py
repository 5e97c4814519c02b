"""Integer quantisation semantics: the one definition the reference, the RTL and the driver share.

Requantisation is bit-exact with onnxruntime's QLinearConv / QLinearMatMul. onnxruntime computes, per
output, ``y = sat(rne(f32(acc) * M) + zp)`` with ``M = f32(f32(x_scale * w_scale) / y_scale)``: two float32
roundings (int32 -> float32, then the product) followed by round-half-to-even to an integer. A
fixed-point (gemmlowp-style) step differs on ~0.1 % of outputs, so the hardware instead reproduces the
float32 roundings with integer operations:

1. ``a = |acc|`` is rounded to 24 significant bits: ``a = a_man << k`` (``k = max(0, bitlen(a) - 24)``),
2. the exact product ``a_man * m`` (``M = m * 2**-s``, ``m`` a 24-bit mantissa with its hidden bit) is
   rounded to 24 significant bits again (the float32 product),
3. that is shifted right by ``s - k`` with round-half-to-even, the sign restored, the zero point added and
   the result saturated to the output type (and to a fused activation's bounds).

Every step is a shift, a compare or one 25x24-bit multiply, so the RTL implements it as written here;
``tests/test_quant.py`` proves the integer form equal to the float32 form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import QuantisationError

__all__ = [
    "DTYPES", "QType", "QParams",
    "MANTISSA_BITS", "SHIFT_MIN", "SHIFT_MAX",
    "requant_multiplier", "encode_multiplier", "decode_multiplier",
    "requantize", "requantize_float32",
    "AddRescale", "add_rescale", "requantize_add",
    "avgpool_multiplier",
    "quantize", "dequantize", "choose_qparams", "quantize_bias",
    "round_half_even_shift",
]

MANTISSA_BITS = 24
"""Bits of a requantisation multiplier's mantissa, hidden bit included (float32 has 24)."""
SHIFT_MIN = 8
"""Smallest right shift: multipliers must be below 2**(24 - 8) = 65536."""
SHIFT_MAX = 63
"""Largest right shift stored in hardware; smaller multipliers are encoded as zero (see encode)."""
ZERO_BELOW = 2.0 ** -32
"""Multipliers below this give 0 for every int32 accumulator (|acc * M| < 0.5), so they encode as 0."""


@dataclass(frozen=True)
class QType:
    """An integer element type: its name, range and numpy dtype."""

    name: str
    lo: int
    hi: int

    @property
    def np_dtype(self):
        return np.dtype(self.name)

    def __repr__(self):
        return self.name


DTYPES = {
    "int8": QType("int8", -128, 127),
    "uint8": QType("uint8", 0, 255),
    "int32": QType("int32", -(2**31), 2**31 - 1),
}


def _qtype(dtype) -> QType:
    if isinstance(dtype, QType):
        return dtype
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    try:
        return DTYPES[name]
    except KeyError:
        raise QuantisationError(f"unsupported quantised type {dtype!r}: expected int8, uint8 or int32") from None


@dataclass(frozen=True, eq=False)
class QParams:
    """Scale and zero point of a quantised tensor, per tensor or per channel (axis 0 for weights).

    ``real = scale * (q - zero_point)``. Scales are float32, as onnxruntime keeps them, so that the
    requantisation multipliers round exactly as there.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    dtype: QType

    def __init__(self, scale, zero_point=0, dtype="int8"):
        qtype = _qtype(dtype)
        scale = np.asarray(scale, dtype=np.float64)
        zp = np.asarray(zero_point)
        if scale.ndim > 1 or zp.ndim > 1:
            raise QuantisationError(f"scale and zero point must be scalars or 1-D, not shapes {scale.shape}, {zp.shape}")
        if not np.all(np.isfinite(scale)):
            raise QuantisationError(f"scale must be finite, not {scale!r}")
        if np.any(scale <= 0):
            raise QuantisationError(f"scale must be > 0, not {scale!r}")
        if zp.dtype.kind == "f":
            if not np.all(np.isfinite(zp)) or np.any(zp != np.round(zp)):
                raise QuantisationError(f"zero point must be an integer, not {zp!r}")
        elif zp.dtype.kind not in "iub":
            raise QuantisationError(f"zero point must be an integer, not {zp!r}")
        zp = zp.astype(np.int64)
        if np.any(zp < qtype.lo) or np.any(zp > qtype.hi):
            raise QuantisationError(f"zero point {zp!r} is outside the range of {qtype.name} [{qtype.lo}, {qtype.hi}]")
        object.__setattr__(self, "scale", scale.astype(np.float32))
        object.__setattr__(self, "zero_point", zp)
        object.__setattr__(self, "dtype", qtype)

    @property
    def per_channel(self) -> bool:
        return self.scale.ndim == 1 or self.zero_point.ndim == 1

    def __eq__(self, other):
        return (isinstance(other, QParams) and self.dtype == other.dtype
                and np.array_equal(self.scale, other.scale) and np.array_equal(self.zero_point, other.zero_point))

    def __hash__(self):
        return hash((self.dtype.name, self.scale.tobytes(), self.zero_point.tobytes()))

    def __repr__(self):
        def show(a):
            return repr(a.item()) if a.ndim == 0 else f"[{a.size} values]"
        return f"QParams(scale={show(self.scale)}, zero_point={show(self.zero_point)}, dtype={self.dtype.name})"


# ---------------------------------------------------------------------------------------------------------
# Multipliers


def requant_multiplier(x_scale, w_scale, y_scale) -> np.ndarray:
    """``f32(f32(x_scale * w_scale) / y_scale)``: onnxruntime's QLinearConv/QLinearMatMul multiplier."""
    xs = np.asarray(x_scale, dtype=np.float32)
    ws = np.asarray(w_scale, dtype=np.float32)
    ys = np.asarray(y_scale, dtype=np.float32)
    with np.errstate(over="raise", under="ignore"):
        return (xs * ws) / ys


def encode_multiplier(multiplier) -> tuple[np.ndarray, np.ndarray]:
    """Split float32 multipliers into (mantissa, shift) with ``M == mantissa * 2**-shift`` exactly.

    The mantissa has its hidden bit (2**23 <= mantissa < 2**24). Multipliers below 2**-32 produce 0 for
    every int32 accumulator, so they are encoded as (0, SHIFT_MAX); that is exact, not an approximation.
    """
    m = np.asarray(multiplier, dtype=np.float32)
    if not np.all(np.isfinite(m)) or np.any(m < 0):
        raise QuantisationError(f"requantisation multiplier must be finite and >= 0, not {m!r}")
    if np.any(m >= 2.0 ** (MANTISSA_BITS - SHIFT_MIN)):
        raise QuantisationError(
            f"requantisation multiplier {float(np.max(m))!r} is >= 2**{MANTISSA_BITS - SHIFT_MIN}: "
            "the output scale is too small for the input and weight scales")
    frac, exp = np.frexp(m.astype(np.float64))         # m = frac * 2**exp, 0.5 <= frac < 1
    mantissa = np.rint(np.ldexp(frac, MANTISSA_BITS)).astype(np.int64)
    shift = (MANTISSA_BITS - exp).astype(np.int64)
    zero = (m < ZERO_BELOW)
    mantissa = np.where(zero, 0, mantissa)
    shift = np.where(zero, SHIFT_MAX, shift)
    assert np.all((shift >= SHIFT_MIN) & (shift <= SHIFT_MAX))
    return mantissa, shift


def decode_multiplier(mantissa, shift) -> np.ndarray:
    return np.ldexp(np.asarray(mantissa, dtype=np.float64), -np.asarray(shift)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# Integer requantisation


def round_half_even_shift(value, shift):
    """``rne(value / 2**shift)`` for non-negative int64 ``value`` and ``0 <= shift < 63`` (arrays broadcast).

    ``(value + half - 1 + odd) >> shift`` with ``odd`` the low bit of the truncated quotient: above half
    rounds up, below rounds down, exactly half goes to the even neighbour.
    """
    value = np.asarray(value, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    half = np.left_shift(np.int64(1), shift) >> 1
    odd = (value >> shift) & 1
    rounded = (value + half - 1 + odd) >> shift
    return np.where(shift == 0, value, rounded)


def _bit_length(value):
    """Bit length of non-negative int64 values below 2**53 (exact through float64's exponent)."""
    return np.frexp(np.asarray(value, dtype=np.float64))[1].astype(np.int64)


def _round_significant(value, bits):
    """Round non-negative integers to ``bits`` significant bits, half to even: (mantissa, exponent)."""
    k = np.maximum(_bit_length(value) - bits, 0)
    return round_half_even_shift(value, k), k


def _saturate(values, qtype: QType, lo=None, hi=None):
    lo_ = qtype.lo if lo is None else np.maximum(lo, qtype.lo)
    hi_ = qtype.hi if hi is None else np.minimum(hi, qtype.hi)
    return np.clip(values, lo_, hi_)


def requantize(acc, multiplier, zero_point=0, dtype="int8", *, lo=None, hi=None, axis=None) -> np.ndarray:
    """Integer-only requantisation of int32 accumulators (bias already added): the hardware's algorithm.

    ``multiplier`` is float32, scalar or per channel along ``axis`` of ``acc``. ``lo``/``hi`` are extra
    integer clamp bounds (a fused ReLU/ReLU6). Returns values of ``dtype`` (int8/uint8).
    """
    qtype = _qtype(dtype)
    acc = np.asarray(acc, dtype=np.int64)
    if acc.size and (acc.min() < -(2**31) or acc.max() >= 2**31):
        raise QuantisationError("accumulator exceeds int32: the layer overflows the hardware's 32-bit accumulators")
    mantissa, shift = encode_multiplier(multiplier)
    if axis is not None and mantissa.ndim == 1:
        bshape = [1] * acc.ndim
        bshape[axis] = -1
        mantissa, shift = mantissa.reshape(bshape), shift.reshape(bshape)
    sign = np.sign(acc)
    magnitude = np.abs(acc)
    if magnitude.size == 0 or magnitude.max() < (1 << MANTISSA_BITS):
        a_man, k = magnitude, 0                                          # exact in float32 already
    else:
        a_man, k = _round_significant(magnitude, MANTISSA_BITS)          # int32 -> float32
    p_man, pk = _round_significant(a_man * mantissa, MANTISSA_BITS)    # float32 product
    # value = p_man * 2**(pk + k - shift). A negative right shift (down to -33) only happens for values far
    # above the int8 range: the left-shift branch then saturates.
    right = shift - k - pk
    magnitude = np.where(right >= 0,
                         round_half_even_shift(p_man, np.clip(right, 0, 62)),
                         p_man << np.clip(-right, 0, 62))
    magnitude = np.minimum(magnitude, 1 << 20)        # saturates anyway; keeps the sum in range
    out = sign * magnitude + np.asarray(zero_point, dtype=np.int64)
    return _saturate(out, qtype, lo, hi).astype(qtype.np_dtype)


def requantize_float32(acc, multiplier, zero_point=0, dtype="int8", *, lo=None, hi=None, axis=None) -> np.ndarray:
    """The float32 definition (onnxruntime's MlasRequantizeOutput), kept to prove ``requantize`` equal to it."""
    qtype = _qtype(dtype)
    m = np.asarray(multiplier, dtype=np.float32)
    acc = np.asarray(acc, dtype=np.int64)
    if axis is not None and m.ndim == 1:
        bshape = [1] * acc.ndim
        bshape[axis] = -1
        m = m.reshape(bshape)
    with np.errstate(over="ignore"):
        product = acc.astype(np.float32) * m
    zp = np.asarray(zero_point, dtype=np.int64)
    lo_f = np.float32(qtype.lo) - zp.astype(np.float32)
    hi_f = np.float32(qtype.hi) - zp.astype(np.float32)
    product = np.clip(product, lo_f, hi_f)
    out = np.rint(product).astype(np.int64) + zp
    return _saturate(out, qtype, lo, hi).astype(qtype.np_dtype)


# ---------------------------------------------------------------------------------------------------------
# Residual add and average pooling


@dataclass(frozen=True)
class AddRescale:
    """Fixed-point rescale of two quantised inputs to the output scale: ``(qa*ia + qb*ib) / 2**shift``.

    Our own definition (onnxruntime's QLinearAdd is a contrib op with float internals): both multipliers
    share one shift chosen so the larger one has a 24-bit mantissa; rounding is half to even.
    """

    a_mult: int
    b_mult: int
    shift: int


def add_rescale(a_scale, b_scale, y_scale) -> AddRescale:
    ma = float(np.float32(a_scale) / np.float32(y_scale))
    mb = float(np.float32(b_scale) / np.float32(y_scale))
    big = max(ma, mb)
    if not np.isfinite(big) or big >= 2.0 ** 16:
        raise QuantisationError(f"add rescale factors {ma!r}, {mb!r} are too large (>= 2**16)")
    exp = int(np.frexp(big)[1])                 # big < 2**exp
    shift = MANTISSA_BITS - exp
    if shift > SHIFT_MAX - 1:
        raise QuantisationError(f"add rescale factors {ma!r}, {mb!r} are too small")
    return AddRescale(int(np.rint(ma * 2.0 ** shift)), int(np.rint(mb * 2.0 ** shift)), shift)


def requantize_add(qa, a_zp, qb, b_zp, rescale: AddRescale, y_zp, dtype="int8", *, lo=None, hi=None):
    """Residual add: ``sat(y_zp + rne(((qa - a_zp)*ia + (qb - b_zp)*ib) / 2**shift))``."""
    qtype = _qtype(dtype)
    total = ((np.asarray(qa, np.int64) - a_zp) * rescale.a_mult
             + (np.asarray(qb, np.int64) - b_zp) * rescale.b_mult)
    magnitude = round_half_even_shift(np.abs(total), rescale.shift)
    out = np.sign(total) * magnitude + y_zp
    return _saturate(out, qtype, lo, hi).astype(qtype.np_dtype)


def avgpool_multiplier(x_scale, y_scale, count) -> np.ndarray:
    """Multiplier of an average over ``count`` elements: ``f32(f32(x_scale / y_scale) / count)``."""
    ratio = np.float32(x_scale) / np.float32(y_scale)
    return (ratio / np.asarray(count, dtype=np.float32)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# Float <-> integer


def quantize(x, qparams: QParams, axis=None) -> np.ndarray:
    """ONNX QuantizeLinear: ``sat(rne(x / scale) + zp)`` in float32; NaN/inf inputs are refused."""
    x = np.asarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise QuantisationError("cannot quantise NaN or infinite values")
    scale, zp = qparams.scale, qparams.zero_point
    if axis is not None and scale.ndim == 1:
        bshape = [1] * x.ndim
        bshape[axis] = -1
        scale, zp = scale.reshape(bshape), zp.reshape(bshape)
    q = np.rint(x / scale).astype(np.int64) + zp
    return _saturate(q, qparams.dtype).astype(qparams.dtype.np_dtype)


def dequantize(q, qparams: QParams, axis=None) -> np.ndarray:
    """ONNX DequantizeLinear: ``(q - zp) * scale`` in float32."""
    scale, zp = qparams.scale, qparams.zero_point
    q = np.asarray(q)
    if axis is not None and scale.ndim == 1:
        bshape = [1] * q.ndim
        bshape[axis] = -1
        scale, zp = scale.reshape(bshape), zp.reshape(bshape)
    return ((q.astype(np.int64) - zp).astype(np.float32) * scale).astype(np.float32)


def choose_qparams(lo, hi, dtype="int8", symmetric=False) -> QParams:
    """Scale and zero point covering ``[lo, hi]`` (always including 0), as post-training quantisation does."""
    qtype = _qtype(dtype)
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise QuantisationError(f"calibration range [{lo}, {hi}] is not finite")
    if symmetric:
        bound = max(-lo, hi)
        scale = bound / ((qtype.hi - qtype.lo) / 2) if bound > 0 else 1.0
        zp = 0 if qtype.lo < 0 else (qtype.hi + 1) // 2
    else:
        scale = (hi - lo) / (qtype.hi - qtype.lo) if hi > lo else 1.0
        zp = int(np.clip(np.rint(qtype.lo - lo / scale), qtype.lo, qtype.hi))
    return QParams(np.float32(max(scale, 1e-12)), zp, qtype)


def quantize_bias(bias, x_scale, w_scale) -> np.ndarray:
    """int32 bias at scale ``x_scale * w_scale`` (per channel when the weights are), as ONNX expects."""
    scale = (np.float32(x_scale) * np.asarray(w_scale, dtype=np.float32)).astype(np.float32)
    q = np.rint(np.asarray(bias, dtype=np.float64) / scale.astype(np.float64))
    if np.any(np.abs(q) >= 2**31):
        raise QuantisationError("bias does not fit in int32 at scale x_scale*w_scale")
    return q.astype(np.int32)
