"""The accelerator cycle model: within 10 % of the RTL's cycle counts on layers it was not fitted on
(run here through the compiled simulator), never faster than the array's pass count, limits respected."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from scalenet.cosim.tlm import run_descriptors
from scalenet.driver.compiler import compile_graph
from scalenet.errors import HardwareLimitError
from scalenet.rtl.config import AcceleratorConfig
from scalenet.scheduler.accel_model import AccelModel, layer_descriptors, load_coefficients

_spec = importlib.util.spec_from_file_location(
    "calibrate_accel_model", Path(__file__).resolve().parent.parent / "benchmarks" / "calibrate_accel_model.py")
cal = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cal)

HELD_OUT = ["h_c3_12_12_10", "h_dw3s2_8_14", "h_fc_96_20", "h_ap3_6_9", "h_add_12_10", "h_cmp2_3_8_16"]


def test_held_out_layers_are_not_in_the_fit():
    fitted = {g.name for g in cal.fit_layers()}
    held = {g.name for g in cal.held_out_layers()}
    assert set(HELD_OUT) <= held and not (held & fitted)


@pytest.fixture(scope="module")
def sim():
    return cal.open_sim()


@pytest.mark.parametrize("name", HELD_OUT)
def test_held_out_layer_within_10_percent_of_the_rtl(sim, name):
    graph = next(g for g in cal.held_out_layers() if g.name == name)
    d, cycles = cal.measure(sim, graph)               # also checks the output against the reference
    model = AccelModel(cal.CONFIG, latency=cal.LATENCY)
    # per layer, as the cost table sums them (a fused Conv -> MaxPool: the conv plus the pool's increment)
    predicted = sum(model.layer_cycles(graph, layer) for layer in graph.layers)
    assert predicted == pytest.approx(model.descriptor_cycles(d))
    assert abs(predicted - cycles) <= 0.10 * cycles, f"model {predicted:.0f} vs simulated {cycles} cycles"


def test_model_is_never_faster_than_the_array_pass_count():
    """The transaction-level model counts the array's pixel passes; no schedule of the RTL beats them."""
    for cfg in (cal.CONFIG, AcceleratorConfig()):
        model = AccelModel(cfg, latency=8)
        for graph in cal.fit_layers() + cal.held_out_layers():
            layer = graph.layers[0]
            if layer.kind not in ("conv", "dense"):
                continue
            net = compile_graph(graph, cfg)
            mem = np.zeros(net.size + 4096, np.uint8)
            mem[:net.image.size] = net.image
            (stats,) = run_descriptors(mem, net.desc_addr, net.desc_count, cfg)
            assert model.layer_cycles(graph, layer) >= stats.array_cycles > 0, graph.name


def test_more_work_costs_more_cycles_and_limits_raise():
    model = AccelModel(AcceleratorConfig(), latency=8)
    small = cal.conv_graph("s", 8, 8, 8, 8)
    big = cal.conv_graph("b", 8, 8, 16, 16)
    wide = cal.conv_graph("w", 16, 32, 8, 8)
    c = {g.name: model.layer_cycles(g, g.layers[0]) for g in (small, big, wide)}
    assert c["s"] < c["b"] and c["s"] < c["w"]
    too_big = cal.conv_graph("t", 256, 256, 4, 4)       # 590 KB of weights > the 64 KB weight buffer
    with pytest.raises(HardwareLimitError, match="weight"):
        model.layer_cycles(too_big, too_big.layers[0])
    assert not model.supported(too_big, too_big.layers[0])


def test_slower_memory_makes_layers_slower():
    cfg = AcceleratorConfig()
    g = cal.dense_graph("fc", 1024, 64)
    fast = AccelModel(cfg, clock_hz=100e6, mem_bytes_per_s=800e6, latency=8).layer_cycles(g, g.layers[0])
    slow = AccelModel(cfg, clock_hz=100e6, mem_bytes_per_s=20e6, latency=8).layer_cycles(g, g.layers[0])
    assert slow > 5 * fast


def test_calibration_file_is_used():
    coef = load_coefficients()
    assert set(coef) >= {"conv", "pool", "gap", "add"}
    assert AccelModel(cal.CONFIG).coefficients == coef


def test_fused_pool_costs_its_increment_not_its_own_descriptor():
    """A Conv -> MaxPool pair the compiler fuses: the pool's accelerator cost is the fused descriptor's
    increment over the conv (a few dozen cycles at most), far below the pool alone; not fused, it is its
    own descriptor's."""
    graph = cal.conv_pool_graph("pair", 8, 8, 12, 12)
    conv, pool = graph.layers
    model = AccelModel(cal.CONFIG, latency=cal.LATENCY)
    alone = model.layer_estimate(graph, pool, fused=False)[0]
    increment = model.layer_cycles(graph, pool)
    assert 0 <= increment < 100 < alone
    (d,) = layer_descriptors(graph, pool, cal.CONFIG)
    assert alone == pytest.approx(model.descriptor_cycles(d))
