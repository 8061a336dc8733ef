"""Exact search over replica-count vectors, for layers with few experts (docs/balance.md,
"Count search").

One copy per GPU, whole-number loads scaled as in :mod:`placer.balance.exact`. Once the
count vector ``c`` is fixed, a GPU's content is a set of ``S/P`` distinct experts and its load
``sum_{e in set} w_e Q / c_e`` is a constant. If some placement has its busiest GPU at most
``T``, every GPU carries at least ``W Q - (P - 1) T``; so each expert lies in a set whose load
``l`` has ``max(l, ceil((W Q - l) / (P - 1))) <= T``. Hence, for ``c``, the **set bound**: the
largest over experts of the smallest such value over the sets holding it. No placement with
counts ``c`` has a lighter busiest GPU.

The search computes that bound for every count vector (numpy, in blocks), keeps those below
the incumbent, and visits them from the lowest bound up. For each it asks whether ``P`` sets
from the window, repeats allowed, hold every expert exactly ``c_e`` times (a small exact-cover
search, :func:`_cover`); every "yes" lowers the incumbent and the same vector is asked again.
When the next vector's bound reaches the incumbent, nothing lighter exists: the incumbent is
optimal. Every step is exact integer arithmetic and a finite enumeration, so the proof needs
no solver. The work is bounded by counts (:data:`MAX_WORK`, :data:`MAX_COVER_NODES`), not by the
clock, so the answer is the same on any machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from itertools import combinations, combinations_with_replacement

import numpy as np

from placer.balance.exact import Scaled
from placer.balance.placement import bounded_compositions, count_vectors
from placer.balance.resplit import choice_matrix

#: The search runs only while (count vectors) x (GPU contents) is at most this: 8 experts
#: with 32 slots on 8 GPUs (848,443 vectors x 70 sets) fits, 16 experts do not.
MAX_WORK = 64_000_000

#: ... and only for this many experts at most (beyond, the work test alone would be slow)...
MAX_EXPERTS = 16

#: ... and this many count vectors at most (memory: they are held at once, 2 bytes a count).
MAX_VECTORS = 2_000_000

#: Count vectors scored at once (bounds the memory of one block of set loads).
BLOCK_ROWS = 32_768

#: The exact-cover search gives up (no claim for the layer) after this many nodes in all.
MAX_COVER_NODES = 200_000


@cache
def _vectors(total: int, parts: int, limit: int) -> np.ndarray:
    out = bounded_compositions(total, parts, limit).astype(np.int16)
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class CountSearchResult:
    """The optimum found by :func:`count_search`, in scaled units."""

    counts: np.ndarray
    assign: np.ndarray
    peak: int  # the busiest GPU: no placement is lighter
    improved: bool  # lighter than the placement the search started from


def _set_bounds(
    sc: Scaled, vectors: np.ndarray, members: np.ndarray, gpus: int, below: int
) -> tuple[np.ndarray, np.ndarray]:
    """(indices, set bounds) of the count vectors whose set bound is below ``below``.

    A vector's set bound is below ``below`` exactly when every expert lies in a set whose
    load is in the window ``[W Q - (P - 1) t, t]``, ``t = below - 1``: that screen is two
    comparisons and one product per block; the bounds themselves are computed only for the
    vectors that pass."""
    experts = members.shape[1]
    t = below - 1
    low = sc.total - (gpus - 1) * t
    keep = []
    members32 = members.astype(np.float32)  # 0/1: exact
    for start in range(0, vectors.shape[0], BLOCK_ROWS):
        block = vectors[start : start + BLOCK_ROWS]
        # Exact in a float64: every scaled total stays below 2**50 (see exact.scaled).
        load = sc.load[np.arange(experts)[None, :], block].astype(np.float64) @ members.T
        inside = ((load <= t) & (load >= low)).astype(np.float32)
        covered = (inside @ members32) > 0
        keep.append(np.flatnonzero(covered.all(axis=1)) + start)
    rows = np.concatenate(keep)
    load = sc.load[np.arange(experts)[None, :], vectors[rows]].astype(np.float64) @ members.T
    rest = np.ceil((sc.total - load) / (gpus - 1)) if gpus > 1 else load
    need = np.maximum(load, rest)
    holds = [members[:, e] > 0 for e in range(experts)]
    bound = np.max([need[:, h].min(axis=1) for h in holds], axis=0)
    return rows, bound


class _CoverLimit(Exception):
    """The exact-cover search used up :data:`MAX_COVER_NODES`."""


def _cover(
    sets: list[tuple[int, ...]], need: tuple[int, ...], nodes: list[int]
) -> list[tuple[int, ...]] | None:
    """``sum(need) / len(set)`` sets (repeats allowed) holding expert ``e`` exactly
    ``need[e]`` times, or None when there are none.

    Branches on one expert at a time: the one whose sets can be chosen in the fewest ways
    picks all its ``need[e]`` sets at once, as a multiset (the GPUs are identical, so order
    does not matter); the rest is the same question without it. Needs that failed are
    remembered. ``nodes[0]`` counts the search nodes across calls; past
    :data:`MAX_COVER_NODES` it raises :class:`_CoverLimit`."""
    failed: set[tuple[int, ...]] = set()

    def walk(need: tuple[int, ...]) -> list[tuple[int, ...]] | None:
        nodes[0] += 1
        if nodes[0] > MAX_COVER_NODES:
            raise _CoverLimit
        if not any(need):
            return []
        if need in failed:
            return None
        fits = [s for s in sets if all(need[e] for e in s)]
        ways = {}
        for e, n in enumerate(need):
            if n:
                m = sum(e in s for s in fits)
                ways[e] = math.comb(m + n - 1, n) if m else 0
        e = min(ways, key=lambda x: (ways[x], x))
        mine = [s for s in fits if e in s]
        for pick in combinations_with_replacement(mine, need[e]):
            left = list(need)
            for s in pick:
                for x in s:
                    left[x] -= 1
            if min(left) < 0:
                continue
            rest = walk(tuple(left))
            if rest is not None:
                return list(pick) + rest
        failed.add(need)
        return None

    return walk(need)


def _lighter_for(
    sc: Scaled,
    c: np.ndarray,
    sets: list[tuple[int, ...]],
    members: np.ndarray,
    gpus: int,
    best: int,
    nodes: list[int],
) -> np.ndarray | None:
    """A placement with counts ``c`` whose busiest GPU is below ``best``, or None: only sets
    with load in the window ``[W Q - (P - 1) t, t]``, ``t = best - 1``, can appear in it."""
    t = best - 1
    load = members @ sc.load[np.arange(c.size), c].astype(np.float64)
    inside = np.flatnonzero((load <= t) & (load >= sc.total - (gpus - 1) * t))
    picked = _cover([sets[j] for j in inside], tuple(c.tolist()), nodes)
    return None if picked is None else np.array(picked, dtype=np.int64)


def count_search(
    sc: Scaled, gpus: int, counts: np.ndarray, assign: np.ndarray
) -> CountSearchResult | None:
    """The optimal placement with one copy per GPU, proven (module docstring), or None when
    the layer is too large for the search (:data:`MAX_WORK`) or the exact-cover search runs
    out of nodes. ``(counts, assign)`` is the incumbent it starts from."""
    experts, per_gpu = sc.load.shape[0], assign.shape[1]
    slots = per_gpu * gpus
    limit = min(sc.max_count, gpus)
    n_sets = math.comb(experts, per_gpu)
    if experts > MAX_EXPERTS or n_sets == 0:
        return None
    vectors_needed = count_vectors(slots, experts, limit)
    if vectors_needed > MAX_VECTORS or vectors_needed * n_sets > MAX_WORK:
        return None
    sets: list[tuple[int, ...]] = list(combinations(range(experts), per_gpu))
    members = choice_matrix(experts, per_gpu)  # row i: sets[i] as 0/1
    vectors = _vectors(slots, experts, limit)
    start = best = sc.peak(counts, assign)
    rows, bounds = _set_bounds(sc, vectors, members, gpus, best)
    nodes = [0]
    try:
        for o in np.argsort(bounds, kind="stable").tolist():
            if bounds[o] >= best:
                break  # this vector and every later one: nothing lighter than ``best``
            c = vectors[rows[o]].astype(np.int64)
            # Ask again after each find: the same counts may allow a lighter placement.
            while (found := _lighter_for(sc, c, sets, members, gpus, best, nodes)) is not None:
                counts, assign, best = c, found, sc.peak(c, found)
    except _CoverLimit:
        return None
    return CountSearchResult(counts, assign, best, best < start)
