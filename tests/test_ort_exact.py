"""Imported quantised ONNX layers give exactly onnxruntime's integers (CPU EP, one thread).

Weight range. On x86 CPUs without VNNI (this machine: AVX2 only), onnxruntime's u8 x s8 kernels multiply
with ``vpmaddubsw``, which adds pairs of u8*s8 products into *saturating int16*: with full-range int8
weights (|w| up to 128) and large activations the pair sum overflows and onnxruntime's accumulator is not
the true dot product (measured: 14 of 20 random u8s8 layers differ, by up to 163 LSB). onnxruntime
documents this and quantises weights to 7 bits (``reduce_range``) for that reason; its QDQ optimiser also
turns s8 activations into u8 on x86, so the same holds for fused QDQ models. The tests below therefore
draw weights in [-64, 63] whenever onnxruntime may run a u8s8 kernel; s8s8 QLinearConv/QLinearMatMul and
u8u8 layers are exact over the full range and are tested over it. SCALENet always computes the true
integer dot product.
"""

import numpy as np
import pytest

import scalenet
from scalenet.ir import AvgPool, Conv, Dense, GlobalAvgPool
from scalenet.quant import quantize, requantize_float32

from onnx_models import helper, make_model, ort_run, qdq_cnn, qlinearconv_model, qlinearmatmul_model, vinfo

ort = pytest.importorskip("onnxruntime")


def _rand_zp(rng, dtype):
    info = np.iinfo(dtype)
    return int(rng.integers(info.min, info.max + 1))


