"""The report's first sections: the summary and the hardware compatibility."""

from __future__ import annotations

from placer.cluster import ClusterSpec, Level, Link
from placer.plan import Plan, PlanLayout
from placer.report.inputs import PlanSpecs
from placer.report.text import describe_layout, gb, ms, num, pct, table, yes
from placer.topology import plan_phys, slowest, stage_groups

_OBJECTIVE_TEXT = {
    "throughput": "pipelined step time, max(pp x slowest stage, sum of stages)",
    "latency": "un-pipelined step time (sum of stages)",
    "gpus": "fewest GPUs that fit",
}


# ----------------------------------------------------------------- summary
def _status_text(plan: Plan) -> str:
    o = plan.objective
    s = plan.certificate.search
    if plan.status == "optimal":
        return (
            "optimal: proven (global gap 0); every legal layout was solved to a zero gap, "
            "pruned by a bound that cannot beat the plan, or proven infeasible"
        )
    if plan.status == "feasible":
        return "feasible: NOT proven optimal; " + (
            f"gap {pct(o.gap)} to the bound ({s.unresolved} layouts left unresolved)"
            if o.gap is not None
            else "no bound recorded"
        )
    if plan.status == "infeasible":
        return f"infeasible: none of the {s.legal} legal layouts fits (proven for each)"
    return "unknown: no plan and no proof within the time limit"


def _objective_rows(plan: Plan) -> list[list[str]]:
    o = plan.objective
    if o.value is None:
        return []
    unit = o.unit
    what = (
        plan.serving.objective_text()
        if plan.serving is not None
        else _OBJECTIVE_TEXT.get(o.name, o.name)
    )
    rows: list[list[str]] = []
    if unit == "s":
        rows.append(["objective", f"{o.name} = {ms(o.value)} ms ({what})"])
        if o.bound is not None:
            rows.append(["bound", f"{ms(o.bound)} ms (no legal plan can do better)"])
    else:
        rows.append(["objective", f"{o.name} = {num(o.value)} {unit} ({what})"])
        if o.bound is not None:
            rows.append(["bound", f"{num(o.bound)} {unit}"])
    rows.append(["gap", pct(o.gap) if o.gap is not None else "not recorded (no bound)"])
    return rows


def _layout_rows(lay: PlanLayout | None, cluster: ClusterSpec) -> list[list[str]]:
    if lay is None:
        return [["GPUs used", f"none (0 of {cluster.num_gpus} available, {cluster.name})"]]
    edp = (lay.tp * lay.dp_attn) // (lay.ep * lay.etp)
    return [
        [
            "layout",
            f"{describe_layout(lay)}: attention TP {lay.tp} x DP {lay.dp_attn} per stage, "
            f"experts EP {lay.ep} x expert TP {lay.etp} x {edp} expert-DP copies, "
            f"{lay.pp} pipeline stage(s)",
        ],
        ["layers per stage", ", ".join(str(n) for n in lay.layers_per_stage)],
        ["GPUs used", f"{lay.gpus_used} of {cluster.num_gpus} available ({cluster.name})"],
    ]


def _outcome_rows(plan: Plan) -> list[list[str]]:
    """Peak memory, estimates, the search counts and the solver run."""
    rows: list[list[str]] = []
    if plan.gpus:
        peak = max(plan.gpus, key=lambda g: g.used_bytes)
        rows.append(
            [
                "peak memory",
                f"{gb(peak.used_bytes)} GB on GPU {peak.id} of {gb(peak.capacity_bytes)} GB "
                "usable",
            ]
        )
    e = plan.estimates
    if e is not None:
        rows.append(
            [
                "estimates",
                f"{e.throughput_tokens_s:,.1f} tokens/s, step {ms(e.cycle_s)} ms, "
                f"latency {ms(e.latency_s)} ms ({e.phase}; roofline, not measured)",
            ]
        )
    s = plan.certificate.search
    sv = plan.certificate.solver
    rows.append(
        [
            "search",
            f"{s.legal} legal layouts under profile '{sv.profile}': {s.solved} solved, "
            f"{s.pruned} pruned, {s.infeasible} infeasible, {s.unresolved} unresolved",
        ]
    )
    rows.append(
        [
            "solver",
            f"OR-Tools {sv.ortools_version}, placer {sv.placer_version}, seed {sv.seed}, "
            f"{sv.workers} workers, limit {sv.time_limit_s:g} s, wall {sv.wall_time_s:.2f} s",
        ]
    )
    return rows


