"""Software workers: bit-exact with the reference for every layer kind and every zoo network, and a
placement of layers between workers and reference never changes a network's outputs."""

import numpy as np
import pytest

from scalenet import zoo
from scalenet.errors import ScalenetError, ShapeError
from scalenet.ir import Add, AvgPool, Clip, Concat, Conv, Dense, Flatten, GlobalAvgPool, Graph, MaxPool, Tensor
from scalenet.quant import QParams
from scalenet.scheduler.workers import SoftwareWorkers, _conv_tiles, max_pool, ort_dense_eligible


def _q(scale, dtype="int8", zp=0):
    return QParams(np.float32(scale), zp, dtype)


def _rand(rng, shape, dtype):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype)


def _one_layer(layer, in_shapes, in_qs, out_q):
    names = list(dict.fromkeys(layer.inputs))
    tensors = {n: Tensor(n, s, q) for n, s, q in zip(names, in_shapes, in_qs)}
    out = layer.out_shape([tensors[n].shape for n in layer.inputs])
    tensors[layer.output] = Tensor(layer.output, out, out_q)
    return Graph(layer.name, tensors, [layer], names, [layer.output])


def _conv(rng, name, cin, cout, k, groups=1, one_d=False, per_channel=False, **kw):
    shape = (cout, cin // groups) + ((k,) if one_d else (k, k))
    scale = rng.uniform(0.002, 0.02, cout).astype(np.float32) if per_channel else np.float32(0.01)
    return Conv(name=name, inputs=["x"], output="y", weight=_rand(rng, shape, np.int8), w_q=QParams(scale, 0, "int8"),
                bias=rng.integers(-3000, 3000, cout), groups=groups, **kw)


def layer_cases():
    rng = np.random.default_rng(7)
    u8, s8 = _q(0.05, "uint8", 17), _q(0.05, "int8", -3)
    cases = [
        ("conv3x3", _conv(rng, "c", 6, 10, 3, pads=(1, 1, 1, 1)), [(6, 9, 11)], [s8], _q(0.4, "int8", 2)),
        ("conv_u8_perchannel_relu", _conv(rng, "c", 5, 7, 3, per_channel=True, stride=(2, 1), pads=(0, 1, 2, 1), lo=0),
         [(5, 10, 9)], [u8], _q(0.3, "uint8", 0)),
        ("grouped", _conv(rng, "c", 8, 12, 3, groups=4, pads=(1, 1, 1, 1)), [(8, 7, 7)], [s8], _q(0.3)),
        ("depthwise", _conv(rng, "c", 9, 9, 3, groups=9, stride=(2, 2), pads=(1, 1, 1, 1), lo=0, hi=100),
         [(9, 11, 10)], [s8], _q(0.2)),
        ("depthwise_multiplier", _conv(rng, "c", 4, 8, 3, groups=4, dilation=(2, 2), pads=(2, 2, 2, 2)),
         [(4, 9, 9)], [u8], _q(0.2, "uint8", 128)),
        ("conv1d", _conv(rng, "c", 3, 5, 5, one_d=True, stride=(2,), dilation=(1,), pads=(2, 1)), [(3, 40)], [s8], _q(0.3)),
        ("depthwise1d", _conv(rng, "c", 6, 6, 3, groups=6, one_d=True, stride=(1,), dilation=(1,), pads=(1, 1)), [(6, 20)], [s8], _q(0.2)),
        ("dense", Dense(name="d", inputs=["x"], output="y", weight=_rand(rng, (13, 50), np.int8), w_q=_q(0.01),
                        bias=rng.integers(-2000, 2000, 13), lo=0), [(50,)], [s8], _q(0.5)),
        ("maxpool", MaxPool(name="m", inputs=["x"], output="y", kernel=(3, 3), stride=(2, 2), ceil_mode=True),
         [(5, 9, 8)], [s8], s8),
        ("avgpool", AvgPool(name="a", inputs=["x"], output="y", kernel=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1)),
         [(5, 6, 7)], [s8], _q(0.04, "int8", 1)),
        ("gap", GlobalAvgPool(name="g", inputs=["x"], output="y"), [(7, 5, 4)], [u8], _q(0.03, "uint8", 5)),
        ("add", Add(name="a", inputs=["x", "x2"], output="y", lo=0), [(6, 5, 5), (6, 5, 5)], [s8, _q(0.08, "int8", 4)],
         _q(0.1)),
        ("concat", Concat(name="c", inputs=["x", "x2"], output="y"), [(3, 4, 4), (5, 4, 4)], [s8, s8], s8),
        ("flatten", Flatten(name="f", inputs=["x"], output="y"), [(3, 4, 5)], [s8], s8),
        ("clip", Clip(name="r", inputs=["x"], output="y", lo=0, hi=60), [(4, 6, 6)], [s8], s8),
    ]
    return cases


