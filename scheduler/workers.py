"""Software workers: a thread pool that runs layers, each split into tiles run in parallel, bit-exact.

Why threads work here: the heavy part of every kernel is numpy (BLAS matrix products, vectorised
element-wise passes), which releases the GIL. A layer is cut into independent tiles — output-channel
ranges (whole groups for grouped convolutions) and batch samples — each computed by the same integer
kernels as the reference and requantised with :func:`scalenet.quant.requantize`, so the concatenated
result is the reference's, integer for integer (tests/test_scheduler_workers.py checks every layer kind
and every zoo network).

Kernels: convolutions and dense layers use the reference's exact float32-BLAS products
(:mod:`scalenet.kernels`), except depthwise convolutions, which use a direct tap loop (``kernel_h *
kernel_w`` vectorised multiply-adds in int64: exact, and much faster than one small matrix product per
channel). Where onnxruntime is installed, 2-D convolutions with int8 activations and symmetric int8
weights run as an in-memory ``QLinearConv`` (s8s8), one session per tile: that kernel computes the true
integer dot product over the full weight range and requantises like :func:`scalenet.quant.requantize`
(tests/test_ort_exact.py checks both), and it is faster than the numpy path here
(benchmarks/sw_workers_vs_ort.py). onnxruntime's u8s8 path is never used: on x86 without VNNI it
saturates int16 pair sums with full-range weights.

BLAS threads: while a layer runs, OpenBLAS is limited to one thread per call (``threadpoolctl``, when
installed) so that ``threads`` is the number of cores used, not a multiple (and no BLAS thread spins
against the workers).
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

__all__ = ["SoftwareWorkers", "depthwise_accumulate", "ort_conv_eligible", "KERNELS"]

KERNELS = ("auto", "numpy", "ort")


def _ort():
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime


def ort_conv_eligible(layer, in_q: QParams, out_q: QParams) -> bool:
    """A conv onnxruntime's s8s8 QLinearConv computes exactly as the reference: 2-D, int8 in and out,
    int8 weights with zero point 0 (per tensor or channel), per-tensor activation parameters."""
    return (isinstance(layer, Conv) and layer.spatial_dims == 2 and layer.weight.dtype == np.int8
            and in_q.dtype.name == "int8" and out_q.dtype.name == "int8" and not in_q.per_channel
            and not out_q.per_channel and not np.any(layer.w_q.zero_point))


def _ort_session(layer: Conv, in_q, out_q):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    ort = _ort()
    cin = layer.weight.shape[1] * layer.groups
    init = [numpy_helper.from_array(np.float32(in_q.scale), "xs"),
            numpy_helper.from_array(np.array(int(in_q.zero_point), np.int8), "xz"),
            numpy_helper.from_array(layer.weight, "w"),
            numpy_helper.from_array(np.asarray(layer.w_q.scale, np.float32), "ws"),
            numpy_helper.from_array(np.zeros(np.shape(layer.w_q.scale), np.int8), "wz"),
            numpy_helper.from_array(np.float32(out_q.scale), "ys"),
            numpy_helper.from_array(np.array(int(out_q.zero_point), np.int8), "yz"),
            numpy_helper.from_array(layer.bias.astype(np.int32), "b")]
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
                            pads=list(layer.pads), strides=list(layer.stride), dilations=list(layer.dilation),
                            group=layer.groups)
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


def _conv_tile(layer: Conv, x, in_q, out_q):
    """Reference semantics of ``layer`` on input ``x`` (already the tile's channels)."""
    cig = layer.weight.shape[1]
    if cig == 1 and layer.groups > 1 and layer.groups == x.shape[1]:
        acc = depthwise_accumulate(x, layer.weight, layer.bias, layer.stride, layer.pads, layer.dilation,
                                   int(in_q.zero_point), layer.w_q.zero_point)
    else:
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


def _dense_tile(layer: Dense, x, in_q, out_q):
    acc = layer.accumulate(x, in_q)
    return requantize(acc, layer.multiplier(in_q, out_q), out_q.zero_point, out_q.dtype,
                      lo=layer.lo, hi=layer.hi, axis=1)


class _Blas:
    """Limits BLAS to one thread while tiles run in parallel (no-op without threadpoolctl)."""

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


class SoftwareWorkers:
    """A pool of ``threads`` software workers (default: the cores this process may use).

    ``run_layer(graph, layer, inputs)`` takes the batched integer arrays of the layer's inputs (as
    :meth:`Graph.run` passes them) and returns the batched output; ``run_graph(graph, x)`` runs a network.
    """

    def __init__(self, threads: int | None = None, *, kernel: str = "auto"):
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
        self._sessions = {}
        self._sessions_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="scalenet-sw") if threads > 1 else None

    # -- lifecycle ------------------------------------------------------------------------------------
    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._sessions.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _map(self, fn, items):
        items = list(items)
        if self._pool is None or len(items) == 1:
            return [fn(i) for i in items]
        return list(self._pool.map(fn, items))

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
        in_q = [graph.tensors[i].q for i in layer.inputs]
        out_q = graph.tensors[layer.output].q
        with _Blas.single():
            if isinstance(layer, Conv):
                return self._conv(layer, xs[0], in_q[0], out_q)
            if isinstance(layer, Dense):
                return self._dense(layer, xs[0], in_q[0], out_q)
            if isinstance(layer, (MaxPool, AvgPool, GlobalAvgPool, Clip)):
                return self._channelwise(layer, xs, in_q, out_q)
            if isinstance(layer, Add):
                return self._channelwise(layer, xs, in_q, out_q)
            if isinstance(layer, (Concat, Flatten)):
                return layer.forward(xs, in_q, out_q)
        raise ScalenetError(f"layer {layer.name}: the software workers cannot run op {layer.kind!r}")

    def _tile_count(self, batch):
        return max(1, -(-self.threads // batch)) if self.threads > 1 else 1

    def _conv(self, layer, x, in_q, out_q):
        n = x.shape[0]
        tiles = _conv_tiles(layer, self._tile_count(n))
        out_shape = (n, layer.weight.shape[0], *layer.out_shape([x.shape[1:]])[1:])
        out = np.empty(out_shape, dtype=out_q.dtype.np_dtype)

        use_ort = self.kernel != "numpy" and _ort() is not None and ort_conv_eligible(layer, in_q, out_q)

        def work(item):
            i, (sub, ilo, ihi, olo, ohi) = item
            xi = x[i:i + 1] if ilo is None else x[i:i + 1, ilo:ihi]
            if use_ort:
                y = self._session(layer, sub, olo, ohi, in_q, out_q).run(None, {"x": np.ascontiguousarray(xi)})[0]
                if layer.lo is not None or layer.hi is not None:
                    y = np.clip(y, -128 if layer.lo is None else max(layer.lo, -128),
                                127 if layer.hi is None else min(layer.hi, 127)).astype(np.int8)
                out[i:i + 1, olo:ohi] = y
            else:
                out[i:i + 1, olo:ohi] = _conv_tile(sub, xi, in_q, out_q)

        self._map(work, [(i, t) for i in range(n) for t in tiles])
        return out

    def _session(self, layer, sub, olo, ohi, in_q, out_q):
        key = (id(layer), olo, ohi, hash(in_q), hash(out_q))
        with self._sessions_lock:
            hit = self._sessions.get(key)
            if hit is None or hit[0] is not layer:
                hit = self._sessions[key] = (layer, _ort_session(sub, in_q, out_q))
        return hit[1]

    def _dense(self, layer, x, in_q, out_q):
        n = x.shape[0]
        cout = layer.weight.shape[0]
        k = min(self.threads, cout)
        bounds = np.linspace(0, cout, k + 1).round().astype(int)
        out = np.empty((n, cout), dtype=out_q.dtype.np_dtype)

        def work(ab):
            a, b = ab
            sub = replace(layer, weight=layer.weight[a:b], bias=layer.bias[a:b], w_q=_slice_q(layer.w_q, a, b))
            out[:, a:b] = _dense_tile(sub, x, in_q, out_q)

        self._map(work, [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a])
        return out

    def _channelwise(self, layer, xs, in_q, out_q):
        """Per-channel ops: split the channel axis (axis 1 of every input)."""
        c = xs[0].shape[1]
        k = min(self.threads, c)
        if k <= 1:
            return layer.forward(xs, in_q, out_q)
        bounds = np.linspace(0, c, k + 1).round().astype(int)
        parts = self._map(lambda ab: layer.forward([v[:, ab[0]:ab[1]] for v in xs], in_q, out_q),
                          [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a])
        return np.concatenate(parts, axis=1)

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
