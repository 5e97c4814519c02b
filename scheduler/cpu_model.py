"""Software latency model: seconds for a layer on ``threads`` software workers of a CPU.

Per layer class (conv, depthwise, dense, pool, add, move) ``seconds = overhead + work / rate(threads)``
with ``rate(t) = rate1 * (1 + efficiency * (t - 1))``. ``work`` is the class's natural unit (MACs for
conv/depthwise/dense, window taps for pooling, elements for add, bytes for moves) from :func:`layer_work`.

Parameter sets: ``host`` is fitted by benchmarks/calibrate_cpu_model.py from micro-benchmarks of
:class:`~scalenet.scheduler.workers.SoftwareWorkers` and stored in ``data/host_cpu.json``; without that
file the conservative built-in defaults apply (so CI never depends on a calibration). ``cortex-a9`` and
``microblaze`` come from published figures (cited per entry, estimates flagged).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources as _resources

from scalenet.errors import ScalenetError
from scalenet.ir import Add, AvgPool, Clip, Concat, Conv, Dense, Flatten, GlobalAvgPool, MaxPool

__all__ = ["KindRate", "CpuModel", "layer_class", "layer_work", "CPU_MODELS", "get_cpu_model", "load_host_model",
           "LAYER_CLASSES"]

LAYER_CLASSES = ("conv", "depthwise", "dense", "pool", "add", "move")


@dataclass(frozen=True)
class KindRate:
    overhead_s: float          #: fixed cost per layer call (dispatch, im2col set-up, thread wake-up)
    rate: float                #: work units per second on one thread
    efficiency: float = 0.9    #: gain of each extra thread, as a fraction of one thread's rate


@dataclass(frozen=True)
class CpuModel:
    name: str
    kinds: dict                #: layer class -> KindRate
    source: str = ""
    calibrated: bool = False
    meta: dict = field(default_factory=dict, compare=False)

    def seconds(self, cls: str, work: float, threads: int = 1) -> float:
        if cls not in self.kinds:
            raise ScalenetError(f"CPU model {self.name!r} has no parameters for layer class {cls!r}")
        if threads < 1:
            raise ScalenetError(f"threads must be >= 1, not {threads}")
        k = self.kinds[cls]
        return k.overhead_s + work / (k.rate * (1.0 + k.efficiency * (threads - 1)))

    def layer_seconds(self, graph, layer, threads: int = 1) -> float:
        return self.seconds(layer_class(layer), layer_work(graph, layer), threads)


def layer_class(layer) -> str:
    if isinstance(layer, Conv):
        return "depthwise" if layer.groups > 1 else "conv"
    if isinstance(layer, Dense):
        return "dense"
    if isinstance(layer, (MaxPool, AvgPool, GlobalAvgPool)):
        return "pool"
    if isinstance(layer, Add):
        return "add"
    if isinstance(layer, (Concat, Flatten, Clip)):
        return "move"
    raise ScalenetError(f"layer {layer.name}: no CPU cost model for op {layer.kind!r}")


def layer_work(graph, layer) -> int:
    """The layer's work in the unit of its class (per sample)."""
    import math
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


# -- parameter sets -------------------------------------------------------------------------------------

_A9_SOURCE = ("ARM Cortex-A9 NEON MPE TRM (DDI0409): VMLAL.S16 multiply-accumulates four 16-bit lanes per "
              "issue; int8 GEMM on Cortex-A9 reaches ~2 MAC/cycle/core in practice (gemmlowp/ARM Compute "
              "Library A9 figures); dense layers are bound by the Zynq-7000 DDR3 read bandwidth seen by one "
              "core (~600 MB/s, UG585 ch. 10) at one weight byte per MAC. Estimates.")


def _cortex_a9(clock_hz=667e6):
    f = clock_hz
    return CpuModel("cortex-a9", {
        "conv": KindRate(30e-6, 2.0 * f, 0.9),
        "depthwise": KindRate(30e-6, 0.5 * f, 0.9),     # no reduction across channels to vectorise
        "dense": KindRate(20e-6, 600e6, 0.3),           # memory-bound: the cores share the DDR port
        "pool": KindRate(10e-6, 1.0 * f, 0.9),          # VMAX/VPADAL over 8 lanes, loads dominate
        "add": KindRate(10e-6, 0.25 * f, 0.9),          # requantisation: ~4 cycles/element
        "move": KindRate(5e-6, 600e6, 0.3),
    }, source=_A9_SOURCE, meta={"clock_hz": clock_hz})


_MB_SOURCE = ("Xilinx UG984 MicroBlaze reference guide: 3-stage area-optimised pipeline, 3-cycle hardware "
              "multiplier, 1-2 cycle local-memory loads: an int8 MAC loop body (2 loads, multiply, add, "
              "index) costs ~6 cycles; data in DDR3 through a cache. Estimates.")


def _microblaze(clock_hz=100e6):
    f = clock_hz
    return CpuModel("microblaze", {
        "conv": KindRate(50e-6, f / 6, 0.0), "depthwise": KindRate(50e-6, f / 6, 0.0),
        "dense": KindRate(50e-6, f / 6, 0.0), "pool": KindRate(20e-6, f / 4, 0.0),
        "add": KindRate(20e-6, f / 12, 0.0), "move": KindRate(10e-6, f / 3, 0.0),
    }, source=_MB_SOURCE, meta={"clock_hz": clock_hz})


_HOST_DEFAULT = CpuModel("host", {
    # Conservative, uncalibrated: below what the numpy/BLAS workers reach on a modern x86 core.
    "conv": KindRate(100e-6, 5e9, 0.8), "depthwise": KindRate(100e-6, 3e8, 0.8),
    "dense": KindRate(50e-6, 2e9, 0.5), "pool": KindRate(50e-6, 3e8, 0.8),
    "add": KindRate(50e-6, 1e8, 0.8), "move": KindRate(10e-6, 2e9, 0.5),
}, source="built-in defaults (run benchmarks/calibrate_cpu_model.py to fit this machine)")


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
        kinds[cls] = KindRate(float(p["overhead_s"]), float(p["rate"]), float(p["efficiency"]))
    return CpuModel("host", kinds, source=raw.get("source", "benchmarks/calibrate_cpu_model.py"), calibrated=True,
                    meta={k: v for k, v in raw.items() if k != "kinds"})


CPU_MODELS = {
    "cortex-a9": _cortex_a9,
    "microblaze": _microblaze,
    "host": lambda clock_hz=None: load_host_model(),
}


def get_cpu_model(name: str, clock_hz=None) -> CpuModel:
    if name not in CPU_MODELS:
        raise ScalenetError(f"unknown CPU model {name!r}: known are {', '.join(sorted(CPU_MODELS))}")
    return CPU_MODELS[name](clock_hz) if clock_hz is not None else CPU_MODELS[name]()
