"""Power and energy models: accelerator (static + resource-based dynamic x activity), CPUs, transfers.

Nothing here is measured (this machine has no power counters): every coefficient comes from
``data/power.json``, which cites a source for each and flags estimates. It is read in one place,
:func:`coefficients`. Resource counts of the array are estimated from its configuration until the board
flow reports real ones (pass them as ``resources``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources as _resources

from scalenet.errors import ScalenetError
from scalenet.rtl.config import AcceleratorConfig

__all__ = [
    "coefficients", "value", "Resources", "estimate_resources", "accel_power", "cpu_power",
    "activity_from_trace", "DEFAULT_ACTIVITY",
]


@lru_cache(maxsize=1)
def coefficients() -> dict:
    """The parsed ``data/power.json`` (cached; treat as read-only)."""
    text = _resources.files("scalenet.scheduler").joinpath("data/power.json").read_text()
    return json.loads(text)


def value(*path) -> float:
    """``coefficients()[path...]["value"]``, with an error naming the missing key."""
    node = coefficients()
    for i, key in enumerate(path):
        if not isinstance(node, dict) or key not in node:
            raise ScalenetError(f"power.json has no entry {'/'.join(path[:i + 1])}")
        node = node[key]
    return float(node["value"]) if isinstance(node, dict) else float(node)


DEFAULT_ACTIVITY = 0.125
"""Toggle rate assumed when none is given: the XPE default, at which the dynamic coefficients are quoted."""


@dataclass(frozen=True)
class Resources:
    lut: int
    ff: int
    dsp: int
    bram18: int
    estimated: bool = True


def _bram18(nbytes, width_bits=36):
    """18-kbit blocks for a memory of ``nbytes`` (2 KiB of data per block at 9/18/36-bit widths)."""
    return max(1, math.ceil(nbytes / 2048)) if nbytes else 0


def estimate_resources(config: AcceleratorConfig) -> Resources:
    """LUT/FF/DSP/BRAM estimate of the whole accelerator for ``config``.

    The per-PE and fixed terms are rounded from yosys ``synth_xilinx``/``synth_ecp5`` runs of this RTL
    (8x8 default: 64 PE multipliers + 28 in the requantisers and address arithmetic, 159 DP16KD, ~5 k LUT
    for the array; boards/estimate.py counts them from RTLIL); memories are counted from the engines'
    buffer sizes (rtl/conv_engine.py, rtl/pool_engine.py) in 18-kbit blocks, plus 15 for FIFOs and the
    read-port duplicates yosys makes.
    """
    pes = config.pes
    lut = 3000 + 75 * pes + 40 * config.data_bytes * 8 // 8
    ff = 2500 + 40 * pes + 8 * config.data_bytes * 8
    psum_words = 1 << max(1, (config.max_width - 1).bit_length())
    n_co = -(-config.max_channels // config.rows)
    mem_bytes = [
        config.line_buffer_bytes,                  # conv line-buffer ring
        config.weight_buffer_bytes,                # conv weight memory
        4 * config.rows * 2 * psum_words,          # partial sums, two banks
        4 * config.rows * n_co,                    # bias per tile
        4 * config.max_channels,                   # multiplier/shift per channel
        2 * config.out_row_bytes,                  # output row banks
        config.line_buffer_bytes,                  # pooling line buffer
        4 * config.max_channels,                   # global-average accumulators
    ]
    bram = sum(_bram18(b) for b in mem_bytes) + 2   # + DMA/ADD FIFOs
    return Resources(lut=lut, ff=ff, dsp=pes + 28, bram18=bram + 13)


def accel_power(device: str, config: AcceleratorConfig, clock_hz: float, *, activity=None, busy=1.0,
                resources: Resources | None = None) -> dict:
    """Accelerator power in watts: ``{"static", "dynamic", "total"}``.

    ``dynamic`` = sum over resources of count x coefficient(W/MHz at the reference toggle rate) x clock
    x ``activity / reference`` x ``busy`` (the fraction of cycles the logic is working: clock enables and
    idle datapaths keep the rest of the cycles near the clock-tree share, neglected here).
    """
    devs = coefficients()["devices"]
    if device not in devs:
        raise ScalenetError(f"unknown device {device!r} in power.json: known are {', '.join(sorted(devs))}")
    dev = devs[device]
    res = resources or estimate_resources(config)
    cap = dev.get("capacity", {})
    for field in ("lut", "ff", "dsp", "bram18"):
        if field in cap and getattr(res, field) > cap[field]:
            raise ScalenetError(f"accelerator {config.describe()} needs ~{getattr(res, field)} {field.upper()}, "
                                f"the {device} has {cap[field]}")
    act = DEFAULT_ACTIVITY if activity is None else float(activity)
    if not 0.0 <= act <= 1.0:
        raise ScalenetError(f"activity must be a toggle rate in [0, 1], not {activity!r}")
    ref = value("reference_activity")
    fam = dev["family"]
    mhz = clock_hz / 1e6
    per_mhz = (res.lut * value("resource_dynamic", fam, "lut_w_per_mhz")
               + res.ff * value("resource_dynamic", fam, "ff_w_per_mhz")
               + res.dsp * value("resource_dynamic", fam, "dsp_w_per_mhz")
               + res.bram18 * value("resource_dynamic", fam, "bram18_w_per_mhz"))
    dynamic = per_mhz * mhz * (act / ref) * busy
    static = value("devices", device, "static_w")
    return {"static": static, "dynamic": dynamic, "total": static + dynamic}


def cpu_power(cpu: str, clock_hz: float, active_cores: int) -> dict:
    """CPU power in watts: ``{"idle", "dynamic", "total"}`` with ``active_cores`` busy."""
    cpus = coefficients()["cpus"]
    if cpu not in cpus:
        raise ScalenetError(f"unknown CPU {cpu!r} in power.json: known are {', '.join(sorted(cpus))}")
    c = cpus[cpu]
    idle = value("cpus", cpu, "idle_w")
    if "active_w_per_core" in c:
        per_core = value("cpus", cpu, "active_w_per_core")
    else:
        per_core = value("cpus", cpu, "active_w_per_mhz") * clock_hz / 1e6
    dynamic = per_core * max(0, active_cores)
    return {"idle": idle, "dynamic": dynamic, "total": idle + dynamic}


def activity_from_trace(report, *, cycles=None, signals=None) -> float:
    """Average toggle rate (transitions per bit per cycle) from a toggle-count report of a co-simulation.

    ``report`` is what ``scalenet.cosim.trace`` returns (per-module entries with toggle and bit counts and
    the simulated cycles) or a plain mapping ``{module: {"toggles": int, "bits": int}}`` with ``cycles``
    given. The result is the activity factor :func:`accel_power` takes.
    """
    entries = report
    for attr in ("modules", "per_module"):
        if hasattr(report, attr):
            entries = getattr(report, attr)
            break
    if isinstance(entries, dict) and "modules" in entries:
        entries = entries["modules"]
    if cycles is None:
        cycles = getattr(report, "cycles", None)
        if cycles is None and isinstance(report, dict):
            cycles = report.get("cycles")
    if not cycles or cycles <= 0:
        raise ScalenetError("activity_from_trace needs the number of simulated cycles (cycles=...)")
    toggles = bits = 0
    items = entries.items() if isinstance(entries, dict) else enumerate(entries)
    for _, e in items:
        get = e.get if isinstance(e, dict) else (lambda k, d=None, e=e: getattr(e, k, d))
        t, b = get("toggles"), get("bits", get("width"))
        if t is None or b is None:
            raise ScalenetError(f"toggle report entry {e!r} has no toggles/bits")
        toggles += int(t)
        bits += int(b)
    if bits == 0:
        raise ScalenetError("toggle report covers no signal bits")
    return min(1.0, toggles / (bits * cycles))
