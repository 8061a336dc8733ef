"""The status and gap rule, defined once: what a value and a bound make of a plan.

``placer solve`` (the fixed-batch and the serving search) applies it to the value and bound
it found; ``placer verify`` recomputes the value and bound independently and applies the same
rule to them (docs/certificate.md). A plan is ``optimal`` only when its bound shows that no
layout does better, that is gap 0 over the whole space; otherwise ``feasible`` with the gap.
"""

from __future__ import annotations

from typing import Literal

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


__all__ = ["maximise_gap", "maximise_status", "minimise_gap", "minimise_status"]
