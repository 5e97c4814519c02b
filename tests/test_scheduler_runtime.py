"""The runtime: schedules executed on the driver (model and simulated RTL) and the software workers."""

import sys
from pathlib import Path

import numpy as np
import pytest

from scalenet import zoo
from scalenet.scheduler import schedule as S
from scalenet.scheduler.metrics import build_cost_table
from scalenet.scheduler.runtime import ExecutionError, Runtime, split_segments
from scalenet.scheduler.workers import SoftwareWorkers

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from mixed_frames import measure_side_by_side  # noqa: E402  (the benchmark's measurement)


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


ROUNDS, PER_ROUND = 7, 3


@pytest.fixture(scope="module")
def mixed_frames(sim):
    """Every (network, placement) of the test below, its frames timed side by side with the fit of the host
    CPU model (``PER_ROUND`` frames of each between two of the fit's ``ROUNDS`` rounds of micro-benchmarks,
    none of them a layer of these networks; the median frame is judged): the shared machine's speed drifts
    with its load, and a model fitted a minute before the frames could see another machine. Its hand-over
    cost — the re-warm of a kernel library's code and data the simulator evicts — is measured the same way,
    with one small layer run on the simulator before each timed layer, for the classes of the two networks."""
    _, results = measure_side_by_side(sim, ("digits_cnn", "lenet5"), ("ours", "AACC", "CCAA", "CAC"), ROUNDS,
                                      PER_ROUND, rewarm_classes=("conv", "dense", "maxpool", "move"))
    return {(r.network, r.name): r for r in results}


# Out of the default suite (``slow``: run before resolving a scheduler issue, and as the benchmark
# benchmarks/mixed_frames.py). What misses is the model under the host's load, not the statistic: with
# place and route on the other core (2026-11-28) the median of 21 frames missed digits_cnn CAC by -17 to
# -33 % in 6 runs of 7 (lenet5 AACC +8 to +16 %), as the median of 7 did (-7 to -33 %). In frames the
# re-warm after the simulator ranges from +95 us (digits conv2, after a 14 us pool on it) to +175 us
# (lenet5 c5, after four layers) against one fitted figure (135-160 us), and layers the model calls warm
# take ~10 us more. It needs a quiet host or a hand-over cost that follows the simulator's work, not a
# wider bound.
@pytest.mark.slow
@pytest.mark.timed
@pytest.mark.parametrize("name", ["digits_cnn", "lenet5"])
@pytest.mark.parametrize("placement", ["ours", "AACC", "CCAA", "CAC"])
def test_mixed_frames_match_the_prediction(name, placement, mixed_frames):
    """Software layers next to the simulated accelerator, which shares the CPU and evicts its caches: the
    prediction charges the hand-over cost (the first layer of each working set after the simulator re-warms
    it) and the measured frame is within 15 % of it. "CAC" (repeated over the layers) was held out: never
    run while the hand-over model was designed."""
    r = mixed_frames[(name, placement)]
    rt = r.runtime
    assert len(r.layer_seconds) == (1 if set(rt.placement.values()) == {"accel"} else ROUNDS * PER_ROUND)
    assert abs(r.error) <= 0.15, (rt.placement, r.predicted_s, r.measured_s, rt.predicted.rewarm_s)
    mixed = set(rt.placement.values()) == {"cpu", "accel"}
    assert bool(rt.predicted.rewarm_s) == mixed
    if mixed:
        # the hand-over term is what brings the prediction to the measurement
        assert r.bare_s < r.predicted_s and abs(r.error) < abs(r.measured_s / r.bare_s - 1)


@pytest.mark.parametrize("name", ["digits_cnn", "lenet5"])
def test_fused_frames_match_the_prediction(name, sim, workers):
    """The accelerator alone, RTL cycles against the cost model: with conv + max pool fused (the runtime's
    default) the table prices each fused pool as its few-cycle increment and the frame agrees within
    15 %; run as separate descriptors (fuse_pool=False) the runtime prices the pools stand-alone and that
    agrees too, and is slower."""
    g = zoo.build(name)
    table = build_cost_table(g, "host")
    pools = table.meta["accel_fused_pools"]
    kinds = {l.name: l.kind for l in g.layers}
    assert len(pools) == 2 and all(kinds[p] == "maxpool" and kinds[c] == "conv" for p, c in pools.items())
    s = S.evaluate(table, S.baseline_placement(table, "all-accelerator"), 1.0)
    x = _frames(g, 1)
    with Runtime(s, g, sim, workers) as rt:
        fused = rt.run(x)
        fused_predicted = rt.predicted.latency_s
    with Runtime(s, g, sim, workers, fuse_pool=False) as rt:
        separate = rt.run(x)
        separate_predicted = rt.predicted.latency_s
    out = g.outputs[0]
    assert np.array_equal(separate.outputs[out], fused.outputs[out])
    assert np.array_equal(fused.outputs[out], g.run(x)[out])
    for pool, conv in pools.items():
        assert fused.layer_seconds[0][pool] == 0.0 and separate.layer_seconds[0][pool] > 0
        pair = fused.layer_seconds[0][conv]
        predicted = table.cost[(conv, "accel")].latency_s + table.cost[(pool, "accel")].latency_s
        assert abs(pair / predicted - 1) <= 0.05, f"{conv}+{pool}: predicted {predicted}, measured {pair}"
        assert table.cost[(pool, "accel")].latency_s < 0.1 * table.meta["accel_standalone"][pool]["latency_s"]
    assert fused.accel_cycles[0] < separate.accel_cycles[0] and fused_predicted < separate_predicted
    assert abs(fused.error) <= 0.15, f"fused: predicted {fused_predicted}, measured {fused.median_latency_s}"
    assert abs(separate.error) <= 0.15, f"separate: predicted {separate_predicted}, measured {separate.median_latency_s}"
