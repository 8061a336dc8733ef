"""Exact reasoning on one layer in scaled integers (see docs/balance.md, "Exact search").

With whole-number loads (token counts) and ``Q = lcm(1..K)``, ``K`` the largest possible
replica count, every replica load ``w_e / c_e`` is a whole multiple of ``1/Q``, and so is
every GPU load. Three things follow, all in exact integer arithmetic:

- the **integer mean bound**: the busiest GPU carries at least ``ceil(W Q / P) / Q``, a
  little above ``W / P`` when ``P`` does not divide ``W Q``;
- :func:`exchange`, a local search that swaps ``k``-subsets of replicas between the busiest
  GPU and another (meet in the middle over sorted subset sums, ``k`` up to 4), aiming at
  that bound; with many experts it reaches it, which proves the layer;
- :func:`window_search`, an exact search for few experts: is there a placement whose busiest
  GPU is at most ``T`` (first ``T = best - 1``)? Every GPU of such a placement carries at least
  ``W Q - (P - 1) T``, so only GPU contents (expert, count) whose load lies in that narrow
  window can appear. CP-SAT decides the small configuration model over them; "infeasible"
  proves the incumbent optimal, a solution lowers the incumbent and the search repeats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from itertools import combinations

import numpy as np
from ortools.sat.python import cp_model

from placer.balance.layer_model import MAX_SCALED_TOTAL, charge_solve
from placer.balance.placement import spent
from placer.budget import Budget

#: ``window_search`` gives up (no claim) when the window holds more GPU contents than this.
MAX_WINDOW_PATTERNS = 4_000

#: ... or when listing them takes more than this many steps of the depth-first walk (16
#: experts with 6 slots per GPU took 17.5 million steps, 48 s, for three windows).
MAX_WINDOW_NODES = 200_000

#: The window search decides a threshold near the incumbent or the midpoint only while its
#: window holds at most this many contents; wider windows cost too much (docs/balance.md).
MAX_EASY_PATTERNS = 700
#: Probes from the bound start 1/PROBE_DIVISOR of the way to the incumbent, then double.
PROBE_DIVISOR = 64

#: ``exchange`` tries subsets of a GPU's replicas only while there are at most this many.
MAX_SUBSETS = 4_000

#: ``exchange`` stops after this many moves: a count, so its result is the same on any machine.
MAX_EXCHANGE_ROUNDS = 300

#: ... or after this many rounds in a row that leave the busiest GPUs as they were.
MAX_STALLED_ROUNDS = 30

Pattern = tuple[tuple[int, int, int], ...]  # (expert, its replica count, copies on the GPU)


@dataclass(frozen=True)
class Scaled:
    """A layer's loads as exact integers: ``load[e, k] = w_e * q / k`` for ``1 <= k <= K``."""

    q: int
    load: np.ndarray  # int64 [experts, K + 1]; column 0 unused
    total: int  # sum_e w_e * q: every placement's GPU loads add up to this
    max_count: int  # K

    def replica(self, counts: np.ndarray) -> np.ndarray:
        """Scaled load of one replica of each expert under ``counts``."""
        return np.asarray(self.load[np.arange(counts.size), counts], dtype=np.int64)

    def peak(self, counts: np.ndarray, assign: np.ndarray) -> int:
        """The busiest GPU's scaled load."""
        return int(self.replica(counts)[assign].sum(axis=1).max())

    def mean_bound(self, gpus: int) -> int:
        """``ceil(total / gpus)``: the integer mean bound, in scaled units."""
        return -(-self.total // gpus)


def max_replicas(experts: int, slots: int, gpus: int, allow_duplicates: bool) -> int:
    """The most replicas an expert can have: every other expert keeps one slot, and with one
    copy per GPU no expert has more replicas than GPUs."""
    return min(slots - experts + 1, slots if allow_duplicates else gpus)


def scaled(w: np.ndarray, slots: int, gpus: int, allow_duplicates: bool) -> Scaled | None:
    """The exact integer form of a layer, or None when a load is not a whole number or the
    scaled total would exceed :data:`~placer.balance.layer_model.MAX_SCALED_TOTAL`."""
    if not np.all(w == np.round(w)) or w.size == 0:
        return None
    k_max = max_replicas(w.size, slots, gpus, allow_duplicates)
    q = math.lcm(*range(1, k_max + 1))
    whole = [round(float(x)) for x in w]
    # In Python integers: the lcm of many counts overflows a float long before this test.
    if sum(whole) * q > MAX_SCALED_TOTAL:
        return None
    load = np.zeros((w.size, k_max + 1), dtype=np.int64)
    for e, x in enumerate(whole):
        load[e, 1:] = [x * q // k for k in range(1, k_max + 1)]
    return Scaled(q, load, sum(whole) * q, k_max)


@cache
def _subsets(n: int, k: int) -> np.ndarray:
    return np.array(list(combinations(range(n), k)), dtype=np.int64).reshape(-1, k)


def _best_pair_move(
    rep: np.ndarray, assign: np.ndarray, hot: int, other: int, load: np.ndarray
) -> tuple[int, np.ndarray, np.ndarray] | None:
    """The k-for-k exchange between GPUs ``hot`` and ``other`` that leaves the lighter pair
    maximum: (that maximum, hot's slots, other's slots), or None if nothing improves.

    Experts on both GPUs stay put, so no exchange puts two copies of an expert on a GPU.
    """
    gap = int(load[hot] - load[other])
    common = np.intersect1d(assign[hot], assign[other])
    mine = np.flatnonzero(~np.isin(assign[hot], common))
    theirs = np.flatnonzero(~np.isin(assign[other], common))
    best: tuple[int, np.ndarray, np.ndarray] | None = None
    best_max = int(load[hot])
    for k in range(1, min(mine.size, theirs.size) + 1):
        if max(math.comb(mine.size, k), math.comb(theirs.size, k)) > MAX_SUBSETS:
            break
        sub_a, sub_b = mine[_subsets(mine.size, k)], theirs[_subsets(theirs.size, k)]
        sum_a = rep[assign[hot][sub_a]].sum(axis=1)
        sum_b = rep[assign[other][sub_b]].sum(axis=1)
        order = np.argsort(sum_a, kind="stable")
        # Moving d = sum_a - sum_b off the hot GPU is best near d = gap / 2.
        pos = np.searchsorted(sum_a[order], sum_b + gap // 2)
        for cand in (np.clip(pos - 1, 0, order.size - 1), np.clip(pos, 0, order.size - 1)):
            d = sum_a[order[cand]] - sum_b
            pair_max = np.where(d > 0, np.maximum(load[hot] - d, load[other] + d), best_max)
            j = int(np.argmin(pair_max))
            if pair_max[j] < best_max:
                best_max = int(pair_max[j])
                best = (best_max, sub_a[order[cand[j]]], sub_b[j])
        if best_max <= -(-(int(load[hot]) + int(load[other])) // 2):
            break  # the pair is as even as whole units allow
    return best


def _perturb(
    rep: np.ndarray, assign: np.ndarray, load: np.ndarray, hot: int, rng: np.random.Generator
) -> bool:
    """A random k-for-k exchange between two GPUs other than ``hot`` that keeps both lighter
    than it (often a sideways move of equal sums): new contents for the next exchanges to
    work with, the busiest GPU unchanged. False when the drawn pair has no such exchange."""
    others = np.flatnonzero(np.arange(load.size) != hot)
    if others.size < 2:
        return False
    g, h = (int(x) for x in rng.choice(others, size=2, replace=False))
    common = np.intersect1d(assign[g], assign[h])
    mine = np.flatnonzero(~np.isin(assign[g], common))
    theirs = np.flatnonzero(~np.isin(assign[h], common))
    # d = (what g gives) - (what h gives) must keep both GPUs below the busiest.
    d_low, d_high = int(load[g] - load[hot]) + 1, int(load[hot] - load[h]) - 1
    for k in rng.permutation(np.arange(1, min(mine.size, theirs.size) + 1)):
        if max(math.comb(mine.size, int(k)), math.comb(theirs.size, int(k))) > MAX_SUBSETS:
            continue
        sub_a, sub_b = mine[_subsets(mine.size, k)], theirs[_subsets(theirs.size, k)]
        sum_a = rep[assign[g][sub_a]].sum(axis=1)
        order = np.argsort(sum_a, kind="stable")
        sum_b = rep[assign[h][sub_b]].sum(axis=1)
        first = np.searchsorted(sum_a[order], sum_b + d_low, side="left")
        last = np.searchsorted(sum_a[order], sum_b + d_high, side="right")
        fits = np.flatnonzero(last > first)
        if fits.size == 0:
            continue
        j = int(rng.choice(fits))
        i = int(order[rng.integers(first[j], last[j])])
        out_g, out_h = assign[g, sub_a[i]].copy(), assign[h, sub_b[j]].copy()
        assign[g, sub_a[i]], assign[h, sub_b[j]] = out_h, out_g
        return True
    return False


def exchange(
    sc: Scaled, counts: np.ndarray, assign: np.ndarray, target: int, seed: int = 0
) -> np.ndarray:
    """Lower the busiest GPU by k-for-k replica exchanges with other GPUs (counts fixed),
    until it reaches ``target`` (scaled) or :data:`MAX_EXCHANGE_ROUNDS` rounds pass. Each
    round takes, over all other GPUs, the exchange leaving the lowest pair maximum; when
    none helps, a seeded random swap between two other GPUs gives it new partners."""
    assign = assign.copy()
    rep = sc.replica(counts)
    rng = np.random.default_rng(seed)
    state, stalled = (np.inf, 0), 0
    for _ in range(MAX_EXCHANGE_ROUNDS):
        load = rep[assign].sum(axis=1)
        hot = int(np.argmax(load))
        if load[hot] <= target:
            break
        # Progress: a lighter busiest GPU, or fewer GPUs at its load.
        now = (float(load[hot]), int(np.count_nonzero(load == load[hot])))
        stalled = 0 if now < state else stalled + 1
        state = min(state, now)
        if stalled > MAX_STALLED_ROUNDS:
            break
        best: tuple[int, int, np.ndarray, np.ndarray] | None = None
        for other in np.argsort(load, kind="stable"):
            if other == hot or load[hot] - load[other] <= 1:
                continue
            move = _best_pair_move(rep, assign, hot, int(other), load)
            if move is not None and (best is None or move[0] < best[0]):
                best = (move[0], int(other), move[1], move[2])
        if best is None:
            _perturb(rep, assign, load, hot, rng)
            continue
        _, other, mine, theirs = best
        out_hot, out_other = assign[hot, mine].copy(), assign[other, theirs].copy()
        assign[hot, mine], assign[other, theirs] = out_other, out_hot
    return assign


def window_patterns(
    sc: Scaled, per_gpu: int, low: int, high: int, allow_duplicates: bool
) -> list[Pattern] | None:
    """Every GPU content whose scaled load lies in ``[low, high]``, or None when there are
    more than :data:`MAX_WINDOW_PATTERNS` or the walk takes more than
    :data:`MAX_WINDOW_NODES` steps. A content lists (expert, count, copies)."""
    experts = sc.load.shape[0]
    items = [
        [(k, int(sc.load[e, k])) for k in range(1, sc.max_count + 1) if sc.load[e, k] <= high]
        for e in range(experts)
    ]
    # The lightest and heaviest single replica among experts e.. (prunes the depth-first walk).
    lightest = [min((v for its in items[e:] for _, v in its), default=0) for e in range(experts)]
    heaviest = [max((v for its in items[e:] for _, v in its), default=0) for e in range(experts)]
    out: list[Pattern] = []
    acc: list[tuple[int, int, int]] = []
    steps = [0]

    def walk(start: int, left: int, total: int) -> bool:
        steps[0] += 1
        if steps[0] > MAX_WINDOW_NODES:
            return False
        if left == 0:
            if total >= low:
                out.append(tuple(acc))
            return len(out) <= MAX_WINDOW_PATTERNS
        if start >= experts or total + left * lightest[start] > high:
            return True
        if total + left * heaviest[start] < low:
            return True
        for e in range(start, experts):
            for k, v in items[e]:
                for copies in range(1, (min(left, k) if allow_duplicates else 1) + 1):
                    if total + copies * v > high:
                        break
                    acc.append((e, k, copies))
                    ok = walk(e + 1, left - copies, total + copies * v)
                    acc.pop()
                    if not ok:
                        return False
        return True

    return out if walk(0, per_gpu, 0) else None


def _feasible_at(
    sc: Scaled,
    patterns: list[Pattern],
    gpus: int,
    budget: Budget,
    seconds: float,
    seed: int,
) -> tuple[str, np.ndarray | None, np.ndarray | None]:
    """Is there a placement using only ``patterns``? ("infeasible" | "feasible" | "unknown",
    counts, assign). The configuration model: ``n[p]`` GPUs hold content ``p``, ``z[e, k]``
    expert ``e`` has ``k`` replicas, and every expert's copies add up to its count."""
    experts = sc.load.shape[0]
    keys = sorted({(e, k) for pat in patterns for e, k, _ in pat})
    if {e for e, _ in keys} != set(range(experts)):
        return "infeasible", None, None  # some expert fits in no content of the window
    m = cp_model.CpModel()
    z = {key: m.new_bool_var(f"z{key}") for key in keys}
    for e in range(experts):
        m.add_exactly_one(v for (x, _), v in z.items() if x == e)
    n = [m.new_int_var(0, gpus, f"n[{i}]") for i in range(len(patterns))]
    m.add(sum(n) == gpus)
    held: dict[tuple[int, int], list[tuple[int, cp_model.IntVar]]] = {key: [] for key in keys}
    for pat, n_p in zip(patterns, n, strict=True):
        for e, k, copies in pat:
            held[e, k].append((copies, n_p))
    for (e, k), var in z.items():
        m.add(sum(c * v for c, v in held[e, k]) == k * var)
    solver = cp_model.CpSolver()
    budget.limit_cpsat(solver.parameters, seconds)
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = seed
    status = solver.solve(m)
    charge_solve(budget, solver, status, seconds)
    if status == cp_model.INFEASIBLE:
        return "infeasible", None, None
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return "unknown", None, None
    counts = np.zeros(experts, dtype=np.int64)
    rows: list[list[int]] = []
    for pat, n_p in zip(patterns, n, strict=True):
        row = [e for e, _, copies in pat for _ in range(copies)]
        rows.extend([row] * int(solver.value(n_p)))
    for (e, k), var in z.items():
        if solver.value(var):
            counts[e] = k
    return "feasible", counts, np.array(rows, dtype=np.int64)


def _window(
    sc: Scaled, per_gpu: int, gpus: int, threshold: int, allow_duplicates: bool
) -> list[Pattern] | None:
    """The contents a placement with busiest GPU at most ``threshold`` can use."""
    low = sc.total - (gpus - 1) * threshold
    return window_patterns(sc, per_gpu, low, threshold, allow_duplicates)


def _next_window(
    sc: Scaled,
    per_gpu: int,
    gpus: int,
    low: int,
    best: int,
    step: int,
    direct: bool,
    allow_duplicates: bool,
) -> tuple[int, list[Pattern], bool] | None:
    """The next threshold to decide, its window, and whether it is a probe from below.

    Measured on Mixtral loads (docs/balance.md): a window's cost grows with its contents,
    and a wide feasible window costs several times a narrow infeasible one. So, in order:
    "anything lighter than the incumbent?" (``direct``, every other round; one infeasible
    answer proves the incumbent), then the bisection midpoint, each only while its window
    is small; else a probe ``step`` above the bound, whose window is narrow."""
    for threshold in ([best - 1] if direct else []) + [(low + best) // 2]:
        patterns = _window(sc, per_gpu, gpus, threshold, allow_duplicates)
        if patterns is not None and len(patterns) <= MAX_EASY_PATTERNS:
            return threshold, patterns, False
    threshold = min(best - 1, low + step)
    patterns = _window(sc, per_gpu, gpus, threshold, allow_duplicates)
    return None if patterns is None else (threshold, patterns, True)


@dataclass(frozen=True)
class WindowResult:
    """What :func:`window_search` settled."""

    counts: np.ndarray
    assign: np.ndarray
    bound: int  # scaled: no placement's busiest GPU is lighter (proven by infeasibility)
    proven: bool  # bound == the placement's busiest GPU
    improved: bool


def window_search(
    sc: Scaled,
    gpus: int,
    counts: np.ndarray,
    assign: np.ndarray,
    budget: Budget,
    seconds: float,
    seed: int = 0,
    allow_duplicates: bool = False,
) -> WindowResult | None:
    """Search the busiest GPU's load ``T`` between the integer mean bound and the
    incumbent (thresholds chosen by :func:`_next_window`): "infeasible" at ``T`` raises the
    bound to ``T + 1``, a placement lowers the incumbent (module docstring). None when the
    first window holds too many contents to try (a placement already on the integer mean
    bound is returned proven). CP-SAT gets at most ``seconds`` of ``budget`` in all."""
    per_gpu = assign.shape[1]
    best = sc.peak(counts, assign)
    low = sc.mean_bound(gpus)
    improved = tried = False
    used = 0.0
    step = max(1, (best - low) // PROBE_DIVISOR)
    direct = True
    while low < best and seconds - used > 0:
        chosen = _next_window(sc, per_gpu, gpus, low, best, step, direct, allow_duplicates)
        direct = not direct
        if chosen is None:
            break
        threshold, patterns, probed = chosen
        step = step * 2 if probed else step
        tried = True
        before = spent(budget)
        status, c2, a2 = _feasible_at(sc, patterns, gpus, budget, seconds - used, seed)
        used += spent(budget) - before
        if status == "infeasible":
            low = threshold + 1
        elif status == "feasible" and c2 is not None and a2 is not None:
            counts, assign, improved = c2, a2, True
            best = sc.peak(counts, assign)
        else:
            break
    if not tried and low < best:
        return None  # the first window held too many contents (or no time was left)
    return WindowResult(counts, assign, low, low >= best, improved)
