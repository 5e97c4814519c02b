"""Scheduler speed and quality, measured side by side in one run.

1. Time to schedule every zoo network on a target (median of repeats; cost table built beforehand).
2. The chain DP against brute force on random chains (must be equal on every one).
3. The HEFT-style list scheduler against brute force on small random DAGs: how often equal, the gap.

2 and 3 run on the same random tables without and with hand-over (re-warm) costs, side by side.

    python benchmarks/schedule_speed.py [--target zedboard] [--repeats 7] [--cases 200]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import numpy as np

from scalenet import zoo
from scalenet.scheduler import schedule as S
from scalenet.scheduler.costs import random_table
from scalenet.scheduler.metrics import build_cost_table


WEIGHTS = [None, {"latency": 1}, {"energy": 1}, {"latency": 0.3, "power": 1, "energy": 0.5}]
PERIOD = 100.0


def _brute(table, cases):
    prob = S._Problem(table)
    scored = [(*prob.latency_energy(p), prob.idle_power(set(p))) for p in itertools.product(*prob.allowed)]
    fastest = min(s[0] for s in scored)
    out = []
    for d, w in cases:
        obj = S._Objective(prob, d, PERIOD, w)
        feasible = [obj.cost(L, D, idle) for L, D, idle in scored if L <= d]
        out.append(min(feasible) if feasible else None)
    return fastest, out


def _deadlines(table, fastest):
    sw = S.evaluate(table, S.baseline_placement(table, "all-software"), 1e9, period_s=PERIOD).latency_s
    return [fastest, (fastest + sw) / 2, 2 * sw]


def zoo_speed(target, repeats):
    print(f"## Scheduling time per zoo network ({target}; deadline = 1.5 x the fastest schedule; "
          f"median of {repeats})\n")
    print("| network | layers | method | time (ms) |\n|---|---:|---|---:|")
    worst = 0.0
    for name in zoo.PAPER_NETWORKS + ("digits_cnn",):
        table = build_cost_table(zoo.build(name), target)
        fastest = S.schedule(table, 1e3, {"latency": 1}).latency_s
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            s = S.schedule(table, 1.5 * fastest)
            times.append(time.perf_counter() - t0)
        ms = statistics.median(times) * 1e3
        worst = max(worst, ms)
        print(f"| {name} | {len(table.layers)} | {s.method} | {ms:.2f} |")
    print(f"\nslowest: {worst:.1f} ms (goal < 100 ms)\n")


def _with(rewarm):
    return "with hand-over costs" if rewarm else "without hand-over costs"


def chain_exactness(cases, rewarm=False):
    equal = total = 0
    for seed in range(cases):
        n, k = (12, 2) if seed % 3 == 0 else (8, 3) if seed % 3 == 1 else (5 + seed % 5, 2)
        t = random_table(seed, n=n, k=k, unsupported=0.2, rewarm=rewarm)
        fastest, _ = _brute(t, [])
        cs = [(d, w) for w in WEIGHTS for d in _deadlines(t, fastest)]
        for (d, w), best in zip(cs, _brute(t, cs)[1]):
            dp = S.schedule_chain(t, d, w, period_s=PERIOD)
            total += 1
            equal += (best is None and not dp.feasible) or (best is not None and dp.feasible
                                                             and dp.cost <= best * (1 + 1e-12))
    print(f"## Chain DP vs brute force ({_with(rewarm)})\n\n{equal} of {total} cases equal ({cases} random chains "
          "of 5-12 layers on 2-3 resources, 4 weightings x 3 deadlines)\n")


def heft_gap(cases, rewarm=False):
    gaps, missed, missed_tight, tight_cases, total = [], 0, 0, 0, 0
    for seed in range(cases):
        t = random_table(seed, n=3 + seed % 8, dag=True, rewarm=rewarm)
        fastest, _ = _brute(t, [])
        cs = [(d, w) for w in WEIGHTS for d in _deadlines(t, fastest)]
        for (d, w), best in zip(cs, _brute(t, cs)[1]):
            h = S.schedule_dag(t, d, w, period_s=PERIOD)
            total += 1
            tight_cases += d == fastest
            if best is None:
                continue
            if not h.feasible:
                missed += 1
                missed_tight += d == fastest
                continue
            gaps.append(h.cost / best - 1)
    g = np.array(gaps)
    print(f"## HEFT-style list scheduler vs brute force ({_with(rewarm)})\n\n{total} cases ({cases} random DAGs "
          "of 3-10 layers, "
          f"4 weightings x 3 deadlines, the tightest = the optimum latency):\n")
    print(f"- feasible placement missed: {missed} ({missed_tight} of them at the tightest deadline, of "
          f"{tight_cases} such cases)")
    print(f"- equal to brute force: {(g <= 1e-12).mean() * 100:.1f} % of {len(g)} feasible cases")
    print(f"- cost gap: mean {g.mean() * 100:.2f} %, 95th percentile {np.percentile(g, 95) * 100:.2f} %, "
          f"max {g.max() * 100:.1f} %\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", default="zedboard")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--cases", type=int, default=200)
    args = ap.parse_args()
    zoo_speed(args.target, args.repeats)
    for rewarm in (False, True):
        chain_exactness(args.cases // 2, rewarm)
    for rewarm in (False, True):
        heft_gap(args.cases, rewarm)


if __name__ == "__main__":
    main()
