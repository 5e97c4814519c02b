"""Analytical cycle model of THIS accelerator's RTL: cycles per descriptor, hence per layer.

Structure (rtl/top.py sequencer, rtl/conv_engine.py, rtl/pool_engine.py, rtl/add_engine.py):

- every descriptor: fetch (one DMA read of 64 bytes: memory latency + 64 / data_bytes beats) and the
  CHECK/REGIONS/START/WRITE_CMD states;
- CONV/DENSE: the engine's set-up (four 18-cycle divisions, a dozen multiply states, the per output-channel
  tile table, six more divisions per tile for grouped convolutions) overlaps the parameter read (one
  beat per channel); then every weight row (C bytes, one per cycle) is loaded before compute; then the
  rows pipeline: the first output row waits for its input rows (one byte per cycle through the byte
  adapter), after which each output row costs the slowest of its compute (one pixel per cycle per pass,
  ``kernel_h * kernel_w * ci_tiles`` passes per output-channel tile, a tile's drain of R requantisations
  per pixel overlapping the next tile), its share of the input bytes and its output bytes; the last row
  still streams out;
- MAXPOOL/AVGPOOL: one window tap per cycle per output byte, the input one byte per cycle, same row
  pipeline; GLOBAL_AVGPOOL: one cycle per input byte, then one requantisation per channel;
- ADD: one output byte per cycle; the two inputs arrive in 8-word chunks, one DMA command each;
- a CONV with ``pool_after`` (a fused Conv -> MaxPool, driver/compiler.py ``fusable_pool``): the conv's
  terms plus a ``fused`` constant (the fused pool's pipeline, one byte per cycle like the conv's output, so
  it hides behind it: co-simulation gives the pair -2 to +4 cycles over the conv alone, while the pool as
  its own descriptor costs ~0.3-0.5x the conv); the DMA writes the pooled tensor.

Fused pairs in a per-layer cost table: :meth:`AccelModel.layer_estimate` costs a fusable MaxPool as the
*increment* of the fused descriptor over its producer conv alone (``fused=True``, the default) — exact
when both run on the accelerator in one segment, which is the only way the runtime fuses them; the
stand-alone cost (``fused=False``) is what the pool costs when its producer runs elsewhere.

A DMA-bandwidth bound (all bytes read and written over the target's sustained bandwidth) caps it from
below. The terms above carry free coefficients per opcode class, fitted to co-simulation cycle counts by
benchmarks/calibrate_accel_model.py into ``data/accel_cycles.json`` (defaults: 1 and small constants).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources as _resources

from scalenet.errors import HardwareLimitError, ScalenetError
from scalenet.ir import Concat, Flatten, Graph, MaxPool
from scalenet.rtl.config import AcceleratorConfig
from scalenet.rtl.regmap import DESCRIPTOR_BYTES, Opcode

__all__ = ["CLASSES", "TERMS", "AccelModel", "descriptor_class", "descriptor_terms", "layer_descriptors", "fused_producer",
           "load_coefficients", "DEFAULT_COEFFICIENTS"]

_ADD_CHUNK_WORDS = 8          # rtl/top.py ADD_CHUNK_WORDS (imported lazily below to keep Amaranth out)
_DIV_CYCLES = 20              # Divider(18): start + 18 quotient bits + result

CLASSES = ("conv", "pool", "gap", "add")
TERMS = {
    "conv": ("const", "load", "first", "rows", "tail", "fused"),
    "pool": ("const", "load", "first", "rows", "tail"),
    "gap": ("const", "load", "bytes", "tail"),
    "add": ("const", "load", "bytes", "chunks"),
}
DEFAULT_COEFFICIENTS = {
    "conv": {"const": 20.0, "load": 1.0, "first": 1.0, "rows": 1.0, "tail": 1.0, "fused": 4.0},
    "pool": {"const": 20.0, "load": 1.0, "first": 1.0, "rows": 1.0, "tail": 1.0},
    "gap": {"const": 20.0, "load": 1.0, "bytes": 1.0, "tail": 1.0},
    "add": {"const": 20.0, "load": 1.0, "bytes": 1.0, "chunks": 1.0},
}


def descriptor_class(d) -> str:
    op = Opcode(d["opcode"])
    if op in (Opcode.CONV, Opcode.DENSE):
        return "conv"
    if op in (Opcode.MAXPOOL, Opcode.AVGPOOL):
        return "pool"
    if op == Opcode.GLOBAL_AVGPOOL:
        return "gap"
    return "add"


def _ci_tiles(d, cfg):
    from scalenet.driver.compiler import ci_tile_range
    cin, cout, groups = d["in_channels"], d["out_channels"], max(1, d.get("groups", 1))
    n_co = -(-cout // cfg.rows)
    return [len(ci_tile_range(t, cfg.rows, cfg.cols, cout, cin, groups)) for t in range(n_co)]


def descriptor_terms(d: dict, cfg: AcceleratorConfig, latency: int) -> tuple:
    """(class, {term: cycles}, fetch cycles, DMA bytes) of one descriptor for a memory ``latency``."""
    cls = descriptor_class(d)
    nb = cfg.data_bytes
    fetch = latency + DESCRIPTOR_BYTES // nb + 6
    h, w, cin = d["in_height"], d["in_width"], d["in_channels"]
    oh, ow, cout = d["out_height"], d["out_width"], d["out_channels"]
    kh, kw, sh = d.get("kernel_h", 1), d.get("kernel_w", 1), d.get("stride_h", 1)
    pt = d.get("pad_top", 0)
    param_beats = -(-d.get("param_bytes", 0) // nb)
    in_bytes = h * w * cin
    pool_k = d.get("pool_after", 0)
    if cls == "conv" and pool_k:            # out_height/out_width stay the conv's; the DMA writes the pool's
        ceil = d.get("pool_ceil", 0)
        out_bytes = (((oh - pool_k + ceil) >> 1) + 1) * (((ow - pool_k + ceil) >> 1) + 1) * cout
    else:
        out_bytes = oh * ow * cout
    dma_bytes = DESCRIPTOR_BYTES + d.get("param_bytes", 0) + d.get("weight_bytes", 0) + in_bytes + out_bytes
    t = {"const": 1.0}
    first_rows = min(h, max(1, kh - pt)) if cls in ("conv", "pool") else 0
    in_first = first_rows * w * cin
    in_row = (in_bytes - in_first) / max(oh - 1, 1)
    if cls == "conv":
        tiles = _ci_tiles(d, cfg)
        n_co = len(tiles)
        setup = 4 * _DIV_CYCLES + 16 + (n_co if d.get("groups", 1) == 1 else n_co * (6 * _DIV_CYCLES + 4))
        weight_rows = d.get("weight_bytes", 0) // cfg.cols
        t["load"] = max(setup, latency + param_beats) + latency + weight_rows + 2 * latency
        compute_row = sum(ow * max(kh * kw * n, min(cfg.rows, cout - i * cfg.rows)) for i, n in enumerate(tiles))
        t["first"] = in_first + compute_row
        t["rows"] = (oh - 1) * max(compute_row, in_row, ow * cout)
        t["tail"] = ow * cout
        t["fused"] = 1.0 if pool_k else 0.0
    elif cls == "pool":
        t["load"] = (latency + param_beats if param_beats else 0) + latency
        compute_row = ow * cin * kh * kw
        t["first"] = in_first + compute_row
        t["rows"] = (oh - 1) * max(compute_row, in_row)
        t["tail"] = ow * cout
    elif cls == "gap":
        t["load"] = 2 * latency + param_beats
        t["bytes"] = in_bytes
        t["tail"] = cin
    else:
        words = -(-in_bytes // nb)
        chunks = 2 * -(-words // _ADD_CHUNK_WORDS)
        t["load"] = 2 * latency + param_beats
        t["bytes"] = in_bytes
        t["chunks"] = chunks * (latency + 4)
        dma_bytes += in_bytes
    return cls, t, fetch, dma_bytes


@lru_cache(maxsize=4)
def _coefficients_file(name):
    try:
        text = _resources.files("scalenet.scheduler").joinpath(f"data/{name}").read_text()
    except FileNotFoundError:
        return None
    return json.loads(text)


def load_coefficients(name="accel_cycles.json") -> dict:
    """Fitted coefficients (``data/accel_cycles.json``), or the defaults when the file is absent."""
    raw = _coefficients_file(name)
    coef = {c: dict(v) for c, v in DEFAULT_COEFFICIENTS.items()}
    if raw:
        for c, v in raw.get("coefficients", {}).items():
            coef.setdefault(c, {}).update({k: float(x) for k, x in v.items()})
    return coef


def layer_descriptors(graph: Graph, layer, config: AcceleratorConfig) -> list:
    """The descriptors the compiler makes for ``layer`` alone; raises HardwareLimitError if it cannot."""
    return _sub_descriptors(graph, [layer], config)


def _sub_descriptors(graph, layers, config):
    from scalenet.driver.compiler import compile_graph
    made = {l.output for l in layers}
    needed = list(dict.fromkeys(i for l in layers for i in l.inputs if i not in made))
    tensors = {n: graph.tensors[n] for n in needed + [l.output for l in layers]}
    sub = Graph(f"{graph.name}/{'+'.join(l.name for l in layers)}", tensors, list(layers), needed, [layers[-1].output])
    return compile_graph(sub, config).descriptors


def fused_producer(graph: Graph, layer, config: AcceleratorConfig):
    """The Conv that ``layer`` (a MaxPool) runs fused with when both are on the accelerator, or None."""
    from scalenet.driver.compiler import fusable_pool
    if not isinstance(layer, MaxPool):
        return None
    producer = next((l for l in graph.layers if l.output == layer.inputs[0]), None)
    if producer is None or fusable_pool(graph, producer, config) is not layer:
        return None
    return producer


@dataclass
class AccelModel:
    """Cycles and seconds of layers on one accelerator configuration at one clock and memory system."""

    config: AcceleratorConfig
    clock_hz: float = 100e6
    mem_bytes_per_s: float | None = None     #: sustained DMA bandwidth (default: one bus word per cycle)
    latency: int = 8                         #: memory read latency in accelerator cycles
    coefficients: dict | None = None

    def __post_init__(self):
        if self.coefficients is None:
            self.coefficients = load_coefficients()
        if self.clock_hz <= 0:
            raise ScalenetError(f"accelerator clock must be > 0 Hz, not {self.clock_hz}")

    def descriptor_cycles(self, d: dict) -> float:
        return self._descriptor(d)[0]

    def _descriptor(self, d):
        cls, terms, fetch, dma_bytes = descriptor_terms(d, self.config, self.latency)
        coef = self.coefficients[cls]
        engine = fetch + sum(coef.get(k, 0.0) * v for k, v in terms.items())
        bytes_per_cycle = (self.mem_bytes_per_s / self.clock_hz if self.mem_bytes_per_s
                           else self.config.data_bytes)
        return max(engine, dma_bytes / bytes_per_cycle), dma_bytes

    def layer_estimate(self, graph: Graph, layer, *, fused=True) -> tuple:
        """(cycles, DMA bytes) of ``layer`` on the accelerator (zero for concat/flatten: placement only).

        A MaxPool the compiler fuses into its producer conv costs (``fused=True``) the fused descriptor's
        increment over the conv alone, never below zero (the bytes it saves are not credited); with
        ``fused=False``, or when it is not fusable, its own descriptor. Raises
        :class:`HardwareLimitError` when the hardware cannot run it."""
        if isinstance(layer, (Flatten, Concat)):
            return 0.0, 0
        conv = fused_producer(graph, layer, self.config) if fused else None
        if conv is not None:
            try:
                pair = self._estimate(_sub_descriptors(graph, [conv, layer], self.config))
                alone = self._estimate(layer_descriptors(graph, conv, self.config))
            except HardwareLimitError:
                conv = None                  # the conv cannot run there: the pool would run alone
            else:
                return max(pair[0] - alone[0], 0.0), max(pair[1] - alone[1], 0)
        return self._estimate(layer_descriptors(graph, layer, self.config))

    def _estimate(self, descriptors):
        parts = [self._descriptor(d) for d in descriptors]
        return float(sum(c for c, _ in parts)), int(sum(b for _, b in parts))

    def layer_cycles(self, graph: Graph, layer) -> float:
        return self.layer_estimate(graph, layer)[0]

    def layer_seconds(self, graph: Graph, layer) -> float:
        return self.layer_cycles(graph, layer) / self.clock_hz

    def supported(self, graph, layer) -> bool:
        try:
            self.layer_cycles(graph, layer)
        except HardwareLimitError:
            return False
        return True
