"""The memory ledger: exact bytes on every GPU for a layout (numpy, no solver).

Rules (docs/design.md, "Memory ledger"), applied block by block (see :mod:`placer.blocks`):

- ``tp`` blocks (attention projections, dense MLP, shared experts, Mamba): 1/tp each,
  rounded up. Attention-DP groups each hold their own copy.
- ``kv_heads`` blocks (GQA key/value projections): ceil(kv_heads / tp) heads per
  rank: split when tp <= kv_heads, one replicated head when tp > kv_heads.
- ``vocab`` blocks: ceil(vocab / tp) rows; the embedding on the first stage, the LM
  head (and the final norm) on the last. A tied LM head needs its own copy on the
  last stage once pp > 1.
- ``replicated`` blocks (norms, routers, MLA down-projections): whole on every GPU.
- routed experts: each expert slot of an EP rank holds one expert, split 1/etp.
- KV cache: requests of the GPU's attention-DP group x cached tokens (capped by a
  sliding window) x KV elements per rank x KV dtype; GQA KV splits by head like the
  weights, MLA's latent is replicated on every TP rank. Mamba layers keep a
  per-request state instead (SSM state in fp32, convolution state in the
  activation dtype).
- activations: the largest per-step workspace (see :func:`activation_bytes`).
- reserve: the workload's runtime reserve.
Quantized dtypes apply to linear weights; embeddings, the LM head, norms and
routers stay 16-bit, as vLLM and SGLang keep them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from placer.blocks import Block
from placer.cluster import ClusterSpec
from placer.dtypes import nbytes
from placer.layout import Layout
from placer.model import ModelSpec
from placer.topology import ExpertMap as ExpertMap
from placer.topology import balanced_counts, contiguous_slots, ep_rank
from placer.workload import Workload

#: Columns of the per-GPU breakdown, in output order.
COLUMNS: tuple[str, ...] = (
    "attention",
    "mamba",
    "dense_mlp",
    "shared_experts",
    "experts",
    "embeddings",
    "norms_routers",
    "kv_cache",
    "activations",
    "reserve",
)
_WEIGHT_COLUMN = {
    "attention": "attention",
    "mamba": "mamba",
    "dense_mlp": "dense_mlp",
    "shared_expert": "shared_experts",
    "expert": "experts",
    "embedding": "embeddings",
    "lm_head": "embeddings",
    "norm": "norms_routers",
    "router": "norms_routers",
}


def ceil_div(a: int, b: int) -> int:
    """Integer ceiling of a / b."""
    return -(-a // b)


def weight_dtypes(model: ModelSpec, workload: Workload) -> tuple[str, str, str]:
    """(linear weights, routed experts, unquantized 16-bit parts) dtypes in force."""
    base = workload.weight_dtype or model.dtype
    expert = workload.expert_dtype or workload.weight_dtype or model.expert_dtype
    plain = model.dtype if model.dtype in ("bf16", "fp16", "fp32") else "bf16"
    return base, expert, plain


def default_expert_map(model: ModelSpec, layout: Layout) -> ExpertMap:
    """Contiguous slots, as vLLM's ``linear`` placement and SGLang's ``trivial`` map:
    slot p holds logical expert p % E; EP rank r holds slots in a contiguous block,
    the first (slots % ep) ranks one more (:func:`placer.topology.contiguous_slots`)."""
    out: ExpertMap = {}
    for layer in model.moe_layers:
        experts = model.experts_in_layer(layer)
        counts = balanced_counts(experts + layout.redundant_experts, layout.ep)
        out[layer] = contiguous_slots(experts, counts)
    return out


def block_params_per_gpu(block: Block, model: ModelSpec, tp: int) -> int:
    """Parameters of one instance of ``block`` on one GPU with attention TP ``tp``."""
    if block.shard == "replicated":
        return block.params
    if block.shard == "kv_heads":
        heads = block.kv_heads
        return block.params // heads * ceil_div(heads, tp)
    if block.shard == "vocab" and model.vocab_size:
        return ceil_div(model.vocab_size, tp) * model.hidden_size
    return ceil_div(block.params, tp)


def kv_elements_per_rank(model: ModelSpec, layer: int, tp: int) -> int:
    """KV-cache elements one token stores in ``layer`` on one attention-TP rank."""
    a = model.attention
    if model.modules is not None or a is None:
        return ceil_div(model.kv_elements_per_token(layer), tp)
    if model.layers[layer].mixer != "attention":
        return 0
    if a.kind == "mla":
        return a.kv_elements_per_token()  # the latent is replicated across TP
    return 2 * a.head_dim * ceil_div(a.num_kv_heads, tp)


def requests_per_dp_group(workload: Workload, layout: Layout) -> int:
    """Requests the busiest attention-DP group serves."""
    return ceil_div(workload.batch, layout.dp_attn)


def kv_bytes_for_layer(model: ModelSpec, workload: Workload, layout: Layout, layer: int) -> int:
    """KV cache (or Mamba state) bytes one GPU keeps for ``layer``."""
    reqs = requests_per_dp_group(workload, layout)
    spec = model.layers[layer]
    if model.modules is None and spec.mixer == "mamba":
        m = model.mamba
        assert m is not None
        d_inner = ceil_div(m.expand * model.hidden_size, layout.tp)
        ssm = nbytes(d_inner * m.d_state, "fp32")
        conv = nbytes(d_inner * (m.d_conv - 1), workload.activation_dtype)
        return reqs * (ssm + conv)
    tokens = workload.kv_tokens
    if spec.window is not None:
        tokens = min(tokens, spec.window)
    return nbytes(reqs * tokens * kv_elements_per_rank(model, layer, layout.tp), workload.kv_dtype)


def step_tokens(workload: Workload, layout: Layout) -> int:
    """Tokens one attention-DP group processes in one step of the workload's phase."""
    reqs = requests_per_dp_group(workload, layout)
    if workload.phase == "decode":
        return reqs
    return min(workload.max_batched_tokens, reqs * workload.prompt_len)


