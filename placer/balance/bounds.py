"""Lower bounds on the max GPU load of any expert placement in the slot model (numpy only).

The slot model (one layer): ``E`` experts with loads ``w_e >= 0``; ``S`` slots over ``P``
GPUs, ``s = S/P`` per GPU; expert ``e`` gets ``c_e >= 1`` replicas with ``sum c = S``, each
carrying ``w_e / c_e``; every slot holds one replica. All bounds are in load units: divide by
``W/P`` (the mean, :func:`mean_bound`) for an imbalance. Each is a proof that **no** count
vector and assignment does better, so ``bound <= optimum <= any heuristic``.

* :func:`mean_bound` -- ``W/P``: some GPU carries at least the average.
* :func:`replica_bound` -- ``min_c max_e w_e/c_e``: the heaviest replica sits on some GPU.
  Exact by greedy water-filling.
* :func:`pigeon_bound` -- pigeonhole on heavy replicas: a GPU with max load ``<= T`` cannot
  hold ``k+1`` replicas heavier than ``T/(k+1)``, so at most ``k·P`` such replicas exist.
* :func:`hot_gpu_bound` -- no redundancy (``S == E``): the heaviest expert's GPU also holds
  ``s - 1`` other experts, at least the ``s - 1`` lightest.
* :func:`group_local_bound` -- for placements that keep every group's experts and replicas on
  one node, ``G/N`` groups per node (EPLB's hierarchical policy): the best over group-to-node
  splits of the worst node's own bound.
* :func:`lower_bound` -- the largest of those that apply, as a :class:`BoundReport`.
"""

from __future__ import annotations

import heapq
import itertools
import math
from functools import cache
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import Field

from placer._base import Frozen

FloatArray = NDArray[np.float64]

#: Relative slack on the threshold tests of the pigeon bound. Rounding can only make the
#: test accept a slightly smaller ``T``, which keeps the bound valid (never above the truth).
_REL_TOL = 1e-9
#: Above this many (k, c, expert) candidate thresholds, bisect on the reals instead.
_MAX_CANDIDATES = 2_000_000
#: Group-to-node splits enumerated exactly up to this many; beyond, a weaker bound is used.
MAX_SPLITS = 20_000


