"""The host bridge: framed requests from a byte stream (the UART) to AXI4-Lite registers and AXI4 memory.

For boards without a CPU, the host reaches the accelerator's registers and memory through this engine
(protocol in docs/serial-protocol.md, constants and CRC in :mod:`.bridge_protocol`). Every accepted
request gets exactly one response frame; nothing hangs on a bad line:

- a CRC error answers ``BAD_CRC`` and executes nothing (write payloads are buffered in a block RAM and
  committed only after the CRC checks, so a corrupted frame never writes memory);
- an unknown command or a length the command does not allow skips the rest of the frame until the line
  has been idle for ``timeout_cycles``, then answers ``BAD_CMD``/``BAD_LEN``;
- a frame that stops mid-way (inter-byte gap over ``timeout_cycles``) is dropped without an answer;
- a retried write (same ``seq`` as the command just executed) is answered again without executing it
  twice, so the host may retry after a lost response (a doubled START would be refused as busy).

Memory is reached with single-beat AXI4 accesses, one byte each (the right strobe of a bus-wide beat):
a byte takes ``10 * divisor`` cycles on the UART and a few on the bus, so wider accesses would not be
faster. Register accesses are single AXI4-Lite transactions.
"""

import struct

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import axi
from .bridge_protocol import (BRIDGE_MAGIC, IDENT_FORMAT, PROTOCOL_VERSION, REQ_SYNC, RESP_SYNC, Cmd,
                              Status)
from .collisions import UNDEFINED_COLLISIONS

__all__ = ["Bridge"]


def crc16_byte(m, crc, byte):
    """CRC-16/CCITT-FALSE of one more byte: a Signal driven combinationally (8 unrolled shifts, each
    through its own signal so the expression stays linear in size)."""
    c = Signal(16, name="crc_in")
    m.d.comb += c.eq(crc ^ (byte << 8))
    for i in range(8):
        n = Signal(16, name=f"crc_s{i}")
        m.d.comb += n.eq(Mux(c[15], (c << 1)[:16] ^ 0x1021, (c << 1)[:16]))
        c = n
    return c


