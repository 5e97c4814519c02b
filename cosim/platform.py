"""The simulated platform: the SCALENet top level and an AXI memory, in the compiled engine.

The memory is a numpy byte array shared with the C-side AXI slave (configurable read latency,
bandwidth and seeded back-pressure); registers are reached through real AXI4-Lite transactions on the
``ctrl`` port, one Python call per cycle (a few per register access), while a run advances in C until the
interrupt or status says it is over. :class:`SimTransport` puts it behind the driver's transport
interface, so the driver's code is the same here and on a board.
"""

from __future__ import annotations

import numpy as np

from scalenet.driver.transport import RegisterAccessError, Transport
from scalenet.rtl.config import AcceleratorConfig

from .compiled import CompiledSimulator

__all__ = ["SimulatedPlatform", "SimTransport"]

_RESP = {0: "OKAY", 1: "EXOKAY", 2: "SLVERR", 3: "DECERR"}


class SimulatedPlatform:
    def __init__(self, config: AcceleratorConfig | None = None, *, mem_size=8 << 20, latency=8, stall=0.0,
                 seed=1, watchdog_cycles=1 << 20):
        from scalenet.rtl.top import ScaleNet
        self.config = config or AcceleratorConfig()
        self.top = ScaleNet(self.config, watchdog_cycles=watchdog_cycles)
        self.sim = CompiledSimulator(self.top)
        self.memory = self.sim.attach_axi_memory("mem", mem_size, data_bytes=self.config.data_bytes,
                                                 latency=latency, stall=stall, seed=seed)
        self._reset()

    def _reset(self):
        self.sim.set("rst", 1)
        self.sim.tick(2)
        self.sim.set("rst", 0)
        self.sim.tick(1)

    @property
    def cycles(self):
        return self.sim.cycles

    def _transaction(self, requests, response, max_cycles=1000):
        """Hold valid on the request channels until each is accepted, then take the response."""
        s = self.sim
        pending = set(requests)
        for _ in range(max_cycles):
            s.begin_cycle()
            accepted = {ch for ch in pending if s.get(f"ctrl__{ch}__ready")}
            answered = not pending and s.get(f"ctrl__{response}__valid")
            if answered:
                resp = s.get(f"ctrl__{response}__resp")
                data = s.get("ctrl__r__data") if response == "r" else None
            s.end_cycle()
            for ch in accepted:
                s.set(f"ctrl__{ch}__valid", 0)
            pending -= accepted
            if answered:
                return resp, data
        raise TimeoutError(f"the control slave did not answer within {max_cycles} cycles")

    def write_reg(self, offset, value):
        s = self.sim
        s.set("ctrl__aw__addr", offset)
        s.set("ctrl__aw__valid", 1)
        s.set("ctrl__w__data", value & 0xFFFF_FFFF)
        s.set("ctrl__w__strb", 0xF)
        s.set("ctrl__w__valid", 1)
        s.set("ctrl__b__ready", 1)
        resp, _ = self._transaction(("aw", "w"), "b")
        s.set("ctrl__b__ready", 0)
        if resp != 0:
            raise RegisterAccessError(f"write to register offset 0x{offset:03X} answered {_RESP[resp]}")

    def read_reg(self, offset):
        s = self.sim
        s.set("ctrl__ar__addr", offset)
        s.set("ctrl__ar__valid", 1)
        s.set("ctrl__r__ready", 1)
        resp, data = self._transaction(("ar",), "r")
        s.set("ctrl__r__ready", 0)
        if resp != 0:
            raise RegisterAccessError(f"read of register offset 0x{offset:03X} answered {_RESP[resp]}")
        return data

    def run(self, cycles):
        self.sim.tick(cycles)

    def run_until_irq(self, max_cycles):
        return self.sim.run_until("irq", 1, max_cycles)


class SimTransport(Transport):
    """The driver's transport to a :class:`SimulatedPlatform` (memory through the back door, like a host
    writing DRAM; registers through AXI4-Lite)."""

    def __init__(self, platform: SimulatedPlatform | None = None, **kwargs):
        self.platform = platform or SimulatedPlatform(**kwargs)
        self.mem_size = self.platform.memory.data.size

    def read_reg(self, offset):
        return self.platform.read_reg(offset)

    def write_reg(self, offset, value):
        self.platform.write_reg(offset, value)

    def write_mem(self, addr, data):
        data = np.frombuffer(bytes(data), np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8)
        if addr < 0 or addr + data.size > self.mem_size:
            raise ValueError(f"write of {data.size} bytes at 0x{addr:x} is outside the simulated memory")
        self.platform.memory.data[addr:addr + data.size] = data.reshape(-1)

    def read_mem(self, addr, length):
        if addr < 0 or addr + length > self.mem_size:
            raise ValueError(f"read of {length} bytes at 0x{addr:x} is outside the simulated memory")
        return self.platform.memory.data[addr:addr + length].tobytes()

    def wait(self, cycles):
        self.platform.run(cycles)
