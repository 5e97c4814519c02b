"""Formal checks of the bus interfaces (SymbiYosys + z3 from PyPI), and broken variants that must fail.

Depths are bounded-model-check depths in clock cycles after reset, chosen to keep the suite to minutes:
every request/response pattern of the control slave repeats within a few cycles, and the DMA issues its
first bursts (across a 4 KiB boundary if the splitter were wrong) within the first five.
"""

import pytest

from scalenet.cosim.formal import FormalToolMissing, check
from scalenet.rtl import dma
from scalenet.rtl.axi_properties import ControlHarness, DMAHarness

CONTROL_DEPTH = 16
DMA_DEPTH = 8


def test_control_slave_keeps_the_axi4_lite_rules():
    result = check(ControlHarness(), mode="bmc", depth=CONTROL_DEPTH)
    assert result.passed, result.log[-2000:]


def test_a_slave_that_withdraws_rvalid_is_caught():
    result = check(ControlHarness(broken=True), mode="bmc", depth=CONTROL_DEPTH)
    assert result.status == "FAIL"
    assert "r_valid_held_until_ready" in result.failed


def test_dma_master_keeps_the_axi4_rules():
    result = check(DMAHarness(), mode="bmc", depth=DMA_DEPTH)
    assert result.passed, result.log[-2000:]


def test_a_dma_that_ignores_4k_pages_is_caught(monkeypatch):
    monkeypatch.setattr(dma, "_PAGE", 8192)
    result = check(DMAHarness(), mode="bmc", depth=DMA_DEPTH)
    assert result.status == "FAIL"
    assert {"ar_no_4k_crossing", "aw_no_4k_crossing"} & set(result.failed), result.failed


def test_missing_solver_is_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FormalToolMissing, match="not found on PATH"):
        check(ControlHarness(), depth=2)


def test_mode_is_checked():
    with pytest.raises(ValueError, match="mode must be"):
        check(ControlHarness(), mode="sim")
