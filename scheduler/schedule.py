"""Scheduling: which resource runs each layer, to minimise a weighted cost under a real-time deadline.

The only input is a :class:`~scalenet.scheduler.costs.CostTable`. One timing model (:func:`evaluate`)
turns a placement into a :class:`Schedule`; every algorithm — the exact chain DP, the HEFT-style list
scheduler, brute force and the baselines — is judged by it, so their results compare like for like.

Timing model. Each resource runs one layer at a time (the software workers parallelise *inside* a
layer). A layer starts when its resource is free and its inputs are in that resource's memory; a tensor
that crosses resources is moved once per destination, starting when its producer finishes (moves use the
interconnect, not a compute resource, and do not contend). The graph input starts in the host's memory
and the outputs (layers without successors) must end there: the latency is the time the last output
arrives on the host. Layers are dispatched in one fixed priority order, HEFT's upward rank (critical path
to the end with mean costs), each as early as its resource and inputs allow (no insertion into earlier
gaps) — for a chain there is nothing to choose.

Hand-over cost (``CostTable.rewarm``). A layer that reads a tensor made on another resource (the graph
input counts as made on the host) finds its resource's caches evicted of every working set; the first
layer of each working-set label after that runs its :class:`~scalenet.scheduler.costs.Rewarm` seconds
longer (and spends its joules). A frame starts with a resource warm only if the frame's outputs are all
made there — frames follow one another, so otherwise the previous frame handed over to it — and cold
otherwise.

Objectives, over one frame period ``T`` (the deadline unless given): the latency ``L``; the average
system power ``P = I + D / T``, where ``D`` is the dynamic energy of the frame (layers + moves) and ``I``
the idle power of the powered resources (the host always; a ``gateable`` resource only if a layer uses
it); the energy to compute one frame ``E = D + I * L`` (what a frame costs if the system sleeps between
frames). The cost is ``w_L L / L0 + w_P P / P0 + w_E E / E0``: each objective is normalised by its value
in the all-software schedule (every layer on the host), so weights are unit-free and 1 means "as much
as software". The deadline is a hard constraint ``L <= deadline``; when no placement meets it the result
is the fastest placement found, flagged ``feasible=False``.

Exactness. For a chain the dynamic programme over (layer, resource) keeps, per state, the Pareto set of
(latency, dynamic energy) labels of partial placements: the cost is increasing in both and the deadline
only bounds latency, so a dominated label can never complete to a better feasible schedule, and the best
feasible final label is optimal (idle power depends on which gateable resources are used: the DP runs
once per subset of them). With hand-over costs a state is (resource, warm working sets of that resource):
in a chain every return to a resource is a hand-over, so the other resources' caches never matter, and
the future cost of a partial placement depends on nothing else; the frame-start rule ties the first
layer's state to the last layer's resource, so the DP runs once per resource the chain may end on.
Branching graphs use a list scheduler (HEFT's upward-rank order, earliest finish time plus an energy
price swept over a range) followed by single-layer moves and moves of two layers close in the dispatch
order (restarted from the fastest candidates when no feasible placement is found); it is checked against
brute force in the tests and benchmarks.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from scalenet.errors import ScalenetError

from .costs import CostTable

__all__ = [
    "ScheduleError", "Transfer", "Schedule", "OBJECTIVES", "DEFAULT_WEIGHTS", "BASELINES",
    "parse_weights", "evaluate", "schedule", "schedule_chain", "schedule_dag", "brute_force",
    "baseline_placement", "baselines", "compare", "pareto_front", "is_chain",
]

OBJECTIVES = ("latency", "power", "energy")
DEFAULT_WEIGHTS = {"latency": 0.0, "power": 1.0, "energy": 0.0}
"""Least average power that meets the deadline: the paper's headline objective."""

BASELINES = ("all-accelerator", "all-software", "greedy-fastest", "delegate-all-supported",
             "largest-partition")
_BRUTE_FORCE_LIMIT = 1 << 20


class ScheduleError(ScalenetError):
    """A scheduling request that cannot be served: bad weights or deadline, a layer no resource runs."""


# ---------------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Transfer:
    """One tensor move: the output of ``layer`` (``None``: the graph input) from ``src`` to ``dst``."""

    layer: str | None
    src: str
    dst: str
    start: float
    finish: float
    nbytes: int
    energy_j: float


