"""The Pareto frontier of tokens/s per user against tokens/s per GPU (docs/serving.md).

Every legal instance layout and every concurrency within memory and the targets gives one
point: per user ``1 / TPOT(c)``, per GPU of the cluster ``k x c / TPOT(c) / N`` with
``k = N // g`` identical instances. The frontier keeps the points no other point beats on
both. It is exact with the branch and bound of the serving search: on a concurrency range
``[a, b]`` every point has per-user speed at most ``1 / TPOT_lb(a)`` and per-GPU speed at
most ``k x b / TPOT_lb(a) / N``; a range whose corner is already dominated is closed.
"""

from __future__ import annotations

import csv
import io
import json

from pydantic import Field

from placer._base import Frozen
from placer.cluster import ClusterSpec
from placer.config import SolveConfig
from placer.layout import Layout
from placer.model import ModelSpec
from placer.rules import get_profile
from placer.search.space import enumerate_layouts
from placer.serving.probe import LayoutProbe
from placer.serving.search import cap_check, memory_limit
from placer.serving.solve import check_one_gpu_type, instance_cap
from placer.serving.timing import NS, tpot_ns, ttft_ns
from placer.workload import Workload


class FrontierPoint(Frozen):
    """One non-dominated deployment: a layout, its concurrency and its speeds."""

    layout: str = Field(description="Instance layout, e.g. 'TP2 PP1 EP8 ETP1'.")
    tp: int = Field(description="Attention tensor parallel.")
    pp: int = Field(description="Pipeline stages.")
    ep: int = Field(description="Expert parallel.")
    etp: int = Field(description="Expert tensor parallel.")
    dp_attn: int = Field(description="Attention data parallel.")
    gpus: int = Field(description="GPUs of one instance.")
    instances: int = Field(description="Identical instances on the cluster.")
    concurrency: int = Field(description="Concurrent requests per instance.")
    tpot_ms: float = Field(description="Mean time per output token.")
    ttft_ms: float = Field(description="Time to first token.")
    tokens_per_s_per_user: float = Field(description="1 / TPOT.")
    tokens_per_s_per_gpu: float = Field(description="Output tokens/s per GPU of the cluster.")


class Frontier(Frozen):
    """The non-dominated points, fastest per user first."""

    cluster_gpus: int = Field(description="GPUs of the cluster.")
    max_instance_gpus: int = Field(description="Largest instance searched.")
    exact: bool = Field(
        description="Every range was settled: no deployment within the searched instances "
        "beats a listed point on both speeds."
    )
    points: tuple[FrontierPoint, ...] = Field(description="Non-dominated points.")

    def to_csv(self) -> str:
        """The points as CSV, one row each."""
        out = io.StringIO()
        names = list(FrontierPoint.model_fields)
        writer = csv.DictWriter(out, fieldnames=names)
        writer.writeheader()
        for p in self.points:
            writer.writerow(p.model_dump())
        return out.getvalue()

    def to_json(self) -> str:
        """The frontier as JSON."""
        return json.dumps(self.model_dump(mode="json"), indent=2)


def _dominated(points: list[tuple[float, float]], user: float, gpu: float) -> bool:
    return any(u >= user and g >= gpu for u, g in points)


def frontier(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    config: SolveConfig | None = None,
) -> Frontier:
    """The non-dominated (tokens/s per user, tokens/s per GPU) points over every legal
    instance layout and concurrency within memory and the workload's targets."""
    config = config or SolveConfig()
    check_one_gpu_type(cluster)
    n = cluster.num_gpus
    cap = instance_cap(n, config)
    space = enumerate_layouts(model, cluster, get_profile(config.profile), cap)
    cache: dict[object, object] = {}
    found: list[tuple[float, float, Layout, int, float, float]] = []
    exact = True

    def front() -> list[tuple[float, float]]:
        return [(u, g) for u, g, *_ in found]

    for lay in space.legal:
        probe = LayoutProbe(model, cluster, workload, lay, cache)
        k = n // lay.gpus
        stack = [(1, memory_limit(probe))] if probe.memory_bound_fits(1) else []
        while stack:
            a, b = stack.pop()
            p = probe.loose(a)
            if cap_check(workload, p, bound=True) is not None:
                continue
            t = tpot_ns(workload, a, p.step_bound_ns, p.prefill_bound_ns)
            if _dominated(front(), NS / t, k * b * NS / t / n):
                continue
            p = probe.at(a)
            if cap_check(workload, p, bound=True) is not None:
                continue
            if cap_check(workload, p, bound=False) is None:
                tp = tpot_ns(workload, a, p.step_ns, p.prefill_ns)
                user, gpu = NS / tp, k * a * NS / tp / n
                if not _dominated(front(), user, gpu):
                    found[:] = [f for f in found if not (user >= f[0] and gpu >= f[1])]
                    ttft = ttft_ns(workload, a, p.step_ns, p.prefill_ns)
                    found.append((user, gpu, lay, a, tp / 1e6, ttft / 1e6))
            t = tpot_ns(workload, a, p.step_bound_ns, p.prefill_bound_ns)
            if _dominated(front(), NS / t, k * b * NS / t / n):
                continue
            if a == b:
                exact = False  # bound and achievable figures differ here
                continue
            mid = (a + b) // 2
            stack.append((a, mid))
            stack.append((mid + 1, b))
    points = [
        FrontierPoint(
            layout=lay.describe(),
            tp=lay.tp,
            pp=lay.pp,
            ep=lay.ep,
            etp=lay.expert_tp,
            dp_attn=lay.dp_attn,
            gpus=lay.gpus,
            instances=n // lay.gpus,
            concurrency=c,
            tpot_ms=tpot,
            ttft_ms=ttft,
            tokens_per_s_per_user=user,
            tokens_per_s_per_gpu=gpu,
        )
        for user, gpu, lay, c, tpot, ttft in sorted(found, key=lambda f: -f[0])
    ]
    return Frontier(
        cluster_gpus=n, max_instance_gpus=cap, exact=exact and cap >= n, points=tuple(points)
    )
