"""The boards SCALENet builds for: which amaranth-boards platform, which device, what it holds.

One table, so the CLI, the resource pre-check, the build flow, the docs and the tests agree. Device
capacities are the vendors' data-sheet figures (tests check the ECP5 ones against what nextpnr reports).
Only plain data here: the platform class is imported when a build asks for it, so listing boards needs
neither Amaranth nor amaranth-boards.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from scalenet.errors import ScalenetError

__all__ = ["BoardError", "Device", "Board", "BOARDS", "DEVICES", "get_board"]


class BoardError(ScalenetError, ValueError):
    """An unknown board name or a board option it cannot take."""


@dataclass(frozen=True)
class Device:
    """An FPGA part and its capacity in the cells the flow reports."""
    part: str
    family: str                 #: "ecp5" or "xc7"
    luts: int                   #: LUT4 (ECP5) or LUT6 (7-series)
    ffs: int
    dsps: int                   #: MULT18X18D (ECP5) or DSP48E1 (7-series)
    brams: int                  #: DP16KD (18 Kbit, ECP5) or RAMB18 halves (7-series: 2 per RAMB36)
    speed: str = ""

    @property
    def bram_bits(self) -> int:
        return 18 * 1024


DEVICES = {
    # ECP5: LUT4 = 2 x TRELLIS_SLICE, FF likewise; DP16KD are 18 Kbit (16 Kbit in x16 mode).
    "LFE5U-25F": Device("LFE5U-25F", "ecp5", luts=24288, ffs=24288, dsps=28, brams=56),
    "LFE5U-85F": Device("LFE5U-85F", "ecp5", luts=83640, ffs=83640, dsps=156, brams=208),
    "LFE5UM5G-85F": Device("LFE5UM5G-85F", "ecp5", luts=83640, ffs=83640, dsps=156, brams=208),
    # 7-series: brams counted in RAMB18 (a RAMB36 is two).
    "xc7a35t": Device("xc7a35t", "xc7", luts=20800, ffs=41600, dsps=90, brams=100),
    "xc7a100t": Device("xc7a100t", "xc7", luts=63400, ffs=126800, dsps=240, brams=270),
    "xc7z020": Device("xc7z020", "xc7", luts=53200, ffs=106400, dsps=220, brams=280),
}


@dataclass(frozen=True)
class Board:
    """A board target.

    ``uart`` names the platform resource the host bridge uses (``None``: the board has no UART wired
    to the FPGA's user I/O, one is placed on ``uart_pins`` of a connector instead). ``program`` is the
    programming command shown in the docs and the build report (never run by the flow).
    """
    name: str
    platform: str               #: "module:Class" in amaranth_boards
    device: str                 #: key of DEVICES
    description: str
    program: str
    uart: str | None = "uart"
    uart_pins: tuple = ()       #: (connector name, number, tx pin, rx pin) when ``uart`` is None
    leds: str = "led"           #: "led" (plain LEDs) or "rgb_led"
    notes: str = ""
    aliases: tuple = field(default=())

    @property
    def dev(self) -> Device:
        return DEVICES[self.device]

    @property
    def family(self) -> str:
        return self.dev.family

    def platform_class(self):
        module, cls = self.platform.split(":")
        return getattr(importlib.import_module(module), cls)


_OFL = "openFPGALoader -b {board} top.bit          # volatile (SRAM); add -f to write the SPI flash"
BOARDS = {b.name: b for b in [
    Board("ulx3s-25f", "amaranth_boards.ulx3s:ULX3S_25F_Platform", "LFE5U-25F",
          "Radiona ULX3S, ECP5 LFE5U-25F, 25 MHz clock, FTDI UART", _OFL.format(board="ulx3s")),
    Board("ulx3s-85f", "amaranth_boards.ulx3s:ULX3S_85F_Platform", "LFE5U-85F",
          "Radiona ULX3S, ECP5 LFE5U-85F, 25 MHz clock, FTDI UART", _OFL.format(board="ulx3s")),
    Board("orangecrab-25f", "amaranth_boards.orangecrab_r0_2:OrangeCrabR0_2_25FPlatform", "LFE5U-25F",
          "OrangeCrab r0.2, ECP5 LFE5U-25F, 48 MHz clock",
          "dfu-util -a 0 -D top.bit                # hold the button while plugging in (DFU bootloader)",
          uart=None, uart_pins=("io", 0, "0", "1"), leds="rgb_led",
          notes="no UART to the host on the board: the bridge uses feather pins io0 (TX) and io1 (RX) "
                "with a 3.3 V USB-UART adapter; the .bit carries a DFU suffix"),
    Board("orangecrab-85f", "amaranth_boards.orangecrab_r0_2:OrangeCrabR0_2_85FPlatform", "LFE5U-85F",
          "OrangeCrab r0.2, ECP5 LFE5U-85F, 48 MHz clock",
          "dfu-util -a 0 -D top.bit                # hold the button while plugging in (DFU bootloader)",
          uart=None, uart_pins=("io", 0, "0", "1"), leds="rgb_led",
          notes="as orangecrab-25f"),
    Board("ecpix5-85f", "amaranth_boards.ecpix5:ECPIX585Platform", "LFE5UM5G-85F",
          "LambdaConcept ECPIX-5, ECP5 LFE5UM5G-85F, 100 MHz clock, FTDI UART",
          "openFPGALoader -c ft2232 top.bit        # add -f to write the SPI flash",
          leds="rgb_led"),
    Board("arty-a7-35", "amaranth_boards.arty_a7:ArtyA7_35Platform", "xc7a35t",
          "Digilent Arty A7-35 (the paper's board), Artix-7 xc7a35t, 100 MHz clock, FTDI UART",
          "openFPGALoader -b arty top.bit          # after building top.bit with Vivado (build_top.sh)"),
    Board("arty-a7-100", "amaranth_boards.arty_a7:ArtyA7_100Platform", "xc7a100t",
          "Digilent Arty A7-100, Artix-7 xc7a100t, 100 MHz clock, FTDI UART",
          "openFPGALoader -b arty top.bit          # after building top.bit with Vivado (build_top.sh)"),
    Board("arty-z7-20", "amaranth_boards.arty_z7:ArtyZ720Platform", "xc7z020",
          "Digilent Arty Z7-20, Zynq-7020 (the paper's SoC part; PYNQ-Z1 is the same board), 125 MHz clock",
          "openFPGALoader -b arty_z7_20 top.bit    # after building top.bit with Vivado (build_top.sh)",
          uart=None, uart_pins=("pmod", 0, "1", "2"), leds="led",
          notes="the board's USB-UART belongs to the Zynq PS: the bridge uses PMOD JA pins 1 (TX) and "
                "2 (RX) with a 3.3 V USB-UART adapter; Zedboard and PYNQ-Z2 carry the same xc7z020 "
                "(amaranth-boards 0.0.21 has no platform for them)",
          aliases=("pynq-z1", "zynq-7020")),
]}


def get_board(name: str) -> Board:
    """The board called ``name`` (or one of its aliases); BoardError names the choices otherwise."""
    key = str(name).strip().lower()
    if key in BOARDS:
        return BOARDS[key]
    for b in BOARDS.values():
        if key in b.aliases:
            return b
    raise BoardError(f"unknown board {name!r}; choose one of: {', '.join(BOARDS)}")
