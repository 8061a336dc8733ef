"""Exact re-splits of two or three GPUs towards the integer mean bound (docs/balance.md,
"Exact search").

With counts fixed, the integer mean bound ``T`` is reached only when no GPU carries more
than ``T`` scaled units; when ``P`` divides ``W Q`` every GPU must carry exactly ``T``, an
exact multi-way partition. :func:`resplit` is a local search for it: it takes a GPU above
``T`` and a partner below (or two partners) and re-splits the replicas that may move among
them (experts held by only one of them), keeping each GPU's slot count. The split is chosen
by a meet in the middle over subset sums with cardinality: both halves' subset sums are
enumerated, sorted, and joined by binary search, so it finds an exact sum whenever one
exists among the movable replicas. With many replicas per GPU, a seeded random sample of
them is movable in each try (a large neighbourhood search). Every limit is a count, so the
result is the same on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from itertools import combinations

import numpy as np

from placer.balance.exact import Scaled
from placer.balance.placement import place

#: At most this many replicas of one GPU are movable in one pair re-split (sampled beyond):
#: two GPUs then give at most 2 * 11 = 22 replicas, halves of 2^11 subset sums.
MAX_PAIR_MOVABLE = 11

#: A group re-split (three or four GPUs) moves at most this many replicas of each GPU
#: (sampled beyond): four GPUs give at most 32 replicas, halves of 2^16 subset sums.
GROUP_MOVABLE = 8

#: A group re-split tries at most this many contents for its first half (closest sums first).
GROUP_CANDIDATES = 1_000

#: A group re-split checks its candidates in chunks of this many (it stops at the first fit).
GROUP_CHUNK = 128

#: Batched pair splits hold at most this many candidate sums at once (memory: 8 bytes each).
PAIR_BATCH_CELLS = 2_000_000

#: :func:`resplit` stops after this many tries: a pair re-split counts one...
MAX_TRIES = 200
#: ... a group re-split this many (measured on OLMoE loads, it costs about as much).
GROUP_WEIGHT = 5

#: :func:`resplit` makes at most this many sideways moves (each after a sweep found nothing).
MAX_SIDEWAYS = 6

#: Tries for the equal counts of :func:`resplit_search`, before the given counts get theirs.
UNIFORM_TRIES = 100


@cache
def _bits(n: int) -> np.ndarray:
    """Every subset of ``n`` items as a 0/1 matrix [2^n, n] (row i is i's binary digits)."""
    return ((np.arange(1 << n)[:, None] >> np.arange(n)) & 1).astype(np.int64)


@cache
def subset_sizes(n: int) -> np.ndarray:
    """The size of every subset of ``n`` items, in :func:`_bits` order."""
    return np.asarray(_bits(n).sum(axis=1), dtype=np.int64)


def subset_sums(values: np.ndarray) -> np.ndarray:
    """Every subset sum of ``values``, in :func:`_bits` order (doubling: no matrix product)."""
    out = np.zeros(1, dtype=np.int64)
    for v in values.tolist():
        out = np.concatenate([out, out + v])
    return out


def subsets_near(values: np.ndarray, take: int, lo: int, hi: int, cap: int) -> np.ndarray:
    """Up to ``cap`` subsets of exactly ``take`` of ``values`` (non-negative; as rows of a
    boolean mask), those with a sum in ``[lo, hi]`` first (sums on ``lo`` or ``hi`` before inner
    ones), then the sums closest to that interval. Meet in the middle: the subset sums of
    each half, the right half's sorted by (size, sum), joined by binary search around ``lo``
    and ``hi``; exact, so an in-interval subset is found whenever one exists."""
    n = values.size
    half = n // 2
    sl, sr = subset_sums(values[:half]), subset_sums(values[half:])
    kl, kr = subset_sizes(half), subset_sizes(n - half)
    # One sorted key per right subset: its size, then its sum (band width above any sum).
    band = int(sr.max()) + 3
    keys = kr * band + sr
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    need = take - kl
    valid = np.flatnonzero((need >= 0) & (need <= n - half))
    rows, cols = [], []
    for edge, side in ((lo, "left"), (hi, "right")):
        query = need[valid] * band + np.clip(edge - sl[valid], -1, band - 2)
        pos = np.searchsorted(keys, query, side=side)  # type: ignore[call-overload]
        for p in (pos - 1, pos):
            ok = (p >= 0) & (p < keys.size)
            rows.append(valid[ok])
            cols.append(order[p[ok]])
    li, ri = np.concatenate(rows), np.concatenate(cols)
    keep = kl[li] + kr[ri] == take
    li, ri = li[keep], ri[keep]
    total = sl[li] + sr[ri]
    dist = np.maximum(lo - total, 0) + np.maximum(total - hi, 0)
    # Inside the interval, prefer a sum on an edge (a GPU exactly on the target).
    tie = np.where((total == lo) | (total == hi), 0, 1)
    # Distinct (left, right) pairs, best first; only the best few sorted when many.
    score = 2 * dist + tie
    if score.size > 4 * cap:
        near = np.argpartition(score, 4 * cap)[: 4 * cap]
        li, ri, score = li[near], ri[near], score[near]
    pair = li * kr.size + ri
    first = np.unique(pair, return_index=True)[1]
    li, ri, score, pair = li[first], ri[first], score[first], pair[first]
    best = np.lexsort((pair, score))[:cap]
    return np.concatenate([_bits(half)[li[best]], _bits(n - half)[ri[best]]], axis=1).astype(bool)


@dataclass
class _State:
    """The placement under search: replica loads, slots and GPU loads (scaled)."""

    rep: np.ndarray  # scaled load of one replica of each expert
    assign: np.ndarray  # [gpus, per_gpu] expert ids
    load: np.ndarray  # [gpus]
    target: int
    sampled: bool = False  # some try moved only a sample of a GPU's movable replicas

    def endgame(self) -> bool:
        """Is the total excess below the lightest replica? Only then are the group and
        sideways re-splits tried: they fix exact sums, while a larger excess that the pair
        re-splits cannot shift means (on OLMoE loads) that the bound is out of reach."""
        excess = self.load - self.target
        return int(excess[excess > 0].sum()) < int(self.rep.min())

    def score(self, loads: np.ndarray) -> tuple[int, int, int]:
        """(excess over the target, distance from it, -GPUs on it): lower is better."""
        diff = loads - self.target
        return int(diff[diff > 0].sum()), int(np.abs(diff).sum()), -int(np.sum(diff == 0))


def _movable(assign: np.ndarray, gpus: list[int]) -> list[np.ndarray]:
    """Per GPU, the slots whose expert none of the other ``gpus`` holds (free to move)."""
    out = []
    for g in gpus:
        others = np.concatenate([assign[h] for h in gpus if h != g])
        out.append(np.flatnonzero(~np.isin(assign[g], others)))
    return out


def _apply(st: _State, gpus: list[int], slots: list[np.ndarray], groups: list[np.ndarray]) -> None:
    """Put the movable experts ``groups[i]`` into GPU ``gpus[i]``'s movable ``slots[i]``."""
    for g, s, grp in zip(gpus, slots, groups, strict=True):
        st.assign[g, s] = grp
    st.load[gpus] = st.rep[st.assign[gpus]].sum(axis=1)


def _try_pair(st: _State, g: int, h: int, rng: np.random.Generator) -> bool:
    """Re-split GPUs ``g`` and ``h`` so that the score improves; True if it did."""
    mg, mh = _movable(st.assign, [g, h])
    if max(mg.size, mh.size) > MAX_PAIR_MOVABLE:
        st.sampled = True
        mg = np.sort(rng.choice(mg, min(mg.size, MAX_PAIR_MOVABLE), replace=False))
        mh = np.sort(rng.choice(mh, min(mh.size, MAX_PAIR_MOVABLE), replace=False))
    if mg.size == 0 or mh.size == 0:
        return False
    experts = np.concatenate([st.assign[g, mg], st.assign[h, mh]])
    values = st.rep[experts]
    fixed_g = int(st.load[g] - values[: mg.size].sum())
    fixed_h = int(st.load[h] - values[mg.size :].sum())
    total = int(values.sum())
    # g's share s: g = fixed_g + s, h = fixed_h + total - s; both on the target at the edges.
    a, b = st.target - fixed_g, fixed_h + total - st.target
    picks = subsets_near(values, mg.size, min(a, b), max(a, b), 1)
    if picks.shape[0] == 0:
        return False
    mine = picks[0]
    new = st.load.copy()
    new[g] = fixed_g + int(values[mine].sum())
    new[h] = fixed_h + total - int(values[mine].sum())
    if st.score(new) >= st.score(st.load):
        return False
    _apply(st, [g, h], [mg, mh], [experts[mine], experts[~mine]])
    return True


@cache
def choice_matrix(n: int, k: int) -> np.ndarray:
    """Every ``k``-subset of ``n`` items as a 0/1 float matrix [C(n, k), n]."""
    return np.array([[i in c for i in range(n)] for c in combinations(range(n), k)], dtype=float)


def _pair_splits(vals: np.ndarray, size: int, fixed: tuple[int, int], target: int) -> np.ndarray:
    """For each row of ``vals`` (the movable loads of a GPU pair, one candidate per row):
    which ``size`` of them the first GPU takes so that neither exceeds ``target`` (a row of
    :func:`choice_matrix`), or -1 if none does. Batched: every split of every row at once
    (float sums are exact, every scaled total being below 2^50)."""
    choices = choice_matrix(vals.shape[1], size)
    out = np.full(vals.shape[0], -1, dtype=np.int64)
    step = max(1, PAIR_BATCH_CELLS // choices.shape[0])
    for start in range(0, vals.shape[0], step):
        rows = vals[start : start + step].astype(float)
        sums = rows @ choices.T
        low = fixed[1] + rows.sum(axis=1) - target
        ok = (sums >= low[:, None]) & (sums <= target - fixed[0])
        out[start : start + step] = np.where(ok.any(axis=1), ok.argmax(axis=1), -1)
    return out


def _first_fit(
    masks: np.ndarray,
    values: np.ndarray,
    sizes: list[int],
    fixed: list[int],
    target: int,
    halves: tuple[slice, slice],
) -> tuple[int, list[np.ndarray]] | None:
    """The first candidate (row of ``masks``: the first half's replicas) whose halves both
    split with no GPU over ``target``, and each half's split (a row of :func:`choice_matrix`;
    unused for a one-GPU half). Candidates go in chunks of :data:`GROUP_CHUNK`, the second
    half checked only where the first passed (most fail the first; both cost the same)."""
    for start in range(0, masks.shape[0], GROUP_CHUNK):
        both = np.arange(start, min(start + GROUP_CHUNK, masks.shape[0]))
        split = [np.zeros(masks.shape[0], dtype=np.int64) for _ in halves]
        for h, (side, part) in enumerate(zip((masks, ~masks), halves, strict=True)):
            if part.stop - part.start == 1 or both.size == 0:
                continue  # one GPU: the interval checked it
            rows = side[both]
            vals = np.broadcast_to(values, rows.shape)[rows].reshape(rows.shape[0], -1)
            pair = (fixed[part][0], fixed[part][1])
            split[h][both] = _pair_splits(vals, sizes[part][0], pair, target)
            both = both[split[h][both] >= 0]
        if both.size > 0:
            return int(both[0]), split
    return None


def _split_group(
    values: np.ndarray,
    sizes: list[int],
    fixed: list[int],
    target: int,
    shuffle: np.random.Generator | None = None,
) -> list[np.ndarray] | None:
    """Boolean masks over ``values``, one per GPU of a group of three or four (``sizes[i]``
    of them to GPU ``i``, which already carries ``fixed[i]``), so that no GPU exceeds
    ``target``; None if none is found. The first one or two GPUs' contents come from
    :func:`subsets_near` (at most :data:`GROUP_CANDIDATES`, closest sums first), and each
    candidate's pairs are split by the batched :func:`_pair_splits`."""
    n, total = len(sizes), int(values.sum())
    a = n // 2
    hi = a * target - sum(fixed[:a])
    lo = sum(fixed[a:]) + total - (n - a) * target
    if lo > hi:
        return None
    masks = subsets_near(values, sum(sizes[:a]), lo, hi, GROUP_CANDIDATES)
    sums = masks.astype(float) @ values.astype(float)
    masks = masks[(sums >= lo) & (sums <= hi)]
    if masks.shape[0] == 0:
        return None
    if shuffle is not None:  # a sideways move: any fit, not the closest-first one
        masks = masks[shuffle.permutation(masks.shape[0])]
    halves = (slice(0, a), slice(a, n))
    found = _first_fit(masks, values, sizes, fixed, target, halves)
    if found is None:
        return None
    j, split = found
    out: list[np.ndarray] = []
    for side, part, chosen_split in zip((masks[j], ~masks[j]), halves, split, strict=True):
        where = np.flatnonzero(side)
        if part.stop - part.start == 1:
            out.append(side)
            continue
        take = choice_matrix(where.size, sizes[part][0])[chosen_split[j]].astype(bool)
        for chosen in (where[take], where[~take]):
            mask = np.zeros(values.size, dtype=bool)
            mask[chosen] = True
            out.append(mask)
    return out


def _try_group(
    st: _State, gpus: list[int], rng: np.random.Generator, sideways: bool = False
) -> bool:
    """Re-split ``gpus`` (a busiest GPU first) so that none of them exceeds the target: each
    moves a sample of at most :data:`GROUP_MOVABLE` replicas held by no other GPU of the
    group. True if it did (the busiest GPU then lost its excess). ``sideways``: GPUs at
    or below the target, re-split at random among the fits (new contents, none over it)."""
    slots = _movable(st.assign, gpus)
    if max(s.size for s in slots) > GROUP_MOVABLE:
        st.sampled = True
        slots = [np.sort(rng.choice(s, min(s.size, GROUP_MOVABLE), replace=False)) for s in slots]
    if min(s.size for s in slots) == 0:
        return False
    experts = np.concatenate([st.assign[x, s] for x, s in zip(gpus, slots, strict=True)])
    values = st.rep[experts]
    fixed = [
        int(st.load[x] - st.rep[st.assign[x, s]].sum()) for x, s in zip(gpus, slots, strict=True)
    ]
    shuffle = rng if sideways else None
    parts = _split_group(values, [s.size for s in slots], fixed, st.target, shuffle)
    if parts is None:
        return False
    _apply(st, gpus, slots, [experts[p] for p in parts])
    return True


def _step(st: _State, rng: np.random.Generator, tries: list[int], limit: int) -> bool:
    """One improving re-split, pairs first (busiest GPU with each GPU below the target,
    lightest first), then triples; False when none was found."""
    order = np.argsort(-st.load, kind="stable")
    hot = [int(x) for x in order if st.load[x] > st.target]
    cold = [int(x) for x in order[::-1] if st.load[x] < st.target]
    # Busiest with lightest; then two GPUs below the target, which merges their deficits
    # onto one (the other exactly on it), so that a group can absorb a larger excess.
    for g, h in [(g, h) for g in hot for h in cold] + list(combinations(cold, 2)):
        tries[0] += 1
        if _try_pair(st, g, h, rng) or tries[0] >= limit:
            return tries[0] < limit
    if not st.endgame():
        return False
    for size in (3, 4):
        for g in hot:
            for h in cold:
                rest = [int(x) for x in order[::-1] if x not in (g, h)]
                for others in combinations(rest, size - 2):
                    group = [g, h, *others]
                    if int(st.load[group].sum()) > len(group) * st.target:
                        continue  # no split brings them all to the target
                    tries[0] += GROUP_WEIGHT
                    if _try_group(st, group, rng) or tries[0] >= limit:
                        return tries[0] < limit
    return False


def resplit(
    sc: Scaled,
    counts: np.ndarray,
    assign: np.ndarray,
    target: int,
    seed: int = 0,
    max_tries: int = MAX_TRIES,
) -> np.ndarray:
    """Lower every GPU to at most ``target`` (scaled) by exact pair and triple re-splits
    (counts fixed, one copy of an expert per GPU kept), for at most ``max_tries`` tries.
    Returns the new assignment; its busiest GPU is never heavier than before."""
    rep = sc.replica(counts)
    if rep.max() > target:
        return assign.copy()  # that replica's GPU stays above the target whatever the split
    st = _State(rep, assign.copy(), rep[assign].sum(axis=1), target)
    rng = np.random.default_rng(seed)
    tries, sideways = [0], 0
    while st.load.max() > target and tries[0] < max_tries:
        st.sampled = False
        # With sampled movable replicas a failed sweep may succeed with a new sample;
        # otherwise a sideways re-split of four GPUs at or below the target gives the next
        # sweep new contents to work with.
        if not _step(st, rng, tries, max_tries) and not st.sampled:
            below = np.flatnonzero(st.load <= target)
            if below.size < 4 or sideways >= MAX_SIDEWAYS or not st.endgame():
                break
            sideways += 1
            tries[0] += GROUP_WEIGHT
            group = [int(x) for x in rng.choice(below, 4, replace=False)]
            _try_group(st, group, rng, sideways=True)
    # The score (total excess) may fall while one GPU of a triple rises: keep the lighter.
    return st.assign if st.load.max() <= rep[assign].sum(axis=1).max() else assign.copy()


def uniform_counts(sc: Scaled, slots: int, gpus: int) -> np.ndarray | None:
    """``slots / experts`` replicas of every expert, when that divides and fits (at most
    the largest count, and at most one copy per GPU). Measured on OLMoE loads: the
    water-filled counts often leave replica loads whose residues (modulo a common factor of
    most of them) no split can even out; equal counts give every replica the same factor."""
    experts = sc.load.shape[0]
    if slots % experts or slots // experts > min(sc.max_count, gpus):
        return None
    return np.full(experts, slots // experts, dtype=np.int64)


def resplit_search(
    sc: Scaled, counts: np.ndarray, assign: np.ndarray, target: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`resplit` towards ``target``: first on :func:`uniform_counts` placed afresh
    (at most :data:`UNIFORM_TRIES` tries; on OLMoE loads it reaches the bound within a few),
    then on the given counts; the lighter result (counts, assign)."""
    gpus, per_gpu = assign.shape
    best = (counts, assign)
    peak = sc.peak(counts, assign)
    uniform = uniform_counts(sc, assign.size, gpus)
    # One replica alone above the target rules the equal counts out.
    if (
        uniform is not None
        and not np.array_equal(uniform, counts)
        and sc.replica(uniform).max() <= target
    ):
        w = (sc.load[:, 1] // sc.q).astype(np.float64)  # the whole-number loads
        moved = resplit(sc, uniform, place(w, uniform, gpus, per_gpu), target, seed, UNIFORM_TRIES)
        if sc.peak(uniform, moved) < peak:
            best, peak = (uniform, moved), sc.peak(uniform, moved)
    if peak <= target:
        return best
    moved = resplit(sc, counts, assign, target, seed)
    return (counts, moved) if sc.peak(counts, moved) < peak else best
