"""``placer solve`` with latency targets: run the serving search and assemble its plan.

See :mod:`placer.serving.layouts` and :mod:`placer.serving.search` for the search,
:mod:`placer.serving.tail` for the bound on instances larger than the searched ones, and
docs/serving.md for the model.
"""

from __future__ import annotations

import math

from placer.budget import Budget
from placer.calibration import active_calibration
from placer.cluster import ClusterSpec
from placer.config import SolveConfig
from placer.exceptions import InvalidInputError
from placer.gap import maximise_gap, maximise_status, minimise_gap, minimise_status
from placer.model import ModelSpec
from placer.plan import (
    Certificate,
    ObjectiveRecord,
    Plan,
    PlanInputs,
    PlanLayout,
    SearchRecord,
    digest,
)
from placer.rules import RulesProfile, get_profile
from placer.search.outer import solver_record
from placer.search.space import LayoutSpace, enumerate_layouts
from placer.serving.figures import InstanceFigures, figures_at, serving_constraints
from placer.serving.layouts import Incumbent, LayoutSearch
from placer.serving.record import ServingEntry, ServingObjective, ServingRecord, TailBound
from placer.serving.search import TIE
from placer.serving.tail import gpus_for_rate, needed_above, tail_bound
from placer.serving.unreachable import proven_empty, rate_unreachable, unreachable
from placer.workload import Workload

#: Largest instance searched first when the cluster is larger and no ``max_gpus`` is given;
#: instances of more GPUs are covered by the tail bound (placer/serving/tail.py), and searched
#: only where that bound could still beat the plan, up to :data:`AUTO_INSTANCE_LIMIT`.
AUTO_INSTANCE_CAP = 16

#: Largest instance the search enumerates on its own; beyond it the tail bound gives the gap.
AUTO_INSTANCE_LIMIT = 64


def instance_cap(cluster_gpus: int, config: SolveConfig) -> int:
    """GPUs of the largest instance layout the serving search may enumerate (the frontier
    and the disaggregated search enumerate up to it)."""
    if config.max_gpus is not None:
        return min(cluster_gpus, config.max_gpus)
    return min(cluster_gpus, AUTO_INSTANCE_LIMIT)


def first_cap(cluster_gpus: int, config: SolveConfig) -> int:
    """GPUs of the largest instance the serving search enumerates before the tail bound
    decides whether larger ones are worth searching."""
    if config.max_gpus is not None:
        return min(cluster_gpus, config.max_gpus)
    return min(cluster_gpus, AUTO_INSTANCE_CAP)


def serving_inputs(model: ModelSpec, cluster: ClusterSpec, workload: Workload) -> PlanInputs:
    """Copies of the inputs with their hashes; the workload without a batch (the search
    chose the concurrency, recorded in the serving record)."""
    m = model.canonical_dump()
    m["format"] = "placer"
    c = cluster.model_dump(mode="json")
    w = workload.canonical_dump(exclude={"batch"})
    # The calibration prices every step and holds the TTFT model: verify must use this one.
    cal = active_calibration().model_dump(mode="json")
    copies = {"model": m, "cluster": c, "workload": w, "calibration": cal}
    return PlanInputs(
        **copies,
        hashes={name: digest(copy) for name, copy in copies.items()},
        sources={"model": model.source, "cluster": cluster.source},
    )


def check_one_gpu_type(cluster: ClusterSpec) -> None:
    """Identical instances on GPUs of different types would not perform alike (each would
    need its own evaluation), so the serving search takes one GPU type (docs/serving.md)."""
    names = sorted({g.gpu.name for g in cluster.groups})
    if len(names) > 1:
        raise InvalidInputError(
            "the serving search needs GPUs of one type; this cluster mixes " + ", ".join(names),
            source=cluster.source,
            field="groups",
        )


def check_serving_config(workload: Workload, config: SolveConfig) -> ServingObjective:
    """The serving objective the workload and config ask for; bad combinations are errors."""
    if config.objective == "latency" or config.concurrency is not None:
        if config.objective != "latency":
            raise InvalidInputError(
                "a concurrency to carry is only used by the latency objective "
                "(--objective latency)",
                field="concurrency",
            )
        if config.concurrency is None:
            raise InvalidInputError(
                "objective latency of the serving search needs the concurrency to carry "
                "(--concurrency N); with --batch and no targets it is the fixed-batch step",
                field="objective",
            )
        if workload.request_rate is not None:
            raise InvalidInputError(
                "a request rate is only used by the gpus objective (--objective gpus)",
                field="request_rate",
            )
        return "latency"
    if config.objective == "gpus":
        if workload.request_rate is None:
            raise InvalidInputError(
                "objective gpus of the serving search needs a request rate", field="request_rate"
            )
        return "gpus"
    if workload.request_rate is not None:
        raise InvalidInputError(
            "a request rate is only used by the gpus objective (--objective gpus)",
            field="request_rate",
        )
    if config.objective == "step":
        raise InvalidInputError(
            "objective step is a fixed-batch objective: give --batch and no --ttft/--tpot, "
            "or use throughput, gpus or latency",
            field="objective",
        )
    return "throughput"


