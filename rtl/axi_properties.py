"""AXI4 / AXI4-Lite protocol rules as formal properties, and the harnesses that check our bus ports.

A rule is an :class:`~amaranth.hdl.Assert` on the side under test and an :class:`~amaranth.hdl.Assume` on
its environment, so one description serves both roles: checking the DMA (an AXI4 *master*) asserts the
master's obligations and assumes a well-behaved slave; checking the control port (an AXI4-Lite *slave*)
asserts the slave's obligations and assumes a well-behaved master. The rules are the ones from the
AMBA AXI specification that a hang or a memory corruption would break:

* ``VALID`` once raised stays high until ``READY``, and the payload does not change meanwhile;
* a burst is INCR of full-width beats, aligned, at most 256 beats, and never crosses a 4 KiB boundary;
* ``WLAST``/``RLAST`` mark exactly the last beat of each burst;
* no write data before (or without) its address having been accepted;
* one response per request, none without one; at most ``max_outstanding`` bursts in flight.

:mod:`scalenet.cosim.formal` turns a harness into RTLIL and proves it with SymbiYosys.
"""

from amaranth.hdl import Array, Assert, Assume, Elaboratable, Module, Mux, ResetSignal, Signal, Value
from amaranth.lib import wiring

from . import axi
from .control import ControlSlave
from .dma import DMA

__all__ = ["Rules", "master_rules", "lite_slave_rules", "DMAHarness", "ControlHarness", "free_inputs"]


class Rules:
    """Adds properties to a module: ``check`` for the side under test, ``env`` for the environment.

    ``past(value)`` is ``value`` one cycle ago (registered); ``started`` is low in the first cycle, where
    the reset is held (assumed) and nothing is checked.
    """

    def __init__(self, m):
        self.m = m
        self.started = Signal(name="started", reset_less=True)
        m.d.sync += self.started.eq(1)
        m.d.comb += Assume(ResetSignal() == ~self.started)
        self._n = 0

    def past(self, value):
        """Must be called outside any ``If``: the register samples every cycle."""
        self._n += 1
        reg = Signal.like(value, name=f"past_{self._n}")
        self.m.d.sync += reg.eq(value)
        return reg

    def _add(self, stmt_cls, cond, name):
        with self.m.If(self.started):
            self.m.d.comb += stmt_cls(cond, name)

    def check(self, cond, name):
        self._add(Assert, cond, name)

    def env(self, cond, name):
        self._add(Assume, cond, name)

    def handshake_rules(self, channel, name, payload, *, rule):
        """VALID held until READY, payload stable while stalled (``rule`` is check or env)."""
        stalled = self.past(channel.valid & ~channel.ready)
        before = {field: self.past(getattr(channel, field)) for field in payload}
        with self.m.If(stalled):
            rule(channel.valid, f"{name}_valid_held_until_ready")
            for field in payload:
                rule(getattr(channel, field) == before[field], f"{name}_{field}_stable")

    def counter(self, width, inc=0, dec=0, name=None):
        """An up/down counter of handshakes (wide enough for any bounded proof depth)."""
        count = Signal(width, name=name)
        self.m.d.sync += count.eq(count + inc - dec)
        return count


def _accept(channel):
    return channel.valid & channel.ready


class _BurstQueue:
    """Lengths of accepted bursts in order, so the data channel's LAST can be checked beat by beat."""

    def __init__(self, m, depth, name):
        self.m = m
        self.lens = Array(Signal(8, name=f"{name}_len_{i}") for i in range(depth))
        self.head = Signal(range(depth), name=f"{name}_head")
        self.tail = Signal(range(depth), name=f"{name}_tail")
        self.depth = depth
        self.beat = Signal(9, name=f"{name}_beat")  # beats done in the head burst
        self.name = name

    def _next(self, ptr):
        return Mux(ptr == self.depth - 1, 0, ptr + 1)

    def push(self, cond, length):
        with self.m.If(cond):
            self.m.d.sync += [self.lens[self.tail].eq(length), self.tail.eq(self._next(self.tail))]

    def data_beat(self, cond):
        """A beat of the head burst is transferred; returns whether it must be the last one."""
        last = Signal(name=f"{self.name}_beat_is_last")
        self.m.d.comb += last.eq(self.beat == self.lens[self.head])
        with self.m.If(cond):
            with self.m.If(last):
                self.m.d.sync += [self.beat.eq(0), self.head.eq(self._next(self.head))]
            with self.m.Else():
                self.m.d.sync += self.beat.eq(self.beat + 1)
        return last


