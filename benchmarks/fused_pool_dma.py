"""Fused Conv -> MaxPool vs two descriptors, through the whole accelerator in the compiled simulator.

For digits CNN and LeNet-5 (each with two Conv -> MaxPool 2x2/2 pairs) the same device runs the network
compiled with and without ``pool_after`` fusion, one frame each, side by side; prints the hardware
performance counters (cycles, DMA bytes read/written, MAC slots) and the ratios, and checks both runs
against the reference bit for bit.

    python benchmarks/fused_pool_dma.py [--config test|default]

``test`` is tests/test_top.py's 4x4 configuration (its compiled model is usually cached); ``default``
is the 8x8 AcceleratorConfig() (a separate ~2-4 minute model build on first use).
"""

import argparse

import numpy as np

from scalenet import zoo
from scalenet.cosim.platform import SimTransport
from scalenet.driver.accelerator import Accelerator, LoadedNetwork
from scalenet.driver.compiler import compile_graph
from scalenet.rtl.config import AcceleratorConfig

CONFIGS = {
    "test": AcceleratorConfig(rows=4, cols=4, max_width=32, max_channels=512, line_buffer_bytes=8192,
                              weight_buffer_bytes=64 * 1024),
    "default": AcceleratorConfig(),
}


def measure(acc, transport, graph, x, fuse):
    net = compile_graph(graph, acc.config, fuse_pool=fuse)
    transport.write_mem(0, net.image)
    acc.clear_counters()
    out = acc.run(LoadedNetwork(net, 0), x)[graph.outputs[0]]
    exact = np.array_equal(out, graph.run(x)[graph.outputs[0]])
    return net, acc.counters(), exact


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", choices=sorted(CONFIGS), default="test")
    args = ap.parse_args()
    cfg = CONFIGS[args.config]
    transport = SimTransport(config=cfg, mem_size=1 << 20, latency=6)
    acc = Accelerator(transport, config=cfg, timeout=600.0, poll_cycles=2000)
    print(f"configuration: {cfg.describe()}, {cfg.data_bytes}-byte bus, memory latency 6 cycles")
    ok = True
    for name in ("digits_cnn", "lenet5"):
        graph = zoo.build(name)
        t = graph.input
        x = np.random.default_rng(1).integers(t.q.dtype.lo, t.q.dtype.hi + 1, (1, *t.shape)).astype(t.q.dtype.np_dtype)
        plain_net, plain, plain_exact = measure(acc, transport, graph, x, False)
        fused_net, fused, fused_exact = measure(acc, transport, graph, x, True)
        ok &= plain_exact and fused_exact
        print(f"\n{name}: descriptors {plain_net.desc_count} -> {fused_net.desc_count}, activation memory "
              f"{plain_net.meta['activation_bytes']:,} -> {fused_net.meta['activation_bytes']:,} bytes, "
              f"bit-exact: {plain_exact and fused_exact}")
        print(f"  {'counter':<14}{'two descriptors':>16}{'fused':>12}{'fused/two':>11}")
        for key in ("cycles", "dma_rd_bytes", "dma_wr_bytes", "mac_active", "dma_stall"):
            ratio = f"{fused[key] / plain[key]:.3f}" if plain[key] else "-"
            print(f"  {key:<14}{plain[key]:>16,}{fused[key]:>12,}{ratio:>11}")
    assert ok, "a run differed from the reference"


if __name__ == "__main__":
    main()
