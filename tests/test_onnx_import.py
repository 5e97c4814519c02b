"""Float ONNX import + post-training quantisation, quantised-model details, and the error paths."""

import numpy as np
import onnx
import pytest

import scalenet
from scalenet.errors import ModelError, ShapeError, UnsupportedAttributeError, UnsupportedOperatorError
from scalenet.onnx_import import ModelFileNotFoundError, load_onnx
from scalenet.quant import dequantize, quantize

from onnx_models import float_cnn, helper, make_model, ort_run, qlinearconv_model, vinfo

N = helper.make_node
f32 = np.float32


def _calib(rng, shape, n=64):
    return rng.normal(0, 1, (n, *shape)).astype(f32)


def _dequantised(graph, x, out=None):
    out = out or graph.outputs[0]
    q = graph.run(quantize(x, graph.meta["input_q"]))[out]
    return dequantize(q, graph.tensors[out].q)


def test_float_cnn_ptq_close_to_onnxruntime():
    rng = np.random.default_rng(0)
    model = float_cnn(rng)
    calib = _calib(rng, (3, 8, 8))
    graph = scalenet.load(model, calibration=calib)
    kinds = [l.kind for l in graph.layers]
    # BN folded into conv1, Relu and Clip fused into their convs, Softmax dropped.
    assert kinds == ["conv", "maxpool", "conv", "avgpool", "flatten", "dense"], kinds
    assert graph.layers[0].lo is not None and graph.layers[2].hi is not None
    assert any("Softmax" in d for d in graph.meta["dropped"])
    assert graph.meta["onnx_outputs"] == {"prob": "logits"}
    assert graph.layers[2].depthwise
    logits_model = float_cnn(np.random.default_rng(0), with_softmax=False)
    test = _calib(rng, (3, 8, 8), 16)
    errs, agree = [], 0
    for x in test:
        (ref,) = ort_run(logits_model, {"x": x[None]})
        ours = _dequantised(graph, x[None])
        errs.append(np.abs(ours - ref).max() / (np.abs(ref).max() + 1e-6))
        agree += int(np.argmax(ours) == np.argmax(ref))
    assert np.median(errs) < 0.05 and max(errs) < 0.15, errs
    assert agree >= 13


def test_float_ptq_uint8_activations_and_opset10_clip_attrs():
    rng = np.random.default_rng(1)
    model = float_cnn(rng, with_softmax=False, opset=10)
    # opset 10: Clip takes min/max as attributes
    for node in model.graph.node:
        if node.op_type == "Clip":
            del node.input[1:]
            node.attribute.extend([helper.make_attribute("min", 0.0), helper.make_attribute("max", 6.0)])
    graph = load_onnx(model, calibration=_calib(rng, (3, 8, 8)), act_dtype="uint8", name="cnn10")
    assert graph.name == "cnn10" and graph.input.q.dtype.name == "uint8"
    x = _calib(rng, (3, 8, 8), 1)
    (ref,) = ort_run(model, {"x": x})
    ours = _dequantised(graph, x)
    assert np.abs(ours - ref).max() < 0.15 * np.abs(ref).max()