@dataclass
class Schedule:
    """A placement and its predicted timeline and objectives on one cost table (seconds, watts, joules)."""

    table: CostTable
    placement: dict                  # layer -> resource name
    start: dict                      # layer -> s
    finish: dict                     # layer -> s
    transfers: list                  # Transfer, in start order
    latency_s: float
    dynamic_energy_j: float
    idle_power_w: float              # of the powered resources
    powered: tuple                   # resource names drawing idle power
    deadline_s: float
    period_s: float
    method: str = "given"
    feasible: bool = True            # False: no placement found meets the deadline (this is the fastest)
    cost: float | None = None
    weights: dict | None = None
    reference: tuple | None = None   # (L0, P0, E0) the objectives are normalised by
    note: str = ""
    extra: dict = field(default_factory=dict)
    rewarm_s: dict = field(default_factory=dict)   # layer -> hand-over (re-warm) seconds it was charged

    @property
    def avg_power_w(self) -> float:
        return self.idle_power_w + self.dynamic_energy_j / self.period_s

    @property
    def energy_j(self) -> float:
        return self.dynamic_energy_j + self.idle_power_w * self.latency_s

    @property
    def deadline_met(self) -> bool:
        return self.latency_s <= self.deadline_s

    @property
    def order(self) -> list:
        return sorted(self.placement, key=lambda l: (self.start[l], self.finish[l]))

    def timelines(self) -> dict:
        """resource -> [(start, finish, layer)] in time order (every resource of the table listed)."""
        out = {r: [] for r in self.table.resources}
        for layer in self.order:
            out[self.placement[layer]].append((self.start[layer], self.finish[layer], layer))
        return out

    def busy_s(self) -> dict:
        return {r: sum(f - s for s, f, _ in spans) for r, spans in self.timelines().items()}

    def count(self) -> dict:
        out = dict.fromkeys(self.table.resources, 0)
        for r in self.placement.values():
            out[r] += 1
        return out

    def to_dict(self) -> dict:
        return {
            "method": self.method, "graph": self.table.graph_name, "feasible": self.feasible,
            "deadline_s": self.deadline_s, "period_s": self.period_s, "latency_s": self.latency_s,
            "deadline_met": self.deadline_met, "avg_power_w": self.avg_power_w, "energy_j": self.energy_j,
            "dynamic_energy_j": self.dynamic_energy_j, "idle_power_w": self.idle_power_w,
            "powered": list(self.powered), "cost": self.cost, "weights": self.weights, "note": self.note,
            "layers_per_resource": self.count(),
            "layers": [{"layer": l, "resource": self.placement[l], "start_s": self.start[l],
                        "finish_s": self.finish[l], "rewarm_s": self.rewarm_s.get(l, 0.0)} for l in self.order],
            "transfers": [{"layer": t.layer, "src": t.src, "dst": t.dst, "start_s": t.start,
                           "finish_s": t.finish, "bytes": t.nbytes, "energy_j": t.energy_j}
                          for t in self.transfers],
        }


# ---------------------------------------------------------------------------------------------------------
# Weights and checks


def parse_weights(text) -> dict:
    """``"latency=1,power=2"`` (or a dict) -> {objective: weight}; missing objectives weigh 0."""
    if text is None:
        return dict(DEFAULT_WEIGHTS)
    if isinstance(text, dict):
        items = list(text.items())
    else:
        items = []
        for part in str(text).split(","):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            if not sep:
                raise ScheduleError(f"malformed weights {text!r}: expected name=value pairs such as "
                                    "latency=0.2,power=1,energy=0.5")
            items.append((key.strip(), value.strip()))
    weights = dict.fromkeys(OBJECTIVES, 0.0)
    for key, value in items:
        if key not in OBJECTIVES:
            raise ScheduleError(f"unknown objective {key!r} in weights; use {', '.join(OBJECTIVES)}")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ScheduleError(f"weight of {key} must be a number, not {value!r}") from None
        if not math.isfinite(value) or value < 0:
            raise ScheduleError(f"weight of {key} must be a finite number >= 0, not {value}")
        weights[key] = value
    if not any(weights.values()):
        raise ScheduleError("at least one objective weight must be positive")
    return weights


def _check_deadline(deadline_s, period_s):
    for name, v in (("deadline", deadline_s), ("period", period_s)):
        if v is None:
            continue
        if not isinstance(v, (int, float)) or math.isnan(v) or v <= 0:
            raise ScheduleError(f"the {name} must be a positive number of seconds, not {v!r}")
    period = period_s if period_s is not None else deadline_s
    if math.isinf(period):
        raise ScheduleError("average power needs a finite frame period: give period_s with an infinite deadline")
    return float(deadline_s), float(period)


# ---------------------------------------------------------------------------------------------------------
# The timing model, on integer-indexed arrays (the algorithms call it thousands of times)


