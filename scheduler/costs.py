"""The cost table: what the metric models tell the scheduler, and all the scheduler knows of them.

The metric models (:mod:`scalenet.scheduler.metrics`) fill a :class:`CostTable` for one graph on one
target; the scheduling algorithms (:mod:`scalenet.scheduler.schedule`) read nothing else. Keeping this
interface small is what lets the algorithms be checked against brute force on synthetic tables and the
models be checked against measurements, separately.

Units are SI throughout: seconds, watts, joules, bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["LayerCost", "ResourceSpec", "CostTable", "random_table"]


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
    joules; a pair that shares memory is simply absent (free).
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
    meta: dict = field(default_factory=dict)  # provenance: target, model versions, calibration

    def supported(self, layer, resource) -> bool:
        return (layer, resource) in self.cost

    def transfer(self, src: str, dst: str, nbytes: int) -> tuple:
        """(seconds, joules) to move ``nbytes`` from ``src``'s memory to ``dst``'s."""
        if src == dst or (src, dst) not in self.bandwidth or nbytes == 0:
            return 0.0, 0.0
        return (self.transfer_latency_s + nbytes / self.bandwidth[(src, dst)],
                nbytes * self.energy_per_byte.get((src, dst), 0.0))


def random_table(seed, n=8, k=2, dag=False, unsupported=0.15):
    """A synthetic table of ``n`` layers (a chain, or a random DAG) on ``k`` resources with small integer costs,
    so sums and comparisons are exact in floating point: how the algorithms are checked against brute force
    (tests) and timed (benchmarks), independently of the metric models."""
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
    return CostTable(f"rand{seed}", names, preds, res, cost, {l: int(rng.integers(0, 5)) for l in names},
                     in_bytes=int(rng.integers(0, 5)), host="cpu", bandwidth=bw, energy_per_byte=epb)
