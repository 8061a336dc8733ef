"""The outer search: bound every legal layout, solve the promising ones, prove the rest.

1. Enumerate the legal layouts (:mod:`placer.search.space`).
2. Tabulate each; discard those whose aggregate memory cannot fit (proven, with
   the numbers) and bound the rest analytically (:func:`lower_bound_ns`).
3. In order of bound, solve each layout's CP-SAT model (hinted with the DP
   split), unless its bound cannot beat the incumbent: then it is pruned and
   the bound recorded.
4. The plan is ``optimal`` only if every layout ended optimal, pruned or
   infeasible; otherwise ``feasible`` with the global gap against the smallest
   bound of anything unresolved. The gap is computed here, never taken from
   CP-SAT's status (which means "within relative_gap_limit").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import TYPE_CHECKING

import numpy as np

from placer.balance.loads import LoadStats
from placer.budget import Budget
from placer.calibration import Calibration, active_calibration, use_calibration
from placer.cluster import ClusterSpec
from placer.collectives import use_engine
from placer.config import SolveConfig
from placer.evaluate import Constraint, evaluate
from placer.exceptions import InvalidInputError, SolverError
from placer.gap import minimise_gap, minimise_status
from placer.layout import Layout
from placer.ledger import ExpertMap
from placer.limits import check_scale
from placer.model import ModelSpec
from placer.plan import (
    Certificate,
    ObjectiveRecord,
    Plan,
    PlanInputs,
    PlanLayout,
    SearchEntry,
    SearchRecord,
    SolverInfo,
    digest,
)
from placer.rules import get_profile
from placer.search.heuristic import best_split
from placer.search.space import LayoutSpace, enumerate_layouts
from placer.search.tables import (
    TIME_SCALE,
    LayoutTables,
    add_costs,
    balanced_counts,
    build_tables,
    lower_bound_ns,
    memory_by_rank,
    memory_lower_bound,
    objective_ns,
)
from placer.workload import Workload

if TYPE_CHECKING:
    from ortools.sat.python import cp_model

log = logging.getLogger("placer")

#: Share of the time left that one layout's solve may take when others wait (the rest keep
#: a chance), and the least it is given.
LAYOUT_SHARE = 1 / 3
MIN_LAYOUT_S = 1.0

#: Called after each layout: (layouts done, total, incumbent ns or None, global bound ns).
ProgressFn = Callable[[int, int, int | None, int | None], None]


@dataclass
class _Candidate:
    layout: Layout
    tables: LayoutTables
    bound: int
    entry: dict[str, object] = field(default_factory=dict)


@dataclass
class _Incumbent:
    value: int  # ns
    gpus: int
    peak: int
    cand: _Candidate
    split: tuple[int, ...]
    counts: np.ndarray

    def key(self, objective: str) -> tuple[int, int, int]:
        if objective == "gpus":
            return (self.gpus, self.value, self.peak)
        return (self.value, self.gpus, self.peak)


def expert_map_from_counts(tables: LayoutTables, counts: np.ndarray) -> ExpertMap:
    """Fill each rank's slots with logical experts contiguously (slot p holds p % E)."""
    out: ExpertMap = {}
    for i, slots in enumerate(tables.slots):
        if slots == 0:
            continue
        experts = int(tables.experts[i])
        ranks = []
        start = 0
        for r in range(tables.layout.ep):
            n = int(counts[i, r])
            ranks.append(tuple(p % experts for p in range(start, start + n)))
            start += n
        out[i] = tuple(ranks)
    return out


def _layout_entry(
    lay: Layout,
    status: str,
    reason: str = "",
    bound: int | None = None,
    value: int | None = None,
    solver_bound: int | None = None,
) -> SearchEntry:
    """The search record of one layout."""
    return SearchEntry(
        layout=lay.describe(),
        tp=lay.tp,
        pp=lay.pp,
        ep=lay.ep,
        etp=lay.expert_tp,
        dp_attn=lay.dp_attn,
        gpus=lay.gpus,
        status=status,
        bound_units=bound,
        value_units=value,
        solver_bound_units=solver_bound,
        reason=reason,
    )


