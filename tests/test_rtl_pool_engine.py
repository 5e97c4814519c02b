# amaranth: UnusedElaboratable=no
"""Pooling and residual-add engines: output bytes equal the transaction-level model's, byte for byte.

Each test builds a small float network, quantises and compiles it, runs the descriptor chain one
descriptor at a time with ``cosim.tlm`` (whose end result is checked against ``Graph.run``), and for every
pooling/add descriptor feeds the engine the exact bytes the hardware would read (parameters, input
pixels in raster HWC order) with random valid gaps and random ``out.ready`` gaps, then compares the bytes
it produces with what the model wrote.
"""

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from scalenet.cosim.tlm import run_descriptors
from scalenet.driver.compiler import compile_graph
from scalenet.floatnet import FloatNet, FNode, quantize_net
from scalenet.ir import Add, AvgPool, Graph, Tensor
from scalenet.quant import AddRescale, QParams, quantize, requantize_add
from scalenet.rtl.add_engine import AddEngine
from scalenet.rtl.config import AcceleratorConfig
from scalenet.rtl.pool_engine import PoolEngine
from scalenet.rtl.regmap import DESCRIPTOR_BYTES, Opcode

CFG = AcceleratorConfig(rows=4, cols=4, max_width=32, max_channels=64, line_buffer_bytes=8192)
POOL_OPS = (Opcode.MAXPOOL, Opcode.AVGPOOL, Opcode.GLOBAL_AVGPOOL)


# -------------------------------------------------------------------------------------------------------
# Reference: per-descriptor stimulus and expected bytes from the memory image


def _hwc_bytes(memory, addr, h, w, c, stride):
    idx = addr + (np.arange(h * w)[:, None] * stride + np.arange(c)[None])
    return [int(v) for v in memory[idx.reshape(-1)]]


def layer_cases(nodes, input_shape, act="int8", seed=0, spread=1.0):
    """[(descriptor dict, raw descriptor bytes, streams, expected output bytes)] for every descriptor of a
    float network (a list of FNodes, or an already quantised ir.Graph with its input)."""
    if isinstance(nodes, Graph):
        graph, x = nodes, input_shape
    else:
        rng = np.random.default_rng(seed)
        net = FloatNet("t", "x", input_shape, nodes, [nodes[-1].output])
        cal = rng.normal(0, spread, (8, *input_shape)).astype(np.float32)
        graph = quantize_net(net, cal, act_dtype=act)
        x = quantize(cal[0], graph.input.q)
    compiled = compile_graph(graph, CFG)
    memory = compiled.image.copy()
    compiled.write_input(memory, x)
    cases = []
    for i, d in enumerate(compiled.descriptors):
        addr = compiled.desc_addr + i * DESCRIPTOR_BYTES
        raw = memory[addr:addr + DESCRIPTOR_BYTES].tobytes()
        before = memory.copy()
        run_descriptors(memory, addr, 1, CFG)
        h, w, c, ps = d["in_height"], d["in_width"], d["in_channels"], d["in_pixel_stride"]
        streams = {"pixels": _hwc_bytes(before, d["in_addr"], h, w, c, ps)}
        if d["opcode"] == Opcode.ADD:
            streams["pixels_b"] = _hwc_bytes(before, d["b_addr"], h, w, c, ps)
        p = before[d["param_addr"]:d["param_addr"] + d["param_bytes"]]
        streams["params"] = [int.from_bytes(p[k:k + 8].tobytes(), "little") for k in range(0, len(p), 8)]
        expected = _hwc_bytes(memory, d["out_addr"], d["out_height"], d["out_width"], d["out_channels"],
                              d["out_pixel_stride"])
        cases.append((d, raw, streams, expected))
    ref = graph.run(x)
    for name in graph.outputs:          # the model (hence the expected bytes) agrees with the reference
        np.testing.assert_array_equal(compiled.read_tensor(memory, name), ref[name][0])
    return cases


