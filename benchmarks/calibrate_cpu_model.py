"""Fit the host's software latency model (scheduler/cpu_model.py) from micro-benchmarks of the workers.

The one-thread model (per layer class: overhead + work/rate + per-element, im2col, weight-byte and
per-pass terms) is fitted by :func:`scalenet.scheduler.cpu_model.fit_host_model` on
:func:`~scalenet.scheduler.cpu_model.benchmark_layers` ("full": small and larger layers, none from a
network), timed by the thread's CPU time, layers run in rounds, median of ``--repeats``. The parallel efficiency per class comes
from the layers large enough to be split (:func:`~scalenet.scheduler.cpu_model.parallel_ways`), run on
``--threads`` workers and timed by wall clock (the other threads' CPU time is not the caller's). The zoo's digits CNN and LeNet-5 layers are then predicted and measured side by side
(held out: never fitted). Writes scheduler/data/host_cpu.json unless ``--dry-run``; on a machine whose
load changes under the run the fit is only as good as the report says (see ``max_error_*``).
With ``--simulator`` the hand-over cost (``rewarm_s`` per class: what the first layer of a working set pays
after the simulated accelerator evicted it) is measured too, one small layer run on the compiled RTL
simulator before each timed layer (:func:`~scalenet.scheduler.cpu_model.accelerator_evictor`; ~50 ms each).

    python benchmarks/calibrate_cpu_model.py [--threads 2] [--repeats 9] [--simulator] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from scalenet import zoo
from scalenet.scheduler.cpu_model import (CpuModel, KindRate, accelerator_evictor, benchmark_layers, fit_host_model,
                                          layer_class, layer_features, parallel_ways, time_layer)
from scalenet.scheduler.workers import SoftwareWorkers

OUT = Path(__file__).resolve().parent.parent / "scheduler" / "data" / "host_cpu.json"


def network_layers(names=("digits_cnn", "lenet5")):
    """(network/layer name, graph, layer, batched inputs) of every layer of the held-out networks."""
    out = []
    for name in names:
        g = zoo.build(name)
        x = np.random.default_rng(0).integers(g.input.q.dtype.lo, g.input.q.dtype.hi + 1, (1, *g.input.shape))
        values = g.run(x.astype(g.input.q.dtype.np_dtype), keep=True)
        out += [(f"{name}/{l.name}", g, l, [values[i] for i in l.inputs]) for l in g.layers]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--simulator", action="store_true",
                    help="also measure the re-warm cost after the simulated accelerator (needs the CXXRTL model)")
    ap.add_argument("--dry-run", action="store_true", help="do not write the JSON file")
    args = ap.parse_args(argv)
    t0 = time.time()
    sim = None
    if args.simulator:
        from scalenet.driver.accelerator import open_target
        sim = open_target("sim")
    with SoftwareWorkers(1) as w1:
        model = fit_host_model(w1, size="full", repeats=args.repeats,
                               evict=accelerator_evictor(sim) if sim is not None else None)
        if sim is not None:
            sim.close()
        effs = {}
        if args.threads > 1:
            with SoftwareWorkers(args.threads) as wn:
                for g in benchmark_layers("full"):
                    layer = g.layers[0]
                    cls, f = layer_class(layer), layer_features(g, layer)
                    if parallel_ways(cls, f["work"], args.threads) == 1:
                        continue
                    one = time_layer(w1, g, args.repeats, time.perf_counter)
                    many = time_layer(wn, g, args.repeats, time.perf_counter)
                    overhead = model.kinds[cls].overhead_s
                    speedup = (one - overhead) / max(many - overhead, 1e-9)
                    effs.setdefault(cls, []).append((speedup - 1) / (args.threads - 1))
        kinds = {c: KindRate(k.overhead_s, k.rate, float(np.clip(np.median(effs[c]), 0, 1)) if c in effs
                             else k.efficiency, k.element_s, k.patch_s, k.weight_s, k.pass_s)
                 for c, k in model.kinds.items()}
        model = CpuModel("host", kinds, model.source, True, model.meta, model.rewarm_s)
        print(f"fitted in {time.time() - t0:.1f} s; parallel efficiency measured for {sorted(effs)}")
        print(f"{'layer':26s} {'class':9s} {'measured us':>11s} {'model us':>9s} {'error':>7s}")
        fit_err = 0.0
        for name, cls, f, t in model.meta["points"]:
            m = model.seconds(cls, threads=1, **f)
            fit_err = max(fit_err, abs(m / t - 1))
            print(f"{name:26s} {cls:9s} {1e6 * t:11.1f} {1e6 * m:9.1f} {100 * (m / t - 1):+6.1f}%")
        held_err = 0.0
        layers = network_layers()
        runs = [[] for _ in layers]
        for _ in range(args.repeats + 1):          # in rounds, as time_layers: the first round warms up
            for i, (_, g, layer, xs) in enumerate(layers):
                t0 = time.thread_time()
                w1.run_layer(g, layer, xs)
                runs[i].append(time.thread_time() - t0)
        for (name, g, layer, xs), ts in zip(layers, runs):
            t = float(np.median(ts[1:]))
            m = model.layer_seconds(g, layer, 1)
            held_err = max(held_err, abs(m / t - 1))
            print(f"{name:26s} {layer_class(layer):9s} {1e6 * t:11.1f} {1e6 * m:9.1f} {100 * (m / t - 1):+6.1f}%  held out")
    print(f"max |error|: fitted layers {100 * fit_err:.0f} %, held-out network layers {100 * held_err:.0f} %")
    print(f"{'class':9s} {'overhead us':>11s} {'rate/s':>9s} {'eff':>5s} {'elem ns':>8s} {'im2col ns':>9s} "
          f"{'weight ns':>9s} {'pass ns':>8s}")
    for c, k in model.kinds.items():
        print(f"{c:9s} {1e6 * k.overhead_s:11.1f} {k.rate:9.3g} {k.efficiency:5.2f} {1e9 * k.element_s:8.2f} "
              f"{1e9 * k.patch_s:9.2f} {1e9 * k.weight_s:9.3f} {1e9 * k.pass_s:8.1f}")
    measured = model.meta.get("rewarm_measured", [])
    print("re-warm after the simulator (us): " + ", ".join(
        f"{c} {1e6 * v:.0f}{'' if c in measured else ' (default)'}" for c, v in model.rewarm_s.items()))
    if not args.dry_run:
        OUT.write_text(json.dumps({
            "source": f"benchmarks/calibrate_cpu_model.py on {_cpu_name()} ({platform.node()}, load "
                      f"{os.getloadavg()[0]:.1f}): SoftwareWorkers, thread CPU time, layers in rounds, median of {args.repeats}; "
                      f"parallel efficiency from {args.threads} threads (wall clock)",
            "cpu": _cpu_name(), "threads_measured": args.threads,
            "max_error_fitted": round(fit_err, 3), "max_error_held_out": round(held_err, 3),
            "kinds": {c: {"overhead_s": k.overhead_s, "rate": min(k.rate, 1e15), "efficiency": k.efficiency,
                          "element_s": k.element_s, "patch_s": k.patch_s, "weight_s": k.weight_s, "pass_s": k.pass_s}
                      for c, k in model.kinds.items()},
            **({"rewarm_s": {c: model.rewarm_s[c] for c in measured}} if measured else {}),
        }, indent=2) + "\n")
        print(f"wrote {OUT}")


def _cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
