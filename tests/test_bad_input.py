"""Every kind of bad input gets one specific exception whose message names the problem (the reliability list).

Each row: what is wrong, the call that must refuse it, the exception type, and a pattern its message must
match. The device rows run against the behavioural device; the RTL answers the same register accesses (see
tests/test_top.py and tests/test_axi_control.py) and the serial link's own failures are in
tests/test_driver_serial.py.
"""

import numpy as np
import onnx
import pytest
from onnx import helper

import scalenet
from scalenet import zoo
from scalenet.driver.accelerator import Accelerator, AcceleratorError, AcceleratorTimeout, DeviceMismatch
from scalenet.driver.compiler import compile_graph
from scalenet.driver.transport import ModelDevice, ModelTransport, RegisterAccessError
from scalenet.errors import (HardwareLimitError, ModelError, QuantisationError, ShapeError,
                             UnsupportedAttributeError, UnsupportedOperatorError)
from scalenet.onnx_import import load_onnx
from scalenet.quant import QParams, choose_qparams, quantize
from scalenet.rtl import regmap
from scalenet.rtl.config import AcceleratorConfig

from onnx_models import float_cnn, make_model, vinfo


def _float_model():
    return float_cnn(np.random.default_rng(0), with_softmax=False)


def _truncated():
    raw = _float_model().SerializeToString()
    return load_onnx(raw[: len(raw) // 2])


def _unsupported_op():
    m = _float_model()
    m.graph.node.append(helper.make_node("LRN", ["logits"], ["lrn"], name="lrn1", size=3))
    m.graph.output[0].name = "lrn"
    return load_onnx(m)


def _unsupported_attribute():
    f = np.float32
    node = helper.make_node("MaxPool", ["x"], ["y"], name="colmajor", kernel_shape=[2, 2], storage_order=1)
    m = make_model([node], [vinfo("x", f, [1, 2, 8, 8])], [vinfo("y", f, None)], {})
    return load_onnx(m, calibration=np.zeros((1, 2, 8, 8), f))


def _input_shape():
    return zoo.build("lenet5").run(np.zeros((1, 28, 28), np.int8))


def _input_dtype():
    g = zoo.build("lenet5")
    return g.run(np.zeros(g.input.shape, np.float32))


def _model_device(**kw):
    return Accelerator(ModelTransport(ModelDevice(**kw)))


def _start_while_busy():
    dev = ModelDevice()
    dev.latency_polls = 100
    acc = Accelerator(ModelTransport(dev))
    loaded = acc.load(zoo.build("lenet5"))
    acc.write("DESC_ADDR", loaded.compiled.desc_addr)
    acc.write("DESC_COUNT", loaded.compiled.desc_count)
    acc.write("CTRL", regmap.pack("CTRL", start=1))
    return acc.run(loaded, np.zeros(loaded.graph.input.shape, np.int8))


def _timeout():
    dev = ModelDevice()
    dev.hang = True
    acc = Accelerator(ModelTransport(dev), max_polls=3)
    loaded = acc.load(zoo.build("lenet5"))
    return acc.run(loaded, np.zeros(loaded.graph.input.shape, np.int8))


def _wrong_device_config():
    return Accelerator(ModelTransport(ModelDevice(AcceleratorConfig(rows=4, cols=4))), config=AcceleratorConfig())


def _wrong_device_id():
    dev = ModelDevice()
    dev.regs["ID"] = 0x1234_5678
    return Accelerator(ModelTransport(dev))


def _oversize_layer():
    return compile_graph(zoo.build("alexnet"), AcceleratorConfig())


BAD_INPUTS = {
    "truncated ONNX": (_truncated, ModelError, "not a valid ONNX model"),
    "not ONNX at all": (lambda: load_onnx(b"\x00\x01garbage" * 10), ModelError, "not a valid ONNX model"),
    "unsupported operator": (_unsupported_op, UnsupportedOperatorError, "LRN"),
    "unsupported attribute value": (_unsupported_attribute, UnsupportedAttributeError, "storage_order=1"),
    "input of the wrong shape": (_input_shape, ShapeError, r"shape \(1, 32, 32\).*got \(1, 28, 28\)"),
    "input of the wrong dtype": (_input_dtype, ShapeError, "must be int8, not float32"),
    "scale <= 0": (lambda: QParams(0.0, 0, "int8"), QuantisationError, "scale must be > 0"),
    "negative scale": (lambda: QParams(-0.5, 0, "uint8"), QuantisationError, "scale must be > 0"),
    "zero point outside the type": (lambda: QParams(0.1, 300, "uint8"), QuantisationError, "zero point"),
    "NaN scale": (lambda: QParams(float("nan"), 0, "int8"), QuantisationError, "finite"),
    "NaN in a float input": (lambda: quantize(np.array([1.0, np.nan], np.float32), QParams(0.1, 0, "int8")),
                             QuantisationError, "NaN|finite"),
    "inf in calibration": (lambda: choose_qparams(-np.inf, 1.0), QuantisationError, "not finite"),
    "layer beyond the hardware": (_oversize_layer, HardwareLimitError, r"layer \S+ \(conv\): kernel"),
    "read of a reserved register": (lambda: _model_device().transport.read_reg(0x0F0), RegisterAccessError,
                                    "reserved register offset 0x0F0"),
    "write to a read-only register": (lambda: _model_device().transport.write_reg(0, 1), RegisterAccessError,
                                      "read-only register ID"),
    "unknown register name": (lambda: _model_device().read("NO_SUCH_REG"), KeyError, "NO_SUCH_REG"),
    "write to a reserved register": (lambda: _model_device().transport.write_reg(0x0F0, 1), RegisterAccessError,
                                     "reserved register offset 0x0F0"),
    "start while busy": (_start_while_busy, AcceleratorError, "busy"),
    "device timeout": (_timeout, AcceleratorTimeout, "no completion within"),
    "wrong device configuration": (_wrong_device_config, DeviceMismatch, "configured as 4x4"),
    "not a SCALENet device": (_wrong_device_id, DeviceMismatch, "0x12345678|ID"),
    "unknown zoo network": (lambda: scalenet.load("resnet999"), ModelError, "resnet999"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_clearly(case):
    call, exc_type, pattern = BAD_INPUTS[case]
    with pytest.raises(exc_type, match=pattern) as info:
        call()
    # One line, no internals: what a CLI user sees.
    assert "\n" not in str(info.value) and len(str(info.value)) < 400, str(info.value)


def test_the_device_works_after_each_device_fault():
    """Timeout and start-while-busy leave a device that runs the next frame exactly."""
    dev = ModelDevice()
    acc = Accelerator(ModelTransport(dev), max_polls=3)
    graph = zoo.build("lenet5")
    loaded = acc.load(graph)
    x = np.random.default_rng(0).integers(-128, 128, graph.input.shape).astype(np.int8)
    dev.hang = True
    with pytest.raises(AcceleratorTimeout):
        acc.run(loaded, x)
    dev.hang = False
    np.testing.assert_array_equal(acc.run(loaded, x)[graph.outputs[0]], graph.run(x)[graph.outputs[0]])
