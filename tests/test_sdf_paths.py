"""benchmarks/sdf_paths.py: static timing over nextpnr's SDF picks the latest path through the LUTs, starts
paths at clock arcs (not at the clock pin), leaves the packer's constants untimed, and groups bits of a
register. A hand-written SDF in nextpnr's format, with the sums worked out here."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import sdf_paths  # noqa: E402


def cell(kind, name, arcs, checks=""):
    """One SDF cell: its delay arcs (``(from, to, ps)``) and any timing-check lines."""
    lines = "".join(f"        (IOPATH {f} {t} (1:1:{ps}) (1:1:{ps}))\n" for f, t, ps in arcs)
    timing = f"    (TIMINGCHECK\n{checks}    )\n" if checks else ""
    return (f'  (CELL\n    (CELLTYPE "{kind}")\n    (INSTANCE {name})\n    (DELAY\n      (ABSOLUTE\n{lines}'
            f"      )\n    )\n{timing}  )\n")


def ff(name, clk_q, setup):
    return cell("TRELLIS_FF", name, [("CLK", "Q", clk_q)],
                f"      (SETUPHOLD (posedge DI) (posedge CLK) (0:0:{setup}) (0:0:0))\n")


def lut(name, a_f, b_f):
    return cell("TRELLIS_COMB", name, [("A", "F", a_f), ("B", "F", b_f)])


def ic(src, dst, ps):
    return f"        (INTERCONNECT {src} {dst} (1:1:{ps}) (1:1:{ps}))\n"


SDF = ("(DELAYFILE\n  (SDFVERSION \"3.0\")\n  (DIVIDER /)\n  (TIMESCALE 1ps)\n  (CELL\n    (CELLTYPE \"top\")\n"
       "    (INSTANCE )\n    (DELAY\n      (ABSOLUTE\n"
       + ic("a_TRELLIS_FF_Q/Q", "l\\$1/A", 700) + ic("b_TRELLIS_FF_Q_3/Q", "l\\$1/B", 300)
       + ic("l\\$1/F", "q_TRELLIS_FF_Q_1/DI", 900) + ic("\\$PACKER_VCC/F", "q_TRELLIS_FF_Q_2/DI", 5000)
       + ic("a_TRELLIS_FF_Q/Q", "q_TRELLIS_FF_Q_2/DI", 100) + ic("clk/O", "a_TRELLIS_FF_Q/CLK", 9000)
       + "      )\n    )\n  )\n"
       + ff("a_TRELLIS_FF_Q", 500, 100) + ff("b_TRELLIS_FF_Q_3", 500, 100)
       + ff("q_TRELLIS_FF_Q_1", 500, 130) + ff("q_TRELLIS_FF_Q_2", 500, 130)
       + lut("l\\$1", 240, 2000) + "  (CELL\n    (CELLTYPE \"TRELLIS_COMB\")\n    (INSTANCE \\$PACKER_VCC)\n"
       "  )\n)\n")


def test_latest_path_constants_and_clock_pins():
    edges, launches, checks, celltype = sdf_paths.parse(SDF)
    arrive, via = sdf_paths.arrivals(edges, launches)
    # a: 500 + 700 + 240 = 1440; b: 500 + 300 + 2000 = 2800 -> b's path is the later one through l$1.F.
    assert arrive[("l$1", "F")] == 2800 and via[("l$1", "F")] == ("l$1", "B")
    assert arrive[("q_TRELLIS_FF_Q_1", "DI")] == 3700
    # The constant's 5 ns is not a path; the clock pin's 9 ns of clock routing does not delay a's launch.
    assert arrive[("q_TRELLIS_FF_Q_2", "DI")] == 600
    assert checks[("q_TRELLIS_FF_Q_1", "DI")] == 130
    hops = [node for node, _ in sdf_paths.trace(("q_TRELLIS_FF_Q_1", "DI"), arrive, via)]
    assert hops == [("b_TRELLIS_FF_Q_3", "Q"), ("l$1", "B"), ("l$1", "F"), ("q_TRELLIS_FF_Q_1", "DI")]
    assert celltype["l$1"] == "TRELLIS_COMB"


def test_report_ranks_register_groups(capsys, tmp_path):
    (tmp_path / "r.sdf").write_text(SDF)
    sdf_paths.main([str(tmp_path / "r.sdf"), "--period", "0.5", "--trace", "1"])
    out = capsys.readouterr().out
    assert out.startswith("worst endpoint 3.83 ns -> 261.1 MHz; 2 endpoints over 0.5 ns")
    rows = [ln for ln in out.splitlines() if ln.startswith("  ") and "<-" in ln and "endpoint" not in ln]
    assert len(rows) == 1 and "q_TRELLIS_FF_Q.DI" in rows[0] and " 2 " in rows[0]


def test_an_endpoint_is_traced_by_name_and_an_unknown_one_refused(capsys, tmp_path):
    (tmp_path / "r.sdf").write_text(SDF)
    sdf_paths.main([str(tmp_path / "r.sdf"), "--trace", "0", "--endpoint", "q_TRELLIS_FF_Q_2"])
    out = capsys.readouterr().out
    assert "0.73 ns: q_TRELLIS_FF_Q" in out and "a_TRELLIS_FF_Q.Q" in out.split("0.73 ns:")[1]
    with pytest.raises(SystemExit, match="no timed endpoint starts with 'nothing_here'"):
        sdf_paths.main([str(tmp_path / "r.sdf"), "--endpoint", "nothing_here"])


def test_a_board_pad_launches_nothing():
    """A pad (TRELLIS_IO) is an asynchronous input: nextpnr reports pad -> register paths apart from the
    clock's Fmax, so the ranking leaves them out (a reset button's 6.2 ns route to the reset synchroniser
    once outranked every register path of a 144 MHz build)."""
    pad = cell("TRELLIS_IO", "rst_in", [("B", "O", 0)])
    sdf = SDF.replace("      )\n    )\n  )\n", ic("rst_in/O", "a_TRELLIS_FF_Q/DI", 9000) + "      )\n    )\n  )\n", 1)
    sdf = sdf.replace("  )\n)\n", "  )\n" + pad + ")\n")
    ends, arrive, _, celltype = sdf_paths.endpoints(sdf)
    assert celltype["rst_in"] == "TRELLIS_IO" and arrive[("a_TRELLIS_FF_Q", "DI")] is None
    assert ends[0] == (3700 + 130, ("q_TRELLIS_FF_Q_1", "DI"))
