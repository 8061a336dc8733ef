"""Integer tables of one layout, shared by the CP-SAT model, the heuristic and the verifier.

Bytes are exact (the ledger's own functions). Times are the cost model's, in
integer nanoseconds (:data:`TIME_SCALE`), rounded up per table entry, so the
solver's objective and the verifier's recomputation are the same integer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from placer.cluster import ClusterSpec
from placer.cost import CostTables, cost_tables, steps
from placer.evaluate import Constraint
from placer.exceptions import InvalidInputError, LayoutError
from placer.layout import Layout
from placer.ledger import (
    activation_bytes,
    capacity_bytes,
    ceil_div,
    edge_bytes,
    expert_bytes,
    layer_bytes,
)
from placer.limits import MAX_ENTRY_NS
from placer.locality import ExpertRanks, Locality, build_locality
from placer.model import ModelSpec
from placer.topology import contiguous_slots, ep_rank
from placer.workload import Workload

#: Objective scale: one unit is one nanosecond. CP-SAT needs integers; a
#: nanosecond is far below the cost model's accuracy and keeps step times of up
#: to hours well inside CP-SAT's 2^62 domain limit.
TIME_SCALE = 1e9


@dataclass(frozen=True)
class LayoutTables:
    """Everything the placement model of one layout needs, as integers."""

    layout: Layout
    base: np.ndarray  # (L,) bytes per GPU of a layer's non-expert weights + KV cache
    unit: np.ndarray  # (L,) bytes of one expert slot (0 for dense layers)
    slots: np.ndarray  # (L,) expert slots per layer (experts + redundant; 0 if dense)
    experts: np.ndarray  # (L,) logical experts per layer
    first: int  # bytes on the first stage only (embedding)
    last: int  # bytes on the last stage only (LM head, final norm)
    act: np.ndarray  # (pp,) activation workspace per stage
    reserve: int
    cap: np.ndarray  # (pp, ep) smallest usable capacity among a stage's GPUs of an EP rank
    time_layer: np.ndarray  # (L, pp) ns
    time_slot: np.ndarray  # (L, pp) ns per expert slot on the busiest rank
    time_last: np.ndarray  # (pp,) ns, LM head if the stage is last
    handoff: np.ndarray  # (pp,) ns, send to the next stage
    #: The all-to-all that depends on where experts sit (placer/locality.py), or None.
    locality: Locality | None = None


def _ns(values: np.ndarray) -> np.ndarray:
    """Seconds as integer nanoseconds, rounded up. An entry past :data:`MAX_ENTRY_NS` (only
    absurd hardware rates or workloads reach it) is refused rather than capped: a capped
    time would be a wrong estimate the solver optimises and the verifier agrees with."""
    ns = np.ceil(np.asarray(values, dtype=np.float64) * TIME_SCALE)
    if ns.size and not ns.max() <= MAX_ENTRY_NS:
        raise InvalidInputError(
            f"one layer's estimated time ({ns.max() / TIME_SCALE:.3g} s) exceeds the "
            f"{MAX_ENTRY_NS / TIME_SCALE:.3g} s placer models; check the hardware's rates "
            "and the workload's batch and context"
        )
    return ns.astype(np.int64)


def objective_step(workload: Workload, layout: Layout, objective: str) -> str:
    """Which costed step the objective uses: micro-batches for throughput."""
    phase = "prefill" if workload.phase == "prefill" else "decode"
    if objective == "latency" or layout.pp == 1:
        return phase
    return phase + "_micro"


def _cached(cache: dict[object, object] | None, key: object, make: Callable[[], object]) -> object:
    """``make()``, shared through ``cache`` between the layouts of one search."""
    if cache is None:
        return make()
    if key not in cache:
        cache[key] = make()
    return cache[key]


def build_tables(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    layout: Layout,
    objective: str,
    with_costs: bool = True,
    cache: dict[object, object] | None = None,
) -> LayoutTables:
    """Tabulate ``layout`` (see :class:`LayoutTables`); ``with_costs=False`` leaves the time
    tables zero, for memory-only feasibility checks (:func:`add_costs` fills them later).
    ``cache`` shares per-degree results between the layouts of one search.

    Raises
    ------
    LayoutError
        When the layout needs more GPUs than the cluster has.
    """
    if layout.gpus > cluster.num_gpus:
        raise LayoutError(
            f"{layout.describe()} needs {layout.gpus} GPUs, the cluster has {cluster.num_gpus}"
        )
    n = model.num_layers
    per_expert = _cached(
        cache, ("expert_bytes", layout.expert_tp), lambda: expert_bytes(model, workload, layout)
    )
    assert isinstance(per_expert, dict)
    unit = np.zeros(n, dtype=np.int64)
    experts = np.zeros(n, dtype=np.int64)
    for i, arr in per_expert.items():
        unit[i] = int(arr.max())
        experts[i] = arr.size
    slots = np.where(experts > 0, experts + layout.redundant_experts, 0)
    first, last = edge_bytes(model, workload, layout)
    act = np.array(
        [
            activation_bytes(model, workload, layout, last=s == layout.pp - 1)
            for s in range(layout.pp)
        ],
        dtype=np.int64,
    )
    cap = _capacity_by_rank(cluster, workload, layout)
    n_pp = (n, layout.pp)
    costs = CostTables(
        layer=np.zeros(n_pp),
        slot=np.zeros(n_pp),
        last=np.zeros(layout.pp),
        handoff=np.zeros(layout.pp),
        comm=np.zeros(n_pp),
    )
    if with_costs:
        step = steps(workload, layout)[objective_step(workload, layout, objective)]
        costs = cost_tables(model, cluster, workload, layout, step, cache)
    base = _cached(
        cache,
        ("layer_bytes", layout.tp, layout.dp_attn),
        lambda: layer_bytes(model, workload, layout),
    )
    return LayoutTables(
        layout=layout,
        base=base,  # type: ignore[arg-type]
        unit=unit,
        slots=slots,
        experts=experts,
        first=first,
        last=last,
        act=act,
        reserve=workload.runtime_reserve_bytes,
        cap=cap,
        time_layer=_ns(costs.layer),
        time_slot=_ns(costs.slot),
        time_last=_ns(costs.last),
        handoff=_ns(costs.handoff),
        locality=build_locality(model, cluster, layout, costs.dispatch, _ns),
    )


def _capacity_by_rank(cluster: ClusterSpec, workload: Workload, layout: Layout) -> np.ndarray:
    """(pp, ep) smallest usable capacity among the GPUs of each stage's EP rank."""
    usable = capacity_bytes(cluster.memory_bytes[: layout.gpus], workload)
    cap = np.full((layout.pp, layout.ep), np.iinfo(np.int64).max, dtype=np.int64)
    for g in range(layout.gpus):
        s, pos = divmod(g, layout.stage_width)
        r = ep_rank(pos, layout.ep, layout.expert_tp)
        cap[s, r] = min(cap[s, r], usable[g])
    return cap


