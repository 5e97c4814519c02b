"""Software latency model: seconds for a layer on ``threads`` software workers of a CPU.

Per layer class (conv, depthwise, dense, maxpool, avgpool, gap, add, clip, move)::

    seconds = overhead + (work / rate + elements * element_s + patch * patch_s + weights * weight_s
                          + passes * pass_s) / (1 + efficiency * (ways - 1))

``work`` is the class's natural unit (MACs for conv/depthwise/dense, window taps for pooling, elements for
add, bytes for moves), ``elements`` the output elements and ``patch`` a convolution's im2col row copies
(output pixels x kernel rows: onnxruntime's NHWC QLinearConv copies one kernel row of ``kernel_w x
channels`` bytes per output pixel at a time, which dominates single-channel inputs) and ``weights`` the
weight bytes of a conv or dense layer (streamed once per sample: what bounds a layer with few output
pixels) and ``passes`` the extra numpy passes over the output (a max pool's window taps, a fused ReLU's
bounds), all per sample (:func:`layer_features`);
``overhead`` is what a layer costs whatever its size (the Python call, onnxruntime's session run, numpy's
per-call set-up: ~20-300 us per layer on a loaded x86 host, which dominates the small layers of embedded
networks); ``element_s`` the per-output cost (requantisation, im2col rows, stores). ``ways`` is how many
tiles the workers cut the layer into (:func:`parallel_ways`: layers below a size threshold run whole on
one thread, since handing a tile to another thread costs more than it saves).

Parameter sets: ``host`` is fitted from micro-benchmarks of the actual worker kernels
(:func:`fit_host_model`, layers not taken from any network) — by benchmarks/calibrate_cpu_model.py into
``data/host_cpu.json``, or in situ at run time (what tests/test_scheduler_runtime.py does: a shared
machine's speed drifts with its load). Without the file the built-in defaults apply, fitted once on this
project's development host (so CI never depends on a calibration). ``cortex-a9`` and ``microblaze`` come
from published figures (cited per entry, estimates flagged).

Hand-over (re-warm) cost. On the host target the simulated accelerator runs on this CPU and evicts the
software layers' caches: after a hand-over from it, the first layer of each *working set* — the code and
data of one kernel library (:data:`WORKING_SETS`: onnxruntime's QLinearConv for convolutions and dense
layers alike, one numpy kernel per other class) — runs longer, the later layers of a segment find it warm.
``rewarm_s[class]`` is what a layer of the class pays first after an eviction; :meth:`CpuModel.rewarm_parts`
splits it by working set (measured in mixed frames here: the first convolution or dense layer after the
simulator +150-185 us, +120-130 us after a numpy layer of the same segment; a max pool +35-45 us wherever
it comes; a flatten +5-15 us first, ~0 after another layer; the rest of the segment within ~10-20 us of
the warm model). :func:`fit_host_model` measures ``rewarm_s`` with ``evict`` (e.g.
:func:`accelerator_evictor`: one small layer on the simulator) run before each timed layer;
:class:`~scalenet.scheduler.costs.Rewarm` and :mod:`.schedule` say how the scheduler charges it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from importlib import resources as _resources

import numpy as np

from scalenet.errors import ScalenetError
from scalenet.ir import Add, AvgPool, Clip, Concat, Conv, Dense, Flatten, GlobalAvgPool, MaxPool

__all__ = ["KindRate", "CpuModel", "WORKING_SETS", "working_set", "REWARM_LAYERS", "accelerator_evictor",
           "layer_class", "layer_work", "layer_features", "parallel_ways",
           "CPU_MODELS", "get_cpu_model", "load_host_model", "fit_host_model", "benchmark_layers",
           "time_layer", "time_layers", "time_rounds", "LAYER_CLASSES", "MIN_PARALLEL_WORK", "FEATURES"]

LAYER_CLASSES = ("conv", "depthwise", "dense", "maxpool", "avgpool", "gap", "add", "clip", "move")

MIN_PARALLEL_WORK = {"conv": 2_000_000, "depthwise": 500_000, "dense": 1_000_000, "maxpool": 200_000,
                     "avgpool": 200_000, "gap": 200_000, "add": 100_000, "clip": 200_000}
"""Work below which a layer runs whole on one worker (moves never split). Handing a tile to a pool thread
and joining it costs ~50-150 us here; a tile below these sizes takes about that long."""


WORKING_SETS = {"conv": "onnxruntime", "dense": "onnxruntime"}
"""Layer class -> the working set (kernel library) it needs warm; a class not listed is its own. The
workers run both convolutions and dense layers as onnxruntime QLinearConv sessions (a dense layer after
a convolution in one segment finds the library warm: measured, +5-35 us against +115-170 us cold). Every
layer also re-warms the shared ``"python"`` set (the interpreter and numpy paths every kernel call takes;
see :meth:`CpuModel.rewarm_parts`)."""


def working_set(cls: str) -> str:
    return WORKING_SETS.get(cls, cls)


def parallel_ways(cls: str, work: float, threads: int) -> int:
    """Tiles the software workers cut one sample of a layer into (1: it runs whole on one thread)."""
    return threads if threads > 1 and work >= MIN_PARALLEL_WORK.get(cls, math.inf) else 1


@dataclass(frozen=True)
class KindRate:
    overhead_s: float          #: fixed cost per layer call (dispatch, session run, numpy set-up)
    rate: float                #: work units per second on one thread
    efficiency: float = 0.9    #: gain of each extra thread, as a fraction of one thread's rate
    element_s: float = 0.0     #: seconds per output element on one thread (requantisation, stores)
    patch_s: float = 0.0       #: seconds per im2col row copy (conv: output pixels x kernel rows)
    weight_s: float = 0.0      #: seconds per weight byte (conv/dense: streamed once per sample)
    pass_s: float = 0.0        #: seconds per extra pass over the output (max-pool taps, ReLU clamp bounds)


@dataclass(frozen=True)
class CpuModel:
    name: str
    kinds: dict                #: layer class -> KindRate
    source: str = ""
    calibrated: bool = False
    meta: dict = field(default_factory=dict, compare=False)
    rewarm_s: dict = field(default_factory=dict)  #: class -> seconds to re-warm its working set after eviction

    def seconds(self, cls: str, work: float, threads: int = 1, elements: float = 0, patch: float = 0,
                weights: float = 0, passes: float = 0) -> float:
        if cls not in self.kinds:
            raise ScalenetError(f"CPU model {self.name!r} has no parameters for layer class {cls!r}")
        if threads < 1:
            raise ScalenetError(f"threads must be >= 1, not {threads}")
        k = self.kinds[cls]
        ways = parallel_ways(cls, work, threads)
        serial = (work / k.rate + elements * k.element_s + patch * k.patch_s + weights * k.weight_s
                  + passes * k.pass_s)
        return k.overhead_s + serial / (1.0 + k.efficiency * (ways - 1))

    def layer_seconds(self, graph, layer, threads: int = 1) -> float:
        return self.seconds(layer_class(layer), threads=threads, **layer_features(graph, layer))

    def rewarm_seconds(self, cls: str) -> float:
        """What a layer of class ``cls`` pays first after an eviction to re-warm its working sets (0: not
        modelled, e.g. a CPU nothing else evicts)."""
        return float(self.rewarm_s.get(cls, 0.0))

    def rewarm_parts(self, cls: str) -> list:
        """:meth:`rewarm_seconds` split into [(working set, seconds)], each paid only while that set is cold.
        A move (a reshape or copy: no kernel library) re-warms only the shared ``"python"`` set, so its
        re-warm is that set's; onnxruntime layers pay it out of theirs (what they save after another layer
        of the segment, measured +120-130 us against +150-185 us); numpy kernels measured no cheaper after
        an onnxruntime layer, so they pay their whole figure for their own set and warm ``"python"`` free."""
        total, shared = self.rewarm_seconds(cls), self.rewarm_seconds("move")
        if cls == "move":
            return [("python", total)]
        if working_set(cls) == "onnxruntime":
            return [("onnxruntime", max(0.0, total - shared)), ("python", min(total, shared))]
        return [(working_set(cls), total), ("python", 0.0)]


def layer_class(layer) -> str:
    if isinstance(layer, Conv):
        return "depthwise" if layer.groups > 1 else "conv"
    if isinstance(layer, Dense):
        return "dense"
    if isinstance(layer, MaxPool):
        return "maxpool"
    if isinstance(layer, AvgPool):
        return "avgpool"
    if isinstance(layer, GlobalAvgPool):
        return "gap"
    if isinstance(layer, Add):
        return "add"
    if isinstance(layer, Clip):
        return "clip"
    if isinstance(layer, (Concat, Flatten)):
        return "move"
    raise ScalenetError(f"layer {layer.name}: no CPU cost model for op {layer.kind!r}")


def layer_work(graph, layer) -> int:
    """The layer's work in the unit of its class (per sample)."""
    out = graph.tensors[layer.output].shape
    if isinstance(layer, (Conv, Dense)):
        return graph.layer_macs(layer)
    if isinstance(layer, (MaxPool, AvgPool)):
        return math.prod(out) * math.prod(layer.kernel)
    if isinstance(layer, GlobalAvgPool):
        return math.prod(graph.tensors[layer.inputs[0]].shape)
    if isinstance(layer, Add):
        return math.prod(out)
    if isinstance(layer, Flatten):
        return 0                                  # a reshape: no data moves
    return math.prod(out)                         # concat / clip: one pass over the output


