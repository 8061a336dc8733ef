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

The parts: :mod:`placer.cost_env` (the step and what a stage is priced with),
:mod:`placer.cost_layer` (one layer's blocks and collectives), :mod:`placer.cost_tables`
(the tables and per-stage costs), :mod:`placer.cost_terms` (the fit's roofline terms);
this module assembles the estimates and re-exports the API.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from pydantic import Field

from placer._base import Frozen
from placer.calibration import Calibration, active_calibration
from placer.cluster import ClusterSpec
from placer.collectives import engine_comm
from placer.cost_env import Step, steps
from placer.cost_tables import CostTables, StageCost, cost_tables, expert_layer_time, stage_costs
from placer.cost_terms import StepTerms, step_terms
from placer.layout import Layout
from placer.ledger import (
    ExpertMap,
    default_expert_map,
    weight_dtypes,
)
from placer.model import ModelSpec
from placer.workload import Workload

# The cost model's API, importable from here as before the split into modules.
__all__ = [
    "CostTables",
    "Estimates",
    "StageCost",
    "Step",
    "StepTerms",
    "cost_tables",
    "error_band",
    "estimate",
    "expert_layer_time",
    "pipelined_cycle",
    "stage_costs",
    "step_terms",
    "steps",
]


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


def pipelined_cycle(stage_totals: list[float], pp: int) -> float:
    """Cycle of ``pp`` micro-batches: ``max(pp x slowest stage, sum of stages)``."""
    return max(pp * max(stage_totals), sum(stage_totals))


def error_band(calibration: Calibration) -> str:
    """The stated error of a calibration's estimates, as one line: TPOT (the step times) and,
    when measured, TTFT as the serving objective defines it (queueing included)."""
    e = calibration.error
    if not e:
        return "error band: not measured for this calibration"
    line = (
        f"error band (cross-validated TPOT, {int(e.get('rows', 0))} measured rows): median "
        f"predicted/measured {e.get('median_ratio', float('nan')):.2f}, "
        f"{e.get('within_20pct', 0):.0%} within +-20 %, {e.get('within_1_5x', 0):.0%} within 1.5x"
    )
    t = calibration.ttft_error
    if t:
        line += (
            f"; TTFT under concurrency: median {t.get('median_ratio', float('nan')):.2f}, "
            f"{t.get('within_20pct', 0):.0%} within +-20 %, {t.get('within_1_5x', 0):.0%} "
            "within 1.5x"
        )
    return line


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
