"""The objective record (value, bound, gap and the status rule of :mod:`placer.gap`) and the
witness behind a "fewest GPUs" fix of an infeasible plan."""

from __future__ import annotations

from placer.gap import minimise_gap, minimise_status
from placer.proof import any_fit
from placer.search.space import enumerate_layouts
from placer.search.tables import TIME_SCALE, build_tables, memory_lower_bound
from placer.verify.context import MAX_VERIFY_GPUS, Context, close


def expected_bound(ctx: Context) -> int | None:
    """The global bound the verified entries support (the solver's rule)."""
    rec = ctx.plan.certificate.search
    if not rec.complete:
        return 0 if ctx.objective != "gpus" else 1
    entries = rec.entries
    plan_value = None
    if ctx.plan.layout is not None:
        plan_value = ctx.plan.layout.gpus_used if ctx.objective == "gpus" else ctx.value_ns
    if ctx.objective == "gpus":
        opened = [e.gpus for e in entries if e.status == "unresolved"]
        pool = opened + ([plan_value] if plan_value is not None else [])
        return min(pool) if pool else None
    bounds: list[int] = []
    for e in entries:
        if e.status == "unresolved":
            bounds.append(e.bound_units if e.bound_units is not None else 0)
        elif e.status == "feasible":
            b = e.solver_bound_units if e.solver_bound_units is not None else e.bound_units
            if b is not None:
                bounds.append(max(b, e.bound_units or 0))
    if plan_value is not None:
        bounds.append(plan_value)
    return min(bounds) if bounds else None


def check_objective_record(ctx: Context) -> None:
    o, plan = ctx.plan.objective, ctx.plan
    where = "objective"
    if o.name != ctx.objective:
        ctx.bad.append(f"{where}.name: '{o.name}', the search used '{ctx.objective}'")
    unit = "GPUs" if ctx.objective == "gpus" else "s"
    if o.unit != unit:
        ctx.bad.append(f"{where}.unit: '{o.unit}', expected '{unit}'")
    bound = expected_bound(ctx)
    if o.bound_units != bound:
        ctx.bad.append(f"{where}.bound_units: plan says {o.bound_units}, recomputed {bound}")
    _scaled(ctx, f"{where}.bound", o.bound, o.bound_units)
    if plan.layout is None:
        if plan.status == "infeasible":
            rec = plan.certificate.search
            if not rec.complete or any(e.status != "infeasible" for e in rec.entries):
                ctx.bad.append("status infeasible but some layout is not proven infeasible")
        for name in ("value", "value_units", "gap"):
            if getattr(o, name) is not None:
                ctx.bad.append(f"{where}.{name}: set on a plan without a layout")
        if plan.gpus or plan.expert_map or plan.estimates or plan.certificate.constraints:
            ctx.bad.append("a plan without a layout lists GPUs, experts or estimates")
        return
    if plan.status not in ("optimal", "feasible"):
        ctx.bad.append(f"status '{plan.status}' on a plan with a layout")
    if ctx.value_ns is None:
        return  # the layout did not check out; its violations are listed
    value = plan.layout.gpus_used if ctx.objective == "gpus" else ctx.value_ns
    if o.value_units != value:
        ctx.bad.append(
            f"{where}: plan says {o.value_units}, recomputed {value} ({where}.value_units)"
        )
    _scaled(ctx, f"{where}.value", o.value, o.value_units)
    if o.bound_units is None or o.value_units is None or o.gap is None:
        ctx.bad.append(f"{where}: a plan needs value, bound and gap")
        return
    if o.bound_units > o.value_units:
        ctx.bad.append(f"{where}: bound exceeds the value")
    # The rule of placer.gap, applied to the recomputed value and bound.
    gap = minimise_gap(o.value_units, o.bound_units)
    if not close(gap, o.gap):
        ctx.bad.append(f"{where}.gap: {o.gap}, value and bound give {gap}")
    if plan.status != minimise_status(o.value_units, o.bound_units):
        ctx.bad.append(f"status '{plan.status}' does not match gap {gap:.3g}")
    ctx.found.checked.append("objective value, bound, gap and status rule")


def _scaled(ctx: Context, where: str, figure: float | None, units: int | None) -> None:
    if (figure is None) != (units is None):
        ctx.bad.append(f"{where}: {figure} does not match its integer units {units}")
    elif figure is not None and units is not None:
        want = float(units) if ctx.objective == "gpus" else units / TIME_SCALE
        if not close(figure, want):
            ctx.bad.append(f"{where}: {figure} does not match its integer units {units}")


def check_fix(ctx: Context) -> None:
    inf = ctx.plan.infeasibility
    if inf is None:
        return
    if ctx.plan.layout is not None:
        ctx.bad.append("infeasibility: set on a plan with a layout")
        return
    if inf.min_gpus is None or len(ctx.cluster.groups) != 1:
        return
    if inf.min_gpus > MAX_VERIFY_GPUS:
        ctx.bad.append(f"infeasibility.min_gpus: {inf.min_gpus} is beyond what verify checks")
        return
    bigger = ctx.cluster.with_gpus(inf.min_gpus)
    space = enumerate_layouts(ctx.model, bigger, ctx.profile, only_gpus=inf.min_gpus)
    for lay in space.legal:
        t = build_tables(ctx.model, bigger, ctx.workload, lay, "throughput", False)
        need, have = memory_lower_bound(t)
        if need <= have and any_fit(t)[0]:
            ctx.found.checked.append(f"the fix: {lay.describe()} fits on {inf.min_gpus} GPUs")
            return
    ctx.bad.append(f"infeasibility.min_gpus: no layout fits on {inf.min_gpus} GPUs")