def summary(plan: Plan, specs: PlanSpecs) -> list[str]:
    """Status, objective, bound and gap, layout, peak memory, estimates, search and solver."""
    rows = [["status", _status_text(plan)]]
    rows += _objective_rows(plan)
    rows += _layout_rows(plan.layout, specs.cluster)
    rows += _outcome_rows(plan)
    return table(["item", "value"], rows)


# ----------------------------------------------------------------- hardware
def _gpu_table(specs: PlanSpecs) -> list[str]:
    cluster, util = specs.cluster, specs.workload.memory_utilization
    rows = []
    for grp in cluster.groups:
        gpu = grp.gpu
        tflops = ", ".join(f"{k} {v:g}" for k, v in gpu.tflops.items())
        rows.append(
            [
                gpu.name,
                str(grp.count),
                gb(gpu.memory_bytes),
                gb(int(gpu.memory_bytes * util)),
                f"{gpu.hbm_bandwidth_gbps:g}",
                tflops,
                str(cluster.scale_up_domain),
            ]
        )
    return table(
        [
            "GPU type",
            "count",
            "memory (GB)",
            f"usable at {util:g} (GB)",
            "HBM (GB/s)",
            "dense TFLOPS",
            "scale-up domain (GPUs)",
        ],
        rows,
    )


def _link_table(cluster: ClusterSpec) -> list[str]:
    links: list[tuple[str, Link]] = [("scale_up", cluster.scale_up)]
    if cluster.node_link is not None:
        links.append(("node", cluster.node_link))
    links.append(("scale_out", cluster.scale_out))
    return table(
        ["level", "link", "GB/s per GPU per direction", "latency (us)"],
        [
            [lv, link.name or "-", f"{link.bandwidth_gbps:g}", f"{link.latency_us:g}"]
            for lv, link in links
        ],
    )


def _group_placement(plan: Plan, lay: PlanLayout, cluster: ClusterSpec) -> list[str]:
    """Whether the plan's TP groups stay inside one scale-up domain."""
    phys = plan_phys(plan)
    g = stage_groups(lay)

    def levels(groups: tuple[tuple[int, ...], ...]) -> list[Level]:
        return [
            cluster.level_of([phys(s, r) for r in grp]) for s in range(lay.pp) for grp in groups
        ]

    spans = levels(g.attention_tp)
    inside = all(lv == "scale_up" for lv in spans)
    out = [
        f"- GPUs used: {lay.gpus_used} of {cluster.num_gpus} "
        f"({yes(lay.gpus_used <= cluster.num_gpus)} within the cluster).",
        f"- Attention TP groups ({len(spans)} groups of {lay.tp} GPUs) stay inside one "
        f"scale-up domain: {yes(inside)}"
        + ("" if inside else f" (slowest level spanned: {slowest(spans)})")
        + ".",
    ]
    if lay.etp > 1:
        espans = levels(g.expert_tp)
        ok = all(lv == "scale_up" for lv in espans)
        out.append(
            f"- Expert TP groups ({len(espans)} groups of {lay.etp} GPUs) stay inside one "
            f"scale-up domain: {yes(ok)}."
        )
    return out


def hardware(plan: Plan, specs: PlanSpecs) -> list[str]:
    """GPU types, link levels, and where the plan's groups sit in the topology."""
    cluster = specs.cluster
    out = _gpu_table(specs)
    out += [
        "",
        f"{cluster.num_gpus} GPUs in {cluster.num_nodes} node(s) of {cluster.gpus_per_node}; "
        f"scale-up domains of {cluster.scale_up_domain} GPUs.",
        "",
    ]
    out += _link_table(cluster)
    out.append("")
    if plan.layout is None:
        out.append("No layout was chosen, so no group placement is checked.")
        return out
    return out + _group_placement(plan, plan.layout, cluster)
