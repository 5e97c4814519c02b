"""Every slow register-to-register path of a routed design, from nextpnr's SDF (``--sdf``), ranked.

Why: nextpnr's report names one critical path per clock, and a routed run of the whole 8x8 accelerator
takes 30-40 minutes here, so fixing one path per run is far too slow. The SDF it writes after routing
holds every cell's delays (clock-to-out, LUT and carry arcs, setup checks) and every routed connection's
delay; a static timing analysis over it ranks all endpoints at once. Endpoints are grouped by register
(bits of one bus count once), so the listing shows distinct paths, each with its worst bit traced back.

Delays are the SDF's maximum corner, which is what nextpnr times against (the worst endpoint here
matches the routed Fmax it reports); clock skew is ignored, as nextpnr's ECP5 global clocks do.

usage: python benchmarks/sdf_paths.py routed.sdf [--period NS] [--top N] [--trace K] [--endpoint PREFIX ...]
       (component_fmax.py writes routed.sdf beside each component's nextpnr log, a board build top.sdf)
"""

from __future__ import annotations

import argparse
import collections
import re
import sys

_TRIPLE = r"\((-?\d+):(-?\d+):(-?\d+)\)"
_INTERCONNECT = re.compile(r"\(INTERCONNECT (\S+) (\S+) " + _TRIPLE)
_IOPATH = re.compile(r"\(IOPATH (?:\(posedge (\S+)\)|(\S+)) (\S+) " + _TRIPLE)
_SETUP = re.compile(r"\(SETUPHOLD \((?:posedge|negedge) (\S+)\) \(posedge (\S+)\) " + _TRIPLE)
_INSTANCE = re.compile(r"\(INSTANCE ?(.*?)\)")
_CELLTYPE = re.compile(r'\(CELLTYPE "([^"]*)"\)')
_CONSTANTS = {"$PACKER_VCC", "$PACKER_GND"}
_BIT_SUFFIX = re.compile(r"(_TRELLIS_FF_Q|_DP16KD|_MULT18X18D)(_\d+)?$")


def _unescape(name: str) -> str:
    return name.replace("\\", "")


def _pin(ref: str) -> tuple[str, str]:
    """('instance', 'PIN') of an SDF port reference ``inst/PIN`` (``\\/`` inside a name is escaped)."""
    i = len(ref) - 1
    while i >= 0 and not (ref[i] == "/" and (i == 0 or ref[i - 1] != "\\")):
        i -= 1
    return (_unescape(ref[:i]), ref[i + 1:]) if i >= 0 else ("", _unescape(ref))


def parse(text: str):
    """(edges, launches, checks, celltype): edges[(inst, pin)] -> [(from node, ps)], launches[node] ->
    clock-to-out ps, checks[node] -> setup ps, celltype[inst]."""
    edges = collections.defaultdict(list)
    launches, checks, celltype = {}, {}, {}
    inst, ctype = "", ""
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("(INTERCONNECT"):
            mm = _INTERCONNECT.match(s)
            edges[_pin(mm.group(2))].append((_pin(mm.group(1)), int(mm.group(5))))
        elif s.startswith("(IOPATH"):
            mm = _IOPATH.match(s)
            src = mm.group(1) or mm.group(2)
            ps = int(mm.group(6))
            if src.startswith("CLK"):
                node = (inst, mm.group(3))
                launches[node] = max(launches.get(node, 0), ps)
            else:
                edges[(inst, mm.group(3))].append(((inst, src), ps))
        elif s.startswith("(SETUPHOLD"):
            mm = _SETUP.match(s)
            node = (inst, mm.group(1))
            checks[node] = max(checks.get(node, 0), int(mm.group(5)))
        elif s.startswith("(INSTANCE"):
            inst = _unescape(_INSTANCE.match(s).group(1).strip())
            celltype[inst] = ctype
        elif s.startswith("(CELLTYPE"):
            ctype = _CELLTYPE.match(s).group(1)
    return edges, launches, checks, celltype


