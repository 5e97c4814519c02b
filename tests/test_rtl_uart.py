"""UART receiver/transmitter in amaranth.sim against a behavioural line model: bytes survive both ways,
baud-rate error within tolerance, glitches, framing errors and overruns drop only the bad byte."""

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from scalenet.rtl.uart import UartRx, UartTx, divisor_for


def line_bits(byte, stop=1):
    return [0] + [(byte >> i) & 1 for i in range(8)] + [stop]


async def drive_line(ctx, pin, bits, bit_cycles):
    """Drive ``bits`` onto ``pin`` at ``bit_cycles`` (may be fractional: the error accumulates like a
    real clock mismatch), then leave the line idle high."""
    t = 0.0
    done = 0
    for b in bits:
        ctx.set(pin, b)
        t += bit_cycles
        whole = int(round(t)) - done
        await ctx.tick().repeat(whole)
        done += whole
    ctx.set(pin, 1)


def run_rx(divisor, frames, bit_cycles=None, ready_pattern=None, idle=2):
    """Feed ``frames`` (lists of line bits) into a receiver; returns (bytes, framing errors, overruns)."""
    dut = UartRx(divisor)
    got, errors = [], {"framing": 0, "overrun": 0}
    bit_cycles = bit_cycles or divisor
    total = int(sum(len(f) for f in frames) * bit_cycles + (idle + 4) * divisor * len(frames) + 50)

    async def line(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(3)
        for bits in frames:
            await drive_line(ctx, dut.rx, bits, bit_cycles)
            await ctx.tick().repeat(idle * divisor)

    async def reader(ctx):
        for cycle in range(total):
            ready = 1 if ready_pattern is None else ready_pattern(cycle)
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload, fe, ov = await ctx.tick().sample(dut.o.valid, dut.o.payload,
                                                                    dut.framing_error, dut.overrun)
            if valid and ready:
                got.append(payload)
            errors["framing"] += fe
            errors["overrun"] += ov

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(line, background=True)
    sim.add_testbench(reader)
    sim.run()
    return got, errors


@pytest.mark.parametrize("divisor, count", [(4, 256), (7, 40)])
def test_loopback_every_byte_value(divisor, count):
    """TX -> RX in one design: every byte value (divisor 4), back to back, with the receiver always ready."""
    m = Module()
    m.submodules.tx = tx = UartTx(divisor)
    m.submodules.rx = rx = UartRx(divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    got = []

    async def sender(ctx):
        for b in range(count):
            ctx.set(tx.i.payload, b * 0x65 & 0xFF)
            ctx.set(tx.i.valid, 1)
            await ctx.tick().until(tx.i.ready)
        ctx.set(tx.i.valid, 0)

    async def receiver(ctx):
        ctx.set(rx.o.ready, 1)
        for _ in range(count * (10 * divisor + 1) + 50):
            _, _, valid, payload = await ctx.tick().sample(rx.o.valid, rx.o.payload)
            if valid:
                got.append(payload)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(sender, background=True)
    sim.add_testbench(receiver)
    sim.run()
    assert got == [b * 0x65 & 0xFF for b in range(count)]


def test_tx_line_timing_is_8n1():
    """The transmitter's pin, sampled every cycle: start bit, LSB first, stop bit, each ``divisor`` long."""
    divisor = 6
    dut = UartTx(divisor)
    trace = []

    async def bench(ctx):
        assert ctx.get(dut.tx) == 1
        ctx.set(dut.i.payload, 0xB4)
        ctx.set(dut.i.valid, 1)
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        for _ in range(12 * divisor):
            trace.append(ctx.get(dut.tx))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    start = trace.index(0)
    bits = [trace[start + divisor * i: start + divisor * (i + 1)] for i in range(10)]
    assert all(len(set(b)) == 1 for b in bits), bits
    assert [b[0] for b in bits] == line_bits(0xB4)
    assert all(v == 1 for v in trace[start + 10 * divisor:])


@pytest.mark.parametrize("skew", [0.96, 1.04])
def test_rx_tolerates_baud_mismatch(skew):
    data = [0x00, 0xFF, 0x55, 0xAA, 0x5A, 0xA5, 0x01, 0x80]
    got, errors = run_rx(8, [line_bits(b) for b in data], bit_cycles=8 * skew)
    assert got == data and errors == {"framing": 0, "overrun": 0}


def test_framing_error_drops_only_that_byte():
    got, errors = run_rx(8, [line_bits(0x3C), line_bits(0x99, stop=0), line_bits(0x42)], idle=3)
    assert got == [0x3C, 0x42]
    assert errors == {"framing": 1, "overrun": 0}


def test_short_glitch_is_not_a_start_bit():
    divisor = 8
    dut = UartRx(divisor)
    got = []

    async def line(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(4)
        ctx.set(dut.rx, 0)                       # 2 cycles low: shorter than half a bit
        await ctx.tick().repeat(2)
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(3 * divisor)
        await drive_line(ctx, dut.rx, line_bits(0x17), divisor)

    async def reader(ctx):
        ctx.set(dut.o.ready, 1)
        for _ in range(20 * divisor):
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid:
                got.append(payload)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(line, background=True)
    sim.add_testbench(reader)
    sim.run()
    assert got == [0x17]


def test_overrun_drops_the_new_bytes_and_keeps_the_unread_one():
    """Bytes 2 and 3 complete while byte 1 is unread: both are dropped; byte 4 (read in time) arrives."""
    divisor = 4
    frame = 11 * divisor                         # 10 bits + 1 bit of idle between frames
    got, errors = run_rx(divisor, [line_bits(b) for b in (0x11, 0x22, 0x33, 0x44)],
                         ready_pattern=lambda c: int(c > 3 * frame + 10), idle=1)
    assert got == [0x11, 0x44] and errors == {"framing": 0, "overrun": 2}


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_divisor_for_checks_the_rate():
    assert divisor_for(48_000_000, 115_200) == 417
    assert divisor_for(24_000_000, 3_000_000) == 8
    with pytest.raises(ValueError, match="at least 4 clocks"):
        divisor_for(10_000_000, 3_000_000)
    with pytest.raises(ValueError, match="off by"):
        divisor_for(12_000_000, 2_200_000)
    with pytest.raises(ValueError, match="at least 4 clocks per bit"):
        UartRx(3)
