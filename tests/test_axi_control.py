"""The AXI4-Lite control slave, checked register by register against the table in rtl/regmap.py."""

import gc
import random
import warnings

import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from scalenet.cosim.axi_memory import lite_read, lite_write
from scalenet.rtl import axi, regmap
from scalenet.rtl.control import ControlSlave
from scalenet.rtl.regmap import Access

CONFIG = dict(rows=8, cols=8, max_kernel=7, data_bytes=8, max_width=1024, max_channels=512)
OKAY, SLVERR = axi.Resp.OKAY, axi.Resp.SLVERR
PULSES = {("CTRL", "start"), ("CTRL", "abort"), ("CTRL", "soft_reset")}
CONFIG_REGS = {"CONFIG0": ("rows", "cols", "max_kernel", "data_bytes"), "CONFIG1": ("max_width", "max_channels")}


def storable(reg):
    """Bits a write keeps: the defined fields (the whole word without fields), minus pulse fields."""
    if not reg.fields:
        return 0xFFFF_FFFF
    return sum(f.mask for f in reg.fields if (reg.name, f.name) not in PULSES)


def expected_reset(reg):
    if reg.name in CONFIG_REGS:
        return regmap.pack(reg.name, **{k: CONFIG[k] for k in CONFIG_REGS[reg.name]})
    if reg.access is Access.WO:
        return 0
    if reg.access is Access.RW:
        return reg.reset & storable(reg)
    return reg.reset


def run(dut, bench, *, processes=(), deadline=None):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    for p in processes:
        sim.add_process(p)
    sim.run_until(deadline) if deadline else sim.run()


@pytest.fixture
def dut():
    return ControlSlave(**CONFIG)


RESERVED = [a for a in range(0, 0x80, 4) if regmap.by_offset(a) is None] + [0x100, 0xFFC]


def test_every_register_reads_its_reset_value(dut):
    async def bench(ctx):
        for reg in regmap.REGISTERS:
            data, resp = await lite_read(ctx, dut.bus, reg.offset)
            assert resp == OKAY, reg.name
            assert data == expected_reset(reg), f"{reg.name}: {data:#x} != {expected_reset(reg):#x}"
        for addr in RESERVED:
            assert await lite_read(ctx, dut.bus, addr) == (0, SLVERR), hex(addr)
    run(dut, bench)


def test_writes_follow_each_registers_access_type(dut):
    rng = random.Random(1)

    async def bench(ctx):
        for reg in regmap.REGISTERS:
            value = rng.getrandbits(32) | 1
            resp = await lite_write(ctx, dut.bus, reg.offset, value)
            data, rresp = await lite_read(ctx, dut.bus, reg.offset)
            assert rresp == OKAY
            if reg.access is Access.RO:
                assert resp == SLVERR, reg.name
                assert data == expected_reset(reg), f"{reg.name} changed by a refused write"
            elif reg.access is Access.RW:
                assert resp == OKAY, reg.name
                assert data == value & storable(reg), reg.name
                # Byte strobes: only lane 1 changes.
                other = rng.getrandbits(32)
                assert await lite_write(ctx, dut.bus, reg.offset, other, strb=0b0010) == OKAY
                data2, _ = await lite_read(ctx, dut.bus, reg.offset)
                assert data2 == ((value & ~0xFF00) | (other & 0xFF00)) & storable(reg), reg.name
            elif reg.access is Access.W1C:
                assert resp == OKAY and data == reg.reset, reg.name    # nothing set, nothing to clear
            elif reg.access is Access.WO:
                assert resp == OKAY and data == 0, reg.name
        # Reserved addresses: SLVERR, and no register changed.
        before = [await lite_read(ctx, dut.bus, r.offset) for r in regmap.REGISTERS]
        for addr in RESERVED:
            assert await lite_write(ctx, dut.bus, addr, 0xFFFF_FFFF) == SLVERR, hex(addr)
        after = [await lite_read(ctx, dut.bus, r.offset) for r in regmap.REGISTERS]
        assert before == after
    run(dut, bench)


