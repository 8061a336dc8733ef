"""The report's record sections: validation checks, the search, and for a plan without a
layout, why nothing fits and the smallest fix."""

from __future__ import annotations

import re

from placer.evaluate import Constraint
from placer.plan import Plan, PlanLayout, SearchEntry
from placer.report.text import MAX_ROWS, gb, ms, num, pct, table, yes
from placer.search.tables import TIME_SCALE

#: How many runner-up layouts the search section lists.
RUNNERS_UP = 5


def _constraint_cells(c: Constraint) -> list[str]:
    if c.name.startswith("memory["):
        value, limit = f"{gb(c.value)} GB", f"{gb(c.limit)} GB"
    else:
        value, limit = num(c.value), num(c.limit)
    return [f"`{c.name}`", value, limit, yes(c.holds), c.detail]


_FAMILY = re.compile(r"^([^\[]+)\[")


def validation(plan: Plan) -> list[str]:
    """Every constraint of the certificate, a family summarised when it is long."""
    cons = plan.certificate.constraints
    if not cons:
        return [
            "No layout was chosen, so the certificate holds no constraint instances; the "
            "search record below lists why each legal layout failed."
        ]
    families: dict[str, list[Constraint]] = {}
    for c in cons:
        m = _FAMILY.match(c.name)
        families.setdefault(m.group(1) if m else c.name, []).append(c)
    rows: list[list[str]] = []
    for fam, items in families.items():
        if len(items) <= MAX_ROWS:
            rows += [_constraint_cells(c) for c in items]
            continue
        failing = [c for c in items if not c.holds]
        tightest = max(
            items,
            key=lambda c: (not c.holds, c.value / c.limit if c.limit else c.value - c.limit),
        )
        cells = _constraint_cells(tightest)
        rows.append(
            [
                f"`{fam}[...]` ({len(items)} instances; tightest {tightest.name})",
                cells[1],
                cells[2],
                "yes, all" if not failing else f"**no**: {len(failing)} fail",
                tightest.detail,
            ]
        )
    out = table(["constraint", "value", "limit", "holds", "detail"], rows)
    bad = [c for c in cons if not c.holds]
    out += [
        "",
        f"{len(cons)} constraint instances, "
        + ("all hold." if not bad else f"**{len(bad)} do not hold**.")
        + " `placer verify PLAN` recomputes every one of them with numpy, without the solver.",
    ]
    return out


def _entry_units(e: SearchEntry) -> int | None:
    return e.value_units if e.value_units is not None else e.bound_units


def _is_plan_entry(e: SearchEntry, lay: PlanLayout | None) -> bool:
    return (
        lay is not None
        and e.status in ("optimal", "feasible")
        and (e.tp, e.pp, e.ep, e.etp, e.dp_attn, e.gpus)
        == (lay.tp, lay.pp, lay.ep, lay.etp, lay.dp_attn, lay.gpus_used)
    )


def _search_counts(plan: Plan) -> list[str]:
    s = plan.certificate.search
    entries = s.entries
    trusted = sum(1 for e in entries if e.status == "infeasible" and e.reason.startswith("CP-SAT"))
    aggregate = sum(
        1 for e in entries if e.status == "infeasible" and e.reason.startswith("memory")
    )
    rejected = ", ".join(f"{k}: {v}" for k, v in s.rejected_by_rule.items()) or "none"
    rows = [
        ["degree combinations considered", str(s.candidates)],
        ["legal under the rules profile", str(s.legal)],
        ["rejected by rule (first rule broken)", rejected],
        ["solved by CP-SAT", str(s.solved)],
        ["pruned by a bound", str(s.pruned)],
        [
            "infeasible",
            f"{s.infeasible} ({aggregate} by aggregate memory, re-checked by verify; "
            f"{trusted} by a CP-SAT proof, taken on trust)",
        ],
        ["unresolved", str(s.unresolved)],
    ]
    return table(["", "count"], rows)


