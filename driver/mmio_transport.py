"""The mmio transport: Linux on an FPGA SoC (Zynq/PYNQ-class) reaching the accelerator directly.

Registers are a memory-mapped window: a UIO device (``/dev/uioN``, its size from sysfs) or ``/dev/mem``
at a physical base; every access is one aligned 32-bit load or store (a numpy ``uint32`` element, never
a byte copy: the ``*_LO``/``*_HI`` counter pair and W1C registers must see whole words). The DMA memory
is a u-dma-buf buffer (``/dev/udmabufN``): mapped into the process, its physical address (sysfs
``phys_addr``) is what the accelerator sees, so descriptors are compiled at that base
(:attr:`MmioTransport.mem_base`). Device addresses ``[mem_base, mem_size)`` translate to buffer offsets.

Cache coherence: ``cache="uncached"`` opens the buffer with ``O_SYNC`` (an uncached mapping) and
``msync``s after writes; ``cache="sync"`` keeps it cached and hands u-dma-buf the range to clean before
the device reads (``sync_for_device`` after every write) and to invalidate before the CPU reads
(``sync_for_cpu`` before every read). Both the register window and the sync hooks are objects that can
be replaced (``regs=``/``dma_sync=``), which is how the tests run this transport's access sequence
against the simulated RTL.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

from scalenet.errors import ScalenetError

from .transport import RegisterAccessError, Transport

__all__ = ["MmioError", "RegisterWindow", "UdmabufSync", "MmioTransport", "parse_mmio_target"]

CACHE_MODES = ("uncached", "sync")
DMA_TO_DEVICE, DMA_FROM_DEVICE = 1, 2


class MmioError(ScalenetError):
    """A device node or its sysfs description is missing or unusable."""


def _read_sysfs(path: Path, what: str) -> int:
    try:
        return int(path.read_text().strip(), 0)
    except FileNotFoundError:
        raise MmioError(f"{what}: {path} does not exist (is the driver loaded?)") from None
    except (OSError, ValueError) as e:
        raise MmioError(f"{what}: cannot read a number from {path}: {e}") from None


class RegisterWindow:
    """32-bit registers in a mapped window (``mm``: an mmap or any writable buffer) at ``offset``."""

    def __init__(self, mm, size, offset=0):
        self._mm = mm
        self.size = size
        self._words = np.frombuffer(mm, dtype=np.uint32, count=size // 4, offset=offset)

    def read32(self, offset: int) -> int:
        return int(self._words[offset >> 2])

    def write32(self, offset: int, value: int):
        self._words[offset >> 2] = value

    def close(self):
        self._words = None
        if isinstance(self._mm, mmap.mmap):
            self._mm.close()


class UdmabufSync:
    """u-dma-buf's cache maintenance through its sysfs attributes (``/sys/class/u-dma-buf/NAME``)."""

    def __init__(self, sysfs_dir):
        self.dir = Path(sysfs_dir)

    def _sync(self, attr, offset, size, direction):
        try:
            for name, value in (("sync_offset", offset), ("sync_size", size), ("sync_direction", direction),
                                (attr, 1)):
                (self.dir / name).write_text(f"{value}\n")
        except OSError as e:
            raise MmioError(f"u-dma-buf cache sync through {self.dir} failed: {e}") from None

    def for_device(self, offset, size):
        """Clean the CPU cache over ``[offset, offset+size)`` so the device reads what the CPU wrote."""
        self._sync("sync_for_device", offset, size, DMA_TO_DEVICE)

    def for_cpu(self, offset, size):
        """Invalidate the CPU cache over the range so the CPU reads what the device wrote."""
        self._sync("sync_for_cpu", offset, size, DMA_FROM_DEVICE)


def parse_mmio_target(arg: str) -> dict:
    """``/dev/uio0,/dev/udmabuf0`` or ``/dev/mem@0x43C00000,/dev/udmabuf0`` -> MmioTransport arguments."""
    regs, comma, dma = arg.partition(",")
    if not comma or not regs or not dma:
        raise MmioError(f"mmio target {arg!r}: expected REGS,DMA such as /dev/uio0,/dev/udmabuf0 "
                        f"or /dev/mem@0x43C00000,/dev/udmabuf0")
    out = {"regs": regs, "dma": dma}
    path, at, base = regs.rpartition("@")
    if at:
        try:
            out.update(regs=path, reg_base=int(base, 0))
        except ValueError:
            raise MmioError(f"mmio target {arg!r}: {base!r} is not a register base address") from None
    return out


