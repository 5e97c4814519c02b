"""The multiplier-register pass (boards/dsp_registers.py) on small Yosys JSON netlists."""

import pytest

from scalenet.boards.dsp_registers import absorb_multiplier_registers

CLK, RST, CE, CLK2 = 2, 3, 4, 5


class Netlist:
    """One MULT18X18D: A0..A{wa-1} from flip-flops fa<i> (data inputs da<i>), B0..B{wb-1} from fb<i>, and
    P0..P{wp-1} into flip-flops fp<i>; every flip-flop on CLK with reset RST."""

    def __init__(self, wa=3, wb=2, wp=4):
        self.next_bit = 100
        self.cells = {}
        conn = {f"{p}{i}": ["0"] for p, n in (("A", 18), ("B", 18), ("C", 18)) for i in range(n)}
        conn.update({f"P{i}": [self.bit()] for i in range(36)})
        conn.update({"SIGNEDA": ["1"], "SIGNEDB": ["0"], "SOURCEA": ["0"], "SOURCEB": ["0"]})
        dirs = {k: ("output" if k.startswith("P") else "input") for k in conn}
        self.cells["mul"] = {"type": "MULT18X18D", "parameters": {}, "port_directions": dirs, "connections": conn}
        self.d = {}
        for port, n in (("A", wa), ("B", wb)):
            for i in range(n):
                d = self.add_ff(f"src{port.lower()}{i}", self.bit())      # operand registers in a chain
                self.d[f"{port}{i}"] = d
                q = self.add_ff(f"f{port.lower()}{i}", d)
                conn[f"{port}{i}"] = [q]
        self.q = {}
        for i in range(wp):
            self.q[i] = self.add_ff(f"fp{i}", conn[f"P{i}"][0])

    @property
    def conn(self):
        return self.cells["mul"]["connections"]

    @property
    def params(self):
        return self.cells["mul"]["parameters"]

    def bit(self):
        self.next_bit += 1
        return self.next_bit

    def add_ff(self, name, d, clk=CLK, lsr=RST, ce=None):
        q = self.bit()
        conn = {"CLK": [clk], "DI": [d], "Q": [q], "LSR": [lsr]}
        if ce is not None:
            conn["CE"] = [ce]
        self.cells[name] = {"type": "TRELLIS_FF",
                            "parameters": {"CEMUX": "CE" if ce is not None else "1 ", "CLKMUX": "CLK",
                                           "GSR": "DISABLED", "LSRMUX": "LSR", "REGSET": "RESET",
                                           "SRMODE": "LSR_OVER_CE"},
                            "port_directions": {"CLK": "input", "DI": "input", "LSR": "input", "CE": "input",
                                                "Q": "output"},
                            "connections": conn}
        return q

    def add_lut(self, name, a):
        self.cells[name] = {"type": "LUT4", "parameters": {}, "port_directions": {"A": "input", "Z": "output"},
                            "connections": {"A": [a], "Z": [self.bit()]}}


def test_operand_and_product_registers_go_into_the_multiplier():
    n = Netlist()
    n.cells["fb0"]["connections"]["CE"] = [CE]
    n.cells["fb1"]["connections"]["CE"] = [CE]
    for f in ("fb0", "fb1"):
        n.cells[f]["parameters"]["CEMUX"] = "CE"
    assert absorb_multiplier_registers({"cells": n.cells}) == {"multipliers": 1, "registers": 3, "flip_flops_removed": 9}
    p, c = n.params, n.conn
    assert [p[f"REG_{r}_CLK"] for r in ("INPUTA", "INPUTB", "OUTPUT")] == ["CLK0"] * 3
    assert (p["REG_INPUTA_CE"], p["REG_INPUTB_CE"], p["REG_OUTPUT_CE"]) == ("CE0", "CE1", "CE2")
    assert p["RESETMODE"] == "SYNC" and c["CLK0"] == [CLK]
    # nextpnr needs a direction for every connected pin, and Yosys lists none for the ones it left open.
    assert all(n.cells["mul"]["port_directions"][k] == "input" for k in ("CLK0", "CE0", "CE1", "CE2", "RST0", "RST2"))
    assert (c["CE0"], c["CE1"], c["CE2"]) == (["1"], [CE], ["1"])
    assert c["RST0"] == c["RST1"] == c["RST2"] == [RST]
    # The operand pins take the registers' data inputs; the product pins drive the old register outputs.
    assert [c[f"A{i}"] for i in range(3)] == [[n.d[f"A{i}"]] for i in range(3)]
    assert [c[f"B{i}"] for i in range(2)] == [[n.d[f"B{i}"]] for i in range(2)]
    assert [c[f"P{i}"] for i in range(4)] == [[n.q[i]] for i in range(4)]
    assert not [name for name in n.cells if name.startswith("f")]
    assert all(f"src{p}{i}" in n.cells for p, w in (("a", 3), ("b", 2)) for i in range(w))


