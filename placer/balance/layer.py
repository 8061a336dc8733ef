"""One layer of ``placer balance``: place, improve, bound and judge (see docs/balance.md).

Global policy, in order: the heuristic (:func:`~placer.balance.placement.place_layer`);
EPLB's map where it is lighter and allowed; with whole-number loads, replica exchanges
towards the integer mean bound and, for few experts, the exact window search
(:mod:`placer.balance.exact`); otherwise, or when that settles nothing, the whole-layer CP-SAT
model (:mod:`placer.balance.layer_model`). Node policy: :mod:`placer.balance.node`. Last, the
bounds (:mod:`placer.balance.bounds`) and the gap.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from placer.balance import placement as pl
from placer.balance.bounds import BoundReport, lower_bound
from placer.balance.completion import companion_bound, complete
from placer.balance.count_search import count_search
from placer.balance.eplb import rebalance_experts
from placer.balance.exact import Scaled, exchange, scaled, window_search
from placer.balance.layer_model import solve_layer
from placer.balance.node import place_node
from placer.balance.resplit import resplit, resplit_search
from placer.balance.result import DEFAULT_LAYER_SECONDS, LayerBalance, Policy
from placer.budget import Budget

#: The exact window search is tried up to this many experts (beyond, its windows are huge).
MAX_WINDOW_EXPERTS = 16


@dataclass(frozen=True)
class Found:
    """A layer's placement and what is known about it before the closed-form bounds."""

    counts: np.ndarray
    assign: np.ndarray
    method: str
    bounds: dict[str, float] = field(default_factory=dict)  # extra bounds, load units
    proven_by: str | None = None  # the method that proved the placement optimal


