"""Reports on schedules: the comparison table (Markdown), the Gantt chart, the latency/power Pareto front and
per-layer bars, for one network. matplotlib is imported only when a plot is drawn (Agg backend, no display).
"""

from __future__ import annotations

from pathlib import Path

from .schedule import BASELINES, Schedule, pareto_front

__all__ = ["comparison_rows", "markdown_table", "power_saving", "plot_gantt", "plot_pareto", "plot_layers",
           "network_report"]

_COLOURS = {"cpu": "#4C72B0", "accel": "#DD8452", "move": "#8C8C8C"}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def comparison_rows(results: dict) -> list:
    """One row per schedule of ``results`` ({"ours": Schedule, baseline: Schedule, ...})."""
    rows = []
    for name, s in results.items():
        counts = {}
        for r, c in s.count().items():
            kind = s.table.resources[r].kind
            counts[kind] = counts.get(kind, 0) + c
        rows.append({"schedule": name, "latency_ms": s.latency_s * 1e3, "avg_power_w": s.avg_power_w,
                     "energy_mj": s.energy_j * 1e3, "deadline_met": s.deadline_met,
                     "accel_layers": counts.get("accel", 0), "cpu_layers": counts.get("cpu", 0), "cost": s.cost})
    return rows


def power_saving(results: dict):
    """(best baseline meeting the deadline, its power, our power, saving as a fraction of its power), or
    None when no baseline meets the deadline (or ours does not)."""
    ours = results["ours"]
    met = [(results[b].avg_power_w, b) for b in BASELINES if b in results and results[b].deadline_met]
    if not met or not ours.deadline_met:
        return None
    p, name = min(met)
    return name, p, ours.avg_power_w, (p - ours.avg_power_w) / p


def markdown_table(results: dict) -> str:
    lines = ["| schedule | latency (ms) | avg power (W) | energy / frame (mJ) | deadline met | layers accel / cpu |",
             "|---|---:|---:|---:|:---:|---:|"]
    for r in comparison_rows(results):
        name = f"**{r['schedule']}**" if r["schedule"] == "ours" else r["schedule"]
        lines.append(f"| {name} | {r['latency_ms']:.3f} | {r['avg_power_w']:.4f} | {r['energy_mj']:.4f} | "
                     f"{'yes' if r['deadline_met'] else 'no'} | {r['accel_layers']} / {r['cpu_layers']} |")
    return "\n".join(lines) + "\n"


