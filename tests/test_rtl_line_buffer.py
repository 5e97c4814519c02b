# amaranth: UnusedElaboratable=no
"""The line buffer against numpy windows of the padded image."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from scalenet.rtl.line_buffer import LineBuffer


def numpy_windows(img, k, stride, pad, pad_value):
    """All ``k x k`` windows of the padded image, raster order (ONNX floor mode): (N, k, k)."""
    xp = np.pad(img, pad, constant_values=pad_value)
    oh = (xp.shape[0] - k) // stride + 1
    ow = (xp.shape[1] - k) // stride + 1
    return np.array([xp[oy * stride:oy * stride + k, ox * stride:ox * stride + k]
                     for oy in range(oh) for ox in range(ow)])


def simulate(dut, frames, *, k, stride, pad, pad_value, seed=0, gap_p=0.3, ready_p=0.7):
    """Stream ``frames`` (2-D arrays of one shape) through ``dut``.

    Returns the windows, their ``last`` flags and the clock edge at which each was taken.
    """
    rng = np.random.default_rng(seed)
    h, w = frames[0].shape
    oh = (h + 2 * pad - k) // stride + 1
    ow = (w + 2 * pad - k) // stride + 1
    expected = len(frames) * oh * ow
    windows, lasts, cycles = [], [], []

    async def producer(ctx):
        ctx.set(dut.width, w)
        ctx.set(dut.height, h)
        ctx.set(dut.kernel, k)
        ctx.set(dut.stride, stride)
        ctx.set(dut.pad, pad)
        ctx.set(dut.pad_value, pad_value)
        for frame in frames:
            for value in frame.reshape(-1):
                if rng.random() < gap_p:
                    ctx.set(dut.i.valid, 0)
                    await ctx.tick().repeat(int(rng.integers(1, 3)))
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, int(value))
                await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        cycle = 0
        while len(windows) < expected:
            ready = rng.random() < ready_p
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            cycle += 1
            if valid and ready:
                cycles.append(cycle)
                windows.append([[payload.window[r][c] for c in range(k)] for r in range(k)])
                lasts.append(payload.last)
        ctx.set(dut.o.ready, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    padded = (h + 2 * pad) * (w + 2 * pad)
    sim.run_until(1e-8 * (len(frames) * padded * 4 / ready_p + len(frames) * h * w * 3 + 50))
    assert len(windows) == expected, f"only {len(windows)} of {expected} windows came out"
    return np.array(windows, dtype=np.int64).reshape(expected, k, k), lasts, cycles


CASES = [
    # k, stride, pad, height, width
    (3, 1, 1, 5, 6),
    (3, 2, 1, 6, 7),
    (1, 1, 0, 3, 4),
    (2, 2, 0, 6, 6),
    (5, 1, 2, 4, 6),
    (5, 2, 0, 9, 7),
    (7, 2, 3, 7, 8),
    (7, 1, 0, 8, 9),
    (3, 1, 2, 3, 3),
]


@pytest.mark.parametrize("k,stride,pad,h,w", CASES)
def test_windows_match_numpy(k, stride, pad, h, w):
    """Two frames back to back, random input gaps and output back-pressure."""
    rng = np.random.default_rng(100 * k + 10 * stride + pad)
    frames = [rng.integers(0, 256, size=(h, w)) for _ in range(2)]
    pad_value = int(rng.integers(0, 256))
    dut = LineBuffer(max_width=12, kmax=7)
    got, lasts, _ = simulate(dut, frames, k=k, stride=stride, pad=pad, pad_value=pad_value, seed=k + w)
    want = np.concatenate([numpy_windows(f, k, stride, pad, pad_value) for f in frames])
    np.testing.assert_array_equal(got, want)
    per_frame = len(want) // 2
    assert [i for i, last in enumerate(lasts) if last] == [per_frame - 1, 2 * per_frame - 1]


def test_channel_vector_words_and_small_kmax():
    """16-bit words (two packed channels), kmax 3, an image exactly max_width wide, width-1 images."""
    rng = np.random.default_rng(5)
    dut = LineBuffer(max_width=5, kmax=3, data_width=16)
    frame = rng.integers(0, 2**16, size=(4, 5))
    got, _, _ = simulate(dut, [frame], k=3, stride=1, pad=1, pad_value=0x8080, seed=1)
    np.testing.assert_array_equal(got, numpy_windows(frame, 3, 1, 1, 0x8080))

    dut = LineBuffer(max_width=5, kmax=3, data_width=16)
    column = rng.integers(0, 2**16, size=(5, 1))
    got, _, _ = simulate(dut, [column, column[::-1]], k=1, stride=1, pad=0, pad_value=0, seed=2)
    want = np.concatenate([numpy_windows(column, 1, 1, 0, 0), numpy_windows(column[::-1], 1, 1, 0, 0)])
    np.testing.assert_array_equal(got, want)


def test_full_rate_without_padding_stalls():
    """With an always-valid source and always-ready sink, one padded position per cycle."""
    rng = np.random.default_rng(8)
    h, w, k, pad = 6, 8, 3, 1
    frame = rng.integers(0, 256, size=(h, w))
    dut = LineBuffer(max_width=8, kmax=5)
    got, _, cycles = simulate(dut, [frame], k=k, stride=1, pad=pad, pad_value=3, gap_p=0.0, ready_p=1.0)
    np.testing.assert_array_equal(got, numpy_windows(frame, k, 1, pad, 3))
    # The last window is complete at the last padded position, plus two register stages.
    assert cycles[-1] == (h + 2 * pad) * (w + 2 * pad) + 2


def test_bad_parameters():
    with pytest.raises(TypeError, match="kmax must be an integer greater than or equal to 1"):
        LineBuffer(max_width=8, kmax=0)
    with pytest.raises(TypeError, match="max_width must be an integer"):
        LineBuffer(max_width="8")
