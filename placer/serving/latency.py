"""Objective ``latency`` of the serving search: the lowest TPOT carrying a given number of
requests in flight on the cluster, within the other targets (docs/serving.md, "Latency").

``C`` requests spread over ``k`` identical instances of a layout: the busiest carries
``ceil(C / k)``. TPOT, TTFT and memory only grow with an instance's concurrency, so a layout
does best with as many instances as fit (``k = min(N // g, C)``): one point per layout. Its
bound figures at that point (no split or expert map beats them) give a TPOT floor; a layout
whose floor cannot beat the plan is closed, the others are evaluated with the DP split.
Instances larger than the searched ones are covered by :func:`placer.serving.tail.tpot_floor_ns`.
"""

from __future__ import annotations

import math

from placer.budget import Budget
from placer.cluster import ClusterSpec
from placer.config import SolveConfig
from placer.layout import Layout
from placer.model import ModelSpec
from placer.plan import Certificate, Infeasibility, ObjectiveRecord, Plan, PlanInputs, PlanLayout
from placer.rules import RulesProfile
from placer.search.outer import solver_record
from placer.search.space import LayoutSpace, enumerate_layouts
from placer.serving.figures import figures_at, serving_constraints
from placer.serving.probe import LayoutProbe, Point
from placer.serving.record import ServingEntry, ServingRecord, TailBound
from placer.serving.search import TIE, cap_check
from placer.serving.tail import floors_ns, tail_bound, tpot_floor_ns
from placer.serving.timing import NS, tpot_ns
from placer.workload import Workload


