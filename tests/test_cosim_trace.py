"""VCD traces of both engines and their analysis: the per-run and per-layer figures equal the hardware
performance counters, the DMA bytes equal what the descriptors ask for, the two engines' traces agree,
and the toggle counts show which modules worked."""

import math

import numpy as np
import pytest

from scalenet.cosim.platform import SimTransport
from scalenet.cosim.trace import TraceError, analyze
from scalenet.driver.accelerator import Accelerator
from scalenet.rtl import regmap
from scalenet.rtl.regmap import DESCRIPTOR_BYTES, Opcode
from scalenet.rtl.top import END_OF_LIST_CYCLES

from test_cosim_platform import CFG, tiny_net

KEYS = {"cycles": "cycles", "mac_ops": "mac_active", "dma_rd_bytes": "dma_rd_bytes", "dma_wr_bytes": "dma_wr_bytes",
        "dma_stall_cycles": "dma_stall"}


def run_descriptor(acc, transport, desc_addr):
    """One descriptor as its own run (DESC_COUNT = 1); returns the counters after it."""
    acc.clear_counters()
    acc.write("DESC_ADDR", desc_addr)
    acc.write("DESC_COUNT", 1)
    acc.write("CTRL", regmap.pack("CTRL", start=1))
    for _ in range(200):
        transport.wait(100)
        status = regmap.unpack("STATUS", acc.read("STATUS"))
        if not status["busy"]:
            break
    assert status["done"] and not status["error"]
    return acc.counters()


def trace_run(engine, vcd):
    """The network once as a whole, then each descriptor as its own run, traced; counters after each."""
    graph, x = tiny_net()
    transport = SimTransport(config=CFG, engine=engine, mem_size=1 << 16, latency=4, stall=0.1, seed=5, vcd=vcd)
    acc = Accelerator(transport, config=CFG, timeout=600.0, poll_cycles=150)
    loaded = acc.load(graph)
    acc.clear_counters()
    out = acc.run(loaded, x)
    counters = [acc.counters()]
    net = loaded.compiled
    for i in range(net.desc_count):
        counters.append(run_descriptor(acc, transport, net.desc_addr + i * DESCRIPTOR_BYTES))
    acc.close()                      # completes the VCD
    np.testing.assert_array_equal(out["ap"], graph.run(x)["ap"])
    return {"report": analyze(vcd), "counters": counters, "net": net, "graph": graph}


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    return {engine: trace_run(engine, tmp_path_factory.mktemp(engine) / "run.vcd") for engine in ("pysim", "compiled")}


def expected_dma_bytes(d, nb):
    """Bytes the sequencer must read and write for a conv/pool descriptor (docs/architecture.md)."""
    def words(nbytes):
        return math.ceil(nbytes / nb)

    def region(addr, h, w, stride, channels):
        return words(addr % nb + (h * w - 1) * stride + channels)
    rd = words(DESCRIPTOR_BYTES) + words(d["param_bytes"])
    if d["opcode"] in (Opcode.CONV, Opcode.DENSE):
        rd += words(d["weight_bytes"])
    rd += region(d["in_addr"], d["in_height"], d["in_width"], d["in_pixel_stride"], d["in_channels"])
    wr = region(d["out_addr"], d["out_height"], d["out_width"], d["out_pixel_stride"], d["out_channels"])
    return rd * nb, wr * nb