def add_costs(
    t: LayoutTables,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    objective: str,
    cache: dict[object, object] | None = None,
) -> LayoutTables:
    """``t`` with its time tables filled in."""
    step = steps(workload, t.layout)[objective_step(workload, t.layout, objective)]
    costs = cost_tables(model, cluster, workload, t.layout, step, cache)
    return replace(
        t,
        time_layer=_ns(costs.layer),
        time_slot=_ns(costs.slot),
        time_last=_ns(costs.last),
        handoff=_ns(costs.handoff),
        locality=build_locality(model, cluster, t.layout, costs.dispatch, _ns),
    )


def contiguous_map(t: LayoutTables, counts: np.ndarray) -> dict[int, ExpertRanks]:
    """Fill each rank's slots with logical experts contiguously (slot p holds p % E), the
    way a plan fills the slot counts the model chose."""
    return {
        i: contiguous_ranks(int(t.experts[i]), counts[i])
        for i, slots in enumerate(t.slots)
        if slots
    }


def contiguous_ranks(experts: int, counts: np.ndarray) -> ExpertRanks:
    """One layer's contiguous fill: rank ``r`` holds the next ``counts[r]`` slots."""
    return contiguous_slots(experts, (int(c) for c in counts))


def locality_ns(
    t: LayoutTables, counts: np.ndarray, expert_map: Mapping[int, ExpertRanks] | None = None
) -> np.ndarray:
    """(L, pp) ns of the placement-dependent all-to-all of every layer on every stage, for
    ``expert_map`` (default: the contiguous fill of ``counts``)."""
    if t.locality is None:
        return np.zeros((len(t.base), t.layout.pp), dtype=np.int64)
    emap = expert_map if expert_map is not None else contiguous_map(t, counts)
    return t.locality.table(emap)


def stage_of_layers(split: tuple[int, ...]) -> np.ndarray:
    """Stage index of every layer for a split given as layers per stage."""
    return np.repeat(np.arange(len(split)), split)


def memory_by_rank(t: LayoutTables, split: tuple[int, ...], counts: np.ndarray) -> np.ndarray:
    """Bytes on a GPU of every (stage, EP rank) for a split and slot counts (L, ep)."""
    stage = stage_of_layers(split)
    pp, ep = t.layout.pp, t.layout.ep
    mem = np.zeros((pp, ep), dtype=np.int64)
    for s in range(pp):
        mask = stage == s
        mem[s] += t.reserve + t.act[s] + int(t.base[mask].sum())
        mem[s] += (counts[mask] * t.unit[mask, None]).sum(axis=0)
    mem[0] += t.first
    mem[pp - 1] += t.last
    return mem


