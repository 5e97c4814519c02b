"""The reference kernels against the ONNX backend node test data shipped in onnx 1.22.

Each case directory holds ``model.onnx`` and ``test_data_set_0/{input,output}_*.pb``. The models are run by
a small interpreter below that maps every node onto SCALENet's kernels / IR layers (attributes through
``scalenet.onnx_import``'s geometry helpers, so auto_pad/pads handling is tested too). Comparison:

* integer ops (ConvInteger, MatMulInteger, QLinearConv, QLinearMatMul, integer MaxPool/Clip/Add): exact;
* float ops that are exact in float32 (MaxPool, Relu, Clip, Flatten, same-shape Add): exact;
* float Conv/Gemm/AveragePool/GlobalAveragePool: float32 rounding tolerance, and when every operand is
  integer-valued (the hand-written cases) the *integer* kernel path is run as well and compared exactly.

Cases are collected by name pattern; anything SCALENet does not support is listed in ``EXCLUDED`` with the
reason, and the test fails if a listed case disappears or an unlisted one matches the patterns unexpectedly.
"""

import glob
import os
import re

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from scalenet import kernels
from scalenet.floatnet import FNode, _float_forward
from scalenet.ir import Add, Clip, Conv, Dense
from scalenet.onnx_import import _attrs, conv_geometry, pool_geometry
from scalenet.quant import QParams

DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")

PATTERNS = [
    r"node/test_(basic_)?conv_with_.*", r"node/test_basic_conv_with.*", r"pytorch-converted/test_Conv[123]d.*",
    r"node/test_convinteger_.*", r"node/test_qlinearconv", r"node/test_qlinearmatmul_.*",
    r"node/test_matmulinteger", r"node/test_maxpool_.*", r"pytorch-converted/test_MaxPool.*",
    r"node/test_averagepool_.*", r"pytorch-converted/test_AvgPool.*", r"node/test_globalaveragepool.*",
    r"node/test_relu.*", r"pytorch-converted/test_ReLU", r"node/test_gemm_.*", r"pytorch-converted/test_Linear.*",
    r"node/test_flatten_.*", r"node/test_clip.*", r"node/test_add.*",
]

_3D = "3-D convolution/pooling is not supported (1-D and 2-D only)"
EXCLUDED = {
    **{k: _3D for k in [
        "pytorch-converted/test_Conv3d", "pytorch-converted/test_Conv3d_dilated",
        "pytorch-converted/test_Conv3d_dilated_strided", "pytorch-converted/test_Conv3d_groups",
        "pytorch-converted/test_Conv3d_no_bias", "pytorch-converted/test_Conv3d_stride",
        "pytorch-converted/test_Conv3d_stride_padding", "node/test_maxpool_3d_default",
        "node/test_maxpool_3d_dilations", "node/test_maxpool_3d_dilations_use_ref_impl",
        "node/test_maxpool_3d_dilations_use_ref_impl_large", "node/test_averagepool_3d_default",
        "node/test_averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_False",
        "node/test_averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_True",
        "node/test_averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_False",
        "node/test_averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_True",
        "node/test_averagepool_3d_dilations_small", "pytorch-converted/test_MaxPool3d",
        "pytorch-converted/test_MaxPool3d_stride", "pytorch-converted/test_MaxPool3d_stride_padding",
        "pytorch-converted/test_AvgPool3d", "pytorch-converted/test_AvgPool3d_stride",
        "pytorch-converted/test_AvgPool3d_stride1_pad0_gpu_input"]},
    "node/test_averagepool_2d_dilations": "AveragePool with dilations is not supported",
    "node/test_maxpool_with_argmax_2d_precomputed_pads": "MaxPool's Indices output is not supported",
    "node/test_maxpool_with_argmax_2d_precomputed_strides": "MaxPool's Indices output is not supported",
    "node/test_gemm_all_attributes": "Gemm alpha/beta != 1 and transA are not supported",
    "node/test_gemm_alpha": "Gemm alpha != 1 is not supported",
    "node/test_gemm_beta": "Gemm beta != 1 is not supported",
    "node/test_gemm_transposeA": "Gemm transA=1 is not supported",
    "node/test_gemm_default_matrix_bias": "a 2-D (per-sample) Gemm bias is not supported",
    "node/test_flatten_axis0": "Flatten axis != 1 is not supported",
    "node/test_flatten_axis2": "Flatten axis != 1 is not supported",
    "node/test_flatten_axis3": "Flatten axis != 1 is not supported",
    "node/test_flatten_negative_axis1": "Flatten axis -1 (!= 1 on a 4-D input) is not supported",
    "node/test_flatten_negative_axis2": "Flatten axis -2 (!= 1 on a 4-D input) is not supported",
    "node/test_flatten_negative_axis4": "Flatten axis -4 (= 0) is not supported",
    "node/test_add_bcast": "broadcasting Add is not supported (residual adds of equal shapes only)",
    "node/test_add_int16": "int16 is not a SCALENet tensor type",
    "node/test_add_uint16": "uint16 is not a SCALENet tensor type",
    "node/test_add_uint32": "uint32 is not a SCALENet tensor type",
    "node/test_add_uint64": "uint64 is not a SCALENet tensor type",
    "node/test_add_int8": "ONNX integer Add wraps around; SCALENet's integer Add saturates (checked separately)",
    "node/test_add_uint8": "ONNX integer Add wraps around; SCALENet's integer Add saturates (checked separately)",
    "node/test_clip_min_greater_than_max": "Clip with min > max is refused (UnsupportedAttributeError)",
    "node/test_clip_min_greater_than_max_expanded": "Clip with min > max is refused (UnsupportedAttributeError)",
    "node/test_relu_expanded_ver18": "function-expanded form (Max/Constant nodes), same data as test_relu",
}
EXCLUDED.update({f"node/{os.path.basename(d)}": "function-expanded form of a Clip case (Less/Where nodes)"
                 for d in glob.glob(os.path.join(DATA, "node", "test_clip*_expanded"))
                 if f"node/{os.path.basename(d)}" not in EXCLUDED})


