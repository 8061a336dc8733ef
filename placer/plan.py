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
from typing import Annotated, Any, Literal

from pydantic import Field, Strict

from placer._base import Bool, Frozen, Int, NonNegInt
from placer.cost import Estimates
from placer.evaluate import Constraint, GPUReport
from placer.layout import Layout
from placer.serving.record import ServingRecord

#: Version of the plan file format; ``placer verify`` reads this and older ones.
PLAN_FORMAT_VERSION = 1

#: Largest degree, GPU count, layer count or slot count a plan may state. Far above any
#: cluster placer plans for; it only keeps absurd figures (1e30) from reaching the checks
#: (see docs/certificate.md).
MAX_PLAN_COUNT = 2**20

#: A count in a plan: a strict positive integer no larger than :data:`MAX_PLAN_COUNT`.
PlanCount = Annotated[int, Strict(), Field(gt=0, le=MAX_PLAN_COUNT)]
#: A count that may be zero.
PlanCount0 = Annotated[int, Strict(), Field(ge=0, le=MAX_PLAN_COUNT)]

Status = Literal["optimal", "feasible", "infeasible", "unknown"]
EntryStatus = Literal["optimal", "feasible", "pruned", "infeasible", "unresolved"]


def digest(data: Any) -> str:
    """SHA-256 of a JSON value in canonical form (sorted keys, no spaces)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def content_digest(data: dict[str, Any]) -> str:
    """SHA-256 of an input's content: its copy without ``source``, which records where it
    was read from (the path as typed), not what it says."""
    return digest({k: v for k, v in data.items() if k != "source"})


class PlanLayout(Frozen):
    """The chosen degrees and layer split."""

    tp: PlanCount = Field(description="Attention tensor parallel.")
    pp: PlanCount = Field(description="Pipeline stages.")
    ep: PlanCount = Field(description="Expert parallel.")
    etp: PlanCount = Field(description="Expert tensor parallel.")
    dp_attn: PlanCount = Field(description="Data-parallel attention groups per stage.")
    gpus_used: PlanCount = Field(description="GPUs the plan uses.")
    layers_per_stage: tuple[PlanCount, ...] = Field(
        max_length=MAX_PLAN_COUNT, description="Layers in each stage, in order."
    )
    redundant_experts: PlanCount0 = Field(
        default=0, description="Extra expert slots per MoE layer."
    )

    @classmethod
    def of(cls, layout: Layout, layers_per_stage: tuple[int, ...]) -> PlanLayout:
        """The record of ``layout`` with the split ``layers_per_stage``."""
        return cls(
            tp=layout.tp,
            pp=layout.pp,
            ep=layout.ep,
            etp=layout.expert_tp,
            dp_attn=layout.dp_attn,
            gpus_used=layout.gpus,
            layers_per_stage=layers_per_stage,
            redundant_experts=layout.redundant_experts,
        )

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
    value_units: Int | None = Field(description="Value in integer units (ns or GPUs).")
    bound_units: Int | None = Field(description="Bound in integer units.")

    @classmethod
    def without_plan(cls, name: str, unit: str) -> ObjectiveRecord:
        """The record of a plan that deploys nothing: no value, bound or gap."""
        return cls(
            name=name, unit=unit, value=None, bound=None, gap=None,
            value_units=None, bound_units=None,
        )  # fmt: skip


class SearchEntry(Frozen):
    """What happened to one legal layout."""

    layout: str = Field(description="Degrees, e.g. 'TP4 PP4 EP4 ETP1'.")
    tp: PlanCount = Field(description="Attention tensor parallel.")
    pp: PlanCount = Field(description="Pipeline stages.")
    ep: PlanCount = Field(description="Expert parallel.")
    etp: PlanCount = Field(description="Expert tensor parallel.")
    dp_attn: PlanCount = Field(description="Attention data parallel.")
    gpus: PlanCount = Field(description="GPUs used.")
    status: EntryStatus = Field(description="How the layout was resolved.")
    bound_units: Int | None = Field(description="Analytic bound (ns), None if not computed.")
    value_units: Int | None = Field(default=None, description="Best value found (ns).")
    solver_bound_units: Int | None = Field(default=None, description="CP-SAT's bound (ns).")
    reason: str = Field(default="", description="Why pruned or infeasible.")


class SearchRecord(Frozen):
    """The factorization search: every legal layout and its fate."""

    candidates: NonNegInt = Field(description="Degree combinations considered.")
    legal: NonNegInt = Field(description="Combinations the rules profile accepts.")
    rejected_by_rule: dict[str, NonNegInt] = Field(
        description="Illegal combinations, by first rule."
    )
    solved: NonNegInt = Field(description="Layouts given to CP-SAT.")
    pruned: NonNegInt = Field(description="Layouts whose bound could not beat the plan.")
    infeasible: NonNegInt = Field(description="Layouts proven not to fit.")
    unresolved: NonNegInt = Field(description="Layouts neither solved nor pruned (time limit).")
    entries: tuple[SearchEntry, ...] = Field(description="One per legal layout.")
    complete: Bool = Field(
        default=True,
        description="Every legal layout was enumerated (False: the time limit stopped the "
        "enumeration, and the plan claims no bound).",
    )


class SolverInfo(Frozen):
    """How the search ran: enough to reproduce it."""

    seed: Int = Field(description="CP-SAT random seed.")
    workers: Int = Field(description="CP-SAT workers.")
    deterministic: Bool = Field(description="Deterministic mode.")
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
    interrupted: Bool = Field(default=False, description="The search was stopped by Ctrl-C.")
    max_gpus: PlanCount | None = Field(
        default=None, description="The search used at most this many GPUs (None: all)."
    )


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
    min_gpus: PlanCount | None = Field(
        description="Fewest GPUs of this type that fit (if found)."
    )


class PlanInputs(Frozen):
    """Copies of the inputs and their hashes, so a plan can be verified on its own."""

    model: dict[str, Any] = Field(description="The model, in placer's own format.")
    cluster: dict[str, Any] = Field(description="The cluster, as validated.")
    workload: dict[str, Any] = Field(description="The workload, as validated.")
    loads: dict[int, tuple[float, ...]] | None = Field(
        default=None, description="Expert load per MoE layer, when the solve was given loads."
    )
    calibration: dict[str, Any] | None = Field(
        default=None,
        description="The calibration the estimates and the objective used (older plans: none, "
        "meaning the shipped default).",
    )
    hashes: dict[str, str] = Field(
        description="SHA-256 of model, cluster, workload (and loads, calibration)."
    )
    sources: dict[str, str | None] = Field(description="Files the inputs were read from.")


class Plan(Frozen):
    """The deployment plan with its certificate."""

    format_version: Int = Field(default=PLAN_FORMAT_VERSION, description="Plan file format.")
    status: Status = Field(description="optimal, feasible, infeasible or unknown.")
    layout: PlanLayout | None = Field(description="The chosen layout (None without a plan).")
    objective: ObjectiveRecord = Field(description="Value, bound and gap.")
    gpus: tuple[GPUReport, ...] = Field(description="Memory breakdown of every GPU used.")
    expert_map: dict[Int, tuple[tuple[Int, ...], ...]] = Field(
        description="Per MoE layer: the logical experts held by each EP rank's slots."
    )
    estimates: Estimates | None = Field(description="Roofline estimates of the plan.")
    certificate: Certificate = Field(description="Constraints and search record.")
    infeasibility: Infeasibility | None = Field(default=None, description="When infeasible.")
    inputs: PlanInputs = Field(description="Input copies and hashes.")
    serving: ServingRecord | None = Field(
        default=None,
        description="Instances, concurrency, TTFT, TPOT and throughput when the plan answers "
        "the serving question (latency targets; docs/serving.md).",
    )

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
            lines.append(
                f"bound       {o.bound:.6g} {o.unit}, gap {100 * (o.gap or 0):.3f} %"
                if o.bound is not None
                else "bound       none proven"
            )
        if self.serving is not None:
            lines.extend(self.serving.summary_lines())
        elif self.estimates is not None:
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
