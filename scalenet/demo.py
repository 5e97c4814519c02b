"""``scalenet demo``: the whole system on one application, from trained network to measured schedule.

The image application takes the shipped, trained digits CNN; measures float and int8 accuracy on the
held-out test images; builds the cost table for a target (default ``host``: this machine's cores and the
accelerator in the compiled simulator at 100 MHz) and schedules the network under a real-time deadline;
runs test frames with that schedule on the real backends (accelerator layers through the driver, software
layers on the workers, overlapped across frames); checks that accelerator, software and reference agree to
the last bit; and writes a Markdown report with the schedule's Gantt chart, the per-layer costs and the
latency/power Pareto front. The EEG application does the same for seizure detection on synthetic EEG.

Every number printed and written comes from this run; the power and energy figures come from the metric
model (scheduler/data/power.json), not from a power meter, and the report says so.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ScalenetError

__all__ = ["DemoError", "DemoResult", "run_demo", "APPS"]

APPS = ("image", "eeg")


class DemoError(ScalenetError):
    """The demo cannot run as asked (bad option, unwritable output directory)."""


@dataclass
class DemoResult:
    app: str
    summary: dict
    report: Path
    images: list = field(default_factory=list)


class _Steps:
    """Prints one line per step with its duration; a tqdm bar for steps over a second when on a terminal."""

    def __init__(self, quiet):
        self.quiet = quiet
        self.times = {}

    @contextlib.contextmanager
    def step(self, text):
        t0 = time.perf_counter()
        if not self.quiet:
            print(f"- {text} ...", file=sys.stderr, flush=True)
        yield
        self.times[text] = time.perf_counter() - t0
        if not self.quiet:
            print(f"  done in {self.times[text]:.1f} s", file=sys.stderr, flush=True)

    def bar(self, iterable, total, desc):
        if self.quiet or not sys.stderr.isatty():
            return iterable
        from tqdm import tqdm
        return tqdm(iterable, total=total, desc=desc, file=sys.stderr, mininterval=1.0, delay=1.0)


def _open_accelerator(backend, target, engine):
    from .driver.accelerator import open_target
    if backend == "sim":
        return open_target("sim", engine=engine)
    return open_target("model" if backend == "model" else target)


def _schedule(graph, cost_target, deadline_s, weights, config):
    from .scheduler.metrics import build_cost_table
    from .scheduler.schedule import compare
    table = build_cost_table(graph, cost_target, config=config)
    return table, compare(table, deadline_s, weights)


def _run_frames(steps, schedule, graph, acc, frames):
    """Run ``frames`` through the schedule on the real backends, and the same frames all-software and
    all-accelerator: three independent executions whose outputs must be identical integers."""
    from .scheduler.runtime import Runtime
    from .scheduler.workers import SoftwareWorkers
    out_name = graph.outputs[0]
    with steps.step(f"running {len(frames)} frames with the schedule (accelerator + software workers)"):
        with SoftwareWorkers() as workers:
            runtime = Runtime(schedule, graph, accelerator=acc, workers=workers, software_clock="thread")
            result = runtime.run(frames)
            runtime.close()
            software = workers.run_graph(graph, frames)[out_name]
    with steps.step(f"running the same frames all on the accelerator ({acc.transport.__class__.__name__})"):
        loaded = acc.load(graph)
        on_accel = np.concatenate([acc.run(loaded, f[None])[out_name]
                                   for f in steps.bar(frames, len(frames), "accelerator")])
    reference = graph.run(frames)[out_name]
    return result, {
        "scheduled_vs_reference": bool(np.array_equal(result.outputs[out_name], reference)),
        "software_vs_reference": bool(np.array_equal(software, reference)),
        "accelerator_vs_software": bool(np.array_equal(on_accel, software)),
        "frames": int(len(frames)),
    }


def _layer_rows(schedule, result):
    measured = result.median_layer_seconds()
    rows = []
    for layer in schedule.order:
        res = schedule.placement[layer]
        cost = schedule.table.cost[(layer, res)]
        rows.append({"layer": layer, "resource": res, "predicted_ms": cost.latency_s * 1e3,
                     "measured_ms": measured.get(layer, 0.0) * 1e3, "energy_uj": cost.energy_j * 1e6,
                     "power_w": cost.power_w})
    return rows


def _markdown_layers(rows):
    lines = ["| layer | placed on | predicted (ms) | measured (ms) | dynamic energy (µJ) | power while running (W) |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['layer']} | {r['resource']} | {r['predicted_ms']:.4f} | {r['measured_ms']:.4f} | "
                     f"{r['energy_uj']:.3f} | {r['power_w']:.3f} |")
    return "\n".join(lines) + "\n"


def _print_layers(rows):
    print(f"{'layer':<14} {'on':<6} {'predicted ms':>13} {'measured ms':>12} {'energy uJ':>10}")
    for r in rows:
        print(f"{r['layer']:<14} {r['resource']:<6} {r['predicted_ms']:>13.4f} {r['measured_ms']:>12.4f} "
              f"{r['energy_uj']:>10.3f}")


def _image_app(steps, acc, cost_target, deadline_s, weights, n_frames):
    from . import zoo
    from .quant import quantize
    from .zoo import digits
    with steps.step("loading the trained digits CNN and the 360 held-out test images"):
        x_test, y_test = digits.test_set()
        net, graph = zoo.float_net("digits_cnn"), zoo.build("digits_cnn")
    with steps.step("accuracy of the float and int8 networks on the test images"):
        float_acc = float((net.run(x_test)[net.outputs[0]].argmax(axis=1) == y_test).mean())
        xq = quantize(x_test, graph.input.q)
        int8_acc = float((graph.run(xq)[graph.outputs[0]].argmax(axis=1) == y_test).mean())
    with steps.step(f"scheduling under a {deadline_s * 1e3:g} ms deadline on target {cost_target}"):
        table, results = _schedule(graph, cost_target, deadline_s, weights, acc.config)
    frames = xq[:n_frames]
    run, exact = _run_frames(steps, results["ours"], graph, acc, frames)
    correct = int((run.outputs[graph.outputs[0]].argmax(axis=1) == y_test[:n_frames]).sum())
    app = {"network": graph.name, "accuracy": {"float": float_acc, "int8": int8_acc, "test_images": int(len(y_test))},
           "frames_correct": correct}
    return graph, table, results, run, exact, app


EEG_DEMO_HOURS = 1.0
"""Length of the demo's synthetic recording: an hour at the generator's seizure rate, seconds to score."""


def _eeg_app(steps, acc, cost_target, deadline_s, weights, n_frames):
    from . import zoo
    from .eeg import detect, synth
    from .quant import quantize
    with steps.step(f"generating {EEG_DEMO_HOURS:g} h of synthetic EEG (23 channels, 256 Hz; SYNTHETIC data)"):
        recording = synth.generate(EEG_DEMO_HOURS * 3600, seed=2026, n_seizures=10)
        graph = zoo.build("eeg_mpcnn")
    with steps.step("seizure detection over the whole recording (int8 network, 1-s windows)"):
        metrics = detect.evaluate(graph, recording)
    with steps.step(f"scheduling under a {deadline_s * 1e3:g} ms deadline on target {cost_target}"):
        table, results = _schedule(graph, cost_target, deadline_s, weights, acc.config)
    # The frames run on the accelerator: windows around the first seizure's onset (positives and negatives).
    x = detect.normalise(recording.signal)
    starts = detect.window_starts(x.shape[1])
    onset = int(recording.seizures[0][0] * recording.fs) if len(recording.seizures) else 0
    first = max(0, int(np.searchsorted(starts, onset)) - n_frames // 2)
    frames = quantize(detect.windows(x, starts[first:first + n_frames]), graph.input.q)
    run, exact = _run_frames(steps, results["ours"], graph, acc, frames)
    detection = {k: metrics[k] for k in ("seizures", "detected", "sensitivity", "false_alarms", "background_hours",
                                         "fa_per_hour", "mean_latency_s", "median_latency_s", "hours",
                                         "window_sensitivity", "window_specificity", "ms_per_window", "synthetic")}
    app = {"network": graph.name, "detection": detection, "data": "synthetic"}
    return graph, table, results, run, exact, app


def run_demo(app="image", *, out_dir="scalenet-demo", backend="sim", engine="compiled", target=None,
             cost_target="host", deadline_ms=None, weights=None, frames=None, quiet=False) -> DemoResult:
    """Run one application end to end and write its report; returns the summary and the report path."""
    from .scheduler.report import comparison_rows, network_report, power_saving
    from .scheduler.schedule import parse_weights
    if app not in APPS:
        raise DemoError(f"unknown application {app!r}: choose one of {', '.join(APPS)}")
    if deadline_ms is None:
        deadline_ms = {"image": 1.0, "eeg": 1000.0}[app]
    if not deadline_ms > 0:
        raise DemoError(f"the deadline must be a positive number of milliseconds, not {deadline_ms}")
    n_frames = frames if frames is not None else {"image": 16, "eeg": 4}[app]
    if n_frames < 1:
        raise DemoError(f"--frames must be at least 1, not {n_frames}")
    if backend not in ("sim", "model", "hw"):
        raise DemoError(f"unknown backend {backend!r}: sim, model or hw")
    if backend == "hw" and not target:
        raise DemoError("--backend hw needs --target (e.g. serial:/dev/ttyUSB0)")
    weights = parse_weights(weights)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DemoError(f"cannot create the report directory {out}: {e.strerror}") from None

    steps = _Steps(quiet)
    opening = (f"opening the simulated accelerator ({engine} engine; the first run compiles the simulator, "
               "about 2 minutes)" if backend == "sim" else f"opening the accelerator ({target or backend})")
    with steps.step(opening):
        acc = _open_accelerator(backend, target, engine)
    try:
        body = _image_app if app == "image" else _eeg_app
        graph, table, results, run, exact, app_summary = body(steps, acc, cost_target, deadline_ms / 1e3, weights,
                                                              n_frames)
    finally:
        acc.close()
    ours = results["ours"]
    rows = _layer_rows(ours, run)
    saving = power_saving(results)
    measured_ms = run.median_latency_s * 1e3
    summary = {
        "app": app, **app_summary, "target": cost_target, "backend": backend, "engine": engine,
        "deadline_ms": deadline_ms, "weights": weights,
        "bit_exact": exact,
        "predicted_latency_ms": ours.latency_s * 1e3, "measured_latency_ms": measured_ms,
        "deadline_met": {"predicted": ours.deadline_met, "measured": measured_ms <= deadline_ms},
        "avg_power_w": ours.avg_power_w, "energy_per_frame_mj": ours.energy_j * 1e3, "power_modelled": True,
        "power_saving": None if saving is None else {"baseline": saving[0], "fraction": saving[3]},
        "placement": dict(ours.placement), "layers": rows, "comparison": comparison_rows(results),
        "step_seconds": steps.times,
    }

    with steps.step(f"writing the report to {out}"):
        section = network_report(table, results, out, graph.name, img_link=".")
        text = [f"# SCALENet demo: {app}", "",
                f"Network `{graph.name}`, target `{cost_target}`, backend `{backend}`"
                f"{' (' + engine + ' engine)' if backend == 'sim' else ''}, deadline {deadline_ms:g} ms. "
                "Power and energy come from the metric model, not a meter.", ""]
        if app == "image":
            a = app_summary["accuracy"]
            text += [f"Accuracy on {a['test_images']} held-out test images: float {a['float'] * 100:.2f} %, "
                     f"int8 {a['int8'] * 100:.2f} %.", ""]
        else:
            d = app_summary["detection"]
            text += ["**Synthetic EEG data** (scalenet.eeg.synth): "
                     f"sensitivity {d['sensitivity'] * 100:.1f} %, {d['fa_per_hour']:.2f} false alarms "
                     f"per hour, mean detection latency {d['mean_latency_s']:.1f} s over "
                     f"{d['hours']:.2f} h with {d['seizures']} seizures.", ""]
        text += [f"Bit-exact on {exact['frames']} frames: schedule vs reference {exact['scheduled_vs_reference']}, "
                 f"software workers vs reference {exact['software_vs_reference']}, accelerator vs software "
                 f"{exact['accelerator_vs_software']}.", "",
                 f"Latency per frame: predicted {ours.latency_s * 1e3:.4f} ms, measured {measured_ms:.4f} ms "
                 f"(median of {exact['frames']}); deadline {'met' if measured_ms <= deadline_ms else 'MISSED'}.", "",
                 "## Placement, predicted and measured per layer", "", _markdown_layers(rows),
                 "## Schedules compared", "", section]
        report = out / "report.md"
        report.write_text("\n".join(text))
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    images = sorted(out.glob(f"{graph.name}-*.png"))
    return DemoResult(app, summary, report, images)


def print_summary(result: DemoResult):
    s = result.summary
    print(f"SCALENet demo ({s['app']}): {s['network']} on {s['backend']}"
          f"{'/' + s['engine'] if s['backend'] == 'sim' else ''}, target {s['target']}, deadline {s['deadline_ms']:g} ms")
    if "accuracy" in s:
        a = s["accuracy"]
        print(f"accuracy on {a['test_images']} test images: float {a['float'] * 100:.2f} %, int8 {a['int8'] * 100:.2f} %")
    if "detection" in s:
        d = s["detection"]
        print(f"seizure detection (SYNTHETIC EEG, {d['hours']:.2f} h, {d['seizures']} seizures): sensitivity "
              f"{d['sensitivity'] * 100:.1f} %, {d['fa_per_hour']:.2f} false alarms/h, "
              f"latency {d['mean_latency_s']:.1f} s")
    e = s["bit_exact"]
    ok = all(v for k, v in e.items() if k != "frames")
    print(f"bit-exact on {e['frames']} frames (schedule, software workers, accelerator, reference): "
          f"{'yes' if ok else 'NO'}")
    _print_layers(s["layers"])
    met = s["deadline_met"]
    print(f"latency per frame: predicted {s['predicted_latency_ms']:.4f} ms, measured {s['measured_latency_ms']:.4f} ms; "
          f"deadline {'met' if met['measured'] else 'MISSED'}")
    print(f"modelled average power {s['avg_power_w']:.3f} W, energy {s['energy_per_frame_mj']:.4f} mJ/frame", end="")
    if s["power_saving"]:
        print(f"; {s['power_saving']['fraction'] * 100:.1f} % below the best baseline meeting the deadline "
              f"({s['power_saving']['baseline']})")
    else:
        print()
    print(f"report: {result.report}")