def _entry(
    c: _Candidate,
    status: str,
    reason: str = "",
    value: int | None = None,
    solver_bound: int | None = None,
) -> SearchEntry:
    """The search record of a tabulated candidate, with its analytic bound."""
    return _layout_entry(c.layout, status, reason, c.bound, value, solver_bound)


def _solver(config: SolveConfig, budget: Budget, seconds: float) -> cp_model.CpSolver:
    """A CP-SAT solver for ``seconds`` of ``budget`` (deterministic seconds in deterministic
    mode, with the budget's wall clock as the hard stop; see placer/budget.py)."""
    from ortools.sat.python import cp_model  # here: a run stopped before CP-SAT never loads it

    solver = cp_model.CpSolver()
    p = solver.parameters
    # placer handles Ctrl-C itself (see _interruptible_solve).
    p.catch_sigint_signal = False
    p.random_seed = config.seed
    p.relative_gap_limit = config.relative_gap_limit
    # One worker with a fixed seed is CP-SAT's reproducible mode.
    p.num_workers = 1 if config.deterministic else config.workers
    budget.limit_cpsat(p, seconds)
    for key, value in config.extra_params.items():
        try:
            setattr(p, key, value)
        except (AttributeError, TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"not a CP-SAT parameter or wrong type: {exc}", field=f"extra_params.{key}"
            ) from None
    return solver


def _interruptible_solve(solver: cp_model.CpSolver, model: cp_model.CpModel) -> int:
    """``solver.solve(model)`` in a worker thread, so Ctrl-C reaches Python at once: the
    search is stopped and KeyboardInterrupt re-raised for the caller to keep its best plan."""
    result: dict[str, int] = {}

    def run() -> None:
        result["status"] = int(solver.solve(model))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.05)
    except KeyboardInterrupt:
        solver.stop_search()
        worker.join()
        raise
    return result["status"]


def solve_layout(
    t: LayoutTables, objective: str, config: SolveConfig, budget: Budget, seconds: float
) -> tuple[str, tuple[int, ...] | None, np.ndarray | None, int | None, int | None]:
    """Solve one layout within ``seconds`` of ``budget`` (charged with what CP-SAT used):
    (status, split, counts, value ns, bound ns)."""
    # OR-Tools (and the pandas it imports) load on the first solve, not at start-up: a run
    # whose time is spent before CP-SAT does not pay for them (docs/certificate.md, "Time").
    from ortools.sat.python import cp_model

    from placer.search import cpsat

    counts0 = balanced_counts(t)
    split0 = best_split(t, counts0)
    model, v = cpsat.build_model(t, "latency" if objective == "latency" else "throughput")
    cpsat.enforce_all(model, v, explain=False)
    if split0 is not None:
        cpsat.add_hint(model, v, t, split0, counts0, objective)
    invalid = model.validate()
    if invalid:
        raise SolverError(f"CP-SAT rejected the placement model: {invalid}")
    solver = _solver(config, budget, seconds)
    status = _interruptible_solve(solver, model)
    budget.charge(solver.deterministic_time)
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        split, counts = cpsat.extract(solver, v, t)
        value = objective_ns(t, split, counts, objective)
        bound = int(np.ceil(solver.best_objective_bound - 1e-6))
        return (
            ("optimal" if bound >= value else "feasible"),
            split,
            counts,
            value,
            min(bound, value),
        )
    if status == cp_model.INFEASIBLE:
        return "infeasible", None, None, None, None
    if status == cp_model.MODEL_INVALID:  # pragma: no cover - validate() catches these first
        raise SolverError("CP-SAT reports MODEL_INVALID for the placement model")
    if split0 is not None:
        value = objective_ns(t, split0, counts0, objective)
        return "feasible", split0, counts0, value, None
    return "unresolved", None, None, None, None


