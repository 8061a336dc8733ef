"""``placer check``: audit a claimed deployment, claim by claim, against computed numbers
(each kind's judge is in :mod:`placer.claims`).

A deployment file names a layout and lists claims (GPUs used, memory per GPU,
modules per GPU, latency or throughput changes...). Each claim gets a verdict,
``holds``, ``fails`` or ``cannot judge``, with the number placer computed and a
one-line reason; then the claimed layout is compared with ``placer solve``'s
optimum on the same inputs. A layout the model cannot have (EP larger than the
experts, TP not dividing the heads) is a failed claim, not a crash.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError

from placer._base import Frozen
from placer.claims import (
    COUNT_CLAIMS,
    MAX_CLAIMED,
    NUMBER_CLAIMS,
    Claim,
    ClaimKind,
    ClaimResult,
    Verdict,
    compute_utilization,
    judge_claim,
)
from placer.cluster import ClusterSpec
from placer.config import SolveConfig
from placer.evaluate import Evaluation, evaluate
from placer.exceptions import InvalidInputError
from placer.io import read_json, validate, validation_error
from placer.layout import Layout
from placer.model import ModelSpec
from placer.plan import Plan
from placer.rules import get_profile, layout_violations
from placer.workload import Workload


class Deployment(Frozen):
    """A claimed deployment: a layout and its claims."""

    format: Literal["placer-deployment"] = Field(description="File format tag.")
    name: str = Field(default="deployment", description="What is audited.")
    source: str | None = Field(default=None, description="Where the claims come from.")
    notes: str | None = Field(default=None, description="Free text.")
    layout: dict[str, Any] = Field(
        description="tp, pp, ep, optional etp, dp_attn, "
        "layers_per_stage; 'folded': true states TP/EP folding."
    )
    workload: dict[str, Any] = Field(default_factory=dict, description="Workload fields.")
    claims: tuple[Claim, ...] = Field(description="The claims to check.")


class CheckReport(Frozen):
    """All verdicts, and how the claimed layout compares with the optimum."""

    name: str = Field(description="What was audited.")
    layout: str = Field(description="The claimed layout.")
    results: tuple[ClaimResult, ...] = Field(description="One per claim (plus legality).")
    comparison: str = Field(description="Claimed layout vs placer solve's plan.")
    plan_status: str | None = Field(description="Status of the comparison solve.")

    @property
    def failed(self) -> list[ClaimResult]:
        """Claims that do not hold."""
        return [r for r in self.results if r.verdict == "fails"]


def load_deployment(path: str) -> Deployment:
    """Read a deployment file."""
    return validate(Deployment, read_json(path), path)


def _layout(dep: Deployment, source: str) -> Layout:
    keys = {"tp", "pp", "ep", "etp", "dp_attn", "layers_per_stage", "redundant_experts"}
    try:
        return Layout(**{k: v for k, v in dep.layout.items() if k in keys})
    except ValidationError as exc:
        raise validation_error(exc, source, "layout") from None


def check_claims(
    dep: Deployment,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    profile: str = "generic",
    solve_limit_s: float = 20.0,
    source: str = "<deployment>",
) -> CheckReport:
    """Judge every claim of ``dep`` (see module docstring)."""
    prof = get_profile(profile)
    out: list[ClaimResult] = []
    try:
        layout = _layout(dep, source)
    except InvalidInputError as exc:
        out.append(
            ClaimResult(
                id="layout",
                text=str(dep.layout),
                verdict="fails",
                computed="-",
                reason=f"the layout cannot exist: {exc.detail}",
            )
        )
        return CheckReport(
            name=dep.name,
            layout=str(dep.layout),
            results=tuple(out),
            comparison="not compared: the claimed layout is not a layout",
            plan_status=None,
        )
    bad = layout_violations(model, cluster, layout, prof)
    out.append(
        ClaimResult(
            id="layout",
            text=f"{layout.describe()} is a legal layout",
            computed=layout.describe(),
            verdict="fails" if bad else "holds",
            reason="; ".join(bad) if bad else f"legal under the '{prof.name}' rules profile",
        )
    )
    ev = (
        evaluate(model, cluster, workload, layout, prof)
        if layout.gpus <= cluster.num_gpus
        else None
    )
    folded = bool(dep.layout.get("folded"))
    for c in dep.claims:
        out.append(judge_claim(c, model, cluster, workload, layout, ev, folded, prof.name))
    comparison, status, beaten = _compare(
        model, cluster, workload, layout, ev, profile, solve_limit_s
    )
    optimal_ids = {c.id for c in dep.claims if c.kind == "optimal_layout"}
    for i, r in enumerate(out):
        if r.id not in optimal_ids:
            continue
        update: dict[str, Any] = {"computed": comparison}
        if beaten is not None and beaten > 1 + 1e-9:
            update["verdict"] = "fails"
            update["reason"] = (
                f"placer's proven optimum has {beaten:.2f}x the claimed "
                "layout's estimated throughput"
            )
        out[i] = r.model_copy(update=update)
    return CheckReport(
        name=dep.name,
        layout=layout.describe(),
        results=tuple(out),
        comparison=comparison,
        plan_status=status,
    )


def _compare(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    layout: Layout,
    ev: Evaluation | None,
    profile: str,
    limit: float,
) -> tuple[str, str | None, float | None]:
    """The optimum's summary, its status, and its throughput as a multiple of the claimed
    layout's when the optimum is proven (None otherwise)."""
    from placer.search.outer import solve

    plan: Plan = solve(model, cluster, workload, SolveConfig(profile=profile, time_limit_s=limit))
    if plan.estimates is None or plan.layout is None:
        return f"placer solve finds no plan ({plan.status})", plan.status, None
    p = plan.layout
    best = (
        f"placer solve ({plan.status}, gap {100 * (plan.objective.gap or 0):.2f} %): TP{p.tp} "
        f"PP{p.pp} EP{p.ep} ETP{p.etp} DPattn{p.dp_attn} on {p.gpus_used} GPUs, "
        f"{plan.estimates.throughput_tokens_s:,.0f} tokens/s"
    )
    if ev is None or ev.estimates is None or not ev.fits:
        return best + "; the claimed layout does not fit", plan.status, None
    ratio = plan.estimates.throughput_tokens_s / ev.estimates.throughput_tokens_s
    text = (
        f"{best}; the claimed {layout.describe()} reaches "
        f"{ev.estimates.throughput_tokens_s:,.0f} tokens/s ({ratio:.2f}x less)"
    )
    return text, plan.status, ratio if plan.status == "optimal" else None


__all__ = [
    "COUNT_CLAIMS",
    "MAX_CLAIMED",
    "NUMBER_CLAIMS",
    "CheckReport",
    "Claim",
    "ClaimKind",
    "ClaimResult",
    "Deployment",
    "Verdict",
    "check_claims",
    "compute_utilization",
    "load_deployment",
]
