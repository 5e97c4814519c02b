"""Builders of small ONNX models (onnx.helper) and an onnxruntime runner, shared by the ONNX tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13


def make_model(nodes, inputs, outputs, initializers, opset=OPSET, name="g"):
    graph = helper.make_graph(nodes, name, inputs, outputs,
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def vinfo(name, dtype, shape):
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    return helper.make_tensor_value_info(name, elem, shape)


def ort_run(model, feeds, optimize=True):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def qlinearconv_model(x_shape, x_dtype, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, bias=None,
                      strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1, y_dtype=None):
    """x (integer) -> QLinearConv -> y (integer). Scales float32, zero points of the tensors' types."""
    y_dtype = y_dtype or x_dtype
    nd = w.ndim - 2
    init = {"xs": np.float32(x_scale), "xz": np.asarray(x_zp, x_dtype), "w": w,
            "ws": np.asarray(w_scale, np.float32), "wz": np.asarray(w_zp, w.dtype),
            "ys": np.float32(y_scale), "yz": np.asarray(y_zp, y_dtype)}
    ins = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"]
    if bias is not None:
        init["b"] = np.asarray(bias, np.int32)
        ins.append("b")
    node = helper.make_node("QLinearConv", ins, ["y"], name="qconv", strides=list(strides)[:nd],
                            pads=list(pads), dilations=list(dilations)[:nd], group=group)
    return make_model([node], [vinfo("x", x_dtype, list(x_shape))], [vinfo("y", y_dtype, None)], init)


def qlinearmatmul_model(k, a_dtype, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp, y_dtype=None):
    y_dtype = y_dtype or a_dtype
    init = {"as": np.float32(a_scale), "az": np.asarray(a_zp, a_dtype), "b": b,
            "bs": np.asarray(b_scale, np.float32), "bz": np.asarray(b_zp, b.dtype),
            "ys": np.float32(y_scale), "yz": np.asarray(y_zp, y_dtype)}
    node = helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"], name="qmm")
    return make_model([node], [vinfo("a", a_dtype, [1, k])], [vinfo("y", y_dtype, None)], init)


