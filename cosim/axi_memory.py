"""Behavioural AXI models for ``amaranth.sim`` testbenches: an AXI4 slave memory and AXI4-Lite master helpers.

:class:`AXIMemory` serves a master's AXI4 bus from a numpy ``uint8`` array. It runs as one simulator
process (one wake-up per cycle for all five channels, which keeps pysim fast), inserts seeded random
gaps on every channel it drives, limits the read bandwidth, injects error responses for chosen address
ranges, and checks the master against the protocol rules a DMA must keep (bursts within 4 KiB, INCR only,
full-width beats, ``WLAST`` on the right beat, ``VALID`` held with a stable payload until ``READY``,
writes only where allowed). Violations are recorded in :attr:`AXIMemory.violations` rather than raised,
so a test sees all of them and the simulation keeps running.

The compiled engine's memory (cosim/axi_slave.cc, :class:`scalenet.cosim.compiled.AxiMemory`) is its
twin: the same options, the same timing and the same random stream drawn in the same order, and the
inspection API listed in :data:`MEMORY_API` — so one design runs cycle for cycle alike on both engines.

:func:`lite_read` and :func:`lite_write` drive an AXI4-Lite slave from a testbench, with the address
and data channels in any order and optional back-pressure on the response channels.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from scalenet.rtl.axi import Burst, Resp

__all__ = ["AXIMemory", "HostAccess", "Violation", "lite_read", "lite_write", "AXITimeout", "MEMORY_API", "resp_code",
           "stall_permille", "check_memory_options"]

MEMORY_API = ("data", "base", "data_bytes", "read_latency", "write_latency", "beat_interval", "stall", "seed",
              "max_outstanding", "writable", "load", "dump", "add_error", "clear_errors", "read_bytes",
              "write_bytes", "violations", "violation_count", "first_violation", "max_reads_outstanding",
              "max_writes_outstanding", "pending", "cycle")
"""What both engines' memory models offer (constructor options are the same keywords)."""

_MASK64 = (1 << 64) - 1
_SEED0 = 0x9E3779B97F4A7C15


class AXITimeout(Exception):
    """A transaction did not complete within the allowed number of cycles."""


@dataclass(frozen=True)
class Violation:
    cycle: int
    channel: str
    message: str

    def __str__(self):
        return f"cycle {self.cycle}: {self.channel}: {self.message}"


def resp_code(resp) -> int:
    """``"SLVERR"``/``"DECERR"`` or a :class:`Resp` as the 2-bit response code."""
    if isinstance(resp, str):
        if resp.upper() not in ("SLVERR", "DECERR"):
            raise ValueError(f"error response must be SLVERR or DECERR, not {resp!r}")
        return Resp[resp.upper()].value
    code = resp.value if isinstance(resp, Resp) else int(resp)
    if code not in (Resp.SLVERR.value, Resp.DECERR.value):
        raise ValueError(f"error response must be SLVERR or DECERR, not {resp!r}")
    return code


def stall_permille(stall) -> int:
    """Back-pressure probability in the models' resolution (1/1000)."""
    return int(round(float(stall) * 1000))


def check_memory_options(*, read_latency, write_latency, beat_interval, stall, max_outstanding):
    for name, value, lo in (("read_latency", read_latency, 0), ("write_latency", write_latency, 0),
                            ("beat_interval", beat_interval, 1), ("max_outstanding", max_outstanding, 1)):
        if int(value) != value or value < lo:
            raise ValueError(f"memory option {name} must be an integer >= {lo}, not {value!r}")
    if not 0.0 <= float(stall) <= 1.0:
        raise ValueError(f"memory option stall is a probability in [0, 1], not {stall!r}")


@dataclass
class _Burst:
    addr: int
    beats: int
    id: int
    ready_at: int


def _int(value):
    return value.value if isinstance(value, Resp | Burst) else int(value)


