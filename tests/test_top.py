"""The whole accelerator (control, sequencer, DMA, engines) in the compiled simulator, through the driver:
networks bit-exact with the reference, errors reported with code and layer, recovery, memory guarded."""

import numpy as np
import pytest

from scalenet import zoo
from scalenet.cosim.platform import SimTransport
from scalenet.driver.accelerator import Accelerator, AcceleratorError, LoadedNetwork
from scalenet.driver.compiler import compile_graph
from scalenet.driver.transport import RegisterAccessError
from scalenet.floatnet import FloatNet, FNode, quantize_net
from scalenet.quant import quantize
from scalenet.rtl import regmap
from scalenet.rtl.config import AcceleratorConfig
from scalenet.rtl.regmap import DESCRIPTOR_BYTES, ErrorCode

CFG = AcceleratorConfig(rows=4, cols=4, max_width=32, max_channels=512, line_buffer_bytes=8192,
                        weight_buffer_bytes=64 * 1024)


@pytest.fixture(scope="module")
def transport():
    return SimTransport(config=CFG, mem_size=1 << 20, latency=6, stall=0.1, seed=3)


@pytest.fixture
def acc(transport):
    acc = Accelerator(transport, config=CFG, timeout=300.0, poll_cycles=500)
    acc.abort_and_reset()
    return acc