def plot_gantt(schedule: Schedule, path, title=None):
    """Resources (and the moves between them) against time in ms, the deadline as a red line."""
    plt = _plt()
    lanes = list(schedule.table.resources) + ["moves"]
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.6 * len(lanes)))
    for y, r in enumerate(lanes[:-1]):
        colour = _COLOURS.get(schedule.table.resources[r].kind, "#55A868")
        spans = [(s * 1e3, (f - s) * 1e3) for s, f, _ in schedule.timelines()[r]]
        ax.broken_barh(spans, (y - 0.4, 0.8), facecolors=colour, edgecolors="white", linewidth=0.5)
    moves = [(t.start * 1e3, (t.finish - t.start) * 1e3) for t in schedule.transfers]
    ax.broken_barh(moves, (len(lanes) - 1 - 0.4, 0.8), facecolors=_COLOURS["move"], edgecolors="white",
                   linewidth=0.5)
    if schedule.deadline_s * 1e3 < schedule.latency_s * 1e3 * 3:
        ax.axvline(schedule.deadline_s * 1e3, color="red", linestyle="--", label="deadline")
        ax.legend(loc="lower right")
    ax.set_yticks(range(len(lanes)), lanes)
    ax.set_xlabel("time (ms)")
    ax.set_title(title or f"{schedule.table.graph_name}: {schedule.method}, latency {schedule.latency_s * 1e3:.3f} ms")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pareto(table, results: dict, path, title=None):
    """The latency / average-power front (exact for chains) with ours and every baseline marked."""
    plt = _plt()
    ours = results["ours"]
    front = pareto_front(table, ours.period_s)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.step([p[0] * 1e3 for p in front], [p[1] for p in front], where="post", color="#999999", zorder=1,
            label="Pareto front")
    ax.scatter([p[0] * 1e3 for p in front], [p[1] for p in front], s=8, color="#999999", zorder=1)
    markers = "sov^Dx"
    for m, (name, s) in zip(markers, [(n, results[n]) for n in results if n != "ours"]):
        ax.scatter([s.latency_s * 1e3], [s.avg_power_w], marker=m, s=45, zorder=2, label=name)
    ax.scatter([ours.latency_s * 1e3], [ours.avg_power_w], marker="*", s=200, color="red", zorder=3, label="ours")
    ax.axvline(ours.deadline_s * 1e3, color="red", linestyle="--", linewidth=1, label="deadline")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("average power over the frame period (W)")
    ax.set_title(title or f"{table.graph_name}: latency vs power")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_layers(table, path, title=None):
    """Per-layer latency and dynamic energy on each resource (log scale; missing bar = unsupported)."""
    plt = _plt()
    import numpy as np
    layers = list(table.layers)
    res = list(table.resources)
    x = np.arange(len(layers))
    width = 0.8 / len(res)
    fig, axes = plt.subplots(2, 1, figsize=(max(7, 0.18 * len(layers) + 3), 6), sharex=True)
    for k, r in enumerate(res):
        colour = _COLOURS.get(table.resources[r].kind, None)
        lat = [table.cost[(l, r)].latency_s * 1e3 if (l, r) in table.cost else np.nan for l in layers]
        en = [table.cost[(l, r)].energy_j * 1e3 if (l, r) in table.cost else np.nan for l in layers]
        axes[0].bar(x + k * width, lat, width, label=r, color=colour)
        axes[1].bar(x + k * width, en, width, label=r, color=colour)
    axes[0].set_ylabel("latency (ms)")
    axes[1].set_ylabel("dynamic energy (mJ)")
    for ax in axes:
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    axes[1].set_xticks(x + 0.4 - width / 2, layers, rotation=90, fontsize=6)
    axes[0].set_title(title or f"{table.graph_name}: per-layer costs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def network_report(table, results: dict, img_dir, prefix, *, img_link=None) -> str:
    """A Markdown section for one network: the table, the saving, and the three plots (written to
    ``img_dir`` as ``{prefix}-gantt.png`` etc.; linked as ``{img_link}/{prefix}-...``)."""
    img_dir = Path(img_dir)
    img_dir.mkdir(parents=True, exist_ok=True)
    link = img_link if img_link is not None else str(img_dir)
    ours = results["ours"]
    plot_gantt(ours, img_dir / f"{prefix}-gantt.png")
    plot_pareto(table, results, img_dir / f"{prefix}-pareto.png")
    plot_layers(table, img_dir / f"{prefix}-layers.png")
    out = [f"### {table.graph_name}\n",
           f"Deadline {ours.deadline_s * 1e3:.3f} ms; ours: `{ours.method}`"
           + ("" if ours.feasible else f" — **infeasible**: {ours.note}") + "\n",
           markdown_table(results)]
    saving = power_saving(results)
    if saving is None:
        out.append("\nNo baseline meets the deadline" + ("" if ours.deadline_met else ", and neither do we") + ".\n")
    else:
        name, p, ours_p, frac = saving
        out.append(f"\nPower vs the best baseline that meets the deadline ({name}, {p:.4f} W): ours {ours_p:.4f} W, "
                   f"saving **{frac * 100:.1f} %**.\n")
    out.append(f"\n![Gantt]({link}/{prefix}-gantt.png) ![Pareto]({link}/{prefix}-pareto.png)\n"
               f"![Per-layer costs]({link}/{prefix}-layers.png)\n")
    return "\n".join(out)