class HostAccess:
    """The host's back door into a memory model's ``data`` (bus addresses from ``base``): one definition for
    the Python model here and the C model of :mod:`scalenet.cosim.compiled`."""

    @property
    def mem(self):
        return self.data

    def load(self, addr, data):
        data = np.frombuffer(bytes(data), dtype=np.uint8)
        self.data[addr - self.base:addr - self.base + len(data)] = data

    def dump(self, addr, length) -> bytes:
        return bytes(self.data[addr - self.base:addr - self.base + length])


class AXIMemory(HostAccess):
    """An AXI4 slave memory model.

    Parameters
    ----------
    bus : interface of an :class:`scalenet.rtl.axi.Signature` (master orientation)
        The master's bus, e.g. ``dut.bus``; the model drives its ``ready`` and slave-side members.
    size : int
        Bytes of memory, mapped at ``base``. Accesses outside answer DECERR.
    read_latency : int
        Cycles from an accepted ``AR`` to the earliest first ``R`` beat (0: the next cycle).
    write_latency : int
        Cycles from a completed write burst to the earliest ``B`` (0: the next cycle).
    beat_interval : int
        At most one read beat every ``beat_interval`` cycles (a bandwidth limit; 1: one per cycle).
    stall : float
        Probability (resolution 1/1000), each cycle and on each channel, of a gap: ``READY`` low on
        ``AR``/``AW``/``W``, no new ``VALID`` on ``R``/``B``. 0 gives a slave that never stalls.
    seed : int
        Seeds the gaps (xorshift64, the stream of the compiled model), so every run is reproducible.
    errors : iterable of ``(lo, hi, resp)``
        Beats touching ``[lo, hi)`` answer that response, reads and writes alike (reads return 0, writes
        are dropped); :meth:`add_error` adds windows for one direction.
    writable : iterable of ``(lo, hi)``, or None
        If given, a write beat (with any strobe set) outside these ranges is a violation and is dropped.
    max_outstanding : int
        Address requests the model accepts per direction before it holds ``AxREADY`` low.
    """

    def __init__(self, bus, *, size=1 << 16, base=0, read_latency=2, write_latency=1, beat_interval=1, stall=0.0,
                 seed=0, errors=(), writable=None, max_outstanding=8):
        check_memory_options(read_latency=read_latency, write_latency=write_latency, beat_interval=beat_interval,
                             stall=stall, max_outstanding=max_outstanding)
        self.bus = bus
        self.data_bytes = len(bus.w.strb)
        self.size_log2 = self.data_bytes.bit_length() - 1
        self.base = base
        self.data = np.zeros(size, dtype=np.uint8)
        self.read_latency = int(read_latency)
        self.write_latency = int(write_latency)
        self.beat_interval = int(beat_interval)
        self.stall = float(stall)
        self.seed = seed
        self._permille = stall_permille(stall)
        self._rng = (seed & _MASK64) or _SEED0
        self._errors = []                     # (lo, hi, code, on_read, on_write)
        for lo, hi, resp in errors:
            self.add_error(lo, hi, resp, read=True, write=True)
        self.writable = None if writable is None else [(int(lo), int(hi)) for lo, hi in writable]
        self.max_outstanding = int(max_outstanding)
        self._has_id = hasattr(bus.ar, "id")
        self.violations: list[Violation] = []
        self.read_bursts: list[tuple[int, int]] = []    #: (addr, beats) of every accepted AR
        self.write_bursts: list[tuple[int, int]] = []   #: (addr, beats) of every accepted AW
        self.read_bytes = 0
        self.write_bytes = 0
        self.max_reads_outstanding = 0
        self.max_writes_outstanding = 0
        self.pending = 0
        self.cycle = 0

    # --- host-side access -------------------------------------------------------------------------

    def add_error(self, lo, hi, resp="SLVERR", *, read=True, write=False):
        """Answer read and/or write beats touching ``[lo, hi)`` with SLVERR or DECERR."""
        self._errors.append((int(lo), int(hi), resp_code(resp), bool(read), bool(write)))

    def clear_errors(self):
        self._errors.clear()

    @property
    def violation_count(self) -> int:
        return len(self.violations)

    @property
    def first_violation(self) -> str:
        return str(self.violations[0]) if self.violations else ""

    # --- helpers ----------------------------------------------------------------------------------

    def _violate(self, channel, message):
        self.violations.append(Violation(self.cycle, channel, message))

    def _chance(self):
        if not self._permille:
            return False
        r = self._rng
        r ^= (r << 13) & _MASK64
        r ^= r >> 7
        r ^= (r << 17) & _MASK64
        self._rng = r
        return r % 1000 < self._permille

    def _resp_for(self, addr, write):
        nb = self.data_bytes
        for lo, hi, code, on_read, on_write in self._errors:
            if (on_write if write else on_read) and addr < hi and addr + nb > lo:
                return code
        if addr < self.base or addr + nb > self.base + len(self.data):
            return Resp.DECERR.value
        return Resp.OKAY.value

    def _check_addr(self, channel, addr, length, size, burst):
        if burst != Burst.INCR.value:
            self._violate(channel, f"burst type {burst} is not INCR")
        if size != self.size_log2:
            self._violate(channel, f"size {size} is not the full data width ({self.size_log2})")
        if addr % self.data_bytes:
            self._violate(channel, f"address {addr:#x} is not aligned to {self.data_bytes} bytes")
        if (addr & 0xFFF) + (length + 1) * self.data_bytes > 0x1000:
            self._violate(channel, f"burst at {addr:#x} of {length + 1} beats crosses a 4 KiB boundary")

    def _write_beat(self, addr, data, strb):
        resp = self._resp_for(addr, True)
        if not strb:
            return resp
        if self.writable is not None and not any(lo <= addr and addr + self.data_bytes <= hi
                                                 for lo, hi in self.writable):
            self._violate("w", f"write to {addr:#x} outside the writable ranges")
            return resp
        if resp:
            return resp
        off = addr - self.base
        raw = data.to_bytes(self.data_bytes, "little")
        for i in range(self.data_bytes):
            if strb >> i & 1:
                self.data[off + i] = raw[i]
                self.write_bytes += 1
        return resp

    # --- the simulator process --------------------------------------------------------------------

    async def process(self, ctx):
        """Serve the bus forever; add with ``sim.add_process(mem.process)``.

        Each cycle mirrors cosim/axi_slave.cc: decide and drive (random draws in the order AR, AW, W, B, R),
        sample the handshakes at the edge, update.
        """
        bus, has_id, nb = self.bus, self._has_id, self.data_bytes
        ar_fields = [bus.ar.addr, bus.ar.len, bus.ar.size, bus.ar.burst.as_value()]
        aw_fields = [bus.aw.addr, bus.aw.len, bus.aw.size, bus.aw.burst.as_value()]
        if has_id:
            ar_fields.append(bus.ar.id)
            aw_fields.append(bus.aw.id)
        w_fields = [bus.w.data, bus.w.strb, bus.w.last]
        n_ar, n_aw, n_w = len(ar_fields), len(aw_fields), len(w_fields)
        sampled = [bus.ar.valid, *ar_fields, bus.aw.valid, *aw_fields, bus.w.valid, *w_fields,
                   bus.r.ready, bus.b.ready]

        reads, writes, bresp = deque(), deque(), deque()
        read_beat = write_beat = write_worst = 0
        next_beat_at = 0
        r_held = b_held = False
        writes_outstanding = 0
        prev = {}    # channel -> payload while VALID was high and not accepted
        chance, max_out = self._chance, self.max_outstanding

        while True:
            cycle = self.cycle
            ar_ready = len(reads) < max_out and not chance()
            aw_ready = len(writes) < max_out and not chance()
            w_ready = bool(writes) and not chance()
            b_valid = b_held or (bool(bresp) and bresp[0][2] <= cycle and not chance())
            r_valid = r_held or (bool(reads) and cycle >= reads[0].ready_at and cycle >= next_beat_at
                                 and not chance())
            if b_valid:
                ctx.set(bus.b.resp, bresp[0][1])
                if has_id:
                    ctx.set(bus.b.id, bresp[0][0])
            if r_valid:
                burst = reads[0]
                addr = burst.addr + read_beat * nb
                resp = self._resp_for(addr, False)
                off = addr - self.base
                ctx.set(bus.r.data, 0 if resp else int.from_bytes(self.data[off:off + nb].tobytes(), "little"))
                ctx.set(bus.r.resp, resp)
                ctx.set(bus.r.last, read_beat + 1 == burst.beats)
                if has_id:
                    ctx.set(bus.r.id, burst.id)
            ctx.set(bus.ar.ready, ar_ready)
            ctx.set(bus.aw.ready, aw_ready)
            ctx.set(bus.w.ready, w_ready)
            ctx.set(bus.r.valid, r_valid)
            ctx.set(bus.b.valid, b_valid)

            _, _, *v = await ctx.tick().sample(*sampled)
            v = [_int(x) for x in v]
            ar_valid, ar_p = v[0], tuple(v[1:1 + n_ar])
            i = 1 + n_ar
            aw_valid, aw_p = v[i], tuple(v[i + 1:i + 1 + n_aw])
            i += 1 + n_aw
            w_valid, w_p = v[i], tuple(v[i + 1:i + 1 + n_w])
            r_ready, b_ready = v[-2], v[-1]

            for name, valid, ready, payload in (("ar", ar_valid, ar_ready, ar_p),
                                                 ("aw", aw_valid, aw_ready, aw_p),
                                                 ("w", w_valid, w_ready, w_p)):
                if name in prev:
                    if not valid:
                        self._violate(name, "VALID dropped before READY")
                    elif payload != prev[name]:
                        self._violate(name, "payload changed while VALID and not READY")
                if valid and not ready:
                    prev[name] = payload
                else:
                    prev.pop(name, None)

            if ar_valid and ar_ready:
                addr, length, size, kind = ar_p[:4]
                self._check_addr("ar", addr, length, size, kind)
                self.read_bursts.append((addr, length + 1))
                reads.append(_Burst(addr, length + 1, ar_p[4] if has_id else 0, cycle + 1 + self.read_latency))
                self.max_reads_outstanding = max(self.max_reads_outstanding, len(reads))
            if w_valid and w_ready:
                burst = writes[0]
                data, strb, last = w_p
                write_worst = max(write_worst, self._write_beat(burst.addr + write_beat * nb, data, strb))
                expect_last = write_beat + 1 == burst.beats
                if last and not expect_last:
                    self._violate("w", f"WLAST on beat {write_beat}, expected on beat {burst.beats - 1} "
                                       f"(burst at {burst.addr:#x})")
                elif expect_last and not last:
                    self._violate("w", f"WLAST missing on beat {burst.beats - 1} of the burst at {burst.addr:#x}")
                write_beat += 1
                if write_beat == burst.beats:
                    bresp.append((burst.id, write_worst, cycle + 1 + self.write_latency))
                    write_beat = write_worst = 0
                    writes.popleft()
            # AW after W of the same cycle: a new burst never receives this cycle's beat.
            if aw_valid and aw_ready:
                addr, length, size, kind = aw_p[:4]
                self._check_addr("aw", addr, length, size, kind)
                self.write_bursts.append((addr, length + 1))
                writes.append(_Burst(addr, length + 1, aw_p[4] if has_id else 0, 0))
                writes_outstanding += 1
                self.max_writes_outstanding = max(self.max_writes_outstanding, writes_outstanding)
            if b_valid and b_ready:
                bresp.popleft()
                b_held = False
                writes_outstanding -= 1
            else:
                b_held = b_valid
            if r_valid and r_ready:
                self.read_bytes += nb
                next_beat_at = cycle + self.beat_interval
                read_beat += 1
                if read_beat == reads[0].beats:
                    read_beat = 0
                    reads.popleft()
                r_held = False
            else:
                r_held = r_valid
            self.pending = len(reads) + len(writes) + len(bresp)
            self.cycle += 1