def layer_features(graph, layer) -> dict:
    """The model's inputs for one sample of ``layer``: work (:func:`layer_work`), output elements, and for
    convolutions with a kernel larger than 1x1 the im2col row copies (output pixels x kernel rows), for
    convolutions and dense layers the weight bytes (a layer with few output pixels is a matrix-vector
    product, bound by streaming its weights, not by its MACs), and the extra passes over the output: the
    bounds of a fused ReLU the output type does not already apply, a max pool's window taps."""
    out = graph.tensors[layer.output].shape
    patch, weights, passes = 0, 0, 0
    if isinstance(layer, Conv) and math.prod(layer.kernel) > 1:
        patch = math.prod(out[1:]) * layer.kernel[0]
    if isinstance(layer, (Conv, Dense)):
        weights = int(layer.weight.size)
        q = graph.tensors[layer.output].q.dtype   # a fused ReLU bound the output type's range does not apply
        passes = int(layer.lo is not None and layer.lo > q.lo) + int(layer.hi is not None and layer.hi < q.hi)
    elif isinstance(layer, MaxPool):
        passes = math.prod(layer.kernel)          # one pass over the map per window tap
    return {"work": layer_work(graph, layer), "elements": math.prod(out), "patch": patch, "weights": weights,
            "passes": passes}


