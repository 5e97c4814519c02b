"""AXI4 / AXI4-Lite signatures: members, directions, equality, and connecting a master to a slave."""

import pytest
from amaranth.hdl import Fragment, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from scalenet.rtl import axi


def test_enums_have_explicit_widths():
    assert axi.Burst.as_shape().width == 2 and [b.value for b in axi.Burst] == [0, 1, 2]
    assert axi.Resp.as_shape().width == 2 and [r.value for r in axi.Resp] == [0, 1, 2, 3]


def test_axi4_members_and_directions():
    sig = axi.Signature(addr_width=32, data_width=64, id_width=4)
    assert sig.members["aw"] == Out(axi.AddressSignature(addr_width=32, id_width=4))
    assert sig.members["b"] == In(axi.WriteResponseSignature(id_width=4))
    assert sig.members["r"] == In(axi.ReadDataSignature(data_width=64, id_width=4))
    ar = sig.members["ar"].signature.members
    assert {n: (ar[n].flow, ar[n].shape) for n in ("addr", "len", "size", "id", "prot")} == {
        "addr": (Out, 32), "len": (Out, 8), "size": (Out, 3), "id": (Out, 4), "prot": (Out, 3)}
    assert ar["burst"].shape is axi.Burst and ar["ready"].flow is In
    w = sig.members["w"].signature.members
    assert (w["data"].shape, w["strb"].shape, w["last"].shape) == (64, 8, 1)
    r = sig.flip().members["r"]      # the slave's view: r is driven
    assert r.flow is Out and r.signature.members["valid"].flow is Out
    assert sig.data_bytes == 8


def test_lite_has_no_burst_members():
    sig = axi.LiteSignature(addr_width=12)
    assert set(sig.members["aw"].signature.members.keys()) == {"valid", "ready", "addr", "prot"}
    assert set(sig.members["w"].signature.members.keys()) == {"valid", "ready", "data", "strb"}
    assert set(sig.members["r"].signature.members.keys()) == {"valid", "ready", "data", "resp"}
    assert set(sig.members["b"].signature.members.keys()) == {"valid", "ready", "resp"}
    no_id = axi.Signature(addr_width=16, data_width=32)
    assert "id" not in no_id.members["ar"].signature.members


def test_eq_and_repr():
    a = axi.Signature(addr_width=32, data_width=64, id_width=2)
    assert a == axi.Signature(addr_width=32, data_width=64, id_width=2)
    assert a != axi.Signature(addr_width=32, data_width=128, id_width=2)
    assert a != axi.LiteSignature(addr_width=32, data_width=64)
    assert a.flip() == axi.Signature(addr_width=32, data_width=64, id_width=2).flip()
    assert repr(a) == "axi.Signature(addr_width=32, data_width=64, id_width=2)"
    assert repr(axi.LiteSignature(addr_width=12)) == "axi.LiteSignature(addr_width=12, data_width=32)"


def test_bad_parameters():
    with pytest.raises(TypeError, match=r"Address width must be an integer greater than or equal to 1, not 0"):
        axi.Signature(addr_width=0, data_width=32)
    with pytest.raises(ValueError, match=r"Data width must be a power of two, not 48"):
        axi.Signature(addr_width=32, data_width=48)
    with pytest.raises(TypeError, match=r"ID width must be an integer"):
        axi.Signature(addr_width=32, data_width=32, id_width=-1)
    with pytest.raises(ValueError, match=r"AXI4-Lite data width must be 32 or 64, not 128"):
        axi.LiteSignature(addr_width=32, data_width=128)


def test_master_connects_to_slave():
    sig = axi.Signature(addr_width=32, data_width=64, id_width=1)
    m = Module()
    master, slave = sig.create(path=("m",)), sig.flip().create(path=("s",))
    wiring.connect(m, master, slave)
    lite = axi.LiteSignature(addr_width=12)
    wiring.connect(m, lite.create(path=("lm",)), lite.flip().create(path=("ls",)))
    Fragment.get(m, None)
