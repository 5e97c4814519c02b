"""A small graph builder for the zoo: creates FloatNet nodes, tracks shapes, seeds weights.

Weights are He-initialised from one ``numpy.random.Generator`` seeded per network, drawn in build order,
so a (network, seed) pair always gives the same weights. With ``lazy=True`` no weights are drawn: every
weight is a read-only zero view (``np.broadcast_to``) of the right shape, which costs no memory, so the
structure (layers, parameter and MAC counts) of even AlexNet is available in milliseconds.
"""

from __future__ import annotations

import math

import numpy as np

from .. import kernels
from ..floatnet import FloatNet, FNode

__all__ = ["Builder", "structure"]


class Builder:
    def __init__(self, name, input_shape, *, seed=0, lazy=False, input_name="input"):
        self.name = name
        self.input_name = input_name
        self.input_shape = tuple(int(s) for s in input_shape)
        self.rng = np.random.default_rng(seed)
        self.lazy = lazy
        self.nodes = []
        self.shapes = {input_name: self.input_shape}
        self._count = {}

    # -- helpers ---------------------------------------------------------------------------------------
    def _name(self, prefix):
        self._count[prefix] = self._count.get(prefix, 0) + 1
        return f"{prefix}{self._count[prefix]}"

    def _normal(self, shape, std):
        if self.lazy:
            return np.broadcast_to(np.float32(0), shape)
        return (self.rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)

    def _add(self, op, name, inputs, shape, **attrs):
        out = name
        self.nodes.append(FNode(op, name, list(inputs), out, attrs))
        self.shapes[out] = tuple(int(s) for s in shape)
        return out

    # -- ops -------------------------------------------------------------------------------------------
    def conv(self, x, cout, kernel, stride=1, pad=0, *, groups=1, relu=True, bias=True, gain=1.0, name=None):
        """Conv (1-D if the input is (C, W), else 2-D), He-initialised, optionally followed by a ReLU.

        ``pad`` is symmetric (an int) or explicit (ONNX order: begins, then ends). ``gain`` scales the
        He standard deviation (sqrt(2 / fan_in) before a ReLU, sqrt(1 / fan_in) without one).
        """
        cin, *spatial = self.shapes[x]
        nd = len(spatial)
        k = (kernel,) * nd if np.isscalar(kernel) else tuple(kernel)
        s = (stride,) * nd if np.isscalar(stride) else tuple(stride)
        pads = (pad,) * (2 * nd) if np.isscalar(pad) else tuple(pad)
        if cin % groups or cout % groups:
            raise ValueError(f"{self.name}: {cin} -> {cout} channels do not fit groups={groups}")
        fan_in = cin // groups * math.prod(k)
        std = gain * math.sqrt((2.0 if relu else 1.0) / fan_in)
        w = self._normal((cout, cin // groups, *k), std)
        b = self._normal((cout,), 0.01) if bias else None
        out_sp = [kernels.conv_output_size(spatial[i], k[i], s[i], pads[i], pads[i + nd]) for i in range(nd)]
        name = name or self._name("conv")
        stride_attr = s[0] if len(set(s)) == 1 else s
        y = self._add("conv", name, [x], (cout, *out_sp), weight=w, bias=b, stride=stride_attr, pads=pads,
                      dilation=1, groups=groups)
        return self.relu(y, name=f"{name}_relu") if relu else y

    def dense(self, x, out, *, relu=True, bias=True, gain=1.0, name=None):
        (fin,) = self.shapes[x]
        std = gain * math.sqrt((2.0 if relu else 1.0) / fin)
        w = self._normal((out, fin), std)
        b = self._normal((out,), 0.01) if bias else None
        name = name or self._name("fc")
        y = self._add("dense", name, [x], (out,), weight=w, bias=b)
        return self.relu(y, name=f"{name}_relu") if relu else y

    def relu(self, x, *, name=None):
        return self._add("relu", name or self._name("relu"), [x], self.shapes[x])

    def _pool(self, op, x, kernel, stride, pad, ceil_mode, name, **extra):
        c, *spatial = self.shapes[x]
        nd = len(spatial)
        k = (kernel,) * nd if np.isscalar(kernel) else tuple(kernel)
        stride = k if stride is None else stride
        s = (stride,) * nd if np.isscalar(stride) else tuple(stride)
        pads = (pad,) * (2 * nd) if np.isscalar(pad) else tuple(pad)
        out_sp = [kernels.pool_output_size(spatial[i], k[i], s[i], pads[i], pads[i + nd], 1, ceil_mode)
                  for i in range(nd)]
        # Tuples (not scalars) so 1-D pools stay 1-D in the IR.
        return self._add(op, name or self._name(op), [x], (c, *out_sp), kernel=k, stride=s, pads=pads,
                         ceil_mode=ceil_mode, **extra)

    def maxpool(self, x, kernel, stride=None, pad=0, *, ceil_mode=False, name=None):
        return self._pool("maxpool", x, kernel, stride, pad, ceil_mode, name)

    def avgpool(self, x, kernel, stride=None, pad=0, *, ceil_mode=False, count_include_pad=False, name=None):
        return self._pool("avgpool", x, kernel, stride, pad, ceil_mode, name,
                          count_include_pad=count_include_pad)

    def gap(self, x, *, name=None):
        c, *spatial = self.shapes[x]
        return self._add("gap", name or self._name("gap"), [x], (c, *([1] * len(spatial))))

    def add(self, a, b, *, relu=False, name=None):
        if self.shapes[a] != self.shapes[b]:
            raise ValueError(f"{self.name}: add of {self.shapes[a]} and {self.shapes[b]}")
        name = name or self._name("add")
        y = self._add("add", name, [a, b], self.shapes[a])
        return self.relu(y, name=f"{name}_relu") if relu else y

    def concat(self, xs, *, name=None):
        rest = {self.shapes[x][1:] for x in xs}
        if len(rest) != 1:
            raise ValueError(f"{self.name}: concat of {[self.shapes[x] for x in xs]}")
        c = sum(self.shapes[x][0] for x in xs)
        return self._add("concat", name or self._name("concat"), xs, (c, *rest.pop()))

    def flatten(self, x, *, name=None):
        return self._add("flatten", name or self._name("flatten"), [x], (math.prod(self.shapes[x]),))

    def finish(self, output, **meta):
        meta = dict(meta, output_shape=self.shapes[output])
        return FloatNet(self.name, self.input_name, self.input_shape, self.nodes, [output], meta=meta)


def _fused_relus(net):
    """Names of the relu nodes quantize_net fuses into their producer (same rule as floatnet)."""
    consumers = {}
    for node in net.nodes:
        for i in node.inputs:
            consumers[i] = consumers.get(i, 0) + 1
    producer = {n.output: n for n in net.nodes}
    fused, done = set(), set()
    for node in net.nodes:
        if node.op in ("relu", "clip"):
            src = producer.get(node.inputs[0])
            if (src is not None and src.op in ("conv", "dense", "add") and src.name not in done
                    and consumers.get(node.inputs[0], 0) == 1 and node.inputs[0] not in net.outputs):
                done.add(src.name)
                fused.add(node.name)
    return fused


def _norm(v, n):
    return (int(v),) * n if np.isscalar(v) else tuple(int(i) for i in v)


def structure(net: FloatNet) -> dict:
    """Layer count (after activation fusion, as in the quantised graph), parameters and MACs, computed
    from the float net's nodes and shapes alone (the weights' values are not read)."""
    shapes = {net.input_name: tuple(net.input_shape)}
    params = macs = 0
    for node in net.nodes:
        a = node.attrs
        x = shapes[node.inputs[0]]
        if node.op == "conv":
            w = a["weight"]
            nd = w.ndim - 2
            pads, st = _norm(a.get("pads", 0), 2 * nd), _norm(a.get("stride", 1), nd)
            sp = [kernels.conv_output_size(x[1 + i], w.shape[2 + i], st[i], pads[i], pads[i + nd])
                  for i in range(nd)]
            out = (w.shape[0], *sp)
            params += w.size + (0 if a.get("bias") is None else w.shape[0])
            macs += math.prod(out) * math.prod(w.shape[1:])
        elif node.op == "dense":
            w = a["weight"]
            out = (w.shape[0],)
            params += w.size + (0 if a.get("bias") is None else w.shape[0])
            macs += w.size
        elif node.op in ("maxpool", "avgpool"):
            nd = len(x) - 1
            k = _norm(a["kernel"], nd)
            st = _norm(a.get("stride") or k, nd)
            pads = _norm(a.get("pads") or 0, 2 * nd)
            out = (x[0], *[kernels.pool_output_size(x[1 + i], k[i], st[i], pads[i], pads[i + nd], 1,
                                                    a.get("ceil_mode", False)) for i in range(nd)])
        elif node.op == "gap":
            out = (x[0], *([1] * (len(x) - 1)))
        elif node.op == "concat":
            out = (sum(shapes[i][0] for i in node.inputs), *x[1:])
        elif node.op == "flatten":
            out = (math.prod(x),)
        else:
            out = x
        shapes[node.output] = tuple(int(s) for s in out)
    return {"layers": len(net.nodes) - len(_fused_relus(net)), "params": int(params), "macs": int(macs),
            "output_shape": shapes[net.outputs[0]]}
