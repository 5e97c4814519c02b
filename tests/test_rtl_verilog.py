"""Every block converts to Verilog (what the board flow and the compiled simulators start from)."""

import subprocess
import sys

import pytest
from amaranth.back import verilog

from scalenet.rtl import LineBuffer, PEArray, Requantizer


@pytest.mark.parametrize("rows,cols", [(4, 4), (8, 8)])
def test_pe_array_converts(rows, cols):
    text = verilog.convert(PEArray(rows, cols), name="pe_array")
    assert "module pe_array" in text
    # One multiplier per PE survives into the netlist.
    assert text.count(" * ") >= rows * cols


def test_requantizer_converts():
    text = verilog.convert(Requantizer(user_width=2), name="requant")
    assert "module requant" in text and " * " in text


def test_line_buffer_converts():
    text = verilog.convert(LineBuffer(max_width=64, kmax=7), name="line_buffer")
    assert "module line_buffer" in text
    assert "reg [47:0] columns" in text.replace("\\", "")     # one 6-word column memory


def test_package_import_is_lazy():
    code = ("import sys, scalenet, scalenet.rtl; assert 'amaranth' not in sys.modules; "
            "scalenet.rtl.PEArray; assert 'amaranth' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
