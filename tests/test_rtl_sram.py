"""AxiSram in amaranth.sim against a dictionary: random INCR bursts with byte strobes, random R back-pressure,
ids carried through, bursts beyond the memory answered DECERR, and one beat per cycle when nobody stalls."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from scalenet.rtl import axi
from scalenet.rtl.banked_memory import BANK_DEPTH
from scalenet.rtl.sram import AxiSram

NB = 8


def run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


async def write_burst(ctx, bus, addr, beats, strobes, wid=0):
    ctx.set(bus.aw.addr, addr)
    ctx.set(bus.aw.len, len(beats) - 1)
    ctx.set(bus.aw.id, wid)
    ctx.set(bus.aw.valid, 1)
    await ctx.tick().until(bus.aw.ready)
    ctx.set(bus.aw.valid, 0)
    for i, (word, strb) in enumerate(zip(beats, strobes)):
        ctx.set(bus.w.data, word)
        ctx.set(bus.w.strb, strb)
        ctx.set(bus.w.last, i == len(beats) - 1)
        ctx.set(bus.w.valid, 1)
        await ctx.tick().until(bus.w.ready)
    ctx.set(bus.w.valid, 0)
    ctx.set(bus.b.ready, 1)
    resp, bid = await ctx.tick().sample(bus.b.resp, bus.b.id).until(bus.b.valid)
    ctx.set(bus.b.ready, 0)
    return axi.Resp(resp), bid


async def read_burst(ctx, bus, addr, n, rng, p_ready=0.6, rid=0):
    """The burst's (data, resp, id, last) beats and the cycle each arrived in."""
    ctx.set(bus.ar.addr, addr)
    ctx.set(bus.ar.len, n - 1)
    ctx.set(bus.ar.id, rid)
    ctx.set(bus.ar.valid, 1)
    await ctx.tick().until(bus.ar.ready)
    ctx.set(bus.ar.valid, 0)
    beats, cycles, cycle = [], [], 0
    while len(beats) < n:
        ready = rng is None or rng.random() < p_ready
        ctx.set(bus.r.ready, ready)
        _, _, valid, data, resp, bid, last = await ctx.tick().sample(
            bus.r.valid, bus.r.data, bus.r.resp, bus.r.id, bus.r.last)
        cycle += 1
        if valid and ready:
            beats.append((data, axi.Resp(resp), bid, last))
            cycles.append(cycle)
    ctx.set(bus.r.ready, 0)
    return beats, cycles


@pytest.mark.parametrize("mem_bytes", [3 * 1024, 259 * 1024])       # one block-RAM bank; three
def test_random_bursts_match_a_byte_model(mem_bytes):
    dut = AxiSram(mem_bytes, data_bytes=NB, id_width=1)
    words = mem_bytes // NB
    rng = np.random.default_rng(mem_bytes)
    model = {}

    async def bench(ctx):
        for k in range(40):
            n = int(rng.integers(1, 20))
            start = int(rng.integers(0, words - n + 1))
            if k % 3 == 0 and words > BANK_DEPTH:                  # across a bank boundary
                start = BANK_DEPTH - int(rng.integers(1, n + 1))
            beats = [int(v) for v in rng.integers(0, 1 << 62, n)]
            strobes = [int(v) for v in rng.integers(0, 256, n)]
            start_w = start
            resp, bid = await write_burst(ctx, dut.bus, start * NB, beats, strobes, wid=k & 1)
            assert resp == axi.Resp.OKAY and bid == k & 1
            for i, (word, strb) in enumerate(zip(beats, strobes)):
                for b in range(NB):
                    if strb >> b & 1:
                        model[(start + i) * NB + b] = word >> 8 * b & 0xFF
            n = int(rng.integers(1, 24))
            start = int(rng.integers(0, words - n + 1))
            if k % 3 == 0:
                start = max(0, min(words - n, start_w + int(rng.integers(-4, 4))))   # over the data just written
            got, _ = await read_burst(ctx, dut.bus, start * NB, n, rng, rid=~k & 1)
            for i, (data, resp, bid, last) in enumerate(got):
                want = sum(model.get((start + i) * NB + b, 0) << 8 * b for b in range(NB))
                assert (data, resp, bid, last) == (want, axi.Resp.OKAY, ~k & 1, i == n - 1), (k, i)

    run(dut, bench)


def test_bursts_beyond_the_memory_are_decerr_and_write_nothing():
    dut = AxiSram(1024, data_bytes=NB, id_width=1)
    words = 1024 // NB

    async def bench(ctx):
        resp, _ = await write_burst(ctx, dut.bus, (words - 2) * NB, [1, 2, 3, 4], [0xFF] * 4)
        assert resp == axi.Resp.DECERR
        got, _ = await read_burst(ctx, dut.bus, (words - 2) * NB, 2, None)
        assert [(d, r) for d, r, _, _ in got] == [(0, axi.Resp.OKAY)] * 2      # the refused burst wrote nothing
        await write_burst(ctx, dut.bus, (words - 1) * NB, [0xAB], [0xFF])
        got, _ = await read_burst(ctx, dut.bus, (words - 1) * NB, 3, None)    # runs past the end
        assert [(d, r, last) for d, r, _, last in got] == [(0, axi.Resp.DECERR, 0)] * 2 + [(0, axi.Resp.DECERR, 1)]
        got, _ = await read_burst(ctx, dut.bus, (words - 1) * NB, 1, None)
        assert [(d, r) for d, r, _, _ in got] == [(0xAB, axi.Resp.OKAY)]

    run(dut, bench)


def test_one_beat_per_cycle_without_back_pressure():
    """The read pipeline's credits cover its round trip: a 256-beat burst streams without a bubble."""
    dut = AxiSram(4096, data_bytes=NB, id_width=1)

    async def bench(ctx):
        words = list(range(1, 257))
        for i in range(0, 256, 64):
            await write_burst(ctx, dut.bus, i * NB, words[i:i + 64], [0xFF] * 64)
        got, cycles = await read_burst(ctx, dut.bus, 0, 256, None)
        assert [d for d, _, _, _ in got] == words
        assert cycles == list(range(cycles[0], cycles[0] + 256))

    run(dut, bench)
