"""The default suite's real ECP5 bitstream, built in a background process while the other tests run.

Why in the background: synthesis and place-and-route of even the smallest SoC take several minutes of
one core, and the rest of the suite mostly keeps one core busy; overlapped, CI builds a bitstream on
every run without doubling its wall time. conftest.py starts the build when the test that checks it is
collected and moves that test to the end of the run; the test waits for the build and checks its report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from scalenet.rtl.config import AcceleratorConfig

__all__ = ["TINY", "BOARD", "FREQ_MHZ", "MEM_BYTES", "BackgroundBuild"]

# The smallest useful SoC: 2x2 array, 1 KiB buffers, 4 KiB SRAM, UART bridge, PLL.
TINY = AcceleratorConfig(rows=2, cols=2, max_kernel=3, max_width=16, max_channels=32,
                         line_buffer_bytes=1024, weight_buffer_bytes=1024)
BOARD = "ulx3s-85f"
FREQ_MHZ = 50.0
MEM_BYTES = 4096
TIMEOUT_S = 60 * 60

_SCRIPT = """
import json, sys
from scalenet.boards.build import build
from scalenet.rtl.config import AcceleratorConfig
board, mhz, mem, out, config = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], json.loads(sys.argv[5])
build(board, AcceleratorConfig(**config), freq_mhz=mhz, out_dir=out, mem_bytes=mem, log=lambda m: print(m, flush=True))
"""


class BackgroundBuild:
    """``scalenet.boards.build.build`` of :data:`TINY` in a child process (niced, so timed tests keep
    their core); :meth:`result` waits for it and returns its report."""

    def __init__(self):
        self.out = Path(tempfile.mkdtemp(prefix="scalenet-ci-bitstream-"))
        self.log = self.out / "build.log"
        self.started = time.monotonic()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _SCRIPT, BOARD, str(FREQ_MHZ), str(MEM_BYTES), str(self.out),
                 json.dumps(asdict(TINY))],
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=lambda: os.nice(10))

    def result(self) -> dict:
        try:
            rc = self.proc.wait(timeout=max(1.0, TIMEOUT_S - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"the bitstream build did not finish in {TIMEOUT_S} s; log: {self.log}") from None
        tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
        assert rc == 0, f"the bitstream build failed (exit {rc}):\n{tail}"
        return json.loads((self.out / "report.json").read_text())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
