"""The board top level: clock generation, reset, the accelerator SoC on the board's UART, status LEDs.

Everything board-specific lives here and in :mod:`scalenet.boards.targets`; the SoC (UART bridge,
accelerator, on-chip SRAM as its memory: none of the boards has a DRAM controller in the project) is
``rtl/soc.py``'s ``BoardSoC``, the same gateware the simulation tests. The sync domain runs from a PLL
at the requested frequency (ECP5 EHXPLLL, 7-series PLLE2_BASE) and is held in reset until the PLL
locks (and while a reset button is pressed, where the board has one).

LEDs: a heartbeat (the clock runs and the PLL is locked), busy, done/IRQ and error -- on boards with
an RGB LED, green = heartbeat, blue = busy, red = error.
"""

from __future__ import annotations

from amaranth.build import Attrs, Pins, Resource, ResourceError, Subsignal
from amaranth.hdl import ClockDomain, ClockSignal, Elaboratable, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from scalenet.rtl.config import AcceleratorConfig

from .pll import ecp5_pll, ecp5_pll_params, xc7_pll, xc7_pll_params
from .targets import Board

__all__ = ["BoardTop", "DEFAULT_BAUD", "soc_status_ports"]

DEFAULT_BAUD = 115200
HEARTBEAT_HZ = 2


def soc_status_ports(soc):
    """The SoC's UART pins and status outputs by role, found in its signature (names vary by revision)."""
    members = dict(soc.signature.members.items())
    roles = {}
    for role, names in (("rx", ("uart_rx", "rx")), ("tx", ("uart_tx", "tx")),
                        ("busy", ("active", "busy")), ("done", ("irq", "done")), ("error", ("error",))):
        for name in names:
            if name in members:
                roles[role] = getattr(soc, name)
                break
    missing = {"rx", "tx"} - set(roles)
    if missing:
        raise TypeError(f"the SoC has no UART {' or '.join(sorted(missing))} port (members: {', '.join(members)})")
    return roles


class BoardTop(Elaboratable):
    """The accelerator SoC on one board.

    Parameters
    ----------
    board : Board
    config : AcceleratorConfig
    freq_mhz : float
        Target frequency of the sync domain (the PLL's nearest, :attr:`pll`).
    mem_bytes : int
        On-chip SRAM the accelerator and the host share.
    baud : int
        UART rate of the host bridge.
    soc_factory : callable, optional
        ``(config, mem_bytes, clk_hz, baud) -> SoC``; the default builds ``rtl/soc.py``'s ``BoardSoC``.
    """

    def __init__(self, board: Board, config: AcceleratorConfig, *, freq_mhz: float, mem_bytes: int,
                 baud: int = DEFAULT_BAUD, soc_factory=None):
        self.board = board
        self.config = config
        self.mem_bytes = mem_bytes
        self.baud = baud
        self.soc_factory = soc_factory or _board_soc
        f_in = _default_clk_mhz(board)
        if board.family == "ecp5":
            self.pll = ecp5_pll_params(f_in, freq_mhz)
        else:
            self.pll = xc7_pll_params(f_in, freq_mhz)

    @property
    def clk_hz(self) -> int:
        return round(self.pll.f_out_mhz * 1e6)

    def elaborate(self, platform):
        m = Module()
        board = self.board

        # ---- clock and reset
        clk_in = io.Buffer("i", platform.request(platform.default_clk, dir="-"))
        m.submodules.clk_in = clk_in
        clk, locked = Signal(name="pll_clk"), Signal(name="pll_locked")
        if board.family == "ecp5":
            m.submodules.pll = ecp5_pll(self.pll, clk_in.i, clk, locked)
            platform.add_clock_constraint(clk, self.clk_hz)
        else:
            m.submodules.pll = xc7_pll(self.pll, clk_in.i, clk, locked)
        m.domains.sync = ClockDomain("sync")
        m.d.comb += ClockSignal("sync").eq(clk)
        arst = ~locked
        if platform.default_rst is not None:
            rst_in = io.Buffer("i", platform.request(platform.default_rst, dir="-"))
            m.submodules.rst_in = rst_in
            arst = arst | rst_in.i
        m.submodules.rst_sync = ResetSynchronizer(arst, domain="sync")

        # ---- the SoC on the UART
        m.submodules.soc = soc = self.soc_factory(self.config, self.mem_bytes, self.clk_hz, self.baud)
        ports = soc_status_ports(soc)
        uart = self._request_uart(platform)
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [ports["rx"].eq(rx.i), tx.o.eq(ports["tx"])]

        # ---- status LEDs
        period = max(2, self.clk_hz // (2 * HEARTBEAT_HZ))
        beat = Signal(range(period))
        heart = Signal()
        with m.If(beat == 0):
            m.d.sync += [beat.eq(period - 1), heart.eq(~heart)]
        with m.Else():
            m.d.sync += beat.eq(beat - 1)
        # Registered: an LED does not mind a cycle, and the SoC's status logic would otherwise route
        # straight to a pad (once the board design's longest path).
        status = [heart]
        for name in ("busy", "done", "error"):
            q = Signal(name=f"led_{name}_q")
            m.d.sync += q.eq(ports.get(name, 0))
            status.append(q)
        self._drive_leds(m, platform, status)
        return m

    def _request_uart(self, platform):
        board = self.board
        if board.uart is not None:
            return platform.request(board.uart, 0, dir="-")
        conn, number, tx, rx = board.uart_pins
        attrs = Attrs(IO_TYPE="LVCMOS33") if board.family == "ecp5" else Attrs(IOSTANDARD="LVCMOS33")
        platform.add_resources([Resource(
            "scalenet_uart", 0,
            Subsignal("tx", Pins(tx, dir="o", conn=(conn, number))),
            Subsignal("rx", Pins(rx, dir="i", conn=(conn, number))),
            attrs)])
        return platform.request("scalenet_uart", 0, dir="-")

    def _drive_leds(self, m, platform, status):
        heart, busy, done, error = status
        if self.board.leds == "rgb_led":
            rgb = platform.request("rgb_led", 0, dir="-")
            for name, sig in (("g", heart), ("b", busy), ("r", error)):
                m.submodules[f"led_{name}"] = buf = io.Buffer("o", getattr(rgb, name))
                m.d.comb += buf.o.eq(sig)
            return
        for i, sig in enumerate((heart, busy, done, error)):
            try:
                led = platform.request("led", i, dir="-")
            except ResourceError:           # fewer LEDs than status bits
                break
            m.submodules[f"led_{i}"] = buf = io.Buffer("o", led)
            m.d.comb += buf.o.eq(sig)


def _default_clk_mhz(board: Board) -> float:
    cls = board.platform_class()
    for res in cls.resources:
        if res.name == cls.default_clk and res.clock is not None:
            return res.clock.frequency / 1e6
    raise ValueError(f"{board.name}: default clock {cls.default_clk!r} has no frequency")


def _board_soc(config, mem_bytes, clk_hz, baud):
    from scalenet.rtl.soc import BoardSoC
    return BoardSoC(config, memory="sram", mem_bytes=mem_bytes, clk_hz=clk_hz, baud=baud)
