"""The board x array table of docs/boards.md, from real builds: resource use, Fmax, timing met, step times.

    python benchmarks/board_table.py                    # build every row (long: minutes per ECP5 row)
    python benchmarks/board_table.py --only ulx3s-85f:8x8 --only arty-a7-35:8x8
    python benchmarks/board_table.py --reuse            # rebuild only rows without a report in --work
    python benchmarks/board_table.py --write-docs       # replace the table in docs/boards.md
    python benchmarks/board_table.py --only ulx3s-85f:8x8 --write-docs   # replace that row, keep the others

Every figure comes from the tools' own output in this run (Yosys stat, nextpnr's JSON report); rows
that were not built are not printed. Builds go to --work (default build/board-table/BOARD-ARRAY).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from scalenet.boards.build import build
from scalenet.boards.estimate import ResourceError
from scalenet.rtl.config import AcceleratorConfig

SMALL = dict(max_width=64, max_channels=256, line_buffer_bytes=8192, weight_buffer_bytes=8192)
ROWS = [
    # (board, array, config overrides, target MHz, build options: nextpnr seed, PE multipliers)
    ("ulx3s-25f", "4x4", SMALL, 100, {}),
    ("ulx3s-85f", "4x4", SMALL, 100, {}),
    # LUT PE multipliers (the DSP-PE build of the same flow made 94.4 MHz); nextpnr seed 3: seeds 2 and 3
    # of its netlist made 98.92 and 106.41 MHz (docs/boards.md, eleventh round). The SRAM stays at 32 KiB:
    # the default would take the 8 blocks the fused pool gave back (64 KiB, 203 of 208 blocks).
    ("ulx3s-85f", "8x8", {}, 100, {"pe_multipliers": "lut", "seed": 3, "mem_bytes": 32768}),
    ("orangecrab-25f", "4x4", SMALL, 100, {}),
    ("orangecrab-85f", "8x8", {}, 100, {}),
    ("ecpix5-85f", "8x8", {}, 100, {}),
    ("arty-a7-35", "8x8", {}, 100, {}),
    ("arty-a7-100", "8x8", {}, 100, {}),
    ("arty-z7-20", "8x8", {}, 100, {}),
]
BEGIN, END = "<!-- board-table:begin -->", "<!-- board-table:end -->"


def config_for(array, overrides):
    rows, cols = (int(v) for v in array.split("x"))
    return AcceleratorConfig(rows=rows, cols=cols, **overrides)


def run_row(board, array, overrides, mhz, options, work: Path, reuse: bool):
    out = work / f"{board}-{array}"
    if reuse and (out / "report.json").exists():
        return json.loads((out / "report.json").read_text())
    print(f"building {board} {array} at {mhz} MHz ...", file=sys.stderr, flush=True)
    commit = _revision()     # before the build: the tree may move on during an hour of place and route
    t0 = time.perf_counter()
    try:
        r = build(board, config_for(array, overrides), freq_mhz=mhz, out_dir=out, **options,
                  log=lambda msg: print(f"  {msg}", file=sys.stderr, flush=True))
    except ResourceError as e:
        r = {"board": board, "array": array, "refused": str(e)}
        out.mkdir(parents=True, exist_ok=True)
    print(f"  done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    r["commit"] = commit                # kept with the row: --reuse may mix rows of several commits
    (out / "report.json").write_text(json.dumps(r, indent=2))
    return r


def _cell(res, key):
    v = res.get(key)
    return f"{v['used']} ({v['percent']}%)" if v else "-"


def table(reports) -> str:
    lines = ["| board | device | array | SRAM | LUT | FF | DSP | BRAM | Fmax (MHz) | target | timing | "
             "synth / pnr / pack (s) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in reports:
        if "refused" in r:
            lines.append(f"| {r['board']} | | {r['array']} | | | | | | | | refused: {r['refused']} | |")
            continue
        res = r["resources"]
        lut = "LUT4" if "LUT4" in res else "LUT"
        dsp = "MULT18X18D" if "MULT18X18D" in res else "DSP48E1"
        bram = "DP16KD" if "DP16KD" in res else "RAMB18"
        fmax = min((v["achieved_mhz"] for v in r["fmax"].values()), default=None)
        timing = "-" if r["timing_met"] is None else ("met" if r["timing_met"] else "missed")
        steps = r["step_seconds"]
        times = " / ".join(f"{steps[s]:.0f}" if s in steps else "-" for s in ("synth", "pnr", "pack"))
        flow = [f"seed {r['seed']}"] if r.get("seed", 1) != 1 else []
        flow += ["LUT PEs"] if r.get("booth_multipliers") else []
        lines.append(
            f"| {r['board']} | {r['device']} | {r['array']}{' (' + ', '.join(flow) + ')' if flow else ''} | {r['mem_bytes'] // 1024} KiB | {_cell(res, lut)} | "
            f"{_cell(res, 'FF')} | {_cell(res, dsp)} | {_cell(res, bram)} | "
            f"{fmax if fmax is not None else 'n/a (no open P&R)'} | {r['target_mhz']:.0f} | {timing} | {times} |")
    return "\n".join(lines) + "\n"


def _revision() -> str:
    """The commit the rows were built from (and whether the tree differed from it)."""
    import subprocess
    root = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                           capture_output=True, text=True).stdout.strip()
    return f"{head or 'unknown'}{' with uncommitted changes' if dirty else ''}"


def _built_from(commits) -> str:
    commits = sorted(commits)
    return f"\nBuilt from commit{'s' if len(commits) > 1 else ''} {', '.join(commits)}.\n"


def _table_rows(text) -> dict:
    """BOARD:ARRAY -> its line, of every data row of a generated table."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) > 2 and cells[0] not in ("board", "---"):
            rows[f"{cells[0]}:{cells[2].split(' ')[0]}"] = line
    return rows


