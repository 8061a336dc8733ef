"""Read a Hugging Face ``config.json`` (as published) into a :class:`ModelSpec`.

Each supported family is recognised by ``model_type`` (DBRX and Grok-1 also by
their native field names). Every field read is recorded, and every value that
had to be assumed is listed in ``ModelSpec.assumed`` so ``placer inspect`` can
show it. Layer rules follow the reference implementations (cited per family):

- DeepSeek-V2/V3, Kimi-K2, GLM-4.5: layer ``i`` is MoE iff
  ``i >= first_k_dense_replace and i % moe_layer_freq == 0``.
- Qwen2-MoE/Qwen3-MoE: MoE iff ``i not in mlp_only_layers and (i+1) % decoder_sparse_step == 0``.
- Llama-4: MoE iff ``(i+1) % interleave_moe_layer_step == 0``.
- Jamba: attention iff ``i % attn_layer_period == attn_layer_offset``, MoE iff
  ``i % expert_layer_period == expert_layer_offset``.
"""

from __future__ import annotations

from typing import Any

from placer.dtypes import HF_DTYPE_NAMES
from placer.exceptions import InvalidInputError
from placer.limits import MAX_CONFIG_INT, MAX_LAYERS
from placer.model import Assumption, AttentionSpec, LayerSpec, MambaSpec, ModelSpec, MoESpec

_MISSING = object()

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


