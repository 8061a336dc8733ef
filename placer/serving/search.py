"""The serving search: layout x concurrency x instance count, with proof (docs/serving.md).

For every legal instance layout (any GPU count up to the cluster's, PP included):

1. **Concurrency cap.** TPOT, TTFT and memory are non-decreasing in the concurrency ``c``,
   so the concurrencies a layout may serve form a range ``1..cap``; doubling then bisection
   finds ``cap`` with bound figures (no split can do better) and ``cap_ok`` with achievable
   ones (the DP split).
2. **Best concurrency, exactly.** Output tokens/s of one instance is not monotone in ``c``
   (attention-DP groups and micro-batches round up), so ``1..cap`` is searched by branch and
   bound: on ``[a, b]`` no concurrency beats ``b x out / (out x TPOT_lb(a) + a x
   prefill_lb)`` (:func:`placer.serving.timing.tokens_per_s_bound`). Ranges whose bound
   cannot beat the best plan so far are closed and recorded as leaves; the rest are halved.
3. **Instances.** ``throughput``: ``k = N // g`` identical instances (more can only help),
   output tokens/s per GPU of the whole cluster ``k x r / N``, idle GPUs included.
   ``gpus``: the fewest ``k`` with ``k x r >= request_rate x output_len``, GPUs ``k x g``.

The plan is ``optimal`` when every layout was settled (its best concurrency found, or every
range closed by a bound no better than the plan) with exact figures; the record keeps each
layout's cap and leaves, which ``placer verify`` re-derives (:mod:`placer.serving.check`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from placer.budget import Budget
from placer.cluster import ClusterSpec
from placer.layout import Layout
from placer.limits import MAX_BATCH
from placer.model import ModelSpec
from placer.serving.probe import LayoutProbe, Point
from placer.serving.record import Leaf, ServingEntry
from placer.serving.timing import (
    tokens_per_s,
    tokens_per_s_bound,
    tokens_per_s_ceiling,
    tpot_ns,
    ttft_ns,
)
from placer.workload import Workload

#: Relative slack under which two tokens/s figures count as equal (float noise only).
TIE = 1e-12


def cap_check(workload: Workload, point: Point, bound: bool) -> str | None:
    """Why ``point`` is excluded ("memory", "tpot", "ttft"), or None if it is allowed.
    ``bound`` uses the bound figures (what no split beats), else the achievable ones."""
    fits = point.fits_bound if bound else point.fits
    if not fits:
        return "memory"
    step = point.step_bound_ns if bound else point.step_ns
    pre = point.prefill_bound_ns if bound else point.prefill_ns
    c = point.concurrency
    if workload.tpot_ms is not None and tpot_ns(workload, c, step, pre) > workload.tpot_ms * 1e6:
        return "tpot"
    if workload.ttft_ms is not None and ttft_ns(workload, c, step, pre) > workload.ttft_ms * 1e6:
        return "ttft"
    return None


def memory_limit(probe: LayoutProbe, limit: int = MAX_BATCH) -> int:
    """Largest concurrency the aggregate memory condition allows (0 if none): doubling, then
    bisection (the condition is monotone in the concurrency)."""
    if not probe.memory_bound_fits(1):
        return 0
    lo, hi = 1, 2
    while hi <= limit and probe.memory_bound_fits(hi):
        lo, hi = hi, 2 * hi
    if hi > limit:
        return lo if not probe.memory_bound_fits(limit) else limit
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if probe.memory_bound_fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


@dataclass
class LayoutResult:
    """The best concurrency of one layout and the proof that nothing in its range beats it."""

    memory_limit: int
    cap: int = 0
    cap_reason: str = ""
    concurrency: int | None = None
    rate: float = 0.0  # output tokens/s of one instance at ``concurrency``
    leaves: list[Leaf] = field(default_factory=list)
    open_bound: float = 0.0  # largest bound of a range not closed against the floor
    ceiling: float | None = None  # set when tokens_per_s_ceiling alone settled the layout

    @property
    def bound(self) -> float:
        """No concurrency of the layout gives one instance more output tokens/s."""
        if self.ceiling is not None:
            return self.ceiling
        return max([self.rate, *(leaf.bound for leaf in self.leaves)])


def best_concurrency(
    probe: LayoutProbe, floor: Callable[[], float], budget: Budget | None = None
) -> LayoutResult:
    """Branch and bound over the concurrencies of one layout (module docstring, step 2).

    ``floor()`` is the instance tokens/s a range must exceed to matter (from the incumbent
    plan); ranges at or below it, or at or below this layout's own best, are closed. A range
    whose smallest concurrency breaks memory or a target with bound figures is excluded.
    """
    wl = probe.workload
    one = probe.loose(1)
    if one.fits_bound and cap_check(wl, one, bound=True) is None:
        ceiling = tokens_per_s_ceiling(wl, one.step_bound_ns, one.prefill_bound_ns)
        if ceiling <= floor() * (1 + TIE):
            return LayoutResult(memory_limit=0, cap_reason="ceiling", ceiling=ceiling)
    res = LayoutResult(memory_limit=memory_limit(probe))
    if res.memory_limit == 0:
        res.cap_reason = "memory"
        return res
    excluded_at = res.memory_limit + 1
    res.cap_reason = "memory"
    stack = [(1, res.memory_limit)]
    while stack:
        a, b = stack.pop()
        lo = probe.loose(a)
        why = cap_check(wl, lo, bound=True)
        tight = False
        if why is None:
            ub = tokens_per_s_bound(wl, a, b, lo.step_bound_ns, lo.prefill_bound_ns)
            if ub <= max(floor(), res.rate) * (1 + TIE):
                res.leaves.append(Leaf(low=a, high=b, bound=ub, tight=False))
                continue
            p = probe.at(a)
            why = cap_check(wl, p, bound=True)
            tight = True
        if why is not None:
            res.leaves.append(Leaf(low=a, high=b, bound=0.0, tight=tight, excluded=why))
            if a < excluded_at:
                excluded_at, res.cap_reason = a, why
            continue
        res.cap = max(res.cap, a)
        if cap_check(wl, p, bound=False) is None:
            r = tokens_per_s(wl, a, p.step_ns, p.prefill_ns)
            if r > res.rate * (1 + TIE):
                res.rate, res.concurrency = r, a
        ub = tokens_per_s_bound(wl, a, b, p.step_bound_ns, p.prefill_bound_ns)
        settled = max(floor(), res.rate) * (1 + TIE)
        if ub <= settled or a == b or (budget is not None and budget.expired()):
            res.leaves.append(Leaf(low=a, high=b, bound=ub))
            if ub > settled:
                res.open_bound = max(res.open_bound, ub)
            continue
        mid = (a + b) // 2
        stack.append((a, mid))
        stack.append((mid + 1, b))  # larger concurrencies first: usually the better ones
    res.leaves.sort(key=lambda leaf: leaf.low)
    return res


def entry(
    layout: Layout,
    status: str,
    res: LayoutResult | None,
    exact: bool,
    instances: int | None = None,
    value: float | None = None,
    reason: str = "",
) -> ServingEntry:
    """The search record of one layout."""
    return ServingEntry(
        layout=layout.describe(),
        tp=layout.tp,
        pp=layout.pp,
        ep=layout.ep,
        etp=layout.expert_tp,
        dp_attn=layout.dp_attn,
        gpus=layout.gpus,
        status=status,
        memory_limit=res.memory_limit if res else 0,
        cap=res.cap if res else 0,
        cap_reason=res.cap_reason if res else "",
        concurrency=res.concurrency if res else None,
        rate=res.rate if res and res.concurrency is not None else None,
        instances=instances,
        value=value,
        bound=res.bound if res else None,
        exact=exact,
        leaves=tuple(res.leaves) if res else (),
        ceiling=res.ceiling if res else None,
        reason=reason,
    )


def layout_probe(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    layout: Layout,
    cache: dict[object, object],
) -> LayoutProbe:
    """A probe sharing ``cache`` (cost columns) with the rest of the search."""
    return LayoutProbe(model, cluster, workload, layout, cache)
