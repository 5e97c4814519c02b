"""rtl/axi_register_slice.py: every channel delivers every transfer once, in order, under random stalls on
both sides; full rate when nobody stalls; readies and valids are registers (a cycle of latency)."""

import enum
import random

import pytest
from amaranth.hdl import Value
from amaranth.sim import Simulator

from scalenet.rtl import axi
from scalenet.rtl.axi_register_slice import AxiRegisterSlice

_FORWARD, _BACKWARD = ("aw", "w", "ar"), ("b", "r")


def _int(v):
    return v.value if isinstance(v, enum.Enum) else int(v)


def _fields(chan):
    return [f for f in chan.signature.members if f not in ("valid", "ready")]


def _run(signature, n, p_valid, p_ready, seed):
    dut = AxiRegisterSlice(signature)
    rng = random.Random(seed)
    channels = [(getattr(dut.s, c), getattr(dut.m, c), c) for c in _FORWARD]
    channels += [(getattr(dut.m, c), getattr(dut.s, c), c) for c in _BACKWARD]
    sent = {c: [] for *_, c in channels}
    got = {c: [] for *_, c in channels}
    cycles = [0]

    def item(src):
        # Widths from the signals; enum members get a legal value.
        values = {}
        for f in _fields(src):
            sig = getattr(src, f)
            values[f] = rng.choice(list(axi.Burst)).value if f == "burst" else rng.getrandbits(len(Value.cast(sig)))
        return values

    async def bench(ctx):
        pending = {c: None for *_, c in channels}
        while any(len(got[c]) < n for *_, c in channels):
            for src, dst, c in channels:
                if pending[c] is None and len(sent[c]) < n and rng.random() < p_valid:
                    pending[c] = item(src)
                    sent[c].append(pending[c])
                ctx.set(src.valid, pending[c] is not None)
                for f, v in (pending[c] or {}).items():
                    ctx.set(getattr(src, f), v)
                ctx.set(dst.ready, rng.random() < p_ready)
            await ctx.delay(1e-9)
            fired = {c: (ctx.get(src.valid) and ctx.get(src.ready), ctx.get(dst.valid) and ctx.get(dst.ready),
                         {f: _int(ctx.get(getattr(dst, f))) for f in _fields(dst)}) for src, dst, c in channels}
            await ctx.tick()
            cycles[0] += 1
            for _, _, c in channels:
                took, gave, values = fired[c]
                if took:
                    pending[c] = None
                if gave:
                    got[c].append(values)
            assert cycles[0] < 50 * n + 100, "no progress"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return sent, got, cycles[0]


@pytest.mark.parametrize("lite", [False, True])
@pytest.mark.parametrize("p_valid,p_ready", [(0.5, 0.5), (0.9, 0.3), (0.3, 0.9)])
def test_every_transfer_arrives_once_in_order(lite, p_valid, p_ready):
    sig = (axi.LiteSignature(addr_width=12) if lite
           else axi.Signature(addr_width=32, data_width=64, id_width=1))
    sent, got, _ = _run(sig, 60, p_valid, p_ready, seed=int(p_valid * 10) + 100 * lite)
    for c in sent:
        assert got[c] == sent[c], c


def test_one_transfer_per_cycle_when_nobody_stalls():
    sent, got, cycles = _run(axi.Signature(addr_width=32, data_width=64), 100, 1.0, 1.0, seed=1)
    assert all(got[c] == sent[c] for c in sent)
    assert cycles <= 100 + 2


def test_valid_and_ready_are_registered():
    """A request shows on the far side a cycle later; a stalled far side stops ``ready`` a cycle later
    (two transfers buffered), not in the same cycle."""
    dut = AxiRegisterSlice(axi.LiteSignature(addr_width=12))

    async def bench(ctx):
        ctx.set(dut.s.ar.valid, 1)
        ctx.set(dut.s.ar.addr, 0x44)
        ctx.set(dut.m.ar.ready, 0)
        assert not ctx.get(dut.m.ar.valid) and ctx.get(dut.s.ar.ready)
        await ctx.tick()
        assert ctx.get(dut.m.ar.valid) and ctx.get(dut.m.ar.addr) == 0x44 and ctx.get(dut.s.ar.ready)
        await ctx.tick()                     # a second one into the skid register
        assert not ctx.get(dut.s.ar.ready)
        ctx.set(dut.m.ar.ready, 1)
        assert not ctx.get(dut.s.ar.ready)   # freed only at the next edge
        await ctx.tick()
        assert ctx.get(dut.s.ar.ready)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_only_an_axi_signature():
    with pytest.raises(TypeError, match="axi.Signature"):
        AxiRegisterSlice(axi.AddressSignature(addr_width=32))
