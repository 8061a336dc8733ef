"""The model description every format is turned into: :class:`ModelSpec`.

A model is a stack of layers. Each layer has a mixer (attention or, for hybrid
models such as Jamba, a Mamba block) and a feed-forward part (a dense MLP or a
Mixture-of-Experts block with optional shared experts). From that description
:meth:`ModelSpec.blocks` derives the module list the memory ledger, the cost
model and the solver work on: named blocks with their parameter counts and the
rule by which tensor parallelism shards them.

The seed's toy model is written the other way round, as an explicit list of
modules with bytes and FLOPs; such a model carries ``modules`` and ``edges``
and its blocks are those modules.
"""

from __future__ import annotations

import graphlib
from functools import cached_property
from typing import Literal

from pydantic import Field, model_validator

from placer._base import Bool, Frozen, Int, PosInt
from placer.blocks import Block, BlockKind, build_blocks
from placer.dtypes import WeightDtype
from placer.limits import (
    MAX_EXPERTS,
    MAX_EXTRA_NORMS,
    MAX_GPU_BYTES,
    MAX_HEADS,
    MAX_LAYERS,
    MAX_MODULE_KV_ELEMENTS,
    MAX_MODULE_PARAMS,
    MAX_POSITIONS,
    MAX_VOCAB,
    MAX_WIDTH,
)

#: Module kinds that belong to no decoder layer (they sit before or after the stack).
LAYERLESS_KINDS = frozenset({"embedding", "lm_head", "norm"})
ModelFormat = Literal["hf-config", "placer", "module-list"]


class Assumption(Frozen):
    """A value the loader used without reading it from the file."""

    field: str = Field(description="Dotted name of the field that was defaulted.")
    value: str = Field(description="The value used, as text.")
    why: str = Field(description="Why this default is reasonable.")


class AttentionSpec(Frozen):
    """Self-attention of one layer (all attention layers of a model are alike)."""

    kind: Literal["mha", "gqa", "mla"] = Field(
        description="Multi-head, grouped-query or multi-head latent attention (DeepSeek)."
    )
    num_heads: PosInt = Field(le=MAX_HEADS, description="Query heads.")
    num_kv_heads: PosInt = Field(
        le=MAX_HEADS, description="Key/value heads (equal to num_heads for MHA)."
    )
    head_dim: PosInt = Field(le=MAX_WIDTH, description="Width of one query/key head (non-MLA).")
    q_lora_rank: PosInt | None = Field(
        default=None,
        le=MAX_WIDTH,
        description="MLA: rank of the query down-projection (None: full q_proj).",
    )
    kv_lora_rank: PosInt | None = Field(
        default=None, le=MAX_WIDTH, description="MLA: width of the compressed KV latent."
    )
    qk_nope_head_dim: PosInt | None = Field(
        default=None,
        le=MAX_WIDTH,
        description="MLA: per-head query/key width without rotary part.",
    )
    qk_rope_head_dim: PosInt | None = Field(
        default=None,
        le=MAX_WIDTH,
        description="MLA: rotary width, shared by all heads in the cache.",
    )
    v_head_dim: PosInt | None = Field(
        default=None, le=MAX_WIDTH, description="MLA: per-head value width."
    )
    qkv_bias: Bool = Field(default=False, description="Biases on the q, k and v projections.")
    o_bias: Bool = Field(default=False, description="Bias on the output projection.")
    qk_norm: Literal["none", "head", "full"] = Field(
        default="none",
        description="RMSNorm on queries and keys: per head (Qwen3) or full width (OLMoE).",
    )
    sinks: Bool = Field(default=False, description="Learned attention sinks, one per head.")

    @model_validator(mode="after")
    def _check(self) -> AttentionSpec:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of "
                f"num_kv_heads ({self.num_kv_heads})"
            )
        if self.kind == "mla":
            missing = [
                n
                for n in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
                if getattr(self, n) is None
            ]
            if missing:
                raise ValueError(f"MLA attention needs {', '.join(missing)}")
        return self

    def kv_elements_per_token(self) -> int:
        """KV-cache elements one token stores in one layer (whole model, before sharding)."""
        if self.kind == "mla":
            assert self.kv_lora_rank is not None and self.qk_rope_head_dim is not None
            return self.kv_lora_rank + self.qk_rope_head_dim
        return 2 * self.num_kv_heads * self.head_dim


