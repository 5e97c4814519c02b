"""Metric models: targets, power data (every coefficient cited), CPU and power models, and the cost table
they fill for the scheduler (accelerator costs missing exactly where the compiler's limits say so)."""

import json
import math

import numpy as np
import pytest

from scalenet import zoo
from scalenet.errors import HardwareLimitError, ScalenetError
from scalenet.ir import Conv, Graph, Tensor
from scalenet.quant import QParams
from scalenet.rtl.config import AcceleratorConfig
from scalenet.scheduler import power
from scalenet.scheduler.accel_model import layer_descriptors
from scalenet.scheduler.cpu_model import MIN_PARALLEL_WORK, get_cpu_model, layer_class, layer_features, load_host_model
from scalenet.scheduler.metrics import build_cost_table
from scalenet.scheduler.targets import TARGETS, get_target


def test_targets_and_unknown_target_error():
    assert {"zedboard", "pynq-z2", "arty-a7-100", "ulx3s-85f", "host"} <= set(TARGETS)
    zed = get_target("zedboard")
    assert (zed.cpu, zed.cpu_cores, zed.cpu_clock_hz) == ("cortex-a9", 2, 667e6)
    assert isinstance(zed.accel, AcceleratorConfig) and zed.accel_clock_hz > 0
    with pytest.raises(ScalenetError, match="unknown target 'nope'.*zedboard.*ulx3s-85f"):
        get_target("nope")


def _walk_coefficients(node, path=()):
    if isinstance(node, dict):
        if "value" in node or "bandwidth_bps" in node:
            yield path, node
            return
        for k, v in node.items():
            if not k.startswith("_"):
                yield from _walk_coefficients(v, path + (k,))


def test_every_power_coefficient_cites_a_source():
    leaves = list(_walk_coefficients(power.coefficients()))
    assert len(leaves) > 20
    for path, leaf in leaves:
        assert isinstance(leaf.get("source"), str) and len(leaf["source"]) > 20, path
        assert "estimate" in leaf, path
    for name, dev in power.coefficients()["devices"].items():
        assert "source" in dev["capacity"], name


def test_accel_power_scales_with_activity_and_clock_only_in_its_dynamic_part():
    cfg = AcceleratorConfig()
    lo = power.accel_power("xc7z020", cfg, 100e6, activity=0.05)
    hi = power.accel_power("xc7z020", cfg, 100e6, activity=0.25)
    fast = power.accel_power("xc7z020", cfg, 200e6, activity=0.25)
    assert lo["static"] == hi["static"] == fast["static"] > 0
    assert hi["dynamic"] == pytest.approx(5 * lo["dynamic"])
    assert fast["dynamic"] == pytest.approx(2 * hi["dynamic"])
    small = power.accel_power("xc7z020", AcceleratorConfig(rows=4, cols=4), 100e6)
    assert small["dynamic"] < power.accel_power("xc7z020", cfg, 100e6)["dynamic"]
    with pytest.raises(ScalenetError, match="activity"):
        power.accel_power("xc7z020", cfg, 100e6, activity=1.5)
    with pytest.raises(ScalenetError, match="unknown device 'xc9'.*xc7z020"):
        power.accel_power("xc9", cfg, 100e6)
    with pytest.raises(ScalenetError, match="DSP"):
        power.accel_power("lfe5u-85f", AcceleratorConfig(rows=16, cols=16), 50e6)


def test_cpu_power_counts_active_cores():
    one, two = power.cpu_power("cortex-a9", 667e6, 1), power.cpu_power("cortex-a9", 667e6, 2)
    assert two["idle"] == one["idle"] and two["dynamic"] == pytest.approx(2 * one["dynamic"])
    assert one["dynamic"] == pytest.approx(power.value("cpus", "cortex-a9", "active_w_per_mhz") * 667)


def test_activity_from_a_toggle_report():
    report = {"cycles": 100, "modules": {"array": {"toggles": 800, "bits": 64}, "dma": {"toggles": 200, "bits": 16}}}
    assert power.activity_from_trace(report) == pytest.approx(1000 / (80 * 100))
    with pytest.raises(ScalenetError, match="cycles"):
        power.activity_from_trace({"modules": {"a": {"toggles": 1, "bits": 1}}})


def test_cpu_models_default_and_calibrated(tmp_path):
    a9 = get_cpu_model("cortex-a9", 667e6)
    assert a9.seconds("conv", 4e6, 2) < a9.seconds("conv", 4e6, 1) < a9.seconds("conv", 8e6, 1)
    # below the split threshold a layer runs whole on one worker: more threads do not help
    small = MIN_PARALLEL_WORK["conv"] // 2
    assert a9.seconds("conv", small, 2) == a9.seconds("conv", small, 1)
    f = tmp_path / "host.json"
    f.write_text(json.dumps({"source": "test", "kinds": {"conv": {"overhead_s": 1e-3, "rate": 1e9, "efficiency": 0.5,
                                                                 "element_s": 1e-9, "pass_s": 1e-6}}}))
    host = load_host_model(f)
    assert host.calibrated and host.seconds("conv", 1e9, 3) == pytest.approx(1e-3 + 0.5)
    assert host.seconds("conv", 1e9, 3, elements=1e6, passes=2) == pytest.approx(1e-3 + (1 + 1e-3 + 2e-6) / 2)
    assert "dense" in host.kinds                     # classes not in the file keep the defaults
    assert load_host_model(tmp_path / "missing.json").calibrated is False
    with pytest.raises(ScalenetError, match="unknown CPU model"):
        get_cpu_model("pentium")


