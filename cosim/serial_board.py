"""A simulated board on a pseudo-terminal: BoardSoC (UART bridge + SCALENet) in the compiled engine.

The host side cannot tell it from a USB-serial board: it opens :attr:`SimulatedBoard.port` (a pty slave)
with pyserial and speaks the bridge protocol, byte for byte through the real UART, bridge, arbiter and
accelerator gateware; the memory behind the SoC's external AXI4 port is the compiled AXI memory model.
A thread pumps bytes between the pty master and the C-side UART line model (cosim/uart_model.cc),
clocking the design while the line is busy or the bridge holds a frame (the SoC's ``active`` output, which
also covers a partial frame until the bridge's inter-byte timeout drops it) and ``idle_cycles`` after
that, then sleeps until the host writes again. So an idle board costs no CPU and the accelerator advances
only while the host talks to it (a run progresses as the driver polls STATUS): the cycles that pass
between two requests are bounded, which makes tests that race the host against a run deterministic.
"""

from __future__ import annotations

import ctypes
import os
import select
import threading
import time
import tty

from scalenet.rtl.config import AcceleratorConfig

from .compiled import CompiledSimulator

__all__ = ["SimulatedBoard"]


class SimulatedBoard:
    """BoardSoC with ``mem_size`` bytes of simulated memory; the UART at ``divisor`` cycles per bit."""

    def __init__(self, config: AcceleratorConfig | None = None, *, mem_size=1 << 20, divisor=4, latency=6,
                 stall=0.0, seed=1, timeout_cycles=None, max_payload=256, idle_cycles=None,
                 watchdog_cycles=1 << 20, nominal_baud=115_200):
        from scalenet.rtl.soc import BoardSoC
        self.config = config or AcceleratorConfig()
        self.divisor = divisor
        timeout_cycles = timeout_cycles or 16 * 10 * divisor
        self.soc = BoardSoC(self.config, memory="external", mem_bytes=mem_size, clk_hz=nominal_baud * divisor,
                            divisor=divisor, timeout_cycles=timeout_cycles, max_payload=max_payload,
                            watchdog_cycles=watchdog_cycles)
        self.idle_cycles = idle_cycles or 4 * 10 * divisor
        self.sim = CompiledSimulator(self.soc)
        self.memory = self.sim.attach_axi_memory("mem", mem_size, data_bytes=self.config.data_bytes,
                                                 latency=latency, stall=stall, seed=seed)
        lib = self.sim._lib
        vp, u64 = ctypes.c_void_p, ctypes.c_uint64
        for name, restype, argtypes in (
                ("scn_uart_create", vp, [vp, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint32]),
                ("scn_uart_destroy", None, [vp]),
                ("scn_uart_push", None, [vp, ctypes.c_char_p, ctypes.c_size_t]),
                ("scn_uart_pop", ctypes.c_size_t, [vp, ctypes.c_char_p, ctypes.c_size_t]),
                ("scn_uart_busy", u64, [vp]),
                ("scn_uart_framing_errors", u64, [vp]),
                ("scn_uart_run", u64, [vp, vp, u64, u64])):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
        self._lib = lib
        self.sim.set("uart_rx", 1)
        self.sim.set("rst", 1)
        self.sim.tick(2)
        self.sim.set("rst", 0)
        self.sim.tick(1)
        self._uart = lib.scn_uart_create(self.sim._handle, b"uart_rx", b"uart_tx", divisor)
        if not self._uart:
            raise RuntimeError("the compiled BoardSoC has no uart_rx/uart_tx ports")
        self._buf = ctypes.create_string_buffer(4096)
        self._lock = threading.Lock()          # the simulator belongs to the pump thread; close() waits
        self._stop = threading.Event()
        self._master = self._slave = None
        self.port = None
        self.reconnect()
        self._thread = threading.Thread(target=self._pump, name="scalenet-board", daemon=True)
        self._thread.start()

    # -- the line --------------------------------------------------------------------------------------
    def reconnect(self) -> str:
        """Plug the board in (again): a new pseudo-terminal; returns its path (also :attr:`port`)."""
        master, slave = os.openpty()
        tty.setraw(slave)                      # no echo or newline translation before pyserial opens it
        os.set_blocking(master, False)
        with self._lock:
            self._close_pty()
            self._master, self._slave = master, slave
            self._pending = b""
            self.port = os.ttyname(slave)
        return self.port

    def disconnect(self):
        """Unplug the board: the host's open port reads end of file / EIO from now on."""
        with self._lock:
            self._close_pty()

    def _close_pty(self):
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None
        self.port = None

    @property
    def cycles(self) -> int:
        return self.sim.cycles

    @property
    def framing_errors(self) -> int:
        """Bytes from the design's tx pin whose stop bit was low (0 on a healthy design)."""
        return self._lib.scn_uart_framing_errors(self._uart)

    def _pump(self):
        lib, uart, platform = self._lib, self._uart, self.sim._platform
        idle = self.idle_cycles
        while not self._stop.is_set():
            fd = self._master
            # The line is busy or the bridge holds a frame (``active``); or they were a moment ago.
            working = lib.scn_uart_busy(uart) or self.sim.get("active")
            busy = working or idle < self.idle_cycles
            if fd is None:
                time.sleep(0.01)
                continue
            try:
                readable, _, _ = select.select([fd], [], [], 0 if busy else 0.05)
            except (OSError, ValueError):
                continue                       # closed under us: disconnect()
            with self._lock:
                if fd != self._master:
                    continue
                if readable:
                    try:
                        data = os.read(fd, 4096)
                    except (BlockingIOError, OSError):
                        data = b""
                    if data:
                        lib.scn_uart_push(uart, data, len(data))
                        idle = 0
                if not (busy or readable):
                    continue
                chunk = 4096 if working or readable else self.idle_cycles - idle
                ran = lib.scn_uart_run(platform, uart, chunk, 3 * 10 * self.divisor)
                self.sim.cycles += ran
                n = lib.scn_uart_pop(uart, self._buf, len(self._buf))
                if n or lib.scn_uart_busy(uart) or self.sim.get("active"):
                    self._pending += self._buf.raw[:n]
                    idle = 0
                else:
                    idle += ran
                if self._pending:
                    try:
                        sent = os.write(fd, self._pending)
                        self._pending = self._pending[sent:]
                    except BlockingIOError:
                        pass
                    except OSError:
                        self._pending = b""

    def close(self):
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        with self._lock:
            self._close_pty()
        self._lib.scn_uart_destroy(self._uart)
        self.sim.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
