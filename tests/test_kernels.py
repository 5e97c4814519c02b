"""Reference kernels against direct loops, and the exact-BLAS split at its limits."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from scalenet import kernels
from scalenet.errors import ShapeError


def naive_conv(x, w, stride, pads, dilation, groups, xzp=0, wzp=0):
    n, c, h, wd = x.shape
    co, cig, kh, kw = w.shape
    pt, pl, pb, pr = pads
    xp = np.full((n, c, h + pt + pb, wd + pl + pr), xzp, dtype=np.int64)
    xp[:, :, pt:pt + h, pl:pl + wd] = x
    oh = (h + pt + pb - (kh - 1) * dilation[0] - 1) // stride[0] + 1
    ow = (wd + pl + pr - (kw - 1) * dilation[1] - 1) // stride[1] + 1
    out = np.zeros((n, co, oh, ow), dtype=np.int64)
    cog = co // groups
    for o in range(co):
        g = o // cog
        for i in range(oh):
            for j in range(ow):
                win = xp[:, g * cig:(g + 1) * cig, i * stride[0]:i * stride[0] + (kh - 1) * dilation[0] + 1:dilation[0],
                         j * stride[1]:j * stride[1] + (kw - 1) * dilation[1] + 1:dilation[1]]
                out[:, o, i, j] = ((win - xzp) * (w[o].astype(np.int64) - wzp)).sum(axis=(1, 2, 3))
    return out


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_conv2d_matches_direct_loop(data):
    groups = data.draw(st.sampled_from([1, 2, 3]))
    cig = data.draw(st.integers(1, 3))
    cog = data.draw(st.integers(1, 3))
    kh, kw = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    sh, sw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    dh, dw = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))
    pads = tuple(data.draw(st.integers(0, 2)) for _ in range(4))
    h = data.draw(st.integers((kh - 1) * dh + 1, 9))
    w_ = data.draw(st.integers((kw - 1) * dw + 1, 9))
    unsigned = data.draw(st.booleans())
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1)))
    x = rng.integers(0, 256, (2, cig * groups, h, w_)).astype(np.uint8) if unsigned else \
        rng.integers(-128, 128, (2, cig * groups, h, w_)).astype(np.int8)
    xzp = int(rng.integers(0, 256)) if unsigned else int(rng.integers(-128, 128))
    w = rng.integers(-128, 128, (cog * groups, cig, kh, kw)).astype(np.int8)
    bias = rng.integers(-1000, 1000, cog * groups).astype(np.int32)
    got = kernels.conv(x, w, bias, (sh, sw), pads, (dh, dw), groups, xzp)
    want = naive_conv(x, w, (sh, sw), pads, (dh, dw), groups, xzp) + bias.reshape(1, -1, 1, 1)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)


def test_conv_exact_beyond_float32_mantissa():
    """K = 4608 extreme products sum to ~1.5e8 > 2**24: the chunked BLAS path stays exact."""
    x = np.full((1, 512, 3, 3), 255, dtype=np.uint8)
    x[0, ::7] = 0
    w = np.full((4, 512, 3, 3), -128, dtype=np.int8)
    w[1] = 127
    w[2, ::3] = 127
    got = kernels.conv(x, w, None, 1, 0, 1, 1, x_zero_point=0)
    want = naive_conv(x, w, (1, 1), (0, 0, 0, 0), (1, 1), 1)
    assert abs(int(want.min())) > 2 ** 24
    np.testing.assert_array_equal(got, want)
    # Without the split the float32 result would be wrong for this input: the test can see it.
    wrong = (x.reshape(1, -1).astype(np.float32) - 1.0) @ (w.reshape(4, -1).astype(np.float32).T + 0.0)
    assert not np.array_equal(wrong.astype(np.int64).ravel(), (naive_conv(x.astype(np.int64) - 1, w, (1, 1), (0, 0, 0, 0), (1, 1), 1)).ravel())


def test_conv1d_is_conv2d_with_unit_height():
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (2, 4, 30)).astype(np.int8)
    w = rng.integers(-128, 128, (6, 2, 5)).astype(np.int8)
    got = kernels.conv(x, w, None, 2, (1, 3), 2, 2, x_zero_point=-5)
    want = naive_conv(x[:, :, None], w[:, :, None], (1, 2), (0, 1, 0, 3), (1, 2), 2, -5)[:, :, 0]
    np.testing.assert_array_equal(got, want)


def test_dense_with_per_channel_weight_zero_point():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (3, 700)).astype(np.uint8)
    w = rng.integers(0, 256, (5, 700)).astype(np.uint8)
    wzp = rng.integers(0, 256, 5)
    got = kernels.dense(x, w, np.arange(5), x_zero_point=128, w_zero_point=wzp)
    want = (x.astype(np.int64) - 128) @ (w.astype(np.int64) - wzp[:, None]).T + np.arange(5)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kernel, stride, pads, ceil", [
    ((2, 2), (2, 2), (0, 0, 0, 0), False), ((3, 3), (2, 2), (1, 1, 1, 1), False),
    ((3, 3), (2, 2), (0, 0, 0, 0), True), ((2, 3), (1, 2), (0, 1, 1, 0), True)])
def test_pools_match_direct_loops(kernel, stride, pads, ceil):
    rng = np.random.default_rng(2)
    x = rng.integers(-128, 128, (2, 3, 7, 8)).astype(np.int8)
    kh, kw = kernel
    pt, pl, pb, pr = pads
    mx = kernels.max_pool(x, kernel, stride, pads, 1, ceil)
    total, count = kernels.avg_pool(x, kernel, stride, pads, False, ceil, x_zero_point=-3)
    total_inc, count_inc = kernels.avg_pool(x, kernel, stride, pads, True, ceil, x_zero_point=-3)
    for i in range(mx.shape[2]):
        for j in range(mx.shape[3]):
            r0, c0 = i * stride[0] - pt, j * stride[1] - pl
            rows = [r for r in range(r0, r0 + kh) if 0 <= r < 7]
            cols = [c for c in range(c0, c0 + kw) if 0 <= c < 8]
            win = x[:, :, rows][:, :, :, cols].astype(np.int64)
            np.testing.assert_array_equal(mx[:, :, i, j], win.max(axis=(2, 3)))
            np.testing.assert_array_equal(total[:, :, i, j], (win + 3).sum(axis=(2, 3)))
            assert np.all(count[:, :, i, j] == len(rows) * len(cols))
            rows_p = [r for r in range(r0, r0 + kh) if -pt <= r < 7 + pb]
            cols_p = [c for c in range(c0, c0 + kw) if -pl <= c < 8 + pr]
            assert np.all(count_inc[:, :, i, j] == len(rows_p) * len(cols_p))
            np.testing.assert_array_equal(total_inc[:, :, i, j], total[:, :, i, j])


def test_global_avg_pool_and_float_paths():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (2, 4, 5, 5)).astype(np.uint8)
    total, count = kernels.global_avg_pool(x, 10)
    assert count == 25
    np.testing.assert_array_equal(total[..., 0, 0], (x.astype(np.int64) - 10).sum(axis=(2, 3)))
    xf = rng.normal(size=(1, 2, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(kernels.global_avg_pool(xf)[..., 0, 0], xf.mean(axis=(2, 3)), rtol=1e-6)
    wf = rng.normal(size=(3, 2, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(kernels.conv(xf, wf, pads=1),
                               naive_conv_float(xf, wf), rtol=1e-5, atol=1e-5)


def naive_conv_float(x, w):
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))).astype(np.float64)
    out = np.zeros((1, w.shape[0], x.shape[2], x.shape[3]))
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            out[:, :, i, j] = np.einsum("nchw,ochw->no", xp[:, :, i:i + 3, j:j + 3], w)
    return out


def test_bad_shapes_are_named():
    with pytest.raises(ShapeError, match="groups"):
        kernels.conv(np.zeros((1, 3, 5, 5), np.int8), np.zeros((4, 2, 3, 3), np.int8), groups=2)
    with pytest.raises(ShapeError, match="larger"):
        kernels.conv(np.zeros((1, 1, 2, 2), np.int8), np.zeros((1, 1, 3, 3), np.int8))
    with pytest.raises(ShapeError, match="dense"):
        kernels.dense(np.zeros((1, 4), np.int8), np.zeros((2, 5), np.int8))
