"""Float networks and post-training quantisation into the int8 IR.

A :class:`FloatNet` is the float32 form of a network (what the zoo builds and what a float ONNX model
imports to); :func:`quantize_net` calibrates it on sample inputs and produces the quantised
:class:`~scalenet.ir.Graph` the rest of SCALENet runs. One quantiser serves both paths, so a zoo network
and the same network exported and re-imported through ONNX quantise identically.

Quantisation choices (documented because they decide bit patterns): weights int8 symmetric per output
channel (zero point 0, range +-127); activations int8 (or uint8) asymmetric from the calibration min/max;
bias int32 at ``x_scale * w_scale``; ReLU/ReLU6/Clip after a conv, dense or add fused into its clamp;
max pool, flatten and concat keep their input's parameters (concat inputs share one range).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import kernels
from .errors import ModelError, ShapeError, UnsupportedOperatorError
from .ir import Add, AvgPool, Clip, Concat, Conv, Dense, Flatten, GlobalAvgPool, Graph, MaxPool, Tensor
from .quant import QParams, choose_qparams, quantize, quantize_bias

__all__ = ["FNode", "FloatNet", "quantize_net", "OPS"]

OPS = ("conv", "dense", "maxpool", "avgpool", "gap", "add", "concat", "flatten", "relu", "clip")


@dataclass
class FNode:
    """One float op. ``attrs`` by op:

    - conv: weight (OIHW or OIW float32), bias (O,) or None, stride, pads, dilation, groups
    - dense: weight (out, in), bias or None
    - maxpool / avgpool: kernel, stride, pads, ceil_mode; avgpool also count_include_pad
    - clip: lo, hi (floats; None for unbounded); relu has none
    """

    op: str
    name: str
    inputs: list
    output: str
    attrs: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.op not in OPS:
            raise UnsupportedOperatorError(f"node {self.name}: unsupported op {self.op!r}")


@dataclass
class FloatNet:
    name: str
    input_name: str
    input_shape: tuple
    nodes: list
    outputs: list
    meta: dict = field(default_factory=dict)

    def run(self, x, *, keep=False):
        """Float32 forward on a batch (or one sample); returns {tensor: batched array}."""
        x = np.asarray(x, dtype=np.float32)
        if x.shape == tuple(self.input_shape):
            x = x[None]
        if x.shape[1:] != tuple(self.input_shape):
            raise ShapeError(f"input of {self.name} must have shape {tuple(self.input_shape)}, got {x.shape}")
        values = {self.input_name: x}
        for node in self.nodes:
            try:
                xs = [values[i] for i in node.inputs]
            except KeyError as e:
                raise ModelError(f"node {node.name} reads {e.args[0]!r} before it is produced") from None
            values[node.output] = _float_forward(node, xs)
        return values if keep else {o: values[o] for o in self.outputs}


def _float_forward(node, xs):
    a = node.attrs
    if node.op == "conv":
        return kernels.conv(xs[0], a["weight"], a.get("bias"), a.get("stride", 1), a.get("pads", 0),
                            a.get("dilation", 1), a.get("groups", 1))
    if node.op == "dense":
        return kernels.dense(xs[0], a["weight"], a.get("bias"))
    if node.op == "maxpool":
        return kernels.max_pool(xs[0], a["kernel"], a.get("stride", 1), a.get("pads", 0), 1,
                                a.get("ceil_mode", False))
    if node.op == "avgpool":
        return kernels.avg_pool(xs[0], a["kernel"], a.get("stride", 1), a.get("pads", 0),
                                a.get("count_include_pad", False), a.get("ceil_mode", False))
    if node.op == "gap":
        return kernels.global_avg_pool(xs[0])
    if node.op == "add":
        return (xs[0] + xs[1]).astype(np.float32)
    if node.op == "concat":
        return np.concatenate(xs, axis=1)
    if node.op == "flatten":
        return xs[0].reshape(xs[0].shape[0], -1)
    if node.op == "relu":
        return np.maximum(xs[0], 0)
    if node.op == "clip":
        lo, hi = a.get("lo"), a.get("hi")
        return np.clip(xs[0], -np.inf if lo is None else lo, np.inf if hi is None else hi).astype(np.float32)
    raise UnsupportedOperatorError(f"node {node.name}: unsupported op {node.op!r}")


def _clip_bounds(node):
    if node.op == "relu":
        return 0.0, None
    return node.attrs.get("lo"), node.attrs.get("hi")


class _Classes:
    """Union-find over tensor names: tensors that must share quantisation parameters."""

    def __init__(self):
        self.parent = {}

    def find(self, a):
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a, b):
        self.parent[self.find(a)] = self.find(b)


def quantize_weights(weight, bias, x_scale):
    """Per-output-channel symmetric int8 weights and the matching int32 bias."""
    w = np.asarray(weight, dtype=np.float32)
    if not np.all(np.isfinite(w)):
        raise ModelError("weights contain NaN or infinite values")
    amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    w_scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    w_q = QParams(w_scale, np.zeros(w.shape[0], dtype=np.int64), "int8")
    qw = quantize(w, w_q, axis=0)
    qw = np.clip(qw, -127, 127).astype(np.int8)
    qb = None if bias is None else quantize_bias(bias, x_scale, w_scale)
    return qw, w_q, qb


def quantize_net(net: FloatNet, calibration, *, act_dtype="int8", input_q: QParams | None = None) -> Graph:
    """Calibrate ``net`` on ``calibration`` (a batch of float inputs) and build the int8 graph."""
    calibration = np.asarray(calibration, dtype=np.float32)
    if calibration.shape[1:] != tuple(net.input_shape):
        raise ShapeError(f"calibration data must be a batch of shape {tuple(net.input_shape)}, "
                         f"got {calibration.shape}")
    values = net.run(calibration, keep=True)

    consumers = {}
    for node in net.nodes:
        for i in node.inputs:
            consumers.setdefault(i, []).append(node)
    # Fuse an activation into the conv/dense/add that feeds only it.
    fused = {}            # producer name -> activation node
    skip = set()
    producer_of = {n.output: n for n in net.nodes}
    for node in net.nodes:
        if node.op in ("relu", "clip"):
            src = producer_of.get(node.inputs[0])
            if (src is not None and src.op in ("conv", "dense", "add") and src.name not in fused
                    and len(consumers.get(node.inputs[0], [])) == 1 and node.inputs[0] not in net.outputs):
                fused[src.name] = node
                skip.add(node.name)

    def out_name(node):
        return fused[node.name].output if node.name in fused else node.output

    classes = _Classes()
    classes.find(net.input_name)
    for node in net.nodes:
        if node.name in skip:
            continue
        classes.find(out_name(node))
        if node.op in ("maxpool", "flatten", "concat", "relu", "clip"):
            for i in node.inputs:
                classes.union(i, out_name(node))
    ranges = {}
    for name, v in values.items():
        root = classes.find(name)
        lo, hi = float(v.min()), float(v.max())
        old = ranges.get(root)
        ranges[root] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
    qparams = {}
    input_root = classes.find(net.input_name)
    for root, (lo, hi) in ranges.items():
        qparams[root] = input_q if (root == input_root and input_q is not None) else choose_qparams(lo, hi, act_dtype)

    def q_of(name):
        return qparams[classes.find(name)]

    def clamp(node, out_q):
        if node.name not in fused:
            return None, None
        lo, hi = _clip_bounds(fused[node.name])
        qlo = None if lo is None else int(quantize(np.float32(lo), out_q))
        qhi = None if hi is None else int(quantize(np.float32(hi), out_q))
        return qlo, qhi

    tensors = {net.input_name: Tensor(net.input_name, net.input_shape, q_of(net.input_name))}
    layers = []
    for node in net.nodes:
        if node.name in skip:
            continue
        out = out_name(node)
        out_q = q_of(out)
        tensors[out] = Tensor(out, values[out].shape[1:], out_q)
        common = dict(name=node.name, inputs=list(node.inputs), output=out)
        a = node.attrs
        if node.op in ("conv", "dense"):
            x_q = q_of(node.inputs[0])
            qw, w_q, qb = quantize_weights(a["weight"], a.get("bias"), x_q.scale)
            lo, hi = clamp(node, out_q)
            if node.op == "conv":
                nd = qw.ndim - 2
                layers.append(Conv(**common, weight=qw, w_q=w_q, bias=qb, stride=a.get("stride", 1),
                                   pads=a.get("pads", 0), dilation=a.get("dilation", 1),
                                   groups=a.get("groups", 1), lo=lo, hi=hi))
                assert layers[-1].spatial_dims == nd
            else:
                layers.append(Dense(**common, weight=qw, w_q=w_q, bias=qb, lo=lo, hi=hi))
        elif node.op == "add":
            lo, hi = clamp(node, out_q)
            layers.append(Add(**common, lo=lo, hi=hi))
        elif node.op == "maxpool":
            layers.append(MaxPool(**common, kernel=a["kernel"], stride=a.get("stride"), pads=a.get("pads"),
                                  ceil_mode=a.get("ceil_mode", False)))
        elif node.op == "avgpool":
            layers.append(AvgPool(**common, kernel=a["kernel"], stride=a.get("stride"), pads=a.get("pads"),
                                  ceil_mode=a.get("ceil_mode", False),
                                  count_include_pad=a.get("count_include_pad", False)))
        elif node.op == "gap":
            layers.append(GlobalAvgPool(**common))
        elif node.op == "concat":
            layers.append(Concat(**common))
        elif node.op == "flatten":
            layers.append(Flatten(**common))
        elif node.op in ("relu", "clip"):
            lo, hi = _clip_bounds(node)
            layers.append(Clip(**common, lo=None if lo is None else int(quantize(np.float32(lo), out_q)),
                               hi=None if hi is None else int(quantize(np.float32(hi), out_q))))
    return Graph(net.name, tensors, layers, [net.input_name], list(net.outputs), meta=dict(net.meta))