def _dilated_graph():
    rng = np.random.default_rng(0)
    q = QParams(np.float32(0.05), 0, "int8")
    ok = Conv(name="ok", inputs=["x"], output="a", weight=rng.integers(-127, 128, (8, 4, 3, 3)).astype(np.int8),
              w_q=q, pads=(1, 1, 1, 1))
    dil = Conv(name="dil", inputs=["a"], output="y", weight=rng.integers(-127, 128, (8, 8, 3, 3)).astype(np.int8),
               w_q=q, pads=(2, 2, 2, 2), dilation=(2, 2))
    t = {"x": Tensor("x", (4, 10, 10), q), "a": Tensor("a", (8, 10, 10), q), "y": Tensor("y", (8, 10, 10), q)}
    return Graph("dilated", t, [ok, dil], ["x"], ["y"])


def test_cost_table_marks_layers_the_hardware_cannot_run():
    graph = _dilated_graph()
    table = build_cost_table(graph, "zedboard")
    assert table.layers == ["ok", "dil"] and table.preds == {"ok": [], "dil": ["ok"]}
    assert table.supported("ok", "accel") and table.supported("ok", "cpu") and table.supported("dil", "cpu")
    assert not table.supported("dil", "accel")
    assert "dilation" in table.meta["unsupported"]["dil"]
    assert table.out_bytes == {"ok": 800, "dil": 800} and table.in_bytes == 400


@pytest.mark.parametrize("target", list(TARGETS))
def test_cost_table_of_a_zoo_network(target):
    graph = zoo.build("resnet20")
    table = build_cost_table(graph, target)
    tgt = get_target(target)
    assert set(table.resources) == {"cpu", "accel"} and table.host == "cpu"
    for layer in graph.layers:
        cpu = table.cost[(layer.name, "cpu")]
        assert cpu.latency_s > 0 and cpu.energy_j >= 0 and cpu.power_w >= table.resources["cpu"].idle_power_w
        if layer.kind in ("flatten", "concat"):          # placement only on the accelerator
            assert table.cost[(layer.name, "accel")].latency_s == 0
            continue
        try:
            layer_descriptors(graph, layer, tgt.accel)
            runnable = True
        except HardwareLimitError:
            runnable = False
        assert table.supported(layer.name, "accel") == runnable
        if runnable:
            acc = table.cost[(layer.name, "accel")]
            assert acc.latency_s > 0 and acc.energy_j > 0
    secs, joules = table.transfer("cpu", "accel", 1 << 16)
    assert secs > 0 and joules > 0 and table.transfer("cpu", "cpu", 1 << 16) == (0.0, 0.0)


def test_uart_link_is_far_slower_than_shared_ddr():
    graph = zoo.build("lenet5")
    zed, ulx = build_cost_table(graph, "zedboard"), build_cost_table(graph, "ulx3s-85f")
    n = 32 * 32
    assert ulx.transfer("cpu", "accel", n)[0] > 50 * zed.transfer("cpu", "accel", n)[0]


def test_bigger_layers_cost_more_on_both_resources():
    graph = zoo.build("resnet20")
    table = build_cost_table(graph, "zedboard")
    convs = [l for l in graph.layers if layer_class(l) == "conv" and table.supported(l.name, "accel")]
    macs = {l.name: graph.layer_macs(l) for l in convs}
    big, small = max(macs, key=macs.get), min(macs, key=macs.get)
    assert macs[big] > 2 * macs[small]
    for r in ("cpu", "accel"):
        assert table.cost[(big, r)].latency_s > table.cost[(small, r)].latency_s
    # The accelerator's latency is at least its array's pass count at the clock (one pixel per cycle).
    for l in convs:
        assert table.cost[(l.name, "accel")].latency_s * 100e6 >= macs[l.name] / 64


def test_activity_changes_accelerator_energy_not_latency():
    graph = zoo.build("lenet5")
    a, b = build_cost_table(graph, "zedboard", activity=0.05), build_cost_table(graph, "zedboard", activity=0.3)
    for layer in graph.layers:
        if layer.kind == "conv":
            ca, cb = a.cost[(layer.name, "accel")], b.cost[(layer.name, "accel")]
            assert ca.latency_s == cb.latency_s and cb.energy_j > ca.energy_j
    assert math.isclose(a.meta["activity"], 0.05)


