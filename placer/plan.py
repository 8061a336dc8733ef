"""The plan and its certificate (pydantic, JSON): what ``placer solve`` returns.

Status vocabulary (CVXPY style, placer's own, never CP-SAT's):

- ``optimal``: every legal layout was solved to a zero gap, pruned by a bound
  that cannot beat the plan, or proven infeasible; the global gap is 0;
- ``feasible``: a plan that fits, with the global gap to the smallest bound of
  anything left unresolved (time limit);
- ``infeasible``: no legal layout fits (proven for each);
- ``unknown``: no plan and no proof within the time limit.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import Field

from placer._base import Frozen
from placer.cost import Estimates
from placer.evaluate import Constraint, GPUReport
from placer.layout import Layout

#: Version of the plan file format; ``placer verify`` reads this and older ones.
PLAN_FORMAT_VERSION = 1

Status = Literal["optimal", "feasible", "infeasible", "unknown"]
EntryStatus = Literal["optimal", "feasible", "pruned", "infeasible", "unresolved"]


def digest(data: Any) -> str:
    """SHA-256 of a JSON value in canonical form (sorted keys, no spaces)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class PlanLayout(Frozen):
    """The chosen degrees and layer split."""

    tp: int = Field(description="Attention tensor parallel.")
    pp: int = Field(description="Pipeline stages.")
    ep: int = Field(description="Expert parallel.")
    etp: int = Field(description="Expert tensor parallel.")
    dp_attn: int = Field(description="Data-parallel attention groups per stage.")
    gpus_used: int = Field(description="GPUs the plan uses.")
    layers_per_stage: tuple[int, ...] = Field(description="Layers in each stage, in order.")
    redundant_experts: int = Field(default=0, description="Extra expert slots per MoE layer.")

    def to_layout(self) -> Layout:
        """The :class:`~placer.layout.Layout` these degrees and this split describe."""
        return Layout(
            tp=self.tp,
            pp=self.pp,
            ep=self.ep,
            etp=self.etp,
            dp_attn=self.dp_attn,
            layers_per_stage=self.layers_per_stage,
            redundant_experts=self.redundant_experts,
        )


class ObjectiveRecord(Frozen):
    """The objective's value, the proven bound and the gap between them."""

    name: str = Field(description="throughput, latency or gpus.")
    unit: str = Field(description="Unit of value and bound.")
    value: float | None = Field(description="Objective of the plan (None without a plan).")
    bound: float | None = Field(description="No legal plan can do better than this.")
    gap: float | None = Field(description="(value - bound) / value; 0 means proven optimal.")
    value_units: int | None = Field(description="Value in integer units (ns or GPUs).")
    bound_units: int | None = Field(description="Bound in integer units.")


class SearchEntry(Frozen):
    """What happened to one legal layout."""

    layout: str = Field(description="Degrees, e.g. 'TP4 PP4 EP4 ETP1'.")
    tp: int = Field(description="Attention tensor parallel.")
    pp: int = Field(description="Pipeline stages.")
    ep: int = Field(description="Expert parallel.")
    etp: int = Field(description="Expert tensor parallel.")
    dp_attn: int = Field(description="Attention data parallel.")
    gpus: int = Field(description="GPUs used.")
    status: EntryStatus = Field(description="How the layout was resolved.")
    bound_units: int | None = Field(description="Analytic bound (ns), None if not computed.")
    value_units: int | None = Field(default=None, description="Best value found (ns).")
    solver_bound_units: int | None = Field(default=None, description="CP-SAT's bound (ns).")
    reason: str = Field(default="", description="Why pruned or infeasible.")


class SearchRecord(Frozen):
    """The factorization search: every legal layout and its fate."""

    candidates: int = Field(description="Degree combinations considered.")
    legal: int = Field(description="Combinations the rules profile accepts.")
    rejected_by_rule: dict[str, int] = Field(description="Illegal combinations, by first rule.")
    solved: int = Field(description="Layouts given to CP-SAT.")
    pruned: int = Field(description="Layouts whose bound could not beat the plan.")
    infeasible: int = Field(description="Layouts proven not to fit.")
    unresolved: int = Field(description="Layouts neither solved nor pruned (time limit).")
    entries: tuple[SearchEntry, ...] = Field(description="One per legal layout.")


class SolverInfo(Frozen):
    """How the search ran: enough to reproduce it."""

    seed: int = Field(description="CP-SAT random seed.")
    workers: int = Field(description="CP-SAT workers.")
    deterministic: bool = Field(description="Deterministic mode.")
    time_limit_s: float = Field(description="Wall-clock limit.")
    relative_gap_limit: float = Field(description="Per-layout gap limit.")
    profile: str = Field(description="Rules profile.")
    objective: str = Field(description="Objective.")
    ortools_version: str = Field(description="OR-Tools version.")
    placer_version: str = Field(description="placer version.")
    wall_time_s: float = Field(description="Elapsed wall time of the search.")
    deterministic_time_s: float = Field(
        default=0.0, description="CP-SAT deterministic time the search used."
    )
    wall_clock_stop: bool = Field(
        default=False,
        description="The wall clock stopped a deterministic search (its answer may vary).",
    )
    extra_params: dict[str, float | int | bool | str] = Field(description="Passed to CP-SAT.")
    interrupted: bool = Field(default=False, description="The search was stopped by Ctrl-C.")