def _better(a: _Incumbent, b: _Incumbent | None, objective: str) -> bool:
    return b is None or a.key(objective) < b.key(objective)


def solve(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload | None = None,
    config: SolveConfig | None = None,
    progress: ProgressFn | None = None,
    loads: LoadStats | None = None,
    calibration: Calibration | None = None,
    budget: Budget | None = None,
) -> Plan:
    """:func:`solve_plan` priced with ``calibration`` (default: the one in force, else the
    shipped one), which the plan records and ``verify`` uses, and with the collectives of
    the rules profile's engine (docs/cost-model.md)."""
    profile = (config or SolveConfig()).profile
    with (
        use_calibration(calibration if calibration is not None else active_calibration()),
        use_engine(profile),
    ):
        return solve_plan(model, cluster, workload, config, progress, loads, budget)


def solve_plan(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload | None = None,
    config: SolveConfig | None = None,
    progress: ProgressFn | None = None,
    loads: LoadStats | None = None,
    budget: Budget | None = None,
) -> Plan:
    """Find the best layout and placement of ``model`` on ``cluster``, with a certificate.

    Parameters
    ----------
    model, cluster, workload
        The validated inputs (see :func:`placer.load_model` and friends).
    config
        Objective, rules profile, time limit, seed, workers, determinism.
    progress
        Optional callback after each layout.
    budget
        The time of the call (default: ``config``'s limit and mode on the real clock); tests
        pass one with an injected clock.

    Returns
    -------
    Plan
        Status ``optimal``, ``feasible``, ``infeasible`` or ``unknown``, with the
        certificate. The caller decides what to do with a plan that has none.

    Raises
    ------
    InvalidInputError
        For an unknown rules profile or bad solver parameters.
    """
    workload = workload or Workload()
    config = config or SolveConfig()
    if workload.serving:
        # Latency targets ask the serving question: layout x concurrency x instances.
        from placer.serving.solve import solve_serving

        return solve_serving(model, cluster, workload, config, budget)
    try:
        profile = get_profile(config.profile)
    except KeyError as exc:
        raise InvalidInputError(str(exc.args[0]), field="profile") from None
    check_scale(model, workload)
    budget = budget or Budget(config.time_limit_s, config.deterministic)
    objective = config.objective
    space = enumerate_layouts(model, cluster, profile, config.max_gpus, budget=budget)
    entries: list[SearchEntry] = []
    cands: list[_Candidate] = []
    cache: dict[object, object] = {}
    # Tabulate the likeliest winners first, in case time runs out: many GPUs for speed,
    # few for the gpus objective.
    order = sorted(space.legal, key=lambda lay: lay.gpus if objective == "gpus" else -lay.gpus)
    for n, layout in enumerate(order):
        if budget.expired():
            # Out of time while tabulating: the rest stays unresolved, with no bound.
            entries.extend(
                _layout_entry(
                    late, "unresolved", "time limit reached before this layout was tabulated"
                )
                for late in order[n:]
            )
            break
        # Memory first: a layout that cannot hold the model needs no cost tables.
        t = build_tables(model, cluster, workload, layout, objective, False, cache)
        need, have = memory_lower_bound(t)
        if need > have:
            # No cost tables were built: the layout has no objective bound.
            entries.append(
                _layout_entry(
                    layout,
                    "infeasible",
                    f"memory: the layout's GPUs must hold at least "
                    f"{need / 1e9:.2f} GB in all, they have {have / 1e9:.2f} GB",
                )
            )
            continue
        t = add_costs(t, model, cluster, workload, objective, cache)
        cands.append(_Candidate(layout=layout, tables=t, bound=lower_bound_ns(t, objective)))
    if objective == "gpus":
        cands.sort(key=lambda c: (c.layout.gpus, c.bound, c.layout.describe()))
    else:
        cands.sort(key=lambda c: (c.bound, c.layout.gpus, c.layout.describe()))

    best: _Incumbent | None = None
    interrupted = False
    before = len(entries)  # the loop appends exactly one entry per candidate
    try:
        for k, cand in enumerate(cands):
            if best is not None and _cannot_beat(cand, best, objective):
                reason = (
                    f"bound {cand.bound / TIME_SCALE:.6g} s cannot beat the plan's "
                    f"{best.value / TIME_SCALE:.6g} s"
                    if objective != "gpus" or cand.layout.gpus == best.gpus
                    else f"uses {cand.layout.gpus} GPUs, the plan {best.gpus}"
                )
                entries.append(_entry(cand, "pruned", reason))
            elif budget.expired():
                entries.append(_entry(cand, "unresolved", "time limit reached before solving"))
            else:
                # No single layout may take the whole budget: later ones still need a chance.
                last = k == len(cands) - 1
                seconds = budget.share(1.0 if last else LAYOUT_SHARE, at_least=MIN_LAYOUT_S)
                status, split, counts, value, bound = solve_layout(
                    cand.tables, objective, config, budget, seconds
                )
                if status == "infeasible":
                    entries.append(
                        _entry(cand, "infeasible", "CP-SAT proved no split fits memory")
                    )
                elif split is not None and counts is not None and value is not None:
                    peak = int(memory_by_rank(cand.tables, split, counts).max())
                    inc = _Incumbent(
                        value=value,
                        gpus=cand.layout.gpus,
                        peak=peak,
                        cand=cand,
                        split=split,
                        counts=counts,
                    )
                    if _better(inc, best, objective):
                        best = inc
                    entries.append(_entry(cand, status, value=value, solver_bound=bound))
                else:
                    entries.append(_entry(cand, "unresolved", "no solution within the time limit"))
            if progress is not None:
                # Candidates come in bound order: the next one's bound is the best still open.
                open_bound = cands[k + 1].bound if k + 1 < len(cands) else None
                if best is not None and objective != "gpus":
                    open_bound = best.value if open_bound is None else min(open_bound, best.value)
                progress(k + 1, len(cands), best.value if best else None, open_bound)
    except KeyboardInterrupt:
        # Ctrl-C: keep the best plan so far; what was not reached stays unresolved.
        interrupted = True
        for cand in cands[len(entries) - before :]:
            entries.append(_entry(cand, "unresolved", "interrupted"))
    plan = _assemble(model, cluster, workload, config, space, entries, best, budget, interrupted)
    return plan if loads is None else with_loads(plan, model, cluster, workload, loads)