def test_cpu_model_features_of_a_network():
    """The host model's inputs: im2col row copies only for kernels above 1x1, weight bytes for conv/dense,
    extra passes for a clamp the output type does not already apply and for each max-pool tap."""
    g = zoo.build("lenet5")
    by = {l.name: l for l in g.layers}
    c1 = layer_features(g, by["c1"])             # 1 -> 6, 5x5, 28x28 out
    assert c1["work"] == g.layer_macs(by["c1"]) and c1["elements"] == 6 * 28 * 28
    assert c1["patch"] == 28 * 28 * 5 and c1["weights"] == 6 * 25
    assert layer_features(g, by["s2"])["passes"] == 4 and layer_features(g, by["s2"])["weights"] == 0
    q = g.tensors[by["f6"].output].q.dtype
    assert layer_features(g, by["f6"])["passes"] == int(by["f6"].lo is not None and by["f6"].lo > q.lo)


def test_fused_max_pools_cost_their_increment_on_the_accelerator():
    """digits CNN on the ZedBoard: each Conv -> MaxPool pair the compiler fuses has the pool priced as a
    few cycles over its conv, and its stand-alone price kept for executions that separate them."""
    graph = zoo.build("digits_cnn")
    table = build_cost_table(graph, "zedboard")
    assert table.meta["accel_fused_pools"] == {"pool1": "conv1", "pool2": "conv2"}
    for pool, conv in table.meta["accel_fused_pools"].items():
        fused = table.cost[(pool, "accel")].latency_s
        alone = table.meta["accel_standalone"][pool]["latency_s"]
        assert 0 <= fused < 0.1 * alone and alone > 0
        assert fused < 0.1 * table.cost[(conv, "accel")].latency_s


def test_hand_over_costs_per_target():
    """The host target (accelerator simulated on its CPU) charges the CPU model's re-warm per class, with
    convolutions and dense layers sharing onnxruntime's working set; a Zynq board the re-read of the input
    its cache maintenance invalidated, at the link's cited rate; a UART-attached FPGA nothing."""
    graph = zoo.build("lenet5")
    host = build_cost_table(graph, "host")
    model = load_host_model()
    cpu_dyn = host.meta["cpu_power_w"]["dynamic"]
    for layer in graph.layers:
        parts = host.rewarm[(layer.name, "cpu")]
        cls = layer_class(layer)
        assert sum(w.latency_s for w in parts) == pytest.approx(model.rewarm_seconds(cls)) and model.rewarm_seconds(cls) > 0
        assert all(w.energy_j == pytest.approx(cpu_dyn * w.latency_s) for w in parts)
        sets = {w.working_set: w.latency_s for w in parts}
        # every layer warms the shared interpreter set; a move has no other, onnxruntime layers pay the
        # move's figure for it, numpy kernels nothing
        assert set(sets) == ({"python"} if cls == "move" else {"python", "onnxruntime" if cls in ("conv", "dense") else cls})
        assert sets["python"] == {"move": model.rewarm_seconds("move"), "conv": model.rewarm_seconds("move"),
                                  "dense": model.rewarm_seconds("move")}.get(cls, 0.0)
        assert (layer.name, "accel") not in host.rewarm
    zed = build_cost_table(graph, "zedboard")
    rate = power.coefficients()["links"]["zynq_cache_maintenance"]["refetch_bps"]
    assert {w.working_set for w in zed.rewarm.values()} == {"handed-over input"}
    for layer in graph.layers:
        nbytes = sum(math.prod(graph.tensors[i].shape) for i in layer.inputs)
        assert zed.rewarm[(layer.name, "cpu")].latency_s == pytest.approx(nbytes / rate)
    assert build_cost_table(graph, "ulx3s-85f").rewarm == {}
    assert get_cpu_model("cortex-a9", 667e6).rewarm_seconds("conv") == 0     # nothing evicts a board's CPU


def test_stored_and_fitted_rewarm(tmp_path):
    from scalenet.scheduler.cpu_model import fit_host_model
    from scalenet.scheduler.workers import SoftwareWorkers
    f = tmp_path / "host.json"
    f.write_text(json.dumps({"source": "test", "kinds": {}, "rewarm_s": {"maxpool": 1e-3}}))
    stored = load_host_model(f)          # a stored calibration's figures replace the defaults class by class
    assert stored.rewarm_seconds("maxpool") == 1e-3
    assert stored.rewarm_seconds("conv") == load_host_model().rewarm_seconds("conv")
    # Measured: a 32 MB sweep (more than this machine's caches) before each timed max pool makes it slower.
    sweep = np.zeros(32 << 20, np.uint8)

    def evict():
        sweep[::64] += 1

    with SoftwareWorkers(1) as w:
        fitted = fit_host_model(w, repeats=3, evict=evict, rewarm_classes=("maxpool",))
    assert fitted.meta["rewarm_measured"] == ["maxpool"] and fitted.rewarm_seconds("maxpool") > 5e-6
    assert fitted.rewarm_seconds("conv") == load_host_model().rewarm_seconds("conv")
