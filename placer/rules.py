"""Engine rules profiles as data, and the check of a layout against one.

Each profile says which degree combinations an engine accepts. The rules and
their sources are listed in the project's engine notes (docs/engine-rules.md, drawn
from vLLM ``vllm/config/parallel.py``, ``fused_moe/config.py``; SGLang
``server_args.py``, ``parallel_state.py``; Megatron-Core ``parallel_state.py``,
``arguments.py``). Paraphrased here:

- vLLM: heads % TP == 0; KV heads divide TP or TP divides them; with expert
  parallelism EP = TP x DP and MoE-TP = 1, otherwise each expert is TP-split
  over the whole stage; any expert count per EP rank (the first E % EP ranks
  take one more); redundant slots need EPLB and (E + R) % EP == 0; uneven
  pipeline splits through VLLM_PP_LAYER_PARTITION.
- SGLang: attention TP = tp / dp; ep x moe_tp == tp; (E + R) % ep == 0;
  DP attention needs tp % dp == 0; no MoE data parallelism (moe_dp > 1 only
  with attention context parallelism, which placer does not plan).
- vLLM and SGLang: TP may span nodes, and a multi-node layout must be one the
  engine's launcher starts rank for rank on the nodes the plan uses
  (:func:`placer.engine_facts.launch_violation`).

The engine-specific facts (TP across nodes, MoE data parallelism, launcher
geometry) are read from :mod:`placer.engine_facts` for the newest release
known; docs/engine-rules.md lists each with its source.
- Megatron-Core: E % EP == 0; heads % TP == 0; expert TP free (folding).
- generic: what any engine must satisfy (heads split evenly, KV heads divide or
  are divided, every slot holds a whole expert or an even shard of one).
"""

from __future__ import annotations

from pydantic import Field

from placer._base import Frozen
from placer.cluster import ClusterSpec
from placer.engine_facts import launch_violation, node_counts, release
from placer.layout import Layout
from placer.model import ModelSpec


class RulesProfile(Frozen):
    """Which layouts an engine can run."""

    name: str = Field(description="Profile name.")
    heads_divisible: bool = Field(description="Query heads must divide evenly over attention TP.")
    kv_heads_rule: bool = Field(
        description="KV heads divide TP or TP divides KV heads (vLLM QKVParallelLinear)."
    )
    experts_divisible: bool = Field(description="(E + R) % EP == 0 is required.")
    ep_fills_stage: bool = Field(
        description="With EP > 1, EP must equal the stage width and expert TP 1 (vLLM)."
    )
    expert_tp_allowed: bool = Field(description="Experts may be TP-split while EP > 1.")
    dp_attention: bool = Field(description="Data-parallel attention inside a stage is supported.")
    uneven_pp: bool = Field(description="Stages may hold different numbers of layers.")
    redundant_experts: bool = Field(description="Extra expert slots (replicas) are supported.")
    tp_within_scale_up: bool = Field(
        description="A TP group must stay inside one scale-up domain (placer's default policy: "
        "TP across InfiniBand is legal in every engine but never competitive)."
    )
    intermediate_divisible: bool = Field(
        description="Expert and MLP widths must divide evenly over their TP degree."
    )
    expert_dp: bool = Field(
        default=True,
        description="Experts may be replicated inside a stage (ep x etp < the stage width).",
    )
    engine: str | None = Field(
        default=None,
        description="Engine whose launcher geometry applies (placer.engine_facts), or None.",
    )


_VLLM = release("vllm")
_SGLANG = release("sglang")

