"""Brute force for the serving search: every layout x layer split x concurrency, scored with
``placer.evaluate`` and ``placer.estimate`` only (no tables, no DP, no branch and bound)."""

from __future__ import annotations

import itertools
import math

from placer import evaluate, get_profile
from placer.calibration import active_calibration
from placer.cluster import ClusterSpec
from placer.cost import estimate
from placer.layout import Layout
from placer.model import ModelSpec
from placer.search.space import enumerate_layouts
from placer.workload import Workload


def splits(layers: int, pp: int) -> list[tuple[int, ...]]:
    """Every way to cut ``layers`` into ``pp`` non-empty contiguous stages."""
    return [
        tuple(b - a for a, b in zip((0, *cuts), (*cuts, layers), strict=True))
        for cuts in itertools.combinations(range(1, layers), pp - 1)
    ]


def point(
    model: ModelSpec, cluster: ClusterSpec, workload: Workload, layout: Layout, c: int
) -> tuple[bool, float, float, float]:
    """(fits, TPOT s, TTFT s, output tokens/s of one instance) of ``layout`` at concurrency
    ``c``, by the formulas of docs/serving.md written out again."""
    inst = workload.model_copy(update={"batch": c, "phase": "both"})
    ev = evaluate(model, cluster, inst, layout, get_profile("generic"))
    if not ev.fits or ev.estimates is None:
        return False, math.inf, math.inf, 0.0
    step = ev.estimates.cycle_s
    one = workload.model_copy(update={"batch": 1, "phase": "prefill"})
    prefill = estimate(model, cluster, one, layout).latency_s
    chunks = -(-workload.prompt_len // workload.max_batched_tokens)
    tpot = step + c * prefill / workload.output_len
    q = active_calibration().ttft_model("generic")
    ttft = q.fixed_ms / 1e3 + (q.prefill_factor + q.queue * (c - 1)) * prefill
    ttft += (q.steps + chunks) * step
    return True, tpot, ttft, c / tpot


def meets(workload: Workload, tpot: float, ttft: float) -> bool:
    """Whether the targets hold (seconds)."""
    ok = workload.tpot_ms is None or tpot <= workload.tpot_ms / 1e3
    return ok and (workload.ttft_ms is None or ttft <= workload.ttft_ms / 1e3)


def best_per_layout(
    model: ModelSpec, cluster: ClusterSpec, workload: Workload, max_concurrency: int
) -> dict[str, tuple[float, int]]:
    """Per legal layout: the most output tokens/s of one instance within the targets over
    every split and concurrency up to ``max_concurrency`` (and that concurrency)."""
    out: dict[str, tuple[float, int]] = {}
    for lay in enumerate_layouts(model, cluster, get_profile("generic")).legal:
        best = (0.0, 0)
        for split in splits(model.num_layers, lay.pp):
            full = lay.model_copy(update={"layers_per_stage": split})
            for c in range(1, max_concurrency + 1):
                fits, tpot, ttft, rate = point(model, cluster, workload, full, c)
                if not fits or not meets(workload, tpot, ttft):
                    break  # memory, TPOT and TTFT only grow with the concurrency
                if rate > best[0]:
                    best = (rate, c)
        out[lay.describe()] = best
    return out
