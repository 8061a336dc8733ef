"""Read a Hugging Face ``config.json`` (as published) into a :class:`ModelSpec`.

Each supported family is recognised by ``model_type`` (DBRX and Grok-1 also by
their native field names) and read by its own reader (:data:`READERS`, or the
whole-model readers of DBRX and Grok-1, whose configs use other field names).
Every field read is recorded, and every value that had to be assumed is listed in
``ModelSpec.assumed`` so ``placer inspect`` can show it (placer/hf_fields.py).
Layer rules follow the reference implementations (cited per family):

- DeepSeek-V2/V3, Kimi-K2, GLM-4.5: layer ``i`` is MoE iff
  ``i >= first_k_dense_replace and i % moe_layer_freq == 0``.
- Qwen2-MoE/Qwen3-MoE: MoE iff ``i not in mlp_only_layers and (i+1) % decoder_sparse_step == 0``.
- Llama-4: MoE iff ``(i+1) % interleave_moe_layer_step == 0``.
- Jamba: attention iff ``i % attn_layer_period == attn_layer_offset``, MoE iff
  ``i % expert_layer_period == expert_layer_offset``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from placer.dtypes import HF_DTYPE_NAMES
from placer.exceptions import InvalidInputError
from placer.hf_fields import (
    ConfigReader,
    check_heads,
    layer_specs,
    read_gqa,
    read_moe,
)
from placer.limits import MAX_LAYERS
from placer.model import Assumption, AttentionSpec, MambaSpec, ModelSpec, MoESpec

#: model_type values understood, with the family each belongs to.
FAMILIES: dict[str, str] = {
    "mixtral": "mixtral",
    "qwen2_moe": "qwen2_moe",
    "qwen3_moe": "qwen3_moe",
    "deepseek_v2": "deepseek",
    "deepseek_v3": "deepseek",
    "kimi_k2": "deepseek",
    "glm4_moe": "glm4_moe",
    "dbrx": "dbrx",
    "olmoe": "olmoe",
    "gpt_oss": "gpt_oss",
    "llama4": "llama4",
    "llama4_text": "llama4",
    "phimoe": "phimoe",
    "jamba": "jamba",
    "grok-1": "grok1",
}


def detect_family(raw: dict[str, Any]) -> str | None:
    """The family of a config, or None when it is not a known MoE config."""
    mt = raw.get("model_type")
    if isinstance(mt, str) and mt in FAMILIES:
        return FAMILIES[mt]
    if "_native" in raw and "num_selected_experts" in raw and "emb_size" in raw:
        return "grok1"
    if "ffn_config" in raw and "d_model" in raw:
        return "dbrx"
    return None


def _dtype(r: ConfigReader) -> tuple[str, str]:
    """(non-expert dtype, expert dtype) of the published checkpoint."""
    name = r.raw.get("torch_dtype", r.raw.get("dtype"))
    q = r.raw.get("quantization_config")
    if isinstance(name, str) and name in HF_DTYPE_NAMES:
        r.read.append(r._loc("torch_dtype" if "torch_dtype" in r.raw else "dtype"))
        base = HF_DTYPE_NAMES[name]
    else:
        r.assumed.append(
            Assumption(
                field=r._loc("torch_dtype"),
                value="'bf16'",
                why="no dtype in the config; bf16 is how MoE checkpoints are published",
            )
        )
        base = "bf16"
    if isinstance(q, dict):
        r.read.append(r._loc("quantization_config"))
        method = str(q.get("quant_method", ""))
        if method == "fp8":
            return "fp8", "fp8"
        if method == "mxfp4":
            # gpt-oss: only the routed experts are MXFP4; attention stays bf16.
            return base, "mxfp4"
    return base, base


@dataclass
class _Body:
    """What a family reader returns: the layer pattern and the blocks that differ by family."""

    is_moe: list[bool]
    moe: MoESpec
    attention: AttentionSpec
    dense_width: int | None = None
    mixers: list[str] | None = None
    windows: list[int | None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _dense_width(
    r: ConfigReader, is_moe: list[bool], key: str = "intermediate_size"
) -> int | None:
    """The dense MLP width, read only when some layer is dense."""
    return r.req(key) if not all(is_moe) else None


def _deepseek_moe(
    r: ConfigReader, n: int, correction_bias: bool | None = None
) -> tuple[list[bool], MoESpec]:
    """DeepSeek-style layer pattern and routed/shared experts (DeepSeek, Kimi-K2, GLM-4.5):
    layer ``i`` is MoE iff ``i >= first_k_dense_replace and i % moe_layer_freq == 0``."""
    first_dense = r.opt("first_k_dense_replace", 0, "no leading dense layers", kind="index")
    first_dense = 0 if first_dense is None else first_dense
    freq = r.opt("moe_layer_freq", 1, "every layer after the dense ones is MoE")
    is_moe = [i >= first_dense and i % freq == 0 for i in range(n)]
    width = r.req("moe_intermediate_size")
    n_shared = r.opt("n_shared_experts", 0, "no shared experts", kind="index")
    moe = read_moe(
        r,
        "n_routed_experts",
        expert_intermediate_size=width,
        num_shared_experts=n_shared,
        shared_intermediate_size=n_shared * width,
        router_bias=(
            r.get("topk_method") == "noaux_tc" if correction_bias is None else correction_bias
        ),
        n_group=r.get("n_group"),
        topk_group=r.get("topk_group"),
    )
    return is_moe, moe


def _read_deepseek(r: ConfigReader, n: int, h: int) -> _Body:
    """DeepSeek-V2/V3 and Kimi-K2: MLA attention."""
    is_moe, moe = _deepseek_moe(r, n)
    dense_width = _dense_width(r, is_moe)
    heads = r.req("num_attention_heads")
    kv = r.opt("num_key_value_heads", heads, "MLA has one KV head per head")
    check_heads(r, "num_attention_heads", heads, r, "num_key_value_heads", kv)
    attn = AttentionSpec(
        kind="mla",
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=r.req("qk_nope_head_dim") + r.req("qk_rope_head_dim"),
        q_lora_rank=r.get("q_lora_rank"),
        kv_lora_rank=r.req("kv_lora_rank"),
        qk_nope_head_dim=r.req("qk_nope_head_dim"),
        qk_rope_head_dim=r.req("qk_rope_head_dim"),
        v_head_dim=r.req("v_head_dim"),
    )
    return _Body(is_moe, moe, attn, dense_width)


def _read_glm4_moe(r: ConfigReader, n: int, h: int) -> _Body:
    """GLM-4.5: DeepSeek's layer pattern with grouped-query attention. Its router always
    holds the score-correction bias (transformers' Glm4MoeTopkRouter, a DeepseekV3TopkRouter;
    the checkpoint stores ``e_score_correction_bias``), though the config has no
    ``topk_method``."""
    is_moe, moe = _deepseek_moe(r, n, correction_bias=True)
    dense_width = _dense_width(r, is_moe)
    attn = read_gqa(
        r,
        hidden=h,
        qkv_bias=bool(r.get("attention_bias", False)),
        qk_norm="head" if r.get("use_qk_norm") else "none",
    )
    return _Body(is_moe, moe, attn, dense_width)


def _qwen_moe(r: ConfigReader, n: int) -> tuple[list[bool], MoESpec, int | None]:
    """Qwen2/3-MoE: MoE iff ``i not in mlp_only_layers and (i+1) % decoder_sparse_step == 0``."""
    step = r.opt("decoder_sparse_step", 1, "every layer is sparse")
    mlp_only_list = r.get("mlp_only_layers", []) or []
    if not isinstance(mlp_only_list, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in mlp_only_list
    ):
        raise InvalidInputError(
            "must be a list of layer indices", r.source, r._loc("mlp_only_layers")
        )
    mlp_only = set(mlp_only_list)
    is_moe = [i not in mlp_only and (i + 1) % step == 0 for i in range(n)]
    shared_w = r.get("shared_expert_intermediate_size", 0) or 0
    moe = read_moe(
        r,
        "num_experts",
        expert_intermediate_size=r.req("moe_intermediate_size"),
        num_shared_experts=1 if shared_w else 0,
        shared_intermediate_size=shared_w,
        shared_expert_gate=bool(shared_w),
    )
    return is_moe, moe, _dense_width(r, is_moe)


def _read_qwen2_moe(r: ConfigReader, n: int, h: int) -> _Body:
    """Qwen2-MoE always has q/k/v biases (transformers Qwen2MoeAttention)."""
    is_moe, moe, dense_width = _qwen_moe(r, n)
    return _Body(is_moe, moe, read_gqa(r, hidden=h, qkv_bias=True), dense_width)


def _read_qwen3_moe(r: ConfigReader, n: int, h: int) -> _Body:
    """Qwen3-MoE: per-head q/k norms."""
    is_moe, moe, dense_width = _qwen_moe(r, n)
    qkv_bias = bool(r.get("attention_bias", False))
    return _Body(
        is_moe, moe, read_gqa(r, hidden=h, qkv_bias=qkv_bias, qk_norm="head"), dense_width
    )


def _all_moe(
    r: ConfigReader, n: int, experts_key: str, biases: bool = False
) -> tuple[list[bool], MoESpec]:
    """Every layer MoE, expert width ``intermediate_size``."""
    moe = read_moe(
        r,
        experts_key,
        expert_intermediate_size=r.req("intermediate_size"),
        router_bias=biases,
        expert_bias=biases,
    )
    return [True] * n, moe


def _read_mixtral(r: ConfigReader, n: int, h: int) -> _Body:
    """Mixtral: every layer MoE, plain grouped-query attention."""
    is_moe, moe = _all_moe(r, n, "num_local_experts")
    return _Body(is_moe, moe, read_gqa(r, hidden=h))


def _read_phimoe(r: ConfigReader, n: int, h: int) -> _Body:
    """Phi-3.5-MoE: ``attention_bias`` on q/k/v and the output projection."""
    is_moe, moe = _all_moe(r, n, "num_local_experts")
    bias = bool(r.get("attention_bias", False))
    return _Body(is_moe, moe, read_gqa(r, hidden=h, qkv_bias=bias, o_bias=bias))


def _read_olmoe(r: ConfigReader, n: int, h: int) -> _Body:
    """OLMoE: full-width q/k norms."""
    is_moe, moe = _all_moe(r, n, "num_experts")
    return _Body(is_moe, moe, read_gqa(r, hidden=h, qk_norm="full"))


def _read_gpt_oss(r: ConfigReader, n: int, h: int) -> _Body:
    """gpt-oss: biased router and experts, attention sinks, sliding-window layers."""
    is_moe, moe = _all_moe(r, n, "num_local_experts", biases=True)
    types = r.get("layer_types") or ["full_attention"] * n
    if not isinstance(types, list) or len(types) != n:
        raise InvalidInputError(
            f"must be a list of {n} layer types, one per layer (num_hidden_layers)",
            r.source,
            r._loc("layer_types"),
        )
    window = r.get("sliding_window")
    if window is not None and "sliding_attention" in types:
        window = r._typed("sliding_window", window, int)
    windows = [window if t == "sliding_attention" else None for t in types]
    attn = read_gqa(r, hidden=h, qkv_bias=True, o_bias=True, sinks=True)
    return _Body(is_moe, moe, attn, windows=windows)


def _read_llama4(r: ConfigReader, n: int, h: int) -> _Body:
    """Llama-4: MoE iff ``(i+1) % interleave_moe_layer_step == 0``, one shared expert."""
    step = r.opt("interleave_moe_layer_step", 1, "every layer is MoE")
    is_moe = [(i + 1) % step == 0 for i in range(n)]
    width = r.req("intermediate_size")
    moe = read_moe(
        r,
        "num_local_experts",
        expert_intermediate_size=width,
        num_shared_experts=1,
        shared_intermediate_size=width,
    )
    dense_width = _dense_width(r, is_moe, "intermediate_size_mlp")
    attn = read_gqa(r, hidden=h, qkv_bias=bool(r.get("attention_bias", False)))
    return _Body(is_moe, moe, attn, dense_width)


def _read_jamba(r: ConfigReader, n: int, h: int) -> _Body:
    """Jamba: attention iff ``i % attn_layer_period == attn_layer_offset``, MoE iff
    ``i % expert_layer_period == expert_layer_offset``, Mamba mixers elsewhere."""
    a_per = r.req("attn_layer_period")
    a_off = r.opt("attn_layer_offset", 0, "transformers' JambaConfig default", kind="index") or 0
    e_per = r.req("expert_layer_period")
    e_off = r.opt("expert_layer_offset", 0, "transformers' JambaConfig default", kind="index") or 0
    is_moe = [i % e_per == e_off for i in range(n)]
    mixers = ["attention" if i % a_per == a_off else "mamba" for i in range(n)]
    width = r.req("intermediate_size")
    moe = read_moe(r, "num_experts", expert_intermediate_size=width)
    attn = read_gqa(r, hidden=h)
    mamba = MambaSpec(
        d_state=r.req("mamba_d_state"),
        d_conv=r.req("mamba_d_conv"),
        expand=r.req("mamba_expand"),
        dt_rank=r.req("mamba_dt_rank"),
        conv_bias=bool(r.get("mamba_conv_bias", True)),
        proj_bias=bool(r.get("mamba_proj_bias", False)),
    )
    return _Body(is_moe, moe, attn, width, mixers=mixers, extra={"mamba": mamba})


#: One reader per family whose config has the common transformer fields
#: (``num_hidden_layers``, ``hidden_size``, ``vocab_size``).
READERS: dict[str, Callable[[ConfigReader, int, int], _Body]] = {
    "deepseek": _read_deepseek,
    "glm4_moe": _read_glm4_moe,
    "qwen2_moe": _read_qwen2_moe,
    "qwen3_moe": _read_qwen3_moe,
    "mixtral": _read_mixtral,
    "phimoe": _read_phimoe,
    "olmoe": _read_olmoe,
    "gpt_oss": _read_gpt_oss,
    "llama4": _read_llama4,
    "jamba": _read_jamba,
}


def parse_hf_config(raw: dict[str, Any], name: str, source: str) -> ModelSpec:
    """Build a :class:`ModelSpec` from a published config.

    Raises
    ------
    InvalidInputError
        When the family is unknown or a required field is missing or invalid.
    """
    family = detect_family(raw)
    if family is None:
        raise InvalidInputError(
            "unknown model config: 'model_type' is "
            f"{raw.get('model_type')!r}; supported: {', '.join(sorted(FAMILIES))}, or placer's "
            "own format ('format': 'placer-model') or a module list ('modules')",
            source,
            "model_type",
        )
    top = ConfigReader(raw, source)
    r = top
    if family == "llama4" and isinstance(raw.get("text_config"), dict):
        r = ConfigReader(raw["text_config"], source, "text_config.")
    dtype, expert_dtype = _dtype(top if "torch_dtype" in raw else r)
    if family == "grok1":
        return _grok1(r, name, source)
    if family == "dbrx":
        return _dbrx(r, name, source, dtype)

    n = r.req("num_hidden_layers", at_most=MAX_LAYERS)
    h = r.req("hidden_size")
    vocab = r.req("vocab_size")
    tie = r.opt(
        "tie_word_embeddings", False, "transformers' default for these families", kind=bool
    )
    max_pos = r.get("max_position_embeddings")
    body = READERS[family](r, n, h)
    return ModelSpec(
        name=name,
        format="hf-config",
        dtype=dtype,
        expert_dtype=expert_dtype,
        num_layers=n,
        hidden_size=h,
        vocab_size=vocab,
        tie_word_embeddings=tie,
        max_position_embeddings=max_pos,
        attention=body.attention,
        moe=body.moe,
        dense_intermediate_size=body.dense_width,
        layers=layer_specs(n, body.is_moe, body.mixers, body.windows),
        assumed=tuple(top.assumed + (r.assumed if r is not top else [])),
        source=source,
        read=tuple(dict.fromkeys(top.read + (r.read if r is not top else []))),
        **body.extra,
    )


def _dbrx(r: ConfigReader, name: str, source: str, dtype: str) -> ModelSpec:
    """DBRX's native config (``d_model``, ``ffn_config``, ``attn_config``)."""
    ffn = r.raw.get("ffn_config")
    att = r.raw.get("attn_config")
    if not isinstance(ffn, dict):
        raise InvalidInputError("required field is missing", source, "ffn_config")
    if not isinstance(att, dict):
        raise InvalidInputError("required field is missing", source, "attn_config")
    f = ConfigReader(ffn, source, "ffn_config.")
    a = ConfigReader(att, source, "attn_config.")
    n = r.req("n_layers", at_most=MAX_LAYERS)
    h = r.req("d_model")
    heads = r.req("n_heads")
    kv = a.req("kv_n_heads")
    check_heads(r, "n_heads", heads, a, "kv_n_heads", kv)
    if h % heads:
        raise InvalidInputError(
            f"d_model ({h}) is not a multiple of n_heads ({heads})", source, r._loc("n_heads")
        )
    moe = read_moe(
        f, "moe_num_experts", "moe_top_k", expert_intermediate_size=f.req("ffn_hidden_size")
    )
    return ModelSpec(
        name=name,
        format="hf-config",
        dtype=dtype,
        expert_dtype=dtype,
        num_layers=n,
        hidden_size=h,
        vocab_size=r.req("vocab_size"),
        tie_word_embeddings=r.opt("tie_word_embeddings", False, "DbrxConfig default", kind=bool),
        max_position_embeddings=r.get("max_seq_len"),
        attention=AttentionSpec(
            kind="gqa" if kv != heads else "mha",
            num_heads=heads,
            num_kv_heads=kv,
            head_dim=h // heads,
        ),
        moe=moe,
        layers=layer_specs(n, [True] * n),
        assumed=tuple(r.assumed + f.assumed + a.assumed),
        source=source,
        read=tuple(dict.fromkeys(r.read + f.read + a.read)),
    )


