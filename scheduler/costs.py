"""The cost table: what the metric models tell the scheduler, and all the scheduler knows of them.

The metric models (:mod:`scalenet.scheduler.metrics`) fill a :class:`CostTable` for one graph on one
target; the scheduling algorithms (:mod:`scalenet.scheduler.schedule`) read nothing else. Keeping this
interface small is what lets the algorithms be checked against brute force on synthetic tables and the
models be checked against measurements, separately.

Units are SI throughout: seconds, watts, joules, bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["LayerCost", "Rewarm", "ResourceSpec", "CostTable", "random_table"]


@dataclass(frozen=True)
class LayerCost:
    """One layer on one resource.

    ``latency_s`` is the time from the layer's inputs being present in the resource's memory to its output
    being present there. ``energy_j`` is the *dynamic* energy of the run (above the resource's idle power);
    ``power_w`` is the resource's average total power while it runs the layer (idle + dynamic).
    """

    latency_s: float
    energy_j: float
    power_w: float


@dataclass(frozen=True)
class Rewarm:
    """What one layer pays on one resource to re-warm a working set a hand-over evicted (the hand-over cost).

    A *hand-over* into a resource is a layer there reading a tensor another resource made (or, at a frame's
    start, the previous frame's outputs having been made elsewhere). It leaves the resource's caches holding
    none of its working sets; afterwards the first layer of each ``working_set`` label pays ``latency_s``
    (and ``energy_j``) on top of its :class:`LayerCost`, later layers of the same label find it warm. On a
    board this is the re-fetch of the handed-over buffers the cache maintenance invalidated (one label for
    every layer: only the first layer after the hand-over pays); on the host target it is the re-warm of
    the kernel libraries' code and data, which the simulated accelerator, running on the same CPU, evicts
    (one label per library — onnxruntime, each numpy kernel — plus the interpreter's, shared by all).
    """

    latency_s: float
    energy_j: float
    working_set: str


@dataclass(frozen=True)
class ResourceSpec:
    """A place a layer can run: the accelerator or a pool of software workers.

    ``idle_power_w`` is drawn for the whole frame period whenever the resource is powered; a resource no
    layer of a schedule uses may be power-gated (``gateable``) and then draws nothing.
    """

    name: str
    kind: str  # "accel" or "cpu"
    idle_power_w: float
    gateable: bool = False


@dataclass
class CostTable:
    """Per-(layer, resource) costs of one graph on one target, plus the cost of moving tensors.

    ``layers`` are in topological order; ``preds[layer]`` lists the layers whose outputs it reads (the
    graph input has no producer and lives in host memory, i.e. on the resource named ``host``).
    ``cost[(layer, resource)]`` is missing when the resource cannot run the layer. ``out_bytes[layer]``
    is the size of the layer's output tensor. Moving ``n`` bytes from resource ``a`` to ``b`` takes
    ``n / bandwidth[(a, b)]`` seconds (plus ``transfer_latency_s``) and ``n * energy_per_byte[(a, b)]``
    joules; a pair that shares memory is simply absent (free). ``rewarm[(layer, resource)]`` is the
    layer's :class:`Rewarm`, or a tuple of them when the layer needs several working sets (each paid if
    cold; a zero-second part only marks its set warm); missing: a hand-over costs it nothing beyond the move.
    """

    graph_name: str
    layers: list
    preds: dict
    resources: dict  # name -> ResourceSpec
    cost: dict  # (layer, resource) -> LayerCost
    out_bytes: dict
    in_bytes: int = 0  # size of the graph input (starts on ``host``)
    host: str = "cpu"
    bandwidth: dict = field(default_factory=dict)  # (src, dst) -> bytes/s
    energy_per_byte: dict = field(default_factory=dict)  # (src, dst) -> J/byte
    transfer_latency_s: float = 0.0
    rewarm: dict = field(default_factory=dict)  # (layer, resource) -> Rewarm or tuple of Rewarm
    meta: dict = field(default_factory=dict)  # provenance: target, model versions, calibration

    def supported(self, layer, resource) -> bool:
        return (layer, resource) in self.cost

    def transfer(self, src: str, dst: str, nbytes: int) -> tuple:
        """(seconds, joules) to move ``nbytes`` from ``src``'s memory to ``dst``'s."""
        if src == dst or (src, dst) not in self.bandwidth or nbytes == 0:
            return 0.0, 0.0
        return (self.transfer_latency_s + nbytes / self.bandwidth[(src, dst)],
                nbytes * self.energy_per_byte.get((src, dst), 0.0))


def random_table(seed, n=8, k=2, dag=False, unsupported=0.15, rewarm=False):
    """A synthetic table of ``n`` layers (a chain, or a random DAG) on ``k`` resources with small integer costs,
    so sums and comparisons are exact in floating point: how the algorithms are checked against brute force
    (tests) and timed (benchmarks), independently of the metric models. ``rewarm``: most layers also get a
    hand-over cost on most resources, with two or three working-set labels per resource."""
    import numpy as np
    rng = np.random.default_rng(seed)
    names = [f"l{i}" for i in range(n)]
    preds = {}
    for i, l in enumerate(names):
        if not dag or i == 0:
            preds[l] = [names[i - 1]] if i else []
        else:
            m = int(rng.integers(1, min(i, 2) + 1))
            preds[l] = [names[j] for j in sorted(set(int(v) for v in rng.choice(i, size=m, replace=False)))]
    res = {"cpu": ResourceSpec("cpu", "cpu", float(rng.integers(1, 4))),
           "acc": ResourceSpec("acc", "accel", float(rng.integers(0, 3)), gateable=bool(rng.random() < 0.7))}
    if k == 3:
        res["dsp"] = ResourceSpec("dsp", "accel", float(rng.integers(0, 2)), gateable=True)
    cost = {}
    for l in names:
        for r in res:
            if r != "cpu" and rng.random() < unsupported:
                continue
            lat, e = float(rng.integers(1, 20)), float(rng.integers(0, 30))
            cost[(l, r)] = LayerCost(lat, e, res[r].idle_power_w + e / lat)
    bw, epb = {}, {}
    for a in res:
        for b in res:
            if a != b and rng.random() < 0.9:
                bw[(a, b)] = float(rng.choice([1.0, 0.5, 2.0]))
                epb[(a, b)] = float(rng.integers(0, 3))
    out_bytes, in_bytes = {l: int(rng.integers(0, 5)) for l in names}, int(rng.integers(0, 5))
    warm = {}
    if rewarm:              # drawn after everything else: the same seed gives the same table plus the term
        labels = {r: int(rng.integers(2, 4)) for r in res}
        for (l, r) in cost:
            if rng.random() < 0.8:
                parts = tuple(Rewarm(float(rng.integers(0, 8)), float(rng.integers(0, 6)), f"ws{v}")
                              for v in sorted({int(v) for v in rng.integers(0, labels[r], int(rng.integers(1, 3)))}))
                warm[(l, r)] = parts[0] if len(parts) == 1 else parts
    return CostTable(f"rand{seed}", names, preds, res, cost, out_bytes, in_bytes=in_bytes, host="cpu",
                     bandwidth=bw, energy_per_byte=epb, rewarm=warm)
