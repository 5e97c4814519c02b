"""Seizure detection as a real-time task: 1-s windows under a 1-s deadline, placed by the scheduler.

Each hop (default 1 s) a new window must be classified before the next one arrives: the period and
the deadline are both the hop. :func:`run_realtime` builds the cost table of the int8 network on a
deployment target (latency/power models of :mod:`scalenet.scheduler.metrics`; power is modelled, not
measured), lets the scheduler place every layer on the accelerator or the software workers, executes that
schedule on real backends (:class:`~scalenet.scheduler.runtime.Runtime`: the accelerator target
``"model"`` or the RTL simulator ``"sim"``, plus this machine's software workers) for a run of windows,
checks the outputs bit-exact against :meth:`Graph.run`, and reports predicted and measured latencies
against the deadline.
"""

from __future__ import annotations

import numpy as np

from . import EEGError
from .detect import WINDOW, normalise, window_starts, windows

__all__ = ["run_realtime"]


def run_realtime(graph, recording, *, target="zedboard", deadline_s=1.0, accelerator="model", frames=8,
                 start_s=0.0, hop_s=1.0, weights=None) -> dict:
    """Classify ``frames`` consecutive windows of ``recording`` from ``start_s`` under the scheduler."""
    from scalenet.quant import quantize
    from scalenet.scheduler.metrics import build_cost_table
    from scalenet.scheduler.runtime import Runtime
    from scalenet.scheduler.schedule import schedule

    if frames < 1:
        raise EEGError(f"frames must be at least 1, not {frames}")
    hop = int(round(hop_s * recording.fs))
    x = normalise(recording.signal)
    starts = window_starts(x.shape[1], hop)
    starts = starts[starts >= int(start_s * recording.fs)][:frames]
    if len(starts) < frames:
        raise EEGError(f"the recording has only {len(starts)} windows after {start_s:g} s, {frames} asked")
    xq = quantize(windows(x, starts), graph.input.q)
    table = build_cost_table(graph, target)
    sched = schedule(table, deadline_s, weights, period_s=hop_s)
    with Runtime(sched, graph, accelerator) as rt:
        res = rt.run(xq)
    out = graph.outputs[0]
    reference = graph.run(xq)[out]
    got = res.outputs[out]
    measured = [float(v) for v in res.measured_latency_s]
    return {
        "target": table.meta["target"], "deadline_s": deadline_s, "period_s": hop_s,
        "placement": dict(sched.placement), "counts": sched.count(), "feasible": sched.feasible,
        "predicted_latency_s": float(sched.latency_s), "measured_latency_s": measured,
        "max_measured_latency_s": max(measured),
        "deadline_met": bool(sched.feasible and max(measured) <= deadline_s),
        "avg_power_w_modelled": float(sched.avg_power_w),
        "bit_exact": bool(np.array_equal(got, reference)), "logits": got,
        "window_start_s": (starts / recording.fs).tolist(), "window": WINDOW, "wall_s": res.wall_s,
        "synthetic": bool(getattr(recording, "synthetic", False)), "accelerator_cycles": res.accel_cycles,
    }
