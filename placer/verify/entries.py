"""Every search entry re-proven: a pruned layout's analytic bound against the plan, an
infeasible layout by aggregate memory or the exact split and slot check of
:mod:`placer.proof`, a solved layout's value and bound against its exact optimum."""

from __future__ import annotations

from placer.layout import Layout
from placer.plan import SearchEntry
from placer.proof import any_fit, layout_optimum, locality_exact
from placer.search.tables import (
    LayoutTables,
    add_costs,
    build_tables,
    lower_bound_ns,
    memory_lower_bound,
)
from placer.verify.context import Context, layout_key


def check_entries(ctx: Context) -> None:
    """Every entry's figures and fate re-proven; the plan beats every layout it says."""
    legal = ctx.legal
    if legal is None:
        return  # the listing itself did not check out; that violation is listed
    entries = ctx.plan.certificate.search.entries
    where = "certificate.search.entries"
    plan_gpus = ctx.plan.layout.gpus_used if ctx.plan.layout is not None else None
    exact_proofs = 0
    cache: dict[object, object] = {}
    own = layout_key(ctx.layout) if ctx.layout is not None else None
    for i, e in enumerate(entries):
        lay = legal.get(layout_key(e))
        if lay is None:
            continue  # already reported as not legal
        at = f"{where}[{i}] ({lay.describe()})"
        if e.status == "unresolved" and ctx.plan.status == "optimal":
            ctx.bad.append(f"{at}: unresolved, yet the plan claims optimality")
        if e.status == "unresolved" and e.bound_units is None:
            continue  # claims nothing
        memory = build_tables(
            ctx.model, ctx.cluster, ctx.workload, lay, ctx.objective, False, cache
        )
        need, have = memory_lower_bound(memory)
        if e.status == "infeasible":
            if need > have:
                continue
            fits, exact = any_fit(memory)
            exact_proofs += 1
            if fits and exact:
                ctx.bad.append(f"{at}: declared infeasible, but a split fits memory")
            elif fits:
                ctx.found.trusted.append(
                    f"{at}: infeasibility not re-proven within the search budget"
                )
            continue
        if need > have:
            ctx.bad.append(
                f"{at}: status {e.status}, but its aggregate memory does not fit "
                f"({need} B > {have} B)"
            )
            continue
        tables = add_costs(memory, ctx.model, ctx.cluster, ctx.workload, ctx.objective, cache)
        lb = lower_bound_ns(tables, ctx.objective)
        if e.bound_units is not None and e.bound_units != lb:
            ctx.bad.append(f"{at}: bound_units {e.bound_units}, recomputed {lb}")
        if e.status == "pruned":
            if e.bound_units is None:
                ctx.bad.append(f"{at}: pruned without a bound")
            check_pruned(ctx, at, lay, lb, plan_gpus)
        elif e.status in ("optimal", "feasible"):
            if e.bound_units is None:
                ctx.bad.append(f"{at}: solved without its analytic bound")
            check_solved(ctx, at, e, tables, plan_gpus, own == layout_key(e))
    ctx.found.checked.append(
        f"every entry re-proven: pruning bounds, infeasibility ({exact_proofs} by the exact "
        "split and slot check, the rest by aggregate memory), solved values"
    )
    if (
        own is not None
        and own in legal
        and entries
        and own not in {layout_key(e) for e in entries}
    ):
        ctx.bad.append(f"{where}: the plan's layout is not in the search record")


def check_pruned(ctx: Context, at: str, lay: Layout, lb: int, plan_gpus: int | None) -> None:
    if plan_gpus is None:
        ctx.bad.append(f"{at}: pruned, but the plan has no layout to prune against")
        return
    if ctx.value_ns is None:
        return  # the plan's layout did not check out; that violation is listed
    if ctx.objective == "gpus":
        if lay.gpus < plan_gpus or (lay.gpus == plan_gpus and lb < ctx.value_ns):
            ctx.bad.append(f"{at}: pruned, but it could beat the plan (fewer GPUs or faster)")
    elif lb < ctx.value_ns:
        ctx.bad.append(
            f"{at}: pruned, but its bound {lb} ns is below the plan's {ctx.value_ns} ns"
        )


def check_solved(
    ctx: Context, at: str, e: SearchEntry, tables: LayoutTables, plan_gpus: int | None, own: bool
) -> None:
    """A solved entry's value and bound against the layout's exact optimum."""
    opt = layout_optimum(tables, ctx.objective)
    if opt.value is None:
        ctx.bad.append(f"{at}: status {e.status}, but no split of it fits memory")
        return
    if e.value_units is None:
        ctx.bad.append(f"{at}: status {e.status} without a value")
    elif e.value_units < opt.value:
        ctx.bad.append(
            f"{at}: value_units {e.value_units} is below the layout's optimum {opt.value}"
        )
    elif opt.exact and e.status == "optimal" and e.value_units != opt.value:
        ctx.bad.append(
            f"{at}: claimed optimal at {e.value_units} ns, the layout's optimum is {opt.value} ns"
        )
    if e.solver_bound_units is not None and opt.exact and e.solver_bound_units > opt.value:
        ctx.bad.append(
            f"{at}: solver_bound_units {e.solver_bound_units} exceeds the layout's optimum "
            f"{opt.value}"
        )
    if (
        own
        and e.value_units is not None
        and ctx.value_ns is not None
        and e.value_units != ctx.value_ns
    ):
        ctx.bad.append(
            f"{at}: the plan's layout, value {e.value_units} but the plan's split gives "
            f"{ctx.value_ns}"
        )
    if ctx.plan.status != "optimal" or plan_gpus is None or ctx.value_ns is None:
        return
    beats = e.gpus < plan_gpus if ctx.objective == "gpus" else opt.value < ctx.value_ns
    if beats and opt.exact:
        what = (
            f"fits on {e.gpus} GPUs"
            if ctx.objective == "gpus"
            else f"reaches {opt.value} ns, split {list(opt.split or ())}"
        )
        ctx.bad.append(
            f"{at}: {what}, better than the plan claimed optimal ({ctx.value_ns} ns on "
            f"{plan_gpus} GPUs)"
        )
    elif beats and not locality_exact(tables):
        ctx.found.trusted.append(
            f"{at}: optimum re-proven only as a lower bound (its slot counts decide the "
            "all-to-all's locality; docs/certificate.md)"
        )
    elif beats:
        ctx.found.trusted.append(f"{at}: optimum not re-proven within the search budget")
