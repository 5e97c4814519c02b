"""Fit the accelerator cycle model (scheduler/accel_model.py) to co-simulation cycle counts.

Each layer of a fixed, seeded set runs alone (one descriptor; a Conv -> MaxPool pair fused into one)
through the driver on the RTL in the compiled simulator; PERF_CYCLES after the run is that descriptor's
cycle count. The free coefficients of each opcode
class are fitted by least squares on the *relative* error, on the FIT layers only; the HELD_OUT layers
(never fitted) report the model's error, and tests/test_accel_model.py re-checks a few of them.

    python benchmarks/calibrate_accel_model.py            # runs, fits, writes scheduler/data/accel_cycles.json
    python benchmarks/calibrate_accel_model.py --check    # only compares the stored model with the simulator
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from scalenet.ir import Add, AvgPool, Conv, Dense, GlobalAvgPool, Graph, MaxPool, Tensor
from scalenet.quant import QParams
from scalenet.rtl.config import AcceleratorConfig

CONFIG = AcceleratorConfig(rows=4, cols=4, max_width=32, max_channels=512, line_buffer_bytes=8192,
                           weight_buffer_bytes=64 * 1024)
"""tests/test_top.py's configuration (its compiled model is usually in the cache already)."""
LATENCY = 8
OUT = Path(__file__).resolve().parent.parent / "scheduler" / "data" / "accel_cycles.json"


def _q(scale, dtype="int8", zp=0):
    return QParams(np.float32(scale), zp, dtype)


