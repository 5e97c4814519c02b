"""The compiled (CXXRTL) engine agrees with Amaranth's simulator cycle for cycle, and builds are cached."""

import json
import os

import numpy as np
import pytest
from amaranth import Module, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from scalenet.cosim import compiled
from scalenet.cosim.compiled import CompiledSimulator, CompilerNotFound


class Mac(wiring.Component):
    """A small MAC with a counter: enough state to tell two engines apart if either is wrong."""

    a: In(signed(8))
    b: In(signed(9))
    en: In(1)
    clear: In(1)
    acc: Out(signed(32))
    count: Out(16)

    def elaborate(self, platform):
        m = Module()
        with m.If(self.clear):
            m.d.sync += self.acc.eq(0)
        with m.Elif(self.en):
            m.d.sync += [self.acc.eq(self.acc + self.a * self.b), self.count.eq(self.count + 1)]
        return m


def stimulus(n=300, seed=0):
    rng = np.random.default_rng(seed)
    return [(int(rng.integers(-128, 128)), int(rng.integers(-256, 256)), int(rng.random() < 0.8),
             int(rng.random() < 0.05)) for _ in range(n)]


def pysim_trace(stim):
    dut = Mac()
    trace = []

    async def bench(ctx):
        for a, b, en, clear in stim:
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            ctx.set(dut.en, en)
            ctx.set(dut.clear, clear)
            await ctx.tick()
            trace.append((ctx.get(dut.acc), ctx.get(dut.count)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return trace


def test_compiled_matches_pysim_cycle_for_cycle(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALENET_CACHE_DIR", str(tmp_path))
    stim = stimulus()
    sim = CompiledSimulator(Mac())
    assert {"a", "b", "acc", "count", "clk", "rst"} <= set(sim.names)
    trace = []
    for a, b, en, clear in stim:
        sim.set("a", a)
        sim.set("b", b)
        sim.set("en", en)
        sim.set("clear", clear)
        sim.tick()
        trace.append((sim.get_signed("acc"), sim.get("count")))
    assert trace == pysim_trace(stim)
    assert sim.cycles == len(stim)


def test_build_is_cached_and_run_until_times_out(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALENET_CACHE_DIR", str(tmp_path))
    first = CompiledSimulator(Mac())
    second = CompiledSimulator(Mac())
    assert first.library_path == second.library_path
    assert first.library_path.parent == tmp_path / "cxxrtl"
    assert len(list((tmp_path / "cxxrtl").glob("*.so"))) == 1
    second.set("en", 1)
    assert second.run_until("count", 1000, 10_000) == 1000
    with pytest.raises(TimeoutError, match="count did not become 5"):
        second.run_until("count", 5, 100)
    with pytest.raises(KeyError, match="no signal"):
        second.get("nope")


def test_another_checkout_of_the_same_design_shares_the_build(tmp_path, monkeypatch):
    """The cache key leaves out source locations: the same design defined in a file elsewhere (another
    clone of the repository) loads the build instead of compiling it again."""
    import importlib.util
    import inspect
    monkeypatch.setenv("SCALENET_CACHE_DIR", str(tmp_path / "cache"))
    clone = tmp_path / "clone" / "mac_elsewhere.py"
    clone.parent.mkdir()
    clone.write_text("from amaranth import Module, signed\nfrom amaranth.lib import wiring\n"
                     "from amaranth.lib.wiring import In, Out\n\n\n" + inspect.getsource(Mac))
    spec = importlib.util.spec_from_file_location("mac_elsewhere", clone)
    elsewhere = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(elsewhere)
    here = CompiledSimulator(Mac())
    there = CompiledSimulator(elsewhere.Mac())
    assert here.library_path == there.library_path
    assert len(list((tmp_path / "cache" / "cxxrtl").glob("*.so"))) == 1


def test_first_build_shows_a_progress_bar_and_records_its_time(tmp_path, monkeypatch, capfd):
    """The first run's build is its longest step: a bar names the stage and compares with the last build;
    cached loads stay silent."""
    monkeypatch.setenv("SCALENET_CACHE_DIR", str(tmp_path))
    CompiledSimulator(Mac(), top="mac", progress=True)
    err = capfd.readouterr().err
    assert "building the simulator of mac" in err and "first run only" in err
    record = json.loads((tmp_path / "cxxrtl" / "build-seconds.json").read_text())
    assert 0 < record["mac"] < 600
    CompiledSimulator(Mac(), top="mac", progress=True)
    assert "building" not in capfd.readouterr().err
    CompiledSimulator(Mac(), top="mac2", progress=False)
    assert capfd.readouterr().err == ""
    assert set(json.loads((tmp_path / "cxxrtl" / "build-seconds.json").read_text())) == {"mac", "mac2"}


def test_missing_compiler_is_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("SCALENET_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CompilerNotFound, match="engine='pysim'"):
        compiled.find_compiler()
