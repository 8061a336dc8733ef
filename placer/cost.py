"""Roofline cost model (numpy, no solver): how long a layout takes per step.

Per layer and GPU, each block costs ``max(FLOPs / peak, bytes / HBM bandwidth)``
(DESIGN.md, "Cost model"):

- attention: weight FLOPs of the step's tokens plus score FLOPs against the
  cached context; bytes are the GPU's attention weights plus the KV cache read
  (decode) or written (prefill);
- dense MLP and shared experts: the step's tokens through the GPU's shard;
- routed experts: the tokens routed to the busiest EP rank (uniform routing,
  or the given load statistics), and the weights of the experts those tokens
  touch (in decode, few tokens touch few experts);
- communication: a ring all-reduce over TP after attention and after the MLP
  (2 (n-1)/n x bytes / bandwidth + 2 (n-1) latencies), an all-to-all dispatch and
  combine over EP, and a hand-off between pipeline stages, each at the bandwidth
  of the slowest topology level the group spans.

A request's latency is the sum over stages (pipelining never shortens it). For
throughput the batch is split into ``pp`` micro-batches so stages overlap: a
decode cycle is ``max(pp x slowest stage, sum of stages)`` and each request gains
one token per cycle. Every estimate carries the assumptions it used.
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
    compute_s: float = Field(description="Roofline time of attention and MLP blocks.")
    experts_s: float = Field(description="Roofline time of routed experts (busiest EP rank).")
    tp_comm_s: float = Field(description="TP all-reduces.")
    ep_comm_s: float = Field(description="EP all-to-all dispatch and combine.")
    handoff_s: float = Field(description="Sending activations to the next stage.")
    total_s: float = Field(description="Sum of the above.")


class Estimates(Frozen):
    """What a layout is estimated to achieve for the workload."""

    phase: str = Field(description="Phase the step figures are for.")
    tokens_per_step: int = Field(description="Tokens one step processes across the deployment.")
    stages: tuple[StageCost, ...] = Field(description="Per-stage costs with pp micro-batches.")
    latency_s: float = Field(
        description="One step of one request through all stages, no micro-batching "
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
class _Step:
    tokens: int  # tokens per attention-DP group in one micro-batch
    context: float  # mean cached tokens each token attends to
    decode: bool


def _roofline(flops: float, nbytes_: float, peak: float, bw: float) -> float:
    return max(flops / peak, nbytes_ / bw)


def _ring_allreduce(nbytes_: float, n: int, bw: float, lat: float) -> float:
    if n <= 1:
        return 0.0
    return 2 * (n - 1) / n * nbytes_ / bw + 2 * (n - 1) * lat


def _level_time(cluster: ClusterSpec, level: Level) -> tuple[float, float]:
    link = cluster.link(level)
    return link.bandwidth_gbps * 1e9, link.latency_us * 1e-6


def stage_cost(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    layout: Layout,
    stage: int,
    step: _Step,
    expert_map: ExpertMap,
    loads: Mapping[int, np.ndarray] | None = None,
) -> StageCost:
    """Cost of one micro-batch through one stage (see module docstring)."""
    width = layout.stage_width
    first_gpu = stage * width
    gpu = cluster.gpu_types[first_gpu]
    base, expert_dtype, plain = weight_dtypes(model, workload)
    peak = gpu.peak_flops(COMPUTE_DTYPE[base])
    peak_expert = gpu.peak_flops(COMPUTE_DTYPE[expert_dtype])
    bw = gpu.hbm_bandwidth_gbps * 1e9
    act = float(BYTES_PER_ELEMENT[workload.activation_dtype])
    h = model.hidden_size
    t = step.tokens
    t_stage = t * layout.dp_attn
    layers = layout.stage_layers(model.num_layers)[stage]
    layer_set = set(layers)
    tp_bw, tp_lat = _level_time(cluster, cluster.level_of(range(first_gpu, first_gpu + layout.tp)))
    ep_gpus = range(first_gpu, first_gpu + layout.ep * layout.expert_tp, layout.expert_tp)
    ep_bw, ep_lat = _level_time(cluster, cluster.level_of(ep_gpus))

    compute = experts = tp_comm = ep_comm = 0.0
    for b in model.blocks:
        if b.kind == "expert" or b.layer not in layer_set:
            continue
        dtype = base if b.quantized else plain
        params = block_params_per_gpu(b, model, layout.tp) * b.count
        compute += _roofline(
            t * 2 * params if b.flops_per_token else 0.0, nbytes(params, dtype), peak, bw
        )
    for i in layers:
        kv_elems = kv_elements_per_rank(model, i, layout.tp)
        if kv_elems:
            # Scores and weighted values: 2 FLOPs per cached element per query head group.
            heads = (model.attention.num_heads // layout.tp) if model.attention else 1
            kv_heads = max(1, (model.attention.num_kv_heads if model.attention else 1))
            per_token = 2 * kv_elems * step.context * max(1, heads // kv_heads)
            kv_read = kv_bytes_for_layer(model, workload, layout, i) if step.decode else 0
            compute += _roofline(t * per_token, kv_read, peak, bw)
        tp_comm += 2 * _ring_allreduce(t * h * act, layout.tp, tp_bw, tp_lat)
    per_expert_params = {
        b.layer: ceil_div(b.params, layout.expert_tp) for b in model.blocks if b.kind == "expert"
    }
    for i in layers:
        if i not in expert_map:
            continue
        n_exp = model.experts_in_layer(i)
        share = (
            np.asarray(loads[i], dtype=np.float64)
            if loads and i in loads
            else np.full(n_exp, 1.0 / n_exp)
        )
        share = share / share.sum()
        replicas = np.zeros(n_exp)
        for rank in expert_map[i]:
            for e in rank:
                replicas[e] += 1
        routed = t_stage * model.experts_per_token / layout.edp
        worst = 0.0
        for rank in expert_map[i]:
            ids = np.array(rank, dtype=np.int64)
            if ids.size == 0:
                continue
            # A replica takes an equal share of its expert's tokens.
            tokens_e = routed * share[ids] / replicas[ids]
            touched = float(
                np.sum(
                    1.0
                    - np.power(
                        1.0 - np.minimum(share[ids] * model.experts_per_token, 1.0), t_stage
                    )
                )
            )
            p = per_expert_params[i]
            flops = 2.0 * p * float(tokens_e.sum())
            byts = touched * nbytes(p, expert_dtype)
            worst = max(worst, _roofline(flops, byts, peak_expert, bw))
        experts += worst
        if layout.ep > 1 or layout.dp_attn > 1:
            # Dispatch and combine: each token's hidden state goes to top_k ranks and back;
            # (n-1)/n of it leaves the GPU.
            n = max(layout.ep, layout.dp_attn)
            sent = t * model.experts_per_token * h * act * (n - 1) / n
            ep_comm += 2 * (sent / ep_bw + ep_lat)
        if layout.expert_tp > 1:
            tp_comm += _ring_allreduce(
                t_stage * h * act / layout.edp, layout.expert_tp, tp_bw, tp_lat
            )
    handoff = 0.0
    if stage < layout.pp - 1:
        nxt = (stage + 1) * width
        bw_h, lat_h = _level_time(cluster, cluster.level_of([first_gpu + width - 1, nxt]))
        handoff = t * h * act / bw_h + lat_h
    total = compute + experts + tp_comm + ep_comm + handoff
    return StageCost(
        stage=stage,
        layers=len(layers),
        compute_s=compute,
        experts_s=experts,
        tp_comm_s=tp_comm,
        ep_comm_s=ep_comm,
        handoff_s=handoff,
        total_s=total,
    )


def _stages(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    layout: Layout,
    step: _Step,
    emap: ExpertMap,
    loads: Mapping[int, np.ndarray] | None,
) -> list[StageCost]:
    return [
        stage_cost(model, cluster, workload, layout, s, step, emap, loads)
        for s in range(layout.pp)
    ]


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
    reqs = ceil_div(workload.batch, layout.dp_attn)
    micro = ceil_div(reqs, layout.pp)
    decode_full = _Step(tokens=reqs, context=workload.kv_tokens, decode=True)
    decode_micro = _Step(tokens=micro, context=workload.kv_tokens, decode=True)
    prompt_tokens = reqs * workload.prompt_len
    prefill = _Step(tokens=prompt_tokens, context=workload.prompt_len / 2, decode=False)
    prefill_micro = _Step(
        tokens=ceil_div(prompt_tokens, layout.pp), context=workload.prompt_len / 2, decode=False
    )

    ttft = sum(s.total_s for s in _stages(model, cluster, workload, layout, prefill, emap, loads))
    if workload.phase == "prefill":
        full, micro_step, tokens = prefill, prefill_micro, prompt_tokens * layout.dp_attn
    else:
        full, micro_step, tokens = decode_full, decode_micro, reqs * layout.dp_attn
    latency = sum(s.total_s for s in _stages(model, cluster, workload, layout, full, emap, loads))
    stages = _stages(model, cluster, workload, layout, micro_step, emap, loads)
    cycle = max(layout.pp * max(s.total_s for s in stages), sum(s.total_s for s in stages))
    if layout.pp == 1:
        cycle = latency
    slow = max(stages, key=lambda s: s.total_s)
    parts = {
        "compute": slow.compute_s,
        "experts": slow.experts_s,
        "tp_comm": slow.tp_comm_s,
        "ep_comm": slow.ep_comm_s,
        "handoff": slow.handoff_s,
    }
    bottleneck = f"stage {slow.stage}: {max(parts, key=lambda k: parts[k])}"
    assumptions = (
        f"phase {workload.phase}, batch {workload.batch}, {workload.kv_tokens} cached tokens, "
        f"prompt {workload.prompt_len}",
        "weights {}, experts {}, KV {}".format(
            *weight_dtypes(model, workload)[:2], workload.kv_dtype
        ),
        f"{cluster.gpu_types[0].name}: peak dense TFLOPS and HBM bandwidth from the hardware file",
        "routing " + ("from load statistics" if loads else "uniform over experts"),
        f"{layout.pp} micro-batches for the pipelined cycle" if layout.pp > 1 else "no pipelining",
    )
    return Estimates(
        phase=workload.phase,
        tokens_per_step=tokens,
        stages=tuple(stages),
        latency_s=latency,
        cycle_s=cycle,
        throughput_tokens_s=tokens / cycle if cycle > 0 else 0.0,
        ttft_s=ttft,
        bottleneck=bottleneck,
        assumptions=assumptions,
    )