def master_rules(m, bus, *, data_bytes, max_outstanding, width=12):
    """Rules of an AXI4 master port ``bus`` (assert the master's, assume the slave's)."""
    r = Rules(m)
    log2 = data_bytes.bit_length() - 1
    addr_payload = ["addr", "len", "size", "burst", "prot"] + (["id"] if hasattr(bus.ar, "id") else [])
    for name in ("ar", "aw"):
        ch = getattr(bus, name)
        r.handshake_rules(ch, name, addr_payload, rule=r.check)
        with m.If(ch.valid):
            r.check(ch.burst == axi.Burst.INCR, f"{name}_burst_is_incr")
            r.check(ch.size == log2, f"{name}_full_width_beats")
            r.check(ch.addr[:log2] == 0, f"{name}_aligned")
            r.check(ch.addr[:12] + ((ch.len + 1) << log2) <= 4096, f"{name}_no_4k_crossing")
    r.handshake_rules(bus.w, "w", ["data", "strb", "last"], rule=r.check)
    r.handshake_rules(bus.r, "r", ["data", "resp", "last"], rule=r.env)
    r.handshake_rules(bus.b, "b", ["resp"], rule=r.env)

    depth = max_outstanding + 1
    # Reads: bursts in flight, RLAST on the right beat (environment), bounded by max_outstanding.
    reads = _BurstQueue(m, depth, "rd")
    reads.push(_accept(bus.ar), bus.ar.len)
    r_last = reads.data_beat(_accept(bus.r))
    rd_open = r.counter(width, _accept(bus.ar), _accept(bus.r) & bus.r.last, "rd_open")
    r.check(rd_open <= max_outstanding, "rd_outstanding_bounded")
    with m.If(bus.r.valid):
        r.env(rd_open != 0, "r_only_for_requested_bursts")
        r.env(bus.r.last == r_last, "r_last_on_last_beat")

    # Writes: W beats only for accepted addresses, WLAST on the right beat, B once per completed burst.
    writes = _BurstQueue(m, depth, "wr")
    writes.push(_accept(bus.aw), bus.aw.len)
    w_last = writes.data_beat(_accept(bus.w))
    aw_open = r.counter(width, _accept(bus.aw), _accept(bus.w) & bus.w.last, "aw_without_data")
    bursts_written = r.counter(width, _accept(bus.w) & bus.w.last, _accept(bus.b), "b_owed")
    wr_open = r.counter(width, _accept(bus.aw), _accept(bus.b), "wr_open")
    r.check(wr_open <= max_outstanding, "wr_outstanding_bounded")
    with m.If(bus.w.valid):
        r.check(aw_open != 0, "w_only_after_its_address")
        r.check(bus.w.last == w_last, "w_last_on_last_beat")
    with m.If(bus.b.valid):
        r.env(bursts_written != 0, "b_only_for_written_bursts")
    return r


