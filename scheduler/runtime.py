"""The runtime: a schedule executed on real backends, accelerator and software workers overlapped.

The graph is cut, in the schedule's start order, into *segments*: maximal runs of layers on one resource.
An accelerator segment is compiled as a sub-graph (its inputs are the tensors entering it, its outputs
the tensors leaving it) and loaded once; a software segment runs layer by layer on the
:class:`~scalenet.scheduler.workers.SoftwareWorkers`. One thread per resource works through
(frame, segment) in order, each segment waiting only for the segments of its own frame that produce its
inputs, so frame n+1's software layers run while frame n's accelerator segment does (a pipeline, at most
``max_in_flight`` frames deep). The in-order queues cannot deadlock: both follow one topological order.

Measured per-layer times are real: the accelerator's from its PERF_CYCLES counter (each descriptor is
started on its own, so every layer gets its own count; a fused conv + max pool descriptor is counted on
the conv, the pool measures 0) divided by the target's clock — on the simulator these are the cycles the
RTL took — and the software layers' wall time (or their thread's CPU time). The prediction is the cost
table's, hand-over (re-warm) costs included, except that a max pool the table priced as fused into its
conv is priced stand-alone when the execution separates them (different segments, or
``fuse_pool=False``). A frame's measured latency puts the measured layer times through the schedule's own
timing model (:func:`.schedule.evaluate`; moves between resources keep their modelled cost, the modelled
re-warm is dropped: a measured layer time already contains it), so predicted and measured differ only by
the layer costs.
Outputs are bit-exact with :meth:`Graph.run` whatever the placement.
"""

from __future__ import annotations

import statistics
import os
import threading
import time
from dataclasses import dataclass, field, replace

import numpy as np

from scalenet.errors import ScalenetError
from scalenet.ir import Concat, Graph

from .costs import CostTable, LayerCost
from .schedule import Schedule, evaluate

__all__ = ["ExecutionError", "Segment", "RunResult", "Runtime", "split_segments"]


class ExecutionError(ScalenetError):
    """A schedule the runtime cannot execute on the given graph and backends."""


@dataclass
class Segment:
    """A maximal run of layers on one resource, in schedule order."""

    index: int
    resource: str
    kind: str                       # "accel" or "cpu"
    layers: list                    # Layer objects
    inputs: list                    # tensor names entering the segment
    outputs: list                   # tensor names leaving it (or graph outputs)
    deps: list = field(default_factory=list)   # indices of the segments producing ``inputs``
    graph: Graph | None = None      # accelerator segments: the sub-graph
    loaded: object = None           # accelerator segments: the driver's LoadedNetwork


@dataclass
class RunResult:
    outputs: dict                   # graph output -> batched array
    layer_seconds: list             # per frame: {layer: measured seconds}
    measured_latency_s: list        # per frame: measured layer times through the timing model
    predicted_latency_s: float      # the executed placement's (the schedule's unless a move was noted)
    wall_s: float
    tasks: list                     # (resource, frame, segment index, wall start, wall end)
    accel_cycles: list              # per frame: total PERF_CYCLES
    notes: list = field(default_factory=list)

    @property
    def median_latency_s(self) -> float:
        return statistics.median(self.measured_latency_s)

    @property
    def error(self) -> float:
        """(measured - predicted) / predicted of the median frame."""
        return self.median_latency_s / self.predicted_latency_s - 1.0

    def median_layer_seconds(self) -> dict:
        return {l: statistics.median(f[l] for f in self.layer_seconds) for l in self.layer_seconds[0]}


def _kind(schedule: Schedule, resource) -> str:
    spec = schedule.table.resources.get(resource)
    if spec is None:
        raise ExecutionError(f"schedule places a layer on {resource!r}, not a resource of its cost table")
    return spec.kind


def _runs(order, placement):
    runs = []
    for layer in order:
        r = placement[layer.name]
        if runs and runs[-1][0] == r:
            runs[-1][1].append(layer)
        else:
            runs.append((r, [layer]))
    return runs


