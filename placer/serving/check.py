"""``placer verify`` for serving plans: re-check the targets, the concurrency bound from
memory, the throughput and the search record, with numpy only (no OR-Tools).

Everything is recomputed from the plan's inputs with the same cost model and ledger: the
instance's memory at the chosen concurrency, its decode step and prefill for the plan's own
split and expert map, TTFT and TPOT against the targets, the instance count and the
objective; then, for every legal layout, that its recorded concurrency ranges cover
``1..memory_limit``, that ``memory_limit + 1`` breaks the aggregate memory condition, and
that every range's bound (or exclusion) is what the record says and cannot beat the plan,
and that every layout's best concurrency, rate and instance count are what the record says
(docs/serving.md, "Proof"). A plan that deploys nothing (infeasible or unknown) carries the
same record, so its status is re-proven the same way: nothing is taken on trust.
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


def close(a: float, b: float | None, rel: float = 1e-9) -> bool:
    """Equal up to the float noise of recomputing a figure (relative ``rel``); a missing
    recorded figure (None) is never close. Every serving checker compares with this."""
    if b is None:
        return False
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
    else:
        _check_nothing_deployed(plan, s, bad, checked)
    if s.objective == "latency":
        from placer.serving.latency_check import check_latency_record

        check_latency_record(plan, s, model, cluster, workload, profile, bad, checked)
    else:
        _check_record(plan, s, model, cluster, workload, profile, bad, checked)
    from placer.serving.tail_check import check_tail

    check_tail(plan, s, model, cluster, workload, profile, bad, checked)
    if s.disagg is not None:
        _check_disagg(s, model, cluster, workload, bad, checked)
        from placer.serving.disagg_check import check_disagg_search

        check_disagg_search(
            s.disagg,
            s.tokens_per_s_per_gpu or 0.0,  # a disaggregated record needs a deployment (above)
            s.max_instance_gpus,
            model,
            cluster,
            workload,
            profile,
            bad,
            checked,
        )
    return bad, checked


def _check_nothing_deployed(
    plan: Plan, s: ServingRecord, bad: list[str], checked: list[str]
) -> None:
    """A plan without a layout: status infeasible or unknown, no deployment figures, and no
    value, bound or gap (its record is re-proven by :func:`_check_record`)."""
    if plan.status in ("optimal", "feasible"):
        bad.append(f"status '{plan.status}' without a layout")
    o = plan.objective
    if o.value is not None or o.bound is not None or o.gap is not None or s.deploys:
        bad.append(
            "serving: a plan without a layout must deploy nothing and claim no value, bound or gap"
        )
    if s.disagg is not None:
        bad.append("serving: a disaggregated record on a plan that deploys nothing")
    checked.append(f"serving: status {plan.status}, nothing deployed")


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
        if not close(mine, theirs):
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
    c, k = s.concurrency, s.instances
    if c is None or k is None or s.idle_gpus is None:
        bad.append("serving: a plan with a layout needs its deployment (instances, concurrency)")
        return
    layout = plan.layout.to_layout()
    g = layout.gpus
    if s.gpus_per_instance != g or plan.layout.gpus_used != g:
        bad.append(f"serving: the layout uses {g} GPUs, the plan says {s.gpus_per_instance}")
    if k < 1 or k * g > n:
        bad.append(f"serving: {k} instances of {g} GPUs do not fit {n} GPUs")
    if s.idle_gpus != n - k * g:
        bad.append(f"serving: {s.idle_gpus} idle GPUs, recomputed {n - k * g}")
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
        ("tokens/s per GPU", k * rate / n, s.tokens_per_s_per_gpu),
    ):
        if not close(mine_s, theirs):
            bad.append(f"serving: {name}: plan says {theirs}, recomputed {mine_s:.6g}")
    if workload.tpot_ms is not None and tpot > workload.tpot_ms * 1e6:
        bad.append(f"serving: TPOT {tpot / 1e6:.3f} ms exceeds the target {workload.tpot_ms} ms")
    if workload.ttft_ms is not None and ttft > workload.ttft_ms * 1e6:
        bad.append(f"serving: TTFT {ttft / 1e6:.1f} ms exceeds the target {workload.ttft_ms} ms")
    checked.append("serving: step, prefill, TTFT and TPOT against the targets, throughput")
    o = plan.objective
    if s.objective == "latency":
        if o.value is None or not close(o.value, tpot / 1e6):
            bad.append("serving: the objective is not the recomputed TPOT")
    elif s.objective == "throughput":
        if o.value is None or not close(o.value, k * rate / n):
            bad.append("serving: the objective is not the recomputed tokens/s per GPU")
    else:
        need = (workload.request_rate or 0.0) * workload.output_len
        if k * rate < need * (1 - TIE):
            served = k * rate / workload.output_len
            bad.append(
                f"serving: {k} instances serve {served:.4g} requests/s, the workload "
                f"asks {workload.request_rate}"
            )
        if o.value != k * g:
            bad.append("serving: the objective is not instances x GPUs per instance")
    checked.append("serving: objective value")


def _deployment(s: ServingRecord, gpus: int, rate: float, need: float) -> tuple[int, float | None]:
    """Instances of a layout at instance rate ``rate`` by the search's rule (all that fit for
    throughput; the fewest reaching the request rate for gpus), and the objective they give,
    None when the cluster cannot hold them."""
    n = s.cluster_gpus
    if s.objective == "throughput":
        k = n // gpus
        return k, (k * rate / n if k >= 1 else None)
    k = math.ceil(need / rate * (1 - TIE)) if need > 0 else 1
    return k, (float(k * gpus) if k * gpus <= n else None)


def _beats(s: ServingRecord, plan: Plan, e: ServingEntry, bound: float, need: float) -> bool:
    """Whether an instance rate ``bound`` of layout ``e`` could beat the plan, or, in a plan
    that deploys nothing, give a deployment at all."""
    if bound <= 0:
        return False
    value = plan.objective.value
    if value is None:
        return _deployment(s, e.gpus, bound, need)[1] is not None
    if s.objective == "throughput":
        return (s.cluster_gpus // e.gpus) * bound / s.cluster_gpus > value * (1 + TIE)
    return e.gpus * math.ceil(need / bound * (1 - TIE)) < value


def _check_best(
    s: ServingRecord,
    e: ServingEntry,
    probe: LayoutProbe,
    workload: Workload,
    need: float,
    bad: list[str],
) -> float:
    """A layout's recorded best concurrency, rate, instances and value, re-derived; returns
    the verified rate (0 when the record names no concurrency)."""
    if e.concurrency is None:
        if e.rate is not None or e.value is not None or e.status == "solved":
            bad.append(f"serving: {e.layout}: a rate or value without a concurrency")
        return 0.0
    c = e.concurrency
    if c < 1 or (e.leaves and c > e.memory_limit):
        bad.append(f"serving: {e.layout}: concurrency {c} outside 1..{e.memory_limit}")
        return 0.0
    p = probe.at(c)
    why = cap_check(workload, p, bound=False)
    if why is not None:
        bad.append(f"serving: {e.layout}: concurrency {c} breaks {why} (recomputed)")
        return 0.0
    rate = tokens_per_s(workload, c, p.step_ns, p.prefill_ns)
    if not close(rate, e.rate):
        bad.append(f"serving: {e.layout} at {c}: rate {e.rate}, recomputed {rate:.6g}")
        return 0.0
    k, value = _deployment(s, e.gpus, rate, need)
    if e.instances != k or (value is None) != (e.value is None):
        bad.append(
            f"serving: {e.layout}: {e.instances} instances, value {e.value}; recomputed "
            f"{k}, {value}"
        )
    elif value is not None and not close(value, e.value):
        bad.append(f"serving: {e.layout}: value {e.value}, recomputed {value:.6g}")
    return rate


def _check_bound(e: ServingEntry, rate: float, bad: list[str]) -> None:
    """The entry's summary bound: its ceiling, or the best of its rate and its ranges."""
    if e.bound is None:
        return
    want = e.ceiling if e.ceiling is not None else max([rate, *(f.bound for f in e.leaves)])
    if not close(want, e.bound):
        bad.append(f"serving: {e.layout}: bound {e.bound}, recomputed {want:.6g}")