def lite_slave_rules(m, bus, *, max_wait=8, max_writes=2, width=8):
    """Rules of an AXI4-Lite slave port ``bus`` (assert the slave's, assume the master's)."""
    r = Rules(m)
    for name in ("ar", "aw"):
        r.handshake_rules(getattr(bus, name), name, ["addr", "prot"], rule=r.env)
    r.handshake_rules(bus.w, "w", ["data", "strb"], rule=r.env)
    r.handshake_rules(bus.r, "r", ["data", "resp"], rule=r.check)
    r.handshake_rules(bus.b, "b", ["resp"], rule=r.check)

    reads = r.counter(width, _accept(bus.ar), _accept(bus.r), "reads_unanswered")
    addrs = r.counter(width, _accept(bus.aw), _accept(bus.b), "write_addrs_unanswered")
    datas = r.counter(width, _accept(bus.w), _accept(bus.b), "write_data_unanswered")
    r.check(reads <= 1, "one_read_in_flight")
    # A write may be accepted while the previous one's response waits for BREADY (AXI allows it).
    r.check((addrs <= max_writes) & (datas <= max_writes), "writes_in_flight_bounded")
    with m.If(bus.r.valid):
        r.check(reads == 1, "r_only_after_ar")
    with m.If(bus.b.valid):
        r.check((addrs != 0) & (datas != 0), "b_only_after_aw_and_w")

    # Never a hang: an accepted request is answered within max_wait cycles.
    r_wait = Signal(range(max_wait + 2), name="r_wait")
    b_wait = Signal(range(max_wait + 2), name="b_wait")
    m.d.sync += [
        r_wait.eq(Mux((reads != 0) & ~bus.r.valid, r_wait + 1, 0)),
        b_wait.eq(Mux((addrs != 0) & (datas != 0) & ~bus.b.valid, b_wait + 1, 0)),
    ]
    r.check(r_wait <= max_wait, "r_within_bound")
    r.check(b_wait <= max_wait, "b_within_bound")
    return r


def free_inputs(component):
    """The component's input ports: left undriven they are free variables of the proof."""
    return [Value.cast(value) for _, member, value in component.signature.flatten(component)
            if member.flow == wiring.In]


class _Harness(Elaboratable):
    """A component under test (``dut``) whose inputs are the proof's free variables (``ports``)."""

    dut: wiring.Component

    @property
    def ports(self):
        return free_inputs(self.dut)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.dut
        self.add_rules(m, self.dut)
        return m


class DMAHarness(_Harness):
    """The DMA engine with every input free, its AXI4 master port under the master rules."""

    def __init__(self, *, addr_width=16, data_width=32, max_outstanding=2):
        self.dut = DMA(addr_width=addr_width, data_width=data_width, max_outstanding=max_outstanding)
        self._data_bytes = data_width // 8
        self._max_outstanding = max_outstanding

    def add_rules(self, m, dut):
        r = master_rules(m, dut.bus, data_bytes=self._data_bytes, max_outstanding=self._max_outstanding)
        # The command and write-data streams follow lib.stream's rules.
        for name in ("rd_cmd", "wr_cmd", "wr_data"):
            r.handshake_rules(getattr(dut, name), name, ["payload"], rule=r.env)


class ControlHarness(_Harness):
    """The control slave with every input free, its AXI4-Lite port under the slave rules.

    ``broken`` withdraws ``RVALID`` after one cycle of back-pressure between the slave and the rules:
    a deliberately wrong slave, to show that the rules can fail.
    """

    def __init__(self, *, broken=False):
        self.dut = ControlSlave(rows=8, cols=8, max_kernel=7, data_bytes=8, max_width=256, max_channels=1024)
        self.broken = broken

    def add_rules(self, m, dut):
        bus = dut.bus
        if self.broken:
            seen = wiring.Signature({
                "ar": wiring.Out(axi.AddressSignature(addr_width=dut.addr_width, lite=True)),
                "aw": wiring.Out(axi.AddressSignature(addr_width=dut.addr_width, lite=True)),
                "w": wiring.Out(axi.WriteDataSignature(data_width=32, lite=True)),
                "b": wiring.In(axi.WriteResponseSignature(lite=True)),
                "r": wiring.In(axi.ReadDataSignature(data_width=32, lite=True)),
            }).create(path=("seen",))
            stalled = Signal()
            m.d.sync += stalled.eq(bus.r.valid & ~bus.r.ready)
            for ch in ("ar", "aw", "w", "b", "r"):
                for field in getattr(seen, ch).signature.members:
                    m.d.comb += getattr(getattr(seen, ch), field).eq(getattr(getattr(bus, ch), field))
            m.d.comb += seen.r.valid.eq(bus.r.valid & ~stalled)
            bus = seen
        lite_slave_rules(m, bus)