@pytest.mark.parametrize("threads,kernel,split", [(1, "numpy", False), (3, "numpy", True), (2, "auto", True),
                                                  (2, "auto", False)])
@pytest.mark.parametrize("case", layer_cases(), ids=lambda c: c[0])
def test_every_layer_kind_is_bit_exact(case, threads, kernel, split):
    """Every kind, whole and cut into tiles over samples and channels (``split_all``), both kernel sets."""
    name, layer, shapes, qs, out_q = case
    graph = _one_layer(layer, shapes, qs, out_q)
    rng = np.random.default_rng(hash(name) % 2**32)
    xs = [_rand(rng, (2, *graph.tensors[n].shape), graph.tensors[n].q.dtype.np_dtype) for n in layer.inputs]
    ref = layer.forward(xs, [graph.tensors[n].q for n in layer.inputs], out_q)
    with SoftwareWorkers(threads, kernel=kernel, split_all=split) as workers:
        out = workers.run_layer(graph, layer, xs)
        again = workers.run_layer(graph, layer, xs)          # the prepared plan, reused
    assert out.dtype == ref.dtype
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(again, ref)


@pytest.mark.parametrize("seed", range(12))
def test_dense_on_onnxruntime_is_bit_exact_over_the_full_range(seed):
    """Dense layers run as onnxruntime s8s8 1x1 QLinearConv: full-range weights and activations, per-tensor
    and per-channel scales, biases, zero points, clamps, batches; identical to the reference."""
    pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(500 + seed)
    fin, fout = int(rng.integers(1, 700)), int(rng.integers(1, 120))
    scale = rng.uniform(0.001, 0.03, fout).astype(np.float32) if seed % 2 else np.float32(rng.uniform(0.001, 0.03))
    lo, hi = [(None, None), (0, None), (-128, None), (-20, 90)][seed % 4]
    layer = Dense(name="d", inputs=["x"], output="y", weight=_rand(rng, (fout, fin), np.int8),
                  w_q=QParams(scale, 0, "int8"), bias=rng.integers(-200000, 200000, fout), lo=lo, hi=hi)
    in_q = _q(rng.uniform(0.002, 0.1), "int8", int(rng.integers(-128, 128)))
    out_q = _q(rng.uniform(0.05, 4.0), "int8", int(rng.integers(-128, 128)))
    graph = _one_layer(layer, [(fin,)], [in_q], out_q)
    assert ort_dense_eligible(layer, in_q, out_q)
    x = _rand(rng, (3, fin), np.int8)
    ref = layer.forward([x], [in_q], out_q)
    for threads, split in ((1, False), (2, True)):
        with SoftwareWorkers(threads, kernel="ort", split_all=split) as workers:
            np.testing.assert_array_equal(workers.run_layer(graph, layer, [x]), ref)


def test_layers_onnxruntime_cannot_compute_exactly_stay_on_numpy():
    rng = np.random.default_rng(3)
    layer = Dense(name="d", inputs=["x"], output="y", weight=_rand(rng, (4, 8), np.int8), w_q=_q(0.01))
    assert not ort_dense_eligible(layer, _q(0.05, "uint8", 3), _q(0.1, "uint8"))    # u8s8 saturates on AVX2
    assert ort_dense_eligible(layer, _q(0.05), _q(0.1))
    wide = Dense(name="w", inputs=["x"], output="y", weight=np.full((2, 70000), 127, np.int8), w_q=_q(0.01))
    assert not ort_dense_eligible(wide, _q(0.05), _q(0.1))      # its accumulator could leave int32


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_max_pool_matches_the_reference_kernel(dtype):
    from scalenet import kernels
    rng = np.random.default_rng(5)
    for _ in range(40):
        k = tuple(int(v) for v in rng.integers(1, 4, 2))
        s = tuple(int(v) for v in rng.integers(1, 3, 2))
        pads = tuple(int(rng.integers(0, k[i % 2])) for i in range(4))
        h, w = (int(v) for v in rng.integers(max(k) + 1, 12, 2))
        x = _rand(rng, (2, 3, h, w), dtype)
        ceil = bool(rng.integers(0, 2))
        np.testing.assert_array_equal(max_pool(x, k, s, pads, ceil), kernels.max_pool(x, k, s, pads, 1, ceil))
    x1 = _rand(rng, (2, 3, 17), dtype)
    np.testing.assert_array_equal(max_pool(x1, (3,), (2,), (1, 1), True), kernels.max_pool(x1, (3,), (2,), (1, 1), 1, True))


