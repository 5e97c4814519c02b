# amaranth: UnusedElaboratable=no
"""The PE array against numpy int64 matrix products and the reference convolution."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from scalenet.kernels import conv
from scalenet.rtl.pe_array import PEArray


def run_tiles(dut, tiles, *, x_signed, x_zp=0, w_zp=0, seed=0, ready_p=1.0, gap_p=0.0):
    """Feed tiles ``(W (rows, K) int8, X (K, cols) int8/uint8)``; return the drained sums per tile.

    Also returns per-cycle records of ``mac_active`` and of input accepts, for throughput checks.
    """
    rng = np.random.default_rng(seed)
    rows, cols = dut.rows, dut.cols
    results, trace = [], {"mac": 0, "accepts": [], "gaps": 0}
    total_beats = sum(w.shape[1] for w, _ in tiles)
    done = {"in": False}

    async def producer(ctx):
        ctx.set(dut.x_signed, x_signed)
        ctx.set(dut.x_zero_point, x_zp)
        ctx.set(dut.w_zero_point, w_zp)
        for w, x in tiles:
            k = w.shape[1]
            for step in range(k):
                if gap_p and rng.random() < gap_p:
                    ctx.set(dut.i.valid, 0)
                    await ctx.tick()
                    trace["gaps"] += 1
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {
                    "w": [int(v) for v in w[:, step]],
                    "x": [int(v) & 0xFF for v in x[step, :]],
                    "first": step == 0,
                    "last": step == k - 1,
                })
                await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
        done["in"] = True

    async def consumer(ctx):
        cycle = 0
        current = []
        while len(results) < len(tiles):
            ready = rng.random() < ready_p
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload, mac, i_valid, i_ready = await ctx.tick().sample(
                dut.o.valid, dut.o.payload, dut.mac_active, dut.i.valid, dut.i.ready)
            cycle += 1
            trace["mac"] += mac
            if i_valid and i_ready:
                trace["accepts"].append(cycle)
            if valid and ready:
                assert payload.row == len(current)
                current.append([payload.acc[c] for c in range(cols)])
                assert payload.last == (len(current) == rows)
                if payload.last:
                    results.append(np.array(current, dtype=np.int64))
                    current = []
        ctx.set(dut.o.ready, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    budget = (total_beats + len(tiles) * (rows + 8)) * (1 + 2 * (1 - ready_p) * rows + gap_p) * 2 + 50
    sim.run_until(1e-8 * budget)
    assert len(results) == len(tiles), f"only {len(results)} of {len(tiles)} tiles drained"
    assert trace["mac"] == total_beats
    assert trace["gaps"] > 0 or not gap_p
    return results, trace


def reference(w, x, x_zp, w_zp):
    return (w.astype(np.int64) - w_zp) @ (x.astype(np.int64) - x_zp)


@pytest.mark.parametrize("rows,cols", [(4, 4), (8, 8), (3, 5)])
def test_matrix_tiles_int8(rows, cols):
    """Back-to-back int8 tiles of several reduction lengths (1 and shorter than the drain too)."""
    rng = np.random.default_rng(rows * 10 + cols)
    dut = PEArray(rows, cols)
    ks = [17, 1, 3, 24] if rows * cols <= 16 else [12, 2]
    tiles = [(rng.integers(-128, 128, size=(rows, k), dtype=np.int64),
              rng.integers(-128, 128, size=(k, cols), dtype=np.int64)) for k in ks]
    # Extremes: all -128 (the largest products) in the first tile.
    tiles[0][0][0, :] = -128
    tiles[0][1][:, 0] = -128
    got, _ = run_tiles(dut, tiles, x_signed=1, seed=1, ready_p=0.6, gap_p=0.25)
    for (w, x), g in zip(tiles, got):
        np.testing.assert_array_equal(g, reference(w, x, 0, 0))


@pytest.mark.parametrize("x_signed,x_zp,w_zp", [(0, 128, 0), (0, 0, 0), (0, 255, -3), (1, -128, 0), (1, 37, 5)])
def test_zero_points(x_signed, x_zp, w_zp):
    """uint8 and int8 activations with zero points (9-bit signed operands) and weight zero points."""
    rng = np.random.default_rng(x_zp + 1000 * x_signed + w_zp)
    dut = PEArray(4, 4)
    lo, hi = (-128, 128) if x_signed else (0, 256)
    tiles = [(rng.integers(-128, 128, size=(4, k), dtype=np.int64),
              rng.integers(lo, hi, size=(k, 4), dtype=np.int64)) for k in (9, 5)]
    tiles[0][1][0, :] = lo if x_zp > 0 else hi - 1          # the operand furthest from the zero point
    got, _ = run_tiles(dut, tiles, x_signed=x_signed, x_zp=x_zp, w_zp=w_zp, seed=2, ready_p=0.8)
    for (w, x), g in zip(tiles, got):
        np.testing.assert_array_equal(g, reference(w, x, x_zp, w_zp))


def test_conv3x3_tiles_full_rate():
    """A 3x3 convolution (uint8 activations with a zero point, padding 1) as output-stationary tiles:
    rows = output channels, cols = output positions; every PE busy every cycle of every tile."""
    rows = cols = 4
    cin, cout, h, w = 3, 8, 4, 4
    rng = np.random.default_rng(9)
    x = rng.integers(0, 256, size=(1, cin, h, w), dtype=np.uint8)
    wt = rng.integers(-128, 128, size=(cout, cin, 3, 3), dtype=np.int8)
    x_zp = 113
    want = conv(x, wt, pads=1, x_zero_point=x_zp)[0].astype(np.int64)       # (cout, h, w)
    assert want.shape == (cout, h, w)
    # im2col on the padded input; the padding holds the zero point (contributes 0 after subtraction).
    xp = np.pad(x[0].astype(np.int64), ((0, 0), (1, 1), (1, 1)), constant_values=x_zp)
    patches = np.stack([xp[:, oy:oy + 3, ox:ox + 3].reshape(-1) for oy in range(h) for ox in range(w)], axis=1)
    wmat = wt.reshape(cout, -1).astype(np.int64)                          # (cout, cin*9), same order
    tiles, where = [], []
    for co in range(0, cout, rows):
        for pos in range(0, h * w, cols):
            tiles.append((wmat[co:co + rows], patches[:, pos:pos + cols]))
            where.append((co, pos))
    dut = PEArray(rows, cols)
    got, trace = run_tiles(dut, tiles, x_signed=0, x_zp=x_zp, seed=3)
    out = np.zeros((cout, h * w), dtype=np.int64)
    for (co, pos), g in zip(where, got):
        out[co:co + rows, pos:pos + cols] = g
    np.testing.assert_array_equal(out.reshape(cout, h, w), want)
    # Reduction length 27 >= rows + 5 and an always-ready consumer: one beat per cycle, no stalls.
    accepts = trace["accepts"]
    assert len(accepts) == len(tiles) * cin * 9
    assert accepts[-1] - accepts[0] == len(accepts) - 1


@pytest.mark.parametrize("extra,stalls", [(5, False), (4, True)])
def test_shortest_tile_without_stalls(extra, stalls):
    """Tiles of ``rows + 5`` beats run back to back (drain hidden); one beat shorter and the input stalls."""
    rows = cols = 4
    k = rows + extra
    rng = np.random.default_rng(extra)
    tiles = [(rng.integers(-128, 128, size=(rows, k)), rng.integers(-128, 128, size=(k, cols))) for _ in range(4)]
    got, trace = run_tiles(PEArray(rows, cols), tiles, x_signed=1, seed=6)
    for (w, x), g in zip(tiles, got):
        np.testing.assert_array_equal(g, reference(w, x, 0, 0))
    accepts = trace["accepts"]
    assert (accepts[-1] - accepts[0] > len(accepts) - 1) == stalls


def test_mac_active_counts_only_real_work():
    """With input gaps the array idles: mac_active counts accepted beats, not cycles."""
    rng = np.random.default_rng(4)
    dut = PEArray(4, 4)
    tiles = [(rng.integers(-128, 128, size=(4, 10)), rng.integers(-128, 128, size=(10, 4)))]
    got, trace = run_tiles(dut, tiles, x_signed=1, seed=5, gap_p=0.5)
    np.testing.assert_array_equal(got[0], reference(*tiles[0], 0, 0))
    assert trace["accepts"][-1] - trace["accepts"][0] > 10               # gaps really happened
    assert dut.macs_per_cycle == 16


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_bad_dimensions(bad):
    with pytest.raises(TypeError, match="rows must be a positive integer"):
        PEArray(bad, 4)
