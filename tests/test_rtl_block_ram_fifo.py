# amaranth: UnusedElaboratable=no
"""BlockRamFIFO in amaranth.sim against a deque: random pushes and pops keep order and never lose or invent
an entry, it holds exactly ``depth`` (+ queue) entries, streams one entry per cycle, and its block is the
one memory marked for undefined collisions (so synthesis puts nothing between block and register)."""

import collections
import random
import re

import pytest
from amaranth.back import rtlil
from amaranth.sim import Simulator

from scalenet.rtl.block_ram_fifo import OUT_QUEUE, BlockRamFIFO
from scalenet.rtl.collisions import undefined_collisions


def run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("depth,p_push,p_pop", [(16, 0.7, 0.3), (16, 0.3, 0.8), (5, 0.5, 0.5), (1, 0.6, 0.6)])
def test_random_traffic_matches_a_deque(depth, p_push, p_pop):
    dut = BlockRamFIFO(width=8, depth=depth)
    rng = random.Random(depth * 100 + int(p_push * 10))
    model, popped, pushed = collections.deque(), [], []

    async def bench(ctx):
        for _ in range(1500):
            push, pop = rng.random() < p_push, rng.random() < p_pop
            value = rng.randrange(256)
            ctx.set(dut.w_data, value)
            ctx.set(dut.w_en, push)
            ctx.set(dut.r_en, pop)
            w_rdy, r_rdy, r_data, level = ctx.get(dut.w_rdy), ctx.get(dut.r_rdy), ctx.get(dut.r_data), \
                ctx.get(dut.level)
            assert level == len(model)
            assert level <= depth + OUT_QUEUE
            if pop and r_rdy:
                assert r_data == model.popleft()
                popped.append(r_data)
            if push and w_rdy:
                model.append(value)
                pushed.append(value)
            await ctx.tick()

    run(dut, bench)
    assert len(popped) > 200 and popped == pushed[:len(popped)]


@pytest.mark.parametrize("depth", [1, 7, 16])
def test_fills_to_capacity_then_refuses(depth):
    """With nobody popping, it takes ``depth`` entries in the block plus OUT_QUEUE in the queue, then
    drops ``w_rdy``; popping everything returns them in order."""
    dut = BlockRamFIFO(width=8, depth=depth)

    async def bench(ctx):
        accepted = []
        ctx.set(dut.w_en, 1)
        for i in range(2 * (depth + OUT_QUEUE) + 10):
            ctx.set(dut.w_data, i)
            if ctx.get(dut.w_rdy):
                accepted.append(i)
            await ctx.tick()
        ctx.set(dut.w_en, 0)
        await ctx.tick().repeat(4)
        assert len(accepted) == depth + OUT_QUEUE
        assert ctx.get(dut.level) == depth + OUT_QUEUE and not ctx.get(dut.w_rdy)
        out = []
        ctx.set(dut.r_en, 1)
        for _ in range(depth + OUT_QUEUE + 10):
            if ctx.get(dut.r_rdy):
                out.append(ctx.get(dut.r_data))
            await ctx.tick()
        assert out == accepted
        assert ctx.get(dut.level) == 0 and not ctx.get(dut.r_rdy)

    run(dut, bench)


def test_streams_one_entry_per_cycle():
    """Producer and consumer always ready: after the fill latency, an entry leaves every cycle."""
    dut = BlockRamFIFO(width=8, depth=64)
    n = 200

    async def bench(ctx):
        ctx.set(dut.r_en, 1)
        ctx.set(dut.w_en, 1)
        sent, got, cycles = 0, [], []
        for cycle in range(n + 20):
            ctx.set(dut.w_data, sent & 0xFF)
            ctx.set(dut.w_en, sent < n)
            if sent < n and ctx.get(dut.w_rdy):
                sent += 1
            if ctx.get(dut.r_rdy):
                got.append(ctx.get(dut.r_data))
                cycles.append(cycle)
            await ctx.tick()
        assert got == [i & 0xFF for i in range(n)]
        assert cycles[-1] - cycles[0] == n - 1

    run(dut, bench)


def test_its_block_is_marked_for_undefined_collisions():
    dut = BlockRamFIFO(width=8, depth=256)
    text = undefined_collisions(rtlil.convert(dut))
    top = re.search(r"^module \\top\n(.*?)^end\n", text, re.S | re.M).group(1)
    cells = re.findall(r"cell \$memrd_v2 .*?\n *end\n", top, re.S)
    assert len(cells) == 1 and 'MEMID "\\\\storage"' in cells[0] and "COLLISION_X_MASK 1'1\n" in cells[0]


@pytest.mark.parametrize("kwargs", [{"width": 0, "depth": 4}, {"width": 8, "depth": 0}, {"width": 8, "depth": 2.5}])
def test_bad_geometry_is_refused(kwargs):
    with pytest.raises(ValueError, match="must be a positive integer"):
        BlockRamFIFO(**kwargs)
