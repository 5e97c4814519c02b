"""Randomised equivalence: random layers within the hardware's limits, RTL output == reference, exactly.

The default profile draws ``--random-layers`` (200) layers, derandomised so CI always runs the same ones;
the long profile is ``pytest tests/test_random_layers.py --random-layers 10000 --random-layers-seed S``
(any S; a new one finds new layers). A failure prints the seed, hypothesis's falsifying (shrunk) example and
a ``@reproduce_failure`` blob that replays it.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from scalenet.cosim.platform import SimTransport
from scalenet.driver.accelerator import Accelerator
from scalenet.driver.compiler import HardwareLimitError
from scalenet.errors import ScalenetError
from scalenet.rtl.config import AcceleratorConfig

from random_layers import layers

# The configuration of tests/test_top.py: one compiled model serves both.
CFG = AcceleratorConfig(rows=4, cols=4, max_width=32, max_channels=512, line_buffer_bytes=8192,
                        weight_buffer_bytes=64 * 1024)


@pytest.fixture(scope="module")
def acc():
    transport = SimTransport(config=CFG, mem_size=1 << 20, latency=6, stall=0.1, seed=5)
    return Accelerator(transport, config=CFG, timeout=300.0, poll_cycles=2000)


def test_random_layers_are_bit_exact(acc, request):
    count = request.config.getoption("--random-layers")
    ran = {}

    seed = request.config.getoption("--random-layers-seed")

    @settings(max_examples=count, deadline=None, print_blob=True, database=None, derandomize=seed is None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
    @given(layers(CFG))
    @hypothesis_seed(seed)
    def check(case):
        graph, x = case
        try:
            loaded = acc.load(graph)
        except HardwareLimitError:
            reject()
        out = acc.run(loaded, x)["y"]
        ref = graph.run(x)["y"]
        if not np.array_equal(out, ref):
            bad = tuple(np.argwhere(out != ref)[0])
            pytest.fail(f"seed {seed}: {graph.layers[-1].kind} mismatch at {bad}: rtl {out[bad]} vs reference "
                        f"{ref[bad]}\n" + "\n".join(map(repr, graph.layers)))
        kind = graph.layers[-1].kind
        ran[kind] = ran.get(kind, 0) + 1

    check()
    # The draw must really exercise every kind, and most draws must fit the hardware.
    assert set(ran) >= {"conv", "dense", "maxpool", "avgpool", "gap", "add"}, ran
    assert sum(ran.values()) >= 0.8 * count, ran