# -- parameter sets -------------------------------------------------------------------------------------

_A9_SOURCE = ("ARM Cortex-A9 NEON MPE TRM (DDI0409): VMLAL.S16 multiply-accumulates four 16-bit lanes per "
              "issue; int8 GEMM on Cortex-A9 reaches ~2 MAC/cycle/core in practice (gemmlowp/ARM Compute "
              "Library A9 figures); dense layers are bound by the Zynq-7000 DDR3 read bandwidth seen by one "
              "core (~600 MB/s, UG585 ch. 10) at one weight byte per MAC. Estimates.")


def _cortex_a9(clock_hz=667e6):
    f = clock_hz
    pool = KindRate(10e-6, 1.0 * f, 0.9)                # VMAX/VPADAL over 8 lanes, loads dominate
    return CpuModel("cortex-a9", {
        "conv": KindRate(30e-6, 2.0 * f, 0.9),
        "depthwise": KindRate(30e-6, 0.5 * f, 0.9),     # no reduction across channels to vectorise
        "dense": KindRate(20e-6, 600e6, 0.3),           # memory-bound: the cores share the DDR port
        "maxpool": pool, "avgpool": pool, "gap": pool,
        "add": KindRate(10e-6, 0.25 * f, 0.9),          # requantisation: ~4 cycles/element
        "clip": KindRate(5e-6, 1.0 * f, 0.9),           # VMAX/VMIN over 16 lanes, loads dominate
        "move": KindRate(5e-6, 600e6, 0.3),
    }, source=_A9_SOURCE, meta={"clock_hz": clock_hz})


