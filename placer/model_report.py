"""What ``placer inspect`` reports about a model: format, structure, parameters, bytes."""

from __future__ import annotations

from collections import Counter

from pydantic import Field

from placer._base import Frozen
from placer.dtypes import nbytes
from placer.model import Assumption, ModelSpec


class ModelReport(Frozen):
    """A model's vital numbers (the JSON of ``placer inspect --json``)."""

    name: str = Field(description="Model name.")
    format: str = Field(description="Input format detected.")
    source: str | None = Field(description="File read.")
    num_layers: int = Field(description="Decoder layers.")
    moe_layers: int = Field(description="Layers with routed experts.")
    experts_per_layer: int = Field(description="Routed experts per MoE layer.")
    experts_per_token: int = Field(description="Routed experts each token uses.")
    attention: str = Field(description="Attention kind and heads.")
    modules: int = Field(description="Placeable modules: attention/mixer blocks plus experts.")
    total_params: int = Field(description="All parameters, counted once.")
    active_params: int = Field(description="Parameters used per token (no input embedding).")
    params_by_kind: dict[str, int] = Field(description="Parameters by block kind.")
    bytes_by_dtype: dict[str, int] = Field(
        description="Weight bytes if linear weights are stored in each dtype (16-bit parts kept)."
    )
    native_dtype: str = Field(description="Published dtype (experts' in brackets if different).")
    kv_bytes_per_token: int = Field(description="bf16 KV-cache bytes per token, all layers.")
    read: tuple[str, ...] = Field(description="Fields read from the file (HF configs).")
    assumed: tuple[Assumption, ...] = Field(description="Fields defaulted, with the value used.")


def inspect_model(model: ModelSpec) -> ModelReport:
    """Summarise ``model`` (see :class:`ModelReport`)."""
    kinds: Counter[str] = Counter()
    for b in model.blocks:
        kinds[b.kind] += b.params * b.count
    by_dtype: dict[str, int] = {}
    for dt in ("bf16", "fp8", "int4", "fp4"):
        total = 0
        for b in model.blocks:
            total += nbytes(b.params * b.count, dt if b.quantized else "bf16")
        by_dtype[dt] = total
    a = model.attention
    if a is None:
        attn = "given per module"
    elif a.kind == "mla":
        attn = f"MLA, {a.num_heads} heads, latent {a.kv_lora_rank}+{a.qk_rope_head_dim}"
    else:
        attn = f"{a.kind.upper()}, {a.num_heads} heads / {a.num_kv_heads} KV heads x {a.head_dim}"
    mixers = (
        sum(1 for i in range(model.num_layers))
        if model.modules is None
        else sum(1 for m in model.modules if m.kind != "expert")
    )
    experts = sum(b.count for b in model.blocks if b.kind == "expert")
    native = (
        model.dtype
        if model.dtype == model.expert_dtype
        else (f"{model.dtype} (experts {model.expert_dtype})")
    )
    kv = sum(model.kv_elements_per_token(i) for i in range(model.num_layers)) * 2
    moe_layers = model.moe_layers
    return ModelReport(
        name=model.name,
        format=model.format,
        source=model.source,
        num_layers=model.num_layers,
        moe_layers=len(moe_layers),
        experts_per_layer=model.experts_in_layer(moe_layers[0]) if moe_layers else 0,
        experts_per_token=model.experts_per_token,
        attention=attn,
        modules=mixers + experts,
        total_params=model.total_params(),
        active_params=model.active_params(),
        params_by_kind=dict(kinds),
        bytes_by_dtype=by_dtype,
        native_dtype=native,
        kv_bytes_per_token=kv,
        read=model.read,
        assumed=model.assumed,
    )
