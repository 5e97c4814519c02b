"""UART receiver and transmitter (8N1) with byte streams, for the host bridge of boards without a CPU.

``divisor`` is the clock cycles per bit (``clk_hz / baud``); simulation uses a small one (4–8) so a frame
costs tens of cycles per byte. The receiver passes the pin through a 2-FF synchroniser (it is
asynchronous to the clock), waits half a bit after the falling edge, re-checks the start bit (a glitch
shorter than half a bit is ignored) and samples each data bit in the middle. A byte whose stop bit is low
(framing error, a break) or that arrives while the previous one is still unread (overrun) is dropped and
counted on a one-cycle pulse, so the bridge above sees only whole, correctly framed bytes.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UartRx", "UartTx", "divisor_for"]


def divisor_for(clk_hz: int, baud: int, *, tolerance=0.02) -> int:
    """Clock cycles per bit for a baud rate, refusing rates the clock cannot make within ``tolerance``."""
    if clk_hz <= 0 or baud <= 0:
        raise ValueError(f"clock ({clk_hz} Hz) and baud rate ({baud}) must be positive")
    divisor = round(clk_hz / baud)
    if divisor < 4:
        raise ValueError(f"{baud} baud needs at least 4 clocks per bit; {clk_hz} Hz gives {clk_hz / baud:.2f}")
    error = abs(clk_hz / divisor - baud) / baud
    if error > tolerance:
        raise ValueError(f"{baud} baud from {clk_hz} Hz is off by {error:.1%} (divisor {divisor}); "
                         f"choose another baud rate")
    return divisor


def _check_divisor(divisor):
    if not isinstance(divisor, int) or divisor < 4:
        raise ValueError(f"UART divisor must be an integer of at least 4 clocks per bit, not {divisor!r}")


class UartRx(wiring.Component):
    """8N1 receiver.

    Members
    -------
    rx : :py:`In(1)`
        The pin (idle high), asynchronous.
    o : :py:`Out(stream.Signature(8))`
        Received bytes; a byte is held until read and dropped (``overrun``) if the next one completes first.
    framing_error, overrun : :py:`Out(1)`
        One-cycle pulses when a byte is dropped.
    """

    def __init__(self, divisor):
        _check_divisor(divisor)
        self.divisor = divisor
        super().__init__({"rx": In(1, init=1), "o": Out(stream.Signature(8)),
                          "framing_error": Out(1), "overrun": Out(1)})

    def elaborate(self, platform):
        m = Module()
        pin = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, pin, init=1)
        timer = Signal(range(self.divisor))
        bit = Signal(range(9))
        shift = Signal(8)

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~pin):
                    m.d.sync += timer.eq(self.divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(pin):
                    m.next = "IDLE"                      # a glitch, not a start bit
                with m.Else():
                    m.d.sync += [timer.eq(self.divisor - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [shift.eq(Cat(shift[1:], pin)), bit.eq(bit + 1), timer.eq(self.divisor - 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    with m.If(~pin):
                        m.d.comb += self.framing_error.eq(1)
                        m.next = "BREAK"
                    with m.Elif(self.o.valid & ~self.o.ready):
                        m.d.comb += self.overrun.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [self.o.payload.eq(shift), self.o.valid.eq(1)]
                        m.next = "IDLE"
            with m.State("BREAK"):
                with m.If(pin):                          # wait for the line to return high
                    m.next = "IDLE"
        return m


class UartTx(wiring.Component):
    """8N1 transmitter.

    Members
    -------
    i : :py:`In(stream.Signature(8))`
        Bytes to send; ``ready`` while the line is idle.
    tx : :py:`Out(1)`
        The pin (idle high, registered).
    """

    def __init__(self, divisor):
        _check_divisor(divisor)
        self.divisor = divisor
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self.divisor))
        bits = Signal(range(11))
        shift = Signal(10, init=0x3FF)
        m.d.comb += self.i.ready.eq(bits == 0)
        m.d.sync += self.tx.eq(shift[0])
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [shift.eq(Cat(0, self.i.payload, 1)), bits.eq(10), timer.eq(self.divisor - 1)]
        with m.Elif(bits != 0):
            with m.If(timer != 0):
                m.d.sync += timer.eq(timer - 1)
            with m.Else():
                m.d.sync += [shift.eq(Cat(shift[1:], 1)), bits.eq(bits - 1), timer.eq(self.divisor - 1)]
        return m
