"""Predicted vs measured frame latency of mixed placements: simulated accelerator + software workers.

The host CPU model is fitted in situ (micro-benchmarks, none a network layer) with its hand-over cost
(re-warm after the simulator, :func:`~scalenet.scheduler.cpu_model.accelerator_evictor`); each placement
of the digits CNN and LeNet-5 then runs frames one after the other on the compiled RTL simulator and one
software worker (thread CPU time), and the median frame is set against the prediction with and without the
hand-over term, side by side. Per layer: the modelled re-warm charged and the measured excess over the
warm model.

    python benchmarks/mixed_frames.py [--frames 7] [--placements ours,AACC,CCAA,CAC,ACAC,CACA] [--layers]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import numpy as np

from scalenet import zoo
from scalenet.driver.accelerator import open_target
from scalenet.scheduler import schedule as S
from scalenet.scheduler.cpu_model import accelerator_evictor, fit_host_model
from scalenet.scheduler.metrics import build_cost_table
from scalenet.scheduler.runtime import Runtime
from scalenet.scheduler.workers import SoftwareWorkers


def placement(table, name):
    n = len(table.layers)
    if name == "ours":
        sw = S.evaluate(table, S.baseline_placement(table, "all-software"), 1.0)
        return S.schedule(table, sw.latency_s, {"latency": 1})
    if name in ("AACC", "CCAA"):
        name = "A" * (n // 2) + "C" * n if name == "AACC" else "C" * (n // 2) + "A" * n
    pattern = (name * n)[:n]
    return S.evaluate(table, {l: ("accel" if c == "A" else "cpu") for l, c in zip(table.layers, pattern)}, 1.0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=7, help="measured frames (after one warm-up frame)")
    ap.add_argument("--placements", default="ours,AACC,CCAA,CAC,ACAC,CACA")
    ap.add_argument("--layers", action="store_true", help="per-layer detail")
    args = ap.parse_args(argv)
    sim = open_target("sim")
    t0 = time.time()
    with SoftwareWorkers(1) as w:
        model = fit_host_model(w, evict=accelerator_evictor(sim))
    print(f"host model fitted in {time.time() - t0:.1f} s; re-warm (us): "
          + ", ".join(f"{c} {1e6 * v:.0f}" for c, v in model.rewarm_s.items()))
    print(f"\n{'network':11s} {'placement':9s} {'executed':9s} {'predicted us':>12s} {'no hand-over us':>15s} "
          f"{'measured us':>11s} {'error':>7s} {'error w/o':>9s}")
    worst = 0.0
    for name in ("digits_cnn", "lenet5"):
        g = zoo.build(name)
        table = build_cost_table(g, "host", threads=1, cpu_model=model)
        for pname in args.placements.split(","):
            s = placement(table, pname)
            with SoftwareWorkers(1) as w, Runtime(s, g, sim, w, software_clock="thread") as rt:
                t = g.input
                x = np.random.default_rng(1).integers(t.q.dtype.lo, t.q.dtype.hi + 1, (args.frames + 1, *t.shape))
                res = rt.run(x.astype(t.q.dtype.np_dtype), pipeline=False)
            measured = statistics.median(res.measured_latency_s[1:])
            predicted = res.predicted_latency_s
            bare = S.evaluate(replace(rt.table, rewarm={}), rt.placement, 1.0).latency_s
            err, err0 = measured / predicted - 1, measured / bare - 1
            worst = max(worst, abs(err))
            executed = "".join("A" if rt.placement[l] == "accel" else "C" for l in table.layers)
            print(f"{name:11s} {pname:9s} {executed:9s} {1e6 * predicted:12.0f} {1e6 * bare:15.0f} "
                  f"{1e6 * measured:11.0f} {100 * err:+6.1f}% {100 * err0:+8.1f}%")
            if args.layers:
                med = {l: statistics.median(f[l] for f in res.layer_seconds[1:]) for l in table.layers}
                for l in table.layers:
                    if rt.placement[l] == "cpu":
                        warm = table.cost[(l, "cpu")].latency_s
                        print(f"    {l:8s} warm {1e6 * warm:6.0f}  re-warm charged {1e6 * rt.predicted.rewarm_s.get(l, 0):5.0f}"
                              f"  measured {1e6 * med[l]:6.0f} (excess {1e6 * (med[l] - warm):+5.0f})")
    sim.close()
    print(f"\nworst |error| with the hand-over term: {100 * worst:.1f} %")


if __name__ == "__main__":
    main()