def stage_times(
    t: LayoutTables,
    split: tuple[int, ...],
    counts: np.ndarray,
    expert_map: Mapping[int, ExpertRanks] | None = None,
) -> np.ndarray:
    """Integer ns of every stage: layers, busiest-rank experts, the placement-dependent
    all-to-all (``expert_map``, default the contiguous fill of ``counts``), LM head,
    hand-off."""
    stage = stage_of_layers(split)
    pp = t.layout.pp
    busiest = counts.max(axis=1) if counts.size else np.zeros(len(stage), dtype=np.int64)
    a2a = locality_ns(t, counts, expert_map)
    out = np.zeros(pp, dtype=np.int64)
    for s in range(pp):
        mask = stage == s
        out[s] = int(t.time_layer[mask, s].sum()) + int(
            (t.time_slot[mask, s] * busiest[mask]).sum()
        )
        out[s] += int(a2a[mask, s].sum()) + t.handoff[s]
    out[pp - 1] += t.time_last[pp - 1]
    return out


def objective_ns(
    t: LayoutTables,
    split: tuple[int, ...],
    counts: np.ndarray,
    objective: str,
    expert_map: Mapping[int, ExpertRanks] | None = None,
) -> int:
    """The objective in ns: the pipelined cycle (throughput) or the sum of stages (latency)."""
    times = stage_times(t, split, counts, expert_map)
    if objective == "latency" or t.layout.pp == 1:
        return int(times.sum())
    return int(max(t.layout.pp * int(times.max()), int(times.sum())))


def balanced_counts(t: LayoutTables) -> np.ndarray:
    """Slots per EP rank per layer, as even as possible, extra slots rotated across ranks."""
    ep = t.layout.ep
    counts = np.zeros((len(t.slots), ep), dtype=np.int64)
    offset = 0
    for i, s in enumerate(t.slots):
        if s == 0:
            continue
        base, extra = divmod(int(s), ep)
        counts[i] = base
        for k in range(extra):
            counts[i, (offset + k) % ep] += 1
        offset += extra
    return counts


def lower_bound_ns(t: LayoutTables, objective: str) -> int:
    """A bound no split or slot assignment of this layout can beat.

    Every layer runs on some stage at no less than its cheapest stage's cost, with
    at least ceil(slots / ep) slots on its busiest rank and its all-to-all's least
    cross-node traffic (placer/locality.py); every hand-off and the LM
    head happen once. The pipelined cycle is at least the sum of stages, and at
    least pp times the most expensive single layer.
    """
    pp = t.layout.pp
    busiest = np.array([ceil_div(int(s), t.layout.ep) for s in t.slots], dtype=np.int64)
    per_layer = t.time_layer + t.time_slot * busiest[:, None]
    if t.locality is not None:
        per_layer = per_layer + t.locality.lower_bound(t.slots, t.layout.ep)
    per_layer = per_layer.min(axis=1)
    total = int(per_layer.sum()) + int(t.handoff[: pp - 1].sum()) + int(t.time_last.min())
    if objective == "latency" or pp == 1:
        return total
    return max(total, pp * int(per_layer.max()))


def memory_lower_bound(t: LayoutTables) -> tuple[int, int]:
    """(bytes the layout's GPUs must hold at least, bytes they can hold), per EP rank column.

    A necessary condition for any split: summed over stages, each EP rank's GPUs hold
    every layer's base bytes once and their share of the slots.
    """
    pp, ep = t.layout.pp, t.layout.ep
    need = int(t.base.sum()) * ep + int((t.slots * t.unit).sum()) + (t.first + t.last) * ep
    need += (t.reserve * pp + int(t.act.sum())) * ep
    have = int(t.cap.sum())
    return need, have


def placement_constraints(t: LayoutTables, counts: np.ndarray) -> list[Constraint]:
    """Slot and coverage constraints of a placement, one instance per MoE layer: the same
    definition for the plan ``solve`` writes and for ``verify``, which applies it to the slot
    counts it reads from the plan's expert map."""
    out = []
    for i, slots in enumerate(t.slots):
        if slots == 0:
            continue
        placed = int(counts[i].sum())
        out.append(
            Constraint(
                name=f"expert_slots[layer {i}]",
                value=placed,
                limit=int(slots),
                holds=placed == slots,
                detail=f"{placed} slots placed of {int(slots)}",
            )
        )
        most = int(counts[i].max())
        out.append(
            Constraint(
                name=f"one_copy_per_gpu[layer {i}]",
                value=most,
                limit=int(t.experts[i]),
                holds=most <= t.experts[i],
                detail="no rank holds more slots than there are experts",
            )
        )
    return out
