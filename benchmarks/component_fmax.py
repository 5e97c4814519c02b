"""Routed Fmax of each accelerator component alone, out of context on an ECP5 85F (speed 6).

Why: a routed run of the whole 8x8 accelerator takes about an hour here and names one path; each engine
alone routes in one to five minutes and names its own worst path, so the timing loop is per component.
A component that misses the target alone misses it in the whole design too (the whole design adds
congestion and longer wires, never shorter ones). Input ports count as registered outside; paths into
output ports are not timed, so a block-RAM read that leaves an engine unregistered shows up only in
the whole design.

usage: python benchmarks/component_fmax.py [--only conv,pool] [--freq 100] [--work DIR] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from amaranth.back import rtlil

from scalenet.boards.build import nextpnr_options, parse_nextpnr_report, parse_yosys_stat, tool
from scalenet.rtl.collisions import undefined_collisions
from scalenet.rtl.config import AcceleratorConfig

CFG = AcceleratorConfig()


def _components():
    from scalenet.rtl.add_engine import AddEngine
    from scalenet.rtl.control import ControlSlave
    from scalenet.rtl.conv_engine import ConvEngine
    from scalenet.rtl.dma import DMA
    from scalenet.rtl.dot_array import DotArray
    from scalenet.rtl.fused_pool import FusedMaxPool
    from scalenet.rtl.pool_engine import PoolEngine
    from scalenet.rtl.requant import Requantizer
    from scalenet.rtl.top import ScaleNet
    nb = CFG.data_bytes
    return {
        "conv": lambda: ConvEngine(CFG),
        "pool": lambda: PoolEngine(CFG),
        "add": lambda: AddEngine(CFG),
        "fpool": lambda: FusedMaxPool(CFG),
        "requant": lambda: Requantizer(user_width=8),
        "array": lambda: DotArray(CFG.rows, CFG.cols),
        "dma": lambda: DMA(data_width=8 * nb, strobes=True),
        "control": lambda: ControlSlave(rows=CFG.rows, cols=CFG.cols, max_kernel=CFG.max_kernel, data_bytes=nb,
                                        max_width=CFG.max_width, max_channels=CFG.max_channels, addr_width=12),
        "whole": lambda: ScaleNet(CFG),     # the hour-long one: only when asked for by name
    }


def critical_path(log: str) -> dict:
    """Start, end and logic/routing split of the last critical-path report in a nextpnr log."""
    i = log.rfind("Critical path report")
    if i < 0:
        return {}
    lines = log[i:].splitlines()
    src = next((ln.split("Source ", 1)[1].strip() for ln in lines if "Source " in ln), "")
    sinks = [ln.split("Sink ", 1)[1].strip() for ln in lines if "Sink " in ln]
    split = next((ln[6:].strip() for ln in lines if "ns logic," in ln), "")
    return {"from": src, "to": sinks[-1] if sinks else "", "split": split}


def run(name, factory, work: Path, freq: float) -> dict:
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "m.il").write_text(undefined_collisions(rtlil.convert(factory(), name="dut", emit_src=False)))
    t0 = time.perf_counter()
    subprocess.run([tool("yosys"), "-q", "-l", "synth.log", "-p",
                    "read_rtlil m.il; synth_ecp5 -top dut; tee -q -o stat.txt stat; write_json m.json"],
                   cwd=d, check=True)
    t1 = time.perf_counter()
    subprocess.run([tool("nextpnr-ecp5"), "--85k", "--speed", "6", "--package", "CABGA381", "--out-of-context",
                    "--json", "m.json", "--freq", str(freq), *nextpnr_options(), "--threads", "1",
                    "--report", "report.json", "--sdf", "routed.sdf", "-l", "pnr.log"], cwd=d, check=True, capture_output=True)
    t2 = time.perf_counter()
    log = (d / "pnr.log").read_text()
    # The post-placement estimate is only in the log; the routed figure comes from the JSON report.
    placed = re.search(r"Max frequency for clock '[^']+': ([\d.]+) MHz", log)
    routed = parse_nextpnr_report(json.loads((d / "report.json").read_text()))["fmax"]
    return {"component": name, "placed_mhz": float(placed.group(1)) if placed else None,
            "routed_mhz": min((f["achieved_mhz"] for f in routed.values()), default=None),
            "cells": parse_yosys_stat((d / "stat.txt").read_text()), "synth_s": round(t1 - t0),
            "pnr_s": round(t2 - t1), "path": critical_path(log)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated components (default: all but 'whole')")
    ap.add_argument("--freq", type=float, default=100.0)
    ap.add_argument("--work", default="build/component-fmax")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    comps = _components()
    names = args.only.split(",") if args.only else [n for n in comps if n != "whole"]
    unknown = [n for n in names if n not in comps]
    if unknown:
        ap.error(f"unknown component(s) {', '.join(unknown)}; choose from {', '.join(comps)}")
    work = Path(args.work)
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda n: run(n, comps[n], work, args.freq), names))
    print(f"{'component':10s} {'placed':>7s} {'routed':>7s} {'LUT4':>6s} {'FF':>6s} {'DP16KD':>6s} {'MULT':>5s} "
          f"{'pnr s':>6s}  worst path")
    for r in results:
        c = r["cells"]
        print(f"{r['component']:10s} {r['placed_mhz'] or 0:7.1f} {r['routed_mhz'] or 0:7.1f} {c.get('LUT4', 0):6d} "
              f"{c.get('TRELLIS_FF', 0):6d} {c.get('DP16KD', 0):6d} {c.get('MULT18X18D', 0):5d} {r['pnr_s']:6d}  "
              f"{r['path'].get('from', '')[:50]} -> {r['path'].get('to', '')[:50]} ({r['path'].get('split', '')})")
    (work / "summary.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
