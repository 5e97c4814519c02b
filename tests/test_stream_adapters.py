"""Region adapters keep exactly a tensor's bytes: unaligned starts, strided pixels, back-pressure."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from scalenet.rtl.stream_adapters import BytesToWords, FifoSlice, SkidBuffer, WordSplitter, WordsToBytes


def region_of(addr, pixels, channels, stride, nb=8):
    span = (pixels - 1) * stride + channels
    lead = addr % nb
    words = -(-(lead + span) // nb)
    return dict(words=words, lead=lead, span=span, stride=stride, channels=channels), addr - lead


def tensor_offsets(addr, pixels, channels, stride):
    return [addr + p * stride + c for p in range(pixels) for c in range(channels)]


def region_producer(dut, region, items, rng):
    """A testbench that starts ``dut`` on ``region`` and offers ``items`` on its input with random gaps."""
    async def producer(ctx):
        ctx.set(dut.region, region)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for item in items:
            ctx.set(dut.i.payload, item)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
            if rng.random() < 0.3:
                await ctx.tick()
    return producer


CASES = [(0, 5, 8, 8), (3, 7, 3, 3), (13, 6, 5, 12), (6, 1, 2, 2), (1, 9, 1, 4),
         (5, 10, 1, 1), (0, 1, 1, 1), (7, 3, 16, 20), (8, 4, 2, 9)]


@pytest.mark.parametrize("addr, pixels, channels, stride", CASES)
def test_words_to_bytes_keeps_the_tensor_bytes(addr, pixels, channels, stride):
    rng = np.random.default_rng(addr + pixels)
    memory = rng.integers(0, 256, 256, dtype=np.uint8)
    region, base = region_of(addr, pixels, channels, stride)
    words = [int.from_bytes(memory[base + 8 * i: base + 8 * i + 8].tobytes(), "little") for i in range(region["words"])]
    want = [int(memory[o]) for o in tensor_offsets(addr, pixels, channels, stride)]
    dut = WordsToBytes()
    got = []

    producer = region_producer(dut, region, words, rng)

    async def consumer(ctx):
        for _ in range(400):
            ready = int(rng.random() < 0.7)
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid and ready:
                got.append(payload)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer, background=True)
    sim.run_until(400e-6)
    assert got == want


@pytest.mark.parametrize("addr, pixels, channels, stride", CASES)
def test_bytes_to_words_strobes_only_the_tensor_bytes(addr, pixels, channels, stride):
    rng = np.random.default_rng(7 * addr + pixels)
    region, base = region_of(addr, pixels, channels, stride)
    offsets = tensor_offsets(addr, pixels, channels, stride)
    values = [int(v) for v in rng.integers(0, 256, len(offsets))]
    memory = np.full(256, 0xAA, np.uint8)
    dut = BytesToWords()
    words = []

    producer = region_producer(dut, region, values, rng)

    async def consumer(ctx):
        for _ in range(400):
            ready = int(rng.random() < 0.6)
            ctx.set(dut.o.ready, ready)
            _, _, valid, data, strb = await ctx.tick().sample(dut.o.valid, dut.o.payload.data, dut.o.payload.strb)
            if valid and ready:
                words.append((data, strb))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer, background=True)
    sim.run_until(400e-6)
    assert len(words) == region["words"]
    for i, (data, strb) in enumerate(words):
        for b in range(8):
            if strb >> b & 1:
                memory[base + 8 * i + b] = (data >> (8 * b)) & 0xFF
    want = np.full(256, 0xAA, np.uint8)
    want[offsets] = values
    np.testing.assert_array_equal(memory, want)


def test_bytes_to_words_takes_a_byte_every_cycle():
    """Always valid, always ready: a byte per cycle (the walk steps on the adapter's own registers, not on
    the consumer's ready, and loses no cycle for it); and with the consumer stalled, the adapter holds two
    finished words and then stops taking bytes."""
    region, _ = region_of(0, 8, 8, 8)                    # 64 contiguous bytes: 8 words
    dut = BytesToWords()
    taken, words = [], []

    async def bench(ctx):
        ctx.set(dut.region, region)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.o.ready, 1)
        for cycle in range(100):
            ctx.set(dut.i.payload, len(taken) & 0xFF)
            ctx.set(dut.o.ready, not 20 <= cycle < 50)
            _, _, i_ready, o_valid, o_ready, data = await ctx.tick().sample(
                dut.i.ready, dut.o.valid, dut.o.ready, dut.o.payload.data)
            if i_ready and len(taken) < 64:
                taken.append(cycle)
            if o_valid and o_ready:
                words.append(data)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(words) == 8 and words[0] == int.from_bytes(bytes(range(8)), "little")
    # Until the stall: every cycle after the first (the adapter's own start register) takes a byte.
    assert taken[:19] == list(range(1, 20))
    # Stalled from cycle 20: it fills the word on offer, the one behind it and the word being assembled
    # (at most 24 bytes), then takes nothing until the consumer is back, and then all the rest.
    stalled = [c for c in taken if 20 <= c < 50]
    assert len(stalled) <= 24 and stalled == list(range(20, 20 + len(stalled)))
    assert len(taken) == 64 and taken[len(stalled) + 19] >= 50


def test_word_splitter_orders_parts_least_significant_first():
    dut = WordSplitter(64, 16)
    out = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        for w in (0x0123_4567_89AB_CDEF, 0xFEDC_BA98_7654_3210):
            ctx.set(dut.i.payload, w)
            ctx.set(dut.i.valid, 1)
            for _ in range(4):
                _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
                out.append(payload)
        ctx.set(dut.i.valid, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert out == [0xCDEF, 0x89AB, 0x4567, 0x0123, 0x3210, 0x7654, 0xBA98, 0xFEDC]


@pytest.mark.parametrize("slice_", [SkidBuffer, FifoSlice])
@pytest.mark.parametrize("p_valid, p_ready", [(1.0, 1.0), (0.7, 0.6), (0.3, 0.9), (1.0, 0.2)])
def test_register_slice_passes_every_beat_in_order_at_full_rate(p_valid, p_ready, slice_):
    """Random valid/ready on both sides: every beat once, in order; with both sides always willing, one
    beat per cycle; and its i.ready and o.valid never follow the other side within the cycle (registers)."""
    dut = slice_(16)
    sent = list(range(1, 301))
    got, cycles = [], []
    rng = np.random.default_rng(int(p_valid * 10 + p_ready * 100))

    async def bench(ctx):
        i = n = 0
        while len(got) < len(sent) and n < 20_000:
            v = i < len(sent) and rng.random() < p_valid
            r = rng.random() < p_ready
            ctx.set(dut.i.valid, v)
            ctx.set(dut.i.payload, sent[i] if i < len(sent) else 0)
            ctx.set(dut.o.ready, r)
            i_ready, o_valid, o_data = ctx.get(dut.i.ready), ctx.get(dut.o.valid), ctx.get(dut.o.payload)
            ctx.set(dut.o.ready, not r)            # flipping the consumer changes nothing this cycle
            ctx.set(dut.i.valid, not v)
            assert (ctx.get(dut.i.ready), ctx.get(dut.o.valid)) == (i_ready, o_valid)
            ctx.set(dut.o.ready, r)
            ctx.set(dut.i.valid, v)
            await ctx.tick()
            n += 1
            if v and i_ready:
                i += 1
            if o_valid and r:
                got.append(o_data)
        cycles.append(n)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == sent
    if p_valid == p_ready == 1.0:
        assert cycles[0] == len(sent) + 1          # one cycle of latency, then a beat every cycle
