"""Reference kernels in numpy: integer-exact, and fast enough to be the CPU path's baseline.

Integer convolutions and matrix products run through float32 BLAS, which is exact while every partial
sum stays below 2**24; the reduction is split into chunks that guarantee it and the chunks are summed in
int64. The same functions accept float32 tensors (calibration, float accuracy) and then skip the split.

Tensors are NCHW (2-D) or NCW (1-D); weights OIHW / OIW. Pads are ONNX order: begins then ends.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import ShapeError

__all__ = [
    "conv_output_size", "pool_output_size",
    "conv", "dense", "max_pool", "avg_pool", "global_avg_pool",
]

_EXACT_F32 = 2 ** 24


def conv_output_size(size, kernel, stride, pad_begin, pad_end, dilation=1):
    extent = (kernel - 1) * dilation + 1
    span = size + pad_begin + pad_end - extent
    if span < 0:
        raise ShapeError(f"kernel extent {extent} is larger than the padded input {size + pad_begin + pad_end}")
    return span // stride + 1


def pool_output_size(size, kernel, stride, pad_begin, pad_end, dilation=1, ceil_mode=False):
    """ONNX pooling output size; with ceil_mode the last window must start inside input + begin pad."""
    extent = (kernel - 1) * dilation + 1
    span = size + pad_begin + pad_end - extent
    if span < 0:
        raise ShapeError(f"pool window {extent} is larger than the padded input {size + pad_begin + pad_end}")
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= size + pad_begin:
        out -= 1
    return out


def _as_2d(x, w=None):
    """View 1-D (NCW) operands as 2-D (NC1W)."""
    if x.ndim == 3:
        return x[:, :, None, :], (None if w is None else w[:, :, None, :]), True
    if x.ndim != 4:
        raise ShapeError(f"expected an NCW or NCHW tensor, got shape {x.shape}")
    return x, w, False


def _pairs(value, n=2):
    if np.isscalar(value):
        return (int(value),) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ShapeError(f"expected {n} values, got {value}")
    return value


def _spatial_args(one_d, kernel_shape, stride, pads, dilation):
    """Normalise stride/pads/dilation to 2-D (a 1-D op gets a unit H axis)."""
    if one_d:
        stride = (1, _pairs(stride, 1)[0])
        dilation = (1, _pairs(dilation, 1)[0])
        begin, end = _pairs(pads, 2)
        pads = (0, begin, 0, end)
        return stride, pads, dilation
    stride = _pairs(stride)
    dilation = _pairs(dilation)
    pads = (int(pads),) * 4 if np.isscalar(pads) else tuple(int(p) for p in pads)
    if len(pads) != 4:
        raise ShapeError(f"2-D pads need 4 values (top, left, bottom, right), got {pads}")
    return stride, pads, dilation


def _windows(xp, kh, kw, sh, sw, dh, dw, oh, ow):
    """(N, C, OH, OW, KH, KW) strided view of a padded NCHW array."""
    n, c, _, _ = xp.shape
    s = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, shape=(n, c, oh, ow, kh, kw),
        strides=(s[0], s[1], s[2] * sh, s[3] * sw, s[2] * dh, s[3] * dw), writeable=False)


def _exact_matmul(a, b, bound_a, bound_b):
    """``a @ b`` with an exact int64 result, via float32 BLAS in chunks of the reduction axis small
    enough that no partial sum reaches 2**24 (``bound_*`` bound the operands' magnitudes)."""
    k = a.shape[-1]
    worst = max(int(bound_a) * int(bound_b), 1)
    chunk = max(1, (_EXACT_F32 - 1) // worst)
    if k <= chunk:
        return np.matmul(a.astype(np.float32, copy=False), b.astype(np.float32, copy=False)).astype(np.int64)
    out = None
    for start in range(0, k, chunk):
        part = np.matmul(a[..., start:start + chunk].astype(np.float32),
                         b[start:start + chunk].astype(np.float32)).astype(np.int64)
        out = part if out is None else out + part
    return out


def _integer(x):
    return np.issubdtype(np.asarray(x).dtype, np.integer)


def conv(x, w, bias=None, stride=1, pads=0, dilation=1, groups=1, x_zero_point=0, w_zero_point=0):
    """N-D (1-D or 2-D) convolution. Integer inputs give the exact int64 accumulator
    ``sum((x - x_zp) * (w - w_zp)) + bias``, padding filled with ``x_zp``; float inputs give float32.
    ``w_zero_point`` may be per output channel.
    """
    x = np.asarray(x)
    w = np.asarray(w)
    x4, w4, one_d = _as_2d(x, w)
    if w4.ndim != 4:
        raise ShapeError(f"weight of shape {w.shape} does not match input of shape {x.shape}")
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = _spatial_args(one_d, w.shape[2:], stride, pads, dilation)
    n, c, h, wd = x4.shape
    co, cig, kh, kw = w4.shape
    if groups < 1 or c % groups or co % groups or cig * groups != c:
        raise ShapeError(f"conv: {c} input channels, {co} outputs and weight {w.shape} do not fit groups={groups}")
    oh = conv_output_size(h, kh, sh, pt, pb, dh)
    ow = conv_output_size(wd, kw, sw, pl, pr, dw)
    exact = _integer(x) and _integer(w)
    if exact:
        xs = x4.astype(np.int32) - np.int32(x_zero_point)
        wzp = np.asarray(w_zero_point, dtype=np.int32)
        ws = w4.astype(np.int32) - (wzp.reshape(-1, 1, 1, 1) if wzp.ndim == 1 else wzp)
    else:
        xs, ws = x4.astype(np.float32), w4.astype(np.float32)
    if exact:
        xs = xs.astype(np.float32)          # every value is exact in float32; the sums are split below
    xp = np.pad(xs, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    s = xp.strides
    # (N, C, KH, KW, OH, OW) view: per group, ``weight (O, C*KH*KW) @ patches (C*KH*KW, OH*OW)`` gives
    # the output already in (O, OH*OW) order — the fastest layout for BLAS here.
    cols = np.lib.stride_tricks.as_strided(
        xp, shape=(n, c, kh, kw, oh, ow),
        strides=(s[0], s[1], s[2] * dh, s[3] * dw, s[2] * sh, s[3] * sw), writeable=False)
    cog = co // groups
    out = np.empty((n, co, oh * ow), dtype=np.int64 if exact else np.float32)
    for g in range(groups):
        wg = ws[g * cog:(g + 1) * cog].reshape(cog, -1)
        if exact:
            bound_w = int(np.abs(wg).max(initial=0))
            wg = wg.astype(np.float32)
        for i in range(n):
            patch = cols[i, g * cig:(g + 1) * cig].reshape(cig * kh * kw, oh * ow)
            if exact:
                bound_x = int(np.abs(xs[i, g * cig:(g + 1) * cig]).max(initial=0))
                out[i, g * cog:(g + 1) * cog] = _exact_matmul(wg, patch, bound_w, bound_x)
            else:
                out[i, g * cog:(g + 1) * cog] = wg @ patch
    out = out.reshape(n, co, oh, ow)
    if bias is not None:
        out = out + np.asarray(bias).astype(out.dtype).reshape(1, -1, 1, 1)
    return out[:, :, 0, :] if one_d else out


def dense(x, w, bias=None, x_zero_point=0, w_zero_point=0):
    """Fully connected: ``x (N, K) @ w (M, K).T + bias``; exact int64 for integer inputs."""
    x = np.asarray(x)
    w = np.asarray(w)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ShapeError(f"dense: input {x.shape} and weight {w.shape} do not match (need (N, K) and (M, K))")
    if _integer(x) and _integer(w):
        xs = x.astype(np.int32) - np.int32(x_zero_point)
        wzp = np.asarray(w_zero_point, dtype=np.int32)
        ws = w.astype(np.int32) - (wzp.reshape(-1, 1) if wzp.ndim == 1 else wzp)
        out = _exact_matmul(xs, ws.T, np.abs(xs).max(initial=0), np.abs(ws).max(initial=0))
    else:
        out = np.matmul(x.astype(np.float32), w.astype(np.float32).T)
    if bias is not None:
        out = out + np.asarray(bias).astype(out.dtype)
    return out


def _pool_geometry(x, kernel, stride, pads, dilation, ceil_mode):
    x4, _, one_d = _as_2d(np.asarray(x))
    kernel = (1, _pairs(kernel, 1)[0]) if one_d else _pairs(kernel)
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = _spatial_args(one_d, kernel, stride, pads, dilation)
    kh, kw = kernel
    n, c, h, wd = x4.shape
    oh = pool_output_size(h, kh, sh, pt, pb, dh, ceil_mode)
    ow = pool_output_size(wd, kw, sw, pl, pr, dw, ceil_mode)
    # Extra room at the end for ceil_mode windows that run past the end pad.
    eh = max(0, (oh - 1) * sh + (kh - 1) * dh + 1 - (h + pt + pb))
    ew = max(0, (ow - 1) * sw + (kw - 1) * dw + 1 - (wd + pl + pr))
    return x4, one_d, (kh, kw, sh, sw, dh, dw, oh, ow), (pt, pl, pb, pr, eh, ew)


def max_pool(x, kernel, stride=1, pads=0, dilation=1, ceil_mode=False):
    """Max pooling; padding never wins (it is ignored, as in ONNX)."""
    x = np.asarray(x)
    x4, one_d, (kh, kw, sh, sw, dh, dw, oh, ow), (pt, pl, pb, pr, eh, ew) = _pool_geometry(
        x, kernel, stride, pads, dilation, ceil_mode)
    low = np.iinfo(x.dtype).min if _integer(x) else -np.inf
    xp = np.pad(x4, ((0, 0), (0, 0), (pt, pb + eh), (pl, pr + ew)), constant_values=low)
    out = _windows(xp, kh, kw, sh, sw, dh, dw, oh, ow).max(axis=(4, 5))
    out = np.ascontiguousarray(out)
    return out[:, :, 0, :] if one_d else out


def avg_pool(x, kernel, stride=1, pads=0, count_include_pad=False, ceil_mode=False, x_zero_point=0):
    """Average pooling. Integer input: returns ``(sum of (x - x_zp), count)`` per output, int64, for the
    caller to requantise; float input: the float32 mean. The count includes explicit pads when asked,
    never the ceil_mode overhang (as onnxruntime does).
    """
    x = np.asarray(x)
    x4, one_d, (kh, kw, sh, sw, dh, dw, oh, ow), (pt, pl, pb, pr, eh, ew) = _pool_geometry(
        x, kernel, stride, pads, 1, ceil_mode)
    exact = _integer(x)
    xs = x4.astype(np.int64) - x_zero_point if exact else x4.astype(np.float32)
    n, c, h, wd = x4.shape
    xp = np.pad(xs, ((0, 0), (0, 0), (pt, pb + eh), (pl, pr + ew)))
    total = _windows(xp, kh, kw, sh, sw, dh, dw, oh, ow).sum(axis=(4, 5))
    mask = np.zeros((1, 1, h + pt + pb + eh, wd + pl + pr + ew), dtype=np.int64)
    if count_include_pad:
        mask[..., :h + pt + pb, :wd + pl + pr] = 1
    else:
        mask[..., pt:pt + h, pl:pl + wd] = 1
    count = _windows(mask, kh, kw, sh, sw, dh, dw, oh, ow).sum(axis=(4, 5))
    count = np.broadcast_to(count, total.shape)
    if one_d:
        total, count = total[:, :, 0, :], count[:, :, 0, :]
    if exact:
        return np.ascontiguousarray(total), np.ascontiguousarray(count)
    return (total / count).astype(np.float32)


def global_avg_pool(x, x_zero_point=0):
    """Global average over all spatial axes: ``(sum, count)`` for integers, float32 mean for floats."""
    x = np.asarray(x)
    axes = tuple(range(2, x.ndim))
    count = int(math.prod(x.shape[2:]))
    if _integer(x):
        total = (x.astype(np.int64) - x_zero_point).sum(axis=axes, keepdims=True)
        return total, count
    return x.astype(np.float32).mean(axis=axes, keepdims=True, dtype=np.float64).astype(np.float32)