def loads_by_layer(
    model: ModelSpec, loads: LoadStats, source: str | None = None
) -> dict[int, np.ndarray]:
    """The loads keyed by model layer, checked against the model's MoE layers and experts
    (errors name ``source``, the load file)."""
    where = source or loads.source
    out: dict[int, np.ndarray] = {}
    arr = loads.array()
    for i, layer in enumerate(loads.layers):
        if layer not in model.moe_layers:
            raise InvalidInputError(
                f"layer {layer} is not an MoE layer of {model.name}",
                source=where,
                field=f"layers.{i}",
            )
        if arr.shape[1] != model.experts_in_layer(layer):
            raise InvalidInputError(
                f"{arr.shape[1]} experts per layer, the model has {model.experts_in_layer(layer)}",
                source=where,
                field=f"load.{i}",
            )
        out[layer] = arr[i]
    return out


def with_loads(
    plan: Plan, model: ModelSpec, cluster: ClusterSpec, workload: Workload, loads: LoadStats
) -> Plan:
    """Place each loaded layer's experts on the plan's EP ranks by load (``placer balance``
    with the ranks as GPUs) and estimate with the loads. The layout search itself assumes
    uniform routing; slot counts per rank, and so memory, are unchanged."""
    by_layer = loads_by_layer(model, loads)
    if plan.layout is None:
        return plan
    from placer.balance.solve import balance_layer
    from placer.cost import estimate

    lay = plan.layout
    emap = dict(plan.expert_map)
    for layer, w in by_layer.items():
        slots = model.experts_in_layer(layer) + lay.redundant_experts
        if lay.ep == 1 or slots % lay.ep:
            continue  # nothing to choose with one rank; uneven ranks keep the plan's map
        row, _, _ = balance_layer(w, lay.ep, 1, slots, None, "global", layer, use_eplb=False)
        per = slots // lay.ep
        emap[layer] = tuple(
            tuple(int(e) for e in row[r * per : (r + 1) * per]) for r in range(lay.ep)
        )
    layout = lay.to_layout()
    est = estimate(model, cluster, workload, layout, emap, by_layer)
    stored = {k: tuple(float(x) for x in v) for k, v in by_layer.items()}
    hashes = dict(plan.inputs.hashes)
    hashes["loads"] = digest({str(k): list(v) for k, v in stored.items()})
    inputs = plan.inputs.model_copy(update={"loads": stored, "hashes": hashes})
    return plan.model_copy(update={"expert_map": emap, "estimates": est, "inputs": inputs})