def test_small_layers_run_whole_large_ones_are_split():
    g = zoo.build("digits_cnn")
    with SoftwareWorkers(2) as w:
        assert all(w.ways(g, l) == 1 for l in g.layers)        # tiles would cost more than they save
    big = _one_layer(_conv(np.random.default_rng(0), "c", 64, 64, 3, pads=(1, 1, 1, 1)), [(64, 28, 28)], [_q(0.1)], _q(0.2))
    with SoftwareWorkers(2) as w, SoftwareWorkers(1) as w1:
        assert w.ways(big, big.layers[0]) == 2 and w1.ways(big, big.layers[0]) == 1


def test_conv_tiles_partition_the_output_channels_by_whole_groups():
    rng = np.random.default_rng(0)
    layer = _conv(rng, "c", 12, 18, 3, groups=6)
    for n in (1, 2, 4, 6, 9):
        tiles = _conv_tiles(layer, n)
        assert len(tiles) == min(n, 6)
        covered = [c for sub, ilo, ihi, olo, ohi in tiles for c in range(olo, ohi)]
        assert covered == list(range(18))
        for sub, ilo, ihi, olo, ohi in tiles:
            assert (ohi - olo) % 3 == 0 and (ihi - ilo) == 2 * sub.groups


def test_bad_input_is_rejected_clearly():
    with pytest.raises(ScalenetError, match="threads"):
        SoftwareWorkers(0)
    with pytest.raises(ScalenetError, match="kernel"):
        SoftwareWorkers(1, kernel="blas")
    rng = np.random.default_rng(1)
    layer = _conv(rng, "c", 3, 4, 3)
    graph = _one_layer(layer, [(3, 6, 6)], [_q(0.1)], _q(0.2))
    with SoftwareWorkers(1) as w:
        with pytest.raises(ShapeError, match="int8"):
            w.run_layer(graph, layer, [np.zeros((1, 3, 6, 6), np.uint8)])
        with pytest.raises(ShapeError, match="inputs"):
            w.run_layer(graph, layer, [])


_REF = {}


def _network(name):
    if name not in _REF:
        graph = zoo.build(name)
        rng = np.random.default_rng(11)
        t = graph.input
        x = _rand(rng, (1, *t.shape), t.q.dtype.np_dtype)
        _REF[name] = graph, x, graph.run(x)
    return _REF[name]


@pytest.mark.parametrize("name", list(zoo.NETWORKS))
def test_zoo_network_on_workers_is_bit_exact(name):
    """The default kernels (onnxruntime's s8s8 convolutions where installed), every network."""
    graph, x, ref = _network(name)
    with SoftwareWorkers(2) as workers:
        out = workers.run_graph(graph, x)
    for o in graph.outputs:
        np.testing.assert_array_equal(out[o], ref[o], err_msg=o)


@pytest.mark.parametrize("name", list(zoo.NETWORKS))
def test_placement_never_changes_outputs(name):
    """A random half of the layers on the workers, the rest on the reference: identical outputs."""
    graph, x, ref = _network(name)
    rng = np.random.default_rng(len(name))
    names = [l.name for l in graph.layers]
    on_ref = set(rng.choice(names, size=len(names) // 2, replace=False).tolist())
    placement = {n: "reference" if n in on_ref else "workers" for n in names}
    assert 0 < len(on_ref) < len(names)
    with SoftwareWorkers(2, kernel="numpy") as workers:       # the other kernel path than the test above
        out = workers.run_graph(graph, x, placement=placement)
    for o in graph.outputs:
        np.testing.assert_array_equal(out[o], ref[o], err_msg=o)