def split_segments(schedule: Schedule, graph: Graph) -> tuple:
    """(segments, placement, notes): the graph cut into per-resource runs in the schedule's start order.

    A concatenation stays on the accelerator only when its inputs are made in the same segment and feed
    nothing else (the compiler writes them straight into slices of its output); otherwise it runs on the
    host (a copy), and a segment of such moves alone is run there too. Both are noted.
    """
    names = [l.name for l in graph.layers]
    missing = [n for n in names if n not in schedule.placement]
    if missing or len(schedule.placement) != len(names):
        raise ExecutionError(f"schedule of {schedule.table.graph_name} does not match graph {graph.name}: "
                            f"layers {missing or sorted(set(schedule.placement) - set(names))} differ")
    placement = dict(schedule.placement)
    host = schedule.table.host
    if _kind(schedule, host) != "cpu":
        raise ExecutionError(f"the host resource {host!r} must be a software resource")
    accels = {r for r in placement.values() if _kind(schedule, r) == "accel"}
    if len(accels) > 1:
        raise ExecutionError(f"one accelerator device per runtime; the schedule uses {sorted(accels)}")
    # Topological order by scheduled start (ties: graph order).
    index = {n: i for i, n in enumerate(names)}
    producer = {l.output: l for l in graph.layers}
    consumers = {}
    for l in graph.layers:
        for i in l.inputs:
            consumers.setdefault(i, []).append(l)
    pending = {l.name: sum(1 for i in l.inputs if i in producer) for l in graph.layers}
    ready = [l for l in graph.layers if pending[l.name] == 0]
    order = []
    while ready:
        ready.sort(key=lambda l: (schedule.start[l.name], schedule.finish[l.name], index[l.name]))
        layer = ready.pop(0)
        order.append(layer)
        for c in consumers.get(layer.output, []):
            pending[c.name] -= 1
            if pending[c.name] == 0:
                ready.append(c)
    notes = []
    while True:
        changed = False
        runs = _runs(order, placement)
        seg_of = {l.name: k for k, (_, ls) in enumerate(runs) for l in ls}
        for k, (r, layers) in enumerate(runs):
            if _kind(schedule, r) != "accel":
                continue
            if all(getattr(l, "kind", "") in ("concat", "flatten") for l in layers):
                for l in layers:
                    placement[l.name] = host
                notes.append(f"{', '.join(l.name for l in layers)}: data movement only, run on {host}")
                changed = True
                break
            for l in layers:
                if isinstance(l, Concat) and any(
                        i not in producer or seg_of[producer[i].name] != k or len(consumers.get(i, [])) != 1
                        or i in graph.outputs for i in l.inputs):
                    placement[l.name] = host
                    notes.append(f"{l.name}: concat of tensors from outside its accelerator segment, run on {host}")
                    changed = True
            if changed:
                break
        if not changed:
            break
    segments = []
    seg_of = {}
    for k, (r, layers) in enumerate(runs):
        made = {l.output for l in layers}
        ins = list(dict.fromkeys(i for l in layers for i in l.inputs if i not in made))
        names_here = {l.name for l in layers}
        outs = [t for t in dict.fromkeys(l.output for l in layers)
                if t in graph.outputs or any(c.name not in names_here for c in consumers.get(t, []))]
        seg = Segment(k, r, _kind(schedule, r), layers, ins, outs)
        for l in layers:
            seg_of[l.name] = k
        seg.deps = sorted({seg_of[producer[i].name] for i in ins if i in producer})
        segments.append(seg)
    return segments, placement, notes


def _executed_table(table: CostTable, segments, fuse_pool) -> CostTable:
    """``table`` with the stand-alone accelerator cost for every max pool the cost table priced as fused
    into its producer conv (``meta["accel_fused_pools"]``) that will not run fused: its conv is in another
    segment, or fusion is off."""
    fused = table.meta.get("accel_fused_pools", {})
    standalone = table.meta.get("accel_standalone", {})
    segment_of = {l.name: s for s in segments for l in s.layers}
    alone = [p for p, conv in fused.items() if p in segment_of and segment_of[p].kind == "accel"
             and (not fuse_pool or segment_of.get(conv) is not segment_of[p])]
    if not alone:
        return table
    cost = dict(table.cost)
    for p in alone:
        cost[(p, segment_of[p].resource)] = LayerCost(**standalone[p])
    return replace(table, cost=cost)


