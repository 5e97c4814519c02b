"""PE utilisation of the convolution engine on the default 8x8 configuration (compiled CXXRTL model).

Streams are ideal: one weight beat, one parameter entry and one pixel byte per cycle offered, the output
always ready. Cycles count from ``start`` to ``done``; utilisation is the fraction of them in which the
array steps (``array_active``), and the useful-MAC figure is ``MACs / (cycles x R x C)`` with the MAC count
of the transaction-level model. Every run is also checked byte for byte against that model.

    python benchmarks/conv_engine_utilisation.py
"""

from __future__ import annotations

import time

import numpy as np

from scalenet.cosim.compiled import CompiledSimulator
from scalenet.cosim.tlm import run_descriptors
from scalenet.driver.compiler import compile_graph
from scalenet.floatnet import FloatNet, FNode, quantize_net
from scalenet.quant import quantize
from scalenet.rtl.config import AcceleratorConfig
from scalenet.rtl.conv_engine import ConvEngine
from scalenet.rtl.regmap import pack_descriptor

STREAMS = ("params", "weights", "pixels")


def layer(cfg, node, in_shape, seed=0):
    """Compile a one-layer graph; return (descriptor word, input streams, expected bytes, TLM stats)."""
    rng = np.random.default_rng(seed)
    cal = rng.normal(0.3, 1, (8, *in_shape)).astype(np.float32)
    g = quantize_net(FloatNet("bench", "x", in_shape, [node], [node.output]), cal, act_dtype="uint8")
    net = compile_graph(g, cfg)
    mem = net.image.copy()
    net.write_input(mem, quantize(cal[0], g.input.q))
    before = mem.copy()
    stats = run_descriptors(mem, net.desc_addr, 1, cfg)[0]
    d = net.descriptors[0]
    wbytes = stats.extra["weight_blocks"] * cfg.rows * cfg.cols
    streams = {
        "params": [int.from_bytes(before[d["param_addr"] + 8 * i:][:8].tobytes(), "little")
                   for i in range(d["out_channels"])],
        "weights": [int.from_bytes(r.tobytes(), "little")
                    for r in before[d["weight_addr"]:d["weight_addr"] + wbytes].reshape(-1, cfg.cols)],
        "pixels": before[d["in_addr"]:][:d["in_height"] * d["in_width"] * d["in_channels"]].tolist(),
    }
    n_out = d["out_height"] * d["out_width"] * d["out_channels"]
    expected = mem[d["out_addr"]:d["out_addr"] + n_out].tolist()
    return int.from_bytes(pack_descriptor(**d), "little"), streams, expected, stats


def run(sim, desc, streams, max_cycles=10_000_000):
    """Full-rate streams; returns (cycles from start to done, array-active cycles, output bytes)."""
    sim.set("rst", 1)
    sim.tick()
    sim.set("rst", 0)
    sim.set("desc", desc)
    sim.set("out__ready", 1)
    sim.set("start", 1)
    sim.tick()
    sim.settle()          # the harness leaves combinational outputs one edge behind
    sim.set("start", 0)
    pos = dict.fromkeys(STREAMS, 0)
    out, active = [], 0
    for cycle in range(1, max_cycles):
        if sim.get("done"):
            return cycle, active, out
        for s in STREAMS:
            data = streams[s]
            if pos[s] < len(data):
                sim.set(f"{s}__valid", 1)
                sim.set(f"{s}__payload", data[pos[s]])
                if sim.get(f"{s}__ready"):
                    pos[s] += 1
            else:
                sim.set(f"{s}__valid", 0)
        if sim.get("out__valid"):
            out.append(sim.get("out__payload"))
        active += sim.get("array_active")
        sim.tick()
        sim.settle()
    raise TimeoutError("no done")


def main():
    cfg = AcceleratorConfig()
    rng = np.random.default_rng(0)

    def conv(cin, cout, k, groups=1):
        w = rng.normal(0, 0.2, (cout, cin // groups, k, k)).astype(np.float32)
        return FNode("conv", "c", ["x"], "y", dict(weight=w, bias=rng.normal(0, 0.1, cout), groups=groups,
                                                   stride=(1, 1), pads=(k // 2,) * 4))

    layers = [
        ("3x3 conv 32->32, 16x16, pad 1", conv(32, 32, 3), (32, 16, 16)),
        ("3x3 depthwise 32, 16x16, pad 1", conv(32, 32, 3, groups=32), (32, 16, 16)),
        ("dense 256->64", FNode("dense", "d", ["x"], "y", dict(weight=rng.normal(0, 0.1, (64, 256)).astype(np.float32),
                                                               bias=rng.normal(0, 0.1, 64))), (256,)),
    ]
    t0 = time.time()
    sim = CompiledSimulator(ConvEngine(cfg), opt="-O1")
    print(f"{cfg.describe()}: compiled model ready in {time.time() - t0:.1f} s")
    for name, node, shape in layers:
        desc, streams, expected, stats = layer(cfg, node, shape)
        t0 = time.time()
        cycles, active, out = run(sim, desc, streams)
        assert out == expected, f"{name}: output differs from the TLM"
        print(f"{name:34s} cycles {cycles:7d}  array-active {active:7d}  utilisation {active / cycles:6.1%}  "
              f"useful MACs/(cycles x {cfg.pes}) {stats.macs / (cycles * cfg.pes):6.1%}  "
              f"[exact; {time.time() - t0:.1f} s]")


if __name__ == "__main__":
    main()