class _Problem:
    """A cost table flattened to lists: layers 0..n-1 in topological order, resources 0..k-1."""

    def __init__(self, table: CostTable):
        self.table = table
        self.names = list(table.layers)
        index = {l: i for i, l in enumerate(self.names)}
        self.res = list(table.resources)
        self.rindex = {r: i for i, r in enumerate(self.res)}
        if table.host not in self.rindex:
            raise ScheduleError(f"cost table of {table.graph_name}: host {table.host!r} is not one of its "
                                f"resources ({', '.join(self.res)})")
        self.host = self.rindex[table.host]
        n, k = len(self.names), len(self.res)
        if n == 0:
            raise ScheduleError(f"cost table of {table.graph_name} has no layers")
        self.preds = []
        for l in self.names:
            ps = []
            for p in table.preds.get(l, ()):
                if p not in index:
                    raise ScheduleError(f"cost table of {table.graph_name}: {l} reads {p!r}, not a layer")
                if index[p] >= index[l]:
                    raise ScheduleError(f"cost table of {table.graph_name}: layers are not in topological "
                                        f"order ({p} after {l})")
                ps.append(index[p])
            self.preds.append(ps)
        self.succs = [[] for _ in range(n)]
        for i, ps in enumerate(self.preds):
            for p in ps:
                self.succs[p].append(i)
        self.reads_input = [not ps for ps in self.preds]
        self.outputs = [i for i in range(n) if not self.succs[i]]
        self.lat = [[None] * k for _ in range(n)]
        self.en = [[None] * k for _ in range(n)]
        self.allowed = []
        for i, l in enumerate(self.names):
            for r, rn in enumerate(self.res):
                c = table.cost.get((l, rn))
                if c is not None:
                    self.lat[i][r], self.en[i][r] = float(c.latency_s), float(c.energy_j)
            ok = [r for r in range(k) if self.lat[i][r] is not None]
            if not ok:
                raise ScheduleError(f"layer {l} of {table.graph_name} is supported by no resource")
            self.allowed.append(ok)
        # moves: tt[i][a][b] / te[i][a][b] for the output of layer i; tin/ein for the graph input
        self.tt, self.te = [], []
        for l in self.names:
            nb = int(table.out_bytes.get(l, 0))
            t = [[table.transfer(a, b, nb) for b in self.res] for a in self.res]
            self.tt.append([[x[0] for x in row] for row in t])
            self.te.append([[x[1] for x in row] for row in t])
        tin = [table.transfer(table.host, b, int(table.in_bytes)) for b in self.res]
        self.tin, self.ein = [x[0] for x in tin], [x[1] for x in tin]
        # hand-over costs: rw[i][r] = [(seconds, joules, working-set bit), ...] or None; bits are per resource
        self.rw = [[None] * k for _ in range(n)]
        bits = {}
        for (l, rn), ws in table.rewarm.items():
            if l not in index or rn not in self.rindex:
                raise ScheduleError(f"cost table of {table.graph_name}: hand-over cost for ({l!r}, {rn!r}), "
                                    "not a layer and resource of the table")
            r = self.rindex[rn]
            parts = []
            for w in (ws if isinstance(ws, (tuple, list)) else (ws,)):
                if not (w.latency_s >= 0 and w.energy_j >= 0):
                    raise ScheduleError(f"cost table of {table.graph_name}: hand-over cost of {l} on {rn} must "
                                        f"be >= 0, not {w.latency_s} s / {w.energy_j} J")
                bit = bits.setdefault((r, w.working_set), 1 << sum(1 for q, _ in bits if q == r))
                parts.append((float(w.latency_s), float(w.energy_j), bit))
            self.rw[index[l]][r] = parts or None
        self.has_rewarm = bool(bits)
        specs = [table.resources[r] for r in self.res]
        self.idle = [float(s.idle_power_w) for s in specs]
        self.gateable = [bool(s.gateable) and r != self.host for r, s in enumerate(specs)]
        self.always_on = [r for r in range(k) if not self.gateable[r]]
        self.is_chain = all(self.preds[i] == ([i - 1] if i else []) for i in range(n))
        self.order = list(range(n)) if self.is_chain else self._priority()

    def powered(self, used) -> tuple:
        return tuple(sorted(set(self.always_on) | set(used)))

    def idle_power(self, used) -> float:
        return sum(self.idle[r] for r in self.powered(used))

    # -- priority ------------------------------------------------------------------------------------
    def _priority(self) -> list:
        """HEFT's dispatch order: upward rank with each layer's mean latency over its resources and the mean
        move time of its output (ties: topological order, so the order is always topological)."""
        n, k = len(self.names), len(self.res)
        pairs = [(a, b) for a in range(k) for b in range(k) if a != b]
        rank = [0.0] * n
        for i in range(n - 1, -1, -1):
            mean_lat = sum(self.lat[i][r] for r in self.allowed[i]) / len(self.allowed[i])
            mean_tt = sum(self.tt[i][a][b] for a, b in pairs) / len(pairs) if pairs else 0.0
            rank[i] = mean_lat + max((mean_tt + rank[j] for j in self.succs[i]), default=mean_tt)
        return sorted(range(n), key=lambda i: (-rank[i], i))

    # -- simulation ----------------------------------------------------------------------------------
    def latency_energy(self, p):
        """(latency, dynamic energy) of placement ``p``: :meth:`simulate` without the timeline (hot path)."""
        k, host, tt, te = len(self.res), self.host, self.tt, self.te
        free = [0.0] * k
        fin = [0.0] * len(self.names)
        arr = [None] * len(self.names)
        inp = [None] * k
        D = 0.0
        warm = self._start_warm(p) if self.has_rewarm else None
        for i in self.order:
            r = p[i]
            ready = 0.0
            handed = False
            if self.reads_input[i] and r != host:
                handed = True
                if inp[r] is None:
                    inp[r] = self.tin[r]
                    D += self.ein[r]
                ready = inp[r]
            for j in self.preds[i]:
                q = p[j]
                if q == r:
                    t = fin[j]
                else:
                    handed = True
                    a = arr[j]
                    if a is None:
                        a = arr[j] = [None] * k
                    t = a[r]
                    if t is None:
                        t = a[r] = fin[j] + tt[j][q][r]
                        D += te[j][q][r]
                if t > ready:
                    ready = t
            f = free[r]
            f = (f if f > ready else ready) + self.lat[i][r]
            if warm is not None:
                x, e, warm[r] = self.charge(i, r, 0 if handed else warm[r])
                f += x
                D += e
            fin[i] = f
            free[r] = f
            D += self.en[i][r]
        L = 0.0
        for o in self.outputs:
            q = p[o]
            t = fin[o] + tt[o][q][host]
            if q != host:
                D += te[o][q][host]
            if t > L:
                L = t
        return L, D

    def simulate(self, p, detail=False):
        """(latency, dynamic energy[, start, finish, moves]) of placement ``p`` (list of resource ids)."""
        n = len(self.names)
        free = [0.0] * len(self.res)
        fin = [0.0] * n
        start = [0.0] * n if detail else None
        arrived = {}                       # (layer or -1, dst) -> time the tensor is there
        moves = [] if detail else None
        charged = {} if detail else None
        D = 0.0
        warm = self._start_warm(p) if self.has_rewarm else None
        for i in self.order:
            r = p[i]
            ready = 0.0
            handed = False
            if self.reads_input[i] and r != self.host:
                handed = True
                key = (-1, r)
                if key not in arrived:
                    arrived[key] = self.tin[r]
                    D += self.ein[r]
                    if detail and (self.tin[r] > 0 or self.ein[r] > 0):
                        moves.append((-1, self.host, r, 0.0, self.tin[r], self.ein[r]))
                ready = arrived[key]
            for j in self.preds[i]:
                q = p[j]
                if q == r:
                    t = fin[j]
                else:
                    handed = True
                    key = (j, r)
                    if key not in arrived:
                        arrived[key] = fin[j] + self.tt[j][q][r]
                        D += self.te[j][q][r]
                        if detail and (self.tt[j][q][r] > 0 or self.te[j][q][r] > 0):
                            moves.append((j, q, r, fin[j], arrived[key], self.te[j][q][r]))
                    t = arrived[key]
                if t > ready:
                    ready = t
            s = free[r] if free[r] > ready else ready
            f = s + self.lat[i][r]
            if warm is not None:
                x, e, warm[r] = self.charge(i, r, 0 if handed else warm[r])
                f += x
                D += e
                if detail and (x or e):
                    charged[i] = x
            fin[i] = f
            free[r] = f
            D += self.en[i][r]
            if detail:
                start[i] = s
        L = 0.0
        for o in self.outputs:
            q = p[o]
            t = fin[o] + self.tt[o][q][self.host]
            if q != self.host:
                D += self.te[o][q][self.host]
                if detail and (self.tt[o][q][self.host] > 0 or self.te[o][q][self.host] > 0):
                    moves.append((o, q, self.host, fin[o], t, self.te[o][q][self.host]))
            if t > L:
                L = t
        if detail:
            return L, D, start, fin, moves, charged
        return L, D

    def _start_warm(self, p) -> list:
        """Per resource, its warm working sets (a bit mask; -1: all) at a frame's start: all on the resource
        that made every output of the previous frame (the same placement), none elsewhere."""
        warm = [0] * len(self.res)
        ends = {p[o] for o in self.outputs}
        if len(ends) == 1:
            warm[ends.pop()] = -1
        return warm

    def charge(self, i, r, m):
        """(seconds, joules, new mask) of layer ``i`` starting on ``r`` whose warm working sets are ``m``:
        the parts of its hand-over cost whose working sets are cold."""
        parts = self.rw[i][r]
        if parts is None:
            return 0.0, 0.0, m
        x = e = 0.0
        for s, j, bit in parts:
            if not m & bit:
                x += s
                e += j
                m |= bit
        return x, e, m