PROFILES: dict[str, RulesProfile] = {
    "generic": RulesProfile(
        name="generic",
        heads_divisible=True,
        kv_heads_rule=True,
        experts_divisible=False,
        ep_fills_stage=False,
        expert_tp_allowed=True,
        dp_attention=True,
        uneven_pp=True,
        redundant_experts=True,
        tp_within_scale_up=True,
        intermediate_divisible=True,
    ),
    "vllm": RulesProfile(
        name="vllm",
        heads_divisible=True,
        kv_heads_rule=True,
        experts_divisible=False,
        ep_fills_stage=True,
        expert_tp_allowed=False,
        dp_attention=True,
        uneven_pp=True,
        redundant_experts=True,
        tp_within_scale_up=not _VLLM.tp_across_nodes,
        intermediate_divisible=True,
        expert_dp=_VLLM.expert_dp,
        engine="vllm",
    ),
    "sglang": RulesProfile(
        name="sglang",
        heads_divisible=True,
        kv_heads_rule=True,
        experts_divisible=True,
        ep_fills_stage=False,
        expert_tp_allowed=True,
        dp_attention=True,
        uneven_pp=True,
        redundant_experts=True,
        tp_within_scale_up=not _SGLANG.tp_across_nodes,
        intermediate_divisible=True,
        expert_dp=_SGLANG.expert_dp,
        engine="sglang",
    ),
    "megatron": RulesProfile(
        name="megatron",
        heads_divisible=True,
        kv_heads_rule=True,
        experts_divisible=True,
        ep_fills_stage=False,
        expert_tp_allowed=True,
        dp_attention=True,
        uneven_pp=True,
        redundant_experts=False,
        tp_within_scale_up=True,
        intermediate_divisible=True,
    ),
}


def get_profile(name: str) -> RulesProfile:
    """The profile called ``name``.

    Raises
    ------
    KeyError
        With the list of known profiles.
    """
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(
            f"unknown rules profile '{name}'; choose one of {', '.join(PROFILES)}"
        ) from None


def layout_violations(
    model: ModelSpec, cluster: ClusterSpec, layout: Layout, profile: RulesProfile
) -> list[str]:
    """Every reason ``layout`` is not legal for this model, cluster and profile (empty: legal)."""
    return [
        *_size_violations(model, cluster, layout, profile),
        *_attention_violations(model, layout, profile),
        *_expert_violations(model, layout, profile),
        *_placement_violations(cluster, layout, profile),
    ]


def _size_violations(
    model: ModelSpec, cluster: ClusterSpec, layout: Layout, profile: RulesProfile
) -> list[str]:
    """GPUs, stages and the layer split."""
    out: list[str] = []
    if layout.gpus > cluster.num_gpus:
        out.append(f"layout needs {layout.gpus} GPUs, the cluster has {cluster.num_gpus}")
    if layout.pp > model.num_layers:
        out.append(f"pp ({layout.pp}) exceeds the {model.num_layers} layers")
    if layout.layers_per_stage is not None:
        if sum(layout.layers_per_stage) != model.num_layers:
            out.append(
                f"layers_per_stage sums to {sum(layout.layers_per_stage)}, "
                f"the model has {model.num_layers} layers"
            )
        even = layout.model_copy(update={"layers_per_stage": None}).stage_layers(model.num_layers)
        if not profile.uneven_pp and tuple(len(s) for s in even) != layout.layers_per_stage:
            out.append(f"profile '{profile.name}' does not take an explicit layer split")
    return out


def _attention_violations(model: ModelSpec, layout: Layout, profile: RulesProfile) -> list[str]:
    """Heads and KV heads against tp, and data-parallel attention."""
    out: list[str] = []
    a = model.attention
    if a is not None:
        if profile.heads_divisible and a.num_heads % layout.tp:
            out.append(f"attention heads ({a.num_heads}) are not divisible by tp ({layout.tp})")
        k = a.num_kv_heads
        if a.kind != "mla" and profile.kv_heads_rule and k % layout.tp and layout.tp % k:
            out.append(
                f"KV heads ({k}) and tp ({layout.tp}) must divide one another "
                "(KV heads split, or replicate when tp > KV heads)"
            )
    if layout.dp_attn > 1 and not profile.dp_attention:
        out.append(f"profile '{profile.name}' has no data-parallel attention")
    return out