_MB_SOURCE = ("Xilinx UG984 MicroBlaze reference guide: 3-stage area-optimised pipeline, 3-cycle hardware "
              "multiplier, 1-2 cycle local-memory loads: an int8 MAC loop body (2 loads, multiply, add, "
              "index) costs ~6 cycles; data in DDR3 through a cache. Estimates.")


def _microblaze(clock_hz=100e6):
    f = clock_hz
    return CpuModel("microblaze", {
        "conv": KindRate(50e-6, f / 6, 0.0), "depthwise": KindRate(50e-6, f / 6, 0.0),
        "dense": KindRate(50e-6, f / 6, 0.0), "maxpool": KindRate(20e-6, f / 4, 0.0),
        "avgpool": KindRate(20e-6, f / 4, 0.0), "gap": KindRate(20e-6, f / 4, 0.0),
        "add": KindRate(20e-6, f / 12, 0.0), "clip": KindRate(10e-6, f / 4, 0.0), "move": KindRate(10e-6, f / 3, 0.0),
    }, source=_MB_SOURCE, meta={"clock_hz": clock_hz})


_HOST_DEFAULT = CpuModel("host", {
    # Fitted by benchmarks/calibrate_cpu_model.py on the development host (2-core AMD EPYC VM under load
    # 5-10 from other jobs; thread CPU time, fastest of 9), rounded. Parallel efficiency: an assumed 0.8 for
    # a host with idle cores (the loaded development host measured ~0: no idle core to run a second tile).
    # KindRate(overhead_s, rate, efficiency, element_s, patch_s, weight_s, pass_s)
    "conv": KindRate(47e-6, 8.8e9, 0.8, 4.8e-9, 20e-9, 1.0e-9, 11e-6),
    "depthwise": KindRate(60e-6, 2.6e9, 0.8, 0.0, 2e-9),
    "dense": KindRate(49e-6, 8.3e8, 0.8, 0.0, 0.0, 0.0, 12e-6),
    "maxpool": KindRate(9e-6, 1.2e9, 0.8, 0.0, 0.0, 0.0, 4.1e-6),
    "avgpool": KindRate(575e-6, 1.6e8, 0.8, 100e-9),
    "gap": KindRate(347e-6, 7e8, 0.8, 140e-9),
    "add": KindRate(140e-6, 8.6e7, 0.8),
    "clip": KindRate(28e-6, 1.5e10, 0.8),
    "move": KindRate(7e-6, 6e9, 0.5),
}, source="built-in defaults (run benchmarks/calibrate_cpu_model.py to fit this machine)",
    # Re-warm after the simulated accelerator ran (fit_host_model with accelerator_evictor on the development
    # host: medians of (evicted - warm) per class, rounded).
    rewarm_s={"conv": 140e-6, "depthwise": 140e-6, "dense": 135e-6, "maxpool": 45e-6, "avgpool": 150e-6,
              "gap": 150e-6, "add": 115e-6, "clip": 60e-6, "move": 12e-6})