# Hand-written data given to 4 decimals (inputs and outputs each rounded after the fact: the mean of 4 inputs
# off by <= 5e-5 each, then rounded again): compared at that precision, not float32's.
ROUNDED = {"node/test_averagepool_2d_ceil_last_window_starts_on_pad": 1e-4}


def _collect():
    found = []
    for sub in ("node", "pytorch-converted"):
        for d in sorted(glob.glob(os.path.join(DATA, sub, "test_*"))):
            key = f"{sub}/{os.path.basename(d)}"
            if any(re.fullmatch(p, key) for p in PATTERNS):
                found.append(key)
    return found


ALL = _collect()
# Hand-written cases with integer-valued operands: the integer kernel path must run (and match) on them.
INT_VALUED = ["node/test_basic_conv_with_padding", "node/test_basic_conv_without_padding",
              "node/test_conv_with_autopad_same", "node/test_conv_with_strides_and_asymmetric_padding",
              "node/test_conv_with_strides_no_padding", "node/test_conv_with_strides_padding",
              "node/test_averagepool_2d_precomputed_pads", "node/test_averagepool_2d_precomputed_strides",
              "node/test_averagepool_2d_precomputed_pads_count_include_pad",
              "node/test_averagepool_2d_precomputed_same_upper", "node/test_globalaveragepool_precomputed"]
CASES = [c for c in ALL if c not in EXCLUDED]


def test_node_data_present():
    """The data must be there: a missing directory would otherwise pass vacuously."""
    print(f"{len(ALL)} node cases matched, {len(CASES)} run, {len(ALL) - len(CASES)} excluded")
    assert os.path.isdir(os.path.join(DATA, "node")), DATA
    assert len(CASES) >= 90, len(CASES)
    missing = [k for k in EXCLUDED if k not in ALL]
    assert not missing, f"excluded cases not found (data changed?): {missing}"
    for op in ("conv", "Conv1d", "Conv2d_depthwise", "convinteger", "qlinearconv", "qlinearmatmul",
               "matmulinteger", "maxpool", "averagepool", "globalaveragepool", "relu", "gemm", "flatten",
               "clip", "add"):
        assert any(op in c for c in CASES), op


