"""``placer solve`` with latency targets: assemble the serving search into a plan.

See :mod:`placer.serving.search` for the search and docs/serving.md for the model.
"""

from __future__ import annotations

import math

from placer.budget import Budget
from placer.cluster import ClusterSpec
from placer.config import SolveConfig
from placer.evaluate import Constraint, evaluate
from placer.exceptions import InvalidInputError
from placer.gap import maximise_gap, maximise_status, minimise_gap, minimise_status
from placer.layout import Layout
from placer.model import ModelSpec
from placer.plan import (
    Certificate,
    Infeasibility,
    ObjectiveRecord,
    Plan,
    PlanInputs,
    PlanLayout,
    SearchRecord,
    digest,
)
from placer.rules import get_profile
from placer.search.solve import expert_map_from_counts, placement_constraints, solver_record
from placer.search.space import LayoutSpace, enumerate_layouts
from placer.serving.probe import LayoutProbe
from placer.serving.record import ServingEntry, ServingRecord
from placer.serving.search import TIE, LayoutResult, best_concurrency, cap_check, entry
from placer.serving.timing import (
    NS,
    instance_workload,
    tokens_per_s,
    tokens_per_s_ceiling,
    tpot_ns,
    ttft_ns,
)
from placer.workload import Workload

#: Largest instance searched when the cluster is larger and no ``max_gpus`` is given: the
#: search does not yet bound larger instances, and enumerating every layout of thousands of
#: GPUs takes minutes. Such plans are ``feasible`` with no gap (docs/serving.md).
AUTO_INSTANCE_CAP = 64


def instance_cap(cluster_gpus: int, config: SolveConfig) -> int:
    """GPUs of the largest instance layout searched."""
    if config.max_gpus is not None:
        return min(cluster_gpus, config.max_gpus)
    return min(cluster_gpus, AUTO_INSTANCE_CAP)


