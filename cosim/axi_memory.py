"""Behavioural AXI models for ``amaranth.sim`` testbenches: an AXI4 slave memory and AXI4-Lite master helpers.

:class:`AXIMemory` serves a master's AXI4 bus from a numpy ``uint8`` array. It runs as one simulator
process (one wake-up per cycle for all five channels, which keeps pysim fast), inserts seeded random
gaps on every channel it drives, injects error responses for chosen address ranges, and checks the
master against the protocol rules a DMA must keep (bursts within 4 KiB, INCR only, full-width beats,
``WLAST`` on the right beat, ``VALID`` held with a stable payload until ``READY``, writes only where
allowed). Violations are recorded in :attr:`AXIMemory.violations` rather than raised, so a test sees
all of them and the simulation keeps running.

:func:`lite_read` and :func:`lite_write` drive an AXI4-Lite slave from a testbench, with the address
and data channels in any order and optional back-pressure on the response channels.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from scalenet.rtl.axi import Burst, Resp

__all__ = ["AXIMemory", "Violation", "lite_read", "lite_write", "AXITimeout"]


class AXITimeout(Exception):
    """A transaction did not complete within the allowed number of cycles."""


@dataclass(frozen=True)
class Violation:
    cycle: int
    channel: str
    message: str

    def __str__(self):
        return f"cycle {self.cycle}: {self.channel}: {self.message}"


@dataclass
class _Burst:
    addr: int
    len: int
    id: int
    due: int
    beat: int = 0
    resps: list = field(default_factory=list)


def _int(value):
    return value.value if isinstance(value, Resp | Burst) else int(value)


class AXIMemory:
    """An AXI4 slave memory model.

    Parameters
    ----------
    bus : interface of an :class:`scalenet.rtl.axi.Signature` (master orientation)
        The master's bus, e.g. ``dut.bus``; the model drives its ``ready`` and slave-side members.
    size : int
        Bytes of memory, mapped at ``base``. Accesses outside answer DECERR.
    read_latency : int
        Cycles from an accepted ``AR`` to the earliest first ``R`` beat.
    write_latency : int
        Cycles from a completed write burst to the earliest ``B``.
    stall : float
        Probability, each cycle and on each channel, of a gap: ``READY`` low on ``AR``/``AW``/``W``, no
        new ``VALID`` on ``R``/``B``. 0 gives a slave that never stalls.
    seed : int
        Seeds the gaps, so every run is reproducible.
    errors : iterable of ``(lo, hi, Resp)``
        Beats whose address is in ``[lo, hi)`` answer that response (reads return 0, writes are dropped).
    writable : iterable of ``(lo, hi)``, or None
        If given, a write beat (with any strobe set) outside these ranges is a violation and is dropped.
    max_outstanding : int
        Address requests the model accepts per direction before it holds ``AxREADY`` low.
    """

    def __init__(self, bus, *, size=1 << 16, base=0, read_latency=2, write_latency=1, stall=0.0, seed=0,
                 errors=(), writable=None, max_outstanding=8):
        self.bus = bus
        self.data_bytes = len(bus.w.strb)
        self.size_log2 = self.data_bytes.bit_length() - 1
        self.base = base
        self.mem = np.zeros(size, dtype=np.uint8)
        self.read_latency = int(read_latency)
        self.write_latency = int(write_latency)
        self.stall = float(stall)
        self.errors = [(int(lo), int(hi), Resp(r)) for lo, hi, r in errors]
        self.writable = None if writable is None else [(int(lo), int(hi)) for lo, hi in writable]
        self.max_outstanding = int(max_outstanding)
        self._rng = random.Random(seed)
        self._has_id = hasattr(bus.ar, "id")
        self.violations: list[Violation] = []
        self.read_bursts: list[tuple[int, int]] = []    #: (addr, beats) of every accepted AR
        self.write_bursts: list[tuple[int, int]] = []   #: (addr, beats) of every accepted AW
        self.max_reads_outstanding = 0
        self.max_writes_outstanding = 0
        self.cycle = 0

    # --- host-side access -------------------------------------------------------------------------

    def load(self, addr, data):
        data = np.frombuffer(bytes(data), dtype=np.uint8)
        self.mem[addr - self.base:addr - self.base + len(data)] = data

    def dump(self, addr, length):
        return bytes(self.mem[addr - self.base:addr - self.base + length])

    # --- helpers ----------------------------------------------------------------------------------

    def _violate(self, channel, message):
        self.violations.append(Violation(self.cycle, channel, message))

    def _resp_for(self, addr):
        for lo, hi, resp in self.errors:
            if lo <= addr < hi:
                return resp
        if not self.base <= addr <= self.base + len(self.mem) - self.data_bytes:
            return Resp.DECERR
        return Resp.OKAY

    def _check_addr(self, channel, addr, length, size, burst):
        if burst != Burst.INCR.value:
            self._violate(channel, f"burst type {burst} is not INCR")
        if size != self.size_log2:
            self._violate(channel, f"size {size} is not the full data width ({self.size_log2})")
        if addr % self.data_bytes:
            self._violate(channel, f"address {addr:#x} is not aligned to {self.data_bytes} bytes")
        if (addr & 0xFFF) + (length + 1) * self.data_bytes > 0x1000:
            self._violate(channel, f"burst at {addr:#x} of {length + 1} beats crosses a 4 KiB boundary")

    def _read_beat(self, addr):
        resp = self._resp_for(addr)
        if resp != Resp.OKAY:
            return 0, resp
        off = addr - self.base
        return int.from_bytes(self.mem[off:off + self.data_bytes].tobytes(), "little"), resp

    def _write_beat(self, addr, data, strb):
        resp = self._resp_for(addr)
        if not strb:
            return resp
        if self.writable is not None and not any(lo <= addr and addr + self.data_bytes <= hi
                                                 for lo, hi in self.writable):
            self._violate("w", f"write to {addr:#x} outside the writable ranges")
            return resp
        if resp != Resp.OKAY:
            return resp
        off = addr - self.base
        raw = data.to_bytes(self.data_bytes, "little")
        for i in range(self.data_bytes):
            if strb >> i & 1:
                self.mem[off + i] = raw[i]
        return resp

    def _gap(self):
        return self.stall > 0 and self._rng.random() < self.stall

    def _match_writes(self, aw_q, w_beats, b_q):
        while aw_q and w_beats:
            burst = aw_q[0]
            beats = burst.len + 1
            k = next((i for i, b in enumerate(w_beats) if b[2]), None)
            if k is None or k >= beats:
                if len(w_beats) < beats:
                    return
                self._violate("w", f"WLAST missing on beat {beats - 1} of the burst at {burst.addr:#x}")
                take = beats
            else:
                if k != beats - 1:
                    self._violate("w", f"WLAST on beat {k}, expected on beat {beats - 1} "
                                       f"(burst at {burst.addr:#x})")
                take = k + 1
            aw_q.popleft()
            worst = Resp.OKAY
            for i in range(take):
                data, strb, _ = w_beats.popleft()
                resp = self._write_beat(burst.addr + i * self.data_bytes, data, strb)
                if resp.value > worst.value:
                    worst = resp
            b_q.append((self.cycle + self.write_latency, worst, burst.id))

    # --- the simulator process --------------------------------------------------------------------

    async def process(self, ctx):
        """Serve the bus forever; add with ``sim.add_process(mem.process)``."""
        bus, has_id = self.bus, self._has_id
        ar_fields = [bus.ar.addr, bus.ar.len, bus.ar.size, bus.ar.burst.as_value()]
        aw_fields = [bus.aw.addr, bus.aw.len, bus.aw.size, bus.aw.burst.as_value()]
        if has_id:
            ar_fields.append(bus.ar.id)
            aw_fields.append(bus.aw.id)
        w_fields = [bus.w.data, bus.w.strb, bus.w.last]
        n_ar, n_aw, n_w = len(ar_fields), len(aw_fields), len(w_fields)
        sampled = [bus.ar.valid, *ar_fields, bus.aw.valid, *aw_fields, bus.w.valid, *w_fields,
                   bus.r.ready, bus.b.ready]

        ar_q, aw_q, w_beats, b_q = deque(), deque(), deque(), deque()
        r_valid = b_valid = False
        writes_outstanding = 0
        prev = {}    # channel -> (payload) while VALID was high and not accepted

        while True:
            ar_ready = len(ar_q) < self.max_outstanding and not self._gap()
            aw_ready = len(aw_q) < self.max_outstanding and not self._gap()
            w_ready = len(w_beats) < 256 * self.max_outstanding and not self._gap()
            if not r_valid and ar_q and ar_q[0].due <= self.cycle and not self._gap():
                burst = ar_q[0]
                data, resp = self._read_beat(burst.addr + burst.beat * self.data_bytes)
                ctx.set(bus.r.data, data)
                ctx.set(bus.r.resp, resp)
                ctx.set(bus.r.last, burst.beat == burst.len)
                if has_id:
                    ctx.set(bus.r.id, burst.id)
                r_valid = True
            if not b_valid and b_q and b_q[0][0] <= self.cycle and not self._gap():
                _, resp, bid = b_q.popleft()
                ctx.set(bus.b.resp, resp)
                if has_id:
                    ctx.set(bus.b.id, bid)
                b_valid = True
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
                addr, length, size, burst = ar_p[:4]
                self._check_addr("ar", addr, length, size, burst)
                self.read_bursts.append((addr, length + 1))
                ar_q.append(_Burst(addr, length, ar_p[4] if has_id else 0, self.cycle + 1 + self.read_latency))
            if r_valid and r_ready:
                r_valid = False
                burst = ar_q[0]
                burst.beat += 1
                if burst.beat > burst.len:
                    ar_q.popleft()
            self.max_reads_outstanding = max(self.max_reads_outstanding, len(ar_q))

            if aw_valid and aw_ready:
                addr, length, size, burst = aw_p[:4]
                self._check_addr("aw", addr, length, size, burst)
                self.write_bursts.append((addr, length + 1))
                aw_q.append(_Burst(addr, length, aw_p[4] if has_id else 0, 0))
                writes_outstanding += 1
            if w_valid and w_ready:
                w_beats.append(w_p)
            if b_valid and b_ready:
                b_valid = False
                writes_outstanding -= 1
            self.max_writes_outstanding = max(self.max_writes_outstanding, writes_outstanding)
            self.cycle += 1
            self._match_writes(aw_q, w_beats, b_q)


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