def _cannot_beat(cand: _Candidate, best: _Incumbent, objective: str) -> bool:
    if objective == "gpus":
        return cand.layout.gpus > best.gpus or (
            cand.layout.gpus == best.gpus and cand.bound >= best.value
        )
    return cand.bound >= best.value


def _global_bound(
    entries: list[SearchEntry], best: _Incumbent | None, objective: str
) -> int | None:
    """Smallest objective any layout not yet proven could still reach."""
    if objective == "gpus":
        open_gpus = [e.gpus for e in entries if e.status in ("unresolved",)]
        if best is None:
            return min(open_gpus) if open_gpus else None
        return min([best.gpus, *open_gpus])
    bounds = []
    for e in entries:
        if e.status == "unresolved":
            # A layout never tabulated has no bound: nothing is proven about it.
            bounds.append(e.bound_units if e.bound_units is not None else 0)
        elif e.status == "feasible":
            b = e.solver_bound_units if e.solver_bound_units is not None else e.bound_units
            if b is not None:
                bounds.append(max(b, e.bound_units or 0))
    if best is not None:
        bounds.append(best.value)
    return min(bounds) if bounds else None


def solver_record(
    config: SolveConfig, objective: str, budget: Budget, interrupted: bool = False
) -> SolverInfo:
    """What a plan records about its search: seed, workers, limits, versions, the time used
    and whether the wall clock stopped a deterministic run."""
    return SolverInfo(
        seed=config.seed,
        workers=1 if config.deterministic else config.workers,
        deterministic=config.deterministic,
        time_limit_s=config.time_limit_s,
        relative_gap_limit=config.relative_gap_limit,
        profile=config.profile,
        objective=objective,
        ortools_version=version("ortools"),
        placer_version=version("placer"),
        wall_time_s=round(budget.elapsed(), 3),
        deterministic_time_s=round(budget.deterministic_used, 3),
        wall_clock_stop=budget.wall_clock_stop,
        extra_params=dict(config.extra_params),
        interrupted=interrupted,
        max_gpus=config.max_gpus,
    )


