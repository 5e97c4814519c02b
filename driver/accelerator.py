"""The driver API: one way to run networks on any target (model, simulation, board).

``Accelerator`` talks to a device only through a :class:`~scalenet.driver.transport.Transport`, reads
register names from the single register map, checks the device's identity and configuration before
loading anything, and never leaves a device busy: on a timeout or an error status it aborts, soft-resets
and raises an exception that names the status, the error code and the layer.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from dataclasses import dataclass

import numpy as np

from scalenet.errors import ScalenetError
from scalenet.ir import Graph
from scalenet.rtl import regmap
from scalenet.rtl.config import AcceleratorConfig
from scalenet.rtl.regmap import ErrorCode

from .compiler import CompiledNetwork, compile_graph
from .transport import ModelTransport, Transport, config_registers

__all__ = ["AcceleratorError", "AcceleratorTimeout", "DeviceMismatch", "Accelerator", "LoadedNetwork", "open_target"]


class AcceleratorError(ScalenetError):
    """The device reported an error; ``code`` is an ErrorCode, ``layer`` the failing layer's name."""

    def __init__(self, message, code=None, layer=None):
        super().__init__(message)
        self.code, self.layer = code, layer


class AcceleratorTimeout(AcceleratorError):
    """The device did not finish in time; it was aborted and reset."""


class DeviceMismatch(ScalenetError):
    """The device is not a SCALENet, or not configured as the compiler expects."""


def _reg(name):
    return regmap.by_name(name).offset


@dataclass
class LoadedNetwork:
    compiled: CompiledNetwork
    base: int

    @property
    def graph(self) -> Graph:
        return self.compiled.graph


class Accelerator:
    """A SCALENet device behind a transport.

    ``timeout`` is in seconds of wall time for board transports; simulated transports also bound the
    device cycles through ``max_polls``.
    """

    def __init__(self, transport: Transport, *, config: AcceleratorConfig | None = None, timeout=10.0,
                 poll_cycles=1000, max_polls=None):
        self.transport = transport
        self.timeout = timeout
        self.poll_cycles = poll_cycles
        self.max_polls = max_polls
        self._lock = threading.Lock()
        self._pool = None
        self.info = self.identify()
        self.config = config or self.info["config"]
        expected = config_registers(self.config)
        if (self.info["raw"]["CONFIG0"], self.info["raw"]["CONFIG1"]) != (expected["CONFIG0"], expected["CONFIG1"]):
            raise DeviceMismatch(f"device is configured as {self.info['config'].describe()}, "
                                 f"the compiler expects {self.config.describe()}")

    # -- identity ------------------------------------------------------------------------------------
    def read(self, name) -> int:
        return self.transport.read_reg(_reg(name))

    def write(self, name, value):
        self.transport.write_reg(_reg(name), value)

    def identify(self) -> dict:
        ident = self.read("ID")
        if ident != regmap.ID_MAGIC:
            raise DeviceMismatch(f"ID register reads 0x{ident:08X}, not SCALENet's 0x{regmap.ID_MAGIC:08X}")
        version = regmap.unpack("VERSION", self.read("VERSION"))
        c0 = regmap.unpack("CONFIG0", self.read("CONFIG0"))
        c1 = regmap.unpack("CONFIG1", self.read("CONFIG1"))
        base = AcceleratorConfig()
        config = AcceleratorConfig(rows=c0["rows"], cols=c0["cols"], max_kernel=c0["max_kernel"],
                                   data_bytes=c0["data_bytes"], max_width=c1["max_width"],
                                   max_channels=c1["max_channels"], max_stride=base.max_stride,
                                   max_pad=base.max_pad, line_buffer_bytes=base.line_buffer_bytes,
                                   weight_buffer_bytes=base.weight_buffer_bytes)
        return {"id": ident, "version": f"{version['major']}.{version['minor']}.{version['patch']}",
                "config": config, "raw": {"CONFIG0": self.read("CONFIG0"), "CONFIG1": self.read("CONFIG1")}}

    # -- loading and running -------------------------------------------------------------------------
    def load(self, graph: Graph, *, base=None) -> LoadedNetwork:
        """Compile (all limits checked before anything is sent) and write the network's memory image.

        ``base`` defaults to the transport's ``mem_base`` (0, or the physical address of an mmio DMA buffer)."""
        if base is None:
            base = getattr(self.transport, "mem_base", 0)
        compiled = compile_graph(graph, self.config, base=base)
        if base + compiled.size > self.transport.mem_size:
            raise DeviceMismatch(f"{graph.name} needs {compiled.size} bytes of device memory from 0x{base:x}; "
                                 f"the device has {self.transport.mem_size}")
        self.transport.write_mem(base, compiled.image)
        return LoadedNetwork(compiled, base)

    def run(self, loaded: LoadedNetwork, x) -> dict:
        """Run frames (one sample or a batch of the input shape) and return {output: batched array}."""
        graph = loaded.graph
        batch = graph.check_input(x)
        outs = {o: [] for o in graph.outputs}
        with self._lock:
            for frame in batch:
                self._run_frame(loaded, frame)
                for o in graph.outputs:
                    outs[o].append(self._read_output(loaded, o))
        return {o: np.stack(v) for o, v in outs.items()}

    def run_async(self, loaded: LoadedNetwork, x, callback=None) -> concurrent.futures.Future:
        """Run in a background thread; the future holds the outputs (``callback(outputs)`` too)."""
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="scalenet")
        future = self._pool.submit(self.run, loaded, x)
        if callback is not None:
            future.add_done_callback(lambda f: f.exception() is None and callback(f.result()))
        return future

    def counters(self) -> dict:
        out = {}
        for name in ("PERF_CYCLES", "PERF_MAC_ACTIVE", "PERF_DMA_RD_BYTES", "PERF_DMA_WR_BYTES", "PERF_DMA_STALL"):
            out[name.removeprefix("PERF_").lower()] = self.read(f"{name}_LO") | (self.read(f"{name}_HI") << 32)
        return out

    def clear_counters(self):
        self.write("PERF_CTRL", regmap.pack("PERF_CTRL", clear=1))

    def abort_and_reset(self):
        self.write("CTRL", regmap.pack("CTRL", abort=1))
        self.write("CTRL", regmap.pack("CTRL", soft_reset=1))

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self.transport.close()

    # -- internals -----------------------------------------------------------------------------------
    def _run_frame(self, loaded, frame):
        net = loaded.compiled
        addr, region = net.encode_input(frame)
        self.transport.write_mem(addr, region)
        status = regmap.unpack("STATUS", self.read("STATUS"))
        if status["busy"]:
            raise AcceleratorError("device is busy with another run; abort it first")
        self.write("DESC_ADDR", net.desc_addr)
        self.write("DESC_COUNT", net.desc_count)
        self.write("IRQ_STATUS", 0xFFFF_FFFF)
        self.write("CTRL", regmap.pack("CTRL", start=1))
        self._wait(loaded)

    def _wait(self, loaded):
        deadline = time.monotonic() + self.timeout
        polls = 0
        while True:
            status = regmap.unpack("STATUS", self.read("STATUS"))
            if not status["busy"]:
                break
            polls += 1
            if time.monotonic() > deadline or (self.max_polls is not None and polls > self.max_polls):
                layer = self.read("LAYER") & 0xFFFF
                self.abort_and_reset()
                raise AcceleratorTimeout(
                    f"{loaded.graph.name}: no completion within {self.timeout:g} s "
                    f"(still busy in layer {self._layer_name(loaded, layer)}); the device was aborted and reset",
                    code=ErrorCode.WATCHDOG, layer=self._layer_name(loaded, layer))
            self.transport.wait(self.poll_cycles)
        if status["error"]:
            err = regmap.unpack("ERROR", self.read("ERROR"))
            code = ErrorCode(err["code"]) if err["code"] in ErrorCode._value2member_map_ else err["code"]
            layer = self._layer_name(loaded, err["layer"])
            self.write("CTRL", regmap.pack("CTRL", soft_reset=1))
            raise AcceleratorError(f"{loaded.graph.name}: device error {getattr(code, 'name', code)} in layer "
                                   f"{layer} (descriptor {err['layer']}); the device was reset", code=code, layer=layer)
        if not status["done"]:
            raise AcceleratorError(f"{loaded.graph.name}: device stopped without done or error (STATUS={status})")

    @staticmethod
    def _layer_name(loaded, index):
        names = loaded.compiled.layer_of
        return names[index] if 0 <= index < len(names) else f"#{index}"

    def _read_output(self, loaded, name):
        p = loaded.compiled.placements[name]
        return loaded.compiled.decode_tensor(name, np.frombuffer(self.transport.read_mem(p.addr, p.nbytes), np.uint8))