def engine_for(opcode):
    return AddEngine(CFG) if opcode == Opcode.ADD else PoolEngine(CFG)


# -------------------------------------------------------------------------------------------------------
# Drivers: amaranth.sim and the compiled engine, same per-cycle stimulus


class Stimulus:
    """Per-cycle stream driving with random valid gaps (held until accepted) and random ready gaps."""

    def __init__(self, streams, seed, valid_gap, ready_gap):
        self.streams = streams
        self.ptr = {k: 0 for k in streams}
        self.driving = {k: False for k in streams}
        self.rng = np.random.default_rng(seed)
        self.valid_gap, self.ready_gap = valid_gap, ready_gap
        self.out = []

    def drive(self, set_):
        for name, data in self.streams.items():
            if not self.driving[name] and self.ptr[name] < len(data) and self.rng.random() >= self.valid_gap:
                self.driving[name] = True
                set_(name, "payload", data[self.ptr[name]])
            set_(name, "valid", int(self.driving[name]))
        ready = int(self.rng.random() >= self.ready_gap)
        set_("out", "ready", ready)
        return ready

    def sample(self, get, ready):
        for name in self.streams:
            if self.driving[name] and get(name, "ready"):
                self.driving[name] = False
                self.ptr[name] += 1
        if ready and get("out", "valid"):
            self.out.append(get("out", "payload"))


class StallStimulus(Stimulus):
    """Inputs always valid; ``out.ready`` only in the last ``open_`` cycles of every ``period``: long output
    stalls let the loader run far ahead while taps sit in the engine's pipeline."""

    def __init__(self, streams, seed, valid_gap, ready_gap, period=40, open_=3):
        super().__init__(streams, seed, 0.0, 0.0)
        self.period, self.open_, self.t = period, open_, 0

    def drive(self, set_):
        super().drive(set_)
        ready = int(self.t % self.period >= self.period - self.open_)
        self.t += 1
        set_("out", "ready", ready)
        return ready


def run_pysim(dut, jobs, *, seed=1, valid_gap=0.3, ready_gap=0.3, max_cycles=20000, stimulus=Stimulus):
    """Run ``jobs`` ([(raw descriptor, streams)]) one after the other on one engine: [(bytes out, cycles)]."""
    stims = [stimulus(streams, seed + i, valid_gap, ready_gap) for i, (_, streams) in enumerate(jobs)]
    results = [{} for _ in jobs]

    async def bench(ctx):
        def port(name, member):
            return getattr(getattr(dut, name), member)
        for (raw, _), stim, result in zip(jobs, stims, results):
            ctx.set(dut.desc.as_value(), int.from_bytes(raw, "little"))
            assert not ctx.get(dut.busy)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            cycles, done = 0, 0
            while cycles < max_cycles and not done:
                assert ctx.get(dut.busy)
                ready = stim.drive(lambda n, m_, v: ctx.set(port(n, m_), v))
                stim.sample(lambda n, m_: ctx.get(port(n, m_)), ready)
                done = ctx.get(dut.done)
                await ctx.tick()
                cycles += 1
            result.update(cycles=cycles, done=done, busy_after=ctx.get(dut.busy), late=0)
            for name in stim.streams:
                ctx.set(port(name, "valid"), 0)
            ctx.set(dut.out.ready, 1)
            for _ in range(3):                      # nothing more comes out (or is taken in) after done
                result["late"] += ctx.get(dut.out.valid) + ctx.get(dut.params.ready) + ctx.get(dut.pixels.ready)
                await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return [check_run(stim, result) for stim, result in zip(stims, results)]


