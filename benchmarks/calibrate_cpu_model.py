"""Fit the host's software latency model (scheduler/cpu_model.py) from micro-benchmarks of the workers.

For every layer class a few seeded layers of different sizes run on SoftwareWorkers with 1 and with N
threads (best of several repeats, one sample); ``seconds = overhead + work / rate`` is fitted on the
1-thread runs (least squares on relative error) and the parallel efficiency from the N-thread runs.
Writes scheduler/data/host_cpu.json and prints measured vs modelled times side by side.

    python benchmarks/calibrate_cpu_model.py [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from scalenet.ir import Add, AvgPool, Concat, Conv, Dense, GlobalAvgPool, Graph, MaxPool, Tensor
from scalenet.quant import QParams
from scalenet.scheduler.cpu_model import layer_class, layer_work
from scalenet.scheduler.workers import SoftwareWorkers

OUT = Path(__file__).resolve().parent.parent / "scheduler" / "data" / "host_cpu.json"


def _q(s):
    return QParams(np.float32(s), 0, "int8")


def _graph(layer, shapes, out_q=None):
    names = list(dict.fromkeys(layer.inputs))
    t = {n: Tensor(n, s, _q(0.05)) for n, s in zip(names, shapes)}
    oq = out_q or (t[names[0]].q if isinstance(layer, (MaxPool, Concat)) else _q(0.3))
    t[layer.output] = Tensor(layer.output, layer.out_shape([t[n].shape for n in layer.inputs]), oq)
    return Graph(layer.name, t, [layer], names, [layer.output])


def cases():
    rng = np.random.default_rng(0)

    def conv(cin, cout, hw, k, groups=1, stride=1):
        w = rng.integers(-127, 128, (cout, cin // groups, k, k)).astype(np.int8)
        layer = Conv(name=f"conv{cin}x{cout}@{hw}k{k}g{groups}", inputs=["x"], output="y", weight=w, w_q=_q(0.01),
                     stride=(stride, stride), pads=(k // 2,) * 4, groups=groups)
        return _graph(layer, [(cin, hw, hw)])

    def dense(fin, fout):
        layer = Dense(name=f"fc{fin}x{fout}", inputs=["x"], output="y",
                      weight=rng.integers(-127, 128, (fout, fin)).astype(np.int8), w_q=_q(0.01))
        return _graph(layer, [(fin,)])

    out = [conv(16, 16, 16, 3), conv(32, 64, 28, 3), conv(64, 64, 56, 3), conv(128, 128, 14, 3), conv(64, 128, 28, 1),
           conv(3, 32, 112, 3, stride=2),
           conv(32, 32, 56, 3, groups=32), conv(64, 64, 28, 3, groups=64), conv(128, 128, 14, 3, groups=128),
           conv(16, 16, 112, 3, groups=16),
           dense(256, 10), dense(1024, 256), dense(4096, 1000), dense(512, 512)]
    for c, hw in ((16, 32), (64, 56), (128, 28), (32, 112)):
        out.append(_graph(MaxPool(name=f"mp{c}@{hw}", inputs=["x"], output="y", kernel=(2, 2), stride=(2, 2)),
                          [(c, hw, hw)]))
    out.append(_graph(AvgPool(name="ap64@28", inputs=["x"], output="y", kernel=(3, 3), stride=(1, 1), pads=(1,) * 4),
                      [(64, 28, 28)]))
    out.append(_graph(GlobalAvgPool(name="gap256@14", inputs=["x"], output="y"), [(256, 14, 14)]))
    for c, hw in ((16, 32), (64, 56), (128, 28), (32, 112)):
        out.append(_graph(Add(name=f"add{c}@{hw}", inputs=["x", "x2"], output="y"), [(c, hw, hw)] * 2))
    for c, hw in ((32, 28), (128, 56)):
        out.append(_graph(Concat(name=f"cat{c}@{hw}", inputs=["x", "x2"], output="y"), [(c, hw, hw)] * 2))
    return out


def time_layer(workers, graph, repeats):
    layer = graph.layers[0]
    rng = np.random.default_rng(1)
    xs = [rng.integers(-128, 128, (1, *graph.tensors[n].shape)).astype(np.int8) for n in layer.inputs]
    workers.run_layer(graph, layer, xs)                 # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        workers.run_layer(graph, layer, xs)
        best = min(best, time.perf_counter() - t0)
    return best


def fit_class(points):
    """(overhead, rate) from [(work, seconds)] by least squares on relative error, both kept positive."""
    w = np.array([p[0] for p in points], float)
    t = np.array([p[1] for p in points], float)
    a = np.stack([1 / t, w / t], axis=1)
    (overhead, inv_rate), *_ = np.linalg.lstsq(a, np.ones_like(t), rcond=None)
    if inv_rate <= 0:
        inv_rate = float(np.median(t / np.maximum(w, 1)))
    overhead = max(float(overhead), 0.0)
    return overhead, 1.0 / inv_rate


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dry-run", action="store_true", help="do not write the JSON file")
    args = ap.parse_args(argv)
    graphs = cases()
    one, many = {}, {}
    with SoftwareWorkers(1) as w1, SoftwareWorkers(args.threads) as wn:
        for g in graphs:
            one[g.name] = time_layer(w1, g, args.repeats)
            many[g.name] = time_layer(wn, g, args.repeats)
    by_class = {}
    for g in graphs:
        layer = g.layers[0]
        by_class.setdefault(layer_class(layer), []).append((g, layer_work(g, layer)))
    kinds = {}
    for cls, items in by_class.items():
        overhead, rate = fit_class([(work, one[g.name]) for g, work in items])
        # Efficiency of each extra thread: the speed-up on the larger layers, (speedup - 1) / (threads - 1).
        effs = []
        for g, work in items:
            if args.threads > 1 and one[g.name] > 20 * overhead:
                speedup = (one[g.name] - overhead) / max(many[g.name] - overhead, 1e-9)
                effs.append((speedup - 1) / (args.threads - 1))
        eff = float(np.clip(np.median(effs), 0.0, 1.0)) if effs else 0.0
        kinds[cls] = {"overhead_s": overhead, "rate": rate, "efficiency": eff}
    from scalenet.scheduler.cpu_model import CpuModel, KindRate
    model = CpuModel("host", {k: KindRate(**v) for k, v in kinds.items()})
    print(f"{'layer':22s} {'class':10s} {'work':>12s} {'1 thr ms':>9s} {'model':>9s} {f'{args.threads} thr ms':>9s} {'model':>9s}")
    worst = 0.0
    for g in graphs:
        layer = g.layers[0]
        cls, work = layer_class(layer), layer_work(g, layer)
        m1, mn = model.seconds(cls, work, 1), model.seconds(cls, work, args.threads)
        worst = max(worst, abs(m1 - one[g.name]) / one[g.name])
        print(f"{g.name:22s} {cls:10s} {work:12d} {1e3 * one[g.name]:9.3f} {1e3 * m1:9.3f} {1e3 * many[g.name]:9.3f} {1e3 * mn:9.3f}")
    print(f"max |error| of the 1-thread fit: {100 * worst:.0f} %")
    if not args.dry_run:
        OUT.write_text(json.dumps({
            "source": f"benchmarks/calibrate_cpu_model.py on {platform.processor() or platform.machine()} "
                      f"({platform.node()}), SoftwareWorkers, best of {args.repeats}, 1 and {args.threads} threads",
            "cpu": _cpu_name(), "threads_measured": args.threads, "max_error_1thread": round(worst, 3),
            "kinds": kinds,
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
