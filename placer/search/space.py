"""Enumerate every layout a rules profile allows on a cluster."""

from __future__ import annotations

from dataclasses import dataclass

from placer.budget import Budget
from placer.cluster import ClusterSpec
from placer.layout import Layout
from placer.model import ModelSpec
from placer.rules import RulesProfile, layout_violations


def divisors(n: int) -> list[int]:
    """Divisors of ``n`` in increasing order."""
    small = [d for d in range(1, int(n**0.5) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


@dataclass(frozen=True)
class LayoutSpace:
    """The legal layouts, and how many candidates each rule removed."""

    legal: tuple[Layout, ...]
    candidates: int
    rejected: dict[str, int]
    complete: bool = True  # False when the time limit stopped the enumeration


def enumerate_layouts(
    model: ModelSpec,
    cluster: ClusterSpec,
    profile: RulesProfile,
    max_gpus: int | None = None,
    only_gpus: int | None = None,
    budget: Budget | None = None,
) -> LayoutSpace:
    """Every (tp, pp, ep, etp, dp_attn) on 1..N GPUs that the profile accepts.

    GPU counts need not be powers of two; a layout may use fewer GPUs than the
    cluster has (``only_gpus`` restricts to one count). Layer splits and expert
    counts per rank are decided per layout by the placement model.
    """
    limit = min(cluster.num_gpus, max_gpus or cluster.num_gpus)
    experts = model.max_experts
    legal: list[Layout] = []
    rejected: dict[str, int] = {}
    candidates = 0
    counts = range(1, limit + 1) if only_gpus is None else [only_gpus]
    for gpus in counts:
        for pp in divisors(gpus):
            # Checked per stage count: one GPU count of a large cluster has thousands of
            # candidates, and the hard stop must not wait for all of them.
            if budget is not None and budget.expired():
                return LayoutSpace(
                    legal=tuple(legal), candidates=candidates, rejected=rejected, complete=False
                )
            if pp > model.num_layers:
                continue
            width = gpus // pp
            for tp in divisors(width):
                dp = width // tp
                for ep in divisors(width) if experts else [1]:
                    if experts and ep > experts:
                        continue
                    for etp in divisors(width // ep):
                        candidates += 1
                        layout = Layout(tp=tp, pp=pp, ep=ep, etp=etp, dp_attn=dp)
                        bad = layout_violations(model, cluster, layout, profile)
                        if bad:
                            key = bad[0].split("(")[0].strip()
                            rejected[key] = rejected.get(key, 0) + 1
                            continue
                        legal.append(layout)
    return LayoutSpace(legal=tuple(legal), candidates=candidates, rejected=rejected)