@pytest.mark.parametrize("engine", ["pysim", "compiled"])
def test_run_and_layer_figures_equal_the_counters(traces, engine):
    traced = traces[engine]
    report, counters, net = traced["report"], traced["counters"], traced["net"]
    n = net.desc_count
    assert report.runs == 1 + n
    for run, c in enumerate(counters):
        got = report.run_totals(run)
        assert {k: got[k] for k in KEYS} == {k: c[v] for k, v in KEYS.items()}, f"run {run}"
        assert got["pe_active_cycles"] * CFG.pes == got["mac_ops"]
    # The whole run: one entry per descriptor, then the sequencer's end-of-list cycles.
    whole = [la for la in report.layers if la.run == 0]
    assert [la.layer for la in whole] == list(range(n + 1)) and whole[-1].cycles == END_OF_LIST_CYCLES
    # Each descriptor alone: its figures are the counters of that run.
    for i in range(n):
        alone = [la for la in report.layers if la.run == 1 + i]
        assert [la.layer for la in alone] == [0, 1]
        assert alone[0].cycles + END_OF_LIST_CYCLES == counters[1 + i]["cycles"]
    # Between runs the accelerator is idle, not busy.
    assert report.busy_cycles == sum(c["cycles"] for c in counters) < report.cycles


@pytest.mark.parametrize("engine", ["pysim", "compiled"])
def test_dma_bytes_are_what_the_descriptors_ask_for(traces, engine):
    report, net = traces[engine]["report"], traces[engine]["net"]
    whole = [la for la in report.layers if la.run == 0]
    for i, d in enumerate(net.descriptors):
        assert (whole[i].dma_rd_bytes, whole[i].dma_wr_bytes) == expected_dma_bytes(d, CFG.data_bytes), i


@pytest.mark.parametrize("engine", ["pysim", "compiled"])
def test_pe_activity_and_toggles_follow_the_work(traces, engine):
    report, net = traces[engine]["report"], traces[engine]["net"]
    conv_i, pool_i = (net.layer_of.index(name) for name in ("c1", "ap"))
    layers = {la.layer: la for la in report.layers if la.run == 0}
    conv, pool = layers[conv_i], layers[pool_i]
    d = net.descriptors[conv_i]
    macs = (d["out_height"] * d["out_width"] * d["out_channels"] * d["in_channels"] // d["groups"] *
            d["kernel_h"] * d["kernel_w"])
    assert conv.mac_ops >= macs > 0
    assert 0 < conv.pe_active_ratio < 1 and pool.pe_active_cycles == 0
    assert conv.toggles["conv"] > 0 and conv.toggles["conv.array"] > 0 and pool.toggles["pool"] > 0
    # The idle engine of each layer toggles little (its shared inputs only) next to the busy one.
    assert conv.toggles["pool"] * 10 < conv.toggles["conv"]
    assert pool.toggles["conv.array"] * 10 < conv.toggles["conv.array"]
    assert report.toggles["top"] >= sum(v for k, v in report.toggles.items() if k != "top" and "." not in k)


def test_engines_trace_the_same_figures_and_json(traces):
    import json
    keys = ("run", "layer", "start_cycle", "cycles", "pe_active_cycles", "mac_ops", "dma_rd_bytes", "dma_wr_bytes",
            "dma_stall_cycles")
    figures = {engine: [tuple(getattr(la, k) for k in keys) for la in t["report"].layers]
               for engine, t in traces.items()}
    assert figures["pysim"] == figures["compiled"]
    assert traces["pysim"]["report"].cycles == traces["compiled"]["report"].cycles
    d = json.loads(json.dumps(traces["compiled"]["report"].to_dict()))
    assert d["runs"] == traces["compiled"]["report"].runs and d["layers"][0]["toggles"]["top"] > 0


def test_bad_traces_are_named(tmp_path):
    with pytest.raises(TraceError, match="trace file not found"):
        analyze(tmp_path / "none.vcd")
    (tmp_path / "junk.vcd").write_text("hello\n")
    with pytest.raises(TraceError, match="not a complete VCD"):
        analyze(tmp_path / "junk.vcd")
    (tmp_path / "other.vcd").write_text("$timescale 1 ns $end\n$scope module top $end\n$var wire 1 ! clk $end\n"
                                        "$upscope $end\n$enddefinitions $end\n#0\n0!\n#5\n1!\n")
    with pytest.raises(TraceError, match="not a trace of the SCALENet top level"):
        analyze(tmp_path / "other.vcd")
