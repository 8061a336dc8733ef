"""CP-SAT placement model of one layout (the CP-SAT Primer's structure).

Decision variables (:class:`PlacementVars`):

- ``ge[l, s]``: layer ``l`` sits on stage ``s`` or later (monotone in ``l``: stages
  are contiguous); ``x[l, s] = ge[l, s] - ge[l, s + 1]`` places the layer;
- ``n[l, r]``: expert slots of layer ``l`` on EP rank ``r``. Experts of a layer are
  identical in size and, without load statistics, in load, so which logical
  expert fills a slot does not change any constraint or the objective: the model
  decides counts, and the plan fills slots with experts contiguously. This is an
  exact symmetry reduction, not an approximation. The exception is group-limited
  routing across nodes, where the fill decides which groups share a node: there the
  model optimises over contiguous fills of its counts (priced below; the limit is
  stated in docs/cost-model.md);
- ``q[l, s, r] = n[l, r]`` if layer ``l`` is on stage ``s``, else 0 (memory);
- ``v[l, s]``: routed-expert time of layer ``l`` on stage ``s`` (busiest rank);
- ``a[l, s]``: the layer's all-to-all on stage ``s`` where it depends on the placement
  (group-limited routing across nodes, placer/locality.py): node ``k``'s slots are
  ``[A_k, A_{k+1})`` with ``A_k`` the prefix sum of ``n[l, r]`` over the ranks before
  it; with slots filled contiguously, group ``g`` has a slot on node ``k`` exactly when
  one of its slot intervals meets that range (reified comparisons of ``A_k``); ``m_k``
  counts those groups and a table lookup prices each node (``add_element``);
- ``t[s]``: stage time; ``T``: the objective (pipelined cycle or latency).

Each constraint family is one function with a named enforcement literal, so an
infeasible layout can be explained from CP-SAT's assumptions core.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from ortools.sat.python import cp_model

from placer.exceptions import InvalidInputError
from placer.search.placement_locality import add_locality
from placer.search.tables import LayoutTables, locality_ns, objective_ns, stage_times

#: CP-SAT's integer domains and the sums it checks must stay inside 2^62 (its overflow check
#: on linear constraints); the objective is at most pp x the horizon.
MAX_DOMAIN = 2**62


@dataclass
class PlacementVars:
    """Variable containers of one layout's model."""

    ge: dict[tuple[int, int], cp_model.IntVar] = field(default_factory=dict)
    x: dict[tuple[int, int], cp_model.IntVar] = field(default_factory=dict)
    n: dict[tuple[int, int], cp_model.IntVar] = field(default_factory=dict)
    q: dict[tuple[int, int, int], cp_model.IntVar] = field(default_factory=dict)
    v: dict[tuple[int, int], cp_model.IntVar] = field(default_factory=dict)
    t: dict[int, cp_model.IntVar] = field(default_factory=dict)
    objective: cp_model.IntVar | None = None
    families: dict[str, cp_model.IntVar] = field(default_factory=dict)
    #: ``a[l, s]``: the layer's placement-dependent all-to-all when it sits on stage ``s``.
    a2a: dict[tuple[int, int], cp_model.IntVar] = field(default_factory=dict)
    #: Every locality helper variable with the function of the slot counts it equals (the
    #: complete hint evaluates them).
    derived: list[tuple[cp_model.IntVar, Callable[[np.ndarray], int]]] = field(
        default_factory=list
    )

    def family(self, model: cp_model.CpModel, name: str) -> cp_model.IntVar:
        """The enforcement literal of a constraint family (created on first use)."""
        if name not in self.families:
            self.families[name] = model.new_bool_var(name)
        return self.families[name]


def _a2a_horizon(t: LayoutTables) -> int:
    """The most the placement-dependent all-to-all can add to a step (every layer at its
    worst stage and worst spread)."""
    loc = t.locality
    if loc is None:
        return 0
    worst = np.where(loc.placed, np.maximum(np.maximum(loc.intra, loc.inter + loc.cap), 0), 0)
    return int(sum(int(row.max()) for row in worst))