class Runtime:
    """Execute ``schedule`` for ``graph``: ``accelerator`` is a driver :class:`Accelerator` or a target
    name for :func:`~scalenet.driver.accelerator.open_target` (default ``"model"``); ``workers`` a
    :class:`~scalenet.scheduler.workers.SoftwareWorkers` (default: one on all cores). Backends the runtime
    opens itself are closed by :meth:`close`. ``accel_clock_hz`` turns cycles into seconds (default: the
    cost table's ``meta["accel_clock_hz"]``). ``software_clock="thread"`` times software layers by the CPU
    time of the thread running them instead of wall time: with one worker thread that is the layer's own
    work, unaffected by other processes sharing the cores (wall time is the default)."""

    def __init__(self, schedule: Schedule, graph: Graph, accelerator=None, workers=None, *,
                 accel_clock_hz=None, fuse_pool=True, max_in_flight=2, software_clock="wall"):
        if software_clock not in ("wall", "thread"):
            raise ExecutionError(f"software_clock must be 'wall' or 'thread', not {software_clock!r}")
        self._clock = time.perf_counter if software_clock == "wall" else time.thread_time
        if max_in_flight < 1:
            raise ExecutionError(f"max_in_flight must be >= 1, not {max_in_flight}")
        self.schedule, self.graph = schedule, graph
        self.max_in_flight = max_in_flight
        self.segments, self.placement, self.notes = split_segments(schedule, graph)
        self.table = _executed_table(schedule.table, self.segments, fuse_pool)
        self.predicted = evaluate(self.table, self.placement, schedule.deadline_s, period_s=schedule.period_s,
                                  weights=schedule.weights, method="executed")
        self._owned = []
        self.acc = None
        uses_accel = any(s.kind == "accel" for s in self.segments)
        self.clock_hz = accel_clock_hz or schedule.table.meta.get("accel_clock_hz")
        if uses_accel:
            if not self.clock_hz:
                raise ExecutionError("accelerator layers need a clock to turn cycles into seconds: pass "
                                    "accel_clock_hz or use a cost table whose meta has accel_clock_hz")
            if accelerator is None or isinstance(accelerator, str):
                from scalenet.driver.accelerator import open_target
                accelerator = open_target(accelerator or "model")
                self._owned.append(accelerator)
            self.acc = accelerator
            self._load(fuse_pool)
        if workers is None:
            from .workers import SoftwareWorkers
            workers = SoftwareWorkers()
            self._owned.append(workers)
        self.workers = workers

    # -- set-up ---------------------------------------------------------------------------------------
    def _load(self, fuse_pool):
        from scalenet.driver.accelerator import DeviceMismatch, LoadedNetwork
        from scalenet.driver.compiler import ALIGN, compile_graph
        base = 0
        g = self.graph
        for seg in self.segments:
            if seg.kind != "accel":
                continue
            tensors = {n: g.tensors[n] for n in seg.inputs + [l.output for l in seg.layers]}
            seg.graph = Graph(f"{g.name}/segment{seg.index}", tensors, seg.layers, seg.inputs, seg.outputs)
            compiled = compile_graph(seg.graph, self.acc.config, base=base, fuse_pool=fuse_pool)
            end = base + compiled.size   # CompiledNetwork.size counts bytes from ``base``
            if end > self.acc.transport.mem_size:
                raise DeviceMismatch(f"{g.name}: the accelerator segments need {end} bytes of device memory; "
                                     f"the device has {self.acc.transport.mem_size}")
            self.acc.transport.write_mem(base, compiled.image[:end - base])
            seg.loaded = LoadedNetwork(compiled, base)
            base = -(-end // ALIGN) * ALIGN

    def close(self):
        for obj in reversed(self._owned):
            obj.close()
        self._owned.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- execution ------------------------------------------------------------------------------------
    def _run_cpu(self, seg, values, times):
        g = self.graph
        clock = self._clock
        for layer in seg.layers:
            t0 = clock()
            values[layer.output] = self.workers.run_layer(g, layer, [values[i] for i in layer.inputs])
            times[layer.name] = clock() - t0

    def _run_accel(self, seg, values, times):
        from scalenet.driver.accelerator import AcceleratorError
        from scalenet.rtl import regmap
        from scalenet.rtl.regmap import DESCRIPTOR_BYTES
        acc, loaded = self.acc, seg.loaded
        net = loaded.compiled
        for name in seg.inputs:
            addr, region = net.encode_input(values[name][0], name)
            acc.transport.write_mem(addr, region)
        for layer in seg.layers:
            times[layer.name] = 0.0            # moves and fused pools have no descriptor of their own
        cycles = 0
        for i, layer_name in enumerate(net.layer_of):
            before = acc.counters()["cycles"]
            acc.write("DESC_ADDR", net.desc_addr + i * DESCRIPTOR_BYTES)
            acc.write("DESC_COUNT", 1)
            acc.write("IRQ_STATUS", 0xFFFF_FFFF)
            acc.write("CTRL", regmap.pack("CTRL", start=1))
            try:
                acc._wait(loaded)          # the driver's polling, timeout and error recovery
            except AcceleratorError as e:   # it names descriptor 0 of this one-descriptor run: say which
                raise AcceleratorError(f"{seg.graph.name}, layer {layer_name} (descriptor {i}): {e}",
                                       code=e.code, layer=layer_name) from None
            spent = acc.counters()["cycles"] - before
            cycles += spent
            times[layer_name] = spent / self.clock_hz
        for name in seg.outputs:
            p = net.placement(name)
            values[name] = net.decode_tensor(name, np.frombuffer(acc.transport.read_mem(p.addr, p.nbytes),
                                                                 np.uint8))[None]
        return cycles

    def _core_split(self):
        """(software cores, simulator core) when the accelerator is simulated on this host and there are two
        cores or more, else None. A board's accelerator does not run on the CPU; a simulated one does, and on
        a shared core its multi-megabyte model would evict the software layers' caches between frames (a
        cost no real system pays), so the simulator gets a core of its own."""
        if self.acc is None or not hasattr(self.acc.transport, "platform") or not hasattr(os, "sched_setaffinity"):
            return None
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            return None
        return set(cores[:-1]), {cores[-1]}

    def run(self, x, *, pipeline=True) -> RunResult:
        """Run every frame of ``x`` (one sample or a batch); ``pipeline=False`` runs them one after the
        other in this thread (the reference for the overlap's gain)."""
        batch = self.graph.check_input(x)
        n = batch.shape[0]
        frames = [{"values": {self.graph.inputs[0]: batch[f:f + 1]}, "times": {}, "cycles": 0,
                   "done": [threading.Event() for _ in self.segments], "left": len(self.segments),
                   "complete": threading.Event()} for f in range(n)]
        tasks, lock, failure = [], threading.Lock(), []
        t_origin = time.perf_counter()

        def execute(f, seg):
            fr = frames[f]
            for d in seg.deps:
                while not fr["done"][d].wait(0.05):
                    if failure:
                        return
            t0 = time.perf_counter() - t_origin
            if seg.kind == "accel":
                fr["cycles"] += self._run_accel(seg, fr["values"], fr["times"])
            else:
                self._run_cpu(seg, fr["values"], fr["times"])
            t1 = time.perf_counter() - t_origin
            with lock:
                tasks.append((seg.resource, f, seg.index, t0, t1))
                fr["left"] -= 1
                if fr["left"] == 0:
                    fr["complete"].set()
            fr["done"][seg.index].set()

        pins = self._core_split()

        def worker(resource):
            try:
                if pins:
                    os.sched_setaffinity(0, pins[self.schedule.table.resources[resource].kind == "accel"])
                mine = [s for s in self.segments if s.resource == resource]
                for f in range(n):
                    if f >= self.max_in_flight:
                        while not frames[f - self.max_in_flight]["complete"].wait(0.05):
                            if failure:
                                return
                    for seg in mine:
                        if failure:
                            return
                        execute(f, seg)
            except BaseException as e:     # noqa: BLE001 - handed to the caller's thread
                failure.append(e)

        start = time.perf_counter()
        if pipeline:
            threads = [threading.Thread(target=worker, args=(r,), name=f"scalenet-rt-{r}", daemon=True)
                       for r in dict.fromkeys(s.resource for s in self.segments)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        else:
            try:
                for f in range(n):
                    for seg in self.segments:
                        execute(f, seg)
            except BaseException as e:     # noqa: BLE001
                failure.append(e)
        wall = time.perf_counter() - start
        if failure:
            raise failure[0]
        outputs = {o: np.concatenate([fr["values"][o] for fr in frames]) for o in self.graph.outputs}
        layer_seconds = [fr["times"] for fr in frames]
        measured = [self.measured_schedule(t).latency_s for t in layer_seconds]
        return RunResult(outputs, layer_seconds, measured, self.predicted.latency_s, wall, sorted(tasks, key=lambda t: t[3]),
                         [fr["cycles"] for fr in frames], list(self.notes))

    def measured_schedule(self, layer_seconds: dict) -> Schedule:
        """The executed placement re-timed with measured layer times (moves keep their modelled cost; the
        hand-over re-warm is in the measured times)."""
        table: CostTable = self.table
        cost = dict(table.cost)
        for layer, resource in self.placement.items():
            old = cost[(layer, resource)]
            t = float(layer_seconds[layer])
            cost[(layer, resource)] = LayerCost(t, old.energy_j, old.power_w)
        measured = replace(table, cost=cost, rewarm={})
        return evaluate(measured, self.placement, self.schedule.deadline_s,
                        period_s=self.schedule.period_s, weights=self.schedule.weights, method="measured")
