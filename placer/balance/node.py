"""The node policy: every expert group keeps all its replicas on one node (see docs/balance.md).

Groups are packed onto nodes (equal numbers per node) and improved by swapping groups; each
node is then an instance of the global problem on its own GPUs. The busiest node gets count
moves and the whole-node CP-SAT model, until another node is the busiest.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from placer.balance import placement as pl
from placer.balance.bounds import global_bounds
from placer.balance.eplb import rebalance_experts
from placer.balance.layer_model import solve_layer
from placer.budget import Budget

#: The busiest node gets CP-SAT only when its gap to its own bound is above this.
POLISH_GAP = 1e-3


def node_partition(
    group_load: np.ndarray, nodes: int, node_bound: Callable[[np.ndarray], float]
) -> np.ndarray:
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


def eplb_start(w: np.ndarray, slots: int, gpus: int) -> tuple[np.ndarray, np.ndarray] | None:
    """EPLB's global placement of these experts on these GPUs, if it has no duplicates."""
    phy, _, _ = rebalance_experts(w[None, :], slots, 1, 1, gpus)
    row = np.asarray(phy[0], dtype=np.int64)
    assign = row.reshape(gpus, slots // gpus)
    if any(len(set(r)) != assign.shape[1] for r in assign.tolist()):
        return None
    return np.bincount(row, minlength=w.size), assign


@dataclass
class NodePlacement:
    """A layer placed node by node: ``members[n]`` are node n's experts (sorted), and node n's
    GPUs are rows ``n * node_gpus ..`` of ``assign`` (global expert ids)."""

    w: np.ndarray
    members: list[np.ndarray]
    node_gpus: int
    node_slots: int
    counts: np.ndarray
    assign: np.ndarray
    peaks: np.ndarray
    methods: set[str] = field(default_factory=set)

    def put(self, n: int, counts: np.ndarray, assign: np.ndarray) -> None:
        """Set node n's placement, given in the node's own expert numbering."""
        ids = self.members[n]
        self.counts[ids] = counts
        self.assign[n * self.node_gpus : (n + 1) * self.node_gpus] = ids[assign]
        self.peaks[n] = pl.gpu_loads(self.w[ids], counts, assign).max()

    def block(self, n: int) -> np.ndarray:
        """Node n's placement in the node's own expert numbering."""
        rows = self.assign[n * self.node_gpus : (n + 1) * self.node_gpus]
        return np.searchsorted(self.members[n], rows)

    def bound(self, n: int) -> float:
        """The largest of the global bounds on node n alone (one copy per GPU)."""
        bounds = global_bounds(
            self.w[self.members[n]], self.node_slots, self.node_gpus, one_copy_per_gpu=True
        )
        return max(bounds.values())


def _split_groups(
    w: np.ndarray, gpus: int, nodes: int, slots: int, groups: int
) -> list[np.ndarray]:
    """The experts of each node after the group-to-node partition."""
    per_group = w.size // groups
    node_gpus, node_slots = gpus // nodes, slots // nodes

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

    node_of = node_partition(w.reshape(groups, per_group).sum(axis=1), nodes, node_score)
    return [ids_of(np.flatnonzero(node_of == n)) for n in range(nodes)]


def _polish_busiest(
    state: NodePlacement, budget: Budget, seconds: float, seed: int, one_group_per_node: bool
) -> tuple[float | None, set[int]]:
    """Count moves and CP-SAT on the busiest node until a polished node is the busiest again.
    Returns (CP-SAT's best node bound when every node holds one group, proven nodes)."""
    done: set[int] = set()
    cp_bound: float | None = None
    proven_nodes: set[int] = set()
    node_seconds = seconds
    w = state.w
    while True:
        hot = int(np.argmax(state.peaks))
        if hot in done:
            return cp_bound, proven_nodes
        done.add(hot)
        ids = state.members[hot]
        c, a = pl.improve_counts(w[ids], state.counts[ids].copy(), state.block(hot))
        if pl.gpu_loads(w[ids], c, a).max() < state.peaks[hot]:
            state.put(hot, c, a)
            state.methods.add("count moves")
        if state.peaks[hot] <= state.bound(hot) * (1 + POLISH_GAP):
            continue  # CP-SAT rarely closes so small a gap in the time a node gets
        if state.node_gpus <= 8:
            c, a = pl.hot_count_search(w[ids], state.node_slots, state.node_gpus)
            if pl.gpu_loads(w[ids], c, a).max() < state.peaks[hot]:
                state.put(hot, c, a)
                state.methods.add("hot counts")
        cp = solve_layer(
            w[ids],
            state.node_slots,
            state.node_gpus,
            state.counts[ids],
            state.block(hot),
            budget,
            node_seconds,
            seed,
        )
        # Later nodes share what this one left: the total stays within ``seconds``.
        node_seconds = max(0.0, node_seconds / 2)
        if cp is None:
            continue
        if cp.improved:
            state.put(hot, cp.counts, cp.assign)
            state.methods.add("CP-SAT")
        if one_group_per_node:
            cp_bound = max(cp_bound or 0.0, cp.bound)
            if cp.proven:
                proven_nodes.add(hot)


def place_node(
    w: np.ndarray,
    gpus: int,
    nodes: int,
    slots: int,
    groups: int,
    budget: Budget,
    seconds: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, str, float | None, bool]:
    """Groups to nodes, then each node balanced on its own GPUs, then the busiest polished.

    Returns (counts, assign, method, CP-SAT bound or None, proven). CP-SAT's bound on a node
    bounds the layer only when every node holds one group (then no choice of groups per node
    exists to escape it).
    """
    node_gpus, node_slots = gpus // nodes, slots // nodes
    state = NodePlacement(
        w,
        _split_groups(w, gpus, nodes, slots, groups),
        node_gpus,
        node_slots,
        np.zeros(w.size, dtype=np.int64),
        np.zeros((gpus, slots // gpus), dtype=np.int64),
        np.zeros(nodes),
    )
    for n in range(nodes):
        ids = state.members[n]
        c, a, method, _ = pl.place_layer(
            w[ids],
            node_slots,
            node_gpus,
            budget,
            eplb_start(w[ids], node_slots, node_gpus),
            improve=False,
            seconds=seconds / nodes,
        )
        state.put(n, c, a)
        state.methods.add(method)
    cp_bound, proven_nodes = _polish_busiest(state, budget, seconds, seed, groups == nodes)
    # One group per node: the layer is optimal when its busiest node is.
    proven = groups == nodes and int(np.argmax(state.peaks)) in proven_nodes
    method = " + ".join(sorted(state.methods)) + " per node"
    return state.counts, state.assign, method, cp_bound, proven