def float_cnn(rng, c_in=3, hw=8, n_out=5, with_softmax=True, opset=OPSET):
    """Float conv -> BN -> relu -> maxpool -> conv(dw) -> clip -> avgpool -> flatten -> gemm -> softmax."""
    f = np.float32
    init = {
        "w1": rng.normal(0, 0.3, (8, c_in, 3, 3)).astype(f), "b1": rng.normal(0, 0.1, 8).astype(f),
        "g": rng.uniform(0.5, 1.5, 8).astype(f), "beta": rng.normal(0, 0.1, 8).astype(f),
        "mean": rng.normal(0, 0.1, 8).astype(f), "var": rng.uniform(0.5, 1.5, 8).astype(f),
        "w2": rng.normal(0, 0.3, (8, 1, 3, 3)).astype(f), "b2": rng.normal(0, 0.1, 8).astype(f),
        "lo": f(0.0), "hi": f(6.0),
        "wf": rng.normal(0, 0.3, (n_out, 8 * (hw // 4) * (hw // 4))).astype(f), "bf": rng.normal(0, 0.1, n_out).astype(f),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "g", "beta", "mean", "var"], ["bn1"], name="bn1"),
        helper.make_node("Relu", ["bn1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="dw2", pads=[1, 1, 1, 1], group=8),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"], name="relu6"),
        helper.make_node("AveragePool", ["r2"], ["p2"], name="pool2", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p2"], ["fl"], name="flatten"),
        helper.make_node("Gemm", ["fl", "wf", "bf"], ["logits"], name="fc", transB=1),
    ]
    out = "logits"
    if with_softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["prob"], name="softmax", axis=1))
        out = "prob"
    return make_model(nodes, [vinfo("x", np.float32, [1, c_in, hw, hw])], [vinfo(out, np.float32, None)], init,
                      opset=opset)


def qdq_cnn(rng, act_dtype=np.uint8, c_in=3, hw=8, n_out=6, relu_same_q=True, final_dq=False):
    """QDQ model: Q -> DQ Conv(DQ w per channel, DQ int32 bias) Q -> DQ Relu Q -> DQ MaxPool Q -> DQ Flatten
    Q -> DQ Gemm(DQ w, DQ bias) Q [-> DQ]. Weights within 7 bits when activations are uint8 (see
    tests/test_ort_exact.py for why)."""
    f = np.float32
    info = np.iinfo(act_dtype)
    wmax = 63
    co = 6
    zp = lambda: np.asarray(rng.integers(info.min // 2 + info.max // 2 - 20, info.min // 2 + info.max // 2 + 20),
                            act_dtype)
    xs, c1s, fcs = f(0.02), f(0.05), f(0.1)
    w1 = rng.integers(-wmax, wmax + 1, (co, c_in, 3, 3)).astype(np.int8)
    w1s = rng.uniform(0.002, 0.01, co).astype(f)
    b1 = rng.integers(-2000, 2000, co).astype(np.int32)
    k = co * (hw // 2) * (hw // 2)
    wf = rng.integers(-wmax, wmax + 1, (n_out, k)).astype(np.int8)
    wfs = f(0.004)
    bf = rng.integers(-2000, 2000, n_out).astype(np.int32)
    init = {"xs": xs, "xz": zp(), "c1s": c1s, "c1z": zp(), "fcs": fcs, "fcz": zp(),
            "w1": w1, "w1s": w1s, "w1z": np.zeros(co, np.int8), "b1": b1, "b1s": (xs * w1s).astype(f),
            "b1z": np.zeros(co, np.int32),
            "wf": wf, "wfs": wfs, "wfz": np.int8(0), "bf": bf, "bfs": f(c1s * wfs), "bfz": np.int32(0)}
    rs, rz = ("c1s", "c1z") if relu_same_q else ("rs", "rz")
    if not relu_same_q:
        init["rs"], init["rz"] = f(0.04), zp()
    N = helper.make_node
    nodes = [
        N("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="q_in"),
        N("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dq_in"),
        N("DequantizeLinear", ["w1", "w1s", "w1z"], ["w1d"], name="dq_w1", axis=0),
        N("DequantizeLinear", ["b1", "b1s", "b1z"], ["b1d"], name="dq_b1", axis=0),
        N("Conv", ["xd", "w1d", "b1d"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        N("QuantizeLinear", ["c1", "c1s", "c1z"], ["c1q"], name="q_c1"),
        N("DequantizeLinear", ["c1q", "c1s", "c1z"], ["c1d"], name="dq_c1"),
        N("Relu", ["c1d"], ["r1"], name="relu1"),
        N("QuantizeLinear", ["r1", rs, rz], ["r1q"], name="q_r1"),
        N("DequantizeLinear", ["r1q", rs, rz], ["r1d"], name="dq_r1"),
        N("MaxPool", ["r1d"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        N("QuantizeLinear", ["p1", rs, rz], ["p1q"], name="q_p1"),
        N("DequantizeLinear", ["p1q", rs, rz], ["p1d"], name="dq_p1"),
        N("Flatten", ["p1d"], ["fl"], name="flatten"),
        N("QuantizeLinear", ["fl", rs, rz], ["flq"], name="q_fl"),
        N("DequantizeLinear", ["flq", rs, rz], ["fld"], name="dq_fl"),
        N("DequantizeLinear", ["wf", "wfs", "wfz"], ["wfd"], name="dq_wf"),
        N("DequantizeLinear", ["bf", "bfs", "bfz"], ["bfd"], name="dq_bf"),
        N("Gemm", ["fld", "wfd", "bfd"], ["fc"], name="fc", transB=1),
        N("QuantizeLinear", ["fc", "fcs", "fcz"], ["fcq"], name="q_fc"),
    ]
    out = vinfo("fcq", act_dtype, [1, n_out])
    if final_dq:
        nodes.append(N("DequantizeLinear", ["fcq", "fcs", "fcz"], ["y"], name="dq_out"))
        out = vinfo("y", np.float32, [1, n_out])
    if not relu_same_q:
        init["b1s"] = (xs * w1s).astype(f)
        init["bfs"] = f(init["rs"] * wfs)
    return make_model(nodes, [vinfo("x", np.float32, [1, c_in, hw, hw])], [out], init)