def _load(case):
    d = os.path.join(DATA, case)
    model = onnx.load(os.path.join(d, "model.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    files = sorted(glob.glob(os.path.join(d, "test_data_set_0", "input_*.pb")),
                   key=lambda p: int(re.search(r"(\d+)\.pb$", p).group(1)))
    ins = [numpy_helper.to_array(onnx.load_tensor(f)) for f in files]
    names = [i.name for i in model.graph.input if i.name not in inits]
    assert len(names) == len(ins), case
    env = dict(inits)
    env.update(zip(names, ins))
    out_files = sorted(glob.glob(os.path.join(d, "test_data_set_0", "output_*.pb")),
                       key=lambda p: int(re.search(r"(\d+)\.pb$", p).group(1)))
    outs = [numpy_helper.to_array(onnx.load_tensor(f)) for f in out_files]
    return model, env, outs


def _is_int_valued(*arrays):
    return all(a is None or (a.dtype.kind == "f" and np.all(a == np.round(a)) and np.abs(a).max(initial=0) < 2**20)
               for a in arrays)


def _q(scale, zp):
    zp = np.asarray(zp)
    return QParams(np.asarray(scale, np.float32).reshape(-1) if np.size(scale) > 1 else np.asarray(scale).reshape(()),
                   zp.reshape(-1) if zp.size > 1 else zp.reshape(()), zp.dtype.name)


class Run:
    """Run a model's nodes with SCALENet kernels; records how each output may be compared."""

    def __init__(self, model, env):
        self.env = env
        self.exact = True           # float results exact in float32
        self.int_checks = 0
        for i, node in enumerate(model.graph.node):
            ins = [env.get(n) if n else None for n in node.input]
            outs = getattr(self, node.op_type)(node, _attrs(node), ins, node.name or f"{node.op_type}_{i}")
            for name, value in zip(node.output, outs if isinstance(outs, tuple) else (outs,)):
                env[name] = value

    # -- glue used by the PyTorch exports --
    def Unsqueeze(self, node, a, ins, name):
        axes = a.get("axes", None if len(ins) < 2 else ins[1].tolist())
        return np.expand_dims(ins[0], tuple(axes))

    def Squeeze(self, node, a, ins, name):
        axes = a.get("axes", None if len(ins) < 2 else ins[1].tolist())
        return np.squeeze(ins[0], tuple(axes))

    def Transpose(self, node, a, ins, name):
        return np.transpose(ins[0], a.get("perm"))

    def MatMul(self, node, a, ins, name):
        self.exact = False
        return kernels.dense(ins[0], ins[1].T)

    # -- float ops --
    def Conv(self, node, a, ins, name):
        x, w, b = (ins + [None])[:3]
        stride, pads, dil, group = conv_geometry(name, a, x.shape[1:], w.shape)
        out = _float_forward(FNode("conv", name, ["x"], "y", dict(weight=w, bias=b, stride=stride, pads=pads,
                                                               dilation=dil, groups=group)), [x])
        if _is_int_valued(x, w, b):
            acc = kernels.conv(x.astype(np.int32), w.astype(np.int32), None if b is None else b.astype(np.int64),
                               stride, pads, dil, group)
            self.int_checks += 1
            self.int_result = acc
        self.exact = False
        return out

    def Gemm(self, node, a, ins, name):
        x, w, c = (ins + [None])[:3]
        assert float(a.get("alpha", 1)) == 1 and float(a.get("beta", 1)) == 1 and not a.get("transA", 0)
        w = w if a.get("transB", 0) else w.T
        bias = None if c is None else np.broadcast_to(c.reshape(-1), (w.shape[0],))
        self.exact = False
        return _float_forward(FNode("dense", name, ["x"], "y", dict(weight=w, bias=bias)), [x])

    def _pool_args(self, name, op, a, x):
        dil = tuple(a.get("dilations", ()))
        if any(d != 1 for d in dil):
            # The max-pool kernel supports dilation (the importer refuses it: the IR pools have none).
            assert op == "MaxPool" and a.get("auto_pad", "NOTSET") in ("NOTSET", "")
            a = {k: v for k, v in a.items() if k != "dilations"}
            return (*pool_geometry(name, op, a, x.shape[1:]), dil)
        return (*pool_geometry(name, op, a, x.shape[1:]), 1)

    def MaxPool(self, node, a, ins, name):
        kernel, stride, pads, ceil, _, dil = self._pool_args(name, "MaxPool", a, ins[0])
        return kernels.max_pool(ins[0], kernel, stride, pads, dil, ceil)

    def AveragePool(self, node, a, ins, name):
        kernel, stride, pads, ceil, cip, _ = self._pool_args(name, "AveragePool", a, ins[0])
        x = ins[0]
        self.exact = False
        if _is_int_valued(x):
            total, count = kernels.avg_pool(x.astype(np.int32), kernel, stride, pads, cip, ceil)
            self.int_checks += 1
            self.int_result = (total, count)
        return kernels.avg_pool(x, kernel, stride, pads, cip, ceil)

    def GlobalAveragePool(self, node, a, ins, name):
        x = ins[0]
        self.exact = False
        if _is_int_valued(x):
            self.int_checks += 1
            self.int_result = kernels.global_avg_pool(x.astype(np.int32))
        return kernels.global_avg_pool(x)

    def Relu(self, node, a, ins, name):
        return _float_forward(FNode("relu", name, ["x"], "y"), [ins[0]])

    def Flatten(self, node, a, ins, name):
        axis = int(a.get("axis", 1))
        assert axis % ins[0].ndim == 1, axis
        return _float_forward(FNode("flatten", name, ["x"], "y"), [ins[0]])

    def Clip(self, node, a, ins, name):
        x = ins[0]
        lo = None if len(ins) < 2 or ins[1] is None else ins[1].item()
        hi = None if len(ins) < 3 or ins[2] is None else ins[2].item()
        if x.dtype.kind in "iu":
            q = QParams(1.0, 0, x.dtype.name)
            return Clip(name=name, inputs=["x"], output="y", lo=lo, hi=hi).forward([x[None]], [q], q)[0]
        return _float_forward(FNode("clip", name, ["x"], "y", dict(lo=lo, hi=hi)), [x])

    def Add(self, node, a, ins, name):
        assert ins[0].shape == ins[1].shape
        return _float_forward(FNode("add", name, ["a", "b"], "y"), ins)

    # -- integer ops --
    def ConvInteger(self, node, a, ins, name):
        x, w, xzp, wzp = (ins + [None, None])[:4]
        stride, pads, dil, group = conv_geometry(name, a, x.shape[1:], w.shape)
        acc = kernels.conv(x, w, None, stride, pads, dil, group, 0 if xzp is None else int(xzp.reshape(-1)[0]),
                           0 if wzp is None else wzp.astype(np.int32).reshape(-1) if wzp.size > 1 else int(wzp))
        return acc.astype(np.int32)

    def MatMulInteger(self, node, a, ins, name):
        x, w, xzp, wzp = (ins + [None, None])[:4]
        return kernels.dense(x, w.T, None, 0 if xzp is None else int(xzp.reshape(-1)[0]),
                             0 if wzp is None else wzp.astype(np.int32).reshape(-1)).astype(np.int32)

    def QLinearConv(self, node, a, ins, name):
        x, xs, xzp, w, ws, wzp, ys, yzp = ins[:8]
        b = ins[8] if len(ins) > 8 else None
        stride, pads, dil, group = conv_geometry(name, a, x.shape[1:], w.shape)
        layer = Conv(name=name, inputs=["x"], output="y", weight=w, w_q=_q(ws, wzp), bias=b, stride=stride,
                     pads=pads, dilation=dil, groups=group)
        return layer.forward([x], [_q(xs, xzp)], _q(ys, yzp))

    def QLinearMatMul(self, node, a, ins, name):
        x, xs, xzp, w, ws, wzp, ys, yzp = ins
        if x.ndim == 3:           # a batch of matrix products: one Dense per leading index
            return np.stack([self.QLinearMatMul(node, a, [x[i], xs, xzp, w[i] if w.ndim == 3 else w, ws, wzp, ys,
                                                          yzp], name) for i in range(x.shape[0])])
        layer = Dense(name=name, inputs=["x"], output="y", weight=w.T, w_q=_q(ws, wzp))
        return layer.forward([x], [_q(xs, xzp)], _q(ys, yzp))


@pytest.mark.parametrize("case", CASES)
def test_node_case(case):
    model, env, expected = _load(case)
    run = Run(model, env)
    outputs = [env[o.name] for o in model.graph.output][:1]
    exp = expected[0]
    (got,) = outputs
    assert got.shape == exp.shape, (got.shape, exp.shape)
    if exp.dtype.kind in "iu":
        assert got.dtype == exp.dtype and np.array_equal(got, exp)
    elif run.exact:
        assert np.array_equal(got.astype(exp.dtype), exp)
    else:
        scale = float(np.abs(exp).max(initial=0)) + 1.0
        np.testing.assert_allclose(got, exp, rtol=1e-5, atol=ROUNDED.get(case, 2e-6 * scale))
    assert run.int_checks or case not in INT_VALUED
    if run.int_checks:
        res = run.int_result
        if isinstance(res, tuple):        # average pools: integer window sums and counts
            total, count = res
            assert np.array_equal(total, np.rint(exp.astype(np.float64) * count).astype(np.int64))
        else:
            assert np.array_equal(res, exp.astype(np.int64))


def test_integer_add_saturates_where_onnx_wraps():
    """test_add_int8/uint8 are excluded above: SCALENet's Add (unit scales) equals ONNX's wherever ONNX's
    sum does not wrap around, and saturates where it does."""
    for case in ("node/test_add_int8", "node/test_add_uint8"):
        model, env, (exp,) = _load(case)
        x, y = env["x"], env["y"]
        q = QParams(1.0, 0, x.dtype.name)
        got = Add(name="add", inputs=["x", "y"], output="z").forward([x[None], y[None]], [q, q], q)[0]
        true = x.astype(np.int64) + y.astype(np.int64)
        fits = (true >= np.iinfo(x.dtype).min) & (true <= np.iinfo(x.dtype).max)
        assert fits.any()
        assert np.array_equal(got[fits], exp[fits])
        assert np.array_equal(got[~fits], np.clip(true[~fits], np.iinfo(x.dtype).min, np.iinfo(x.dtype).max))
