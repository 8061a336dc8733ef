"""Why a serving search found no plan: which target no layout reaches, or that the request
rate needs more GPUs (docs/serving.md, "Unreachable targets and bad input")."""

from __future__ import annotations

import math

from placer.cluster import ClusterSpec
from placer.layout import Layout
from placer.model import ModelSpec
from placer.plan import Infeasibility
from placer.serving.probe import LayoutProbe
from placer.serving.record import ServingEntry
from placer.serving.timing import tpot_ns, ttft_ns
from placer.workload import Workload


def proven_empty(entries: list[ServingEntry], larger_excluded: bool) -> bool:
    """Whether no plan exists: every layout settled without an open range, and instances
    larger than the searched ones excluded (or none fit the cluster)."""
    return (
        larger_excluded
        and bool(entries)
        and all(
            e.status != "unresolved"
            and all(leaf.bound == 0.0 or not math.isinf(leaf.bound) for leaf in e.leaves)
            for e in entries
        )
    )


def rate_unreachable(workload: Workload, n: int, entries: list[ServingEntry]) -> Infeasibility:
    """The request rate needs more GPUs than the cluster has."""
    most = max((n // e.gpus) * (e.rate or 0.0) for e in entries) / workload.output_len
    return Infeasibility(
        reason=f"{workload.request_rate:g} requests/s need more than {n} GPUs: no layout "
        "serves them within the targets"
        + (f" (best found {most:.4g} requests/s)" if most > 0 else ""),
        conflicts=("request_rate",),
        closest_layout=None,
        fixes=("more GPUs, or a lower request rate",),
        min_gpus=None,
    )


def unreachable(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    entries: list[ServingEntry],
    legal: tuple[Layout, ...],
) -> Infeasibility:
    """Which target no layout reaches, with the best value any layout reaches (its bound at
    concurrency 1: every figure only grows with the concurrency)."""
    n = cluster.num_gpus
    gpu = cluster.gpu_types[0].name
    best_tpot = best_ttft = math.inf
    fits_any = False
    cache: dict[object, object] = {}
    reasons = {e.layout: e.cap_reason for e in entries}
    for lay in legal:
        if reasons.get(lay.describe()) == "memory":
            continue
        p = LayoutProbe(model, cluster, workload, lay, cache).at(1)
        if not p.fits_bound:
            continue
        fits_any = True
        best_tpot = min(best_tpot, tpot_ns(workload, 1, p.step_bound_ns, p.prefill_bound_ns) / 1e6)
        best_ttft = min(best_ttft, ttft_ns(workload, 1, p.step_bound_ns, p.prefill_bound_ns) / 1e6)
    where = f"every layout of {n} x {gpu}"
    if not fits_any:
        return _why(
            f"no layout holds the model and one request's KV cache on {n} x {gpu}",
            ("memory",),
            ("more GPUs, larger GPUs, fp8 weights or a shorter context",),
        )
    if workload.tpot_ms is not None and best_tpot > workload.tpot_ms:
        reason = f"TPOT >= {best_tpot:.3g} ms on {where} (target {workload.tpot_ms:g} ms)"
        return _why(reason, ("tpot",), (f"--tpot {best_tpot:.3g} or more",))
    if workload.ttft_ms is not None and best_ttft > workload.ttft_ms:
        reason = f"TTFT >= {best_ttft:.4g} ms on {where} (target {workload.ttft_ms:g} ms)"
        return _why(reason, ("ttft",), (f"--ttft {best_ttft:.4g} or more",))
    reason = (
        f"no layout of {n} x {gpu} meets TPOT {workload.tpot_ms} ms and TTFT "
        f"{workload.ttft_ms} ms together (best alone: TPOT {best_tpot:.3g} ms, TTFT "
        f"{best_ttft:.4g} ms)"
    )
    return _why(reason, ("tpot", "ttft"), ())


def _why(reason: str, conflicts: tuple[str, ...], fixes: tuple[str, ...]) -> Infeasibility:
    return Infeasibility(
        reason=reason, conflicts=conflicts, closest_layout=None, fixes=fixes, min_gpus=None
    )