def share(cluster_gpus: int, gpus: int, carried: int) -> tuple[int, int]:
    """(instances, concurrency of the busiest) when ``carried`` requests spread over as many
    instances of ``gpus`` GPUs as fit (no more instances than requests)."""
    k = min(cluster_gpus // gpus, carried)
    return k, -(-carried // k)


def tpot_floor(workload: Workload, point: Point) -> float:
    """TPOT no split or expert map beats at ``point`` (ns)."""
    return tpot_ns(workload, point.concurrency, point.step_bound_ns, point.prefill_bound_ns)


def _entry(
    lay: Layout, status: str, k: int, c: int, floor: float | None, tight: bool, **kw: object
) -> ServingEntry:
    return ServingEntry(
        **lay.record_fields(),
        status=status,
        memory_limit=0,
        cap=c if status == "solved" else 0,
        cap_reason=str(kw.pop("cap_reason", "")),
        instances=k,
        concurrency=c,
        exact=tight,
        tpot_floor_s=None if floor is None else floor / NS,
        tight=tight,
        **kw,
    )


class _Best:
    def __init__(self) -> None:
        self.tpot = math.inf
        self.probe: LayoutProbe | None = None
        self.instances = 0
        self.concurrency = 0


def _settle(
    probe: LayoutProbe, workload: Workload, n: int, carried: int, best: _Best
) -> ServingEntry:
    """One layout at its point: excluded, closed by its floor, or evaluated."""
    lay = probe.layout
    k, c = share(n, lay.gpus, carried)
    loose = probe.loose(c)
    why = cap_check(workload, loose, bound=True)
    if why is not None:
        return _entry(lay, "infeasible", k, c, None, False, cap_reason=why, reason=why)
    floor = tpot_floor(workload, loose)
    if floor >= best.tpot * (1 - TIE):
        return _entry(lay, "pruned", k, c, floor, False, reason="its floor cannot beat the plan")
    p = probe.at(c)
    why = cap_check(workload, p, bound=True)
    if why is not None:
        return _entry(lay, "infeasible", k, c, None, True, cap_reason=why, reason=why)
    floor = tpot_floor(workload, p)
    if cap_check(workload, p, bound=False) is None:
        tpot = tpot_ns(workload, c, p.step_ns, p.prefill_ns)
        if tpot < best.tpot * (1 - TIE):
            best.tpot, best.probe, best.instances, best.concurrency = tpot, probe, k, c
        return _entry(lay, "solved", k, c, floor, True, value=tpot / 1e6)
    status = "pruned" if floor >= best.tpot * (1 - TIE) else "unresolved"
    return _entry(lay, status, k, c, floor, True, reason="the DP split misses a target")


def floors_tpot_ns(
    workload: Workload, floors: tuple[float, float], cluster_gpus: int, gpus: int, carried: int
) -> float:
    """TPOT no layout with these attention-TP floors (step, prefill in ns;
    :func:`placer.serving.tail.floors_ns`) beats at its share of the requests."""
    c = share(cluster_gpus, gpus, carried)[1]
    return floors[0] + c * floors[1] / workload.output_len


def _search(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    space: LayoutSpace,
    carried: int,
    budget: Budget,
) -> tuple[list[ServingEntry], _Best]:
    """Every layout, lowest floors first; once the floors cannot beat the plan, the rest
    (whose floors are no lower) are settled without a probe."""
    n = cluster.num_gpus
    cache: dict[object, object] = {}
    entries: list[ServingEntry] = []
    floors: dict[int, tuple[float, float]] = {}
    ranked = []
    for lay in space.legal:
        if lay.tp not in floors:
            floors[lay.tp] = floors_ns(model, cluster, workload, lay.tp)
        floor = floors_tpot_ns(workload, floors[lay.tp], n, lay.gpus, carried)
        ranked.append((floor, lay.describe(), lay))
    best = _Best()
    for floor, _, lay in sorted(ranked, key=lambda t: (t[0], t[1])):
        k, c = share(n, lay.gpus, carried)
        if floor >= best.tpot * (1 - TIE):
            why = "its attention-TP floors cannot beat the plan"
            out = _entry(lay, "pruned", k, c, floor, False, reason=why)
            entries.append(out.model_copy(update={"by_floors": True}))
        elif budget.expired():
            entries.append(_entry(lay, "unresolved", k, c, None, False, reason="time limit"))
        else:
            probe = LayoutProbe(model, cluster, workload, lay, cache)
            entries.append(_settle(probe, workload, n, carried, best))
    return entries, best


def solve_latency(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    config: SolveConfig,
    profile: RulesProfile,
    budget: Budget,
) -> Plan:
    """The lowest TPOT carrying ``config.concurrency`` requests (module docstring)."""
    from placer.serving.solve import (
        instance_cap,
        objective_record,
        search_record,
        serving_inputs,
    )

    assert config.concurrency is not None
    n, carried = cluster.num_gpus, config.concurrency
    limit = instance_cap(n, config)
    space = enumerate_layouts(model, cluster, profile, limit)
    entries, best = _search(model, cluster, workload, space, carried, budget)
    tail = None
    if limit < n:
        tail = tail_bound(model, cluster, workload, profile, limit)
        floor = tpot_floor_ns(tail, workload, carried, n)
        tail = tail.model_copy(update={"tpot_floor_s": floor / NS})
    certificate = Certificate(
        constraints=(),
        search=search_record(space, entries),
        solver=solver_record(config, "latency", budget),
    )
    inputs = serving_inputs(model, cluster, workload)
    if best.probe is None:
        return _no_plan(cluster, workload, entries, tail, certificate, inputs, carried, limit)
    fig = figures_at(model, cluster, workload, config, best.probe, best.concurrency)
    k = best.instances
    constraints = fig.constraints + serving_constraints(
        workload, k, best.probe.layout.gpus, n, fig.tpot, fig.ttft, fig.rate
    )
    objective = objective_record("latency", fig.tpot / 1e6, _bound_ms(entries, tail), False, 1000)
    serving = fig.record(workload, "latency", n, limit, k).model_copy(
        update={"entries": tuple(entries), "tail": tail, "carried": carried}
    )
    return Plan(
        status="optimal" if objective.gap == 0.0 else "feasible",
        layout=PlanLayout.of(best.probe.layout, fig.split),
        objective=objective,
        gpus=fig.gpus,
        expert_map=fig.expert_map,
        estimates=fig.estimates,
        certificate=certificate.model_copy(update={"constraints": tuple(constraints)}),
        inputs=inputs,
        serving=serving,
    )


def _bound_ms(entries: list[ServingEntry], tail: TailBound | None) -> float | None:
    """The lowest TPOT any deployment could reach: the smallest floor of a layout not
    excluded, and the tail's; None if a layout was never probed."""
    if any(e.status == "unresolved" and e.tpot_floor_s is None for e in entries):
        return None
    floors = [e.tpot_floor_s for e in entries if e.tpot_floor_s is not None]
    if tail is not None and tail.tpot_floor_s is not None:
        floors.append(tail.tpot_floor_s)
    return min(floors) * 1e3 if floors else None


def _no_plan(
    cluster: ClusterSpec,
    workload: Workload,
    entries: list[ServingEntry],
    tail: TailBound | None,
    certificate: Certificate,
    inputs: PlanInputs,
    carried: int,
    limit: int,
) -> Plan:
    """No layout carries the concurrency: infeasible when every layout was excluded and no
    larger instance meets the TPOT target either."""
    tail_out = tail is None or (
        workload.tpot_ms is not None
        and tail.tpot_floor_s is not None
        and tail.tpot_floor_s * 1e3 > workload.tpot_ms
    )
    proven = bool(entries) and tail_out and all(e.status == "infeasible" for e in entries)
    why = None
    if proven:
        causes = sorted({e.cap_reason for e in entries})
        why = Infeasibility(
            reason=f"no layout of {cluster.num_gpus} x {cluster.gpu_types[0].name} carries "
            f"{carried} requests within " + " and ".join(causes),
            conflicts=tuple(causes),
            closest_layout=None,
            fixes=("fewer requests in flight, more GPUs, or looser targets",),
            min_gpus=None,
        )
    return Plan(
        status="infeasible" if proven else "unknown",
        layout=None,
        objective=ObjectiveRecord.without_plan("latency", "ms"),
        gpus=(),
        expert_map={},
        estimates=None,
        certificate=certificate,
        infeasibility=why,
        inputs=inputs,
        # Nothing deployed, but the record keeps every layout's fate and the requests
        # carried, so that verify re-proves the status (docs/certificate.md).
        serving=ServingRecord(
            objective="latency",
            ttft_ms=workload.ttft_ms,
            tpot_ms=workload.tpot_ms,
            request_rate=workload.request_rate,
            cluster_gpus=cluster.num_gpus,
            max_instance_gpus=limit,
            entries=tuple(entries),
            tail=tail,
            carried=carried,
        ),
    )
