"""Software workers: a thread pool that runs layers, large ones split into tiles run in parallel, bit-exact.

Why threads work here: the heavy part of every kernel is numpy or onnxruntime, which release the GIL. A
large layer is cut into independent tiles — output-channel ranges (whole groups for grouped
convolutions) and batch samples — each computed by the same integer kernels as the reference and
requantised with :func:`scalenet.quant.requantize`, so the concatenated result is the reference's, integer
for integer (tests/test_scheduler_workers.py checks every layer kind and every zoo network). A layer below
:func:`~scalenet.scheduler.cpu_model.parallel_ways`'s threshold runs whole on the calling thread: handing
a tile to another thread costs more than the tile (measured by benchmarks/calibrate_cpu_model.py).

Kernels:

- 2-D convolutions and dense layers with int8 activations and symmetric int8 weights run as an in-memory
  onnxruntime ``QLinearConv`` (s8s8; a dense layer is a 1x1 convolution of a 1x1 image, which keeps its
  int32 bias, unlike ``QLinearMatMul``), one session per tile, built once per layer: that kernel computes
  the true integer dot product over the full weight range and requantises like
  :func:`scalenet.quant.requantize` (tests/test_ort_exact.py checks both), and it is several times faster
  than the numpy path (benchmarks/sw_workers_vs_ort.py). A layer whose accumulator could leave int32 is
  not eligible (the reference raises there; onnxruntime would wrap). onnxruntime's u8s8 path is never
  used: on x86 without VNNI it saturates int16 pair sums with full-range weights.
- other convolutions and dense layers: the reference's exact float32-BLAS products (:mod:`scalenet.kernels`),
  except depthwise convolutions, which use a direct tap loop (``kernel_h * kernel_w`` vectorised
  multiply-adds in int64: exact, and much faster than one small matrix product per channel);
- max pooling: a maximum over ``kernel_h * kernel_w`` strided views (padding with the type's minimum,
  which never wins, as :func:`scalenet.kernels.max_pool`); the reference's windowed view is several times
  slower on the small maps of embedded networks;
- everything else: the reference layer's ``forward``.

BLAS threads: while a numpy product runs, OpenBLAS is limited to one thread per call (``threadpoolctl``,
when installed) so that ``threads`` is the number of cores used, not a multiple.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace

import numpy as np

from scalenet import kernels
from scalenet.errors import ScalenetError, ShapeError
from scalenet.ir import Add, AvgPool, Clip, Concat, Conv, Dense, Flatten, GlobalAvgPool, Graph, MaxPool
from scalenet.quant import QParams, requantize

from .cpu_model import layer_class, layer_work, parallel_ways

__all__ = ["SoftwareWorkers", "depthwise_accumulate", "max_pool", "ort_conv_eligible", "ort_dense_eligible",
           "KERNELS"]

KERNELS = ("auto", "numpy", "ort")
_INT32 = 2 ** 31 - 1


def _ort():
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime


def _s8s8(layer, in_q: QParams, out_q: QParams, reduction: int) -> bool:
    """int8 in and out, per-tensor activation parameters, int8 weights with zero point 0 (per tensor or
    channel), and no accumulator that can leave int32 (|x - x_zp| <= 255, |w| <= 128)."""
    if not (layer.weight.dtype == np.int8 and in_q.dtype.name == "int8" and out_q.dtype.name == "int8"
            and not in_q.per_channel and not out_q.per_channel and not np.any(layer.w_q.zero_point)):
        return False
    return reduction * 255 * 128 + int(np.abs(layer.bias.astype(np.int64)).max(initial=0)) <= _INT32


def ort_conv_eligible(layer, in_q: QParams, out_q: QParams) -> bool:
    """A conv onnxruntime's s8s8 QLinearConv computes exactly as the reference (2-D, see :func:`_s8s8`)."""
    return (isinstance(layer, Conv) and layer.spatial_dims == 2
            and _s8s8(layer, in_q, out_q, int(np.prod(layer.weight.shape[1:]))))


def ort_dense_eligible(layer, in_q: QParams, out_q: QParams) -> bool:
    """A dense layer onnxruntime computes exactly as a 1x1 s8s8 QLinearConv."""
    return isinstance(layer, Dense) and _s8s8(layer, in_q, out_q, layer.weight.shape[1])


