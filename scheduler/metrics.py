"""The metric models put together: a :class:`~scalenet.scheduler.costs.CostTable` for a graph on a target.

Per (layer, resource), one frame:

- ``cpu`` (the target's software workers on all its cores): latency from :mod:`.cpu_model`; power = the
  CPU's idle power + ``cores`` x its active power per core; energy = dynamic power x latency.
- ``accel``: latency from the calibrated cycle model (:mod:`.accel_model`) at the target's clock and memory
  system; power = device static + resource-based dynamic power x activity (:mod:`.power`); energy =
  dynamic power x latency + DMA bytes x DRAM energy per byte. Missing when the compiler's limit checks
  reject the layer (HardwareLimitError). Concat and flatten cost nothing there (placement only). A max
  pool the compiler fuses into its producer conv (``pool_after``) costs the fused descriptor's increment
  over the conv alone (a few cycles): the table is per layer, so this is the pool's cost *given its
  producer also runs on the accelerator* — the only way the runtime fuses them; its stand-alone cost is
  kept in ``meta["accel_standalone"]`` (the runtime prices an executed placement that separates the pair
  with it), ``meta["accel_fused_pools"]`` maps such pools to their conv.
- transfers ``cpu`` <-> ``accel``: the target's link (cache maintenance on shared DDR, or a UART), bytes
  over bandwidth plus a fixed latency, energy per byte.
- hand-over cost (``rewarm``, :class:`~.costs.Rewarm`) of each layer on ``cpu``: what the CPU pays after a
  hand-over besides the move. Where the accelerator is simulated on the CPU (``Target.accel_on_cpu``, the
  host target) the simulator evicts the CPU's caches: the first layer of each kernel library's working
  set (:data:`.cpu_model.WORKING_SETS`, and a shared interpreter set) pays its part of the CPU model's
  ``rewarm_s`` of its class (:meth:`.cpu_model.CpuModel.rewarm_parts`; measured against the simulator by
  :func:`.cpu_model.fit_host_model`). On a board the link's cache maintenance
  invalidated the handed-over buffer: the first layer after a hand-over re-reads its input bytes at the
  link's ``refetch_bps`` (data/power.json; one working set, so only that layer pays). Energy: the CPU's
  dynamic power over those seconds (plus DRAM energy per re-read byte).

Accuracy is not a cost: the accelerator and the workers are bit-exact with the reference, so placement
never changes outputs (tests/test_scheduler_workers.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict

from scalenet.errors import HardwareLimitError
from scalenet.ir import Concat, Flatten, Graph
from scalenet.rtl.config import AcceleratorConfig

from . import power
from .accel_model import AccelModel, fused_producer, load_coefficients
from .costs import CostTable, LayerCost, ResourceSpec, Rewarm
from .cpu_model import get_cpu_model, layer_class, layer_work
from .targets import Target, get_target

__all__ = ["build_cost_table", "accel_model_for", "MODEL_VERSION"]

MODEL_VERSION = 3


def accel_model_for(target: Target, config: AcceleratorConfig | None = None) -> AccelModel:
    cfg = config or target.accel
    return AccelModel(cfg, clock_hz=target.accel_clock_hz, mem_bytes_per_s=target.accel_mem_bytes_per_s,
                      latency=target.accel_mem_latency_cycles)


def build_cost_table(graph: Graph, target="zedboard", *, config: AcceleratorConfig | None = None,
                     activity=None, threads: int | None = None, cpu_model=None) -> CostTable:
    """Costs of every layer of ``graph`` on the ``cpu`` and ``accel`` resources of ``target``.

    ``config`` overrides the target's array configuration, ``activity`` the accelerator's toggle rate
    (default :data:`.power.DEFAULT_ACTIVITY`; :func:`.power.activity_from_trace` turns a co-simulation
    trace into one), ``threads`` the number of software workers (default: all the target's cores),
    ``cpu_model`` a :class:`~.cpu_model.CpuModel` replacing the target's (e.g. one fitted in situ by
    :func:`~.cpu_model.fit_host_model`).
    """
    tgt = get_target(target)
    cfg = config or tgt.accel
    threads = tgt.cpu_cores if threads is None else threads
    cpu = cpu_model or get_cpu_model(tgt.cpu, tgt.cpu_clock_hz or None)
    cpu_p = power.cpu_power(tgt.cpu, tgt.cpu_clock_hz, threads)
    acc_model = accel_model_for(tgt, cfg)
    acc_p = power.accel_power(tgt.device, cfg, tgt.accel_clock_hz, activity=activity)
    j_per_byte = power.value("memory", tgt.memory)

    resources = {
        "cpu": ResourceSpec("cpu", "cpu", cpu_p["idle"], gateable=False),
        "accel": ResourceSpec("accel", "accel", acc_p["static"], gateable=tgt.accel_gateable),
    }
    layers = [l.name for l in graph.layers]
    producer = {l.output: l.name for l in graph.layers}
    preds = {l.name: [producer[i] for i in dict.fromkeys(l.inputs) if i in producer] for l in graph.layers}
    out_bytes = {l.name: int(math.prod(graph.tensors[l.output].shape)) for l in graph.layers}
    cost, unsupported, fused_pools, standalone = {}, {}, {}, {}

    def accel_cost(cycles, nbytes):
        t_acc = cycles / tgt.accel_clock_hz
        energy = acc_p["dynamic"] * t_acc + nbytes * j_per_byte
        return LayerCost(t_acc, energy, acc_p["static"] + (energy / t_acc if t_acc else 0.0))

    for layer in graph.layers:
        t_cpu = cpu.layer_seconds(graph, layer, threads)
        cost[(layer.name, "cpu")] = LayerCost(t_cpu, cpu_p["dynamic"] * t_cpu, cpu_p["total"])
        if isinstance(layer, (Flatten, Concat)):
            cost[(layer.name, "accel")] = LayerCost(0.0, 0.0, acc_p["static"])
            continue
        try:
            cost[(layer.name, "accel")] = accel_cost(*acc_model.layer_estimate(graph, layer))
            conv = fused_producer(graph, layer, cfg)
            if conv is not None:
                fused_pools[layer.name] = conv.name
                standalone[layer.name] = asdict(accel_cost(*acc_model.layer_estimate(graph, layer, fused=False)))
        except HardwareLimitError as e:
            unsupported[layer.name] = str(e)

    bandwidth, epb, latency = {}, {}, 0.0
    link = power.coefficients()["links"][tgt.link] if tgt.link is not None else {}
    if link:
        for pair in (("cpu", "accel"), ("accel", "cpu")):
            bandwidth[pair] = float(link["bandwidth_bps"])
            epb[pair] = float(link["j_per_byte"])
        latency = float(link["latency_s"])
    rewarm, rewarm_source = {}, "none (nothing evicts the CPU's caches at a hand-over)"
    if tgt.accel_on_cpu:
        rewarm_source = f"CPU model {cpu.name}: re-warm of the working set evicted by the simulated accelerator"
        for layer in graph.layers:
            rewarm[(layer.name, "cpu")] = tuple(Rewarm(t, cpu_p["dynamic"] * t, ws)
                                                for ws, t in cpu.rewarm_parts(layer_class(layer)))
    elif "refetch_bps" in link:
        rewarm_source = f"link {tgt.link}: the invalidated input re-read at {link['refetch_bps']:.3g} B/s"
        for layer in graph.layers:
            nbytes = sum(math.prod(graph.tensors[i].shape) for i in dict.fromkeys(layer.inputs))
            t = nbytes / float(link["refetch_bps"])
            rewarm[(layer.name, "cpu")] = Rewarm(t, cpu_p["dynamic"] * t + nbytes * j_per_byte, "handed-over input")
    coef_meta = load_coefficients.__module__
    return CostTable(
        graph_name=graph.name, layers=layers, preds=preds, resources=resources, cost=cost, out_bytes=out_bytes,
        in_bytes=int(math.prod(graph.input.shape)), host="cpu", bandwidth=bandwidth, energy_per_byte=epb,
        transfer_latency_s=latency, rewarm=rewarm,
        meta={
            "target": tgt.name, "description": tgt.description, "model_version": MODEL_VERSION,
            "accel_config": cfg.describe(), "accel_clock_hz": tgt.accel_clock_hz, "threads": threads,
            "activity": power.DEFAULT_ACTIVITY if activity is None else float(activity),
            "accel_power_w": acc_p, "cpu_power_w": cpu_p, "cpu_model": cpu.name, "cpu_model_source": cpu.source,
            "cpu_calibrated": cpu.calibrated, "accel_model": coef_meta,
            "layer_classes": {l.name: layer_class(l) for l in graph.layers},
            "layer_work": {l.name: layer_work(graph, l) for l in graph.layers},
            "unsupported": unsupported, "power_modelled": True,
            "accel_fused_pools": fused_pools, "accel_standalone": standalone, "rewarm_source": rewarm_source,
        })