def test_core_side_outputs_follow_the_registers(dut):
    async def bench(ctx):
        await lite_write(ctx, dut.bus, regmap.by_name("DESC_ADDR").offset, 0x1234_5640)
        await lite_write(ctx, dut.bus, regmap.by_name("DESC_COUNT").offset, 0xABCD_0007)
        await lite_write(ctx, dut.bus, regmap.by_name("CTRL").offset, regmap.pack("CTRL", irq_enable=1))
        assert ctx.get(dut.desc_addr) == 0x1234_5640
        assert ctx.get(dut.desc_count) == 7
        assert ctx.get(dut.irq_enable) == 1
    run(dut, bench)


def test_status_error_layer_show_the_core_inputs(dut):
    async def bench(ctx):
        ctx.set(dut.busy, 1)
        ctx.set(dut.error, 1)
        ctx.set(dut.error_code, regmap.ErrorCode.READ_DECERR)
        ctx.set(dut.layer, 0x1234)
        st, _ = await lite_read(ctx, dut.bus, regmap.by_name("STATUS").offset)
        assert regmap.unpack("STATUS", st) == dict(busy=1, done=0, error=1, start_while_busy=0)
        err, _ = await lite_read(ctx, dut.bus, regmap.by_name("ERROR").offset)
        assert regmap.unpack("ERROR", err) == dict(code=regmap.ErrorCode.READ_DECERR, layer=0x1234)
        lay, _ = await lite_read(ctx, dut.bus, regmap.by_name("LAYER").offset)
        assert lay == 0x1234
    run(dut, bench)


def test_ctrl_pulses_and_start_while_busy(dut):
    seen = {"start": [], "abort": [], "soft_reset": []}

    async def monitor(ctx):
        cycle = 0
        async for _, _, start, abort, soft_reset in ctx.tick().sample(dut.start, dut.abort, dut.soft_reset):
            for name, v in (("start", start), ("abort", abort), ("soft_reset", soft_reset)):
                if v:
                    seen[name].append(cycle)
            cycle += 1

    ctrl = regmap.by_name("CTRL").offset
    status = regmap.by_name("STATUS").offset

    async def bench(ctx):
        for name in ("start", "abort", "soft_reset"):
            before = len(seen[name])
            assert await lite_write(ctx, dut.bus, ctrl, regmap.pack("CTRL", **{name: 1})) == OKAY
            await ctx.tick().repeat(3)
            assert len(seen[name]) == before + 1, f"{name}: one single-cycle pulse"
            data, _ = await lite_read(ctx, dut.bus, ctrl)
            assert data == 0, f"{name} reads back 0"
        # START while busy: no pulse, STATUS.start_while_busy set; soft reset clears it.
        ctx.set(dut.busy, 1)
        n = len(seen["start"])
        await lite_write(ctx, dut.bus, ctrl, regmap.pack("CTRL", start=1))
        await ctx.tick().repeat(3)
        assert len(seen["start"]) == n
        st, _ = await lite_read(ctx, dut.bus, status)
        assert regmap.unpack("STATUS", st)["start_while_busy"] == 1
        ctx.set(dut.busy, 0)
        await lite_write(ctx, dut.bus, ctrl, regmap.pack("CTRL", soft_reset=1))
        st, _ = await lite_read(ctx, dut.bus, status)
        assert regmap.unpack("STATUS", st)["start_while_busy"] == 0
        # A pulse bit with its byte lane disabled does nothing.
        await lite_write(ctx, dut.bus, ctrl, regmap.pack("CTRL", start=1), strb=0b0010)
        await ctx.tick().repeat(3)
        assert len(seen["start"]) == n
    run(dut, bench, processes=[monitor])


