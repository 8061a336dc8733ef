"""Bin completion towards a target, and the companion bound for one replica per expert
(docs/balance.md, "Exact search").

:func:`complete` builds a placement GPU by GPU, every GPU at most ``target`` (scaled), with
the counts fixed: the heaviest replica left opens the next GPU, and its ``S/P - 1``
companions are a subset of the replicas left whose sum lands in the GPU's window, found by
the exact meet in the middle of :func:`~placer.balance.resplit.subsets_near`. The window is
``[target - slack, target] - opener``, where ``slack = P target - W Q`` less what the GPUs
already built left unused, so the last GPU, which takes what remains, is at most ``target``
too. A depth-first search backtracks over the fitting subsets. Heavy openers come first: they
need the few small companions, which later GPUs, built from many mid-sized replicas, can
spare. Pools larger than :data:`POOL` replicas are cut to those nearest the mean companion
load the window asks for (then seeded samples of twice as many), so every step is a few
thousand subset sums; the search stops after :data:`MAX_NODES` nodes, so the answer is the
same on any machine.

:func:`companion_bound` is a lower bound when every expert has one replica (``S = E``):
the GPU holding expert ``e`` carries ``w_e + s`` with ``s`` the sum of ``S/P - 1`` other
experts. A placement whose busiest GPU is at most ``T`` has every GPU in
``[W Q - (P - 1) T, T]``, so ``T >= max(w_e + s, ceil((W Q - w_e - s) / (P - 1)))`` for that
``s``. The least such ``T`` over the subset sums is reached at the sum nearest below or above
the point where the two sides meet; both are found exactly by a meet in the middle. With the
load spread evenly that is the integer mean bound, but with a heavy expert whose companions
must come from a handful of small experts the reachable sums are sparse, and the bound rises.
"""

from __future__ import annotations

import numpy as np

from placer.balance.exact import Scaled
from placer.balance.resplit import subset_sizes, subset_sums, subsets_near

#: A GPU's companions are chosen from at most this many replicas at once (halves of 2^11).
POOL = 22

#: Fitting companion subsets tried per pool, in seeded random order.
CANDIDATES = 16

#: Pools tried per GPU: the replicas nearest the mean companion load, then samples.
POOL_TRIES = 5

#: The depth-first search stops after this many nodes (GPUs built) in all.
MAX_NODES = 3_000

#: The companion bound is computed only while an expert's candidate companions are at most
#: this many (halves of 2^14 subset sums).
MAX_COMPANIONS = 28

#: ... for the heaviest experts only, this many of them.
BOUND_EXPERTS = 4


