"""The layer compiler's memory image, run by the transaction-level model, equals the reference exactly."""

import numpy as np
import pytest

from scalenet.cosim.tlm import DescriptorError, run_descriptors
from scalenet.driver.compiler import TensorNotInMemory, compile_graph, weight_blocks
from scalenet.errors import HardwareLimitError, ScalenetError
from scalenet.floatnet import FloatNet, FNode, quantize_net
from scalenet.quant import quantize
from scalenet.rtl.config import AcceleratorConfig


def conv_node(rng, name, src, cout, cin, k, groups=1, **attrs):
    kh, kw = (k, k) if np.isscalar(k) else k
    w = rng.normal(0, 1.0 / np.sqrt(cin // groups * kh * kw), (cout, cin // groups, kh, kw)).astype(np.float32)
    return FNode("conv", name, [src], name, dict(weight=w, bias=rng.normal(0, 0.1, cout), groups=groups, **attrs))


def run_both(graph, cfg, x, fuse_pool=True):
    net = compile_graph(graph, cfg, fuse_pool=fuse_pool)
    memory = net.image.copy()
    net.write_input(memory, x)
    stats = run_descriptors(memory, net.desc_addr, net.desc_count, cfg)
    ref = graph.run(x, keep=True)
    for name in graph.outputs:
        np.testing.assert_array_equal(net.read_tensor(memory, name), ref[name][0], err_msg=name)
    return net, stats, memory


def quantised(net, rng, act_dtype="int8", n=8):
    cal = rng.normal(0, 1, (n, *net.input_shape)).astype(np.float32)
    g = quantize_net(net, cal, act_dtype=act_dtype)
    return g, quantize(cal[0], g.input.q)


@pytest.mark.parametrize("cfg", [AcceleratorConfig(), AcceleratorConfig(rows=4, cols=4)], ids=["8x8", "4x4"])
@pytest.mark.parametrize("act", ["int8", "uint8"])
def test_conv_variants_pools_dense(cfg, act):
    rng = np.random.default_rng(0)
    nodes = [
        conv_node(rng, "c1", "x", 12, 3, 3, pads=(1, 1, 1, 1)), FNode("relu", "r1", ["c1"], "r1"),
        conv_node(rng, "c2", "r1", 20, 12, (3, 2), stride=(2, 1), pads=(1, 0, 2, 1)),
        conv_node(rng, "dw", "c2", 20, 20, 3, groups=20, pads=(1, 1, 1, 1)), FNode("relu", "r2", ["dw"], "r2"),
        conv_node(rng, "g", "r2", 12, 20, 1, groups=4),
        FNode("maxpool", "mp", ["g"], "mp", dict(kernel=(3, 3), stride=(2, 2), ceil_mode=True)),
        FNode("avgpool", "ap", ["mp"], "ap", dict(kernel=(2, 2), stride=(1, 1), pads=(1, 1, 0, 0))),
        FNode("flatten", "f", ["ap"], "f"),
        FNode("dense", "d", ["f"], "y", dict(weight=rng.normal(0, 0.2, (10, 12 * 3 * 5)).astype(np.float32),
                                             bias=rng.normal(0, 0.1, 10))),
    ]
    net = FloatNet("mix", "x", (3, 13, 11), nodes, ["y"])
    g, x = quantised(net, rng, act)
    assert g.tensors["ap"].shape == (12, 3, 5)
    compiled, stats, _ = run_both(g, cfg, x, fuse_pool=False)
    assert [s.opcode for s in stats] == ["CONV", "CONV", "CONV", "CONV", "MAXPOOL", "AVGPOOL", "DENSE"]
    # The depthwise conv is block diagonal: one weight block per 8 (or 4) channels per tap.
    assert stats[2].extra["weight_blocks"] == 9 * -(-20 // cfg.rows)
    # Fused: the grouped conv writes the 3x3/2 ceil-mode pool of its output.
    compiled, stats, _ = run_both(g, cfg, x)
    assert [s.opcode for s in stats] == ["CONV", "CONV", "CONV", "CONV", "AVGPOOL", "DENSE"]
    assert (compiled.descriptors[3]["pool_after"], compiled.descriptors[3]["pool_ceil"]) == (3, 1)


def test_residual_concat_gap_and_1d():
    rng = np.random.default_rng(1)
    nodes = [
        conv_node(rng, "stem", "x", 8, 4, 3, pads=(1, 1, 1, 1)), FNode("relu", "rs", ["stem"], "rs"),
        conv_node(rng, "b1", "rs", 8, 8, 3, pads=(1, 1, 1, 1)),
        FNode("add", "add", ["b1", "rs"], "add"), FNode("relu", "ra", ["add"], "ra"),
        conv_node(rng, "e1", "ra", 5, 8, 1), conv_node(rng, "e3", "ra", 7, 8, 3, pads=(1, 1, 1, 1)),
        FNode("concat", "cat", ["e1", "e3"], "cat"),
        FNode("gap", "gap", ["cat"], "gap"), FNode("flatten", "f", ["gap"], "f"),
        FNode("dense", "d", ["f"], "y", dict(weight=rng.normal(0, 0.3, (3, 12)).astype(np.float32), bias=None)),
    ]
    g, x = quantised(FloatNet("res", "x", (4, 9, 10), nodes, ["y", "cat"]), rng)
    net, stats, memory = run_both(g, AcceleratorConfig(), x)
    # e1 and e3 write straight into slices of the concatenation: no copy descriptor exists.
    assert len(stats) == len(g.layers) - 2
    assert net.placements["e3"].addr == net.placements["cat"].addr + 5
    # 1-D convolution network (EEG style)
    nodes = [FNode("conv", "c", ["x"], "c", dict(weight=rng.normal(0, 0.2, (6, 5, 7)).astype(np.float32),
                                                 bias=None, stride=2, pads=(3, 3))),
             FNode("relu", "r", ["c"], "r"), FNode("maxpool", "p", ["r"], "p", dict(kernel=(2,), stride=(2,))),
             FNode("flatten", "f", ["p"], "f"),
             FNode("dense", "d", ["f"], "y", dict(weight=rng.normal(0, 0.2, (2, 6 * 8)).astype(np.float32)))]
    g, x = quantised(FloatNet("eeg", "x", (5, 32), nodes, ["y"]), rng)
    run_both(g, AcceleratorConfig(), x)


def test_activation_buffers_are_reused():
    rng = np.random.default_rng(2)
    nodes = []
    src = "x"
    for i in range(6):
        nodes.append(conv_node(rng, f"c{i}", src, 16, 16, 3, pads=(1, 1, 1, 1)))
        src = f"c{i}"
    g, x = quantised(FloatNet("chain", "x", (16, 16, 16), nodes, [src]), rng)
    net, _, _ = run_both(g, AcceleratorConfig(), x)
    assert net.meta["activation_bytes"] <= 3 * 16 * 16 * 16
    addrs = {net.placements[t].addr for t in g.tensors}
    assert len(addrs) <= 3


def test_limits_are_refused_before_anything_runs():
    rng = np.random.default_rng(3)
    nodes = [conv_node(rng, "wide", "x", 8, 3, 3)]
    g, _ = quantised(FloatNet("w", "x", (3, 8, 300), nodes, ["wide"]), rng)
    with pytest.raises(HardwareLimitError, match=r"layer wide \(conv\): input width 300 exceeds .* 256"):
        compile_graph(g)
    g, _ = quantised(FloatNet("k", "x", (3, 12, 12), [conv_node(rng, "big", "x", 4, 3, 9)], ["big"]), rng)
    with pytest.raises(HardwareLimitError, match="kernel size 9"):
        compile_graph(g)
    nodes = [conv_node(rng, "dil", "x", 4, 3, 3, dilation=(2, 2))]
    g, _ = quantised(FloatNet("d", "x", (3, 12, 12), nodes, ["dil"]), rng)
    with pytest.raises(HardwareLimitError, match="dilation"):
        compile_graph(g)
    g, _ = quantised(FloatNet("m", "x", (64, 8, 8), [conv_node(rng, "fat", "x", 64, 64, 3)], ["fat"]), rng)
    with pytest.raises(HardwareLimitError, match="weight bytes"):
        compile_graph(g, AcceleratorConfig(weight_buffer_bytes=4096))


def test_weight_blocks_order():
    w = np.arange(2 * 3 * 1 * 2).reshape(2, 3, 1, 2).astype(np.int8)
    blocks = weight_blocks(w, 1, rows=2, cols=2)
    # co tile 0; taps (0,0), (0,1); ci tiles 0, 1 -> 4 blocks
    assert blocks.shape == (4, 2, 2)
    assert blocks[0].tolist() == [[w[0, 0, 0, 0], w[0, 1, 0, 0]], [w[1, 0, 0, 0], w[1, 1, 0, 0]]]
    assert blocks[1].tolist() == [[w[0, 2, 0, 0], 0], [w[1, 2, 0, 0], 0]]
    assert blocks[2].tolist() == [[w[0, 0, 0, 1], w[0, 1, 0, 1]], [w[1, 0, 0, 1], w[1, 1, 0, 1]]]


@pytest.mark.parametrize("name", ["lenet5", "cifar10_quick", "resnet20", "eeg_mpcnn", "digits_cnn", "mobilenet_v1_025"])
def test_zoo_networks_compile_and_match_the_reference(name):
    from scalenet import zoo
    graph = zoo.build(name)
    cfg = AcceleratorConfig(weight_buffer_bytes=1 << 20, line_buffer_bytes=1 << 20)
    rng = np.random.default_rng(0)
    t = graph.input
    x = rng.integers(t.q.dtype.lo, t.q.dtype.hi + 1, t.shape).astype(t.q.dtype.np_dtype)
    _, stats, _ = run_both(graph, cfg, x)
    assert sum(s.macs for s in stats) == graph.macs


def test_alexnet_first_layer_is_beyond_the_kernel_limit():
    from scalenet import zoo
    with pytest.raises(HardwareLimitError, match=r"conv1 \(conv\): kernel size 11"):
        compile_graph(zoo.build("alexnet"))


def fusion_net(rng):
    """Conv -> MaxPool pairs that fuse (2x2/2, 3x3/2 floor and ceil) and ones that must not."""
    nodes = [
        conv_node(rng, "a", "x", 6, 3, 3, pads=(1, 1, 1, 1)), FNode("relu", "ar", ["a"], "ar"),
        FNode("maxpool", "pa", ["ar"], "pa", dict(kernel=(2, 2), stride=(2, 2))),           # fuses: 2x2/2
        conv_node(rng, "b", "pa", 12, 6, 3, pads=(1, 1, 1, 1)),
        FNode("maxpool", "pb", ["b"], "pb", dict(kernel=(3, 3), stride=(2, 2), ceil_mode=True)),   # 3x3/2 ceil
        conv_node(rng, "c", "pb", 5, 12, 1),
        FNode("maxpool", "pc", ["c"], "pc", dict(kernel=(2, 2), stride=(2, 2), pads=(0, 0, 1, 1))),  # padded: no
        conv_node(rng, "d", "pc", 7, 5, 1),
        FNode("maxpool", "pd", ["d"], "pd", dict(kernel=(3, 3), stride=(2, 2))),               # 3x3/2 floor
        conv_node(rng, "e", "pd", 4, 7, 1),
        FNode("maxpool", "pe", ["e"], "pe", dict(kernel=(2, 2), stride=(1, 1))),               # stride 1: no
        FNode("add", "s", ["pe", "pe"], "s"),
    ]
    return FloatNet("fuse", "x", (3, 40, 44), nodes, ["s", "pd"])


@pytest.mark.parametrize("act", ["int8", "uint8"])
def test_conv_maxpool_fusion(act):
    rng = np.random.default_rng(7)
    g, x = quantised(fusion_net(rng), rng, act)
    cfg = AcceleratorConfig()
    plain, plain_stats, _ = run_both(g, cfg, x, fuse_pool=False)
    net, stats, memory = run_both(g, cfg, x)
    # a+pa, b+pb and d+pd fuse; c (padded pool) and e (stride-1 pool) keep their MAXPOOL descriptors.
    assert plain.desc_count - net.desc_count == 3
    assert {n: (d["pool_after"], d["pool_ceil"]) for n, d in zip(net.layer_of, net.descriptors) if d["pool_after"]} \
        == {"a": (2, 0), "b": (3, 1), "d": (3, 0)}
    assert [s.opcode for s in stats].count("MAXPOOL") == 2
    # The fused conv's descriptor keeps its own geometry, and writes the pool's tensor.
    da = net.descriptors[net.layer_of.index("a")]
    assert (da["out_height"], da["out_width"], da["out_addr"]) == (40, 44, net.placements["pa"].addr)
    # The conv outputs never exist in memory: less activation memory, fewer bytes written.
    gone = {"ar", "b", "d"}                               # conv a's output is its fused ReLU's, "ar"
    assert set(net.fused) == gone and gone.isdisjoint(net.placements) and gone <= set(plain.placements)
    assert net.meta["activation_bytes"] < plain.meta["activation_bytes"]
    assert sum(s.write_bytes for s in stats) < sum(s.write_bytes for s in plain_stats)
    with pytest.raises(TensorNotInMemory, match=r"tensor 'b' is never stored .* conv 'b' and max pool 'pb'"):
        net.read_tensor(memory, "b")
    with pytest.raises(ScalenetError, match="no tensor 'nope'"):
        net.read_tensor(memory, "nope")


def test_fusion_respects_the_pool_row_buffer():
    """A pooled row beyond AcceleratorConfig.pool_row_bytes keeps the conv and the pool apart (correctly)."""
    rng = np.random.default_rng(8)
    nodes = [conv_node(rng, "c", "x", 24, 3, 1),
             FNode("maxpool", "p", ["c"], "p", dict(kernel=(2, 2), stride=(2, 2), ceil_mode=True))]
    g, x = quantised(FloatNet("row", "x", (3, 5, 21), nodes, ["p"]), rng)
    assert g.tensors["p"].shape == (24, 3, 11)                 # pooled row 11 x 24 = 264 bytes
    roomy, tight = AcceleratorConfig(line_buffer_bytes=2048), AcceleratorConfig(line_buffer_bytes=1024)
    assert tight.out_row_bytes >= 21 * 24 and tight.pool_row_bytes < 264 <= roomy.pool_row_bytes
    assert run_both(g, roomy, x)[0].desc_count == 1
    assert run_both(g, roomy, x, fuse_pool=False)[0].desc_count == 2
    # Not fused on the tight configuration; and the pool engine's own line buffer is smaller still.
    with pytest.raises(HardwareLimitError, match=r"layer p \(maxpool\): line-buffer bytes"):
        compile_graph(g, tight)


def test_fused_descriptor_fields_are_checked_by_the_model():
    rng = np.random.default_rng(9)
    nodes = [conv_node(rng, "c", "x", 4, 3, 3), FNode("maxpool", "p", ["c"], "p", dict(kernel=(2, 2), stride=(2, 2)))]
    g, x = quantised(FloatNet("chk", "x", (3, 6, 6), nodes, ["p"]), rng)
    net = compile_graph(g)
    assert net.desc_count == 1 and net.descriptors[0]["pool_after"] == 2
    from scalenet.rtl.regmap import pack_descriptor
    for bad in (dict(pool_after=1), dict(pool_after=3, out_height=2)):
        memory = net.image.copy()
        net.write_input(memory, x)
        raw = pack_descriptor(**{**net.descriptors[0], **bad})
        memory[net.desc_addr:net.desc_addr + len(raw)] = np.frombuffer(raw, np.uint8)
        with pytest.raises(DescriptorError, match="fused"):
            run_descriptors(memory, net.desc_addr, 1)


@pytest.mark.parametrize("name, fused", [("digits_cnn", 2), ("lenet5", 2), ("cifar10_quick", 1)])
def test_zoo_pairs_fuse_and_the_model_target_matches(name, fused):
    """The zoo's Conv -> MaxPool pairs fuse; the driver's model target gives the reference bytes with
    fewer bytes written than without fusion."""
    from scalenet import zoo
    from scalenet.driver.accelerator import LoadedNetwork, open_target
    graph = zoo.build(name)
    cfg = AcceleratorConfig(weight_buffer_bytes=1 << 20, line_buffer_bytes=1 << 20)
    rng = np.random.default_rng(0)
    t = graph.input
    x = rng.integers(t.q.dtype.lo, t.q.dtype.hi + 1, (2, *t.shape)).astype(t.q.dtype.np_dtype)
    ref = graph.run(x)[graph.outputs[0]]
    written = {}
    for fuse in (True, False):
        acc = open_target("model", config=cfg)
        net = compile_graph(graph, cfg, fuse_pool=fuse)
        acc.transport.write_mem(0, net.image)
        acc.clear_counters()
        np.testing.assert_array_equal(acc.run(LoadedNetwork(net, 0), x)[graph.outputs[0]], ref)
        written[fuse] = (net.desc_count, acc.counters()["dma_wr_bytes"])
    assert written[False][0] - written[True][0] == fused
    assert written[True][1] < written[False][1]
