"""Communication locality: the all-to-all's cross-node traffic from where experts sit.

With group-limited routing (DeepSeek's ``n_group`` / ``topk_group``) a token picks
``topk_group`` of ``n_group`` expert groups, then its experts inside them. Its
dispatch crosses to a node only when one of its chosen groups has a slot there,
so a placement that keeps groups inside nodes keeps traffic on NVLink
(docs/cost-model.md, "Communication locality"). For one MoE layer and one stage:

- ``m_k``: the groups with at least one slot on node ``k`` (read from the expert map);
- a token reaches node ``k`` with probability ``group_reach(m_k)`` (a chosen group
  with a slot there is counted as reaching it), so it reaches
  ``sum_k group_reach(m_k)`` nodes on average, at most the uniform ``cap_nodes``;
- dispatch and combine take ``max(intra, inter_latency + per_node x reached)``,
  less the attention it hides behind under two-batch overlap, never below zero.

The CP-SAT model (placer/search/placement_model.py) carries the same integer terms, so its
objective and the verifier's recomputation are the same number of nanoseconds.
Numpy and plain Python only: ``verify`` imports this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from placer.cluster import ClusterSpec
from placer.collectives import DispatchParts, group_reach
from placer.layout import Layout
from placer.model import ModelSpec

#: Columns of a dispatch row (seconds): intra, inter_latency, per_node, cap_nodes, overlap.
DISPATCH_FIELDS = 5

ExpertRanks = tuple[tuple[int, ...], ...]


def dispatch_row(parts: DispatchParts, overlap: float) -> np.ndarray:
    """One (layer, stage) row of :attr:`placer.cost.CostTables.dispatch`."""
    return np.array([parts.intra, parts.inter_latency, parts.per_node, parts.cap_nodes, overlap])


def node_bounds(cluster: ClusterSpec, layout: Layout, stage: int) -> tuple[int, ...]:
    """EP rank boundaries of the nodes under stage ``stage`` (``(0, ..., ep)``): rank ``r``
    sits on GPU ``stage x width + r x expert_tp``; a scale-up domain wider than a node
    (NVL72) counts as one node, as for every collective (placer/cost.py)."""
    span = max(cluster.gpus_per_node, cluster.scale_up_domain)
    first = stage * layout.stage_width
    unit = [(first + r * layout.expert_tp) // span for r in range(layout.ep)]
    cuts = [r for r in range(1, layout.ep) if unit[r] != unit[r - 1]]
    return (0, *cuts, layout.ep)


def applies(model: ModelSpec, parts: DispatchParts, bounds: tuple[int, ...]) -> bool:
    """Whether the layer's all-to-all depends on the placement: group-limited routing
    that limits something (1 < topk_group < n_group), across nodes laid out evenly
    enough that the node count of the collective and of the ranks agree."""
    moe = model.moe
    if moe is None or not moe.n_group or not moe.topk_group:
        return False
    limited = moe.n_group > 1 and moe.topk_group < moe.n_group
    return limited and parts.nodes > 1 and len(bounds) - 1 == parts.nodes


def groups_on_nodes(bounds: tuple[int, ...], ranks: ExpertRanks, group_size: int) -> np.ndarray:
    """``m_k`` of every node: how many groups have a slot on it."""
    out = np.zeros(len(bounds) - 1, dtype=np.int64)
    for k in range(len(bounds) - 1):
        held = {e // group_size for r in range(bounds[k], bounds[k + 1]) for e in ranks[r]}
        out[k] = len(held)
    return out


def placed_seconds(row: np.ndarray, n_group: int, topk_group: int, m: np.ndarray) -> float:
    """Seconds of the all-to-all for ``m`` groups per node (a dispatch row's float form)."""
    intra, inter_latency, per_node, cap_nodes, overlap = (float(x) for x in row)
    reached = sum(group_reach(int(x), n_group, topk_group) for x in m)
    t_inter = per_node * min(reached, cap_nodes) + inter_latency
    return max(0.0, max(intra, t_inter) - overlap)


@dataclass(frozen=True)
class Locality:
    """The placement-dependent all-to-all of one layout as integer nanoseconds.

    ``a2a(l, s) = max(0, intra[l, s], inter[l, s] + min(sum_k node[l, s, m_k], cap[l, s]))``
    """

    placed: np.ndarray  # (L, pp) bool: the layer's all-to-all on that stage depends on it
    group_size: np.ndarray  # (L,) experts per group
    n_group: int
    topk_group: int
    bounds: tuple[tuple[int, ...], ...]  # per stage: EP rank boundaries of its nodes
    intra: np.ndarray  # (L, pp) ns, intra-node part less overlap (may be negative)
    inter: np.ndarray  # (L, pp) ns, cross-node latency less overlap (may be negative)
    node: np.ndarray  # (L, pp, n_group + 1) ns per node holding m groups
    cap: np.ndarray  # (L, pp) ns, the uniform spread's cross-node time

    def a2a_ns(self, layer: int, stage: int, m: np.ndarray) -> int:
        """The layer's all-to-all on ``stage`` for ``m`` groups per node."""
        spread = min(int(self.node[layer, stage, m].sum()), int(self.cap[layer, stage]))
        inter = int(self.inter[layer, stage]) + spread
        return max(0, int(self.intra[layer, stage]), inter)

    def table(self, expert_map: Mapping[int, ExpertRanks]) -> np.ndarray:
        """(L, pp) ns of every placed (layer, stage) for ``expert_map`` (0 elsewhere: those
        layers' all-to-all is in the layer table)."""
        out = np.zeros(self.intra.shape, dtype=np.int64)
        for i, s in np.argwhere(self.placed):
            ranks = expert_map.get(int(i))
            if ranks is not None:
                m = groups_on_nodes(self.bounds[s], ranks, int(self.group_size[i]))
                out[i, s] = self.a2a_ns(int(i), int(s), m)
        return out

    def lower_bound(self, slots: np.ndarray, ep: int) -> np.ndarray:
        """(L, pp) ns no placement beats. ``group_reach`` is concave with ``f(0) = 0``, and
        when every rank holds a slot every node holds a group while the groups sum to at
        least ``n_group``, so ``sum_k f(m_k) >= (K - 1) f(1) + f(max(1, n_group - K + 1))``
        (a vertex of that set); otherwise ``sum_k f(m_k) >= f(n_group) = 1``
        (subadditivity). ``node[..., n_group] - 1`` is below the per-node nanoseconds
        before rounding up, so the bound stays below every rounded table sum."""
        out = np.zeros(self.intra.shape, dtype=np.int64)
        g, kg = self.n_group, self.topk_group
        for i, s in np.argwhere(self.placed):
            k = len(self.bounds[s]) - 1
            reach = 1.0
            if int(slots[i]) // ep >= 1:
                reach = (k - 1) * group_reach(1, g, kg) + group_reach(max(1, g - k + 1), g, kg)
            per_node = max(0, int(self.node[i, s, g]) - 1)
            spread = min(int(np.floor(per_node * reach)), int(self.cap[i, s]))
            out[i, s] = max(0, int(self.intra[i, s]), int(self.inter[i, s]) + spread)
        return out


def build_locality(
    model: ModelSpec,
    cluster: ClusterSpec,
    layout: Layout,
    dispatch: np.ndarray | None,
    to_ns: Callable[[np.ndarray], np.ndarray],
) -> Locality | None:
    """The :class:`Locality` of a layout from its cost tables' dispatch rows (seconds, NaN
    where the layer's all-to-all does not depend on the placement), or None."""
    if dispatch is None or model.moe is None or np.isnan(dispatch).all():
        return None
    n_group, topk_group = int(model.moe.n_group or 1), int(model.moe.topk_group or 1)
    placed = ~np.isnan(dispatch[:, :, 0])
    rows = np.nan_to_num(dispatch)
    n_layers, pp = rows.shape[:2]
    reach = np.array([group_reach(m, n_group, topk_group) for m in range(n_group + 1)])
    # The top entry (m = n_group, reach 1) is exactly ceil(per_node): lower_bound reads it.
    node = to_ns(rows[:, :, 2, None] * reach[None, None, :])
    sizes = np.array(
        [max(1, model.experts_in_layer(i) // n_group) for i in range(n_layers)], dtype=np.int64
    )
    return Locality(
        placed=placed,
        group_size=sizes,
        n_group=n_group,
        topk_group=topk_group,
        bounds=tuple(node_bounds(cluster, layout, s) for s in range(pp)),
        intra=_signed_ns(rows[:, :, 0] - rows[:, :, 4], to_ns),
        inter=_signed_ns(rows[:, :, 1] - rows[:, :, 4], to_ns),
        node=node,
        cap=to_ns(rows[:, :, 2] * rows[:, :, 3]),
    )


def _signed_ns(seconds: np.ndarray, to_ns: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Nanoseconds (``to_ns`` rounds up); a negative part (hidden behind overlap) stays
    negative, rounded down, and ``Locality.a2a_ns`` takes it with ``max(0, ...)``."""
    return np.where(seconds < 0, -to_ns(-seconds), to_ns(np.maximum(seconds, 0)))
