"""One layer on one stage (docs/cost-model.md): the roofline time of its attention, dense
MLP and routed experts, and its collectives as the engine issues them."""

from __future__ import annotations

import numpy as np

from placer.collectives import (
    DispatchParts,
    dispatch_parts,
    gather_time,
    hierarchical_allreduce,
    nodes_reached,
)
from placer.cost_env import (
    Group,
    StageEnv,
    Step,
    roofline,
)
from placer.dtypes import BYTES_PER_ELEMENT, nbytes
from placer.layout import Layout
from placer.ledger import (
    block_params_per_gpu,
    ceil_div,
    kv_bytes_for_layer,
    kv_elements_per_rank,
    weight_dtypes,
)
from placer.model import ModelSpec
from placer.workload import Workload


def expert_rank_time(
    model: ModelSpec,
    workload: Workload,
    layout: Layout,
    env: StageEnv,
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
    return roofline(
        2.0 * params * tokens,
        touched * nbytes(params, expert_dtype),
        env.peak_expert,
        env.bw,
        "expert_gemm" + env.expert_emulated,
    )


def layer_time(
    model: ModelSpec, workload: Workload, layout: Layout, env: StageEnv, step: Step, layer: int
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
        total += roofline(flops, nbytes(params, dtype), env.peak, env.bw, "dense_gemm")
    kv_elems = kv_elements_per_rank(model, layer, layout.tp)
    if kv_elems:
        a = model.attention
        # Each query head scores every cached key and weights every cached value:
        # 2 FLOPs per cached element per query head sharing it.
        group = a.num_heads // a.num_kv_heads if a is not None and a.kind != "mla" else 1
        heads_mla = ceil_div(a.num_heads, layout.tp) if a is not None and a.kind == "mla" else 1
        per_token = 2 * kv_elems * step.context * group * heads_mla
        kv_read = kv_bytes_for_layer(model, workload, layout, layer) if step.decode else 0
        total += roofline(t * per_token, kv_read, env.peak_attention, env.bw, "attention")
    comm = layer_comm(model, layout, env, step, layer, t * h * act, total)
    return total + comm + env.layer_s, comm


def allreduce(nbytes_: float, g: Group, env: StageEnv) -> float:
    return hierarchical_allreduce(
        nbytes_, g.per_node, g.nodes, g.intra, g.inter, env.engine.allreduce
    )


def layer_comm(
    model: ModelSpec,
    layout: Layout,
    env: StageEnv,
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
    attention = allreduce(hidden_bytes, env.tp, env)
    if layout.dp_attn == 1:
        return attention + allreduce(hidden_bytes, env.moe, env)
    if not model.experts_in_layer(layer):
        # A dense MLP is TP-split inside the attention group, like attention.
        return 2 * attention
    h = model.hidden_size
    act = hidden_bytes / max(step.tokens * h, 1)
    g = env.moe
    parts = dispatch(model, layout, env, step, hidden_bytes)
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


def dispatch(
    model: ModelSpec, layout: Layout, env: StageEnv, step: Step, hidden_bytes: float
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


def uniform(model: ModelSpec, layer: int) -> np.ndarray:
    n = model.experts_in_layer(layer)
    return np.full(n, 1.0 / n)
