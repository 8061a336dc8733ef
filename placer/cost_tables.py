"""Cost tables: what placing each layer on each stage costs, the same numbers for the
solver and the verifier, and the per-stage costs of a placed layout (docs/cost-model.md)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from placer._base import Frozen
from placer.calibration import Calibration, active_calibration
from placer.cluster import ClusterSpec
from placer.collectives import (
    engine_comm,
    nodes_reached,
)
from placer.cost_env import (
    StageEnv,
    Step,
    roofline,
    stage_env,
)
from placer.cost_layer import (
    dispatch,
    expert_rank_time,
    layer_time,
    uniform,
)
from placer.dtypes import BYTES_PER_ELEMENT, nbytes
from placer.layout import Layout
from placer.ledger import (
    ExpertMap,
    block_params_per_gpu,
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


def _placed_dispatch(
    model: ModelSpec,
    workload: Workload,
    layout: Layout,
    env: StageEnv,
    step: Step,
    layer: int,
    compute: float,
    bounds: tuple[int, ...],
) -> tuple[float, np.ndarray] | None:
    """(the reference all-to-all :func:`placer.cost_layer.layer_comm` charged, its dispatch
    row) when the layer's all-to-all depends on the placement (placer/locality.py), else
    None."""
    if not model.experts_in_layer(layer) or layout.dp_attn == 1:
        return None
    act = float(BYTES_PER_ELEMENT[workload.activation_dtype])
    parts = dispatch(model, layout, env, step, step.tokens * model.hidden_size * act)
    if parts is None or not applies(model, parts, bounds):
        return None
    moe = model.moe
    assert moe is not None
    ref = parts.seconds(
        nodes_reached(model.experts_per_token, parts.nodes, moe.n_group, moe.topk_group)
    )
    overlap = compute if env.engine.two_batch_overlap else 0.0
    return max(0.0, ref - overlap), dispatch_row(parts, overlap)


def fill_stage(
    model: ModelSpec,
    workload: Workload,
    layout: Layout,
    env: StageEnv,
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
                slot = expert_rank_time(
                    model, workload, layout, env, step, i, one, uniform(model, i), np.ones(e)
                )
            both, comm = layer_time(model, workload, layout, env, step, i)
            compute = both - comm - env.layer_s
            placed = _placed_dispatch(model, workload, layout, env, step, i, compute, bounds)
            row = None
            if placed is not None:
                both, comm, row = both - placed[0], comm - placed[0], placed[1]
            seen[sig] = (both, slot, comm, row)
        tables.layer[i, s], tables.slot[i, s], tables.comm[i, s], row = seen[sig]
        if tables.dispatch is not None and row is not None:
            tables.dispatch[i, s] = row
    fill_last(model, workload, layout, env, step, s, tables)


def fill_last(
    model: ModelSpec,
    workload: Workload,
    layout: Layout,
    env: StageEnv,
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
        tables.last[s] += roofline(flops, nbytes(params, dtype), env.peak, env.bw, "dense_gemm")


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
        env = stage_env(cluster, model, workload, layout, s, calib, comm)
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
            fill_stage(model, workload, layout, env, step, s, tables, bounds)
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
    env = stage_env(cluster, model, workload, layout, stage, calib, engine_comm(None))
    share = (
        np.asarray(loads[layer], dtype=np.float64)
        if loads and layer in loads
        else uniform(model, layer)
    )
    share = share / share.sum()
    replicas = np.zeros(share.size)
    for r in ranks:
        for e in r:
            replicas[e] += 1
    return max(
        expert_rank_time(
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
        comm += _placed_a2a(model, cluster, layout, tables, s, layers, expert_map)
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
