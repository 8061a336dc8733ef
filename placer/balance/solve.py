"""``placer balance``: replicate and place experts to even out GPU load, with a bound per layer.

Per layer (layers are independent and run in parallel):

1. a lower bound on the busiest GPU (:mod:`placer.balance.bounds`);
2. two slots per GPU: exact enumeration of replica counts (proven optimal);
   otherwise water-filling counts, packing and an exchange local search
   (:mod:`placer.balance.placement`), also started from the EPLB baseline's
   placement so the result is never worse than it;
3. CP-SAT (counts fixed, hinted with the incumbent) to improve small layers
   that still have a gap;
4. the gap to the bound, and ``proven`` when the placement meets the bound.

``--policy node`` keeps every expert group's replicas inside one node, as
DeepSeek's group-limited routing needs: groups are packed onto nodes (equal
numbers per node) and improved by swapping groups, then each node is balanced
on its own GPUs.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from placer._base import Frozen
from placer.balance import placement as pl
from placer.balance.bounds import global_bounds, lower_bound
from placer.balance.cpsat import solve_layer
from placer.balance.eplb import rebalance_experts
from placer.balance.loads import LoadStats
from placer.budget import Budget
from placer.exceptions import InvalidInputError
from placer.limits import MAX_PROCESSES

Policy = Literal["global", "node"]

#: Exact enumeration for two slots per GPU is used up to this many count vectors.
MAX_ENUMERATION = 300_000

#: The busiest node gets CP-SAT only when its gap to its own bound is above this.
POLISH_GAP = 1e-3

#: Largest number of GPUs (EP ranks) ``balance`` accepts.
MAX_GPUS = 1024

#: Largest number of physical expert slots per layer ``balance`` accepts.
MAX_SLOTS = 16_384

#: Largest number of experts per layer ``balance`` accepts.
MAX_EXPERTS = 4096

#: Largest ``--time-limit`` of ``balance``, seconds (a day).
MAX_TIME_LIMIT_S = 86_400.0


#: CP-SAT seconds per layer when no budget says otherwise (deterministic seconds).
DEFAULT_LAYER_SECONDS = 0.5

#: Default time limit of a whole ``balance`` call, seconds.
DEFAULT_TIME_LIMIT_S = 10.0


class LayerBalance(Frozen):
    """The placement of one layer and how good it is."""

    layer: int = Field(description="Layer id (from the load file).")
    imbalance: float = Field(description="Busiest GPU load / mean GPU load.")
    bound: float = Field(description="Lower bound on the imbalance of any placement.")
    bound_kind: str = Field(description="Which bound is tightest.")
    gap: float = Field(description="(imbalance - bound) / imbalance.")
    proven: bool = Field(description="The placement meets the bound: optimal.")
    method: str = Field(description="What produced the placement.")
    eplb_imbalance: float | None = Field(description="The EPLB baseline's, same policy.")
    unbalanced_imbalance: float = Field(description="Without balancing (slot p -> p % E).")
    cross_node_share: float = Field(
        description="Share of load on replicas outside the "
        "expert's home node (0 for the node policy)."
    )


class BalanceResult(Frozen):
    """Maps in the EPLB / vLLM / SGLang conventions, and per-layer quality."""

    physical_to_logical_map: tuple[tuple[int, ...], ...] = Field(
        description="[layers][slots]: logical expert in each physical slot; slot p is on GPU "
        "p // (slots / gpus)."
    )
    logical_to_physical_map: tuple[tuple[tuple[int, ...], ...], ...] = Field(
        description="[layers][experts][max replicas]: slots of each expert, -1 padded."
    )
    logical_replica_count: tuple[tuple[int, ...], ...] = Field(
        description="[layers][experts]: replicas of each expert."
    )
    layers: tuple[LayerBalance, ...] = Field(description="Per-layer quality.")
    gpus: int = Field(description="GPUs (EP ranks).")
    nodes: int = Field(description="Nodes.")
    slots: int = Field(description="Physical expert slots per layer.")
    groups: int | None = Field(description="Expert groups (node policy).")
    policy: Policy = Field(description="global or node.")
    allow_duplicates: bool = Field(
        default=False, description="Whether a GPU may hold two replicas of one expert."
    )
    wall_time_s: float = Field(description="Wall time of the whole balance.")
    time_limit_s: float | None = Field(default=None, description="The time limit, seconds.")
    deterministic: bool = Field(
        default=False, description="CP-SAT limits were deterministic time (reproducible)."
    )
    seed: int = Field(default=0, description="CP-SAT's random seed.")
    wall_clock_stop: bool = Field(
        default=False,
        description="The wall clock stopped a deterministic run: its map may then vary.",
    )
    source: str | None = Field(description="The load file.")

    def summary(self) -> str:
        """Totals over layers."""
        imb = np.array([x.imbalance for x in self.layers])
        bnd = np.array([x.bound for x in self.layers])
        gap = np.array([x.gap for x in self.layers])
        eplb = [x.eplb_imbalance for x in self.layers if x.eplb_imbalance is not None]
        lines = [
            f"layers      {len(self.layers)}, {self.slots} slots on {self.gpus} GPUs in "
            f"{self.nodes} nodes, policy {self.policy}",
            f"imbalance   mean {imb.mean():.4f}, worst {imb.max():.4f}",
            f"bound       mean {bnd.mean():.4f}; gap mean {100 * gap.mean():.3f} %, worst "
            f"{100 * gap.max():.3f} %; {sum(x.proven for x in self.layers)} layers proven",
        ]
        if eplb:
            lines.append(f"EPLB        mean {np.mean(eplb):.4f}, worst {np.max(eplb):.4f}")
        lines.append(f"time        {self.wall_time_s:.2f} s")
        return "\n".join(lines)


def check_sizes(experts: int, gpus: int, slots: int | None) -> None:
    """Refuse sizes beyond the documented limits before any work (exit 2 at the CLI): the
    work grows with GPUs x slots, and past these limits it would not end in useful time."""
    if gpus <= 0:
        raise InvalidInputError(f"must be positive, got {gpus}", field="--gpus")
    if gpus > MAX_GPUS:
        raise InvalidInputError(f"must be at most {MAX_GPUS}, got {gpus}", field="--gpus")
    if experts > MAX_EXPERTS:
        raise InvalidInputError(
            f"{experts} experts per layer; at most {MAX_EXPERTS} are supported", field="load"
        )
    if slots is not None and not 0 < slots <= MAX_SLOTS:
        raise InvalidInputError(f"must be between 1 and {MAX_SLOTS}, got {slots}", field="--slots")


def check_shape(
    experts: int, gpus: int, nodes: int, slots: int, groups: int | None, policy: Policy
) -> None:
    """Reject impossible settings with the option named (exit 2 at the CLI)."""
    if gpus <= 0:
        raise InvalidInputError(f"must be positive, got {gpus}", field="--gpus")
    if nodes <= 0:
        raise InvalidInputError(f"must be positive, got {nodes}", field="--nodes")
    if gpus % nodes:
        raise InvalidInputError(
            f"{gpus} GPUs do not split evenly over {nodes} nodes", field="--nodes"
        )
    if slots % gpus:
        raise InvalidInputError(
            f"{slots} slots do not divide over {gpus} GPUs (slots % gpus must be 0)",
            field="--slots",
        )
    if slots < experts:
        raise InvalidInputError(f"{slots} slots cannot hold {experts} experts", field="--slots")
    if groups is not None and (groups <= 0 or experts % groups):
        raise InvalidInputError(
            f"{groups} groups do not divide {experts} experts", field="--groups"
        )
    if policy == "node":
        if groups is None:
            raise InvalidInputError("the node policy needs --groups", field="--groups")
        if groups % nodes:
            raise InvalidInputError(
                f"{groups} groups do not split evenly over {nodes} nodes", field="--groups"
            )
        if slots % nodes:
            raise InvalidInputError(
                f"{slots} slots do not split evenly over {nodes} nodes", field="--slots"
            )


def _count_variants(w: np.ndarray, slots: int, gpus: int) -> list[np.ndarray]:
    """Replica counts to try: water-filling (the lightest heaviest replica), and variants
    that spread the hottest experts over every GPU (one replica each) before water-filling
    the rest, which packs better when a few experts dominate."""
    base = pl.water_fill(w, slots, cap=gpus)
    out = [base]
    order = np.argsort(-w, kind="stable")
    for top in range(1, 4):
        hot = order[:top]
        spare = slots - top * gpus - (w.size - top)
        if top >= w.size or spare < 0 or np.all(base[hot] == gpus):
            break
        rest = np.setdiff1d(np.arange(w.size), hot)
        counts = np.full(w.size, gpus, dtype=np.int64)
        counts[rest] = pl.water_fill(w[rest], slots - top * gpus, cap=gpus)
        out.append(counts)
    return out


def _place_global(
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
    if per_gpu == 2 and w.size > 1 and pl.count_compositions(slots, w.size) <= MAX_ENUMERATION:
        counts, assign, _, bound = pl.exact_two_per_gpu(w, gpus, budget, seconds)
        return counts, assign, "exact enumeration", bound
    mean = float(w.sum()) / gpus
    best: tuple[float, np.ndarray, np.ndarray, str] | None = None
    for k, counts in enumerate(_count_variants(w, slots, gpus)):
        packed = pl.pack(w, counts, gpus, per_gpu)
        # Greedy packing can corner itself under the one-copy-per-GPU rule; dealing
        # replicas round-robin never does (counts <= gpus), and the search evens it out.
        assign = pl.local_search(
            w, counts, packed if packed is not None else pl.deal(counts, gpus, per_gpu)
        )
        peak = float(pl.gpu_loads(w, counts, assign).max())
        if best is None or peak < best[0]:
            best = (peak, counts, assign, "greedy + local search")
        # Variants only matter when water-filling leaves a visible gap to the mean.
        if k == 0 and peak <= mean * (1 + 1e-3):
            break
    assert best is not None
    peak, counts, assign, method = best
    if improve and peak > mean * (1 + 1e-3):
        counts, assign = pl.improve_counts(w, counts, assign)
        new_peak = float(pl.gpu_loads(w, counts, assign).max())
        if new_peak < peak:
            peak, method = new_peak, "greedy + local search + count moves"
    if start is not None:
        c2, a2 = start
        a2 = pl.local_search(w, c2, a2)
        if pl.gpu_loads(w, c2, a2).max() < peak:
            counts, assign, method = c2, a2, "EPLB + local search"
    return counts, assign, method, None


def _node_partition(group_load: np.ndarray, nodes: int, node_bound) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Groups -> nodes, equal numbers per node: LPT, then swaps while the worst node improves."""
    per = group_load.size // nodes
    order = np.argsort(-group_load, kind="stable")
    node_of = np.full(group_load.size, -1)
    fill = np.zeros(nodes, dtype=np.int64)
    load = np.zeros(nodes)
    for gi in order:
        n = int(np.argmin(np.where(fill < per, load, np.inf)))
        node_of[gi] = n
        fill[n] += 1
        load[n] += group_load[gi]
    while True:
        scores = np.array([node_bound(np.flatnonzero(node_of == n)) for n in range(nodes)])
        worst = int(np.argmax(scores))
        best: tuple[float, int, int] = (float(scores[worst]), -1, -1)
        for a in np.flatnonzero(node_of == worst):
            for b in np.flatnonzero(node_of != worst):
                other = int(node_of[b])
                node_of[a], node_of[b] = other, worst
                s1 = node_bound(np.flatnonzero(node_of == worst))
                s2 = node_bound(np.flatnonzero(node_of == other))
                node_of[a], node_of[b] = worst, other
                if max(s1, s2) < best[0] - 1e-12:
                    best = (max(s1, s2), int(a), int(b))
        if best[1] < 0:
            return node_of
        i, j = best[1], best[2]
        node_of[i], node_of[j] = node_of[j], node_of[i]


