"""The plan a search ends with: its search record, objective, bound and gap, certificate and
input copies. Shared by the fixed-batch search (:mod:`placer.search.outer`) and the serving
search."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import version

import numpy as np

from placer.budget import Budget
from placer.calibration import active_calibration
from placer.cluster import ClusterSpec
from placer.config import SolveConfig
from placer.evaluate import evaluate
from placer.gap import minimise_gap, minimise_status, search_bound
from placer.layout import Layout
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
from placer.search.space import LayoutSpace
from placer.search.tables import TIME_SCALE, LayoutTables, contiguous_map, placement_constraints
from placer.topology import ExpertMap
from placer.workload import Workload


@dataclass
class Candidate:
    """A tabulated layout and its analytic bound (ns, or GPUs for the gpus objective)."""

    layout: Layout
    tables: LayoutTables
    bound: int
    entry: dict[str, object] = field(default_factory=dict)


@dataclass
class Incumbent:
    """The best placement found so far."""

    value: int  # ns
    gpus: int
    peak: int
    cand: Candidate
    split: tuple[int, ...]
    counts: np.ndarray

    def key(self, objective: str) -> tuple[int, int, int]:
        """Sort key: smaller is better (fewer GPUs first for the gpus objective)."""
        if objective == "gpus":
            return (self.gpus, self.value, self.peak)
        return (self.value, self.gpus, self.peak)


def expert_map_from_counts(tables: LayoutTables, counts: np.ndarray) -> ExpertMap:
    """Fill each rank's slots with logical experts contiguously (slot p holds p % E)."""
    return contiguous_map(tables, counts)


def layout_entry(
    lay: Layout,
    status: str,
    reason: str = "",
    bound: int | None = None,
    value: int | None = None,
    solver_bound: int | None = None,
) -> SearchEntry:
    """The search record of one layout."""
    return SearchEntry(
        **lay.record_fields(),
        status=status,
        bound_units=bound,
        value_units=value,
        solver_bound_units=solver_bound,
        reason=reason,
    )


def candidate_entry(
    c: Candidate,
    status: str,
    reason: str = "",
    value: int | None = None,
    solver_bound: int | None = None,
) -> SearchEntry:
    """The search record of a tabulated candidate, with its analytic bound."""
    return layout_entry(c.layout, status, reason, c.bound, value, solver_bound)


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


def _search_record(space: LayoutSpace, entries: list[SearchEntry]) -> SearchRecord:
    """Counts by outcome over every layout's entry (sorted by GPUs, then degrees)."""
    entries.sort(key=lambda e: (e.gpus, e.tp, e.pp, e.ep, e.etp, e.dp_attn))
    count = {
        s: sum(1 for e in entries if e.status == s)
        for s in ("optimal", "feasible", "pruned", "infeasible", "unresolved")
    }
    return SearchRecord(
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


def assemble_plan(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    config: SolveConfig,
    space: LayoutSpace,
    entries: list[SearchEntry],
    best: Incumbent | None,
    budget: Budget,
    interrupted: bool = False,
) -> Plan:
    """The plan of a finished search: the best placement with its certificate, or none with
    the proof (or the lack of one) that nothing fits."""
    objective = config.objective
    record = _search_record(space, entries)
    solver_info = solver_record(config, objective, budget, interrupted)
    inputs = plan_inputs(model, cluster, workload)
    # Layouts never enumerated (time ran out) are unknown: no bound can be claimed.
    bound = (
        search_bound(
            entries,
            objective,
            best.value if best is not None else None,
            best.gpus if best is not None else None,
        )
        if space.complete
        else (0 if objective != "gpus" else 1)
    )
    certificate = Certificate(constraints=(), search=record, solver=solver_info)
    if best is None:
        # Infeasible only with a proof for every layout: a search the time limit cut short
        # (layouts never enumerated or never solved) proves nothing, and is "unknown".
        proven = space.complete and all(e.status == "infeasible" for e in entries)
        # Explaining gets what is left of the time limit.
        why = None
        if proven:
            # Loads OR-Tools: only a proven-infeasible plan pays for it (docs/certificate.md).
            from placer.search.fixes import explain_infeasible

            why = explain_infeasible(model, cluster, workload, config, entries, budget)
        return Plan(
            status="infeasible" if proven else "unknown",
            layout=None,
            objective=_objective_record(objective, None, bound),
            gpus=(),
            expert_map={},
            estimates=None,
            certificate=certificate,
            infeasibility=why,
            inputs=inputs,
        )
    assert bound is not None
    return _best_plan(model, cluster, workload, config, best, bound, certificate, inputs)


def _objective_record(
    objective: str, value_units: int | None, bound: int | None
) -> ObjectiveRecord:
    """The objective in its unit (s, or GPUs), with bound and gap when both are known."""
    gap = None
    if value_units is not None and bound is not None:
        gap = minimise_gap(value_units, bound)  # the rule of placer.gap, shared with verify
    return ObjectiveRecord(
        name=objective,
        unit="GPUs" if objective == "gpus" else "s",
        value=None if value_units is None else _scale(value_units, objective),
        bound=None if bound is None else _scale(bound, objective),
        gap=gap,
        value_units=value_units,
        bound_units=bound,
    )


def _best_plan(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    config: SolveConfig,
    best: Incumbent,
    bound: int,
    certificate: Certificate,
    inputs: PlanInputs,
) -> Plan:
    """The plan of the incumbent, evaluated again from scratch for its certificate."""
    objective = config.objective
    value_units = best.gpus if objective == "gpus" else best.value
    status = minimise_status(value_units, bound)
    lay = best.cand.layout.model_copy(update={"layers_per_stage": best.split})
    emap = expert_map_from_counts(best.cand.tables, best.counts)
    ev = evaluate(model, cluster, workload, lay, get_profile(config.profile), emap)
    constraints = list(ev.constraints) + placement_constraints(best.cand.tables, best.counts)
    return Plan(
        status=status,
        layout=PlanLayout.of(lay, best.split),
        objective=_objective_record(objective, value_units, bound),
        gpus=ev.gpus,
        expert_map=emap,
        estimates=ev.estimates,
        certificate=Certificate(
            constraints=tuple(constraints), search=certificate.search, solver=certificate.solver
        ),
        inputs=inputs,
    )


def _scale(units: int, objective: str) -> float:
    return float(units) if objective == "gpus" else units / TIME_SCALE


def plan_inputs(model: ModelSpec, cluster: ClusterSpec, workload: Workload) -> PlanInputs:
    """Copies of the inputs in placer's own formats, with their hashes."""
    m = model.canonical_dump()
    m["format"] = "placer"
    c = cluster.model_dump(mode="json")
    w = workload.canonical_dump()
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
