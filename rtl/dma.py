"""AXI4 DMA master: a read engine and a write engine on one AXI4 bus.

Both engines take ``(addr, length)`` commands on a :mod:`amaranth.lib.stream` port. ``addr`` must be
aligned to the bus width and ``length`` (bytes) a multiple of it; the low bits of both are ignored. A
command is split into INCR bursts of full-width beats, at most 256 beats each and never crossing a
4 KiB boundary (the AXI rule), and up to ``max_outstanding`` bursts are in flight at once so the
memory latency is hidden behind the previous bursts' data.

Errors (``SLVERR``/``DECERR`` on ``R`` or ``B``) are sticky: the engine raises ``error`` with the
matching :class:`~scalenet.rtl.regmap.ErrorCode`, issues no new bursts, and drains what is already in
flight (read beats are discarded, write bursts are completed with ``WSTRB`` = 0), so the bus is idle
and ``busy`` falls within a bounded time. Commands arriving while ``error`` is set are accepted and
dropped; ``error_clear`` (a soft reset) re-arms the engine.
"""

from amaranth.hdl import Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from . import axi
from .regmap import ErrorCode

__all__ = ["command_layout", "write_data_layout", "DMAReader", "DMAWriter", "DMA"]

_MAX_BEATS = 256
_PAGE = 4096


def command_layout(addr_width=32):
    """``(addr, length)``: a transfer of ``length`` bytes at byte address ``addr``."""
    return data.StructLayout({"addr": unsigned(addr_width), "length": unsigned(32)})


