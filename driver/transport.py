"""Transports: the one small interface between the driver and a device, and the behavioural device.

Everything above a transport (compiling, loading, running, error recovery) is shared by every target;
a transport only moves register values and memory bytes. :class:`ModelDevice` is a behavioural model of
the accelerator's AXI4-Lite register file (generated from the single register map) with the
transaction-level model as its datapath: the driver's access sequences are tested against it, and it is
the fastest target for running whole networks.
"""

from __future__ import annotations

import abc

import numpy as np

from scalenet.errors import ScalenetError
from scalenet.rtl import regmap
from scalenet.rtl.config import AcceleratorConfig
from scalenet.rtl.regmap import Access, ErrorCode

__all__ = ["RegisterAccessError", "Transport", "ModelDevice", "ModelTransport", "config_registers"]


class RegisterAccessError(ScalenetError):
    """A register access the device answered with an error (reserved or read-only address)."""


class Transport(abc.ABC):
    """Moves 32-bit register values and memory bytes to and from one device."""

    mem_size: int

    @abc.abstractmethod
    def read_reg(self, offset: int) -> int: ...

    @abc.abstractmethod
    def write_reg(self, offset: int, value: int) -> None: ...

    @abc.abstractmethod
    def write_mem(self, addr: int, data) -> None: ...

    @abc.abstractmethod
    def read_mem(self, addr: int, length: int) -> bytes: ...

    def wait(self, cycles: int) -> None:
        """Let the device run (simulators advance their clock; boards sleep)."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def config_registers(cfg: AcceleratorConfig) -> dict:
    """Values of the read-only configuration registers for a configuration (one definition for RTL/models)."""
    return {
        "CONFIG0": regmap.pack("CONFIG0", rows=cfg.rows, cols=cfg.cols, max_kernel=cfg.max_kernel,
                               data_bytes=cfg.data_bytes),
        "CONFIG1": regmap.pack("CONFIG1", max_width=cfg.max_width, max_channels=cfg.max_channels),
    }


class ModelDevice:
    """Register file + memory + transaction-level datapath: what the RTL does, at transaction level.

    A run takes ``latency_polls`` status reads to finish (0: done at once), so drivers see BUSY as they
    would on hardware; ``hang`` makes runs never finish (timeouts), ``fail_layer`` reports an error.
    """

    def __init__(self, config: AcceleratorConfig | None = None, mem_size=16 << 20):
        self.config = config or AcceleratorConfig()
        self.memory = np.zeros(mem_size, dtype=np.uint8)
        self.regs = {r.name: r.reset for r in regmap.REGISTERS}
        self.regs.update(config_registers(self.config))
        self.latency_polls = 0
        self.hang = False
        self.fail_layer = None
        self._pending = None
        self._perf = {"PERF_CYCLES": 0, "PERF_MAC_ACTIVE": 0, "PERF_DMA_RD_BYTES": 0, "PERF_DMA_WR_BYTES": 0,
                      "PERF_DMA_STALL": 0}
        self.runs = 0

    # -- bus -----------------------------------------------------------------------------------------
    def read(self, offset):
        reg = regmap.by_offset(offset)
        if reg is None:
            raise RegisterAccessError(f"read of reserved register offset 0x{offset:03X}")
        if reg.name == "STATUS":
            self._advance()
        if reg.access is Access.WO:
            return 0
        for name, value in self._perf.items():
            if reg.name == f"{name}_LO":
                return value & 0xFFFF_FFFF
            if reg.name == f"{name}_HI":
                return value >> 32
        return self.regs[reg.name]

    def write(self, offset, value):
        reg = regmap.by_offset(offset)
        if reg is None:
            raise RegisterAccessError(f"write to reserved register offset 0x{offset:03X}")
        if reg.access is Access.RO:
            raise RegisterAccessError(f"write to read-only register {reg.name} (0x{offset:03X})")
        value &= 0xFFFF_FFFF
        if reg.access is Access.W1C:
            self.regs[reg.name] &= ~value
        elif reg.name == "CTRL":
            f = regmap.unpack("CTRL", value)
            self.regs["CTRL"] = regmap.pack("CTRL", irq_enable=f["irq_enable"])
            if f["soft_reset"]:
                self._pending = None
                self.regs["STATUS"] = 0
                self.regs["ERROR"] = 0
            if f["abort"] and self._pending is not None:
                self._finish(error=ErrorCode.ABORTED, layer=self.regs["LAYER"])
            if f["start"]:
                self._start()
        elif reg.name == "PERF_CTRL":
            if value & 1:
                self._perf = dict.fromkeys(self._perf, 0)
        else:
            self.regs[reg.name] = value

    # -- datapath ------------------------------------------------------------------------------------
    def _start(self):
        status = regmap.unpack("STATUS", self.regs["STATUS"])
        if status["busy"]:
            self.regs["STATUS"] |= regmap.pack("STATUS", start_while_busy=1)
            return
        self.regs["STATUS"] = regmap.pack("STATUS", busy=1)
        self.regs["ERROR"] = 0
        self._pending = self.latency_polls
        self.runs += 1

    def _advance(self):
        if self._pending is None or self.hang:
            return
        if self._pending > 0:
            self._pending -= 1
            return
        self._execute()

    def _execute(self):
        from scalenet.cosim.tlm import DescriptorError, run_descriptors
        count = self.regs["DESC_COUNT"] & 0xFFFF
        if self.fail_layer is not None:
            self._finish(error=ErrorCode.READ_SLVERR, layer=self.fail_layer)
            return
        try:
            stats = run_descriptors(self.memory, self.regs["DESC_ADDR"], count, self.config)
        except DescriptorError:
            self._finish(error=ErrorCode.BAD_DESCRIPTOR, layer=self.regs["LAYER"])
            return
        for s in stats:
            self._perf["PERF_CYCLES"] += s.array_cycles
            self._perf["PERF_MAC_ACTIVE"] += s.macs
            self._perf["PERF_DMA_RD_BYTES"] += s.read_bytes
            self._perf["PERF_DMA_WR_BYTES"] += s.write_bytes
        self.regs["LAYER"] = max(count - 1, 0)
        self._finish()

    def _finish(self, error=None, layer=0):
        self._pending = None
        if error is None:
            self.regs["STATUS"] = regmap.pack("STATUS", done=1)
            self.regs["IRQ_STATUS"] |= regmap.pack("IRQ_STATUS", done=1)
        else:
            self.regs["STATUS"] = regmap.pack("STATUS", error=1)
            self.regs["ERROR"] = regmap.pack("ERROR", code=int(error), layer=layer)
            self.regs["IRQ_STATUS"] |= regmap.pack("IRQ_STATUS", error=1)


class ModelTransport(Transport):
    """The transport to a :class:`ModelDevice` in this process."""

    def __init__(self, device: ModelDevice | None = None):
        self.device = device or ModelDevice()
        self.mem_size = self.device.memory.size

    def read_reg(self, offset):
        return self.device.read(offset)

    def write_reg(self, offset, value):
        self.device.write(offset, value)

    def write_mem(self, addr, data):
        data = np.frombuffer(bytes(data), dtype=np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8)
        if addr < 0 or addr + data.size > self.mem_size:
            raise ValueError(f"write of {data.size} bytes at 0x{addr:x} is outside the device memory")
        self.device.memory[addr:addr + data.size] = data.reshape(-1)

    def read_mem(self, addr, length):
        if addr < 0 or addr + length > self.mem_size:
            raise ValueError(f"read of {length} bytes at 0x{addr:x} is outside the device memory")
        return self.device.memory[addr:addr + length].tobytes()
