"""The ``scalenet build`` subcommand: arguments and the command (the parser in scalenet/cli.py calls in here).

Importing this module loads no Amaranth and no toolchain: ``scalenet --help`` stays fast.
"""

from __future__ import annotations

import json
import re
import sys

from .targets import BOARDS, BoardError

__all__ = ["add_arguments", "cmd_build", "parse_array"]


def parse_array(text: str) -> tuple:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text or "")
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise BoardError(f"--array must be ROWSxCOLS, e.g. 8x8, not {text!r}")
    return int(m.group(1)), int(m.group(2))


def add_arguments(p) -> None:
    p.add_argument("--board", help=f"target board: {', '.join(BOARDS)}")
    p.add_argument("--list-boards", action="store_true", help="list the boards and exit")
    p.add_argument("--array", default="8x8", help="PE array ROWSxCOLS (default 8x8)")
    p.add_argument("--freq-mhz", type=float, default=None, help="target clock (default 100 MHz)")
    p.add_argument("--out", default=None, help="output folder (default build/BOARD-ARRAY)")
    p.add_argument("--mem-kb", type=int, default=None,
                   help="on-chip SRAM in KiB, a power of two (default: the most the free block RAM holds)")
    p.add_argument("--max-width", type=int, default=None, help="widest input row (default 256)")
    p.add_argument("--max-channels", type=int, default=None, help="most channels of a layer (default 1024)")
    p.add_argument("--line-buffer-kb", type=int, default=None, help="line buffer KiB (default 64)")
    p.add_argument("--weight-buffer-kb", type=int, default=None, help="weight buffer KiB (default 64)")
    p.add_argument("--pe-multipliers", choices=("dsp", "lut"), default="dsp",
                   help="PE array products in MULT18X18D (default) or Booth-encoded LUT logic (ECP5)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _config(args):
    from scalenet.rtl.config import AcceleratorConfig
    rows, cols = parse_array(args.array)
    kw = {"rows": rows, "cols": cols}
    for arg, field, scale in (("max_width", "max_width", 1), ("max_channels", "max_channels", 1),
                              ("line_buffer_kb", "line_buffer_bytes", 1024),
                              ("weight_buffer_kb", "weight_buffer_bytes", 1024)):
        value = getattr(args, arg)
        if value is not None:
            kw[field] = value * scale
    bus = max(8, cols)                    # a PE row must fit (and divide) the bus word
    kw.setdefault("data_bytes", bus if bus in (8, 16, 32) else 32)
    try:
        return AcceleratorConfig(**kw)
    except ValueError as e:
        raise BoardError(f"invalid accelerator configuration: {e}") from None


def cmd_build(args) -> int:
    if args.list_boards:
        for b in BOARDS.values():
            print(f"{b.name:<16} {b.dev.part:<14} {b.description}")
        return 0
    if not args.board:
        raise BoardError("--board is required (scalenet build --list-boards shows them)")
    from .build import build
    from .targets import get_board
    board = get_board(args.board)
    config = _config(args)
    out = args.out or f"build/{board.name}-{config.rows}x{config.cols}"
    mem = None if args.mem_kb is None else args.mem_kb * 1024
    log = None if args.json else (lambda msg: print(f"[build] {msg}", file=sys.stderr, flush=True))
    report = build(board.name, config, freq_mhz=args.freq_mhz, out_dir=out, mem_bytes=mem, log=log,
                   pe_multipliers=args.pe_multipliers)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        from .build import format_report
        print(format_report(report), end="")
    return 0