def activation_bytes(model: ModelSpec, workload: Workload, layout: Layout, last: bool) -> int:
    """Peak activation workspace of one GPU for one step.

    An estimate in the spirit of vLLM's profiling run: the step's tokens times the
    widest intermediate the GPU computes (4 x hidden for residual, norm output and
    attention in/out, plus gate and up halves of the widest local MLP), and on the
    last stage the fp32 logits over the GPU's vocabulary shard. MoE layers see the
    tokens of the whole stage routed to them: step tokens x dp_attn x top_k / ep.
    """
    t = step_tokens(workload, layout)
    h = model.hidden_size
    widest = 0
    if model.dense_intermediate_size:
        widest = ceil_div(model.dense_intermediate_size, layout.tp) * t
    if model.moe is not None:
        moe = model.moe
        routed_tokens = ceil_div(t * layout.dp_attn * moe.top_k, layout.ep)
        widest = max(
            widest, routed_tokens * ceil_div(moe.expert_intermediate_size, layout.expert_tp)
        )
        if moe.shared_intermediate_size:
            widest = max(widest, t * ceil_div(moe.shared_intermediate_size, layout.tp))
    elements = 4 * h * t + 2 * widest
    total = nbytes(elements, workload.activation_dtype)
    if last and model.vocab_size:
        logits_tokens = workload.batch if workload.phase == "decode" else t
        total += nbytes(
            ceil_div(logits_tokens, layout.dp_attn) * ceil_div(model.vocab_size, layout.tp), "fp32"
        )
    return total


@dataclass(frozen=True)
class Ledger:
    """Bytes on every GPU a layout uses, by column (see :data:`COLUMNS`)."""

    gpu_ids: np.ndarray
    stage: np.ndarray
    bytes: np.ndarray
    capacity: np.ndarray
    memory: np.ndarray

    @property
    def used(self) -> np.ndarray:
        """Total planned bytes per GPU."""
        return np.asarray(self.bytes.sum(axis=1), dtype=np.int64)

    @property
    def fits(self) -> bool:
        """Whether every GPU's bytes fit its capacity."""
        return bool(np.all(self.used <= self.capacity))

    def column(self, name: str) -> np.ndarray:
        """One column of the breakdown."""
        return self.bytes[:, COLUMNS.index(name)]


def capacity_bytes(memory: np.ndarray, workload: Workload) -> np.ndarray:
    """What placer may plan on each GPU: memory x utilization, rounded down."""
    return np.floor(memory.astype(np.float64) * workload.memory_utilization).astype(np.int64)


def stage_weight_bytes(
    model: ModelSpec, workload: Workload, layout: Layout, stage: int
) -> np.ndarray:
    """Non-expert weight bytes by column for one GPU of ``stage`` (experts column zero)."""
    base, _, plain = weight_dtypes(model, workload)
    stages = layout.stage_layers(model.num_layers)
    layers = set(stages[stage])
    first, last = stage == 0, stage == layout.pp - 1
    row = np.zeros(len(COLUMNS), dtype=np.int64)
    for b in model.blocks:
        if b.kind == "expert":
            continue
        if b.layer is None:
            held = (b.kind == "embedding" and first) or (b.kind != "embedding" and last)
            if b.kind == "embedding" and last and model.tie_word_embeddings and layout.pp > 1:
                # A tied LM head is a separate copy on the last stage once pp > 1.
                row[COLUMNS.index("embeddings")] += nbytes(
                    block_params_per_gpu(b, model, layout.tp), plain
                )
            if not held:
                continue
        elif b.layer not in layers:
            continue
        dtype = base if b.quantized else plain
        row[COLUMNS.index(_WEIGHT_COLUMN[b.kind])] += nbytes(
            block_params_per_gpu(b, model, layout.tp) * b.count, dtype
        )
    return row


