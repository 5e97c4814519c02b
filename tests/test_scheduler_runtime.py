"""The runtime: schedules executed on the driver (model and simulated RTL) and the software workers."""

import numpy as np
import pytest

from scalenet import zoo
from scalenet.scheduler import schedule as S
from scalenet.scheduler.metrics import build_cost_table
from scalenet.scheduler.runtime import ExecutionError, Runtime, split_segments
from scalenet.scheduler.workers import SoftwareWorkers


def _frames(graph, n, seed=0):
    t = graph.input
    rng = np.random.default_rng(seed)
    return rng.integers(t.q.dtype.lo, t.q.dtype.hi + 1, size=(n, *t.shape)).astype(t.q.dtype.np_dtype)


def _placed(table, pattern):
    """A placement from a pattern over the layers: 'A' accel, 'C' cpu (repeated to the layer count)."""
    pattern = (pattern * len(table.layers))[:len(table.layers)]
    return S.evaluate(table, {l: ("accel" if c == "A" else "cpu") for l, c in zip(table.layers, pattern)}, 1.0)


@pytest.fixture(scope="module")
def workers():
    with SoftwareWorkers(2) as w:
        yield w


def test_segments_follow_the_placement():
    g = zoo.build("digits_cnn")          # conv1 pool1 conv2 pool2 flatten fc
    s = _placed(build_cost_table(g, "host"), "AACCAA")
    segs, placement, notes = split_segments(s, g)
    assert [(seg.resource, [l.name for l in seg.layers]) for seg in segs] == [
        ("accel", ["conv1", "pool1"]), ("cpu", ["conv2", "pool2"]), ("accel", ["flatten", "fc"])]
    assert [(seg.inputs, seg.outputs, seg.deps) for seg in segs] == [
        (["input"], ["pool1"], []), (["pool1"], ["pool2"], [0]), (["pool2"], ["fc"], [1])]
    assert placement == s.placement and notes == []


@pytest.mark.parametrize("name", ["digits_cnn", "lenet5"])
@pytest.mark.parametrize("pattern", ["A", "C", "AC", "CCA", "ACCA"])
def test_outputs_bit_exact_on_the_model_device(name, pattern, workers):
    g = zoo.build(name)
    x = _frames(g, 3)
    with Runtime(_placed(build_cost_table(g, "host"), pattern), g, "model", workers) as rt:
        res = rt.run(x)
    ref = g.run(x)
    assert set(res.outputs) == set(ref)
    for o in ref:
        assert res.outputs[o].dtype == ref[o].dtype and np.array_equal(res.outputs[o], ref[o])
    assert len(res.layer_seconds) == 3 and all(set(t) == {l.name for l in g.layers} for t in res.layer_seconds)
    uses_accel = "A" in pattern
    assert all((c > 0) == uses_accel for c in res.accel_cycles)


def test_branching_graph_with_concat_moved_to_the_host(workers):
    # ResNet-20 with alternating placement: residual adds read tensors of two segments, and the option-A
    # concatenations whose inputs come from another segment run on the host.
    g = zoo.build("resnet20")
    table = build_cost_table(g, "host")
    s = _placed(table, "AAC")
    _, placement, notes = split_segments(s, g)
    assert any("concat" in n for n in notes)
    assert all(placement[l.name] == "cpu" for l in g.layers if l.kind == "concat" and s.placement[l.name] == "accel"
               and any(s.placement[p] != "accel" for p in table.preds[l.name]))
    x = _frames(g, 1)
    with Runtime(s, g, "model", workers) as rt:
        res = rt.run(x)
    assert np.array_equal(res.outputs["fc"], g.run(x)["fc"])


def test_accelerator_and_software_overlap_across_frames(workers):
    g = zoo.build("lenet5")                # c1 s2 c3 s4 on the accelerator, c5 flatten f6 output in software
    s = _placed(build_cost_table(g, "host"), "AAAACCCC")
    x = _frames(g, 6)
    with Runtime(s, g, "model", workers) as rt:
        piped = rt.run(x)
        serial = rt.run(x, pipeline=False)
    for o in piped.outputs:
        assert np.array_equal(piped.outputs[o], serial.outputs[o])
    acc = {f: (t0, t1) for r, f, _, t0, t1 in piped.tasks if r == "accel"}
    cpu = {f: (t0, t1) for r, f, _, t0, t1 in piped.tasks if r == "cpu"}
    # frame f+1's accelerator segment starts before frame f's software segment ends
    overlaps = [f for f in range(5) if acc[f + 1][0] < cpu[f][1]]
    assert overlaps
    serial_acc = {f: t0 for r, f, _, t0, _ in serial.tasks if r == "accel"}
    serial_cpu = {f: t1 for r, f, _, _, t1 in serial.tasks if r == "cpu"}
    assert all(serial_acc[f + 1] >= serial_cpu[f] for f in range(5))


