"""The global-reset pass (boards/global_resets.py) on small Yosys JSON netlists."""

from scalenet.boards.global_resets import promote_reset_nets

RST, ENG, SMALL = 10, 11, 12


def netlist(fanouts, lut_on=None):
    """A driver cell per net in ``fanouts`` (bit -> flip-flops whose LSR it drives), plus, on net
    ``lut_on``, a LUT input, a block RAM reset and a PFUMX select."""
    cells = {}
    for bit, n in fanouts.items():
        cells[f"drv{bit}"] = {"type": "TRELLIS_FF" if bit == RST else "LUT4", "parameters": {},
                              "port_directions": {"Q": "output"}, "connections": {"Q": [bit]}}
        for i in range(n):
            cells[f"ff{bit}_{i}"] = {"type": "TRELLIS_FF", "parameters": {},
                                     "port_directions": {"LSR": "input", "DI": "input", "Q": "output"},
                                     "connections": {"LSR": [bit], "DI": [1000 + i], "Q": [5000 + 10 * bit + i]}}
    if lut_on is not None:
        cells["lut"] = {"type": "LUT4", "parameters": {}, "port_directions": {"A": "input", "Z": "output"},
                        "connections": {"A": [lut_on], "Z": [9000]}}
        cells["ram"] = {"type": "DP16KD", "parameters": {}, "port_directions": {"RSTB": "input", "DOB0": "output"},
                        "connections": {"RSTB": [lut_on], "DOB0": [9001]}}
        cells["mux"] = {"type": "PFUMX", "parameters": {}, "port_directions": {"C0": "input", "Z": "output"},
                        "connections": {"C0": [lut_on], "Z": [9002]}}
    return {"cells": cells, "netnames": {"rst": {"hide_name": 0, "bits": [RST], "attributes": {}}}}


def lsr_nets(module):
    return {c["connections"]["LSR"][0] for n, c in module["cells"].items() if n.startswith("ff")}


def test_big_reset_nets_drive_their_lsr_pins_from_a_dcca():
    m = netlist({RST: 30, ENG: 50, SMALL: 5}, lut_on=RST)
    m["netnames"]["orphan"] = {"hide_name": 0, "bits": [99999], "attributes": {}}   # a net no cell uses now
    promoted = promote_reset_nets(m, min_lsr_pins=20)
    assert promoted == [{"net": "drv11.Q", "lsr_pins": 50, "pins": 50}, {"net": "rst", "lsr_pins": 30, "pins": 32}]
    dccas = {n: c for n, c in m["cells"].items() if c["type"] == "DCCA"}
    assert {c["connections"]["CLKI"][0] for c in dccas.values()} == {RST, ENG}
    glb = {c["connections"]["CLKI"][0]: c["connections"]["CLKO"][0] for c in dccas.values()}
    assert len(set(glb.values())) == 2 and not set(glb.values()) & {RST, ENG, SMALL, 9000, 9001, 9002, 99999}
    for bit, n in ((RST, 30), (ENG, 50), (SMALL, 5)):
        users = {m["cells"][f"ff{bit}_{i}"]["connections"]["LSR"][0] for i in range(n)}
        assert users == {glb.get(bit, bit)}
    # A LUT input and a block RAM reset move to the global net (it reaches them); a PFUMX select stays.
    assert m["cells"]["lut"]["connections"]["A"] == m["cells"]["ram"]["connections"]["RSTB"] == [glb[RST]]
    assert m["cells"]["mux"]["connections"]["C0"] == [RST]
    assert all(any(v["bits"] == [g] for v in m["netnames"].values()) for g in glb.values())


def test_nothing_below_the_threshold_and_a_dcca_net_is_left_alone():
    m = netlist({RST: 30, ENG: 50})
    m["cells"]["drv11"]["type"] = "DCCA"
    before = lsr_nets(m)
    assert promote_reset_nets(m, min_lsr_pins=40) == []
    assert lsr_nets(m) == before and not any(c["type"] == "DCCA" for n, c in m["cells"].items() if n != "drv11")
