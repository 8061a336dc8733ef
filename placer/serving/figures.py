"""The plan's instance at its concurrency: split, expert map, memory, TTFT, TPOT and
throughput, and the serving constraints the certificate lists (docs/serving.md)."""

from __future__ import annotations

from dataclasses import dataclass

from placer.cluster import ClusterSpec
from placer.config import SolveConfig
from placer.cost import Estimates
from placer.evaluate import Constraint, GPUReport, evaluate
from placer.ledger import ExpertMap
from placer.model import ModelSpec
from placer.rules import get_profile
from placer.search.outer import expert_map_from_counts
from placer.search.tables import placement_constraints
from placer.serving.probe import LayoutProbe
from placer.serving.record import ServingObjective, ServingRecord
from placer.serving.search import TIE
from placer.serving.timing import NS, instance_workload, tokens_per_s, tpot_ns, ttft_ns
from placer.workload import Workload


@dataclass(frozen=True)
class InstanceFigures:
    """One instance of the plan at its concurrency: split, expert map, evaluation, figures."""

    concurrency: int
    gpus_per_instance: int
    split: tuple[int, ...]
    expert_map: ExpertMap
    gpus: tuple[GPUReport, ...]
    estimates: Estimates | None
    constraints: list[Constraint]
    step_ns: int
    prefill_ns: int
    tpot: float
    ttft: int
    rate: float

    def record(
        self, workload: Workload, objective: ServingObjective, n: int, limit: int, k: int
    ) -> ServingRecord:
        """The serving record of ``k`` such instances on ``n`` GPUs (no search entries)."""
        c, rate = self.concurrency, self.rate
        return ServingRecord(
            objective=objective,
            ttft_ms=workload.ttft_ms,
            tpot_ms=workload.tpot_ms,
            request_rate=workload.request_rate,
            cluster_gpus=n,
            max_instance_gpus=limit,
            instances=k,
            gpus_per_instance=self.gpus_per_instance,
            idle_gpus=n - k * self.gpus_per_instance,
            concurrency=c,
            tpot_s=self.tpot / NS,
            step_s=self.step_ns / NS,
            ttft_s=self.ttft / NS,
            prefill_s=self.prefill_ns / NS,
            tokens_per_s_instance=rate,
            tokens_per_s=k * rate,
            tokens_per_s_per_gpu=k * rate / n,
            tokens_per_s_per_user=rate / c,
            requests_per_s=k * rate / workload.output_len,
            entries=(),
        )


def figures_at(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    config: SolveConfig,
    probe: LayoutProbe,
    c: int,
) -> InstanceFigures:
    """:class:`InstanceFigures` of ``probe``'s layout at concurrency ``c``."""
    lay = probe.layout
    p = probe.at(c)
    assert p.split is not None
    tables = probe.tables(c)
    emap = expert_map_from_counts(tables, probe.counts)
    full = lay.model_copy(update={"layers_per_stage": p.split})
    ev = evaluate(
        model, cluster, instance_workload(workload, c), full, get_profile(config.profile), emap
    )
    return InstanceFigures(
        concurrency=c,
        gpus_per_instance=lay.gpus,
        split=p.split,
        expert_map=emap,
        gpus=ev.gpus,
        estimates=ev.estimates,
        constraints=list(ev.constraints) + placement_constraints(tables, probe.counts),
        step_ns=p.step_ns,
        prefill_ns=p.prefill_ns,
        tpot=tpot_ns(workload, c, p.step_ns, p.prefill_ns),
        ttft=ttft_ns(workload, c, p.step_ns, p.prefill_ns),
        rate=tokens_per_s(workload, c, p.step_ns, p.prefill_ns),
    )


def serving_constraints(
    workload: Workload,
    instances: int,
    gpus: int,
    cluster_gpus: int,
    tpot: float,
    ttft: int,
    rate: float,
) -> list[Constraint]:
    """The targets, the instance count and (objective gpus) the request rate, as constraints."""
    out = [
        Constraint(
            name="instances",
            value=instances * gpus,
            limit=cluster_gpus,
            holds=instances * gpus <= cluster_gpus,
            detail=f"{instances} instances of {gpus} GPUs",
        )
    ]
    if workload.tpot_ms is not None:
        out.append(
            Constraint(
                name="tpot_ms",
                value=tpot / 1e6,
                limit=workload.tpot_ms,
                holds=tpot <= workload.tpot_ms * 1e6,
                detail="decode step plus its share of interleaved prefills (docs/serving.md)",
            )
        )
    if workload.ttft_ms is not None:
        out.append(
            Constraint(
                name="ttft_ms",
                value=ttft / 1e6,
                limit=workload.ttft_ms,
                holds=ttft <= workload.ttft_ms * 1e6,
                detail="wait for the running step, then the prompt's chunks (docs/serving.md)",
            )
        )
    if workload.request_rate is not None:
        served = instances * rate / workload.output_len
        out.append(
            Constraint(
                name="request_rate",
                value=workload.request_rate,
                limit=served,
                holds=workload.request_rate <= served * (1 + TIE),
                detail=f"{served:.4g} requests/s served by {instances} instances",
            )
        )
    return out