def _misc_model(rng):
    """Conv1d(SAME_UPPER, stride 2, asymmetric) -> Relu -> residual Add -> Concat -> AveragePool(ceil,
    count_include_pad) -> GlobalAveragePool -> Reshape via Shape/Gather/Unsqueeze/Concat -> MatMul + Add."""
    init = {
        "w1": rng.normal(0, 0.3, (4, 2, 4)).astype(f32), "b1": rng.normal(0, 0.1, 4).astype(f32),
        "w2": rng.normal(0, 0.3, (4, 4, 3)).astype(f32),
        "wm": rng.normal(0, 0.3, (8, 5)).astype(f32), "bm": rng.normal(0, 0.1, 5).astype(f32),
        "zero": np.asarray(0, np.int64), "minus1": np.asarray([-1], np.int64),
    }
    nodes = [
        N("Conv", ["x", "w1", "b1"], ["c1"], name="conv1d", auto_pad="SAME_UPPER", strides=[2]),
        N("Relu", ["c1"], ["r1"], name="relu1"),
        N("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1]),
        N("Add", ["c2", "r1"], ["s"], name="residual"),
        N("Concat", ["s", "r1"], ["cat"], name="cat", axis=1),
        N("AveragePool", ["cat"], ["ap"], name="avg", kernel_shape=[3], strides=[2], pads=[1, 1], ceil_mode=1,
          count_include_pad=1),
        N("GlobalAveragePool", ["ap"], ["gap"], name="gap"),
        N("Identity", ["gap"], ["gap_i"], name="ident"),
        N("Shape", ["gap_i"], ["shp"], name="shape"),
        N("Gather", ["shp", "zero"], ["n"], name="gather", axis=0),
        N("Unsqueeze", ["n"], ["n1"], name="unsq", axes=[0]),
        N("Concat", ["n1", "minus1"], ["target"], name="target", axis=0),
        N("Reshape", ["gap_i", "target"], ["flat"], name="reshape"),
        N("MatMul", ["flat", "wm"], ["mm"], name="matmul"),
        N("Add", ["mm", "bm"], ["y"], name="bias"),
    ]
    return make_model(nodes, [vinfo("x", f32, ["batch", 2, 17])], [vinfo("y", f32, None)], init, opset=12)


def test_float_misc_ops():
    rng = np.random.default_rng(2)
    model = _misc_model(rng)
    graph = scalenet.load(model, calibration=_calib(rng, (2, 17), 128))
    kinds = [l.kind for l in graph.layers]
    assert kinds == ["conv", "conv", "add", "concat", "avgpool", "gap", "flatten", "dense"], kinds
    assert graph.layers[0].pads == (1, 2) and graph.layers[0].stride == (2,)
    assert graph.layers[-1].bias is not None and graph.tensors["y"].shape == (5,)
    for x in _calib(rng, (2, 17), 8):
        (ref,) = ort_run(model, {"x": x[None]})
        ours = _dequantised(graph, x[None], "y")
        assert np.abs(ours - ref).max() < 0.1 * np.abs(ref).max() + 0.02


def test_bn_fold_is_exact_in_float(monkeypatch):
    """BN folding: the FloatNet handed to quantize_net equals onnxruntime's conv+BN in float."""
    import scalenet.onnx_import as oi
    rng = np.random.default_rng(3)
    model = float_cnn(rng, with_softmax=False)
    seen = {}

    class Stop(scalenet.ScalenetError):
        pass

    def capture(net, calibration, act_dtype):
        seen["net"] = net
        raise Stop

    monkeypatch.setattr(oi, "quantize_net", capture)
    with pytest.raises(Stop):
        oi.load_onnx(model, calibration=np.zeros((1, 3, 8, 8), f32))
    net = seen["net"]
    assert [n.op for n in net.nodes] == ["conv", "relu", "maxpool", "conv", "clip", "avgpool", "flatten", "dense"]
    x = _calib(rng, (3, 8, 8), 1)
    (ref,) = ort_run(model, {"x": x})
    ours = net.run(x)["logits"]
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_quantised_model_with_integer_input_and_meta():
    rng = np.random.default_rng(4)
    w = rng.integers(-100, 100, (4, 3, 3, 3)).astype(np.int8)
    model = qlinearconv_model((1, 3, 6, 6), np.int8, 0.05, -3, w, 0.01, 0, 0.4, 5, None, pads=(1, 1, 1, 1))
    graph = load_onnx(model.SerializeToString())
    assert graph.inputs == ["x"] and graph.input.shape == (3, 6, 6)
    assert graph.meta["input_q"].zero_point == -3 and graph.meta["format"] == "quantised"
    assert graph.tensors["y"].q.zero_point == 5 and graph.tensors["y"].shape == (4, 6, 6)


def test_load_from_path(tmp_path):
    rng = np.random.default_rng(5)
    path = tmp_path / "m.onnx"
    onnx.save(float_cnn(rng), str(path))
    g1 = scalenet.load(str(path), calibration=_calib(rng, (3, 8, 8)))
    g2 = load_onnx(path, calibration=_calib(np.random.default_rng(5), (3, 8, 8)))
    assert [l.kind for l in g1.layers] == [l.kind for l in g2.layers]


# ---------------------------------------------------------------------------------------------------------
# Errors


def _one_node_model(node, init=None, x_shape=(1, 3, 8, 8), opset=13):
    return make_model([node], [vinfo("x", f32, list(x_shape))], [vinfo(node.output[0], f32, None)], init or {},
                      opset=opset)


def test_float_model_without_calibration():
    with pytest.raises(ModelError, match="calibration"):
        scalenet.load(float_cnn(np.random.default_rng(0)))


def test_unsupported_operator_names_node_and_op():
    model = _one_node_model(N("Tanh", ["x"], ["y"], name="squash"))
    with pytest.raises(UnsupportedOperatorError, match=r"squash.*Tanh"):
        load_onnx(model, calibration=np.zeros((1, 3, 8, 8), f32))


def test_unsupported_operator_in_middle_of_float_net():
    rng = np.random.default_rng(0)
    model = float_cnn(rng)
    model.graph.node[2].op_type = "LeakyRelu"
    with pytest.raises(UnsupportedOperatorError, match=r"relu1.*LeakyRelu"):
        load_onnx(model, calibration=_calib(rng, (3, 8, 8)))


def test_softmax_not_last_is_unsupported():
    model = make_model([N("Softmax", ["x"], ["s"], name="sm", axis=1), N("Relu", ["s"], ["y"], name="r")],
                       [vinfo("x", f32, [1, 10])], [vinfo("y", f32, None)], {})
    with pytest.raises(UnsupportedOperatorError, match=r"sm.*Softmax"):
        load_onnx(model, calibration=np.zeros((2, 10), f32))


@pytest.mark.parametrize("node,init,match", [
    (N("Gemm", ["x", "w"], ["y"], name="fc", alpha=2.0), {"w": np.ones((4, 5), f32)}, r"fc.*alpha.*2"),
    (N("Gemm", ["x", "w"], ["y"], name="fc", transA=1), {"w": np.ones((4, 5), f32)}, r"fc.*transA.*1"),
    (N("MaxPool", ["x"], ["y"], name="mp", kernel_shape=[2, 2], dilations=[2, 2]), None, r"mp.*dilations.*2"),
    (N("Conv", ["x", "w"], ["y"], name="c3", auto_pad="WEIRD"), {"w": np.ones((2, 3, 1, 1), f32)}, r"c3.*auto_pad.*WEIRD"),
    (N("Concat", ["x", "x"], ["y"], name="cat", axis=2), None, r"cat.*axis.*2"),
    (N("Flatten", ["x"], ["y"], name="fl", axis=2), None, r"fl.*axis.*2"),
])
def test_unsupported_attribute_names_node_attr_value(node, init, match):
    x_shape = (1, 4) if node.op_type == "Gemm" else (1, 3, 8, 8)
    model = _one_node_model(node, init, x_shape)
    with pytest.raises(UnsupportedAttributeError, match=match):
        load_onnx(model, calibration=np.zeros((1, *x_shape[1:]), f32))


def test_3d_conv_is_unsupported_attribute():
    model = _one_node_model(N("Conv", ["x", "w"], ["y"], name="c3d"), {"w": np.ones((2, 3, 1, 1, 1), f32)},
                            (1, 3, 4, 4, 4))
    with pytest.raises(UnsupportedAttributeError, match=r"c3d.*kernel_shape.*3-D"):
        load_onnx(model, calibration=np.zeros((1, 3, 4, 4, 4), f32))


def test_truncated_bytes_and_file(tmp_path):
    data = float_cnn(np.random.default_rng(0)).SerializeToString()
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        load_onnx(data[:len(data) // 2])
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        load_onnx(b"this is not an onnx model at all \xff\xfe")
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        load_onnx(b"")
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) - 7])
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        scalenet.load(str(path))


