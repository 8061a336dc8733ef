"""``placer verify`` for serving plans: re-check the targets, the concurrency bound from
memory, the throughput and the search record, with numpy only (no OR-Tools).

Everything is recomputed from the plan's inputs with the same cost model and ledger: the
instance's memory at the chosen concurrency, its decode step and prefill for the plan's own
split and expert map, TTFT and TPOT against the targets, the instance count and the
objective; then, for every legal layout, that its recorded concurrency ranges cover
``1..memory_limit``, that ``memory_limit + 1`` breaks the aggregate memory condition, and
that every range's bound (or exclusion) is what the record says and cannot beat the plan
(docs/serving.md, "Proof").
"""

from __future__ import annotations

import math

import numpy as np

from placer.cluster import ClusterSpec
from placer.evaluate import evaluate
from placer.layout import Layout
from placer.ledger import ExpertMap
from placer.model import ModelSpec
from placer.plan import Plan
from placer.rules import RulesProfile
from placer.search.space import enumerate_layouts
from placer.search.tables import objective_ns
from placer.serving.probe import LayoutProbe
from placer.serving.record import ServingEntry, ServingRecord
from placer.serving.search import TIE, cap_check
from placer.serving.timing import (
    NS,
    disagg_ttft_ns,
    instance_workload,
    tokens_per_s,
    tokens_per_s_bound,
    tokens_per_s_ceiling,
    tpot_ns,
    ttft_ns,
)
from placer.workload import Workload


def _close(a: float, b: float, rel: float = 1e-9) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-12)


def _counts(model: ModelSpec, layout: Layout, emap: ExpertMap, bad: list[str]) -> np.ndarray:
    """Slots per EP rank per layer from the expert map; coverage problems go to ``bad``."""
    counts = np.zeros((model.num_layers, layout.ep), dtype=np.int64)
    if set(emap) != set(model.moe_layers):
        bad.append("serving: the expert map does not list exactly the MoE layers")
        return counts
    for layer, ranks in emap.items():
        experts = model.experts_in_layer(layer)
        if len(ranks) != layout.ep:
            bad.append(f"serving: expert map layer {layer} has {len(ranks)} ranks, ep {layout.ep}")
            continue
        placed = {e for ids in ranks for e in ids}
        if placed != set(range(experts)):
            bad.append(f"serving: expert map layer {layer} does not place every expert once")
        for r, ids in enumerate(ranks):
            counts[layer, r] = len(ids)
        if int(counts[layer].sum()) != experts + layout.redundant_experts:
            bad.append(f"serving: expert map layer {layer} has the wrong number of slots")
    return counts


def check_serving(
    plan: Plan,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    profile: RulesProfile,
) -> tuple[list[str], list[str]]:
    """(violations, what was checked) of a serving plan."""
    s = plan.serving
    assert s is not None
    bad: list[str] = []
    checked: list[str] = []
    n = cluster.num_gpus
    if s.cluster_gpus != n:
        bad.append(f"serving: plan says {s.cluster_gpus} GPUs, the cluster has {n}")
    for name in ("ttft_ms", "tpot_ms", "request_rate"):
        if getattr(s, name) != getattr(workload, name):
            bad.append(f"serving: {name} differs from the workload's")
    if plan.layout is not None:
        _check_plan(plan, s, model, cluster, workload, profile, bad, checked)
    elif plan.status in ("optimal", "feasible"):
        bad.append(f"status '{plan.status}' without a layout")
    if s.objective == "latency":
        from placer.serving.latency_check import check_latency_record

        check_latency_record(plan, s, model, cluster, workload, profile, bad, checked)
    else:
        _check_record(plan, s, model, cluster, workload, profile, bad, checked)
    check_tail(plan, s, model, cluster, workload, profile, bad, checked)
    if s.disagg is not None:
        _check_disagg(s, model, cluster, workload, bad, checked)
        from placer.serving.disagg_check import check_disagg_search

        check_disagg_search(
            s.disagg,
            s.tokens_per_s_per_gpu,
            s.max_instance_gpus,
            model,
            cluster,
            workload,
            profile,
            bad,
            checked,
        )
    return bad, checked


