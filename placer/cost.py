"""Calibrated roofline cost model (numpy, no solver): how long a layout takes per step.

Per layer and GPU, each block costs ``max(FLOPs / (peak x efficiency), bytes /
(HBM bandwidth x efficiency))`` with the efficiencies of its op class from the
calibration (docs/cost-model.md; placer/calibration.py):

- attention: weight FLOPs of the step's tokens plus score FLOPs against the
  cached context; bytes are the GPU's attention weights plus the KV cache read
  (decode);
- dense MLP, shared experts, and on the last stage the LM head: the step's
  tokens through the GPU's shard;
- routed experts: the tokens routed to the busiest EP rank (uniform routing, or
  the given load statistics; a replica takes an equal share of its expert's
  tokens), and the weights of the experts those tokens touch (in decode few
  tokens touch few experts: an expert chosen with probability p per token is
  touched with probability 1 - (1 - p)^T);
- communication as the engine issues it (placer/collectives.py): an all-reduce
  after attention and one after the MLP/MoE; with attention-DP, an all-to-all
  dispatch and combine over EP or an all-gather and reduce-scatter; a hand-off
  between pipeline stages;
- a fixed cost per layer and one per step (kernel launches, scheduling).

A request's latency is the sum over stages (pipelining never shortens it). For
throughput the batch is split into ``pp`` micro-batches so stages overlap: a
cycle is ``max(pp x slowest stage, sum of stages)`` and each request gains one
token per cycle. Costs are tabulated per (layer, stage) so the solver and the
verifier add up exactly the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, replace

import numpy as np
from pydantic import Field

from placer._base import Frozen
from placer.calibration import Calibration, Efficiency, active_calibration
from placer.cluster import ClusterSpec, GPUType
from placer.collectives import (
    DispatchParts,
    EngineComm,
    Wire,
    dispatch_parts,
    engine_comm,
    gather_time,
    hierarchical_allreduce,
    nodes_reached,
)
from placer.dtypes import BYTES_PER_ELEMENT, COMPUTE_DTYPE, nbytes
from placer.layout import Layout
from placer.ledger import (
    ExpertMap,
    block_params_per_gpu,
    ceil_div,
    default_expert_map,
    kv_bytes_for_layer,
    kv_elements_per_rank,
    weight_dtypes,
)
from placer.locality import (
    DISPATCH_FIELDS,
    applies,
    dispatch_row,
    groups_on_nodes,
    node_bounds,
    placed_seconds,
)
from placer.model import ModelSpec
from placer.workload import Workload


class StageCost(Frozen):
    """Time of one pipeline stage for one micro-batch, split by cause (seconds)."""

    stage: int = Field(description="Stage index.")
    layers: int = Field(description="Layers in the stage.")
    compute_s: float = Field(description="Roofline time of attention, MLP and LM-head blocks.")
    experts_s: float = Field(description="Roofline time of routed experts (busiest EP rank).")
    comm_s: float = Field(description="TP all-reduces and EP all-to-all.")
    handoff_s: float = Field(description="Sending activations to the next stage.")
    total_s: float = Field(description="Sum of the above.")


class Estimates(Frozen):
    """What a layout is estimated to achieve for the workload."""

    phase: str = Field(description="Phase the step figures are for.")
    tokens_per_step: int = Field(description="Tokens one step processes across the deployment.")
    stages: tuple[StageCost, ...] = Field(description="Per-stage costs with pp micro-batches.")
    latency_s: float = Field(
        description="One step of the whole batch through all stages, no micro-batching "
        "(decode: time per output token; prefill: time to first token)."
    )
    cycle_s: float = Field(description="Pipelined step time with pp micro-batches.")
    throughput_tokens_s: float = Field(description="Tokens per second at the pipelined cycle.")
    ttft_s: float = Field(
        description="Prefill of the whole batch's prompts (time to first token)."
    )
    bottleneck: str = Field(description="What bounds the slowest stage.")
    assumptions: tuple[str, ...] = Field(description="Inputs and simplifications used.")


@dataclass(frozen=True)
class Step:
    """One step to be costed."""

    tokens: int  # tokens of the busiest attention-DP group
    total: int  # tokens of all attention-DP groups together (what the MoE blocks see)
    context: float  # cached tokens each token attends to (mean)
    decode: bool


@dataclass(frozen=True)
class CostTables:
    """Seconds per (layer, stage): what placing layer ``l`` on stage ``s`` costs.

    ``layer[l, s]`` covers attention, dense/shared MLP and communication;
    ``comm[l, s]`` is the part of ``layer[l, s]`` spent communicating;
    ``slot[l, s]`` is the routed-expert time per expert slot on the busiest rank
    under uniform routing (expert time = slot x slots on that rank); ``last[s]``
    is the LM head and final norm if ``s`` is the last stage; ``handoff[s]`` the
    send to stage ``s + 1``.
    """

    layer: np.ndarray
    slot: np.ndarray
    last: np.ndarray
    handoff: np.ndarray
    comm: np.ndarray  # the communication part of ``layer`` (TP all-reduce, EP all-to-all)
    #: (L, pp, 5) seconds of the all-to-all that depends on where experts sit
    #: (placer/locality.py), left out of ``layer`` and ``comm``; NaN rows elsewhere.
    dispatch: np.ndarray | None = None


class _Recorder:
    """Collects the roofline terms of a step by op class (see :func:`step_terms`)."""

    def __init__(self) -> None:
        self.weight = 1.0
        self.terms: dict[str, list[float]] = {}

    def add(self, kind: str, compute_s: float, memory_s: float) -> None:
        acc = self.terms.setdefault(kind, [0.0, 0.0])
        acc[0] += self.weight * compute_s
        acc[1] += self.weight * memory_s


_RECORDER: ContextVar[_Recorder | None] = ContextVar("placer_cost_recorder", default=None)


def _roofline(flops: float, nbytes_: float, peak: float, bw: float, kind: str) -> float:
    rec = _RECORDER.get()
    if rec is not None:
        rec.add(kind, flops / peak, nbytes_ / bw)
    return max(flops / peak, nbytes_ / bw)


@dataclass(frozen=True)
class _Group:
    """A communicating group of GPUs: how it spreads over nodes, and its links."""

    size: int
    per_node: int
    nodes: int
    intra: Wire  # link between the group's GPUs inside one node
    inter: Wire  # link between nodes (each GPU's own NIC)


def _wire(cluster: ClusterSpec, gpus: list[int], comm_eff: float) -> Wire:
    # The calibrated link efficiency stretches the per-message latency (launch, sync): the
    # measured data are decode steps of small messages, which cannot tell bandwidth apart;
    # bandwidth stays at the datasheet figure (docs/cost-model.md).
    link = cluster.link(cluster.level_of(gpus))
    return Wire(bandwidth=link.bandwidth_gbps * 1e9, latency=link.latency_us * 1e-6 / comm_eff)


def _group(cluster: ClusterSpec, gpus: range, comm_eff: float) -> _Group:
    ids = list(gpus)
    # A scale-up domain spanning nodes (NVL72) is one "node" for collectives.
    span = max(cluster.gpus_per_node, cluster.scale_up_domain)
    units = sorted({g // span for g in ids})
    first_unit = [g for g in ids if g // span == units[0]]
    return _Group(
        size=len(ids),
        per_node=len(first_unit),
        nodes=len(units),
        intra=_wire(cluster, first_unit, comm_eff),
        inter=_wire(cluster, ids, comm_eff),
    )


def _emulated(gpu: GPUType, dtype: str) -> bool:
    compute = COMPUTE_DTYPE[dtype]
    return compute in ("fp8", "fp4") and compute not in gpu.tflops


def _peak(gpu: GPUType, dtype: str, gemm_eff: float, eff: Efficiency) -> float:
    """Achievable FLOP/s for weights of ``dtype``: the GPU's rate for its compute dtype
    times the op's efficiency; a format without units on this GPU (FP4 on H100, FP8 on
    A100) is dequantised and multiplied in 16-bit at the ``dequant`` efficiency."""
    peak = gpu.peak_flops(COMPUTE_DTYPE[dtype]) * gemm_eff
    return peak * eff.dequant if _emulated(gpu, dtype) else peak


@dataclass(frozen=True)
class _StageEnv:
    peak: float
    peak_expert: float
    peak_attention: float
    bw: float
    tp: _Group
    moe: _Group
    engine: EngineComm
    layer_s: float
    step_s: float
    expert_emulated: str  # "+dequant" when expert weights are dequantised to 16-bit


def _stage_env(
    cluster: ClusterSpec,
    model: ModelSpec,
    workload: Workload,
    layout: Layout,
    stage: int,
    calibration: Calibration,
    engine: EngineComm,
) -> _StageEnv:
    first = stage * layout.stage_width
    gpu = cluster.gpu_types[first]
    eff = calibration.efficiency(gpu.name)
    base, expert_dtype, _ = weight_dtypes(model, workload)
    return _StageEnv(
        peak=_peak(gpu, base, eff.dense_gemm, eff),
        peak_expert=_peak(gpu, expert_dtype, eff.expert_gemm, eff),
        peak_attention=gpu.peak_flops("bf16") * eff.attention,
        bw=gpu.hbm_bandwidth_gbps * 1e9 * eff.hbm,
        tp=_group(cluster, range(first, first + layout.tp), eff.comm),
        moe=_group(cluster, range(first, first + layout.stage_width), eff.comm),
        engine=engine,
        layer_s=calibration.layer_us * 1e-6,
        step_s=calibration.step_us * 1e-6,
        expert_emulated="+dequant" if _emulated(gpu, expert_dtype) else "",
    )


def _expert_rank_time(
    model: ModelSpec,
    workload: Workload,
    layout: Layout,
    env: _StageEnv,
    step: Step,
    layer: int,
    ids: np.ndarray,
    share: np.ndarray,
    replicas: np.ndarray,
) -> float:
    """Roofline time of one EP rank holding logical experts ``ids`` (one per slot)."""
    if ids.size == 0:
        return 0.0
    _, expert_dtype, _ = weight_dtypes(model, workload)
    k = model.experts_per_token
    t_stage = step.total
    routed = t_stage * k / layout.edp
    params = ceil_div(
        next(b.params for b in model.blocks_by_layer[layer] if b.kind == "expert"),
        layout.expert_tp,
    )
    tokens = float(np.sum(routed * share[ids] / replicas[ids]))
    p_token = np.minimum(share[ids] * k / replicas[ids], 1.0)
    touched = float(np.sum(1.0 - np.power(1.0 - p_token, t_stage)))
    return _roofline(
        2.0 * params * tokens,
        touched * nbytes(params, expert_dtype),
        env.peak_expert,
        env.bw,
        "expert_gemm" + env.expert_emulated,
    )


def _layer_time(
    model: ModelSpec, workload: Workload, layout: Layout, env: _StageEnv, step: Step, layer: int
) -> tuple[float, float]:
    """(attention, dense/shared MLP and communication time, communication alone) of ``layer``
    (no routed experts)."""
    base, _, plain = weight_dtypes(model, workload)
    t = step.tokens
    h = model.hidden_size
    act = float(BYTES_PER_ELEMENT[workload.activation_dtype])
    total = 0.0
    for b in model.blocks_by_layer.get(layer, ()):
        if b.kind == "expert":
            continue
        params = block_params_per_gpu(b, model, layout.tp) * b.count
        dtype = base if b.quantized else plain
        flops = t * b.flops_per_token * params / max(b.params * b.count, 1) * b.count
        total += _roofline(flops, nbytes(params, dtype), env.peak, env.bw, "dense_gemm")
    kv_elems = kv_elements_per_rank(model, layer, layout.tp)
    if kv_elems:
        a = model.attention
        # Each query head scores every cached key and weights every cached value:
        # 2 FLOPs per cached element per query head sharing it.
        group = a.num_heads // a.num_kv_heads if a is not None and a.kind != "mla" else 1
        heads_mla = ceil_div(a.num_heads, layout.tp) if a is not None and a.kind == "mla" else 1
        per_token = 2 * kv_elems * step.context * group * heads_mla
        kv_read = kv_bytes_for_layer(model, workload, layout, layer) if step.decode else 0
        total += _roofline(t * per_token, kv_read, env.peak_attention, env.bw, "attention")
    comm = _layer_comm(model, layout, env, step, layer, t * h * act, total)
    return total + comm + env.layer_s, comm


def _allreduce(nbytes_: float, g: _Group, env: _StageEnv) -> float:
    return hierarchical_allreduce(
        nbytes_, g.per_node, g.nodes, g.intra, g.inter, env.engine.allreduce
    )


def _layer_comm(
    model: ModelSpec,
    layout: Layout,
    env: _StageEnv,
    step: Step,
    layer: int,
    hidden_bytes: float,
    compute: float,
) -> float:
    """Communication of one layer as the engine issues it (docs/cost-model.md):

    - one all-reduce over attention TP after attention;
    - after the MLP/MoE: with TP attention (no attention-DP) every rank already holds all
      tokens, so experts (EP and expert-TP alike) run on them and one all-reduce over the
      stage sums the partial outputs: two all-reduces per layer, no all-to-all;
    - with attention-DP, tokens differ per group: an all-to-all dispatch and combine over
      EP where the engine has one (DeepEP), else an all-gather of all groups' tokens before
      the MoE and a reduce-scatter after it (also for expert-TP).
    """
    attention = _allreduce(hidden_bytes, env.tp, env)
    if layout.dp_attn == 1:
        return attention + _allreduce(hidden_bytes, env.moe, env)
    if not model.experts_in_layer(layer):
        # A dense MLP is TP-split inside the attention group, like attention.
        return 2 * attention
    h = model.hidden_size
    act = hidden_bytes / max(step.tokens * h, 1)
    g = env.moe
    parts = _dispatch(model, layout, env, step, hidden_bytes)
    if parts is not None:
        moe = model.moe
        a2a = parts.seconds(
            nodes_reached(
                model.experts_per_token,
                parts.nodes,
                moe.n_group if moe is not None else None,
                moe.topk_group if moe is not None else None,
            )
        )
        if env.engine.two_batch_overlap:
            # The other micro-batch's attention and MLP run while this one communicates.
            a2a = max(0.0, a2a - compute)
        return attention + a2a
    gathered = step.total * h * act
    return attention + 2 * gather_time(gathered, g.size, g.inter if g.nodes > 1 else g.intra)


def _dispatch(
    model: ModelSpec, layout: Layout, env: _StageEnv, step: Step, hidden_bytes: float
) -> DispatchParts | None:
    """The all-to-all of a MoE layer under attention-DP where the engine has one (DeepEP),
    else None (tokens already replicated, or moved by all-gather / reduce-scatter)."""
    if layout.dp_attn == 1 or layout.ep <= 1 or layout.expert_tp != 1:
        return None
    if not env.engine.a2a_dispatch:
        return None
    h = model.hidden_size
    act = hidden_bytes / max(step.tokens * h, 1)
    return dispatch_parts(
        tokens=step.tokens / layout.tp,
        top_k=model.experts_per_token,
        hidden=h,
        ep=layout.ep,
        per_node=min(env.moe.per_node, layout.ep),
        intra=env.moe.intra,
        inter=env.moe.inter,
        dispatch_bytes=min(env.engine.dispatch_dtype_bytes, act),
        combine_bytes=act,
    )


def _placed_dispatch(
    model: ModelSpec,
    workload: Workload,
    layout: Layout,
    env: _StageEnv,
    step: Step,
    layer: int,
    compute: float,
    bounds: tuple[int, ...],
) -> tuple[float, np.ndarray] | None:
    """(the reference all-to-all :func:`_layer_comm` charged, its dispatch row) when the
    layer's all-to-all depends on the placement (placer/locality.py), else None."""
    if not model.experts_in_layer(layer) or layout.dp_attn == 1:
        return None
    act = float(BYTES_PER_ELEMENT[workload.activation_dtype])
    parts = _dispatch(model, layout, env, step, step.tokens * model.hidden_size * act)
    if parts is None or not applies(model, parts, bounds):
        return None
    moe = model.moe
    assert moe is not None
    ref = parts.seconds(
        nodes_reached(model.experts_per_token, parts.nodes, moe.n_group, moe.topk_group)
    )
    overlap = compute if env.engine.two_batch_overlap else 0.0
    return max(0.0, ref - overlap), dispatch_row(parts, overlap)