def test_an_operand_register_with_other_loads_is_copied_not_moved():
    n = Netlist()
    n.add_lut("other", n.conn["A1"][0])
    q1 = n.conn["A1"][0]
    assert absorb_multiplier_registers({"cells": n.cells})["flip_flops_removed"] == 8
    assert "fa1" in n.cells and n.cells["other"]["connections"]["A"] == [q1]
    assert n.conn["A1"] == [n.d["A1"]] and n.params["REG_INPUTA_CLK"] == "CLK0"


@pytest.mark.parametrize("case", ["product_to_logic", "operand_from_logic", "operand_loaded_from_logic",
                                  "two_resets", "const_one", "inverted_enable", "set_not_reset", "other_clock"])
def test_only_the_ports_whose_registers_fit_move(case):
    n = Netlist()
    kept = {"A", "B", "P"}
    if case == "product_to_logic":                 # a product bit also feeds logic: P stays in the fabric
        n.add_lut("lut", n.conn["P2"][0])
        kept = {"P"}
    elif case == "operand_from_logic":             # an operand bit from a LUT, not a register
        n.add_lut("lut", 7)
        n.conn["A2"] = n.cells["lut"]["connections"]["Z"]
        kept = {"A"}
    elif case == "operand_loaded_from_logic":      # its register's data input is logic: copied into the
        n.add_lut("lut", 7)                        # block, that logic would join the route to the DSP
        n.cells["fb1"]["connections"]["DI"] = n.cells["lut"]["connections"]["Z"]
        kept = {"B"}
    elif case == "two_resets":
        n.cells["fb1"]["connections"]["LSR"] = [CLK2]
        kept = {"B"}
    elif case == "const_one":                      # a register would hold 0 after its reset, the pin 1
        n.conn["B5"] = ["1"]
        kept = {"B"}
    elif case == "inverted_enable":
        n.cells["fp1"]["parameters"]["CEMUX"] = "INV"
        kept = {"P"}
    elif case == "set_not_reset":                  # the block's registers reset to 0
        n.cells["fa0"]["parameters"]["REGSET"] = "SET"
        kept = {"A"}
    elif case == "other_clock":                    # one clock for the whole block: nothing moves
        n.cells["fp0"]["connections"]["CLK"] = [CLK2]
        n.cells["fp1"]["connections"]["CLK"] = [CLK2]
        n.cells["fp2"]["connections"]["CLK"] = [CLK2]
        n.cells["fp3"]["connections"]["CLK"] = [CLK2]
    absorb_multiplier_registers({"cells": n.cells})
    regs = {"A": "INPUTA", "B": "INPUTB", "P": "OUTPUT"}
    if case == "other_clock":
        assert not any(k.startswith("REG_") for k in n.params)
        return
    for port, reg in regs.items():
        assert (n.params.get(f"REG_{reg}_CLK", "NONE") == "NONE") == (port in kept), port


def test_a_product_register_that_feeds_another_multiplier_stays_its_operand():
    """Two multipliers in a chain: the first's product register moves into it, so the second keeps it as
    a fabric-fed operand (its data input is no longer a net the second could copy)."""
    n = Netlist(wa=1, wb=1, wp=1)
    second = {k: list(v) for k, v in n.conn.items()}
    second.update({f"P{i}": [n.bit()] for i in range(36)})
    second["A0"] = [n.q[0]]
    second["B0"] = ["0"]
    n.cells["mul2"] = {"type": "MULT18X18D", "parameters": {},
                       "port_directions": n.cells["mul"]["port_directions"], "connections": second}
    absorb_multiplier_registers({"cells": n.cells})
    assert n.params["REG_OUTPUT_CLK"] == "CLK0" and "fp0" not in n.cells
    assert n.cells["mul2"]["parameters"].get("REG_INPUTA_CLK", "NONE") == "NONE"
    assert n.cells["mul2"]["connections"]["A0"] == n.conn["P0"]
