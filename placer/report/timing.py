"""The report's communication and estimated-latency sections."""

from __future__ import annotations

from placer.cluster import ClusterSpec, Level
from placer.plan import Plan
from placer.report.inputs import PlanSpecs
from placer.report.text import id_ranges, ms, table
from placer.topology import communication_levels, plan_phys


def _level_text(cluster: ClusterSpec, level: Level | None) -> str:
    if level is None:
        return "-"
    link = cluster.link(level)
    return f"{level} ({link.bandwidth_gbps:g} GB/s, {link.latency_us:g} us)"


def _group_cell(degree: int, unit: str, none: str, level: str) -> str:
    return f"{degree} {unit}, {level}" if degree > 1 else none


def communication(plan: Plan, specs: PlanSpecs) -> list[str]:
    """The level each stage's groups span, and the plan's cost split per stage."""
    lay = plan.layout
    if lay is None:
        return ["No layout was chosen, so there is no communication to describe."]
    cluster = specs.cluster
    phys = plan_phys(plan)
    width = lay.tp * lay.dp_attn
    rows = []
    for s, lv in enumerate(communication_levels(cluster, lay, phys)):
        rows.append(
            [
                str(s),
                id_ranges([phys(s, r) for r in range(width)]),
                str(lay.layers_per_stage[s]),
                _group_cell(
                    lay.tp, "GPUs", "none (TP 1)", _level_text(cluster, lv["attention_tp"])
                ),
                _group_cell(
                    lay.ep, "ranks", "none (EP 1)", _level_text(cluster, lv["expert_parallel"])
                ),
                _group_cell(
                    lay.etp, "GPUs", "none (ETP 1)", _level_text(cluster, lv["expert_tp"])
                ),
                _level_text(cluster, lv["handoff"]),
            ]
        )
    out = table(
        [
            "stage",
            "GPUs",
            "layers",
            "attention TP group",
            "EP group",
            "expert TP group",
            "hand-off to next stage",
        ],
        rows,
    )
    out += [
        "",
        "Levels are the slowest level each group spans (placer's cost model charges a group "
        "at that level's bandwidth): TP all-reduce after attention and after the MLP, EP "
        "dispatch and combine, one activation hand-off between stages.",
        "",
    ]
    e = plan.estimates
    if e is None:
        return out
    out.append(
        "The plan stores no bytes per link level. What it stores is the cost split of each "
        "stage (one micro-batch):"
    )
    out.append("")
    out += table(
        ["stage", "attention/MLP (ms)", "experts (ms)", "TP/EP comm (ms)", "hand-off (ms)"],
        [
            [str(st.stage), ms(st.compute_s), ms(st.experts_s), ms(st.comm_s), ms(st.handoff_s)]
            for st in e.stages
        ],
    )
    return out


def estimates(plan: Plan, specs: PlanSpecs) -> list[str]:
    """The plan's roofline estimates, per stage, with their assumptions verbatim."""
    e = plan.estimates
    if e is None:
        return ["No layout was chosen, so nothing is estimated."]
    lay = plan.layout
    assert lay is not None
    rows = [
        ["phase", e.phase],
        ["tokens per step", f"{e.tokens_per_step:,}"],
        ["step latency (no micro-batching)", f"{ms(e.latency_s)} ms"],
        [
            f"pipelined cycle ({lay.pp} micro-batches)"
            if lay.pp > 1
            else "pipelined cycle (pp 1: the step itself)",
            f"{ms(e.cycle_s)} ms",
        ],
        ["throughput", f"{e.throughput_tokens_s:,.1f} tokens/s"],
        [
            "throughput per GPU",
            f"{e.throughput_tokens_s / lay.gpus_used:,.1f} tokens/s on {lay.gpus_used} GPUs",
        ],
        ["time to first token (whole batch's prefill)", f"{ms(e.ttft_s)} ms"],
        ["bottleneck", e.bottleneck],
    ]
    out = table(["metric", "value"], rows)
    out += ["", "Per stage (one micro-batch when pp > 1):", ""]
    out += table(
        [
            "stage",
            "layers",
            "compute (ms)",
            "experts (ms)",
            "comm (ms)",
            "hand-off (ms)",
            "total (ms)",
        ],
        [
            [
                str(st.stage),
                str(st.layers),
                ms(st.compute_s),
                ms(st.experts_s),
                ms(st.comm_s),
                ms(st.handoff_s),
                ms(st.total_s),
            ]
            for st in e.stages
        ],
    )
    out += ["", "Assumptions (verbatim from the plan):", ""]
    out += [f"- {a}" for a in e.assumptions]
    out += [
        "",
        "These are roofline estimates from the hardware file's peak figures, not measurements.",
    ]
    return out
