"""The driver API against the behavioural device: identity checks, runs, counters, errors, recovery."""

import numpy as np
import pytest

from scalenet import zoo
from scalenet.driver.accelerator import (Accelerator, AcceleratorError, AcceleratorTimeout, DeviceMismatch,
                                         open_target)
from scalenet.driver.transport import ModelDevice, ModelTransport, RegisterAccessError
from scalenet.errors import HardwareLimitError
from scalenet.quant import quantize
from scalenet.rtl import regmap
from scalenet.rtl.config import AcceleratorConfig
from scalenet.rtl.regmap import ErrorCode


def digits_frames(n=4):
    graph = zoo.build("digits_cnn")
    rng = np.random.default_rng(0)
    return graph, quantize(rng.uniform(0, 16, (n, *graph.input.shape)).astype(np.float32), graph.input.q)


def test_runs_match_the_reference_and_counters_count():
    graph, x = digits_frames()
    dev = ModelDevice()
    dev.latency_polls = 3
    acc = Accelerator(ModelTransport(dev))
    assert acc.info["version"] == "%d.%d.%d" % regmap.VERSION
    loaded = acc.load(graph)
    out = acc.run(loaded, x)
    np.testing.assert_array_equal(out["fc"], graph.run(x)["fc"])
    c = acc.counters()
    assert c["mac_active"] == 4 * graph.macs and c["cycles"] > 0 and c["dma_rd_bytes"] > 0
    acc.clear_counters()
    assert acc.counters()["mac_active"] == 0
    assert dev.runs == 4


def test_async_run_and_callback():
    graph, x = digits_frames(2)
    acc = open_target("model")
    loaded = acc.load(graph)
    seen = []
    future = acc.run_async(loaded, x, callback=seen.append)
    out = future.result(timeout=30)
    np.testing.assert_array_equal(out["fc"], graph.run(x)["fc"])
    acc.close()
    assert len(seen) == 1 and np.array_equal(seen[0]["fc"], out["fc"])


def test_device_identity_and_configuration_are_checked():
    dev = ModelDevice(AcceleratorConfig(rows=4, cols=4))
    with pytest.raises(DeviceMismatch, match="4x4 PEs.*expects 8x8"):
        Accelerator(ModelTransport(dev), config=AcceleratorConfig())
    dev.regs["ID"] = 0x1234
    with pytest.raises(DeviceMismatch, match="not SCALENet"):
        Accelerator(ModelTransport(dev))


def test_limits_are_refused_before_anything_is_written():
    dev = ModelDevice(AcceleratorConfig(max_width=16))
    acc = Accelerator(ModelTransport(dev))
    before = dev.memory.copy()
    with pytest.raises(HardwareLimitError, match="input width 32 exceeds"):
        acc.load(zoo.build("lenet5"))
    assert np.array_equal(before, dev.memory)


def test_timeout_aborts_resets_and_names_the_layer():
    graph, x = digits_frames(1)
    dev = ModelDevice()
    acc = Accelerator(ModelTransport(dev), max_polls=5)
    loaded = acc.load(graph)
    dev.hang = True
    with pytest.raises(AcceleratorTimeout, match="aborted and reset") as info:
        acc.run(loaded, x)
    assert info.value.code == ErrorCode.WATCHDOG
    assert not regmap.unpack("STATUS", dev.read(regmap.by_name("STATUS").offset))["busy"]
    dev.hang = False                                   # the next run works
    np.testing.assert_array_equal(acc.run(loaded, x)["fc"], graph.run(x)["fc"])


def test_error_status_raises_with_code_and_layer_then_recovers():
    graph, x = digits_frames(1)
    dev = ModelDevice()
    acc = Accelerator(ModelTransport(dev))
    loaded = acc.load(graph)
    dev.fail_layer = 2
    with pytest.raises(AcceleratorError, match=f"READ_SLVERR in layer {loaded.compiled.layer_of[2]}") as info:
        acc.run(loaded, x)
    assert info.value.code == ErrorCode.READ_SLVERR
    dev.fail_layer = None
    np.testing.assert_array_equal(acc.run(loaded, x)["fc"], graph.run(x)["fc"])


def test_register_access_rules():
    t = ModelTransport()
    with pytest.raises(RegisterAccessError, match="reserved"):
        t.read_reg(0x0F0)
    with pytest.raises(RegisterAccessError, match="read-only register STATUS"):
        t.write_reg(regmap.by_name("STATUS").offset, 1)
    t.write_reg(regmap.by_name("DESC_COUNT").offset, 0)
    t.write_reg(regmap.by_name("CTRL").offset, regmap.pack("CTRL", start=1))
    t.device.latency_polls = 10
    t.device.write(regmap.by_name("CTRL").offset, regmap.pack("CTRL", start=1))
    t.write_reg(regmap.by_name("CTRL").offset, regmap.pack("CTRL", start=1))
    # A START while a run is busy is ignored and flagged.
    status = regmap.unpack("STATUS", t.device.regs["STATUS"])
    assert status["busy"] and status["start_while_busy"]
    with pytest.raises(ValueError, match="outside the device memory"):
        t.write_mem(t.mem_size - 2, b"1234")