def arrivals(edges, launches, untimed=frozenset()):
    """Latest arrival (ps) at every node and the predecessor it came through. Nodes with no inputs and no
    clock arc (the design's input ports, out of context) launch at 0; a clock arc starts a path afresh;
    the packer's constant drivers and the cells in ``untimed`` launch nothing (nextpnr does not time
    constants, and reports a board's pads -- asynchronous inputs -- apart from the clock's Fmax)."""
    arrive, via = {}, {}
    state, order = {}, []
    for root in list(edges) + list(launches):
        if root in state:
            continue
        stack = [(root, False)]
        while stack:
            node, done = stack.pop()
            if done:
                state[node] = 2
                order.append(node)
                continue
            if state.get(node):
                continue
            state[node] = 1
            stack.append((node, True))
            if node not in launches:
                for src, _ in edges.get(node, ()):
                    if not state.get(src):
                        stack.append((src, False))
    for node in order:
        if node in launches:
            arrive[node], via[node] = launches[node], None
            continue
        if node[0] in untimed:
            arrive[node], via[node] = None, None
            continue
        ins = edges.get(node, ())
        best, pred = (None if ins or node[0] in _CONSTANTS else 0), None
        for src, ps in ins:
            if arrive.get(src) is None:
                continue
            t = arrive[src] + ps
            if best is None or t > best:
                best, pred = t, src
        arrive[node], via[node] = best, pred
    return arrive, via


def trace(node, arrive, via):
    path = []
    while node is not None:
        path.append((node, arrive[node]))
        node = via.get(node)
    return path[::-1]


def group_of(inst: str) -> str:
    return _BIT_SUFFIX.sub(r"\1", inst)


def endpoints(text: str):
    """Every timed endpoint as (arrival + setup in ps, (instance, pin)), worst first; with the arrivals
    and their predecessors (for :func:`trace`) and the cell types."""
    edges, launches, checks, celltype = parse(text)
    pads = {inst for inst, kind in celltype.items() if kind == "TRELLIS_IO"}
    arrive, via = arrivals(edges, launches, pads)
    ends = sorted(((arrive[n] + setup, n) for n, setup in checks.items() if arrive.get(n) is not None),
                  reverse=True)
    return ends, arrive, via, celltype


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sdf")
    ap.add_argument("--period", type=float, default=10.0, help="clock period in ns (default 10)")
    ap.add_argument("--top", type=int, default=30, help="register groups to list")
    ap.add_argument("--trace", type=int, default=5, help="paths to trace hop by hop")
    ap.add_argument("--endpoint", action="append", default=[], metavar="PREFIX",
                    help="also trace the worst endpoint whose cell name starts with PREFIX (repeatable)")
    args = ap.parse_args(argv)
    with open(args.sdf) as f:
        ends, arrive, via, celltype = endpoints(f.read())
    if not ends:
        sys.exit(f"{args.sdf}: no setup checks (is it nextpnr's SDF?)")
    worst = ends[0][0]
    print(f"worst endpoint {worst / 1000:.2f} ns -> {1e6 / worst:.1f} MHz; "
          f"{sum(1 for t, _ in ends if t > args.period * 1000)} endpoints over {args.period} ns")
    over = collections.Counter(group_of(n[0]) for t, n in ends if t > args.period * 1000)
    groups = {}
    for t, node in ends:
        g = group_of(node[0])
        if g not in groups:
            groups[g] = (t, node, over[g])
        if len(groups) >= args.top:
            break
    print(f"{'ns':>6s} {'bits>T':>6s}  endpoint register  <-  path start")
    for g, (t, node, n_over) in groups.items():
        start = trace(node, arrive, via)[0][0]
        print(f"{t / 1000:6.2f} {n_over:6d}  {g}.{node[1]}  <-  {start[0]}.{start[1]} ({celltype.get(start[0], '?')})")
    picked = [(g, t, node) for g, (t, node, _) in list(groups.items())[:args.trace]]
    for prefix in args.endpoint:
        hit = next(((t, n) for t, n in ends if n[0].startswith(prefix)), None)
        if hit is None:
            sys.exit(f"{args.sdf}: no timed endpoint starts with {prefix!r}")
        picked.append((group_of(hit[1][0]), *hit))
    for g, t, node in picked:
        print(f"\n{t / 1000:.2f} ns: {g}")
        prev, hops = 0, trace(node, arrive, via)
        for k, ((inst, pin), at) in enumerate(hops):
            if at == prev and 0 < k < len(hops) - 1:
                continue                 # carry-chain links and other zero-delay hops
            print(f"  {at / 1000:6.2f} (+{(at - prev) / 1000:5.2f})  {celltype.get(inst, '?'):11s} {inst}.{pin}")
            prev = at


if __name__ == "__main__":
    main()