class _Objective:
    """The weighted, normalised cost and the deadline (see the module docstring)."""

    def __init__(self, prob: _Problem, deadline_s, period_s, weights):
        self.prob, self.deadline, self.period = prob, deadline_s, period_s
        self.w = parse_weights(weights)
        sw = _software_placement(prob)
        L, D = prob.simulate(sw)
        idle = prob.idle_power(set(sw))
        ref = (L, idle + D / period_s, D + idle * L)
        self.ref = tuple(v if v > 0 else 1.0 for v in ref)

    def cost(self, L, D, idle) -> float:
        w, (L0, P0, E0) = self.w, self.ref
        return (w["latency"] * L / L0 + w["power"] * (idle + D / self.period) / P0
                + w["energy"] * (D + idle * L) / E0)

    def coefficients(self, idle):
        """cost = aL * L + aD * D + c for a fixed idle power (used by the chain DP)."""
        w, (L0, P0, E0) = self.w, self.ref
        return (w["latency"] / L0 + w["energy"] * idle / E0, w["power"] / (self.period * P0) + w["energy"] / E0,
                w["power"] * idle / P0)

    def score(self, p):
        """(feasible, cost, latency, D) of placement ``p``."""
        L, D = self.prob.latency_energy(p)
        idle = self.prob.idle_power(set(p))
        return L <= self.deadline, self.cost(L, D, idle), L, D


def _software_placement(prob: _Problem) -> list:
    """Every layer on the host where it can run, else on its fastest resource."""
    return [prob.host if prob.lat[i][prob.host] is not None else min(prob.allowed[i], key=lambda r: prob.lat[i][r])
            for i in range(len(prob.names))]


