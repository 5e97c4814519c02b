"""Predicted vs measured frame latency of mixed placements: simulated accelerator + software workers.

The host CPU model is fitted in situ (micro-benchmarks, none a network layer) with its hand-over cost
(re-warm after the simulator, :func:`~scalenet.scheduler.cpu_model.accelerator_evictor`); each placement
of the digits CNN and LeNet-5 then runs frames one after the other on the compiled RTL simulator and one
software worker (thread CPU time), and the median frame is set against the prediction with and without the
hand-over term, side by side. Per layer: the modelled re-warm charged and the measured excess over the
warm model.

The frames are measured side by side with the fit: a few frames of every placement between two rounds of
the fit's micro-benchmarks (:func:`measure_side_by_side`). On this shared machine the load drifts by tens of
percent within a minute; fitted first and measured afterwards, the two could see different machines.

    python benchmarks/mixed_frames.py [--rounds 7] [--per-round 3] [--placements ours,AACC,CCAA,CAC,ACAC,CACA] [--layers]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, replace

import numpy as np

from scalenet import zoo
from scalenet.driver.accelerator import open_target
from scalenet.scheduler import schedule as S
from scalenet.scheduler.cpu_model import CpuModel, accelerator_evictor, fit_host_model
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


@dataclass
class Measured:
    """One placement's frames against its prediction (both from the fit measured side by side)."""
    network: str
    name: str                  # the placement's name (``ours``, ``AACC``, a pattern)
    runtime: Runtime           # built on the in-situ cost table: ``.placement`` executed, ``.predicted``
    layer_seconds: list        # per measured frame (rounds x per_round of them; one if accelerator only)
    measured_s: float          # median measured frame latency
    bare_s: float              # the prediction without the hand-over term

    @property
    def predicted_s(self) -> float:
        return self.runtime.predicted.latency_s

    @property
    def error(self) -> float:
        return self.measured_s / self.predicted_s - 1


def measure_side_by_side(sim, networks=("digits_cnn", "lenet5"), placements=("ours", "AACC", "CCAA", "CAC"),
                         rounds=7, per_round=3, rewarm_classes=None) -> tuple[CpuModel, list[Measured]]:
    """Fit the host model (:func:`fit_host_model` with the simulator's eviction, ``rounds`` rounds) and time
    ``per_round`` frames of every (network, placement) before each of its rounds, on the simulated
    accelerator and one software worker timed by thread CPU time, frames one after the other (a placement
    without software layers: one frame, its cycles do not vary). Placements are chosen on the
    stored host model (``ours``: the latency-optimal schedule under the all-software deadline); the
    predictions use the model fitted in the same minute as the frames.

    The median of all ``rounds x per_round`` frames is set against the model (medians over the rounds).
    Single frames scatter by 10-25 % on this shared host; three a round instead of one cut the run-to-run
    scatter of a placement's error by about a quarter (six runs: standard deviation 1.5-6 % against
    2-7.5 %). Pairing each round's frames with a fit of that round alone (the median of per-round ratios)
    scattered no less."""
    graphs = {n: zoo.build(n) for n in networks}
    stored = {n: build_cost_table(g, "host", threads=1) for n, g in graphs.items()}
    cases = [(n, p, placement(stored[n], p)) for n in networks for p in placements]
    inputs = {}
    for n, g in graphs.items():
        t = g.input
        x = np.random.default_rng(1).integers(t.q.dtype.lo, t.q.dtype.hi + 1, (rounds + 1, *t.shape))
        inputs[n] = x.astype(t.q.dtype.np_dtype)
    times = {(n, p): [] for n, p, _ in cases}
    frame = [0]

    def run_frames(keep=True):
        f = frame[0]
        for n, p, s in cases:
            software = "cpu" in s.placement.values()
            if not software and times[(n, p)]:
                continue                # accelerator only: cycle counts, the same every frame
            timed = per_round if software else 1
            # one runtime at a time: each loads its accelerator segments at the same device address
            with Runtime(s, graphs[n], sim, w, software_clock="thread") as rt:
                # the first frame brings the layers to their steady state (each frame's first layer follows
                # the previous frame's last one), the ``timed`` after it are timed
                res = rt.run(np.repeat(inputs[n][f:f + 1], timed + 1, axis=0), pipeline=False)
            if keep or not software:
                times[(n, p)] += res.layer_seconds[1:]
        frame[0] += 1

    with SoftwareWorkers(1) as w:
        run_frames(keep=False)          # builds the kernels' sessions
        model = fit_host_model(w, repeats=rounds, evict=accelerator_evictor(sim), rewarm_classes=rewarm_classes,
                               each_round=run_frames)
        results = []
        for n, p, s in cases:
            table = build_cost_table(graphs[n], "host", threads=1, cpu_model=model)
            rt = Runtime(S.evaluate(table, dict(s.placement), 1.0), graphs[n], sim, w, software_clock="thread")
            rt.close()                  # built for its prediction and timing model, not run
            measured = statistics.median(rt.measured_schedule(t).latency_s for t in times[(n, p)])
            bare = S.evaluate(replace(rt.table, rewarm={}), rt.placement, 1.0).latency_s
            results.append(Measured(n, p, rt, times[(n, p)], measured, bare))
    return model, results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7, help="rounds of the fit, each with frames of every placement")
    ap.add_argument("--per-round", type=int, default=3, help="measured frames of each placement per round")
    ap.add_argument("--placements", default="ours,AACC,CCAA,CAC,ACAC,CACA")
    ap.add_argument("--layers", action="store_true", help="per-layer detail")
    args = ap.parse_args(argv)
    sim = open_target("sim")
    t0 = time.time()
    model, results = measure_side_by_side(sim, placements=args.placements.split(","), rounds=args.rounds,
                                          per_round=args.per_round)
    sim.close()
    print(f"fit and frames measured side by side in {time.time() - t0:.1f} s; re-warm (us): "
          + ", ".join(f"{c} {1e6 * v:.0f}" for c, v in model.rewarm_s.items()))
    print(f"\n{'network':11s} {'placement':9s} {'executed':9s} {'predicted us':>12s} {'no hand-over us':>15s} "
          f"{'measured us':>11s} {'error':>7s} {'error w/o':>9s}")
    for r in results:
        rt, layers = r.runtime, list(r.runtime.table.layers)
        executed = "".join("A" if rt.placement[l] == "accel" else "C" for l in layers)
        print(f"{r.network:11s} {r.name:9s} {executed:9s} {1e6 * r.predicted_s:12.0f} {1e6 * r.bare_s:15.0f} "
              f"{1e6 * r.measured_s:11.0f} {100 * r.error:+6.1f}% {100 * (r.measured_s / r.bare_s - 1):+8.1f}%")
        if args.layers:
            for l in layers:
                if rt.placement[l] == "cpu":
                    med = statistics.median(f[l] for f in r.layer_seconds)
                    warm = rt.table.cost[(l, "cpu")].latency_s
                    print(f"    {l:8s} warm {1e6 * warm:6.0f}  re-warm charged {1e6 * rt.predicted.rewarm_s.get(l, 0):5.0f}"
                          f"  measured {1e6 * med:6.0f} (excess {1e6 * (med - warm):+5.0f})")
    print(f"\nworst |error| with the hand-over term: {100 * max(abs(r.error) for r in results):.1f} %")


if __name__ == "__main__":
    main()
