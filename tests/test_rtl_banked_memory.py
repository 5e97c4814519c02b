# amaranth: UnusedElaboratable=no
"""BankedMemory: two-stage reads that hold when disabled, across bank boundaries, and its block-RAM use."""

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.sim import Simulator

from scalenet.boards.estimate import estimate_rtlil
from scalenet.rtl.banked_memory import BankedMemory


@pytest.mark.parametrize("depth,bank_depth", [(24, 8), (16, 16), (5, 4)])
def test_reads_two_enabled_cycles_later_and_hold_while_disabled(depth, bank_depth):
    dut = BankedMemory(8, depth, bank_depth=bank_depth)
    assert dut.banks == -(-depth // dut.bank_depth)
    rng = np.random.default_rng(depth)
    data = rng.integers(0, 256, depth)
    order = rng.permutation(depth)
    enables = rng.integers(0, 2, 4 * depth)          # a stalling reader
    got = []

    async def bench(ctx):
        ctx.set(dut.w_en, 1)
        for a, v in enumerate(data):
            ctx.set(dut.w_addr, a)
            ctx.set(dut.w_data, int(v))
            await ctx.tick()
        ctx.set(dut.w_en, 0)
        pending = list(order) + [0, 0]               # two more enabled cycles flush the pipeline
        issued = []
        for en in enables:
            if not pending:
                break
            ctx.set(dut.r_en, int(en))
            ctx.set(dut.r_addr, int(pending[0]))
            await ctx.tick()
            if en:
                issued.append(pending.pop(0))
                if len(issued) >= 2:
                    got.append(ctx.get(dut.r_data))
        ctx.set(dut.r_en, 1)
        while pending:
            ctx.set(dut.r_addr, int(pending.pop(0)))
            await ctx.tick()
            got.append(ctx.get(dut.r_data))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got[:depth] == [int(data[a]) for a in order]


def test_an_8x8_output_buffer_takes_the_same_block_rams_in_four_banks():
    est = estimate_rtlil(rtlil.convert(BankedMemory(8, 65536), name="ob"))
    assert len(est.memories) == 4 and est.brams == 32     # 16384 x 1 blocks, no depth multiplexer


def test_bad_geometry_is_refused():
    with pytest.raises(ValueError, match="power of two"):
        BankedMemory(8, 100, bank_depth=12)
