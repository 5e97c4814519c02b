"""Simulated cycles per second of the two simulation engines on the default 8x8 accelerator, side by side.

The same workload on both: a 3x3 conv 16->16 on an 8x8 image (with ReLU) through the whole top level —
descriptor fetch, weight and parameter loads, line buffers, the PE array, requantisation and the DMA
write — driven by the same driver code over AXI4-Lite, with the same memory model settings. Both engines
run the design cycle for cycle alike, so both frames take the same number of cycles (checked), and the
outputs must equal the numpy reference (checked). Model construction (elaboration, the C++ build or a
cache hit) is reported apart from the run.

    python benchmarks/sim_engines.py [--frames-compiled 20] [--vcd]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from scalenet.cosim.platform import SimTransport
from scalenet.driver.accelerator import Accelerator
from scalenet.floatnet import FloatNet, FNode, quantize_net
from scalenet.quant import quantize
from scalenet.rtl.config import AcceleratorConfig


def workload():
    rng = np.random.default_rng(0)
    nodes = [FNode("conv", "c1", ["x"], "c1", dict(weight=rng.normal(0, 0.1, (16, 16, 3, 3)).astype(np.float32),
                                                   bias=rng.normal(0, 0.1, 16), pads=(1, 1, 1, 1))),
             FNode("relu", "r1", ["c1"], "y")]
    net = FloatNet("conv16", "x", (16, 8, 8), nodes, ["y"])
    cal = rng.normal(0, 1, (4, 16, 8, 8)).astype(np.float32)
    graph = quantize_net(net, cal, act_dtype="uint8")
    return graph, quantize(cal[:1], graph.input.q)


def measure(engine, frames, vcd=None):
    graph, x = workload()
    cfg = AcceleratorConfig()
    t0 = time.perf_counter()
    transport = SimTransport(config=cfg, engine=engine, mem_size=1 << 20, latency=8, stall=0.05, seed=1, vcd=vcd,
                             progress=False)
    acc = Accelerator(transport, config=cfg, timeout=3600.0, poll_cycles=2000)
    setup = time.perf_counter() - t0
    loaded = acc.load(graph)
    want = graph.run(x)["y"]
    cycles, wall = [], 0.0
    for _ in range(frames):
        acc.clear_counters()
        c0 = transport.platform.cycles
        t0 = time.perf_counter()
        out = acc.run(loaded, x)["y"]
        wall += time.perf_counter() - t0
        cycles.append(transport.platform.cycles - c0)
        if not np.array_equal(out, want):
            raise SystemExit(f"{engine}: output differs from the reference")
    busy = acc.counters()["cycles"]
    acc.close()
    return {"engine": transport.platform.engine, "setup_s": setup, "frames": frames, "cycles_per_frame": cycles[0],
            "busy_cycles": busy, "wall_s": wall, "cycles_per_s": sum(cycles) / wall, "all_cycles": cycles}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames-compiled", type=int, default=20, help="frames on the compiled engine (default 20)")
    ap.add_argument("--vcd", action="store_true", help="also measure both engines while writing a VCD")
    args = ap.parse_args()
    cases = [("pysim", 1, False), ("compiled", args.frames_compiled, False)]
    if args.vcd:
        cases += [("pysim", 1, True), ("compiled", args.frames_compiled, True)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for engine, frames, vcd in cases:
            path = Path(tmp) / f"{engine}.vcd" if vcd else None
            r = measure(engine, frames, path)
            key = engine + (" +vcd" if vcd else "")
            results[key] = r
            print(f"{key:<14} setup {r['setup_s']:6.1f} s   {r['frames']:>3} frame(s) x {r['cycles_per_frame']:,} cycles "
                  f"({r['busy_cycles']:,} busy) in {r['wall_s']:7.3f} s   {r['cycles_per_s']:>12,.0f} cycles/s")
    per_frame = {r["cycles_per_frame"] for r in results.values()}
    print(f"cycles per frame identical on both engines: {len(per_frame) == 1} ({sorted(per_frame)})")
    ratio = results["compiled"]["cycles_per_s"] / results["pysim"]["cycles_per_s"]
    print(f"compiled / pysim: {ratio:,.0f}x")
    if args.vcd:
        ratio_vcd = results["compiled +vcd"]["cycles_per_s"] / results["pysim +vcd"]["cycles_per_s"]
        print(f"compiled / pysim while writing a VCD: {ratio_vcd:,.0f}x")


if __name__ == "__main__":
    main()