def run_compiled(dut, jobs, *, seed=1, valid_gap=0.3, ready_gap=0.3, max_cycles=400000):
    from scalenet.cosim.compiled import CompiledSimulator
    sim = CompiledSimulator(dut)
    out = []
    try:
        for i, (raw, streams) in enumerate(jobs):
            stim = Stimulus(streams, seed + i, valid_gap, ready_gap)
            sim.set("desc", int.from_bytes(raw, "little"))
            sim.set("start", 1)
            sim.tick()
            sim.set("start", 0)
            cycles, done = 0, 0
            while cycles < max_cycles and not done:
                sim.begin_cycle()
                ready = stim.drive(lambda n, m_, v: sim.set(f"{n}__{m_}", v))
                sim.settle()
                stim.sample(lambda n, m_: sim.get(f"{n}__{m_}"), ready)
                done = sim.get("done")
                sim.end_cycle()
                cycles += 1
            for name in streams:
                sim.set(f"{name}__valid", 0)
            sim.set("out__ready", 1)
            sim.begin_cycle()
            result = dict(cycles=cycles, done=done, busy_after=sim.get("busy"), late=0)
            for _ in range(3):
                sim.settle()
                result["late"] += sim.get("out__valid")
                sim.end_cycle()
                sim.begin_cycle()
            sim.end_cycle()
            out.append(check_run(stim, result))
    finally:
        sim.close()
    return out


def check_run(stim, result):
    assert result["done"], f"no done after {result['cycles']} cycles ({len(stim.out)} bytes out)"
    assert not result["busy_after"]
    assert result["late"] == 0, "output (or input ready) after done"
    for name, data in stim.streams.items():
        assert stim.ptr[name] == len(data), f"{name}: consumed {stim.ptr[name]} of {len(data)}"
    return stim.out, result["cycles"]


def check_layers(nodes, input_shape, ops, *, act="int8", seed=0, engine="pysim", spread=1.0, repeat=1, **kw):
    """Run every descriptor with an opcode in ``ops`` (``repeat`` times over) on ONE engine instance, in
    order, and compare each output with the model's. Returns (opcode names, cycles per output byte)."""
    cases = [c for c in layer_cases(nodes, input_shape, act, seed, spread) if c[0]["opcode"] in ops] * repeat
    assert cases, "no descriptor of the engine under test"
    runner = run_compiled if engine == "compiled" else run_pysim
    results = runner(engine_for(cases[0][0]["opcode"]), [(raw, streams) for _, raw, streams, _ in cases], **kw)
    seen, cycles_per_byte = [], []
    for (d, _, _, expected), (got, cycles) in zip(cases, results):
        name = Opcode(d["opcode"]).name
        seen.append(name)
        assert got == expected, (f"{name}: {sum(a != b for a, b in zip(got, expected))} of "
                                 f"{len(expected)} bytes differ (got {len(got)} bytes)")
        cycles_per_byte.append(cycles / len(expected))
    return seen, cycles_per_byte


# -------------------------------------------------------------------------------------------------------
# Max pooling and stand-alone clamps


def mp(src, out, kernel, stride, pads=None, ceil=False):
    attrs = dict(kernel=kernel, stride=stride, ceil_mode=ceil)
    if pads is not None:
        attrs["pads"] = pads
    return FNode("maxpool", out, [src], out, attrs)


@pytest.mark.parametrize("act", ["int8", "uint8"])
@pytest.mark.parametrize("case", [
    ("2x2s2", (4, 6, 8), dict(kernel=(2, 2), stride=(2, 2))),
    ("3x3s2p1", (3, 7, 6), dict(kernel=(3, 3), stride=(2, 2), pads=(1, 1, 1, 1))),
    ("3x3s2ceil", (2, 8, 6), dict(kernel=(3, 3), stride=(2, 2), ceil=True)),
    ("3x2s1_asym", (3, 5, 6), dict(kernel=(3, 2), stride=(1, 2), pads=(0, 1, 2, 0))),
], ids=lambda c: c[0])
def test_maxpool(case, act):
    _, shape, attrs = case
    seen, _ = check_layers([mp("x", "y", **attrs)], shape, (Opcode.MAXPOOL,), act=act)
    assert seen == ["MAXPOOL"]


