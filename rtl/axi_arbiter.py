"""Two AXI4 masters on one AXI4 slave port: the board's host bridge and the accelerator's DMA share memory.

The downstream port has one more ID bit than the masters; its top bit says which master a burst came
from, so R beats and B responses are routed back by ID (the slave may have bursts of both in flight).
AR and AW are granted round robin from a grant register, and a grant is held while the downstream
``valid`` waits for ``ready`` (AXI forbids withdrawing it). W beats follow AW order (AXI has no W ID): the
granted master of each accepted AW is queued and the W channel serves the queue's head until its WLAST.
Masters must not wait for WREADY before AWVALID (AXI allows the slave, here the arbiter, to wait for AW).
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out

from . import axi

__all__ = ["AxiArbiter"]


class AxiArbiter(wiring.Component):
    """Members: ``m0``, ``m1`` (``In(axi.Signature(...))``, ``id_width`` each) and ``out``
    (``Out(axi.Signature(..., id_width=id_width + 1))``). ``max_writes``: AW accepted ahead of their W."""

    def __init__(self, *, addr_width=32, data_width=64, id_width=0, max_writes=8):
        self.id_width, self.max_writes = id_width, max_writes
        sig = axi.Signature(addr_width=addr_width, data_width=data_width, id_width=id_width)
        super().__init__({
            "m0": In(sig), "m1": In(sig),
            "out": Out(axi.Signature(addr_width=addr_width, data_width=data_width, id_width=id_width + 1)),
        })

    def _address(self, m, name, masters, out, extra_ok=1):
        """Round-robin grant of an address channel; returns (grant, accepted).

        The grant is a register, chosen a cycle ahead from the masters' ``valid``: a master's ``ready``
        depends on no other master's ``valid``, so one master's state never reaches the other's issue
        logic in the same cycle (in the board SoC that path -- host bridge state through the grant into
        the DMA's burst counters -- was among the slowest). A master whose turn it is not waits one cycle.
        """
        grant, last = Signal(name=f"{name}_grant"), Signal(name=f"{name}_last")
        sel = [getattr(mm, name) for mm in masters]
        v0, v1 = sel[0].valid, sel[1].valid
        valid = Signal(name=f"{name}_valid")
        m.d.comb += valid.eq(Mux(grant, v1, v0) & extra_ok)
        for member in ("addr", "prot", "len", "size", "burst"):
            m.d.comb += getattr(out, member).eq(Mux(grant, getattr(sel[1], member), getattr(sel[0], member)))
        if self.id_width:
            m.d.comb += out.id.eq(Cat(Mux(grant, sel[1].id, sel[0].id), grant))
        else:
            m.d.comb += out.id.eq(grant)
        m.d.comb += out.valid.eq(valid)
        for i, ch in enumerate(sel):
            m.d.comb += ch.ready.eq(out.ready & (grant == i) & extra_ok)
        accepted = Signal(name=f"{name}_accepted")
        m.d.comb += accepted.eq(valid & out.ready)
        served = Mux(accepted, grant, last)             # the master served last, this cycle included
        pick = Mux(served, Mux(v0, 0, 1), Mux(v1, 1, 0))    # the other one if it waits
        m.d.sync += [last.eq(served),
                     grant.eq(Mux(valid & ~out.ready, grant, pick))]   # AXI: a raised valid stays until ready
        return grant, accepted

    def elaborate(self, platform):
        m = Module()
        masters = [self.m0, self.m1]
        out = self.out
        top = self.id_width                      # the ID bit naming the master

        self._address(m, "ar", masters, out.ar)
        for i, mm in enumerate(masters):
            m.d.comb += [mm.r.data.eq(out.r.data), mm.r.resp.eq(out.r.resp), mm.r.last.eq(out.r.last),
                         mm.r.valid.eq(out.r.valid & (out.r.id[top] == i))]
            m.d.comb += [mm.b.resp.eq(out.b.resp), mm.b.valid.eq(out.b.valid & (out.b.id[top] == i))]
            if self.id_width:
                m.d.comb += [mm.r.id.eq(out.r.id[:top]), mm.b.id.eq(out.b.id[:top])]
        m.d.comb += [out.r.ready.eq(Mux(out.r.id[top], self.m1.r.ready, self.m0.r.ready)),
                     out.b.ready.eq(Mux(out.b.id[top], self.m1.b.ready, self.m0.b.ready))]

        m.submodules.order = order = fifo.SyncFIFO(width=1, depth=self.max_writes)
        grant, accepted = self._address(m, "aw", masters, out.aw,
                                        extra_ok=order.w_rdy)
        m.d.comb += [order.w_data.eq(grant), order.w_en.eq(accepted)]
        head = order.r_data
        w = [mm.w for mm in masters]
        m.d.comb += [
            out.w.valid.eq(order.r_rdy & Mux(head, w[1].valid, w[0].valid)),
            out.w.data.eq(Mux(head, w[1].data, w[0].data)),
            out.w.strb.eq(Mux(head, w[1].strb, w[0].strb)),
            out.w.last.eq(Mux(head, w[1].last, w[0].last)),
        ]
        for i in range(2):
            m.d.comb += w[i].ready.eq(out.w.ready & order.r_rdy & (head == i))
        m.d.comb += order.r_en.eq(out.w.valid & out.w.ready & out.w.last)
        return m