def _as_start(row: np.ndarray, experts: int, gpus: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A physical-to-logical row as (counts, assign), or None if it doubles an expert up."""
    assign = row.reshape(gpus, -1)
    if any(len(set(r)) != assign.shape[1] for r in assign.tolist()):
        return None
    return np.bincount(row, minlength=experts), assign


def _eplb_if_better(
    found: Found, w: np.ndarray, gpus: int, eplb_row: np.ndarray | None, allow_duplicates: bool
) -> Found:
    """EPLB's placement instead of ours when its busiest GPU is lighter and it is allowed
    (no two copies of an expert on a GPU, unless duplicates are): never worse than EPLB."""
    if eplb_row is None:
        return found
    eplb_counts = np.bincount(eplb_row, minlength=w.size)
    eplb_assign = eplb_row.reshape(gpus, -1)
    doubled = any(len(set(r)) != eplb_assign.shape[1] for r in eplb_assign.tolist())
    if doubled and not allow_duplicates:
        return found
    ours = pl.gpu_loads(w, found.counts, found.assign).max()
    if pl.gpu_loads(w, eplb_counts, eplb_assign).max() < ours:
        label = "EPLB (duplicates allowed)" if doubled else "EPLB"
        return replace(found, counts=eplb_counts, assign=eplb_assign, method=label, proven_by=None)
    return found


def _integer_search(
    found: Found,
    sc: Scaled,
    gpus: int,
    budget: Budget,
    seconds: float,
    seed: int,
    allow_duplicates: bool,
) -> Found:
    """With one replica per expert, bin completion and the companion bound
    (:mod:`placer.balance.completion`); exact re-splits (:mod:`placer.balance.resplit`) and
    exchanges towards the integer mean bound; then, with few experts, the count search, else
    the window search."""
    target = sc.mean_bound(gpus)
    bounds = {**found.bounds, "integer mean": target / sc.q}
    counts, assign, method = found.counts, found.assign, found.method
    peak = sc.peak(counts, assign)
    companion = target
    if peak > target and assign.size == counts.size:
        companion, settled = _one_replica_each(found, sc, gpus, peak, seed)
        if companion > target:
            bounds["companion sums"] = companion / sc.q
        if settled is not None:
            return replace(settled, bounds=bounds)
    if peak > target:
        counts2, moved = resplit_search(sc, counts, assign, target, seed)
        if sc.peak(counts2, moved) < peak:
            counts, assign, peak = counts2, moved, sc.peak(counts2, moved)
            method += " + re-splits"
    if peak > target:
        # From the first placement: the exchanged one is also a new start for the re-splits
        # (on OLMoE, 8 GPUs / 64 slots, that proved two layers more).
        moved = exchange(sc, found.counts, found.assign, target, seed)
        label = " + exchanges"
        if sc.peak(found.counts, moved) > target:
            again = resplit(sc, found.counts, moved, target, seed)
            if sc.peak(found.counts, again) < sc.peak(found.counts, moved):
                moved, label = again, " + exchanges + re-splits"
        if sc.peak(found.counts, moved) < peak:
            counts, assign, peak = found.counts, moved, sc.peak(found.counts, moved)
            method = found.method + label
    if peak <= companion:
        proof = "integer mean" if peak <= target else "companion sums"
        return Found(counts, assign, method, bounds, proof)
    if not allow_duplicates:
        cs = count_search(sc, gpus, counts, assign)
        if cs is not None:
            method += " + count search" if cs.improved else ""
            bounds["count search"] = cs.peak / sc.q
            return Found(cs.counts, cs.assign, method, bounds, "count search")
    # With duplicates the whole-layer pattern model proves the small layers faster (measured
    # on Mixtral-like loads, 16 slots on 8 GPUs), so the window search is left to one copy.
    if counts.size <= MAX_WINDOW_EXPERTS and seconds > 0 and not allow_duplicates:
        ws = window_search(sc, gpus, counts, assign, budget, seconds, seed, allow_duplicates)
        if ws is not None:
            if ws.improved:
                counts, assign, method = ws.counts, ws.assign, method + " + exact search"
            bounds["exact search"] = ws.bound / sc.q
            return Found(counts, assign, method, bounds, "exact search" if ws.proven else None)
    return Found(counts, assign, method, bounds)


def _one_replica_each(
    found: Found, sc: Scaled, gpus: int, peak: int, seed: int
) -> tuple[int, Found | None]:
    """One replica per expert (``S = E``, so the counts are forced): a completion towards the
    integer mean bound, else the companion bound (scaled) and a completion towards it.
    Returns that bound (the integer mean bound when the companion bound adds nothing) and the
    placement proven on it, or None. On OLMoE, 8 GPUs / 64 slots, this settles every layer in
    hundredths of a second, where the re-splits took up to 0.7 s."""
    target = sc.mean_bound(gpus)
    built = complete(sc, found.counts, gpus, target, seed)
    if built is not None:
        return target, replace(
            found, assign=built, method=found.method + " + completion", proven_by="integer mean"
        )
    bound = companion_bound(sc, gpus, peak)
    if bound <= target:
        return target, None
    if peak > bound:
        built = complete(sc, found.counts, gpus, bound, seed)
        if built is None:
            return bound, None
        found = replace(found, assign=built, method=found.method + " + completion")
    return bound, replace(found, proven_by="companion sums")


def _solve_global(
    w: np.ndarray,
    gpus: int,
    slots: int,
    eplb_row: np.ndarray | None,
    budget: Budget,
    seconds: float,
    seed: int,
    allow_duplicates: bool,
    closed_form: float,
) -> Found:
    """Heuristic, EPLB, integer search, then whole-layer CP-SAT, within ``seconds``; the
    searches are skipped once a placement meets ``closed_form``, the closed-form bound."""
    before = pl.spent(budget)
    start = None if eplb_row is None else _as_start(eplb_row, w.size, gpus)
    counts, assign, method, exact = pl.place_layer(w, slots, gpus, budget, start, seconds=seconds)
    # The enumeration's bound assumes one copy per GPU.
    extra = {} if exact is None or allow_duplicates else {"exact enumeration": exact}
    # The enumeration proves its placement when its best valid pairing meets its bound.
    settled = exact is not None and not allow_duplicates
    settled = settled and float(pl.gpu_loads(w, counts, assign).max()) <= (exact or 0.0)
    found = _eplb_if_better(
        Found(counts, assign, method, extra, "exact enumeration" if settled else None),
        w,
        gpus,
        eplb_row,
        allow_duplicates,
    )
    # On a closed-form bound already (e.g. the hot GPU's, when one expert nearly fills a GPU):
    # nothing to search, and the judge names the bound.
    peak = float(pl.gpu_loads(w, found.counts, found.assign).max())
    if found.proven_by is not None or _meets(peak, closed_form):
        return found
    sc = scaled(w, slots, gpus, allow_duplicates)
    if sc is not None:
        left = max(0.0, seconds - (pl.spent(budget) - before))
        found = _integer_search(found, sc, gpus, budget, left, seed, allow_duplicates)
    left = max(0.0, seconds - (pl.spent(budget) - before))
    if found.proven_by is not None or left <= 0:
        return found
    cp = solve_layer(
        w, slots, gpus, found.counts, found.assign, budget, left, seed, allow_duplicates
    )
    if cp is None:
        return found
    bounds = {**found.bounds, "CP-SAT": cp.bound}
    if cp.improved:
        found = replace(
            found, counts=cp.counts, assign=cp.assign, method=found.method + " + CP-SAT"
        )
    return replace(found, bounds=bounds, proven_by="CP-SAT" if cp.proven else None)


def _solve_node(
    w: np.ndarray,
    gpus: int,
    nodes: int,
    slots: int,
    groups: int,
    eplb_row: np.ndarray | None,
    budget: Budget,
    seconds: float,
    seed: int,
    allow_duplicates: bool,
) -> Found:
    """The node policy, and EPLB's hierarchical map where it is better (it keeps groups on
    nodes too)."""
    counts, assign, method, cp_bound, proven = place_node(
        w, gpus, nodes, slots, groups, budget, seconds, seed
    )
    bounds = {} if cp_bound is None else {"CP-SAT": cp_bound}
    found = Found(counts, assign, method, bounds, "CP-SAT" if proven else None)
    return _eplb_if_better(found, w, gpus, eplb_row, allow_duplicates)


def _imbalance(w: np.ndarray, row: np.ndarray, gpus: int) -> float:
    counts = np.bincount(row, minlength=w.size)
    per = row.size // gpus
    loads = (w[row] / counts[row]).reshape(gpus, per).sum(axis=1)
    return float(loads.max() / (w.sum() / gpus)) if w.sum() > 0 else 1.0


def _cross_node(w: np.ndarray, row: np.ndarray, gpus: int, nodes: int) -> float:
    """Load share served on a node other than the expert group's home (the node holding
    most of its replicas); 0 when every expert lives on one node."""
    if nodes == 1 or w.sum() == 0:
        return 0.0
    per_node = row.size // nodes
    node = np.arange(row.size) // per_node
    cross = 0.0
    for e in range(w.size):
        where = node[row == e]
        if where.size == 0:
            continue
        home = np.bincount(where).argmax()
        cross += w[e] * float(np.mean(where != home))
    return cross / float(w.sum())


def _eplb_baseline(
    w: np.ndarray, gpus: int, nodes: int, slots: int, groups: int | None, policy: Policy
) -> np.ndarray:
    """EPLB's physical-to-logical row for this layer under the same policy."""
    g_eplb = groups if (policy == "node" and groups) else 1
    n_eplb = nodes if policy == "node" else 1
    phy, _, _ = rebalance_experts(w[None, :], slots, g_eplb, n_eplb, gpus)
    return np.asarray(phy[0], dtype=np.int64)


