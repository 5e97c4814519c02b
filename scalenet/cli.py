"""The `scalenet` command line. Errors print one line to stderr and exit 2 (a traceback only with --debug)."""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from .errors import ScalenetError, ShapeError

__all__ = ["main"]

BACKENDS = ("cpu", "model", "sim")
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


def _cmd_run(args):
    import scalenet
    from .quant import dequantize
    graph = scalenet.load(args.model)
    x = _load_input(args.input, graph) if args.input else _sample_input(graph)
    batch = graph.check_input(x)
    counters = None
    if args.backend == "cpu":
        start = time.perf_counter()
        outputs = graph.run(batch)
        elapsed = time.perf_counter() - start
    else:
        from .driver.accelerator import open_target
        acc = open_target(args.backend)
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


def _cmd_regmap(args):
    from .rtl import regmap
    print(regmap.c_header() if args.c_header else regmap.markdown(), end="")
    return 0


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
    p.add_argument("--backend", choices=BACKENDS, default="cpu", help="where to run (default: cpu)")
    p.add_argument("--dequantize", action="store_true", help="output float32 instead of raw integers")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("info", help="print a device's identity and configuration")
    p.add_argument("--target", default="model", help="model or sim (default: model)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("regmap", help="print the register map and descriptor layout (generated)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--markdown", action="store_true", help="Markdown table (default)")
    fmt.add_argument("--c-header", action="store_true", help="C header")
    p.set_defaults(func=_cmd_regmap)
    return parser


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
