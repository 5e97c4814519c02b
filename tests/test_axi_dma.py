"""The AXI4 DMA engines against the behavioural memory model (cosim/axi_memory.py)."""

import random

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from scalenet.cosim.axi_memory import AXIMemory
from scalenet.rtl import axi
from scalenet.rtl.dma import DMA, DMAReader, DMAWriter
from scalenet.rtl.regmap import ErrorCode

MEM = 1 << 16


def split(addr, length, data_bytes=8):
    """The bursts the AXI rules allow: <= 256 beats, none crossing 4 KiB (reference for the RTL)."""
    out = []
    beats = length // data_bytes
    while beats:
        n = min(beats, 256, (4096 - addr % 4096) // data_bytes)
        out.append((addr, n))
        addr += n * data_bytes
        beats -= n
    return out


def simulate(dut, mem, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_process(mem.process)
    sim.add_testbench(bench)
    sim.run()


async def put_command(ctx, port, addr, length):
    ctx.set(port.p.addr, addr)
    ctx.set(port.p.length, length)
    ctx.set(port.valid, 1)
    await ctx.tick().until(port.ready)
    ctx.set(port.valid, 0)


async def read(ctx, dut, addr, length, *, rng=None, stall=0.0, limit=None):
    """Issue one read and collect its beats; returns (bytes, cycles, saw_last, error)."""
    await put_command(ctx, dut.rd_cmd, addr, length)
    beats, cycles, saw_last = [], 0, False
    data_bytes = len(dut.rd_data.p.data) // 8
    limit = limit or 200 + 4 * length
    while True:
        ctx.set(dut.rd_data.ready, not (rng and rng.random() < stall))
        _, _, valid, ready, data, last, busy = await ctx.tick().sample(
            dut.rd_data.valid, dut.rd_data.ready, dut.rd_data.p.data, dut.rd_data.p.last, dut.rd_busy)
        cycles += 1
        if valid and ready:
            beats.append(int(data).to_bytes(data_bytes, "little"))
            assert not saw_last, "beat after last"
            saw_last = bool(last)
        if not busy and not valid:
            break
        assert cycles < limit, f"read of {length} bytes at {addr:#x} still busy after {limit} cycles"
    ctx.set(dut.rd_data.ready, 0)
    return b"".join(beats), cycles, saw_last, ctx.get(dut.error)


async def write(ctx, dut, addr, payload, *, rng=None, stall=0.0, limit=None):
    """Issue one write and feed its data; returns the cycles until the engine is idle again."""
    await put_command(ctx, dut.wr_cmd, addr, len(payload))
    data_bytes = len(dut.wr_data.payload) // 8
    words = [int.from_bytes(payload[i:i + data_bytes], "little") for i in range(0, len(payload), data_bytes)]
    i, cycles = 0, 0
    limit = limit or 200 + 4 * len(payload)
    while True:
        offer = i < len(words) and not (rng and rng.random() < stall)
        ctx.set(dut.wr_data.valid, offer)
        if offer:
            ctx.set(dut.wr_data.payload, words[i])
        _, _, valid, ready, busy = await ctx.tick().sample(dut.wr_data.valid, dut.wr_data.ready, dut.wr_busy)
        cycles += 1
        if valid and ready:
            i += 1
        if i == len(words) and not busy:
            break
        if ctx.get(dut.error) and not busy:
            break
        assert cycles < limit, f"write of {len(payload)} bytes at {addr:#x} still busy after {limit} cycles"
    ctx.set(dut.wr_data.valid, 0)
    return cycles


def random_transfers(rng, count, data_bytes=8):
    out = []
    for _ in range(count):
        length = rng.choice([data_bytes, rng.randrange(1, 64), rng.randrange(64, 700)]) * data_bytes
        addr = rng.randrange(0, MEM - length) // data_bytes * data_bytes
        out.append((addr, length))
    # Always include a 4 KiB crossing and a transfer longer than 256 beats.
    out.append((0x2FF0 - 8 * data_bytes, 32 * data_bytes))
    out.append((0x4010, 300 * data_bytes))
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_random_reads_under_backpressure(seed):
    rng = random.Random(seed)
    dut = DMA()
    mem = AXIMemory(dut.bus, size=MEM, read_latency=rng.randrange(1, 8), stall=0.3, seed=seed)
    mem.mem[:] = np.random.default_rng(seed).integers(0, 256, MEM, dtype=np.uint8)
    transfers = random_transfers(rng, 5)

    async def bench(ctx):
        for addr, length in transfers:
            got, _, saw_last, error = await read(ctx, dut, addr, length, rng=rng, stall=0.3)
            assert not error
            assert got == mem.dump(addr, length), f"read {length} bytes at {addr:#x}"
            assert saw_last
    simulate(dut, mem, bench)
    assert mem.violations == []
    assert mem.read_bursts == [b for a, n in transfers for b in split(a, n)]


@pytest.mark.parametrize("seed", [3, 4])
def test_random_writes_under_backpressure(seed):
    rng = random.Random(seed)
    dut = DMA()
    transfers = random_transfers(rng, 5)
    mem = AXIMemory(dut.bus, size=MEM, stall=0.3, seed=seed, write_latency=rng.randrange(0, 6),
                    writable=[(0, MEM)])
    expect = np.zeros(MEM, dtype=np.uint8)
    nrng = np.random.default_rng(seed)

    async def bench(ctx):
        for addr, length in transfers:
            payload = nrng.integers(0, 256, length, dtype=np.uint8)
            expect[addr:addr + length] = payload
            await write(ctx, dut, addr, payload.tobytes(), rng=rng, stall=0.3)
            assert not ctx.get(dut.error)
    simulate(dut, mem, bench)
    assert mem.violations == []
    assert mem.write_bursts == [b for a, n in transfers for b in split(a, n)]
    assert np.array_equal(mem.mem, expect)


def test_read_throughput_and_outstanding_bursts():
    dut = DMA()
    mem = AXIMemory(dut.bus, size=MEM, read_latency=2)
    mem.mem[:] = np.arange(MEM) % 251
    figures = {}

    async def bench(ctx):
        got, cycles, _, _ = await read(ctx, dut, 0x1000, 8192)
        assert got == mem.dump(0x1000, 8192)
        figures["bytes_per_cycle"] = 8192 / cycles
    simulate(dut, mem, bench)
    print(f"DMA read, no back-pressure: {figures['bytes_per_cycle']:.2f} bytes/cycle")
    assert figures["bytes_per_cycle"] > 7.5          # 8 bytes/beat minus the start-up latency
    assert mem.max_reads_outstanding == 4            # the engine's limit, reached and not exceeded
    assert mem.violations == []


def test_write_throughput_and_outstanding_bursts():
    dut = DMA()
    mem = AXIMemory(dut.bus, size=MEM, write_latency=20)
    payload = bytes(range(256)) * 32
    figures = {}

    async def bench(ctx):
        figures["cycles"] = await write(ctx, dut, 0x3000, payload)
    simulate(dut, mem, bench)
    print(f"DMA write, no back-pressure: {len(payload) / figures['cycles']:.2f} bytes/cycle")
    assert len(payload) / figures["cycles"] > 7.0
    assert mem.dump(0x3000, len(payload)) == payload
    assert mem.max_writes_outstanding == 4
    assert mem.violations == []


def test_write_bursts_take_a_beat_every_cycle():
    """Once a burst has started, its beats go one per cycle (the writer's burst start is a register
    computed a cycle ahead; only the first beat of each burst may wait for it)."""
    dut = DMA()
    mem = AXIMemory(dut.bus, size=MEM, write_latency=5)
    payload = bytes(range(256)) * 16                  # 4 KiB at a page: two 256-beat bursts
    taken = []

    async def bench(ctx):
        await put_command(ctx, dut.wr_cmd, 0x4000, len(payload))
        words = [int.from_bytes(payload[i:i + 8], "little") for i in range(0, len(payload), 8)]
        cycle = 0
        while len(taken) < len(words):
            ctx.set(dut.wr_data.valid, 1)
            ctx.set(dut.wr_data.payload, words[len(taken)])
            _, _, valid, ready = await ctx.tick().sample(dut.wr_data.valid, dut.wr_data.ready)
            if valid and ready:
                taken.append(cycle)
            cycle += 1
            assert cycle < 2000
        ctx.set(dut.wr_data.valid, 0)
        while ctx.get(dut.wr_busy):
            await ctx.tick()
    simulate(dut, mem, bench)
    assert mem.dump(0x4000, len(payload)) == payload
    for burst in (taken[:256], taken[256:]):
        assert burst[-1] - burst[0] == 255
    assert mem.violations == []


def test_long_latency_keeps_several_reads_in_flight():
    """With short bursts (at 4 KiB edges) and a slow memory, up to 4 bursts are in flight."""
    dut = DMA()
    mem = AXIMemory(dut.bus, size=MEM, read_latency=40)
    mem.mem[:] = np.arange(MEM) % 253

    async def bench(ctx):
        got, cycles, _, _ = await read(ctx, dut, 0x0F80, 4096 + 256)
        assert got == mem.dump(0x0F80, 4096 + 256)
    simulate(dut, mem, bench)
    assert mem.max_reads_outstanding == 4
    assert mem.read_bursts == split(0x0F80, 4096 + 256) == [(0x0F80, 16), (0x1000, 256), (0x1800, 256), (0x2000, 16)]


@pytest.mark.parametrize("resp,code", [(axi.Resp.SLVERR, ErrorCode.READ_SLVERR),
                                       (axi.Resp.DECERR, ErrorCode.READ_DECERR)])
def test_read_error_stops_and_drains(resp, code):
    dut = DMA()
    mem = AXIMemory(dut.bus, size=MEM, read_latency=3, stall=0.2, seed=5, errors=[(0x2400, 0x2408, resp)])
    mem.mem[:] = 7

    async def bench(ctx):
        got, cycles, saw_last, error = await read(ctx, dut, 0x2000, 0x4000, limit=3000)
        assert error and not saw_last
        assert ctx.get(dut.error_code) == code
        assert len(got) == 0x400, "data before the failing beat is delivered, nothing after"
        bursts_at_error = len(mem.read_bursts)
        # Commands while the error is set are dropped, the engine stays idle.
        await put_command(ctx, dut.rd_cmd, 0, 64)
        await ctx.tick().repeat(20)
        assert len(mem.read_bursts) == bursts_at_error and not ctx.get(dut.rd_busy)
        # A soft reset re-arms it.
        ctx.set(dut.error_clear, 1)
        await ctx.tick()
        ctx.set(dut.error_clear, 0)
        assert ctx.get(dut.error) == 0 and ctx.get(dut.error_code) == 0
        got, _, saw_last, error = await read(ctx, dut, 0x100, 256)
        assert got == mem.dump(0x100, 256) and saw_last and not error
    simulate(dut, mem, bench)
    # The failing burst and at most the 3 already in flight; none after.
    assert len(mem.read_bursts) <= 4 + 1
    assert mem.violations == []


@pytest.mark.parametrize("resp,code", [(axi.Resp.SLVERR, ErrorCode.WRITE_SLVERR),
                                       (axi.Resp.DECERR, ErrorCode.WRITE_DECERR)])
def test_write_error_stops_and_drains(resp, code):
    dut = DMA()
    mem = AXIMemory(dut.bus, size=MEM, stall=0.2, seed=6, write_latency=4, errors=[(0x1000, 0x1008, resp)])

    async def bench(ctx):
        cycles = await write(ctx, dut, 0x0800, bytes(0x8000), limit=4000)
        assert ctx.get(dut.error) and ctx.get(dut.error_code) == code
        assert not ctx.get(dut.wr_busy)
        assert cycles < 4000
        ctx.set(dut.error_clear, 1)
        await ctx.tick()
        ctx.set(dut.error_clear, 0)
        await write(ctx, dut, 0x40, bytes(range(64)))
        assert mem.dump(0x40, 64) == bytes(range(64)) and not ctx.get(dut.error)
    simulate(dut, mem, bench)
    assert mem.violations == []          # drained bursts still end with WLAST on the right beat
    assert len(mem.write_bursts) <= 1 + 4 + 4 + 1


def test_zero_length_commands_complete():
    dut = DMA()
    mem = AXIMemory(dut.bus, size=MEM)

    async def bench(ctx):
        got, cycles, _, _ = await read(ctx, dut, 0x100, 0, limit=10)
        assert got == b""
        await write(ctx, dut, 0x100, b"", limit=10)
    simulate(dut, mem, bench)
    assert mem.read_bursts == mem.write_bursts == []


def test_narrow_bus_with_ids():
    dut = DMA(data_width=32, id_width=3, max_outstanding=2)
    mem = AXIMemory(dut.bus, size=MEM, stall=0.2, seed=9)
    mem.mem[:] = np.arange(MEM) % 249

    async def bench(ctx):
        got, *_ = await read(ctx, dut, 0xFF0, 2048)
        assert got == mem.dump(0xFF0, 2048)
        await write(ctx, dut, 0x8000 - 16, got)
        assert mem.dump(0x8000 - 16, 2048) == got
    simulate(dut, mem, bench)
    assert mem.violations == []
    assert mem.read_bursts == split(0xFF0, 2048, 4)
    assert mem.max_reads_outstanding <= 2


def test_memory_model_reports_protocol_violations():
    """The checker itself: a hand-driven master breaking the rules is caught."""
    bus = axi.Signature(addr_width=32, data_width=64).create()
    from amaranth.hdl import Module
    m = Module()
    m.d.sync += bus.ar.valid.eq(bus.ar.valid)     # give the simulator a clock domain
    mem = AXIMemory(bus, size=MEM, writable=[(0, 0x100)])

    async def bench(ctx):
        ctx.set(bus.ar.addr, 0xFF8)
        ctx.set(bus.ar.len, 1)                       # 2 beats from 0xFF8 cross 4 KiB
        ctx.set(bus.ar.size, 3)
        ctx.set(bus.ar.burst, axi.Burst.INCR)
        ctx.set(bus.ar.valid, 1)
        await ctx.tick().until(bus.ar.ready)
        ctx.set(bus.ar.valid, 0)
        ctx.set(bus.aw.addr, 0x200)
        ctx.set(bus.aw.len, 1)
        ctx.set(bus.aw.size, 3)
        ctx.set(bus.aw.burst, axi.Burst.FIXED)
        ctx.set(bus.aw.valid, 1)
        await ctx.tick().until(bus.aw.ready)
        ctx.set(bus.aw.valid, 0)
        ctx.set(bus.w.strb, 0xFF)
        ctx.set(bus.w.last, 1)                       # last on beat 0 of 2
        ctx.set(bus.w.valid, 1)
        await ctx.tick().until(bus.w.ready)
        ctx.set(bus.w.valid, 0)
        await ctx.tick().repeat(5)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_process(mem.process)
    sim.add_testbench(bench)
    sim.run()
    text = "\n".join(str(v) for v in mem.violations)
    assert "crosses a 4 KiB boundary" in text
    assert "not INCR" in text
    assert "WLAST on beat 0, expected on beat 1" in text
    assert "outside the writable ranges" in text


def test_memory_model_checks_valid_stability():
    bus = axi.Signature(addr_width=32, data_width=64).create()
    from amaranth.hdl import Module
    m = Module()
    m.d.sync += bus.ar.valid.eq(bus.ar.valid)
    mem = AXIMemory(bus, size=MEM, stall=1.0)        # never ready

    async def bench(ctx):
        ctx.set(bus.ar.size, 3)
        ctx.set(bus.ar.burst, axi.Burst.INCR)
        ctx.set(bus.ar.valid, 1)
        await ctx.tick().repeat(2)
        ctx.set(bus.ar.addr, 0x40)                   # payload changes while waiting
        await ctx.tick()
        ctx.set(bus.ar.valid, 0)                     # and VALID is withdrawn
        await ctx.tick().repeat(2)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_process(mem.process)
    sim.add_testbench(bench)
    sim.run()
    assert [v.message for v in mem.violations] == ["payload changed while VALID and not READY",
                                                   "VALID dropped before READY"]


def test_performance_outputs_count_bytes_and_stalls():
    dut = DMA()
    mem = AXIMemory(dut.bus, size=MEM, read_latency=10, stall=0.2, seed=11)
    totals = {"rd": 0, "wr": 0, "stall": 0}

    async def monitor(ctx):
        async for _, _, rd, wr, stall in ctx.tick().sample(dut.rd_bytes, dut.wr_bytes, dut.stall):
            totals["rd"] += rd
            totals["wr"] += wr
            totals["stall"] += stall

    async def bench(ctx):
        got, *_ = await read(ctx, dut, 0x800, 1024)
        await write(ctx, dut, 0x4000, got)
        await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_process(mem.process)
    sim.add_process(monitor)
    sim.add_testbench(bench)
    sim.run()
    assert totals["rd"] == totals["wr"] == 1024
    assert totals["stall"] >= 10, "the read latency shows up as stall cycles"


@pytest.mark.parametrize("component", [DMA, DMAReader, DMAWriter])
def test_verilog_convert(component):
    assert "module top" in verilog.convert(component())
