"""What every certificate check shares: the report, the findings so far, the plan with its
validated inputs, and small comparison helpers (docs/certificate.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from placer._base import Frozen
from placer.cluster import ClusterSpec
from placer.layout import Layout
from placer.model import ModelSpec
from placer.plan import Plan, SearchEntry
from placer.rules import RulesProfile
from placer.workload import Workload

#: Largest cluster whose legal layouts ``verify`` re-derives. Enumerating the layouts of a
#: larger cluster takes longer than a re-check should (see docs/certificate.md).
MAX_VERIFY_GPUS = 4096

#: Most layers a plan's model may have for the exact re-proofs (their sums of per-layer
#: times, each at most 2**50 ns, must stay inside 64-bit integers).
MAX_VERIFY_LAYERS = 4096

#: Most experts per MoE layer the re-checks handle (per-expert arrays are allocated; the
#: largest bundled model has 384).
MAX_VERIFY_EXPERTS = 2**16

#: A layout's degrees (tp, pp, ep, etp, dp_attn): how search entries and layouts are matched.
LayoutKey = tuple[int, int, int, int, int]


class VerifyReport(Frozen):
    """What ``verify`` found: ok only if no violation."""

    ok: bool = Field(description="Every check passed.")
    violations: tuple[str, ...] = Field(description="One line per failed check.")
    checked: tuple[str, ...] = Field(description="What was re-checked.")
    trusted: tuple[str, ...] = Field(description="What could not be re-derived without a solver.")


class Findings:
    """Violations, what was checked and what had to be trusted, in order."""

    def __init__(self) -> None:
        self.bad: list[str] = []
        self.checked: list[str] = []
        self.trusted: list[str] = []

    def report(self) -> VerifyReport:
        """The report of everything found so far."""
        return VerifyReport(
            ok=not self.bad,
            violations=tuple(self.bad),
            checked=tuple(self.checked),
            trusted=tuple(self.trusted),
        )


@dataclass
class Context:
    """One plan under check, its validated inputs, and what earlier checks established."""

    plan: Plan
    model: ModelSpec
    cluster: ClusterSpec
    workload: Workload
    profile: RulesProfile
    found: Findings
    #: The plan's own objective in ns, recomputed (also the tie-break of the gpus objective);
    #: None until the chosen layout checks out.
    value_ns: int | None = None
    #: The plan's layout once it checks out.
    layout: Layout | None = None
    #: The legal layouts by degrees, once the search record's listing is established.
    legal: dict[LayoutKey, Layout] | None = field(default=None)

    @property
    def objective(self) -> str:
        """The objective the search used."""
        return self.plan.certificate.solver.objective

    @property
    def bad(self) -> list[str]:
        """The violations found so far (append to report one)."""
        return self.found.bad


def close(a: float, b: float) -> bool:
    """Equal up to float noise (relative 1e-9)."""
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def first_difference(mine: Any, theirs: Any, where: str) -> str | None:
    """The JSON path of the first place two dumped records differ (floats to 1e-9)."""
    if isinstance(mine, dict) and isinstance(theirs, dict):
        if set(mine) != set(theirs):
            return where
        for key in mine:
            got = first_difference(mine[key], theirs[key], f"{where}.{key}")
            if got is not None:
                return got
        return None
    if isinstance(mine, list | tuple) and isinstance(theirs, list | tuple):
        if len(mine) != len(theirs):
            return where
        for i, (a, b) in enumerate(zip(mine, theirs, strict=True)):
            got = first_difference(a, b, f"{where}[{i}]")
            if got is not None:
                return got
        return None
    if isinstance(mine, bool) or isinstance(theirs, bool):
        return None if mine is theirs else where
    if isinstance(mine, int | float) and isinstance(theirs, int | float):
        return None if close(float(mine), float(theirs)) else where
    return None if mine == theirs else where


def value_at(record: Any, path: str, prefix: str) -> Any:
    """The value at ``path`` (as written by :func:`first_difference`) inside ``record``."""
    item = record
    for part in path[len(prefix) :].lstrip(".").split("."):
        if part and isinstance(item, dict):
            item = item.get(part)
    return item


def layout_key(e: SearchEntry | Layout) -> LayoutKey:
    """The degrees of a search entry or a layout."""
    if isinstance(e, Layout):
        return (e.tp, e.pp, e.ep, e.expert_tp, e.dp_attn)
    return (e.tp, e.pp, e.ep, e.etp, e.dp_attn)