def solve_serving(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    config: SolveConfig,
    budget: Budget | None = None,
) -> Plan:
    """The most output tokens/s per GPU within the targets (or the fewest GPUs for the
    request rate, or the lowest TPOT carrying a concurrency), over layout x concurrency x
    instance count, with its proof."""
    objective = check_serving_config(workload, config)
    check_one_gpu_type(cluster)
    if config.disagg and (objective != "throughput" or cluster.num_gpus < 2):
        raise InvalidInputError(
            "disaggregated serving needs at least 2 GPUs and the throughput objective",
            field="disagg",
        )
    try:
        profile = get_profile(config.profile)
    except KeyError as exc:
        raise InvalidInputError(str(exc.args[0]), field="profile") from None
    budget = budget or Budget(config.time_limit_s, config.deterministic)
    if objective == "latency":
        from placer.serving.latency import solve_latency

        return solve_latency(model, cluster, workload, config, profile, budget)
    search = LayoutSearch(model, cluster, workload, objective, budget)
    space, limit, tail = _search_sizes(search, profile, config)
    plan = _assemble(search, config, space, limit, tail)
    if config.disagg and plan.serving is not None and plan.serving.deploys:
        from placer.serving.disagg import disaggregated

        rec, cut = disaggregated(
            model,
            cluster,
            workload,
            config,
            plan.serving.tokens_per_s_per_gpu or 0.0,
            instance_cap(cluster.num_gpus, config),
            budget,
            search.cache,
        )
        serving = plan.serving.model_copy(
            update={"disagg": rec, "disagg_unknown": rec is None and cut}
        )
        # The solver record again: its time now includes the split search.
        solver = solver_record(config, objective, budget)
        certificate = plan.certificate.model_copy(update={"solver": solver})
        plan = plan.model_copy(update={"serving": serving, "certificate": certificate})
    return plan


def _search_sizes(
    search: LayoutSearch, profile: RulesProfile, config: SolveConfig
) -> tuple[LayoutSpace, int, TailBound | None]:
    """Search instances of up to the cap; then, without a user cap, larger ones while the
    tail bound says they could still beat the plan (up to :data:`AUTO_INSTANCE_LIMIT`).
    Returns the layouts searched, the largest instance searched and the tail bound."""
    model, cluster, workload = search.model, search.cluster, search.workload
    n = cluster.num_gpus
    limit = first_cap(n, config)
    space = enumerate_layouts(model, cluster, profile, limit)
    search.run(space.legal)
    if limit >= n:
        return space, limit, None
    first = tail_bound(model, cluster, workload, profile, limit)
    tail: TailBound | None = first
    best = search.best
    if config.max_gpus is None and best.layout is not None and not search.budget.expired():
        if search.objective == "throughput":
            more = needed_above(first, best.value, instance_cap(n, config))
        else:
            more = min(instance_cap(n, config), int(best.value) - 1)
        if more > limit:
            space = enumerate_layouts(model, cluster, profile, more)
            search.run(tuple(lay for lay in space.legal if lay.gpus > limit))
            limit = more
            tail = tail_bound(model, cluster, workload, profile, limit) if limit < n else None
    return space, limit, tail


def _bounds(e: ServingEntry) -> list[float]:
    """The bounds settling one layout: its ranges', or its ceiling."""
    return [leaf.bound for leaf in e.leaves] + ([e.ceiling] if e.ceiling is not None else [])


