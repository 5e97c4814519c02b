"""The issue's ImageNet-sized layer through the whole accelerator in the compiled simulator.

3x3 conv, 64 -> 64 channels, 56x56, pad 1 (115.6 M MACs) on the default 8x8 configuration: the RTL
(sequencer, DMA, conv engine) against the AXI memory model, output compared with the reference bit for
bit; prints cycles, PE utilisation from the hardware counters, and simulation speed.
"""

import time

import numpy as np

from scalenet.cosim.platform import SimTransport
from scalenet.driver.accelerator import Accelerator
from scalenet.floatnet import FloatNet, FNode, quantize_net
from scalenet.quant import quantize
from scalenet.rtl.config import AcceleratorConfig


def layer(cin=64, cout=64, hw=56, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1 / np.sqrt(cin * 9), (cout, cin, 3, 3)).astype(np.float32)
    net = FloatNet("conv3x3", "x", (cin, hw, hw),
                   [FNode("conv", "conv", ["x"], "conv", dict(weight=w, bias=rng.normal(0, 0.1, cout), pads=1)),
                    FNode("relu", "relu", ["conv"], "relu")], ["relu"])
    cal = rng.normal(0, 1, (2, cin, hw, hw)).astype(np.float32)
    graph = quantize_net(net, cal, act_dtype="uint8")
    return graph, quantize(cal[:1], graph.input.q)


def main():
    cfg = AcceleratorConfig()
    graph, x = layer()
    start = time.perf_counter()
    transport = SimTransport(config=cfg, mem_size=4 << 20, latency=8)
    built = time.perf_counter() - start
    acc = Accelerator(transport, config=cfg, timeout=3600.0, poll_cycles=200_000)
    loaded = acc.load(graph)
    acc.clear_counters()
    start = time.perf_counter()
    out = acc.run(loaded, x)
    wall = time.perf_counter() - start
    exact = np.array_equal(out["relu"], graph.run(x)["relu"])
    c = acc.counters()
    print(f"layer: 3x3 conv 64->64 56x56 pad 1, {graph.macs / 1e6:.1f} M MACs, bit-exact: {exact}")
    print(f"model build/load: {built:.1f} s; simulated {c['cycles']:,} cycles in {wall:.1f} s "
          f"({c['cycles'] / wall / 1e3:.0f} k cycles/s)")
    print(f"PE utilisation (useful MACs / (cycles x {cfg.pes})): {graph.macs / (c['cycles'] * cfg.pes):.3f}; "
          f"array-active MAC slots / (cycles x PEs): {c['mac_active'] / (c['cycles'] * cfg.pes):.3f}")
    print(f"DMA: {c['dma_rd_bytes']:,} bytes read, {c['dma_wr_bytes']:,} written, {c['dma_stall']:,} stall cycles")
    assert exact


if __name__ == "__main__":
    main()