class _Reader:
    """Reads fields of one config, remembering what was read and what was assumed."""

    def __init__(self, raw: dict[str, Any], source: str, prefix: str = ""):
        self.raw = raw
        self.source = source
        self.prefix = prefix
        self.read: list[str] = []
        self.assumed: list[Assumption] = []

    def _loc(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def req(self, name: str, kind: type | str = int, at_most: int = MAX_CONFIG_INT) -> Any:
        """A required field of the given type (ints must be positive, and at most
        ``at_most``)."""
        if name not in self.raw or self.raw[name] is None:
            raise InvalidInputError("required field is missing", self.source, self._loc(name))
        return self._typed(name, self.raw[name], kind, at_most)

    def opt(self, name: str, default: Any, why: str, kind: type | str = int) -> Any:
        """An optional field; when absent, ``default`` is used and recorded as assumed."""
        if name in self.raw and self.raw[name] is not None:
            return self._typed(name, self.raw[name], kind)
        self.assumed.append(Assumption(field=self._loc(name), value=repr(default), why=why))
        return default

    def get(self, name: str, default: Any = None) -> Any:
        """An optional field whose absence is normal for the family (not an assumption)."""
        value = self.raw.get(name, default)
        if name in self.raw:
            self.read.append(self._loc(name))
        return value

    def _typed(
        self, name: str, value: Any, kind: type | str, at_most: int = MAX_CONFIG_INT
    ) -> Any:
        self.read.append(self._loc(name))
        if kind is int or kind == "index":
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInputError(
                    f"must be an integer, got {value!r}", self.source, self._loc(name)
                )
            # Sizes must be positive; layer indices and offsets ("index") may be 0.
            if value < (0 if kind == "index" else 1):
                raise InvalidInputError(
                    f"must be {'non-negative' if kind == 'index' else 'positive'}, got {value}",
                    self.source,
                    self._loc(name),
                )
            # Checked before anything is built from it (a list of 1e30 layers would never end).
            if value > at_most:
                raise InvalidInputError(
                    f"must be at most {at_most}, got {value}", self.source, self._loc(name)
                )
        elif kind is bool:
            if not isinstance(value, bool):
                raise InvalidInputError(
                    f"must be true or false, got {value!r}", self.source, self._loc(name)
                )
        elif kind is int | None:  # pragma: no cover - not used
            pass
        return value


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


def _dtype(r: _Reader) -> tuple[str, str]:
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


def _layers(
    n: int,
    is_moe: list[bool],
    mixers: list[str] | None = None,
    windows: list[int | None] | None = None,
) -> tuple[LayerSpec, ...]:
    return tuple(
        LayerSpec(
            mixer=("attention" if mixers is None else mixers[i]),
            ffn="moe" if is_moe[i] else "dense",
            window=None if windows is None else windows[i],
        )
        for i in range(n)
    )


def _check_heads(
    heads_reader: _Reader, heads_key: str, heads: int, kv_reader: _Reader, kv_key: str, kv: int
) -> None:
    """Query heads must be a multiple of KV heads; the error names the file's KV field."""
    if heads % kv:
        raise InvalidInputError(
            f"{heads_reader._loc(heads_key)} ({heads}) must be a multiple of "
            f"{kv_reader._loc(kv_key)} ({kv})",
            kv_reader.source,
            kv_reader._loc(kv_key),
        )


def _check_top_k(
    k_reader: _Reader, k_key: str, top_k: int, e_reader: _Reader, e_key: str, experts: int
) -> None:
    """Experts per token must not exceed the experts; the error names the file's top-k field."""
    if top_k > experts:
        raise InvalidInputError(
            f"top_k ({top_k}) exceeds num_experts ({experts}): {k_reader._loc(k_key)} "
            f"must be at most {e_reader._loc(e_key)}",
            k_reader.source,
            k_reader._loc(k_key),
        )


def _moe(
    r: _Reader,
    experts_key: str,
    top_k_key: str = "num_experts_per_tok",
    k_reader: _Reader | None = None,
    **fields: Any,
) -> MoESpec:
    """Read the routed-expert count and top-k (checked against each other) into a MoESpec."""
    kr = k_reader or r
    experts = r.req(experts_key)
    top_k = kr.req(top_k_key)
    _check_top_k(kr, top_k_key, top_k, r, experts_key, experts)
    n_group = fields.get("n_group")
    if n_group is not None:
        n_group = r._typed("n_group", n_group, int)
        if experts % n_group:
            raise InvalidInputError(
                f"n_group ({n_group}) must divide {r._loc(experts_key)} ({experts})",
                r.source,
                r._loc("n_group"),
            )
    topk_group = fields.get("topk_group")
    if topk_group is not None:
        r._typed("topk_group", topk_group, int)
    return MoESpec(num_experts=experts, top_k=top_k, **fields)


def _gqa(
    r: _Reader,
    *,
    heads_key: str = "num_attention_heads",
    hidden: int,
    qkv_bias: bool = False,
    o_bias: bool = False,
    qk_norm: str = "none",
    sinks: bool = False,
) -> AttentionSpec:
    heads = r.req(heads_key)
    kv = r.opt("num_key_value_heads", heads, "absent means one KV head per query head (MHA)")
    head_dim = r.get("head_dim")
    if head_dim is None:
        if hidden % heads:
            raise InvalidInputError(
                f"hidden_size ({hidden}) is not a multiple of {heads_key} ({heads}) and no "
                "head_dim is given",
                r.source,
                r._loc(heads_key),
            )
        head_dim = hidden // heads
    _check_heads(r, heads_key, heads, r, "num_key_value_heads", kv)
    return AttentionSpec(
        kind="mha" if kv == heads else "gqa",
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=head_dim,
        qkv_bias=qkv_bias,
        o_bias=o_bias,
        qk_norm=qk_norm,
        sinks=sinks,
    )


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
    top = _Reader(raw, source)
    r = top
    if family == "llama4" and isinstance(raw.get("text_config"), dict):
        r = _Reader(raw["text_config"], source, "text_config.")
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
    extra: dict[str, Any] = {}
    mixers: list[str] | None = None
    windows: list[int | None] | None = None
    dense_width: int | None = None

    if family == "deepseek" or family == "glm4_moe":
        first_dense = r.opt("first_k_dense_replace", 0, "no leading dense layers", kind="index")
        first_dense = 0 if first_dense is None else first_dense
        freq = r.opt("moe_layer_freq", 1, "every layer after the dense ones is MoE")
        is_moe = [i >= first_dense and i % freq == 0 for i in range(n)]
        width = r.req("moe_intermediate_size")
        n_shared = r.opt("n_shared_experts", 0, "no shared experts", kind="index")
        moe = _moe(
            r,
            "n_routed_experts",
            expert_intermediate_size=width,
            num_shared_experts=n_shared,
            shared_intermediate_size=n_shared * width,
            router_bias=r.get("topk_method") == "noaux_tc",
            n_group=r.get("n_group"),
            topk_group=r.get("topk_group"),
        )
        dense_width = r.req("intermediate_size") if not all(is_moe) else None
        if family == "deepseek":
            heads = r.req("num_attention_heads")
            kv = r.opt("num_key_value_heads", heads, "MLA has one KV head per head")
            _check_heads(r, "num_attention_heads", heads, r, "num_key_value_heads", kv)
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
        else:
            attn = _gqa(
                r,
                hidden=h,
                qkv_bias=bool(r.get("attention_bias", False)),
                qk_norm="head" if r.get("use_qk_norm") else "none",
            )
    elif family in ("qwen2_moe", "qwen3_moe"):
        step = r.opt("decoder_sparse_step", 1, "every layer is sparse")
        mlp_only_list = r.get("mlp_only_layers", []) or []
        if not isinstance(mlp_only_list, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in mlp_only_list
        ):
            raise InvalidInputError(
                "must be a list of layer indices", source, r._loc("mlp_only_layers")
            )
        mlp_only = set(mlp_only_list)
        is_moe = [i not in mlp_only and (i + 1) % step == 0 for i in range(n)]
        shared_w = r.get("shared_expert_intermediate_size", 0) or 0
        moe = _moe(
            r,
            "num_experts",
            expert_intermediate_size=r.req("moe_intermediate_size"),
            num_shared_experts=1 if shared_w else 0,
            shared_intermediate_size=shared_w,
            shared_expert_gate=bool(shared_w),
        )
        dense_width = r.req("intermediate_size") if not all(is_moe) else None
        if family == "qwen2_moe":
            # Qwen2-MoE always has q/k/v biases (transformers Qwen2MoeAttention).
            attn = _gqa(r, hidden=h, qkv_bias=True)
        else:
            attn = _gqa(r, hidden=h, qkv_bias=bool(r.get("attention_bias", False)), qk_norm="head")
    elif family in ("mixtral", "phimoe", "olmoe", "gpt_oss"):
        is_moe = [True] * n
        moe = _moe(
            r,
            "num_experts" if family == "olmoe" else "num_local_experts",
            expert_intermediate_size=r.req("intermediate_size"),
            router_bias=family == "gpt_oss",
            expert_bias=family == "gpt_oss",
        )
        if family == "gpt_oss":
            types = r.get("layer_types") or ["full_attention"] * n
            if not isinstance(types, list) or len(types) != n:
                raise InvalidInputError(
                    f"must be a list of {n} layer types, one per layer (num_hidden_layers)",
                    source,
                    r._loc("layer_types"),
                )
            window = r.get("sliding_window")
            if window is not None and "sliding_attention" in types:
                window = r._typed("sliding_window", window, int)
            windows = [window if t == "sliding_attention" else None for t in types]
            attn = _gqa(r, hidden=h, qkv_bias=True, o_bias=True, sinks=True)
        elif family == "olmoe":
            attn = _gqa(r, hidden=h, qk_norm="full")
        elif family == "phimoe":
            bias = bool(r.get("attention_bias", False))
            attn = _gqa(r, hidden=h, qkv_bias=bias, o_bias=bias)
        else:
            attn = _gqa(r, hidden=h)
    elif family == "llama4":
        step = r.opt("interleave_moe_layer_step", 1, "every layer is MoE")
        is_moe = [(i + 1) % step == 0 for i in range(n)]
        width = r.req("intermediate_size")
        moe = _moe(
            r,
            "num_local_experts",
            expert_intermediate_size=width,
            num_shared_experts=1,
            shared_intermediate_size=width,
        )
        dense_width = r.req("intermediate_size_mlp") if not all(is_moe) else None
        attn = _gqa(r, hidden=h, qkv_bias=bool(r.get("attention_bias", False)))
    elif family == "jamba":
        a_per = r.req("attn_layer_period")
        a_off = (
            r.opt("attn_layer_offset", 0, "transformers' JambaConfig default", kind="index") or 0
        )
        e_per = r.req("expert_layer_period")
        e_off = (
            r.opt("expert_layer_offset", 0, "transformers' JambaConfig default", kind="index") or 0
        )
        is_moe = [i % e_per == e_off for i in range(n)]
        mixers = ["attention" if i % a_per == a_off else "mamba" for i in range(n)]
        width = r.req("intermediate_size")
        moe = _moe(r, "num_experts", expert_intermediate_size=width)
        dense_width = width
        attn = _gqa(r, hidden=h)
        extra["mamba"] = MambaSpec(
            d_state=r.req("mamba_d_state"),
            d_conv=r.req("mamba_d_conv"),
            expand=r.req("mamba_expand"),
            dt_rank=r.req("mamba_dt_rank"),
            conv_bias=bool(r.get("mamba_conv_bias", True)),
            proj_bias=bool(r.get("mamba_proj_bias", False)),
        )
    else:  # pragma: no cover - detect_family only returns the names above
        raise AssertionError(family)

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
        attention=attn,
        moe=moe,
        dense_intermediate_size=dense_width,
        layers=_layers(n, is_moe, mixers, windows),
        assumed=tuple(top.assumed + (r.assumed if r is not top else [])),
        source=source,
        read=tuple(dict.fromkeys(top.read + (r.read if r is not top else []))),
        **extra,
    )


