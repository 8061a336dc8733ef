"""The status and gap rule, defined once: what a value and a bound make of a plan.

``placer solve`` (the fixed-batch and the serving search) applies it to the value and bound
it found; ``placer verify`` recomputes the value and bound independently and applies the same
rule to them (docs/certificate.md). A plan is ``optimal`` only when its bound shows that no
layout does better, that is gap 0 over the whole space; otherwise ``feasible`` with the gap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from placer.plan import SearchEntry

SolvedStatus = Literal["optimal", "feasible"]


def minimise_gap(value: float, bound: float) -> float:
    """Relative gap of a minimised objective (a step time, a GPU count): how far the value
    may be above the best possible, as a share of the value (0 for a value of 0)."""
    return (value - bound) / value if value else 0.0


def minimise_status(value: float, bound: float, tie: float = 0.0) -> SolvedStatus:
    """``optimal`` when nothing can go below the value by more than the relative ``tie``
    (0 for integer objectives; the serving search's float noise for a TPOT)."""
    return "optimal" if bound >= value * (1 - tie) else "feasible"


def maximise_gap(value: float, bound: float) -> float | None:
    """Relative gap of a maximised objective (tokens/s per GPU): how far the bound may be
    above the value, as a share of the bound (None without a positive bound)."""
    return (bound - value) / bound if bound > 0 else None


def maximise_status(value: float, bound: float, tie: float) -> SolvedStatus:
    """``optimal`` when nothing can exceed the value by more than the relative ``tie`` (the
    float noise of the serving search's figures)."""
    return "optimal" if bound <= value * (1 + tie) else "feasible"


def search_bound(
    entries: Sequence[SearchEntry],
    objective: str,
    incumbent_value: int | None,
    incumbent_gpus: int | None,
) -> int | None:
    """The global bound of a fixed-batch search record: the smallest objective any layout
    not yet proven could still reach, the incumbent included (None when nothing bounds it).

    With ``gpus`` an unresolved layout could fit on its own GPU count; otherwise an
    unresolved layout bounds with its analytic bound (0 if it was never tabulated), and a
    layout CP-SAT left ``feasible`` with the larger of its solver and analytic bounds.
    """
    if objective == "gpus":
        pool = [e.gpus for e in entries if e.status == "unresolved"]
        pool += [incumbent_gpus] if incumbent_gpus is not None else []
        return min(pool) if pool else None
    bounds: list[int] = []
    for e in entries:
        if e.status == "unresolved":
            bounds.append(e.bound_units if e.bound_units is not None else 0)
        elif e.status == "feasible":
            b = e.solver_bound_units if e.solver_bound_units is not None else e.bound_units
            if b is not None:
                bounds.append(max(b, e.bound_units or 0))
    if incumbent_value is not None:
        bounds.append(incumbent_value)
    return min(bounds) if bounds else None


__all__ = ["maximise_gap", "maximise_status", "minimise_gap", "minimise_status", "search_bound"]