def test_irq_status_w1c_and_irq_line(dut):
    irq_status = regmap.by_name("IRQ_STATUS").offset
    done_bit = regmap.pack("IRQ_STATUS", done=1)
    error_bit = regmap.pack("IRQ_STATUS", error=1)

    async def bench(ctx):
        ctx.set(dut.done, 1)
        await ctx.tick().repeat(2)
        assert (await lite_read(ctx, dut.bus, irq_status))[0] == done_bit
        assert ctx.get(dut.irq) == 0, "irq waits for irq_enable"
        await lite_write(ctx, dut.bus, regmap.by_name("CTRL").offset, regmap.pack("CTRL", irq_enable=1))
        assert ctx.get(dut.irq) == 1
        ctx.set(dut.error, 1)     # done stays high: no new edge for done
        await ctx.tick().repeat(2)
        assert (await lite_read(ctx, dut.bus, irq_status))[0] == done_bit | error_bit
        assert await lite_write(ctx, dut.bus, irq_status, 0) == OKAY          # 0s clear nothing
        assert (await lite_read(ctx, dut.bus, irq_status))[0] == done_bit | error_bit
        await lite_write(ctx, dut.bus, irq_status, done_bit)
        assert (await lite_read(ctx, dut.bus, irq_status))[0] == error_bit
        assert ctx.get(dut.irq) == 1
        await lite_write(ctx, dut.bus, irq_status, 0xFFFF_FFFF)
        assert (await lite_read(ctx, dut.bus, irq_status))[0] == 0
        assert ctx.get(dut.irq) == 0
        # Levels staying high do not set the causes again.
        await ctx.tick().repeat(3)
        assert (await lite_read(ctx, dut.bus, irq_status))[0] == 0
    run(dut, bench)


def read64(ctx, bus, name):
    async def go():
        lo, r1 = await lite_read(ctx, bus, regmap.by_name(f"{name}_LO").offset)
        hi, r2 = await lite_read(ctx, bus, regmap.by_name(f"{name}_HI").offset)
        assert r1 == r2 == OKAY
        return hi << 32 | lo
    return go()


def test_performance_counters_count_and_clear():
    dut = ControlSlave(**CONFIG, mac_width=32, bytes_width=8)

    async def bench(ctx):
        ctx.set(dut.busy, 1)
        ctx.set(dut.perf_mac, 0xFFFF_FFFF)
        ctx.set(dut.perf_rd_bytes, 8)
        ctx.set(dut.perf_wr_bytes, 4)
        ctx.set(dut.perf_stall, 1)
        await ctx.tick().repeat(10)
        ctx.set(dut.busy, 0)
        ctx.set(dut.perf_mac, 0)
        ctx.set(dut.perf_rd_bytes, 0)
        ctx.set(dut.perf_wr_bytes, 0)
        ctx.set(dut.perf_stall, 0)
        await ctx.tick()
        values = {n: await read64(ctx, dut.bus, n)
                  for n in ("PERF_CYCLES", "PERF_MAC_ACTIVE", "PERF_DMA_RD_BYTES", "PERF_DMA_WR_BYTES",
                            "PERF_DMA_STALL")}
        assert values == {"PERF_CYCLES": 10, "PERF_MAC_ACTIVE": 10 * 0xFFFF_FFFF, "PERF_DMA_RD_BYTES": 80,
                          "PERF_DMA_WR_BYTES": 40, "PERF_DMA_STALL": 10}
        assert await lite_write(ctx, dut.bus, regmap.by_name("PERF_CTRL").offset,
                                regmap.pack("PERF_CTRL", clear=1)) == OKAY
        for n in values:
            assert await read64(ctx, dut.bus, n) == 0, n
    run(dut, bench)