def _result(prob: _Problem, obj: _Objective, p, method, feasible=True, note="") -> Schedule:
    L, D, start, fin, moves, charged = prob.simulate(p, detail=True)
    used = set(p)
    idle = prob.idle_power(used)
    names, res = prob.names, prob.res
    transfers = []
    for j, a, b, s, f, e in sorted(moves, key=lambda m: (m[3], m[4])):
        nb = int(prob.table.in_bytes) if j < 0 else int(prob.table.out_bytes.get(names[j], 0))
        transfers.append(Transfer(None if j < 0 else names[j], res[a], res[b], s, f, nb, e))
    return Schedule(
        table=prob.table, placement={names[i]: res[p[i]] for i in range(len(names))},
        start={names[i]: start[i] for i in range(len(names))}, finish={names[i]: fin[i] for i in range(len(names))},
        transfers=transfers, latency_s=L, dynamic_energy_j=D, idle_power_w=idle,
        powered=tuple(res[r] for r in prob.powered(used)), deadline_s=obj.deadline, period_s=obj.period,
        method=method, feasible=feasible, cost=obj.cost(L, D, idle), weights=dict(obj.w), reference=obj.ref,
        note=note, rewarm_s={names[i]: v for i, v in (charged or {}).items()})


def _placement_ids(prob: _Problem, placement: dict) -> list:
    p = []
    for i, l in enumerate(prob.names):
        if l not in placement:
            raise ScheduleError(f"placement gives no resource for layer {l}")
        r = prob.rindex.get(placement[l])
        if r is None:
            raise ScheduleError(f"layer {l} placed on unknown resource {placement[l]!r}")
        if prob.lat[i][r] is None:
            raise ScheduleError(f"layer {l} cannot run on {placement[l]} (no cost in the table)")
        p.append(r)
    return p


def evaluate(table: CostTable, placement: dict, deadline_s: float, *, period_s=None, weights=None,
             method="given") -> Schedule:
    """The predicted schedule of a given placement ({layer: resource})."""
    deadline_s, period_s = _check_deadline(deadline_s, period_s)
    prob = _Problem(table)
    obj = _Objective(prob, deadline_s, period_s, weights)
    return _result(prob, obj, _placement_ids(prob, placement), method)


def is_chain(table: CostTable) -> bool:
    """Every layer reads only its predecessor in the list (the first reads the graph input)."""
    return _Problem(table).is_chain


# ---------------------------------------------------------------------------------------------------------
# Exact chain scheduling


def _gate_subsets(prob: _Problem):
    """Allowed-resource sets: the always-powered ones plus every subset of the gateable ones."""
    gateable = [r for r in range(len(prob.res)) if prob.gateable[r]]
    for n in range(len(gateable) + 1):
        for extra in itertools.combinations(gateable, n):
            yield sorted(set(prob.always_on) | set(extra))


def _pareto(labels):
    """Keep the labels (L, D, ...) no other label beats in both L and D (ties: the first)."""
    labels.sort(key=lambda x: (x[0], x[1]))
    out, best_d = [], math.inf
    for lab in labels:
        if lab[1] < best_d:
            out.append(lab)
            best_d = lab[1]
    return out


def _chain_ends(prob: _Problem, allowed):
    """The resources the DP runs are tied to (see the module docstring): with hand-over costs, each
    resource the last layer may run on; without, one unconstrained run (``None``)."""
    if not prob.has_rewarm:
        return [None]
    return [e for e in prob.allowed[-1] if e in allowed]


def _chain_start(prob: _Problem, r, end):
    """(L, D, warm mask) after the first layer of a chain runs on ``r``, the last one on ``end``."""
    host = prob.host
    m = -1 if r == host and end in (None, host) else 0     # frame start: warm only where the outputs were made
    x, e, m = prob.charge(0, r, m)
    return ((prob.tin[r] if r != host else 0.0) + prob.lat[0][r] + x,
            (prob.ein[r] if r != host else 0.0) + prob.en[0][r] + e, m)


def _chain_labels(prob: _Problem, allowed, bound):
    """Pareto-optimal complete chain placements on ``allowed`` resources: [(L, D, placement)], L <= bound."""
    final = []
    for end in _chain_ends(prob, allowed):
        final += _chain_labels_to(prob, allowed, bound, end)
    out = []
    for L, D, lab in _pareto(final):
        p = [0] * len(prob.names)
        node, i = lab, len(p) - 1
        while node is not None:
            p[i] = node[2]
            node, i = node[3], i - 1
        out.append((L, D, p))
    return out


