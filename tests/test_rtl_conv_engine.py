"""The convolution engine, fed from the compiler's memory image, byte for byte against the TLM.

Every case compiles a one-layer IR graph with the layer compiler, streams the engine its parameter table,
weight blocks and input bytes straight from the image, and compares the output stream with what
``cosim.tlm.run_descriptors`` writes on the same image (itself checked against ``Graph.run``). Small cases
run on ``amaranth.sim``; the variant sweep and the utilisation bound run on the compiled (CXXRTL) engine.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from amaranth.sim import Simulator

from scalenet.cosim.tlm import run_descriptors
from scalenet.driver.compiler import compile_graph
from scalenet.errors import HardwareLimitError, ShapeError
from scalenet.floatnet import FloatNet, FNode, quantize_net
from scalenet.quant import quantize
from scalenet.rtl.config import AcceleratorConfig
from scalenet.rtl.conv_engine import ConvEngine
from scalenet.rtl.regmap import pack_descriptor

SMALL = AcceleratorConfig(rows=4, cols=4, max_width=32, max_channels=64, line_buffer_bytes=4096,
                          weight_buffer_bytes=8192)

IN_STREAMS = ("params", "weights", "pixels")


# ---------------------------------------------------------------------------------------------------------
# Test vectors from the compiler


class Case:
    """One conv/dense layer: the engine's input streams and the expected output bytes."""

    def __init__(self, graph, cfg, x):
        net = compile_graph(graph, cfg)
        assert net.desc_count == 1
        memory = net.image.copy()
        net.write_input(memory, x)
        self.desc = dict(net.descriptors[0])
        before = memory.copy()
        stats = run_descriptors(memory, net.desc_addr, 1, cfg)[0]
        ref = graph.run(x)[graph.outputs[0]][0]
        np.testing.assert_array_equal(net.read_tensor(memory, graph.outputs[0]), ref)
        d = self.desc
        self.stats = stats
        self.cfg = cfg
        n_blocks = stats.extra["weight_blocks"]
        wb = before[d["weight_addr"]:d["weight_addr"] + n_blocks * cfg.rows * cfg.cols].reshape(-1, cfg.cols)
        self.streams = {
            "params": [int.from_bytes(before[d["param_addr"] + 8 * i:d["param_addr"] + 8 * i + 8].tobytes(), "little")
                       for i in range(d["out_channels"])],
            "weights": [int.from_bytes(row.tobytes(), "little") for row in wb],
            "pixels": [int(v) for v in
                       before[d["in_addr"]:d["in_addr"] + d["in_height"] * d["in_width"] * d["in_channels"]]],
        }
        n_out = d["out_height"] * d["out_width"] * d["out_channels"]
        assert d["out_pixel_stride"] == d["out_channels"] and d["in_pixel_stride"] == d["in_channels"]
        self.expected = [int(v) for v in memory[d["out_addr"]:d["out_addr"] + n_out]]
        self.desc_word = int.from_bytes(pack_descriptor(**d), "little")


