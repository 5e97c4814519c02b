"""AXI4 and AXI4-Lite interface signatures.

Every channel is its own parametrised :class:`wiring.Signature` (like :class:`amaranth.lib.stream.Signature`),
so a component can expose a single channel (a read engine owns only ``ar`` and ``r``) and the full
buses are built from them. Members are named as in the AXI specification, in lower case.

All signatures are written in the *master* orientation: ``valid`` and the payload of ``aw``, ``w`` and
``ar`` are :py:`Out`; the ``b`` and ``r`` channels are :py:`In` (their ``valid``/payload come from the
slave). A slave port is ``In(signature)`` (or ``signature.flip()``).
"""

from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

__all__ = [
    "Burst", "Resp",
    "AddressSignature", "WriteDataSignature", "WriteResponseSignature", "ReadDataSignature",
    "Signature", "LiteSignature",
]


class Burst(enum.Enum, shape=2):
    """``AxBURST``."""
    FIXED = 0
    INCR = 1
    WRAP = 2


class Resp(enum.Enum, shape=2):
    """``xRESP``."""
    OKAY = 0
    EXOKAY = 1
    SLVERR = 2
    DECERR = 3


def _check_width(name, value, *, minimum=0):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise TypeError(f"{name} must be an integer greater than or equal to {minimum}, not {value!r}")


def _check_data_width(data_width):
    _check_width("Data width", data_width, minimum=8)
    if data_width & (data_width - 1):
        raise ValueError(f"Data width must be a power of two, not {data_width!r}")


class _ChannelSignature(wiring.Signature):
    """Shared parts of the channel signatures: parameters, ``__eq__`` and ``__repr__``."""

    _params = ()

    def __eq__(self, other):
        return type(other) is type(self) and all(
            getattr(self, p) == getattr(other, p) for p in self._params)

    def __hash__(self):
        return hash((type(self), *(getattr(self, p) for p in self._params)))

    def __repr__(self):
        args = ", ".join(f"{p}={getattr(self, p)!r}" for p in self._params)
        return f"axi.{type(self).__name__}({args})"


class AddressSignature(_ChannelSignature):
    """An address channel (``aw`` or ``ar``), master orientation.

    Parameters
    ----------
    addr_width : :class:`int`
    id_width : :class:`int`
        Width of ``id``; with 0 (and always for AXI4-Lite) there is no ``id`` member.
    lite : :class:`bool`
        AXI4-Lite: only ``addr`` and ``prot``.

    Members
    -------
    valid : :py:`Out(1)`
    ready : :py:`In(1)`
    addr : :py:`Out(addr_width)`
    prot : :py:`Out(3)`
    id : :py:`Out(id_width)`
        AXI4 only, if ``id_width > 0``.
    len : :py:`Out(8)`
        AXI4 only: beats minus one.
    size : :py:`Out(3)`
        AXI4 only: log2 of the bytes per beat.
    burst : :py:`Out(Burst)`
        AXI4 only.
    """

    _params = ("addr_width", "id_width", "lite")

    def __init__(self, *, addr_width, id_width=0, lite=False):
        _check_width("Address width", addr_width, minimum=1)
        _check_width("ID width", id_width)
        self._addr_width, self._id_width, self._lite = addr_width, id_width, bool(lite)
        members = {"valid": Out(1), "ready": In(1), "addr": Out(addr_width), "prot": Out(3)}
        if not lite:
            if id_width:
                members["id"] = Out(id_width)
            members.update({"len": Out(8), "size": Out(3), "burst": Out(Burst)})
        super().__init__(members)

    addr_width = property(lambda self: self._addr_width)
    id_width = property(lambda self: 0 if self._lite else self._id_width)
    lite = property(lambda self: self._lite)


