"""Placing one layer's expert replicas on GPUs: water-filling counts, packing, local search,
and exact enumeration for two slots per GPU (numpy, no solver).

The slot model (EPLB's): expert ``e`` gets ``c_e >= 1`` replicas, ``sum(c) = S``;
a replica carries ``w_e / c_e``; GPU ``g`` holds exactly ``S / P`` replicas, never
two of the same expert. The objective is the largest GPU load.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Sequence
from itertools import combinations

import numpy as np

from placer.balance.result import DEFAULT_LAYER_SECONDS
from placer.budget import Budget

#: Exact enumeration for two slots per GPU is used up to this many count vectors.
MAX_ENUMERATION = 300_000


def water_fill(w: np.ndarray, slots: int, cap: int | None = None) -> np.ndarray:
    """Replica counts minimising the heaviest replica: each extra replica goes to the expert
    whose replicas are currently heaviest (optimal for max_e w_e / c_e). ``cap`` bounds the
    replicas of one expert (the GPUs available, since no GPU holds two copies)."""
    counts = np.ones(w.size, dtype=np.int64)
    heap = [(-float(x), e) for e, x in enumerate(w)]
    heapq.heapify(heap)
    for _ in range(slots - w.size):
        _, e = heapq.heappop(heap)
        counts[e] += 1
        if cap is None or counts[e] < cap:
            heapq.heappush(heap, (-float(w[e]) / counts[e], e))
    return counts


def deal(counts: np.ndarray, gpus: int, per_gpu: int) -> np.ndarray:
    """Replicas grouped by expert, dealt round-robin over GPUs: no duplicates whenever every
    count is at most ``gpus`` (a fallback start for the local search)."""
    reps = np.repeat(np.arange(counts.size), counts)
    assign = np.empty((gpus, per_gpu), dtype=np.int64)
    for i, e in enumerate(reps):
        assign[i % gpus, i // gpus] = e
    return assign


def pack(w: np.ndarray, counts: np.ndarray, gpus: int, per_gpu: int) -> np.ndarray | None:
    """Longest-processing-time packing with room and no-duplicate rules: replicas in falling
    load order, each to the lightest GPU with room that lacks that expert.

    Returns ``assign[g, k]`` = expert in slot ``k`` of GPU ``g``, or None if the
    no-duplicate rule cannot be met greedily.
    """
    reps = np.repeat(np.arange(w.size), counts)
    load = w[reps] / counts[reps]
    order = np.argsort(-load, kind="stable")
    gpu_load = np.zeros(gpus)
    fill = np.zeros(gpus, dtype=np.int64)
    assign = np.full((gpus, per_gpu), -1, dtype=np.int64)
    holds = np.zeros((gpus, w.size), dtype=bool)
    for i in order:
        e = reps[i]
        ok = (fill < per_gpu) & ~holds[:, e]
        if not ok.any():
            return None
        cand = np.where(ok, gpu_load, np.inf)
        g = int(np.argmin(cand))
        assign[g, fill[g]] = e
        fill[g] += 1
        gpu_load[g] += load[i]
        holds[g, e] = True
    return assign


def gpu_loads(w: np.ndarray, counts: np.ndarray, assign: np.ndarray) -> np.ndarray:
    """Load of every GPU for a placement."""
    return np.asarray((w[assign] / counts[assign]).sum(axis=1), dtype=np.float64)


def _best_exchange(
    rep: np.ndarray,
    assign: np.ndarray,
    on: np.ndarray,
    g: int,
    groups: Sequence[tuple[int, ...]],
    allowed: np.ndarray | None,
) -> tuple[float, tuple[int, ...], int, tuple[int, ...]] | None:
    """Best exchange of a group of slots of GPU ``g`` with an equal-size group of another GPU.

    Returns (new pair maximum, slots of g, other GPU, its slots), or None.
    """
    loads = rep[assign].sum(axis=1)
    top = loads[g]
    idx = np.array(groups, dtype=np.int64)  # (m, size)
    a_sum = rep[assign[g][idx]].sum(axis=1)  # (m,)
    b_sum = rep[assign[:, idx]].sum(axis=2)  # (P, m)
    delta = a_sum[:, None, None] - b_sum[None, :, :]  # (m, P, m)
    pair_max = np.maximum(top - delta, loads[None, :, None] + delta)
    pair_max[:, g, :] = np.inf
    pair_max[delta <= 0] = np.inf
    # No GPU may end with two copies of an expert: g's outgoing experts must be absent
    # on h, and h's outgoing experts absent on g (a conservative test).
    a_exp = assign[g][idx]  # (m, size)
    clash_h: np.ndarray = np.asarray(on[:, a_exp].any(axis=2)).T  # (m, P)
    b_exp = assign[:, idx]  # (P, m, size)
    clash_g: np.ndarray = np.asarray(on[g][b_exp].any(axis=2))  # (P, m)
    bad = np.logical_or(clash_h[:, :, None], clash_g[None, :, :])
    if allowed is not None:
        bad |= ~allowed[g][None, :, None]
    pair_max[bad] = np.inf
    best = np.unravel_index(int(np.argmin(pair_max)), pair_max.shape)
    if not pair_max[best] < top - 1e-9 * max(top, 1.0):
        return None
    m1, h, m2 = (int(x) for x in best)
    return float(pair_max[best]), groups[m1], h, groups[m2]


def local_search(
    w: np.ndarray,
    counts: np.ndarray,
    assign: np.ndarray,
    allowed: np.ndarray | None = None,
    max_rounds: int = 20_000,
) -> np.ndarray:
    """Lower the busiest GPU by exchanging replicas with other GPUs until no exchange helps.

    Each round takes the best 1-for-1 swap between the busiest GPU and any other that
    leaves both below the old maximum; when none exists, the best 2-for-2 exchange.
    ``allowed[g, h]`` restricts which GPU pairs may exchange (node policy).
    """
    assign = assign.copy()
    rep = w / counts
    per_gpu = assign.shape[1]
    ones = [(i,) for i in range(per_gpu)]
    twos = list(combinations(range(per_gpu), 2))
    on = np.zeros((assign.shape[0], w.size), dtype=bool)
    np.put_along_axis(on, assign, True, axis=1)
    for _ in range(max_rounds):
        g = int(np.argmax(rep[assign].sum(axis=1)))
        move = _best_exchange(rep, assign, on, g, ones, allowed)
        if move is None and twos:
            move = _best_exchange(rep, assign, on, g, twos, allowed)
        if move is None:
            break
        _, mine, h, theirs = move
        out_g, out_h = assign[g, list(mine)].copy(), assign[h, list(theirs)].copy()
        on[g, out_g] = False
        on[h, out_h] = False
        assign[g, list(mine)], assign[h, list(theirs)] = out_h, out_g
        on[g, out_h] = True
        on[h, out_g] = True
    return assign


def bounded_compositions(total: int, parts: int, limit: int) -> np.ndarray:
    """Every vector ``c`` of ``parts`` integers in ``[1, limit]`` summing to ``total``, one
    per row, in lexicographic order. Built one part at a time, each row branching only into
    the values that can still complete it, so no row is made and thrown away; each level
    keeps only its values and parents, and the columns are gathered once at the end."""
    sums = np.zeros(1, dtype=np.int64)
    values: list[np.ndarray] = []
    parents: list[np.ndarray] = []
    for j in range(parts):
        left = parts - j - 1  # parts still to fill after this one
        lo = np.maximum(1, total - sums - left * limit)
        hi = np.minimum(limit, total - sums - left)
        n = np.maximum(hi - lo + 1, 0)
        parent = np.repeat(np.arange(sums.size), n)
        value = lo[parent] + np.arange(parent.size) - np.repeat(np.cumsum(n) - n, n)
        values.append(value)
        parents.append(parent)
        sums = sums[parent] + value
    rows = np.empty((sums.size, parts), dtype=np.int64)
    index = np.arange(sums.size)
    for j in range(parts - 1, -1, -1):
        rows[:, j] = values[j][index]
        index = parents[j][index]
    return rows


def count_vectors(total: int, parts: int, limit: int) -> int:
    """How many vectors :func:`bounded_compositions` returns (a dynamic programme)."""
    ways = [1] + [0] * total
    for _ in range(parts):
        prefix = list(itertools.accumulate(ways, initial=0))  # prefix[t] = sum(ways[:t])
        ways = [prefix[t] - prefix[max(t - limit, 0)] for t in range(total + 1)]
    return ways[total]


def count_compositions(total: int, parts: int) -> int:
    """How many count vectors ``exact_two_per_gpu`` would enumerate (before the limit)."""
    return math.comb(total - 1, parts - 1)


def _pairing(w: np.ndarray, c: np.ndarray, gpus: int) -> tuple[float, np.ndarray, bool]:
    """Heaviest-with-lightest pairing of the replicas of count vector ``c``:
    (max pair load, assign, whether no GPU got two copies of one expert)."""
    reps = np.repeat(np.arange(w.size), c)
    load = w[reps] / c[reps]
    order = np.argsort(load, kind="stable")
    light, heavy = order[:gpus], order[::-1][:gpus]
    assign = np.stack([reps[heavy], reps[light]], axis=1)
    val = float((load[heavy] + load[light]).max())
    return val, assign, bool(np.all(assign[:, 0] != assign[:, 1]))


def spent(budget: Budget) -> float:
    """The budget's own measure of time used: deterministic seconds, or wall seconds."""
    return budget.deterministic_used if budget.deterministic else budget.elapsed()