class MoESpec(Frozen):
    """The Mixture-of-Experts block of an MoE layer."""

    num_experts: PosInt = Field(le=MAX_EXPERTS, description="Routed experts per MoE layer.")
    top_k: PosInt = Field(description="Routed experts each token is sent to.")
    expert_intermediate_size: PosInt = Field(
        le=MAX_WIDTH, description="Hidden width of one expert."
    )
    num_shared_experts: Int = Field(
        default=0, ge=0, le=MAX_EXPERTS, description="Always-on shared experts."
    )
    shared_intermediate_size: Int = Field(
        default=0,
        ge=0,
        le=MAX_WIDTH,
        description="Total hidden width of all shared experts together.",
    )
    shared_expert_gate: Bool = Field(
        default=False, description="A sigmoid gate (hidden x 1) on the shared expert (Qwen2-MoE)."
    )
    router_bias: Bool = Field(
        default=False, description="A bias (or score correction) per expert."
    )
    expert_bias: Bool = Field(default=False, description="Biases inside each expert (gpt-oss).")
    n_group: PosInt | None = Field(
        default=None, description="Expert groups for group-limited routing (DeepSeek)."
    )
    topk_group: PosInt | None = Field(
        default=None, description="Groups each token may use under group-limited routing."
    )

    @model_validator(mode="after")
    def _check(self) -> MoESpec:
        if self.top_k > self.num_experts:
            raise ValueError(f"top_k ({self.top_k}) exceeds num_experts ({self.num_experts})")
        if (self.num_shared_experts == 0) != (self.shared_intermediate_size == 0):
            raise ValueError(
                "num_shared_experts and shared_intermediate_size must both be zero or positive"
            )
        if self.n_group is not None and self.num_experts % self.n_group:
            raise ValueError(
                f"n_group ({self.n_group}) must divide num_experts ({self.num_experts})"
            )
        return self


class MambaSpec(Frozen):
    """A Mamba (selective state-space) mixer, as in Jamba."""

    d_state: PosInt = Field(le=MAX_WIDTH, description="SSM state width per channel.")
    d_conv: PosInt = Field(le=MAX_WIDTH, description="Causal convolution width.")
    expand: PosInt = Field(le=MAX_WIDTH, description="Inner width = expand x hidden_size.")
    dt_rank: PosInt = Field(le=MAX_WIDTH, description="Rank of the time-step projection.")
    conv_bias: Bool = Field(default=True, description="Bias on the convolution.")
    proj_bias: Bool = Field(default=False, description="Biases on in/out projections.")
    inner_norms: Bool = Field(
        default=True, description="RMSNorms on dt, B and C (Jamba's dt/b/c layernorms)."
    )


class LayerSpec(Frozen):
    """What one decoder layer is made of."""

    mixer: Literal["attention", "mamba"] = Field(description="Token mixer of the layer.")
    ffn: Literal["dense", "moe"] = Field(description="Feed-forward part of the layer.")
    window: PosInt | None = Field(
        default=None,
        le=MAX_POSITIONS,
        description="Sliding attention window in tokens (KV cache is capped by it).",
    )


class ModuleSpec(Frozen):
    """One module of an explicit module list (the seed's toy-model format)."""

    name: str = Field(min_length=1, description="Unique module name.")
    kind: BlockKind = Field(description="What the module is; decides how it is sharded.")
    layer: Int | None = Field(
        default=None, ge=0, lt=MAX_LAYERS, description="Layer index (None: not in a layer)."
    )
    params: PosInt = Field(
        le=MAX_MODULE_PARAMS, description="Parameter count (from the file's bytes and dtype)."
    )
    flops_per_token: Int = Field(
        ge=0, le=MAX_MODULE_PARAMS, description="FLOPs for one token passing through it."
    )
    kv_elements_per_token: Int = Field(
        default=0,
        ge=0,
        le=MAX_MODULE_KV_ELEMENTS,
        description="KV-cache elements one token stores in this module.",
    )

    @model_validator(mode="after")
    def _check(self) -> ModuleSpec:
        if self.layer is None and self.kind not in LAYERLESS_KINDS:
            # Without a layer the module has no stage, and its bytes would be counted nowhere.
            raise ValueError(
                f"'layer' is missing: only {', '.join(sorted(LAYERLESS_KINDS))} modules sit "
                f"outside the layers, not a {self.kind} module"
            )
        return self


