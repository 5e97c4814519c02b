"""The network IR: a quantised layer graph that the reference, the RTL compiler and the scheduler consume.

Every tensor has a per-sample shape (no batch axis: ``(C, H, W)``, ``(C, W)`` or ``(F,)``) and its
quantisation parameters; every layer names its input and output tensors and carries only the parameters
of its own op. Requantisation multipliers are derived from the tensors' scales when needed (one source of
truth), with the rules of :mod:`scalenet.quant`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from . import kernels
from .errors import ModelError, ShapeError
from .quant import (QParams, add_rescale, avgpool_multiplier, requant_multiplier, requantize, requantize_add)

__all__ = [
    "Tensor", "Layer", "Conv", "Dense", "MaxPool", "AvgPool", "GlobalAvgPool", "Add", "Concat",
    "Flatten", "Clip", "Graph",
]


@dataclass
class Tensor:
    name: str
    shape: tuple
    q: QParams

    def __post_init__(self):
        self.shape = tuple(int(s) for s in self.shape)


@dataclass(kw_only=True)
class Layer:
    """Base of all layers. ``lo``/``hi`` are an optional fused integer clamp (ReLU/ReLU6) on the output."""

    name: str
    inputs: list
    output: str
    kind: ClassVar[str] = "layer"

    def out_shape(self, in_shapes):
        raise NotImplementedError

    def forward(self, xs, in_q, out_q):
        """Reference execution on batched integer arrays; returns the output array (batched)."""
        raise NotImplementedError

    def macs(self, in_shapes, out_shape) -> int:
        return 0

    def params(self) -> int:
        return 0


def _act_bounds(layer):
    return getattr(layer, "lo", None), getattr(layer, "hi", None)


@dataclass(kw_only=True)
class Conv(Layer):
    """1-D or 2-D convolution (grouped/depthwise included), bias, requantisation, optional fused clamp.

    ``weight`` is int8 OIHW (or OIW for 1-D), ``w_q`` its (per-tensor or per-output-channel) params,
    ``bias`` int32 at scale ``x_scale * w_scale``. ``pads`` are (top, left, bottom, right) for 2-D and
    (left, right) for 1-D.
    """

    weight: np.ndarray
    w_q: QParams
    bias: np.ndarray | None = None
    stride: tuple = (1, 1)
    pads: tuple = (0, 0, 0, 0)
    dilation: tuple = (1, 1)
    groups: int = 1
    lo: int | None = None
    hi: int | None = None
    kind: ClassVar[str] = "conv"

    def __post_init__(self):
        self.weight = np.asarray(self.weight)
        nd = self.weight.ndim - 2
        if nd not in (1, 2):
            raise ModelError(f"{self.name}: conv weight must be OIW or OIHW, got shape {self.weight.shape}")
        self.stride, self.dilation = _tuple(self.stride, nd), _tuple(self.dilation, nd)
        self.pads = _tuple(self.pads, 2 * nd)
        if self.bias is None:
            self.bias = np.zeros(self.weight.shape[0], dtype=np.int32)
        self.bias = np.asarray(self.bias, dtype=np.int32)

    @property
    def spatial_dims(self):
        return self.weight.ndim - 2

    @property
    def kernel(self):
        return tuple(self.weight.shape[2:])

    @property
    def depthwise(self):
        return self.groups > 1 and self.groups == self.weight.shape[0] and self.weight.shape[1] == 1

    def out_shape(self, in_shapes):
        (shape,) = in_shapes
        nd = self.spatial_dims
        if len(shape) != nd + 1:
            raise ShapeError(f"{self.name}: a {nd}-D conv needs a {nd + 1}-D input, got {shape}")
        c = shape[0]
        if c != self.weight.shape[1] * self.groups:
            raise ShapeError(f"{self.name}: input has {c} channels, weight expects "
                             f"{self.weight.shape[1] * self.groups}")
        sizes = [kernels.conv_output_size(shape[1 + i], self.kernel[i], self.stride[i], self.pads[i],
                                          self.pads[i + nd], self.dilation[i]) for i in range(nd)]
        return (self.weight.shape[0], *sizes)

    def multiplier(self, in_q, out_q):
        return requant_multiplier(in_q.scale, self.w_q.scale, out_q.scale)

    def accumulate(self, x, in_q):
        """int64 accumulators with bias, before requantisation (what the PE array computes)."""
        return kernels.conv(x, self.weight, self.bias, self.stride, self.pads, self.dilation, self.groups,
                            int(in_q.zero_point), self.w_q.zero_point)

    def forward(self, xs, in_q, out_q):
        acc = self.accumulate(xs[0], in_q[0])
        return requantize(acc, self.multiplier(in_q[0], out_q), out_q.zero_point, out_q.dtype,
                          lo=self.lo, hi=self.hi, axis=1)

    def macs(self, in_shapes, out_shape):
        return int(math.prod(out_shape) * math.prod(self.weight.shape[1:]))

    def params(self):
        return int(self.weight.size + self.bias.size)


@dataclass(kw_only=True)
class Dense(Layer):
    """Fully connected: ``weight`` int8 (out_features, in_features); input is a flat (F,) tensor."""

    weight: np.ndarray
    w_q: QParams
    bias: np.ndarray | None = None
    lo: int | None = None
    hi: int | None = None
    kind: ClassVar[str] = "dense"

    def __post_init__(self):
        self.weight = np.asarray(self.weight)
        if self.weight.ndim != 2:
            raise ModelError(f"{self.name}: dense weight must be 2-D, got shape {self.weight.shape}")
        if self.bias is None:
            self.bias = np.zeros(self.weight.shape[0], dtype=np.int32)
        self.bias = np.asarray(self.bias, dtype=np.int32)

    def out_shape(self, in_shapes):
        (shape,) = in_shapes
        if shape != (self.weight.shape[1],):
            raise ShapeError(f"{self.name}: dense expects input ({self.weight.shape[1]},), got {shape}")
        return (self.weight.shape[0],)

    def multiplier(self, in_q, out_q):
        return requant_multiplier(in_q.scale, self.w_q.scale, out_q.scale)

    def accumulate(self, x, in_q):
        return kernels.dense(x, self.weight, self.bias, int(in_q.zero_point), self.w_q.zero_point)

    def forward(self, xs, in_q, out_q):
        acc = self.accumulate(xs[0], in_q[0])
        return requantize(acc, self.multiplier(in_q[0], out_q), out_q.zero_point, out_q.dtype,
                          lo=self.lo, hi=self.hi, axis=1)

    def macs(self, in_shapes, out_shape):
        return int(self.weight.size)

    def params(self):
        return int(self.weight.size + self.bias.size)


def _tuple(value, n):
    if np.isscalar(value):
        return (int(value),) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ModelError(f"expected {n} values, got {value}")
    return value


@dataclass(kw_only=True)
class _Pool(Layer):
    kernel: tuple
    stride: tuple | None = None
    pads: tuple | None = None
    ceil_mode: bool = False

    def __post_init__(self):
        nd = len(self.kernel) if not np.isscalar(self.kernel) else 2
        self.kernel = _tuple(self.kernel, nd)
        self.stride = _tuple(self.stride if self.stride is not None else 1, nd)
        self.pads = _tuple(self.pads if self.pads is not None else 0, 2 * nd)

    def out_shape(self, in_shapes):
        (shape,) = in_shapes
        nd = len(self.kernel)
        if len(shape) != nd + 1:
            raise ShapeError(f"{self.name}: a {nd}-D pool needs a {nd + 1}-D input, got {shape}")
        sizes = [kernels.pool_output_size(shape[1 + i], self.kernel[i], self.stride[i], self.pads[i],
                                          self.pads[i + nd], 1, self.ceil_mode) for i in range(nd)]
        return (shape[0], *sizes)


@dataclass(kw_only=True)
class MaxPool(_Pool):
    """Max pooling. Integer max commutes with a monotonic requantisation only when scales match, so the
    output tensor must carry the input's quantisation parameters (checked by the graph)."""

    kind: ClassVar[str] = "maxpool"

    def forward(self, xs, in_q, out_q):
        return kernels.max_pool(xs[0], self.kernel, self.stride, self.pads, 1, self.ceil_mode)

    def macs(self, in_shapes, out_shape):
        return 0