# ---------------------------------------------------------------------------------------------------------
# AXI4-Lite master helpers (for ``sim.add_testbench``)


async def lite_write(ctx, bus, addr, data, *, strb=0xF, aw_delay=0, w_delay=0, b_delay=0, timeout=64):
    """Write one word; returns the :class:`Resp`.

    ``aw_delay``/``w_delay`` are the cycles before each channel's ``VALID`` rises (so either may come
    first, or both together); ``b_delay`` > 0 holds ``BREADY`` low until that many cycles after ``BVALID`` (0: ``BREADY`` is high
    throughout).
    Raises :class:`AXITimeout`, or ``AssertionError`` if the slave drops ``BVALID`` before ``BREADY``.
    """
    ctx.set(bus.aw.addr, addr)
    ctx.set(bus.aw.prot, 0)
    ctx.set(bus.w.data, data)
    ctx.set(bus.w.strb, strb)
    aw_done = w_done = False
    b_seen = b_resp = None
    for t in range(timeout):
        ctx.set(bus.aw.valid, not aw_done and t >= aw_delay)
        ctx.set(bus.w.valid, not w_done and t >= w_delay)
        ctx.set(bus.b.ready, b_delay == 0 or (b_seen is not None and t - b_seen >= b_delay))
        _, _, awv, awr, wv, wr, bv, br, resp = await ctx.tick().sample(
            bus.aw.valid, bus.aw.ready, bus.w.valid, bus.w.ready, bus.b.valid, bus.b.ready, bus.b.resp)
        aw_done |= bool(awv and awr)
        w_done |= bool(wv and wr)
        if b_seen is not None:
            assert bv, "BVALID dropped before BREADY"
            assert resp == b_resp, "BRESP changed while BVALID and not BREADY"
        if bv:
            assert aw_done and w_done, "BVALID before both AW and W were accepted"
            if b_seen is None:
                b_seen, b_resp = t, resp
            if br:
                ctx.set(bus.b.ready, 0)
                return Resp(resp)
    ctx.set(bus.aw.valid, 0)
    ctx.set(bus.w.valid, 0)
    ctx.set(bus.b.ready, 0)
    raise AXITimeout(f"AXI4-Lite write to {addr:#x} did not complete in {timeout} cycles")


