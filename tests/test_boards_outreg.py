"""The block-RAM output-register pass (boards/bram_outreg.py) on small Yosys JSON netlists: what it folds
into a DP16KD, and every case where the block's register would not be the fabric register's function."""

import json

import pytest

from scalenet.boards.bram_outreg import absorb_output_registers

CLK, RST, CE, CLK2, RST2 = 2, 3, 4, 5, 6


class Netlist:
    """One DP16KD (``ram``) whose read port B's ``width`` outputs each feed a TRELLIS_FF ``ff<i>``."""

    def __init__(self, width=4):
        self.next_bit = 100
        self.cells = {}
        conn = {f"{p}{i}": ["0"] for p in ("DIA", "DIB") for i in range(18)}
        conn.update({f"AD{p}{i}": [self.bit()] for p in "AB" for i in range(14)})
        conn.update({f"DO{p}{i}": [self.bit()] for p in "AB" for i in range(18)})
        conn.update({"CLKA": [CLK], "CLKB": [CLK], "CEA": ["1"], "CEB": ["1"], "OCEA": ["0"], "OCEB": ["1"],
                     "RSTA": ["0"], "RSTB": ["0"], "WEA": [self.bit()], "WEB": ["0"]})
        dirs = {k: ("output" if k.startswith("DO") else "input") for k in conn}
        self.cells["ram"] = {"type": "DP16KD", "parameters": {"REGMODE_A": "NOREG", "REGMODE_B": "NOREG",
                                                              "RESETMODE": "ASYNC", "CLKAMUX": "CLKA",
                                                              "CLKBMUX": "CLKB"},
                             "port_directions": dirs, "connections": conn}
        self.q = {}
        for i in range(width):
            self.add_ff(f"ff{i}", self.ram[f"DOB{i}"][0])
            self.q[i] = self.cells[f"ff{i}"]["connections"]["Q"]

    @property
    def ram(self):
        return self.cells["ram"]["connections"]

    def bit(self):
        self.next_bit += 1
        return self.next_bit

    def add_ff(self, name, d, clk=CLK, lsr=RST, ce=None, cemux="1 ", regset="RESET"):
        conn = {"CLK": [clk], "DI": [d], "Q": [self.bit()]}
        if lsr is not None:
            conn["LSR"] = [lsr]
        if ce is not None:
            conn["CE"] = [ce]
        self.cells[name] = {"type": "TRELLIS_FF",
                            "parameters": {"CEMUX": cemux, "CLKMUX": "CLK", "GSR": "DISABLED", "LSRMUX": "LSR",
                                           "REGSET": regset, "SRMODE": "LSR_OVER_CE"},
                            "port_directions": {"CLK": "input", "DI": "input", "LSR": "input", "CE": "input",
                                                "Q": "output"},
                            "connections": conn}

    def add_lut(self, name, a):
        self.cells[name] = {"type": "LUT4", "parameters": {}, "port_directions": {"A": "input", "Z": "output"},
                            "connections": {"A": [a], "Z": [self.bit()]}}

    def run(self):
        counts = absorb_output_registers({"cells": self.cells})
        return counts, self.cells


def test_register_with_the_domain_reset_goes_into_the_block():
    n = Netlist(width=4)
    counts, cells = n.run()
    assert counts == {"ports": 1, "flip_flops": 4}
    ram = cells["ram"]
    assert ram["parameters"]["REGMODE_B"] == "OUTREG" and ram["parameters"]["REGMODE_A"] == "NOREG"
    assert ram["parameters"]["RESETMODE"] == "SYNC"
    assert ram["connections"]["RSTB"] == [RST] and ram["connections"]["OCEB"] == ["1"]
    assert [ram["connections"][f"DOB{i}"] for i in range(4)] == [n.q[i] for i in range(4)]
    assert not any(name.startswith("ff") for name in cells)


def test_register_with_an_enable_and_no_reset_takes_the_enable_as_oce():
    n = Netlist(width=0)
    for i in range(3):
        n.add_ff(f"ff{i}", n.ram[f"DOB{i}"][0], lsr=None, ce=CE, cemux="CE")
    counts, cells = n.run()
    assert counts == {"ports": 1, "flip_flops": 3}
    assert cells["ram"]["connections"]["OCEB"] == [CE] and cells["ram"]["connections"]["RSTB"] == ["0"]
    assert cells["ram"]["parameters"]["RESETMODE"] == "ASYNC"          # no reset used: left as it was


def test_both_ports_with_one_reset():
    n = Netlist(width=2)
    n.add_ff("fa", n.ram["DOA5"][0])
    counts, cells = n.run()
    assert counts == {"ports": 2, "flip_flops": 3}
    assert cells["ram"]["connections"]["RSTA"] == cells["ram"]["connections"]["RSTB"] == [RST]


@pytest.mark.parametrize("case", ["second_sink", "lut_sink", "other_clock", "enable_and_reset", "inverted_enable",
                                  "set_not_reset", "two_enables", "port_reset_used"])
def test_left_alone_when_the_block_register_would_differ(case):
    n = Netlist(width=2)
    if case == "second_sink":                                       # the output also feeds another register
        n.add_ff("extra", n.ram["DOB1"][0])
    elif case == "lut_sink":                                        # ... or logic
        n.add_lut("lut", n.ram["DOB1"][0])
    elif case == "other_clock":
        n.cells["ff1"]["connections"]["CLK"] = [CLK2]
    elif case == "enable_and_reset":                                # LSR_OVER_CE is not the block's order
        n.cells["ff1"]["connections"]["CE"] = [CE]
        n.cells["ff0"]["connections"]["CE"] = [CE]
        for f in ("ff0", "ff1"):
            n.cells[f]["parameters"]["CEMUX"] = "CE"
    elif case == "inverted_enable":
        n.cells["ff1"]["parameters"]["CEMUX"] = "INV"
    elif case == "set_not_reset":
        n.cells["ff1"]["parameters"]["REGSET"] = "SET"
    elif case == "two_enables":
        for f, ce in (("ff0", CE), ("ff1", CLK2)):
            n.cells[f]["connections"].pop("LSR")
            n.cells[f]["connections"]["CE"] = [ce]
            n.cells[f]["parameters"]["CEMUX"] = "CE"
    elif case == "port_reset_used":
        n.ram["RSTB"] = [RST2]
    before = json.loads(json.dumps(n.cells))
    counts, cells = n.run()
    assert counts == {"ports": 0, "flip_flops": 0}
    assert cells == before


def test_two_resets_on_one_block_are_left_alone():
    """RESETMODE is the block's, so both ports' registers must share the one synchronous reset."""
    n = Netlist(width=1)
    n.add_ff("fa", n.ram["DOA0"][0], lsr=RST2)
    counts, cells = n.run()
    assert counts == {"ports": 0, "flip_flops": 0}
    assert "fa" in cells and "ff0" in cells
