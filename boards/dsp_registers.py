"""Move the registers around each ECP5 multiplier into the MULT18X18D (input A/B and output registers).

Why: Yosys maps a product to a MULT18X18D without its registers (``synth_ecp5`` has no DSP register
packing for ECP5), so a registered product is fabric register -> route -> 3.9 ns multiplier -> route ->
fabric register in one cycle, and the DSP rows are wherever they are on the die: in the 8x8 SoC with the
PE products in DSPs, 4.6 ns in and 3.1-3.6 ns out around the multiplier headed 832 endpoints over 10 ns
(78.9 MHz). With its input and output registers on, the block times as register -> multiplier ->
register inside (0.74 ns clock-to-out at speed 6) and only the routes to and from it are left.

The gateware registers both operands and the product of every multiply, so the registers are there to
take. The multiplier's input register is a copy of the fabric register in front of the pin, taken where
that register is loaded from another register (so no logic joins the route into the block): it loads
that register's data input with the same clock, clock enable and synchronous reset (the DSP's registers
reset over their enable, like the fabric flip-flop's ``LSR_OVER_CE``, per Lattice's simulation model),
and the fabric register stays where it has other loads, goes where the multiplier was its only one. The
output register takes the flip-flops that are each product bit's only load. A port is left alone unless all of its register bits share one clock (the block's ``CLK0``), one enable
and one reset, reset to 0, and its other pins are tied to 0.
"""

from __future__ import annotations

from .netlist_index import connectivity, ff_controls

__all__ = ["absorb_multiplier_registers"]

_WIDTHS = {"A": 18, "B": 18, "P": 36}
_CONTROL = {"A": "0", "B": "1", "P": "2"}          # CEn / RSTn used by each register


def _register_or_constant(cells, driver, bits, ff):
    """Whether a flip-flop's data input is a constant or another flip-flop's output. Only then does its
    copy go into the multiplier: logic in front of it would otherwise join the route to the DSP column in
    one cycle (the PE operand's zero-point subtract did: 10.6 ns, where the fabric register had split it)."""
    (bit,) = bits
    if isinstance(bit, str):
        return True
    src = driver.get(bit)
    return src is not None and src[0] != ff and cells[src[0]]["type"] == "TRELLIS_FF" and src[1] == "Q"


def _plan(cells, driver, sinks, dsp):
    """{port: {"ffs": {pin index: flip-flop}, "controls": (clk, ce, lsr)}} of the registers a multiplier
    can take (A and B in front, P behind), or {} when it has registers on already."""
    conn, params = dsp["connections"], dsp["parameters"]
    if any(params.get(f"REG_{r}_CLK", "NONE") != "NONE" for r in ("INPUTA", "INPUTB", "INPUTC", "PIPELINE", "OUTPUT")):
        return {}
    if any(k.startswith(("CLK", "CE", "RST")) and any(isinstance(b, int) for b in v) for k, v in conn.items()):
        return {}
    found = {}
    for port in ("A", "B"):
        ffs, ok = {}, True
        for i in range(_WIDTHS[port]):
            (bit,) = conn.get(f"{port}{i}", ["0"])
            if isinstance(bit, str):
                ok = ok and bit == "0"
                continue
            src = driver.get(bit)
            if (src is None or cells[src[0]]["type"] != "TRELLIS_FF" or src[1] != "Q"
                    or not _register_or_constant(cells, driver, cells[src[0]]["connections"]["DI"], src[0])):
                ok = False
                break
            ffs[i] = src[0]
        if ok and ffs:
            found[port] = ffs
    out = {}
    for i in range(_WIDTHS["P"]):
        (bit,) = conn.get(f"P{i}", ["x"])
        users = sinks.get(bit, []) if isinstance(bit, int) else []
        if not users:
            continue
        if len(users) != 1 or cells[users[0][0]]["type"] != "TRELLIS_FF" or users[0][1] != "DI":
            out = {}
            break
        out[i] = users[0][0]
    if out:
        found["P"] = out
    plan = {}
    for port, ffs in found.items():
        sets = {ff_controls(cells[f]) for f in ffs.values()}
        if len(sets) == 1 and None not in sets:
            plan[port] = {"ffs": ffs, "controls": sets.pop()}
    return plan


def absorb_multiplier_registers(module: dict) -> dict:
    """Turn on the input and output registers of every MULT18X18D in ``module`` (a module of Yosys's
    ``write_json`` after ``synth_ecp5``, changed in place) whose surrounding fabric registers allow it.
    Returns ``{"multipliers": n, "registers": ports, "flip_flops_removed": m}``."""
    cells = module["cells"]
    driver, sinks = connectivity(cells)
    plans = {name: _plan(cells, driver, sinks, cell) for name, cell in cells.items() if cell["type"] == "MULT18X18D"}
    # A product register that goes into its multiplier cannot also be the copy source of another
    # multiplier's operand register (its data input is the product pin it no longer has).
    outputs = {f for plan in plans.values() if plan for f in plan.get("P", {}).get("ffs", {}).values()}
    removed = set()
    n_mult = n_ports = 0
    for name, plan in plans.items():
        if not plan:
            continue
        for port in ("A", "B"):
            if port in plan and set(plan[port]["ffs"].values()) & outputs:
                del plan[port]
        if not plan or len({reg["controls"][0] for reg in plan.values()}) != 1:
            continue
        conn, params = cells[name]["connections"], cells[name]["parameters"]
        dirs = cells[name].setdefault("port_directions", {})
        conn["CLK0"] = list(next(iter(plan.values()))["controls"][0])
        dirs["CLK0"] = "input"
        for port, reg in plan.items():
            _, ce, lsr = reg["controls"]
            k = _CONTROL[port]
            kind = {"A": "INPUTA", "B": "INPUTB", "P": "OUTPUT"}[port]
            params[f"REG_{kind}_CLK"], params[f"REG_{kind}_CE"], params[f"REG_{kind}_RST"] = "CLK0", f"CE{k}", f"RST{k}"
            conn[f"CE{k}"] = list(ce) if ce is not None else ["1"]
            conn[f"RST{k}"] = list(lsr) if lsr is not None else ["0"]
            dirs[f"CE{k}"] = dirs[f"RST{k}"] = "input"       # pins Yosys left unconnected
            for i, f in reg["ffs"].items():
                if port == "P":
                    conn[f"P{i}"] = cells[f]["connections"]["Q"]
                    removed.add(f)
                else:
                    conn[f"{port}{i}"] = cells[f]["connections"]["DI"]
            n_ports += 1
        params["RESETMODE"] = "SYNC"
        params["GSR"] = "DISABLED"
        n_mult += 1
    # An operand register goes once the multipliers were its only loads.
    for bit, users in sinks.items():
        src = driver.get(bit)
        if src and cells.get(src[0], {}).get("type") == "TRELLIS_FF" and src[1] == "Q" and src[0] not in removed:
            if all(cells[u]["type"] == "MULT18X18D" and cells[u]["parameters"].get(f"REG_INPUT{p[0]}_CLK") == "CLK0"
                   and p[0] in "AB" and p[1:].isdigit() for u, p in users):
                removed.add(src[0])
    for f in removed:
        cells.pop(f, None)
    return {"multipliers": n_mult, "registers": n_ports, "flip_flops_removed": len(removed)}
