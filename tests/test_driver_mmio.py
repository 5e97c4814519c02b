"""The mmio transport's access sequence against the simulated RTL, and its device-node handling.

The register window is the simulated platform's AXI4-Lite port (what /dev/uioN maps on a Zynq); the DMA
buffer is a real file mapped by the transport, whose cache-sync hooks are the only way its bytes reach
the simulated memory at the buffer's physical address and back — so a missing or misplaced sync, a wrong
physical-address translation or a wrong register offset shows up as wrong outputs."""

import mmap
import struct
import subprocess
import sys

import numpy as np
import pytest

from scalenet import zoo
from scalenet.cosim.platform import SimulatedPlatform
from scalenet.driver.accelerator import Accelerator, open_target
from scalenet.driver.mmio_transport import MmioError, MmioTransport, UdmabufSync, parse_mmio_target
from scalenet.driver.transport import RegisterAccessError, config_registers
from scalenet.quant import quantize
from scalenet.rtl import regmap
from scalenet.rtl.config import AcceleratorConfig

CFG = AcceleratorConfig(rows=4, cols=4, max_width=32, max_channels=512, line_buffer_bytes=8192,
                        weight_buffer_bytes=64 * 1024)
PHYS = 0x4_0000
DMA_SIZE = 0x2_0000


class SimRegisters:
    """The SoC's register window: 32-bit accesses become AXI4-Lite transactions on the simulated RTL.
    A STATUS read lets 200 cycles pass first, as a CPU's poll loop would."""

    def __init__(self, platform, log):
        self.platform, self.log, self.size = platform, log, 0x1000

    def read32(self, offset):
        if offset == regmap.by_name("STATUS").offset:
            self.platform.run(200)
        value = self.platform.read_reg(offset)
        self.log.append(("read", offset, value))
        return value

    def write32(self, offset, value):
        self.log.append(("write", offset, value))
        self.platform.write_reg(offset, value)

    def close(self):
        pass


class SimCoherence:
    """The sync hooks of a cached DMA buffer: cleaning copies the CPU's view (the mapped file) to the
    device's memory at the physical address, invalidating copies the device's memory back."""

    def __init__(self, path, memory, log):
        self.path, self.memory, self.log = path, memory, log

    def _cpu_view(self):
        with open(self.path, "r+b") as f:
            return mmap.mmap(f.fileno(), DMA_SIZE)

    def for_device(self, offset, size):
        self.log.append(("for_device", offset, size))
        with self._cpu_view() as mm:
            self.memory.data[PHYS + offset:PHYS + offset + size] = np.frombuffer(mm, np.uint8)[offset:offset + size]

    def for_cpu(self, offset, size):
        self.log.append(("for_cpu", offset, size))
        with self._cpu_view() as mm:
            mm[offset:offset + size] = self.memory.data[PHYS + offset:PHYS + offset + size].tobytes()


def fake_sysfs(tmp_path, phys=PHYS, size=DMA_SIZE):
    d = tmp_path / "sys" / "class" / "u-dma-buf" / "udmabuf0"
    d.mkdir(parents=True)
    (d / "phys_addr").write_text(f"0x{phys:08x}\n")
    (d / "size").write_text(f"{size}\n")
    (tmp_path / "udmabuf0").write_bytes(b"\0" * size)
    return tmp_path / "sys", tmp_path / "udmabuf0"


def test_digits_cnn_through_mmio_against_the_simulated_rtl(tmp_path):
    sysfs, dma = fake_sysfs(tmp_path)
    platform = SimulatedPlatform(config=CFG, mem_size=1 << 20, latency=6)
    log = []
    try:
        transport = MmioTransport(SimRegisters(platform, log), str(dma), cache="sync", sysfs=sysfs,
                                  dma_sync=SimCoherence(dma, platform.memory, log))
        assert (transport.mem_base, transport.mem_size) == (PHYS, PHYS + DMA_SIZE)
        acc = Accelerator(transport, config=CFG, timeout=300.0)
        graph = zoo.build("digits_cnn")
        x = quantize(np.random.default_rng(3).uniform(0, 16, (2, *graph.input.shape)).astype(np.float32),
                     graph.input.q)
        loaded = acc.load(graph)
        assert loaded.base == PHYS and loaded.compiled.desc_addr >= PHYS
        assert platform.memory.data[:PHYS].max() == 0       # nothing below the buffer's physical address
        del log[:]
        out = acc.run(loaded, x)["fc"]
        np.testing.assert_array_equal(out, graph.run(x)["fc"])
    finally:
        platform.close()

    # The access sequence of a frame: input cleaned to the device before START, output invalidated after
    # the final STATUS read, registers at the map's offsets with physical addresses.
    reg = {r.offset: r.name for r in regmap.REGISTERS}
    events = [(e[0], reg.get(e[1], e[1])) if e[0] in ("read", "write") else e for e in log]
    start = next(i for i, e in enumerate(log) if e[0] == "write" and reg[e[1]] == "CTRL" and e[2] & 1)
    first_device = next(i for i, e in enumerate(log) if e[0] == "for_device")
    assert first_device < start
    assert events[start - 3:start] == [("write", "DESC_ADDR"), ("write", "DESC_COUNT"), ("write", "IRQ_STATUS")]
    assert log[start - 3][2] == loaded.compiled.desc_addr
    done = next(i for i in range(start, len(log)) if log[i][0] == "read" and reg[log[i][1]] == "STATUS"
                and not regmap.unpack("STATUS", log[i][2])["busy"])
    cpu = [e for e in log[done:] if e[0] == "for_cpu"]
    fc = loaded.compiled.placements["fc"]
    assert cpu and cpu[0][1:] == (fc.addr - PHYS, fc.nbytes)