class MmioTransport(Transport):
    """Registers by mmap of a UIO or /dev/mem window, memory by mmap of a u-dma-buf buffer.

    ``regs``: a ``/dev/uioN`` path (window size from sysfs ``maps/map0/size``), ``/dev/mem`` (or another
    file) with ``reg_base`` (and ``reg_size``), or a :class:`RegisterWindow`-like object.
    ``dma``: a ``/dev/udmabufN`` path (``phys_addr`` and ``size`` from sysfs unless given).
    ``sysfs``: the sysfs root (``$SCALENET_SYSFS`` or ``/sys``).
    """

    def __init__(self, regs="/dev/uio0", dma="/dev/udmabuf0", *, reg_base=None, reg_size=0x1000,
                 phys_addr=None, dma_size=None, cache="uncached", dma_sync=None, sysfs=None):
        if cache not in CACHE_MODES:
            raise MmioError(f"cache must be one of {', '.join(CACHE_MODES)}, not {cache!r}")
        self.cache = cache
        self.sysfs = Path(sysfs or os.environ.get("SCALENET_SYSFS", "/sys"))
        self._regs = self._open_regs(regs, reg_base, reg_size)
        self.reg_size = self._regs.size
        name = Path(str(dma)).name
        sysdir = self.sysfs / "class" / "u-dma-buf" / name
        self.phys_addr = phys_addr if phys_addr is not None else _read_sysfs(sysdir / "phys_addr", f"{dma} physical address")
        size = dma_size if dma_size is not None else _read_sysfs(sysdir / "size", f"{dma} size")
        flags = os.O_RDWR | (os.O_SYNC if cache == "uncached" else 0)
        try:
            fd = os.open(dma, flags)
        except OSError as e:
            self._regs.close()
            raise MmioError(f"cannot open the DMA buffer {dma}: {e.strerror}") from None
        try:
            self._dma = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except (OSError, ValueError) as e:
            self._regs.close()
            raise MmioError(f"cannot map {size} bytes of {dma}: {e}") from None
        finally:
            os.close(fd)
        self._buf = np.frombuffer(self._dma, dtype=np.uint8)
        self.dma_sync = dma_sync if dma_sync is not None else (UdmabufSync(sysdir) if cache == "sync" else None)
        self.mem_base = self.phys_addr
        self.mem_size = self.phys_addr + size

    def _open_regs(self, regs, reg_base, reg_size):
        if not isinstance(regs, (str, os.PathLike)):
            return regs
        path = str(regs)
        name = Path(path).name
        offset = 0
        if name.startswith("uio") and reg_base is None:
            size = _read_sysfs(self.sysfs / "class" / "uio" / name / "maps" / "map0" / "size", f"{path} map0 size")
            map_at = 0                                  # UIO: map N is at offset N * page size
        else:
            if reg_base is None:
                raise MmioError(f"{path}: give the register base address (e.g. {path}@0x43C00000)")
            size = reg_size
            map_at = reg_base & ~(mmap.PAGESIZE - 1)
            offset = reg_base - map_at
        try:
            fd = os.open(path, os.O_RDWR | os.O_SYNC)
        except OSError as e:
            raise MmioError(f"cannot open the register window {path}: {e.strerror}") from None
        try:
            mm = mmap.mmap(fd, offset + size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=map_at)
        except (OSError, ValueError) as e:
            raise MmioError(f"cannot map {size} bytes of registers from {path}: {e}") from None
        finally:
            os.close(fd)
        return RegisterWindow(mm, size, offset)

    # -- registers -------------------------------------------------------------------------------------
    def _check_reg(self, offset, what):
        if offset & 3 or not 0 <= offset < self.reg_size:
            raise RegisterAccessError(f"{what} register offset 0x{offset:03X}: outside the {self.reg_size}-byte "
                                      f"window or not word aligned")

    def read_reg(self, offset):
        self._check_reg(offset, "read of")
        return self._regs.read32(offset)

    def write_reg(self, offset, value):
        self._check_reg(offset, "write to")
        self._regs.write32(offset, value & 0xFFFF_FFFF)

    # -- memory ----------------------------------------------------------------------------------------
    def _offset(self, addr, length, what):
        if addr < self.mem_base or addr + length > self.mem_size:
            raise ValueError(f"{what} of {length} bytes at 0x{addr:x} is outside the DMA buffer "
                             f"[0x{self.mem_base:x}, 0x{self.mem_size:x})")
        return addr - self.mem_base

    def write_mem(self, addr, data):
        data = data.view(np.uint8).reshape(-1) if isinstance(data, np.ndarray) else np.frombuffer(bytes(data), np.uint8)
        off = self._offset(addr, data.size, "write")
        self._buf[off:off + data.size] = data
        if self.dma_sync is not None:
            self.dma_sync.for_device(off, data.size)
        else:
            self._dma.flush()                           # msync: the writes land before the START write

    def read_mem(self, addr, length):
        off = self._offset(addr, length, "read")
        if self.dma_sync is not None:
            self.dma_sync.for_cpu(off, length)
        return self._buf[off:off + length].tobytes()

    def close(self):
        if self._regs is not None:
            self._regs.close()
            self._regs = None
        if self._dma is not None:
            self._buf = None
            self._dma.close()
            self._dma = None
