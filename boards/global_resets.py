"""Put the design's high-fanout reset nets on ECP5 primary clock networks (a DCCA each).

Why: nextpnr promotes only clocks to the global networks; every other net is routed in the fabric. In
the 8x8 SoC two nets reset most flip-flops -- the engines' reset (the sync reset OR a run's failure,
one LUT) on 18,176 LSR pins and the sync reset itself on 3,070 -- and routed in the fabric they took up
to 5.1 and 7.2 ns, headed five of the 25 slowest paths (9.3-9.9 ns) and used routing the data paths
around them needed. A primary clock network reaches every slice's LSR; a DCCA drives it from the
fabric. Every input on such a net that the global network reaches (measured with nextpnr: flip-flop LSR,
LUT and carry-cell inputs, block RAM and multiplier register resets) moves to it: left in the fabric, the rest of the net -- a
LUT combining the reset with an enable, a block RAM's output-register reset (:mod:`.bram_outreg`) --
kept routes of 3.6-5.1 ns, and those paths headed one build (93.5 MHz) at 10.0-10.7 ns.
"""

from __future__ import annotations

import collections

from .netlist_index import connectivity

__all__ = ["promote_reset_nets", "MIN_LSR_PINS"]

MIN_LSR_PINS = 1000
"""A net drives at least this many flip-flop LSR pins to be promoted (the 8x8 SoC: two nets; the next
largest drives 308). Seven fabric-driven globals are free beside the clock."""

_MAX_PROMOTED = 7
_GLOBAL_PINS = {
    "TRELLIS_FF": {"LSR"},
    "LUT4": {"A", "B", "C", "D"},
    "CCU2C": {f"{p}{i}" for p in "ABCD" for i in "01"},
    "DP16KD": {"RSTA", "RSTB"},
    "MULT18X18D": {f"RST{i}" for i in range(4)},
}
"""The cell inputs a primary clock network reaches, by cell type (the rest keep the fabric net)."""


def _net_name(module, bit, driver):
    """The net's own name where Yosys kept one, else its driver's (``cell.PIN``)."""
    names = [n for n, v in module.get("netnames", {}).items() if v["bits"] == [bit] and not n.startswith("$")]
    return min(names, key=lambda n: (len(n), n)) if names else ".".join(driver)


def promote_reset_nets(module: dict, min_lsr_pins: int = MIN_LSR_PINS) -> list:
    """Drive every net with at least ``min_lsr_pins`` flip-flop LSR pins from a new DCCA (its inputs that
    a global network reaches; the others keep the net), in ``module`` (a module of Yosys's ``write_json``
    after ``synth_ecp5``, changed in place). Returns ``[{"net": name, "lsr_pins": n, "pins": moved}]``,
    largest first. A net driven by a DCCA already is left alone."""
    cells = module["cells"]
    driver, sinks = connectivity(cells)
    lsr_users = collections.defaultdict(list)
    movable = collections.defaultdict(list)     # net -> [(cell, pin)] that the global network reaches
    for bit, users in sinks.items():
        for name, pin in users:
            kind = cells[name]["type"]
            if pin == "LSR" and kind == "TRELLIS_FF":
                lsr_users[bit].append(name)
            if pin in _GLOBAL_PINS.get(kind, ()) and len(cells[name]["connections"][pin]) == 1:
                movable[bit].append((name, pin))
    top_bit = max([0, *driver, *sinks])
    for named in (*module.get("ports", {}).values(), *module.get("netnames", {}).values()):
        top_bit = max([top_bit, *(b for b in named["bits"] if isinstance(b, int))])   # a fresh bit for each DCCA
    nets = sorted(((len(u), bit) for bit, u in lsr_users.items()
                   if len(u) >= min_lsr_pins and bit in driver and cells[driver[bit][0]]["type"] != "DCCA"),
                  reverse=True)
    promoted = []
    for n, bit in nets[:_MAX_PROMOTED]:
        name = _net_name(module, bit, driver[bit])
        top_bit += 1
        glb = top_bit
        cells[f"$rst_gbuf${name}"] = {
            "type": "DCCA", "parameters": {}, "attributes": {},
            "port_directions": {"CLKI": "input", "CE": "input", "CLKO": "output"},
            "connections": {"CLKI": [bit], "CE": ["1"], "CLKO": [glb]},
        }
        module.setdefault("netnames", {})[f"$rst_glb${name}"] = {"hide_name": 0, "bits": [glb], "attributes": {}}
        for user, pin in movable[bit]:
            cells[user]["connections"][pin] = [glb]
        promoted.append({"net": name, "lsr_pins": n, "pins": len(movable[bit])})
    return promoted
