"""Rank arithmetic: which GPU plays which part in a layout, and which link level a group spans.

GPUs are numbered stage-major: rank ``g`` is position ``g % width`` of pipeline stage
``g // width``, with ``width = tp x dp_attn`` (docs/design.md). Inside a stage, position ``r``
has attention TP rank ``r % tp`` and attention DP rank ``r // tp``; with placer's (and SGLang's)
MoE numbering its expert-parallel rank is ``(r // etp) % ep``: expert-TP groups are
consecutive positions, EP groups strided. Expert slots are filled contiguously by default
(slot ``p`` holds logical expert ``p % E``, vLLM's ``linear`` and SGLang's ``trivial`` maps).
Every module that needs one of these facts asks this one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from placer.cluster import ClusterSpec, Level

if TYPE_CHECKING:
    from placer.plan import Plan, PlanLayout

#: Topology levels from fastest to slowest.
LEVEL_ORDER: dict[str, int] = {"scale_up": 0, "node": 1, "scale_out": 2}

#: ExpertMap[layer][ep_rank] -> logical expert ids held in that rank's slots.
ExpertMap = dict[int, tuple[tuple[int, ...], ...]]


# ------------------------------------------------------------------ ranks
def ep_rank(position: int, ep: int, etp: int) -> int:
    """Expert-parallel rank of position ``position`` of a stage (placer's numbering)."""
    return (position // etp) % ep


# ------------------------------------------------------------------ expert slots
def balanced_counts(slots: int, ranks: int) -> list[int]:
    """Slots per rank when ``slots`` are spread evenly: the first ``slots % ranks`` ranks
    hold one more."""
    base, extra = divmod(slots, ranks)
    return [base + (1 if r < extra else 0) for r in range(ranks)]


def contiguous_slots(experts: int, counts: Iterable[int]) -> tuple[tuple[int, ...], ...]:
    """Logical experts of each rank when rank ``r`` holds ``counts[r]`` consecutive slots and
    slot ``p`` holds logical expert ``p % experts``."""
    ranks: list[tuple[int, ...]] = []
    start = 0
    for n in counts:
        ranks.append(tuple(p % experts for p in range(start, start + n)))
        start += n
    return tuple(ranks)


# ------------------------------------------------------------------ groups
@dataclass(frozen=True)
class StageGroups:
    """The GPU groups of one pipeline stage, as positions 0..width-1 inside the stage."""

    attention_tp: tuple[tuple[int, ...], ...]
    expert_parallel: tuple[tuple[int, ...], ...]
    expert_tp: tuple[tuple[int, ...], ...]


def stage_groups(lay: PlanLayout, moe_ep_inner: bool = False) -> StageGroups:
    """Attention-TP, expert-parallel and expert-TP groups of a stage (placer's numbering).

    With ``moe_ep_inner`` (TensorRT-LLM's ``Mapping``) the EP rank is ``r % ep`` and the
    expert-TP rank ``r // ep`` (EP groups consecutive, expert-TP groups strided).

    Parameters
    ----------
    lay
        The plan's layout.
    moe_ep_inner
        Use TensorRT-LLM's MoE rank order.

    Returns
    -------
    StageGroups
        Every group of each kind; with ``ep == 1`` the expert groups are single ranks
        and the expert-TP groups carry the MoE communication.
    """
    tp, ep, etp = lay.tp, lay.ep, lay.etp
    width = lay.tp * lay.dp_attn
    attn = tuple(tuple(range(d * tp, (d + 1) * tp)) for d in range(lay.dp_attn))
    block = ep * etp
    eps: list[tuple[int, ...]] = []
    etps: list[tuple[int, ...]] = []
    for e in range(width // block):
        base = e * block
        if moe_ep_inner:
            eps += [tuple(base + m * ep + j for j in range(ep)) for m in range(etp)]
            etps += [tuple(base + m * ep + j for m in range(etp)) for j in range(ep)]
        else:
            eps += [tuple(base + j * etp + k for j in range(ep)) for k in range(etp)]
            etps += [tuple(base + j * etp + k for k in range(etp)) for j in range(ep)]
    return StageGroups(attention_tp=attn, expert_parallel=tuple(eps), expert_tp=tuple(etps))


# ------------------------------------------------------------------ levels
def slowest(levels: Iterable[Level]) -> Level:
    """The slowest of ``levels`` (``scale_up`` when there are none)."""
    return max(levels, key=lambda lv: LEVEL_ORDER[lv], default="scale_up")


def worst_level(cluster: ClusterSpec, groups: Sequence[Sequence[int]]) -> Level:
    """The slowest topology level any of ``groups`` (physical GPU ids) spans; single-GPU
    groups span nothing, so with none larger the answer is ``scale_up``."""
    return slowest(cluster.level_of(list(g)) for g in groups if len(g) > 1)


def plan_phys(plan: Plan) -> Callable[[int, int], int]:
    """``phys(stage, position)``: the GPU id the plan's ledger lists for rank
    ``stage x (tp x dp_attn) + position`` (the rank itself beyond the ledger)."""
    assert plan.layout is not None
    width = plan.layout.tp * plan.layout.dp_attn
    ids = [g.id for g in plan.gpus]

    def phys(stage: int, pos: int) -> int:
        rank = stage * width + pos
        return ids[rank] if rank < len(ids) else rank

    return phys


def communication_levels(
    cluster: ClusterSpec,
    lay: PlanLayout,
    phys: Callable[[int, int], int],
    moe_ep_inner: bool = False,
) -> list[dict[str, Level | None]]:
    """Per stage: the slowest level of its attention-TP, EP and expert-TP groups and hand-off.

    Parameters
    ----------
    cluster
        The cluster (topology).
    lay
        The layout.
    phys
        ``phys(stage, position)``: physical GPU id of a position of a stage.
    moe_ep_inner
        TensorRT-LLM's MoE rank order (see :func:`stage_groups`).

    Returns
    -------
    list of dict
        Keys ``attention_tp``, ``expert_parallel``, ``expert_tp`` (None when the group
        has one GPU) and ``handoff`` (None on the last stage).
    """
    g = stage_groups(lay, moe_ep_inner)
    width = lay.tp * lay.dp_attn
    out: list[dict[str, Level | None]] = []
    for s in range(lay.pp):

        def level(
            groups: tuple[tuple[int, ...], ...], degree: int, stage: int = s
        ) -> Level | None:
            if degree <= 1:
                return None
            return worst_level(cluster, [[phys(stage, r) for r in grp] for grp in groups])

        out.append(
            {
                "attention_tp": level(g.attention_tp, lay.tp),
                "expert_parallel": level(g.expert_parallel, lay.ep),
                "expert_tp": level(g.expert_tp, lay.etp),
                "handoff": cluster.level_of([phys(s, width - 1), phys(s + 1, 0)])
                if s < lay.pp - 1
                else None,
            }
        )
    return out