class ModelSpec(Frozen):
    """A validated, immutable model description, whatever file it came from."""

    name: str = Field(min_length=1, description="Model name or id.")
    format: ModelFormat = Field(description="Which input format the model was read from.")
    dtype: WeightDtype = Field(description="Dtype of the published (non-expert) weights.")
    expert_dtype: WeightDtype = Field(description="Dtype of the published routed-expert weights.")
    num_layers: PosInt = Field(le=MAX_LAYERS, description="Decoder layers.")
    hidden_size: PosInt = Field(
        le=MAX_WIDTH, description="Model width (activation elements per token)."
    )
    vocab_size: Int = Field(
        default=0, ge=0, le=MAX_VOCAB, description="Vocabulary (0: no embeddings modeled)."
    )
    tie_word_embeddings: Bool = Field(default=False, description="LM head shares embeddings.")
    max_position_embeddings: PosInt | None = Field(
        default=None, le=MAX_POSITIONS, description="Longest context the model supports."
    )
    attention: AttentionSpec | None = Field(
        default=None, description="Attention of every attention layer (None for module lists)."
    )
    moe: MoESpec | None = Field(default=None, description="The MoE block of MoE layers.")
    mamba: MambaSpec | None = Field(default=None, description="Mamba mixer (hybrid models).")
    dense_intermediate_size: PosInt | None = Field(
        default=None, le=MAX_WIDTH, description="Hidden width of dense (non-MoE) MLP layers."
    )
    gated_mlp: Bool = Field(default=True, description="MLPs have gate, up and down matrices.")
    layers: tuple[LayerSpec, ...] = Field(
        max_length=MAX_LAYERS, description="One entry per decoder layer."
    )
    extra_norms_per_layer: Int = Field(
        default=0,
        ge=0,
        le=MAX_EXTRA_NORMS,
        description="RMSNorms per layer beyond the usual two (Grok-1 has four).",
    )
    modules: tuple[ModuleSpec, ...] | None = Field(
        default=None, description="Explicit module list (module-list format only)."
    )
    edges: tuple[tuple[str, str], ...] = Field(
        default=(), description="Data-flow edges between modules (module-list format)."
    )
    top_k: PosInt | None = Field(
        default=None,
        le=MAX_EXPERTS,
        description="Experts per token for module lists (else moe.top_k).",
    )
    assumed: tuple[Assumption, ...] = Field(
        default=(), description="Values the loader defaulted rather than read."
    )
    read: tuple[str, ...] = Field(
        default=(), description="Fields the loader read from the file (HF configs)."
    )
    source: str | None = Field(default=None, description="Where the description came from.")

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if len(self.layers) != self.num_layers:
            raise ValueError(
                f"layers lists {len(self.layers)} entries but num_layers is {self.num_layers}"
            )
        if self.modules is not None:
            self._check_module_graph()
        else:
            self._check_layer_specs()
        # Fields are bounded one by one; their product, the weights, is bounded here so that
        # every byte count fits in 64 bits (see docs/inputs.md).
        weight_bytes = 4 * self.total_params()
        if weight_bytes > MAX_GPU_BYTES:
            raise ValueError(
                f"the model has {self.total_params():.3g} parameters, whose "
                f"{weight_bytes:.3g} bytes exceed the {MAX_GPU_BYTES:.3g} placer can count; "
                "check hidden_size, the intermediate sizes, num_experts and num_layers"
            )
        return self

    def _check_layer_specs(self) -> None:
        kinds = {(layer.mixer, layer.ffn) for layer in self.layers}
        if any(m == "attention" for m, _ in kinds) and self.attention is None:
            raise ValueError("attention layers present but 'attention' is missing")
        if any(m == "mamba" for m, _ in kinds) and self.mamba is None:
            raise ValueError("mamba layers present but 'mamba' is missing")
        if any(f == "moe" for _, f in kinds) and self.moe is None:
            raise ValueError("MoE layers present but 'moe' is missing")
        if any(f == "dense" for _, f in kinds) and self.dense_intermediate_size is None:
            raise ValueError("dense layers present but 'dense_intermediate_size' is missing")
        if self.vocab_size == 0:
            raise ValueError("'vocab_size' is missing or 0: a model with attention needs one")

    def _check_module_graph(self) -> None:
        assert self.modules is not None
        names = [m.name for m in self.modules]
        seen: set[str] = set()
        for n in names:
            if n in seen:
                raise ValueError(f"module name {n!r} is used twice")
            seen.add(n)
        for m in self.modules:
            if m.layer is not None and m.layer >= self.num_layers:
                raise ValueError(
                    f"module {m.name!r} is in layer {m.layer} but the model has "
                    f"{self.num_layers} layers"
                )
        graph: dict[str, set[str]] = {n: set() for n in names}
        for src, dst in self.edges:
            for end in (src, dst):
                if end not in seen:
                    raise ValueError(f"edge ({src!r} -> {dst!r}) names unknown module {end!r}")
            graph[dst].add(src)
        try:
            tuple(graphlib.TopologicalSorter(graph).static_order())
        except graphlib.CycleError as exc:
            cycle = " -> ".join(repr(name) for name in exc.args[1])
            raise ValueError(f"the module graph has a cycle: {cycle}") from None
        if any(m.kind == "expert" for m in self.modules) and self.top_k is None:
            raise ValueError("a module list with experts needs 'top_k'")

    # ------------------------------------------------------------------ derived
    @property
    def experts_per_token(self) -> int:
        """Routed experts each token uses in an MoE layer (0 for a dense model)."""
        if self.moe is not None:
            return self.moe.top_k
        return self.top_k or 0

    @cached_property
    def moe_layers(self) -> tuple[int, ...]:
        """Indices of the layers that hold routed experts."""
        return tuple(
            sorted({b.layer for b in self.blocks if b.kind == "expert" and b.layer is not None})
        )

    @cached_property
    def blocks(self) -> tuple[Block, ...]:
        """The model as blocks of weights (see :mod:`placer.blocks`)."""
        return build_blocks(self)

    @cached_property
    def blocks_by_layer(self) -> dict[int | None, tuple[Block, ...]]:
        """Blocks grouped by layer (None: embeddings, final norm, LM head)."""
        out: dict[int | None, list[Block]] = {}
        for b in self.blocks:
            out.setdefault(b.layer, []).append(b)
        return {k: tuple(v) for k, v in out.items()}

    @cached_property
    def _experts_per_layer(self) -> tuple[int, ...]:
        counts = [0] * self.num_layers
        for b in self.blocks:
            if b.kind == "expert" and b.layer is not None:
                counts[b.layer] += b.count
        return tuple(counts)

    @cached_property
    def layer_signatures(self) -> tuple[tuple[object, ...], ...]:
        """Per layer, everything that sizes and costs it (block shapes, mixer, window, KV).

        Layers with equal signatures are interchangeable for the ledger and the cost
        model, which compute each distinct signature once.
        """
        out = []
        for i in range(self.num_layers):
            blocks = tuple(
                (b.kind, b.params, b.count, b.shard, b.quantized, b.flops_per_token, b.kv_heads)
                for b in self.blocks_by_layer.get(i, ())
            )
            spec = self.layers[i]
            out.append((blocks, spec.mixer, spec.ffn, spec.window, self.kv_elements_per_token(i)))
        return tuple(out)

    @property
    def max_experts(self) -> int:
        """The most routed experts any layer has."""
        return max(self._experts_per_layer, default=0)

    def experts_in_layer(self, layer: int) -> int:
        """Routed experts in ``layer`` (0 for a dense layer)."""
        return self._experts_per_layer[layer]

    def kv_elements_per_token(self, layer: int) -> int:
        """KV-cache elements one token stores in ``layer``, before any sharding."""
        if self.modules is not None:
            return sum(m.kv_elements_per_token for m in self.modules if m.layer == layer)
        spec = self.layers[layer]
        if spec.mixer != "attention":
            return 0
        assert self.attention is not None
        return self.attention.kv_elements_per_token()

    def total_params(self) -> int:
        """Every parameter, counted once (tied embeddings once)."""
        return sum(b.params * b.count for b in self.blocks)

    def active_params(self) -> int:
        """Parameters used per token: all but the routed experts not chosen, and not the input
        embedding (a lookup, not a matrix product; the convention of DeepSeek's and gpt-oss's
        published active counts)."""
        total = 0
        for b in self.blocks:
            if b.kind == "expert":
                n_layer = self.experts_in_layer(b.layer) if b.layer is not None else b.count
                total += b.params * b.count * self.experts_per_token // max(n_layer, 1)
            elif b.kind == "embedding":
                # Tied embeddings double as the LM head, which is a real matmul.
                if self.tie_word_embeddings:
                    total += b.params
                continue
            else:
                total += b.params * b.count
        return total