def _chain_labels_to(prob: _Problem, allowed, bound, end):
    """Final Pareto labels [(L, D, label)] of the chains whose last layer runs on ``end`` (None: anywhere).
    A state is (resource, its warm working-set mask); a label is (L, D, resource, parent label)."""
    n = len(prob.names)
    host = prob.host
    states = {}
    for r in prob.allowed[0]:
        if r in allowed:
            L, D, m = _chain_start(prob, r, end)
            if L <= bound:
                states[(r, m)] = [(L, D, r, None)]
    charge = prob.charge
    for i in range(1, n):
        nxt = {}
        for r in prob.allowed[i]:
            if r not in allowed:
                continue
            lat, en = prob.lat[i][r], prob.en[i][r]
            for (q, m), labels in states.items():
                if q == r:
                    x, e, m2 = charge(i, r, m)
                    dl, dd = lat + x, en + e
                else:                                       # a hand-over: r's caches start cold
                    x, e, m2 = charge(i, r, 0)
                    dl, dd = prob.tt[i - 1][q][r] + lat + x, prob.te[i - 1][q][r] + en + e
                cand = nxt.get((r, m2))
                for lab in labels:
                    L = lab[0] + dl
                    if L <= bound:
                        if cand is None:
                            cand = nxt[(r, m2)] = []
                        cand.append((L, lab[1] + dd, r, lab))
        states = {key: _pareto(c) for key, c in nxt.items()}
        if not states:
            return []
    final = []
    for (q, _), labels in states.items():
        if end is not None and q != end:
            continue
        for lab in labels:
            L = lab[0] + prob.tt[n - 1][q][host]
            D = lab[1] + prob.te[n - 1][q][host] if q != host else lab[1]
            if L <= bound:
                final.append((L, D, lab))
    return final


def _fastest_chain(prob: _Problem) -> list:
    """The least-latency chain placement (ties: less dynamic energy): one label per state suffices."""
    n, host = len(prob.names), prob.host
    best_final = None
    for end in _chain_ends(prob, range(len(prob.res))):
        best = {}
        for r in prob.allowed[0]:
            L, D, m = _chain_start(prob, r, end)
            best[(r, m)] = (L, D, [r])
        for i in range(1, n):
            nxt = {}
            for r in prob.allowed[i]:
                for (q, m), (L, D, p) in best.items():
                    if q == r:
                        x, e, m2 = prob.charge(i, r, m)
                        o = (L + prob.lat[i][r] + x, D + prob.en[i][r] + e, p)
                    else:
                        x, e, m2 = prob.charge(i, r, 0)
                        o = (L + prob.tt[i - 1][q][r] + prob.lat[i][r] + x,
                             D + prob.te[i - 1][q][r] + prob.en[i][r] + e, p)
                    if (r, m2) not in nxt or o[:2] < nxt[(r, m2)][:2]:
                        nxt[(r, m2)] = o
            best = {key: (L, D, p + [key[0]]) for key, (L, D, p) in nxt.items()}
        for (q, _), (L, D, p) in best.items():
            if end is not None and q != end:
                continue
            o = (L + prob.tt[n - 1][q][host], D + (prob.te[n - 1][q][host] if q != host else 0.0), p)
            if best_final is None or o[:2] < best_final[:2]:
                best_final = o
    return best_final[2]


def _schedule_chain(prob: _Problem, obj: _Objective) -> Schedule:
    best = None
    for allowed in _gate_subsets(prob):
        idle = prob.idle_power(allowed)
        aL, aD, c = obj.coefficients(idle)
        for L, D, p in _chain_labels(prob, allowed, obj.deadline):
            cost = aL * L + aD * D + c
            if best is None or (cost, L) < best[:2]:
                best = (cost, L, p)
    if best is None:
        p = _fastest_chain(prob)
        L, _ = prob.simulate(p)
        return _result(prob, obj, p, "dp-chain", feasible=False,
                       note=f"no placement meets the {obj.deadline * 1e3:.3f} ms deadline; "
                            f"the best achievable latency is {L * 1e3:.3f} ms")
    return _result(prob, obj, best[2], "dp-chain")


def schedule_chain(table: CostTable, deadline_s: float, weights=None, *, period_s=None) -> Schedule:
    """The optimal placement of a chain (exact; raises ScheduleError if the table is not a chain)."""
    deadline_s, period_s = _check_deadline(deadline_s, period_s)
    prob = _Problem(table)
    if not prob.is_chain:
        raise ScheduleError(f"{table.graph_name} is not a chain: use schedule_dag")
    return _schedule_chain(prob, _Objective(prob, deadline_s, period_s, weights))


# ---------------------------------------------------------------------------------------------------------
# Branching graphs: HEFT-style list scheduling + local moves


_RESTARTS = 3
"""Extra local searches, from the fastest candidates, when the search from the best one ends infeasible."""
_PRICES = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0, math.inf)


def _price_scale(prob: _Problem) -> float:
    """Seconds per joule that make a price of 1 weigh the all-software latency and energy equally."""
    L, D = prob.simulate(_software_placement(prob))
    return L / D if D > 0 else 1.0