def serving_inputs(model: ModelSpec, cluster: ClusterSpec, workload: Workload) -> PlanInputs:
    """Copies of the inputs with their hashes; the workload without a batch (the search
    chose the concurrency, recorded in the serving record)."""
    m = model.model_dump(mode="json")
    m["format"] = "placer"
    c = cluster.model_dump(mode="json")
    w = workload.model_dump(mode="json", exclude={"batch"})
    return PlanInputs(
        model=m,
        cluster=c,
        workload=w,
        hashes={"model": digest(m), "cluster": digest(c), "workload": digest(w)},
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


def check_serving_config(workload: Workload, config: SolveConfig) -> str:
    """The serving objective the workload and config ask for; bad combinations are errors."""
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
    if config.objective in ("latency", "step"):
        raise InvalidInputError(
            f"objective {config.objective} is a fixed-batch objective: give --batch and no "
            "--ttft/--tpot, or use throughput or gpus",
            field="objective",
        )
    return "throughput"


class _Best:
    """The incumbent: a layout, its search result and instance count."""

    def __init__(self) -> None:
        self.layout: Layout | None = None
        self.probe: LayoutProbe | None = None
        self.res: LayoutResult | None = None
        self.instances = 0
        self.value = 0.0  # tokens/s per GPU (throughput) or GPUs (gpus)


def solve_serving(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    config: SolveConfig,
    budget: Budget | None = None,
) -> Plan:
    """The most output tokens/s per GPU within the targets (or the fewest GPUs for the
    request rate), over layout x concurrency x instance count, with its proof."""
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
    n = cluster.num_gpus
    limit = instance_cap(n, config)
    space = enumerate_layouts(model, cluster, profile, limit)
    need = (workload.request_rate or 0.0) * workload.output_len  # output tokens/s to serve
    best = _Best()
    cache: dict[object, object] = {}
    entries: list[ServingEntry] = []

    def floor_for(g: int) -> float:
        if objective == "throughput":
            return best.value * n / (n // g) if best.layout is not None else 0.0
        k_max = (int(best.value) - 1) // g if best.layout is not None else n // g
        return need / k_max * (1 - 2 * TIE) if k_max > 0 else math.inf

    # Most promising layouts first (by their ceiling), so the floor rises early and most
    # layouts close on their ceiling alone.
    probes: dict[Layout, LayoutProbe] = {}
    promise: dict[Layout, float] = {}
    for lay in space.legal:
        if budget.expired():
            break
        probe = probes[lay] = LayoutProbe(model, cluster, workload, lay, cache)
        one = probe.loose(1)
        ceiling = 0.0
        if one.fits_bound and cap_check(workload, one, bound=True) is None:
            ceiling = tokens_per_s_ceiling(workload, one.step_bound_ns, one.prefill_bound_ns)
        k = n // lay.gpus
        if objective == "throughput":
            promise[lay] = -k * ceiling / n
        else:
            promise[lay] = lay.gpus * math.ceil(need / ceiling) if ceiling > 0 else math.inf
    order = sorted(
        space.legal, key=lambda lay: (promise.get(lay, math.inf), lay.gpus, lay.describe())
    )
    for lay in order:
        if budget.expired() or lay not in probes:
            entries.append(entry(lay, "unresolved", None, False, reason="time limit"))
            continue
        g = lay.gpus
        if objective == "gpus" and math.isinf(floor_for(g)):
            entries.append(
                entry(
                    lay,
                    "pruned",
                    None,
                    False,
                    reason=f"one instance uses {g} GPUs, the plan {int(best.value)}",
                )
            )
            continue
        probe = probes[lay]
        res = best_concurrency(probe, lambda g=g: floor_for(g), budget)  # type: ignore[misc]
        if res.ceiling is not None:
            entries.append(
                entry(lay, "pruned", res, probe.exact, reason="its ceiling cannot beat the plan")
            )
            continue
        if res.cap == 0:
            entries.append(
                entry(
                    lay,
                    "infeasible",
                    res,
                    probe.exact,
                    reason=f"{res.cap_reason} excludes every concurrency",
                )
            )
            continue
        k = n // g
        value: float | None = None
        if res.concurrency is not None:
            if objective == "throughput":
                value = k * res.rate / n
                if best.layout is None or value > best.value * (1 + TIE):
                    best.layout, best.probe, best.res, best.instances = lay, probe, res, k
                    best.value = value
            else:
                k = math.ceil(need / res.rate * (1 - TIE)) if need > 0 else 1
                if k * g <= n:
                    value = float(k * g)
                    if best.layout is None or value < best.value:
                        best.layout, best.probe, best.res, best.instances = lay, probe, res, k
                        best.value = value
        if res.open_bound > 0.0:
            status = "unresolved"  # a range stayed open (time limit, or inexact figures)
        else:
            status = "solved" if res.concurrency is not None else "pruned"
        entries.append(entry(lay, status, res, probe.exact, k, value))
    plan = _assemble(model, cluster, workload, config, objective, space, entries, best, budget)
    if config.disagg and plan.serving is not None and plan.serving.deploys:
        from placer.serving.disagg import disaggregated

        rec = disaggregated(
            model, cluster, workload, config, plan.serving.tokens_per_s_per_gpu or 0.0, limit
        )
        plan = plan.model_copy(update={"serving": plan.serving.model_copy(update={"disagg": rec})})
    return plan


def _bounds(e: ServingEntry) -> list[float]:
    """The bounds settling one layout: its ranges', or its ceiling."""
    return [leaf.bound for leaf in e.leaves] + ([e.ceiling] if e.ceiling is not None else [])


def _global_bound(
    objective: str, entries: list[ServingEntry], best: _Best, n: int, need: float
) -> float | None:
    """What no layout can beat: the plan itself unless a range stayed open; None if a layout
    was never searched."""
    if any(e.status == "unresolved" and e.bound is None for e in entries):
        return None
    if objective == "throughput":
        out = best.value
        for e in entries:
            for b in _bounds(e):
                out = max(out, (n // e.gpus) * b / n)
        return out
    low = best.value if best.layout is not None else math.inf
    for e in entries:
        for b in _bounds(e):
            if b > 0:
                low = min(low, e.gpus * math.ceil(need / b * (1 - TIE)))
    return None if math.isinf(low) else float(low)


def _assemble(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    config: SolveConfig,
    objective: str,
    space: LayoutSpace,
    entries: list[ServingEntry],
    best: _Best,
    budget: Budget,
) -> Plan:
    n = cluster.num_gpus
    need = (workload.request_rate or 0.0) * workload.output_len
    count = {
        s: sum(1 for e in entries if e.status == s)
        for s in ("solved", "pruned", "infeasible", "unresolved")
    }
    record = SearchRecord(
        candidates=space.candidates,
        legal=len(space.legal),
        rejected_by_rule=dict(sorted(space.rejected.items())),
        solved=count["solved"],
        pruned=count["pruned"],
        infeasible=count["infeasible"],
        unresolved=count["unresolved"],
        entries=(),
    )
    solver_info = solver_record(config, objective, budget)
    inputs = serving_inputs(model, cluster, workload)
    unit = "tokens/s/GPU" if objective == "throughput" else "GPUs"
    # Instances larger than the cap were not searched: nothing is proven about them.
    complete = instance_cap(n, config) >= n
    bound = _global_bound(objective, entries, best, n, need) if complete else None
    if best.layout is None or best.res is None or best.probe is None:
        proven = (
            complete
            and bool(entries)
            and all(
                e.status != "unresolved"
                and all(leaf.bound == 0.0 or not math.isinf(leaf.bound) for leaf in e.leaves)
                for e in entries
            )
        )
        why = None
        if proven and objective == "gpus" and any(e.status != "infeasible" for e in entries):
            most = max((n // e.gpus) * (e.rate or 0.0) for e in entries) / workload.output_len
            why = Infeasibility(
                reason=f"{workload.request_rate:g} requests/s need more than {n} GPUs: no layout "
                "serves them within the targets"
                + (f" (best found {most:.4g} requests/s)" if most > 0 else ""),
                conflicts=("request_rate",),
                closest_layout=None,
                fixes=("more GPUs, or a lower request rate",),
                min_gpus=None,
            )
        elif proven:
            why = _unreachable(model, cluster, workload, entries, space.legal)
        # Nothing deployed, but the record still lists every layout's fate, so that verify
        # re-proves the status rather than taking it on trust (docs/certificate.md).
        record_only = ServingRecord(
            objective=objective,
            ttft_ms=workload.ttft_ms,
            tpot_ms=workload.tpot_ms,
            request_rate=workload.request_rate,
            cluster_gpus=n,
            max_instance_gpus=instance_cap(n, config),
            entries=tuple(entries),
        )
        return Plan(
            status="infeasible" if proven else "unknown",
            layout=None,
            objective=ObjectiveRecord(
                name=objective,
                unit=unit,
                value=None,
                bound=None,
                gap=None,
                value_units=None,
                bound_units=None,
            ),
            gpus=(),
            expert_map={},
            estimates=None,
            certificate=Certificate(constraints=(), search=record, solver=solver_info),
            infeasibility=why,
            inputs=inputs,
            serving=record_only,
        )
    res, probe, lay = best.res, best.probe, best.layout
    assert res.concurrency is not None
    c = res.concurrency
    p = probe.at(c)
    assert p.split is not None
    k = best.instances
    wl_c = instance_workload(workload, c)
    tables = probe.tables(c)
    emap = expert_map_from_counts(tables, probe.counts)
    full = lay.model_copy(update={"layers_per_stage": p.split})
    ev = evaluate(model, cluster, wl_c, full, get_profile(config.profile), emap)
    rate = tokens_per_s(workload, c, p.step_ns, p.prefill_ns)
    ttft = ttft_ns(workload, p.step_ns, p.prefill_ns)
    tpot = tpot_ns(workload, c, p.step_ns, p.prefill_ns)
    constraints = list(ev.constraints) + placement_constraints(tables, probe.counts)
    constraints += serving_constraints(workload, k, lay.gpus, n, tpot, ttft, rate)
    # The status and gap rule of placer.gap (shared with verify).
    if objective == "throughput":
        value, value_units = best.value, math.floor(best.value * 1000)
        gap = maximise_gap(value, bound) if bound is not None else None
        bound_units = math.ceil(bound * 1000) if bound is not None else None
        optimal = bound is not None and maximise_status(value, bound, TIE) == "optimal"
    else:
        value, value_units = best.value, int(best.value)
        bound_units = int(bound) if bound is not None else None
        gap = minimise_gap(value, bound) if bound is not None else None
        optimal = bound is not None and minimise_status(value, bound) == "optimal"
    if optimal:
        gap = 0.0
        bound_units = value_units
    serving = ServingRecord(
        objective=objective,
        ttft_ms=workload.ttft_ms,
        tpot_ms=workload.tpot_ms,
        request_rate=workload.request_rate,
        cluster_gpus=n,
        max_instance_gpus=instance_cap(n, config),
        instances=k,
        gpus_per_instance=lay.gpus,
        idle_gpus=n - k * lay.gpus,
        concurrency=c,
        tpot_s=tpot / NS,
        step_s=p.step_ns / NS,
        ttft_s=ttft / NS,
        prefill_s=p.prefill_ns / NS,
        tokens_per_s_instance=rate,
        tokens_per_s=k * rate,
        tokens_per_s_per_gpu=k * rate / n,
        tokens_per_s_per_user=rate / c,
        requests_per_s=k * rate / workload.output_len,
        entries=tuple(entries),
    )
    return Plan(
        status="optimal" if optimal else "feasible",
        layout=PlanLayout.of(lay, p.split),
        objective=ObjectiveRecord(
            name=objective,
            unit=unit,
            value=value,
            bound=None if bound is None else (value if optimal else bound),
            gap=gap,
            value_units=value_units,
            bound_units=bound_units,
        ),
        gpus=ev.gpus,
        expert_map=emap,
        estimates=ev.estimates,
        certificate=Certificate(constraints=tuple(constraints), search=record, solver=solver_info),
        inputs=inputs,
        serving=serving,
    )


def serving_constraints(
    workload: Workload,
    instances: int,
    gpus: int,
    cluster_gpus: int,
    tpot: float,
    ttft: int,
    rate: float,
) -> list[Constraint]:
    """The targets, the instance count and (objective gpus) the request rate, as constraints."""
    out = [
        Constraint(
            name="instances",
            value=instances * gpus,
            limit=cluster_gpus,
            holds=instances * gpus <= cluster_gpus,
            detail=f"{instances} instances of {gpus} GPUs",
        )
    ]
    if workload.tpot_ms is not None:
        out.append(
            Constraint(
                name="tpot_ms",
                value=tpot / 1e6,
                limit=workload.tpot_ms,
                holds=tpot <= workload.tpot_ms * 1e6,
                detail="decode step plus its share of interleaved prefills (docs/serving.md)",
            )
        )
    if workload.ttft_ms is not None:
        out.append(
            Constraint(
                name="ttft_ms",
                value=ttft / 1e6,
                limit=workload.ttft_ms,
                holds=ttft <= workload.ttft_ms * 1e6,
                detail="wait for the running step, then the prompt's chunks (docs/serving.md)",
            )
        )
    if workload.request_rate is not None:
        served = instances * rate / workload.output_len
        out.append(
            Constraint(
                name="request_rate",
                value=workload.request_rate,
                limit=served,
                holds=workload.request_rate <= served * (1 + TIE),
                detail=f"{served:.4g} requests/s served by {instances} instances",
            )
        )
    return out


def _unreachable(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    entries: list[ServingEntry],
    legal: tuple[Layout, ...],
) -> Infeasibility:
    """Which target no layout reaches, with the best value any layout reaches (its bound at
    concurrency 1: every figure only grows with the concurrency)."""
    n = cluster.num_gpus
    gpu = cluster.gpu_types[0].name
    best_tpot = best_ttft = math.inf
    fits_any = False
    cache: dict[object, object] = {}
    reasons = {e.layout: e.cap_reason for e in entries}
    for lay in legal:
        if reasons.get(lay.describe()) == "memory":
            continue
        probe = LayoutProbe(model, cluster, workload, lay, cache)
        p = probe.at(1)
        if not p.fits_bound:
            continue
        fits_any = True
        best_tpot = min(best_tpot, tpot_ns(workload, 1, p.step_bound_ns, p.prefill_bound_ns) / 1e6)
        best_ttft = min(best_ttft, ttft_ns(workload, p.step_bound_ns, p.prefill_bound_ns) / 1e6)
    where = f"every layout of {n} x {gpu}"
    if not fits_any:
        reason = f"no layout holds the model and one request's KV cache on {n} x {gpu}"
        return Infeasibility(
            reason=reason,
            conflicts=("memory",),
            closest_layout=None,
            fixes=("more GPUs, larger GPUs, fp8 weights or a shorter context",),
            min_gpus=None,
        )
    if workload.tpot_ms is not None and best_tpot > workload.tpot_ms:
        reason = f"TPOT >= {best_tpot:.3g} ms on {where} (target {workload.tpot_ms:g} ms)"
        return Infeasibility(
            reason=reason,
            conflicts=("tpot",),
            closest_layout=None,
            fixes=(f"--tpot {best_tpot:.3g} or more",),
            min_gpus=None,
        )
    if workload.ttft_ms is not None and best_ttft > workload.ttft_ms:
        reason = f"TTFT >= {best_ttft:.4g} ms on {where} (target {workload.ttft_ms:g} ms)"
        return Infeasibility(
            reason=reason,
            conflicts=("ttft",),
            closest_layout=None,
            fixes=(f"--ttft {best_ttft:.4g} or more",),
            min_gpus=None,
        )
    reason = (
        f"no layout of {n} x {gpu} meets TPOT {workload.tpot_ms} ms and TTFT "
        f"{workload.ttft_ms} ms together (best alone: TPOT {best_tpot:.3g} ms, TTFT "
        f"{best_ttft:.4g} ms)"
    )
    return Infeasibility(
        reason=reason, conflicts=("tpot", "ttft"), closest_layout=None, fixes=(), min_gpus=None
    )
