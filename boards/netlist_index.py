"""Who drives and who reads each net of a Yosys JSON module: the index the netlist passes work from."""

from __future__ import annotations

import collections

__all__ = ["connectivity"]


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
