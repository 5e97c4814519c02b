"""Deployment targets: the CPU, the accelerator (array configuration, clock, device) and the link between.

A :class:`Target` holds only names and numbers; the models (:mod:`.cpu_model`, :mod:`.accel_model`,
:mod:`.power`) turn them into costs. Power coefficients are not repeated here: ``device``, ``cpu`` and
``link`` are keys into ``data/power.json``.

- ``zedboard``: Zynq-7020, 2x Cortex-A9 @ 667 MHz, the accelerator in the PL @ 100 MHz on a 64-bit HP
  port; CPU and accelerator share the DDR3, so a hand-over costs a cache clean/invalidate.
- ``pynq-z2``: the same SoC with the PS at 650 MHz (the PYNQ-Z2 default).
- ``arty-a7-100``: Artix-7 100T with a MicroBlaze soft CPU @ 100 MHz next to the accelerator, both on
  the board's DDR3 (MIG): the self-contained embedded variant (a host-attached Arty would look like
  ``ulx3s-85f``).
- ``ulx3s-85f``: ECP5-85F @ 50 MHz, accelerator only, attached to the host over the FT231X USB-UART
  (300 kB/s): software layers run on the host, every hand-over crosses the slow link.
- ``host``: this machine's cores (model fitted by benchmarks/calibrate_cpu_model.py) and the accelerator
  in the compiled simulator, costed at 100 MHz. The simulator runs on these cores, so a hand-over from it
  evicts the software layers' caches (``accel_on_cpu``: the CPU model's re-warm cost applies).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from scalenet.errors import ScalenetError
from scalenet.rtl.config import AcceleratorConfig

__all__ = ["Target", "TARGETS", "get_target"]


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    cpu: str                          #: CPU model / power.json cpus key
    cpu_cores: int
    cpu_clock_hz: float
    accel: AcceleratorConfig
    accel_clock_hz: float
    device: str                       #: power.json devices key
    accel_mem_bytes_per_s: float      #: sustained DMA bandwidth the accelerator sees
    accel_mem_latency_cycles: int     #: accelerator clock cycles from AXI read address to first data
    link: str | None                  #: power.json links key (None: zero-copy)
    memory: str = "ddr3_j_per_byte"   #: power.json memory key for DMA energy
    accel_gateable: bool = False      #: the PL/accelerator can be powered down when unused
    accel_on_cpu: bool = False        #: the accelerator is simulated on the CPU (evicts its caches)
    notes: dict = field(default_factory=dict)

    def with_config(self, config: AcceleratorConfig | None = None, **changes) -> "Target":
        return replace(self, accel=config or self.accel, **changes)


_ZYNQ = dict(cpu="cortex-a9", cpu_cores=2, accel=AcceleratorConfig(), accel_clock_hz=100e6, device="xc7z020",
             # One 64-bit HP port at 100 MHz is 800 MB/s; UG585 measures ~70-90 % of that sustained.
             accel_mem_bytes_per_s=0.8 * 8 * 100e6, accel_mem_latency_cycles=20,
             link="zynq_cache_maintenance", accel_gateable=True)

TARGETS = {
    "zedboard": Target("zedboard", "Avnet ZedBoard: Zynq-7020, 2x Cortex-A9 @ 667 MHz + SCALENet in the PL @ 100 MHz",
                       cpu_clock_hz=667e6, **_ZYNQ),
    "pynq-z2": Target("pynq-z2", "TUL PYNQ-Z2: Zynq-7020, 2x Cortex-A9 @ 650 MHz + SCALENet in the PL @ 100 MHz",
                      cpu_clock_hz=650e6, **_ZYNQ),
    "arty-a7-100": Target(
        "arty-a7-100", "Digilent Arty A7-100T: MicroBlaze @ 100 MHz + SCALENet @ 100 MHz on the MIG DDR3",
        cpu="microblaze", cpu_cores=1, cpu_clock_hz=100e6, accel=AcceleratorConfig(), accel_clock_hz=100e6,
        device="xc7a100t", accel_mem_bytes_per_s=0.6 * 8 * 100e6, accel_mem_latency_cycles=30,
        link="microblaze_cache_maintenance", accel_gateable=False),
    "ulx3s-85f": Target(
        "ulx3s-85f", "Radiona ULX3S 85F: SCALENet on an ECP5-85F @ 50 MHz, host over the FT231X USB-UART",
        cpu="host", cpu_cores=2, cpu_clock_hz=0.0, accel=AcceleratorConfig(), accel_clock_hz=50e6,
        device="lfe5u-85f",
        # 16-bit SDR SDRAM @ 100 MHz behind a bridge: ~200 MB/s peak, ~60 % sustained.
        accel_mem_bytes_per_s=120e6, accel_mem_latency_cycles=12, link="ft231x_uart", memory="sdram_j_per_byte",
        accel_gateable=False),
    "host": Target(
        "host", "this machine's CPU (measured model) + SCALENet in the compiled simulator, costed at 100 MHz",
        cpu="host", cpu_cores=2, cpu_clock_hz=0.0, accel=AcceleratorConfig(), accel_clock_hz=100e6,
        device="sim", accel_mem_bytes_per_s=8 * 100e6, accel_mem_latency_cycles=8, link="host_memcpy",
        memory="host_dram_j_per_byte", accel_gateable=True, accel_on_cpu=True),
}


def get_target(name) -> Target:
    """The target called ``name`` (a :class:`Target` is passed through)."""
    if isinstance(name, Target):
        return name
    if name not in TARGETS:
        raise ScalenetError(f"unknown target {name!r}: known targets are {', '.join(TARGETS)}")
    return TARGETS[name]
