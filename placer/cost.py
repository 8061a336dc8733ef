"""Roofline cost model (numpy, no solver): how long a layout takes per step.

Per layer and GPU, each block costs ``max(FLOPs / peak, bytes / HBM bandwidth)``
(DESIGN.md, "Cost model"):

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
- communication: a ring all-reduce over TP after attention and after the MLP
  (2 (n-1)/n x bytes / bandwidth + 2 (n-1) latencies), an all-to-all dispatch and
  combine over EP (or over the attention-DP groups), and a hand-off between
  pipeline stages, each at the bandwidth of the slowest topology level the group
  spans.

A request's latency is the sum over stages (pipelining never shortens it). For
throughput the batch is split into ``pp`` micro-batches so stages overlap: a
cycle is ``max(pp x slowest stage, sum of stages)`` and each request gains one
token per cycle. Costs are tabulated per (layer, stage) so the solver and the
verifier add up exactly the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from placer._base import Frozen
from placer.cluster import ClusterSpec, Level
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


def _roofline(flops: float, nbytes_: float, peak: float, bw: float) -> float:
    return max(flops / peak, nbytes_ / bw)


def _ring_allreduce(nbytes_: float, n: int, bw: float, lat: float) -> float:
    if n <= 1:
        return 0.0
    return 2 * (n - 1) / n * nbytes_ / bw + 2 * (n - 1) * lat


def _link(cluster: ClusterSpec, level: Level) -> tuple[float, float]:
    link = cluster.link(level)
    return link.bandwidth_gbps * 1e9, link.latency_us * 1e-6


@dataclass(frozen=True)
class _StageEnv:
    peak: float
    peak_expert: float
    bw: float
    tp_link: tuple[float, float]
    ep_link: tuple[float, float]


def _stage_env(
    cluster: ClusterSpec, model: ModelSpec, workload: Workload, layout: Layout, stage: int
) -> _StageEnv:
    first = stage * layout.stage_width
    gpu = cluster.gpu_types[first]
    base, expert_dtype, _ = weight_dtypes(model, workload)
    ep_gpus = range(first, first + layout.ep * layout.expert_tp, layout.expert_tp)
    moe_group = ep_gpus if layout.ep > 1 else range(first, first + layout.stage_width)
    return _StageEnv(
        peak=gpu.peak_flops(COMPUTE_DTYPE[base]),
        peak_expert=gpu.peak_flops(COMPUTE_DTYPE[expert_dtype]),
        bw=gpu.hbm_bandwidth_gbps * 1e9,
        tp_link=_link(cluster, cluster.level_of(range(first, first + layout.tp))),
        ep_link=_link(cluster, cluster.level_of(moe_group)),
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
        2.0 * params * tokens, touched * nbytes(params, expert_dtype), env.peak_expert, env.bw
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
        total += _roofline(flops, nbytes(params, dtype), env.peak, env.bw)
    kv_elems = kv_elements_per_rank(model, layer, layout.tp)
    if kv_elems:
        a = model.attention
        # Each query head scores every cached key and weights every cached value:
        # 2 FLOPs per cached element per query head sharing it.
        group = a.num_heads // a.num_kv_heads if a is not None and a.kind != "mla" else 1
        heads_mla = ceil_div(a.num_heads, layout.tp) if a is not None and a.kind == "mla" else 1
        per_token = 2 * kv_elems * step.context * group * heads_mla
        kv_read = kv_bytes_for_layer(model, workload, layout, layer) if step.decode else 0
        total += _roofline(t * per_token, kv_read, env.peak, env.bw)
    tp_bw, tp_lat = env.tp_link
    comm = 2 * _ring_allreduce(t * h * act, layout.tp, tp_bw, tp_lat)
    if model.experts_in_layer(layer):
        ep_bw, ep_lat = env.ep_link
        if layout.ep > 1 or layout.dp_attn > 1:
            # Dispatch and combine: each token's hidden state goes to top_k ranks and
            # back; (n - 1)/n of it leaves the GPU.
            n = max(layout.ep, layout.dp_attn)
            sent = t * model.experts_per_token * h * act * (n - 1) / n
            comm += 2 * (sent / ep_bw + ep_lat)
        if layout.expert_tp > 1:
            t_stage = step.total
            comm += _ring_allreduce(
                t_stage * h * act / layout.edp, layout.expert_tp, tp_bw, tp_lat
            )
    return total + comm, comm


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
) -> None:
    """Fill column ``s`` of the layer, slot and last-stage tables."""
    base, _, plain = weight_dtypes(model, workload)
    seen: dict[tuple[object, ...], tuple[float, float, float]] = {}
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
            seen[sig] = (both, slot, comm)
        tables.layer[i, s], tables.slot[i, s], tables.comm[i, s] = seen[sig]
    # The LM head (a tied embedding serves as one) and the final norm, on the last stage.
    # Prefill computes logits only for each request's last token.
    logits_tokens = step.tokens if step.decode else min(step.tokens, workload.batch)
    for b in model.blocks_by_layer.get(None, ()):
        if b.kind == "embedding" and not model.tie_word_embeddings:
            continue
        params = block_params_per_gpu(b, model, layout.tp)
        dtype = base if b.quantized else plain
        flops = 0.0 if b.kind == "norm" else 2.0 * params * logits_tokens
        tables.last[s] += _roofline(flops, nbytes(params, dtype), env.peak, env.bw)


def cost_tables(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    layout: Layout,
    step: Step,
    cache: dict[object, object] | None = None,
) -> CostTables:
    """Tabulate the costs of every layer on every stage (see :class:`CostTables`)."""
    n, pp = model.num_layers, layout.pp
    tables = CostTables(
        layer=np.zeros((n, pp)),
        slot=np.zeros((n, pp)),
        last=np.zeros(pp),
        handoff=np.zeros(pp),
        comm=np.zeros((n, pp)),
    )
    act = float(BYTES_PER_ELEMENT[workload.activation_dtype])
    done: dict[tuple[object, ...], int] = {}
    for s in range(pp):
        env = _stage_env(cluster, model, workload, layout, s)
        # Stages on alike GPUs and links cost the same: compute each kind once.
        key = (env.peak, env.peak_expert, env.bw, env.tp_link, env.ep_link)
        # Layouts with the same degrees and step share columns across a search.
        shared = ("stage", layout.tp, layout.dp_attn, layout.ep, layout.expert_tp, step, key)
        if key in done:
            prev = done[key]
            tables.layer[:, s] = tables.layer[:, prev]
            tables.slot[:, s] = tables.slot[:, prev]
            tables.comm[:, s] = tables.comm[:, prev]
            tables.last[s] = tables.last[prev]
        elif cache is not None and shared in cache:
            cached: tuple[np.ndarray, np.ndarray, np.ndarray, float] = cache[shared]  # type: ignore[assignment]
            tables.layer[:, s], tables.slot[:, s], tables.comm[:, s], tables.last[s] = cached
            done[key] = s
        else:
            done[key] = s
            _fill_stage(model, workload, layout, env, step, s, tables)
            if cache is not None:
                cache[shared] = (
                    tables.layer[:, s].copy(),
                    tables.slot[:, s].copy(),
                    tables.comm[:, s].copy(),
                    float(tables.last[s]),
                )
        if s < pp - 1:
            first = (s + 1) * layout.stage_width
            bw, lat = _link(cluster, cluster.level_of([first - 1, first]))
            tables.handoff[s] = step.tokens * model.hidden_size * act / bw + lat
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
) -> float:
    """Routed-expert time of ``layer``: the busiest EP rank for this expert map."""
    env = _stage_env(cluster, model, workload, layout, stage)
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


def stage_costs(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    layout: Layout,
    step: Step,
    expert_map: ExpertMap,
    loads: Mapping[int, np.ndarray] | None = None,
) -> list[StageCost]:
    """Cost of one micro-batch through each stage."""
    tables = cost_tables(model, cluster, workload, layout, step)
    out = []
    for s, layers in enumerate(layout.stage_layers(model.num_layers)):
        comm = float(sum(tables.comm[i, s] for i in layers))
        compute = float(sum(tables.layer[i, s] for i in layers)) - comm
        if s == layout.pp - 1:
            compute += float(tables.last[s])
        experts = 0.0
        for i in layers:
            if i not in expert_map:
                continue
            if loads:
                experts += expert_layer_time(
                    model, cluster, workload, layout, s, step, i, expert_map[i], loads
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


def estimate(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    layout: Layout,
    expert_map: ExpertMap | None = None,
    loads: Mapping[int, np.ndarray] | None = None,
) -> Estimates:
    """Roofline estimates of ``layout`` for ``workload`` (see module docstring)."""
    emap = expert_map if expert_map is not None else default_expert_map(model, layout)
    st = steps(workload, layout)
    phase = "prefill" if workload.phase == "prefill" else "decode"
    ttft = sum(
        s.total_s
        for s in stage_costs(model, cluster, workload, layout, st["prefill"], emap, loads)
    )
    full = stage_costs(model, cluster, workload, layout, st[phase], emap, loads)
    latency = sum(s.total_s for s in full)
    if layout.pp == 1:
        stages, cycle = full, latency
    else:
        stages = stage_costs(model, cluster, workload, layout, st[phase + "_micro"], emap, loads)
        cycle = pipelined_cycle([s.total_s for s in stages], layout.pp)
    tokens = st[phase].total
    slow = max(stages, key=lambda s: s.total_s)
    # Each cause of the slowest stage's time on its own (compute_s excludes communication).
    parts = {
        "attention/MLP": slow.compute_s,
        "communication (TP all-reduce, EP all-to-all)": slow.comm_s,
        "routed experts": slow.experts_s,
        "pipeline hand-off": slow.handoff_s,
    }
    bottleneck = f"stage {slow.stage}: {max(parts, key=lambda k: parts[k])}"
    w, e, _ = weight_dtypes(model, workload)
    assumptions = (
        f"phase {workload.phase}, batch {workload.batch}, {workload.kv_tokens} cached tokens, "
        f"prompt {workload.prompt_len}",
        f"weights {w}, experts {e}, KV {workload.kv_dtype}",
        f"{cluster.gpu_types[0].name}: dense TFLOPS and HBM bandwidth from the hardware file",
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
