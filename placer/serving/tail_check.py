"""``placer verify`` for the serving search's bound on instances larger than the searched
ones (placer/serving/tail.py, docs/certificate.md): the tail bound re-derived term by term,
layouts pruned by their attention-TP floors, and infeasible claims on large clusters."""

from __future__ import annotations

import math

from placer.cluster import ClusterSpec
from placer.model import ModelSpec
from placer.plan import Plan
from placer.rules import RulesProfile
from placer.serving.check import _beats, close
from placer.serving.record import ServingEntry, ServingRecord
from placer.serving.search import TIE
from placer.serving.timing import NS
from placer.workload import Workload


def check_floors_entry(
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
    if e.status != "pruned" or e.ceiling is None or not close(rate, e.ceiling):
        bad.append(f"serving: {e.layout}: floors rate recomputed {rate:.6g}")
    elif _beats(s, plan, e, rate, need):
        bad.append(f"serving: {e.layout} was pruned by floors that could beat the plan")


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
            if not close(getattr(a, name), getattr(b, name)):
                bad.append(
                    f"serving: tail bound tp {a.tp}: {name} recomputed "
                    f"{getattr(a, name):.6g}, the record says {getattr(b, name):.6g}"
                )
    if not close(mine.per_gpu, t.per_gpu):
        bad.append(f"serving: tail bound recomputed {mine.per_gpu:.6g} tokens/s per GPU")
    value = plan.objective.value
    floor = tpot_floor_ns(mine, workload, s.carried or 1, n) / NS
    if s.objective == "latency" and (t.tpot_floor_s is None or not close(floor, t.tpot_floor_s)):
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


def tail_excludes(
    s: ServingRecord,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    profile: RulesProfile,
    bad: list[str],
) -> None:
    """An ``infeasible`` claim on a cluster larger than the searched instances: the tail
    bound (placer/serving/tail.py), recomputed here, must exclude every larger instance."""
    from placer.serving.tail import gpus_for_rate, tail_bound

    n = cluster.num_gpus
    if s.max_instance_gpus >= n:
        return
    tail = tail_bound(model, cluster, workload, profile, s.max_instance_gpus)
    need = (workload.request_rate or 0.0) * workload.output_len
    if workload.request_rate is not None:
        excluded = gpus_for_rate(tail, need) > n
    else:
        excluded = tail.per_gpu <= 0.0
    if not excluded:
        bad.append(
            f"serving: declared infeasible, but the tail bound does not exclude instances of "
            f"more than {s.max_instance_gpus} GPUs"
        )