def test_maxpool_no_gaps():
    """Full rate in and out: the loader/computer interlock must hold when nothing stalls."""
    check_layers([mp("x", "y", (3, 3), (2, 2), (1, 1, 1, 1))], (4, 9, 7), (Opcode.MAXPOOL,),
                 valid_gap=0.0, ready_gap=0.0)


def test_maxpool_reads_a_row_right_after_its_only_byte():
    """One-byte rows (1x1 kernel, one column, one channel) at full rate: a row's only byte is read as soon
    as the interlock allows, the tightest case for the line buffer's late write (this fails if the write
    lands four cycles later than it does)."""
    check_layers([mp("x", "y", (1, 1), (1, 1))], (1, 9, 1), (Opcode.MAXPOOL,), valid_gap=0.0, ready_gap=0.0)


@pytest.mark.parametrize("kernel, stride", [((2, 2), (2, 2)), ((1, 1), (3, 3))])
def test_maxpool_long_output_stalls(kernel, stride):
    """kernel_h <= stride_h: the row a window's last tap reads shares a ring slot with a row the loader
    may fetch once the window moves on; that slot must not be freed before the (stalled) tap has read it."""
    check_layers([mp("x", "y", kernel, stride)], (2, 12, 6), (Opcode.MAXPOOL,), stimulus=StallStimulus,
                 max_cycles=60000)


def test_maxpool_1d_and_heavy_backpressure():
    check_layers([mp("x", "y", (3,), (2,), (1, 1), ceil=True)], (5, 12), (Opcode.MAXPOOL,), seed=3,
                 valid_gap=0.6, ready_gap=0.7)


@pytest.mark.parametrize("act", ["int8", "uint8"])
def test_clip_standalone(act):
    """A Clip/ReLU that could not be fused is a 1x1 stride-1 max pool with clamp bounds."""
    nodes = [FNode("relu", "r", ["x"], "r"), FNode("clip", "c", ["r"], "y", dict(lo=None, hi=0.6))]
    seen, cpb = check_layers(nodes, (3, 5, 4), (Opcode.MAXPOOL,), act=act)
    assert seen == ["MAXPOOL", "MAXPOOL"]          # both on one engine, back to back


# -------------------------------------------------------------------------------------------------------
# Global average pooling


@pytest.mark.parametrize("act", ["int8", "uint8"])
def test_gap(act):
    """Run twice on one engine: the accumulators must restart from the first pixel, not keep old sums."""
    seen, _ = check_layers([FNode("gap", "g", ["x"], "y")], (6, 5, 4), (Opcode.GLOBAL_AVGPOOL,), act=act, seed=4,
                           repeat=2)
    assert seen == ["GLOBAL_AVGPOOL"] * 2


def test_gap_1d_and_single_channel():
    check_layers([FNode("gap", "g", ["x"], "y")], (3, 9), (Opcode.GLOBAL_AVGPOOL,), seed=5)
    # 1, 2 and 3 channels at full rate: the sum of the byte one, two or three cycles before is still being
    # written when the next byte of its channel reads the accumulator (each forward is exercised).
    for ch in (1, 2, 3):
        check_layers([FNode("gap", "g", ["x"], "y")], (ch, 3, 4), (Opcode.GLOBAL_AVGPOOL,), seed=6 + ch,
                     valid_gap=0.0, ready_gap=0.0)


# -------------------------------------------------------------------------------------------------------
# Average pooling


def ap(src, out, kernel, stride, pads=None, ceil=False, cip=False):
    attrs = dict(kernel=kernel, stride=stride, ceil_mode=ceil, count_include_pad=cip)
    if pads is not None:
        attrs["pads"] = pads
    return FNode("avgpool", out, [src], out, attrs)


