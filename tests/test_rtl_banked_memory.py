# amaranth: UnusedElaboratable=no
"""BankedMemory: two- or three-stage reads that hold when disabled, across bank boundaries, and its block-RAM use."""

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.sim import Simulator

from scalenet.boards.estimate import estimate_rtlil
from scalenet.rtl.banked_memory import BankedMemory


def simulate(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


async def write(ctx, dut, writes):
    """(address, data, enables) per cycle, then the write port idle."""
    for a, v, e in writes:
        ctx.set(dut.w_addr, a)
        ctx.set(dut.w_data, v)
        ctx.set(dut.w_en, e)
        await ctx.tick()
    ctx.set(dut.w_en, 0)


@pytest.mark.parametrize("latency", [2, 3])
@pytest.mark.parametrize("depth,bank_depth", [(24, 8), (16, 16), (5, 4)])
def test_reads_read_latency_enabled_cycles_later_and_hold_while_disabled(depth, bank_depth, latency):
    dut = BankedMemory(8, depth, bank_depth=bank_depth, read_latency=latency)
    assert dut.banks == -(-depth // dut.bank_depth)
    rng = np.random.default_rng(depth)
    data = rng.integers(0, 256, depth)
    order = rng.permutation(depth)
    enables = rng.integers(0, 2, 4 * depth)          # a stalling reader
    got = []

    async def bench(ctx):
        await write(ctx, dut, [(a, int(v), 1) for a, v in enumerate(data)])
        pending = list(order) + [0] * latency        # latency more enabled cycles flush the pipeline
        issued = []
        for en in enables:
            if not pending:
                break
            ctx.set(dut.r_en, int(en))
            ctx.set(dut.r_addr, int(pending[0]))
            await ctx.tick()
            if en:
                issued.append(pending.pop(0))
                if len(issued) >= latency:
                    got.append(ctx.get(dut.r_data))
        ctx.set(dut.r_en, 1)
        while pending:
            ctx.set(dut.r_addr, int(pending.pop(0)))
            await ctx.tick()
            got.append(ctx.get(dut.r_data))

    simulate(dut, bench)
    assert got[:depth] == [int(data[a]) for a in order]


def test_an_8x8_output_buffer_takes_the_same_block_rams_in_four_banks():
    est = estimate_rtlil(rtlil.convert(BankedMemory(8, 65536), name="ob"))
    assert len(est.memories) == 4 and est.brams == 32     # 16384 x 1 blocks, no depth multiplexer


def test_byte_enables_write_only_their_bytes_in_every_bank():
    dut = BankedMemory(32, 12, bank_depth=4, granularity=8)
    rng = np.random.default_rng(7)
    writes = [(int(a), int(v), int(e)) for a, v, e in zip(rng.integers(0, 12, 60), rng.integers(0, 1 << 32, 60),
                                                           rng.integers(0, 16, 60))]
    model = [0] * 12
    for a, v, e in writes:
        mask = sum(0xFF << 8 * b for b in range(4) if e >> b & 1)
        model[a] = model[a] & ~mask | v & mask
    got = []

    async def bench(ctx):
        await write(ctx, dut, writes)
        ctx.set(dut.r_en, 1)
        for a in [*range(12), 0]:
            ctx.set(dut.r_addr, a)
            await ctx.tick()
            got.append(ctx.get(dut.r_data))

    simulate(dut, bench)
    assert got[1:] == model             # r_data after the second enabled cycle


@pytest.mark.parametrize("granularity", [None, 8])
def test_a_registered_write_lands_a_cycle_later_in_its_own_bank_only(granularity):
    """``registered_write``: a write presented in cycle k is in its block from edge k + 1, so a read sampled on
    edge k + 2 sees it while one on edge k + 1 still sees the old word (simulation's collision rule)."""
    dut = BankedMemory(16, 12, bank_depth=4, granularity=granularity, registered_write=True)
    full = 0b11 if granularity else 1
    got = []

    async def bench(ctx):
        ctx.set(dut.r_en, 1)
        await write(ctx, dut, [(a, 0x1000 + a, full) for a in range(12)])
        await ctx.tick()                                    # the last write lands
        for a, v, e in [(5, 0xABCD, full), (9, 0x1234, 0b01 if granularity else 1)]:
            await write(ctx, dut, [(a, v, e)])              # presented in cycle k (before edge k)
            ctx.set(dut.r_addr, a)
            await ctx.tick()                                # edge k + 1: read, while the word is written
            await ctx.tick()                                # edge k + 2: read again
            got.append(ctx.get(dut.r_data))                 # the read of edge k + 1
            await ctx.tick()
            got.append(ctx.get(dut.r_data))                 # the read of edge k + 2
        for a in [*range(12), 0]:
            ctx.set(dut.r_addr, a)
            await ctx.tick()
            got.append(ctx.get(dut.r_data))

    simulate(dut, bench)
    new9 = 0x1034 if granularity else 0x1234
    model = [0x1000 + a for a in range(12)]
    model[5], model[9] = 0xABCD, new9
    assert got[:4] == [0x1005, 0xABCD, 0x1009, new9]
    assert got[5:] == model             # r_data after the second enabled cycle


def test_bad_geometry_is_refused():
    with pytest.raises(ValueError, match="power of two"):
        BankedMemory(8, 100, bank_depth=12)
    with pytest.raises(ValueError, match="granularity"):
        BankedMemory(32, 100, granularity=12)
    with pytest.raises(ValueError, match="read_latency"):
        BankedMemory(8, 100, read_latency=1)