def _check_ranges(
    s: ServingRecord,
    plan: Plan,
    e: ServingEntry,
    probe: LayoutProbe,
    workload: Workload,
    need: float,
    rate: float,
    bad: list[str],
) -> int:
    """The memory limit and every concurrency range of one layout, re-derived; returns how
    many ranges could still beat the plan (or deploy, in a plan without one). A range whose
    bound does not exceed the layout's own verified rate is settled by that rate."""
    open_ranges = 0
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
            return open_ranges
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
        ub = tokens_per_s_bound(workload, leaf.low, leaf.high, p.step_bound_ns, p.prefill_bound_ns)
        if why is not None or not close(ub, leaf.bound):
            bad.append(f"serving: {e.layout} {leaf.low}..{leaf.high}: bound recomputed {ub:.6g}")
        elif ub > rate * (1 + TIE) and _beats(s, plan, e, ub, need):
            open_ranges += 1
    if e.leaves and nxt != e.memory_limit + 1:
        bad.append(f"serving: {e.layout}: the ranges do not cover 1..{e.memory_limit}")
    return open_ranges


def _check_entry(
    s: ServingRecord,
    plan: Plan,
    e: ServingEntry,
    probe: LayoutProbe,
    workload: Workload,
    need: float,
    bad: list[str],
) -> int:
    """One layout's record re-derived; returns how many of its ranges (or its own best)
    could still beat the plan, or deploy in a plan without one."""
    if not e.leaves and e.ceiling is None:
        if e.status == "pruned" and s.objective == "gpus" and plan.objective.value is not None:
            if e.gpus < plan.objective.value:
                bad.append(f"serving: {e.layout} was pruned but one instance is smaller")
            return 0
        if e.status == "unresolved":
            return 1  # never searched: it could be anything
    if e.ceiling is not None and not e.leaves:
        one = probe.loose(1)
        ceiling = tokens_per_s_ceiling(workload, one.step_bound_ns, one.prefill_bound_ns)
        if not close(ceiling, e.ceiling) or cap_check(workload, one, bound=True):
            bad.append(f"serving: {e.layout}: ceiling recomputed {ceiling:.6g}")
            return 0
        return 1 if _beats(s, plan, e, ceiling, need) else 0
    rate = _check_best(s, e, probe, workload, need, bad)
    _check_bound(e, rate, bad)
    own = 1 if _beats(s, plan, e, rate, need) else 0
    return own + _check_ranges(s, plan, e, probe, workload, need, rate, bad)


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
    """Every legal instance layout's record re-derived; optimal and infeasible need every
    layout settled, and instances larger than the searched ones ruled out by the tail bound
    (:mod:`placer.serving.tail_check`)."""
    from placer.serving.tail_check import check_floors_entry, tail_excludes

    if plan.status == "infeasible":
        tail_excludes(s, model, cluster, workload, profile, bad)
    space = enumerate_layouts(model, cluster, profile, s.max_instance_gpus)
    by_name = {e.layout: e for e in s.entries}
    missing = [lay.describe() for lay in space.legal if lay.describe() not in by_name]
    if missing:
        bad.append(f"serving: {len(missing)} legal layouts have no record, e.g. {missing[0]}")
    if len(by_name) != len(s.entries) or len(s.entries) != len(space.legal):
        bad.append(
            f"serving: {len(s.entries)} entries for {len(space.legal)} legal layouts (one each)"
        )
    need = (workload.request_rate or 0.0) * workload.output_len
    cache: dict[object, object] = {}
    open_ranges = 0
    for lay in space.legal:
        e = by_name.get(lay.describe())
        if e is None:
            continue
        if e.model_dump(include=set(lay.record_fields())) != lay.record_fields():
            bad.append(f"serving: {e.layout}: its degrees or GPU count differ from its name")
            continue
        if e.by_floors:
            check_floors_entry(s, plan, e, model, cluster, workload, need, bad)
            continue
        probe = LayoutProbe(model, cluster, workload, lay, cache)
        open_ranges += _check_entry(s, plan, e, probe, workload, need, bad)
    if plan.status == "optimal" and open_ranges:
        bad.append(f"serving: status optimal but {open_ranges} ranges could still beat the plan")
    if plan.status == "infeasible" and open_ranges:
        bad.append(
            f"serving: status infeasible but {open_ranges} layouts or ranges could still "
            "serve within the targets"
        )
    checked.append(
        f"serving search record: {len(space.legal)} layouts, memory limits, every range's "
        "bound, every layout's best concurrency, rate and instances"
    )
