"""Memories whose same-address read-during-write is never used: told to synthesis as "don't care".

Why: an Amaranth read port that is not transparent promises the *old* word when another port writes the
same address in the same cycle (RTLIL ``$memrd_v2`` with ``COLLISION_X_MASK`` 0). Block RAMs do not
define that collision across ports (ECP5 DP16KD, 7-series RAMB), so Yosys emulates it: a register of the
write data, an address compare and a multiplexer behind *every* output bit of the memory. That LUT sits
between each block and the register meant to take its data -- with nextpnr's 5.83 ns DP16KD
clock-to-out, block, multiplexer and the route to wherever the write data comes from was the whole 8x8
design's critical path (wmem: 6.2 ns of route) -- and it costs a register per bit besides.

A memory created with ``attrs=UNDEFINED_COLLISIONS`` declares that the design never uses the word read in
a cycle in which the same address is written (the collision cannot happen, or the reader forwards the
written word instead, e.g. the conv engine's partial sums and the fused pool's running maxima); its
non-transparent read ports then get ``COLLISION_X_MASK`` all ones in :func:`undefined_collisions`, which
the board flow applies to the RTLIL before synthesis. Simulation still returns the old word, so a design
that broke the promise would differ only in hardware: each use is argued where the memory is created.
"""

import re

__all__ = ["UNDEFINED_COLLISIONS", "undefined_collisions"]

ATTR = "scalenet_undefined_collisions"
UNDEFINED_COLLISIONS = {ATTR: 1}
"""``attrs`` of a :class:`~amaranth.lib.memory.Memory` whose read-during-write collisions are never used."""

_MODULE = re.compile(r"^module (\S+)\n(.*?)^end\n", re.S | re.M)
_MEMORY = re.compile(r"((?:^ *attribute .*\n)*)^ *memory [^\n]*? (\S+)\n", re.M)
_MEMRD = re.compile(r"^ *cell \$memrd_v2 .*?^ *end\n", re.S | re.M)


def undefined_collisions(text: str) -> str:
    """``text`` (RTLIL from Amaranth) with ``COLLISION_X_MASK`` set for every non-transparent read port of
    every memory marked with :data:`UNDEFINED_COLLISIONS`. Raises ``ValueError`` when a marked memory has
    no such port (the mark would be silently lost)."""

    def module(mm):
        body = mm.group(2)
        marked = {name for attrs, name in _MEMORY.findall(body) if f"attribute \\{ATTR} " in attrs}
        if not marked:
            return mm.group(0)
        done = set()

        def port(pm):
            cell = pm.group(0)
            memid = re.search(r'parameter \\MEMID "\\\\(.+?)"\n', cell)
            if memid is None or f"\\{memid.group(1)}" not in marked:
                return cell
            transp = re.search(r"parameter \\TRANSPARENCY_MASK (\d+)'([01]+)\n", cell)
            width, bits = int(transp.group(1)), transp.group(2).zfill(int(transp.group(1)))
            mask = "".join("0" if b == "1" else "1" for b in bits)
            done.add(f"\\{memid.group(1)}")
            return re.sub(r"parameter \\COLLISION_X_MASK \d+'[01]+\n",
                          f"parameter \\\\COLLISION_X_MASK {width}'{mask}\n", cell)

        body = _MEMRD.sub(port, body)
        if marked - done:
            raise ValueError(f"memories marked {ATTR} without a read port in module {mm.group(1)}: "
                             f"{', '.join(sorted(marked - done))}")
        return f"module {mm.group(1)}\n{body}end\n"

    return _MODULE.sub(module, text)