def _heft(prob: _Problem, allowed, price):
    """HEFT's upward-rank order; each layer goes where ``finish + price * energy`` is least (ties: EFT).
    A hand-over cost delays the layer's finish (its start is offset by the re-warm); the frame is assumed
    to start with the host warm (the outputs end there)."""
    n, k, host = len(prob.names), len(prob.res), prob.host
    lat, en, tt, te, preds = prob.lat, prob.en, prob.tt, prob.te, prob.preds
    by_energy = math.isinf(price)
    p = [None] * n
    fin = [0.0] * n
    free = [0.0] * k
    warm = [0] * k
    warm[host] = -1
    moved = set()
    for i in prob.order:
        best = None
        choices = [r for r in prob.allowed[i] if r in allowed] or prob.allowed[i]
        for r in choices:
            ready, energy = 0.0, en[i][r]
            handed = False
            if prob.reads_input[i] and r != host:
                handed = True
                ready = prob.tin[r]
                if (-1, r) not in moved:
                    energy += prob.ein[r]
            for j in preds[i]:
                q = p[j]
                if q == r:
                    t = fin[j]
                else:
                    handed = True
                    t = fin[j] + tt[j][q][r]
                    if (j, r) not in moved:
                        energy += te[j][q][r]
                if t > ready:
                    ready = t
            x, e, m = prob.charge(i, r, 0 if handed else warm[r])
            f = (free[r] if free[r] > ready else ready) + x + lat[i][r]
            energy += e
            f_out = f
            if not prob.succs[i] and r != host:
                f_out, energy = f + tt[i][r][host], energy + te[i][r][host]
            key = (energy, f_out) if by_energy else (f_out + price * energy, energy)
            if best is None or key < best[0]:
                best = (key, r, f, m)
        _, r, f, warm[r] = best
        p[i], fin[i], free[r] = r, f, f
        if prob.reads_input[i] and r != host:
            moved.add((-1, r))
        for j in preds[i]:
            if p[j] != r:
                moved.add((j, r))
    return p


def _heft_sweep(prob: _Problem) -> list:
    """HEFT placements over the energy prices and the sets of powered resources (one run where only one
    resource is allowed: the price cannot change anything there)."""
    scale = _price_scale(prob)
    out = []
    for allowed in _gate_subsets(prob):
        prices = _PRICES if len(allowed) > 1 else (0.0,)
        out += [_heft(prob, set(allowed), price * scale) for price in prices]
    return out


def _rank_key(score):
    """Feasible before infeasible; then least cost (feasible) or least latency (infeasible)."""
    feasible, cost, L, _ = score
    return (0, cost, L) if feasible else (1, L, cost)


def _local_search(prob: _Problem, obj: _Objective, p, passes=3, window=3):
    """Single-layer moves while they improve :func:`_rank_key`; when none does, moves of two layers at most
    ``window`` apart in the dispatch order (with hand-over costs, moving one layer of a pair adds a
    hand-over the pair move avoids)."""
    key = _rank_key
    best = key(obj.score(p))
    order = prob.order
    for _ in range(passes):
        improved = False
        for i in range(len(p)):
            keep = p[i]
            for r in prob.allowed[i]:
                if r == keep:
                    continue
                p[i] = r
                k = key(obj.score(p))
                if k < best:
                    best, keep, improved = k, r, True
            p[i] = keep
        if not improved:
            for a, i in enumerate(order):
                for j in order[a + 1:a + 1 + window]:
                    keep = p[i], p[j]
                    for ri in prob.allowed[i]:
                        for rj in prob.allowed[j]:
                            if ri == keep[0] or rj == keep[1]:
                                continue
                            p[i], p[j] = ri, rj
                            k = key(obj.score(p))
                            if k < best:
                                best, keep, improved = k, (ri, rj), True
                    p[i], p[j] = keep
        if not improved:
            break
    return p


def _schedule_dag(prob: _Problem, obj: _Objective, local=True) -> Schedule:
    cands = [_baseline_ids(prob, name) for name in BASELINES] + _heft_sweep(prob)
    scored = []
    seen = set()
    for p in cands:
        t = tuple(p)
        if t in seen:
            continue
        seen.add(t)
        scored.append((obj.score(p), p))
    # Local moves from the best candidate; when that ends infeasible, from the next fastest ones too (they
    # find feasible placements under tight deadlines the former misses).
    best = min(scored, key=lambda sp: _rank_key(sp[0]))[1]
    p = _local_search(prob, obj, list(best)) if local else best
    if local and not obj.score(p)[0]:
        by_speed = [q for _, q in sorted(scored, key=lambda sp: (sp[0][2], sp[0][1])) if q is not best]
        for q in by_speed[:_RESTARTS]:
            p = min(p, _local_search(prob, obj, list(q)), key=lambda q: _rank_key(obj.score(q)))
            if obj.score(p)[0]:
                break
    ok, _, L, _ = obj.score(p)
    note = "" if ok else (f"no placement found meets the {obj.deadline * 1e3:.3f} ms deadline; the best "
                          f"achievable latency found is {L * 1e3:.3f} ms")
    return _result(prob, obj, p, "heft", feasible=ok, note=note)


def schedule_dag(table: CostTable, deadline_s: float, weights=None, *, period_s=None, local=True) -> Schedule:
    """List scheduling for any graph (a heuristic; see the tests for its gap to brute force)."""
    deadline_s, period_s = _check_deadline(deadline_s, period_s)
    prob = _Problem(table)
    return _schedule_dag(prob, _Objective(prob, deadline_s, period_s, weights), local=local)


def schedule(table: CostTable, deadline_s: float, weights=None, *, period_s=None) -> Schedule:
    """Our scheduler: the exact DP for chains, HEFT-style list scheduling for branching graphs."""
    deadline_s, period_s = _check_deadline(deadline_s, period_s)
    prob = _Problem(table)
    obj = _Objective(prob, deadline_s, period_s, weights)
    return _schedule_chain(prob, obj) if prob.is_chain else _schedule_dag(prob, obj)


