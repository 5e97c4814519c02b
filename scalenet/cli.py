"""The `scalenet` command line. Errors print one line to stderr and exit 2 (a traceback only with --debug)."""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from .errors import ScalenetError, ShapeError

__all__ = ["main"]

BACKENDS = ("cpu", "model", "sim", "hw")
"""cpu: the numpy reference; model: the driver on the transaction-level device; sim: the driver on the
RTL in the compiled simulator."""


class CliError(ScalenetError):
    """A usage problem found by the CLI itself (bad file, bad option combination)."""


def _cmd_zoo(args):
    from . import zoo
    rows = zoo.info()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = f"{'network':<16} {'application':<11} {'input':<14} {'layers':>6} {'params':>12} {'MACs':>15}"
    print(header)
    print("-" * len(header))
    for r in rows:
        shape = "x".join(str(s) for s in r["input_shape"])
        print(f"{r['name']:<16} {r['application']:<11} {shape:<14} {r['layers']:>6} {r['params']:>12,} {r['macs']:>15,}")
    return 0


def _load_input(path, graph):
    """Read an .npy input: integers of the model's input type pass as they are, floats are quantised."""
    from .quant import quantize
    try:
        x = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CliError(f"input file not found: {path}") from None
    except (OSError, ValueError) as e:
        raise CliError(f"cannot read input {path} as a .npy array: {e}") from None
    t = graph.input
    if np.issubdtype(x.dtype, np.floating):
        x = quantize(x, graph.meta.get("input_q", t.q))
    elif x.dtype != t.q.dtype.np_dtype:
        raise ShapeError(f"input {path} has dtype {x.dtype}; {graph.name} takes {t.q.dtype.name} "
                         f"(or float32, which is quantised)")
    return x


def _sample_input(graph, seed=0):
    t = graph.input
    rng = np.random.default_rng(seed)
    return rng.integers(t.q.dtype.lo, t.q.dtype.hi + 1, size=t.shape).astype(t.q.dtype.np_dtype)


def _sim_options(args) -> dict:
    """open_target keywords of `run --engine/--vcd` (simulation only)."""
    if args.backend != "sim":
        if args.engine or args.vcd:
            raise CliError("--engine and --vcd need --backend sim")
        return {}
    return {"engine": args.engine or "compiled", "vcd": args.vcd}


def _hw_target(args) -> str:
    """The open_target string of `run`: the backend, or with `--backend hw` the board `--target`."""
    if args.backend != "hw":
        if args.target:
            raise CliError("--target needs --backend hw")
        return args.backend
    if not args.target or args.target.partition(":")[0] not in ("serial", "mmio"):
        raise CliError("--backend hw needs --target serial:PORT[@BAUD] or mmio:REGS,DMA "
                       "(e.g. serial:/dev/ttyUSB0@115200, mmio:/dev/uio0,/dev/udmabuf0)")
    return args.target


