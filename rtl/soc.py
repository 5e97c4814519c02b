"""A board SoC without a CPU: UART host bridge + SCALENet + shared memory.

The host drives everything over the UART (docs/serial-protocol.md): registers through the bridge's
AXI4-Lite master into the accelerator's control slave (through an
:class:`~.axi_register_slice.AxiRegisterSlice`), memory through the bridge's AXI4 master, which shares
the memory with the accelerator's DMA through :class:`~.axi_arbiter.AxiArbiter`. The memory is either
on-chip (``memory="sram"``: :class:`~.sram.AxiSram`, block RAM) for boards without DRAM, or an external
AXI4 port ``mem`` (``memory="external"``) for a DRAM controller or the simulated platform's
memory model. Byte addresses on the host side are the accelerator's: 0 .. ``mem_bytes``.
"""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from . import axi
from .axi_arbiter import AxiArbiter
from .axi_register_slice import AxiRegisterSlice
from .bridge import Bridge
from .config import AcceleratorConfig
from .sram import AxiSram
from .uart import UartRx, UartTx, divisor_for

__all__ = ["BoardSoC"]

MEMORIES = ("sram", "external")


class BoardSoC(wiring.Component):
    """Bridge + accelerator + memory for a board.

    Parameters
    ----------
    config : the accelerator's :class:`AcceleratorConfig`
    memory : ``"sram"`` (block RAM of ``mem_bytes``) or ``"external"`` (the ``mem`` port; ``mem_bytes`` is
        the window the bridge lets the host reach)
    clk_hz, baud : the UART divisor is ``clk_hz / baud`` (``divisor`` overrides, e.g. 4 in simulation)
    timeout_cycles : the bridge's inter-byte timeout (default 50 ms of ``clk_hz``, at least 32 bytes' time)

    Members
    -------
    uart_rx : ``In(1)``, uart_tx : ``Out(1)``
    irq : ``Out(1)`` (the accelerator's interrupt; an LED on boards)
    active : ``Out(1)`` (the bridge is receiving, executing or answering a frame; a link LED on boards)
    mem : ``Out(axi.Signature(addr_width=32, data_width=8 * data_bytes, id_width=1))`` (external only)
    """

    def __init__(self, config: AcceleratorConfig | None = None, *, memory="sram", mem_bytes=64 * 1024,
                 clk_hz=50_000_000, baud=115_200, divisor=None, timeout_cycles=None, max_payload=256,
                 watchdog_cycles=1 << 20):
        if memory not in MEMORIES:
            raise ValueError(f"memory must be one of {', '.join(MEMORIES)}, not {memory!r}")
        self.config = config or AcceleratorConfig()
        self.memory, self.mem_bytes, self.clk_hz = memory, mem_bytes, clk_hz
        self.divisor = divisor if divisor is not None else divisor_for(clk_hz, baud)
        self.baud = clk_hz // self.divisor
        self.timeout_cycles = timeout_cycles or max(clk_hz // 20, 32 * 10 * self.divisor)
        self.max_payload, self.watchdog_cycles = max_payload, watchdog_cycles
        nb = self.config.data_bytes
        if mem_bytes % nb or mem_bytes <= 0:
            raise ValueError(f"mem_bytes ({mem_bytes}) must be a positive multiple of the bus width ({nb})")
        members = {"uart_rx": In(1, init=1), "uart_tx": Out(1, init=1), "irq": Out(1), "active": Out(1)}
        if memory == "external":
            members["mem"] = Out(axi.Signature(addr_width=32, data_width=8 * nb, id_width=1))
        super().__init__(members)

    def elaborate(self, platform):
        from .top import ScaleNet
        m = Module()
        nb = self.config.data_bytes
        m.submodules.uart_rx = rx = UartRx(self.divisor)
        m.submodules.uart_tx = tx = UartTx(self.divisor)
        m.submodules.bridge = bridge = Bridge(
            data_bytes=nb, mem_base=0, mem_bytes=self.mem_bytes, timeout_cycles=self.timeout_cycles,
            max_payload=self.max_payload, reg_addr_width=12, clk_hz=self.clk_hz, sram=self.memory == "sram")
        m.submodules.scalenet = acc = ScaleNet(self.config, watchdog_cycles=self.watchdog_cycles)
        m.submodules.arbiter = arb = AxiArbiter(addr_width=32, data_width=8 * nb, id_width=0)

        m.d.comb += [rx.rx.eq(self.uart_rx), self.uart_tx.eq(tx.tx), self.irq.eq(acc.irq)]
        connect(m, rx.o, bridge.rx)
        connect(m, bridge.tx, tx.i)
        # The bridge reaches the accelerator's registers through a register slice: the control slave's
        # response logic answered the bridge's state decode in the same cycle, and the bridge acted on
        # that answer then too (bridge state -> control slave -> bridge enables, 10.2 ns in the 8x8 SoC).
        m.submodules.ctrl_slice = ctrl_slice = AxiRegisterSlice(bridge.ctrl.signature)
        connect(m, bridge.ctrl, ctrl_slice.s)
        connect(m, ctrl_slice.m, acc.ctrl)
        connect(m, acc.mem, arb.m0)
        connect(m, bridge.mem, arb.m1)
        if self.memory == "sram":
            m.submodules.sram = sram = AxiSram(self.mem_bytes, data_bytes=nb, id_width=1)
            connect(m, arb.out, sram.bus)
        else:
            connect(m, arb.out, flipped(self.mem))
        m.d.comb += self.active.eq(bridge.busy)
        return m
