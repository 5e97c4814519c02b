"""Real board builds: an ECP5 bitstream in the default suite (the smallest useful SoC on a ULX3S 85F,
built in the background while the other tests run), every other board x array of the docs table in the
slow suite."""

import collections
import json
import sys
from pathlib import Path

import pytest

from scalenet.boards.build import build
from scalenet.boards.global_resets import MIN_LSR_PINS
from scalenet.boards.targets import get_board

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import board_table  # noqa: E402
import ci_bitstream  # noqa: E402
import sdf_paths  # noqa: E402
from ci_bitstream import TINY  # noqa: E402


def check_ecp5_report(r, out: Path, config, board_name):
    board = get_board(board_name)
    dev = board.dev
    bit = (out / "top.bit").read_bytes()
    assert b"\xff\xff\xbd\xb3" in bit[:4096]                        # ECP5 preamble after the comment
    assert (out / "top.svf").stat().st_size > 0
    assert r["array"] == f"{config.rows}x{config.cols}" and r["device"] == dev.part
    res, util = r["resources"], r["nextpnr_utilization"]
    # The device table agrees with what nextpnr says the part holds.
    assert util["MULT18X18D"]["available"] == dev.dsps and util["DP16KD"]["available"] == dev.brams
    assert util["TRELLIS_COMB"]["available"] == dev.luts and util["TRELLIS_FF"]["available"] == dev.ffs
    # Synthesis counts are the placed counts, and the pre-check's estimate matches them.
    assert res["DP16KD"]["used"] == util["DP16KD"]["used"] == r["estimate"]["brams"]
    assert res["MULT18X18D"]["used"] == util["MULT18X18D"]["used"]
    assert r["estimate"]["dsps"] - 4 <= res["MULT18X18D"]["used"] <= r["estimate"]["dsps"]   # never under
    pes = 0 if r["booth_multipliers"] else config.rows * config.cols       # PEs in DSPs, or Booth logic
    assert res["MULT18X18D"]["used"] >= pes + 4                            # + one requantiser
    assert 0 < res["LUT4"]["used"] < dev.luts and 0 < res["FF"]["used"] < dev.ffs
    # One constrained clock: the PLL output at the target.
    (clk, fmax), = [(k, v) for k, v in r["fmax"].items() if abs(v["target_mhz"] - r["pll_mhz"]) < 0.5]
    assert fmax["achieved_mhz"] > 0
    # The routed SDF holds every path: its worst endpoint is the Fmax nextpnr reports.
    sdf = Path(r["sdf"]).read_text()
    worst_ps = sdf_paths.endpoints(sdf)[0][0][0]
    assert abs(1e6 / worst_ps - fmax["achieved_mhz"]) < 0.1, (worst_ps, fmax)
    # The big reset nets reach the flip-flops' LSR pins over global networks (boards/global_resets.py): a
    # DCCA each drives all of them, and no net left in the fabric drives as many.
    edges, launches, _, celltype = sdf_paths.parse(sdf)
    lsr_drivers = collections.Counter(src[0] for (_, pin), srcs in edges.items() if pin == "LSR" for src, _ in srcs)
    promoted = sorted(g["lsr_pins"] for g in r["global_resets"])
    assert promoted and promoted == sorted(n for c, n in lsr_drivers.items() if c.startswith("$rst_gbuf$")
                                           and celltype.get(c) == "DCCA")
    assert max(n for c, n in lsr_drivers.items() if celltype.get(c) != "DCCA") < MIN_LSR_PINS
    # Block-RAM read ports that fed only a register hold it (boards/bram_outreg.py): their routed
    # clock-to-out is the output register's (speed 6: 0.96 ns, not 5.83; speed 8: 0.25, not 1.42), and the
    # FF count is the placed one.
    outreg = r["bram_output_registers"]
    assert outreg["ports"] >= 1 and outreg["flip_flops"] >= 8
    bram_out = {(inst, pin[2]): ps for (inst, pin), ps in launches.items()
                if celltype.get(inst) == "DP16KD" and pin.startswith("DO")}
    assert len([ps for ps in bram_out.values() if ps < max(bram_out.values()) / 2]) == outreg["ports"]
    assert res["FF"]["used"] == util["TRELLIS_FF"]["used"]
    # Multipliers hold their operand and product registers (boards/dsp_registers.py): registered products
    # leave the block 0.74 ns after the clock (3.9 ns through the multiplier without them).
    mult = r["multiplier_registers"]
    assert mult["multipliers"] >= 1 and mult["registers"] >= mult["multipliers"]
    fast = {inst for (inst, pin), ps in launches.items()
            if celltype.get(inst) == "MULT18X18D" and pin.startswith("P") and ps < 1000}
    assert 1 <= len(fast) <= mult["multipliers"]
    assert r["timing_met"] == all(v["achieved_mhz"] >= v["target_mhz"] for v in r["fmax"].values())
    assert all(r["step_seconds"][s] > 0 for s in ("elaborate", "synth", "pnr", "pack"))
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(r))


@pytest.mark.bitstream
def test_tiny_soc_bitstream_on_ulx3s_85f(background_bitstream):
    """2x2 array, 1 KiB buffers, 4 KiB SRAM, UART bridge, PLL at 50 MHz: a real .bit, built in the
    background while the rest of the suite runs (tests/ci_bitstream.py); this test waits for it and checks
    the report against the device, the estimate and the files."""
    r = background_bitstream.result()
    check_ecp5_report(r, background_bitstream.out, TINY, ci_bitstream.BOARD)
    assert r["mem_bytes"] == ci_bitstream.MEM_BYTES and r["pll_mhz"] == ci_bitstream.FREQ_MHZ


@pytest.mark.slow
@pytest.mark.parametrize("board, array, overrides, mhz, options", board_table.ROWS,
                         ids=[f"{b}-{a}" for b, a, *_ in board_table.ROWS])
def test_board_table_row_builds(tmp_path, board, array, overrides, mhz, options):
    config = board_table.config_for(array, overrides)
    r = build(board, config, freq_mhz=mhz, out_dir=tmp_path, **options)
    if get_board(board).family == "ecp5":
        check_ecp5_report(r, tmp_path, config, board)
    else:
        assert r["bitstream"] is None and "Vivado" in r["vivado"]
        assert {"top.v", "top.xdc", "top.tcl", "build_top.sh"} <= set(r["vivado_files"])
        assert r["resources"]["DSP48E1"]["used"] >= config.rows * config.cols
        assert 0 < r["resources"]["LUT"]["used"] < get_board(board).dev.luts