def _cmd_run(args):
    import scalenet
    from .quant import dequantize
    sim_options = _sim_options(args)
    graph = scalenet.load(args.model)
    x = _load_input(args.input, graph) if args.input else _sample_input(graph)
    batch = graph.check_input(x)
    counters = engine = None
    if args.backend == "cpu":
        start = time.perf_counter()
        outputs = graph.run(batch)
        elapsed = time.perf_counter() - start
    else:
        from .driver.accelerator import open_target
        acc = open_target(_hw_target(args), **sim_options)
        engine = getattr(getattr(acc.transport, "platform", None), "engine", None)
        loaded = acc.load(graph)
        start = time.perf_counter()
        outputs = acc.run(loaded, batch)
        elapsed = time.perf_counter() - start
        counters = acc.counters()
        acc.close()
    name = graph.outputs[0]
    y = outputs[name]
    if x.ndim == len(graph.input.shape):
        y = y[0]
    if args.dequantize:
        y = dequantize(y, graph.tensors[name].q)
    if args.output:
        np.save(args.output, y)
    flat = y.reshape(batch.shape[0], -1)
    result = {
        "model": graph.name,
        "backend": args.backend,
        "target": args.target,
        "frames": int(batch.shape[0]),
        "input_shape": list(x.shape),
        "output": name,
        "output_shape": list(y.shape),
        "output_dtype": str(y.dtype),
        "argmax": [int(i) for i in flat.argmax(axis=1)],
        "macs_per_frame": graph.macs,
        "seconds": elapsed,
        "gmac_per_s": graph.macs * batch.shape[0] / elapsed / 1e9 if elapsed > 0 else None,
        "output_file": args.output,
        "counters": counters,
        "engine": engine,
        "vcd": args.vcd,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{graph.name}: {result['frames']} frame(s) on {args.backend} in {elapsed * 1e3:.2f} ms "
              f"({graph.macs:,} MACs/frame, {result['gmac_per_s']:.2f} GMAC/s)")
        print(f"output {name}: shape {tuple(y.shape)} {y.dtype}, argmax {result['argmax']}")
        if counters:
            print("device counters: " + ", ".join(f"{k} {v:,}" for k, v in counters.items()))
        if args.output:
            print(f"written to {args.output}")
        if args.vcd:
            print(f"trace written to {args.vcd} ({engine} engine)")
    return 0


def _cmd_info(args):
    from .driver.accelerator import open_target
    acc = open_target(args.target)
    info = acc.info
    result = {"target": args.target, "id": f"0x{info['id']:08X}", "version": info["version"],
              "config": {k: getattr(info["config"], k) for k in ("rows", "cols", "max_kernel", "data_bytes",
                                                                  "max_width", "max_channels")}}
    acc.close()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"SCALENet {result['version']} on {args.target} (ID {result['id']}): {info['config'].describe()}, "
              f"{info['config'].data_bytes * 8}-bit AXI")
    return 0


def _cmd_trace(args):
    from .cosim.trace import analyze
    report = analyze(args.vcd)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    print(f"{report.path}: {report.cycles:,} cycles, {report.busy_cycles:,} busy, {report.runs} run(s), "
          f"{report.signals:,} signals")
    header = (f"{'run':>3} {'layer':>5} {'cycles':>10} {'PE active':>9} {'MAC ops':>12} {'DMA rd B':>10} "
              f"{'DMA wr B':>10} {'stall':>8} {'toggles':>12}")
    print(header)
    print("-" * len(header))
    for la in report.layers:
        print(f"{la.run:>3} {la.layer:>5} {la.cycles:>10,} {la.pe_active_ratio:>9.1%} {la.mac_ops:>12,} "
              f"{la.dma_rd_bytes:>10,} {la.dma_wr_bytes:>10,} {la.dma_stall_cycles:>8,} {la.toggles['top']:>12,}")
    top_level = {k: v for k, v in report.toggles.items() if k != "top" and "." not in k}
    print("toggles per module: " + ", ".join(f"{k} {v:,}" for k, v in sorted(top_level.items(), key=lambda kv: -kv[1])))
    return 0


def _cmd_regmap(args):
    from .rtl import regmap
    print(regmap.c_header() if args.c_header else regmap.markdown(), end="")
    return 0


def _cmd_build(args):
    from .boards.cli import cmd_build
    return cmd_build(args)