@pytest.mark.parametrize("act", ["int8", "uint8"])
@pytest.mark.parametrize("case", [
    ("2x2s2", (4, 6, 6), dict(kernel=(2, 2), stride=(2, 2))),
    ("3x3s1p1", (3, 5, 5), dict(kernel=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1))),
    ("3x3s1p1_cip", (3, 5, 5), dict(kernel=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1), cip=True)),
    ("3x3s2ceil_cip", (2, 8, 6), dict(kernel=(3, 3), stride=(2, 2), pads=(1, 0, 0, 1), ceil=True, cip=True)),
], ids=lambda c: c[0])
def test_avgpool(case, act):
    _, shape, attrs = case
    check_layers([ap("x", "y", **attrs)], shape, (Opcode.AVGPOOL,), act=act, seed=7)


# -------------------------------------------------------------------------------------------------------
# Residual add


@pytest.mark.parametrize("act", ["int8", "uint8"])
def test_add_with_fused_relu(act):
    """x + avgpool(x) (different scales and zero points), ReLU fused into the add's clamp."""
    nodes = [ap("x", "p", (3, 3), (1, 1), (1, 1, 1, 1)), FNode("add", "a", ["x", "p"], "s"),
             FNode("relu", "r", ["s"], "y")]
    seen, cpb = check_layers(nodes, (4, 5, 5), (Opcode.ADD,), act=act, seed=8, repeat=2)
    assert seen == ["ADD", "ADD"]


def add_graph(act, shape, x_q, b_q, y_q, lo=None, hi=None, seed=0, spread=None):
    """x + b with b = a 3x3 average pool of x (its own scale and zero point): hand-picked quantisation.
    ``spread``: x within zero point +- spread (else the whole type range)."""
    q = {name: QParams(np.float32(scale), zp, act) for name, (scale, zp) in (("x", x_q), ("b", b_q), ("y", y_q))}
    tensors = {name: Tensor(name, shape, q[name]) for name in q}
    layers = [AvgPool(name="p", inputs=["x"], output="b", kernel=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1)),
              Add(name="a", inputs=["x", "b"], output="y", lo=lo, hi=hi)]
    graph = Graph("add", tensors, layers, ["x"], ["y"])
    t = q["x"].dtype
    lo_x, hi_x = (t.lo, t.hi) if spread is None else (x_q[1] - spread, x_q[1] + spread)
    x = np.random.default_rng(seed).integers(lo_x, hi_x + 1, shape).astype(t.np_dtype)
    return graph, x


@pytest.mark.parametrize("act", ["int8", "uint8"])
def test_add_ties_and_clamp(act):
    """Rescales 1/2 and 1/4 make exact halves common (round half to even); clamp bounds inside the type."""
    zp = -3 if act == "int8" else 120
    graph, x = add_graph(act, (4, 6, 6), (1.0, zp), (0.5, zp + 7), (2.0, zp - 2), lo=zp - 10, hi=zp + 12,
                         spread=30)
    seen, _ = check_layers(graph, x, (Opcode.ADD,))
    assert seen == ["ADD"]


def test_add_saturation():
    """Rescales near 2**14: magnitudes far above 2**20 must saturate, not wrap."""
    graph, x = add_graph("int8", (2, 3, 7), (1.0, 5), (1.0, -9), (2.0 ** -14, 1), seed=1)
    check_layers(graph, x, (Opcode.ADD,))


def add_shift_jobs(shift, rng):
    """(a_mult, b_mult) records for one shift: random magnitudes around ``2**(shift + 8)``; exact ties
    (both multipliers ``2**(shift - 1)``: ``|t| / 2**shift = |da + db| / 2``); and for small shifts
    products far past the 2**20 saturation whose low 21 quotient bits are all zero (a lost "above 21
    bits" flag would show as a zero magnitude instead of a clamp bound)."""
    top = min(32, max(1, shift + 1))
    a_mult, b_mult = (int(v) for v in rng.integers(2 ** (top - 1), 2 ** top, size=2))
    records = [(2 ** 32 - 1 if shift % 5 == 0 else a_mult, b_mult)]
    if 1 <= shift <= 32:
        records.append((2 ** (shift - 1), 2 ** (shift - 1)))
    if shift + 21 + 6 <= 31:
        records += [(2 ** (shift + 21 + j), 0) for j in range(0, 7, 2)]
    return records


