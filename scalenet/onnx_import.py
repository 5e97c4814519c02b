"""ONNX import: quantised models (QOperator and QDQ formats) as they are, float models through PTQ.

``load_onnx(model)`` returns a :class:`scalenet.ir.Graph`.

Quantised models
    * QOperator: ``QuantizeLinear -> QLinearConv / QLinearMatMul -> MaxPool -> ... -> DequantizeLinear``.
      Weights may be int8 or uint8 (uint8 weights are shifted to int8 with their zero point, which is
      exact), per-tensor or per-output-channel; activations int8 or uint8; bias is QLinearConv's int32 B.
      ``ConvInteger`` / ``MatMulInteger -> Cast -> Mul(scale) [-> Add(bias)] -> QuantizeLinear`` maps onto a
      Conv/Dense layer too, but onnxruntime does that chain in float32 (multiply, then divide by the output
      scale), so it may differ from our requantisation by one LSB on rare outputs.
    * QDQ: ``DequantizeLinear``/``QuantizeLinear`` pairs around Conv, Gemm, MatMul(+Add bias), Relu, Clip,
      MaxPool, AveragePool, GlobalAveragePool, Add, Concat, Flatten and Reshape-to-2-D. Conv and
      Gemm/MatMul follow the integer semantics of QLinearConv/QLinearMatMul (which is what onnxruntime
      fuses them into); Relu/Clip become integer clamps (fused into the producer when it has no other
      consumer); MaxPool, Concat, Flatten and Reshape move integers and need equal parameters on both
      sides. AveragePool, GlobalAveragePool and Add use SCALENet's own integer definitions
      (:mod:`scalenet.quant`): onnxruntime runs them (QLinearAveragePool, QLinearAdd...) with float
      internals, so those can differ from it by one LSB.

    The graph input is the integer tensor after the first QuantizeLinear; the float input's parameters are
    kept in ``graph.meta["input_q"]`` (so a caller can quantise float data), its name in
    ``graph.meta["float_input"]``. A model that takes integers directly keeps that input. Outputs that are
    dequantised in ONNX are the integer tensors before the DequantizeLinear (parameters on the tensor).

Float models
    Conv (1-D/2-D, pads, strides, dilations, group, auto_pad), Gemm (alpha = beta = 1, transA = 0),
    MatMul (+ Add bias), Relu, Clip, MaxPool, AveragePool, GlobalAveragePool, Add, Concat(axis 1),
    Flatten(axis 1), Reshape to (N, -1), BatchNormalization (folded into the preceding Conv/Gemm),
    Dropout/Identity (skipped), and a final Softmax (dropped: the outputs are logits; recorded in
    ``graph.meta["dropped"]``) become a :class:`~scalenet.floatnet.FloatNet`, which is quantised with
    :func:`~scalenet.floatnet.quantize_net` on ``calibration`` data (required).

The batch axis is dropped: ONNX shapes are (N, ...) and N must be 1 or symbolic.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from .errors import ModelError, ScalenetError, ShapeError, UnsupportedAttributeError, UnsupportedOperatorError
from .floatnet import FloatNet, FNode, quantize_net
from .ir import Add, AvgPool, Clip, Concat, Conv, Dense, Flatten, GlobalAvgPool, Graph, MaxPool, Tensor
from .quant import QParams, quantize, quantize_bias

__all__ = ["load_onnx", "ModelFileNotFoundError", "read_model", "conv_geometry", "pool_geometry",
           "SUPPORTED_FLOAT_OPS", "SUPPORTED_QUANT_OPS"]

SUPPORTED_FLOAT_OPS = ("Conv", "Gemm", "MatMul", "Add", "Relu", "Clip", "MaxPool", "AveragePool",
                       "GlobalAveragePool", "Concat", "Flatten", "Reshape", "BatchNormalization", "Dropout",
                       "Identity", "Softmax", "Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Cast")
SUPPORTED_QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                       "MatMulInteger", "Cast", "Mul") + SUPPORTED_FLOAT_OPS


class ModelFileNotFoundError(ModelError, FileNotFoundError):
    """The model path does not exist (a ModelError and a FileNotFoundError)."""


# ---------------------------------------------------------------------------------------------------------
# Reading


def read_model(model):
    """Return an ``onnx.ModelProto`` from a path, bytes or a ModelProto; bad input raises ModelError."""
    import onnx
    if isinstance(model, onnx.ModelProto):
        proto = model
    elif isinstance(model, (bytes, bytearray, memoryview)):
        try:
            proto = onnx.load_model_from_string(bytes(model))
        except Exception as e:  # protobuf DecodeError and friends
            raise ModelError(f"not a valid ONNX model: cannot parse {len(model)} bytes ({type(e).__name__}: {e})") from None
    elif isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.exists(path):
            raise ModelFileNotFoundError(2, "ONNX model file not found", path)
        if os.path.isdir(path):
            raise ModelError(f"not a valid ONNX model: {path} is a directory")
        try:
            proto = onnx.load(path)
        except Exception as e:
            raise ModelError(f"not a valid ONNX model: cannot parse {path} ({type(e).__name__}: {e})") from None
    else:
        raise ModelError(f"cannot load a model from a {type(model).__name__}: pass a path, bytes or an onnx.ModelProto")
    if not proto.HasField("graph") or len(proto.graph.node) == 0 or len(proto.graph.output) == 0:
        raise ModelError("not a valid ONNX model: it has no graph, no nodes or no outputs")
    return proto


def _attrs(node):
    import onnx
    out = {}
    for a in node.attribute:
        try:
            out[a.name] = onnx.helper.get_attribute_value(a)
        except Exception as e:
            raise ModelError(f"node {node.name or node.op_type}: cannot read attribute {a.name!r}: {e}") from None
        if isinstance(out[a.name], bytes):
            out[a.name] = out[a.name].decode("utf-8", "replace")
    return out


def _to_array(tensor_proto, where):
    from onnx import numpy_helper
    try:
        return numpy_helper.to_array(tensor_proto)
    except Exception as e:
        raise ModelError(f"not a valid ONNX model: tensor {tensor_proto.name!r} ({where}) cannot be read: {e}") from None


# ---------------------------------------------------------------------------------------------------------
# Geometry (shared by the importer and the node-data tests)


def _ints(value, n, what, node):
    if value is None:
        return None
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ShapeError(f"node {node}: {what} has {len(value)} values, expected {n}")
    return value


def _resolve_pads(node, attrs, sizes, kernel, strides, dilations):
    """Explicit pads (begins..., ends...) from ``pads``/``auto_pad`` for spatial input ``sizes``."""
    nd = len(sizes)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", ""):
        pads = _ints(attrs.get("pads", [0] * 2 * nd), 2 * nd, "pads", node)
        if any(p < 0 for p in pads):
            raise UnsupportedAttributeError(f"node {node}: attribute pads={list(pads)} (negative pads) is not supported")
        return pads
    if auto_pad == "VALID":
        return (0,) * (2 * nd)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for size, k, s, d in zip(sizes, kernel, strides, dilations):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            small, big = total // 2, total - total // 2
            begins.append(small if auto_pad == "SAME_UPPER" else big)
            ends.append(big if auto_pad == "SAME_UPPER" else small)
        return tuple(begins + ends)
    raise UnsupportedAttributeError(f"node {node}: attribute auto_pad={auto_pad!r} is not supported")


def conv_geometry(node, attrs, in_shape, weight_shape):
    """(stride, pads, dilation, group) of a Conv on a per-sample ``in_shape`` (C, [H,] W)."""
    nd = len(weight_shape) - 2
    if nd not in (1, 2):
        raise UnsupportedAttributeError(f"node {node}: attribute kernel_shape={list(weight_shape[2:])} "
                                        f"({nd}-D convolution) is not supported: only 1-D and 2-D")
    if len(in_shape) != nd + 1:
        raise ShapeError(f"node {node}: a {nd}-D convolution needs a (N, C, {'H, W' if nd == 2 else 'W'}) input, "
                         f"got per-sample shape {tuple(in_shape)}")
    kernel = tuple(int(k) for k in weight_shape[2:])
    if "kernel_shape" in attrs and tuple(attrs["kernel_shape"]) != kernel:
        raise ShapeError(f"node {node}: kernel_shape {list(attrs['kernel_shape'])} does not match the weight's "
                         f"shape {list(weight_shape)}")
    strides = _ints(attrs.get("strides", [1] * nd), nd, "strides", node)
    dilations = _ints(attrs.get("dilations", [1] * nd), nd, "dilations", node)
    if any(s < 1 for s in strides) or any(d < 1 for d in dilations):
        raise UnsupportedAttributeError(f"node {node}: attribute strides={list(strides)}/dilations={list(dilations)} "
                                        "must be >= 1")
    group = int(attrs.get("group", 1))
    if group < 1 or in_shape[0] != weight_shape[1] * group or weight_shape[0] % group:
        raise ShapeError(f"node {node}: input with {in_shape[0]} channels does not match weight "
                         f"{list(weight_shape)} with group={group}")
    pads = _resolve_pads(node, attrs, in_shape[1:], kernel, strides, dilations)
    return strides, pads, dilations, group


def pool_geometry(node, op_type, attrs, in_shape):
    """(kernel, stride, pads, ceil_mode, count_include_pad) of MaxPool/AveragePool on per-sample (C, [H,] W)."""
    if "kernel_shape" not in attrs:
        raise ModelError(f"node {node}: {op_type} has no kernel_shape")
    kernel = tuple(int(k) for k in attrs["kernel_shape"])
    nd = len(kernel)
    if nd not in (1, 2):
        raise UnsupportedAttributeError(f"node {node}: attribute kernel_shape={list(kernel)} ({nd}-D pooling) "
                                        "is not supported: only 1-D and 2-D")
    if len(in_shape) != nd + 1:
        raise ShapeError(f"node {node}: {nd}-D pooling on per-sample shape {tuple(in_shape)}")
    strides = _ints(attrs.get("strides", [1] * nd), nd, "strides", node)
    dilations = _ints(attrs.get("dilations", [1] * nd), nd, "dilations", node)
    if any(d != 1 for d in dilations):
        raise UnsupportedAttributeError(f"node {node}: attribute dilations={list(dilations)} is not supported "
                                        f"for {op_type} (only 1)")
    if int(attrs.get("storage_order", 0)) != 0:
        raise UnsupportedAttributeError(f"node {node}: attribute storage_order={attrs['storage_order']} is not supported")
    pads = _resolve_pads(node, attrs, in_shape[1:], kernel, strides, dilations)
    ceil_mode = bool(attrs.get("ceil_mode", 0))
    count_include_pad = bool(attrs.get("count_include_pad", 0))
    return kernel, strides, pads, ceil_mode, count_include_pad


# ---------------------------------------------------------------------------------------------------------
# Values flowing through the import


@dataclass
class _Const:
    value: np.ndarray


@dataclass
class _Float:
    """A float tensor of the float path (FloatNet), per-sample shape."""
    name: str
    shape: tuple


@dataclass
class _FloatInput:
    """The float graph input of a quantised model (only QuantizeLinear may read it)."""
    name: str
    shape: tuple


@dataclass
class _Q:
    """An integer tensor of the IR."""
    name: str


@dataclass
class _DQ:
    """DequantizeLinear of an IR tensor (QDQ format)."""
    src: str


@dataclass
class _DQConst:
    """DequantizeLinear of a constant (weights, bias)."""
    q: np.ndarray
    scale: np.ndarray
    zp: np.ndarray
    axis: int


@dataclass
class _Pending:
    """A float result of integer operands awaiting the QuantizeLinear that gives its output parameters."""
    kind: str                 # conv, dense, avgpool, gap, add
    node: str
    inputs: list
    attrs: dict = field(default_factory=dict)
    lo: float | None = None   # fused float clamp (Relu/Clip after the op)
    hi: float | None = None
    stage: str = "float"      # for *Integer chains: "acc" (int32), "cast" (float acc), "scaled"


class _Cell:
    """Shared quantisation parameters: tensors that move integers without rescaling share one cell."""

    def __init__(self, q=None):
        self.q = q


def _scalar(a):
    a = np.asarray(a)
    return a.reshape(()) if a.size == 1 else a


def _qtype_name(dtype):
    name = np.dtype(dtype).name
    if name not in ("int8", "uint8", "int32"):
        raise UnsupportedAttributeError(f"quantised type {name} is not supported (int8, uint8 and int32 only)")
    return name


# ---------------------------------------------------------------------------------------------------------
# The importer


_ELEM_FLOAT = {1, 10, 11, 16}     # FLOAT, FLOAT16, DOUBLE, BFLOAT16
_ELEM_INT = {2: "uint8", 3: "int8"}
_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
              "MatMulInteger"}


class _Importer:
    def __init__(self, proto, name):
        self.proto = proto
        g = proto.graph
        self.g = g
        self.name = name or g.name or "onnx_model"
        self.opset = 1
        for imp in proto.opset_import:
            if imp.domain in ("", "ai.onnx"):
                self.opset = imp.version
        self.vals = {}
        self.used_names = set()
        inits = set()
        for t in g.initializer:
            self.vals[t.name] = _Const(_to_array(t, "initializer"))
            inits.add(t.name)
        self.graph_inputs = [i for i in g.input if i.name not in inits]
        self.consumers = {}
        for node in g.node:
            for i in node.input:
                if i:
                    self.consumers[i] = self.consumers.get(i, 0) + 1
        self.output_names = [o.name for o in g.output]
        for o in self.output_names:
            self.consumers[o] = self.consumers.get(o, 0) + 1
        self.quantised = (any(n.op_type in _QUANT_OPS for n in g.node)
                          or any(i.type.tensor_type.elem_type in _ELEM_INT for i in self.graph_inputs))
        self.meta = {"source": "onnx", "format": "quantised" if self.quantised else "float",
                     "onnx_outputs": {}, "dropped": []}
        # float path
        self.fnodes = []
        self.fproducer = {}
        # quantised path
        self.tensors = {}         # IR name -> [shape, cell]
        self.layers = []
        self.ir_input = None

    # -- helpers ------------------------------------------------------------------------------------------
    def node_name(self, node, index):
        base = node.name or f"{node.op_type}_{index}"
        name, k = base, 1
        while name in self.used_names:
            name, k = f"{base}_{k}", k + 1
        self.used_names.add(name)
        return name

    def get(self, name, node, what="input"):
        if name not in self.vals:
            raise ModelError(f"node {node}: {what} {name!r} is neither an initializer nor produced by an "
                             "earlier node (missing weights or a graph that is not in topological order)")
        return self.vals[name]

    def const(self, name, node, what):
        v = self.get(name, node, what)
        if not isinstance(v, _Const):
            raise ModelError(f"node {node}: {what} {name!r} must be a constant initializer "
                             "(weights computed at run time are not supported)")
        return v.value

    def opt_const(self, inputs, i, node, what):
        if len(inputs) > i and inputs[i]:
            return self.const(inputs[i], node, what)
        return None

    @staticmethod
    def unsupported(node, op_type, why=""):
        return UnsupportedOperatorError(f"node {node}: operator {op_type} is not supported{': ' + why if why else ''}")

    def input_shape(self, vi):
        t = vi.type
        if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
            raise ShapeError(f"graph input {vi.name!r} has no tensor shape")
        dims = t.tensor_type.shape.dim
        if len(dims) < 2:
            raise ShapeError(f"graph input {vi.name!r} must be (N, ...) with a batch axis, got rank {len(dims)}")
        n = dims[0]
        if n.HasField("dim_value") and n.dim_value not in (0, 1):
            raise ShapeError(f"graph input {vi.name!r} has batch size {n.dim_value}: only 1 (or a symbolic batch) "
                             "is supported")
        shape = []
        for d in dims[1:]:
            if not d.HasField("dim_value") or d.dim_value <= 0:
                raise ShapeError(f"graph input {vi.name!r} has a non-fixed dimension "
                                 f"{d.dim_param or '?'}: only the batch axis may be symbolic")
            shape.append(int(d.dim_value))
        return tuple(shape)

    # -- entry ------------------------------------------------------------------------------------------
    def run(self, calibration, act_dtype):
        if len(self.graph_inputs) != 1:
            raise ModelError(f"the model has {len(self.graph_inputs)} inputs "
                             f"({[i.name for i in self.graph_inputs]}): exactly one is supported")
        vi = self.graph_inputs[0]
        shape = self.input_shape(vi)
        elem = vi.type.tensor_type.elem_type
        if self.quantised:
            if elem in _ELEM_INT:
                self.add_tensor(vi.name, shape, _Cell())
                self.tensors[vi.name].append(_ELEM_INT[elem])
                self.ir_input = vi.name
                self.vals[vi.name] = _Q(vi.name)
            elif elem in _ELEM_FLOAT:
                self.vals[vi.name] = _FloatInput(vi.name, shape)
            else:
                raise ModelError(f"graph input {vi.name!r} has element type {elem}: float, int8 or uint8 expected")
        else:
            if elem not in _ELEM_FLOAT:
                raise ModelError(f"graph input {vi.name!r} has element type {elem}: a float model needs a float input")
            self.vals[vi.name] = _Float(vi.name, shape)
            self.float_input = (vi.name, shape)
        for index, node in enumerate(self.g.node):
            name = self.node_name(node, index)
            try:
                if not isinstance(node.op_type, str) or not node.op_type:
                    raise ModelError(f"not a valid ONNX model: node {name} has no valid op_type")
                if node.op_type != "Constant" and (not node.input or not node.input[0]):
                    raise ModelError(f"node {name}: {node.op_type} has no input")
                if not node.output or not node.output[0]:
                    raise ModelError(f"node {name}: {node.op_type} has no output")
                self.node(node, name)
            except ScalenetError:
                raise
            except Exception as e:  # malformed attributes/inputs: name the node, not onnx/numpy internals
                raise ModelError(f"not a valid ONNX model: node {name} ({node.op_type!r}) is malformed "
                                 f"({type(e).__name__}: {e})") from None
        if self.quantised:
            return self.finish_quantised()
        return self.finish_float(calibration, act_dtype)

    def node(self, node, name):
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            raise self.unsupported(name, f"{node.domain}.{op}")
        attrs = _attrs(node)
        inputs = list(node.input)
        # Constant folding of shape arithmetic (PyTorch's x.view(x.size(0), -1) and friends).
        if op == "Constant":
            return self.constant(node, name, attrs)
        if op in ("Identity", "Dropout"):
            if op == "Dropout" and len(node.output) > 1 and node.output[1] and self.consumers.get(node.output[1]):
                raise UnsupportedAttributeError(f"node {name}: Dropout's mask output is used; not supported")
            if op == "Dropout" and attrs.get("training_mode") is not None:
                pass
            self.vals[node.output[0]] = self.get(inputs[0], name)
            return
        if op in ("Shape", "Gather", "Unsqueeze", "Squeeze", "Cast", "Concat", "Reshape", "Mul") and \
                self.try_fold(node, name, op, attrs, inputs):
            return
        handler = getattr(self, ("q_" if self.quantised else "f_") + op, None)
        if handler is None:
            raise self.unsupported(name, op)
        handler(node, name, attrs, inputs)

    def constant(self, node, name, attrs):
        import onnx
        if "value" in attrs:
            value = attrs["value"]
            value = _to_array(value, f"node {name}") if isinstance(value, onnx.TensorProto) else np.asarray(value)
        elif "value_float" in attrs:
            value = np.asarray(attrs["value_float"], np.float32)
        elif "value_floats" in attrs:
            value = np.asarray(attrs["value_floats"], np.float32)
        elif "value_int" in attrs:
            value = np.asarray(attrs["value_int"], np.int64)
        elif "value_ints" in attrs:
            value = np.asarray(attrs["value_ints"], np.int64)
        else:
            raise UnsupportedAttributeError(f"node {name}: Constant attribute {list(attrs)} is not supported")
        self.vals[node.output[0]] = _Const(value)

    def try_fold(self, node, name, op, attrs, inputs):
        vals = [self.vals.get(i) if i else None for i in inputs]
        if op == "Shape":
            v = vals[0]
            shape = None
            if isinstance(v, (_Float, _FloatInput)):
                shape = v.shape
            elif isinstance(v, (_Q, _DQ)):
                shape = self.tensors[v.name if isinstance(v, _Q) else v.src][0]
            elif isinstance(v, _Const):
                self.vals[node.output[0]] = _Const(np.asarray(v.value.shape, np.int64))
                return True
            if shape is None:
                return False
            full = np.asarray((1,) + tuple(shape), np.int64)
            start, end = attrs.get("start", 0), attrs.get("end", None)
            self.vals[node.output[0]] = _Const(full[start:end])
            return True
        if not all(isinstance(v, _Const) for v in vals if v is not None) or vals[0] is None:
            return False
        c = [None if v is None else v.value for v in vals]
        try:
            if op == "Gather":
                out = np.take(c[0], c[1].astype(np.int64), axis=int(attrs.get("axis", 0)))
            elif op == "Unsqueeze":
                axes = attrs.get("axes", None if len(c) < 2 or c[1] is None else c[1].tolist())
                out = c[0]
                for a in sorted(int(a) % (out.ndim + len(axes)) for a in axes):
                    out = np.expand_dims(out, a)
            elif op == "Squeeze":
                axes = attrs.get("axes", None if len(c) < 2 or c[1] is None else c[1].tolist())
                out = np.squeeze(c[0], axis=None if axes is None else tuple(int(a) for a in axes))
            elif op == "Concat":
                out = np.concatenate([np.atleast_1d(x) for x in c if x is not None], axis=int(attrs.get("axis", 0)))
            elif op == "Cast":
                import onnx
                out = c[0].astype(onnx.helper.tensor_dtype_to_np_dtype(int(attrs["to"])))
            elif op == "Mul":
                out = c[0] * c[1]
            elif op == "Reshape":
                out = c[0].reshape([int(s) for s in c[1]])
            else:
                return False
        except Exception as e:
            raise ModelError(f"node {name}: cannot evaluate constant {op}: {e}") from None
        self.vals[node.output[0]] = _Const(np.asarray(out))
        return True

    # -- float path ---------------------------------------------------------------------------------------
    def fvalue(self, name, node, what="input"):
        v = self.get(name, node, what)
        if not isinstance(v, _Float):
            raise ModelError(f"node {node}: {what} {name!r} must be a float activation, not a {type(v).__name__.strip('_')}")
        return v

    def emit(self, op, name, inputs, output, shape, **attrs):
        fn = FNode(op, name, list(inputs), output, attrs)
        self.fnodes.append(fn)
        self.fproducer[output] = fn
        self.vals[output] = _Float(output, tuple(int(s) for s in shape))
        return fn

    def f_Conv(self, node, name, attrs, inputs):
        x = self.fvalue(inputs[0], name)
        if len(inputs) < 2 or not inputs[1]:
            raise ModelError(f"node {name}: Conv has no weight input")
        w = self.const(inputs[1], name, "weight").astype(np.float32)
        b = self.opt_const(inputs, 2, name, "bias")
        stride, pads, dilation, group = conv_geometry(name, attrs, x.shape, w.shape)
        if b is not None:
            b = b.astype(np.float32).reshape(-1)
            if b.shape != (w.shape[0],):
                raise ShapeError(f"node {name}: bias of shape {b.shape} does not match {w.shape[0]} output channels")
        from .kernels import conv_output_size
        nd = w.ndim - 2
        sizes = [conv_output_size(x.shape[1 + i], w.shape[2 + i], stride[i], pads[i], pads[i + nd], dilation[i])
                 for i in range(nd)]
        self.emit("conv", name, [x.name], node.output[0], (w.shape[0], *sizes), weight=w, bias=b,
                  stride=stride, pads=pads, dilation=dilation, groups=group)

    def _dense_weight(self, name, w, x_shape, trans_b):
        w = np.asarray(w, np.float32)
        if w.ndim != 2:
            raise ShapeError(f"node {name}: weight of shape {w.shape} must be 2-D")
        w = w if trans_b else w.T                       # -> (out, in)
        if len(x_shape) != 1 or x_shape[0] != w.shape[1]:
            raise ShapeError(f"node {name}: input of per-sample shape {tuple(x_shape)} does not match weight "
                             f"with {w.shape[1]} inputs (flatten the input first)")
        return w

    def _bias_vector(self, name, b, m):
        b = np.asarray(b, np.float32)
        if b.size == 1:
            return np.full(m, b.reshape(()), np.float32)
        if b.size != m or sum(d != 1 for d in b.shape) > 1:
            raise ShapeError(f"node {name}: bias of shape {b.shape} does not match {m} outputs")
        return b.reshape(m)

    def _check_gemm_attrs(self, name, attrs):
        for a in ("alpha", "beta"):
            if float(attrs.get(a, 1.0)) != 1.0:
                raise UnsupportedAttributeError(f"node {name}: attribute {a}={attrs[a]} is not supported (only 1.0)")
        if int(attrs.get("transA", 0)) != 0:
            raise UnsupportedAttributeError(f"node {name}: attribute transA={attrs['transA']} is not supported (only 0)")

    def f_Gemm(self, node, name, attrs, inputs):
        self._check_gemm_attrs(name, attrs)
        x = self.fvalue(inputs[0], name)
        w = self._dense_weight(name, self.const(inputs[1], name, "weight"), x.shape, int(attrs.get("transB", 0)))
        b = self.opt_const(inputs, 2, name, "bias")
        b = None if b is None else self._bias_vector(name, b, w.shape[0])
        self.emit("dense", name, [x.name], node.output[0], (w.shape[0],), weight=w, bias=b)

    def f_MatMul(self, node, name, attrs, inputs):
        x = self.fvalue(inputs[0], name)
        w = self._dense_weight(name, self.const(inputs[1], name, "weight (second input)"), x.shape, False)
        self.emit("dense", name, [x.name], node.output[0], (w.shape[0],), weight=w, bias=None)

    def f_Add(self, node, name, attrs, inputs):
        a, b = self.get(inputs[0], name), self.get(inputs[1], name)
        if isinstance(a, _Float) and isinstance(b, _Float):
            if a.shape != b.shape:
                raise ShapeError(f"node {name}: Add of shapes {a.shape} and {b.shape} (broadcasting is not supported)")
            self.emit("add", name, [a.name, b.name], node.output[0], a.shape)
            return
        if isinstance(a, _Const):
            a, b = b, a
        if isinstance(a, _Float) and isinstance(b, _Const):
            src = self.fproducer.get(a.name)
            if src is not None and src.op in ("dense", "conv") and self.consumers.get(a.name, 0) == 1:
                m = src.attrs["weight"].shape[0]
                c = np.asarray(b.value, np.float32)
                rank = len(a.shape) + 1                       # with the batch axis
                axis = c.ndim - rank + 1                      # where the channel axis lands after broadcasting
                ok = c.size == 1 or (c.size == m and c.ndim <= rank and axis >= 0 and c.shape[axis] == m)
                if not ok:
                    raise ShapeError(f"node {name}: constant of shape {c.shape} is not a per-channel bias for "
                                     f"{a.shape}")
                bias = self._bias_vector(name, c.reshape(-1), m)
                old = src.attrs.get("bias")
                src.attrs["bias"] = bias if old is None else (old + bias).astype(np.float32)
                self._rename(src, node.output[0])
                return
        raise self.unsupported(name, "Add", "adding a constant is supported only as the bias right after a "
                               "MatMul/Conv; both operands must otherwise be activations")

    def _rename(self, fn, new):
        old = fn.output
        shape = self.vals[old].shape
        del self.fproducer[old]
        fn.output = new
        self.fproducer[new] = fn
        self.vals[new] = _Float(new, shape)

    def f_BatchNormalization(self, node, name, attrs, inputs):
        x = self.fvalue(inputs[0], name)
        if int(attrs.get("training_mode", 0)) != 0:
            raise UnsupportedAttributeError(f"node {name}: attribute training_mode={attrs['training_mode']} is not supported")
        if len([o for o in node.output if o]) > 1:
            raise UnsupportedAttributeError(f"node {name}: BatchNormalization training outputs are not supported")
        src = self.fproducer.get(x.name)
        if src is None or src.op not in ("conv", "dense") or self.consumers.get(x.name, 0) != 1:
            raise self.unsupported(name, "BatchNormalization",
                                   "only folded into a Conv/Gemm whose output feeds nothing else")
        gamma, beta, mean, var = (self.const(inputs[i], name, w).astype(np.float64).reshape(-1)
                                  for i, w in ((1, "scale"), (2, "B"), (3, "mean"), (4, "var")))
        m = src.attrs["weight"].shape[0]
        if not all(v.shape == (m,) for v in (gamma, beta, mean, var)):
            raise ShapeError(f"node {name}: BatchNormalization parameters do not have {m} channels")
        denom = var + float(attrs.get("epsilon", 1e-5))
        if not np.all(denom > 0):
            raise ModelError(f"node {name}: BatchNormalization variance + epsilon must be > 0")
        k = gamma / np.sqrt(denom)
        w = src.attrs["weight"].astype(np.float64)
        src.attrs["weight"] = (w * k.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
        b = src.attrs.get("bias")
        b = np.zeros(m) if b is None else b.astype(np.float64)
        src.attrs["bias"] = ((b - mean) * k + beta).astype(np.float32)
        self._rename(src, node.output[0])

    def f_Relu(self, node, name, attrs, inputs):
        x = self.fvalue(inputs[0], name)
        self.emit("relu", name, [x.name], node.output[0], x.shape)

    def _clip_bounds(self, name, attrs, inputs):
        if self.opset < 11 or "min" in attrs or "max" in attrs:
            lo, hi = attrs.get("min"), attrs.get("max")
        else:
            lo = self.opt_const(inputs, 1, name, "min")
            hi = self.opt_const(inputs, 2, name, "max")
        lo = None if lo is None else float(np.asarray(lo).reshape(()))
        hi = None if hi is None else float(np.asarray(hi).reshape(()))
        if lo is not None and hi is not None and lo > hi:
            raise UnsupportedAttributeError(f"node {name}: attribute min={lo} > max={hi} is not supported")
        return lo, hi

    def f_Clip(self, node, name, attrs, inputs):
        x = self.fvalue(inputs[0], name)
        lo, hi = self._clip_bounds(name, attrs, inputs)
        self.emit("clip", name, [x.name], node.output[0], x.shape, lo=lo, hi=hi)

    def _pool(self, node, name, attrs, shape, op_type):
        from .kernels import pool_output_size
        kernel, stride, pads, ceil_mode, cip = pool_geometry(name, op_type, attrs, shape)
        nd = len(kernel)
        sizes = [pool_output_size(shape[1 + i], kernel[i], stride[i], pads[i], pads[i + nd], 1, ceil_mode)
                 for i in range(nd)]
        if len([o for o in node.output if o]) > 1 and self.consumers.get(node.output[1]):
            raise UnsupportedAttributeError(f"node {name}: {op_type}'s Indices output is not supported")
        return dict(kernel=kernel, stride=stride, pads=pads, ceil_mode=ceil_mode), cip, (shape[0], *sizes)

    def f_MaxPool(self, node, name, attrs, inputs):
        x = self.fvalue(inputs[0], name)
        geo, _, shape = self._pool(node, name, attrs, x.shape, "MaxPool")
        self.emit("maxpool", name, [x.name], node.output[0], shape, **geo)

    def f_AveragePool(self, node, name, attrs, inputs):
        x = self.fvalue(inputs[0], name)
        geo, cip, shape = self._pool(node, name, attrs, x.shape, "AveragePool")
        self.emit("avgpool", name, [x.name], node.output[0], shape, count_include_pad=cip, **geo)

    def f_GlobalAveragePool(self, node, name, attrs, inputs):
        x = self.fvalue(inputs[0], name)
        self.emit("gap", name, [x.name], node.output[0], (x.shape[0],) + (1,) * (len(x.shape) - 1))

    def _check_concat_axis(self, name, attrs, rank):
        axis = int(attrs.get("axis", 1))
        if axis not in (1, 1 - (rank + 1)) or (axis < 0 and axis + rank + 1 != 1):
            raise UnsupportedAttributeError(f"node {name}: attribute axis={axis} is not supported (only the channel axis 1)")

    def f_Concat(self, node, name, attrs, inputs):
        xs = [self.fvalue(i, name) for i in inputs]
        self._check_concat_axis(name, attrs, len(xs[0].shape))
        if len({x.shape[1:] for x in xs}) != 1 or len({len(x.shape) for x in xs}) != 1:
            raise ShapeError(f"node {name}: Concat inputs differ outside the channel axis: {[x.shape for x in xs]}")
        shape = (sum(x.shape[0] for x in xs), *xs[0].shape[1:])
        self.emit("concat", name, [x.name for x in xs], node.output[0], shape)

    def _flatten_ok(self, name, op, attrs, inputs, shape):
        """True if the node flattens (N, ...) to (N, F); raises for other reshapes."""
        if op == "Flatten":
            axis = int(attrs.get("axis", 1))
            if axis not in (1, -len(shape)):
                raise UnsupportedAttributeError(f"node {name}: attribute axis={axis} is not supported (only 1)")
            return True
        target = self.const(inputs[1], name, "shape") if len(inputs) > 1 else np.asarray(attrs.get("shape"))
        full = (1,) + tuple(shape)
        t = [int(s) for s in np.asarray(target).reshape(-1)]
        if not int(attrs.get("allowzero", 0)):
            t = [full[i] if s == 0 and i < len(full) else s for i, s in enumerate(t)]
        total = int(np.prod(full))
        if t.count(-1) == 1:
            known = int(np.prod([s for s in t if s != -1]))
            t[t.index(-1)] = total // known if known else 0
        if int(np.prod(t)) != total:
            raise ShapeError(f"node {name}: cannot reshape per-sample {tuple(shape)} to {t}")
        if len(t) == 2 and t[0] == 1:
            return True
        raise UnsupportedAttributeError(f"node {name}: Reshape to {t} is not supported: only flattening to (N, -1)")

    def f_Flatten(self, node, name, attrs, inputs):
        x = self.fvalue(inputs[0], name)
        self._flatten_ok(name, node.op_type, attrs, inputs, x.shape)
        self.emit("flatten", name, [x.name], node.output[0], (int(np.prod(x.shape)),))

    f_Reshape = f_Flatten

    def f_Softmax(self, node, name, attrs, inputs):
        x = self.get(inputs[0], name)
        out = node.output[0]
        if out not in self.output_names or self.consumers.get(out, 0) != 1:
            raise self.unsupported(name, "Softmax", "only as the last node (it is dropped; outputs are logits)")
        self.vals[out] = x
        self.meta["dropped"].append(f"{name} (Softmax): outputs are logits")

    def finish_float(self, calibration, act_dtype):
        outputs = []
        for o in self.output_names:
            v = self.vals.get(o)
            if not isinstance(v, _Float) or v.name == self.float_input[0]:
                raise ModelError(f"graph output {o!r} is not computed by a supported layer")
            outputs.append(v.name)
            self.meta["onnx_outputs"][o] = v.name
        net = FloatNet(self.name, self.float_input[0], self.float_input[1], self.fnodes, outputs, meta=self.meta)
        if calibration is None:
            raise ModelError(f"{self.name} is a float ONNX model: pass calibration data (calibration=, a batch of "
                             f"float inputs of shape (B, {', '.join(map(str, self.float_input[1]))})) to quantise it")
        graph = quantize_net(net, calibration, act_dtype=act_dtype)
        graph.meta["input_q"] = graph.input.q
        graph.meta["float_input"] = self.float_input[0]
        return graph

    # -- quantised path -----------------------------------------------------------------------------------
    def add_tensor(self, name, shape, cell):
        if name in self.tensors:
            raise ModelError(f"tensor {name!r} is produced twice")
        self.tensors[name] = [tuple(int(s) for s in shape), cell]

    def qparams(self, scale, zp, dtype, name, what, per_channel_ok=False):
        scale = np.asarray(scale)
        if scale.dtype.kind != "f":
            raise ModelError(f"node {name}: {what} scale must be float, not {scale.dtype}")
        scale = _scalar(scale)
        if zp is None:
            zp = np.zeros((), dtype)
        zp = _scalar(zp)
        if not per_channel_ok and (scale.ndim or zp.ndim):
            raise UnsupportedAttributeError(f"node {name}: per-channel {what} parameters are not supported here")
        try:
            return QParams(scale, zp, _qtype_name(dtype))
        except UnsupportedAttributeError as e:
            raise UnsupportedAttributeError(f"node {name}: {what}: {e}") from None
        except Exception as e:
            raise ModelError(f"node {name}: {what} quantisation parameters are invalid: {e}") from None

    def bind(self, tname, q, name, what="input"):
        """Give IR tensor ``tname`` the parameters ``q`` a consumer declares, or check they agree."""
        cell = self.tensors[tname][1]
        dtype = self.tensors[tname][2] if len(self.tensors[tname]) > 2 else None
        if dtype is not None and q.dtype.name != dtype:
            raise ModelError(f"node {name}: {what} {tname!r} is {dtype}, the node's zero point says {q.dtype.name}")
        if cell.q is None:
            cell.q = q
        elif cell.q != q:
            raise ModelError(f"node {name}: {what} {tname!r} has quantisation {cell.q}, the node declares {q}: "
                             "requantisation between them is not supported")

    def qin(self, name_in, node):
        v = self.get(name_in, node)
        if not isinstance(v, _Q):
            raise ModelError(f"node {node}: input {name_in!r} must be an integer tensor (after QuantizeLinear), "
                             f"not a {type(v).__name__.strip('_')}")
        return v.name

    def layer(self, layer, out_name, cell):
        shape = layer.out_shape([self.tensors[i][0] for i in layer.inputs])
        self.add_tensor(out_name, shape, cell)
        self.layers.append(layer)
        self.vals[out_name] = _Q(out_name)
        return out_name

    def q_QuantizeLinear(self, node, name, attrs, inputs):
        x = self.get(inputs[0], name)
        scale = self.const(inputs[1], name, "y_scale")
        zp = self.opt_const(inputs, 2, name, "y_zero_point")
        if zp is not None:
            dtype = zp.dtype
        elif "output_dtype" in attrs:
            import onnx
            dtype = onnx.helper.tensor_dtype_to_np_dtype(int(attrs["output_dtype"]))
        else:
            dtype = np.uint8
        q = self.qparams(scale, zp, dtype, name, "QuantizeLinear output")
        out = node.output[0]
        if isinstance(x, _FloatInput):
            if self.ir_input is not None:
                raise ModelError(f"node {name}: the float input is quantised twice")
            self.add_tensor(out, x.shape, _Cell(q))
            self.ir_input = out
            self.meta["input_q"] = q
            self.meta["float_input"] = x.name
            self.vals[out] = _Q(out)
        elif isinstance(x, _DQ):
            self.bind(x.src, q, name, "QuantizeLinear of")
            self.vals[out] = _Q(x.src)
        elif isinstance(x, _Pending):
            self.materialise(x, q, out, name)
        elif isinstance(x, _Const):
            self.vals[out] = _Const(quantize(x.value, q))
        else:
            raise ModelError(f"node {name}: QuantizeLinear of {inputs[0]!r} (a {type(x).__name__.strip('_')}) "
                             "is not supported")

    def q_DequantizeLinear(self, node, name, attrs, inputs):
        x = self.get(inputs[0], name)
        scale = self.const(inputs[1], name, "x_scale")
        zp = self.opt_const(inputs, 2, name, "x_zero_point")
        if "block_size" in attrs and int(attrs["block_size"]) != 0:
            raise UnsupportedAttributeError(f"node {name}: attribute block_size={attrs['block_size']} is not supported")
        out = node.output[0]
        if isinstance(x, _Const):
            q = np.asarray(x.value)
            _qtype_name(q.dtype)
            axis = int(attrs.get("axis", 1))
            sc = _scalar(np.asarray(scale, np.float32))
            z = np.zeros((), q.dtype) if zp is None else _scalar(zp)
            self.vals[out] = _DQConst(q, sc, z, axis % max(q.ndim, 1))
            return
        if isinstance(x, _Q):
            if zp is not None:
                dtype = zp.dtype
            elif self.tensors[x.name][1].q is not None:
                dtype = self.tensors[x.name][1].q.dtype.name
            elif len(self.tensors[x.name]) > 2:
                dtype = self.tensors[x.name][2]
            else:
                dtype = np.uint8
            qp = self.qparams(scale, zp, dtype, name, "DequantizeLinear input")
            self.bind(x.name, qp, name)
            self.vals[out] = _DQ(x.name)
            return
        raise ModelError(f"node {name}: DequantizeLinear of {inputs[0]!r} (a {type(x).__name__.strip('_')}) "
                         "is not supported")

    def xq(self, tname):
        q = self.tensors[tname][1].q
        if q is None:
            raise ModelError(f"tensor {tname!r}: its quantisation parameters are never given")
        return q

    def _weights(self, name, w, scale, zp, axis_ok, what="weight"):
        """int8 weights and per-tensor/per-output-channel QParams (uint8 weights shifted exactly)."""
        w = np.asarray(w)
        dt = _qtype_name(w.dtype)
        if dt == "int32":
            raise UnsupportedAttributeError(f"node {name}: int32 {what}s are not supported")
        scale = _scalar(np.asarray(scale, np.float32))
        zp = _scalar(np.zeros((), w.dtype) if zp is None else np.asarray(zp))
        m = w.shape[0]
        for arr, what_ in ((scale, "scale"), (zp, "zero point")):
            if arr.ndim and (arr.ndim != 1 or arr.shape[0] != m or not axis_ok):
                raise UnsupportedAttributeError(f"node {name}: {what} {what_} of shape {arr.shape} is not supported "
                                                f"(per tensor or per output channel with {m} values)")
        if dt == "uint8":
            w = (w.astype(np.int16) - 128).astype(np.int8)
            zp = zp.astype(np.int16) - 128
        try:
            return w.astype(np.int8), QParams(scale, zp.astype(np.int64), "int8")
        except Exception as e:
            raise ModelError(f"node {name}: {what} quantisation parameters are invalid: {e}") from None

    def _bias(self, name, b, m):
        if b is None:
            return None
        b = np.asarray(b)
        if b.dtype != np.int32:
            raise ModelError(f"node {name}: bias must be int32, not {b.dtype}")
        if b.size != m:
            raise ShapeError(f"node {name}: bias of shape {b.shape} does not match {m} output channels")
        return b.reshape(m)

    def q_QLinearConv(self, node, name, attrs, inputs):
        x = self.qin(inputs[0], name)
        c = [self.const(inputs[i], name, w) for i, w in
             ((1, "x_scale"), (2, "x_zero_point"), (3, "w"), (4, "w_scale"), (5, "w_zero_point"),
              (6, "y_scale"), (7, "y_zero_point"))]
        xs, xzp, w, ws, wzp, ys, yzp = c
        b = self.opt_const(inputs, 8, name, "B")
        self.bind(x, self.qparams(xs, xzp, xzp.dtype, name, "x"), name)
        yq = self.qparams(ys, yzp, yzp.dtype, name, "y")
        qw, wq = self._weights(name, w, ws, wzp, True)
        stride, pads, dilation, group = conv_geometry(name, attrs, self.tensors[x][0], qw.shape)
        layer = Conv(name=name, inputs=[x], output=node.output[0], weight=qw, w_q=wq,
                     bias=self._bias(name, b, qw.shape[0]), stride=stride, pads=pads, dilation=dilation, groups=group)
        self.layer(layer, node.output[0], _Cell(yq))

    def q_QLinearMatMul(self, node, name, attrs, inputs):
        a = self.qin(inputs[0], name)
        c = [self.const(inputs[i], name, w) for i, w in
             ((1, "a_scale"), (2, "a_zero_point"), (3, "b"), (4, "b_scale"), (5, "b_zero_point"),
              (6, "y_scale"), (7, "y_zero_point"))]
        as_, azp, b, bs, bzp, ys, yzp = c
        self.bind(a, self.qparams(as_, azp, azp.dtype, name, "a"), name)
        yq = self.qparams(ys, yzp, yzp.dtype, name, "y")
        b = np.asarray(b)
        if b.ndim != 2:
            raise UnsupportedAttributeError(f"node {name}: b of shape {b.shape} is not supported (2-D weights only)")
        qw, wq = self._weights(name, b.T, bs, bzp, True)
        self._dense_shape(name, a, qw)
        layer = Dense(name=name, inputs=[a], output=node.output[0], weight=qw, w_q=wq)
        self.layer(layer, node.output[0], _Cell(yq))

    def _dense_shape(self, name, a, qw):
        shape = self.tensors[a][0]
        if shape != (qw.shape[1],):
            raise ShapeError(f"node {name}: input of per-sample shape {shape} does not match a weight with "
                             f"{qw.shape[1]} inputs (need (N, {qw.shape[1]}))")

    def q_ConvInteger(self, node, name, attrs, inputs):
        x = self.qin(inputs[0], name)
        w = self.const(inputs[1], name, "w")
        xzp = self.opt_const(inputs, 2, name, "x_zero_point")
        wzp = self.opt_const(inputs, 3, name, "w_zero_point")
        xq = self.xq(x)
        if int(_scalar(xzp if xzp is not None else 0)) != int(xq.zero_point):
            raise ModelError(f"node {name}: x_zero_point {xzp} differs from the input's {int(xq.zero_point)}")
        geo = conv_geometry(name, attrs, self.tensors[x][0], np.shape(w))
        self.vals[node.output[0]] = _Pending("conv", name, [x], dict(w=w, wzp=wzp, geo=geo), stage="acc")

    def q_MatMulInteger(self, node, name, attrs, inputs):
        a = self.qin(inputs[0], name)
        b = np.asarray(self.const(inputs[1], name, "b"))
        azp = self.opt_const(inputs, 2, name, "a_zero_point")
        bzp = self.opt_const(inputs, 3, name, "b_zero_point")
        aq = self.xq(a)
        if int(_scalar(azp if azp is not None else 0)) != int(aq.zero_point):
            raise ModelError(f"node {name}: a_zero_point {azp} differs from the input's {int(aq.zero_point)}")
        if b.ndim != 2:
            raise UnsupportedAttributeError(f"node {name}: b of shape {b.shape} is not supported (2-D weights only)")
        self.vals[node.output[0]] = _Pending("dense", name, [a], dict(w=b.T, wzp=bzp), stage="acc")

    def q_Cast(self, node, name, attrs, inputs):
        x = self.get(inputs[0], name)
        if isinstance(x, _Pending) and x.stage == "acc":
            self.vals[node.output[0]] = _Pending(x.kind, x.node, x.inputs, dict(x.attrs), stage="cast")
            return
        raise self.unsupported(name, "Cast", "only of a ConvInteger/MatMulInteger accumulator")

    def q_Mul(self, node, name, attrs, inputs):
        a, b = self.get(inputs[0], name), self.get(inputs[1], name)
        if isinstance(a, _Const):
            a, b = b, a
        if isinstance(a, _Pending) and a.stage == "cast" and isinstance(b, _Const):
            attrs2 = dict(a.attrs, acc_scale=np.asarray(b.value, np.float32).reshape(-1))
            self.vals[node.output[0]] = _Pending(a.kind, a.node, a.inputs, attrs2, stage="scaled")
            return
        raise self.unsupported(name, "Mul", "only the scale of a ConvInteger/MatMulInteger accumulator")

    # QDQ float ops on dequantised operands
    def dq_in(self, name_in, node):
        v = self.get(name_in, node)
        if isinstance(v, _DQ):
            return v.src
        raise ModelError(f"node {node}: input {name_in!r} must come from DequantizeLinear in a quantised model, "
                         f"not a {type(v).__name__.strip('_')}")

    def dq_weight(self, name_in, node, what="weight"):
        v = self.get(name_in, node, what)
        if not isinstance(v, _DQConst):
            raise ModelError(f"node {node}: {what} {name_in!r} must be a DequantizeLinear of an integer initializer")
        return v

    def dq_bias(self, inputs, i, node, m):
        if len(inputs) <= i or not inputs[i]:
            return None
        v = self.get(inputs[i], node, "bias")
        if isinstance(v, _DQConst):
            if v.q.dtype != np.int32:
                raise ModelError(f"node {node}: quantised bias must be int32, not {v.q.dtype}")
            return ("int", self._bias(node, v.q, m))
        if isinstance(v, _Const):
            return ("float", self._bias_vector(node, v.value, m))
        raise ModelError(f"node {node}: bias {inputs[i]!r} must be a constant")

    def q_Conv(self, node, name, attrs, inputs):
        x = self.dq_in(inputs[0], name)
        wv = self.dq_weight(inputs[1], name)
        if wv.scale.ndim and wv.axis != 0:
            raise UnsupportedAttributeError(f"node {name}: weight DequantizeLinear axis={wv.axis} is not supported (0)")
        qw, wq = self._weights(name, wv.q, wv.scale, wv.zp, True)
        geo = conv_geometry(name, attrs, self.tensors[x][0], qw.shape)
        bias = self.dq_bias(inputs, 2, name, qw.shape[0])
        self.vals[node.output[0]] = _Pending("conv", name, [x], dict(qw=qw, wq=wq, bias=bias, geo=geo))

    def _q_dense(self, node, name, x, wv, trans_b, bias):
        if wv.q.ndim != 2:
            raise ShapeError(f"node {name}: weight of shape {wv.q.shape} must be 2-D")
        out_axis = 0 if trans_b else 1
        if wv.scale.ndim and wv.axis != out_axis:
            raise UnsupportedAttributeError(f"node {name}: weight DequantizeLinear axis={wv.axis} is not supported "
                                            f"(per output channel is axis {out_axis})")
        qw, wq = self._weights(name, wv.q if trans_b else wv.q.T, wv.scale, wv.zp, True)
        self._dense_shape(name, x, qw)
        self.vals[node.output[0]] = _Pending("dense", name, [x], dict(qw=qw, wq=wq, bias=bias))

    def q_Gemm(self, node, name, attrs, inputs):
        self._check_gemm_attrs(name, attrs)
        x = self.dq_in(inputs[0], name)
        wv = self.dq_weight(inputs[1], name)
        trans_b = bool(int(attrs.get("transB", 0)))
        m = wv.q.shape[0 if trans_b else 1] if wv.q.ndim == 2 else -1
        self._q_dense(node, name, x, wv, trans_b, self.dq_bias(inputs, 2, name, m))

    def q_MatMul(self, node, name, attrs, inputs):
        x = self.dq_in(inputs[0], name)
        self._q_dense(node, name, x, self.dq_weight(inputs[1], name), False, None)

    def q_Add(self, node, name, attrs, inputs):
        a, b = self.get(inputs[0], name), self.get(inputs[1], name)
        if isinstance(a, _DQ) and isinstance(b, _DQ):
            if self.tensors[a.src][0] != self.tensors[b.src][0]:
                raise ShapeError(f"node {name}: Add of shapes {self.tensors[a.src][0]} and {self.tensors[b.src][0]} "
                                 "(broadcasting is not supported)")
            self.vals[node.output[0]] = _Pending("add", name, [a.src, b.src])
            return
        if isinstance(a, (_DQConst, _Const)):
            a, b = b, a
        if isinstance(a, _Pending) and a.kind in ("conv", "dense") and a.lo is None and a.hi is None \
                and a.stage in ("float", "scaled") and a.attrs.get("bias") is None:
            m = (a.attrs["qw"] if "qw" in a.attrs else np.asarray(a.attrs["w"])).shape[0]
            if isinstance(b, _DQConst) and b.q.dtype == np.int32:
                bias = ("int", self._bias(name, b.q, m))
            elif isinstance(b, _Const):
                bias = ("float", self._bias_vector(name, b.value, m))
            else:
                raise self.unsupported(name, "Add", "the bias operand must be a constant")
            self.vals[node.output[0]] = _Pending(a.kind, a.node, a.inputs, dict(a.attrs, bias=bias), stage=a.stage)
            return
        raise self.unsupported(name, "Add", "in a quantised model both operands must be DequantizeLinear outputs "
                               "(or a constant bias after a MatMul/Conv)")

    def _clamp_node(self, node, name, lo, hi, inputs):
        x = self.get(inputs[0], name)
        out = node.output[0]
        if isinstance(x, _Pending) and x.kind in ("conv", "dense", "add") and x.stage in ("float", "scaled"):
            nlo = lo if x.lo is None else (x.lo if lo is None else max(lo, x.lo))
            nhi = hi if x.hi is None else (x.hi if hi is None else min(hi, x.hi))
            self.vals[out] = _Pending(x.kind, x.node, x.inputs, x.attrs, nlo, nhi, x.stage)
            return
        if isinstance(x, _DQ):
            q = self.xq(x.src)
            qlo = None if lo is None else int(quantize(np.float32(lo), q))
            qhi = None if hi is None else int(quantize(np.float32(hi), q))
            layer = Clip(name=name, inputs=[x.src], output=out, lo=qlo, hi=qhi)
            self.layer(layer, out, self.tensors[x.src][1])
            self.vals[out] = _DQ(out)
            return
        raise ModelError(f"node {name}: {node.op_type} input {inputs[0]!r} must be a DequantizeLinear output or "
                         "a quantised Conv/Gemm/Add")

    def q_Relu(self, node, name, attrs, inputs):
        self._clamp_node(node, name, 0.0, None, inputs)

    def q_Clip(self, node, name, attrs, inputs):
        lo, hi = self._clip_bounds(name, attrs, inputs)
        self._clamp_node(node, name, lo, hi, inputs)

    def _int_or_dq(self, name_in, node):
        v = self.get(name_in, node)
        if isinstance(v, _Q):
            return v.name, False
        if isinstance(v, _DQ):
            return v.src, True
        raise ModelError(f"node {node}: input {name_in!r} must be an integer tensor or a DequantizeLinear output")

    def q_MaxPool(self, node, name, attrs, inputs):
        x, dq = self._int_or_dq(inputs[0], name)
        geo, _, _ = self._pool(node, name, attrs, self.tensors[x][0], "MaxPool")
        out = node.output[0]
        self.layer(MaxPool(name=name, inputs=[x], output=out, **geo), out, self.tensors[x][1])
        if dq:
            self.vals[out] = _DQ(out)

    def q_AveragePool(self, node, name, attrs, inputs):
        x = self.dq_in(inputs[0], name)
        geo, cip, _ = self._pool(node, name, attrs, self.tensors[x][0], "AveragePool")
        self.vals[node.output[0]] = _Pending("avgpool", name, [x], dict(geo, count_include_pad=cip))

    def q_GlobalAveragePool(self, node, name, attrs, inputs):
        x = self.dq_in(inputs[0], name)
        self.vals[node.output[0]] = _Pending("gap", name, [x])

    def q_Flatten(self, node, name, attrs, inputs):
        x, dq = self._int_or_dq(inputs[0], name)
        self._flatten_ok(name, node.op_type, attrs, inputs, self.tensors[x][0])
        out = node.output[0]
        self.layer(Flatten(name=name, inputs=[x], output=out), out, self.tensors[x][1])
        if dq:
            self.vals[out] = _DQ(out)

    q_Reshape = q_Flatten

    def q_Concat(self, node, name, attrs, inputs):
        srcs = [self._int_or_dq(i, name) for i in inputs]
        xs = [s for s, _ in srcs]
        self._check_concat_axis(name, attrs, len(self.tensors[xs[0]][0]))
        qs = [self.xq(x) for x in xs]
        if any(q != qs[0] for q in qs):
            raise ModelError(f"node {name}: Concat inputs have different quantisation parameters "
                             f"({', '.join(map(str, qs))}): requantisation is not supported")
        cell = self.tensors[xs[0]][1]
        for x in xs[1:]:
            self.tensors[x][1] = cell
        out = node.output[0]
        self.layer(Concat(name=name, inputs=xs, output=out), out, cell)
        if all(dq for _, dq in srcs):
            self.vals[out] = _DQ(out)

    q_Softmax = f_Softmax

    def materialise(self, p: _Pending, yq: QParams, out, qname):
        """Build the IR layer of a pending float op once its output parameters are known."""
        if p.stage not in ("float", "scaled"):
            raise ModelError(f"node {qname}: QuantizeLinear of an integer accumulator needs Cast and Mul by its scale first")
        common = dict(name=p.node, inputs=list(p.inputs), output=out)
        lo = None if p.lo is None else int(quantize(np.float32(p.lo), yq))
        hi = None if p.hi is None else int(quantize(np.float32(p.hi), yq))
        a = p.attrs
        if p.kind in ("conv", "dense"):
            xq = self.xq(p.inputs[0])
            if p.stage == "scaled":
                w = np.asarray(a["w"])
                s = a["acc_scale"]
                if s.size not in (1, w.shape[0]):
                    raise ShapeError(f"node {qname}: accumulator scale of {s.size} values for {w.shape[0]} channels")
                w_scale = (s / xq.scale).astype(np.float32)
                qw, wq = self._weights(p.node, w, w_scale, a.get("wzp"), True)
            else:
                qw, wq = a["qw"], a["wq"]
            bias = a.get("bias")
            if bias is not None:
                bias = bias[1] if bias[0] == "int" else (
                    quantize_bias(bias[1], xq.scale, wq.scale) if p.stage == "float"
                    else quantize_bias(bias[1], np.float32(1), np.broadcast_to(a["acc_scale"], (qw.shape[0],))))
            if p.kind == "conv":
                stride, pads, dilation, group = a["geo"]
                layer = Conv(**common, weight=qw, w_q=wq, bias=bias, stride=stride, pads=pads, dilation=dilation,
                             groups=group, lo=lo, hi=hi)
            else:
                self._dense_shape(p.node, p.inputs[0], qw)
                layer = Dense(**common, weight=qw, w_q=wq, bias=bias, lo=lo, hi=hi)
        elif p.kind == "add":
            layer = Add(**common, lo=lo, hi=hi)
        elif p.kind == "avgpool":
            layer = AvgPool(**common, **a)
        elif p.kind == "gap":
            layer = GlobalAvgPool(**common)
        else:  # pragma: no cover - every pending kind is handled above
            raise ModelError(f"node {p.node}: cannot quantise a {p.kind}")
        self.layer(layer, out, _Cell(yq))

    def fuse_clamps(self, outputs):
        """Fold a Clip layer into the Conv/Dense/Add feeding only it (exact: both clamp the same integers)."""
        uses = {}
        for l in self.layers:
            for i in l.inputs:
                uses[i] = uses.get(i, 0) + 1
        producer = {l.output: l for l in self.layers}
        keep = []
        for l in self.layers:
            src = producer.get(l.inputs[0]) if isinstance(l, Clip) else None
            if (src is not None and isinstance(src, (Conv, Dense, Add)) and uses.get(src.output) == 1
                    and src.output not in outputs):
                del self.tensors[src.output]
                src.output = l.output
                src.lo = l.lo if src.lo is None else (src.lo if l.lo is None else max(src.lo, l.lo))
                src.hi = l.hi if src.hi is None else (src.hi if l.hi is None else min(src.hi, l.hi))
                producer[l.output] = src
                continue
            keep.append(l)
        self.layers = keep

    def finish_quantised(self):
        if self.ir_input is None:
            raise ModelError("the quantised model's float input is never quantised by a QuantizeLinear")
        outputs = []
        for o in self.output_names:
            v = self.vals.get(o)
            if isinstance(v, _Q):
                ir = v.name
            elif isinstance(v, _DQ):
                ir = v.src
            else:
                raise ModelError(f"graph output {o!r} is not an integer tensor or the DequantizeLinear of one "
                                 f"(it is a {type(v).__name__.strip('_') if v is not None else 'missing value'}); "
                                 "float computations outside QDQ pairs are not supported")
            if ir == self.ir_input:
                raise ModelError(f"graph output {o!r} is the input itself")
            outputs.append(ir)
            self.meta["onnx_outputs"][o] = ir
        self.fuse_clamps(outputs)
        tensors = {}
        for tname, (shape, cell, *_) in self.tensors.items():
            if cell.q is None:
                raise ModelError(f"tensor {tname!r}: its quantisation parameters are never given")
            tensors[tname] = Tensor(tname, shape, cell.q)
        if "input_q" not in self.meta:
            self.meta["input_q"] = tensors[self.ir_input].q
        return Graph(self.name, tensors, self.layers, [self.ir_input], outputs, meta=self.meta)


def load_onnx(model, *, calibration=None, act_dtype="int8", name=None) -> Graph:
    """Import an ONNX model (path, bytes or ``onnx.ModelProto``) as a quantised :class:`~scalenet.ir.Graph`.

    Quantised models (QOperator or QDQ) are taken as they are; float models are quantised with
    ``calibration`` (a float batch of the input's per-sample shape), activations ``act_dtype``.
    """
    proto = read_model(model)
    try:
        importer = _Importer(proto, name)
        return importer.run(calibration, act_dtype)
    except ScalenetError:
        raise
    except Exception as e:  # a malformed graph that slipped past the checks: still one clear error
        raise ModelError(f"not a valid ONNX model: {type(e).__name__}: {e}") from None
