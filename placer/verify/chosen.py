"""The chosen layout: its rules and layer split, expert map, the memory of every GPU, every
constraint instance, the objective and every estimate, recomputed from the inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import ValidationError

from placer.cost import estimate
from placer.evaluate import Constraint, evaluate
from placer.layout import Layout
from placer.ledger import ExpertMap
from placer.rules import layout_violations
from placer.search.tables import build_tables, objective_ns, placement_constraints
from placer.verify.context import Context, close, first_difference, value_at


def check_chosen_layout(ctx: Context) -> None:
    """The plan's layout, if it has one: rules, split, expert map, memory, constraints,
    objective and estimates (a plan that claims a solution must have one)."""
    if ctx.plan.layout is not None:
        check_layout(ctx)
    elif ctx.plan.status in ("optimal", "feasible"):
        ctx.bad.append(f"status '{ctx.plan.status}' without a layout")


def check_layout(ctx: Context) -> None:
    """The chosen layout, recomputed from the inputs."""
    pl = ctx.plan.layout
    assert pl is not None
    try:
        layout = pl.to_layout()
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
        ctx.bad.append(f"layout: not a layout: {msg}")
        return
    if layout.gpus != pl.gpus_used:
        ctx.bad.append(f"layout.gpus_used: {pl.gpus_used}, the degrees give {layout.gpus}")
    rules = layout_violations(ctx.model, ctx.cluster, layout, ctx.profile)
    ctx.bad.extend(f"layout: rules: {v}" for v in rules)
    if rules:
        return  # nothing below is defined for an illegal layout
    ctx.found.checked.append("rules profile and layer split")
    ctx.layout = layout
    tables = build_tables(ctx.model, ctx.cluster, ctx.workload, layout, ctx.objective)
    counts = check_expert_map(ctx, layout)
    if counts is None:
        return
    ctx.found.checked.append("expert map: every expert placed, ids in range, slot counts")
    emap: ExpertMap = dict(ctx.plan.expert_map)
    # Any valid expert map puts ceil(slots / ep) slots on a layer's busiest rank; the
    # all-to-all's cross-node part is read from where the map puts each expert group
    # (docs/certificate.md).
    ctx.value_ns = objective_ns(tables, pl.layers_per_stage, counts, ctx.objective, emap)
    ev = evaluate(ctx.model, ctx.cluster, ctx.workload, layout, ctx.profile, emap)
    check_gpus(ctx, ev.gpus)
    check_constraints(ctx, list(ev.constraints) + placement_constraints(tables, counts))
    loads = (
        {k: np.asarray(v) for k, v in ctx.plan.inputs.loads.items()}
        if ctx.plan.inputs.loads
        else None
    )
    est = estimate(ctx.model, ctx.cluster, ctx.workload, layout, emap, loads)
    if ctx.plan.estimates is None:
        ctx.bad.append("estimates: missing for a plan with a layout")
    else:
        diff = first_difference(
            est.model_dump(mode="json"), ctx.plan.estimates.model_dump(mode="json"), ""
        )
        if diff is not None:
            ctx.bad.append(f"estimates{diff}: differs from the cost model's")
    ctx.found.checked.append("objective and every estimate")


def check_expert_map(ctx: Context, layout: Layout) -> np.ndarray | None:
    """Slot counts per (layer, EP rank), or None when the map is unusable."""
    model, emap = ctx.model, ctx.plan.expert_map
    counts = np.zeros((model.num_layers, layout.ep), dtype=np.int64)
    if set(emap) != set(model.moe_layers):
        odd = sorted(set(emap) ^ set(model.moe_layers))[:3]
        ctx.bad.append(f"expert_map: lists layers other than the MoE layers (e.g. layer {odd[0]})")
        return None
    ok = True
    for layer, ranks in emap.items():
        where = f"expert_map.{layer}"
        experts = model.experts_in_layer(layer)
        slots = experts + layout.redundant_experts
        if len(ranks) != layout.ep:
            ctx.bad.append(f"{where}: {len(ranks)} ranks, ep is {layout.ep}")
            ok = False
            continue
        seen = np.zeros(experts, dtype=np.int64)
        for r, ids in enumerate(ranks):
            counts[layer, r] = len(ids)
            if len(set(ids)) != len(ids):
                ctx.bad.append(f"{where}[{r}]: an expert appears twice on one rank")
                ok = False
            for e in ids:
                if not 0 <= e < experts:
                    ctx.bad.append(f"{where}[{r}]: no expert {e} (ids are 0..{experts - 1})")
                    ok = False
                    break
                seen[e] += 1
        if int(counts[layer].sum()) != slots:
            ctx.bad.append(f"{where}: {int(counts[layer].sum())} slots, expected {slots}")
            ok = False
        if np.any(seen == 0):
            ctx.bad.append(f"{where}: expert {int(np.argmin(seen))} is not placed")
            ok = False
        lo, hi = slots // layout.ep, -(-slots // layout.ep)
        if counts[layer].min() < lo or counts[layer].max() > hi:
            ctx.bad.append(f"{where}: slot counts per rank outside [{lo}, {hi}]")
            ok = False
    return counts if ok else None


def check_gpus(ctx: Context, gpus: Any) -> None:
    mine = [g.model_dump(mode="json") for g in gpus]
    theirs = [g.model_dump(mode="json") for g in ctx.plan.gpus]
    if len(mine) != len(theirs):
        ctx.bad.append(f"gpus: plan lists {len(theirs)} GPUs, the layout uses {len(mine)}")
    for i, (m, t) in enumerate(zip(mine, theirs, strict=False)):
        diff = first_difference(m, t, f"gpus[{i}]")
        if diff is not None:
            ctx.bad.append(
                f"memory of gpu {m['id']}: {diff}: plan says {value_at(t, diff, f'gpus[{i}]')}, "
                f"recomputed {value_at(m, diff, f'gpus[{i}]')}"
            )
    for g in gpus:
        if g.used_bytes > g.capacity_bytes:
            ctx.bad.append(f"gpu {g.id} over capacity: {g.used_bytes} > {g.capacity_bytes}")
    ctx.found.checked.append(f"memory ledger, ids and capacity of {len(mine)} GPUs")


def check_constraints(ctx: Context, mine: list[Constraint]) -> None:
    theirs = ctx.plan.certificate.constraints
    where = "certificate.constraints"
    by_name = {c.name: c for c in mine}
    names = [c.name for c in theirs]
    if sorted(names) != sorted(by_name) or len(set(names)) != len(names):
        lost = sorted(set(by_name) - set(names))
        extra = sorted(set(names) - set(by_name))
        ctx.bad.append(
            f"{where}: not the layout's constraint instances"
            + (f" (missing {lost[0]})" if lost else "")
            + (f" (unknown {extra[0]})" if extra else "")
        )
    for i, c in enumerate(theirs):
        ref = by_name.get(c.name)
        if ref is None:
            continue
        for attr in ("value", "limit"):
            if not close(getattr(ref, attr), getattr(c, attr)):
                ctx.bad.append(
                    f"{where}[{i}] {c.name}: {attr} {getattr(c, attr):g}, recomputed "
                    f"{getattr(ref, attr):g}"
                )
        if ref.holds != c.holds:
            ctx.bad.append(f"{where}[{i}] {c.name}: holds is {c.holds}, recomputed {ref.holds}")
        if not c.holds:
            ctx.bad.append(f"{where}[{i}] {c.name} does not hold ({c.value:g} > {c.limit:g})")
    for c in mine:
        if not c.holds:
            ctx.bad.append(f"recomputed constraint {c.name} does not hold")
    ctx.found.checked.append(f"{len(mine)} constraint instances: values, limits, holds")