@dataclass(kw_only=True)
class AvgPool(_Pool):
    """Average pooling: the window sum of ``x - x_zp`` requantised by ``x_scale / (y_scale * count)``."""

    count_include_pad: bool = False
    kind: ClassVar[str] = "avgpool"

    def forward(self, xs, in_q, out_q):
        total, count = kernels.avg_pool(xs[0], self.kernel, self.stride, self.pads, self.count_include_pad,
                                        self.ceil_mode, int(in_q[0].zero_point))
        return _requantize_by_count(total, count, in_q[0], out_q)


def _requantize_by_count(total, count, in_q, out_q):
    out = np.empty(total.shape, dtype=out_q.dtype.np_dtype)
    count = np.broadcast_to(count, total.shape)
    for c in np.unique(count):
        sel = count == c
        out[sel] = requantize(total[sel], avgpool_multiplier(in_q.scale, out_q.scale, c),
                              out_q.zero_point, out_q.dtype)
    return out


@dataclass(kw_only=True)
class GlobalAvgPool(Layer):
    kind: ClassVar[str] = "gap"

    def out_shape(self, in_shapes):
        (shape,) = in_shapes
        return (shape[0],) + (1,) * (len(shape) - 1)

    def forward(self, xs, in_q, out_q):
        total, count = kernels.global_avg_pool(xs[0], int(in_q[0].zero_point))
        return _requantize_by_count(total, count, in_q[0], out_q)


