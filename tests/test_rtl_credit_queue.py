# amaranth: UnusedElaboratable=no
"""CreditQueue at the end of a stall-free pipeline of L registers, in amaranth.sim: under random issue
and consumer traffic every item arrives once and in order (an overflowing queue would drop one), exactly
``depth`` items are issued while nobody pops, and with ``depth >= L + 3`` it streams one item per cycle."""

import random

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from scalenet.rtl.credit_queue import CreditQueue


class Pipeline(wiring.Component):
    """``want`` issues a counter value whenever the queue has credit; it reaches the queue L cycles later."""

    want: In(1)
    issued: Out(1)

    def __init__(self, latency, depth):
        self.latency, self.depth = latency, depth
        self.queue = CreditQueue(width=16, depth=depth)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.queue = q = self.queue
        count = Signal(16)
        m.d.comb += [self.issued.eq(self.want & q.ok), q.issue.eq(self.issued)]
        with m.If(self.issued):
            m.d.sync += count.eq(count + 1)
        valid, value = self.issued, count
        for i in range(self.latency):
            v, d = Signal(name=f"v{i}"), Signal(16, name=f"d{i}")
            m.d.sync += [v.eq(valid), d.eq(value)]
            valid, value = v, d
        m.d.comb += [q.w_en.eq(valid), q.w_data.eq(value)]
        return m


def run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("latency,depth,p_want,p_ready", [
    (1, 2, 0.9, 0.5), (4, 4, 0.7, 0.3), (6, 16, 0.8, 0.9), (9, 5, 0.5, 0.5), (0, 3, 1.0, 0.4)])
def test_random_traffic_delivers_every_item_once_in_order(latency, depth, p_want, p_ready):
    dut = Pipeline(latency, depth)
    rng = random.Random(latency * 31 + depth)
    got, issued = [], [0]

    async def bench(ctx):
        for _ in range(1500):
            ctx.set(dut.want, rng.random() < p_want)
            ctx.set(dut.queue.out.ready, rng.random() < p_ready)
            issued[0] += ctx.get(dut.issued)
            if ctx.get(dut.queue.out.valid) and ctx.get(dut.queue.out.ready):
                got.append(ctx.get(dut.queue.out.payload))
            await ctx.tick()
        ctx.set(dut.want, 0)
        ctx.set(dut.queue.out.ready, 1)
        for _ in range(latency + depth + 5):
            if ctx.get(dut.queue.out.valid):
                got.append(ctx.get(dut.queue.out.payload))
            await ctx.tick()
        assert ctx.get(dut.queue.idle) and ctx.get(dut.queue.ok)

    run(dut, bench)
    assert len(got) > 300 and got == list(range(issued[0]))


@pytest.mark.parametrize("latency,depth,gaps", [(3, 4, False), (7, 16, False), (3, 4, True), (2, 5, True)])
def test_issues_exactly_depth_items_while_nobody_pops(latency, depth, gaps):
    """With ``gaps`` the pipeline wants an item every other cycle only, so the count also holds still
    (neither issue nor pop) at every level, the last free one included."""
    dut = Pipeline(latency, depth)

    async def bench(ctx):
        n = 0
        for cycle in range(6 * depth + latency):
            ctx.set(dut.want, not (gaps and cycle % 2))
            n += ctx.get(dut.issued)
            await ctx.tick()
        ctx.set(dut.want, 1)
        assert n == depth and not ctx.get(dut.queue.ok) and not ctx.get(dut.queue.idle)
        ctx.set(dut.queue.out.ready, 1)          # one pop: its credit is back on the next edge
        assert ctx.get(dut.queue.out.valid) and not ctx.get(dut.issued)
        await ctx.tick()
        assert ctx.get(dut.queue.ok) and ctx.get(dut.issued)

    run(dut, bench)


def test_idle_and_owed_follow_each_issue_and_pop_on_the_next_edge():
    dut = Pipeline(2, 4)

    async def bench(ctx):
        assert ctx.get(dut.queue.idle) and ctx.get(dut.queue.owed) == 0
        ctx.set(dut.want, 1)
        await ctx.tick()
        ctx.set(dut.want, 0)
        assert not ctx.get(dut.queue.idle) and ctx.get(dut.queue.owed) == 1
        await ctx.tick().until(dut.queue.out.valid)
        ctx.set(dut.queue.out.ready, 1)
        await ctx.tick()
        assert ctx.get(dut.queue.idle) and ctx.get(dut.queue.owed) == 0 and ctx.get(dut.queue.ok)

    run(dut, bench)


@pytest.mark.parametrize("latency", [2, 6])
def test_full_rate_with_three_entries_of_slack(latency):
    dut = Pipeline(latency, latency + 3)

    async def bench(ctx):
        ctx.set(dut.want, 1)
        ctx.set(dut.queue.out.ready, 1)
        await ctx.tick().repeat(latency + 5)
        beats = 0
        for _ in range(100):
            beats += ctx.get(dut.queue.out.valid)
            await ctx.tick()
        assert beats == 100

    run(dut, bench)


@pytest.mark.parametrize("kwargs", [{"width": 0, "depth": 4}, {"width": 8, "depth": 1}, {"width": 8, "depth": "4"}])
def test_refuses_bad_parameters(kwargs):
    with pytest.raises(ValueError, match="width|depth"):
        CreditQueue(**kwargs)