def test_file_backed_windows_uncached(tmp_path):
    """The real mmap code paths on plain files: /dev/mem-style register base, O_SYNC buffer, bounds."""
    sysfs, dma = fake_sysfs(tmp_path, phys=0x1000_0000, size=8192)
    regfile = tmp_path / "mem"
    base = 0x2000 + 0x40                                   # not page aligned: the window starts inside a page
    regfile.write_bytes(b"\0" * 0x4000)
    with open(regfile, "r+b") as f:
        f.seek(base)
        f.write(struct.pack("<I", regmap.ID_MAGIC))
    t = MmioTransport(f"{regfile}", str(dma), reg_base=base, reg_size=0x100, sysfs=sysfs)
    try:
        assert t.read_reg(0) == regmap.ID_MAGIC
        t.write_reg(0x24, 0x1234_5678)
        with pytest.raises(RegisterAccessError, match="not word aligned"):
            t.read_reg(0x22)
        with pytest.raises(RegisterAccessError, match="outside"):
            t.write_reg(0x100, 1)
        t.write_mem(0x1000_0003, b"hello")
        assert t.read_mem(0x1000_0001, 8) == b"\0\0hello\0"
        with pytest.raises(ValueError, match="outside the DMA buffer"):
            t.read_mem(0x1000_0000 + 8190, 4)
        with pytest.raises(ValueError, match="outside the DMA buffer"):
            t.write_mem(0x0FFF_FFFF, b"x")
    finally:
        t.close()
    raw = regfile.read_bytes()
    assert struct.unpack_from("<I", raw, base + 0x24)[0] == 0x1234_5678
    assert dma.read_bytes()[3:8] == b"hello"


def test_uio_sysfs_sync_attributes_and_bad_nodes(tmp_path):
    sysfs, dma = fake_sysfs(tmp_path)
    uio = tmp_path / "uio0"
    uio.write_bytes(b"\0" * 4096)
    maps = sysfs / "class" / "uio" / "uio0" / "maps" / "map0"
    maps.mkdir(parents=True)
    (maps / "size").write_text("0x1000\n")
    t = MmioTransport(str(uio), str(dma), cache="sync", sysfs=sysfs)
    try:
        assert t.reg_size == 0x1000 and isinstance(t.dma_sync, UdmabufSync)
        t.write_mem(PHYS + 100, b"abc")
        attrs = sysfs / "class" / "u-dma-buf" / "udmabuf0"
        assert [(attrs / a).read_text().strip() for a in ("sync_offset", "sync_size", "sync_direction",
                                                          "sync_for_device")] == ["100", "3", "1", "1"]
        assert t.read_mem(PHYS + 99, 5) == b"\0abc\0"
        assert (attrs / "sync_for_cpu").read_text().strip() == "1"
        assert (attrs / "sync_direction").read_text().strip() == "2"
    finally:
        t.close()
    with pytest.raises(MmioError, match="phys_addr does not exist"):
        MmioTransport(str(uio), str(tmp_path / "udmabuf7"), sysfs=sysfs)
    with pytest.raises(MmioError, match="map0/size does not exist"):
        MmioTransport(str(tmp_path / "uio3"), str(dma), sysfs=sysfs)
    with pytest.raises(MmioError, match="give the register base"):
        MmioTransport("/dev/mem", str(dma), sysfs=sysfs)
    with pytest.raises(MmioError, match="cache must be"):
        MmioTransport(str(uio), str(dma), sysfs=sysfs, cache="wb")
    assert parse_mmio_target("/dev/mem@0x43C00000,/dev/udmabuf0") == {
        "regs": "/dev/mem", "reg_base": 0x43C0_0000, "dma": "/dev/udmabuf0"}
    with pytest.raises(MmioError, match="expected REGS,DMA"):
        parse_mmio_target("/dev/uio0")


def test_open_target_and_cli_info_on_an_mmio_target(tmp_path, monkeypatch):
    """``scalenet info --target mmio:...`` reads the identity through the same code (registers from a file
    holding what the RTL's read-only registers hold)."""
    sysfs, dma = fake_sysfs(tmp_path)
    regfile = tmp_path / "mem"
    words = np.zeros(0x1000 // 4, np.uint32)
    values = {"ID": regmap.ID_MAGIC, "VERSION": regmap.pack("VERSION", major=regmap.VERSION[0],
                                                            minor=regmap.VERSION[1], patch=regmap.VERSION[2]),
              **config_registers(CFG)}
    for name, value in values.items():
        words[regmap.by_name(name).offset // 4] = value
    regfile.write_bytes(words.tobytes())
    target = f"mmio:{regfile}@0x0,{dma}"
    monkeypatch.setenv("SCALENET_SYSFS", str(sysfs))
    acc = open_target(target)
    assert acc.config == AcceleratorConfig(rows=4, cols=4, max_width=32, max_channels=512) and \
        acc.transport.mem_base == PHYS
    acc.close()
    proc = subprocess.run([sys.executable, "-m", "scalenet", "info", "--target", target, "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert '"id": "0x53434E54"' in proc.stdout and '"rows": 4' in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "scalenet", "info", "--target", "mmio:/dev/uio0"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "expected REGS,DMA" in proc.stderr