def exact_two_per_gpu(
    w: np.ndarray, gpus: int, budget: Budget, seconds: float
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Two slots per GPU: the best placement over every count vector, and a lower bound.

    For fixed counts, pairing the sorted replicas heaviest with lightest minimises
    the largest pair (a classic exchange argument), so ``min over c`` of that value
    bounds every placement. A pairing that puts two copies of an expert on one GPU
    is not a valid placement; its value still counts towards the bound. Returns
    (counts, assign, max load of the best valid placement, lower bound); equal
    values prove optimality. The CP-SAT calls share ``seconds`` of ``budget``; a count
    vector left unsettled when they run out keeps its pairing value as the bound.
    """
    spent_before = spent(budget)
    slots = 2 * gpus
    cs = bounded_compositions(slots, w.size, gpus)
    # All pairings at once: row r holds the sorted replica loads of count vector r.
    rep = np.repeat((w[None, :] / cs).ravel(), cs.ravel()).reshape(cs.shape[0], slots)
    rep.sort(axis=1)
    vals = (rep[:, :gpus] + rep[:, ::-1][:, :gpus]).max(axis=1)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    unproven = math.inf  # smallest pairing value of a vector CP-SAT could not settle
    order = np.argsort(vals, kind="stable")
    for r in order:
        if best is not None and vals[r] >= best[0] - 1e-12:
            break  # every remaining vector's pairing value bounds it from below
        val, assign, valid = _pairing(w, cs[r], gpus)
        if not valid:
            # The sorted pairing doubles up an expert on a GPU: solve these counts exactly.
            from placer.balance.layer_model import optimal_for_counts

            left = seconds - (spent(budget) - spent_before)
            exact = (
                optimal_for_counts(w, cs[r], gpus, 2, budget, budget.share(1.0, 0, left))
                if left > 0
                else None
            )
            if exact is None:
                unproven = min(unproven, float(vals[r]))
                continue
            assign, val = exact
        if best is None or val < best[0] - 1e-12:
            best = (val, cs[r], assign)
    if best is None:
        raise ValueError("no count vector gives a placement without duplicate replicas")
    return best[1], best[2], best[0], min(best[0], unproven)


def place(w: np.ndarray, counts: np.ndarray, gpus: int, per_gpu: int) -> np.ndarray:
    """Pack then local-search a placement for fixed counts (dealt round-robin if packing
    corners itself under the one-copy-per-GPU rule)."""
    packed = pack(w, counts, gpus, per_gpu)
    return local_search(w, counts, packed if packed is not None else deal(counts, gpus, per_gpu))


def improve_counts(
    w: np.ndarray, counts: np.ndarray, assign: np.ndarray, max_trials: int = 40
) -> tuple[np.ndarray, np.ndarray]:
    """Move single replicas between experts while the busiest GPU gets lighter.

    Water-filled counts minimise the heaviest replica, not the busiest GPU: when a few
    experts dominate, giving a replica of a lightly loaded multi-replica expert to one
    whose replicas are heavy can pack better. Each trial re-places from scratch.
    """
    gpus, per_gpu = assign.shape
    best_peak = float(gpu_loads(w, counts, assign).max())
    trials = 0
    improved = True
    while improved and trials < max_trials:
        improved = False
        by_load = np.argsort(-(w / counts), kind="stable")
        heavy = [int(b) for b in by_load if counts[b] < gpus][:4]
        donors = [
            int(a)
            for a in np.argsort(w / np.maximum(counts - 1, 1), kind="stable")
            if counts[a] >= 2
        ][:4]
        for b in heavy:
            for a in donors:
                if a == b or trials >= max_trials:
                    continue
                trials += 1
                c2 = counts.copy()
                c2[a] -= 1
                c2[b] += 1
                a2 = place(w, c2, gpus, per_gpu)
                peak = float(gpu_loads(w, c2, a2).max())
                if peak < best_peak - 1e-9 * max(best_peak, 1.0):
                    counts, assign, best_peak = c2, a2, peak
                    improved = True
                    break
            if improved:
                break
    return counts, assign


def count_variants(w: np.ndarray, slots: int, gpus: int) -> list[np.ndarray]:
    """Replica counts to try: water-filling (the lightest heaviest replica), and variants
    that spread the hottest experts over every GPU (one replica each) before water-filling
    the rest, which packs better when a few experts dominate."""
    base = water_fill(w, slots, cap=gpus)
    out = [base]
    order = np.argsort(-w, kind="stable")
    for top in range(1, 4):
        hot = order[:top]
        spare = slots - top * gpus - (w.size - top)
        if top >= w.size or spare < 0 or np.all(base[hot] == gpus):
            break
        rest = np.setdiff1d(np.arange(w.size), hot)
        counts = np.full(w.size, gpus, dtype=np.int64)
        counts[rest] = water_fill(w[rest], slots - top * gpus, cap=gpus)
        out.append(counts)
    return out


def place_layer(
    w: np.ndarray,
    slots: int,
    gpus: int,
    budget: Budget,
    start: tuple[np.ndarray, np.ndarray] | None = None,
    improve: bool = True,
    seconds: float = DEFAULT_LAYER_SECONDS,
) -> tuple[np.ndarray, np.ndarray, str, float | None]:
    """(counts, assign[g, k], method, exact lower bound or None) for one set of GPUs; the
    two-slot enumeration's CP-SAT calls share ``seconds`` of ``budget``."""
    per_gpu = slots // gpus
    if per_gpu == 2 and w.size > 1 and count_compositions(slots, w.size) <= MAX_ENUMERATION:
        counts, assign, _, bound = exact_two_per_gpu(w, gpus, budget, seconds)
        return counts, assign, "exact enumeration", bound
    mean = float(w.sum()) / gpus
    best: tuple[float, np.ndarray, np.ndarray, str] | None = None
    for k, counts in enumerate(count_variants(w, slots, gpus)):
        packed = pack(w, counts, gpus, per_gpu)
        # Greedy packing can corner itself under the one-copy-per-GPU rule; dealing
        # replicas round-robin never does (counts <= gpus), and the search evens it out.
        assign = local_search(
            w, counts, packed if packed is not None else deal(counts, gpus, per_gpu)
        )
        peak = float(gpu_loads(w, counts, assign).max())
        if best is None or peak < best[0]:
            best = (peak, counts, assign, "greedy + local search")
        # Variants only matter when water-filling leaves a visible gap to the mean.
        if k == 0 and peak <= mean * (1 + 1e-3):
            break
    assert best is not None
    peak, counts, assign, method = best
    if improve and peak > mean * (1 + 1e-3):
        counts, assign = improve_counts(w, counts, assign)
        new_peak = float(gpu_loads(w, counts, assign).max())
        if new_peak < peak:
            peak, method = new_peak, "greedy + local search + count moves"
    if start is not None:
        c2, a2 = start
        a2 = local_search(w, c2, a2)
        if gpu_loads(w, c2, a2).max() < peak:
            counts, assign, method = c2, a2, "EPLB + local search"
    return counts, assign, method, None


def hot_count_search(
    w: np.ndarray, slots: int, gpus: int, max_variants: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Every replica count of the hottest expert (and of the two hottest, when there are at
    most ``max_variants`` pairs), the rest water-filled, each packed and local-searched: the
    lightest busiest GPU. Water-filling minimises the heaviest replica, but when one or two
    experts carry several GPUs' worth of load, giving them fewer replicas can leave room
    for the rest (a node of DeepSeek-V3-size loads: 2.68 -> 2.19 x the mean, docs/balance.md)."""
    order = np.argsort(-w, kind="stable")
    per_gpu = slots // gpus
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for top in (1, 2):
        if top >= w.size or (top == 2 and gpus * gpus > max_variants):
            break
        hot, rest = order[:top], order[top:]
        for hot_counts in itertools.product(range(1, gpus + 1), repeat=top):
            spare = slots - sum(hot_counts)
            if spare < rest.size or spare > rest.size * gpus:
                continue
            counts = np.zeros(w.size, dtype=np.int64)
            counts[hot] = hot_counts
            counts[rest] = water_fill(w[rest], spare, cap=gpus)
            assign = place(w, counts, gpus, per_gpu)
            peak = float(gpu_loads(w, counts, assign).max())
            if best is None or peak < best[0]:
                best = (peak, counts, assign)
    if best is None:
        raise ValueError("no count vector to try")
    return best[1], best[2]
