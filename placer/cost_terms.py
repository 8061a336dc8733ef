"""The roofline terms of one step at efficiency 1, split as a calibration scales them: what
the fit works on (placer/fit.py, docs/cost-model.md "Fit")."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from placer.calibration import Calibration, Efficiency
from placer.cluster import ClusterSpec
from placer.collectives import (
    Wire,
    engine_comm,
)
from placer.cost_env import (
    RECORDER,
    Recorder,
    Step,
    stage_env,
)
from placer.cost_layer import (
    expert_rank_time,
    layer_comm,
    layer_time,
    uniform,
)
from placer.cost_tables import (
    CostTables,
    fill_last,
)
from placer.dtypes import BYTES_PER_ELEMENT
from placer.layout import Layout
from placer.ledger import (
    default_expert_map,
)
from placer.model import ModelSpec
from placer.workload import Workload


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
        default=Efficiency(dense_gemm=1, expert_gemm=1, attention=1, hbm=1, dequant=1, comm=1),
        layer_us=0,
        step_us=0,
    )
    comm_profile = engine_comm(engine)
    act = float(BYTES_PER_ELEMENT[workload.activation_dtype])
    emap = default_expert_map(model, layout)
    rec = Recorder()
    token = RECORDER.set(rec)
    comm = comm_bw = seconds = 0.0
    try:
        for s, layers in enumerate(layout.stage_layers(model.num_layers)):
            env = stage_env(cluster, model, workload, layout, s, unit, comm_profile)
            no_latency = replace(
                env,
                tp=replace(env.tp, intra=instant(env.tp.intra), inter=instant(env.tp.inter)),
                moe=replace(env.moe, intra=instant(env.moe.intra), inter=instant(env.moe.inter)),
            )
            for i in layers:
                rec.weight = 1.0
                both, c = layer_time(model, workload, layout, env, step, i)
                comm += c
                comm_bw += layer_comm(
                    model, layout, no_latency, step, i,
                    step.tokens * model.hidden_size * act, both - c - env.layer_s,
                )  # fmt: skip
                seconds += both
                if i in emap:
                    rec.weight = float(max(len(r) for r in emap[i]))
                    one = np.array([0], dtype=np.int64)
                    e = model.experts_in_layer(i)
                    slot = expert_rank_time(
                        model, workload, layout, env, step, i, one, uniform(model, i), np.ones(e)
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
                fill_last(model, workload, layout, env, step, s, tables)
                seconds += float(tables.last[s])
    finally:
        RECORDER.reset(token)
    terms = {k: (v[0], v[1]) for k, v in rec.terms.items()}
    return StepTerms(
        terms=terms,
        comm_s=comm,
        comm_bandwidth_s=min(comm_bw, comm),
        layers=model.num_layers,
        seconds=seconds,
    )


def instant(w: Wire) -> Wire:
    return Wire(bandwidth=w.bandwidth, latency=0.0)