def _conv_case(seed):
    """A random QLinearConv layer: types, per-channel scales, groups/depthwise, strides, pads, dilations."""
    rng = np.random.default_rng(1000 + seed)
    x_dtype, w_dtype = [(np.uint8, np.int8), (np.int8, np.int8), (np.uint8, np.uint8)][seed % 3]
    one_d = seed % 7 == 3
    c_in = int(rng.choice([1, 2, 3, 4, 6, 8]))
    kind = ["dense", "groups", "depthwise", "depthwise_mult"][(seed // 3) % 4]
    if kind == "groups" and c_in % 2 == 0:
        groups = 2
    elif kind.startswith("depthwise"):
        groups = c_in
    else:
        groups = 1
    co = groups * (2 if kind == "depthwise_mult" else int(rng.integers(1, 4)))
    k = int(rng.integers(1, 4))
    dil = int(rng.integers(1, 3)) if seed % 5 == 0 else 1
    size = int(rng.integers((k - 1) * dil + 2, 13))
    nd = 1 if one_d else 2
    strides = tuple(int(s) for s in rng.integers(1, 3, nd))
    pads = tuple(int(p) for p in rng.integers(0, k, 2 * nd))          # asymmetric
    if w_dtype == np.int8 and x_dtype == np.uint8:
        lo, hi = -64, 64                                                # see the module docstring
    else:
        info = np.iinfo(w_dtype)
        lo, hi = info.min, info.max + 1
    w = rng.integers(lo, hi, (co, c_in // groups) + (k,) * nd).astype(w_dtype)
    per_channel = seed % 2 == 1
    w_scale = np.asarray(rng.uniform(0.001, 0.02, co if per_channel else None), np.float32)
    if w_dtype == np.uint8:                     # u8 weights carry a zero point (per channel when scales are)
        w_zp = rng.integers(100, 156, co if per_channel else ()).astype(np.uint8)
    else:
        w_zp = np.zeros(co if per_channel else (), np.int8)
    bias = rng.integers(-20000, 20000, co) if seed % 4 != 2 else None
    x_scale = np.float32(rng.uniform(0.002, 0.05))
    y_scale = np.float32(rng.uniform(0.02, 0.6))
    x_shape = (1, c_in) + (size,) * nd
    model = qlinearconv_model(x_shape, x_dtype, x_scale, _rand_zp(rng, x_dtype), w, w_scale, w_zp, y_scale,
                              _rand_zp(rng, x_dtype), bias, strides=strides, pads=pads, dilations=(dil,) * nd,
                              group=groups)
    info = np.iinfo(x_dtype)
    x = rng.integers(info.min, info.max + 1, (1,) + x_shape[1:]).astype(x_dtype)
    return model, x, dict(groups=groups, per_channel=per_channel, one_d=one_d)


@pytest.mark.parametrize("seed", range(36))
def test_qlinearconv_bit_exact(seed):
    model, x, info = _conv_case(seed)
    ref = ort_run(model, {"x": x})[0]
    graph = scalenet.load(model)
    (layer,) = graph.layers
    assert isinstance(layer, Conv) and layer.groups == info["groups"]
    assert layer.w_q.per_channel == (info["per_channel"] and layer.weight.shape[0] > 1) and layer.spatial_dims == (1 if info["one_d"] else 2)
    out = graph.run(x)["y"]
    assert out.dtype == ref.dtype and out.shape == ref.shape
    assert np.array_equal(out, ref), f"{np.count_nonzero(out != ref)} of {out.size} outputs differ"


def _matmul_case(seed):
    rng = np.random.default_rng(2000 + seed)
    a_dtype, b_dtype = [(np.uint8, np.int8), (np.int8, np.int8), (np.uint8, np.uint8)][seed % 3]
    k, n = int(rng.integers(1, 300)), int(rng.integers(1, 40))
    if a_dtype == np.uint8 and b_dtype == np.int8:
        b = rng.integers(-64, 64, (k, n)).astype(np.int8)
    else:
        info = np.iinfo(b_dtype)
        b = rng.integers(info.min, info.max + 1, (k, n)).astype(b_dtype)
    per_col = seed % 2 == 0
    b_scale = np.asarray(rng.uniform(0.001, 0.02, n if per_col else None), np.float32)
    if seed % 4 in (1, 2):           # weight zero points
        b_zp = np.asarray(rng.integers(-20, 20, n if per_col else ()) + (128 if b_dtype == np.uint8 else 0), b_dtype)
    else:
        b_zp = np.zeros(n if per_col else (), b_dtype)
    model = qlinearmatmul_model(k, a_dtype, rng.uniform(0.002, 0.05), _rand_zp(rng, a_dtype), b, b_scale, b_zp,
                                rng.uniform(0.05, 2.0), _rand_zp(rng, a_dtype))
    info = np.iinfo(a_dtype)
    a = rng.integers(info.min, info.max + 1, (1, k)).astype(a_dtype)
    return model, a


@pytest.mark.parametrize("seed", range(18))
def test_qlinearmatmul_bit_exact(seed):
    model, a = _matmul_case(seed)
    ref = ort_run(model, {"a": a})[0]
    graph = scalenet.load(model)
    assert [type(l) for l in graph.layers] == [Dense]
    out = graph.run(a)["y"]
    assert out.dtype == ref.dtype and out.shape == ref.shape
    assert np.array_equal(out, ref), f"{np.count_nonzero(out != ref)} of {out.size} outputs differ"


def test_random_layers_are_not_trivial():
    """The random layers produce varied outputs (a constant or saturated output would prove nothing)."""
    spread = []
    for seed in range(12):
        model, x, _ = _conv_case(seed)
        out = scalenet.load(model).run(x)["y"]
        spread.append(len(np.unique(out)))
    assert np.median(spread) >= 8, spread


def _with_outputs(model, names, dtype):
    for n in names:
        model.graph.output.append(vinfo(n, dtype, None))
    return model


@pytest.mark.parametrize("act_dtype", [np.uint8, np.int8])
def test_qdq_conv_relu_maxpool_gemm_bit_exact(act_dtype):
    """QDQ model: onnxruntime fuses DQ-Conv-Q / DQ-Gemm-Q into QLinearConv / QGemm and drops the QDQ around
    Relu/MaxPool/Flatten; every intermediate integer tensor matches it exactly."""
    rng = np.random.default_rng(7)
    model = _with_outputs(qdq_cnn(rng, act_dtype, hw=10), ["c1q", "p1q"], act_dtype)
    graph = scalenet.load(model)
    assert [l.kind for l in graph.layers] == ["conv", "clip", "maxpool", "flatten", "dense"]
    assert graph.meta["float_input"] == "x" and graph.input.q.dtype.name == np.dtype(act_dtype).name
    for trial in range(3):
        x = rng.normal(0, 1.5, (1, 3, 10, 10)).astype(np.float32)
        ref = dict(zip(["fcq", "c1q", "p1q"], ort_run(model, {"x": x})))
        xq = quantize(x, graph.meta["input_q"])
        ours = graph.run(xq, keep=True)
        for name in ("c1q", "p1q", "fcq"):
            mine = ours[graph.meta["onnx_outputs"][name]]
            assert ref[name].dtype == mine.dtype
            assert np.array_equal(mine, ref[name]), name
        assert len(np.unique(ours["c1q"])) > 10


def test_qdq_relu_fused_and_dequantised_output():
    """Without the extra outputs the Relu folds into the conv's clamp; a final DequantizeLinear output maps
    to the integer tensor before it, and dequantising ours gives onnxruntime's float output exactly."""
    rng = np.random.default_rng(11)
    model = qdq_cnn(rng, np.uint8, final_dq=True)
    graph = scalenet.load(model)
    assert [l.kind for l in graph.layers] == ["conv", "maxpool", "flatten", "dense"]
    conv = graph.layers[0]
    assert conv.lo == int(graph.tensors[conv.output].q.zero_point)
    assert graph.meta["onnx_outputs"] == {"y": "fcq"}
    x = rng.normal(0, 1.5, (4, 1, 3, 8, 8)).astype(np.float32)
    for xi in x:
        (ref,) = ort_run(model, {"x": xi})
        out = graph.run(quantize(xi, graph.meta["input_q"]))["fcq"]
        q = graph.tensors["fcq"].q
        assert np.array_equal((out.astype(np.int64) - q.zero_point).astype(np.float32) * q.scale, ref)


def _qdq_pool_add_model(rng):
    """QDQ AveragePool / GlobalAveragePool / Add: onnxruntime runs QLinearAveragePool / QLinearAdd (float
    internals), SCALENet its own integer definitions."""
    f = np.float32
    init = {"xs": f(0.03), "xz": np.uint8(120), "ps": f(0.021), "pz": np.uint8(118), "gs": f(0.011),
            "gz": np.uint8(130), "as": f(0.05), "az": np.uint8(125)}
    N = helper.make_node
    nodes = [
        N("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        N("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        N("AveragePool", ["xd"], ["p"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
        N("QuantizeLinear", ["p", "ps", "pz"], ["pq"]),
        N("DequantizeLinear", ["pq", "ps", "pz"], ["pd"]),
        N("Add", ["xd", "pd"], ["s"]),
        N("QuantizeLinear", ["s", "as", "az"], ["sq"]),
        N("DequantizeLinear", ["sq", "as", "az"], ["sd"]),
        N("GlobalAveragePool", ["sd"], ["g"]),
        N("QuantizeLinear", ["g", "gs", "gz"], ["gq"]),
    ]
    outs = [vinfo("gq", np.uint8, None), vinfo("pq", np.uint8, None), vinfo("sq", np.uint8, None)]
    return make_model(nodes, [vinfo("x", np.float32, [1, 4, 9, 9])], outs, init)


def test_qdq_avgpool_add_gap_own_definition():
    """Documented non-exact patterns: onnxruntime's QLinearAveragePool/QLinearAdd/QLinearGlobalAveragePool
    compute in float, so we check (a) our integers equal SCALENet's definition computed independently with
    the float32 requantisation and (b) onnxruntime agrees within one LSB."""
    rng = np.random.default_rng(5)
    model = _qdq_pool_add_model(rng)
    graph = scalenet.load(model)
    assert [type(l) for l in graph.layers] == [AvgPool, scalenet.ir.Add, GlobalAvgPool]
    x = rng.normal(0, 1.2, (1, 4, 9, 9)).astype(np.float32)
    xq = quantize(x, graph.meta["input_q"])
    ours = graph.run(xq, keep=True)
    # (a) independent definition of the average pool: window sums and counts by loops, float32 requant
    t = graph.tensors
    xs = xq[0].astype(np.int64) - 120
    pad = np.pad(xs, ((0, 0), (1, 1), (1, 1)))
    valid = np.pad(np.ones_like(xs), ((0, 0), (1, 1), (1, 1)))
    exp = np.zeros((4, 9, 9), np.uint8)
    for i in range(9):
        for j in range(9):
            s = pad[:, i:i + 3, j:j + 3].sum(axis=(1, 2))
            n = int(valid[0, i:i + 3, j:j + 3].sum())
            m = (np.float32(t["xq"].q.scale) / np.float32(t["pq"].q.scale)) / np.float32(n)
            exp[:, i, j] = requantize_float32(s, m, 118, "uint8")
    assert np.array_equal(ours["pq"][0], exp)
    # (b) onnxruntime, within one LSB
    gq, pq, sq = ort_run(model, {"x": x})
    for name, ref in (("pq", pq), ("sq", sq), ("gq", gq)):
        diff = np.abs(ours[name].astype(int) - ref.astype(int))
        assert diff.max() <= 1, name


@pytest.mark.parametrize("op", ["ConvInteger", "MatMulInteger"])
def test_integer_op_chain_maps_to_a_layer(op):
    """``QuantizeLinear -> ConvInteger/MatMulInteger -> Cast -> Mul(scale) -> Add(bias) -> QuantizeLinear``
    becomes one Conv/Dense layer. Its accumulators are exact; the requantisation is ours (onnxruntime
    multiplies and divides in float32, a different rounding), so outputs agree with onnxruntime within one
    LSB and exactly with the integer accumulator requantised by our rule."""
    rng = np.random.default_rng(13)
    f = np.float32
    if op == "ConvInteger":
        w = rng.integers(0, 256, (5, 3, 3, 3)).astype(np.uint8)
        wz = np.uint8(128)
        x_shape, scale_shape = [1, 3, 7, 7], (1, 5, 1, 1)
        core = helper.make_node("ConvInteger", ["xq", "w", "xz", "wz"], ["acc"], name="ci", pads=[1, 1, 1, 1])
        bias = rng.normal(0, 0.5, scale_shape).astype(f)
    else:
        w = rng.integers(0, 256, (40, 7)).astype(np.uint8)
        wz = np.uint8(120)
        x_shape, scale_shape = [1, 40], (7,)
        core = helper.make_node("MatMulInteger", ["xq", "w", "xz", "wz"], ["acc"], name="mi")
        bias = rng.normal(0, 0.5, scale_shape).astype(f)
    init = {"xs": f(0.02), "xz": np.uint8(130), "w": w, "wz": wz,
            "m": (f(0.02) * rng.uniform(0.002, 0.006, scale_shape)).astype(f), "b": bias,
            "ys": f(0.05), "yz": np.uint8(120)}
    N = helper.make_node
    nodes = [N("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="q_in"), core,
             N("Cast", ["acc"], ["accf"], name="cast", to=1), N("Mul", ["accf", "m"], ["scaled"], name="scale"),
             N("Add", ["scaled", "b"], ["biased"], name="bias"),
             N("QuantizeLinear", ["biased", "ys", "yz"], ["y"], name="q_out")]
    model = make_model(nodes, [vinfo("x", np.float32, x_shape)], [vinfo("y", np.uint8, None)], init)
    graph = scalenet.load(model)
    assert [type(l) for l in graph.layers] == [Conv if op == "ConvInteger" else Dense]
    layer = graph.layers[0]
    x = rng.normal(0, 1, x_shape).astype(np.float32)
    (ref,) = ort_run(model, {"x": x})
    xq = quantize(x, graph.meta["input_q"])
    out = graph.run(xq)["y"]
    assert out.shape == ref.shape
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1
    assert np.mean(out == ref) > 0.9
    # exact against our definition: the integer accumulator (int32 bias) requantised with our rule
    acc = layer.accumulate(xq, graph.input.q)
    mult = layer.multiplier(graph.input.q, graph.tensors["y"].q)
    assert np.array_equal(out, scalenet.quant.requantize(acc, mult, 120, "uint8", axis=1))