class Bridge(wiring.Component):
    """Protocol engine.

    Parameters
    ----------
    data_bytes : bus width of the memory master in bytes
    mem_base, mem_bytes : the memory window requests may touch (checked: ``BAD_ADDR``)
    timeout_cycles : inter-byte gap that ends a frame (drop) or a skipped frame (answer)
    max_payload : largest MEM_READ/MEM_WRITE length (the frame buffer's depth)
    reg_addr_width : register window (``BAD_ADDR`` above it)
    clk_hz, sram : reported in the identification block

    Members
    -------
    rx : ``In(stream.Signature(8))``; tx : ``Out(stream.Signature(8))``
    ctrl : ``Out(axi.LiteSignature(addr_width=reg_addr_width))``
    mem : ``Out(axi.Signature(addr_width=32, data_width=8 * data_bytes))``
    busy : ``Out(1)`` (a frame is being received, executed or answered)
    """

    def __init__(self, *, data_bytes=8, mem_base=0, mem_bytes=1 << 20, timeout_cycles=1 << 16, max_payload=256,
                 reg_addr_width=12, clk_hz=0, sram=False):
        if data_bytes not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"data_bytes must be a power of two up to 32, not {data_bytes!r}")
        if not 1 <= max_payload <= 0xFFFF:
            raise ValueError(f"max_payload must be 1..65535, not {max_payload!r}")
        if timeout_cycles < 16:
            raise ValueError(f"timeout_cycles must be at least 16, not {timeout_cycles!r}")
        if mem_base < 0 or mem_bytes < 1 or mem_base + mem_bytes > 1 << 32:
            raise ValueError(f"memory window 0x{mem_base:x} + {mem_bytes} is not inside the 32-bit space")
        self.data_bytes, self.mem_base, self.mem_bytes = data_bytes, mem_base, mem_bytes
        self.timeout_cycles, self.max_payload, self.reg_addr_width = timeout_cycles, max_payload, reg_addr_width
        self.clk_hz, self.sram = clk_hz, sram
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "ctrl": Out(axi.LiteSignature(addr_width=reg_addr_width, data_width=32)),
            "mem": Out(axi.Signature(addr_width=32, data_width=8 * data_bytes)),
            "busy": Out(1),
        })

    @property
    def ident(self) -> bytes:
        """The identification block PING answers (layout: :data:`.bridge_protocol.IDENT_FORMAT`)."""
        return struct.pack(IDENT_FORMAT, BRIDGE_MAGIC, PROTOCOL_VERSION, int(self.sram), self.max_payload,
                           self.mem_base, self.mem_bytes, self.clk_hz & 0xFFFF_FFFF)

    def elaborate(self, platform):
        m = Module()
        nb = self.data_bytes
        log2 = nb.bit_length() - 1
        ident = self.ident

        # Written while a frame arrives or a memory read completes, read while the response goes out or a
        # memory write runs: a word read while written (MEM_READ addresses both at cnt) is never used.
        m.submodules.buf = buf = Memory(shape=8, depth=self.max_payload, init=[], attrs=UNDEFINED_COLLISIONS)
        wp = buf.write_port()
        rp = buf.read_port()                      # synchronous: block RAM
        # Writes go through a register (a cycle late, nothing reads that soon): the read data's byte
        # select, on the SRAM's read-state decode, ran on into the block's data pins (10.1 ns in the 8x8
        # SoC). The read data only loads rp_q (a register straight out of the block).
        w_addr, w_data = Signal.like(wp.addr, reset_less=True), Signal(8, reset_less=True)
        w_en = Signal()
        m.d.comb += [wp.addr.eq(w_addr), wp.data.eq(w_data), wp.en.eq(w_en)]
        m.d.sync += w_en.eq(0)
        rp_q = Signal(8, reset_less=True)

        hdr = Signal(64)                          # cmd, seq, addr[4], len[2] as received (LE)
        cmd, seq, addr, length = hdr[0:8], hdr[8:16], hdr[16:48], hdr[48:64]
        cnt = Signal(range(max(self.max_payload, 8) + 1))
        # The last index of the payload and of a memory access, registered in CHECK: compared with cnt
        # they end PAYLOAD, MW_B and MR_R; subtracted there, header -> carry chain -> compare -> the
        # bridge's state and response enables was 10.1-10.4 ns in the 8x8 SoC.
        payload_m1 = Signal(16)
        length_m1 = Signal(16)
        crc = Signal(16)
        idle = Signal(range(self.timeout_cycles + 1))
        word = Signal(32)                         # REG_WRITE payload / REG_READ data
        status = Signal(8)
        resp_len = Signal(16)
        src = Signal(2)                           # payload source: 0 ident, 1 word, 2 buffer
        bad_addr = Signal()
        last_seq, last_status, last_write, last_valid = Signal(8), Signal(8), Signal(), Signal()
        aw_done, w_done = Signal(), Signal()
        r_ok = Signal()                           # MEM_READ: the beat just taken was OKAY
        txi = Signal(16)
        tx_wait = Signal(2)                       # hold cycles left before the next response byte
        # In TX, as a register (set with the move into TX, cleared with the move out): the response
        # counters' enables then start from it instead of the bridge's state decode (bridge state ->
        # txi / j / crc enables, 10.1-10.2 ns in the 8x8 SoC).
        in_tx = Signal()
        tx_crc, tx_end = Signal(), Signal()    # the byte on offer is covered by the CRC; it ends the frame

        byte = self.rx.payload
        crc_byte = Signal(8)
        crc_next = crc16_byte(m, crc, crc_byte)
        got = Signal()
        m.d.comb += [self.rx.ready.eq(1), got.eq(self.rx.valid)]   # bytes outside a frame are dropped
        with m.If(~in_tx):
            m.d.comb += crc_byte.eq(byte)
        with m.If(got):
            m.d.sync += idle.eq(0)
        with m.Elif(idle != self.timeout_cycles):
            m.d.sync += idle.eq(idle + 1)
        timed_out = idle == self.timeout_cycles

        is_write = (cmd == Cmd.MEM_WRITE) | (cmd == Cmd.REG_WRITE)
        payload_len = Mux(cmd == Cmd.REG_WRITE, 4, Mux(cmd == Cmd.MEM_WRITE, length, 0))
        known = Signal()
        len_ok = Signal()
        m.d.comb += [
            known.eq((cmd == Cmd.PING) | (cmd == Cmd.REG_READ) | (cmd == Cmd.REG_WRITE) |
                     (cmd == Cmd.MEM_READ) | (cmd == Cmd.MEM_WRITE)),
            len_ok.eq(Mux(cmd == Cmd.PING, length == 0,
                          Mux((cmd == Cmd.REG_READ) | (cmd == Cmd.REG_WRITE), length == 4,
                              (length != 0) & (length <= self.max_payload)))),
        ]
        offset = Signal(33)
        m.d.comb += offset.eq(addr - self.mem_base)
        reg_bad = (addr[:2] != 0) | (addr >= (1 << self.reg_addr_width))
        # The address check, free-running in three steps from the header (the subtract, add and compare
        # into bad_addr in CHECK made 9.8 ns in the 8x8 SoC): settled three cycles after the header's
        # last byte, read in VERIFY, after the two CRC bytes at least.
        below, offset_q, mem_bad_q, reg_bad_q, is_mem, is_ping = (Signal(), Signal(33), Signal(), Signal(),
                                                                 Signal(), Signal())
        m.d.sync += [
            below.eq(addr < self.mem_base), offset_q.eq(offset), reg_bad_q.eq(reg_bad),
            is_mem.eq((cmd == Cmd.MEM_READ) | (cmd == Cmd.MEM_WRITE)), is_ping.eq(cmd == Cmd.PING),
            mem_bad_q.eq(below | (offset_q + length > self.mem_bytes)),
            bad_addr.eq(Mux(is_mem, mem_bad_q, ~is_ping & reg_bad_q)),
        ]

        # ---- the byte address of the current memory access and its beat ------------------------------
        cur = Signal(32)
        lane = Signal(max(log2, 1))
        m.d.comb += [cur.eq(addr + cnt), lane.eq(cur[:log2] if log2 else 0)]
        beat_addr = Cat(Const(0, log2), cur[log2:]) if log2 else cur
        for ch in (self.mem.aw, self.mem.ar):
            m.d.comb += [ch.addr.eq(beat_addr), ch.len.eq(0), ch.size.eq(log2), ch.burst.eq(axi.Burst.INCR)]
        m.d.comb += [self.mem.w.data.eq(Cat(*[rp_q] * nb)), self.mem.w.strb.eq((Const(1, nb) << lane)[:nb]),
                     self.mem.w.last.eq(1)]
        m.d.comb += [self.ctrl.ar.addr.eq(addr), self.ctrl.aw.addr.eq(addr), self.ctrl.w.data.eq(word),
                     self.ctrl.w.strb.eq(0xF)]

        # ---- response bytes -------------------------------------------------------------------------
        # Each byte is prepared in three hold cycles (the UART takes thousands per byte): the buffer is
        # read at payload index j (a register kept at txi - 5), its output registered (block-RAM
        # clock-to-out), the byte selected into tx_q; tx_q alone feeds the stream and the CRC. (Read,
        # select and the unrolled CRC in one cycle was the 25F board design's longest path, 15 ns.)
        j = Signal(16)
        tx_q = Signal(8)
        m.d.sync += rp_q.eq(rp.data)
        m.d.comb += rp.addr.eq(Mux(in_tx, j, cnt))
        ident_rom = Array(Const(b, 8) for b in ident)
        payload_byte = Mux(src == 0, ident_rom[j[:max(1, (len(ident) - 1).bit_length())]],
                           Mux(src == 1, word.word_select(j[:2], 8), rp_q))
        tx_byte = Signal(8)
        # The counters' compares with the response length, free-running: j, txi and resp_len move on a
        # handshake (or in respond), tx_q and its flags are loaded two cycles later (tx_wait == 1). In the
        # select they made resp_len -> tx_q 9.9 ns in the 8x8 SoC.
        j_lt_len, j_is_len, txi_in_crc, txi_is_end = Signal(), Signal(), Signal(), Signal()
        m.d.sync += [j_lt_len.eq(j < resp_len), j_is_len.eq(j == resp_len),
                     txi_in_crc.eq((txi != 0) & (txi < 5 + resp_len)), txi_is_end.eq(txi == 6 + resp_len)]
        with m.Switch(txi):
            with m.Case(0):
                m.d.comb += tx_byte.eq(RESP_SYNC)
            with m.Case(1):
                m.d.comb += tx_byte.eq(status)
            with m.Case(2):
                m.d.comb += tx_byte.eq(seq)
            with m.Case(3):
                m.d.comb += tx_byte.eq(resp_len[:8])
            with m.Case(4):
                m.d.comb += tx_byte.eq(resp_len[8:])
            with m.Default():
                m.d.comb += tx_byte.eq(Mux(j_lt_len, payload_byte, Mux(j_is_len, crc[8:], crc[:8])))

        def respond(st, n=0, source=1):
            m.d.sync += [status.eq(st), resp_len.eq(n), src.eq(source), txi.eq(0), j.eq(-5), crc.eq(0xFFFF),
                         tx_wait.eq(3), in_tx.eq(1)]
            m.next = "TX"

        def record(st):
            m.d.sync += [last_seq.eq(seq), last_status.eq(st), last_write.eq(is_write), last_valid.eq(1)]

        def wait_both(aw, w, next_state):
            m.d.comb += [aw.valid.eq(~aw_done), w.valid.eq(~w_done)]
            aw_ok = aw_done | aw.ready
            w_ok = w_done | w.ready
            with m.If(aw_ok & w_ok):
                m.d.sync += [aw_done.eq(0), w_done.eq(0)]
                m.next = next_state
            with m.Else():
                m.d.sync += [aw_done.eq(aw_ok), w_done.eq(w_ok)]

        with m.FSM(name="bridge") as fsm:
            with m.State("SYNC"):
                with m.If(got & (byte == REQ_SYNC)):
                    m.d.sync += [crc.eq(0xFFFF), cnt.eq(0)]
                    m.next = "HEADER"
            with m.State("HEADER"):
                with m.If(got):
                    m.d.sync += [crc.eq(crc_next), hdr.eq(Cat(hdr[8:], byte)), cnt.eq(cnt + 1)]
                    with m.If(cnt == 7):
                        m.next = "CHECK"
                with m.Elif(timed_out):
                    m.next = "SYNC"
            with m.State("CHECK"):                # bytes are >= 40 cycles apart: a cycle to decode
                m.d.sync += [payload_m1.eq(payload_len - 1), length_m1.eq(length - 1), cnt.eq(0)]
                with m.If(~known):
                    m.d.sync += status.eq(Status.BAD_CMD)
                    m.next = "DISCARD"
                with m.Elif(~len_ok):
                    m.d.sync += status.eq(Status.BAD_LEN)
                    m.next = "DISCARD"
                with m.Elif(payload_len != 0):
                    m.next = "PAYLOAD"
                with m.Else():
                    m.next = "CRC"
            with m.State("PAYLOAD"):
                with m.If(got):
                    m.d.sync += [w_addr.eq(cnt), w_data.eq(byte), w_en.eq(1)]
                    m.d.sync += [crc.eq(crc_next), word.eq(Cat(word[8:], byte)), cnt.eq(cnt + 1)]
                    with m.If(cnt == payload_m1):
                        m.d.sync += cnt.eq(0)
                        m.next = "CRC"
                with m.Elif(timed_out):
                    m.next = "SYNC"
            with m.State("CRC"):
                with m.If(got):
                    m.d.sync += [crc.eq(crc_next), cnt.eq(cnt + 1)]
                    with m.If(cnt == 1):
                        m.d.sync += cnt.eq(0)
                        m.next = "VERIFY"
                with m.Elif(timed_out):
                    m.next = "SYNC"
            with m.State("DISCARD"):
                with m.If(timed_out):
                    respond(status, 0)
            with m.State("VERIFY"):
                with m.If(crc != 0):
                    respond(Status.BAD_CRC)
                with m.Elif(bad_addr):
                    respond(Status.BAD_ADDR)
                with m.Elif(is_write & last_valid & last_write & (seq == last_seq)):
                    respond(last_status)                 # a retry of the write just executed
                with m.Elif(cmd == Cmd.PING):
                    m.d.sync += last_valid.eq(0)         # a new session: forget the last write
                    respond(Status.OK, len(ident), source=0)
                with m.Elif(cmd == Cmd.REG_READ):
                    m.next = "REG_AR"
                with m.Elif(cmd == Cmd.REG_WRITE):
                    m.next = "REG_AW"
                with m.Elif(cmd == Cmd.MEM_READ):
                    m.next = "MR_AR"
                with m.Else():
                    m.next = "MW_FETCH"
            with m.State("REG_AR"):
                m.d.comb += self.ctrl.ar.valid.eq(1)
                with m.If(self.ctrl.ar.ready):
                    m.next = "REG_R"
            with m.State("REG_R"):
                m.d.comb += self.ctrl.r.ready.eq(1)
                with m.If(self.ctrl.r.valid):
                    ok = self.ctrl.r.resp == axi.Resp.OKAY
                    m.d.sync += word.eq(self.ctrl.r.data)
                    record(Mux(ok, Status.OK, Status.BUS_ERROR))
                    respond(Mux(ok, Status.OK, Status.BUS_ERROR), Mux(ok, 4, 0))
            with m.State("REG_AW"):
                wait_both(self.ctrl.aw, self.ctrl.w, "REG_B")
            with m.State("REG_B"):
                m.d.comb += self.ctrl.b.ready.eq(1)
                with m.If(self.ctrl.b.valid):
                    st = Mux(self.ctrl.b.resp == axi.Resp.OKAY, Status.OK, Status.BUS_ERROR)
                    record(st)
                    respond(st)
            with m.State("MW_FETCH"):             # the buffer byte at cnt is on rp.data next cycle
                m.next = "MW_FETCH2"
            with m.State("MW_FETCH2"):            # ... and on rp_q the cycle after
                m.next = "MW_AW"
            with m.State("MW_AW"):
                wait_both(self.mem.aw, self.mem.w, "MW_B")
            with m.State("MW_B"):
                m.d.comb += self.mem.b.ready.eq(1)
                with m.If(self.mem.b.valid):
                    with m.If(self.mem.b.resp != axi.Resp.OKAY):
                        record(Status.BUS_ERROR)
                        respond(Status.BUS_ERROR)
                    with m.Elif(cnt == length_m1):
                        record(Status.OK)
                        respond(Status.OK)
                    with m.Else():
                        m.d.sync += cnt.eq(cnt + 1)
                        m.next = "MW_FETCH"
            with m.State("MR_AR"):
                m.d.comb += self.mem.ar.valid.eq(1)
                with m.If(self.mem.ar.ready):
                    m.next = "MR_R"
            with m.State("MR_R"):
                # The beat is taken here and judged in MR_NEXT, from registers: the SRAM read queue's
                # response, its check and the response set-up's enables in one cycle were 10.2 ns.
                m.d.comb += self.mem.r.ready.eq(1)
                with m.If(self.mem.r.valid):
                    m.d.sync += [w_addr.eq(cnt), w_data.eq(self.mem.r.data.word_select(lane, 8)), w_en.eq(1),
                                 r_ok.eq(self.mem.r.resp == axi.Resp.OKAY)]
                    m.next = "MR_NEXT"
            with m.State("MR_NEXT"):
                with m.If(~r_ok):
                    record(Status.BUS_ERROR)
                    respond(Status.BUS_ERROR)
                with m.Elif(cnt == length_m1):
                    record(Status.OK)
                    respond(Status.OK, length, source=2)
                with m.Else():
                    m.d.sync += cnt.eq(cnt + 1)
                    m.next = "MR_AR"
            with m.State("TX"):
                with m.If(self.tx.valid & self.tx.ready & tx_end):
                    m.d.sync += in_tx.eq(0)
                    m.next = "SYNC"
        with m.If(in_tx):
            m.d.comb += [self.tx.payload.eq(tx_q), self.tx.valid.eq(tx_wait == 0), crc_byte.eq(tx_q)]
            with m.If(tx_wait != 0):
                m.d.sync += tx_wait.eq(tx_wait - 1)
            with m.If(tx_wait == 1):
                m.d.sync += [tx_q.eq(tx_byte), tx_crc.eq(txi_in_crc), tx_end.eq(txi_is_end)]
            with m.If(self.tx.valid & self.tx.ready):
                m.d.sync += [txi.eq(txi + 1), j.eq(j + 1), tx_wait.eq(3)]
                with m.If(tx_crc):
                    m.d.sync += crc.eq(crc_next)
        m.d.comb += self.busy.eq(~fsm.ongoing("SYNC"))
        return m