def _uniform(model: ModelSpec, layer: int) -> np.ndarray:
    n = model.experts_in_layer(layer)
    return np.full(n, 1.0 / n)


def _fill_stage(
    model: ModelSpec,
    workload: Workload,
    layout: Layout,
    env: _StageEnv,
    step: Step,
    s: int,
    tables: CostTables,
    bounds: tuple[int, ...] = (0, 1),
) -> None:
    """Fill column ``s`` of the layer, slot and last-stage tables (and of ``dispatch``,
    whose layers' all-to-all is then left out of ``layer`` and ``comm``)."""
    seen: dict[tuple[object, ...], tuple[float, float, float, np.ndarray | None]] = {}
    for i, sig in enumerate(model.layer_signatures):
        if sig not in seen:
            slot = 0.0
            e = model.experts_in_layer(i)
            if e:
                one = np.array([0], dtype=np.int64)
                slot = _expert_rank_time(
                    model, workload, layout, env, step, i, one, _uniform(model, i), np.ones(e)
                )
            both, comm = _layer_time(model, workload, layout, env, step, i)
            compute = both - comm - env.layer_s
            placed = _placed_dispatch(model, workload, layout, env, step, i, compute, bounds)
            row = None
            if placed is not None:
                both, comm, row = both - placed[0], comm - placed[0], placed[1]
            seen[sig] = (both, slot, comm, row)
        tables.layer[i, s], tables.slot[i, s], tables.comm[i, s], row = seen[sig]
        if tables.dispatch is not None and row is not None:
            tables.dispatch[i, s] = row
    _fill_last(model, workload, layout, env, step, s, tables)


