"""``placer verify`` for objective ``latency`` of the serving search (numpy only): the plan
carries its requests, and every legal layout's record (its share of the requests, its
exclusion or TPOT floor) is re-derived; for ``optimal``, no floor is below the plan's TPOT
(docs/serving.md, "Latency")."""

from __future__ import annotations

from placer.cluster import ClusterSpec
from placer.model import ModelSpec
from placer.plan import Plan
from placer.rules import RulesProfile
from placer.search.space import enumerate_layouts
from placer.serving.check import close
from placer.serving.latency import floors_tpot_ns, share, tpot_floor
from placer.serving.probe import LayoutProbe
from placer.serving.record import ServingRecord
from placer.serving.search import TIE, cap_check
from placer.serving.tail import floors_ns
from placer.serving.timing import NS
from placer.workload import Workload


def check_latency_record(
    plan: Plan,
    s: ServingRecord,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    profile: RulesProfile,
    bad: list[str],
    checked: list[str],
) -> None:
    """See the module docstring; violations go to ``bad``."""
    n = cluster.num_gpus
    carried = s.carried
    if carried is None or carried < 1:
        bad.append("serving: objective latency without the requests it carries")
        return
    if plan.layout is not None and s.gpus_per_instance is not None:
        k, c = share(n, s.gpus_per_instance, carried)
        if (s.instances, s.concurrency) != (k, c):
            bad.append(
                f"serving: {carried} requests over {s.gpus_per_instance}-GPU instances are "
                f"{k} x {c}, the plan says {s.instances} x {s.concurrency}"
            )
    space = enumerate_layouts(model, cluster, profile, s.max_instance_gpus)
    by_name = {e.layout: e for e in s.entries}
    cache: dict[object, object] = {}
    pairs: dict[int, tuple[float, float]] = {}
    value = plan.objective.value
    beaten = 0
    for lay in space.legal:
        e = by_name.get(lay.describe())
        if e is None:
            bad.append(f"serving: {lay.describe()} has no record")
            continue
        if e.status == "unresolved" and e.tpot_floor_s is None:
            beaten += 1
            continue
        if e.by_floors:
            if lay.tp not in pairs:
                pairs[lay.tp] = floors_ns(model, cluster, workload, lay.tp)
            pair = pairs[lay.tp]
            floor = floors_tpot_ns(workload, pair, n, lay.gpus, carried) / NS
            if e.status != "pruned" or e.tpot_floor_s is None or not close(floor, e.tpot_floor_s):
                bad.append(f"serving: {e.layout}: floors TPOT recomputed {floor:.6g} s")
            elif value is not None and floor * 1e3 < value * (1 - TIE):
                beaten += 1
            continue
        probe = LayoutProbe(model, cluster, workload, lay, cache)
        c = share(n, lay.gpus, carried)[1]
        p = probe.at(c) if e.tight else probe.loose(c)
        why = cap_check(workload, p, bound=True)
        if e.status == "infeasible":
            if why is None or why != e.cap_reason:
                bad.append(f"serving: {e.layout} excluded by {e.cap_reason}, recomputed {why}")
            continue
        floor = tpot_floor(workload, p) / NS
        if why is not None or e.tpot_floor_s is None or not close(floor, e.tpot_floor_s):
            bad.append(f"serving: {e.layout}: TPOT floor recomputed {floor:.6g} s")
        elif value is not None and floor * 1e3 < value * (1 - TIE):
            beaten += 1
    if plan.status == "optimal" and beaten:
        bad.append(f"serving: status optimal but {beaten} layouts could have a lower TPOT")
    if plan.status == "infeasible":
        _check_infeasible(s, workload, bad)
    checked.append(
        f"serving latency record: {len(space.legal)} layouts, each one's share of {carried} "
        "requests and TPOT floor"
    )


def _check_infeasible(s: ServingRecord, workload: Workload, bad: list[str]) -> None:
    """``infeasible``: every searched layout excluded (each exclusion re-derived above), and
    no larger instance meets the TPOT target by the tail's floor (recomputed by
    :func:`placer.serving.tail_check.check_tail`)."""
    open_layouts = [e.layout for e in s.entries if e.status != "infeasible"]
    if open_layouts:
        bad.append(
            f"serving: declared infeasible, but {len(open_layouts)} layouts were not excluded, "
            f"e.g. {open_layouts[0]}"
        )
    t = s.tail
    if t is not None and (
        workload.tpot_ms is None
        or t.tpot_floor_s is None
        or t.tpot_floor_s * 1e3 <= workload.tpot_ms
    ):
        bad.append(
            "serving: declared infeasible, but the tail bound does not exclude larger instances"
        )
