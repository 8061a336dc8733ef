"""When nothing fits: which constraint families conflict, and the smallest change that fits.

Every fix is computed, not guessed: a change is reported only when a legal
layout is found that fits with it (the DP split under balanced expert slots is
a witness). The conflicting families come from CP-SAT's assumptions core on the
layout that came closest to fitting, solved with one worker as the OR-Tools
guide asks for core extraction.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ortools.sat.python import cp_model

from placer.budget import Budget
from placer.cluster import ClusterSpec
from placer.config import SolveConfig
from placer.dtypes import BYTES_PER_ELEMENT
from placer.layout import Layout
from placer.ledger import weight_dtypes
from placer.model import ModelSpec
from placer.plan import Infeasibility, SearchEntry
from placer.rules import RulesProfile, get_profile
from placer.search import placement_model as cpsat
from placer.search.heuristic import fitting_layout
from placer.search.tables import LayoutTables, build_tables, memory_lower_bound
from placer.workload import Workload

#: Search for the fewest GPUs stops here (a model needing more is reported as such).
MAX_GPUS_SEARCHED = 4096


def min_gpus(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    profile: RulesProfile,
    above: int | None = None,
    budget: Budget | None = None,
) -> tuple[int, Layout] | None:
    """The fewest GPUs of the cluster's type, more than ``above`` (default: the cluster's
    own count), on which a layout fits with balanced expert slots (a witness). Gives up
    (None) when ``budget`` runs out."""
    if len(cluster.groups) != 1:
        return None
    cap = math.floor(cluster.groups[0].gpu.memory_bytes * workload.memory_utilization)
    # Every weight is held at least once: fewer GPUs than weights / capacity cannot fit.
    t1 = build_tables(
        model, cluster.with_gpus(1), workload, Layout(), "throughput", with_costs=False
    )
    weights = int(t1.base.sum() + (t1.slots * t1.unit).sum() + t1.first + t1.last)
    floor = cluster.num_gpus if above is None else above
    start = max(floor + 1, -(-weights // max(cap - workload.runtime_reserve_bytes, 1)))
    if cap <= workload.runtime_reserve_bytes:
        return None  # the reserve alone fills a GPU: no count helps
    for g in range(start, MAX_GPUS_SEARCHED + 1):
        if budget is not None and budget.expired():
            return None
        bigger = cluster.with_gpus(g)
        layout = fitting_layout(model, bigger, workload, profile, g)
        if layout is not None:
            return g, layout
    return None


def _largest_fitting(
    lo: int,
    hi: int,
    fits: Callable[[int], bool],
    budget: Budget | None = None,
) -> int | None:
    """Largest value in [lo, hi] for which the monotone predicate holds (None if none does,
    or the budget runs out first)."""
    if (budget is not None and budget.expired()) or not fits(lo):
        return None
    while lo < hi:
        if budget is not None and budget.expired():
            return None
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


#: Share of the time left that extracting CP-SAT's infeasibility core may take; the rest is
#: for searching fixes.
EXPLAIN_SHARE = 1 / 2


def explain_layout(t: LayoutTables, config: SolveConfig, budget: Budget) -> list[str]:
    """Names of the constraint families in CP-SAT's core for an infeasible layout (empty
    when ``budget`` leaves no time to find it)."""
    if budget.expired():
        return []
    model, v = cpsat.build_model(t, "throughput")
    cpsat.enforce_all(model, v, explain=True)
    solver = cp_model.CpSolver()
    # The OR-Tools guide asks for one worker when extracting an assumptions core.
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = config.seed
    budget.limit_cpsat(solver.parameters, budget.share(EXPLAIN_SHARE))
    status = solver.solve(model)
    budget.charge(solver.deterministic_time)
    if status != cp_model.INFEASIBLE:
        return []
    names = {lit.index: name for name, lit in v.families.items()}
    return sorted(
        names[i] for i in solver.sufficient_assumptions_for_infeasibility() if i in names
    )


def explain_infeasible(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    config: SolveConfig,
    entries: list[SearchEntry],
    budget: Budget | None = None,
) -> Infeasibility:
    """Why no legal layout fits, and the smallest changes that would fit (each fix searched
    while ``budget``, by default ``config``'s limit, lasts)."""
    budget = budget or Budget(config.time_limit_s, config.deterministic)
    profile = get_profile(config.profile)
    n = cluster.num_gpus
    if not entries:
        return Infeasibility(
            reason=f"no layout of this model is legal on {n} GPUs under the "
            f"'{profile.name}' rules profile",
            conflicts=("rules",),
            closest_layout=None,
            fixes=(),
            min_gpus=None,
        )
    ratio, closest, tables = _closest_layout(model, cluster, workload, entries)
    if ratio > 1:
        conflicts = ["memory (aggregate: the layout's GPUs hold less than it needs)"]
    else:
        conflicts = explain_layout(tables, config, budget) or ["memory"]
    fixes: list[str] = []
    found = min_gpus(model, cluster, workload, profile, budget=budget)
    if found is not None:
        g, lay = found
        fixes.append(
            f"use {g} GPUs of this type (fits as {lay.describe()}, layers per stage "
            f"{list(lay.layers_per_stage or ())})"
        )
    fixes += _dtype_fix(model, cluster, workload, profile, budget)
    fixes += _shrink_fixes(model, cluster, workload, profile, budget)
    reason = (
        f"none of the {len(entries)} legal layouts fits in "
        f"{workload.memory_utilization:.0%} of the GPUs' memory; the closest, "
        f"{closest.describe()}, needs {ratio:.2f}x what its GPUs can hold in aggregate"
    )
    return Infeasibility(
        reason=reason,
        conflicts=tuple(conflicts),
        closest_layout=closest.describe(),
        fixes=tuple(fixes),
        min_gpus=found[0] if found else None,
    )


def _closest_layout(
    model: ModelSpec, cluster: ClusterSpec, workload: Workload, entries: list[SearchEntry]
) -> tuple[float, Layout, LayoutTables]:
    """The layout with the smallest ratio of bytes needed to bytes its GPUs hold."""
    best: tuple[float, Layout, LayoutTables] | None = None
    for e in entries:
        lay = Layout(tp=e.tp, pp=e.pp, ep=e.ep, etp=e.etp, dp_attn=e.dp_attn)
        t = build_tables(model, cluster, workload, lay, "throughput", with_costs=False)
        need, have = memory_lower_bound(t)
        ratio = need / have
        if best is None or ratio < best[0]:
            best = (ratio, lay, t)
    assert best is not None
    return best


def _dtype_fix(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    profile: RulesProfile,
    budget: Budget,
) -> list[str]:
    """The widest smaller weight dtype (fp8, then int4) that fits on these GPUs."""
    n = cluster.num_gpus
    current = BYTES_PER_ELEMENT[weight_dtypes(model, workload)[0]]
    for dt in ("fp8", "int4"):
        if BYTES_PER_ELEMENT[dt] >= current or budget.expired():
            continue
        smaller = workload.model_copy(update={"weight_dtype": dt, "expert_dtype": dt})
        lay = fitting_layout(model, cluster, smaller, profile, n)
        if lay is not None:
            return [f"store weights in {dt} (fits on {n} GPUs as {lay.describe()})"]
    return []


def _shrink_fixes(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    profile: RulesProfile,
    budget: Budget,
) -> list[str]:
    """The largest context, then the largest batch, that fit on these GPUs as they are."""
    n = cluster.num_gpus
    shrink = (
        ("context", workload.kv_tokens, "shorten the context to {} tokens per request (from {})"),
        ("batch", workload.batch, "serve at most {} concurrent requests (from {})"),
    )
    fixes = []
    for name, now, text in shrink:
        if now <= 1:
            continue

        def fits(v: int, name: str = name) -> bool:
            smaller = workload.model_copy(update={name: v})
            return fitting_layout(model, cluster, smaller, profile, n) is not None

        best_value = _largest_fitting(1, now - 1, fits, budget)
        if best_value is not None:
            fixes.append(text.format(best_value, now))
    return fixes
