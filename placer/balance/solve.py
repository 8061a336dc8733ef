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
from typing import Any, Literal

import numpy as np
from pydantic import Field

from placer._base import Frozen
from placer.balance import placement as pl
from placer.balance.bounds import lower_bound
from placer.balance.eplb import rebalance_experts
from placer.balance.loads import LoadStats
from placer.exceptions import InvalidInputError

Policy = Literal["global", "node"]

#: Exact enumeration for two slots per GPU is used up to this many count vectors.
MAX_ENUMERATION = 300_000

#: CP-SAT polishes the busiest node only when its model has at most this many Booleans.
POLISH_MAX_VARS = 4096


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
    wall_time_s: float = Field(description="Wall time of the whole balance.")
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
    start: tuple[np.ndarray, np.ndarray] | None = None,
    improve: bool = True,
) -> tuple[np.ndarray, np.ndarray, str, float | None]:
    """(counts, assign[g, k], method, exact lower bound or None) for one set of GPUs."""
    per_gpu = slots // gpus
    if per_gpu == 2 and w.size > 1 and pl.count_compositions(slots, w.size) <= MAX_ENUMERATION:
        counts, assign, _, bound = pl.exact_two_per_gpu(w, gpus)
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


def balance_layer(
    w: np.ndarray,
    gpus: int,
    nodes: int,
    slots: int,
    groups: int | None,
    policy: Policy,
    layer: int = 0,
    use_eplb: bool = True,
    polish_s: float = 0.05,
    allow_duplicates: bool = False,
) -> tuple[np.ndarray, np.ndarray, LayerBalance]:
    """Balance one layer: (physical-to-logical row, replica counts, quality)."""
    w = np.asarray(w, dtype=np.float64)
    experts = w.size
    per_gpu = slots // gpus
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
        start = None
        if eplb_row is not None:
            a = eplb_row.reshape(gpus, per_gpu)
            if all(len(set(r)) == per_gpu for r in a.tolist()):
                start = (np.bincount(eplb_row, minlength=experts), a)
        counts, assign, method, exact = _place_global(w, slots, gpus, start)
    else:
        assert groups is not None
        counts, assign, method, exact = _place_node(w, gpus, nodes, slots, groups, polish_s)
    row = assign.reshape(-1)
    imb = float(pl.gpu_loads(w, counts, assign).max() / mean)
    if allow_duplicates and eplb_row is not None and eplb_imb is not None and eplb_imb < imb:
        # Asked to allow two copies of an expert on one GPU (as EPLB does): take EPLB's.
        row, imb, method = eplb_row, eplb_imb, "EPLB (duplicates allowed)"
        counts = np.bincount(row, minlength=experts)
    rep = lower_bound(w, slots, gpus, policy=policy, G=groups, N=nodes, pigeon_in_nodes=False)
    bound = float(rep.value) / mean
    kind = rep.which
    if exact is not None and exact / mean > bound:
        bound, kind = exact / mean, "exact enumeration"
    bound = min(bound, imb)
    gap = (imb - bound) / imb if imb > 0 else 0.0
    proven = gap <= 1e-12
    unbalanced = _imbalance(w, np.arange(slots) % experts, gpus)
    quality = LayerBalance(
        layer=layer,
        imbalance=imb,
        bound=bound,
        bound_kind=kind,
        gap=max(gap, 0.0),
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
    w: np.ndarray, gpus: int, nodes: int, slots: int, groups: int, polish_s: float
) -> tuple[np.ndarray, np.ndarray, str, float | None]:
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
            _eplb_start(w[ids], node_slots, node_gpus),
            improve=False,
        )
        put(n, c, a)
        methods.add(method)
    # The busiest node sets the layer's imbalance: only it gets the costlier steps (count
    # moves, then CP-SAT when its model is small), until another node is the busiest.
    done: set[int] = set()
    while True:
        hot = int(np.argmax(peaks))
        if hot in done:
            break
        done.add(hot)
        ids = members[hot]
        block = np.searchsorted(ids, assign[hot * node_gpus : (hot + 1) * node_gpus])
        c, a = pl.improve_counts(w[ids], counts[ids].copy(), block)
        if polish_s > 0 and ids.size * node_gpus <= POLISH_MAX_VARS:
            from placer.balance.cpsat import polish

            better = polish(w[ids], c, a, polish_s)
            if better is not None:
                a = better
                methods.add("CP-SAT")
        if pl.gpu_loads(w[ids], c, a).max() < peaks[hot]:
            put(hot, c, a)
            methods.add("count moves")
    return counts, assign, " + ".join(sorted(methods)) + " per node", None


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


def _balance_args(args: tuple[Any, ...]) -> tuple[np.ndarray, np.ndarray, LayerBalance]:
    return balance_layer(*args)


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
) -> BalanceResult:
    """Replicate and place each layer's experts (see module docstring).

    Raises
    ------
    InvalidInputError
        For slot counts that do not divide the GPUs, fewer slots than experts, groups
        that do not divide the experts or the nodes, and the like.
    """
    w_all = loads.array()
    experts = w_all.shape[1]
    slots = slots if slots is not None else experts + (-experts) % gpus
    check_shape(experts, gpus, nodes, slots, groups, policy)
    start = time.perf_counter()

    args = [
        (w_all[i], gpus, nodes, slots, groups, policy, loads.layers[i], use_eplb)
        for i in range(w_all.shape[0])
    ]
    # Layers are independent. The work is Python and numpy on small arrays (GIL-bound),
    # so layers run in processes; a single worker or layer stays in this process.
    if workers <= 1 or len(args) <= 2:
        results = [balance_layer(*a) for a in args]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(
                pool.map(_balance_args, args, chunksize=max(1, len(args) // (4 * workers)))
            )
    rows = [r for r, _, _ in results]
    counts = [c for _, c, _ in results]
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
        layers=tuple(q for _, _, q in results),
        gpus=gpus,
        nodes=nodes,
        slots=slots,
        groups=groups,
        policy=policy,
        wall_time_s=round(time.perf_counter() - start, 3),
        source=loads.source,
    )