def conv_graph(name, cin, cout, h, w, k=3, stride=1, pad=None, groups=1, seed=0, one_d=False):
    rng = np.random.default_rng(seed)
    pad = k // 2 if pad is None else pad
    if one_d:
        wt = rng.integers(-127, 128, (cout, cin // groups, k)).astype(np.int8)
        layer = Conv(name=name, inputs=["x"], output="y", weight=wt, w_q=_q(0.01), stride=(stride,),
                     dilation=(1,), pads=(pad, pad), groups=groups, lo=0)
        shape = (cin, w)
    else:
        wt = rng.integers(-127, 128, (cout, cin // groups, k, k)).astype(np.int8)
        layer = Conv(name=name, inputs=["x"], output="y", weight=wt, w_q=_q(0.01), stride=(stride, stride),
                     pads=(pad,) * 4, groups=groups, lo=0)
        shape = (cin, h, w)
    out = layer.out_shape([shape])
    return Graph(name, {"x": Tensor("x", shape, _q(0.05)), "y": Tensor("y", out, _q(0.5))}, [layer], ["x"], ["y"])


def dense_graph(name, fin, fout, seed=0):
    rng = np.random.default_rng(seed)
    layer = Dense(name=name, inputs=["x"], output="y", weight=rng.integers(-127, 128, (fout, fin)).astype(np.int8),
                  w_q=_q(0.01))
    return Graph(name, {"x": Tensor("x", (fin,), _q(0.05)), "y": Tensor("y", (fout,), _q(0.5))}, [layer],
                 ["x"], ["y"])


def pool_graph(name, c, h, w, k=2, stride=2, pad=0, kind="max"):
    if kind == "gap":
        layer = GlobalAvgPool(name=name, inputs=["x"], output="y")
        q_out = _q(0.04)
    elif kind == "max":
        layer = MaxPool(name=name, inputs=["x"], output="y", kernel=(k, k), stride=(stride, stride), pads=(pad,) * 4)
        q_out = _q(0.05)
    else:
        layer = AvgPool(name=name, inputs=["x"], output="y", kernel=(k, k), stride=(stride, stride), pads=(pad,) * 4)
        q_out = _q(0.04)
    out = layer.out_shape([(c, h, w)])
    return Graph(name, {"x": Tensor("x", (c, h, w), _q(0.05)), "y": Tensor("y", out, q_out)}, [layer], ["x"], ["y"])


def conv_pool_graph(name, cin, cout, h, w, k=3, pool=2, ceil=False, seed=0):
    """Conv -> MaxPool ``pool``x``pool``/2: the compiler fuses them into one descriptor (``pool_after``)."""
    g = conv_graph(name, cin, cout, h, w, k=k, seed=seed)
    conv = g.layers[0]
    mp = MaxPool(name=f"{name}_pool", inputs=["y"], output="z", kernel=(pool, pool), stride=(2, 2), ceil_mode=ceil)
    t = dict(g.tensors)
    t["z"] = Tensor("z", mp.out_shape([t["y"].shape]), t["y"].q)
    return Graph(name, t, [conv, mp], ["x"], ["z"])


def add_graph(name, c, h, w):
    layer = Add(name=name, inputs=["a", "b"], output="y")
    t = {"a": Tensor("a", (c, h, w), _q(0.05)), "b": Tensor("b", (c, h, w), _q(0.07)),
         "y": Tensor("y", (c, h, w), _q(0.1))}
    return Graph(name, t, [layer], ["a", "b"], ["y"])


def fit_layers():
    return [
        conv_graph("c3_8_8_12", 8, 8, 12, 12), conv_graph("c3_3_8_16", 3, 8, 16, 16, seed=1),
        conv_graph("c1_16_8_8", 16, 8, 8, 8, k=1), conv_graph("c3s2_8_16_16", 8, 16, 16, 16, stride=2, seed=2),
        conv_graph("c5_4_4_10", 4, 4, 10, 10, k=5, seed=3), conv_graph("dw3_16_10", 16, 16, 10, 10, groups=16, seed=4),
        conv_graph("c1_32_4_6", 32, 4, 6, 6, k=1, seed=5), conv_graph("c3_8_32_6", 8, 32, 6, 6, seed=6),
        conv_graph("c1d5_8_8_32", 8, 8, 1, 32, k=5, seed=7, one_d=True),
        dense_graph("fc_64_10", 64, 10), dense_graph("fc_200_32", 200, 32, seed=1), dense_graph("fc_16_64", 16, 64, seed=2),
        pool_graph("mp2_8_16", 8, 16, 16), pool_graph("mp3s2_4_15", 4, 15, 15, k=3, stride=2, pad=1),
        pool_graph("ap2_8_12", 8, 12, 12, kind="avg"), pool_graph("mp2_16_8", 16, 8, 8),
        pool_graph("gap_16_8", 16, 8, 8, kind="gap"), pool_graph("gap_32_4", 32, 4, 4, kind="gap"),
        add_graph("add_8_8", 8, 8, 8), add_graph("add_16_12", 16, 12, 12), add_graph("add_4_6", 4, 6, 6),
        conv_pool_graph("cmp2_8_8_12", 8, 8, 12, 12, seed=20), conv_pool_graph("cmp3_8_4_14", 8, 4, 14, 14, pool=3, seed=21),
        conv_pool_graph("cmp2c_4_8_15", 4, 8, 15, 15, ceil=True, seed=22),
    ]


def held_out_layers():
    """Never fitted: different sizes, kernels, strides and channel counts."""
    return [
        conv_graph("h_c3_12_12_10", 12, 12, 10, 10, seed=11), conv_graph("h_c1_24_16_6", 24, 16, 6, 6, k=1, seed=12),
        conv_graph("h_dw3s2_8_14", 8, 8, 14, 14, stride=2, groups=8, seed=13),
        conv_graph("h_c5s2_6_8_12", 6, 8, 12, 12, k=5, stride=2, seed=14),
        dense_graph("h_fc_96_20", 96, 20, seed=15),
        pool_graph("h_mp2_12_10", 12, 10, 10), pool_graph("h_ap3_6_9", 6, 9, 9, k=3, stride=1, pad=1, kind="avg"),
        pool_graph("h_gap_24_6", 24, 6, 6, kind="gap"), add_graph("h_add_12_10", 12, 10, 10),
        conv_pool_graph("h_cmp2_3_8_16", 3, 8, 16, 16, seed=23), conv_pool_graph("h_cmp2_16_8_8", 16, 8, 8, 8, k=1, seed=24),
    ]


def open_sim(config=CONFIG, latency=LATENCY):
    from scalenet.cosim.platform import SimTransport
    from scalenet.driver.accelerator import Accelerator
    return Accelerator(SimTransport(config=config, mem_size=1 << 20, latency=latency, stall=0.0), config=config,
                       timeout=600.0, poll_cycles=200)


def measure(acc, graph, seed=0):
    """(descriptor, simulated cycles) of a one-descriptor graph; checks the output against the reference."""
    rng = np.random.default_rng(seed)
    loaded = acc.load(graph)
    (d,) = loaded.compiled.descriptors
    xs = {n: rng.integers(-128, 128, graph.tensors[n].shape).astype(np.int8) for n in graph.inputs}
    if len(graph.inputs) == 1:
        x = xs[graph.inputs[0]]
        acc.clear_counters()
        out = acc.run(loaded, x)[graph.outputs[0]][0]
        ref = graph.run(x)[graph.outputs[0]][0]
    else:                                     # ADD: place both inputs, run the one descriptor directly
        net = loaded.compiled
        for n, v in xs.items():
            p = net.placements[n]
            from scalenet.driver.compiler import _store, _to_hwc
            region = np.zeros(p.nbytes, np.uint8)
            _store(region, p, _to_hwc(v))
            acc.transport.write_mem(p.addr, region)
        acc.clear_counters()
        from scalenet.rtl import regmap
        acc.write("DESC_ADDR", net.desc_addr)
        acc.write("DESC_COUNT", net.desc_count)
        acc.write("CTRL", regmap.pack("CTRL", start=1))
        acc._wait(loaded)
        out = acc._read_output(loaded, graph.outputs[0])
        layer = graph.layers[0]
        ref = layer.forward([xs[n][None] for n in layer.inputs], [graph.tensors[n].q for n in layer.inputs],
                            graph.tensors[layer.output].q)[0]
    if not np.array_equal(out, ref):
        raise AssertionError(f"{graph.name}: the simulated accelerator's output differs from the reference")
    return d, acc.counters()["cycles"]


def fit(samples, config=CONFIG, latency=LATENCY):
    """Least squares on relative error, per opcode class, coefficients of accel_model.TERMS."""
    from scalenet.scheduler.accel_model import CLASSES, TERMS, descriptor_terms
    coef = {}
    for cls in CLASSES:
        rows, ys = [], []
        for d, cycles in samples:
            c, terms, fetch, _ = descriptor_terms(d, config, latency)
            if c != cls:
                continue
            rows.append([terms[k] / cycles for k in TERMS[cls]])
            ys.append((cycles - fetch) / cycles)
        if not rows:
            continue
        a, y = np.array(rows), np.array(ys)
        sol, *_ = np.linalg.lstsq(a, y, rcond=None)
        coef[cls] = {k: float(v) for k, v in zip(TERMS[cls], sol)}
    return coef


def report(model, samples, label):
    errs = []
    for d, cycles in samples:
        pred = model.descriptor_cycles(d)
        errs.append(abs(pred - cycles) / cycles)
        print(f"  {label:8s} {d['_name']:16s} sim {cycles:8d}  model {pred:10.0f}  error {100 * (pred - cycles) / cycles:+6.1f} %")
    return max(errs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare the stored model only, do not refit")
    args = ap.parse_args(argv)
    from scalenet.scheduler.accel_model import AccelModel, load_coefficients
    fit_g, held_g = fit_layers(), held_out_layers()
    t0 = time.time()
    acc = open_sim()
    print(f"simulator ready in {time.time() - t0:.1f} s ({CONFIG.describe()}, memory latency {LATENCY})")

    def run(graphs):
        out = []
        for g in graphs:
            d, cycles = measure(acc, g)
            d = dict(d, _name=g.name)
            out.append((d, cycles))
        return out

    t0 = time.time()
    fit_s, held_s = run(fit_g), run(held_g)
    print(f"{len(fit_s) + len(held_s)} layers simulated in {time.time() - t0:.1f} s")
    if args.check:
        coef = load_coefficients()
    else:
        coef = fit(fit_s)
    model = AccelModel(CONFIG, latency=LATENCY, coefficients={**load_coefficients(), **coef})
    fit_err = report(model, fit_s, "fit")
    held_err = report(model, held_s, "held-out")
    print(f"max |error|: fit {100 * fit_err:.1f} %, held-out {100 * held_err:.1f} %")
    if not args.check:
        OUT.write_text(json.dumps({
            "source": "benchmarks/calibrate_accel_model.py: least squares on relative error, co-simulation of "
                      f"{len(fit_s)} single-layer descriptors ({CONFIG.describe()}, AXI latency {LATENCY}, no stalls)",
            "config": {k: getattr(CONFIG, k) for k in ("rows", "cols", "data_bytes", "max_width")},
            "max_error_fit": round(fit_err, 4), "max_error_held_out": round(held_err, 4),
            "coefficients": coef,
        }, indent=2) + "\n")
        print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
