"""A register slice: an AXI4 or AXI4-Lite bus cut by registers on every channel, both directions.

Why: the board SoC's host bridge drives its AXI-Lite valids and readies from its state machine's decode,
and the accelerator's control slave answered them in the same cycle, back into the bridge's state logic
(10.2 ns in the 8x8 SoC). Register accesses are rare, so a cycle each way costs nothing.

Each channel is a two-entry skid buffer: the receiving side sees a registered ``valid`` and payload,
the sending side a registered ``ready``; one transfer per cycle, in order, none lost or duplicated.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from . import axi

__all__ = ["AxiRegisterSlice"]

_FORWARD = ("aw", "w", "ar")     # master to slave
_BACKWARD = ("b", "r")           # slave to master


def _skid(m, src, dst, name):
    """``dst`` (a channel's receiving end) gets ``src``'s transfers through registers."""
    fields = [f for f in src.signature.members if f not in ("valid", "ready")]
    out_valid, buf_valid = Signal(name=f"{name}_valid"), Signal(name=f"{name}_held")
    out = {f: Signal.like(getattr(src, f), name=f"{name}_{f}", reset_less=True) for f in fields}
    buf = {f: Signal.like(getattr(src, f), name=f"{name}_{f}_held", reset_less=True) for f in fields}
    take = Signal(name=f"{name}_take")
    m.d.comb += [src.ready.eq(~buf_valid), take.eq(src.valid & ~buf_valid), dst.valid.eq(out_valid)]
    m.d.comb += [getattr(dst, f).eq(out[f]) for f in fields]
    with m.If(~out_valid | dst.ready):
        m.d.sync += [out_valid.eq(buf_valid | take), buf_valid.eq(0)]
        m.d.sync += [out[f].eq(Mux(buf_valid, buf[f], getattr(src, f))) for f in fields]
    with m.Elif(take):
        m.d.sync += buf_valid.eq(1)
        m.d.sync += [buf[f].eq(getattr(src, f)) for f in fields]


class AxiRegisterSlice(wiring.Component):
    """``s`` (from a master) to ``m`` (to a slave), one register stage on each of the five channels.

    Parameters
    ----------
    signature : :class:`.axi.Signature` or :class:`.axi.LiteSignature`
        The bus, master orientation.

    Members
    -------
    s : ``In(signature)``
    m : ``Out(signature)``
    """

    def __init__(self, signature):
        if not isinstance(signature, axi.Signature):
            self._MustUse__silence = True
            raise TypeError(f"an AXI register slice needs an axi.Signature, not {signature!r}")
        super().__init__({"s": In(signature), "m": Out(signature)})

    def elaborate(self, platform):
        m = Module()
        for name in _FORWARD:
            _skid(m, getattr(self.s, name), getattr(self.m, name), name)
        for name in _BACKWARD:
            _skid(m, getattr(self.m, name), getattr(self.s, name), name)
        return m
