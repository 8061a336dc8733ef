"""Evaluate one given layout: memory ledger, every constraint, estimates.

This is what ``placer evaluate`` prints and what ``placer check`` and the solver's
certificate build on: each constraint instance with its value, its limit and
whether it holds.
"""

from __future__ import annotations

from pydantic import Field

from placer._base import Frozen
from placer.calibration import Calibration
from placer.cluster import ClusterSpec
from placer.collectives import use_engine
from placer.cost import Estimates, estimate
from placer.layout import Layout
from placer.ledger import COLUMNS, ExpertMap, Ledger, memory_ledger
from placer.limits import check_scale
from placer.model import ModelSpec
from placer.rules import RulesProfile, get_profile, layout_violations
from placer.workload import Workload


class Constraint(Frozen):
    """One constraint instance: ``value <= limit`` (or a rule, value 1 = holds)."""

    name: str = Field(description="Family and instance, e.g. 'memory[gpu 3]'.")
    value: float = Field(description="The computed left-hand side.")
    limit: float = Field(description="The bound it must not exceed.")
    holds: bool = Field(description="Whether value <= limit.")
    detail: str = Field(default="", description="One line on what was checked.")


class GPUReport(Frozen):
    """Memory of one GPU, in bytes by column."""

    id: int = Field(description="Physical GPU id.")
    stage: int = Field(description="Pipeline stage.")
    breakdown: dict[str, int] = Field(description="Bytes per ledger column.")
    used_bytes: int = Field(description="Sum of the breakdown.")
    capacity_bytes: int = Field(description="Memory x utilization target.")
    memory_bytes: int = Field(description="Physical memory of the GPU.")


class Evaluation(Frozen):
    """The result of evaluating one layout."""

    fits: bool = Field(description="Every constraint holds.")
    layout: Layout = Field(description="The layout evaluated.")
    profile: str = Field(description="Rules profile used.")
    gpus: tuple[GPUReport, ...] = Field(description="One entry per GPU used.")
    constraints: tuple[Constraint, ...] = Field(description="Every constraint instance.")
    estimates: Estimates | None = Field(description="Roofline estimates (None if illegal).")

    def violated(self) -> list[Constraint]:
        """The constraints that do not hold."""
        return [c for c in self.constraints if not c.holds]


def ledger_constraints(ledger: Ledger) -> list[Constraint]:
    """One memory constraint per GPU."""
    out = []
    for i, gid in enumerate(ledger.gpu_ids):
        used, cap = int(ledger.used[i]), int(ledger.capacity[i])
        out.append(
            Constraint(
                name=f"memory[gpu {int(gid)}]",
                value=used,
                limit=cap,
                holds=used <= cap,
                detail=f"{used / 1e9:.2f} GB planned of {cap / 1e9:.2f} GB usable",
            )
        )
    return out


def gpu_reports(ledger: Ledger) -> tuple[GPUReport, ...]:
    """The ledger as report rows."""
    return tuple(
        GPUReport(
            id=int(gid),
            stage=int(ledger.stage[i]),
            breakdown={c: int(ledger.bytes[i, j]) for j, c in enumerate(COLUMNS)},
            used_bytes=int(ledger.used[i]),
            capacity_bytes=int(ledger.capacity[i]),
            memory_bytes=int(ledger.memory[i]),
        )
        for i, gid in enumerate(ledger.gpu_ids)
    )


def evaluate(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    layout: Layout,
    profile: RulesProfile | str = "generic",
    expert_map: ExpertMap | None = None,
    calibration: Calibration | None = None,
) -> Evaluation:
    """Check ``layout`` against every constraint and estimate its speed (with
    ``calibration``, default the shipped one).

    Raises
    ------
    InvalidInputError
        When the model and workload are beyond the counts placer can compute with
        (see :func:`placer.limits.check_scale`).
    """
    check_scale(model, workload, layout.redundant_experts)
    prof = get_profile(profile) if isinstance(profile, str) else profile
    constraints: list[Constraint] = [
        Constraint(
            name="gpu_count",
            value=layout.gpus,
            limit=cluster.num_gpus,
            holds=layout.gpus <= cluster.num_gpus,
            detail=f"tp {layout.tp} x dp_attn {layout.dp_attn} x pp {layout.pp}",
        ),
    ]
    rules = layout_violations(model, cluster, layout, prof)
    constraints.append(
        Constraint(
            name=f"rules[{prof.name}]",
            value=len(rules),
            limit=0,
            holds=not rules,
            detail="; ".join(rules) or "legal",
        )
    )
    if (
        layout.gpus > cluster.num_gpus
        or (
            layout.layers_per_stage is not None
            and sum(layout.layers_per_stage) != model.num_layers
        )
        or layout.pp > model.num_layers
    ):
        return Evaluation(
            fits=False,
            layout=layout,
            profile=prof.name,
            gpus=(),
            constraints=tuple(constraints),
            estimates=None,
        )
    # The ledger follows the profile's engine where engines keep memory differently
    # (chunked-attention KV under vLLM: docs/engine-rules.md).
    with use_engine(prof.name):
        ledger = memory_ledger(model, cluster, workload, layout, expert_map)
    constraints.extend(ledger_constraints(ledger))
    est = estimate(
        model, cluster, workload, layout, expert_map, calibration=calibration, engine=prof.name
    )
    return Evaluation(
        fits=all(c.holds for c in constraints),
        layout=layout,
        profile=prof.name,
        gpus=gpu_reports(ledger),
        constraints=tuple(constraints),
        estimates=est,
    )