def _ort_session(layer, in_q, out_q):
    """An in-memory one-node QLinearConv session for ``layer`` (a Conv, or a Dense as a 1x1 conv)."""
    from onnx import TensorProto, helper, numpy_helper
    ort = _ort()
    if isinstance(layer, Dense):
        weight, attrs = layer.weight[:, :, None, None], {}
        cin = layer.weight.shape[1]
    else:
        weight = layer.weight
        attrs = dict(pads=list(layer.pads), strides=list(layer.stride), dilations=list(layer.dilation),
                     group=layer.groups)
        cin = layer.weight.shape[1] * layer.groups
    init = [numpy_helper.from_array(np.float32(in_q.scale), "xs"),
            numpy_helper.from_array(np.array(int(in_q.zero_point), np.int8), "xz"),
            numpy_helper.from_array(np.ascontiguousarray(weight), "w"),
            numpy_helper.from_array(np.asarray(layer.w_q.scale, np.float32), "ws"),
            numpy_helper.from_array(np.zeros(np.shape(layer.w_q.scale), np.int8), "wz"),
            numpy_helper.from_array(np.float32(out_q.scale), "ys"),
            numpy_helper.from_array(np.array(int(out_q.zero_point), np.int8), "yz"),
            numpy_helper.from_array(layer.bias.astype(np.int32), "b")]
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"], **attrs)
    graph = helper.make_graph([node], "tile", [helper.make_tensor_value_info("x", TensorProto.INT8, ["n", int(cin), "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.INT8, None)], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1            # the worker pool provides the parallelism
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _slice_q(q: QParams, lo, hi) -> QParams:
    scale = q.scale[lo:hi] if q.scale.ndim == 1 else q.scale
    zp = q.zero_point[lo:hi] if q.zero_point.ndim == 1 else q.zero_point
    return QParams(scale, zp, q.dtype.name)


def depthwise_accumulate(x, weight, bias, stride, pads, dilation, x_zero_point, w_zero_point=0):
    """Exact int64 accumulators of a convolution with one input channel per group (``weight`` (O, 1, KH, KW)
    or (O, 1, KW); ``O`` a multiple of the input channels): one vectorised multiply-add per tap."""
    x = np.asarray(x)
    w = np.asarray(weight)
    one_d = x.ndim == 3
    if one_d:
        x, w = x[:, :, None, :], w[:, :, None, :]
        stride, dilation = (1, stride[0]), (1, dilation[0])
        pads = (0, pads[0], 0, pads[1])
    n, c, h, wd = x.shape
    co, _, kh, kw = w.shape
    mult = co // c
    sh, sw = stride
    dh, dw = dilation
    pt, pl, pb, pr = pads
    oh = kernels.conv_output_size(h, kh, sh, pt, pb, dh)
    ow = kernels.conv_output_size(wd, kw, sw, pl, pr, dw)
    xs = x.astype(np.int32) - np.int32(x_zero_point)
    if mult > 1:
        xs = np.repeat(xs, mult, axis=1)
    xp = np.pad(xs, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    wzp = np.asarray(w_zero_point, dtype=np.int32)
    ws = (w.astype(np.int32) - (wzp.reshape(-1, 1, 1, 1) if wzp.ndim == 1 else wzp))[:, 0]
    acc = np.zeros((n, co, oh, ow), dtype=np.int64)
    for ky in range(kh):
        for kx in range(kw):
            win = xp[:, :, ky * dh:ky * dh + (oh - 1) * sh + 1:sh, kx * dw:kx * dw + (ow - 1) * sw + 1:sw]
            acc += win * ws[None, :, ky, kx, None, None].astype(np.int64)
    acc += np.asarray(bias, dtype=np.int64).reshape(1, -1, 1, 1)
    return acc[:, :, 0, :] if one_d else acc


def max_pool(x, kernel, stride, pads, ceil_mode=False):
    """:func:`scalenet.kernels.max_pool` (no dilation) as a running maximum over strided views."""
    x = np.asarray(x)
    one_d = x.ndim == 3
    if one_d:
        x = x[:, :, None, :]
        kernel, stride, pads = (1, kernel[0]), (1, stride[0]), (0, pads[0], 0, pads[1])
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = kernel, stride, pads
    oh = kernels.pool_output_size(h, kh, sh, pt, pb, 1, ceil_mode)
    ow = kernels.pool_output_size(w, kw, sw, pl, pr, 1, ceil_mode)
    need_h, need_w = (oh - 1) * sh + kh, (ow - 1) * sw + kw
    if pt or pl or need_h > h + pt or need_w > w + pl:
        xp = np.full((n, c, max(need_h, h + pt), max(need_w, w + pl)), np.iinfo(x.dtype).min, x.dtype)
        xp[:, :, pt:pt + h, pl:pl + w] = x
    else:
        xp = x
    out = None
    for ky in range(kh):
        for kx in range(kw):
            v = xp[:, :, ky:ky + (oh - 1) * sh + 1:sh, kx:kx + (ow - 1) * sw + 1:sw]
            out = v.copy() if out is None else np.maximum(out, v, out=out)
    return out[:, :, 0, :] if one_d else out


def _conv_tile(layer: Conv, x, in_q, out_q):
    """Reference semantics of ``layer`` on input ``x`` (already the tile's channels)."""
    cig = layer.weight.shape[1]
    if cig == 1 and layer.groups > 1 and layer.groups == x.shape[1]:
        acc = depthwise_accumulate(x, layer.weight, layer.bias, layer.stride, layer.pads, layer.dilation,
                                   int(in_q.zero_point), layer.w_q.zero_point)
    else:
        with _Blas.single():
            acc = layer.accumulate(x, in_q)
    return requantize(acc, layer.multiplier(in_q, out_q), out_q.zero_point, out_q.dtype,
                      lo=layer.lo, hi=layer.hi, axis=1)


def _conv_tiles(layer: Conv, n_tiles):
    """Split output channels into at most ``n_tiles`` ranges of whole groups: (sub-layer, in lo, in hi, out lo, out hi)."""
    cout = layer.weight.shape[0]
    groups = layer.groups
    cog, cig = cout // groups, layer.weight.shape[1]
    if groups == 1:
        bounds = np.linspace(0, cout, min(n_tiles, cout) + 1).round().astype(int)
        unit_out, unit_in = 1, None
    else:
        bounds = np.linspace(0, groups, min(n_tiles, groups) + 1).round().astype(int)
        unit_out, unit_in = cog, cig
    tiles = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        if a == b:
            continue
        olo, ohi = a * unit_out, b * unit_out
        sub = replace(layer, weight=layer.weight[olo:ohi], bias=layer.bias[olo:ohi], w_q=_slice_q(layer.w_q, olo, ohi),
                      groups=1 if groups == 1 else b - a)
        ilo, ihi = (None, None) if groups == 1 else (a * unit_in, b * unit_in)
        tiles.append((sub, ilo, ihi, olo, ohi))
    return tiles


def _dense_tiles(layer: Dense, n_tiles):
    cout = layer.weight.shape[0]
    bounds = np.linspace(0, cout, min(n_tiles, cout) + 1).round().astype(int)
    return [(replace(layer, weight=layer.weight[a:b], bias=layer.bias[a:b], w_q=_slice_q(layer.w_q, a, b)), a, b)
            for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _clamp(layer):
    """The clamp onnxruntime's QLinearConv does not apply (a fused ReLU/ReLU6): (lo or None, hi or None),
    None for a bound the int8 saturation already applies."""
    lo = layer.lo if layer.lo is not None and layer.lo > -128 else None
    hi = layer.hi if layer.hi is not None and layer.hi < 127 else None
    return None if lo is None and hi is None else (lo, hi)


class _Blas:
    """Limits BLAS to one thread while a numpy product runs (no-op without threadpoolctl)."""

    _controller = None
    _lock = threading.Lock()
    _depth = 0
    _ctx = None

    @classmethod
    @contextmanager
    def single(cls):
        with cls._lock:
            if cls._controller is None:
                try:
                    from threadpoolctl import ThreadpoolController
                    cls._controller = ThreadpoolController()
                except ImportError:
                    cls._controller = False
            if cls._controller and cls._depth == 0:
                cls._ctx = cls._controller.limit(limits=1, user_api="blas")
            cls._depth += 1
        try:
            yield
        finally:
            with cls._lock:
                cls._depth -= 1
                if cls._depth == 0 and cls._ctx is not None:
                    cls._ctx.restore_original_limits()
                    cls._ctx = None


def _batch_chunks(n, ways):
    bounds = np.linspace(0, n, min(n, ways) + 1).round().astype(int)
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


class SoftwareWorkers:
    """A pool of ``threads`` software workers (default: the cores this process may use).

    ``split_all=True`` tiles every layer over the threads, however small (to test the tiling).
    ``run_layer(graph, layer, inputs)`` takes the batched integer arrays of the layer's inputs (as
    :meth:`Graph.run` passes them) and returns the batched output; ``run_graph(graph, x)`` runs a network.
    What a layer needs besides its inputs (tiles, onnxruntime sessions) is prepared on its first run and
    kept for the workers' lifetime.
    """

    def __init__(self, threads: int | None = None, *, kernel: str = "auto", split_all: bool = False):
        if threads is None:
            threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ScalenetError(f"threads must be a positive integer, not {threads!r}")
        if kernel not in KERNELS:
            raise ScalenetError(f"kernel must be one of {', '.join(KERNELS)}, not {kernel!r}")
        if kernel == "ort" and _ort() is None:
            raise ScalenetError("kernel='ort' needs onnxruntime (pip install onnxruntime)")
        self.threads = threads
        self.kernel = kernel
        self.split_all = split_all          #: tile every layer, however small (tests of the tiling)
        self._plans = {}
        self._plans_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="scalenet-sw") if threads > 1 else None

    # -- lifecycle ------------------------------------------------------------------------------------
    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._plans.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _map(self, fn, items):
        if self._pool is None or len(items) == 1:
            return [fn(i) for i in items]
        return list(self._pool.map(fn, items))

    def ways(self, graph: Graph, layer) -> int:
        """How many tiles a sample of ``layer`` is cut into (1: it runs whole on the calling thread)."""
        if self.split_all:
            return self.threads
        return parallel_ways(layer_class(layer), layer_work(graph, layer), self.threads)

    # -- layers ---------------------------------------------------------------------------------------
    def run_layer(self, graph: Graph, layer, inputs) -> np.ndarray:
        xs = [np.asarray(v) for v in inputs]
        if len(xs) != len(layer.inputs):
            raise ShapeError(f"layer {layer.name} takes {len(layer.inputs)} inputs, got {len(xs)}")
        for name, v in zip(layer.inputs, xs):
            t = graph.tensors[name]
            if v.shape[1:] != t.shape or v.dtype != t.q.dtype.np_dtype:
                raise ShapeError(f"layer {layer.name}: input {name!r} must be a batch of {t.q.dtype.name} "
                                 f"{t.shape}, got {v.dtype} {v.shape}")
        return self._plan(graph, layer)(xs)

    def _plan(self, graph, layer):
        key = (id(graph), id(layer))
        hit = self._plans.get(key)
        if hit is None or hit[0] is not graph or hit[1] is not layer:
            with self._plans_lock:
                hit = self._plans[key] = (graph, layer, self._make_plan(graph, layer))
        return hit[2]

    def _make_plan(self, graph, layer):
        """A function of the batched inputs computing ``layer``: the kernel and tiling chosen once."""
        in_q = [graph.tensors[i].q for i in layer.inputs]
        out_q = graph.tensors[layer.output].q
        ways = self.ways(graph, layer)
        ort = self.kernel != "numpy" and _ort() is not None
        if isinstance(layer, Conv):
            if ort and ort_conv_eligible(layer, in_q[0], out_q):
                return self._ort_plan(layer, in_q[0], out_q, ways)
            return self._conv_plan(layer, in_q[0], out_q, ways)
        if isinstance(layer, Dense):
            if ort and ort_dense_eligible(layer, in_q[0], out_q):
                return self._ort_plan(layer, in_q[0], out_q, ways)
            return self._dense_plan(layer, in_q[0], out_q, ways)
        if isinstance(layer, MaxPool):
            return self._channelwise_plan(lambda xs: max_pool(xs[0], layer.kernel, layer.stride, layer.pads,
                                                              layer.ceil_mode), ways)
        if isinstance(layer, (AvgPool, GlobalAvgPool, Clip, Add)):
            return self._channelwise_plan(lambda xs: layer.forward(xs, in_q, out_q), ways)
        if isinstance(layer, (Concat, Flatten)):
            return lambda xs: layer.forward(xs, in_q, out_q)
        raise ScalenetError(f"layer {layer.name}: the software workers cannot run op {layer.kind!r}")

    def _items(self, n, ways, n_tiles):
        """(batch lo, batch hi, tile index) work items: batch chunks first, then channel tiles."""
        chunks = _batch_chunks(n, ways) if ways > 1 else [(0, n)]
        return [(a, b, t) for a, b in chunks for t in range(n_tiles)]

    def _ort_plan(self, layer, in_q, out_q, ways):
        dense = isinstance(layer, Dense)
        tiles = ([(sub, None, None, a, b) for sub, a, b in _dense_tiles(layer, ways)] if dense
                 else _conv_tiles(layer, ways))
        sessions = [_ort_session(sub, in_q, out_q) for sub, *_ in tiles]
        clamp = _clamp(layer)
        cout = layer.weight.shape[0]

        def run_tile(x, t):
            sub, ilo, ihi, _, _ = tiles[t]
            xi = x if ilo is None else x[:, ilo:ihi]
            y = sessions[t].run(None, {"x": np.ascontiguousarray(xi)})[0]
            if clamp is not None:               # in place: np.clip's dispatch costs ~20 us here
                if clamp[0] is not None:
                    np.maximum(y, np.int8(clamp[0]), out=y)
                if clamp[1] is not None:
                    np.minimum(y, np.int8(clamp[1]), out=y)
            return y

        if len(tiles) == 1 and ways == 1:
            def run(xs):
                x = xs[0]
                y = run_tile(x[:, :, None, None] if dense else x, 0)
                return y.reshape(x.shape[0], cout) if dense else y
            return run

        def run(xs):
            x = xs[0]
            n = x.shape[0]
            x4 = x[:, :, None, None] if dense else x
            items = self._items(n, ways, len(tiles))
            parts = self._map(lambda it: run_tile(x4[it[0]:it[1]], it[2]), items)
            out = np.empty((n, cout, *parts[0].shape[2:]), np.int8)
            for (a, b, t), y in zip(items, parts):
                out[a:b, tiles[t][3]:tiles[t][4]] = y
            return out.reshape(n, cout) if dense else out
        return run

    def _conv_plan(self, layer, in_q, out_q, ways):
        tiles = _conv_tiles(layer, ways)
        cout = layer.weight.shape[0]

        def run(xs):
            x = xs[0]
            n = x.shape[0]
            items = self._items(n, ways, len(tiles))

            def work(it):
                a, b, t = it
                sub, ilo, ihi, _, _ = tiles[t]
                return _conv_tile(sub, x[a:b] if ilo is None else x[a:b, ilo:ihi], in_q, out_q)

            parts = self._map(work, items)
            if len(parts) == 1:
                return parts[0]
            out = np.empty((n, cout, *parts[0].shape[2:]), dtype=out_q.dtype.np_dtype)
            for (a, b, t), y in zip(items, parts):
                out[a:b, tiles[t][3]:tiles[t][4]] = y
            return out
        return run

    def _dense_plan(self, layer, in_q, out_q, ways):
        tiles = _dense_tiles(layer, ways)
        mults = [sub.multiplier(in_q, out_q) for sub, _, _ in tiles]

        def work(t, x):
            sub = tiles[t][0]
            with _Blas.single():
                acc = sub.accumulate(x, in_q)
            return requantize(acc, mults[t], out_q.zero_point, out_q.dtype, lo=sub.lo, hi=sub.hi, axis=1)

        def run(xs):
            parts = self._map(lambda t: work(t, xs[0]), list(range(len(tiles))))
            return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        return run

    def _channelwise_plan(self, fn, ways):
        """Per-channel ops: split the channel axis (axis 1 of every input) when the layer is large."""
        if ways <= 1:
            return fn

        def run(xs):
            bounds = np.linspace(0, xs[0].shape[1], min(ways, xs[0].shape[1]) + 1).round().astype(int)
            cuts = [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
            parts = self._map(lambda ab: fn([v[:, ab[0]:ab[1]] for v in xs]), cuts)
            return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        return run

    # -- networks -------------------------------------------------------------------------------------
    def run_graph(self, graph: Graph, x, *, keep=False, placement=None) -> dict:
        """Run ``graph`` on input ``x`` (one sample or a batch): {output: batched array}. ``placement``
        optionally maps layer names to ``"reference"`` to run those layers with ``layer.forward`` instead."""
        values = {graph.inputs[0]: graph.check_input(x)}
        for layer in graph.layers:
            xs = [values[i] for i in layer.inputs]
            if placement is not None and placement.get(layer.name) == "reference":
                values[layer.output] = layer.forward(xs, [graph.tensors[i].q for i in layer.inputs],
                                                     graph.tensors[layer.output].q)
            else:
                values[layer.output] = self.run_layer(graph, layer, xs)
        return values if keep else {o: values[o] for o in graph.outputs}