def _as_start(row: np.ndarray, experts: int, gpus: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A physical-to-logical row as (counts, assign), or None if it doubles an expert up."""
    assign = row.reshape(gpus, -1)
    if any(len(set(r)) != assign.shape[1] for r in assign.tolist()):
        return None
    return np.bincount(row, minlength=experts), assign


def _eplb_if_better(
    w: np.ndarray,
    gpus: int,
    counts: np.ndarray,
    assign: np.ndarray,
    method: str,
    eplb_row: np.ndarray | None,
    allow_duplicates: bool,
) -> tuple[np.ndarray, np.ndarray, str]:
    """EPLB's placement instead of ours when its busiest GPU is lighter and it is allowed
    (no two copies of an expert on a GPU, unless duplicates are): never worse than EPLB."""
    if eplb_row is None:
        return counts, assign, method
    eplb_counts = np.bincount(eplb_row, minlength=w.size)
    eplb_assign = eplb_row.reshape(gpus, -1)
    doubled = any(len(set(r)) != eplb_assign.shape[1] for r in eplb_assign.tolist())
    if doubled and not allow_duplicates:
        return counts, assign, method
    if pl.gpu_loads(w, eplb_counts, eplb_assign).max() < pl.gpu_loads(w, counts, assign).max():
        label = "EPLB (duplicates allowed)" if doubled else "EPLB"
        return eplb_counts, eplb_assign, label
    return counts, assign, method


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
    experts = w.size
    mean = w.sum() / gpus if w.sum() > 0 else 1.0
    eplb_row: np.ndarray | None = None
    eplb_imb: float | None = None
    if use_eplb:
        g_eplb = groups if (policy == "node" and groups) else 1
        n_eplb = nodes if policy == "node" else 1
        phy, _, _ = rebalance_experts(w[None, :], slots, g_eplb, n_eplb, gpus)
        eplb_row = np.asarray(phy[0], dtype=np.int64)
        eplb_imb = _imbalance(w, eplb_row, gpus)
    if policy == "global":
        start = None if eplb_row is None else _as_start(eplb_row, experts, gpus)
        spent_before = pl.spent(budget)
        counts, assign, method, exact = _place_global(
            w, slots, gpus, budget, start, seconds=seconds
        )
        # What the two-slot enumeration used comes out of the layer's share.
        seconds = max(0.0, seconds - (pl.spent(budget) - spent_before))
        if allow_duplicates:
            exact = None  # the enumeration's bound assumes one copy per GPU
        counts, assign, method = _eplb_if_better(
            w, gpus, counts, assign, method, eplb_row, allow_duplicates
        )
        cp = (
            solve_layer(w, slots, gpus, counts, assign, budget, seconds, seed, allow_duplicates)
            if seconds > 0
            else None
        )
        cp_bound = None
        cp_proven = False
        if cp is not None:
            cp_bound, cp_proven = cp.bound, cp.proven
            if cp.improved:
                counts, assign, method = cp.counts, cp.assign, method + " + CP-SAT"
    else:
        assert groups is not None
        counts, assign, method, exact, cp_bound, cp_proven = _place_node(
            w, gpus, nodes, slots, groups, budget, seconds, seed
        )
        # EPLB's hierarchical map keeps groups on nodes too: take it where it is better.
        before = counts
        counts, assign, method = _eplb_if_better(
            w, gpus, counts, assign, method, eplb_row, allow_duplicates
        )
        cp_proven = cp_proven and counts is before
    row = assign.reshape(-1)
    imb = float(pl.gpu_loads(w, counts, assign).max() / mean)
    rep = lower_bound(
        w, slots, gpus, policy=policy, G=groups, N=nodes, one_copy_per_gpu=not allow_duplicates
    )
    bound = float(rep.value) / mean
    kind = rep.which
    if exact is not None and exact / mean > bound:
        bound, kind = exact / mean, "exact enumeration"
    if cp_bound is not None and cp_bound / mean > bound:
        bound, kind = cp_bound / mean, "CP-SAT"
    if cp_proven:
        # CP-SAT proved the placement optimal in exact integers; float rounding aside.
        bound = imb
        kind = "CP-SAT"
    bound = min(bound, imb)
    gap = (imb - bound) / imb if imb > 0 else 0.0
    proven = cp_proven or gap <= 1e-12
    unbalanced = _imbalance(w, np.arange(slots) % experts, gpus)
    quality = LayerBalance(
        layer=layer,
        imbalance=imb,
        bound=bound,
        bound_kind=kind,
        gap=0.0 if proven else max(gap, 0.0),
        proven=proven,
        method=method,
        eplb_imbalance=eplb_imb,
        unbalanced_imbalance=unbalanced,
        cross_node_share=_cross_node(w, row, counts, gpus, nodes, groups),
    )
    return row, counts, quality


def _eplb_start(w: np.ndarray, slots: int, gpus: int) -> tuple[np.ndarray, np.ndarray] | None:
    """EPLB's global placement of these experts on these GPUs, if it has no duplicates."""
    phy, _, _ = rebalance_experts(w[None, :], slots, 1, 1, gpus)
    row = np.asarray(phy[0], dtype=np.int64)
    assign = row.reshape(gpus, slots // gpus)
    if any(len(set(r)) != assign.shape[1] for r in assign.tolist()):
        return None
    return np.bincount(row, minlength=w.size), assign


def _place_node(
    w: np.ndarray,
    gpus: int,
    nodes: int,
    slots: int,
    groups: int,
    budget: Budget,
    seconds: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, str, float | None, float | None, bool]:
    """Groups to nodes, then each node balanced on its own GPUs; the busiest node also gets
    count moves and the whole-node CP-SAT model, until another node is the busiest.

    Returns (counts, assign, method, exact bound or None, CP-SAT bound or None, proven).
    CP-SAT's bound on a node bounds the layer only when every node holds one group (then
    no choice of groups per node exists to escape it).
    """
    per_group = w.size // groups
    node_gpus, node_slots = gpus // nodes, slots // nodes
    group_load = w.reshape(groups, per_group).sum(axis=1)

    def ids_of(gs: np.ndarray) -> np.ndarray:
        return np.asarray((gs[:, None] * per_group + np.arange(per_group)[None, :]).ravel())

    def node_score(gs: np.ndarray) -> float:
        # A cheap stand-in for the node's optimum: its mean GPU load, or its heaviest
        # replica under water-filled counts, whichever is larger.
        ids = ids_of(gs)
        if ids.size > node_slots:
            return math.inf
        c = pl.water_fill(w[ids], node_slots, cap=node_gpus)
        return max(float(w[ids].sum()) / node_gpus, float((w[ids] / c).max()))

    node_of = _node_partition(group_load, nodes, node_score)
    counts = np.zeros(w.size, dtype=np.int64)
    assign = np.zeros((gpus, slots // gpus), dtype=np.int64)
    methods = set()
    peaks = np.zeros(nodes)
    members = [ids_of(np.flatnonzero(node_of == n)) for n in range(nodes)]

    def put(n: int, c: np.ndarray, a: np.ndarray) -> None:
        ids = members[n]
        counts[ids] = c
        assign[n * node_gpus : (n + 1) * node_gpus] = ids[a]
        peaks[n] = pl.gpu_loads(w[ids], c, a).max()

    for n in range(nodes):
        ids = members[n]
        c, a, method, _ = _place_global(
            w[ids],
            node_slots,
            node_gpus,
            budget,
            _eplb_start(w[ids], node_slots, node_gpus),
            improve=False,
            seconds=seconds / nodes,
        )
        put(n, c, a)
        methods.add(method)

    def block_of(n: int) -> np.ndarray:
        """Node n's placement in the node's own expert numbering."""
        return np.searchsorted(members[n], assign[n * node_gpus : (n + 1) * node_gpus])

    def node_bound(n: int) -> float:
        return max(
            global_bounds(w[members[n]], node_slots, node_gpus, one_copy_per_gpu=True).values()
        )

    done: set[int] = set()
    cp_bound: float | None = None
    proven_nodes: set[int] = set()
    node_seconds = seconds
    while True:
        hot = int(np.argmax(peaks))
        if hot in done:
            break
        done.add(hot)
        ids = members[hot]
        c, a = pl.improve_counts(w[ids], counts[ids].copy(), block_of(hot))
        if pl.gpu_loads(w[ids], c, a).max() < peaks[hot]:
            put(hot, c, a)
            methods.add("count moves")
        peak = float(pl.gpu_loads(w[ids], counts[ids], block_of(hot)).max())
        if peak <= node_bound(hot) * (1 + POLISH_GAP):
            continue  # CP-SAT rarely closes so small a gap in the time a node gets
        cp = solve_layer(
            w[ids], node_slots, node_gpus, counts[ids], block_of(hot), budget, node_seconds, seed
        )
        # Later nodes share what this one left: the total stays within ``seconds``.
        node_seconds = max(0.0, node_seconds / 2)
        if cp is None:
            continue
        if cp.improved:
            put(hot, cp.counts, cp.assign)
            methods.add("CP-SAT")
        if groups == nodes:
            cp_bound = max(cp_bound or 0.0, cp.bound)
            if cp.proven:
                proven_nodes.add(hot)
    # One group per node: the layer is optimal when its busiest node is.
    proven = groups == nodes and int(np.argmax(peaks)) in proven_nodes
    return counts, assign, " + ".join(sorted(methods)) + " per node", None, cp_bound, proven


def _imbalance(w: np.ndarray, row: np.ndarray, gpus: int) -> float:
    counts = np.bincount(row, minlength=w.size)
    per = row.size // gpus
    loads = (w[row] / counts[row]).reshape(gpus, per).sum(axis=1)
    return float(loads.max() / (w.sum() / gpus)) if w.sum() > 0 else 1.0


def _cross_node(
    w: np.ndarray, row: np.ndarray, counts: np.ndarray, gpus: int, nodes: int, groups: int | None
) -> float:
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


@dataclass(frozen=True)
class _LayerJob:
    """One layer's work, picklable for a worker process."""

    w: np.ndarray
    gpus: int
    nodes: int
    slots: int
    groups: int | None
    policy: Policy
    layer: int
    use_eplb: bool
    allow_duplicates: bool
    seconds: float
    seed: int
    deterministic: bool
    deadline: float  # time.monotonic() of the whole call's hard stop (system-wide clock)


LayerOutcome = tuple[np.ndarray, np.ndarray, LayerBalance, float, bool]


def _run_job(job: _LayerJob, budget: Budget | None = None) -> LayerOutcome:
    """Balance one layer under ``budget`` (in a worker: a budget ending at the deadline)."""
    if budget is None:
        budget = Budget(max(job.deadline - time.monotonic(), 0.01), job.deterministic)
    used = budget.deterministic_used
    row, counts, quality = balance_layer(
        job.w,
        job.gpus,
        job.nodes,
        job.slots,
        job.groups,
        job.policy,
        job.layer,
        job.use_eplb,
        allow_duplicates=job.allow_duplicates,
        budget=budget,
        seconds=job.seconds,
        seed=job.seed,
    )
    budget.expired()  # records a wall-clock stop of a deterministic run
    return row, counts, quality, budget.deterministic_used - used, budget.wall_clock_stop


def balance(
    loads: LoadStats,
    gpus: int,
    nodes: int = 1,
    slots: int | None = None,
    groups: int | None = None,
    policy: Policy = "global",
    workers: int = 2,
    use_eplb: bool = True,
    allow_duplicates: bool = False,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    seed: int = 0,
    deterministic: bool = False,
    budget: Budget | None = None,
    layer_seconds: float | None = None,
) -> BalanceResult:
    """Replicate and place each layer's experts (see module docstring and docs/balance.md).

    Time: ``budget`` (or a new :class:`~placer.budget.Budget` of ``time_limit_s``, in
    deterministic time when ``deterministic``) is shared out over the layers before any
    starts: each layer's CP-SAT gets ``0.8 * limit * min(workers, layers) / layers``
    seconds, a figure that depends on the inputs only, so a deterministic run gives the same
    map on any machine unless the wall clock (the hard stop) ends it first, which the result
    records. ``layer_seconds`` overrides that share (a fixed CP-SAT effort per layer, e.g.
    under a long hard stop). ``seed`` is CP-SAT's random seed.

    Raises
    ------
    InvalidInputError
        For slot counts that do not divide the GPUs, fewer slots than experts, groups
        that do not divide the experts or the nodes, and the like.
    """
    if budget is None:
        budget = Budget(time_limit_s, deterministic)
    w_all = loads.array()
    experts = w_all.shape[1]
    check_sizes(experts, gpus, slots)
    slots = slots if slots is not None else experts + (-experts) % gpus
    check_shape(experts, gpus, nodes, slots, groups, policy)
    if slots > experts * gpus:
        # Without duplicates a GPU holds at most one copy of an expert, so no map fills more
        # slots; the replica counts are water-filled under that same cap with duplicates too.
        raise InvalidInputError(
            f"{slots} slots exceed {experts} experts x {gpus} GPUs: at most one copy of each "
            "expert per GPU is counted, so at most experts x GPUs slots can be filled",
            field="--slots",
        )
    start = time.perf_counter()
    layers = w_all.shape[0]
    in_process = workers <= 1 or layers <= 2
    # Never more processes than MAX_PROCESSES (each costs memory), whatever a caller asks.
    parallel = 1 if in_process else min(workers, layers, MAX_PROCESSES)
    seconds = (
        layer_seconds
        if layer_seconds is not None
        else 0.8 * budget.time_limit_s * parallel / layers
    )
    deadline = time.monotonic() + budget.wall_remaining()
    jobs = [
        _LayerJob(
            w_all[i],
            gpus,
            nodes,
            slots,
            groups,
            policy,
            loads.layers[i],
            use_eplb,
            allow_duplicates,
            seconds,
            seed,
            budget.deterministic,
            deadline,
        )
        for i in range(layers)
    ]
    # Layers are independent. The work is Python and numpy on small arrays (GIL-bound),
    # so layers run in processes; a single worker or layer stays in this process, under
    # the caller's budget (and its clock).
    if in_process:
        results = [_run_job(job, budget) for job in jobs]
    else:
        with ProcessPoolExecutor(max_workers=parallel) as pool:
            results = list(pool.map(_run_job, jobs, chunksize=1))
        budget.charge(sum(r[3] for r in results))
    rows = [r[0] for r in results]
    counts = [r[1] for r in results]
    maxcnt = max(int(c.max()) for c in counts)
    l2p = []
    for row in rows:
        slots_of: list[list[int]] = [[] for _ in range(experts)]
        for p, e in enumerate(row.tolist()):
            slots_of[e].append(p)
        l2p.append(tuple(tuple(s + [-1] * (maxcnt - len(s))) for s in slots_of))
    return BalanceResult(
        physical_to_logical_map=tuple(tuple(int(x) for x in r) for r in rows),
        logical_to_physical_map=tuple(l2p),
        logical_replica_count=tuple(tuple(int(x) for x in c) for c in counts),
        layers=tuple(r[2] for r in results),
        gpus=gpus,
        nodes=nodes,
        slots=slots,
        groups=groups,
        policy=policy,
        allow_duplicates=allow_duplicates,
        wall_time_s=round(time.perf_counter() - start, 3),
        time_limit_s=budget.time_limit_s,
        deterministic=budget.deterministic,
        seed=seed,
        wall_clock_stop=budget.wall_clock_stop or any(r[4] for r in results),
        source=loads.source,
    )
