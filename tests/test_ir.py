"""The network IR: shape checks, quantisation rules and reference execution."""

import numpy as np
import pytest

from scalenet import kernels
from scalenet.errors import ModelError, ShapeError
from scalenet.floatnet import FloatNet, FNode, quantize_net
from scalenet.ir import Conv, Dense, Flatten, Graph, MaxPool, Tensor
from scalenet.quant import QParams, dequantize, quantize, requant_multiplier, requantize


def small_graph(out_q=QParams(0.1, -3)):
    rng = np.random.default_rng(0)
    q = QParams(0.05, 0, "int8")
    tensors = {"x": Tensor("x", (3, 8, 8), q), "c": Tensor("c", (4, 8, 8), QParams(0.1, -3)),
               "p": Tensor("p", (4, 4, 4), out_q), "f": Tensor("f", (64,), out_q),
               "y": Tensor("y", (10,), QParams(0.2, 0))}
    w_q = QParams(np.full(4, 0.01), np.zeros(4, int))
    layers = [
        Conv(name="c1", inputs=["x"], output="c", weight=rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8),
             w_q=w_q, bias=rng.integers(-100, 100, 4), pads=1, lo=-3),
        MaxPool(name="p1", inputs=["c"], output="p", kernel=(2, 2), stride=(2, 2)),
        Flatten(name="fl", inputs=["p"], output="f"),
        Dense(name="d", inputs=["f"], output="y", weight=rng.integers(-127, 128, (10, 64)).astype(np.int8),
              w_q=QParams(0.01)),
    ]
    return Graph("small", tensors, layers, ["x"], ["y"])


def test_run_equals_composed_kernels():
    g = small_graph()
    x = np.random.default_rng(1).integers(-128, 128, (3, 3, 8, 8)).astype(np.int8)
    got = g.run(x)["y"]
    conv = g.layers[0]
    acc = kernels.conv(x, conv.weight, conv.bias, 1, 1)
    c = requantize(acc, requant_multiplier(0.05, 0.01, 0.1), -3, lo=-3, axis=1)
    p = kernels.max_pool(c, (2, 2), (2, 2))
    dense = g.layers[3]
    y = requantize(kernels.dense(p.reshape(3, -1), dense.weight, dense.bias, -3), requant_multiplier(0.1, 0.01, 0.2), 0)
    np.testing.assert_array_equal(got, y)
    assert c.min() >= -3
    assert g.macs == 4 * 64 * 27 + 640 and g.params == 4 * 27 + 4 + 640 + 10


def test_single_sample_and_bad_inputs():
    g = small_graph()
    x = np.zeros((3, 8, 8), np.int8)
    assert g.run(x)["y"].shape == (1, 10)
    with pytest.raises(ShapeError, match="int8"):
        g.run(x.astype(np.uint8))
    with pytest.raises(ShapeError, match=r"\(3, 8, 8\)"):
        g.run(np.zeros((3, 9, 8), np.int8))


def test_graph_validation_names_the_problem():
    with pytest.raises(ModelError, match="keep its input's quantisation"):
        small_graph(out_q=QParams(0.2, 0))
    g = small_graph()
    g.tensors["c"] = Tensor("c", (4, 7, 8), g.tensors["c"].q)
    with pytest.raises(ShapeError, match="c1 produces"):
        g.validate()
    g = small_graph()
    with pytest.raises(ModelError, match="before it is produced"):
        Graph("bad", g.tensors, g.layers[1:], ["x"], ["y"])
    with pytest.raises(ModelError, match="never produced"):
        Graph("bad", g.tensors, g.layers, ["x"], ["nope"])


def test_post_training_quantisation_tracks_float():
    rng = np.random.default_rng(0)
    nodes = [
        FNode("conv", "c1", ["x"], "c1", dict(weight=rng.normal(0, .3, (8, 1, 3, 3)).astype(np.float32),
                                              bias=rng.normal(0, .1, 8), pads=1)),
        FNode("relu", "r1", ["c1"], "r1"),
        FNode("maxpool", "p1", ["r1"], "p1", dict(kernel=(2, 2), stride=(2, 2))),
        FNode("conv", "c2", ["p1"], "c2", dict(weight=rng.normal(0, .3, (8, 8, 3, 3)).astype(np.float32), pads=1)),
        FNode("add", "a", ["c2", "p1"], "a"),
        FNode("relu", "r2", ["a"], "r2"),
        FNode("gap", "g", ["r2"], "g"),
        FNode("flatten", "f", ["g"], "f"),
        FNode("dense", "d", ["f"], "y", dict(weight=rng.normal(0, .3, (10, 8)).astype(np.float32), bias=np.zeros(10))),
    ]
    net = FloatNet("t", "x", (1, 8, 8), nodes, ["y"])
    cal = rng.normal(0, 1, (64, 1, 8, 8)).astype(np.float32)
    g = quantize_net(net, cal)
    assert [l.kind for l in g.layers] == ["conv", "maxpool", "conv", "add", "gap", "flatten", "dense"]
    assert g.layers[0].lo == g.tensors[g.layers[0].output].q.zero_point      # ReLU fused as a clamp
    fy = net.run(cal)["y"]
    qy = dequantize(g.run(quantize(cal, g.input.q))["y"], g.tensors["y"].q)
    assert np.abs(qy - fy).max() < 0.05 * np.abs(fy).max()
    assert (qy.argmax(1) == fy.argmax(1)).mean() > 0.9