def create_variables(model: cp_model.CpModel, t: LayoutTables) -> PlacementVars:
    """All decision variables with tight domains."""
    v = PlacementVars()
    n_layers, pp, ep = len(t.base), t.layout.pp, t.layout.ep
    # Summed as Python integers: an int64 sum of extreme entries would wrap silently.
    horizon = (
        sum(int(x) for x in t.time_layer.flat)
        + sum(int(x) * int(n) for row, n in zip(t.time_slot, t.slots, strict=True) for x in row)
        + sum(int(x) for x in t.handoff)
        + sum(int(x) for x in t.time_last)
        + _a2a_horizon(t)
        + 1
    )
    if horizon * max(pp, 1) > MAX_DOMAIN:
        # CP-SAT would reject the model ("Possible integer overflow"); say why instead.
        raise InvalidInputError(
            f"the step time of {t.layout.describe()} can reach {horizon / 1e9:.3g} s, beyond "
            "what the solver represents; check the hardware's rates and the workload"
        )
    for i in range(n_layers):
        for s in range(pp):
            v.ge[i, s] = model.new_bool_var(f"ge[{i},{s}]")
            v.x[i, s] = model.new_bool_var(f"x[{i},{s}]")
    for i in range(n_layers):
        slots = int(t.slots[i])
        if slots == 0:
            continue
        even = slots % ep == 0
        for r in range(ep):
            # Engines spread a layer's slots so that ranks differ by at most one (vLLM:
            # the first E % EP ranks take one more; SGLang and Megatron need E % EP == 0),
            # so counts are floor or ceil of slots / ep; which ranks take the extra
            # slot is the model's choice.
            lo = slots // ep
            hi = lo if even else lo + 1
            v.n[i, r] = model.new_int_var(lo, hi, f"n[{i},{r}]")
            for s in range(pp):
                v.q[i, s, r] = model.new_int_var(0, hi, f"q[{i},{s},{r}]")
        for s in range(pp):
            top = int(t.time_slot[i, s]) * -(-slots // ep)
            v.v[i, s] = model.new_int_var(0, top, f"v[{i},{s}]")
    for s in range(pp):
        v.t[s] = model.new_int_var(0, horizon, f"t[{s}]")
    v.objective = model.new_int_var(0, horizon * max(pp, 1), "objective")
    return v


def add_contiguous_stages(model: cp_model.CpModel, v: PlacementVars, t: LayoutTables) -> None:
    """Layers fill stages in order, every stage gets at least one layer."""
    lit = v.family(model, "contiguous_stages")
    n_layers, pp = len(t.base), t.layout.pp
    for i in range(n_layers):
        model.add(v.ge[i, 0] == 1).only_enforce_if(lit)
        for s in range(pp):
            nxt = v.ge[i, s + 1] if s + 1 < pp else 0
            model.add(v.x[i, s] == v.ge[i, s] - nxt).only_enforce_if(lit)
            if s + 1 < pp:
                model.add_implication(v.ge[i, s + 1], v.ge[i, s])
            if i > 0:
                model.add(v.ge[i, s] >= v.ge[i - 1, s]).only_enforce_if(lit)
    nonempty = v.family(model, "nonempty_stages")
    model.add(v.ge[0, 0] == 1).only_enforce_if(nonempty)
    for s in range(pp):
        model.add(sum(v.x[i, s] for i in range(n_layers)) >= 1).only_enforce_if(nonempty)


def add_expert_slots(model: cp_model.CpModel, v: PlacementVars, t: LayoutTables) -> None:
    """Every slot of a layer is on some EP rank; a rank holds at most one copy of an expert."""
    lit = v.family(model, "expert_slots")
    ep = t.layout.ep
    for i, slots in enumerate(t.slots):
        if slots == 0:
            continue
        model.add(sum(v.n[i, r] for r in range(ep)) == int(slots)).only_enforce_if(lit)


def add_slot_location(model: cp_model.CpModel, v: PlacementVars, t: LayoutTables) -> None:
    """q[l, s, r] is n[l, r] on the layer's stage and 0 elsewhere (definitional)."""
    for (i, s, r), q in v.q.items():
        model.add(q == v.n[i, r]).only_enforce_if(v.x[i, s])
        model.add(q == 0).only_enforce_if(~v.x[i, s])


def add_memory(model: cp_model.CpModel, v: PlacementVars, t: LayoutTables) -> None:
    """Every GPU's bytes (the ledger's, exactly) fit its usable capacity."""
    n_layers, pp, ep = len(t.base), t.layout.pp, t.layout.ep
    for s in range(pp):
        lit = v.family(model, f"memory[stage {s}]")
        fixed = (
            t.reserve + int(t.act[s]) + (t.first if s == 0 else 0) + (t.last if s == pp - 1 else 0)
        )
        for r in range(ep):
            moe = [i for i in range(n_layers) if t.slots[i]]
            expr = cp_model.LinearExpr.weighted_sum(
                [v.x[i, s] for i in range(n_layers)] + [v.q[i, s, r] for i in moe],
                [int(t.base[i]) for i in range(n_layers)] + [int(t.unit[i]) for i in moe],
            )
            model.add(expr + int(fixed) <= int(t.cap[s, r])).only_enforce_if(lit)


def add_stage_time(
    model: cp_model.CpModel, v: PlacementVars, t: LayoutTables, objective: str
) -> None:
    """Stage times from the cost tables, and the objective: cycle or latency."""
    n_layers, pp, ep = len(t.base), t.layout.pp, t.layout.ep
    for (i, s), var in v.v.items():
        for r in range(ep):
            model.add(var >= int(t.time_slot[i, s]) * v.n[i, r]).only_enforce_if(v.x[i, s])
    for s in range(pp):
        moe = [i for i in range(n_layers) if (i, s) in v.v]
        placed = [v.a2a[i, s] for i in range(n_layers) if (i, s) in v.a2a]
        expr = cp_model.LinearExpr.weighted_sum(
            [v.x[i, s] for i in range(n_layers)] + [v.v[i, s] for i in moe] + placed,
            [int(t.time_layer[i, s]) for i in range(n_layers)] + [1] * (len(moe) + len(placed)),
        )
        extra = int(t.handoff[s]) + (int(t.time_last[s]) if s == pp - 1 else 0)
        model.add(v.t[s] == expr + extra)
    assert v.objective is not None
    model.add(v.objective >= cp_model.LinearExpr.sum([v.t[s] for s in range(pp)]))
    if objective != "latency" and pp > 1:
        for s in range(pp):
            model.add(v.objective >= pp * v.t[s])
    model.minimize(v.objective)


def build_model(t: LayoutTables, objective: str) -> tuple[cp_model.CpModel, PlacementVars]:
    """The full placement model of one layout."""
    model = cp_model.CpModel()
    v = create_variables(model, t)
    add_contiguous_stages(model, v, t)
    add_expert_slots(model, v, t)
    add_slot_location(model, v, t)
    add_memory(model, v, t)
    add_locality(model, v, t)
    add_stage_time(model, v, t, objective)
    return model, v


def add_hint(
    model: cp_model.CpModel,
    v: PlacementVars,
    t: LayoutTables,
    split: tuple[int, ...],
    counts: np.ndarray,
    objective: str,
) -> None:
    """A complete hint: every variable gets the heuristic's value."""
    stage = np.repeat(np.arange(len(split)), split)
    pp = t.layout.pp
    for (i, s), var in v.ge.items():
        model.add_hint(var, int(stage[i] >= s))
    for (i, s), var in v.x.items():
        model.add_hint(var, int(stage[i] == s))
    for (i, r), var in v.n.items():
        model.add_hint(var, int(counts[i, r]))
    for (i, s, r), var in v.q.items():
        model.add_hint(var, int(counts[i, r]) if stage[i] == s else 0)
    for (i, s), var in v.v.items():
        model.add_hint(var, int(t.time_slot[i, s]) * int(counts[i].max()) if stage[i] == s else 0)
    a2a = locality_ns(t, counts)
    for (i, s), var in v.a2a.items():
        model.add_hint(var, int(a2a[i, s]) if stage[i] == s else 0)
    for var, value in v.derived:
        model.add_hint(var, value(counts))
    times = stage_times(t, split, counts)
    for s in range(pp):
        model.add_hint(v.t[s], int(times[s]))
    assert v.objective is not None
    model.add_hint(v.objective, objective_ns(t, split, counts, objective))


def enforce_all(model: cp_model.CpModel, v: PlacementVars, explain: bool) -> None:
    """Switch every family on: as assumptions (to explain) or as fixed literals."""
    lits = list(v.families.values())
    if explain:
        model.add_assumptions(lits)
    else:
        for lit in lits:
            model.add(lit == 1)


def extract(
    solver: cp_model.CpSolver, v: PlacementVars, t: LayoutTables
) -> tuple[tuple[int, ...], np.ndarray]:
    """(layers per stage, slot counts per layer and rank) of the solver's solution."""
    n_layers, pp, ep = len(t.base), t.layout.pp, t.layout.ep
    split = [0] * pp
    for i in range(n_layers):
        for s in range(pp):
            if solver.value(v.x[i, s]):
                split[s] += 1
    counts = np.zeros((n_layers, ep), dtype=np.int64)
    for (i, r), var in v.n.items():
        counts[i, r] = solver.value(var)
    return tuple(split), counts
