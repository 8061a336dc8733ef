"""Derive the block list (weights, sharding rule, FLOPs) from a :class:`ModelSpec`.

Sharding rules follow what vLLM and SGLang do at inference (docs/design.md, memory
ledger): column/row-parallel projections split over TP; key/value projections
split by KV head and replicate when TP exceeds the KV heads (vLLM
``QKVParallelLinear``); MLA down-projections (``q_a_proj``,
``kv_a_proj_with_mqa``) and all norms and routers are replicated; embeddings
and the LM head are vocab-parallel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, PositiveInt

from placer._base import Frozen

if TYPE_CHECKING:
    from placer.model import AttentionSpec, MambaSpec, ModelSpec


BlockKind = Literal[
    "embedding",
    "lm_head",
    "attention",
    "mamba",
    "dense_mlp",
    "shared_expert",
    "expert",
    "router",
    "norm",
]
ShardRule = Literal["tp", "kv_heads", "vocab", "replicated", "expert"]


class Block(Frozen):
    """A group of identical weights placed and sharded together.

    ``count`` is the number of instances (the experts of a layer); ``params``
    and ``flops_per_token`` are per instance.
    """

    name: str = Field(description="Readable name, unique within the model.")
    kind: BlockKind = Field(description="What the block is.")
    layer: int | None = Field(description="Layer index, None for embeddings and the final norm.")
    params: int = Field(ge=0, description="Parameters of one instance.")
    count: PositiveInt = Field(default=1, description="Identical instances (experts).")
    shard: ShardRule = Field(description="How tensor/expert parallelism splits the block.")
    quantized: bool = Field(
        description="Stored in the workload's weight dtype (linear layers) or kept 16-bit."
    )
    flops_per_token: int = Field(ge=0, description="Weight FLOPs per token per instance.")
    kv_heads: int = Field(
        default=0, ge=0, description="For shard='kv_heads': the KV heads the params span."
    )


def _block(
    name: str,
    kind: BlockKind,
    layer: int | None,
    params: int,
    shard: ShardRule,
    *,
    quantized: bool = True,
    count: int = 1,
    kv_heads: int = 0,
    matmul: bool = True,
) -> Block:
    # A weight used in a matrix product costs 2 FLOPs (multiply + add) per token.
    return Block(
        name=name,
        kind=kind,
        layer=layer,
        params=params,
        count=count,
        shard=shard,
        quantized=quantized,
        flops_per_token=2 * params if matmul else 0,
        kv_heads=kv_heads,
    )


def _attention_blocks(a: AttentionSpec, h: int, layer: int) -> list[Block]:
    p = f"L{layer}.attn"
    out: list[Block] = []
    norms = 0
    if a.kind == "mla":
        assert a.kv_lora_rank and a.qk_nope_head_dim and a.qk_rope_head_dim and a.v_head_dim
        qk = a.qk_nope_head_dim + a.qk_rope_head_dim
        if a.q_lora_rank:
            out.append(_block(f"{p}.q_a", "attention", layer, h * a.q_lora_rank, "replicated"))
            out.append(
                _block(f"{p}.q_b", "attention", layer, a.q_lora_rank * a.num_heads * qk, "tp")
            )
            norms += a.q_lora_rank
        else:
            out.append(_block(f"{p}.q", "attention", layer, h * a.num_heads * qk, "tp"))
        # The latent KV projection is shared by all heads: every TP rank holds it whole.
        kv_a = h * (a.kv_lora_rank + a.qk_rope_head_dim)
        out.append(_block(f"{p}.kv_a", "attention", layer, kv_a, "replicated"))
        kv_b = a.kv_lora_rank * a.num_heads * (a.qk_nope_head_dim + a.v_head_dim)
        out.append(_block(f"{p}.kv_b", "attention", layer, kv_b, "tp"))
        out.append(_block(f"{p}.o", "attention", layer, a.num_heads * a.v_head_dim * h, "tp"))
        norms += a.kv_lora_rank
    else:
        q_width = a.num_heads * a.head_dim
        kv_width = a.num_kv_heads * a.head_dim
        q = h * q_width + (q_width if a.qkv_bias else 0)
        kv = 2 * (h * kv_width + (kv_width if a.qkv_bias else 0))
        o = q_width * h + (h if a.o_bias else 0)
        out.append(_block(f"{p}.q", "attention", layer, q, "tp"))
        out.append(_block(f"{p}.kv", "attention", layer, kv, "kv_heads", kv_heads=a.num_kv_heads))
        out.append(_block(f"{p}.o", "attention", layer, o, "tp"))
        if a.qk_norm == "head":
            norms += 2 * a.head_dim
        elif a.qk_norm == "full":
            norms += q_width + kv_width
        if a.sinks:
            # One learned sink logit per head, split with the heads.
            out.append(
                _block(
                    f"{p}.sinks",
                    "attention",
                    layer,
                    a.num_heads,
                    "tp",
                    quantized=False,
                    matmul=False,
                )
            )
    if norms:
        out.append(
            _block(f"{p}.norms", "norm", layer, norms, "replicated", quantized=False, matmul=False)
        )
    return out


def _mamba_blocks(m: MambaSpec, h: int, layer: int) -> list[Block]:
    d_inner = m.expand * h
    p = f"L{layer}.mamba"
    in_proj = h * 2 * d_inner + (2 * d_inner if m.proj_bias else 0)
    x_proj = d_inner * (m.dt_rank + 2 * m.d_state)
    dt_proj = m.dt_rank * d_inner + d_inner
    out_proj = d_inner * h + (h if m.proj_bias else 0)
    # Conv, A_log and D are per channel: sharded with the channels, but not matmuls.
    per_channel = (
        d_inner * m.d_conv + (d_inner if m.conv_bias else 0) + d_inner * m.d_state + d_inner
    )
    blocks = [
        _block(f"{p}.in_proj", "mamba", layer, in_proj, "tp"),
        _block(f"{p}.x_proj", "mamba", layer, x_proj, "tp"),
        _block(f"{p}.dt_proj", "mamba", layer, dt_proj, "tp"),
        _block(f"{p}.out_proj", "mamba", layer, out_proj, "tp"),
        _block(f"{p}.ssm", "mamba", layer, per_channel, "tp", quantized=False, matmul=False),
    ]
    if m.inner_norms:
        norms = m.dt_rank + 2 * m.d_state
        blocks.append(
            _block(f"{p}.norms", "norm", layer, norms, "replicated", quantized=False, matmul=False)
        )
    return blocks


def _mlp_params(h: int, width: int, gated: bool) -> int:
    return (3 if gated else 2) * h * width


def build_blocks(spec: ModelSpec) -> tuple[Block, ...]:
    """The blocks of ``spec``: one per weight group per layer, experts grouped by layer."""
    if spec.modules is not None:
        return tuple(
            Block(
                name=m.name,
                kind=m.kind,
                layer=m.layer,
                params=m.params,
                shard=_module_shard(m.kind),
                quantized=m.kind not in ("norm", "router", "embedding", "lm_head"),
                flops_per_token=m.flops_per_token,
            )
            for m in spec.modules
        )
    h = spec.hidden_size
    out: list[Block] = [
        _block(
            "embedding",
            "embedding",
            None,
            spec.vocab_size * h,
            "vocab",
            quantized=False,
            matmul=False,
        )
    ]
    for i, layer in enumerate(spec.layers):
        norms = (2 + spec.extra_norms_per_layer) * h
        out.append(
            _block(f"L{i}.norms", "norm", i, norms, "replicated", quantized=False, matmul=False)
        )
        if layer.mixer == "attention":
            assert spec.attention is not None
            out.extend(_attention_blocks(spec.attention, h, i))
        else:
            assert spec.mamba is not None
            out.extend(_mamba_blocks(spec.mamba, h, i))
        if layer.ffn == "dense":
            assert spec.dense_intermediate_size is not None
            params = _mlp_params(h, spec.dense_intermediate_size, spec.gated_mlp)
            out.append(_block(f"L{i}.mlp", "dense_mlp", i, params, "tp"))
            continue
        moe = spec.moe
        assert moe is not None
        router = h * moe.num_experts + (moe.num_experts if moe.router_bias else 0)
        out.append(_block(f"L{i}.router", "router", i, router, "replicated", quantized=False))
        expert = _mlp_params(h, moe.expert_intermediate_size, spec.gated_mlp)
        if moe.expert_bias:
            expert += (2 if spec.gated_mlp else 1) * moe.expert_intermediate_size + h
        out.append(_block(f"L{i}.experts", "expert", i, expert, "expert", count=moe.num_experts))
        if moe.num_shared_experts:
            shared = _mlp_params(h, moe.shared_intermediate_size, spec.gated_mlp)
            out.append(_block(f"L{i}.shared", "shared_expert", i, shared, "tp"))
            if moe.shared_expert_gate:
                out.append(
                    _block(f"L{i}.shared_gate", "router", i, h, "replicated", quantized=False)
                )
    out.append(_block("final_norm", "norm", None, h, "replicated", quantized=False, matmul=False))
    if not spec.tie_word_embeddings:
        out.append(
            _block("lm_head", "lm_head", None, spec.vocab_size * h, "vocab", quantized=False)
        )
    return tuple(out)


def _module_shard(kind: BlockKind) -> ShardRule:
    """Sharding of an explicit module: attention, MLPs and Mamba split over TP."""
    if kind == "expert":
        return "expert"
    if kind in ("embedding", "lm_head"):
        return "vocab"
    if kind in ("norm", "router"):
        return "replicated"
    return "tp"