def test_missing_file():
    with pytest.raises(ModelFileNotFoundError, match="nowhere/model.onnx") as info:
        scalenet.load("/nowhere/model.onnx")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ModelError)


def test_wrong_type():
    with pytest.raises(ModelError, match="int"):
        load_onnx(12345)


def test_weights_missing_from_initializers():
    model = _one_node_model(N("Conv", ["x", "w_missing"], ["y"], name="conv"))
    with pytest.raises(ModelError, match=r"conv.*w_missing"):
        load_onnx(model, calibration=np.zeros((1, 3, 8, 8), f32))
    # a weight computed at run time (an activation) is refused too
    model = make_model([N("Relu", ["x"], ["r"], name="r"), N("MatMul", ["x", "r"], ["y"], name="mm")],
                       [vinfo("x", f32, [1, 4])], [vinfo("y", f32, None)], {})
    with pytest.raises(ModelError, match=r"mm.*weight.*'r'.*initializer"):
        load_onnx(model, calibration=np.zeros((1, 4), f32))


def test_quantised_weights_missing():
    model = qlinearconv_model((1, 3, 6, 6), np.uint8, 0.05, 3, np.ones((4, 3, 1, 1), np.int8), 0.01, 0, 0.4, 5)
    for i, t in enumerate(model.graph.initializer):
        if t.name == "w":
            del model.graph.initializer[i]
            break
    with pytest.raises(ModelError, match=r"qconv.*'w'"):
        load_onnx(model)