def _check_disagg(
    s: ServingRecord,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    bad: list[str],
    checked: list[str],
) -> None:
    """The disaggregated deployment's figures: memory of both instance kinds, prefill, decode
    step, KV transfer, targets, GPU count and throughput (not its search)."""
    from placer.serving.disagg import DecodeProbe, kv_transfer_ns, layout_from_text

    d = s.disagg
    assert d is not None
    n = cluster.num_gpus
    lp, ld = layout_from_text(d.prefill_layout), layout_from_text(d.decode_layout)
    used = d.prefill_instances * lp.gpus + d.decode_instances * ld.gpus
    if used > n or d.idle_gpus != n - used:
        bad.append(f"disagg: {used} GPUs used of {n}, the record says {d.idle_gpus} idle")
    p1 = LayoutProbe(model, cluster, workload, lp).at(1)
    decode_wl = workload.model_copy(update={"ttft_ms": None})
    pc = DecodeProbe(model, cluster, decode_wl, ld).at(d.concurrency)
    if not p1.fits or not pc.fits:
        bad.append("disagg: an instance does not fit memory")
        return
    if (d.prefill_split or d.decode_split) and (d.prefill_split, d.decode_split) != (
        p1.split,
        pc.split,
    ):
        bad.append("disagg: the layers per stage differ from the recomputed splits")
    transfer = kv_transfer_ns(model, cluster, workload, lp.gpus, ld.gpus, used)
    ttft = disagg_ttft_ns(p1.prefill_ns, transfer, pc.step_ns)
    reqs = min(
        d.prefill_instances * NS / p1.prefill_ns,
        d.decode_instances * d.concurrency * NS / pc.step_ns / workload.output_len,
    )
    for name, mine, theirs in (
        ("prefill", p1.prefill_ns / NS, d.prefill_s),
        ("step", pc.step_ns / NS, d.step_s),
        ("KV transfer", transfer / NS, d.kv_transfer_s),
        ("TTFT", ttft / NS, d.ttft_s),
        ("tokens/s per GPU", reqs * workload.output_len / n, d.tokens_per_s_per_gpu),
    ):
        if not _close(mine, theirs):
            bad.append(f"disagg: {name}: record says {theirs:.6g}, recomputed {mine:.6g}")
    if workload.tpot_ms is not None and pc.step_ns > workload.tpot_ms * 1e6:
        bad.append("disagg: TPOT exceeds the target")
    if workload.ttft_ms is not None and ttft > workload.ttft_ms * 1e6:
        bad.append("disagg: TTFT exceeds the target")
    checked.append("disagg: memory, prefill, step, KV transfer, targets, GPUs and throughput")


def _check_plan(
    plan: Plan,
    s: ServingRecord,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    profile: RulesProfile,
    bad: list[str],
    checked: list[str],
) -> None:
    assert plan.layout is not None
    n = cluster.num_gpus
    c = s.concurrency
    layout = plan.layout.to_layout()
    g = layout.gpus
    if s.gpus_per_instance != g or plan.layout.gpus_used != g:
        bad.append(f"serving: the layout uses {g} GPUs, the plan says {s.gpus_per_instance}")
    if s.instances < 1 or s.instances * g > n:
        bad.append(f"serving: {s.instances} instances of {g} GPUs do not fit {n} GPUs")
    if s.idle_gpus != n - s.instances * g:
        bad.append(f"serving: {s.idle_gpus} idle GPUs, recomputed {n - s.instances * g}")
    checked.append("serving: instances x GPUs per instance within the cluster, idle GPUs")
    ev = evaluate(model, cluster, instance_workload(workload, c), layout, profile, plan.expert_map)
    for con in ev.constraints:
        if not con.holds:
            bad.append(f"serving: {con.name} does not hold at concurrency {c} ({con.detail})")
    mine = {gr.id: gr.used_bytes for gr in ev.gpus}
    if {gr.id: gr.used_bytes for gr in plan.gpus} != mine:
        bad.append("serving: the memory ledger differs from the recomputed one")
    checked.append(f"serving: memory of every GPU and the rules at concurrency {c}")
    counts = _counts(model, layout, plan.expert_map, bad)
    split = plan.layout.layers_per_stage
    if sum(split) != model.num_layers or min(split) < 1:
        bad.append("serving: layers_per_stage must cover every layer with no empty stage")
        return
    probe = LayoutProbe(
        model, cluster, workload, layout.model_copy(update={"layers_per_stage": None})
    )
    step = objective_ns(probe.tables(c), split, counts, "throughput")
    pre = objective_ns(probe.prefill_tables, split, counts, "latency")
    tpot, ttft = tpot_ns(workload, c, step, pre), ttft_ns(workload, c, step, pre)
    rate = tokens_per_s(workload, c, step, pre)
    for name, mine_s, theirs in (
        ("step", step / NS, s.step_s),
        ("prefill", pre / NS, s.prefill_s),
        ("TPOT", tpot / NS, s.tpot_s),
        ("TTFT", ttft / NS, s.ttft_s),
        ("tokens/s per instance", rate, s.tokens_per_s_instance),
        ("tokens/s per GPU", s.instances * rate / n, s.tokens_per_s_per_gpu),
    ):
        if not _close(mine_s, theirs):
            bad.append(f"serving: {name}: plan says {theirs:.6g}, recomputed {mine_s:.6g}")
    if workload.tpot_ms is not None and tpot > workload.tpot_ms * 1e6:
        bad.append(f"serving: TPOT {tpot / 1e6:.3f} ms exceeds the target {workload.tpot_ms} ms")
    if workload.ttft_ms is not None and ttft > workload.ttft_ms * 1e6:
        bad.append(f"serving: TTFT {ttft / 1e6:.1f} ms exceeds the target {workload.ttft_ms} ms")
    checked.append("serving: step, prefill, TTFT and TPOT against the targets, throughput")
    o = plan.objective
    if s.objective == "latency":
        if o.value is None or not _close(o.value, tpot / 1e6):
            bad.append("serving: the objective is not the recomputed TPOT")
    elif s.objective == "throughput":
        if o.value is None or not _close(o.value, s.instances * rate / n):
            bad.append("serving: the objective is not the recomputed tokens/s per GPU")
    else:
        need = (workload.request_rate or 0.0) * workload.output_len
        if s.instances * rate < need * (1 - TIE):
            served = s.instances * rate / workload.output_len
            bad.append(
                f"serving: {s.instances} instances serve {served:.4g} requests/s, the workload "
                f"asks {workload.request_rate}"
            )
        if o.value != s.instances * g:
            bad.append("serving: the objective is not instances x GPUs per instance")
    checked.append("serving: objective value")


