"""The simulated platform on both engines: pysim (Amaranth) and compiled (CXXRTL) run the same small
network bit-exact with the reference, cycle for cycle alike (even under random back-pressure), with
memory models that answer the same API; a missing compiler falls back to pysim with a warning."""

import numpy as np
import pytest

from scalenet.cosim.axi_memory import MEMORY_API
from scalenet.cosim.platform import EngineFallbackWarning, SimTransport, SimulatedPlatform, SimulationSetupError
from scalenet.driver.accelerator import Accelerator, AcceleratorError
from scalenet.floatnet import FloatNet, FNode, quantize_net
from scalenet.quant import quantize
from scalenet.rtl import regmap
from scalenet.rtl.config import AcceleratorConfig
from scalenet.rtl.regmap import ErrorCode

# The configuration of tests/test_top.py, so the compiled model is shared through the build cache.
CFG = AcceleratorConfig(rows=4, cols=4, max_width=32, max_channels=512, line_buffer_bytes=8192,
                        weight_buffer_bytes=64 * 1024)
MEMORY = dict(mem_size=1 << 16, latency=5, write_latency=2, beat_interval=1, stall=0.15, seed=7)


def tiny_net():
    """A 3x3 conv (the PE array) and an average pool (the pool engine): a few hundred cycles each."""
    rng = np.random.default_rng(4)
    nodes = [
        FNode("conv", "c1", ["x"], "c1", dict(weight=rng.normal(0, 0.3, (4, 4, 3, 3)).astype(np.float32),
                                              bias=rng.normal(0, 0.1, 4), pads=(1, 1, 1, 1))),
        FNode("relu", "r1", ["c1"], "r1"),
        FNode("avgpool", "ap", ["r1"], "ap", dict(kernel=(2, 2), stride=(2, 2))),
    ]
    net = FloatNet("tiny", "x", (4, 4, 4), nodes, ["ap"])
    cal = rng.normal(0, 1, (6, 4, 4, 4)).astype(np.float32)
    graph = quantize_net(net, cal, act_dtype="uint8")
    return graph, quantize(cal[:1], graph.input.q)


def run_on(engine):
    graph, x = tiny_net()
    transport = SimTransport(config=CFG, engine=engine, **MEMORY)
    acc = Accelerator(transport, config=CFG, timeout=600.0, poll_cycles=150)
    loaded = acc.load(graph)
    acc.clear_counters()
    out = acc.run(loaded, x)
    result = {"out": out, "ref": graph.run(x), "counters": acc.counters(), "cycles": transport.platform.cycles,
              "memory": transport.platform.memory, "platform": transport.platform, "acc": acc, "loaded": loaded}
    return result


@pytest.fixture(scope="module")
def runs():
    results = {engine: run_on(engine) for engine in ("pysim", "compiled")}
    yield results
    for r in results.values():
        r["acc"].close()


def test_both_engines_are_exact_and_cycle_identical(runs):
    for engine, r in runs.items():
        assert r["platform"].engine == engine
        np.testing.assert_array_equal(r["out"]["ap"], r["ref"]["ap"], err_msg=engine)
        assert r["memory"].violations == [], r["memory"].first_violation
        assert r["counters"]["dma_stall"] > 0          # the random back-pressure did bite
    pysim, compiled = runs["pysim"], runs["compiled"]
    assert pysim["counters"] == compiled["counters"]
    assert pysim["cycles"] == compiled["cycles"] > pysim["counters"]["cycles"] > 0
    for stat in ("read_bytes", "write_bytes", "max_reads_outstanding", "max_writes_outstanding", "pending", "cycle"):
        assert getattr(pysim["memory"], stat) == getattr(compiled["memory"], stat), stat
    assert pysim["memory"].read_bytes >= pysim["counters"]["dma_rd_bytes"] > 0


def test_memory_models_present_one_api(runs):
    for engine, r in runs.items():
        mem = r["memory"]
        missing = [name for name in MEMORY_API if not hasattr(mem, name)]
        assert not missing, f"{engine}: {missing}"
        assert (mem.read_latency, mem.write_latency, mem.beat_interval, mem.stall, mem.seed) == (5, 2, 1, 0.15, 7)
        assert mem.data.dtype == np.uint8 and mem.data.size == MEMORY["mem_size"]
        mem.load(0xFF00, b"\x01\x02\x03")
        assert mem.dump(0xFF00, 3) == b"\x01\x02\x03"


def test_error_injection_is_alike_on_both_engines(runs):
    outcome = {}
    for engine, r in runs.items():
        acc, loaded, mem = r["acc"], r["loaded"], r["memory"]
        d = loaded.compiled.descriptors[0]
        mem.add_error(d["weight_addr"], d["weight_addr"] + 8, "SLVERR")
        graph, x = tiny_net()
        start = r["platform"].cycles
        try:
            with pytest.raises(AcceleratorError, match="READ_SLVERR in layer c1") as info:
                acc.run(loaded, x)
        finally:
            mem.clear_errors()
        assert info.value.code == ErrorCode.READ_SLVERR
        np.testing.assert_array_equal(acc.run(loaded, x)["ap"], r["ref"]["ap"])       # recovers
        outcome[engine] = (r["platform"].cycles - start, mem.read_bytes, mem.write_bytes)
    assert outcome["pysim"] == outcome["compiled"]


