"""Exact answers about one layout without a solver: does any placement fit, and how fast
can the best one be (numpy and plain Python; see docs/certificate.md).

The per-layout problem is the one :mod:`placer.search.placement_model` gives CP-SAT, read from
the same integer tables (:class:`~placer.search.tables.LayoutTables`):

- layers go to ``pp`` stages in order, every stage at least one layer;
- layer ``l`` has ``slots[l] = lo * ep + k`` expert slots: every EP rank takes ``lo``
  of them and ``k`` distinct ranks take one more;
- every (stage, EP rank) holds its fixed bytes, its layers' base bytes and its slots
  within its capacity;
- a stage's time is fixed by its layers alone (the busiest rank of a layer always
  holds ``ceil(slots / ep)`` slots), so the objective depends on the split only; the one
  exception is an all-to-all priced from where expert groups sit (placer/locality.py)
  when the slot counts are free, which is charged its lower bound and marks the optimum
  inexact (:func:`locality_exact`).

Two facts make it small. The layers a stage can hold are closed under removing a
layer, so for each stage and first layer there is a last layer it can reach (found
with two pointers, ``O(pp * L)`` stage checks). A stage check is exact: with one
slot size it is a bipartite degree question (Gale-Ryser: ``k`` distinct ranks per
layer, at most ``floor(room / size)`` slots per rank); with several sizes a greedy
witness or a bounded exhaustive search decides it, and if the search runs out of
nodes the stage is counted as fitting and the answer marked inexact. The split
that minimises the objective is then a shortest-path recursion over the stages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from placer.search.tables import LayoutTables, balanced_counts, contiguous_map

#: Nodes the exhaustive slot search may visit per stage check before it gives up.
SEARCH_NODES = 20_000

#: Stand-in for "no split": larger than any objective the tables can produce.
_NONE = np.int64(2**62)


@dataclass(frozen=True)
class Reach:
    """Which layer ranges each stage can hold: ``[i, j)`` fits on stage ``s`` iff
    ``i < j <= last[s, i]``. ``exact`` is False when some stage check was undecided
    and counted as fitting (then "fits" may be too generous; "does not fit" is proven)."""

    last: np.ndarray  # (pp, L) int64
    exact: bool


@dataclass(frozen=True)
class LayoutOptimum:
    """The best objective any placement of a layout reaches, and one split that does."""

    value: int | None  # ns; None when no split fits
    split: tuple[int, ...] | None
    exact: bool  # False: value is only a lower bound (some stage check was undecided)


def _slots_fit(room: np.ndarray, extras: list[tuple[int, int]]) -> bool | None:
    """Whether ``extras`` (pairs of (count k, slot bytes)) fit: each pair on k distinct ranks,
    every rank within its ``room`` bytes. None when the search could not decide."""
    if not extras:
        return True
    sizes = {u for _, u in extras}
    if len(sizes) == 1:
        unit = sizes.pop()
        ks = np.sort(np.array([k for k, _ in extras], dtype=np.int64))[::-1]
        if unit == 0:
            return bool(ks[0] <= room.size)
        # A rank takes at most one slot of each layer and floor(room / unit) in all.
        most = np.minimum(room // unit, len(ks))
        t = np.arange(1, len(ks) + 1)
        # Gale-Ryser with capped columns: the t layers with most extra slots need at most
        # sum_r min(most_r, t) of them, for every t.
        supply = np.minimum(most[None, :], t[:, None]).sum(axis=1)
        return bool(np.all(np.cumsum(ks) <= supply))
    return _search(room, sorted(extras, key=lambda p: -p[1]))


def _search(room: np.ndarray, extras: list[tuple[int, int]]) -> bool | None:
    """Exhaustive search for several slot sizes, largest first, with a node budget."""
    left = [int(x) for x in room]
    need_after = [0] * (len(extras) + 1)
    for n in range(len(extras) - 1, -1, -1):
        need_after[n] = need_after[n + 1] + extras[n][0] * extras[n][1]
    nodes = 0

    def place(n: int) -> bool | None:
        nonlocal nodes
        if n == len(extras):
            return True
        if need_after[n] > sum(x for x in left if x > 0):
            return False
        k, unit = extras[n]
        ranks = [r for r in range(len(left)) if left[r] >= unit]
        if len(ranks) < k:
            return False
        for choice in _combinations(ranks, k, left):
            nodes += 1
            if nodes > SEARCH_NODES:
                return None
            for r in choice:
                left[r] -= unit
            got = place(n + 1)
            for r in choice:
                left[r] += unit
            if got:
                return True
            if got is None:
                return None
        return False

    return place(0)


def _combinations(ranks: list[int], k: int, left: list[int]) -> list[tuple[int, ...]]:
    """k-subsets of ``ranks``, roomiest first, skipping choices that only swap ranks with the
    same room (they lead to the same sub-problem)."""
    from itertools import combinations

    ranks = sorted(ranks, key=lambda r: -left[r])
    seen: set[tuple[int, ...]] = set()
    out = []
    for choice in combinations(ranks, k):
        key = tuple(sorted(left[r] for r in choice))
        if key not in seen:
            seen.add(key)
            out.append(choice)
    return out


def stage_reach(t: LayoutTables) -> Reach:
    """For every stage and first layer, the end of the longest layer range the stage holds."""
    n, pp, ep = len(t.base), t.layout.pp, t.layout.ep
    lo = t.slots // ep
    k = t.slots % ep
    fixed_layer = np.concatenate([[0], np.cumsum(t.base + lo * t.unit)])
    last = np.zeros((pp, n), dtype=np.int64)
    exact = True
    for s in range(pp):
        fixed = int(t.reserve + t.act[s])
        fixed += int(t.first) if s == 0 else 0
        fixed += int(t.last) if s == pp - 1 else 0
        cap = t.cap[s]

        def fits(i: int, j: int, s_cap: np.ndarray = cap, s_fixed: int = fixed) -> bool | None:
            room = s_cap - (s_fixed + int(fixed_layer[j] - fixed_layer[i]))
            if np.any(room < 0):
                return False
            extras = [(int(k[m]), int(t.unit[m])) for m in range(i, j) if k[m]]
            return _slots_fit(room, extras)

        j = 0
        for i in range(n):
            j = max(j, i)
            while j < n:
                ok = fits(i, j + 1)
                if ok is None:
                    exact = False
                elif not ok:
                    break
                j += 1
            last[s, i] = j
    return Reach(last=last, exact=exact)


def _layer_times(t: LayoutTables) -> np.ndarray:
    """(L + 1, pp) prefix sums of each layer's time on each stage, busiest rank included."""
    busiest = -(-t.slots // t.layout.ep)
    per = t.time_layer + t.time_slot * busiest[:, None]
    if t.locality is not None:
        # Fixed counts (slots % ep == 0) fix the all-to-all; otherwise its lower bound.
        free = _free(t)
        per = per + t.locality.lower_bound(t.slots, t.layout.ep) * free
        per = per + t.locality.table(_even_map(t)) * ~free
    return np.vstack([np.zeros((1, t.layout.pp), dtype=np.int64), np.cumsum(per, axis=0)])


def _free(t: LayoutTables) -> np.ndarray:
    """(L, pp) bool: the layer's slot counts, hence its all-to-all on that stage, are the
    placement's choice."""
    assert t.locality is not None
    free: np.ndarray = t.locality.placed & (t.slots % t.layout.ep != 0)[:, None]
    return free


def _even_map(t: LayoutTables) -> dict[int, tuple[tuple[int, ...], ...]]:
    """The contiguous expert map when every rank holds slots / ep slots."""
    return contiguous_map(t, balanced_counts(t))


def locality_exact(t: LayoutTables) -> bool:
    """Whether :func:`layout_optimum` is exact for the all-to-all: no layer's cross-node
    traffic depends on a choice of slot counts (docs/certificate.md)."""
    return t.locality is None or not _free(t).any()


def _stage_costs(t: LayoutTables, reach: Reach) -> list[np.ndarray]:
    """Per stage, an (L + 1, L + 1) table of the stage's time for layers [i, j), _NONE where
    the stage cannot hold them."""
    n, pp = len(t.base), t.layout.pp
    prefix = _layer_times(t)
    i_idx = np.arange(n + 1)[:, None]
    j_idx = np.arange(n + 1)[None, :]
    out = []
    for s in range(pp):
        extra = int(t.handoff[s]) + (int(t.time_last[s]) if s == pp - 1 else 0)
        cost = prefix[None, :, s] - prefix[:, None, s] + extra
        ends = np.append(reach.last[s], 0)[:, None]
        ok = (j_idx > i_idx) & (j_idx <= ends)
        out.append(np.where(ok, cost, _NONE))
    return out


def _min_sum(costs: list[np.ndarray], cap: int | None) -> tuple[int, tuple[int, ...]] | None:
    """Smallest sum of stage times over splits whose every stage is at most ``cap``."""
    n = costs[0].shape[0] - 1
    best = np.full(n + 1, _NONE, dtype=np.int64)
    best[0] = 0
    came: list[np.ndarray] = []
    for c in costs:
        if cap is not None:
            c = np.where(c <= cap, c, _NONE)
        usable = (best[:, None] < _NONE) & (c < _NONE)
        # Both terms stay below 2**62 where usable, so their sum fits in int64.
        total = np.where(
            usable, np.where(usable, best[:, None], 0) + np.where(usable, c, 0), _NONE
        )
        came.append(total.argmin(axis=0))
        best = total.min(axis=0)
    if best[n] >= _NONE:
        return None
    split = []
    j = n
    for back in reversed(came):
        i = int(back[j])
        split.append(j - i)
        j = i
    return int(best[n]), tuple(reversed(split))


def layout_optimum(t: LayoutTables, objective: str, reach: Reach | None = None) -> LayoutOptimum:
    """The best objective over every split and slot assignment of ``t``'s layout (in ns):
    the sum of stage times (latency, or one stage), else ``max(pp * slowest, sum)``."""
    reach = reach or stage_reach(t)
    costs = _stage_costs(t, reach)
    pp = t.layout.pp
    plain = _min_sum(costs, None)
    if plain is None:
        # Undecided stages were counted as fitting, so "no split" is proven either way.
        return LayoutOptimum(value=None, split=None, exact=True)
    if objective == "latency" or pp == 1:
        exact = reach.exact and locality_exact(t)
        return LayoutOptimum(value=plain[0], split=plain[1], exact=exact)
    # max(pp * T, S(T)) over caps T on the slowest stage, S(T) the smallest sum under the cap:
    # pp * T grows and S(T) shrinks with T, so the best cap is next to where they cross.
    caps = np.unique(np.concatenate([c[c < _NONE] for c in costs]))

    def crossed(m: int) -> tuple[bool, tuple[int, tuple[int, ...]] | None]:
        got = _min_sum(costs, int(caps[m]))
        return (got is not None and pp * int(caps[m]) >= got[0]), got

    lo, hi = 0, len(caps) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if crossed(mid)[0]:
            hi = mid
        else:
            lo = mid + 1
    _, at = crossed(lo)
    assert at is not None  # the largest cap admits every split, and some split fits
    value, split = pp * int(caps[lo]), at[1]
    if lo > 0:
        before = _min_sum(costs, int(caps[lo - 1]))
        if before is not None and before[0] < value:
            value, split = before
    return LayoutOptimum(value=value, split=split, exact=reach.exact and locality_exact(t))


def any_fit(t: LayoutTables) -> tuple[bool, bool]:
    """(some split fits, the answer is exact). A "no" is always exact."""
    reach = stage_reach(t)
    n, pp = len(t.base), t.layout.pp
    ends = np.zeros(n + 1, dtype=bool)
    ends[0] = True
    for s in range(pp):
        nxt = np.zeros(n + 1, dtype=bool)
        for i in np.flatnonzero(ends[:n]):
            nxt[i + 1 : int(reach.last[s, i]) + 1] = True
        ends = nxt
    return bool(ends[n]), reach.exact or not ends[n]
