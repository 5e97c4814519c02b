"""The layer compiler: an IR graph -> a descriptor chain and a memory image for the accelerator.

It decides where every tensor, weight block and parameter lives (layouts in docs/architecture.md),
checks every layer against the configured hardware **before** anything is sent (one
:class:`~scalenet.errors.HardwareLimitError` naming the layer and the limit), reuses activation buffers
whose tensors are dead, and places the inputs of a concatenation directly into slices of its output.

A 2-D Conv whose output feeds only a 2x2/2 or 3x3/2 MaxPool (no padding, floor or ceil mode) runs as
one descriptor with ``pool_after`` set when the pooled row fits the fused pool's row buffer
(``AcceleratorConfig.pool_row_bytes``): the conv's output tensor then never exists in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scalenet import kernels
from scalenet.errors import HardwareLimitError, ScalenetError
from scalenet.ir import Add, AvgPool, Clip, Concat, Conv, Dense, Flatten, GlobalAvgPool, Graph, MaxPool
from scalenet.quant import add_rescale, avgpool_multiplier, encode_multiplier
from scalenet.rtl.config import AcceleratorConfig
from scalenet.rtl.regmap import DESCRIPTOR_BYTES, Opcode, pack_descriptor

__all__ = ["Placement", "CompiledNetwork", "compile_graph", "ALIGN", "PARAM_BYTES", "ADD_PARAM_BYTES",
           "weight_blocks", "ci_tile_range", "fusable_pool", "TensorNotInMemory"]

ALIGN = 64
PARAM_BYTES = 8          #: bias int32, multiplier mantissa (3 bytes), shift (1 byte)
ADD_PARAM_BYTES = 16     #: a_mult u32, b_mult u32, shift u8, 7 bytes reserved


class TensorNotInMemory(ScalenetError, LookupError):
    """A tensor the compiled network never stores (fused away), or no tensor of that name."""


def _align(n, a=ALIGN):
    return (n + a - 1) // a * a


@dataclass
class Placement:
    """Where a tensor lives: HWC geometry, pixel stride and, for a flattened tensor, its source shape."""

    addr: int
    height: int
    width: int
    channels: int
    pixel_stride: int
    chw_source: tuple | None = None       # (C, H, W) when the IR tensor is a flattening of it

    @property
    def nbytes(self):
        return self.height * self.width * self.pixel_stride


@dataclass
class CompiledNetwork:
    graph: Graph
    config: AcceleratorConfig
    image: np.ndarray                      # the initial memory image (descriptors, weights, params)
    desc_addr: int
    descriptors: list                      # dicts of descriptor fields, in order
    layer_of: list                         # IR layer name per descriptor
    placements: dict                       # tensor name -> Placement
    size: int                              # bytes of memory the network needs
    meta: dict = field(default_factory=dict)
    fused: dict = field(default_factory=dict)   # fused-away tensor -> (conv, max pool, pooled tensor)

    def placement(self, name) -> Placement:
        """Where tensor ``name`` lives; :class:`TensorNotInMemory` for a fused-away or unknown tensor."""
        p = self.placements.get(name)
        if p is not None:
            return p
        if name in self.fused:
            conv, pool, pooled = self.fused[name]
            raise TensorNotInMemory(f"tensor {name!r} is never stored in device memory: conv {conv!r} and max pool "
                                    f"{pool!r} run fused as one descriptor, which writes only {pooled!r} "
                                    "(compile with fuse_pool=False to keep it)")
        raise TensorNotInMemory(f"no tensor {name!r} in the compiled network {self.graph.name!r}")

    @property
    def desc_count(self):
        return len(self.descriptors)

    # -- tensors <-> memory ---------------------------------------------------------------------------
    def encode_input(self, x, name=None):
        """(address, bytes) that store one sample of graph input ``name`` (default: the first; IR shape and
        integer type)."""
        name = self.graph.inputs[0] if name is None else name
        x = np.asarray(x)
        t = self.graph.tensors[name]
        if x.shape != t.shape or x.dtype != t.q.dtype.np_dtype:
            raise ValueError(f"input must be one {t.q.dtype.name} sample of shape {t.shape}, got {x.dtype} {x.shape}")
        p = self.placements[name]
        region = np.zeros(p.nbytes, np.uint8)
        _store(region, p, _to_hwc(x))
        return p.addr, region

    def decode_tensor(self, name, region):
        """A tensor in its IR shape and type from the bytes of its placement."""
        p = self.placement(name)
        t = self.graph.tensors[name]
        hwc = _load(np.asarray(region, np.uint8), p).view(t.q.dtype.np_dtype)
        if p.chw_source is not None:
            c, h, w = p.chw_source
            return hwc.reshape(h, w, c).transpose(2, 0, 1).reshape(t.shape)
        return _from_hwc(hwc, t.shape)

    def write_input(self, memory, x):
        addr, region = self.encode_input(x)
        memory[addr:addr + region.size] = region

    def read_tensor(self, memory, name):
        p = self.placement(name)
        return self.decode_tensor(name, memory[p.addr:p.addr + p.nbytes])


def _hwc_geometry(shape):
    if len(shape) == 3:
        return shape[1], shape[2], shape[0]
    if len(shape) == 2:
        return 1, shape[1], shape[0]
    if len(shape) == 1:
        return 1, 1, shape[0]
    raise HardwareLimitError(f"tensors of rank {len(shape)} are not supported by the accelerator")


def _to_hwc(x):
    if x.ndim == 3:
        return np.ascontiguousarray(x.transpose(1, 2, 0))
    if x.ndim == 2:
        return np.ascontiguousarray(x.T[None])
    return x.reshape(1, 1, -1)


def _from_hwc(hwc, shape):
    if len(shape) == 3:
        return np.ascontiguousarray(hwc.transpose(2, 0, 1))
    if len(shape) == 2:
        return np.ascontiguousarray(hwc[0].T)
    return hwc.reshape(shape)


def _store(region, p: Placement, hwc):
    """Write an (H, W, C) array into the bytes of a placement (honouring its pixel stride)."""
    raw = np.ascontiguousarray(hwc).view(np.uint8).reshape(p.height, p.width, p.channels)
    region = region[:p.nbytes - p.pixel_stride + p.channels]
    if p.pixel_stride == p.channels:
        region[:] = raw.reshape(-1)
        return
    for y in range(p.height):
        for x in range(p.width):
            off = (y * p.width + x) * p.pixel_stride
            region[off:off + p.channels] = raw[y, x]


def _load(region, p: Placement):
    """Read an (H, W, C) array from the bytes of a placement."""
    if p.pixel_stride == p.channels:
        return np.array(region[:p.nbytes]).reshape(p.height, p.width, p.channels)
    idx = np.arange(p.height * p.width)[:, None] * p.pixel_stride + np.arange(p.channels)[None]
    return np.array(region[idx]).reshape(p.height, p.width, p.channels)


# ---------------------------------------------------------------------------------------------------------
# Weight and parameter layouts (shared with the transaction-level model and the RTL's address generators)


def ci_tile_range(co_tile, rows, cols, out_channels, in_channels, groups):
    """Input-channel tiles that output-channel tile ``co_tile`` needs: ``range(lo, hi)``."""
    cog, cig = out_channels // groups, in_channels // groups
    co_lo = co_tile * rows
    co_hi = min(co_lo + rows, out_channels)
    g_lo, g_hi = co_lo // cog, (co_hi - 1) // cog
    ci_lo, ci_hi = g_lo * cig, (g_hi + 1) * cig
    return range(ci_lo // cols, -(-ci_hi // cols))


def weight_blocks(weight, groups, rows, cols):
    """int8 weight blocks in engine order: co tile, (ky, kx), ci tile -> (rows, cols), zero padded.

    ``weight`` is OIHW (OIW and dense (O, I) are accepted as kernels of height/width 1).
    """
    w = np.asarray(weight)
    if w.ndim == 2:
        w = w[:, :, None, None]
    elif w.ndim == 3:
        w = w[:, :, None, :]
    cout, cig, kh, kw = w.shape
    cin = cig * groups
    cog = cout // groups
    n_co, n_ci = -(-cout // rows), -(-cin // cols)
    dense = np.zeros((n_co * rows, n_ci * cols, kh, kw), dtype=np.int8)   # block-diagonal expansion
    for g in range(groups):
        dense[g * cog:(g + 1) * cog, g * cig:(g + 1) * cig] = w[g * cog:(g + 1) * cog]
    tiled = dense.reshape(n_co, rows, n_ci, cols, kh, kw).transpose(0, 4, 5, 2, 1, 3)  # co, ky, kx, ci, r, c
    blocks = []
    for co_t in range(n_co):
        tiles = ci_tile_range(co_t, rows, cols, cout, cin, groups)
        blocks.append(tiled[co_t, :, :, tiles.start:tiles.stop].reshape(-1, rows, cols))
    return np.concatenate(blocks) if blocks else np.zeros((0, rows, cols), np.int8)


def _channel_params(bias, multiplier):
    mantissa, shift = encode_multiplier(multiplier)
    n = len(bias)
    mantissa = np.broadcast_to(mantissa, (n,))
    shift = np.broadcast_to(shift, (n,))
    out = np.zeros((n, PARAM_BYTES), dtype=np.uint8)
    out[:, 0:4] = np.asarray(bias, dtype="<i4").reshape(n, 1).view(np.uint8)
    out[:, 4:7] = mantissa.astype("<u4").reshape(n, 1).view(np.uint8)[:, :3]
    out[:, 7] = shift
    return out.reshape(-1)


# ---------------------------------------------------------------------------------------------------------
# Compilation


class _Allocator:
    """First-fit allocation of 64-byte aligned regions, with frees (activation buffer reuse)."""

    def __init__(self, start):
        self.free = []          # (addr, size) sorted
        self.top = start

    def alloc(self, size):
        size = _align(max(size, 1))
        for i, (addr, free_size) in enumerate(self.free):
            if free_size >= size:
                if free_size == size:
                    del self.free[i]
                else:
                    self.free[i] = (addr + size, free_size - size)
                return addr
        addr = self.top
        self.top += size
        return addr

    def release(self, addr, size):
        size = _align(max(size, 1))
        self.free.append((addr, size))
        self.free.sort()
        merged = []
        for a, s in self.free:
            if merged and merged[-1][0] + merged[-1][1] == a:
                merged[-1] = (merged[-1][0], merged[-1][1] + s)
            else:
                merged.append((a, s))
        self.free = merged


def _limit(layer, what, value, limit):
    if value > limit:
        raise HardwareLimitError(f"layer {layer.name} ({layer.kind}): {what} {value} exceeds the "
                                 f"accelerator's limit of {limit}")


def _check_common(layer, cfg, in_geom, out_geom):
    h, w, c = in_geom
    oh, ow, oc = out_geom
    _limit(layer, "input width", w, cfg.max_width)
    _limit(layer, "output width", ow, cfg.max_width)
    _limit(layer, "input channels", c, cfg.max_channels)
    _limit(layer, "output channels", oc, cfg.max_channels)


def _conv_geometry(layer):
    """(kh, kw, sh, sw, pt, pl, pb, pr) for 1-D and 2-D convolutions/pools."""
    if len(layer.kernel) == 1:
        (kw,), (sw,) = layer.kernel, layer.stride
        pl, pr = layer.pads
        return 1, kw, 1, sw, 0, pl, 0, pr
    (kh, kw), (sh, sw) = layer.kernel, layer.stride
    pt, pl, pb, pr = layer.pads
    return kh, kw, sh, sw, pt, pl, pb, pr


def fusable_pool(graph: Graph, layer, cfg: AcceleratorConfig):
    """The MaxPool that ``layer`` can run fused with (``pool_after``), or None.

    It must be a 2-D Conv whose output is not a graph output and feeds only a MaxPool 2x2/2 or 3x3/2
    without padding (floor or ceil mode), on a conv output at least as large as the window, with a pooled
    row (``pooled_width * channels``) that fits ``cfg.pool_row_bytes``. The pool's quantisation equals the
    conv output's (MaxPool requires it), so nothing is requantised twice.
    """
    if not isinstance(layer, Conv) or len(layer.kernel) != 2 or layer.output in graph.outputs:
        return None
    users = [l for l in graph.layers if layer.output in l.inputs]
    if len(users) != 1 or not isinstance(users[0], MaxPool):
        return None
    pool = users[0]
    k = pool.kernel[0]
    if tuple(pool.kernel) not in ((2, 2), (3, 3)) or tuple(pool.stride) != (2, 2) or any(pool.pads):
        return None
    c, h, w = graph.tensors[layer.output].shape
    if h < k or w < k:
        return None
    _, ph, pw = graph.tensors[pool.output].shape
    if pw * c > cfg.pool_row_bytes or (ph, pw) != _pooled(h, w, k, pool.ceil_mode):
        return None
    return pool


def _pooled(h, w, k, ceil):
    return tuple(kernels.pool_output_size(n, k, 2, 0, 0, 1, ceil) for n in (h, w))


def compile_graph(graph: Graph, config: AcceleratorConfig | None = None, *, base=0,
                  fuse_pool=True) -> CompiledNetwork:
    """Compile ``graph`` for ``config``; ``fuse_pool=False`` keeps every Conv -> MaxPool as two descriptors."""
    cfg = config or AcceleratorConfig()
    tensors = graph.tensors
    order = graph.layers

    # Conv -> MaxPool pairs that run as one descriptor (the pool's layer emits none).
    fuse = {}                       # conv name -> MaxPool layer
    if fuse_pool:
        for layer in order:
            pool = fusable_pool(graph, layer, cfg)
            if pool is not None:
                fuse[layer.name] = pool
    fused_pools = {p.name for p in fuse.values()}

    # Concatenation inputs become slices of the concatenation's buffer.
    slice_of = {}
    for layer in order:
        if isinstance(layer, Concat):
            offset = 0
            for i in layer.inputs:
                consumers = [l for l in order if i in l.inputs]
                if i in graph.inputs or len(consumers) != 1 or i in slice_of or i in graph.outputs:
                    raise HardwareLimitError(f"layer {layer.name} (concat): input {i!r} also feeds another "
                                             "layer or is a graph input/output; not supported yet")
                slice_of[i] = (layer.output, offset)
                offset += tensors[i].shape[0]

    last_use = {}
    for idx, layer in enumerate(order):
        for i in layer.inputs:
            last_use[i] = idx
    for o in graph.outputs:
        last_use[o] = len(order)

    # Static part: descriptors first (their count is known), then weights and parameters.
    n_desc = sum(0 if isinstance(l, (Flatten, Concat)) or l.name in fused_pools else 1 for l in order)
    desc_addr = base
    cursor = _align(desc_addr + n_desc * DESCRIPTOR_BYTES)
    static = []                     # (addr, bytes)

    def place_static(raw, sizes=None, name=None):
        nonlocal cursor
        addr = cursor
        if sizes is not None:
            sizes[name] = len(raw)
        static.append((addr, raw))
        cursor = _align(cursor + len(raw))
        return addr

    placements = {}
    descriptors, layer_of = [], []

    # Activation allocation needs the static size first: weights are placed in a first pass.
    weight_addr, param_addr, weight_bytes, param_bytes = {}, {}, {}, {}
    for layer in order:
        ins = [tensors[i] for i in layer.inputs]
        out = tensors[layer.output]
        if isinstance(layer, (Conv, Dense)):
            in_t = ins[0]
            w = layer.weight
            if isinstance(layer, Dense):
                src = _flatten_source(graph, layer.inputs[0])
                if src is not None:                  # CHW-flattened columns -> HWC order
                    c, h, wd = src
                    w = w.reshape(w.shape[0], c, h, wd).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
                groups = 1
            else:
                groups = layer.groups
            kernel = layer.kernel if isinstance(layer, Conv) else (1, 1)
            for k in kernel:
                _limit(layer, "kernel size", k, cfg.max_kernel)
            blocks = weight_blocks(w, groups, cfg.rows, cfg.cols)
            _limit(layer, "weight bytes (padded to PE blocks)", blocks.nbytes, cfg.weight_buffer_bytes)
            weight_addr[layer.name] = place_static(blocks.reshape(-1).view(np.uint8).tobytes(), weight_bytes, layer.name)
            mult = layer.multiplier(in_t.q, out.q)
            param_addr[layer.name] = place_static(_channel_params(layer.bias, mult).tobytes(), param_bytes, layer.name)
        elif isinstance(layer, AvgPool):
            kh, kw = _conv_geometry(layer)[:2]
            counts = np.arange(1, kh * kw + 1)
            mult = avgpool_multiplier(ins[0].q.scale, out.q.scale, counts)
            param_addr[layer.name] = place_static(_channel_params(np.zeros(len(counts), np.int32), mult).tobytes(),
                                                  param_bytes, layer.name)
        elif isinstance(layer, GlobalAvgPool):
            h, w, _ = _hwc_geometry(ins[0].shape)
            mult = avgpool_multiplier(ins[0].q.scale, out.q.scale, [h * w])
            param_addr[layer.name] = place_static(_channel_params(np.zeros(1, np.int32), mult).tobytes(),
                                                  param_bytes, layer.name)
        elif isinstance(layer, Add):
            r = add_rescale(ins[0].q.scale, ins[1].q.scale, out.q.scale)
            raw = np.zeros(ADD_PARAM_BYTES, np.uint8)
            raw[0:4] = np.array([r.a_mult], "<u4").view(np.uint8)
            raw[4:8] = np.array([r.b_mult], "<u4").view(np.uint8)
            raw[8] = r.shift
            param_addr[layer.name] = place_static(raw.tobytes(), param_bytes, layer.name)

    alloc = _Allocator(cursor)
    live = {}                                 # buffer owner tensor -> (addr, size)

    def placement_for(name):
        if name in placements:
            return placements[name]
        if name in slice_of:
            owner, offset = slice_of[name]
            op = placement_for(owner)
            h, w, c = _hwc_geometry(tensors[name].shape)
            placements[name] = Placement(op.addr + offset, h, w, c, op.pixel_stride)
            return placements[name]
        h, w, c = _hwc_geometry(tensors[name].shape)
        size = h * w * c
        addr = alloc.alloc(size)
        live[name] = (addr, size)
        placements[name] = Placement(addr, h, w, c, c)
        return placements[name]

    def release_dead(idx):
        for name, (addr, size) in list(live.items()):
            users = [n for n, (o, _) in slice_of.items() if o == name]
            end = max([last_use.get(name, -1)] + [last_use.get(u, -1) for u in users])
            if end <= idx:
                alloc.release(addr, size)
                del live[name]

    for name in graph.inputs:              # more than one only for single-layer graphs (cost models)
        placement_for(name)
    for idx, layer in enumerate(order):
        out = tensors[layer.output]
        if isinstance(layer, Flatten):
            src = placements[layer.inputs[0]]
            if src.pixel_stride != src.channels:
                raise HardwareLimitError(f"layer {layer.name} (flatten): its input is a channel slice")
            flat = src.height * src.width * src.channels
            placements[layer.output] = Placement(src.addr, 1, 1, flat, flat,
                                                 _flatten_source(graph, layer.output))
            owner = next((n for n in live if placements.get(n) is src), None)
            if owner is not None:
                last_use[owner] = max(last_use[owner], last_use.get(layer.output, idx))
            continue
        if isinstance(layer, Concat):
            placement_for(layer.output)
            continue
        if layer.name in fused_pools:
            release_dead(idx)
            continue
        in_p = [placements[i] for i in layer.inputs]
        pool = fuse.get(layer.name)
        if pool is None:
            out_p = placement_for(layer.output)
        else:                       # the conv's geometry, written as the pool's tensor
            pooled = placement_for(pool.output)
            h, w, c = _hwc_geometry(tensors[layer.output].shape)
            out_p = Placement(pooled.addr, h, w, c, pooled.pixel_stride)
        desc = _descriptor(layer, graph, cfg, in_p, out_p, weight_addr.get(layer.name, 0),
                           param_addr.get(layer.name, 0))
        if pool is not None:
            desc.update(pool_after=pool.kernel[0], pool_ceil=int(pool.ceil_mode))
        desc.update(weight_bytes=weight_bytes.get(layer.name, 0), param_bytes=param_bytes.get(layer.name, 0))
        descriptors.append(desc)
        layer_of.append(layer.name)
        release_dead(idx)

    size = max(alloc.top, cursor) - base          # bytes from base (the allocators hand out absolute addresses)
    image = np.zeros(_align(size), dtype=np.uint8)
    for i, desc in enumerate(descriptors):
        raw = pack_descriptor(**desc)
        image[desc_addr + i * DESCRIPTOR_BYTES - base: desc_addr + (i + 1) * DESCRIPTOR_BYTES - base] = \
            np.frombuffer(raw, np.uint8)
    for addr, raw in static:
        image[addr - base:addr - base + len(raw)] = np.frombuffer(raw, np.uint8)
    fused = {conv.output: (conv.name, fuse[conv.name].name, fuse[conv.name].output)
             for conv in order if conv.name in fuse}
    return CompiledNetwork(graph, cfg, image, desc_addr, descriptors, layer_of, placements, _align(size),
                           meta={"static_bytes": cursor - base, "activation_bytes": alloc.top - cursor},
                           fused=fused)


def _flatten_source(graph, name):
    """The (C, H, W) shape a flat tensor was flattened from, if it was (and H*W > 1)."""
    layer = graph.producer(name)
    if isinstance(layer, Flatten):
        shape = graph.tensors[layer.inputs[0]].shape
        if len(shape) == 3 and shape[1] * shape[2] > 1:
            return shape
        if len(shape) == 2 and shape[1] > 1:
            return (shape[0], 1, shape[1])
    return None


def _signed(q):
    return 1 if q.dtype.name == "int8" else 0


def _descriptor(layer, graph, cfg, in_p, out_p, weight_addr, param_addr):
    tensors = graph.tensors
    in_t, out_t = tensors[layer.inputs[0]], tensors[layer.output]
    x = in_p[0]
    d = dict(in_signed=_signed(in_t.q), out_signed=_signed(out_t.q),
             in_channels=x.channels, in_height=x.height, in_width=x.width,
             out_channels=out_p.channels, out_height=out_p.height, out_width=out_p.width,
             in_pixel_stride=x.pixel_stride, out_pixel_stride=out_p.pixel_stride,
             x_zero_point=int(in_t.q.zero_point), y_zero_point=int(out_t.q.zero_point),
             clamp_lo=out_t.q.dtype.lo, clamp_hi=out_t.q.dtype.hi, groups=1,
             kernel_h=1, kernel_w=1, stride_h=1, stride_w=1, pool_after=0, pool_ceil=0,
             in_addr=x.addr, out_addr=out_p.addr, weight_addr=weight_addr, param_addr=param_addr)
    _check_common(layer, cfg, (x.height, x.width, x.channels), (out_p.height, out_p.width, out_p.channels))
    lo, hi = getattr(layer, "lo", None), getattr(layer, "hi", None)
    if lo is not None:
        d["clamp_lo"] = max(d["clamp_lo"], int(lo))
    if hi is not None:
        d["clamp_hi"] = min(d["clamp_hi"], int(hi))
    if isinstance(layer, (Conv, MaxPool, AvgPool)):
        if isinstance(layer, Conv) and any(v != 1 for v in layer.dilation):
            raise HardwareLimitError(f"layer {layer.name} (conv): dilation {layer.dilation} is not supported "
                                     "by the accelerator (run it in software)")
        kh, kw, sh, sw, pt, pl, pb, pr = _conv_geometry(layer)
        for what, v, lim in (("kernel size", max(kh, kw), cfg.max_kernel), ("stride", max(sh, sw), cfg.max_stride),
                             ("padding", max(pt, pl, pb, pr), cfg.max_pad)):
            _limit(layer, what, v, lim)
        if isinstance(layer, Conv):
            words = -(-x.channels // cfg.cols) * cfg.cols
            _limit(layer, "line-buffer bytes (kernel_h x width x channels in PE-column words)",
                   kh * x.width * words, cfg.line_buffer_bytes)
        else:
            _limit(layer, "line-buffer bytes ((kernel_h + stride_h) x width x channels)",
                   (kh + sh) * x.width * x.channels, cfg.line_buffer_bytes)
        d.update(kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw, pad_top=pt, pad_left=pl,
                 pad_bottom=pb, pad_right=pr)
    if isinstance(layer, (Conv, Dense)):
        _limit(layer, "output row bytes (width x channels)", out_p.width * out_p.channels, cfg.out_row_bytes)
    if isinstance(layer, Dense):
        _limit(layer, "line-buffer bytes (features in PE-column words)",
               -(-x.channels // cfg.cols) * cfg.cols, cfg.line_buffer_bytes)
    if isinstance(layer, Conv):
        d.update(opcode=Opcode.CONV, groups=layer.groups)
    elif isinstance(layer, Dense):
        d.update(opcode=Opcode.DENSE)
    elif isinstance(layer, MaxPool):
        d.update(opcode=Opcode.MAXPOOL)
    elif isinstance(layer, Clip):
        d.update(opcode=Opcode.MAXPOOL)           # a 1x1 max pool is the clamp alone
    elif isinstance(layer, AvgPool):
        d.update(opcode=Opcode.AVGPOOL, count_include_pad=int(layer.count_include_pad))
    elif isinstance(layer, GlobalAvgPool):
        d.update(opcode=Opcode.GLOBAL_AVGPOOL)
    elif isinstance(layer, Add):
        b = in_p[1]
        if b.pixel_stride != x.pixel_stride:
            raise HardwareLimitError(f"layer {layer.name} (add): inputs with different pixel strides")
        b_type = tensors[layer.inputs[1]].q.dtype
        if b_type != in_t.q.dtype:
            # One in_signed bit serves both inputs (ONNX's QLinearAdd has one input type too).
            raise HardwareLimitError(f"layer {layer.name} (add): inputs of different types "
                                     f"({in_t.q.dtype.name} and {b_type.name})")
        d.update(opcode=Opcode.ADD, b_addr=b.addr, b_zero_point=int(tensors[layer.inputs[1]].q.zero_point))
    else:
        raise HardwareLimitError(f"layer {layer.name}: op {layer.kind!r} is not supported by the accelerator")
    return {k: int(v) for k, v in d.items()}