def test_add_every_shift_amount():
    """Raw parameter records (not add_rescale's) at every shift 0..63 and one clamped to 63, against
    quant.requantize_add: the shift is split over two stages (whole bytes, then the rest), the sticky
    mask and the saturation test are per-layer registers."""
    graph, x = add_graph("int8", (2, 3, 7), (1.0, 4), (0.5, -6), (2.0, 3), lo=-100, hi=90, seed=3)
    (d, raw, streams, _), = [c for c in layer_cases(graph, x) if c[0]["opcode"] == Opcode.ADD]
    # Input a swept around its zero point (qa - x_zp = -21 .. 20: +-1 makes single-bit products).
    qa = (d["x_zero_point"] + np.arange(-21, 21)).astype(np.int8)
    qb = np.array(streams["pixels_b"], np.uint8).view(np.int8)
    assert len(qb) == len(qa)
    streams = {**streams, "pixels": [int(v) for v in qa.view(np.uint8)]}
    rng = np.random.default_rng(4)
    jobs, expected, labels = [], [], []
    for shift in [*range(64), 200]:
        for a_mult, b_mult in add_shift_jobs(shift, rng):
            rescale = AddRescale(a_mult, b_mult, min(shift, 62))  # >= 62: |t| < 2**44 rounds to 0 either way
            want = requantize_add(qa, d["x_zero_point"], qb, d["b_zero_point"], rescale, d["y_zero_point"],
                                  "int8", lo=-100, hi=90)
            jobs.append((raw, {**streams, "params": [a_mult | b_mult << 32, shift]}))
            expected.append([int(v) for v in want.view(np.uint8)])
            labels.append((shift, a_mult, b_mult))
    results = run_pysim(AddEngine(CFG), jobs, valid_gap=0.1, ready_gap=0.1)
    for label, want, (got, _) in zip(labels, expected, results):
        assert got == want, f"{label}: {sum(a != b for a, b in zip(got, want))} of {len(want)} differ"
    outs = np.array(expected)
    assert len(np.unique(outs)) > 50 and (outs == 90).any() and (outs == 256 - 100).any()


def test_add_full_rate():
    nodes = [mp("x", "m", (1, 1), (1, 1)), FNode("clip", "c", ["m"], "k", dict(lo=-0.5, hi=0.8)),
             FNode("add", "a", ["x", "k"], "y")]
    seen, cpb = check_layers(nodes, (3, 4, 6), (Opcode.ADD,), seed=9, valid_gap=0.0, ready_gap=0.0)
    assert cpb[0] < 1.2                  # one byte per cycle plus the pipeline fill


# -------------------------------------------------------------------------------------------------------
# A larger case on the compiled engine, and Verilog conversion


def test_large_layers_compiled():
    """A 32-wide, 16-channel map: the ring wraps many times; max, avg (ceil, count_include_pad) and GAP."""
    nodes = [mp("x", "m", (3, 3), (2, 2), (1, 1, 1, 1)),
             ap("m", "a", (3, 3), (2, 2), (1, 1, 0, 0), ceil=True, cip=True),
             FNode("gap", "g", ["a"], "y")]
    seen, cpb = check_layers(nodes, (16, 20, 32), POOL_OPS, seed=10, engine="compiled",
                             valid_gap=0.2, ready_gap=0.2)
    assert seen == ["MAXPOOL", "AVGPOOL", "GLOBAL_AVGPOOL"]


@pytest.mark.parametrize("cls", [PoolEngine, AddEngine])
def test_verilog_default_config(cls):
    text = verilog.convert(cls(AcceleratorConfig()))
    assert "module top" in text


def test_config_type_checked():
    with pytest.raises(TypeError, match="AcceleratorConfig"):
        PoolEngine({"rows": 4})
    with pytest.raises(TypeError, match="AcceleratorConfig"):
        AddEngine(8)