def _weights(w: ArrayLike) -> FloatArray:
    arr = np.asarray(w, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError("w must be a non-empty 1-D array of expert loads (one layer)")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError("w must hold finite, non-negative loads")
    return arr


def _check_slots(num_experts: int, S: int, P: int) -> int:
    """Check the slot model's sizes; return slots per GPU."""
    if P <= 0:
        raise ValueError(f"P (GPUs) must be positive, got {P}")
    if S % P:
        raise ValueError(f"S ({S} slots) must be a multiple of P ({P} GPUs)")
    if num_experts > S:
        raise ValueError(f"S ({S} slots) must be at least the number of experts ({num_experts})")
    return S // P


def mean_bound(w: ArrayLike, P: int) -> float:
    """``W / P``: the average GPU load, which the busiest GPU reaches at least."""
    if P <= 0:
        raise ValueError(f"P (GPUs) must be positive, got {P}")
    return float(_weights(w).sum()) / P


def water_fill(w: ArrayLike, S: int, cap: int | None = None) -> NDArray[np.int64]:
    """Replica counts (each ``>= 1``, summing to ``S``, at most ``cap`` when given) minimising
    ``max_e w_e / c_e``.

    Greedy: each slot beyond the first per expert goes to the expert whose replicas are
    heaviest now among those below the cap (lowest id among equals). Exact for this min-max
    objective. Slots left when every expert is at the cap stay unassigned (no placement
    with one copy per GPU uses them).
    """
    arr = _weights(w)
    if arr.size > S:
        raise ValueError(f"S ({S} slots) must be at least the number of experts ({arr.size})")
    counts = np.ones(arr.size, dtype=np.int64)
    heap = [(-float(x), e) for e, x in enumerate(arr) if cap is None or cap > 1]
    heapq.heapify(heap)
    for _ in range(S - arr.size):
        if not heap:
            break
        _, e = heapq.heappop(heap)
        counts[e] += 1
        if cap is None or counts[e] < cap:
            heapq.heappush(heap, (-float(arr[e]) / int(counts[e]), e))
    return counts


def replica_bound(w: ArrayLike, S: int, cap: int | None = None) -> float:
    """``min over counts c of max_e w_e / c_e``: the heaviest replica of the best counts
    (with ``c_e <= cap`` when given: one copy per GPU allows at most P replicas)."""
    arr = _weights(w)
    counts = water_fill(arr, S, cap)
    return float(np.max(arr / counts))


def hot_gpu_bound(w: ArrayLike, S: int, P: int) -> float:
    """No redundancy only (``S == E``): ``max_e w_e`` + the ``S/P - 1`` smallest other loads.

    With one replica per expert, the GPU holding the heaviest expert holds ``S/P - 1`` other
    experts, whose loads are at least the smallest ``S/P - 1`` of the rest.

    Raises
    ------
    ValueError
        When ``S != E`` (with redundancy the replica loads are not fixed).
    """
    arr = _weights(w)
    s = _check_slots(arr.size, S, P)
    if arr.size != S:
        raise ValueError(
            f"hot_gpu_bound needs S == E (no redundant slots), got S={S}, E={arr.size}"
        )
    order = np.sort(arr)
    return float(order[-1] + order[: s - 1].sum())


def _knapsack_max(weights: list[int], values: list[int], capacity: int) -> int:
    """0/1 knapsack: the largest total value of items with total weight ``<= capacity``."""
    best = np.zeros(capacity + 1, dtype=np.int64)
    for wt, val in zip(weights, values, strict=True):
        if wt > capacity:
            continue
        if wt == 0:
            best += val
            continue
        best[wt:] = np.maximum(best[wt:], best[: capacity + 1 - wt] + val)
    return int(best[capacity])


def _pigeon_feasible(w: FloatArray, S: int, P: int, T: float, cap: int | None = None) -> bool:
    """Can some counts pass every pigeonhole test at threshold ``T``? (per-k relaxation)

    For each ``k < s`` separately (but always with every replica ``<= T``): is there a count
    vector ``c`` (``c_e >= 1``, ``sum c = S``) with at most ``k·P`` replicas heavier than
    ``T/(k+1)``? Expert ``e`` is *light* at level ``k`` when ``c_e >= (k+1) w_e / T``; else
    all its ``c_e`` replicas are heavy and it is cheapest at ``c_e = lo_e = ceil(w_e/T)``.
    Making experts light costs extra slots, so the fewest heavy replicas is a knapsack
    (capacity: the slots left over after ``lo``); spare slots go to any light expert.
    With ``cap`` (one copy per GPU: at most P replicas), an expert needing more than ``cap``
    replicas to be light stays heavy, and one needing more than ``cap`` to stay under ``T``
    makes ``T`` infeasible.
    """
    s = S // P
    positive = w > 0
    if T <= 0:
        return not positive.any()
    wp = w[positive]
    num_zero = int(w.size - wp.size)
    shrink = 1.0 - _REL_TOL
    lo = np.maximum(1, np.ceil(wp / T * shrink)).astype(np.int64)
    if cap is not None and np.any(lo > cap):
        return False
    spare = S - num_zero - int(lo.sum())
    if spare < 0:
        return False
    for k in range(1, s):
        high = np.maximum(1, np.ceil((k + 1) * wp / T * shrink)).astype(np.int64)
        extra = high - lo
        free = extra == 0
        items = ~free
        heavy_min = int(lo[items].sum())
        if heavy_min <= k * P and (num_zero or free.any()):
            continue  # already passes with every costly expert heavy
        can = items if cap is None else items & (high <= cap)
        gain = _knapsack_max(extra[can].tolist(), lo[can].tolist(), spare)
        has_light = num_zero > 0 or bool(free.any()) or gain > 0
        heavy = heavy_min - gain if has_light else S
        if heavy > k * P:
            return False
    return True


def pigeon_bound(w: ArrayLike, S: int, P: int, cap: int | None = None) -> float:
    """The smallest ``T`` passing the pigeonhole tests (see :func:`_pigeon_feasible`).

    ``T`` must admit counts with every replica ``<= T`` and, for every ``k < S/P``, at most
    ``k·P`` replicas heavier than ``T/(k+1)`` (else ``k+1`` of them share a GPU and exceed
    ``T``). Each ``k`` is checked exactly (a knapsack over the experts) but on its own, not
    jointly with the other ``k`` -- a relaxation, so the result is a valid bound that may be
    slightly below the joint one. The feasible ``T`` form a closed half-line whose end is one
    of the thresholds ``(k+1) w_e / c``; binary search over them gives the exact end
    (large instances bisect on the reals and return the lower end, still a valid bound).
    """
    arr = _weights(w)
    s = _check_slots(arr.size, S, P)
    low = replica_bound(arr, S, cap)  # the k = 0 test alone
    if low <= 0:
        return 0.0
    high = s * low  # the water-filling counts pass every test here
    wp = np.unique(arr[arr > 0])
    max_count = S - arr.size + 1
    n_candidates = wp.size * max_count * s
    if n_candidates <= _MAX_CANDIDATES:
        mult = (
            np.arange(1, s + 1, dtype=np.float64)[:, None]
            / np.arange(1, max_count + 1, dtype=np.float64)[None, :]
        )
        cand = np.unique((np.unique(mult)[:, None] * wp[None, :]).ravel())
        cand = cand[(cand >= low * (1 - 1e-12)) & (cand <= high)]
        cand = np.unique(np.concatenate([[low], cand, [high]]))
        first, last = 0, cand.size - 1  # cand[last] is feasible
        if _pigeon_feasible(arr, S, P, float(cand[first]), cap):
            return float(cand[first])
        while last - first > 1:
            mid = (first + last) // 2
            if _pigeon_feasible(arr, S, P, float(cand[mid]), cap):
                last = mid
            else:
                first = mid
        return min(float(cand[last]), high)
    lo_t, hi_t = low, high
    if _pigeon_feasible(arr, S, P, lo_t, cap):
        return lo_t
    for _ in range(100):
        mid_t = 0.5 * (lo_t + hi_t)
        if _pigeon_feasible(arr, S, P, mid_t, cap):
            hi_t = mid_t
        else:
            lo_t = mid_t
        if hi_t - lo_t <= 1e-12 * hi_t:
            break
    return lo_t


def global_bounds(
    w: FloatArray, S: int, P: int, pigeon: bool = True, one_copy_per_gpu: bool = False
) -> dict[str, float]:
    """Every bound that holds for unrestricted placements, by name (the pigeonhole bound,
    the costly one, only when ``pigeon``). ``one_copy_per_gpu``: placements never put two
    replicas of an expert on one GPU, so an expert has at most ``P`` replicas."""
    cap = P if one_copy_per_gpu else None
    bounds = {
        "mean": mean_bound(w, P),
        "replica": replica_bound(w, S, cap),
    }
    if pigeon:
        bounds["pigeon"] = pigeon_bound(w, S, P, cap)
    if w.size == S:
        bounds["hot_gpu"] = hot_gpu_bound(w, S, P)
    return bounds


def num_group_splits(num_groups: int, num_nodes: int) -> int:
    """Ways to split ``num_groups`` groups into ``num_nodes`` unlabelled nodes of equal size."""
    per = num_groups // num_nodes
    ways: int = math.factorial(num_groups) // (
        math.factorial(per) ** num_nodes * math.factorial(num_nodes)
    )
    return ways


