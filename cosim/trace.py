"""What a simulation trace says: per-layer cycles, PE activity, DMA traffic and stalls, and per-module
toggle counts (the activity input of a power model), from a VCD written by either engine.

The figures come from the signals the performance counters add up — the control slave's ``busy``,
``layer``, ``perf_mac``, ``perf_rd_bytes``, ``perf_wr_bytes`` and ``perf_stall`` inputs — sampled the way
the counters sample them: once per cycle, the value just before each rising edge of ``clk``. So a run's
figures equal PERF_CYCLES, PERF_MAC_ACTIVE, PERF_DMA_RD_BYTES, PERF_DMA_WR_BYTES and PERF_DMA_STALL
exactly. A run is a stretch of ``busy`` cycles; within it, a layer is a stretch of one ``layer`` value (the
descriptor index). The sequencer spends one more busy cycle after the last descriptor, finding the list
done: it shows as a layer whose index equals the run's descriptor count.

Toggles are bit flips between consecutive cycle samples (the Hamming distance of successive values),
summed over a module's signals, for every module of the hierarchy (a module's figure includes its
submodules; ``"top"`` is the whole design). A signal traced under several names (a port and the parent's
wire) counts once, in its deepest module. Memories are left out (the compiled engine does not trace them).
Both engines' traces parse alike; the compiled model has fewer (optimised-away) internal wires, so its
toggle counts are lower than pysim's, while the counter figures are identical.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from scalenet.errors import ScalenetError

__all__ = ["TraceError", "LayerActivity", "TraceReport", "analyze"]

_COUNTER_INPUTS = ("busy", "layer", "perf_mac", "perf_rd_bytes", "perf_wr_bytes", "perf_stall")
_MEMORY_ROW = re.compile(r"^\\?[^.]*\[\d+\]$")     # pysim's memory rows: "\lb[12]"


class TraceError(ScalenetError):
    """The file is not a VCD of the SCALENet top level (missing, unreadable, or without the signals the
    analysis needs)."""


@dataclass
class LayerActivity:
    """One layer (descriptor) of one run."""
    run: int
    layer: int
    start_cycle: int              #: index of the layer's first cycle in the trace
    cycles: int
    pe_active_cycles: int         #: cycles with the PE array computing
    mac_ops: int                  #: PE-cycles (what PERF_MAC_ACTIVE adds)
    pe_active_ratio: float
    dma_rd_bytes: int
    dma_wr_bytes: int
    dma_stall_cycles: int
    toggles: dict = field(default_factory=dict)   #: module path -> bit flips in this layer


@dataclass
class TraceReport:
    path: str
    cycles: int                   #: clock cycles in the trace
    busy_cycles: int
    runs: int
    layers: list                  #: LayerActivity, in trace order
    totals: dict                  #: counter figures over the whole trace (busy or not)
    toggles: dict                 #: module path -> bit flips over the whole trace
    modules: list                 #: module paths, parents before children
    signals: int                  #: traced signals counted

    def to_dict(self) -> dict:
        return asdict(self)

    def run_totals(self, run) -> dict:
        """The counter figures of one run (what the counters read after it, if cleared before)."""
        keys = ("cycles", "pe_active_cycles", "mac_ops", "dma_rd_bytes", "dma_wr_bytes", "dma_stall_cycles")
        rows = [la for la in self.layers if la.run == run]
        if not rows:
            raise IndexError(f"no run {run} in the trace ({self.runs} runs)")
        return {k: sum(getattr(la, k) for la in rows) for k in keys}


def _header(path):
    """(scope path, name, id code, width) of every $var, from the VCD header."""
    scope, out = [], []
    with open(path, "r", errors="replace") as f:
        for line in f:
            tokens = line.split()
            if not tokens:
                continue
            head = tokens[0]
            if head == "$scope":
                scope.append(tokens[2])
            elif head == "$upscope":
                scope.pop()
            elif head == "$var":
                # $var kind width id name [range] $end
                name = tokens[4]
                out.append((tuple(scope), name, tokens[3], int(tokens[2])))
            elif head == "$enddefinitions":
                return out
    raise TraceError(f"{path}: no $enddefinitions: not a complete VCD file")


_XZ = str.maketrans("xzXZ", "0000")
_BITS = frozenset("01xzXZ")


def _as_int(value: str):
    """A vector value as an integer (x/z as 0); None for a non-binary value (pysim writes enums as names)."""
    if value and _BITS.issuperset(value):
        return int(value.translate(_XZ), 2)
    return None


def _flips(a, b, raw_a, raw_b) -> int:
    if a is None or b is None:
        return int(raw_a != raw_b)       # an enum changing its name counts as one flip
    return (a ^ b).bit_count()


def _ffill(n, bins, values, initial=0):
    """Per-cycle samples from (cycle bin, value) changes: the value in effect before each edge."""
    out = np.full(n, initial, dtype=np.int64)
    if not len(bins):
        return out
    idx = np.full(n, -1, dtype=np.int64)
    keep = bins < n
    idx[bins[keep]] = np.nonzero(keep)[0]
    idx = np.maximum.accumulate(idx)
    vals = np.asarray(values, dtype=np.int64)
    have = idx >= 0
    out[have] = vals[idx[have]]
    return out


def analyze(path) -> TraceReport:
    """Analyse a VCD of the SCALENet top level written by either simulation engine."""
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"trace file not found: {path}")
    try:
        variables = _header(path)
    except (OSError, UnicodeError, IndexError, ValueError) as e:
        raise TraceError(f"cannot read {path} as a VCD file: {e}") from None

    # The control slave's scope locates the design's top scope.
    by_scope = {}
    for scope, name, code, width in variables:
        by_scope.setdefault(scope, {})[name] = code
    control = [s for s, names in by_scope.items() if s and s[-1] == "control"
               and all(n in names for n in _COUNTER_INPUTS)]
    if not control:
        raise TraceError(f"{path}: no 'control' module with the signals {', '.join(_COUNTER_INPUTS)}: "
                         "not a trace of the SCALENet top level")
    control = min(control, key=len)
    top = control[:-1]
    clk = by_scope.get(top, {}).get("clk")
    if clk is None:
        raise TraceError(f"{path}: no clk signal in the top scope {'.'.join(top) or '(root)'}")

    import vcdvcd
    try:
        vcd = vcdvcd.VCDVCD(str(path), store_tvs=True)
    except Exception as e:          # vcdvcd raises assorted errors on malformed input
        raise TraceError(f"cannot parse {path} with vcdvcd: {e}") from None
    data = vcd.data

    def changes(code):
        tv = data[code].tv
        return np.fromiter((t for t, _ in tv), dtype=np.int64, count=len(tv)), [v for _, v in tv]

    # Rising clock edges; cycle j ends at edge j and samples the last change strictly before it.
    t_clk, v_clk = changes(clk)
    edges = np.array([t for t, v, p in zip(t_clk[1:], v_clk[1:], v_clk[:-1]) if v == "1" and p == "0"], np.int64)
    n = len(edges)

    def samples(name):
        times, values = changes(by_scope[control][name])
        ints = [_as_int(v) for v in values]
        if any(v is None for v in ints):
            raise TraceError(f"{path}: control.{name} is not a binary signal")
        bins = np.searchsorted(edges, times, side="right")
        return _ffill(n, bins, ints)

    sig = {name: samples(name) for name in _COUNTER_INPUTS}
    busy = sig["busy"] != 0

    # Segments: (run, layer) stretches of busy cycles.
    seg_of = np.full(n, -1, dtype=np.int64)
    segments = []          # (run, layer, start, end)
    run = -1
    j = 0
    while j < n:
        if not busy[j]:
            j += 1
            continue
        if j == 0 or not busy[j - 1]:
            run += 1
        k = j
        while k < n and busy[k] and sig["layer"][k] == sig["layer"][j]:
            k += 1
        seg_of[j:k] = len(segments)
        segments.append((run, int(sig["layer"][j]), j, k))
        j = k

    # Toggle counts per (segment, module); each id once, in its deepest scope under the top.
    owner = {}
    for scope, name, code, width in variables:
        if scope[:len(top)] != top or _MEMORY_ROW.match(name):
            continue
        rel = scope[len(top):]
        if code not in owner or len(rel) > len(owner[code]):
            owner[code] = rel
    modules = sorted({rel[:i] for rel in owner.values() for i in range(len(rel) + 1)}, key=lambda r: (len(r), r))
    mod_index = {m: i for i, m in enumerate(modules)}
    flips = np.zeros((len(segments) + 1, len(modules)), dtype=np.int64)    # last row: outside runs
    for code, rel in owner.items():
        times, values = changes(code)
        if len(times) < 2:
            continue
        bins = np.searchsorted(edges, times, side="right")
        last = {}
        for b, v in zip(bins.tolist(), values):
            last[b] = v                       # the value each cycle samples
        prev = prev_raw = None
        cyc, cnt = [], []
        for b in sorted(last):
            raw = last[b]
            cur = _as_int(raw)
            if prev_raw is not None and b < n:
                d = _flips(prev, cur, prev_raw, raw)
                if d:
                    cyc.append(b)
                    cnt.append(d)
            prev, prev_raw = cur, raw
        if cyc:
            seg = seg_of[np.asarray(cyc)]
            np.add.at(flips[:, mod_index[rel]], seg, np.asarray(cnt))    # -1 indexes the last row
    # Hierarchical sums: a module includes its submodules.
    totals_by_module = flips.copy()
    for m in sorted(modules, key=len, reverse=True):
        if m:
            totals_by_module[:, mod_index[m[:-1]]] += totals_by_module[:, mod_index[m]]
    names = ["top" if not m else ".".join(m) for m in modules]

    def toggle_dict(row):
        return {name: int(row[i]) for i, name in enumerate(names)}

    layers = []
    for s, (run_i, layer, a, b) in enumerate(segments):
        mac = sig["perf_mac"][a:b]
        cycles = b - a
        active = int(np.count_nonzero(mac))
        layers.append(LayerActivity(
            run=run_i, layer=layer, start_cycle=a, cycles=cycles, pe_active_cycles=active,
            mac_ops=int(mac.sum()), pe_active_ratio=active / cycles if cycles else 0.0,
            dma_rd_bytes=int(sig["perf_rd_bytes"][a:b].sum()), dma_wr_bytes=int(sig["perf_wr_bytes"][a:b].sum()),
            dma_stall_cycles=int(sig["perf_stall"][a:b].sum()), toggles=toggle_dict(totals_by_module[s])))
    totals = {"cycles": int(busy.sum()), "pe_active_cycles": int(np.count_nonzero(sig["perf_mac"])),
              "mac_ops": int(sig["perf_mac"].sum()), "dma_rd_bytes": int(sig["perf_rd_bytes"].sum()),
              "dma_wr_bytes": int(sig["perf_wr_bytes"].sum()), "dma_stall_cycles": int(sig["perf_stall"].sum())}
    return TraceReport(path=str(path), cycles=n, busy_cycles=int(busy.sum()), runs=run + 1, layers=layers,
                       totals=totals, toggles=toggle_dict(totals_by_module.sum(axis=0)), modules=names,
                       signals=len(owner))
