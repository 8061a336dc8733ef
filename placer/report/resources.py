"""The report's memory-per-GPU and load-balance sections."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from placer.evaluate import GPUReport
from placer.ledger import COLUMNS
from placer.model import ModelSpec
from placer.plan import Plan, PlanLayout
from placer.report.inputs import PlanSpecs
from placer.report.text import MAX_ROWS, gb, id_ranges, table
from placer.topology import plan_phys, stage_groups


# ----------------------------------------------------------------- memory
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


def memory(plan: Plan, specs: PlanSpecs) -> list[str]:
    """Bytes per GPU by column, peak, least headroom and what the KV cache is sized for."""
    if not plan.gpus:
        return ["No layout fits, so no GPU memory is planned (see 'Why it does not fit')."]
    cols = [c for c in COLUMNS if any(g.breakdown.get(c, 0) for g in plan.gpus)]
    zero = [c for c in COLUMNS if c not in cols]
    out = table(
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


# ----------------------------------------------------------------- load balance
@dataclass
class _SlotTally:
    """Slots and uniform-routing load per EP rank, summed over layers, and layers grouped by
    their slot counts per rank."""

    ep: int
    patterns: dict[tuple[int, ...], list[int]] = field(default_factory=dict)
    imbalance: dict[tuple[int, ...], list[float]] = field(default_factory=dict)
    rank_slots: list[int] = field(init=False)
    rank_load: list[float] = field(init=False)

    def __post_init__(self) -> None:
        self.rank_slots = [0] * self.ep
        self.rank_load = [0.0] * self.ep

    def add(self, layer: int, ranks: Sequence[Sequence[int]], experts: int) -> None:
        """Count one layer: each replica of an expert takes an equal share of its load."""
        counts = tuple(len(r) for r in ranks)
        self.patterns.setdefault(counts, []).append(layer)
        replicas: dict[int, int] = {}
        for r in ranks:
            for e in r:
                replicas[e] = replicas.get(e, 0) + 1
        share = [sum(1.0 / (experts * replicas[e]) for e in r) for r in ranks]
        mean = sum(share) / len(share)
        self.imbalance.setdefault(counts, []).append(max(share) / mean if mean else 1.0)
        for i, r in enumerate(ranks):
            self.rank_slots[i] += len(r)
            self.rank_load[i] += share[i]


def _tally(plan: Plan, lay: PlanLayout, model: ModelSpec) -> _SlotTally:
    tally = _SlotTally(lay.ep)
    for layer, ranks in sorted(plan.expert_map.items()):
        experts = model.experts_in_layer(layer) or max(max(r, default=0) for r in ranks) + 1
        tally.add(layer, ranks, experts)
    return tally


def _pattern_table(tally: _SlotTally) -> list[str]:
    rows = []
    for counts, layers in tally.patterns.items():
        mean = sum(counts) / len(counts)
        rows.append(
            [
                id_ranges(layers),
                " ".join(str(c) for c in counts)
                if len(counts) <= MAX_ROWS
                else f"{min(counts)}-{max(counts)} over {len(counts)} ranks",
                f"{max(counts)} / {mean:.2f} = {max(counts) / mean:.3f}",
                f"{max(tally.imbalance[counts]):.3f}",
            ]
        )
    return table(
        [
            "MoE layers",
            "slots per EP rank",
            "max / mean slots",
            "max / mean load (uniform routing)",
        ],
        rows,
    )


def _rank_table(plan: Plan, lay: PlanLayout, tally: _SlotTally) -> list[str]:
    phys = plan_phys(plan)
    g = stage_groups(lay)
    rows = []
    for k in range(lay.ep):
        members = sorted({phys(0, grp[k]) for grp in g.expert_parallel} if lay.ep > 1 else set())
        rows.append(
            [
                str(k),
                id_ranges(members) if members else f"all {lay.tp * lay.dp_attn} of the stage",
                str(tally.rank_slots[k]),
                f"{tally.rank_load[k] / len(plan.expert_map):.4f}",
            ]
        )
    return table(
        [
            "EP rank",
            "GPUs in stage 0",
            "slots over all MoE layers",
            "mean share of a layer's load",
        ],
        rows,
    )


def load_balance(plan: Plan, specs: PlanSpecs) -> list[str]:
    """Slots and uniform-routing load per EP rank, by layer pattern and over all layers."""
    lay = plan.layout
    if lay is None or not plan.expert_map:
        return ["No expert map: " + ("no layout was chosen." if lay is None else "no MoE layers.")]
    tally = _tally(plan, lay, specs.model)
    out = _pattern_table(tally)
    out.append("")
    if lay.ep <= MAX_ROWS:
        out += _rank_table(plan, lay, tally)
        out.append("")
    slots, load = tally.rank_slots, tally.rank_load
    total_mean = sum(load) / len(load)
    out.append(
        f"Over all {len(plan.expert_map)} MoE layers: max / mean slots per EP rank "
        f"{max(slots)} / {sum(slots) / len(slots):.2f}, max / mean load "
        f"{max(load) / total_mean:.3f}."
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