def _global_bound(search: LayoutSearch, tail: TailBound | None) -> float | None:
    """What no deployment can beat: the plan itself unless a range stayed open or the tail
    bound is larger; None if a layout was never searched."""
    entries, best, n, need = search.entries, search.best, search.n, search.need
    if any(e.status == "unresolved" and e.bound is None for e in entries):
        return None
    if search.objective == "throughput":
        out = best.value
        for e in entries:
            for b in _bounds(e):
                out = max(out, (n // e.gpus) * b / n)
        return max(out, tail.per_gpu) if tail is not None else out
    low = best.value if best.layout is not None else math.inf
    for e in entries:
        for b in _bounds(e):
            if b > 0:
                low = min(low, e.gpus * math.ceil(need / b * (1 - TIE)))
    if tail is not None:
        low = min(low, math.ceil(gpus_for_rate(tail, need) * (1 - TIE)))
    return None if math.isinf(low) else float(low)


def _larger_excluded(search: LayoutSearch, tail: TailBound | None) -> bool:
    """Whether no instance larger than the searched ones can serve at all."""
    if tail is None:
        return True
    if search.objective == "throughput":
        return tail.per_gpu <= 0.0
    return gpus_for_rate(tail, search.need) > search.n


def search_record(space: LayoutSpace, entries: list[ServingEntry]) -> SearchRecord:
    """The certificate's count of layouts by how the serving search settled them."""
    count = {
        s: sum(1 for e in entries if e.status == s)
        for s in ("solved", "pruned", "infeasible", "unresolved")
    }
    return SearchRecord(
        candidates=space.candidates,
        legal=len(space.legal),
        rejected_by_rule=dict(sorted(space.rejected.items())),
        solved=count["solved"],
        pruned=count["pruned"],
        infeasible=count["infeasible"],
        unresolved=count["unresolved"],
        entries=(),
    )


def _no_plan(
    search: LayoutSearch,
    space: LayoutSpace,
    limit: int,
    tail: TailBound | None,
    certificate: Certificate,
) -> Plan:
    """The plan when no layout served: infeasible (with the reason) if that is proven."""
    wl, entries = search.workload, search.entries
    why = None
    if proven_empty(entries, _larger_excluded(search, tail)):
        if search.objective == "gpus" and any(e.status != "infeasible" for e in entries):
            why = rate_unreachable(wl, search.n, entries)
        else:
            why = unreachable(search.model, search.cluster, wl, entries, space.legal)
    return Plan(
        status="infeasible" if why is not None else "unknown",
        layout=None,
        objective=ObjectiveRecord.without_plan(search.objective, _UNITS[search.objective]),
        gpus=(),
        expert_map={},
        estimates=None,
        certificate=certificate,
        infeasibility=why,
        inputs=serving_inputs(search.model, search.cluster, wl),
        # Nothing deployed, but the record still lists every layout's fate, so that verify
        # re-proves the status rather than taking it on trust (docs/certificate.md).
        serving=ServingRecord(
            objective=search.objective,
            ttft_ms=wl.ttft_ms,
            tpot_ms=wl.tpot_ms,
            request_rate=wl.request_rate,
            cluster_gpus=search.n,
            max_instance_gpus=limit,
            entries=tuple(entries),
            tail=tail,
        ),
    )


_UNITS = {"throughput": "tokens/s/GPU", "gpus": "GPUs", "latency": "ms"}


def objective_record(
    name: str, value: float, bound: float | None, maximise: bool, scale: float
) -> ObjectiveRecord:
    """The objective with its bound and gap by the rule of :mod:`placer.gap`; ``optimal``
    when the gap is 0. ``scale`` turns
    values into the integer units recorded (1000 for tokens/s, 1 for GPUs)."""
    if maximise:
        units = math.floor(value * scale)
        bnd_units = math.ceil(bound * scale) if bound is not None else None
        gap = maximise_gap(value, bound) if bound is not None else None
        optimal = bound is not None and maximise_status(value, bound, TIE) == "optimal"
    else:
        units = math.ceil(value * scale) if scale != 1 else int(value)
        bnd_units = (
            (math.floor(bound * scale) if scale != 1 else int(bound))
            if bound is not None
            else None
        )
        gap = minimise_gap(value, bound) if bound is not None else None
        optimal = bound is not None and minimise_status(value, bound, TIE) == "optimal"
    if optimal:
        return ObjectiveRecord(
            name=name, unit=_UNITS[name], value=value, bound=value, gap=0.0,
            value_units=units, bound_units=units,
        )  # fmt: skip
    return ObjectiveRecord(
        name=name, unit=_UNITS[name], value=value, bound=bound, gap=gap,
        value_units=units, bound_units=bnd_units,
    )  # fmt: skip


def _assemble(
    search: LayoutSearch,
    config: SolveConfig,
    space: LayoutSpace,
    limit: int,
    tail: TailBound | None,
) -> Plan:
    """The plan of the incumbent, its figures, constraints and proof record."""
    certificate = Certificate(
        constraints=(),
        search=search_record(space, search.entries),
        solver=solver_record(config, search.objective, search.budget),
    )
    best = search.best
    if best.layout is None or best.res is None or best.probe is None:
        return _no_plan(search, space, limit, tail, certificate)
    fig = instance_figures(search.model, search.cluster, search.workload, config, best)
    k, n = best.instances, search.n
    constraints = fig.constraints + serving_constraints(
        search.workload, k, best.layout.gpus, n, fig.tpot, fig.ttft, fig.rate
    )
    bound = _global_bound(search, tail)
    maximise = search.objective == "throughput"
    objective = objective_record(
        search.objective, best.value, bound, maximise, 1000.0 if maximise else 1.0
    )
    serving = fig.record(search.workload, search.objective, n, limit, k).model_copy(
        update={"entries": tuple(search.entries), "tail": tail}
    )
    return Plan(
        status="optimal" if objective.gap == 0.0 else "feasible",
        layout=PlanLayout.of(best.layout, fig.split),
        objective=objective,
        gpus=fig.gpus,
        expert_map=fig.expert_map,
        estimates=fig.estimates,
        certificate=certificate.model_copy(update={"constraints": tuple(constraints)}),
        inputs=serving_inputs(search.model, search.cluster, search.workload),
        serving=serving,
    )


def instance_figures(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    config: SolveConfig,
    best: Incumbent,
) -> InstanceFigures:
    """Evaluate the incumbent's instance at its concurrency (split and expert map of the
    probe's DP), with the memory and placement constraints the certificate lists."""
    assert best.layout is not None and best.probe is not None and best.res is not None
    assert best.res.concurrency is not None
    return figures_at(model, cluster, workload, config, best.probe, best.res.concurrency)