def load_host_model(path=None) -> CpuModel:
    """The host model from ``data/host_cpu.json`` (or ``path``); the defaults when there is none."""
    try:
        if path is None:
            text = _resources.files("scalenet.scheduler").joinpath("data/host_cpu.json").read_text()
        else:
            with open(path) as f:
                text = f.read()
    except FileNotFoundError:
        return _HOST_DEFAULT
    raw = json.loads(text)
    kinds = dict(_HOST_DEFAULT.kinds)
    for cls, p in raw["kinds"].items():
        kinds[cls] = KindRate(float(p["overhead_s"]), float(p["rate"]), float(p["efficiency"]),
                              *(float(p.get(k, 0.0)) for k in ("element_s", "patch_s", "weight_s", "pass_s")))
    rewarm = dict(_HOST_DEFAULT.rewarm_s)
    rewarm.update({cls: float(v) for cls, v in raw.get("rewarm_s", {}).items()})
    return CpuModel("host", kinds, source=raw.get("source", "benchmarks/calibrate_cpu_model.py"), calibrated=True,
                    meta={k: v for k, v in raw.items() if k not in ("kinds", "rewarm_s")}, rewarm_s=rewarm)


CPU_MODELS = {
    "cortex-a9": _cortex_a9,
    "microblaze": _microblaze,
    "host": lambda clock_hz=None: load_host_model(),
}


def get_cpu_model(name: str, clock_hz=None) -> CpuModel:
    if name not in CPU_MODELS:
        raise ScalenetError(f"unknown CPU model {name!r}: known are {', '.join(sorted(CPU_MODELS))}")
    return CPU_MODELS[name](clock_hz) if clock_hz is not None else CPU_MODELS[name]()


# -- fitting the host model from micro-benchmarks of the workers -----------------------------------------


def _one(layer, shapes, out_scale=0.3):
    from scalenet.ir import Graph, Tensor
    from scalenet.quant import QParams
    q = QParams(np.float32(0.05), 0, "int8")
    names = list(dict.fromkeys(layer.inputs))
    t = {n: Tensor(n, s, q) for n, s in zip(names, shapes)}
    same = isinstance(layer, (MaxPool, Concat, Flatten, Clip))
    out_q = q if same else QParams(np.float32(out_scale), 0, "int8")
    t[layer.output] = Tensor(layer.output, layer.out_shape([t[n].shape for n in layer.inputs]), out_q)
    return Graph(layer.name, t, [layer], names, [layer.output])