def _judge(
    found: Found, w: np.ndarray, gpus: int, rep: BoundReport
) -> tuple[float, float, str, bool]:
    """(imbalance, bound as an imbalance, which bound, proven) for the found placement, with
    ``rep`` the closed-form bounds of the layer."""
    mean = w.sum() / gpus if w.sum() > 0 else 1.0
    imb = float(pl.gpu_loads(w, found.counts, found.assign).max() / mean)
    bound, kind = float(rep.value) / mean, rep.which
    for name, value in found.bounds.items():
        if value / mean > bound:
            bound, kind = value / mean, name
    if found.proven_by is not None:
        # Proven in exact integers (or by enumeration); float rounding aside.
        return imb, imb, found.proven_by, True
    bound = min(bound, imb)
    return imb, bound, kind, _meets(imb, bound)


def _meets(peak: float, bound: float) -> bool:
    """A placement meets a bound computed in floats when they agree to 1e-12 (relative)."""
    return peak <= 0 or (peak - bound) / peak <= 1e-12


def balance_layer(
    w: np.ndarray,
    gpus: int,
    nodes: int,
    slots: int,
    groups: int | None,
    policy: Policy,
    layer: int = 0,
    use_eplb: bool = True,
    *,
    allow_duplicates: bool = False,
    budget: Budget | None = None,
    seconds: float = DEFAULT_LAYER_SECONDS,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, LayerBalance]:
    """Balance one layer: (physical-to-logical row, replica counts, quality).

    ``seconds`` of ``budget`` go to CP-SAT (deterministic seconds in deterministic mode;
    without a budget, a deterministic one of ``seconds``), so the same input gives the same
    map on an idle and on a busy machine. ``allow_duplicates`` lets a GPU hold two replicas
    of one expert, as EPLB does; the bound then covers those placements too.
    """
    w = np.asarray(w, dtype=np.float64)
    if budget is None:
        budget = Budget(time_limit_s=max(seconds, 0.01) * 10, deterministic=True)
    eplb_row = _eplb_baseline(w, gpus, nodes, slots, groups, policy) if use_eplb else None
    rep = lower_bound(
        w, slots, gpus, policy=policy, G=groups, N=nodes, one_copy_per_gpu=not allow_duplicates
    )
    if policy == "global":
        found = _solve_global(
            w, gpus, slots, eplb_row, budget, seconds, seed, allow_duplicates, rep.value
        )
    else:
        assert groups is not None
        found = _solve_node(
            w, gpus, nodes, slots, groups, eplb_row, budget, seconds, seed, allow_duplicates
        )
    imb, bound, kind, proven = _judge(found, w, gpus, rep)
    row = found.assign.reshape(-1)
    quality = LayerBalance(
        layer=layer,
        imbalance=imb,
        bound=bound,
        bound_kind=kind,
        gap=0.0 if proven else max((imb - bound) / imb if imb > 0 else 0.0, 0.0),
        proven=proven,
        method=found.method,
        eplb_imbalance=None if eplb_row is None else _imbalance(w, eplb_row, gpus),
        unbalanced_imbalance=_imbalance(w, np.arange(slots) % w.size, gpus),
        cross_node_share=_cross_node(w, row, gpus, nodes),
    )
    return row, found.counts, quality