@dataclass(kw_only=True)
class Add(Layer):
    """Residual add of two same-shaped tensors, rescaled to the output (see quant.AddRescale)."""

    lo: int | None = None
    hi: int | None = None
    kind: ClassVar[str] = "add"

    def out_shape(self, in_shapes):
        a, b = in_shapes
        if a != b:
            raise ShapeError(f"{self.name}: add needs equal shapes, got {a} and {b}")
        return a

    def forward(self, xs, in_q, out_q):
        rescale = add_rescale(in_q[0].scale, in_q[1].scale, out_q.scale)
        return requantize_add(xs[0], int(in_q[0].zero_point), xs[1], int(in_q[1].zero_point), rescale,
                              int(out_q.zero_point), out_q.dtype, lo=self.lo, hi=self.hi)

    def macs(self, in_shapes, out_shape):
        return 0


@dataclass(kw_only=True)
class Concat(Layer):
    """Channel concatenation; all inputs share the output's quantisation parameters (checked)."""

    kind: ClassVar[str] = "concat"

    def out_shape(self, in_shapes):
        rest = {s[1:] for s in in_shapes}
        if len(rest) != 1:
            raise ShapeError(f"{self.name}: concat inputs differ outside the channel axis: {in_shapes}")
        return (sum(s[0] for s in in_shapes), *in_shapes[0][1:])

    def forward(self, xs, in_q, out_q):
        return np.concatenate(xs, axis=1)


@dataclass(kw_only=True)
class Flatten(Layer):
    kind: ClassVar[str] = "flatten"

    def out_shape(self, in_shapes):
        return (int(math.prod(in_shapes[0])),)

    def forward(self, xs, in_q, out_q):
        return xs[0].reshape(xs[0].shape[0], -1)


@dataclass(kw_only=True)
class Clip(Layer):
    """Stand-alone integer clamp (ReLU, ReLU6) where it could not be fused into the producer."""

    lo: int | None = None
    hi: int | None = None
    kind: ClassVar[str] = "clip"

    def out_shape(self, in_shapes):
        return in_shapes[0]

    def forward(self, xs, in_q, out_q):
        lo = out_q.dtype.lo if self.lo is None else self.lo
        hi = out_q.dtype.hi if self.hi is None else self.hi
        return np.clip(xs[0], lo, hi).astype(out_q.dtype.np_dtype)