def _assemble(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    config: SolveConfig,
    space: LayoutSpace,
    entries: list[SearchEntry],
    best: _Incumbent | None,
    budget: Budget,
    interrupted: bool = False,
) -> Plan:
    objective = config.objective
    entries.sort(key=lambda e: (e.gpus, e.tp, e.pp, e.ep, e.etp, e.dp_attn))
    count = {
        s: sum(1 for e in entries if e.status == s)
        for s in ("optimal", "feasible", "pruned", "infeasible", "unresolved")
    }
    record = SearchRecord(
        candidates=space.candidates,
        legal=len(space.legal),
        rejected_by_rule=dict(sorted(space.rejected.items())),
        solved=count["optimal"]
        + count["feasible"]
        + sum(1 for e in entries if e.status == "infeasible" and e.reason.startswith("CP-SAT")),
        pruned=count["pruned"],
        infeasible=count["infeasible"],
        unresolved=count["unresolved"],
        entries=tuple(entries),
        complete=space.complete,
    )
    solver_info = solver_record(config, objective, budget, interrupted)
    inputs = plan_inputs(model, cluster, workload)
    # Layouts never enumerated (time ran out) are unknown: no bound can be claimed.
    bound = (
        _global_bound(entries, best, objective)
        if space.complete
        else (0 if objective != "gpus" else 1)
    )
    unit = "GPUs" if objective == "gpus" else "s"
    if best is None:
        # Infeasible only with a proof for every layout: a search the time limit cut short
        # (layouts never enumerated or never solved) proves nothing, and is "unknown".
        proven = space.complete and all(e.status == "infeasible" for e in entries)
        # Explaining gets what is left of the time limit.
        why = None
        if proven:
            from placer.search.fixes import explain_infeasible  # loads OR-Tools

            why = explain_infeasible(model, cluster, workload, config, entries, budget)
        return Plan(
            status="infeasible" if proven else "unknown",
            layout=None,
            objective=ObjectiveRecord(
                name=objective,
                unit=unit,
                value=None,
                bound=None if bound is None else _scale(bound, objective),
                gap=None,
                value_units=None,
                bound_units=bound,
            ),
            gpus=(),
            expert_map={},
            estimates=None,
            certificate=Certificate(constraints=(), search=record, solver=solver_info),
            infeasibility=why,
            inputs=inputs,
        )
    value_units = best.gpus if objective == "gpus" else best.value
    assert bound is not None
    gap = minimise_gap(value_units, bound)
    status = minimise_status(value_units, bound)
    lay = best.cand.layout.model_copy(update={"layers_per_stage": best.split})
    emap = expert_map_from_counts(best.cand.tables, best.counts)
    ev = evaluate(model, cluster, workload, lay, get_profile(config.profile), emap)
    constraints = list(ev.constraints) + placement_constraints(best.cand.tables, best.counts)
    return Plan(
        status=status,
        layout=PlanLayout.of(lay, best.split),
        objective=ObjectiveRecord(
            name=objective,
            unit=unit,
            value=_scale(value_units, objective),
            bound=_scale(bound, objective),
            gap=gap,
            value_units=value_units,
            bound_units=bound,
        ),
        gpus=ev.gpus,
        expert_map=emap,
        estimates=ev.estimates,
        certificate=Certificate(constraints=tuple(constraints), search=record, solver=solver_info),
        inputs=inputs,
    )


def _scale(units: int, objective: str) -> float:
    return float(units) if objective == "gpus" else units / TIME_SCALE


def placement_constraints(t: LayoutTables, counts: np.ndarray) -> list[Constraint]:
    """Slot and coverage constraints of a placement, one instance per MoE layer."""
    out = []
    for i, slots in enumerate(t.slots):
        if slots == 0:
            continue
        placed = int(counts[i].sum())
        out.append(
            Constraint(
                name=f"expert_slots[layer {i}]",
                value=placed,
                limit=int(slots),
                holds=placed == slots,
                detail=f"{placed} slots placed of {int(slots)}",
            )
        )
        most = int(counts[i].max())
        out.append(
            Constraint(
                name=f"one_copy_per_gpu[layer {i}]",
                value=most,
                limit=int(t.experts[i]),
                holds=most <= t.experts[i],
                detail="no rank holds more slots than there are experts",
            )
        )
    return out


def plan_inputs(model: ModelSpec, cluster: ClusterSpec, workload: Workload) -> PlanInputs:
    """Copies of the inputs in placer's own formats, with their hashes."""
    m = model.model_dump(mode="json")
    m["format"] = "placer"
    c = cluster.model_dump(mode="json")
    w = workload.model_dump(mode="json")
    cal = active_calibration().model_dump(mode="json")
    return PlanInputs(
        model=m,
        cluster=c,
        workload=w,
        calibration=cal,
        hashes={
            "model": digest(m),
            "cluster": digest(c),
            "workload": digest(w),
            "calibration": digest(cal),
        },
        sources={"model": model.source, "cluster": cluster.source},
    )