def _dbrx(r: _Reader, name: str, source: str, dtype: str) -> ModelSpec:
    """DBRX's native config (``d_model``, ``ffn_config``, ``attn_config``)."""
    ffn = r.raw.get("ffn_config")
    att = r.raw.get("attn_config")
    if not isinstance(ffn, dict):
        raise InvalidInputError("required field is missing", source, "ffn_config")
    if not isinstance(att, dict):
        raise InvalidInputError("required field is missing", source, "attn_config")
    f = _Reader(ffn, source, "ffn_config.")
    a = _Reader(att, source, "attn_config.")
    n = r.req("n_layers", at_most=MAX_LAYERS)
    h = r.req("d_model")
    heads = r.req("n_heads")
    kv = a.req("kv_n_heads")
    _check_heads(r, "n_heads", heads, a, "kv_n_heads", kv)
    if h % heads:
        raise InvalidInputError(
            f"d_model ({h}) is not a multiple of n_heads ({heads})", source, r._loc("n_heads")
        )
    moe = _moe(
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
        layers=_layers(n, [True] * n),
        assumed=tuple(r.assumed + f.assumed + a.assumed),
        source=source,
        read=tuple(dict.fromkeys(r.read + f.read + a.read)),
    )


def _grok1(r: _Reader, name: str, source: str) -> ModelSpec:
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
    _check_heads(r, "num_q_heads", heads, r, "num_kv_heads", kv)
    moe = _moe(r, "num_experts", "num_selected_experts", expert_intermediate_size=width)
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
        layers=_layers(n, [True] * n),
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