def brute_force(table: CostTable, deadline_s: float, weights=None, *, period_s=None) -> Schedule:
    """Every placement evaluated (small tables only): the optimum of the timing model."""
    deadline_s, period_s = _check_deadline(deadline_s, period_s)
    prob = _Problem(table)
    total = math.prod(len(a) for a in prob.allowed)
    if total > _BRUTE_FORCE_LIMIT:
        raise ScheduleError(f"brute force over {total} placements is too many (limit {_BRUTE_FORCE_LIMIT})")
    obj = _Objective(prob, deadline_s, period_s, weights)
    best = fastest = None
    for p in itertools.product(*prob.allowed):
        ok, cost, L, _ = obj.score(p)
        if ok and (best is None or (cost, L) < best[:2]):
            best = (cost, L, list(p))
        if fastest is None or (L, cost) < fastest[:2]:
            fastest = (L, cost, list(p))
    if best is None:
        return _result(prob, obj, fastest[2], "brute-force", feasible=False,
                       note=f"no placement meets the deadline; the best achievable latency is {fastest[0] * 1e3:.3f} ms")
    return _result(prob, obj, best[2], "brute-force")


# ---------------------------------------------------------------------------------------------------------
# Baselines


def _accel(prob: _Problem):
    acc = [r for r, name in enumerate(prob.res) if prob.table.resources[name].kind == "accel"]
    return acc[0] if acc else None


def _baseline_ids(prob: _Problem, name) -> list:
    n = len(prob.names)
    sw = _software_placement(prob)
    acc = _accel(prob)
    if name == "all-software":
        return sw
    if name in ("all-accelerator", "delegate-all-supported"):
        # Every layer the accelerator supports goes there; the rest fall back to the host. (ONNX Runtime's
        # execution providers claim all supported nodes in the same way, so the two coincide in placement.)
        return [acc if acc is not None and prob.lat[i][acc] is not None else sw[i] for i in range(n)]
    if name == "greedy-fastest":
        return [min(prob.allowed[i], key=lambda r: (prob.lat[i][r], r)) for i in range(n)]
    if name == "largest-partition":
        # TFLite delegate style: only the largest connected group of accelerator-supported layers is
        # delegated (one partition), everything else runs on the host.
        if acc is None:
            return sw
        parent = list(range(n))

        def find(a):
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a
        ok = [prob.lat[i][acc] is not None for i in range(n)]
        for i in range(n):
            for j in prob.preds[i]:
                if ok[i] and ok[j]:
                    parent[find(i)] = find(j)
        groups = {}
        for i in range(n):
            if ok[i]:
                groups.setdefault(find(i), []).append(i)
        if not groups:
            return sw
        big = max(groups.values(), key=lambda g: (len(g), -g[0]))
        p = list(sw)
        for i in big:
            p[i] = acc
        return p
    raise ScheduleError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")


def baseline_placement(table: CostTable, name: str) -> dict:
    prob = _Problem(table)
    return {prob.names[i]: prob.res[r] for i, r in enumerate(_baseline_ids(prob, name))}


def baselines(table: CostTable, deadline_s: float, weights=None, *, period_s=None) -> dict:
    """{baseline name: Schedule} for every baseline of :data:`BASELINES`."""
    deadline_s, period_s = _check_deadline(deadline_s, period_s)
    prob = _Problem(table)
    obj = _Objective(prob, deadline_s, period_s, weights)
    return {name: _result(prob, obj, _baseline_ids(prob, name), name) for name in BASELINES}


def compare(table: CostTable, deadline_s: float, weights=None, *, period_s=None) -> dict:
    """{"ours": our Schedule, baseline name: Schedule, ...} on one table, one objective."""
    deadline_s, period_s = _check_deadline(deadline_s, period_s)
    prob = _Problem(table)
    obj = _Objective(prob, deadline_s, period_s, weights)
    out = {"ours": _schedule_chain(prob, obj) if prob.is_chain else _schedule_dag(prob, obj)}
    for name in BASELINES:
        out[name] = _result(prob, obj, _baseline_ids(prob, name), name)
    return out


def pareto_front(table: CostTable, period_s: float) -> list:
    """Latency/average-power trade-off: [(latency_s, avg_power_w, placement dict)], latency ascending.

    Exact for chains (the DP's complete Pareto labels, for every set of powered resources); for branching
    graphs, the non-dominated points among the list scheduler's energy-price sweep and the baselines.
    """
    _, period_s = _check_deadline(period_s, None)
    prob = _Problem(table)
    points = []
    if prob.is_chain:
        for allowed in _gate_subsets(prob):
            for L, D, p in _chain_labels(prob, allowed, math.inf):
                points.append((L, prob.idle_power(set(p)) + D / period_s, p))
    else:
        cands = [_baseline_ids(prob, name) for name in BASELINES] + _heft_sweep(prob)
        for p in cands:
            L, D = prob.simulate(p)
            points.append((L, prob.idle_power(set(p)) + D / period_s, p))
    front = []
    for L, P, p in _pareto(points):
        front.append((L, P, {prob.names[i]: prob.res[r] for i, r in enumerate(p)}))
    return front