def _pools(
    loads: np.ndarray, rest: np.ndarray, mean: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """The candidate pools for one GPU's companions: all of ``rest`` when small, else the
    :data:`POOL` replicas nearest ``mean``, then seeded samples of the nearest ``2 POOL``."""
    if rest.size <= POOL:
        return [rest]
    near = rest[np.argsort(np.abs(loads[rest] - mean), kind="stable")]
    return [near[:POOL]] + [
        rng.choice(near[: 2 * POOL], POOL, replace=False) for _ in range(POOL_TRIES - 1)
    ]


def complete(
    sc: Scaled, counts: np.ndarray, gpus: int, target: int, seed: int = 0
) -> np.ndarray | None:
    """A placement (``assign[gpu, slot]``, one copy of an expert per GPU) with counts
    ``counts`` and every GPU at most ``target``, or None when the search finds none within
    :data:`MAX_NODES` (module docstring). None claims nothing."""
    items = np.repeat(np.arange(counts.size), counts)
    loads = sc.replica(counts)[items]
    per_gpu = items.size // gpus
    if loads.max() > target or gpus * target < sc.total:
        return None
    rng = np.random.default_rng(seed)
    nodes = [0]

    def walk(left: np.ndarray, slack: int, built: int) -> list[np.ndarray] | None:
        nodes[0] += 1
        if built == gpus - 1:
            # The slack bookkeeping keeps this GPU at most ``target``; only the one-copy
            # rule can fail here.
            return [left] if np.unique(items[left]).size == per_gpu else None
        opener = left[np.argmax(loads[left])]
        hi = target - int(loads[opener])
        rest = left[(left != opener) & (items[left] != items[opener]) & (loads[left] <= hi)]
        # Replicas of one expert are interchangeable: one of each is enough, and two on a
        # GPU would break the one-copy rule.
        rest = rest[np.sort(np.unique(items[rest], return_index=True)[1])]
        if rest.size < per_gpu - 1:
            return None
        for pool in _pools(loads, rest, hi / max(per_gpu - 1, 1), rng):
            subs = subsets_near(loads[pool], per_gpu - 1, hi - slack, hi, CANDIDATES)
            sums = subs.astype(np.int64) @ loads[pool]
            fits = subs[(sums >= hi - slack) & (sums <= hi)]
            for k in rng.permutation(len(fits)).tolist():
                gpu = np.concatenate([[opener], pool[fits[k]]])
                used = target - int(loads[gpu].sum())
                rest_of = walk(np.setdiff1d(left, gpu), slack - used, built + 1)
                if rest_of is not None:
                    return [gpu, *rest_of]
                if nodes[0] >= MAX_NODES:
                    return None
        return None

    found = walk(np.arange(items.size), gpus * target - sc.total, 0)
    return None if found is None else np.array([items[g] for g in found], dtype=np.int64)


def nearest_sums(
    values: np.ndarray, take: int, low: int, high: int
) -> tuple[int | None, int | None]:
    """(largest sum <= low, smallest sum >= high) over the subsets of exactly ``take`` of
    ``values``, exactly (meet in the middle); None where no subset lies on that side."""
    half = values.size // 2
    sl, kl = subset_sums(values[:half]), subset_sizes(half)
    sr, kr = subset_sums(values[half:]), subset_sizes(values.size - half)
    below: int | None = None
    above: int | None = None
    for j in range(take + 1):
        left, right = sl[kl == j], np.sort(sr[kr == take - j])
        if left.size == 0 or right.size == 0:
            continue
        up = np.searchsorted(right, low - left, side="right") - 1  # largest <= low - l
        ok = up >= 0
        if ok.any():
            best = int((left[ok] + right[up[ok]]).max())
            below = best if below is None else max(below, best)
        down = np.searchsorted(right, high - left, side="left")  # smallest >= high - l
        ok = down < right.size
        if ok.any():
            best = int((left[ok] + right[down[ok]]).min())
            above = best if above is None else min(above, best)
    return below, above


def companion_bound(sc: Scaled, gpus: int, best: int) -> int:
    """The companion bound (module docstring) for a layer with one replica per expert,
    capped at ``best`` (a placement's busiest GPU, scaled): no placement's busiest GPU is
    lighter. Experts with too many candidate companions (:data:`MAX_COMPANIONS`) add
    nothing; the result is at least the integer mean bound."""
    w = sc.load[:, 1]
    per_gpu = w.size // gpus
    bound = sc.mean_bound(gpus)
    if gpus < 2 or per_gpu < 2 or best <= bound:
        return min(bound, best)
    for e in np.argsort(-w, kind="stable")[:BOUND_EXPERTS].tolist():
        we = int(w[e])
        others = np.sort(np.delete(w, e))
        # A companion heavier than this puts the GPU at ``best`` or above whatever else it
        # holds, so only the lighter ones can give a lower ``T``.
        room = best - 1 - we - int(others[: per_gpu - 2].sum())
        pool = others[others <= room]
        if pool.size > MAX_COMPANIONS:
            continue
        # w_e + s and (W Q - w_e - s) / (P - 1) meet at s = c = (W Q - P w_e) / P: below c
        # the second side is the larger and falls with s, above it the first rises. So the
        # least value over the sums is at the largest sum <= floor(c) or the smallest >= ceil(c).
        c = sc.total - gpus * we
        sums = nearest_sums(pool, per_gpu - 1, c // gpus, -(-c // gpus))
        here = best
        for s in sums if pool.size >= per_gpu - 1 else ():
            if s is not None:
                here = min(here, max(we + s, -(-(sc.total - we - s) // (gpus - 1))))
        bound = max(bound, here)
    return min(bound, best)