def write_data_layout(data_width=64):
    """``{data, strb}``: a write beat with its byte strobes."""
    return data.StructLayout({"data": unsigned(data_width), "strb": unsigned(data_width // 8)})


def _engine_status(bytes_name, data_width):
    """Status ports both engines have: busy, the sticky error and its clear, a byte counter, stall."""
    return {"busy": Out(1), "error": Out(1), "error_code": Out(8), "error_clear": In(1),
            bytes_name: Out(range(data_width // 8 + 1)), "stall": Out(1)}


def _check_params(addr_width, data_width, id_width, max_outstanding):
    if not isinstance(addr_width, int) or not 12 <= addr_width <= 64:
        raise TypeError(f"Address width must be an integer in 12..64, not {addr_width!r}")
    if data_width not in (32, 64, 128, 256, 512, 1024):
        raise ValueError(f"Data width must be a power of two from 32 to 1024, not {data_width!r}")
    if not isinstance(id_width, int) or id_width < 0:
        raise TypeError(f"ID width must be a non-negative integer, not {id_width!r}")
    if not isinstance(max_outstanding, int) or max_outstanding < 1:
        raise TypeError(f"max_outstanding must be a positive integer, not {max_outstanding!r}")


class _Splitter:
    """Address/remaining-beats state that walks a command burst by burst.

    ``beats`` is the length of the next burst: the remaining beats, capped at 256 and at the 4 KiB
    boundary. ``advance(m)`` moves past that burst; ``load(m, addr, length)`` starts a command.
    ``beats`` is a register and so is the page cap it is computed from (the 4 KiB distance, its cap at
    256 and the compares with the remaining beats are three carry chains in series: the cap in the cycle
    after addr changes, ``beats`` in the next, neither in front of the burst issue), so ``beats`` is only
    ``fresh`` from the third cycle after a load or an advance: at most one burst every three cycles.
    ``nz`` (remaining != 0) is a register too, set from ``last`` (this burst ends the command) computed
    with ``beats``: a 27-bit zero test headed ``busy`` and the issue enable, and through them the
    sequencer and the performance counters.
    """

    def __init__(self, m, name, addr_width, data_bytes):
        self._log2 = data_bytes.bit_length() - 1
        self.addr = Signal(addr_width, name=f"{name}_addr")
        self.remaining = Signal(32 - self._log2, name=f"{name}_remaining")
        self.beats = Signal(range(_MAX_BEATS + 1), name=f"{name}_beats")
        self.fresh = Signal(name=f"{name}_fresh")
        self.nz = Signal(name=f"{name}_nz")
        last = Signal(name=f"{name}_last")
        self._last = last
        to_page = Signal(range(_PAGE + 1), name=f"{name}_to_page")
        page_beats = Signal(range(_PAGE // data_bytes + 1), name=f"{name}_page_beats")
        limit = Signal(range(_MAX_BEATS + 1), name=f"{name}_limit")
        m.d.comb += [
            to_page.eq(_PAGE - self.addr[:12]),
            page_beats.eq(to_page >> self._log2),
            limit.eq(Mux(page_beats < _MAX_BEATS, page_beats, _MAX_BEATS)),
        ]
        limit_q = Signal.like(limit, name=f"{name}_limit_q")
        self._settle = Signal(name=f"{name}_settle")     # limit_q is up to date; beats will be next cycle
        m.d.sync += [limit_q.eq(limit), self._settle.eq(1),
                     self.beats.eq(Mux(self.remaining < limit_q, self.remaining, limit_q)),
                     last.eq(self.remaining <= limit_q), self.fresh.eq(self._settle)]

    def advance(self, m):
        m.d.sync += [
            self.addr.eq(self.addr + (self.beats << self._log2)),
            self.remaining.eq(self.remaining - self.beats),
            self.nz.eq(~self._last),
            self.fresh.eq(0), self._settle.eq(0),
        ]

    def clear(self, m):
        """Drop the rest of the command (no more bursts)."""
        m.d.sync += [self.remaining.eq(0), self.nz.eq(0)]

    def load(self, m, addr, length):
        m.d.sync += [
            self.addr.eq(addr & ~Const((1 << self._log2) - 1, len(self.addr))),
            self.remaining.eq(length >> self._log2),
            self.nz.eq((length >> self._log2) != 0),
            self.fresh.eq(0), self._settle.eq(0),
        ]


def _drive_address(m, port, name, *, log2, valid):
    """Registered AR/AW payload: loaded when the port is free, held stable until ``ready``."""
    addr, length = Signal(len(port.addr), name=f"{name}_addr"), Signal(8, name=f"{name}_len")
    m.d.comb += [
        port.valid.eq(valid),
        port.addr.eq(addr),
        port.len.eq(length),
        port.size.eq(log2),
        port.burst.eq(axi.Burst.INCR),
        port.prot.eq(0),
    ]
    if hasattr(port, "id"):
        m.d.comb += port.id.eq(0)
    return addr, length


class DMAReader(wiring.Component):
    """The read engine.

    Members
    -------
    cmd : :py:`In(stream.Signature(command_layout(addr_width)))`
    o : :py:`Out(stream.Signature(StructLayout({"data": data_width, "last": 1})))`
        The data, in address order; ``last`` marks the final beat of a command.
    ar : :py:`Out(axi.AddressSignature(...))`
    r : :py:`In(axi.ReadDataSignature(...))`
    busy : :py:`Out(1)`
        A command is being split or has bursts in flight. ``cmd.ready`` is ``~busy``.
    error, error_code : :py:`Out(1)`, :py:`Out(8)`
        Sticky; ``READ_SLVERR`` or ``READ_DECERR``.
    error_clear : :py:`In(1)`
    rd_bytes : :py:`Out(range(data_bytes + 1))`
        Bytes delivered on ``o`` this cycle (for the performance counters).
    stall : :py:`Out(1)`
        Busy, the consumer is ready and there is no data: the datapath waits for memory.
    """

    def __init__(self, *, addr_width=32, data_width=64, id_width=0, max_outstanding=4):
        _check_params(addr_width, data_width, id_width, max_outstanding)
        self._addr_width, self._data_width = addr_width, data_width
        self._id_width, self._max_outstanding = id_width, max_outstanding
        super().__init__({
            "cmd": In(stream.Signature(command_layout(addr_width))),
            "o": Out(stream.Signature(data.StructLayout({"data": data_width, "last": 1}))),
            "ar": Out(axi.AddressSignature(addr_width=addr_width, id_width=id_width)),
            "r": In(axi.ReadDataSignature(data_width=data_width, id_width=id_width)),
            **_engine_status("rd_bytes", data_width),
        })

    max_outstanding = property(lambda self: self._max_outstanding)
    data_width = property(lambda self: self._data_width)

    def elaborate(self, platform):
        m = Module()
        data_bytes = self._data_width // 8
        log2 = data_bytes.bit_length() - 1
        split = _Splitter(m, "rd", self._addr_width, data_bytes)

        outstanding = Signal(range(self._max_outstanding + 1))
        recv_left = Signal(32 - log2)          # beats still to deliver for the command
        draining = Signal()                    # an error hit this command: discard what arrives
        ar_valid = Signal()
        ar_addr, ar_len = _drive_address(m, self.ar, "ar", log2=log2, valid=ar_valid)

        m.d.comb += self.busy.eq(split.nz | (outstanding != 0) | draining)
        m.d.comb += self.cmd.ready.eq(~self.busy)

        # Address channel: one burst per cycle while there is room for it.
        issue = Signal()
        # The rest of a failed command is dropped a cycle after its bad beat (``stop``): the response
        # read from the SRAM's queue, its check and a reset fanning out to the splitter's 30 registers
        # in one cycle were 10.3 ns in the 8x8 SoC. ``error`` and ``draining`` stop new bursts at once.
        stop = Signal()
        m.d.comb += issue.eq((~ar_valid | self.ar.ready) & split.nz & split.fresh &
                             (outstanding < self._max_outstanding) & ~self.error & ~draining & ~stop)
        with m.If(self.ar.ready):
            m.d.sync += ar_valid.eq(0)
        with m.If(issue):
            m.d.sync += [ar_valid.eq(1), ar_addr.eq(split.addr), ar_len.eq(split.beats - 1)]
            split.advance(m)

        # Data channel: pass-through to the stream; bad or drained beats are taken and dropped.
        beat_ok = Signal()
        discard = Signal()
        m.d.comb += [
            beat_ok.eq((self.r.resp == axi.Resp.OKAY) | (self.r.resp == axi.Resp.EXOKAY)),
            discard.eq(draining | self.error | ~beat_ok),
            self.o.valid.eq(self.r.valid & ~discard),
            self.o.p.data.eq(self.r.data),
            self.o.p.last.eq(recv_left == 1),
            self.r.ready.eq(self.o.ready | discard),
            self.rd_bytes.eq(Mux(self.o.valid & self.o.ready, data_bytes, 0)),
            self.stall.eq(self.busy & self.o.ready & ~self.o.valid),
        ]
        burst_done = Signal()
        m.d.comb += burst_done.eq(self.r.valid & self.r.ready & self.r.last)
        m.d.sync += outstanding.eq(outstanding + issue - burst_done)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += recv_left.eq(recv_left - 1)
        with m.If(draining & (outstanding == 0)):
            m.d.sync += draining.eq(0)

        with m.If(self.cmd.valid & self.cmd.ready & ~self.error):
            split.load(m, self.cmd.p.addr, self.cmd.p.length)
            m.d.sync += recv_left.eq(self.cmd.p.length >> log2)

        with m.If(self.error_clear):
            m.d.sync += [self.error.eq(0), self.error_code.eq(ErrorCode.NONE)]
        m.d.sync += stop.eq(0)
        with m.If(stop):
            split.clear(m)
        with m.If(self.r.valid & self.r.ready & ~beat_ok & ~draining):
            # Stop: no new bursts; the outstanding ones are drained (including this one's rest).
            m.d.sync += [stop.eq(1), draining.eq(1), self.error.eq(1),
                         self.error_code.eq(Mux(self.r.resp == axi.Resp.SLVERR,
                                                ErrorCode.READ_SLVERR, ErrorCode.READ_DECERR))]
            # (r.ready is high here: the beat is discarded) outstanding - burst_done + issue == 0, without
            # the handshake and the subtraction in front of the compare.
            with m.If(self.r.last & Mux(issue, outstanding == 0, outstanding == 1)):
                m.d.sync += draining.eq(0)
        return m


class DMAWriter(wiring.Component):
    """The write engine.

    ``W`` beats follow their ``AW`` (a burst's data starts once its address is accepted); the
    command completes when every ``B`` is back.

    Members
    -------
    cmd : :py:`In(stream.Signature(command_layout(addr_width)))`
    i : :py:`In(stream.Signature(data_width))`
        The data, in address order; with ``strobes=True`` a ``{data, strb}`` struct whose byte strobes
        go to ``WSTRB`` (bytes with a 0 strobe are left untouched: unaligned and strided outputs).
    aw : :py:`Out(axi.AddressSignature(...))`
    w : :py:`Out(axi.WriteDataSignature(...))`
    b : :py:`In(axi.WriteResponseSignature(...))`
    busy : :py:`Out(1)`
        ``cmd.ready`` is ``~busy``.
    error, error_code : :py:`Out(1)`, :py:`Out(8)`
        Sticky; ``WRITE_SLVERR`` or ``WRITE_DECERR``.
    error_clear : :py:`In(1)`
    wr_bytes : :py:`Out(range(data_bytes + 1))`
        Bytes written this cycle.
    stall : :py:`Out(1)`
        The producer has data and the engine cannot take it.
    """

    def __init__(self, *, addr_width=32, data_width=64, id_width=0, max_outstanding=4, strobes=False):
        _check_params(addr_width, data_width, id_width, max_outstanding)
        self._addr_width, self._data_width = addr_width, data_width
        self._id_width, self._max_outstanding = id_width, max_outstanding
        self._strobes = bool(strobes)
        super().__init__({
            "cmd": In(stream.Signature(command_layout(addr_width))),
            "i": In(stream.Signature(write_data_layout(data_width) if strobes else data_width)),
            "aw": Out(axi.AddressSignature(addr_width=addr_width, id_width=id_width)),
            "w": Out(axi.WriteDataSignature(data_width=data_width)),
            "b": In(axi.WriteResponseSignature(id_width=id_width)),
            **_engine_status("wr_bytes", data_width),
        })

    max_outstanding = property(lambda self: self._max_outstanding)
    data_width = property(lambda self: self._data_width)

    def elaborate(self, platform):
        m = Module()
        data_bytes = self._data_width // 8
        log2 = data_bytes.bit_length() - 1
        aw_split = _Splitter(m, "aw", self._addr_width, data_bytes)
        w_split = _Splitter(m, "w", self._addr_width, data_bytes)   # same walk, for the W beat counts

        outstanding = Signal(range(self._max_outstanding + 1))   # AW issued, B not yet back
        w_credit = Signal(range(self._max_outstanding + 1))      # AW accepted, W burst not started
        w_left = Signal(range(_MAX_BEATS + 1))                   # beats left in the current W burst
        w_zero = Signal(init=1)                                  # w_left == 0, as a register
        draining = Signal()
        aw_valid = Signal()
        aw_addr, aw_len = _drive_address(m, self.aw, "aw", log2=log2, valid=aw_valid)

        m.d.comb += self.busy.eq(aw_split.nz | (outstanding != 0) | draining)
        m.d.comb += self.cmd.ready.eq(~self.busy)

        issue = Signal()
        m.d.comb += issue.eq((~aw_valid | self.aw.ready) & aw_split.nz & aw_split.fresh &
                             (outstanding < self._max_outstanding) & ~self.error & ~draining)
        with m.If(self.aw.ready):
            m.d.sync += aw_valid.eq(0)
        with m.If(issue):
            m.d.sync += [aw_valid.eq(1), aw_addr.eq(aw_split.addr), aw_len.eq(aw_split.beats - 1)]
            aw_split.advance(m)

        # W: a registered stage so the payload is stable while WVALID waits for WREADY.
        w_valid, w_data, w_strb, w_last = Signal(), Signal(self._data_width), Signal(data_bytes), Signal()
        m.d.comb += [
            self.w.valid.eq(w_valid), self.w.data.eq(w_data),
            self.w.strb.eq(w_strb), self.w.last.eq(w_last),
        ]
        aw_accepted = Signal()
        m.d.comb += aw_accepted.eq(self.aw.valid & self.aw.ready)
        # ``starting`` (a W burst begins with this beat's load: w_zero & w_credit != 0 & w_split.fresh) is
        # a register, computed a cycle ahead for both outcomes of ``load`` and picked by it: the credit
        # compare in front of load, and load in front of the counters' enables, was 10.8 ns in the whole
        # 8x8 design (w_credit -> starting -> can_load -> load -> w_remaining CE). Mid-burst ``have_burst``
        # is ~w_zero alone, so long bursts still move one beat per cycle.
        starting = Signal()
        have_burst = Signal()
        cur_left = Signal(range(_MAX_BEATS + 1))
        can_load = Signal()
        load = Signal()
        w_cmd_load = Signal()
        credit_next_nz = (w_credit != 0) | aw_accepted           # without a burst starting this cycle
        fresh_next = w_split._settle & ~w_cmd_load               # without an advance this cycle
        m.d.sync += starting.eq(Mux(load,
                                    ~starting & (w_left == 1) & credit_next_nz & fresh_next,
                                    w_zero & credit_next_nz & fresh_next))
        m.d.comb += [
            have_burst.eq(~w_zero | starting),
            cur_left.eq(Mux(starting, w_split.beats, w_left)),
            can_load.eq((~w_valid | self.w.ready) & have_burst),
            load.eq(can_load & (self.i.valid | draining)),
            self.i.ready.eq(can_load & ~draining),
        ]
        with m.If(self.w.ready):
            m.d.sync += w_valid.eq(0)
        in_data = self.i.payload.data if self._strobes else self.i.payload
        in_strb = self.i.payload.strb if self._strobes else (1 << data_bytes) - 1
        with m.If(load):
            m.d.sync += [
                w_valid.eq(1), w_data.eq(in_data),
                w_strb.eq(Mux(draining, 0, in_strb)),
                w_last.eq(cur_left == 1),
                w_zero.eq(cur_left == 1),
                w_left.eq(cur_left - 1),
            ]
            with m.If(starting):
                w_split.advance(m)
        m.d.sync += w_credit.eq(w_credit + aw_accepted - (load & starting))

        m.d.comb += [
            self.b.ready.eq(1),
            self.wr_bytes.eq(Mux(self.w.valid & self.w.ready & (self.w.strb != 0), data_bytes, 0)),
            self.stall.eq(self.busy & self.i.valid & ~self.i.ready),
        ]
        b_done = Signal()
        m.d.comb += b_done.eq(self.b.valid & self.b.ready)
        m.d.sync += outstanding.eq(outstanding + issue - b_done)
        with m.If(draining & (outstanding == 0)):
            m.d.sync += draining.eq(0)

        m.d.comb += w_cmd_load.eq(self.cmd.valid & self.cmd.ready & ~self.error)
        with m.If(w_cmd_load):
            aw_split.load(m, self.cmd.p.addr, self.cmd.p.length)
            w_split.load(m, self.cmd.p.addr, self.cmd.p.length)

        with m.If(self.error_clear):
            m.d.sync += [self.error.eq(0), self.error_code.eq(ErrorCode.NONE)]
        b_bad = Signal()
        m.d.comb += b_bad.eq(b_done & ((self.b.resp == axi.Resp.SLVERR) | (self.b.resp == axi.Resp.DECERR)))
        with m.If(b_bad & ~self.error):
            m.d.sync += [self.error.eq(1),
                         self.error_code.eq(Mux(self.b.resp == axi.Resp.SLVERR,
                                                ErrorCode.WRITE_SLVERR, ErrorCode.WRITE_DECERR))]
        with m.If(b_bad):
            # outstanding - b_done + issue != 0 with b_done high (so outstanding >= 1), without the
            # subtraction: error -> issue -> that carry chain -> draining was 9.9 ns in the whole design.
            with m.If(issue | (outstanding != 1)):
                m.d.sync += draining.eq(1)
            aw_split.clear(m)
        return m


class DMA(wiring.Component):
    """A :class:`DMAReader` and a :class:`DMAWriter` sharing one AXI4 master port.

    Members
    -------
    bus : :py:`Out(axi.Signature(addr_width=addr_width, data_width=data_width, id_width=id_width))`
    rd_cmd, rd_data, wr_cmd, wr_data
        The engines' ``cmd``/``o`` and ``cmd``/``i`` streams.
    rd_busy, wr_busy : :py:`Out(1)`
    error, error_code : :py:`Out(1)`, :py:`Out(8)`
        Either engine's sticky error (the read engine's code when both failed).
    error_clear : :py:`In(1)`
    rd_bytes, wr_bytes, stall
        Per-cycle increments for the performance counters (``stall``: either engine).
    """

    def __init__(self, *, addr_width=32, data_width=64, id_width=0, max_outstanding=4, strobes=False):
        _check_params(addr_width, data_width, id_width, max_outstanding)
        self._params = dict(addr_width=addr_width, data_width=data_width, id_width=id_width,
                            max_outstanding=max_outstanding)
        self._strobes = strobes
        super().__init__({
            "bus": Out(axi.Signature(addr_width=addr_width, data_width=data_width, id_width=id_width)),
            "rd_cmd": In(stream.Signature(command_layout(addr_width))),
            "rd_data": Out(stream.Signature(data.StructLayout({"data": data_width, "last": 1}))),
            "wr_cmd": In(stream.Signature(command_layout(addr_width))),
            "wr_data": In(stream.Signature(write_data_layout(data_width) if strobes else data_width)),
            "rd_busy": Out(1),
            "wr_busy": Out(1),
            "error": Out(1),
            "error_code": Out(8),
            "error_clear": In(1),
            "rd_bytes": Out(range(data_width // 8 + 1)),
            "wr_bytes": Out(range(data_width // 8 + 1)),
            "stall": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.reader = reader = DMAReader(**self._params)
        m.submodules.writer = writer = DMAWriter(**self._params, strobes=self._strobes)
        connect(m, flipped(self.bus.ar), reader.ar)
        connect(m, flipped(self.bus.r), reader.r)
        connect(m, flipped(self.bus.aw), writer.aw)
        connect(m, flipped(self.bus.w), writer.w)
        connect(m, flipped(self.bus.b), writer.b)
        connect(m, flipped(self.rd_cmd), reader.cmd)
        connect(m, flipped(self.rd_data), reader.o)
        connect(m, flipped(self.wr_cmd), writer.cmd)
        connect(m, flipped(self.wr_data), writer.i)
        m.d.comb += [
            self.rd_busy.eq(reader.busy),
            self.wr_busy.eq(writer.busy),
            self.error.eq(reader.error | writer.error),
            self.error_code.eq(Mux(reader.error, reader.error_code, writer.error_code)),
            reader.error_clear.eq(self.error_clear),
            writer.error_clear.eq(self.error_clear),
            self.rd_bytes.eq(reader.rd_bytes),
            self.wr_bytes.eq(writer.wr_bytes),
            self.stall.eq(reader.stall | writer.stall),
        ]
        return m