def _beats(s: ServingRecord, plan: Plan, e: ServingEntry, bound: float, need: float) -> bool:
    """Whether an instance rate ``bound`` of layout ``e`` could beat the plan."""
    value = plan.objective.value
    if value is None:
        return bound > 0
    if s.objective == "throughput":
        return (s.cluster_gpus // e.gpus) * bound / s.cluster_gpus > value * (1 + TIE)
    if bound <= 0:
        return False
    return e.gpus * math.ceil(need / bound * (1 - TIE)) < value


def _check_floors_entry(
    s: ServingRecord,
    plan: Plan,
    e: ServingEntry,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    need: float,
    bad: list[str],
) -> None:
    """A layout pruned by its attention-TP floors: the rate bound recomputed, and unable to
    beat the plan."""
    from placer.serving.tail import floors_ns, instance_rate_bound

    rate = instance_rate_bound(workload, *floors_ns(model, cluster, workload, e.tp))
    if e.status != "pruned" or e.ceiling is None or not _close(rate, e.ceiling):
        bad.append(f"serving: {e.layout}: floors rate recomputed {rate:.6g}")
    elif _beats(s, plan, e, rate, need):
        bad.append(f"serving: {e.layout} was pruned by floors that could beat the plan")


def _check_record(
    plan: Plan,
    s: ServingRecord,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    profile: RulesProfile,
    bad: list[str],
    checked: list[str],
) -> None:
    space = enumerate_layouts(model, cluster, profile, s.max_instance_gpus)
    by_name = {e.layout: e for e in s.entries}
    missing = [lay.describe() for lay in space.legal if lay.describe() not in by_name]
    if missing:
        bad.append(f"serving: {len(missing)} legal layouts have no record, e.g. {missing[0]}")
    need = (workload.request_rate or 0.0) * workload.output_len
    cache: dict[object, object] = {}
    open_ranges = 0
    for lay in space.legal:
        e = by_name.get(lay.describe())
        if e is None:
            continue
        if e.by_floors:
            _check_floors_entry(s, plan, e, model, cluster, workload, need, bad)
            continue
        if not e.leaves:
            if e.status == "pruned" and s.objective == "gpus" and plan.objective.value is not None:
                if e.gpus < plan.objective.value:
                    bad.append(f"serving: {e.layout} was pruned but one instance is smaller")
                continue
            if e.status == "unresolved":
                open_ranges += 1
                continue
        probe = LayoutProbe(model, cluster, workload, lay, cache)
        if e.ceiling is not None and not e.leaves:
            one = probe.loose(1)
            ceiling = tokens_per_s_ceiling(workload, one.step_bound_ns, one.prefill_bound_ns)
            if not _close(ceiling, e.ceiling) or cap_check(workload, one, bound=True):
                bad.append(f"serving: {e.layout}: ceiling recomputed {ceiling:.6g}")
            elif _beats(s, plan, e, ceiling, need):
                open_ranges += 1
            continue
        if e.memory_limit == 0 and probe.memory_bound_fits(1):
            bad.append(f"serving: {e.layout} holds one request, the record says none")
        if e.memory_limit and probe.memory_bound_fits(e.memory_limit + 1):
            bad.append(f"serving: {e.layout} holds {e.memory_limit + 1} requests, record says not")
        if e.memory_limit and not probe.memory_bound_fits(e.memory_limit):
            bad.append(f"serving: {e.layout} does not hold {e.memory_limit} requests")
        nxt = 1
        for leaf in e.leaves:
            if leaf.low != nxt or leaf.high < leaf.low:
                bad.append(f"serving: {e.layout}: the ranges do not cover 1..{e.memory_limit}")
                break
            nxt = leaf.high + 1
            p = probe.at(leaf.low) if leaf.tight else probe.loose(leaf.low)
            why = cap_check(workload, p, bound=True)
            if leaf.excluded:
                if why != leaf.excluded:
                    bad.append(
                        f"serving: {e.layout} at {leaf.low}: excluded by {leaf.excluded} in "
                        f"the record, recomputed {why or 'allowed'}"
                    )
                continue
            ub = tokens_per_s_bound(
                workload, leaf.low, leaf.high, p.step_bound_ns, p.prefill_bound_ns
            )
            if why is not None or not _close(ub, leaf.bound):
                bad.append(
                    f"serving: {e.layout} {leaf.low}..{leaf.high}: bound recomputed {ub:.6g}"
                )
            elif _beats(s, plan, e, ub, need):
                open_ranges += 1
        else:
            if e.leaves and nxt != e.memory_limit + 1:
                bad.append(f"serving: {e.layout}: the ranges do not cover 1..{e.memory_limit}")
    if plan.status == "optimal" and open_ranges:
        bad.append(f"serving: status optimal but {open_ranges} ranges could still beat the plan")
    checked.append(
        f"serving search record: {len(space.legal)} layouts, memory limits, every range's bound"
    )


def check_serving_without_record(
    plan: Plan,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    profile: RulesProfile,
) -> tuple[list[str], list[str], list[str]]:
    """(violations, what was checked, what was taken on trust) of a serving plan that
    deploys nothing: ``unknown`` claims nothing; ``infeasible`` is re-proven layout by layout.

    TPOT, TTFT and memory only grow with the concurrency (docs/serving.md, "Proof"), so a
    layout that misses a target or memory at concurrency 1 misses it at every concurrency.
    A layout whose bound figures pass at concurrency 1 is re-checked with its achievable
    figures; with the ``gpus`` objective a layout that meets the targets is excluded only
    when no instance count on the cluster can reach the request rate by the rate ceiling.
    """
    bad: list[str] = []
    o = plan.objective
    if plan.layout is not None or o.value is not None or o.bound is not None or o.gap is not None:
        bad.append(
            "serving: a plan without a serving record must deploy nothing and claim "
            "no value, bound or gap"
        )
    if plan.status == "unknown":
        return bad, ["serving: status unknown, nothing claimed"], []
    if plan.status != "infeasible":
        bad.append(f"serving: status '{plan.status}' without a serving record")
        return bad, [], []
    if plan.certificate.solver.objective == "latency":
        # The concurrency asked for is recorded with a plan's serving record only.
        return bad, [], ["serving: objective latency declared infeasible (not re-proven)"]
    n = cluster.num_gpus
    need = (workload.request_rate or 0.0) * workload.output_len
    limit = _larger_excluded(plan, model, cluster, workload, profile, bad)
    space = enumerate_layouts(model, cluster, profile, limit)
    cache: dict[object, object] = {}
    trusted: list[str] = []
    for lay in space.legal:
        probe = LayoutProbe(model, cluster, workload, lay, cache)
        one = probe.loose(1)
        if cap_check(workload, one, bound=True) is not None:
            continue  # excluded at every concurrency by its bound figures
        if workload.request_rate is not None:
            ceiling = tokens_per_s_ceiling(workload, one.step_bound_ns, one.prefill_bound_ns)
            if (n // lay.gpus) * ceiling < need:
                continue  # no instance count reaches the rate
            trusted.append(f"serving: {lay.describe()} cannot reach the rate (not re-proven)")
            continue
        if cap_check(workload, probe.at(1), bound=False) is None:
            bad.append(
                f"serving: declared infeasible, but {lay.describe()} meets the targets and "
                "memory at concurrency 1"
            )
        else:
            trusted.append(
                f"serving: {lay.describe()} misses the targets by its best split at "
                "concurrency 1 but not by its bound (split optimality taken from the DP)"
            )
    checked = [f"serving: infeasibility re-proven over {len(space.legal)} legal layouts"]
    return bad, checked, trusted


def check_tail(
    plan: Plan,
    s: ServingRecord,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    profile: RulesProfile,
    bad: list[str],
    checked: list[str],
) -> None:
    """The bound on instances larger than the searched ones (placer/serving/tail.py):
    present whenever such instances fit the cluster, re-derived term by term, and (for
    ``optimal``) unable to beat the plan."""
    from placer.serving.tail import gpus_for_rate, tail_bound, tpot_floor_ns

    n = cluster.num_gpus
    t = s.tail
    if s.max_instance_gpus >= n:
        if t is not None:
            bad.append("serving: a tail bound on a cluster whose every instance was searched")
        return
    if t is None or t.above_gpus != s.max_instance_gpus:
        bad.append(
            f"serving: instances of more than {s.max_instance_gpus} GPUs fit the cluster but "
            "no tail bound covers them"
        )
        return
    mine = tail_bound(model, cluster, workload, profile, t.above_gpus)
    if [x.tp for x in mine.terms] != [x.tp for x in t.terms]:
        bad.append("serving: the tail bound does not cover every attention TP degree")
        return
    for a, b in zip(mine.terms, t.terms, strict=True):
        for name in ("step_floor_s", "prefill_floor_s", "instance_rate", "per_gpu"):
            if not _close(getattr(a, name), getattr(b, name)):
                bad.append(
                    f"serving: tail bound tp {a.tp}: {name} recomputed "
                    f"{getattr(a, name):.6g}, the record says {getattr(b, name):.6g}"
                )
    if not _close(mine.per_gpu, t.per_gpu):
        bad.append(f"serving: tail bound recomputed {mine.per_gpu:.6g} tokens/s per GPU")
    value = plan.objective.value
    floor = tpot_floor_ns(mine, workload, s.carried or 1, n) / NS
    if s.objective == "latency" and (t.tpot_floor_s is None or not _close(floor, t.tpot_floor_s)):
        bad.append(f"serving: tail TPOT floor recomputed {floor:.6g} s")
    if plan.status == "optimal" and value is not None:
        need = (workload.request_rate or 0.0) * workload.output_len
        if s.objective == "latency":
            beats = floor * 1e3 < value * (1 - TIE)
        elif s.objective == "throughput":
            beats = mine.per_gpu > value * (1 + TIE)
        else:
            beats = math.ceil(gpus_for_rate(mine, need) * (1 - TIE)) < value
        if beats:
            bad.append("serving: status optimal but the tail bound could beat the plan")
    checked.append(
        f"serving: tail bound on instances of more than {t.above_gpus} GPUs "
        f"({len(t.terms)} attention TP degrees)"
    )


def _larger_excluded(
    plan: Plan,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    profile: RulesProfile,
    bad: list[str],
) -> int:
    """The largest instance an ``infeasible`` claim is re-proven for layout by layout (the
    search's first cap, placer.serving.solve.first_cap); larger instances must be excluded
    by the tail bound (placer/serving/tail.py), else the claim is a violation."""
    from placer.serving.solve import AUTO_INSTANCE_CAP
    from placer.serving.tail import gpus_for_rate, tail_bound

    n = cluster.num_gpus
    limit = min(n, plan.certificate.solver.max_gpus or AUTO_INSTANCE_CAP)
    if limit >= n:
        return limit
    tail = tail_bound(model, cluster, workload, profile, limit)
    need = (workload.request_rate or 0.0) * workload.output_len
    if workload.request_rate is not None:
        excluded = gpus_for_rate(tail, need) > n
    else:
        excluded = tail.per_gpu <= 0.0
    if not excluded:
        bad.append(
            f"serving: declared infeasible, but the tail bound does not exclude instances of "
            f"more than {limit} GPUs"
        )
    return limit
