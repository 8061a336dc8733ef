"""Solver settings: :class:`SolveConfig`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from placer._base import Bool, Float, Frozen, NonNegInt, PosFloat, PosInt
from placer.limits import MAX_BATCH as MAX_CONCURRENCY
from placer.limits import MAX_SEED, MAX_TIME_LIMIT_S, MAX_WORKERS

Objective = Literal["throughput", "latency", "gpus", "step"]


class SolveConfig(Frozen):
    """How ``placer.solve`` searches. Every field is recorded in the plan."""

    objective: Objective = Field(
        default="throughput",
        description="With a fixed batch: throughput or step: shortest pipelined step; latency: "
        "shortest un-pipelined step; gpus: fewest GPUs that fit (then throughput). With "
        "latency targets (docs/serving.md): throughput: most output tokens/s per GPU; gpus: "
        "fewest GPUs that serve the request rate.",
    )
    profile: str = Field(default="generic", description="Engine rules profile.")
    time_limit_s: PosFloat = Field(
        default=60.0, le=MAX_TIME_LIMIT_S, description="Wall-clock limit, seconds."
    )
    seed: NonNegInt = Field(
        default=0, le=MAX_SEED, description="CP-SAT random seed (always recorded)."
    )
    workers: PosInt = Field(default=2, le=MAX_WORKERS, description="CP-SAT search workers.")
    deterministic: Bool = Field(
        default=False,
        description="One worker, deterministic time budgets and no wall-clock decisions: the "
        "same inputs and seed give the same plan.",
    )
    relative_gap_limit: Float = Field(
        default=0.0, ge=0, lt=1, description="Stop a layout's solve within this relative gap."
    )
    max_gpus: PosInt | None = Field(
        default=None, description="Use at most this many GPUs (default: all)."
    )
    disagg: bool = Field(
        default=False,
        description="Serving search only: also find the best split into prefill and decode "
        "instances and compare it with aggregated serving (docs/serving.md).",
    )
    concurrency: PosInt | None = Field(
        default=None,
        le=MAX_CONCURRENCY,
        description="Serving search, objective latency: requests in flight on the whole "
        "cluster, spread over the instances; the plan has the lowest TPOT carrying them "
        "within the targets (docs/serving.md).",
    )
    extra_params: dict[str, float | int | bool | str] = Field(
        default_factory=dict, description="Passed through to CP-SAT's parameters."
    )