class Certificate(Frozen):
    """Every constraint instance with its value and limit, and the search record."""

    constraints: tuple[Constraint, ...] = Field(description="Constraint instances of the plan.")
    search: SearchRecord = Field(description="The factorization search.")
    solver: SolverInfo = Field(description="Solver settings and versions.")


class Infeasibility(Frozen):
    """Why nothing fits, and the smallest change that would."""

    reason: str = Field(description="One-paragraph explanation.")
    conflicts: tuple[str, ...] = Field(description="Conflicting constraint families.")
    closest_layout: str | None = Field(description="The layout that came closest to fitting.")
    fixes: tuple[str, ...] = Field(description="Computed changes that make the input fit.")
    min_gpus: int | None = Field(description="Fewest GPUs of this type that fit (if found).")


class PlanInputs(Frozen):
    """Copies of the inputs and their hashes, so a plan can be verified on its own."""

    model: dict[str, Any] = Field(description="The model, in placer's own format.")
    cluster: dict[str, Any] = Field(description="The cluster, as validated.")
    workload: dict[str, Any] = Field(description="The workload, as validated.")
    loads: dict[int, tuple[float, ...]] | None = Field(
        default=None, description="Expert load per MoE layer, when the solve was given loads."
    )
    hashes: dict[str, str] = Field(description="SHA-256 of model, cluster, workload (and loads).")
    sources: dict[str, str | None] = Field(description="Files the inputs were read from.")


class Plan(Frozen):
    """The deployment plan with its certificate."""

    format_version: int = Field(default=PLAN_FORMAT_VERSION, description="Plan file format.")
    status: Status = Field(description="optimal, feasible, infeasible or unknown.")
    layout: PlanLayout | None = Field(description="The chosen layout (None without a plan).")
    objective: ObjectiveRecord = Field(description="Value, bound and gap.")
    gpus: tuple[GPUReport, ...] = Field(description="Memory breakdown of every GPU used.")
    expert_map: dict[int, tuple[tuple[int, ...], ...]] = Field(
        description="Per MoE layer: the logical experts held by each EP rank's slots."
    )
    estimates: Estimates | None = Field(description="Roofline estimates of the plan.")
    certificate: Certificate = Field(description="Constraints and search record.")
    infeasibility: Infeasibility | None = Field(default=None, description="When infeasible.")
    inputs: PlanInputs = Field(description="Input copies and hashes.")

    def is_feasible(self) -> bool:
        """Whether the plan holds a placement."""
        return self.layout is not None

    def summary(self) -> str:
        """An aligned text block: status, layout, objective, gap and search counts."""
        o = self.objective
        s = self.certificate.search
        lines = [f"status      {self.status}"]
        if self.layout is not None:
            lay = self.layout
            lines.append(
                f"layout      TP{lay.tp} PP{lay.pp} EP{lay.ep} ETP{lay.etp} DPattn{lay.dp_attn} "
                f"on {lay.gpus_used} GPUs, layers per stage {list(lay.layers_per_stage)}"
            )
        if o.value is not None:
            lines.append(f"objective   {o.name} = {o.value:.6g} {o.unit}")
            lines.append(f"bound       {o.bound:.6g} {o.unit}, gap {100 * (o.gap or 0):.3f} %")
        if self.estimates is not None:
            e = self.estimates
            lines.append(
                f"estimates   {e.throughput_tokens_s:,.0f} tokens/s, step {e.cycle_s * 1e3:.3f} "
                f"ms, latency {e.latency_s * 1e3:.3f} ms ({e.phase})"
            )
        if self.gpus:
            peak = max(g.used_bytes for g in self.gpus)
            cap = min(g.capacity_bytes for g in self.gpus)
            lines.append(
                f"memory      peak {peak / 1e9:.2f} GB per GPU of {cap / 1e9:.2f} GB usable"
            )
        lines.append(
            f"search      {s.legal} legal layouts: {s.solved} solved, {s.pruned} pruned, "
            f"{s.infeasible} infeasible, {s.unresolved} unresolved"
        )
        if self.infeasibility is not None:
            lines.append(f"why         {self.infeasibility.reason}")
            for fix in self.infeasibility.fixes:
                lines.append(f"fix         {fix}")
        sv = self.certificate.solver
        lines.append(
            f"solver      ortools {sv.ortools_version}, seed {sv.seed}, {sv.workers} workers, "
            f"limit {sv.time_limit_s:g} s, {sv.wall_time_s:.2f} s"
            + (", interrupted" if sv.interrupted else "")
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()
