"""A Markdown report of a plan: the seed's deployment analysis, done honestly.

Every number in the report is read from the plan file (its layout, memory
ledger, expert map, estimates, certificate, search record and input copies) or
derived from them by arithmetic stated next to it; nothing is claimed that the
plan does not hold. Where the plan lacks a figure (bytes per link level, measured
routing loads) the report says so and shows what the plan does hold.

Section headings (``##``) are stable; tests and tools look them up by name:
:data:`SECTIONS`, plus :data:`INFEASIBLE_SECTIONS` for a plan without a layout.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from placer.cluster import ClusterSpec, Level, Link
from placer.evaluate import Constraint, GPUReport
from placer.exceptions import InvalidInputError
from placer.ledger import COLUMNS
from placer.model import ModelSpec
from placer.plan import Plan, PlanLayout, SearchEntry
from placer.search.tables import TIME_SCALE
from placer.workload import Workload

#: Section headings of every report, in order.
SECTIONS: tuple[str, ...] = (
    "Summary",
    "Hardware compatibility",
    "Model compatibility",
    "Memory per GPU",
    "Load balance",
    "Communication",
    "Estimated latency and throughput",
    "Validation checks",
    "Search",
)
#: Extra sections of a plan without a layout (infeasible or unknown).
INFEASIBLE_SECTIONS: tuple[str, ...] = ("Why it does not fit", "Smallest fix")

#: Above this many instances, a constraint family is summarised in one row.
MAX_ROWS = 16
#: How many runner-up layouts the search section lists.
RUNNERS_UP = 5

GB = 1e9
LEVEL_ORDER: dict[str, int] = {"scale_up": 0, "node": 1, "scale_out": 2}
_OBJECTIVE_TEXT = {
    "throughput": "pipelined step time, max(pp x slowest stage, sum of stages)",
    "latency": "un-pipelined step time (sum of stages)",
    "gpus": "fewest GPUs that fit",
}


# ----------------------------------------------------------------- formatting
def gb(nbytes: float) -> str:
    """Bytes as GB (1e9 bytes) with two decimals."""
    return f"{nbytes / GB:.2f}"


def ms(seconds: float) -> str:
    """Seconds as milliseconds with three decimals."""
    return f"{seconds * 1e3:.3f}"


def pct(fraction: float) -> str:
    """A fraction as a percentage with three decimals."""
    return f"{100 * fraction:.3f} %"


def _num(x: float) -> str:
    if float(x).is_integer():
        return f"{int(x):,}"
    return f"{x:.6g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    out.extend("| " + " | ".join(esc(c) for c in row) + " |" for row in rows)
    return out


def id_ranges(ids: Sequence[int]) -> str:
    """Integers as compact ranges: 0-3, 5, 7-8."""
    parts: list[str] = []
    items = sorted(ids)
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1] == items[j] + 1:
            j += 1
        parts.append(str(items[i]) if i == j else f"{items[i]}-{items[j]}")
        i = j + 1
    return ", ".join(parts)


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


# ------------------------------------------------------------ plan inputs
@dataclass(frozen=True)
class PlanSpecs:
    """The plan's input copies, validated again (as ``placer verify`` does)."""

    model: ModelSpec
    cluster: ClusterSpec
    workload: Workload


def plan_specs(plan: Plan) -> PlanSpecs:
    """Validate the model, cluster and workload copies a plan carries.

    Parameters
    ----------
    plan
        Any plan (feasible or not).

    Returns
    -------
    PlanSpecs
        The validated specs.

    Raises
    ------
    InvalidInputError
        If a copy does not validate (the plan file was edited or is damaged).
    """
    parts: dict[str, object] = {}
    for name, cls in (("model", ModelSpec), ("cluster", ClusterSpec), ("workload", Workload)):
        try:
            parts[name] = cls.model_validate(getattr(plan.inputs, name))
        except ValidationError as exc:
            raise InvalidInputError(
                f"the plan's copy does not validate: {exc.errors()[0]['msg']}",
                field=f"inputs.{name}",
            ) from None
    model, cluster, workload = parts["model"], parts["cluster"], parts["workload"]
    assert isinstance(model, ModelSpec)
    assert isinstance(cluster, ClusterSpec)
    assert isinstance(workload, Workload)
    return PlanSpecs(model=model, cluster=cluster, workload=workload)


# ------------------------------------------------------------ parallel groups
@dataclass(frozen=True)
class StageGroups:
    """The GPU groups of one pipeline stage, as positions 0..width-1 inside the stage."""

    attention_tp: tuple[tuple[int, ...], ...]
    expert_parallel: tuple[tuple[int, ...], ...]
    expert_tp: tuple[tuple[int, ...], ...]