def expert_bytes(model: ModelSpec, workload: Workload, layout: Layout) -> dict[int, np.ndarray]:
    """Per MoE layer: bytes of each logical expert's shard on one GPU (1/etp)."""
    _, expert_dtype, _ = weight_dtypes(model, workload)
    out: dict[int, np.ndarray] = {}
    for b in model.blocks:
        if b.kind != "expert" or b.layer is None:
            continue
        one = nbytes(ceil_div(b.params, layout.expert_tp), expert_dtype)
        prev = out.get(b.layer, np.zeros(0, dtype=np.int64))
        out[b.layer] = np.concatenate([prev, np.full(b.count, one, dtype=np.int64)])
    return out


def memory_ledger(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    layout: Layout,
    expert_map: ExpertMap | None = None,
    gpu_ids: list[int] | None = None,
) -> Ledger:
    """Bytes on every GPU of ``layout`` (GPU ``s * stage_width + r`` by default).

    Parameters
    ----------
    expert_map
        Which logical experts each EP rank holds per MoE layer; default contiguous.
    gpu_ids
        Physical GPU for each rank, in rank order (stage-major).
    """
    emap = expert_map if expert_map is not None else default_expert_map(model, layout)
    ids = np.array(gpu_ids if gpu_ids is not None else range(layout.gpus), dtype=np.int64)
    width = layout.stage_width
    stages = layout.stage_layers(model.num_layers)
    per_expert = expert_bytes(model, workload, layout)
    rows = np.zeros((layout.gpus, len(COLUMNS)), dtype=np.int64)
    stage_of = np.repeat(np.arange(layout.pp), width)
    for s in range(layout.pp):
        weights = stage_weight_bytes(model, workload, layout, s)
        kv = sum(kv_bytes_for_layer(model, workload, layout, i) for i in stages[s])
        act = activation_bytes(model, workload, layout, last=s == layout.pp - 1)
        for r in range(width):
            g = s * width + r
            rows[g] = weights
            rank = ep_rank(r, layout.ep, layout.expert_tp)
            rows[g, COLUMNS.index("experts")] = sum(
                int(per_expert[i][list(emap[i][rank])].sum()) for i in stages[s] if i in emap
            )
            rows[g, COLUMNS.index("kv_cache")] = kv
            rows[g, COLUMNS.index("activations")] = act
            rows[g, COLUMNS.index("reserve")] = workload.runtime_reserve_bytes
    memory = cluster.memory_bytes[ids]
    return Ledger(
        gpu_ids=ids,
        stage=stage_of,
        bytes=rows,
        capacity=capacity_bytes(memory, workload),
        memory=memory,
    )


def block_bytes(block: Block, model: ModelSpec, workload: Workload, layout: Layout) -> int:
    """Bytes one GPU holds of a non-expert block (all its instances)."""
    base, _, plain = weight_dtypes(model, workload)
    dtype = base if block.quantized else plain
    return nbytes(block_params_per_gpu(block, model, layout.tp) * block.count, dtype)


def layer_bytes(model: ModelSpec, workload: Workload, layout: Layout) -> np.ndarray:
    """Per layer: non-expert weight bytes plus KV cache on one GPU holding that layer."""
    out = np.zeros(model.num_layers, dtype=np.int64)
    seen: dict[tuple[object, ...], int] = {}
    for i, sig in enumerate(model.layer_signatures):
        if sig not in seen:
            weights = sum(
                block_bytes(b, model, workload, layout)
                for b in model.blocks_by_layer.get(i, ())
                if b.kind != "expert"
            )
            seen[sig] = weights + kv_bytes_for_layer(model, workload, layout, i)
        out[i] = seen[sig]
    return out


def edge_bytes(model: ModelSpec, workload: Workload, layout: Layout) -> tuple[int, int]:
    """(bytes only the first stage holds, bytes only the last stage holds) per GPU."""
    _, _, plain = weight_dtypes(model, workload)
    first = last = 0
    for b in model.blocks_by_layer.get(None, ()):
        size = block_bytes(b, model, workload, layout)
        if b.kind == "embedding":
            first += size
            if model.tie_word_embeddings and layout.pp > 1:
                last += nbytes(block_params_per_gpu(b, model, layout.tp), plain)
        else:
            last += size
    return first, last