class WriteDataSignature(_ChannelSignature):
    """The write data channel ``w``, master orientation.

    Members
    -------
    valid : :py:`Out(1)`
    ready : :py:`In(1)`
    data : :py:`Out(data_width)`
    strb : :py:`Out(data_width // 8)`
    last : :py:`Out(1)`
        AXI4 only.
    """

    _params = ("data_width", "lite")

    def __init__(self, *, data_width, lite=False):
        _check_data_width(data_width)
        self._data_width, self._lite = data_width, bool(lite)
        members = {"valid": Out(1), "ready": In(1), "data": Out(data_width), "strb": Out(data_width // 8)}
        if not lite:
            members["last"] = Out(1)
        super().__init__(members)

    data_width = property(lambda self: self._data_width)
    lite = property(lambda self: self._lite)


class WriteResponseSignature(_ChannelSignature):
    """The write response channel ``b``, in the orientation of its *sender* (the slave).

    Buses include it as :py:`In(WriteResponseSignature(...))`.

    Members
    -------
    valid : :py:`Out(1)`
    ready : :py:`In(1)`
    resp : :py:`Out(Resp)`
    id : :py:`Out(id_width)`
        AXI4 only, if ``id_width > 0``.
    """

    _params = ("id_width", "lite")

    def __init__(self, *, id_width=0, lite=False):
        _check_width("ID width", id_width)
        self._id_width, self._lite = id_width, bool(lite)
        members = {"valid": Out(1), "ready": In(1), "resp": Out(Resp)}
        if not lite and id_width:
            members["id"] = Out(id_width)
        super().__init__(members)

    id_width = property(lambda self: 0 if self._lite else self._id_width)
    lite = property(lambda self: self._lite)


class ReadDataSignature(_ChannelSignature):
    """The read data channel ``r``, in the orientation of its *sender* (the slave).

    Buses include it as :py:`In(ReadDataSignature(...))`.

    Members
    -------
    valid : :py:`Out(1)`
    ready : :py:`In(1)`
    data : :py:`Out(data_width)`
    resp : :py:`Out(Resp)`
    id : :py:`Out(id_width)`
        AXI4 only, if ``id_width > 0``.
    last : :py:`Out(1)`
        AXI4 only.
    """

    _params = ("data_width", "id_width", "lite")

    def __init__(self, *, data_width, id_width=0, lite=False):
        _check_data_width(data_width)
        _check_width("ID width", id_width)
        self._data_width, self._id_width, self._lite = data_width, id_width, bool(lite)
        members = {"valid": Out(1), "ready": In(1), "data": Out(data_width), "resp": Out(Resp)}
        if not lite:
            if id_width:
                members["id"] = Out(id_width)
            members["last"] = Out(1)
        super().__init__(members)

    data_width = property(lambda self: self._data_width)
    id_width = property(lambda self: 0 if self._lite else self._id_width)
    lite = property(lambda self: self._lite)


class Signature(_ChannelSignature):
    """An AXI4 (full) bus, master orientation.

    Parameters
    ----------
    addr_width : :class:`int`
    data_width : :class:`int`
        A power of two, at least 8.
    id_width : :class:`int`
        0 for no ``id`` members.

    Members
    -------
    aw : :py:`Out(AddressSignature(addr_width=addr_width, id_width=id_width))`
    w : :py:`Out(WriteDataSignature(data_width=data_width))`
    b : :py:`In(WriteResponseSignature(id_width=id_width))`
    ar : :py:`Out(AddressSignature(addr_width=addr_width, id_width=id_width))`
    r : :py:`In(ReadDataSignature(data_width=data_width, id_width=id_width))`
    """

    _params = ("addr_width", "data_width", "id_width")
    _lite = False

    def __init__(self, *, addr_width, data_width, id_width=0):
        _check_width("Address width", addr_width, minimum=1)
        _check_data_width(data_width)
        _check_width("ID width", id_width)
        self._addr_width, self._data_width, self._id_width = addr_width, data_width, id_width
        lite, id_width = self._lite, (0 if self._lite else id_width)
        super().__init__({
            "aw": Out(AddressSignature(addr_width=addr_width, id_width=id_width, lite=lite)),
            "w": Out(WriteDataSignature(data_width=data_width, lite=lite)),
            "b": In(WriteResponseSignature(id_width=id_width, lite=lite)),
            "ar": Out(AddressSignature(addr_width=addr_width, id_width=id_width, lite=lite)),
            "r": In(ReadDataSignature(data_width=data_width, id_width=id_width, lite=lite)),
        })

    addr_width = property(lambda self: self._addr_width)
    data_width = property(lambda self: self._data_width)
    id_width = property(lambda self: self._id_width)

    @property
    def data_bytes(self):
        return self._data_width // 8


class LiteSignature(Signature):
    """An AXI4-Lite bus, master orientation: :class:`Signature` without bursts, IDs and ``last``.

    Members
    -------
    aw, ar : :py:`Out(AddressSignature(addr_width=addr_width, lite=True))`
    w : :py:`Out(WriteDataSignature(data_width=data_width, lite=True))`
    b : :py:`In(WriteResponseSignature(lite=True))`
    r : :py:`In(ReadDataSignature(data_width=data_width, lite=True))`
    """

    _params = ("addr_width", "data_width")
    _lite = True

    def __init__(self, *, addr_width, data_width=32):
        if data_width not in (32, 64):
            raise ValueError(f"AXI4-Lite data width must be 32 or 64, not {data_width!r}")
        super().__init__(addr_width=addr_width, data_width=data_width, id_width=0)

    id_width = property(lambda self: 0)
