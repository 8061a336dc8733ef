"""DeepSeek's EPLB (expert-parallel load balancer), re-implemented in numpy as a baseline.

Written from the published description of the algorithm (github.com/deepseek-ai/EPLB, its
README and the design notes), not from its code. The slot model: per layer, ``E`` logical
experts with loads ``w``; ``R`` physical slots over ``P`` GPUs, ``R/P`` contiguous slots per
GPU (slot ``p`` lives on GPU ``p // (R/P)``, the EPLB/vLLM/SGLang convention); expert ``e`` gets
``c_e >= 1`` replicas, each carrying ``w_e / c_e``.

The three steps:

* :func:`replicate_experts` -- greedy water-filling: start with one replica per expert and
  give each extra slot to the expert whose replicas are currently heaviest (max ``w/c``).
* :func:`balanced_packing` -- cardinality-constrained LPT: items in descending order, each
  to the lightest pack that still has room; every pack ends with exactly ``n / packs`` items.
* :func:`rebalance_experts` -- the *hierarchical* policy when ``G % N == 0``: pack the ``G``
  expert groups onto the ``N`` nodes (``G/N`` groups each), replicate inside each node
  (``R/N`` slots for its ``E/N`` experts), pack each node's replicas onto its ``P/N`` GPUs
  (``R/P`` each), then map the node-local ids back to global ids. Otherwise the *global*
  policy, which is the hierarchical one with ``G = N = 1``.

Tie-breaking (decides among equal loads; EPLB's own order comes from ``torch.sort``):

* "the lightest pack with room" takes the **lowest pack index** among equally light packs.
  This one is pinned by EPLB's README example: choosing the highest index instead changes
  its ``phy2log``;
* sorting for packing is a **stable descending** sort: equal loads keep ascending item order
  (``numpy.argsort(-w, kind="stable")``). In the README example the tied items are replicas
  of the same expert, so this order changes only which replica rank sits in which slot
  (``log2phy``), not ``phy2log``;
* "the expert with max ``w/c``" takes the lowest expert id among equals;
* when every pack takes exactly one item, item ``i`` goes to pack ``i`` (no sorting at all),
  as EPLB does for that case.

Errors are :class:`ValueError` with a message saying which condition failed (EPLB asserts).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


def _as_weights(weight: ArrayLike, name: str = "weight") -> FloatArray:
    w = np.asarray(weight, dtype=np.float64)
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{name} must be finite")
    if np.any(w < 0):
        raise ValueError(f"{name} must be non-negative")
    return w


def _descending(values: FloatArray) -> IntArray:
    """Indices sorting ``values`` from largest to smallest; ties keep ascending index."""
    return np.argsort(-values, kind="stable").astype(np.int64)


def _pack_row(weights: FloatArray, num_packs: int) -> tuple[IntArray, IntArray]:
    n = weights.shape[0]
    per_pack = n // num_packs
    if per_pack == 1:
        return np.arange(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    pack_index = np.empty(n, dtype=np.int64)
    rank_in_pack = np.empty(n, dtype=np.int64)
    load = [0.0] * num_packs
    size = [0] * num_packs
    for item in _descending(weights).tolist():
        best = -1
        for pack in range(num_packs):
            if size[pack] < per_pack and (best < 0 or load[pack] < load[best]):
                best = pack
        pack_index[item] = best
        rank_in_pack[item] = size[best]
        load[best] += float(weights[item])
        size[best] += 1
    return pack_index, rank_in_pack


def balanced_packing(weights: ArrayLike, num_packs: int) -> tuple[IntArray, IntArray]:
    """Split ``n`` weighted items into ``num_packs`` packs of exactly ``n / num_packs`` items.

    Cardinality-constrained LPT: items in descending weight order (stable), each to the
    lightest pack that still has room (lowest pack index among equally light ones).

    Parameters
    ----------
    weights
        ``[n]`` or ``[rows, n]`` non-negative weights; rows are packed independently.
    num_packs
        Number of packs; must divide ``n``.

    Returns
    -------
    pack_index, rank_in_pack
        Same shape as ``weights``: the pack of each item and its position inside the pack
        (0 for the first item put there).
    """
    w = _as_weights(weights, "weights")
    if w.ndim not in (1, 2):
        raise ValueError(f"weights must be 1-D or 2-D, got {w.ndim}-D")
    if num_packs <= 0:
        raise ValueError(f"num_packs must be positive, got {num_packs}")
    n = w.shape[-1]
    if n % num_packs:
        raise ValueError(f"{n} items cannot be split evenly into {num_packs} packs")
    if w.ndim == 1:
        return _pack_row(w, num_packs)
    packs = [_pack_row(row, num_packs) for row in w]
    return (
        np.array([p for p, _ in packs], dtype=np.int64).reshape(w.shape),
        np.array([r for _, r in packs], dtype=np.int64).reshape(w.shape),
    )


def _replicate_row(w: FloatArray, num_slots: int) -> tuple[IntArray, IntArray, IntArray]:
    n = w.shape[0]
    phy2log = np.empty(num_slots, dtype=np.int64)
    rank = np.zeros(num_slots, dtype=np.int64)
    counts = np.ones(n, dtype=np.int64)
    phy2log[:n] = np.arange(n)
    per_replica = w.copy()
    for slot in range(n, num_slots):
        expert = int(np.argmax(per_replica))  # first index among the heaviest
        phy2log[slot] = expert
        rank[slot] = counts[expert]
        counts[expert] += 1
        per_replica[expert] = w[expert] / counts[expert]
    return phy2log, rank, counts


def replicate_experts(w: ArrayLike, num_slots: int) -> tuple[IntArray, IntArray, IntArray]:
    """Give ``num_slots`` slots to ``n`` experts by greedy water-filling.

    Slot ``i < n`` holds expert ``i``; every further slot goes to the expert with the largest
    current per-replica load ``w / count`` (lowest expert id among equals). This minimises the
    heaviest replica ``max_e w_e / c_e`` over all count vectors.

    Parameters
    ----------
    w
        ``[n]`` or ``[rows, n]`` non-negative loads; rows are independent.
    num_slots
        Physical slots per row, at least ``n``.

    Returns
    -------
    phy2log, rank, counts
        ``phy2log[..., i]``: the expert in slot ``i``; ``rank[..., i]``: which replica of that
        expert it is (0 = first); ``counts[..., e]``: replicas of expert ``e``.
    """
    arr = _as_weights(w, "w")
    if arr.ndim not in (1, 2):
        raise ValueError(f"w must be 1-D or 2-D, got {arr.ndim}-D")
    n = arr.shape[-1]
    if n == 0:
        raise ValueError("w must hold at least one expert")
    if num_slots < n:
        raise ValueError(f"num_slots ({num_slots}) must be at least the number of experts ({n})")
    if arr.ndim == 1:
        return _replicate_row(arr, num_slots)
    rows = [_replicate_row(row, num_slots) for row in arr]
    return (
        np.stack([r[0] for r in rows]),
        np.stack([r[1] for r in rows]),
        np.stack([r[2] for r in rows]),
    )


def _rebalance_row(
    w: FloatArray, num_replicas: int, num_groups: int, num_nodes: int, num_gpus: int
) -> tuple[IntArray, IntArray]:
    """One layer, hierarchical policy: (slot -> expert, slot -> replica rank)."""
    num_experts = w.shape[0]
    group_size = num_experts // num_groups
    slots_per_node = num_replicas // num_nodes
    gpus_per_node = num_gpus // num_nodes
    slots_per_gpu = num_replicas // num_gpus

    group_load = w.reshape(num_groups, group_size).sum(axis=1)
    group_node, group_rank = _pack_row(group_load, num_nodes)

    phy2log = np.empty(num_replicas, dtype=np.int64)
    phy_rank = np.empty(num_replicas, dtype=np.int64)
    for node in range(num_nodes):
        groups = np.flatnonzero(group_node == node)
        groups = groups[np.argsort(group_rank[groups], kind="stable")]
        # The node's experts, in node-local id order: its groups by rank in the node.
        experts = (groups[:, None] * group_size + np.arange(group_size)[None, :]).ravel()
        local_w = w[experts]
        slot_expert, slot_rank, counts = _replicate_row(local_w, slots_per_node)
        replica_load = local_w[slot_expert] / counts[slot_expert]
        gpu, pos = _pack_row(replica_load, gpus_per_node)
        target = node * slots_per_node + gpu * slots_per_gpu + pos
        phy2log[target] = experts[slot_expert]
        phy_rank[target] = slot_rank
    return phy2log, phy_rank


def check_eplb_args(
    num_experts: int, num_replicas: int, num_groups: int, num_nodes: int, num_gpus: int
) -> bool:
    """Check EPLB's preconditions; return True for the hierarchical policy, False for global.

    Raises
    ------
    ValueError
        When a condition EPLB asserts does not hold, naming it.
    """
    for name, value in (
        ("num_replicas", num_replicas),
        ("num_groups", num_groups),
        ("num_nodes", num_nodes),
        ("num_gpus", num_gpus),
    ):
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
    if num_experts <= 0:
        raise ValueError("weight must hold at least one expert per layer")
    if num_replicas % num_gpus:
        raise ValueError(
            f"num_replicas ({num_replicas}) must be a multiple of num_gpus ({num_gpus})"
        )
    if num_replicas < num_experts:
        raise ValueError(
            f"num_replicas ({num_replicas}) must be at least the number of experts "
            f"({num_experts}): every expert needs a slot"
        )
    if num_groups % num_nodes:
        return False
    if num_experts % num_groups:
        raise ValueError(
            f"the number of experts ({num_experts}) must be a multiple of num_groups "
            f"({num_groups})"
        )
    if num_gpus % num_nodes:
        raise ValueError(f"num_gpus ({num_gpus}) must be a multiple of num_nodes ({num_nodes})")
    return True


def rebalance_experts(
    weight: ArrayLike, num_replicas: int, num_groups: int, num_nodes: int, num_gpus: int
) -> tuple[IntArray, IntArray, IntArray]:
    """EPLB: replicate and place experts for every layer.

    Parameters
    ----------
    weight
        ``[layers, E]`` non-negative expert loads.
    num_replicas
        Physical slots ``R`` per layer (a multiple of ``num_gpus``, at least ``E``).
    num_groups
        Expert groups ``G`` (consecutive ids, ``E/G`` each).
    num_nodes
        Nodes ``N``; the hierarchical policy is used when ``G % N == 0``, else the global one.
    num_gpus
        GPUs ``P``; slot ``p`` is on GPU ``p // (R/P)``.

    Returns
    -------
    phy2log, log2phy, logcnt
        ``phy2log [layers, R]`` expert per slot; ``log2phy [layers, E, R - E + 1]`` the slots
        of each expert by replica rank, padded with -1; ``logcnt [layers, E]`` replicas per
        expert.
    """
    w = _as_weights(weight)
    if w.ndim != 2:
        raise ValueError(f"weight must be 2-D [layers, experts], got {w.ndim}-D")
    num_layers, num_experts = w.shape
    if check_eplb_args(num_experts, num_replicas, num_groups, num_nodes, num_gpus):
        groups, nodes = num_groups, num_nodes
    else:
        groups, nodes = 1, 1
    max_count = num_replicas - num_experts + 1
    phy2log = np.empty((num_layers, num_replicas), dtype=np.int64)
    log2phy = np.full((num_layers, num_experts, max_count), -1, dtype=np.int64)
    logcnt = np.zeros((num_layers, num_experts), dtype=np.int64)
    for layer in range(num_layers):
        row, rank = _rebalance_row(w[layer], num_replicas, groups, nodes, num_gpus)
        phy2log[layer] = row
        log2phy[layer, row, rank] = np.arange(num_replicas)
        logcnt[layer] = np.bincount(row, minlength=num_experts)
    return phy2log, log2phy, logcnt


def gpu_loads(weight_row: ArrayLike, phy2log_row: ArrayLike, num_gpus: int) -> FloatArray:
    """Load of each GPU when expert ``e``'s load is split evenly over its replicas.

    Parameters
    ----------
    weight_row
        ``[E]`` loads of one layer.
    phy2log_row
        ``[R]`` expert per slot; slot ``p`` is on GPU ``p // (R / num_gpus)``.
    num_gpus
        ``P``, dividing ``R``.
    """
    w = _as_weights(weight_row, "weight_row")
    slots = np.asarray(phy2log_row, dtype=np.int64)
    if w.ndim != 1 or slots.ndim != 1:
        raise ValueError("weight_row and phy2log_row must be 1-D")
    if num_gpus <= 0 or slots.shape[0] % num_gpus:
        raise ValueError(f"{slots.shape[0]} slots cannot be split evenly over {num_gpus} GPUs")
    if slots.size and (slots.min() < 0 or slots.max() >= w.shape[0]):
        raise ValueError(f"phy2log_row names an expert outside 0..{w.shape[0] - 1}")
    counts = np.bincount(slots, minlength=w.shape[0])
    missing = np.flatnonzero(counts == 0)
    if missing.size:
        raise ValueError(f"expert {int(missing[0])} has no replica, its load would be lost")
    per_slot = w[slots] / counts[slots]
    return np.asarray(per_slot.reshape(num_gpus, -1).sum(axis=1), dtype=np.float64)


def imbalance(weight_row: ArrayLike, phy2log_row: ArrayLike, num_gpus: int) -> float:
    """Max GPU load / mean GPU load (1.0 for an all-zero layer); see :func:`gpu_loads`."""
    loads = gpu_loads(weight_row, phy2log_row, num_gpus)
    mean = float(loads.sum()) / num_gpus
    if mean <= 0:
        return 1.0
    return float(loads.max()) / mean
