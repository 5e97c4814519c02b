"""The fused max-pool unit: pooled bytes equal scalenet.kernels.max_pool, byte for byte, in raster order.

Random conv-output tensors (odd and even heights/widths, one channel up to more than a bus word, int8 and
uint8, 2x2/2 and 3x3/2, floor and ceil mode) stream through one unit back to back with random input gaps
and random output back-pressure; the unit must emit exactly the reference's bytes and then go idle.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from scalenet import kernels
from scalenet.rtl.config import AcceleratorConfig
from scalenet.rtl.fused_pool import FusedMaxPool

CFG = AcceleratorConfig(rows=4, cols=4, max_width=32, max_channels=64, line_buffer_bytes=2048)


def reference(x_hwc, kernel, ceil):
    y = kernels.max_pool(x_hwc.transpose(2, 0, 1)[None], (kernel, kernel), (2, 2), 0, 1, ceil_mode=ceil)
    return y[0].transpose(1, 2, 0)


def cases(seed, n):
    rng = np.random.default_rng(seed)
    fixed = [  # (height, width, channels, kernel, ceil, signed)
        (2, 2, 1, 2, False, True),       # one window; one channel: back-to-back hits on one entry
        (3, 3, 1, 3, False, False),
        (5, 7, 3, 3, True, True),        # odd sizes: ceil == floor for 3x3/2
        (6, 8, 13, 3, True, False),      # even sizes: ceil adds an overhanging window
        (5, 5, 9, 2, True, True),        # 2x2/2 ceil on odd sizes: one-row/one-column windows
        (7, 4, 2, 2, False, False),      # floor drops the last row
    ]
    out = list(fixed)
    while len(out) < len(fixed) + n:
        k = int(rng.integers(2, 4))
        h, w = (int(v) for v in rng.integers(k, 11, 2))
        c = int(rng.choice([1, 2, 5, 8, 11, 17]))
        ceil = bool(rng.integers(0, 2))
        pw = kernels.pool_output_size(w, k, 2, 0, 0, 1, ceil)
        if pw * c <= CFG.pool_row_bytes:
            out.append((h, w, c, k, ceil, bool(rng.integers(0, 2))))
    return out


def run(cases_, seed=0, p_in=0.7, p_out=0.7):
    rng = np.random.default_rng(seed)
    dut = FusedMaxPool(CFG)
    tensors = []
    for h, w, c, k, ceil, signed in cases_:
        dt = np.int8 if signed else np.uint8
        info = np.iinfo(dt)
        tensors.append(rng.integers(info.min, info.max + 1, (h, w, c)).astype(dt))
    got, geometry, cycles = [], [], []

    async def bench(ctx):
        for (h, w, c, k, ceil, signed), x in zip(cases_, tensors):
            ctx.set(dut.shape, {"kernel3": int(k == 3), "ceil": int(ceil), "signed": int(signed),
                                "channels": c, "width": w, "height": h})
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            geometry.append((ctx.get(dut.out_height), ctx.get(dut.out_width)))
            expected_n = reference(x, k, ceil).size
            raw = x.view(np.uint8).reshape(-1).tolist()
            out, i, idle = [], 0, 0
            while i < len(raw) or len(out) < expected_n or ctx.get(dut.busy):
                offer = i < len(raw) and rng.random() < p_in
                take = rng.random() < p_out
                ctx.set(dut.i.valid, offer)
                ctx.set(dut.i.payload, raw[i] if offer else 0)
                ctx.set(dut.o.ready, take)
                _, _, i_ready, o_valid, o_data = await ctx.tick().sample(
                    dut.i.ready, dut.o.valid, dut.o.payload)
                if offer and i_ready:
                    i += 1
                if take and o_valid:
                    out.append(o_data)
                idle += 1
                assert idle < 20 * (len(raw) + 10), "the unit stopped making progress"
            ctx.set(dut.i.valid, 0)
            ctx.set(dut.o.ready, 1)
            for _ in range(4):                    # nothing more comes out once idle
                assert not ctx.get(dut.o.valid)
                await ctx.tick()
            got.append(out)
            cycles.append(idle)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return tensors, got, geometry, cycles


@pytest.mark.parametrize("seed", [0, 1])
def test_fused_pool_matches_reference(seed):
    cs = cases(seed, 6)
    tensors, got, geometry, _ = run(cs, seed=seed)
    for (h, w, c, k, ceil, signed), x, out, geo in zip(cs, tensors, got, geometry):
        y = reference(x, k, ceil)
        assert geo == y.shape[:2], (h, w, c, k, ceil)
        dt = np.int8 if signed else np.uint8
        np.testing.assert_array_equal(np.array(out, np.uint8).view(dt), y.reshape(-1),
                                      err_msg=f"{h}x{w}x{c} k{k} ceil={ceil} signed={signed}")


def test_full_rate_without_gaps():
    """Always valid and always ready: one byte per cycle in, no bubbles."""
    cs = [(6, 10, 5, 3, True, True), (8, 8, 16, 2, False, False)]
    tensors, got, _, cycles = run(cs, seed=5, p_in=1.0, p_out=1.0)
    for (h, w, c, k, ceil, signed), x, out, n in zip(cs, tensors, got, cycles):
        dt = np.int8 if signed else np.uint8
        assert n <= x.size + 7               # a byte per cycle, then the input register and two 3-cycle stages drain
        np.testing.assert_array_equal(np.array(out, np.uint8).view(dt), reference(x, k, ceil).reshape(-1))


def test_heavy_backpressure_on_short_lines():
    """One or two channels: every byte re-reads the entry written one or two cycles before (the forwarded
    writes), under long output stalls and input gaps."""
    cs = [(7, 9, 1, 3, True, True), (6, 7, 2, 2, True, False), (5, 6, 1, 2, False, True),
          (9, 5, 2, 3, False, False)]
    tensors, got, _, _ = run(cs, seed=11, p_in=0.9, p_out=0.25)
    for (h, w, c, k, ceil, signed), x, out in zip(cs, tensors, got):
        dt = np.int8 if signed else np.uint8
        np.testing.assert_array_equal(np.array(out, np.uint8).view(dt), reference(x, k, ceil).reshape(-1),
                                      err_msg=f"{h}x{w}x{c} k{k} ceil={ceil} signed={signed}")


@pytest.mark.parametrize("seed", [3, 4])
def test_forwarded_writes_under_input_gaps(seed):
    """Input gaps of one to a few cycles with the output always ready: an entry's newest value is then,
    by turns, each of the writes the block RAM's read cannot see yet (stage 2's in either of the two
    cycles after the byte arrives, or one of the two before), so every forwarding choice and its priority
    decide some byte."""
    cs = [(9, 11, 1, 3, True, True), (8, 9, 1, 2, True, False), (7, 10, 2, 3, False, False),
          (6, 7, 3, 3, True, True), (9, 6, 1, 3, False, False)]
    tensors, got, _, _ = run(cs, seed=seed, p_in=0.5, p_out=1.0)
    for (h, w, c, k, ceil, signed), x, out in zip(cs, tensors, got):
        dt = np.int8 if signed else np.uint8
        np.testing.assert_array_equal(np.array(out, np.uint8).view(dt), reference(x, k, ceil).reshape(-1),
                                      err_msg=f"{h}x{w}x{c} k{k} ceil={ceil} signed={signed}")