def test_missing_compiler_falls_back_to_pysim(monkeypatch, tmp_path):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.warns(EngineFallbackWarning, match="no C.. compiler found.*falling back to the Python simulator"):
        platform = SimulatedPlatform(CFG, engine="compiled", mem_size=4096)
    assert platform.engine == "pysim"
    assert platform.read_reg(regmap.by_name("ID").offset) == regmap.ID_MAGIC
    platform.close()


def test_unknown_engine_and_unwritable_trace_are_named(tmp_path):
    with pytest.raises(SimulationSetupError, match="unknown simulation engine 'verilator'"):
        SimulatedPlatform(CFG, engine="verilator")
    with pytest.raises(SimulationSetupError, match="cannot write the trace .*missing"):
        SimulatedPlatform(CFG, engine="pysim", vcd=tmp_path / "missing" / "t.vcd")


def test_protocol_checks_and_back_pressure_are_alike_on_both_engines():
    """A master breaking every rule under random back-pressure: both memory models see the same
    handshakes in the same cycles, so they report the same violations and move the same bytes."""
    from amaranth import Module, Signal
    from amaranth.lib import wiring
    from amaranth.lib.wiring import Out
    from amaranth.sim import Simulator

    from scalenet.cosim.axi_memory import AXIMemory
    from scalenet.cosim.compiled import CompiledSimulator
    from scalenet.rtl import axi

    class RudeMaster(wiring.Component):
        bus: Out(axi.Signature(addr_width=32, data_width=64))

        def elaborate(self, platform):
            m = Module()
            n = Signal(8)
            m.d.sync += n.eq(n + 1)
            bus = self.bus
            m.d.comb += [
                bus.ar.valid.eq(n[0] | n[1]), bus.ar.addr.eq(0xFE0 + (n[2:4] << 3) + n[4]), bus.ar.len.eq(n[1:4]),
                bus.ar.size.eq(3), bus.ar.burst.eq(n[5]), bus.r.ready.eq(n[0] | n[2]),
                bus.aw.valid.eq(n[1]), bus.aw.addr.eq(0x80 + (n[3:5] << 6)), bus.aw.len.eq(1), bus.aw.size.eq(3),
                bus.aw.burst.eq(1), bus.w.valid.eq(n[0] | n[3]), bus.w.last.eq(n[0]), bus.w.strb.eq(n),
                bus.w.data.eq(n * 0x0101_0101_0101_0101), bus.b.ready.eq(n[2]),
            ]
            return m

    options = dict(read_latency=1, write_latency=2, beat_interval=2, stall=0.3, seed=11, writable=[(0, 0x100)],
                   errors=[(0x1000, 0x1008, "SLVERR")])
    cycles = 300
    compiled = CompiledSimulator(RudeMaster())
    cmem = compiled.attach_axi_memory("bus", 1 << 13, **options)
    cmem.data[:] = np.arange(cmem.data.size) % 251
    compiled.tick(cycles)

    dut = RudeMaster()
    pmem = AXIMemory(dut.bus, size=1 << 13, **options)
    pmem.data[:] = np.arange(pmem.data.size) % 251
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(pmem.process)

    async def bench(ctx):
        await ctx.tick().repeat(cycles)
    sim.add_testbench(bench)
    sim.run()

    assert pmem.cycle == cmem.cycle == cycles
    messages = {v.message.split(" ")[0] + " " + v.message.split(" ")[1] for v in pmem.violations}
    assert len(messages) >= 5, messages          # a varied set of rules broken
    assert [str(v) for v in cmem.violations] == [str(v) for v in pmem.violations]
    for stat in ("read_bytes", "write_bytes", "max_reads_outstanding", "max_writes_outstanding", "pending"):
        assert getattr(pmem, stat) == getattr(cmem, stat), stat
    np.testing.assert_array_equal(pmem.data, cmem.data)
    assert pmem.write_bytes > 0 and pmem.read_bytes > 0


def test_progress_bar_goes_to_stderr(capsys):
    """(Without ``progress`` the bar shows only on a terminal: the CLI test checks its stderr stays clean.)"""
    import time
    platform = SimulatedPlatform(CFG, engine="compiled", mem_size=4096, progress=True)
    platform.run(1000)
    time.sleep(1.1)             # the bar appears once a run has lasted a second
    platform.run(1000)
    platform.close()
    out, err = capsys.readouterr()
    assert out == "" and "simulating (compiled)" in err and "cycle" in err