@pytest.mark.parametrize("case", ["channels", "batch", "gemm", "add"])
def test_shape_mismatch(case):
    if case == "channels":
        model = _one_node_model(N("Conv", ["x", "w"], ["y"], name="conv"), {"w": np.ones((2, 4, 3, 3), f32)})
        match = r"conv.*3 channels"
    elif case == "batch":
        model = _one_node_model(N("Relu", ["x"], ["y"], name="r"), x_shape=(2, 3, 8, 8))
        match = "batch size 2"
    elif case == "gemm":
        model = _one_node_model(N("Gemm", ["x", "w"], ["y"], name="fc", transB=1), {"w": np.ones((5, 7), f32)},
                                (1, 6))
        match = r"fc.*\(6,\).*7 inputs"
    else:
        model = make_model([N("MaxPool", ["x"], ["p"], name="p", kernel_shape=[2, 2], strides=[2, 2]),
                            N("Add", ["x", "p"], ["y"], name="add")],
                           [vinfo("x", f32, [1, 3, 8, 8])], [vinfo("y", f32, None)], {})
        match = r"add.*\(3, 8, 8\).*\(3, 4, 4\)"
    with pytest.raises(ShapeError, match=match):
        load_onnx(model, calibration=np.zeros((1, *[d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:]), f32))


def test_calibration_of_wrong_shape():
    with pytest.raises(ShapeError, match="calibration"):
        load_onnx(float_cnn(np.random.default_rng(0)), calibration=np.zeros((4, 3, 9, 9), f32))


def test_qdq_requantisation_between_different_params_is_refused():
    from onnx_models import qdq_cnn
    model = qdq_cnn(np.random.default_rng(0), np.uint8, relu_same_q=False)
    with pytest.raises(ModelError, match=r"q_r1.*requantisation"):
        load_onnx(model)


def test_errors_are_not_onnx_internals():
    """A corrupted tensor inside an otherwise valid model raises ModelError, not a protobuf/numpy error."""
    model = float_cnn(np.random.default_rng(0))
    model.graph.initializer[0].raw_data = model.graph.initializer[0].raw_data[:10]
    with pytest.raises(ModelError, match="not a valid ONNX model.*w1"):
        load_onnx(model, calibration=np.zeros((1, 3, 8, 8), f32))


def test_corrupted_models_raise_only_scalenet_errors():
    """Truncated and byte-flipped models: every failure is a ScalenetError (no onnx/numpy internals)."""
    from onnx_models import qdq_cnn
    from scalenet.errors import ScalenetError
    failures = 0
    for model in (float_cnn(np.random.default_rng(0)), qdq_cnn(np.random.default_rng(0))):
        data = model.SerializeToString()
        rng = np.random.default_rng(1)
        for cut in range(0, len(data), len(data) // 40):
            for variant in (data[:cut], bytes(b ^ 0xFF if i % 97 == cut % 97 else b for i, b in enumerate(data))):
                try:
                    load_onnx(variant, calibration=np.zeros((2, 3, 8, 8), f32))
                except ScalenetError:
                    failures += 1
    assert failures > 40