def _expert_violations(model: ModelSpec, layout: Layout, profile: RulesProfile) -> list[str]:
    """Expert slots over EP ranks, redundant slots, and how experts are split."""
    experts = model.max_experts
    if experts == 0:
        return ["ep > 1 on a model without experts"] if layout.ep > 1 else []
    return [
        *_slot_violations(experts, layout, profile),
        *_expert_split_violations(model, layout, profile),
    ]


def _slot_violations(experts: int, layout: Layout, profile: RulesProfile) -> list[str]:
    out: list[str] = []
    slots = experts + layout.redundant_experts
    if layout.ep > slots:
        out.append(f"ep ({layout.ep}) exceeds the {slots} expert slots per layer")
    if -(-slots // layout.ep) > experts:
        out.append(
            f"{slots} slots over ep {layout.ep} put more slots on a rank than there are "
            f"experts ({experts}): a GPU would hold two copies of one expert"
        )
    if profile.experts_divisible and slots % layout.ep:
        out.append(f"expert slots ({slots}) are not divisible by ep ({layout.ep})")
    if layout.redundant_experts:
        if not profile.redundant_experts:
            out.append(f"profile '{profile.name}' does not support redundant expert slots")
        elif profile.name == "vllm" and slots % layout.ep:
            out.append(f"vLLM needs (experts + redundant) % ep == 0 ({slots} % {layout.ep})")
        if layout.ep == 1:
            out.append("redundant expert slots need ep > 1")
    return out


def _expert_split_violations(model: ModelSpec, layout: Layout, profile: RulesProfile) -> list[str]:
    out: list[str] = []
    width, ep, etp = layout.stage_width, layout.ep, layout.expert_tp
    if profile.ep_fills_stage and ep > 1 and (ep != width or etp != 1):
        out.append(
            f"profile '{profile.name}' runs experts either TP-split over the whole stage "
            f"(ep=1) or with ep = tp x dp_attn = {width} and etp = 1"
        )
    if profile.ep_fills_stage and ep == 1 and etp != width:
        out.append(
            f"profile '{profile.name}' splits experts over the whole stage when ep = 1 "
            f"(etp must be {width})"
        )
    if not profile.expert_dp and ep * etp != width:
        out.append(
            f"profile '{profile.name}' has no MoE data parallelism: ep x etp "
            f"({ep} x {etp}) must equal the stage width {width}"
        )
    if not profile.expert_tp_allowed and ep > 1 and etp > 1:
        out.append(f"profile '{profile.name}' has no expert TP with ep > 1")
    if profile.intermediate_divisible and model.moe is not None:
        expert_width = model.moe.expert_intermediate_size
        if expert_width % etp:
            out.append(f"expert width ({expert_width}) is not divisible by expert tp ({etp})")
    return out


def _placement_violations(
    cluster: ClusterSpec, layout: Layout, profile: RulesProfile
) -> list[str]:
    """TP groups inside the scale-up domain, and whether the engine can launch the layout."""
    out: list[str] = []
    # A stage's TP groups are consecutive GPUs: they stay in one domain when tp
    # divides the domain size.
    if profile.tp_within_scale_up and (
        layout.tp > cluster.scale_up_domain or cluster.scale_up_domain % layout.tp
    ):
        out.append(
            f"tp ({layout.tp}) groups would leave the scale-up domain of "
            f"{cluster.scale_up_domain} GPUs"
        )
    if profile.engine is not None and layout.gpus <= cluster.num_gpus:
        rel = release(profile.engine)
        # The engine's own TP and DP degrees (see placer.export for the mapping).
        tp, dp = (
            (layout.tp, layout.dp_attn) if profile.engine == "vllm" else (layout.stage_width, 1)
        )
        why = launch_violation(
            rel, tp, layout.pp, dp, node_counts(list(range(layout.gpus)), cluster.gpus_per_node)
        )
        if why is not None:
            out.append(why)
    return out
