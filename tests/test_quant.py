"""The integer requantisation is proved equal to onnxruntime's float32 definition."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from scalenet.errors import QuantisationError
from scalenet.quant import (
    QParams, add_rescale, avgpool_multiplier, choose_qparams, decode_multiplier, dequantize,
    encode_multiplier, quantize, quantize_bias, requant_multiplier, requantize, requantize_add,
    requantize_float32, round_half_even_shift,
)

MULTIPLIERS = [np.float32(m) for m in (1.0, 0.5, 0.25, 1 / 3, 0.0123, 2.0 ** -20, 3.7e-5, 7.5, 255.9,
                                         0.0078125 * 0.031, 2.0 ** -31, 6.1e-8, 0.9999999)]


@pytest.mark.parametrize("m", MULTIPLIERS, ids=lambda m: f"{float(m):.3g}")
def test_integer_equals_float32_on_every_small_accumulator(m):
    acc = np.arange(-(2 ** 20), 2 ** 20, dtype=np.int64)
    for zp, dtype in ((0, "int8"), (-17, "int8"), (128, "uint8"), (3, "uint8")):
        np.testing.assert_array_equal(requantize(acc, m, zp, dtype), requantize_float32(acc, m, zp, dtype))


def test_integer_equals_float32_across_int32_and_multiplier_range():
    rng = np.random.default_rng(1)
    for _ in range(60):
        m = np.float32(np.exp(rng.uniform(np.log(2.0 ** -34), np.log(60000.0))))
        acc = np.concatenate([rng.integers(-(2 ** 31), 2 ** 31, 50_000),
                              rng.integers(-(2 ** 25), 2 ** 25, 50_000),
                              [-(2 ** 31), 2 ** 31 - 1, 2 ** 24, 2 ** 24 + 1, -(2 ** 24) - 3]])
        zp = int(rng.integers(-128, 128))
        np.testing.assert_array_equal(requantize(acc, m, zp), requantize_float32(acc, m, zp))


@settings(max_examples=300, deadline=None)
@given(acc=st.integers(-(2 ** 31), 2 ** 31 - 1),
       m=st.floats(2.0 ** -40, 60000.0, allow_nan=False, allow_infinity=False, width=32),
       zp=st.integers(-128, 127), lo=st.none() | st.integers(-128, 127))
def test_integer_equals_float32_property(acc, m, zp, lo):
    assert requantize([acc], m, zp, lo=lo)[0] == requantize_float32([acc], m, zp, lo=lo)[0]


def test_double_rounding_is_reproduced_where_exact_rounding_differs():
    """Rounding the exact product differs from onnxruntime on some inputs; requantize follows ORT."""
    rng = np.random.default_rng(7)
    differ = 0
    for _ in range(10):
        m = np.float32(rng.uniform(1e-7, 3e-6))
        acc = rng.integers(2 ** 24, 2 ** 26, 200_000)
        mant, shift = encode_multiplier(m)
        exact = np.clip(round_half_even_shift(acc * mant, shift), -128, 127)   # exact rational rounding
        ours = requantize(acc, m, 0).astype(np.int64)
        differ += int((exact != ours).sum())
        np.testing.assert_array_equal(ours, requantize_float32(acc, m, 0))
    assert differ > 0


def test_ties_round_half_to_even():
    acc = np.array([1, 3, 5, -1, -3, -5, 7])
    assert list(requantize(acc, np.float32(0.5))) == [0, 2, 2, 0, -2, -2, 4]
    assert list(round_half_even_shift(np.array([1, 2, 3, 6, 10, 11]), 2)) == [0, 0, 1, 2, 2, 3]
    assert list(round_half_even_shift(np.array([5, 0]), 0)) == [5, 0]


def test_per_channel_and_clamp_bounds():
    acc = np.arange(-600, 600).reshape(2, 3, 200)
    m = np.array([0.5, 0.25, 1.0], dtype=np.float32)
    ours = requantize(acc, m, 5, lo=5, hi=100, axis=1)
    assert ours.min() == 5 and ours.max() == 100
    np.testing.assert_array_equal(ours, requantize_float32(acc, m, 5, lo=5, hi=100, axis=1))


def test_multiplier_encoding_round_trips_and_zero():
    ms = np.array([2.0 ** -32, 0.3, 1.0, 65535.0, 1e-3], dtype=np.float32)
    mant, shift = encode_multiplier(ms)
    np.testing.assert_array_equal(decode_multiplier(mant, shift), ms)
    assert np.all((mant >= 2 ** 23) & (mant < 2 ** 24))
    mant, shift = encode_multiplier(np.float32(1e-12))
    assert mant == 0
    assert requantize([2 ** 31 - 1], np.float32(1e-12))[0] == 0


@pytest.mark.parametrize("bad", [65536.0, -1.0, float("nan"), float("inf")])
def test_bad_multiplier_is_refused(bad):
    with pytest.raises(QuantisationError):
        encode_multiplier(np.float32(bad))


def test_multiplier_is_float32_in_onnxruntime_order():
    xs, ws, ys = np.float32(0.0173), np.float32(0.00391), np.float32(0.0911)
    assert requant_multiplier(xs, ws, ys) == np.float32(np.float32(xs * ws) / ys)
    assert requant_multiplier(xs, ws, ys).dtype == np.float32


def test_accumulator_overflow_is_an_error():
    with pytest.raises(QuantisationError, match="int32"):
        requantize([2 ** 31], np.float32(0.1))


@pytest.mark.parametrize("kwargs, match", [
    (dict(scale=0.0), "> 0"), (dict(scale=-1.0), "> 0"), (dict(scale=float("nan")), "finite"),
    (dict(scale=1.0, zero_point=200, dtype="int8"), "outside"), (dict(scale=1.0, zero_point=-1, dtype="uint8"), "outside"),
    (dict(scale=1.0, zero_point=0.5), "integer"), (dict(scale=1.0, dtype="float16"), "unsupported"),
])
def test_qparams_validation(kwargs, match):
    with pytest.raises(QuantisationError, match=match):
        QParams(**kwargs)


def test_quantize_refuses_nan_and_round_trips():
    q = QParams(0.1, 3, "int8")
    with pytest.raises(QuantisationError, match="NaN"):
        quantize(np.array([1.0, np.nan]), q)
    x = np.array([-12.8, -0.05, 0.05, 0.15, 12.4, 100.0], dtype=np.float32)
    assert list(quantize(x, q)) == [-125, 3, 3, 5, 127, 127]   # rne(-0.5) = rne(0.5) = 0, rne(1.5) = 2
    np.testing.assert_allclose(dequantize(quantize(x[:5], q), q), x[:5], atol=0.05 + 1e-6)


def test_choose_qparams_covers_range_and_zero():
    q = choose_qparams(-1.0, 3.0, "int8")
    assert quantize(np.float32(0.0), q) == q.zero_point
    assert quantize(np.float32(-1.0), q) == -128 and quantize(np.float32(3.0), q) == 127
    q = choose_qparams(0.5, 2.0, "uint8")
    assert q.zero_point == 0


def test_bias_quantisation():
    b = quantize_bias([0.5, -0.25], np.float32(0.1), np.array([0.01, 0.02], np.float32))
    assert b.dtype == np.int32 and list(b) == [500, -125]
    with pytest.raises(QuantisationError):
        quantize_bias([1e9], np.float32(1e-3), np.float32(1e-3))


def test_residual_add_matches_rational_arithmetic_within_the_multiplier_quantisation():
    rng = np.random.default_rng(3)
    for _ in range(20):
        sa, sb, sy = (np.float32(s) for s in rng.uniform(0.01, 0.2, 3))
        r = add_rescale(sa, sb, sy)
        assert 2 ** 23 <= max(r.a_mult, r.b_mult) < 2 ** 24
        qa = rng.integers(-128, 128, 500)
        qb = rng.integers(-128, 128, 500)
        out = requantize_add(qa, 3, qb, -2, r, 1).astype(np.int64)
        ref = [max(-128, min(127, 1 + round(Fraction(int(a - 3) * r.a_mult + int(b + 2) * r.b_mult, 2 ** r.shift))))
               for a, b in zip(qa, qb)]
        assert list(out) == ref
        real = (qa - 3) * float(sa) + (qb + 2) * float(sb)
        expect = np.clip(np.rint(real / float(sy)) + 1, -128, 127)
        assert np.abs(out - expect).max() <= 1


def test_avgpool_multiplier_is_float32():
    m = avgpool_multiplier(np.float32(0.1), np.float32(0.05), 9)
    assert m.dtype == np.float32 and m == np.float32(np.float32(np.float32(0.1) / np.float32(0.05)) / np.float32(9))