def _why_it_lost(
    e: SearchEntry, units: int, ref: int | None, objective: str, lay: PlanLayout | None
) -> str:
    """Why a runner-up lost to the plan, in the objective's step time."""
    if objective == "gpus" and lay is not None and e.gpus != lay.gpus_used:
        return f"uses {e.gpus} GPUs, the plan {lay.gpus_used}"
    if ref is None:
        return e.reason or "-"
    diff = (units - ref) / ref if ref else 0.0
    if e.value_units is None:
        return (
            f"its bound {ms(units / TIME_SCALE)} ms cannot beat the plan's "
            f"{ms(ref / TIME_SCALE)} ms (+{pct(diff)})"
        )
    if units > ref:
        return f"slower: {ms(units / TIME_SCALE)} ms vs {ms(ref / TIME_SCALE)} ms (+{pct(diff)})"
    return (
        f"ties at {ms(units / TIME_SCALE)} ms; lost on the tie-break (fewer GPUs, "
        "then less peak memory)"
    )


def _runners_up(plan: Plan) -> list[str]:
    entries = plan.certificate.search.entries
    lay = plan.layout
    own = next((e for e in entries if _is_plan_entry(e, lay)), None)
    ref = own.value_units if own is not None else None
    objective = plan.objective.name
    others = [
        e
        for e in entries
        if e is not own
        and e.status in ("optimal", "feasible", "pruned")
        and _entry_units(e) is not None
    ]

    def key(e: SearchEntry) -> tuple[int, int]:
        units = _entry_units(e) or 0
        return (e.gpus, units) if objective == "gpus" else (units, e.gpus)

    others.sort(key=key)
    if not others:
        return ["No other layout was solved or pruned with a bound."]
    out = [
        f"Runner-up layouts (the best {min(RUNNERS_UP, len(others))} others by value, or "
        "bound when pruned; times are the objective's step time):",
        "",
    ]
    rows = []
    for e in others[:RUNNERS_UP]:
        units = _entry_units(e)
        assert units is not None
        kind = "value" if e.value_units is not None else "bound"
        text = f"{kind} {ms(units / TIME_SCALE)} ms"
        rows.append(
            [e.layout, str(e.gpus), e.status, text, _why_it_lost(e, units, ref, objective, lay)]
        )
    return out + table(["layout", "GPUs", "status", "value or bound", "why it lost"], rows)


def search(plan: Plan) -> list[str]:
    """What the search considered, and the best layouts that lost, with why."""
    return [*_search_counts(plan), "", *_runners_up(plan)]


def why_no_fit(plan: Plan) -> list[str]:
    """The recorded reason, conflicting families and closest layout of a plan with none."""
    inf = plan.infeasibility
    s = plan.certificate.search
    if inf is None:
        if plan.status == "unknown":
            return [
                f"No plan and no proof within the time limit: {s.unresolved} of {s.legal} legal "
                "layouts were left unresolved. Raise the time limit."
            ]
        return ["The plan records no explanation."]
    out = [f"- Reason: {inf.reason}"]
    out.append(
        "- Conflicting constraint families: "
        + ("; ".join(inf.conflicts) if inf.conflicts else "none recorded")
    )
    out.append(f"- Closest layout: {inf.closest_layout or 'none'}")
    closest = next((e for e in s.entries if e.layout == inf.closest_layout), None)
    if closest is not None and closest.reason:
        out.append(f"- Search record of the closest layout: {closest.reason}")
    return out


def smallest_fix(plan: Plan) -> list[str]:
    """The computed fixes, and the fewest GPUs of the type that fit."""
    inf = plan.infeasibility
    if inf is None or not inf.fixes:
        return ["No fix was computed."]
    out = [f"- {fix}" for fix in inf.fixes]
    if inf.min_gpus is not None:
        out.append(f"- Fewest GPUs of this type that fit: {inf.min_gpus}.")
    return out