def benchmark_layers(size: str = "quick") -> list:
    """Seeded one-layer graphs per class, spanning the sizes of embedded networks (none is a zoo layer).
    ``quick`` (~1 s of work on a loaded 2-core host) for in-situ fits, ``full`` adds larger layers."""
    from scalenet.quant import QParams
    rng = np.random.default_rng(0)

    def wq(n):                        # per-channel weight scales, as the zoo's (and most PTQ) networks
        return QParams(rng.uniform(0.002, 0.02, n).astype(np.float32), 0, "int8")

    def conv(cin, cout, hw, k, groups=1, stride=1, pad=None, lo=0, hi=None):
        w = rng.integers(-127, 128, (cout, cin // groups, k, k)).astype(np.int8)
        pads = (k // 2 if pad is None else pad,) * 4
        layer = Conv(name=f"conv{cin}x{cout}@{hw}k{k}g{groups}s{stride}", inputs=["x"], output="y", weight=w,
                     w_q=wq(cout), bias=rng.integers(-3000, 3000, cout), stride=(stride, stride), pads=pads,
                     groups=groups, lo=lo, hi=hi)
        return _one(layer, [(cin, hw, hw)])

    def dense(fin, fout, lo=None):
        return _one(Dense(name=f"fc{fin}x{fout}", inputs=["x"], output="y", w_q=wq(fout), lo=lo,
                          bias=rng.integers(-3000, 3000, fout),
                          weight=rng.integers(-127, 128, (fout, fin)).astype(np.int8)), [(fin,)], 2.0)

    def pool(kind, c, hw, k=2, s=2):
        cls = MaxPool if kind == "max" else AvgPool
        return _one(cls(name=f"{kind}pool{c}@{hw}k{k}", inputs=["x"], output="y", kernel=(k, k), stride=(s, s)),
                    [(c, hw, hw)])

    out = [conv(2, 4, 12, 3), conv(3, 8, 24, 5, lo=None), conv(8, 8, 16, 3), conv(16, 24, 10, 3, lo=None),
           conv(32, 32, 8, 3),
           conv(16, 32, 14, 1), conv(8, 16, 28, 3, stride=2), conv(1, 4, 30, 5), conv(4, 12, 14, 5), conv(24, 48, 6, 3),
           conv(64, 64, 4, 3), conv(2, 16, 20, 3), conv(8, 64, 3, 3, pad=0), conv(32, 100, 4, 4, pad=0),
           conv(64, 32, 2, 1, lo=None), conv(1, 8, 8, 3), conv(8, 16, 6, 3, lo=None), conv(4, 8, 5, 3),
           conv(1, 8, 8, 3, lo=None), conv(4, 8, 5, 3, lo=None), conv(8, 16, 6, 3, lo=-20, hi=100),
           conv(8, 8, 16, 3, groups=8), conv(32, 32, 8, 3, groups=32), conv(16, 16, 24, 3, groups=16, stride=2),
           dense(64, 16), dense(200, 50), dense(400, 100, 0), dense(1000, 32), dense(100, 120, -128), dense(300, 10, 0),
           pool("max", 4, 12), pool("max", 8, 20), pool("max", 24, 16, 3), pool("max", 32, 24), pool("max", 6, 9, 3),
           pool("avg", 4, 12), pool("avg", 16, 16, 3, 1), pool("avg", 32, 20),
           _one(GlobalAvgPool(name="gap24@7", inputs=["x"], output="y"), [(24, 7, 7)]),
           _one(GlobalAvgPool(name="gap64@4", inputs=["x"], output="y"), [(64, 4, 4)]),
           _one(GlobalAvgPool(name="gap16@16", inputs=["x"], output="y"), [(16, 16, 16)]),
           _one(Add(name="add4@6", inputs=["x", "x2"], output="y"), [(4, 6, 6)] * 2),
           _one(Add(name="add16@12", inputs=["x", "x2"], output="y"), [(16, 12, 12)] * 2),
           _one(Add(name="add32@24", inputs=["x", "x2"], output="y"), [(32, 24, 24)] * 2),
           _one(Flatten(name="flat8@4", inputs=["x"], output="y"), [(8, 4, 4)]),
           _one(Concat(name="cat8@6", inputs=["x", "x2"], output="y"), [(8, 6, 6)] * 2),
           _one(Concat(name="cat32@20", inputs=["x", "x2"], output="y"), [(32, 20, 20)] * 2),
           _one(Clip(name="clip16@12", inputs=["x"], output="y", lo=0), [(16, 12, 12)]),
           _one(Clip(name="clip32@28", inputs=["x"], output="y", lo=0, hi=100), [(32, 28, 28)])]
    if size == "full":
        out += [conv(32, 64, 28, 3), conv(64, 64, 28, 3), conv(3, 32, 56, 3, stride=2), conv(64, 128, 14, 1),
                conv(64, 64, 28, 3, groups=64), dense(2048, 256), dense(4096, 100),
                pool("max", 64, 56), pool("max", 64, 28, 3), pool("avg", 64, 28, 3, 1),
                _one(GlobalAvgPool(name="gap256@14", inputs=["x"], output="y"), [(256, 14, 14)]),
                _one(Add(name="add64@56", inputs=["x", "x2"], output="y"), [(64, 56, 56)] * 2)]
    elif size != "quick":
        raise ScalenetError(f"benchmark size must be 'quick' or 'full', not {size!r}")
    return out


def time_rounds(workers, sets, repeats=7, clock=time.thread_time, each_round=None) -> list:
    """``clock`` seconds of one sample of each one-layer graph on ``workers``, per round: ``sets`` is a list
    of ``(graphs, between)``, timed one set after the other in each of ``repeats`` rounds (after a warm-up
    round, which also prepares them: tiles, onnxruntime sessions); returns ``samples[set][graph]`` (a list,
    one per round). Sets measured in the same rounds see the same machine: on a shared machine the load
    drifts by tens of percent within a minute, so two figures to be compared are never measured a minute
    apart.

    In rounds, not each layer in a tight loop: in a network's frame other layers run between two runs of a
    layer, and onnxruntime's small convolutions take ~2x longer with the caches that leaves than with their
    own data and code still cached (measured here). ``between()``, when not None, runs before each timed
    layer of its set: what else the host does between two software layers where the model will be used (on
    the host target, the simulated accelerator, whose model evicts the caches the layers would find warm on
    a board). ``each_round()``, when given, runs at the start of each round: other work measured side by
    side with these layers. After it, or after a set with ``between``, an untimed pass of the first set
    restores the in-rounds cache state before that set is timed again."""
    rng = np.random.default_rng(1)
    prepared = [[(g, [rng.integers(-128, 128, (1, *g.tensors[n].shape)).astype(np.int8) for n in g.layers[0].inputs])
                 for g in graphs] for graphs, _ in sets]
    for runs in prepared:
        for g, xs in runs:
            workers.run_layer(g, g.layers[0], xs)
    disturbed = any(between is not None for _, between in sets)
    samples = [[[] for _ in runs] for runs in prepared]
    for r in range(repeats):
        if each_round is not None:
            each_round()
        if each_round is not None or (disturbed and r > 0):
            for g, xs in prepared[0]:
                workers.run_layer(g, g.layers[0], xs)
        for (_, between), runs, times in zip(sets, prepared, samples):
            for (g, xs), t in zip(runs, times):
                if between is not None:
                    between()
                t0 = clock()
                workers.run_layer(g, g.layers[0], xs)
                t.append(clock() - t0)
    return samples


def time_layers(workers, graphs, repeats=7, clock=time.thread_time, between=None) -> list:
    """Median ``clock`` seconds of one sample of each one-layer graph on ``workers``, the layers run one
    after the other in rounds (:func:`time_rounds` with one set)."""
    return [float(np.median(t)) for t in time_rounds(workers, [(graphs, between)], repeats, clock)[0]]


def time_layer(workers, graph, repeats=7, clock=time.thread_time) -> float:
    """:func:`time_layers` of one layer (which then runs in a tight loop: a warm-cache figure)."""
    return time_layers(workers, [graph], repeats, clock)[0]


FEATURES = ("work", "elements", "patch", "weights", "passes")


def _fit_class(rows):
    """(overhead, 1/rate, element_s, patch_s, weight_s, pass_s) >= 0 from [(features, seconds)], least squares on relative
    error; a feature that is zero for every row of the class is left out."""
    from scipy.optimize import nnls
    used = [f for f in FEATURES if any(r[f] for r, _ in rows)]
    a = np.array([[1.0] + [r[f] for f in used] for r, _ in rows]) / np.array([[t] for _, t in rows])
    sol, _ = nnls(a, np.ones(len(rows)))
    coef = dict(zip(["overhead"] + used, (float(v) for v in sol)))
    return (coef["overhead"], coef.get("work", 0.0), coef.get("elements", 0.0), coef.get("patch", 0.0),
            coef.get("weights", 0.0), coef.get("passes", 0.0))


REWARM_LAYERS = ("conv8x8@16k3g1s1", "conv24x48@6k3g1s1", "conv4x12@14k5g1s1", "conv8x8@16k3g8s1", "fc200x50",
                 "fc400x100", "maxpool8@20k2", "maxpool24@16k3", "avgpool4@12k2", "gap24@7", "add16@12",
                 "clip16@12", "flat8@4", "cat8@6")
"""The :func:`benchmark_layers` the re-warm cost is measured on (one to three per class)."""


def accelerator_evictor(accelerator):
    """A callable that runs one small convolution on ``accelerator`` (a driver Accelerator; its memory
    image is overwritten): what the host does for a hand-over to the accelerator. On the simulated target
    that is the CXXRTL model running on this CPU — the eviction :func:`fit_host_model` measures."""
    from scalenet.quant import QParams
    rng = np.random.default_rng(2)
    layer = Conv(name="evictor", inputs=["x"], output="y", weight=rng.integers(-127, 128, (4, 4, 3, 3)).astype(np.int8),
                 w_q=QParams(np.full(4, 0.01, np.float32), 0, "int8"), bias=rng.integers(-300, 300, 4),
                 pads=(1, 1, 1, 1), lo=0)
    loaded = accelerator.load(_one(layer, [(4, 6, 6)]))
    x = rng.integers(-128, 128, (1, 4, 6, 6)).astype(np.int8)
    return lambda: accelerator.run(loaded, x)


def fit_host_model(workers=None, *, size="quick", repeats=7, clock=time.thread_time, threads=1,
                   efficiency=None, between=None, evict=None, rewarm_classes=None, each_round=None) -> CpuModel:
    """The host model fitted now, on this machine, from :func:`benchmark_layers` run on ``workers``
    (default: one-thread :class:`~scalenet.scheduler.workers.SoftwareWorkers`) timed by ``clock`` (default:
    the calling thread's CPU time, which other processes on a shared machine do not inflate) in ``repeats``
    rounds of :func:`time_rounds`; ``between`` runs before each timed layer (the conditions the layers will
    run in) and ``each_round`` at the start of each round (work to measure side by side with the fit).

    With ``evict`` (e.g. :func:`accelerator_evictor`), the hand-over cost ``rewarm_s`` is measured in the
    same rounds: :data:`REWARM_LAYERS` of ``rewarm_classes`` (default all) timed again with ``evict()``
    before each; a class's re-warm is the median over its layers of the median over rounds of (time after
    eviction - time in the same round's main pass). Classes not measured keep the stored/default figures.

    Only one-thread costs are measured; the parallel ``efficiency`` per class comes from ``efficiency``
    (a dict) or the stored/default host model. ``meta["points"]`` keeps (layer, class, features,
    measured s) for reports."""
    from .workers import SoftwareWorkers
    own = workers is None
    workers = workers or SoftwareWorkers(threads)
    try:
        graphs = benchmark_layers(size)
        sets = [(graphs, between)]
        cold = []
        if evict is not None:         # every size's benchmark holds the re-warm layers
            cold = [g for g in graphs
                    if g.name in REWARM_LAYERS and (rewarm_classes is None or layer_class(g.layers[0]) in rewarm_classes)]
            sets.append((cold, evict))
        samples = time_rounds(workers, sets, repeats, clock, each_round)
        seconds = [float(np.median(t)) for t in samples[0]]
        points = [(g.name, layer_class(g.layers[0]), layer_features(g, g.layers[0]), t) for g, t in zip(graphs, seconds)]
        extra = {}
        for g, after in zip(cold, samples[1] if cold else []):
            warm = samples[0][graphs.index(g)]
            extra.setdefault(layer_class(g.layers[0]), []).append(
                max(0.0, float(np.median([c - w for c, w in zip(after, warm)]))))
        rewarm = {cls: float(np.median(v)) for cls, v in extra.items()}
    finally:
        if own:
            workers.close()
    base = load_host_model()
    eff = efficiency or {}
    kinds = {}
    for cls in LAYER_CLASSES:
        rows = [(f, t) for _, c, f, t in points if c == cls]
        if not rows:
            kinds[cls] = base.kinds[cls]
            continue
        overhead, inv_rate, element_s, patch_s, weight_s, pass_s = _fit_class(rows)
        kinds[cls] = KindRate(overhead, 1.0 / inv_rate if inv_rate > 0 else math.inf,
                              float(eff.get(cls, base.kinds[cls].efficiency)), element_s, patch_s, weight_s, pass_s)
    return CpuModel("host", kinds, source=f"fitted in situ from {len(points)} micro-benchmarks of the workers "
                    f"({getattr(clock, '__name__', clock)}, layers in rounds, median of {repeats})"
                    + (f"; re-warm of {', '.join(sorted(rewarm))} measured after eviction" if rewarm else ""),
                    calibrated=True, meta={"points": points, "rewarm_measured": sorted(rewarm)},
                    rewarm_s={**base.rewarm_s, **rewarm})