def test_mismatched_schedule_is_refused(workers):
    s = _placed(build_cost_table(zoo.build("lenet5"), "host"), "A")
    with pytest.raises(ExecutionError, match="does not match graph digits_cnn"):
        Runtime(s, zoo.build("digits_cnn"), "model", workers)
    with pytest.raises(ExecutionError, match="software_clock"):
        Runtime(s, zoo.build("lenet5"), "model", workers, software_clock="cpu")


# -- the simulated RTL ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim():
    from scalenet.driver.accelerator import open_target
    acc = open_target("sim")
    yield acc
    acc.close()


@pytest.mark.parametrize("name,pattern", [("digits_cnn", "ACCA"), ("lenet5", "AACA")])
def test_outputs_bit_exact_on_the_simulated_rtl(name, pattern, sim, workers):
    g = zoo.build(name)
    x = _frames(g, 1, seed=3)
    with Runtime(_placed(build_cost_table(g, "host"), pattern), g, sim, workers) as rt:
        res = rt.run(x)
    assert np.array_equal(res.outputs[g.outputs[0]], g.run(x)[g.outputs[0]])
    assert res.accel_cycles[0] > 0


@pytest.mark.parametrize("name", ["digits_cnn", "lenet5"])
@pytest.mark.parametrize("placement", ["ours", "AACC"])
def test_predicted_latency_within_15_percent_of_measured(name, placement, sim):
    """On target "host": our fastest schedule, and a fixed mixed placement (accelerator then software
    workers). Accelerator layers are timed by the RTL's cycle counter at the target's clock, software layers
    by the CPU time of the one worker thread (the machine is shared; wall time would count other processes);
    median of five frames after a warm-up one. The cost table prices every layer as its own descriptor, so
    the runtime runs them so here (fuse_pool=False): fused conv + max pool is faster than predicted (see
    test_fused_pools_run_faster_than_predicted). The software part needs the host CPU model fitted to this
    machine (benchmarks/calibrate_cpu_model.py writes scheduler/data/host_cpu.json)."""
    g = zoo.build(name)
    table = build_cost_table(g, "host", threads=1)
    if placement == "ours":
        sw = S.evaluate(table, S.baseline_placement(table, "all-software"), 1.0)
        s = S.schedule(table, sw.latency_s, {"latency": 1})
    else:
        s = _placed(table, "A" * (len(table.layers) // 2) + "C" * len(table.layers))
    with SoftwareWorkers(1) as w, Runtime(s, g, sim, w, software_clock="thread", fuse_pool=False) as rt:
        rt.run(_frames(g, 1))
        res = rt.run(_frames(g, 5, seed=1))
    measured = res.median_layer_seconds()
    detail = ", ".join(f"{l} on {r}: {table.cost[(l, r)].latency_s * 1e6:.1f} vs {measured[l] * 1e6:.1f} us"
                       for l, r in rt.placement.items())
    assert abs(res.error) <= 0.15, (f"predicted {res.predicted_latency_s * 1e6:.1f} us, measured "
                                    f"{res.median_latency_s * 1e6:.1f} us; per layer (predicted vs measured): {detail}")


def test_fused_pools_run_faster_than_predicted(sim, workers):
    """The accelerator alone: per-layer cycles of the RTL match the cost model's within 2 % when every layer
    is its own descriptor; fused conv + max pool descriptors make the pools free (measured 0)."""
    g = zoo.build("digits_cnn")
    table = build_cost_table(g, "host")
    s = S.evaluate(table, S.baseline_placement(table, "all-accelerator"), 1.0)
    x = _frames(g, 1)
    with Runtime(s, g, sim, workers, fuse_pool=False) as rt:
        separate = rt.run(x)
    with Runtime(s, g, sim, workers) as rt:
        fused = rt.run(x)
    assert np.array_equal(separate.outputs["fc"], fused.outputs["fc"])
    for layer in ("conv1", "conv2", "fc"):
        predicted = table.cost[(layer, "accel")].latency_s
        assert abs(separate.layer_seconds[0][layer] / predicted - 1) <= 0.02
    assert fused.layer_seconds[0]["pool1"] == fused.layer_seconds[0]["pool2"] == 0.0
    assert separate.layer_seconds[0]["pool1"] > 0
    assert fused.accel_cycles[0] < separate.accel_cycles[0]