def _check_groups(num_experts: int, S: int, P: int, G: int, N: int) -> None:
    if G <= 0 or N <= 0:
        raise ValueError(f"G (groups) and N (nodes) must be positive, got G={G}, N={N}")
    if num_experts % G:
        raise ValueError(f"the number of experts ({num_experts}) must be a multiple of G ({G})")
    if G % N:
        raise ValueError(f"G ({G} groups) must be a multiple of N ({N} nodes)")
    if P % N:
        raise ValueError(f"P ({P} GPUs) must be a multiple of N ({N} nodes)")


def group_local_bound(
    w: ArrayLike,
    S: int,
    P: int,
    G: int,
    N: int,
    pigeon: bool = True,
    one_copy_per_gpu: bool = False,
) -> float:
    """Bound for placements keeping each group on one node, ``G/N`` groups per node.

    Group ``g`` is experts ``g·E/G .. (g+1)·E/G - 1``. A node then holds exactly its groups'
    replicas in its ``S/N`` slots on ``P/N`` GPUs, so it is a slot-model instance of its own,
    bounded by the largest of the unrestricted bounds on it. The bound is the minimum over
    all group-to-node splits of the maximum over nodes (searched exactly with memoisation
    when there are at most :data:`MAX_SPLITS` splits; 105 for 8 groups on 4 nodes).

    Beyond that it falls back to a weaker valid bound: for each group ``g``, the node holding
    it carries at least ``g``'s load plus the ``G/N - 1`` lightest other groups (spread over
    ``P/N`` GPUs), and ``g``'s heaviest replica is at least its replica bound with the slots
    left after the other ``E/N - E/G`` experts of the node take one each.
    """
    arr = _weights(w)
    _check_slots(arr.size, S, P)
    _check_groups(arr.size, S, P, G, N)
    per_node = G // N
    group_size = arr.size // G
    node_slots, node_gpus = S // N, P // N
    groups = arr.reshape(G, group_size)

    if num_group_splits(G, N) > MAX_SPLITS:
        loads = groups.sum(axis=1)
        best = 0.0
        slots_for_group = node_slots - (arr.size // N - group_size)
        for g in range(G):
            others = np.sort(np.delete(loads, g))[: per_node - 1]
            best = max(best, (loads[g] + others.sum()) / node_gpus)
            best = max(
                best,
                replica_bound(groups[g], slots_for_group, node_gpus if one_copy_per_gpu else None),
            )
        return float(best)

    @cache
    def node_bound(block: tuple[int, ...]) -> float:
        sub = groups[list(block)].ravel()
        return max(global_bounds(sub, node_slots, node_gpus, pigeon, one_copy_per_gpu).values())

    @cache
    def best_split(remaining: tuple[int, ...]) -> float:
        if not remaining:
            return 0.0
        head, rest = remaining[0], remaining[1:]
        best = math.inf
        for partners in itertools.combinations(rest, per_node - 1):
            block = (head, *partners)
            here = node_bound(block)
            if here >= best:
                continue
            left = tuple(g for g in rest if g not in partners)
            best = min(best, max(here, best_split(left)))
        return best

    return float(best_split(tuple(range(G))))


class BoundReport(Frozen):
    """The best lower bound on the max GPU load and the bound that gave it."""

    value: float = Field(description="The largest applicable lower bound, in load units.")
    which: str = Field(
        description="Name of the tightest bound: mean, replica, pigeon, hot_gpu or group_local."
    )
    bounds: dict[str, float] = Field(description="Every bound computed, by name.")
    mean: float = Field(description="W / P, to turn the value into an imbalance.")

    @property
    def imbalance(self) -> float:
        """``value / mean``: no placement's max/mean GPU load is below this (1.0 for W = 0)."""
        return self.value / self.mean if self.mean > 0 else 1.0


def lower_bound(
    w: ArrayLike,
    S: int,
    P: int,
    policy: Literal["global", "node"] = "global",
    G: int | None = None,
    N: int | None = None,
    pigeon_in_nodes: bool = True,
    one_copy_per_gpu: bool = False,
) -> BoundReport:
    """The largest lower bound on the max GPU load for ``policy``.

    ``one_copy_per_gpu`` bounds placements that never put two replicas of an expert on one
    GPU (an expert then has at most as many replicas as the GPUs it may use): tighter when a
    hot expert would want more replicas than that.

    ``pigeon_in_nodes=False`` leaves the pigeonhole bound out of the per-node bounds of
    the group-local bound: still a valid bound, several times faster, and on the loads
    measured in the project's notes the pigeonhole bound never beat the others.

    ``"global"``: any placement (mean, replica, pigeon, and hot_gpu when ``S == E``).
    ``"node"``: placements keeping each of ``G`` groups on one of ``N`` nodes, ``G/N`` per
    node; adds :func:`group_local_bound`. Ties go to the first name in the order above.
    """
    arr = _weights(w)
    _check_slots(arr.size, S, P)
    bounds = global_bounds(arr, S, P, one_copy_per_gpu=one_copy_per_gpu)
    if policy == "node":
        if G is None or N is None:
            raise ValueError("policy 'node' needs G (groups) and N (nodes)")
        bounds["group_local"] = group_local_bound(
            arr, S, P, G, N, pigeon_in_nodes, one_copy_per_gpu
        )
    elif policy != "global":
        raise ValueError(f"policy must be 'global' or 'node', got {policy!r}")
    which = max(bounds, key=lambda name: bounds[name])  # first among equals
    return BoundReport(value=bounds[which], which=which, bounds=bounds, mean=bounds["mean"])