def _fill_last(
    model: ModelSpec,
    workload: Workload,
    layout: Layout,
    env: _StageEnv,
    step: Step,
    s: int,
    tables: CostTables,
) -> None:
    """``last[s]``: the step's fixed cost, the LM head and the final norm."""
    base, _, plain = weight_dtypes(model, workload)
    # The LM head (a tied embedding serves as one) and the final norm, on the last stage.
    # Prefill computes logits only for each request's last token.
    logits_tokens = step.tokens if step.decode else min(step.tokens, workload.batch)
    # The fixed cost of a step (sampling, scheduling) is charged once, with the head.
    tables.last[s] = env.step_s
    for b in model.blocks_by_layer.get(None, ()):
        if b.kind == "embedding" and not model.tie_word_embeddings:
            continue
        params = block_params_per_gpu(b, model, layout.tp)
        dtype = base if b.quantized else plain
        flops = 0.0 if b.kind == "norm" else 2.0 * params * logits_tokens
        tables.last[s] += _roofline(
            flops, nbytes(params, dtype), env.peak, env.bw, "dense_gemm"
        )


def cost_tables(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    layout: Layout,
    step: Step,
    cache: dict[object, object] | None = None,
    calibration: Calibration | None = None,
    engine: str | None = None,
) -> CostTables:
    """Tabulate the costs of every layer on every stage (see :class:`CostTables`).

    ``calibration`` scales the roofline (default: the one in force, see
    :func:`placer.calibration.use_calibration`, else the shipped one); ``engine``
    names whose collectives are priced (default ``generic``, see docs/cost-model.md).
    """
    calib = calibration if calibration is not None else active_calibration()
    comm = engine_comm(engine)
    calib_id = calib.digest() if cache is not None else ""
    n, pp = model.num_layers, layout.pp
    tables = CostTables(
        layer=np.zeros((n, pp)),
        slot=np.zeros((n, pp)),
        last=np.zeros(pp),
        handoff=np.zeros(pp),
        comm=np.zeros((n, pp)),
        dispatch=np.full((n, pp, DISPATCH_FIELDS), np.nan),
    )
    assert tables.dispatch is not None
    act = float(BYTES_PER_ELEMENT[workload.activation_dtype])
    done: dict[tuple[object, ...], int] = {}
    for s in range(pp):
        env = _stage_env(cluster, model, workload, layout, s, calib, comm)
        bounds = node_bounds(cluster, layout, s)
        # Stages on alike GPUs and links cost the same: compute each kind once.
        key = (env.peak, env.peak_expert, env.peak_attention, env.bw, env.tp, env.moe, bounds)
        # Layouts with the same degrees and step share columns across a search.
        shared = (
            "stage",
            layout.tp,
            layout.dp_attn,
            layout.ep,
            layout.expert_tp,
            step,
            key,
            calib_id,
            comm.name,
        )
        if key in done:
            prev = done[key]
            tables.layer[:, s] = tables.layer[:, prev]
            tables.slot[:, s] = tables.slot[:, prev]
            tables.comm[:, s] = tables.comm[:, prev]
            tables.dispatch[:, s] = tables.dispatch[:, prev]
            tables.last[s] = tables.last[prev]
        elif cache is not None and shared in cache:
            cached: tuple[np.ndarray, np.ndarray, np.ndarray, float, np.ndarray] = cache[shared]  # type: ignore[assignment]
            tables.layer[:, s], tables.slot[:, s], tables.comm[:, s], tables.last[s] = cached[:4]
            tables.dispatch[:, s] = cached[4]
            done[key] = s
        else:
            done[key] = s
            _fill_stage(model, workload, layout, env, step, s, tables, bounds)
            if cache is not None:
                cache[shared] = (
                    tables.layer[:, s].copy(),
                    tables.slot[:, s].copy(),
                    tables.comm[:, s].copy(),
                    float(tables.last[s]),
                    tables.dispatch[:, s].copy(),
                )
        if s < pp - 1:
            first = (s + 1) * layout.stage_width
            link = cluster.link(cluster.level_of([first - 1, first]))
            tables.handoff[s] = (
                step.tokens * model.hidden_size * act / (link.bandwidth_gbps * 1e9)
                + link.latency_us * 1e-6
            )
    return tables