TARGETS = ("model", "sim")


def open_target(target: str = "model", *, config: AcceleratorConfig | None = None, engine: str = "compiled",
                vcd=None, progress=None, **kwargs) -> Accelerator:
    """Open a device: ``"model"`` (the in-process transaction-level device) or ``"sim"`` (the RTL with an
    AXI memory in a simulator: ``engine`` ``"compiled"`` (CXXRTL; falls back to pysim with a warning when
    no C++ compiler exists) or ``"pysim"`` (Amaranth's simulator); ``vcd`` writes a trace of the run,
    complete once the accelerator is closed; ``progress`` shows a progress bar, None: on a terminal).
    Board transports (``serial:PORT``, ``mmio:DEVICE``) follow."""
    kind, _, arg = target.partition(":")
    if kind == "model":
        if vcd is not None:
            raise ScalenetError("a VCD trace needs the RTL: use target 'sim'")
        from .transport import ModelDevice
        return Accelerator(ModelTransport(ModelDevice(config)), config=config, **kwargs)
    if kind == "sim":
        from scalenet.cosim.platform import SimTransport
        kwargs.setdefault("poll_cycles", 2000)
        kwargs.setdefault("timeout", 600.0 if engine == "compiled" else 3600.0)
        transport = SimTransport(config=config, engine=engine, vcd=vcd, progress=progress)
        try:
            return Accelerator(transport, config=config, **kwargs)
        except BaseException:
            transport.close()
            raise
    if kind in ("serial", "mmio"):
        if vcd is not None:
            raise ScalenetError("a VCD trace needs the RTL: use target 'sim'")
        transport = _open_board(kind, arg, target)
        try:
            return Accelerator(transport, config=config, **kwargs)
        except BaseException:
            transport.close()
            raise
    raise ScalenetError(f"unknown target {target!r}: available targets are {', '.join(TARGETS)}, "
                        f"serial:PORT[@BAUD], mmio:REGS,DMA")


def _open_board(kind, arg, target):
    """The transport of a board target: ``serial:PORT[@BAUD]`` or ``mmio:REGS,DMA``."""
    if not arg:
        example = "serial:/dev/ttyUSB0@115200" if kind == "serial" else "mmio:/dev/uio0,/dev/udmabuf0"
        raise ScalenetError(f"target {target!r} names no device: e.g. {example}")
    if kind == "serial":
        from .serial_transport import SerialTransport, parse_port
        port, baud = parse_port(arg)
        return SerialTransport(port, baud or 115_200)
    from .mmio_transport import MmioTransport, parse_mmio_target
    return MmioTransport(**parse_mmio_target(arg))
