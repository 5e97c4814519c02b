"""The simulated platform: the SCALENet top level and an AXI memory, on either simulation engine.

``engine="compiled"`` runs the RTL as a CXXRTL model with the memory model on the C side (a run advances
in C until the interrupt or status says it is over); ``engine="pysim"`` runs it in Amaranth's simulator
with the Python twin of that memory (cosim/axi_memory.py). Both take the same options, expose the same
memory API (``platform.memory``) and run the same design cycle for cycle, so the driver, the tests and
the traces do not care which one is underneath. Registers are reached through real AXI4-Lite
transactions on the ``ctrl`` port. Without a C++ compiler the compiled engine falls back to pysim with a
warning that names what is missing. :class:`SimTransport` puts the platform behind the driver's transport
interface, so the driver's code is the same here and on a board.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

from scalenet.driver.transport import RegisterAccessError, Transport
from scalenet.errors import ScalenetError
from scalenet.rtl.config import AcceleratorConfig

__all__ = ["SimulatedPlatform", "SimTransport", "ENGINES", "EngineFallbackWarning", "SimulationSetupError"]

ENGINES = ("compiled", "pysim")
_RESP = {0: "OKAY", 1: "EXOKAY", 2: "SLVERR", 3: "DECERR"}


class EngineFallbackWarning(UserWarning):
    """The compiled engine was asked for but cannot be built here; the Python simulator runs instead."""


class SimulationSetupError(ScalenetError):
    """A simulated platform was asked for with options that cannot work (unknown engine, bad path)."""


class _CompiledHost:
    """The platform's operations on a CXXRTL model (the counterpart of cosim.pysim_engine.PysimHost)."""

    engine = "compiled"

    def __init__(self, top, *, mem_size, memory_options, data_bytes, vcd=None, progress=None):
        from .compiled import CompiledSimulator
        self.top = top
        self.sim = CompiledSimulator(top, progress=progress)
        self.memory = self.sim.attach_axi_memory("mem", mem_size, data_bytes=data_bytes, **memory_options)
        if vcd is not None:
            self.sim.open_vcd(vcd)

    @property
    def cycles(self):
        return self.sim.cycles

    def reset(self):
        self.sim.set("rst", 1)
        self.sim.tick(2)
        self.sim.set("rst", 0)
        self.sim.tick(1)

    def run(self, cycles):
        self.sim.tick(int(cycles))

    def run_until_irq(self, max_cycles):
        return self.sim.run_until("irq", 1, max_cycles)

    def transaction(self, setup, requests, response, max_cycles=1000):
        s = self.sim
        for path, value in setup.items():
            s.set(f"ctrl__{path}", value)
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
                s.set(f"ctrl__{response}__ready", 0)
                return resp, data
        raise TimeoutError(f"the control slave did not answer within {max_cycles} cycles")

    def close(self):
        self.sim.close()


def _pick_engine(engine):
    if engine not in ENGINES:
        raise SimulationSetupError(f"unknown simulation engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if engine == "compiled":
        from .compiled import CompilerNotFound, find_compiler
        try:
            find_compiler()
        except CompilerNotFound as e:
            warnings.warn(f"{e} — falling back to the Python simulator (engine='pysim'), which is about "
                          f"100x slower", EngineFallbackWarning, stacklevel=3)
            return "pysim"
    return engine


class SimulatedPlatform:
    """The accelerator and its memory in simulation.

    ``latency``/``write_latency`` (cycles), ``beat_interval`` (read bandwidth: one beat per that many
    cycles), ``stall`` (random back-pressure probability) and ``seed`` configure the memory model;
    ``vcd`` writes a trace of the whole run (complete after :meth:`close`); ``progress`` shows
    progress bars on stderr — the compiled model's first build, then simulated cycles (None: only when
    stderr is a terminal; the cycle bar appears after a second, so short runs stay quiet).
    """

    def __init__(self, config: AcceleratorConfig | None = None, *, engine="compiled", mem_size=8 << 20, latency=8,
                 write_latency=1, beat_interval=1, stall=0.0, seed=1, watchdog_cycles=1 << 20, vcd=None,
                 progress=None):
        from scalenet.rtl.top import ScaleNet
        self.config = config or AcceleratorConfig()
        self.engine = _pick_engine(engine)
        if vcd is not None:
            try:
                open(vcd, "wb").close()
            except OSError as e:
                raise SimulationSetupError(f"cannot write the trace {vcd}: {e.strerror or e}") from None
        self.top = ScaleNet(self.config, watchdog_cycles=watchdog_cycles)
        options = dict(read_latency=latency, write_latency=write_latency, beat_interval=beat_interval,
                       stall=stall, seed=seed)
        self._progress = sys.stderr.isatty() if progress is None else bool(progress)
        if self.engine == "compiled":
            self._host = _CompiledHost(self.top, mem_size=mem_size, memory_options=options,
                                       data_bytes=self.config.data_bytes, vcd=vcd, progress=self._progress)
        else:
            from .pysim_engine import PysimHost
            self._host = PysimHost(self.top, mem_size=mem_size, memory_options=options, vcd=vcd)
        self.memory = self._host.memory
        self.vcd = vcd
        self._bar = None
        self._host.reset()

    @property
    def cycles(self):
        """Rising clock edges since the platform was made (reset included)."""
        return self._host.cycles

    @property
    def sim(self):
        """The compiled model (compiled engine only)."""
        return getattr(self._host, "sim", None)

    def write_reg(self, offset, value):
        setup = {"aw__addr": offset, "aw__valid": 1, "w__data": value & 0xFFFF_FFFF, "w__strb": 0xF,
                 "w__valid": 1, "b__ready": 1}
        resp, _ = self._host.transaction(setup, ("aw", "w"), "b")
        if resp != 0:
            raise RegisterAccessError(f"write to register offset 0x{offset:03X} answered {_RESP[resp]}")

    def read_reg(self, offset):
        resp, data = self._host.transaction({"ar__addr": offset, "ar__valid": 1, "r__ready": 1}, ("ar",), "r")
        if resp != 0:
            raise RegisterAccessError(f"read of register offset 0x{offset:03X} answered {_RESP[resp]}")
        return data

    def _advanced(self, cycles):
        if not self._progress:
            return
        if self._bar is None:
            from tqdm import tqdm
            self._bar = tqdm(desc=f"simulating ({self.engine})", unit="cycle", unit_scale=True, leave=False,
                             file=sys.stderr, delay=1.0, mininterval=0.5)
        self._bar.update(cycles)

    def run(self, cycles):
        self._host.run(cycles)
        self._advanced(cycles)

    def run_until_irq(self, max_cycles):
        ran = self._host.run_until_irq(max_cycles)
        self._advanced(ran)
        return ran

    def close(self):
        """Finish the trace and release the model."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._host is not None:
            self._host.close()
            self._host = None


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

    def close(self):
        self.platform.close()