def expert_layer_time(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    layout: Layout,
    stage: int,
    step: Step,
    layer: int,
    ranks: tuple[tuple[int, ...], ...],
    loads: Mapping[int, np.ndarray] | None = None,
    calibration: Calibration | None = None,
) -> float:
    """Routed-expert time of ``layer``: the busiest EP rank for this expert map."""
    calib = calibration if calibration is not None else active_calibration()
    env = _stage_env(cluster, model, workload, layout, stage, calib, engine_comm(None))
    share = (
        np.asarray(loads[layer], dtype=np.float64)
        if loads and layer in loads
        else _uniform(model, layer)
    )
    share = share / share.sum()
    replicas = np.zeros(share.size)
    for r in ranks:
        for e in r:
            replicas[e] += 1
    return max(
        _expert_rank_time(
            model, workload, layout, env, step, layer, np.array(r, dtype=np.int64), share, replicas
        )
        for r in ranks
    )


def _placed_a2a(
    model: ModelSpec,
    cluster: ClusterSpec,
    layout: Layout,
    tables: CostTables,
    s: int,
    layers: Iterable[int],
    expert_map: ExpertMap,
) -> float:
    """Seconds of stage ``s``'s placement-dependent all-to-all for ``expert_map``
    (placer/locality.py)."""
    moe = model.moe
    if tables.dispatch is None or moe is None or not moe.n_group or not moe.topk_group:
        return 0.0
    bounds = node_bounds(cluster, layout, s)
    total = 0.0
    for i in layers:
        row = tables.dispatch[i, s]
        if np.isnan(row).any() or i not in expert_map:
            continue
        size = max(1, model.experts_in_layer(i) // moe.n_group)
        m = groups_on_nodes(bounds, expert_map[i], size)
        total += placed_seconds(row, moe.n_group, moe.topk_group, m)
    return total


def stage_costs(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    layout: Layout,
    step: Step,
    expert_map: ExpertMap,
    loads: Mapping[int, np.ndarray] | None = None,
    calibration: Calibration | None = None,
    engine: str | None = None,
) -> list[StageCost]:
    """Cost of one micro-batch through each stage (``calibration`` and ``engine`` as in
    :func:`cost_tables`)."""
    tables = cost_tables(
        model, cluster, workload, layout, step, calibration=calibration, engine=engine
    )
    out = []
    for s, layers in enumerate(layout.stage_layers(model.num_layers)):
        comm = float(sum(tables.comm[i, s] for i in layers))
        compute = float(sum(tables.layer[i, s] for i in layers)) - comm
        if s == layout.pp - 1:
            compute += float(tables.last[s])
        experts = 0.0
        placed = _placed_a2a(model, cluster, layout, tables, s, layers, expert_map)
        comm += placed
        for i in layers:
            if i not in expert_map:
                continue
            if loads:
                experts += expert_layer_time(
                    model, cluster, workload, layout, s, step, i, expert_map[i], loads, calibration
                )
            else:
                experts += float(tables.slot[i, s]) * max(len(r) for r in expert_map[i])
        handoff = float(tables.handoff[s])
        out.append(
            StageCost(
                stage=s,
                layers=len(layers),
                compute_s=compute,
                experts_s=experts,
                comm_s=comm,
                handoff_s=handoff,
                total_s=compute + comm + experts + handoff,
            )
        )
    return out


@dataclass(frozen=True)
class StepTerms:
    """One step at efficiency 1 and no fixed costs, split as the calibration scales it:
    ``terms[kind] = (compute seconds, memory seconds)`` summed over the blocks of that op
    class (``expert_gemm+dequant`` when expert weights are dequantised), ``comm_s`` the
    collectives, ``layers`` the layers on the step's path, ``seconds`` the real total."""

    terms: dict[str, tuple[float, float]]
    comm_s: float
    comm_bandwidth_s: float  # the part of comm_s that is bandwidth, not latency
    layers: int
    seconds: float


def step_terms(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    layout: Layout,
    step: Step,
    engine: str | None = None,
) -> StepTerms:
    """The roofline terms of one step through every stage (uniform routing, default
    expert map), for fitting a calibration (placer/fit.py). Summing ``max(compute / e,
    memory / e_hbm)`` over whole op classes instead of block by block makes the fit's
    surrogate slightly optimistic; the fitted calibration is then checked with the real
    model (benchmarks/fidelity_bench.py)."""
    unit = Calibration(
        format="placer-calibration",
        version=1,
        name="unit",
        method="efficiency 1, no fixed costs",
        sources=(),
        default=Efficiency(
            dense_gemm=1, expert_gemm=1, attention=1, hbm=1, dequant=1, comm=1
        ),
        layer_us=0,
        step_us=0,
    )
    comm_profile = engine_comm(engine)
    act = float(BYTES_PER_ELEMENT[workload.activation_dtype])
    emap = default_expert_map(model, layout)
    rec = _Recorder()
    token = _RECORDER.set(rec)
    comm = comm_bw = seconds = 0.0
    try:
        for s, layers in enumerate(layout.stage_layers(model.num_layers)):
            env = _stage_env(cluster, model, workload, layout, s, unit, comm_profile)
            no_latency = replace(
                env,
                tp=replace(env.tp, intra=_instant(env.tp.intra), inter=_instant(env.tp.inter)),
                moe=replace(
                    env.moe, intra=_instant(env.moe.intra), inter=_instant(env.moe.inter)
                ),
            )
            for i in layers:
                rec.weight = 1.0
                both, c = _layer_time(model, workload, layout, env, step, i)
                comm += c
                comm_bw += _layer_comm(
                    model, layout, no_latency, step, i,
                    step.tokens * model.hidden_size * act, both - c - env.layer_s,
                )  # fmt: skip
                seconds += both
                if i in emap:
                    rec.weight = float(max(len(r) for r in emap[i]))
                    one = np.array([0], dtype=np.int64)
                    e = model.experts_in_layer(i)
                    slot = _expert_rank_time(
                        model, workload, layout, env, step, i, one, _uniform(model, i), np.ones(e)
                    )
                    seconds += slot * rec.weight
            if s == layout.pp - 1:
                rec.weight = 1.0
                tables = CostTables(
                    layer=np.zeros((0, layout.pp)),
                    slot=np.zeros((0, layout.pp)),
                    last=np.zeros(layout.pp),
                    handoff=np.zeros(layout.pp),
                    comm=np.zeros((0, layout.pp)),
                )
                _fill_last(model, workload, layout, env, step, s, tables)
                seconds += float(tables.last[s])
    finally:
        _RECORDER.reset(token)
    terms = {k: (v[0], v[1]) for k, v in rec.terms.items()}
    return StepTerms(
        terms=terms,
        comm_s=comm,
        comm_bandwidth_s=min(comm_bw, comm),
        layers=model.num_layers,
        seconds=seconds,
    )


def _instant(w: Wire) -> Wire:
    return Wire(bandwidth=w.bandwidth, latency=0.0)


def steps(workload: Workload, layout: Layout) -> dict[str, Step]:
    """The steps costed: the full batch and one of ``pp`` micro-batches, decode and prefill.

    Requests are spread over the attention-DP groups; the busiest group sets the
    attention time, and the MoE blocks see every group's tokens.
    """
    b, pp = workload.batch, layout.pp
    reqs = ceil_div(b, layout.dp_attn)
    micro_b = ceil_div(b, pp)
    micro = ceil_div(micro_b, layout.dp_attn)
    prompt = workload.prompt_len
    ctx = workload.kv_tokens
    return {
        "decode": Step(tokens=reqs, total=b, context=ctx, decode=True),
        "decode_micro": Step(tokens=micro, total=micro_b, context=ctx, decode=True),
        "prefill": Step(tokens=reqs * prompt, total=b * prompt, context=prompt / 2, decode=False),
        "prefill_micro": Step(
            tokens=micro * prompt, total=micro_b * prompt, context=prompt / 2, decode=False
        ),
    }


def pipelined_cycle(stage_totals: list[float], pp: int) -> float:
    """Cycle of ``pp`` micro-batches: ``max(pp x slowest stage, sum of stages)``."""
    return max(pp * max(stage_totals), sum(stage_totals))


def error_band(calibration: Calibration) -> str:
    """The stated error of a calibration's step-time estimates, as one line."""
    e = calibration.error
    if not e:
        return "error band: not measured for this calibration"
    return (
        f"error band (cross-validated TPOT, {int(e.get('rows', 0))} measured rows): median "
        f"predicted/measured {e.get('median_ratio', float('nan')):.2f}, "
        f"{e.get('within_20pct', 0):.0%} within +-20 %, {e.get('within_1_5x', 0):.0%} within 1.5x"
    )


def estimate(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    layout: Layout,
    expert_map: ExpertMap | None = None,
    loads: Mapping[int, np.ndarray] | None = None,
    calibration: Calibration | None = None,
    engine: str | None = None,
) -> Estimates:
    """Calibrated roofline estimates of ``layout`` for ``workload`` (see module docstring;
    ``calibration`` and ``engine`` as in :func:`cost_tables`)."""
    calib = calibration if calibration is not None else active_calibration()
    emap = expert_map if expert_map is not None else default_expert_map(model, layout)
    st = steps(workload, layout)
    phase = "prefill" if workload.phase == "prefill" else "decode"

    def costs(step: Step) -> list[StageCost]:
        return stage_costs(model, cluster, workload, layout, step, emap, loads, calib, engine)

    ttft = sum(s.total_s for s in costs(st["prefill"]))
    full = costs(st[phase])
    latency = sum(s.total_s for s in full)
    if layout.pp == 1:
        stages, cycle = full, latency
    else:
        stages = costs(st[phase + "_micro"])
        cycle = pipelined_cycle([s.total_s for s in stages], layout.pp)
    tokens = st[phase].total
    slow = max(stages, key=lambda s: s.total_s)
    # Each cause of the slowest stage's time on its own (compute_s excludes communication).
    parts = {
        "attention/MLP": slow.compute_s,
        "communication": slow.comm_s,
        "routed experts": slow.experts_s,
        "pipeline hand-off": slow.handoff_s,
    }
    bottleneck = f"stage {slow.stage}: {max(parts, key=lambda k: parts[k])}"
    w, e, _ = weight_dtypes(model, workload)
    assumptions = (
        f"phase {workload.phase}, batch {workload.batch}, {workload.kv_tokens} cached tokens, "
        f"prompt {workload.prompt_len}",
        f"weights {w}, experts {e}, KV {workload.kv_dtype}",
        f"{cluster.gpu_types[0].name}: dense TFLOPS and HBM bandwidth from the hardware file, "
        f"scaled by calibration '{calib.name}' (sha256 {calib.digest()[:12]})",
        f"collectives as {engine_comm(engine).name} issues them",
        error_band(calib),
        "routing " + ("from load statistics" if loads else "uniform over experts"),
        f"{layout.pp} micro-batches for the pipelined cycle" if layout.pp > 1 else "no pipelining",
    )
    return Estimates(
        phase=phase,
        tokens_per_step=tokens,
        stages=tuple(stages),
        latency_s=latency,
        cycle_s=cycle,
        throughput_tokens_s=tokens / cycle if cycle > 0 else 0.0,
        ttft_s=ttft,
        bottleneck=bottleneck,
        assumptions=assumptions,
    )
