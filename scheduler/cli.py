"""``scalenet schedule``: place a network's layers on the accelerator and the software workers of a target.

Exit status: 0 when our schedule meets the deadline, 3 when no placement found does (the fastest one is
printed, with the best achievable latency), 2 on an error (unknown model or target, malformed weights,
a deadline that is not a positive number).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["add_arguments", "cmd_schedule", "EXIT_INFEASIBLE"]

EXIT_INFEASIBLE = 3


def add_arguments(p):
    """The subcommand's options (registered by :mod:`scalenet.cli`; nothing heavy imported here)."""
    p.add_argument("model", help="zoo network name or path to an .onnx file")
    p.add_argument("--deadline-ms", type=float, required=True, help="end-to-end latency bound = frame period (ms)")
    p.add_argument("--weights", default=None,
                   help="objective weights, e.g. latency=0.2,power=1,energy=0.5 (default: power=1); each "
                        "objective is normalised by its all-software value")
    p.add_argument("--target", default="zedboard", help="deployment target (default: zedboard)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--plot", metavar="PNG", help="write our schedule's Gantt chart to this file")
    p.epilog = ("exit status: 0 deadline met, 3 deadline infeasible (the fastest schedule is shown), 2 error")


def _load_model(name):
    from scalenet import load, zoo
    from scalenet.errors import ModelError
    if name not in zoo.NETWORKS and not Path(name).is_file():
        raise ModelError(f"unknown model {name!r}: neither a zoo network ({', '.join(zoo.NETWORKS)}) "
                         "nor an existing .onnx file")
    return load(name)


def cmd_schedule(args) -> int:
    from .schedule import ScheduleError, compare, parse_weights
    from .targets import get_target
    weights = parse_weights(args.weights)
    if not args.deadline_ms > 0 or args.deadline_ms != args.deadline_ms or args.deadline_ms == float("inf"):
        raise ScheduleError(f"--deadline-ms must be a positive number of milliseconds, not {args.deadline_ms:g}")
    target = get_target(args.target)
    graph = _load_model(args.model)
    from .metrics import build_cost_table
    from .report import comparison_rows, plot_gantt, power_saving
    table = build_cost_table(graph, target.name)
    results = compare(table, args.deadline_ms / 1e3, weights)
    ours = results["ours"]
    if args.plot:
        plot_gantt(ours, args.plot)
    saving = power_saving(results)
    if args.json:
        print(json.dumps({
            "model": graph.name, "target": target.name, "deadline_ms": args.deadline_ms, "weights": weights,
            "feasible": ours.feasible, "note": ours.note, "schedule": ours.to_dict(),
            "comparison": comparison_rows(results),
            "power_saving": None if saving is None else {"baseline": saving[0], "baseline_w": saving[1],
                                                          "ours_w": saving[2], "fraction": saving[3]},
            "power_modelled": True, "plot": args.plot,
        }, indent=2))
    else:
        print(f"{graph.name} on {target.name}: deadline {args.deadline_ms:g} ms, weights "
              + ", ".join(f"{k}={v:g}" for k, v in weights.items()) + " (power is modelled, not measured)")
        print(f"{'schedule':<24} {'latency ms':>11} {'power W':>9} {'energy mJ':>10} {'met':>4} {'accel/cpu':>10}")
        for r in comparison_rows(results):
            print(f"{r['schedule']:<24} {r['latency_ms']:>11.3f} {r['avg_power_w']:>9.4f} {r['energy_mj']:>10.4f} "
                  f"{'yes' if r['deadline_met'] else 'no':>4} {r['accel_layers']:>5}/{r['cpu_layers']:<4}")
        print("placement: " + ", ".join(f"{l}={r}" for l, r in ours.placement.items()))
        if saving is not None:
            print(f"power saving vs the best baseline meeting the deadline ({saving[0]}): {saving[3] * 100:.1f} %")
        if args.plot:
            print(f"Gantt chart written to {args.plot}")
    if not ours.feasible:
        import sys
        print(f"scalenet: deadline infeasible: {ours.note}", file=sys.stderr)
        return EXIT_INFEASIBLE
    return 0