def build_parser():
    parser = argparse.ArgumentParser(prog="scalenet", description=__doc__.split(".")[0])
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("zoo", help="list the networks of the zoo")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_zoo)

    p = sub.add_parser("run", help="run a network (zoo name or ONNX file)")
    p.add_argument("model", help="zoo network name or path to an .onnx file")
    p.add_argument("--input", help=".npy input: the model's integer type, or float32 to be quantised "
                                   "(default: a seeded random frame)")
    p.add_argument("--output", help="write the output to this .npy file")
    p.add_argument("--backend", choices=BACKENDS, default="cpu",
                   help="where to run (default: cpu; hw: a board, see --target)")
    p.add_argument("--target", help="with --backend hw: serial:PORT[@BAUD] (UART bridge) or mmio:REGS,DMA "
                                    "(e.g. mmio:/dev/uio0,/dev/udmabuf0)")
    p.add_argument("--dequantize", action="store_true", help="output float32 instead of raw integers")
    p.add_argument("--engine", choices=("compiled", "pysim"),
                   help="simulation engine for --backend sim (default: compiled, or pysim without a C++ compiler)")
    p.add_argument("--vcd", help="with --backend sim: write a VCD trace of the run (see `scalenet trace`)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("trace", help="per-layer cycles, PE activity, DMA traffic and toggles from a VCD trace")
    p.add_argument("vcd", help="a VCD written by `scalenet run --backend sim --vcd`")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_trace)

    p = sub.add_parser("info", help="print a device's identity and configuration")
    p.add_argument("--target", default="model", help="model, sim, serial:PORT[@BAUD] or mmio:REGS,DMA "
                                                     "(default: model)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("regmap", help="print the register map and descriptor layout (generated)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--markdown", action="store_true", help="Markdown table (default)")
    fmt.add_argument("--c-header", action="store_true", help="C header")
    p.set_defaults(func=_cmd_regmap)

    from .boards.cli import add_arguments as _build_arguments
    p = sub.add_parser("build", help="build a board bitstream (ECP5) or a Vivado project (7-series), with a report")
    _build_arguments(p)
    p.set_defaults(func=_cmd_build)

    from .scheduler.cli import add_arguments as _schedule_arguments, cmd_schedule as _cmd_schedule
    p = sub.add_parser("schedule", help="place each layer on the accelerator or the software workers under a "
                                        "deadline, compared with the baselines")
    _schedule_arguments(p)
    p.set_defaults(func=_cmd_schedule)

    p = sub.add_parser("demo", help="the whole system on one application: accuracy, schedule, bit-exact runs, "
                                    "report (defaults need no arguments)")
    p.add_argument("--app", choices=("image", "eeg"), default="image",
                   help="image: the trained digits CNN; eeg: seizure detection on synthetic EEG (default: image)")
    p.add_argument("--backend", choices=("sim", "model", "hw"), default="sim",
                   help="where accelerator layers run (default: sim, the RTL in the compiled simulator)")
    p.add_argument("--engine", choices=("compiled", "pysim"), default="compiled", help="simulator engine for sim")
    p.add_argument("--target", help="board for --backend hw, e.g. serial:/dev/ttyUSB0 or mmio:/dev/uio0,/dev/udmabuf0")
    p.add_argument("--cost-target", default="host", help="cost model target (default: host)")
    p.add_argument("--deadline-ms", type=float, help="real-time deadline per frame (default: image 1 ms, eeg 1000 ms)")
    p.add_argument("--weights", help="objective weights, e.g. latency=0,power=1,energy=0 (default: power=1)")
    p.add_argument("--frames", type=int, help="frames run through the accelerator (default: image 16, eeg 4)")
    p.add_argument("--out", default="scalenet-demo", help="report directory (default: ./scalenet-demo)")
    p.add_argument("--json", action="store_true", help="machine-readable summary on stdout")
    p.set_defaults(func=_cmd_demo)
    return parser


def _cmd_demo(args):
    from .demo import print_summary, run_demo
    result = run_demo(args.app, out_dir=args.out, backend=args.backend, engine=args.engine, target=args.target,
                      cost_target=args.cost_target, deadline_ms=args.deadline_ms, weights=args.weights,
                      frames=args.frames, quiet=args.json)
    if args.json:
        print(json.dumps({**result.summary, "report": str(result.report),
                          "images": [str(p) for p in result.images]}, indent=2, default=float))
    else:
        print_summary(result)
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ScalenetError, FileNotFoundError) as e:
        if args.debug:
            raise
        print(f"scalenet: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scalenet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
