"""Fault injection through the whole accelerator in co-simulation: every fault ends in a specific error within
a bounded number of cycles, nothing is written outside the activation buffers, and the next run is exact.

The matrix: SLVERR/DECERR on reads of descriptors, weights, parameters and activations; SLVERR/DECERR on
output writes; corrupted descriptors (bad opcode, fields beyond the hardware's limits); abort mid-layer; and
heavy random back-pressure on every AXI channel (which must change nothing but the cycle count).
"""

import numpy as np
import pytest

from scalenet.cosim.platform import SimTransport
from scalenet.driver.accelerator import Accelerator, AcceleratorError
from scalenet.rtl import regmap
from scalenet.rtl.config import AcceleratorConfig
from scalenet.rtl.regmap import DESCRIPTOR_BYTES, ErrorCode

from test_top import every_layer_type

# The configuration of tests/test_top.py: one compiled model serves both.
CFG = AcceleratorConfig(rows=4, cols=4, max_width=32, max_channels=512, line_buffer_bytes=8192,
                        weight_buffer_bytes=64 * 1024)
MAX_ERROR_CYCLES = 20_000
"""An injected fault must stop the device this soon after the run starts (the clean run takes ~40 k)."""


@pytest.fixture(scope="module")
def setup():
    transport = SimTransport(config=CFG, mem_size=1 << 20, latency=6, stall=0.1, seed=11)
    acc = Accelerator(transport, config=CFG, timeout=300.0, poll_cycles=500)
    graph, x = every_layer_type()
    loaded = acc.load(graph)
    return acc, transport, graph, x[:1], loaded


def _descriptor_with(net, pred):
    for i, d in enumerate(net.descriptors):
        if pred(d):
            return i, d
    raise AssertionError("the test network has no such descriptor")


def _activation_ranges(net):
    """Tensor buffers: the device's outputs and the input the host writes; never descriptors or weights."""
    return [(p.addr, p.addr + p.nbytes) for p in net.placements.values()]


FAULTS = {
    # name: (how to inject, expected error code or None for "must still be exact")
    "descriptor read SLVERR": ("read", lambda net: (net.desc_addr, net.desc_addr + 8), "SLVERR", ErrorCode.READ_SLVERR),
    "weight read SLVERR": ("read", lambda net: (lambda d: (d["weight_addr"], d["weight_addr"] + 8))(
        _descriptor_with(net, lambda d: d["weight_bytes"] > 0)[1]), "SLVERR", ErrorCode.READ_SLVERR),
    "param read DECERR": ("read", lambda net: (lambda d: (d["param_addr"], d["param_addr"] + 8))(
        _descriptor_with(net, lambda d: d["param_bytes"] > 0)[1]), "DECERR", ErrorCode.READ_DECERR),
    "input read DECERR": ("read", lambda net: (lambda p: (p.addr, p.addr + 8))(
        net.placements[net.graph.inputs[0]]), "DECERR", ErrorCode.READ_DECERR),
    "output write SLVERR": ("write", lambda net: (lambda p: (p.addr, p.addr + p.nbytes))(
        net.placements[net.graph.outputs[0]]), "SLVERR", ErrorCode.WRITE_SLVERR),
    "intermediate write DECERR": ("write", lambda net: (lambda d: (d["out_addr"], d["out_addr"] + 8))(
        net.descriptors[0]), "DECERR", ErrorCode.WRITE_DECERR),
    "bad opcode": ("corrupt", "opcode", None, ErrorCode.BAD_OPCODE),
    "kernel beyond the hardware": ("corrupt", "kernel_h", None, ErrorCode.BAD_DESCRIPTOR),
    "abort mid-layer": ("abort", None, None, ErrorCode.ABORTED),
    "back-pressure on every channel": ("stall", None, None, None),
}


def _corrupt(memory, net, field):
    """Set a descriptor field to a value the hardware must refuse, directly in the memory image."""
    index = 1
    fields = dict(net.descriptors[index])
    if field == "opcode":
        fields["opcode"] = 0xF
    else:
        fields[field] = CFG.max_kernel + 1
    base = net.desc_addr + index * DESCRIPTOR_BYTES
    saved = memory.data[base:base + DESCRIPTOR_BYTES].copy()
    memory.data[base:base + DESCRIPTOR_BYTES] = np.frombuffer(regmap.pack_descriptor(**fields), np.uint8)
    return lambda: memory.data.__setitem__(slice(base, base + DESCRIPTOR_BYTES), saved)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_is_reported_contained_and_recovered(setup, fault):
    acc, transport, graph, x, loaded = setup
    net = loaded.compiled
    platform, memory = transport.platform, transport.platform.memory
    how, where, resp, code = FAULTS[fault]

    # Guard pattern: everything outside the activation buffers must survive the faulty run unchanged.
    before = memory.data.copy()
    restore = lambda: None  # noqa: E731
    if how in ("read", "write"):
        lo, hi = where(net)
        memory.add_error(lo, hi, resp, read=how == "read", write=how == "write")
    elif how == "corrupt":
        restore = _corrupt(memory, net, where)
        before = memory.data.copy()
    elif how == "stall":
        # A second platform on the same compiled model, its memory withholding READY/VALID 60 % of cycles.
        transport = SimTransport(config=CFG, mem_size=1 << 20, latency=6, stall=0.6, seed=12)
        acc = Accelerator(transport, config=CFG, timeout=300.0, poll_cycles=500)
        loaded = acc.load(graph)
        net, platform, memory = loaded.compiled, transport.platform, transport.platform.memory
        before = memory.data.copy()

    start = platform.cycles
    try:
        if how == "abort":
            addr, region = net.encode_input(x[0])
            transport.write_mem(addr, region)
            before = memory.data.copy()
            acc.write("DESC_ADDR", net.desc_addr)
            acc.write("DESC_COUNT", net.desc_count)
            acc.write("CTRL", regmap.pack("CTRL", start=1))
            transport.wait(2000)
            assert regmap.unpack("STATUS", acc.read("STATUS"))["busy"]
            acc.write("CTRL", regmap.pack("CTRL", abort=1))
            transport.wait(200)
            status = regmap.unpack("STATUS", acc.read("STATUS"))
            assert not status["busy"] and status["error"]
            assert regmap.unpack("ERROR", acc.read("ERROR"))["code"] == code
            acc.abort_and_reset()
        elif code is None:
            out = acc.run(loaded, x)
            for name in graph.outputs:
                np.testing.assert_array_equal(out[name], graph.run(x)[name], err_msg=name)
        else:
            with pytest.raises(AcceleratorError) as info:
                acc.run(loaded, x)
            assert info.value.code == code, str(info.value)
            assert code.name in str(info.value)
            assert platform.cycles - start <= MAX_ERROR_CYCLES, platform.cycles - start
    finally:
        memory.clear_errors()

    changed = np.flatnonzero(memory.data != before)
    inside = np.zeros(changed.size, bool)
    for lo, hi in _activation_ranges(net):
        inside |= (changed >= lo) & (changed < hi)
    assert inside.all(), f"{fault}: bytes written outside the activation buffers at {changed[~inside][:8]}"
    assert not memory.violations, memory.first_violation

    restore()
    out = acc.run(loaded, x)
    for name in graph.outputs:
        np.testing.assert_array_equal(out[name], graph.run(x)[name], err_msg=f"after {fault}: {name}")
