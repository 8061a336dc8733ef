"""A Markdown report of a plan: the seed's deployment analysis, done honestly.

Every number in the report is read from the plan file (its layout, memory
ledger, expert map, estimates, certificate, search record and input copies) or
derived from them by arithmetic stated next to it; nothing is claimed that the
plan does not hold. Where the plan lacks a figure (bytes per link level, measured
routing loads) the report says so and shows what the plan does hold.

Section headings (``##``) are stable; tests and tools look them up by name:
:data:`SECTIONS`, plus :data:`INFEASIBLE_SECTIONS` for a plan without a layout.
One module per group of sections; the rank arithmetic is :mod:`placer.topology`'s.
"""

from __future__ import annotations

from placer.plan import Plan
from placer.report.compatibility import model_compatibility
from placer.report.inputs import PlanSpecs, plan_specs
from placer.report.overview import hardware, summary
from placer.report.record import search, smallest_fix, validation, why_no_fit
from placer.report.resources import load_balance, memory
from placer.report.text import describe_layout, gb, id_ranges, ms, pct
from placer.report.timing import communication, estimates
from placer.topology import (
    LEVEL_ORDER,
    StageGroups,
    communication_levels,
    plan_phys,
    stage_groups,
    worst_level,
)

__all__ = [
    "INFEASIBLE_SECTIONS",
    "LEVEL_ORDER",
    "SECTIONS",
    "PlanSpecs",
    "StageGroups",
    "communication_levels",
    "describe_layout",
    "gb",
    "id_ranges",
    "markdown_report",
    "ms",
    "pct",
    "plan_phys",
    "plan_specs",
    "stage_groups",
    "worst_level",
]

#: Section headings of every report, in order.
SECTIONS: tuple[str, ...] = (
    "Summary",
    "Hardware compatibility",
    "Model compatibility",
    "Memory per GPU",
    "Load balance",
    "Communication",
    "Estimated latency and throughput",
    "Validation checks",
    "Search",
)
#: Extra sections of a plan without a layout (infeasible or unknown).
INFEASIBLE_SECTIONS: tuple[str, ...] = ("Why it does not fit", "Smallest fix")


def markdown_report(plan: Plan) -> str:
    """A Markdown report of ``plan``: what was chosen, why, and every number behind it.

    Parameters
    ----------
    plan
        A plan from :func:`placer.solve` or :func:`placer.load_plan`, with or
        without a layout.

    Returns
    -------
    str
        Markdown text with the ``##`` sections of :data:`SECTIONS` (and, for a
        plan without a layout, :data:`INFEASIBLE_SECTIONS`). GB are 1e9 bytes
        with two decimals, times are in ms with three decimals.

    Raises
    ------
    InvalidInputError
        If the plan's input copies do not validate.
    """
    specs = plan_specs(plan)
    title = f"# Deployment plan: {specs.model.name} on {specs.cluster.name}"
    intro = (
        "Every number below is read from the plan file or computed from it as stated; the "
        "speed figures are the plan's own roofline estimates, whose assumptions are listed."
    )
    sections: list[tuple[str, list[str]]] = [
        ("Summary", summary(plan, specs)),
        *([("Serving", plan.serving.markdown_lines())] if plan.serving is not None else []),
        ("Hardware compatibility", hardware(plan, specs)),
        ("Model compatibility", model_compatibility(plan, specs)),
        ("Memory per GPU", memory(plan, specs)),
        ("Load balance", load_balance(plan, specs)),
        ("Communication", communication(plan, specs)),
        ("Estimated latency and throughput", estimates(plan, specs)),
        ("Validation checks", validation(plan)),
        ("Search", search(plan)),
    ]
    if plan.layout is None:
        sections += [
            ("Why it does not fit", why_no_fit(plan)),
            ("Smallest fix", smallest_fix(plan)),
        ]
    lines = [title, "", intro]
    for head, body in sections:
        lines += ["", f"## {head}", "", *body]
    return "\n".join(lines) + "\n"
