"""Move the register behind each ECP5 block RAM read port into the block (``REGMODE = OUTREG``).

Why: a DP16KD without its output register puts 5.8 ns of clock-to-out (speed grade 6) on every path
from the block; with it, 0.96 ns. The gateware already registers each read port's data once before any
logic (that register is the whole sink of the port), which is what the block's output register does,
but Yosys's ``memory_libmap`` leaves that register in the fabric: in the 8x8 SoC the block-RAM paths
headed most lists, 4-5.7 ns of route after the 5.8 ns. Vendor tools fold such a register into the
block; this pass does it on Yosys's JSON netlist before nextpnr reads it.

A port's register is absorbed only when the block's output and the register are one and the same
function: every used data output of the port drives exactly one flip-flop, on its data input, and those
flip-flops share the port's clock (not inverted), one clock enable (or none) and one synchronous reset
(or none), not both (the block's reset/enable priority is not the fabric flip-flop's ``LSR_OVER_CE``),
reset value 0. The enable becomes the port's ``OCE``, the reset its ``RST`` (``RESETMODE = SYNC``).
"""

from __future__ import annotations

from .netlist_index import connectivity, ff_controls

__all__ = ["absorb_output_registers"]

_DATA_BITS = 18          # DOA0..DOA17, DOB0..DOB17


def _is_const(bits, value=None):
    return all(isinstance(b, str) and (value is None or b == value) for b in bits)


def _port_register(cells, sinks, bram, port):
    """The flip-flops that are port ``port``'s register, with (CE, LSR), or None when it has none."""
    conn = bram["connections"]
    if bram["parameters"].get(f"REGMODE_{port}", "NOREG") != "NOREG":
        return None
    if bram["parameters"].get(f"CLK{port}MUX", f"CLK{port}") != f"CLK{port}":
        return None
    if not _is_const(conn[f"RST{port}"], "0") or not _is_const(conn[f"OCE{port}"]):
        return None                 # (without the register OCE is unused: Yosys ties it to 0 or 1)
    ffs = {}
    for i in range(_DATA_BITS):
        (bit,) = conn[f"DO{port}{i}"]
        users = sinks.get(bit, []) if isinstance(bit, int) else []
        if not users:
            continue
        if len(users) != 1:
            return None
        name, pin = users[0]
        ff = cells[name]
        if ff["type"] != "TRELLIS_FF" or pin != "DI":
            return None
        ffs[i] = name
    if not ffs:
        return None
    controls = {ff_controls(cells[name]) for name in ffs.values()}
    if None in controls or {clk for clk, _, _ in controls} != {tuple(conn[f"CLK{port}"])}:
        return None
    controls = {(ce, lsr) for _, ce, lsr in controls}
    if len(controls) != 1:
        return None
    ((ce, lsr),) = controls
    if ce is not None and lsr is not None:
        return None
    return ffs, ce, lsr


def absorb_output_registers(module: dict) -> dict:
    """Fold every absorbable read-port register into its DP16KD, in ``module`` (a module of Yosys's
    ``write_json`` after ``synth_ecp5``, changed in place). Returns ``{"ports": n, "flip_flops": m}``."""
    cells = module["cells"]
    _, sinks = connectivity(cells)
    ports = flops = 0
    for bram in [c for c in cells.values() if c["type"] == "DP16KD"]:
        found = {port: _port_register(cells, sinks, bram, port) for port in "AB"}
        resets = {r[2] for r in found.values() if r is not None and r[2] is not None}
        others = {tuple(bram["connections"][f"RST{p}"]) for p in "AB" if found[p] is None}
        if len(resets) > 1 or (resets and any(not _is_const(o, "0") for o in others)):
            continue        # RESETMODE is the block's: only one synchronous reset, or none used elsewhere
        for port, reg in found.items():
            if reg is None:
                continue
            ffs, ce, lsr = reg
            conn, params = bram["connections"], bram["parameters"]
            for i, name in ffs.items():
                conn[f"DO{port}{i}"] = cells.pop(name)["connections"]["Q"]
            conn[f"OCE{port}"] = list(ce) if ce is not None else ["1"]
            conn[f"RST{port}"] = list(lsr) if lsr is not None else ["0"]
            params[f"REGMODE_{port}"] = "OUTREG"
            if lsr is not None:
                params["RESETMODE"] = "SYNC"
            ports += 1
            flops += len(ffs)
    return {"ports": ports, "flip_flops": flops}
