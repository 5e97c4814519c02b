"""Hypothesis strategies for random single-layer graphs within a hardware configuration's limits.

Everything the RTL parameterises is drawn: kernel, stride, asymmetric padding, groups (dense, grouped,
depthwise), 1-D convs, widths, channel counts on both sides of the array size, input/output types and
zero points, per-tensor or per-channel weight scales, bias, fused clamps; plus dense, max/avg/global
pooling and residual adds. Scales are drawn so requantisation multipliers span many binades.
"""

import numpy as np
from hypothesis import strategies as st

from scalenet.ir import Add, AvgPool, Conv, Dense, GlobalAvgPool, Graph, MaxPool, Tensor
from scalenet.quant import QParams

__all__ = ["layers"]


def _qtype(draw):
    dtype = draw(st.sampled_from(["uint8", "int8"]))
    lo, hi = (0, 255) if dtype == "uint8" else (-128, 127)
    zp = draw(st.integers(lo, hi))
    return dtype, zp


def _act_q(draw, scale=None):
    dtype, zp = _qtype(draw)
    if scale is None:
        scale = np.float32(2.0 ** draw(st.floats(-8, 2)))
    return QParams(scale, zp, dtype)


def _clamp(draw, q):
    if not draw(st.booleans()):
        return None, None
    lo = int(q.zero_point)  # ReLU: real 0
    hi = draw(st.sampled_from([None, min(q.dtype.hi, lo + draw(st.integers(1, 200)))]))
    return lo, hi