def stage_groups(lay: PlanLayout, moe_ep_inner: bool = False) -> StageGroups:
    """Attention-TP, expert-parallel and expert-TP groups of a stage (placer's numbering).

    Position ``r`` of a stage has attention TP rank ``r % tp`` and attention DP rank
    ``r // tp``; with placer's (and SGLang's) MoE numbering its expert-parallel rank is
    ``(r // etp) % ep`` (expert-TP groups are consecutive, EP groups strided). With
    ``moe_ep_inner`` (TensorRT-LLM's ``Mapping``) the EP rank is ``r % ep`` and the
    expert-TP rank ``r // ep`` (EP groups consecutive, expert-TP groups strided).

    Parameters
    ----------
    lay
        The plan's layout.
    moe_ep_inner
        Use TensorRT-LLM's MoE rank order.

    Returns
    -------
    StageGroups
        Every group of each kind; with ``ep == 1`` the expert groups are single ranks
        and the expert-TP groups carry the MoE communication.
    """
    tp, ep, etp = lay.tp, lay.ep, lay.etp
    width = lay.tp * lay.dp_attn
    attn = tuple(tuple(range(d * tp, (d + 1) * tp)) for d in range(lay.dp_attn))
    block = ep * etp
    eps: list[tuple[int, ...]] = []
    etps: list[tuple[int, ...]] = []
    for e in range(width // block):
        base = e * block
        if moe_ep_inner:
            eps += [tuple(base + m * ep + j for j in range(ep)) for m in range(etp)]
            etps += [tuple(base + m * ep + j for m in range(etp)) for j in range(ep)]
        else:
            eps += [tuple(base + j * etp + k for j in range(ep)) for k in range(etp)]
            etps += [tuple(base + j * etp + k for k in range(etp)) for j in range(ep)]
    return StageGroups(attention_tp=attn, expert_parallel=tuple(eps), expert_tp=tuple(etps))


def worst_level(cluster: ClusterSpec, groups: Sequence[Sequence[int]]) -> Level:
    """The slowest topology level any of ``groups`` spans.

    Parameters
    ----------
    cluster
        The cluster whose topology decides the levels.
    groups
        Groups of physical GPU ids; single-GPU groups span nothing.

    Returns
    -------
    Level
        ``scale_up``, ``node`` or ``scale_out`` (``scale_up`` when no group has two GPUs).
    """
    levels: list[Level] = [cluster.level_of(list(g)) for g in groups if len(g) > 1]
    if not levels:
        return "scale_up"
    return max(levels, key=lambda lv: LEVEL_ORDER[lv])


def communication_levels(
    cluster: ClusterSpec,
    lay: PlanLayout,
    phys: Callable[[int, int], int],
    moe_ep_inner: bool = False,
) -> list[dict[str, Level | None]]:
    """Per stage: the slowest level of its attention-TP, EP and expert-TP groups and hand-off.

    Parameters
    ----------
    cluster
        The cluster (topology).
    lay
        The layout.
    phys
        ``phys(stage, position)``: physical GPU id of a position of a stage.
    moe_ep_inner
        TensorRT-LLM's MoE rank order (see :func:`stage_groups`).

    Returns
    -------
    list of dict
        Keys ``attention_tp``, ``expert_parallel``, ``expert_tp`` (None when the group
        has one GPU) and ``handoff`` (None on the last stage).
    """
    g = stage_groups(lay, moe_ep_inner)
    width = lay.tp * lay.dp_attn
    out: list[dict[str, Level | None]] = []
    for s in range(lay.pp):

        def ids(groups: tuple[tuple[int, ...], ...], stage: int = s) -> list[list[int]]:
            return [[phys(stage, r) for r in grp] for grp in groups]

        row: dict[str, Level | None] = {
            "attention_tp": worst_level(cluster, ids(g.attention_tp)) if lay.tp > 1 else None,
            "expert_parallel": worst_level(cluster, ids(g.expert_parallel))
            if lay.ep > 1
            else None,
            "expert_tp": worst_level(cluster, ids(g.expert_tp)) if lay.etp > 1 else None,
            "handoff": cluster.level_of([phys(s, width - 1), phys(s + 1, 0)])
            if s < lay.pp - 1
            else None,
        }
        out.append(row)
    return out


def plan_phys(plan: Plan) -> Callable[[int, int], int]:
    """The plan's GPU numbering.

    Parameters
    ----------
    plan
        A plan with a layout.

    Returns
    -------
    callable
        ``phys(stage, position)``: the GPU id the plan's ledger lists for rank
        ``stage x (tp x dp_attn) + position``.
    """
    assert plan.layout is not None
    width = plan.layout.tp * plan.layout.dp_attn
    ids = [g.id for g in plan.gpus]

    def phys(stage: int, pos: int) -> int:
        rank = stage * width + pos
        return ids[rank] if rank < len(ids) else rank

    return phys


def describe_layout(lay: PlanLayout) -> str:
    """Degrees as text: ``TP2 PP1 EP8 ETP1 DPattn4``."""
    text = f"TP{lay.tp} PP{lay.pp} EP{lay.ep} ETP{lay.etp} DPattn{lay.dp_attn}"
    if lay.redundant_experts:
        text += f" +{lay.redundant_experts} redundant slots"
    return text


# ----------------------------------------------------------------- sections
def _summary(plan: Plan, specs: PlanSpecs) -> list[str]:
    o = plan.objective
    s = plan.certificate.search
    cluster = specs.cluster
    rows: list[list[str]] = []
    if plan.status == "optimal":
        status = (
            "optimal: proven (global gap 0); every legal layout was solved to a zero gap, "
            "pruned by a bound that cannot beat the plan, or proven infeasible"
        )
    elif plan.status == "feasible":
        status = "feasible: NOT proven optimal; " + (
            f"gap {pct(o.gap)} to the bound ({s.unresolved} layouts left unresolved)"
            if o.gap is not None
            else "no bound recorded"
        )
    elif plan.status == "infeasible":
        status = f"infeasible: none of the {s.legal} legal layouts fits (proven for each)"
    else:
        status = "unknown: no plan and no proof within the time limit"
    rows.append(["status", status])
    if o.value is not None:
        unit = o.unit
        what = (
            plan.serving.objective_text()
            if plan.serving is not None
            else _OBJECTIVE_TEXT.get(o.name, o.name)
        )
        if unit == "s":
            rows.append(["objective", f"{o.name} = {ms(o.value)} ms ({what})"])
            if o.bound is not None:
                rows.append(["bound", f"{ms(o.bound)} ms (no legal plan can do better)"])
        else:
            rows.append(["objective", f"{o.name} = {_num(o.value)} {unit} ({what})"])
            if o.bound is not None:
                rows.append(["bound", f"{_num(o.bound)} {unit}"])
        rows.append(["gap", pct(o.gap) if o.gap is not None else "not recorded (no bound)"])
    lay = plan.layout
    if lay is not None:
        edp = (lay.tp * lay.dp_attn) // (lay.ep * lay.etp)
        rows.append(
            [
                "layout",
                f"{describe_layout(lay)}: attention TP {lay.tp} x DP {lay.dp_attn} per stage, "
                f"experts EP {lay.ep} x expert TP {lay.etp} x {edp} expert-DP copies, "
                f"{lay.pp} pipeline stage(s)",
            ]
        )
        rows.append(["layers per stage", ", ".join(str(n) for n in lay.layers_per_stage)])
        rows.append(
            [
                "GPUs used",
                f"{lay.gpus_used} of {cluster.num_gpus} available ({cluster.name})",
            ]
        )
    else:
        rows.append(["GPUs used", f"none (0 of {cluster.num_gpus} available, {cluster.name})"])
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
    return _table(["item", "value"], rows)


def _hardware(plan: Plan, specs: PlanSpecs) -> list[str]:
    cluster, workload = specs.cluster, specs.workload
    util = workload.memory_utilization
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
    out = _table(
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
    links: list[tuple[str, Link]] = [("scale_up", cluster.scale_up)]
    if cluster.node_link is not None:
        links.append(("node", cluster.node_link))
    links.append(("scale_out", cluster.scale_out))
    out += [
        "",
        f"{cluster.num_gpus} GPUs in {cluster.num_nodes} node(s) of {cluster.gpus_per_node}; "
        f"scale-up domains of {cluster.scale_up_domain} GPUs.",
        "",
    ]
    out += _table(
        ["level", "link", "GB/s per GPU per direction", "latency (us)"],
        [
            [lv, link.name or "-", f"{link.bandwidth_gbps:g}", f"{link.latency_us:g}"]
            for lv, link in links
        ],
    )
    lay = plan.layout
    out.append("")
    if lay is None:
        out.append("No layout was chosen, so no group placement is checked.")
        return out
    phys = plan_phys(plan)
    g = stage_groups(lay)

    def levels(groups: tuple[tuple[int, ...], ...]) -> list[Level]:
        return [
            cluster.level_of([phys(s, r) for r in grp]) for s in range(lay.pp) for grp in groups
        ]

    spans = levels(g.attention_tp)
    inside = all(lv == "scale_up" for lv in spans)
    out.append(
        f"- GPUs used: {lay.gpus_used} of {cluster.num_gpus} "
        f"({_yes(lay.gpus_used <= cluster.num_gpus)} within the cluster)."
    )
    out.append(
        f"- Attention TP groups ({len(spans)} groups of {lay.tp} GPUs) stay inside one "
        f"scale-up domain: {_yes(inside)}"
        + (
            ""
            if inside
            else f" (slowest level spanned: {max(spans, key=lambda lv: LEVEL_ORDER[lv])})"
        )
        + "."
    )
    if lay.etp > 1:
        espans = levels(g.expert_tp)
        ok = all(lv == "scale_up" for lv in espans)
        out.append(
            f"- Expert TP groups ({len(espans)} groups of {lay.etp} GPUs) stay inside one "
            f"scale-up domain: {_yes(ok)}."
        )
    return out


def _rules_constraint(plan: Plan) -> Constraint | None:
    for c in plan.certificate.constraints:
        if c.name.startswith("rules["):
            return c
    return None


def _model(plan: Plan, specs: PlanSpecs) -> list[str]:
    model, workload = specs.model, specs.workload
    lay = plan.layout
    rows: list[list[str]] = []
    rows.append(
        [
            "layers",
            str(model.num_layers),
            f"PP {lay.pp}: {', '.join(map(str, lay.layers_per_stage))} per stage" if lay else "-",
            _yes(sum(lay.layers_per_stage) == model.num_layers) if lay else "-",
        ]
    )
    moe_layers = model.moe_layers
    rows.append(
        [
            "MoE layers",
            f"{len(moe_layers)} ({id_ranges(moe_layers)})" if moe_layers else "0",
            "-",
            "-",
        ]
    )
    experts = model.max_experts
    if experts:
        slots = experts + (lay.redundant_experts if lay else 0)
        if lay:
            lo, hi = slots // lay.ep, -(-slots // lay.ep)
            spread = f"{lo}" if lo == hi else f"{lo}-{hi}"
            where = (
                f"EP {lay.ep}: {slots} slots per layer ({lay.redundant_experts} redundant), "
                f"{spread} per EP rank"
            )
            held = "even" if slots % lay.ep == 0 else f"uneven ({slots} % {lay.ep} != 0)"
        else:
            where, held = "-", "-"
        rows.append(["routed experts per MoE layer", str(experts), where, held])
        rows.append(["experts per token (top-k)", str(model.experts_per_token), "-", "-"])
    if model.moe is not None:
        moe = model.moe
        if moe.num_shared_experts:
            rows.append(
                [
                    "shared experts",
                    f"{moe.num_shared_experts} (width {moe.shared_intermediate_size})",
                    f"split over attention TP {lay.tp}" if lay else "-",
                    "-",
                ]
            )
        width = moe.expert_intermediate_size
        rows.append(
            [
                "expert width",
                str(width),
                f"expert TP {lay.etp}: {width // lay.etp} per GPU" if lay else "-",
                _yes(width % lay.etp == 0) if lay else "-",
            ]
        )
    a = model.attention
    if a is not None:
        if lay:
            heads = f"TP {lay.tp}: {a.num_heads // lay.tp} query heads per GPU"
            heads_ok = _yes(a.num_heads % lay.tp == 0)
        else:
            heads, heads_ok = "-", "-"
        rows.append(["attention", f"{a.kind.upper()}, {a.num_heads} query heads", heads, heads_ok])
        if a.kind == "mla":
            rows.append(
                [
                    "KV heads",
                    f"MLA latent ({a.kv_lora_rank} + {a.qk_rope_head_dim} per token)",
                    "replicated on every TP rank" if lay else "-",
                    "yes" if lay else "-",
                ]
            )
        else:
            k = a.num_kv_heads
            if lay:
                if lay.tp <= k:
                    kv = f"TP {lay.tp}: {k // lay.tp} KV heads per GPU (split)"
                    ok = k % lay.tp == 0
                else:
                    kv = f"TP {lay.tp} > {k}: one KV head per GPU, replicated {lay.tp // k} times"
                    ok = lay.tp % k == 0
                rows.append(["KV heads", str(k), kv, _yes(ok)])
            else:
                rows.append(["KV heads", str(k), "-", "-"])
    else:
        rows.append(["attention", "module list (sizes per module, no heads)", "-", "-"])
    if model.vocab_size:
        rows.append(
            [
                "vocabulary",
                f"{model.vocab_size:,}",
                f"vocab-parallel over TP {lay.tp}" if lay else "-",
                "-",
            ]
        )
    w = workload.weight_dtype or model.dtype
    ex = workload.expert_dtype or workload.weight_dtype or model.expert_dtype
    rows.append(
        [
            "dtypes",
            f"checkpoint {model.dtype} (experts {model.expert_dtype})",
            f"planned weights {w}, experts {ex}, KV {workload.kv_dtype}",
            "-",
        ]
    )
    out = _table(["property", "model", "layout", "holds"], rows)
    out.append("")
    rc = _rules_constraint(plan)
    if rc is not None:
        verdict = "legal" if rc.holds else f"**violated**: {rc.detail}"
        out.append(
            f"Rules profile verdict (`{rc.name}`): {verdict} ({_num(rc.value)} violations, "
            f"limit {_num(rc.limit)})."
        )
    else:
        rejected = plan.certificate.search.rejected_by_rule
        text = ", ".join(f"{k}: {v}" for k, v in rejected.items()) or "none"
        out.append(
            f"Rules profile `{plan.certificate.solver.profile}`: no layout was chosen; "
            f"combinations rejected by rule: {text}."
        )
    if model.assumed:
        out.append("")
        out.append("Values the loader assumed rather than read from the model file:")
        out += [f"- `{x.field}` = {x.value}: {x.why}" for x in model.assumed]
    return out


def _memory_rows(gpus: Sequence[GPUReport], cols: Sequence[str]) -> list[list[str]]:
    def cells(g: GPUReport) -> list[str]:
        head = (g.capacity_bytes - g.used_bytes) / g.capacity_bytes if g.capacity_bytes else 0.0
        return [
            *(gb(g.breakdown.get(c, 0)) for c in cols),
            gb(g.used_bytes),
            gb(g.capacity_bytes),
            f"{100 * head:.1f} %",
        ]

    if len(gpus) <= MAX_ROWS:
        return [[str(g.id), str(g.stage), *cells(g)] for g in gpus]
    rows: list[list[str]] = []
    run: list[GPUReport] = []
    for g in [*gpus, None]:
        if run and (g is None or cells(g) != cells(run[0]) or g.stage != run[0].stage):
            rows.append([id_ranges([x.id for x in run]), str(run[0].stage), *cells(run[0])])
            run = []
        if g is not None:
            run.append(g)
    return rows


def _memory(plan: Plan, specs: PlanSpecs) -> list[str]:
    if not plan.gpus:
        return ["No layout fits, so no GPU memory is planned (see 'Why it does not fit')."]
    cols = [c for c in COLUMNS if any(g.breakdown.get(c, 0) for g in plan.gpus)]
    zero = [c for c in COLUMNS if c not in cols]
    out = _table(
        ["GPU", "stage", *cols, "used", "usable", "headroom"],
        _memory_rows(plan.gpus, cols),
    )
    peak = max(plan.gpus, key=lambda g: g.used_bytes)
    tight = min(plan.gpus, key=lambda g: g.capacity_bytes - g.used_bytes)
    w = specs.workload
    out += [
        "",
        "GB = 1e9 bytes. 'usable' is memory x utilization "
        f"({w.memory_utilization:g}); headroom = (usable - used) / usable.",
    ]
    if len(plan.gpus) > MAX_ROWS:
        out.append("Consecutive GPUs of one stage with identical rows are merged.")
    if zero:
        out.append(f"Columns that are zero on every GPU are left out: {', '.join(zero)}.")
    out.append(
        f"- Peak: {gb(peak.used_bytes)} GB on GPU {peak.id} (stage {peak.stage}) of "
        f"{gb(peak.capacity_bytes)} GB usable and {gb(peak.memory_bytes)} GB physical."
    )
    head = (tight.capacity_bytes - tight.used_bytes) / tight.capacity_bytes
    out.append(f"- Least headroom: GPU {tight.id}, {100 * head:.1f} %.")
    lay = plan.layout
    assert lay is not None
    out.append(
        f"- KV cache is sized for {-(-w.batch // lay.dp_attn)} request(s) per attention-DP "
        f"group x {w.kv_tokens:,} tokens in {w.kv_dtype}; activations for one "
        f"{w.phase} step; reserve {gb(w.runtime_reserve_bytes)} GB per GPU for the runtime."
    )
    return out


def _load(plan: Plan, specs: PlanSpecs) -> list[str]:
    lay = plan.layout
    if lay is None or not plan.expert_map:
        return ["No expert map: " + ("no layout was chosen." if lay is None else "no MoE layers.")]
    model = specs.model
    # Group layers with identical slot counts per EP rank.
    patterns: dict[tuple[int, ...], list[int]] = {}
    loads: dict[tuple[int, ...], list[float]] = {}
    rank_slots = [0] * lay.ep
    rank_load = [0.0] * lay.ep
    for layer, ranks in sorted(plan.expert_map.items()):
        counts = tuple(len(r) for r in ranks)
        patterns.setdefault(counts, []).append(layer)
        experts = model.experts_in_layer(layer) or max(max(r, default=0) for r in ranks) + 1
        replicas: dict[int, int] = {}
        for r in ranks:
            for e in r:
                replicas[e] = replicas.get(e, 0) + 1
        share = [sum(1.0 / (experts * replicas[e]) for e in r) for r in ranks]
        mean = sum(share) / len(share)
        loads.setdefault(counts, []).append(max(share) / mean if mean else 1.0)
        for i, r in enumerate(ranks):
            rank_slots[i] += len(r)
            rank_load[i] += share[i]
    rows = []
    for counts, layers in patterns.items():
        mean = sum(counts) / len(counts)
        rows.append(
            [
                id_ranges(layers),
                " ".join(str(c) for c in counts)
                if len(counts) <= MAX_ROWS
                else f"{min(counts)}-{max(counts)} over {len(counts)} ranks",
                f"{max(counts)} / {mean:.2f} = {max(counts) / mean:.3f}",
                f"{max(loads[counts]):.3f}",
            ]
        )
    out = _table(
        [
            "MoE layers",
            "slots per EP rank",
            "max / mean slots",
            "max / mean load (uniform routing)",
        ],
        rows,
    )
    out.append("")
    phys = plan_phys(plan)
    g = stage_groups(lay)
    if lay.ep <= MAX_ROWS:
        rank_rows = []
        for k in range(lay.ep):
            members = sorted(
                {phys(0, grp[k]) for grp in g.expert_parallel} if lay.ep > 1 else set()
            )
            rank_rows.append(
                [
                    str(k),
                    id_ranges(members) if members else f"all {lay.tp * lay.dp_attn} of the stage",
                    str(rank_slots[k]),
                    f"{rank_load[k] / len(plan.expert_map):.4f}",
                ]
            )
        out += _table(
            [
                "EP rank",
                "GPUs in stage 0",
                "slots over all MoE layers",
                "mean share of a layer's load",
            ],
            rank_rows,
        )
        out.append("")
    total_mean = sum(rank_load) / len(rank_load)
    out.append(
        f"Over all {len(plan.expert_map)} MoE layers: max / mean slots per EP rank "
        f"{max(rank_slots)} / {sum(rank_slots) / len(rank_slots):.2f}, max / mean load "
        f"{max(rank_load) / total_mean:.3f}."
    )
    assumptions = plan.estimates.assumptions if plan.estimates else ()
    if any("load statistics" in a for a in assumptions):
        out.append(
            "The estimates used expert-load statistics, but the plan does not store them: the "
            "load figures above assume uniform routing."
        )
    else:
        out.append(
            "Routing is assumed uniform over experts (no load statistics were given); real "
            "routing is skewed, so the busiest rank can be hotter than shown. `placer balance` "
            "places and replicates experts for measured loads."
        )
    return out


_KIND_TEXT = {
    "attention_tp": "attention TP",
    "expert_parallel": "EP all-to-all",
    "expert_tp": "expert TP",
    "handoff": "hand-off to next stage",
}


def _level_text(cluster: ClusterSpec, level: Level | None) -> str:
    if level is None:
        return "-"
    link = cluster.link(level)
    return f"{level} ({link.bandwidth_gbps:g} GB/s, {link.latency_us:g} us)"


def _communication(plan: Plan, specs: PlanSpecs) -> list[str]:
    lay = plan.layout
    if lay is None:
        return ["No layout was chosen, so there is no communication to describe."]
    cluster = specs.cluster
    levels = communication_levels(cluster, lay, plan_phys(plan))
    width = lay.tp * lay.dp_attn
    phys = plan_phys(plan)
    rows = []
    for s, lv in enumerate(levels):
        ids = [phys(s, r) for r in range(width)]
        rows.append(
            [
                str(s),
                id_ranges(ids),
                str(lay.layers_per_stage[s]),
                f"{lay.tp} GPUs, {_level_text(cluster, lv['attention_tp'])}"
                if lay.tp > 1
                else "none (TP 1)",
                f"{lay.ep} ranks, {_level_text(cluster, lv['expert_parallel'])}"
                if lay.ep > 1
                else "none (EP 1)",
                f"{lay.etp} GPUs, {_level_text(cluster, lv['expert_tp'])}"
                if lay.etp > 1
                else "none (ETP 1)",
                _level_text(cluster, lv["handoff"]),
            ]
        )
    out = _table(
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
    out += _table(
        ["stage", "attention/MLP (ms)", "experts (ms)", "TP/EP comm (ms)", "hand-off (ms)"],
        [
            [str(st.stage), ms(st.compute_s), ms(st.experts_s), ms(st.comm_s), ms(st.handoff_s)]
            for st in e.stages
        ],
    )
    return out


def _estimates(plan: Plan, specs: PlanSpecs) -> list[str]:
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
    out = _table(["metric", "value"], rows)
    out += ["", "Per stage (one micro-batch when pp > 1):", ""]
    out += _table(
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


def _constraint_cells(c: Constraint) -> list[str]:
    if c.name.startswith("memory["):
        value, limit = f"{gb(c.value)} GB", f"{gb(c.limit)} GB"
    else:
        value, limit = _num(c.value), _num(c.limit)
    return [f"`{c.name}`", value, limit, _yes(c.holds), c.detail]


_FAMILY = re.compile(r"^([^\[]+)\[")


def _validation(plan: Plan) -> list[str]:
    cons = plan.certificate.constraints
    if not cons:
        return [
            "No layout was chosen, so the certificate holds no constraint instances; the "
            "search record below lists why each legal layout failed."
        ]
    families: dict[str, list[Constraint]] = {}
    for c in cons:
        m = _FAMILY.match(c.name)
        families.setdefault(m.group(1) if m else c.name, []).append(c)
    rows: list[list[str]] = []
    for fam, items in families.items():
        if len(items) <= MAX_ROWS:
            rows += [_constraint_cells(c) for c in items]
            continue
        failing = [c for c in items if not c.holds]
        tightest = max(
            items,
            key=lambda c: (not c.holds, c.value / c.limit if c.limit else c.value - c.limit),
        )
        cells = _constraint_cells(tightest)
        rows.append(
            [
                f"`{fam}[...]` ({len(items)} instances; tightest {tightest.name})",
                cells[1],
                cells[2],
                "yes, all" if not failing else f"**no**: {len(failing)} fail",
                tightest.detail,
            ]
        )
    out = _table(["constraint", "value", "limit", "holds", "detail"], rows)
    bad = [c for c in cons if not c.holds]
    out += [
        "",
        f"{len(cons)} constraint instances, "
        + ("all hold." if not bad else f"**{len(bad)} do not hold**.")
        + " `placer verify PLAN` recomputes every one of them with numpy, without the solver.",
    ]
    return out


def _entry_units(e: SearchEntry) -> int | None:
    return e.value_units if e.value_units is not None else e.bound_units


def _is_plan_entry(e: SearchEntry, lay: PlanLayout | None) -> bool:
    return (
        lay is not None
        and e.status in ("optimal", "feasible")
        and (e.tp, e.pp, e.ep, e.etp, e.dp_attn, e.gpus)
        == (lay.tp, lay.pp, lay.ep, lay.etp, lay.dp_attn, lay.gpus_used)
    )


def _search(plan: Plan) -> list[str]:
    s = plan.certificate.search
    entries = s.entries
    trusted = sum(1 for e in entries if e.status == "infeasible" and e.reason.startswith("CP-SAT"))
    aggregate = sum(
        1 for e in entries if e.status == "infeasible" and e.reason.startswith("memory")
    )
    rejected = ", ".join(f"{k}: {v}" for k, v in s.rejected_by_rule.items()) or "none"
    rows = [
        ["degree combinations considered", str(s.candidates)],
        ["legal under the rules profile", str(s.legal)],
        ["rejected by rule (first rule broken)", rejected],
        ["solved by CP-SAT", str(s.solved)],
        ["pruned by a bound", str(s.pruned)],
        [
            "infeasible",
            f"{s.infeasible} ({aggregate} by aggregate memory, re-checked by verify; "
            f"{trusted} by a CP-SAT proof, taken on trust)",
        ],
        ["unresolved", str(s.unresolved)],
    ]
    out = _table(["", "count"], rows)
    lay = plan.layout
    own = next((e for e in entries if _is_plan_entry(e, lay)), None)
    ref = own.value_units if own is not None else None
    objective = plan.objective.name
    others = [
        e
        for e in entries
        if e is not own
        and e.status in ("optimal", "feasible", "pruned")
        and _entry_units(e) is not None
    ]

    def key(e: SearchEntry) -> tuple[int, int]:
        units = _entry_units(e) or 0
        return (e.gpus, units) if objective == "gpus" else (units, e.gpus)

    others.sort(key=key)
    out.append("")
    if not others:
        out.append("No other layout was solved or pruned with a bound.")
        return out
    out.append(
        f"Runner-up layouts (the best {min(RUNNERS_UP, len(others))} others by value, or "
        "bound when pruned; times are the objective's step time):"
    )
    out.append("")
    runner_rows = []
    for e in others[:RUNNERS_UP]:
        units = _entry_units(e)
        assert units is not None
        kind = "value" if e.value_units is not None else "bound"
        text = f"{kind} {ms(units / TIME_SCALE)} ms"
        if objective == "gpus" and lay is not None and e.gpus != lay.gpus_used:
            why = f"uses {e.gpus} GPUs, the plan {lay.gpus_used}"
        elif ref is not None:
            diff = (units - ref) / ref if ref else 0.0
            if kind == "bound":
                why = (
                    f"its bound {ms(units / TIME_SCALE)} ms cannot beat the plan's "
                    f"{ms(ref / TIME_SCALE)} ms (+{pct(diff)})"
                )
            elif units > ref:
                why = (
                    f"slower: {ms(units / TIME_SCALE)} ms vs {ms(ref / TIME_SCALE)} ms "
                    f"(+{pct(diff)})"
                )
            else:
                why = (
                    f"ties at {ms(units / TIME_SCALE)} ms; lost on the tie-break (fewer GPUs, "
                    "then less peak memory)"
                )
        else:
            why = e.reason or "-"
        runner_rows.append([e.layout, str(e.gpus), e.status, text, why])
    out += _table(["layout", "GPUs", "status", "value or bound", "why it lost"], runner_rows)
    return out


def _why(plan: Plan) -> list[str]:
    inf = plan.infeasibility
    s = plan.certificate.search
    if inf is None:
        if plan.status == "unknown":
            return [
                f"No plan and no proof within the time limit: {s.unresolved} of {s.legal} legal "
                "layouts were left unresolved. Raise the time limit."
            ]
        return ["The plan records no explanation."]
    out = [f"- Reason: {inf.reason}"]
    out.append(
        "- Conflicting constraint families: "
        + ("; ".join(inf.conflicts) if inf.conflicts else "none recorded")
    )
    out.append(f"- Closest layout: {inf.closest_layout or 'none'}")
    closest = next((e for e in s.entries if e.layout == inf.closest_layout), None)
    if closest is not None and closest.reason:
        out.append(f"- Search record of the closest layout: {closest.reason}")
    return out


def _fixes(plan: Plan) -> list[str]:
    inf = plan.infeasibility
    if inf is None or not inf.fixes:
        return ["No fix was computed."]
    out = [f"- {fix}" for fix in inf.fixes]
    if inf.min_gpus is not None:
        out.append(f"- Fewest GPUs of this type that fit: {inf.min_gpus}.")
    return out


# ----------------------------------------------------------------- entry
def markdown_report(plan: Plan) -> str:
    """A Markdown report of ``plan``: what was chosen, why, and every number behind it.

    Parameters
    ----------
    plan
        A plan from :func:`placer.solve` or :func:`placer.load_plan`, with or
        without a layout.

    Returns
    -------
    str
        Markdown text with the ``##`` sections of :data:`SECTIONS` (and, for a
        plan without a layout, :data:`INFEASIBLE_SECTIONS`). GB are 1e9 bytes
        with two decimals, times are in ms with three decimals.

    Raises
    ------
    InvalidInputError
        If the plan's input copies do not validate.
    """
    specs = plan_specs(plan)
    lay = plan.layout
    title = f"# Deployment plan: {specs.model.name} on {specs.cluster.name}"
    intro = (
        "Every number below is read from the plan file or computed from it as stated; the "
        "speed figures are the plan's own roofline estimates, whose assumptions are listed."
    )
    sections: list[tuple[str, list[str]]] = [
        ("Summary", _summary(plan, specs)),
        *([("Serving", plan.serving.markdown_lines())] if plan.serving is not None else []),
        ("Hardware compatibility", _hardware(plan, specs)),
        ("Model compatibility", _model(plan, specs)),
        ("Memory per GPU", _memory(plan, specs)),
        ("Load balance", _load(plan, specs)),
        ("Communication", _communication(plan, specs)),
        ("Estimated latency and throughput", _estimates(plan, specs)),
        ("Validation checks", _validation(plan)),
        ("Search", _search(plan)),
    ]
    if lay is None:
        sections += [("Why it does not fit", _why(plan)), ("Smallest fix", _fixes(plan))]
    lines = [title, "", intro]
    for head, body in sections:
        lines += ["", f"## {head}", "", *body]
    return "\n".join(lines) + "\n"
