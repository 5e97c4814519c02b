"""Every block converts to Verilog (what the board flow and the compiled simulators start from)."""

import subprocess
import sys

from amaranth.back import verilog

from scalenet.rtl import FusedMaxPool, Requantizer
from scalenet.rtl.config import AcceleratorConfig


def test_requantizer_converts():
    text = verilog.convert(Requantizer(user_width=2), name="requant")
    assert "module requant" in text and " * " in text


def test_fused_pool_converts():
    text = verilog.convert(FusedMaxPool(AcceleratorConfig(max_channels=64, line_buffer_bytes=4096)), name="fused_pool")
    assert "module fused_pool" in text
    text = text.replace("\\", "")
    # the per-channel running maxima: even and odd entries in a memory each
    assert "reg [7:0] even [31:0]" in text and "reg [7:0] odd [31:0]" in text


def test_package_import_is_lazy():
    code = ("import sys, scalenet, scalenet.rtl; assert 'amaranth' not in sys.modules; "
            "scalenet.rtl.FusedMaxPool; assert 'amaranth' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