# Layers whose output must keep the input's quantisation (they move integers without rescaling).
_SAME_Q = (MaxPool, Concat, Flatten, Clip)


@dataclass
class Graph:
    """A quantised network: tensors by name, layers in topological order, one input, outputs by name."""

    name: str
    tensors: dict
    layers: list
    inputs: list
    outputs: list
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.validate()

    # -- construction ---------------------------------------------------------------------------------
    def validate(self):
        known = set(self.inputs)
        for name in self.inputs:
            if name not in self.tensors:
                raise ModelError(f"graph {self.name}: input {name!r} has no tensor description")
        for layer in self.layers:
            for i in layer.inputs:
                if i not in known:
                    raise ModelError(f"graph {self.name}: layer {layer.name} reads {i!r} before it is produced")
            if layer.output not in self.tensors:
                raise ModelError(f"graph {self.name}: layer {layer.name} output {layer.output!r} is undescribed")
            shape = layer.out_shape([self.tensors[i].shape for i in layer.inputs])
            if tuple(shape) != self.tensors[layer.output].shape:
                raise ShapeError(f"graph {self.name}: layer {layer.name} produces {tuple(shape)}, "
                                 f"tensor {layer.output!r} says {self.tensors[layer.output].shape}")
            if isinstance(layer, _SAME_Q):
                for i in layer.inputs:
                    if self.tensors[i].q != self.tensors[layer.output].q:
                        raise ModelError(f"graph {self.name}: {layer.kind} {layer.name} must keep its input's "
                                         f"quantisation ({self.tensors[i].q} vs {self.tensors[layer.output].q})")
            known.add(layer.output)
        for name in self.outputs:
            if name not in known:
                raise ModelError(f"graph {self.name}: output {name!r} is never produced")

    # -- queries --------------------------------------------------------------------------------------
    @property
    def input(self) -> Tensor:
        return self.tensors[self.inputs[0]]

    def producer(self, tensor):
        for layer in self.layers:
            if layer.output == tensor:
                return layer
        return None

    def in_shapes(self, layer):
        return [self.tensors[i].shape for i in layer.inputs]

    def layer_macs(self, layer) -> int:
        return layer.macs(self.in_shapes(layer), self.tensors[layer.output].shape)

    @property
    def macs(self) -> int:
        return sum(self.layer_macs(layer) for layer in self.layers)

    @property
    def params(self) -> int:
        return sum(layer.params() for layer in self.layers)

    def summary(self) -> dict:
        return {
            "name": self.name,
            "input_shape": list(self.input.shape),
            "input_dtype": self.input.q.dtype.name,
            "layers": len(self.layers),
            "weighted_layers": sum(1 for l in self.layers if isinstance(l, (Conv, Dense))),
            "params": self.params,
            "macs": self.macs,
            "outputs": {o: list(self.tensors[o].shape) for o in self.outputs},
        }

    # -- execution ------------------------------------------------------------------------------------
    def check_input(self, x):
        """Accept one sample or a batch of the input's shape and integer type; return it batched."""
        t = self.input
        x = np.asarray(x)
        if x.dtype != t.q.dtype.np_dtype:
            raise ShapeError(f"input of {self.name} must be {t.q.dtype.name}, not {x.dtype}")
        if x.shape == t.shape:
            return x[None]
        if x.shape[1:] != t.shape:
            raise ShapeError(f"input of {self.name} must have shape {t.shape} (or a batch of it), got {x.shape}")
        return x

    def run(self, x, *, keep=False):
        """Run the reference on integer input; returns {output name: batched array} (all tensors if keep)."""
        values = {self.inputs[0]: self.check_input(x)}
        for layer in self.layers:
            xs = [values[i] for i in layer.inputs]
            values[layer.output] = layer.forward(xs, [self.tensors[i].q for i in layer.inputs],
                                                 self.tensors[layer.output].q)
        return values if keep else {o: values[o] for o in self.outputs}
