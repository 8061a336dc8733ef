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

from collections.abc import Callable

import numpy as np

from placer.balance.loads import LoadStats
from placer.budget import Budget
from placer.calibration import Calibration, active_calibration, use_calibration
from placer.cluster import ClusterSpec
from placer.collectives import use_engine
from placer.config import SolveConfig
from placer.exceptions import InvalidInputError
from placer.limits import check_scale
from placer.model import ModelSpec
from placer.plan import Plan, SearchEntry, digest
from placer.rules import get_profile
from placer.search.assemble import (
    Candidate,
    Incumbent,
    assemble_plan,
    candidate_entry,
    layout_entry,
)

# Re-exported: the serving search builds its plans with these.
from placer.search.assemble import expert_map_from_counts as expert_map_from_counts
from placer.search.assemble import plan_inputs as plan_inputs
from placer.search.assemble import solver_record as solver_record
from placer.search.layout_solve import solve_layout
from placer.search.space import LayoutSpace, enumerate_layouts
from placer.search.tables import (
    TIME_SCALE,
    add_costs,
    build_tables,
    lower_bound_ns,
    memory_by_rank,
    memory_lower_bound,
)
from placer.workload import Workload

#: Share of the time left that one layout's solve may take when others wait (the rest keep
#: a chance), and the least it is given.
LAYOUT_SHARE = 1 / 3
MIN_LAYOUT_S = 1.0

#: Called after each layout: (layouts done, total, incumbent ns or None, global bound ns).
ProgressFn = Callable[[int, int, int | None, int | None], None]


def _better(a: Incumbent, b: Incumbent | None, objective: str) -> bool:
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
    if workload.serving or config.concurrency is not None:
        # Latency targets (or a concurrency to carry) ask the serving question: layout x
        # concurrency x instances.
        from placer.serving.solve import solve_serving

        return solve_serving(model, cluster, workload, config, budget)
    try:
        profile = get_profile(config.profile)
    except KeyError as exc:
        raise InvalidInputError(str(exc.args[0]), field="profile") from None
    check_scale(model, workload)
    budget = budget or Budget(config.time_limit_s, config.deterministic)
    space = enumerate_layouts(model, cluster, profile, config.max_gpus, budget=budget)
    entries, cands = _tabulate(model, cluster, workload, space, config.objective, budget)
    best, interrupted = _solve_candidates(cands, entries, config, budget, progress)
    plan = assemble_plan(
        model, cluster, workload, config, space, entries, best, budget, interrupted
    )
    return plan if loads is None else with_loads(plan, model, cluster, workload, loads)


def _tabulate(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    space: LayoutSpace,
    objective: str,
    budget: Budget,
) -> tuple[list[SearchEntry], list[Candidate]]:
    """Tabulate and bound every legal layout: the entries of those settled already (out of
    memory, or out of time) and the candidates left to solve, best bound first."""
    entries: list[SearchEntry] = []
    cands: list[Candidate] = []
    cache: dict[object, object] = {}
    # Tabulate the likeliest winners first, in case time runs out: many GPUs for speed,
    # few for the gpus objective.
    order = sorted(space.legal, key=lambda lay: lay.gpus if objective == "gpus" else -lay.gpus)
    for n, layout in enumerate(order):
        if budget.expired():
            # Out of time while tabulating: the rest stays unresolved, with no bound.
            entries.extend(
                layout_entry(
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
                layout_entry(
                    layout,
                    "infeasible",
                    f"memory: the layout's GPUs must hold at least "
                    f"{need / 1e9:.2f} GB in all, they have {have / 1e9:.2f} GB",
                )
            )
            continue
        t = add_costs(t, model, cluster, workload, objective, cache)
        cands.append(Candidate(layout=layout, tables=t, bound=lower_bound_ns(t, objective)))
    if objective == "gpus":
        cands.sort(key=lambda c: (c.layout.gpus, c.bound, c.layout.describe()))
    else:
        cands.sort(key=lambda c: (c.bound, c.layout.gpus, c.layout.describe()))
    return entries, cands


def _solve_candidates(
    cands: list[Candidate],
    entries: list[SearchEntry],
    config: SolveConfig,
    budget: Budget,
    progress: ProgressFn | None,
) -> tuple[Incumbent | None, bool]:
    """Solve the candidates in bound order, pruning those that cannot beat the incumbent;
    one entry per candidate is appended to ``entries``. Returns the incumbent and whether
    Ctrl-C stopped the search (what was not reached is then unresolved)."""
    objective = config.objective
    best: Incumbent | None = None
    before = len(entries)  # the loop appends exactly one entry per candidate
    try:
        for k, cand in enumerate(cands):
            if best is not None and _cannot_beat(cand, best, objective):
                entries.append(
                    candidate_entry(cand, "pruned", _pruned_reason(cand, best, objective))
                )
            elif budget.expired():
                entries.append(
                    candidate_entry(cand, "unresolved", "time limit reached before solving")
                )
            else:
                # No single layout may take the whole budget: later ones still need a chance.
                last = k == len(cands) - 1
                seconds = budget.share(1.0 if last else LAYOUT_SHARE, at_least=MIN_LAYOUT_S)
                entry, inc = _solve_candidate(cand, config, budget, seconds)
                entries.append(entry)
                if inc is not None and _better(inc, best, objective):
                    best = inc
            if progress is not None:
                _report_progress(progress, cands, k, best, objective)
    except KeyboardInterrupt:
        for cand in cands[len(entries) - before :]:
            entries.append(candidate_entry(cand, "unresolved", "interrupted"))
        return best, True
    return best, False


def _pruned_reason(cand: Candidate, best: Incumbent, objective: str) -> str:
    if objective != "gpus" or cand.layout.gpus == best.gpus:
        return (
            f"bound {cand.bound / TIME_SCALE:.6g} s cannot beat the plan's "
            f"{best.value / TIME_SCALE:.6g} s"
        )
    return f"uses {cand.layout.gpus} GPUs, the plan {best.gpus}"


def _solve_candidate(
    cand: Candidate, config: SolveConfig, budget: Budget, seconds: float
) -> tuple[SearchEntry, Incumbent | None]:
    """One candidate's CP-SAT solve: its entry, and its placement when one was found."""
    status, split, counts, value, bound = solve_layout(
        cand.tables, config.objective, config, budget, seconds
    )
    if status == "infeasible":
        return candidate_entry(cand, "infeasible", "CP-SAT proved no split fits memory"), None
    if split is None or counts is None or value is None:
        return candidate_entry(cand, "unresolved", "no solution within the time limit"), None
    peak = int(memory_by_rank(cand.tables, split, counts).max())
    inc = Incumbent(
        value=value, gpus=cand.layout.gpus, peak=peak, cand=cand, split=split, counts=counts
    )
    return candidate_entry(cand, status, value=value, solver_bound=bound), inc


def _report_progress(
    progress: ProgressFn, cands: list[Candidate], k: int, best: Incumbent | None, objective: str
) -> None:
    # Candidates come in bound order: the next one's bound is the best still open.
    open_bound = cands[k + 1].bound if k + 1 < len(cands) else None
    if best is not None and objective != "gpus":
        open_bound = best.value if open_bound is None else min(open_bound, best.value)
    progress(k + 1, len(cands), best.value if best else None, open_bound)


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
    from placer.balance.whole_model import balance_layer
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


def _cannot_beat(cand: Candidate, best: Incumbent, objective: str) -> bool:
    if objective == "gpus":
        return cand.layout.gpus > best.gpus or (
            cand.layout.gpus == best.gpus and cand.bound >= best.value
        )
    return cand.bound >= best.value