@st.composite
def conv_layer(draw, cfg):
    one_d = draw(st.booleans()) and draw(st.booleans())
    cin = draw(st.integers(1, 2 * cfg.cols + 3))
    mode = draw(st.sampled_from(["dense", "dense", "depthwise", "grouped"]))
    if mode == "depthwise":
        groups, cout = cin, cin
    elif mode == "grouped":
        groups = draw(st.sampled_from([g for g in (2, 3, 4) if cin % g == 0] or [1]))
        cout = groups * draw(st.integers(1, 4))
    else:
        groups, cout = 1, draw(st.integers(1, 2 * cfg.rows + 3))
    k_choices = [k for k in (1, 2, 3, 5, 7) if k <= cfg.max_kernel]
    kh = 1 if one_d else draw(st.sampled_from(k_choices))
    kw = draw(st.sampled_from(k_choices))
    sh = 1 if one_d else draw(st.integers(1, min(2, cfg.max_stride)))
    sw = draw(st.integers(1, min(2, cfg.max_stride)))
    pads = [draw(st.integers(0, k - 1)) for k in ((kh, kw) * 2)]
    h = 1 if one_d else draw(st.integers(max(1, kh - pads[0] - pads[2]), 12))
    w = draw(st.integers(max(1, kw - pads[1] - pads[3]), min(14, cfg.max_width)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x_q = _act_q(draw)
    per_channel = draw(st.booleans())
    w_scale = np.exp2(np.asarray(rng.uniform(-9, -3, cout if per_channel else None))).astype(np.float32)
    w_q = QParams(w_scale, np.zeros(cout, np.int64) if per_channel else 0, "int8")
    weight = rng.integers(-128, 128, (cout, cin // groups, kh, kw)).astype(np.int8)
    bias = rng.integers(-2**14, 2**14, cout).astype(np.int32)
    y_q = _act_q(draw)
    lo, hi = _clamp(draw, y_q)
    if one_d:
        weight, in_shape = weight[:, :, 0, :], (cin, w)
        stride, pads = (sw,), (pads[1], pads[3])
    else:
        in_shape, stride = (cin, h, w), (sh, sw)
    layer = Conv(name="conv", inputs=["x"], output="y", weight=weight, w_q=w_q, bias=bias, stride=stride,
                 pads=tuple(pads), dilation=(1,) * len(stride), groups=groups, lo=lo, hi=hi)
    return _graph(layer, (in_shape, x_q), y_q, rng)


@st.composite
def dense_layer(draw, cfg):
    fin, fout = draw(st.integers(1, 70)), draw(st.integers(1, 20))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x_q, y_q = _act_q(draw), _act_q(draw)
    w_q = QParams(np.float32(2.0 ** rng.uniform(-9, -4)), 0, "int8")
    lo, hi = _clamp(draw, y_q)
    layer = Dense(name="dense", inputs=["x"], output="y", weight=rng.integers(-128, 128, (fout, fin)).astype(np.int8),
                  w_q=w_q, bias=rng.integers(-2**14, 2**14, fout).astype(np.int32), lo=lo, hi=hi)
    return _graph(layer, ((fin,), x_q), y_q, rng)


@st.composite
def pool_layer(draw, cfg):
    kind = draw(st.sampled_from(["max", "avg", "gap"]))
    c = draw(st.integers(1, 2 * cfg.cols + 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x_q = _act_q(draw)
    if kind == "gap":
        h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
        return _graph(GlobalAvgPool(name="gap", inputs=["x"], output="y"), ((c, h, w), x_q), _act_q(draw), rng)
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    s = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = tuple(draw(st.integers(0, kk - 1)) for kk in k * 2)
    h, w = draw(st.integers(k[0], 11)), draw(st.integers(k[1], 13))
    if kind == "max":
        layer = MaxPool(name="pool", inputs=["x"], output="y", kernel=k, stride=s, pads=pads)
        return _graph(layer, ((c, h, w), x_q), x_q, rng)
    layer = AvgPool(name="pool", inputs=["x"], output="y", kernel=k, stride=s, pads=pads,
                    count_include_pad=draw(st.booleans()))
    return _graph(layer, ((c, h, w), x_q), _act_q(draw), rng)


@st.composite
def add_layer(draw, cfg):
    """A residual add: ``y = x + conv1x1(x)`` (the graph has one input), the add being the layer tested."""
    c, h, w = draw(st.integers(1, 2 * cfg.cols + 3)), draw(st.integers(1, 8)), draw(st.integers(1, 10))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x_q = _act_q(draw)
    zp_lo, zp_hi = x_q.dtype.lo, x_q.dtype.hi  # one input type for both (as ONNX QLinearAdd)
    b_q = QParams(np.float32(2.0 ** draw(st.floats(-8, 2))), draw(st.integers(zp_lo, zp_hi)), x_q.dtype.name)
    branch = Conv(name="branch", inputs=["x"], output="b", weight=rng.integers(-128, 128, (c, c, 1, 1)).astype(np.int8),
                  w_q=QParams(np.float32(2.0 ** rng.uniform(-9, -4)), 0, "int8"))
    y_q = _act_q(draw)
    lo, hi = _clamp(draw, y_q)
    add = Add(name="add", inputs=["x", "b"], output="y", lo=lo, hi=hi)
    return _graph([branch, add], ((c, h, w), x_q), {"b": b_q, "y": y_q}, rng)


def _graph(layers, x, out_q, rng):
    """A graph of ``layers`` on input ``x`` = (shape, q); ``out_q`` gives each produced tensor's q."""
    if not isinstance(layers, list):
        layers, out_q = [layers], {"y": out_q}
    shape, q = x
    tensors = {"x": Tensor("x", shape, q)}
    for layer in layers:
        out_shape = layer.out_shape([tensors[i].shape for i in layer.inputs])
        tensors[layer.output] = Tensor(layer.output, out_shape, out_q[layer.output])
    graph = Graph(layers[-1].name, tensors, layers, ["x"], ["y"])
    return graph, rng.integers(q.dtype.lo, q.dtype.hi + 1, (2, *shape)).astype(q.dtype.np_dtype)


def layers(cfg):
    """Random (graph, batch of 2 inputs) pairs for ``cfg``; conv layers drawn most often."""
    return st.one_of(conv_layer(cfg), conv_layer(cfg), conv_layer(cfg), dense_layer(cfg), pool_layer(cfg),
                     add_layer(cfg))