def test_counter_hi_is_snapshotted_by_the_lo_read():
    dut = ControlSlave(**CONFIG, mac_width=32)
    lo_off = regmap.by_name("PERF_MAC_ACTIVE_LO").offset
    hi_off = regmap.by_name("PERF_MAC_ACTIVE_HI").offset

    inc = 0x9000_0001     # the low word wraps every other cycle

    async def bench(ctx):
        ctx.set(dut.perf_mac, inc)
        await ctx.tick().repeat(3)
        prev = 0
        for _ in range(4):
            lo, _ = await lite_read(ctx, dut.bus, lo_off)
            hi, _ = await lite_read(ctx, dut.bus, hi_off)
            await ctx.tick().repeat(3)
            hi_again, _ = await lite_read(ctx, dut.bus, hi_off)
            assert hi_again == hi, "HI holds the snapshot taken by the LO read"
            value = hi << 32 | lo
            assert value % inc == 0 and value > prev, "LO and HI belong to the same counter value"
            prev = value
    run(dut, bench)


@pytest.mark.parametrize("aw_delay,w_delay", [(0, 0), (0, 3), (3, 0), (1, 5), (5, 1)])
@pytest.mark.parametrize("b_delay", [0, 4])
def test_write_channel_orderings_and_b_backpressure(dut, aw_delay, w_delay, b_delay):
    offset = regmap.by_name("DESC_ADDR").offset

    async def bench(ctx):
        for value in (0xDEAD_BEEF, 0x0BAD_F00D):
            resp = await lite_write(ctx, dut.bus, offset, value,
                                    aw_delay=aw_delay, w_delay=w_delay, b_delay=b_delay)
            assert resp == OKAY
            assert await lite_read(ctx, dut.bus, offset, r_delay=b_delay) == (value, OKAY)
        assert await lite_write(ctx, dut.bus, 0x0FC, 1, aw_delay=aw_delay, w_delay=w_delay,
                                b_delay=b_delay) == SLVERR
    run(dut, bench)


def test_back_to_back_accesses_without_gaps(dut):
    """Writes and reads issued while the previous response is still held are not lost."""
    async def bench(ctx):
        bus = dut.bus
        # Two AW/W pairs presented at once, BREADY low: the second pair must wait, not be dropped.
        ctx.set(bus.b.ready, 0)
        got = []
        for value in (0x11, 0x22):
            ctx.set(bus.aw.addr, regmap.by_name("DESC_ADDR").offset)
            ctx.set(bus.w.data, value)
            ctx.set(bus.w.strb, 0xF)
            ctx.set(bus.aw.valid, 1)
            ctx.set(bus.w.valid, 1)
            aw = w = False
            while not (aw and w):
                _, _, awr, wr = await ctx.tick().sample(bus.aw.ready, bus.w.ready)
                aw |= bool(awr)
                w |= bool(wr)
                ctx.set(bus.aw.valid, not aw)
                ctx.set(bus.w.valid, not w)
            if value == 0x11:
                await ctx.tick().repeat(3)
                assert ctx.get(bus.b.valid) == 1
        ctx.set(bus.b.ready, 1)
        for _ in range(10):
            _, _, bv = await ctx.tick().sample(bus.b.valid)
            if bv:
                got.append(1)
        assert len(got) == 2
        assert await lite_read(ctx, bus, regmap.by_name("DESC_ADDR").offset) == (0x22, OKAY)
    run(dut, bench)


def construction_error(**kwargs):
    """The exception a bad ControlSlave(...) raises, without leaking the half-built elaboratable."""
    try:
        ControlSlave(**kwargs)
    except (TypeError, ValueError) as exc:
        message = f"{type(exc).__name__}: {exc}"
    else:
        raise AssertionError("no error")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gc.collect()
    return message


def test_config_values_are_checked():
    assert "ValueError: CONFIG0.rows = 300 does not fit in 8 bits" in construction_error(**{**CONFIG, "rows": 300})
    assert "TypeError: cols must be an integer, not 8.0" in construction_error(**{**CONFIG, "cols": 8.0})
    assert "TypeError: Address width" in construction_error(**CONFIG, addr_width=6)
    assert "module top" in verilog.convert(ControlSlave(**CONFIG, addr_width=7))   # 0x064 is the highest offset


def test_verilog_convert(dut):
    text = verilog.convert(dut, name="scalenet_control")
    assert "module scalenet_control" in text
    assert "bus__aw__valid" in text