async def lite_read(ctx, bus, addr, *, r_delay=0, timeout=64):
    """Read one word; returns ``(data, Resp)``. ``r_delay`` holds ``RREADY`` low after ``RVALID``."""
    ctx.set(bus.ar.addr, addr)
    ctx.set(bus.ar.prot, 0)
    ar_done = False
    r_seen = r_held = None
    for t in range(timeout):
        ctx.set(bus.ar.valid, not ar_done)
        ctx.set(bus.r.ready, r_delay == 0 or (r_seen is not None and t - r_seen >= r_delay))
        _, _, arv, arr, rv, rr, data, resp = await ctx.tick().sample(
            bus.ar.valid, bus.ar.ready, bus.r.valid, bus.r.ready, bus.r.data, bus.r.resp)
        ar_done |= bool(arv and arr)
        if r_seen is not None:
            assert rv, "RVALID dropped before RREADY"
            assert (data, resp) == r_held, "RDATA/RRESP changed while RVALID and not RREADY"
        if rv:
            assert ar_done, "RVALID before AR was accepted"
            if r_seen is None:
                r_seen, r_held = t, (data, resp)
            if rr:
                ctx.set(bus.r.ready, 0)
                return data, Resp(resp)
    ctx.set(bus.ar.valid, 0)
    ctx.set(bus.r.ready, 0)
    raise AXITimeout(f"AXI4-Lite read of {addr:#x} did not complete in {timeout} cycles")
