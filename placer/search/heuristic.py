"""A fast split heuristic: balanced expert slots, then an exact DP over contiguous splits.

With the slots per rank fixed (balanced and rotated), the best contiguous split
of layers into ``pp`` stages under per-GPU memory limits is a classic linear
partition problem: a dynamic program over (stage, last layer) minimising the
slowest stage. Its answer is a complete hint for CP-SAT and the fallback plan.
"""

from __future__ import annotations

import numpy as np

from placer.cluster import ClusterSpec
from placer.layout import Layout
from placer.model import ModelSpec
from placer.rules import RulesProfile
from placer.search.space import enumerate_layouts
from placer.search.tables import (
    LayoutTables,
    balanced_counts,
    build_tables,
    locality_ns,
    memory_lower_bound,
)
from placer.workload import Workload


def best_split(t: LayoutTables, counts: np.ndarray | None = None) -> tuple[int, ...] | None:
    """Layers per stage minimising the slowest stage while every GPU fits; None if none fits."""
    c = balanced_counts(t) if counts is None else counts
    n, pp = len(t.base), t.layout.pp
    if pp > n:
        return None
    busiest = c.max(axis=1) if c.size else np.zeros(n, dtype=np.int64)
    # Prefix sums over layers: base bytes, expert bytes per rank, time per stage column.
    pre_base = np.concatenate([[0], np.cumsum(t.base)])
    pre_exp = np.vstack(
        [np.zeros((1, c.shape[1]), dtype=np.int64), np.cumsum(c * t.unit[:, None], axis=0)]
    )
    layer_time = t.time_layer + t.time_slot * busiest[:, None] + locality_ns(t, c)
    pre_time = np.vstack([np.zeros((1, pp), dtype=np.int64), np.cumsum(layer_time, axis=0)])
    inf = np.iinfo(np.int64).max
    best = np.full((pp + 1, n + 1), inf, dtype=np.int64)
    choice = np.zeros((pp + 1, n + 1), dtype=np.int64)
    best[0, 0] = 0
    for s in range(pp):
        fixed = (
            t.reserve + int(t.act[s]) + (t.first if s == 0 else 0) + (t.last if s == pp - 1 else 0)
        )
        extra_time = int(t.handoff[s]) + (int(t.time_last[s]) if s == pp - 1 else 0)
        # The last stage must end at the last layer: only j = n is needed there.
        lo_j = n if s == pp - 1 else s + 1
        hi_j = n - (pp - 1 - s)
        for j in range(lo_j, hi_j + 1):
            i = np.arange(s, j)  # stage s holds layers [i, j)
            prev = best[s, i]
            ok = prev < inf
            mem = fixed + (pre_base[j] - pre_base[i])[:, None] + (pre_exp[j] - pre_exp[i])
            ok &= np.all(mem <= t.cap[s][None, :], axis=1)
            if not ok.any():
                continue
            seg = pre_time[j, s] - pre_time[i, s] + extra_time
            val = np.maximum(prev, seg)
            val[~ok] = inf
            k = int(np.argmin(val))
            if val[k] < best[s + 1, j]:
                best[s + 1, j] = val[k]
                choice[s + 1, j] = i[k]
    if best[pp, n] == inf:
        return None
    split: list[int] = []
    end = n
    for s in range(pp, 0, -1):
        start = int(choice[s, end])
        split.append(end - start)
        end = start
    return tuple(reversed(split))


def fitting_layout(
    model: ModelSpec, cluster: ClusterSpec, workload: Workload, profile: RulesProfile, gpus: int
) -> Layout | None:
    """A legal layout on exactly ``gpus`` GPUs whose DP split fits memory, if any."""
    space = enumerate_layouts(model, cluster, profile, only_gpus=gpus)
    for layout in space.legal:
        t = build_tables(model, cluster, workload, layout, "throughput", with_costs=False)
        need, have = memory_lower_bound(t)
        if need > have:
            continue
        split = best_split(t)
        if split is not None:
            return layout.model_copy(update={"layers_per_stage": split})
    return None
