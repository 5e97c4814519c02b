"""Who drives and who reads each net of a Yosys JSON module: the index the netlist passes work from."""

from __future__ import annotations

import collections

__all__ = ["connectivity", "ff_controls"]


def connectivity(cells: dict) -> tuple[dict, dict]:
    """``(driver, sinks)``: ``driver[bit] = (cell, pin)`` for every driven net bit, ``sinks[bit]`` the
    ``(cell, pin)`` inputs that read it (constant bits are not nets and appear in neither)."""
    driver, sinks = {}, collections.defaultdict(list)
    for name, cell in cells.items():
        dirs = cell.get("port_directions", {})
        for pin, bits in cell["connections"].items():
            for bit in bits:
                if isinstance(bit, int):
                    if dirs.get(pin) == "output":
                        driver[bit] = (name, pin)
                    else:
                        sinks[bit].append((name, pin))
    return driver, sinks


def ff_controls(ff: dict):
    """``(clk, ce, lsr)`` nets of a TRELLIS_FF (``ce``/``lsr`` None when unused), or None when a hard
    block's register could not stand in for it: inverted clock or enable, set rather than reset, or an
    asynchronous or inverted reset."""
    p, c = ff["parameters"], ff["connections"]
    if p.get("CLKMUX", "CLK") != "CLK" or p.get("REGSET", "RESET") != "RESET":
        return None
    cemux = p.get("CEMUX", "1").strip()
    if cemux == "CE" and "CE" in c and not all(isinstance(b, str) for b in c["CE"]):
        ce = tuple(c["CE"])
    elif cemux == "1" or (cemux == "CE" and c.get("CE", ["1"]) == ["1"]):
        ce = None
    else:
        return None
    lsr = c.get("LSR")
    if lsr is not None and all(isinstance(b, str) for b in lsr):
        if lsr != ["0"]:
            return None
        lsr = None
    if lsr is not None and (p.get("LSRMUX", "LSR") != "LSR" or p.get("SRMODE", "LSR_OVER_CE") == "ASYNC"):
        return None
    return tuple(c["CLK"]), ce, (tuple(lsr) if lsr is not None else None)