def conv_case(cfg, *, cin, cout, hw=(6, 6), k=3, stride=1, pads=1, groups=1, act="int8", relu=False,
              seed=0, one_d=False):
    rng = np.random.default_rng(seed)
    kh, kw = (k, k) if np.isscalar(k) else k
    if one_d:
        shape = (cin, hw[1])
        w = rng.normal(0, 1.0 / np.sqrt(cin // groups * kw), (cout, cin // groups, kw)).astype(np.float32)
        attrs = dict(stride=(stride,), pads=(pads, pads) if np.isscalar(pads) else pads)
    else:
        shape = (cin, *hw)
        w = rng.normal(0, 1.0 / np.sqrt(cin // groups * kh * kw), (cout, cin // groups, kh, kw)).astype(np.float32)
        st = (stride, stride) if np.isscalar(stride) else stride
        attrs = dict(stride=st, pads=(pads,) * 4 if np.isscalar(pads) else pads)
    nodes = [FNode("conv", "c", ["x"], "c", dict(weight=w, bias=rng.normal(0, 0.3, cout), groups=groups, **attrs))]
    out = "c"
    if relu:
        nodes.append(FNode("relu", "r", ["c"], "r"))
        out = "r"
    return _quantised_case(FloatNet("t", "x", shape, nodes, [out]), cfg, rng, act)


def dense_case(cfg, *, fin, fout, act="int8", relu=False, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1.0 / np.sqrt(fin), (fout, fin)).astype(np.float32)
    nodes = [FNode("dense", "d", ["x"], "d", dict(weight=w, bias=rng.normal(0, 0.3, fout)))]
    out = "d"
    if relu:
        nodes.append(FNode("relu", "r", ["d"], "r"))
        out = "r"
    return _quantised_case(FloatNet("t", "x", (fin,), nodes, [out]), cfg, rng, act)


def _quantised_case(net, cfg, rng, act):
    cal = rng.normal(0.3, 1, (8, *net.input_shape)).astype(np.float32)
    g = quantize_net(net, cal, act_dtype=act)
    return Case(g, cfg, quantize(cal[0], g.input.q))


# ---------------------------------------------------------------------------------------------------------
# A cycle-by-cycle stream driver shared by both simulators


class Driver:
    """Drives the input streams (with random valid gaps) and the output ready (random gaps).

    ``outputs()`` values must be read at the start of a cycle, ``inputs()`` returns what to drive in it;
    the engine's ready/valid outputs depend on its state only, so the cycle's transfers are known then.
    """

    OUTPUTS = ("params__ready", "weights__ready", "pixels__ready", "out__valid", "out__payload", "done",
               "busy", "array_active")

    def __init__(self, case, *, seed=0, p_valid=1.0, p_ready=1.0):
        self.case = case
        self.rng = np.random.default_rng(seed)
        self.p_valid, self.p_ready = p_valid, p_ready
        self.pos = {s: 0 for s in IN_STREAMS}
        self.valid = {s: 0 for s in IN_STREAMS}
        self.out = []
        self.cycles = 0
        self.active = 0
        self.finished = False

    def step(self, o):
        """Given this cycle's outputs, return the inputs to drive and account for the transfers."""
        if o["done"]:
            self.finished = True
        drive = {}
        for s in IN_STREAMS:
            data = self.case.streams[s]
            if not self.valid[s] and self.pos[s] < len(data):
                self.valid[s] = int(self.p_valid >= 1 or self.rng.random() < self.p_valid)
            drive[f"{s}__valid"] = self.valid[s]
            drive[f"{s}__payload"] = data[self.pos[s]] if self.pos[s] < len(data) else 0
            if self.valid[s] and o[f"{s}__ready"]:
                self.pos[s] += 1
                self.valid[s] = 0
        ready = int(self.p_ready >= 1 or self.rng.random() < self.p_ready)
        drive["out__ready"] = ready
        if ready and o["out__valid"]:
            self.out.append(o["out__payload"])
        self.cycles += 1
        self.active += o["array_active"]
        return drive

    def check(self):
        assert self.finished, f"no done after {self.cycles} cycles ({len(self.out)} of {len(self.case.expected)} bytes)"
        for s in IN_STREAMS:
            assert self.pos[s] == len(self.case.streams[s]), f"{s}: {self.pos[s]} of {len(self.case.streams[s])} consumed"
        got = np.array(self.out, np.uint8)
        want = np.array(self.case.expected, np.uint8)
        assert got.size == want.size, f"{got.size} output bytes, expected {want.size}"
        bad = np.nonzero(got != want)[0]
        assert bad.size == 0, f"{bad.size} of {want.size} bytes differ, first at {bad[0]}: {got[bad[0]]} != {want[bad[0]]}"


def run_pysim(case, *, max_cycles=20000, **kwargs):
    dut = ConvEngine(case.cfg)
    drv = Driver(case, **kwargs)
    ports = {
        "params__ready": dut.params.ready, "weights__ready": dut.weights.ready, "pixels__ready": dut.pixels.ready,
        "out__valid": dut.out.valid, "out__payload": dut.out.payload, "done": dut.done, "busy": dut.busy,
        "array_active": dut.array_active,
        "params__valid": dut.params.valid, "params__payload": dut.params.payload,
        "weights__valid": dut.weights.valid, "weights__payload": dut.weights.payload,
        "pixels__valid": dut.pixels.valid, "pixels__payload": dut.pixels.payload, "out__ready": dut.out.ready,
    }

    async def bench(ctx):
        ctx.set(dut.desc.as_value(), case.desc_word)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(max_cycles):
            o = {n: ctx.get(ports[n]) for n in Driver.OUTPUTS}
            for n, v in drv.step(o).items():
                ctx.set(ports[n], v)
            if drv.finished:
                break
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    drv.check()
    return drv


_compiled = {}


def compiled_engine(cfg):
    from scalenet.cosim.compiled import CompiledSimulator
    if cfg not in _compiled:
        # -O1 builds in about half the time of -O2 and runs as fast here (the loop is Python-bound).
        _compiled[cfg] = CompiledSimulator(ConvEngine(cfg), opt="-O1")
    return _compiled[cfg]


def run_compiled(case, *, max_cycles=2_000_000, **kwargs):
    sim = compiled_engine(case.cfg)
    drv = Driver(case, **kwargs)
    sim.set("rst", 1)            # the model is shared between tests: start from reset even after a failure
    sim.tick()
    sim.set("rst", 0)
    sim.set("out__ready", 0)
    for s in IN_STREAMS:
        sim.set(f"{s}__valid", 0)
    sim.set("desc", case.desc_word)
    sim.set("start", 1)
    sim.tick()
    sim.settle()
    sim.set("start", 0)
    get, put = sim.get, sim.set
    for _ in range(max_cycles):
        o = {n: get(n) for n in Driver.OUTPUTS}
        for n, v in drv.step(o).items():
            put(n, v)
        if drv.finished:
            break
        sim.tick()
        sim.settle()         # the harness leaves combinational outputs one edge behind; re-evaluate
    sim.set("out__ready", 0)
    for s in IN_STREAMS:
        sim.set(f"{s}__valid", 0)
    sim.tick(2)
    drv.check()
    return drv


# ---------------------------------------------------------------------------------------------------------
# amaranth.sim cases


def test_conv3x3_pad1_stride1_pysim():
    case = conv_case(SMALL, cin=5, cout=6, hw=(5, 6), k=3, stride=1, pads=1)
    drv = run_pysim(case)
    assert drv.active == case.stats.array_cycles


def test_conv_backpressure_uint8_relu_pysim():
    case = conv_case(SMALL, cin=4, cout=4, hw=(4, 5), k=3, stride=1, pads=1, act="uint8", relu=True, seed=3)
    run_pysim(case, seed=1, p_valid=0.6, p_ready=0.5)


def test_dense_pysim():
    case = dense_case(SMALL, fin=10, fout=7, seed=2)
    run_pysim(case)


@pytest.mark.parametrize("width", [16, 17], ids=["ring_k_plus_1", "ring_k"])
def test_line_buffer_ring_shrinks_to_fit_pysim(width):
    """A ring of kernel_h + stride_h rows does not fit a 256-byte line buffer (rows hold whole C-byte
    words: 3 channels take 4 bytes per pixel): the engine falls back to kernel_h + 1 rows, or to kernel_h
    rows without prefetch, and stays exact (the compiler accepts both layers: (K+S) x W x Cin <= 256)."""
    cfg = AcceleratorConfig(rows=4, cols=4, max_width=32, max_channels=16, line_buffer_bytes=256,
                            weight_buffer_bytes=1024)
    case = conv_case(cfg, cin=3, cout=4, hw=(7, width), k=3, stride=2, pads=1, act="uint8", seed=width)
    words = width * 1          # ceil(3 / C) words per pixel
    assert (3 + 2) * width * 3 <= cfg.line_buffer_bytes < (3 + 2) * words * cfg.cols
    assert ((3 + 1) * words * cfg.cols <= cfg.line_buffer_bytes) == (width == 16)
    run_pysim(case, seed=width, p_valid=0.8)


# ---------------------------------------------------------------------------------------------------------
# Compiled-engine sweep


SWEEP = {
    "3x3_s1_p1": dict(cin=8, cout=8, hw=(7, 9), k=3, stride=1, pads=1),
    "3x3_s2_asym": dict(cin=6, cout=5, hw=(9, 8), k=3, stride=2, pads=(1, 0, 2, 1)),
    "3x2_s21": dict(cin=3, cout=9, hw=(7, 6), k=(3, 2), stride=(2, 1), pads=(1, 0, 2, 1)),
    "1x1": dict(cin=7, cout=10, hw=(5, 5), k=1, stride=1, pads=0),
    "1x1_s2": dict(cin=4, cout=4, hw=(6, 7), k=1, stride=2, pads=0),
    "5x5_p2": dict(cin=5, cout=6, hw=(8, 8), k=5, stride=1, pads=2),
    "7x7_s3": dict(cin=3, cout=4, hw=(11, 12), k=7, stride=3, pads=3),
    "4x4_s4_p0": dict(cin=4, cout=8, hw=(8, 12), k=4, stride=4, pads=0),
    "big_pad": dict(cin=2, cout=3, hw=(3, 4), k=3, stride=1, pads=(4, 5, 3, 2)),
    "conv1d": dict(cin=6, cout=5, hw=(1, 20), k=5, stride=2, pads=(2, 1), one_d=True),
    "depthwise": dict(cin=10, cout=10, hw=(6, 6), k=3, stride=1, pads=1, groups=10),
    "grouped": dict(cin=12, cout=9, hw=(5, 6), k=3, stride=1, pads=1, groups=3),
    "grouped_6": dict(cin=12, cout=18, hw=(4, 5), k=1, stride=1, pads=0, groups=6),
    "narrow": dict(cin=5, cout=3, hw=(4, 2), k=3, stride=1, pads=1),
    "wide": dict(cin=4, cout=4, hw=(3, 32), k=3, stride=1, pads=1),
}


@pytest.mark.parametrize("act", ["int8", "uint8"])
@pytest.mark.parametrize("name", list(SWEEP))
def test_conv_variants_compiled(name, act):
    kwargs = dict(SWEEP[name])
    seed = sum(map(ord, name)) + (act == "uint8")
    case = conv_case(SMALL, act=act, relu=(seed % 2 == 0), seed=seed, **kwargs)
    drv = run_compiled(case, seed=seed, p_valid=0.7 if seed % 3 else 1.0, p_ready=0.6 if seed % 3 != 1 else 1.0)
    assert drv.active == case.stats.array_cycles


@pytest.mark.parametrize("fin,fout,act", [(10, 7, "int8"), (33, 13, "uint8"), (4, 1, "int8")])
def test_dense_compiled(fin, fout, act):
    case = dense_case(SMALL, fin=fin, fout=fout, act=act, relu=(fout == 13), seed=fin)
    run_compiled(case, seed=fin, p_valid=0.8, p_ready=0.7)


@pytest.mark.parametrize("name", ["3x3_s1_p1", "1x1", "conv1d", "depthwise"])
def test_split_products_engine_compiled(name):
    """LUT-PE builds take each product in two nibble steps (one more cycle of array latency): the
    accumulator, the forwarded sums and the tags follow it and every layer stays exact."""
    cfg = replace(SMALL, pe_product_stages=2)
    kwargs = dict(SWEEP[name])
    seed = sum(map(ord, name))
    case = conv_case(cfg, act="uint8" if seed % 2 else "int8", relu=True, seed=seed, **kwargs)
    drv = run_compiled(case, seed=seed, p_valid=0.7, p_ready=0.6)
    assert drv.active == case.stats.array_cycles


@pytest.mark.parametrize("split", [1, 2])
def test_one_pass_tiles_wait_for_their_bank_compiled(split):
    """Tiles one pass long (a dense layer of <= C inputs; a one-column conv of <= C channels) follow each
    other every cycle while a slow consumer holds the output buffer, so passes queue in the generator's
    skid slot and tiles wait for their psum banks: every byte stays exact, with split products too."""
    cfg = replace(SMALL, pe_product_stages=split)
    run_compiled(dense_case(cfg, fin=3, fout=24, seed=8), seed=8, p_ready=0.2)
    case = conv_case(cfg, cin=4, cout=16, hw=(6, 1), k=1, stride=1, pads=0, seed=9)
    run_compiled(case, seed=9, p_valid=0.3, p_ready=0.2)


@pytest.mark.parametrize("p_valid", [0.1, 0.2, 0.3])
def test_one_pass_rows_wait_for_their_input_compiled(p_valid):
    """A one-column conv of <= C inputs and <= R outputs is one pass per output row: while a row's pass
    waits for its input, the next row's is generated into the skid slot; taken the cycle after, it must
    still wait for its own row."""
    case = conv_case(SMALL, cin=4, cout=4, hw=(9, 1), k=1, stride=1, pads=0, seed=10)
    run_compiled(case, seed=int(p_valid * 10), p_valid=p_valid)


def test_split_products_dense_compiled():
    """Dense layers are passes one pixel long: every sum is forwarded, the tightest case for the latency."""
    run_compiled(dense_case(replace(SMALL, pe_product_stages=2), fin=33, fout=13, seed=4))


def random_layer(rng, seed):
    """Random geometry within SMALL's limits: any kernel/stride/pads, 1-D, groups, depthwise, types."""
    groups = int(rng.choice([1, 1, 2, 3]))
    cin, cout = groups * int(rng.integers(1, 7)), groups * int(rng.integers(1, 7))
    if rng.random() < 0.2:
        groups = cin = cout = int(rng.integers(2, 12))
    kh, kw = int(rng.integers(1, 8)), int(rng.integers(1, 8))
    h, w = int(rng.integers(max(1, kh - 5), 12)), int(rng.integers(max(1, kw - 5), 33))
    pads = tuple(int(v) for v in rng.integers(0, 6, 4))
    kwargs = dict(cin=cin, cout=cout, groups=groups, act=str(rng.choice(["int8", "uint8"])),
                  relu=bool(rng.random() < 0.3), seed=seed)
    if rng.random() < 0.2:
        return dict(kwargs, hw=(1, w), k=(1, kw), stride=int(rng.integers(1, 5)), pads=(pads[1], pads[3]), one_d=True)
    return dict(kwargs, hw=(h, w), k=(kh, kw), stride=tuple(int(v) for v in rng.integers(1, 5, 2)), pads=pads)


def test_random_layers_compiled():
    rng = np.random.default_rng(2024)
    done = 0
    while done < 16:
        kwargs = random_layer(rng, done)
        try:
            case = conv_case(SMALL, **kwargs)
        except (HardwareLimitError, ShapeError):      # a window larger than the padded input, etc.
            continue
        drv = run_compiled(case, seed=done, p_valid=float(rng.choice([1.0, 0.5])), p_ready=float(rng.choice([1.0, 0.5])))
        assert drv.active == case.stats.array_cycles, kwargs
        done += 1


def test_back_to_back_descriptors_compiled():
    """The engine returns to idle cleanly: a second, different layer right after the first is exact."""
    for i, case in enumerate([conv_case(SMALL, cin=3, cout=5, hw=(4, 4), seed=11),
                              conv_case(SMALL, cin=8, cout=4, hw=(5, 3), k=1, pads=0, groups=2, seed=12),
                              dense_case(SMALL, fin=9, fout=6, seed=13)]):
        run_compiled(case, seed=i)


def test_utilisation_default_config_compiled():
    """The acceptance layer: 3x3 conv 32->32, 16x16, pad 1, on 8x8 PEs keeps the array >= 80 % busy."""
    cfg = AcceleratorConfig()
    case = conv_case(cfg, cin=32, cout=32, hw=(16, 16), k=3, stride=1, pads=1, seed=5)
    drv = run_compiled(case)
    assert drv.active == case.stats.array_cycles
    assert drv.active / drv.cycles >= 0.8, f"utilisation {drv.active / drv.cycles:.3f} over {drv.cycles} cycles"
    assert case.stats.macs / (drv.cycles * cfg.pes) >= 0.8


def test_verilog_convert_default_config():
    from amaranth.back import verilog
    text = verilog.convert(ConvEngine(AcceleratorConfig()), name="conv_engine")
    assert "module conv_engine" in text
