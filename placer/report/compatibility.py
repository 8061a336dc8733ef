"""The report's model-compatibility section: what the model has and how the layout splits it."""

from __future__ import annotations

from placer.evaluate import Constraint
from placer.model import ModelSpec
from placer.plan import Plan, PlanLayout
from placer.report.inputs import PlanSpecs
from placer.report.text import id_ranges, num, table, yes
from placer.workload import Workload

Rows = list[list[str]]


def _layer_rows(model: ModelSpec, lay: PlanLayout | None) -> Rows:
    moe_layers = model.moe_layers
    return [
        [
            "layers",
            str(model.num_layers),
            f"PP {lay.pp}: {', '.join(map(str, lay.layers_per_stage))} per stage" if lay else "-",
            yes(sum(lay.layers_per_stage) == model.num_layers) if lay else "-",
        ],
        [
            "MoE layers",
            f"{len(moe_layers)} ({id_ranges(moe_layers)})" if moe_layers else "0",
            "-",
            "-",
        ],
    ]


def _expert_rows(model: ModelSpec, lay: PlanLayout | None) -> Rows:
    rows: Rows = []
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
    moe = model.moe
    if moe is None:
        return rows
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
            yes(width % lay.etp == 0) if lay else "-",
        ]
    )
    return rows


def _kv_head_row(kv_heads: int, lay: PlanLayout | None) -> list[str]:
    if not lay:
        return ["KV heads", str(kv_heads), "-", "-"]
    if lay.tp <= kv_heads:
        kv = f"TP {lay.tp}: {kv_heads // lay.tp} KV heads per GPU (split)"
        ok = kv_heads % lay.tp == 0
    else:
        kv = (
            f"TP {lay.tp} > {kv_heads}: one KV head per GPU, replicated {lay.tp // kv_heads} times"
        )
        ok = lay.tp % kv_heads == 0
    return ["KV heads", str(kv_heads), kv, yes(ok)]


def _attention_rows(model: ModelSpec, lay: PlanLayout | None) -> Rows:
    a = model.attention
    if a is None:
        return [["attention", "module list (sizes per module, no heads)", "-", "-"]]
    if lay:
        heads = f"TP {lay.tp}: {a.num_heads // lay.tp} query heads per GPU"
        heads_ok = yes(a.num_heads % lay.tp == 0)
    else:
        heads, heads_ok = "-", "-"
    rows = [["attention", f"{a.kind.upper()}, {a.num_heads} query heads", heads, heads_ok]]
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
        rows.append(_kv_head_row(a.num_kv_heads, lay))
    return rows


def _vocab_and_dtype_rows(model: ModelSpec, workload: Workload, lay: PlanLayout | None) -> Rows:
    rows: Rows = []
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
    return rows


def _rules_constraint(plan: Plan) -> Constraint | None:
    for c in plan.certificate.constraints:
        if c.name.startswith("rules["):
            return c
    return None


def _rules_verdict(plan: Plan) -> str:
    rc = _rules_constraint(plan)
    if rc is not None:
        verdict = "legal" if rc.holds else f"**violated**: {rc.detail}"
        return (
            f"Rules profile verdict (`{rc.name}`): {verdict} ({num(rc.value)} violations, "
            f"limit {num(rc.limit)})."
        )
    rejected = plan.certificate.search.rejected_by_rule
    text = ", ".join(f"{k}: {v}" for k, v in rejected.items()) or "none"
    return (
        f"Rules profile `{plan.certificate.solver.profile}`: no layout was chosen; "
        f"combinations rejected by rule: {text}."
    )


def model_compatibility(plan: Plan, specs: PlanSpecs) -> list[str]:
    """Each model property, how the layout splits it, and whether the split holds."""
    model, lay = specs.model, plan.layout
    rows = _layer_rows(model, lay)
    rows += _expert_rows(model, lay)
    rows += _attention_rows(model, lay)
    rows += _vocab_and_dtype_rows(model, specs.workload, lay)
    out = table(["property", "model", "layout", "holds"], rows)
    out += ["", _rules_verdict(plan)]
    if model.assumed:
        out.append("")
        out.append("Values the loader assumed rather than read from the model file:")
        out += [f"- `{x.field}` = {x.value}: {x.why}" for x in model.assumed]
    return out
