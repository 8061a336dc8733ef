"""Checks and notes every engine export shares: expert maps, attention heads, vocabulary,
FP8 blocks, launcher geometry and the link levels of the GPU order (docs/engine-rules.md)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from placer.engine_facts import (
    launch_violation,
)
from placer.export.common import (
    FP8_BLOCK,
    VOCAB_PAD,
    ExportError,
    _Ctx,
)
from placer.ledger import ExpertMap, default_expert_map, memory_ledger
from placer.topology import (
    balanced_counts,
    communication_levels,
    contiguous_slots,
    plan_phys,
)


# ------------------------------------------------------------------ expert maps
def _linear_map(experts: int, slots: int, ep: int, layers: Sequence[int]) -> ExpertMap:
    """Slot p holds logical p % E; ranks hold contiguous blocks, the first slots % ep one
    more (vLLM ``linear`` [V5], SGLang ``trivial`` [S7], TensorRT-LLM's default [T4])."""
    row = contiguous_slots(experts, balanced_counts(slots, ep))
    return dict.fromkeys(layers, row)


def _is_default_map(c: _Ctx) -> bool:
    default = _linear_map(c.experts, c.slots, c.lay.ep, sorted(c.plan.expert_map))
    return all(tuple(c.plan.expert_map[k]) == v for k, v in default.items())


def _check_default_map_fits(c: _Ctx, engine: str, why: str) -> None:
    """The engine places experts its own way: check the plan still fits, or raise."""
    if not c.plan.expert_map or _is_default_map(c):
        return
    model, cluster, workload = c.specs.model, c.specs.cluster, c.specs.workload
    layout = c.layout()
    led = memory_ledger(
        model,
        cluster,
        workload,
        layout,
        default_expert_map(model, layout),
        gpu_ids=[g.id for g in c.plan.gpus],
    )
    used, cap = led.used, led.capacity
    worst = int((used - cap).argmax())
    plan_peak = max(g.used_bytes for g in c.plan.gpus)
    if not led.fits:
        raise ExportError(
            f"{engine} cannot take the plan's expert map ({why}); under its default "
            f"placement GPU {int(led.gpu_ids[worst])} would need {used[worst] / 1e9:.2f} GB of "
            f"{cap[worst] / 1e9:.2f} GB usable"
        )
    c.notes.append(
        f"{engine} cannot take the plan's expert map ({why}); its default placement "
        f"(slot p holds expert p % {c.experts}, the first ranks one slot more) still fits: "
        f"peak {int(used.max()) / 1e9:.2f} GB per GPU vs the plan's {plan_peak / 1e9:.2f} GB, "
        f"{int(cap.min()) / 1e9:.2f} GB usable."
    )


def _slot_rows(c: _Ctx, engine: str, part: str) -> dict[int, list[int]]:
    """Per MoE layer, the logical expert of every slot in rank order; every rank must hold
    (E + R) / ep slots, since slot p sits on rank p // ((E + R) / ep)."""
    per = c.slots // c.lay.ep
    rows: dict[int, list[int]] = {}
    for layer, ranks in sorted(c.plan.expert_map.items()):
        counts = [len(r) for r in ranks]
        if any(n != per for n in counts):
            raise ExportError(
                f"{engine} {part} puts (E + R) / ep = {per} slots on every EP rank; the plan's "
                f"layer {layer} has {counts}"
            )
        rows[layer] = [e for r in ranks for e in r]
    return rows


# ------------------------------------------------------------------ common checks
def _check_attention(c: _Ctx, engine: str, attn_tp: int, source: str, kv_source: str) -> None:
    a = c.specs.model.attention
    if a is None:
        return
    if a.num_heads % attn_tp:
        raise ExportError(
            f"{engine} needs attention heads divisible by attention TP {source}: "
            f"{a.num_heads} heads over TP {attn_tp}"
        )
    k = a.num_kv_heads
    if a.kind != "mla" and k % attn_tp and attn_tp % k:
        raise ExportError(
            f"{engine} needs KV heads and attention TP to divide one another {kv_source}: "
            f"{k} KV heads, TP {attn_tp}"
        )


def _check_vocab(c: _Ctx, engine: str, tp: int, source: str) -> None:
    vocab = c.specs.model.vocab_size
    if not vocab:
        return
    padded = -(-vocab // VOCAB_PAD) * VOCAB_PAD
    if padded % tp:
        raise ExportError(
            f"{engine} pads the vocabulary to a multiple of {VOCAB_PAD} and splits it over "
            f"TP {source}: {padded} (from {vocab}) is not divisible by TP {tp}"
        )


def _check_fp8_block(c: _Ctx, engine: str, per_rank: int, source: str) -> None:
    model, workload = c.specs.model, c.specs.workload
    if model.moe is None or model.expert_dtype != "fp8":
        return
    if workload.expert_dtype not in (None, "fp8") or workload.weight_dtype not in (None, "fp8"):
        return
    if per_rank % FP8_BLOCK:
        raise ExportError(
            f"{engine} loads the FP8 block-quantized experts only when the per-rank MoE width is "
            f"a multiple of {FP8_BLOCK} {source}: {model.moe.expert_intermediate_size} split "
            f"gives {per_rank}"
        )


def _common_notes(c: _Ctx) -> None:
    model, workload = c.specs.model, c.specs.workload
    if workload.kv_dtype == "fp32":
        raise ExportError("the engines take no fp32 KV cache (docs/engine-rules.md lists none)")
    w = workload.weight_dtype
    if w is not None and w != model.dtype:
        c.notes.append(
            f"The plan assumes {w} weights but the checkpoint is {model.dtype}: serve a {w} "
            "checkpoint (no quantization flag is emitted: docs/engine-rules.md lists none)."
        )
    ex = workload.expert_dtype
    if ex is not None and ex != model.expert_dtype and ex != w:
        c.notes.append(
            f"The plan assumes {ex} experts but the checkpoint's are {model.expert_dtype}: serve "
            "a matching checkpoint."
        )
    limit = model.max_position_embeddings
    if limit is not None and workload.kv_tokens > limit:
        c.notes.append(
            f"The workload's context ({workload.kv_tokens} tokens) exceeds the model's "
            f"max_position_embeddings ({limit}); the engine will refuse it."
        )
    if workload.kv_dtype in ("bf16", "fp16") and workload.kv_dtype != workload.activation_dtype:
        c.notes.append(
            f"KV cache left at the engine's default ('auto', the model dtype): the same 2 bytes "
            f"per element as the planned {workload.kv_dtype}."
        )


def _check_launch(c: _Ctx, tp: int, dp: int) -> None:
    """The engine's launcher must start every rank on the node the plan puts it on."""
    why = launch_violation(c.rel, tp, c.lay.pp, dp, c.counts)
    if why is not None:
        raise ExportError(f"{why}; {c.rel.label} cannot run this plan as planned")


def _check_architecture(c: _Ctx) -> None:
    """The release must have a model class for the plan's architecture (when known)."""
    name = str(c.plan.inputs.model.get("name", ""))
    arch = c.arch
    if arch is None:
        c.notes.append(
            f"placer does not know the model class of {name!r}: whether {c.rel.label} has "
            "one is not checked (docs/engine-rules.md)."
        )
        return
    if arch not in c.rel.architectures:
        raise ExportError(
            f"{c.rel.label} has no model class for {arch} ({name}); source: "
            f"{c.rel.sources['architectures']}"
        )


def _level_note(
    c: _Ctx, engine: str, phys: Callable[[int, int], int], moe_ep_inner: bool, why: str
) -> None:
    cluster, lay = c.specs.cluster, c.lay
    planned = communication_levels(cluster, lay, plan_phys(c.plan))
    actual = communication_levels(cluster, lay, phys, moe_ep_inner)
    names = {
        "attention_tp": "attention TP",
        "expert_parallel": "EP all-to-all",
        "expert_tp": "expert TP",
        "handoff": "hand-off",
    }
    diffs = [
        f"stage {s} {name} at {ac[key]} instead of {pl[key]}"
        for s, (pl, ac) in enumerate(zip(planned, actual, strict=True))
        for key, name in names.items()
        if pl[key] != ac[key]
    ]
    if diffs:
        shown = "; ".join(diffs[:4]) + ("; ..." if len(diffs) > 4 else "")
        c.notes.append(
            f"{engine} {why}, so its GPU groups span other links than the plan's: {shown}. "
            "The plan's estimates assumed its own levels."
        )


def _stage_major(c: _Ctx, nodes: int) -> Callable[[int, int], int]:
    """Rank ``stage x width + position`` on node ``rank // (gpus / nodes)``."""
    k = c.gpus // nodes
    per_node = c.per_node

    def phys(stage: int, pos: int) -> int:
        rank = stage * c.width + pos
        return (rank // k) * per_node + rank % k

    return phys