def _commits(text) -> set:
    built = [ln for ln in text.splitlines() if ln.startswith("Built from commit")]
    return {c.strip() for c in built[0].split(" ", 3)[3].rstrip(".").split(",")} if built else set()


def merge_rows(old: str, new: str) -> str:
    """The docs table with ``new``'s rows replacing their namesakes in ``old``, in :data:`ROWS` order, and
    the commits of both: rebuilding one row must not drop the others' figures or where they came from."""
    old_rows, new_rows = _table_rows(old), _table_rows(new)
    lines = new.splitlines()[:2]
    lines += [new_rows.get(k) or old_rows[k] for k in (f"{r[0]}:{r[1]}" for r in ROWS)
              if k in new_rows or k in old_rows]
    commits = _commits(new)
    if old_rows.keys() - new_rows.keys():       # rows kept from the docs keep the commits they came from
        commits |= _commits(old)
    return "\n".join(lines) + "\n" + _built_from(commits)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", action="append", default=[], help="BOARD:ARRAY rows to build (repeatable)")
    ap.add_argument("--work", default="build/board-table")
    ap.add_argument("--reuse", action="store_true", help="keep rows that already have a report")
    ap.add_argument("--write-docs", action="store_true", help="replace the table in docs/boards.md")
    args = ap.parse_args(argv)
    unknown = set(args.only) - {f"{r[0]}:{r[1]}" for r in ROWS}
    if unknown:          # e.g. "a:4x4,b:8x8" (the option repeats): never write an empty table
        ap.error(f"no such row: {', '.join(sorted(unknown))} (rows: {', '.join(f'{r[0]}:{r[1]}' for r in ROWS)})")
    rows = [r for r in ROWS if not args.only or f"{r[0]}:{r[1]}" in args.only]
    reports = [run_row(*row, Path(args.work), args.reuse) for row in rows]
    text = table(reports) + _built_from({r.get("commit", "unknown") for r in reports})
    print(text)
    if args.write_docs:
        doc = Path(__file__).resolve().parents[1] / "docs" / "boards.md"
        body = doc.read_text()
        start, end = body.index(BEGIN) + len(BEGIN), body.index(END)
        if args.only:       # the rows not rebuilt keep their lines (and their commits) from the docs
            text = merge_rows(body[start:end], text)
        doc.write_text(body[:start] + "\n" + text + body[end:])
        print(f"wrote {doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