def conv(rng, name, src, cout, cin, k, **attrs):
    kh, kw = (k, k) if np.isscalar(k) else k
    w = rng.normal(0, 1 / np.sqrt(cin * kh * kw / attrs.get("groups", 1)),
                   (cout, cin // attrs.get("groups", 1), kh, kw)).astype(np.float32)
    return FNode("conv", name, [src], name, dict(weight=w, bias=rng.normal(0, 0.1, cout), **attrs))


def every_layer_type():
    rng = np.random.default_rng(0)
    nodes = [
        conv(rng, "c1", "x", 8, 3, 3, pads=(1, 1, 1, 1)), FNode("relu", "r1", ["c1"], "r1"),
        conv(rng, "c2", "r1", 8, 8, 3, pads=(1, 1, 1, 1)),
        FNode("add", "add", ["c2", "r1"], "add"), FNode("relu", "ra", ["add"], "ra"),
        conv(rng, "dw", "ra", 8, 8, 3, groups=8, stride=(2, 2), pads=(1, 1, 1, 1)),
        FNode("relu", "rd", ["dw"], "rd"),
        conv(rng, "e1", "rd", 3, 8, 1), conv(rng, "e3", "rd", 5, 8, 3, pads=(1, 1, 1, 1)),
        FNode("concat", "cat", ["e1", "e3"], "cat"),
        FNode("maxpool", "mp", ["cat"], "mp", dict(kernel=(2, 2), stride=(2, 2))),
        FNode("avgpool", "ap", ["mp"], "ap", dict(kernel=(2, 2), stride=(1, 1), pads=(0, 0, 1, 1))),
        FNode("gap", "gap", ["ap"], "gap"), FNode("flatten", "f", ["gap"], "f"),
        FNode("dense", "d", ["f"], "y", dict(weight=rng.normal(0, 0.3, (10, 8)).astype(np.float32),
                                             bias=rng.normal(0, 0.1, 10))),
    ]
    net = FloatNet("every_layer", "x", (3, 12, 10), nodes, ["y", "cat"])
    cal = rng.normal(0, 1, (8, 3, 12, 10)).astype(np.float32)
    graph = quantize_net(net, cal, act_dtype="uint8")
    return graph, quantize(cal[:2], graph.input.q)


def test_registers_through_axi_lite(transport):
    assert transport.read_reg(regmap.by_name("ID").offset) == regmap.ID_MAGIC
    c0 = regmap.unpack("CONFIG0", transport.read_reg(regmap.by_name("CONFIG0").offset))
    assert (c0["rows"], c0["cols"]) == (4, 4)
    with pytest.raises(RegisterAccessError, match="SLVERR"):
        transport.read_reg(0x0F0)
    with pytest.raises(RegisterAccessError, match="SLVERR"):
        transport.write_reg(regmap.by_name("STATUS").offset, 1)


def test_every_layer_type_is_bit_exact(acc, transport):
    graph, x = every_layer_type()
    loaded = acc.load(graph)
    acc.clear_counters()
    out = acc.run(loaded, x)
    ref = graph.run(x)
    for name in graph.outputs:
        np.testing.assert_array_equal(out[name], ref[name], err_msg=name)
    c = acc.counters()
    assert c["mac_active"] >= 2 * graph.macs and c["cycles"] > 0
    assert c["dma_rd_bytes"] > 0 and c["dma_wr_bytes"] > 0
    assert transport.platform.memory.violations == [], transport.platform.memory.first_violation


@pytest.mark.parametrize("name", ["digits_cnn", "lenet5"])
def test_zoo_networks_end_to_end(acc, transport, name):
    graph = zoo.build(name)
    rng = np.random.default_rng(1)
    t = graph.input
    x = rng.integers(t.q.dtype.lo, t.q.dtype.hi + 1, (1, *t.shape)).astype(t.q.dtype.np_dtype)
    loaded = acc.load(graph)
    # Both nets' Conv -> MaxPool 2x2/2 pairs run fused: no MAXPOOL descriptor is left.
    assert [d["pool_after"] for d in loaded.compiled.descriptors].count(2) == 2
    assert all(d["opcode"] != regmap.Opcode.MAXPOOL for d in loaded.compiled.descriptors)
    np.testing.assert_array_equal(acc.run(loaded, x)[graph.outputs[0]], graph.run(x)[graph.outputs[0]])


def conv_pool_net(act):
    """Odd sizes: conv + ReLU + 3x3/2 ceil-mode pool (13x15 -> 6x7 with an overhanging window), then a
    conv without ReLU + 2x2/2 floor pool (6x7 -> 3x3: the last column is dropped)."""
    rng = np.random.default_rng(11)
    nodes = [
        conv(rng, "c1", "x", 6, 3, 3, pads=(1, 1, 1, 1)), FNode("relu", "r1", ["c1"], "r1"),
        FNode("maxpool", "p1", ["r1"], "p1", dict(kernel=(3, 3), stride=(2, 2), ceil_mode=True)),
        conv(rng, "c2", "p1", 5, 6, 3, pads=(1, 1, 1, 1)),
        FNode("maxpool", "p2", ["c2"], "p2", dict(kernel=(2, 2), stride=(2, 2))),
    ]
    net = FloatNet("conv_pool", "x", (3, 13, 15), nodes, ["p2"])
    cal = rng.normal(0, 1, (8, 3, 13, 15)).astype(np.float32)
    graph = quantize_net(net, cal, act_dtype=act)
    return graph, quantize(cal[:2], graph.input.q)


@pytest.mark.parametrize("act", ["int8", "uint8"])
def test_fused_conv_pool_is_bit_exact_and_writes_less(acc, transport, act):
    graph, x = conv_pool_net(act)
    assert graph.tensors["p1"].shape == (6, 6, 7) and graph.tensors["p2"].shape == (5, 3, 3)
    ref = graph.run(x)["p2"]
    counters = {}
    for fuse in (True, False):
        net = compile_graph(graph, CFG, fuse_pool=fuse)
        transport.write_mem(0, net.image)
        acc.clear_counters()
        np.testing.assert_array_equal(acc.run(LoadedNetwork(net, 0), x)["p2"], ref, err_msg=f"fuse_pool={fuse}")
        counters[fuse] = (net.desc_count, acc.counters())
    assert counters[True][0] == 2 and counters[False][0] == 4
    fused, plain = counters[True][1], counters[False][1]
    assert fused["mac_active"] == plain["mac_active"] >= 2 * graph.macs     # the same conv work
    assert fused["dma_wr_bytes"] < plain["dma_wr_bytes"] and fused["dma_rd_bytes"] < plain["dma_rd_bytes"]
    assert transport.platform.memory.violations == [], transport.platform.memory.first_violation


def test_bad_fused_pool_descriptors_are_refused(acc, transport):
    graph, x = conv_pool_net("uint8")
    loaded = acc.load(graph)
    net = loaded.compiled
    raw = transport.platform.memory.data
    for i, bad in ((0, dict(pool_after=1)), (1, dict(pool_after=3, out_height=2))):
        a = net.desc_addr + i * DESCRIPTOR_BYTES
        saved = raw[a:a + DESCRIPTOR_BYTES].copy()
        raw[a:a + DESCRIPTOR_BYTES] = np.frombuffer(regmap.pack_descriptor(**{**net.descriptors[i], **bad}), np.uint8)
        try:
            with pytest.raises(AcceleratorError, match=f"BAD_DESCRIPTOR in layer {net.layer_of[i]}"):
                acc.run(loaded, x[:1])
        finally:
            raw[a:a + DESCRIPTOR_BYTES] = saved
    np.testing.assert_array_equal(acc.run(loaded, x)["p2"], graph.run(x)["p2"])


def test_errors_are_reported_and_the_next_run_recovers(acc, transport):
    graph, x = every_layer_type()
    loaded = acc.load(graph)
    net = loaded.compiled
    memory = transport.platform.memory
    static_end = net.meta["static_bytes"]
    guard = memory.data[:static_end].copy()

    # A corrupted descriptor (bad opcode) in layer 3.
    bad = net.desc_addr + 3 * DESCRIPTOR_BYTES
    saved = memory.data[bad]
    memory.data[bad] = (saved & 0xF0) | 0xF
    with pytest.raises(AcceleratorError, match=f"BAD_OPCODE in layer {net.layer_of[3]}") as info:
        acc.run(loaded, x[:1])
    assert info.value.code == ErrorCode.BAD_OPCODE
    memory.data[bad] = saved

    # An AXI error on the weights of the second conv (descriptor 1).
    d = net.descriptors[1]
    assert d["weight_bytes"] > 0
    memory.add_error(d["weight_addr"], d["weight_addr"] + 8, "SLVERR")
    try:
        with pytest.raises(AcceleratorError, match=f"READ_SLVERR in layer {net.layer_of[1]}"):
            acc.run(loaded, x[:1])
    finally:
        memory.clear_errors()
    assert np.array_equal(memory.data[:static_end], guard)      # nothing written outside the buffers
    np.testing.assert_array_equal(acc.run(loaded, x)["y"], graph.run(x)["y"])


@pytest.mark.slow
def test_imagenet_sized_layer_on_the_default_array():
    """3x3 conv 64->64 at 56x56 (115.6 M MACs) on the 8x8 default: bit-exact, and the array stays busy.
    About 2 minutes to build the model and 1 to simulate 1.8 M cycles; benchmarks/imagenet_layer_sim.py
    prints the same figures."""
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(
        "imagenet_layer_sim", Path(__file__).resolve().parent.parent / "benchmarks" / "imagenet_layer_sim.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cfg = AcceleratorConfig()
    graph, x = bench.layer()
    acc = Accelerator(SimTransport(config=cfg, mem_size=4 << 20, latency=8), config=cfg, timeout=3600.0,
                      poll_cycles=200_000)
    loaded = acc.load(graph)
    acc.clear_counters()
    np.testing.assert_array_equal(acc.run(loaded, x)["relu"], graph.run(x)["relu"])
    c = acc.counters()
    assert graph.macs / (c["cycles"] * cfg.pes) >= 0.9
