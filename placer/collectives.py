"""Collective communication as inference engines issue it (see docs/cost-model.md).

Each function prices one collective from the message size, the group and the
links it crosses. Formulas use ``S`` bytes per GPU, ``n`` GPUs, link bandwidth
``B`` (per GPU, per direction) and one-way latency ``a``:

- one-shot all-reduce (every GPU reads every peer's buffer and reduces locally;
  vLLM/SGLang custom all-reduce, TensorRT-LLM ONESHOT): ``a + (n-1) S / B``;
- two-shot all-reduce (reduce-scatter then all-gather, each over direct
  peer links): ``2a + 2 (n-1)/n S / B``;
- NVLS (reduction inside the NVSwitch, NVLink SHARP): ``2a + S / B``, only
  where the switch reduces (Hopper and later NVSwitch domains);
- ring all-reduce (NCCL ring): ``2 (n-1) a + 2 (n-1)/n S / B``;
- tree all-reduce (NCCL tree across nodes): ``2 log2(n) a + 2 S / B``.

An engine takes the fastest algorithm it has for the size, which is what the
size thresholds in its all-reduce selection approximate. A group spread over
``m`` nodes with ``g`` GPUs on each is reduced hierarchically: reduce-scatter
inside the node, an all-reduce of the ``S / g`` shard across nodes with every
GPU on its own NIC (so the node's ``g`` NICs work together), then an
all-gather inside the node.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal

from pydantic import Field

from placer._base import Frozen

Algorithm = Literal["one_shot", "two_shot", "nvls", "ring", "tree"]


class Wire(Frozen):
    """One link as a collective sees it: bandwidth per GPU and direction, latency."""

    bandwidth: float = Field(gt=0, description="Bytes per second per GPU per direction.")
    latency: float = Field(ge=0, description="Seconds per message hop.")


class EngineComm(Frozen):
    """Which collectives an engine issues (see docs/cost-model.md, "Engines")."""

    name: str = Field(description="Engine name.")
    allreduce: tuple[Algorithm, ...] = Field(description="All-reduce algorithms it can choose.")
    a2a_dispatch: bool = Field(
        description="With attention-DP and EP, tokens move by all-to-all dispatch/combine "
        "(DeepEP-style); otherwise by all-gather before and reduce-scatter after the MoE."
    )
    dispatch_dtype_bytes: float = Field(
        gt=0, description="Bytes per hidden element sent by the dispatch (1 = FP8)."
    )
    two_batch_overlap: bool = Field(
        description="Two micro-batches interleave so all-to-all hides behind attention."
    )


#: Engine profiles. Sources (docs/cost-model.md): vLLM custom all-reduce
#: (csrc/custom_all_reduce.cuh: one-stage and two-stage kernels) and its default
#: all2all backend allgather_reducescatter (vllm/envs.py VLLM_ALL2ALL_BACKEND);
#: SGLang custom all-reduce and DeepEP dispatch (--moe-a2a-backend deepep, FP8
#: dispatch, BF16 combine; --enable-two-batch-overlap); TensorRT-LLM
#: AllReduceStrategy ONESHOT/TWOSHOT/NVLS chosen by AUTO.
ENGINES: dict[str, EngineComm] = {
    "generic": EngineComm(
        name="generic",
        allreduce=("one_shot", "two_shot", "ring", "tree"),
        a2a_dispatch=True,
        dispatch_dtype_bytes=2.0,
        two_batch_overlap=False,
    ),
    "vllm": EngineComm(
        name="vllm",
        allreduce=("one_shot", "two_shot", "ring", "tree"),
        a2a_dispatch=False,
        dispatch_dtype_bytes=2.0,
        two_batch_overlap=False,
    ),
    "sglang": EngineComm(
        name="sglang",
        allreduce=("one_shot", "two_shot", "ring", "tree"),
        a2a_dispatch=True,
        dispatch_dtype_bytes=1.0,
        two_batch_overlap=False,
    ),
    "sglang-tbo": EngineComm(
        name="sglang-tbo",
        allreduce=("one_shot", "two_shot", "ring", "tree"),
        a2a_dispatch=True,
        dispatch_dtype_bytes=1.0,
        two_batch_overlap=True,
    ),
    "trtllm": EngineComm(
        name="trtllm",
        allreduce=("one_shot", "two_shot", "nvls", "ring", "tree"),
        a2a_dispatch=True,
        dispatch_dtype_bytes=1.0,
        two_batch_overlap=False,
    ),
}


_ENGINE: ContextVar[str | None] = ContextVar("placer_engine", default=None)


@contextmanager
def use_engine(name: str | None) -> Iterator[None]:
    """Price collectives inside the block as engine ``name`` issues them (None: generic).
    ``solve`` and ``evaluate`` use their rules profile's name, ``verify`` the plan's."""
    token = _ENGINE.set(name)
    try:
        yield
    finally:
        _ENGINE.reset(token)


def active_engine() -> str | None:
    """The engine profile name in force (see :func:`use_engine`), None outside any."""
    return _ENGINE.get()


def engine_comm(name: str | None) -> EngineComm:
    """The profile named ``name`` (None: the one in force, see :func:`use_engine`); an
    engine without its own profile (e.g. Megatron) is priced as ``generic``."""
    name = name if name is not None else _ENGINE.get()
    return ENGINES.get(name or "generic", ENGINES["generic"])


def allreduce_time(nbytes: float, n: int, wire: Wire, algorithm: Algorithm) -> float:
    """Seconds for one all-reduce of ``nbytes`` per GPU over ``n`` GPUs on one level."""
    if n <= 1:
        return 0.0
    a, bw = wire.latency, wire.bandwidth
    if algorithm == "one_shot":
        return a + (n - 1) * nbytes / bw
    if algorithm == "two_shot":
        return 2 * a + 2 * (n - 1) / n * nbytes / bw
    if algorithm == "nvls":
        return 2 * a + nbytes / bw
    if algorithm == "ring":
        return 2 * (n - 1) * a + 2 * (n - 1) / n * nbytes / bw
    return 2 * math.log2(n) * a + 2 * nbytes / bw


def best_allreduce(nbytes: float, n: int, wire: Wire, algorithms: Iterable[Algorithm]) -> float:
    """The fastest of ``algorithms`` for this size (an engine's size-based choice)."""
    return min(allreduce_time(nbytes, n, wire, alg) for alg in algorithms)


def hierarchical_allreduce(
    nbytes: float,
    per_node: int,
    nodes: int,
    intra: Wire,
    inter: Wire,
    algorithms: Iterable[Algorithm],
) -> float:
    """All-reduce over ``nodes`` x ``per_node`` GPUs: reduce-scatter in the node, all-reduce
    of each GPU's ``1/per_node`` shard across nodes on its own NIC, all-gather in the node."""
    algs = tuple(algorithms)
    if nodes <= 1:
        return best_allreduce(nbytes, per_node, intra, algs)
    inside = 0.0
    if per_node > 1:
        # reduce-scatter + all-gather = one two-shot all-reduce inside the node
        inside = allreduce_time(nbytes, per_node, intra, "two_shot")
    across = [a for a in algs if a in ("ring", "tree")] or ["ring"]
    return inside + best_allreduce(nbytes / per_node, nodes, inter, across)


def gather_time(nbytes_out: float, n: int, wire: Wire) -> float:
    """All-gather (or reduce-scatter) where each GPU ends with (or starts from) ``nbytes_out``
    and owns ``1/n`` of it; direct peer sends in one step."""
    if n <= 1:
        return 0.0
    return wire.latency + (n - 1) / n * nbytes_out / wire.bandwidth


def distinct_targets(picks: int, bins: int) -> float:
    """Expected distinct bins hit by ``picks`` uniform draws from ``bins`` (with repeats)."""
    if bins <= 1:
        return float(min(picks, bins))
    return bins * (1.0 - (1.0 - 1.0 / bins) ** picks)


def nodes_reached(top_k: int, nodes: int, n_group: int | None, topk_group: int | None) -> float:
    """Expected nodes one token's experts sit on, ``nodes`` holding equal shares of the
    experts. With group-limited routing and groups laid on nodes (``n_group`` a multiple of
    ``nodes``), a token uses ``topk_group`` of ``n_group`` groups, so at most that many
    nodes: the expectation is ``nodes x (1 - C(n_group - g, topk_group) / C(n_group,
    topk_group))`` with ``g = n_group / nodes`` groups per node."""
    if nodes <= 1:
        return 1.0
    if n_group and topk_group and n_group % nodes == 0:
        g = n_group // nodes
        miss = math.comb(n_group - g, topk_group) / math.comb(n_group, topk_group)
        return min(nodes * (1.0 - miss), distinct_targets(top_k, nodes))
    return distinct_targets(top_k, nodes)


class DispatchParts(Frozen):
    """The pieces of one all-to-all dispatch and combine, split so the placement model can
    price the cross-node part from where the experts sit (placer/locality.py):
    ``max(intra, inter_latency + per_node x nodes reached by a token)`` seconds."""

    nodes: int = Field(ge=1, description="Nodes the EP group spans.")
    intra: float = Field(ge=0, description="Seconds of the NVLink part (sends inside a node).")
    inter_latency: float = Field(ge=0, description="Fixed seconds of the cross-node part.")
    per_node: float = Field(
        ge=0,
        description="Cross-node seconds per node a token reaches on average (its remote "
        "share (nodes - 1) / nodes included).",
    )
    cap_nodes: float = Field(
        ge=0, description="Nodes a token's top-k picks reach at most on average (uniform)."
    )

    def seconds(self, reached: float) -> float:
        """Dispatch and combine time when a token reaches ``reached`` nodes on average."""
        if self.nodes == 1:
            return self.intra
        t_inter = self.per_node * min(reached, self.cap_nodes) + self.inter_latency
        return max(self.intra, t_inter)


def dispatch_parts(
    tokens: float,
    top_k: int,
    hidden: int,
    ep: int,
    per_node: int,
    intra: Wire,
    inter: Wire,
    dispatch_bytes: float,
    combine_bytes: float,
) -> DispatchParts:
    """All-to-all dispatch and combine of ``tokens`` tokens per GPU over ``ep`` GPUs,
    ``per_node`` of them on each node. A token goes once to each rank holding one of its
    experts (expected distinct ranks of ``top_k`` picks), and crosses to another node once
    per node it reaches (the node forwards over NVLink, as DeepEP's internode kernels do).
    Dispatch sends ``dispatch_bytes`` per element, combine returns ``combine_bytes``."""
    nodes = max(1, ep // per_node)
    local = min(ep, per_node)
    ranks = distinct_targets(top_k, ep)
    # Ranks reached inside this node, of which one may be the GPU itself.
    ranks_here = ranks / nodes
    intra_sends = tokens * ranks_here * (local - 1) / local
    per_elem = dispatch_bytes + combine_bytes
    t_intra = intra_sends * hidden * per_elem / intra.bandwidth + 2 * intra.latency
    remote_share = (nodes - 1) / nodes
    return DispatchParts(
        nodes=nodes,
        intra=t_intra,
        inter_latency=2 * inter.latency if nodes > 1 else 0.0,
        per_node=tokens * remote_share * hidden * per_elem / inter.bandwidth,
        cap_nodes=distinct_targets(top_k, nodes),
    )


def dispatch_combine_time(
    tokens: float,
    top_k: int,
    hidden: int,
    ep: int,
    per_node: int,
    intra: Wire,
    inter: Wire,
    dispatch_bytes: float,
    combine_bytes: float,
    n_group: int | None = None,
    topk_group: int | None = None,
) -> float:
    """:func:`dispatch_parts` priced with groups laid on nodes where they can be
    (:func:`nodes_reached`): the cost of the reference placement, before the placement
    model prices the actual one (docs/cost-model.md, "Communication locality")."""
    if ep <= 1:
        return 0.0
    parts = dispatch_parts(
        tokens, top_k, hidden, ep, per_node, intra, inter, dispatch_bytes, combine_bytes
    )
    return parts.seconds(nodes_reached(top_k, parts.nodes, n_group, topk_group))


def group_reach(groups_here: int, n_group: int, topk_group: int) -> float:
    """Chance that a token's ``topk_group`` chosen groups (of ``n_group``, uniform) include
    one of the ``groups_here`` groups with a slot on a node: ``1 - C(n_group - m,
    topk_group) / C(n_group, topk_group)``, concave and rising in ``m``."""
    m = max(0, min(groups_here, n_group))
    return 1.0 - math.comb(n_group - m, topk_group) / math.comb(n_group, topk_group)