def _grok1(r: ConfigReader, name: str, source: str) -> ModelSpec:
    """Grok-1's native JAX config (xai-org/grok-1 ``run.py``).

    The expert width is ``ffn_size(emb_size, widening_factor)`` from ``model.py``:
    ``int(widening_factor * emb_size) * 2 // 3`` rounded up to a multiple of 8.
    The embedding is tied (``in_out_embed``) and each layer has four RMSNorms.
    """
    h = r.req("emb_size")
    wf = (
        r.req("widening_factor", kind=float)
        if isinstance(r.raw.get("widening_factor"), float)
        else r.req("widening_factor")
    )
    if not isinstance(wf, int | float) or not 0 < wf <= 1024:
        raise InvalidInputError(
            f"must be a number in (0, 1024], got {wf!r}", source, r._loc("widening_factor")
        )
    width = int(wf * h) * 2 // 3
    width += (8 - width) % 8
    if width <= 0:
        raise InvalidInputError(
            f"gives an expert width of {width}", source, r._loc("widening_factor")
        )
    n = r.req("num_layers", at_most=MAX_LAYERS)
    heads = r.req("num_q_heads")
    kv = r.req("num_kv_heads")
    check_heads(r, "num_q_heads", heads, r, "num_kv_heads", kv)
    moe = read_moe(r, "num_experts", "num_selected_experts", expert_intermediate_size=width)
    return ModelSpec(
        name=name,
        format="hf-config",
        dtype="bf16",
        expert_dtype="bf16",
        num_layers=n,
        hidden_size=h,
        vocab_size=r.req("vocab_size"),
        tie_word_embeddings=True,
        max_position_embeddings=r.get("sequence_len"),
        attention=AttentionSpec(
            kind="gqa",
            num_heads=heads,
            num_kv_heads=kv,
            head_dim=r.req("key_size"),
        ),
        moe=moe,
        layers=layer_specs(n, [True] * n),
        extra_norms_per_layer=2,
        read=tuple(r.read),
        assumed=(
            Assumption(
                field="torch_dtype",
                value="'bf16'",
                why="Grok-1's JAX checkpoint has no dtype field; served in bf16",
            ),
        ),
        source=source,
    )
