"""Sharding rules of the memory ledger, checked on toy models small enough to count by hand.

The base toy model (``toy()``), in placer's own format, bf16 throughout:

- hidden 8, vocab 16, 2 layers, each attention + MoE;
- GQA attention: 4 query heads, 2 KV heads, head_dim 2 (q width 8, kv width 4);
- MoE: 4 experts, top-2, expert width 4 (gated: 3 matrices).

Parameters by hand:

- embedding 16 x 8 = 128; LM head 128; final norm 8;
- per layer: norms 2 x 8 = 16; q 8 x 8 = 64; kv 2 x (8 x 4) = 64; o 8 x 8 = 64;
  router 8 x 4 = 32; one expert 3 x 8 x 4 = 96, four of them 384.

The workload keeps 4 requests of 6 + 2 = 8 tokens, bf16 KV cache, and no runtime
reserve. Every expected number below is written out as arithmetic in bytes (bf16 = 2).
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from placer.blocks import Block
from placer.cluster import ClusterSpec
from placer.layout import Layout
from placer.ledger import Ledger, block_params_per_gpu, default_expert_map, memory_ledger
from placer.load import cluster_from_dict, model_from_dict
from placer.model import ModelSpec
from placer.rules import PROFILES, layout_violations
from placer.workload import Workload

BF16 = 2


def toy(**changes: Any) -> ModelSpec:
    """The base toy model with top-level fields replaced (``moe`` fields merged)."""
    raw: dict[str, Any] = {
        "format": "placer-model",
        "name": "toy",
        "dtype": "bf16",
        "expert_dtype": "bf16",
        "num_layers": 2,
        "hidden_size": 8,
        "vocab_size": 16,
        "attention": {"kind": "gqa", "num_heads": 4, "num_kv_heads": 2, "head_dim": 2},
        "moe": {"num_experts": 4, "top_k": 2, "expert_intermediate_size": 4},
        "layers": [{"mixer": "attention", "ffn": "moe"}, {"mixer": "attention", "ffn": "moe"}],
    }
    if "moe" in changes:
        raw["moe"] = {**raw["moe"], **changes.pop("moe")}
    raw.update(changes)
    return model_from_dict(raw, "toy.json")


def cluster(gpus: int = 8) -> ClusterSpec:
    """``gpus`` GPUs of 1 GB on one NVSwitch domain (memory never matters here)."""
    return cluster_from_dict(
        {
            "format": "placer-hardware",
            "name": f"toy-{gpus}",
            "gpu": {
                "name": "toy-gpu",
                "memory_bytes": 10**9,
                "hbm_bandwidth_gbps": 1000,
                "tflops": {"bf16": 100},
            },
            "gpus": gpus,
            "gpus_per_node": 8,
            "scale_up_domain": 8,
            "scale_up": {"bandwidth_gbps": 100, "latency_us": 1.0},
            "scale_out": {"bandwidth_gbps": 10, "latency_us": 5.0},
        },
        "toy-hw.json",
    )


def workload(**changes: Any) -> Workload:
    """4 requests x (6 + 2) = 8 cached tokens, bf16 KV, no runtime reserve."""
    args: dict[str, Any] = {
        "batch": 4,
        "prompt_len": 6,
        "output_len": 2,
        "runtime_reserve_bytes": 0,
    }
    args.update(changes)
    return Workload(**args)


def ledger(model: ModelSpec, layout: Layout, wl: Workload | None = None) -> Ledger:
    """The memory ledger of ``layout`` on the toy cluster."""
    return memory_ledger(model, cluster(), wl or workload(), layout)


def col(led: Ledger, name: str) -> list[int]:
    """One ledger column as plain ints (one per GPU)."""
    return [int(x) for x in led.column(name)]


def block(model: ModelSpec, name: str) -> Block:
    """The block called ``name``."""
    return next(b for b in model.blocks if b.name == name)


# ------------------------------------------------------------------ (a) q / o split 1/tp
@pytest.mark.parametrize(
    ("tp", "q_o_params"),
    [(1, 64), (2, 32), (4, 16)],  # 64 / tp
)
def test_q_and_o_projections_split_over_tp(tp: int, q_o_params: int) -> None:
    """q and o projections hold 1/tp of their 64 parameters on each GPU."""
    model = toy()
    for name in ("L0.attn.q", "L0.attn.o", "L1.attn.q", "L1.attn.o"):
        assert block_params_per_gpu(block(model, name), model, tp) == q_o_params
    # kv: 2 KV heads x 32 params each; ceil(2 / tp) heads per GPU -> 64, 32, 32.
    kv = {1: 64, 2: 32, 4: 32}[tp]
    # attention column: 2 layers x (q + kv + o) x 2 bytes
    expected = 2 * (q_o_params + kv + q_o_params) * BF16
    assert col(ledger(model, Layout(tp=tp)), "attention") == [expected] * tp
    # tp=1: 2 x 192 x 2 = 768; tp=2: 2 x 96 x 2 = 384; tp=4: 2 x 64 x 2 = 256
    assert expected == {1: 768, 2: 384, 4: 256}[tp]


# ------------------------------------------------------------------ (b) GQA KV projections
def test_gqa_kv_projection_split_then_replicated() -> None:
    """KV projections split by head while tp <= kv_heads, one whole head per rank beyond."""
    model = toy()  # 2 KV heads, 64 kv params = 32 per head
    kv = block(model, "L0.attn.kv")
    assert kv.shard == "kv_heads" and kv.kv_heads == 2 and kv.params == 64
    assert block_params_per_gpu(kv, model, 1) == 64  # both heads
    assert block_params_per_gpu(kv, model, 2) == 32  # one head each
    assert block_params_per_gpu(kv, model, 4) == 32  # one head, replicated (not 64 / 4 = 16)
    # A model with 4 KV heads (MHA, 128 kv params = 32 per head) splits down to tp=4.
    mha = toy(attention={"kind": "mha", "num_heads": 4, "num_kv_heads": 4, "head_dim": 2})
    assert block_params_per_gpu(block(mha, "L0.attn.kv"), mha, 4) == 32  # 128 / 4
    # Ledger at tp=4, kv_heads=2: 2 layers x (q 16 + kv 32 + o 16) x 2 bytes = 256;
    # a plain 1/tp split of kv would have given 2 x (16 + 16 + 16) x 2 = 192.
    assert col(ledger(model, Layout(tp=4)), "attention") == [256] * 4


# ------------------------------------------------------------------ (c) MLA
MLA = {
    "kind": "mla",
    "num_heads": 4,
    "num_kv_heads": 4,
    "head_dim": 3,
    "q_lora_rank": 2,
    "kv_lora_rank": 4,
    "qk_nope_head_dim": 2,
    "qk_rope_head_dim": 1,
    "v_head_dim": 2,
}


def test_mla_latent_replicated_kv_b_and_o_split() -> None:
    """MLA: q_a and kv_a (latent) whole on every TP rank, q_b, kv_b and o split 1/tp."""
    model = toy(attention=MLA)
    # q_a = 8 x 2 = 16 (replicated); q_b = 2 x 4 heads x (2 + 1) = 24 (tp);
    # kv_a = 8 x (4 + 1) = 40 (replicated); kv_b = 4 x 4 x (2 + 2) = 64 (tp);
    # o = 4 x 2 x 8 = 64 (tp).
    sizes = {n: block(model, f"L0.attn.{n}") for n in ("q_a", "q_b", "kv_a", "kv_b", "o")}
    assert {n: b.params for n, b in sizes.items()} == {
        "q_a": 16,
        "q_b": 24,
        "kv_a": 40,
        "kv_b": 64,
        "o": 64,
    }
    assert {n: block_params_per_gpu(b, model, 4) for n, b in sizes.items()} == {
        "q_a": 16,
        "q_b": 6,
        "kv_a": 40,
        "kv_b": 16,
        "o": 16,
    }
    # Ledger: tp=1: 2 layers x (16 + 24 + 40 + 64 + 64 = 208) x 2 = 832
    assert col(ledger(model, Layout(tp=1)), "attention") == [832]
    # tp=4: 2 layers x (16 + 6 + 40 + 16 + 16 = 94) x 2 = 376
    assert col(ledger(model, Layout(tp=4)), "attention") == [376] * 4


def test_mla_kv_cache_not_divided_by_tp() -> None:
    """MLA caches kv_lora_rank + rope = 5 elements per token per layer on every TP rank."""
    model = toy(attention=MLA)
    # 2 layers x 4 requests x 8 tokens x (4 + 1) elements x 2 bytes = 640, at any tp.
    for tp in (1, 2, 4):
        assert col(ledger(model, Layout(tp=tp)), "kv_cache") == [640] * tp


# ------------------------------------------------------------------ (d) GQA KV cache
@pytest.mark.parametrize(
    ("tp", "expected"),
    [
        (1, 2 * 4 * 8 * (2 * 2 * 2) * BF16),  # both heads: k + v x 2 heads x dim 2 = 8 -> 1024
        (2, 2 * 4 * 8 * (2 * 1 * 2) * BF16),  # one head per rank: 4 elements -> 512
        (4, 2 * 4 * 8 * (2 * 1 * 2) * BF16),  # tp > kv heads: one replicated head -> 512
    ],
)
def test_gqa_kv_cache_split_by_kv_heads(tp: int, expected: int) -> None:
    """GQA KV cache: ceil(kv_heads / tp) heads per rank (split, then replicated)."""
    assert col(ledger(toy(), Layout(tp=tp)), "kv_cache") == [expected] * tp
    assert expected == {1: 1024, 2: 512, 4: 512}[tp]


# ------------------------------------------------------------------ (e) embeddings and LM head
def test_embedding_first_stage_lm_head_last_stage_vocab_parallel() -> None:
    """pp=2: the embedding lives on stage 0, the LM head on stage 1, ceil(vocab/tp) rows each."""
    model = toy(vocab_size=15)
    led = ledger(model, Layout(tp=2, pp=2))
    # ceil(15 / 2) = 8 rows x hidden 8 = 64 params x 2 bytes = 128 (not 15 x 8 / 2 = 60 -> 120)
    assert col(led, "embeddings") == [128, 128, 128, 128]
    # Stage 0 (GPUs 0, 1) has no LM head and stage 1 no embedding: with pp=1 both sit together.
    assert col(ledger(model, Layout(tp=2)), "embeddings") == [256, 256]
    # tp=4: ceil(15 / 4) = 4 rows x 8 = 32 params; pp=1 holds embedding + head = 2 x 64 bytes
    assert col(ledger(model, Layout(tp=4)), "embeddings") == [128] * 4


def test_tied_embeddings_copy_on_last_stage_only_when_pipelined() -> None:
    """Tied embeddings: one copy at pp=1, a second copy on the last stage at pp=2."""
    model = toy(tie_word_embeddings=True)
    # Total parameters count the tied matrix once: 1512 - 128 = 1384 (see test_total_params).
    assert model.total_params() == 1384
    # pp=1, tp=2: one vocab shard, ceil(16 / 2) x 8 = 64 params x 2 bytes = 128
    assert col(ledger(model, Layout(tp=2)), "embeddings") == [128, 128]
    # pp=2, tp=2: the embedding on stage 0 and its copy as LM head on stage 1, 128 bytes each
    assert col(ledger(model, Layout(tp=2, pp=2)), "embeddings") == [128] * 4
    # untied at pp=1 for comparison: embedding + LM head = 2 x 128 = 256
    assert col(ledger(toy(), Layout(tp=2)), "embeddings") == [256, 256]


# ------------------------------------------------------------------ (f) norms and routers
def test_norms_and_routers_replicated_on_every_gpu() -> None:
    """Norms and routers are whole on every GPU whatever tp and ep are."""
    model = toy()
    # 2 layers x (norms 16 + router 32) + final norm 8 = 104 params x 2 bytes = 208
    for layout in (Layout(), Layout(tp=2), Layout(tp=4, ep=4), Layout(tp=2, dp_attn=2, ep=4)):
        assert col(ledger(model, layout), "norms_routers") == [208] * layout.gpus
    # pp=2, tp=2: stage 0 has layer 0 only: 48 x 2 = 96; stage 1 has layer 1 + the
    # final norm: (48 + 8) x 2 = 112.
    assert col(ledger(model, Layout(tp=2, pp=2)), "norms_routers") == [96, 96, 112, 112]


# ------------------------------------------------------------------ (g) experts
EXPERT = 3 * 8 * 4 * BF16  # one expert: 96 params = 192 bytes


def test_experts_contiguous_first_ranks_take_the_remainder() -> None:
    """5 experts over ep=2: rank 0 holds experts 0-2, rank 1 holds 3-4."""
    model = toy(moe={"num_experts": 5})
    layout = Layout(tp=2, ep=2)  # etp = 2 // 2 = 1
    assert default_expert_map(model, layout) == {0: ((0, 1, 2), (3, 4)), 1: ((0, 1, 2), (3, 4))}
    # GPU 0: 2 layers x 3 experts x 192 = 1152; GPU 1: 2 x 2 x 192 = 768
    assert col(ledger(model, layout), "experts") == [2 * 3 * EXPERT, 2 * 2 * EXPERT]
    assert col(ledger(model, layout), "experts") == [1152, 768]
    # 5 experts over ep=4: 2, 1, 1, 1 -> 2 layers x (2, 1, 1, 1) x 192
    layout4 = Layout(tp=4, ep=4)
    assert default_expert_map(model, layout4)[0] == ((0, 1), (2,), (3,), (4,))
    assert col(ledger(model, layout4), "experts") == [768, 384, 384, 384]


def test_expert_tp_splits_each_expert() -> None:
    """etp=2 holds half of each expert on each GPU of an EP rank."""
    # tp=4, ep=2, etp=2: GPUs 0,1 are EP rank 0 (experts 0,1), GPUs 2,3 rank 1 (experts 2,3).
    # Each GPU: 2 layers x 2 experts x ceil(96 / 2) = 48 params x 2 bytes = 384
    assert col(ledger(toy(), Layout(tp=4, ep=2, etp=2)), "experts") == [384] * 4
    # 5 experts: rank 0 holds 3 -> 2 x 3 x 96 = 576; rank 1 holds 2 -> 2 x 2 x 96 = 384
    five = toy(moe={"num_experts": 5})
    assert col(ledger(five, Layout(tp=4, ep=2, etp=2)), "experts") == [576, 576, 384, 384]
    # ep=1 fills the stage: etp = 4, every GPU holds a quarter of all 4 experts:
    # 2 layers x 4 x ceil(96 / 4) = 24 params x 2 bytes = 384
    assert col(ledger(toy(), Layout(tp=4)), "experts") == [384] * 4


def test_redundant_slots_add_replicas() -> None:
    """2 redundant slots over ep=2: 6 slots, 3 per rank, slot p holds expert p % 4."""
    model = toy()
    layout = Layout(tp=2, ep=2, redundant_experts=2)
    # rank 0: slots 0,1,2 -> experts 0,1,2; rank 1: slots 3,4,5 -> experts 3,0,1
    assert default_expert_map(model, layout)[0] == ((0, 1, 2), (3, 0, 1))
    # each GPU: 2 layers x 3 experts x 192 = 1152 (without the replicas 2 x 2 x 192 = 768)
    assert col(ledger(model, layout), "experts") == [1152, 1152]
    assert col(ledger(model, Layout(tp=2, ep=2)), "experts") == [768, 768]


# ------------------------------------------------------------------ (h) fp8 weights
def test_fp8_shrinks_linear_weights_not_embeddings_or_norms() -> None:
    """fp8 stores linear weights in 1 byte (+ one fp32 scale per 128x128); 16-bit parts stay."""
    model = toy()
    led = ledger(model, Layout(), workload(weight_dtype="fp8"))
    # fp8 per block: ceil(n x (1 + 4 / 16384)). q, kv, o: 64 params -> ceil(64.0156) = 65 bytes.
    # attention: 2 layers x 3 blocks x 65 = 390 (bf16: 2 x 192 x 2 = 768)
    assert col(led, "attention") == [390]
    # experts follow weight_dtype: one expert ceil(96 x (1 + 4 / 16384)) = 97 bytes;
    # 2 layers x 4 x 97 = 776 (bf16: 2 x 4 x 192 = 1536)
    assert col(led, "experts") == [776]
    # embeddings and LM head stay bf16: (128 + 128) x 2 = 512
    assert col(led, "embeddings") == [512]
    # norms and routers stay bf16: 104 x 2 = 208
    assert col(led, "norms_routers") == [208]
    # The same model in bf16, for contrast.
    bf = ledger(model, Layout())
    assert col(bf, "attention") == [768] and col(bf, "experts") == [1536]


# ------------------------------------------------------------------ (i) sliding window
def test_sliding_window_caps_the_kv_cache() -> None:
    """A layer with window 3 caches min(8, 3) = 3 tokens per request."""
    model = toy(
        layers=[
            {"mixer": "attention", "ffn": "moe", "window": 3},
            {"mixer": "attention", "ffn": "moe"},
        ]
    )
    # layer 0: 4 requests x 3 tokens x 8 elements x 2 bytes = 192;
    # layer 1: 4 x 8 x 8 x 2 = 512; total 704 (no window: 1024)
    assert col(ledger(model, Layout()), "kv_cache") == [192 + 512]
    # A window longer than the context changes nothing: 2 x 512 = 1024
    long = toy(layers=[{"mixer": "attention", "ffn": "moe", "window": 100}] * 2)
    assert col(ledger(long, Layout()), "kv_cache") == [1024]


# ------------------------------------------------------------------ (j) DP attention
@pytest.mark.parametrize(
    ("dp_attn", "requests"),
    [(1, 5), (2, 3), (4, 2), (5, 1)],  # ceil(5 / dp_attn)
)
def test_dp_attention_divides_kv_requests(dp_attn: int, requests: int) -> None:
    """Each attention-DP group caches ceil(batch / dp_attn) of the 5 requests."""
    led = ledger(toy(), Layout(tp=1, dp_attn=dp_attn), workload(batch=5))
    # 2 layers x requests x 8 tokens x 8 elements x 2 bytes
    expected = 2 * requests * 8 * 8 * BF16
    assert col(led, "kv_cache") == [expected] * dp_attn
    assert expected == {1: 1280, 2: 768, 4: 512, 5: 256}[dp_attn]


# ------------------------------------------------------------------ (k) parameter counts
def test_total_params_base_toy() -> None:
    """Base toy: 128 + 2 x (16 + 64 + 64 + 64 + 32 + 4 x 96) + 8 + 128 = 1512 parameters."""
    model = toy()
    assert model.total_params() == 128 + 2 * (16 + 64 + 64 + 64 + 32 + 4 * 96) + 8 + 128
    assert model.total_params() == 1512
    # active: no input embedding, 2 of 4 experts: 1512 - 128 - 2 x 2 x 96 = 1000
    assert model.active_params() == 1000


def test_total_params_dense_and_shared_expert() -> None:
    """A dense layer 0 (width 6) and a MoE layer 1 with a gated shared expert count by hand."""
    model = toy(
        layers=[{"mixer": "attention", "ffn": "dense"}, {"mixer": "attention", "ffn": "moe"}],
        dense_intermediate_size=6,
        moe={"num_shared_experts": 1, "shared_intermediate_size": 4, "shared_expert_gate": True},
    )
    # embedding 128
    # L0: norms 16 + q 64 + kv 64 + o 64 + mlp 3 x 8 x 6 = 144 -> 352
    # L1: norms 16 + q 64 + kv 64 + o 64 + router 32 + experts 4 x 96 = 384
    #     + shared 3 x 8 x 4 = 96 + shared gate 8 -> 728
    # final norm 8 + LM head 128
    assert model.total_params() == 128 + 352 + 728 + 8 + 128 == 1344
    # Ledger at tp=2: the shared expert and dense MLP split 1/tp.
    led = ledger(model, Layout(tp=2))
    assert col(led, "dense_mlp") == [144 // 2 * BF16] * 2  # 144
    assert col(led, "shared_experts") == [96 // 2 * BF16] * 2  # 96


# ------------------------------------------------------------------ layout legality
def test_layout_rejects_ep_times_etp_not_dividing_stage() -> None:
    """Layout refuses ep x etp that does not divide tp x dp_attn."""
    with pytest.raises(ValidationError, match=r"ep x etp \(3 x 1\) must divide"):
        Layout(tp=2, ep=3)
    with pytest.raises(ValidationError, match=r"ep x etp \(2 x 4\) must divide"):
        Layout(tp=4, ep=2, etp=4)
    with pytest.raises(ValidationError, match=r"ep x etp \(4 x 1\) must divide"):
        Layout(tp=2, dp_attn=1, ep=4, etp=1)
    # Legal: 2 x 2 = 4 GPUs per stage, ep 4 x etp 1 = 4.
    assert Layout(tp=2, dp_attn=2, ep=4, etp=1).edp == 1
    assert Layout(tp=4, ep=2).expert_tp == 2


def test_rules_flag_heads_not_divisible_by_tp() -> None:
    """4 query heads over tp=3 is illegal in every profile."""
    problems = layout_violations(toy(), cluster(), Layout(tp=3), PROFILES["generic"])
    assert "attention heads (4) are not divisible by tp (3)" in problems
    # 2 KV heads and tp 3 divide neither way either.
    assert any(p.startswith("KV heads (2) and tp (3)") for p in problems)


def test_rules_sglang_needs_experts_divisible_by_ep() -> None:
    """SGLang needs (experts + redundant) % ep == 0; the generic profile does not."""
    five = toy(moe={"num_experts": 5})
    layout = Layout(tp=2, ep=2)
    assert layout_violations(five, cluster(), layout, PROFILES["sglang"]) == [
        "expert slots (5) are not divisible by ep (2)"
    ]
    assert layout_violations(five, cluster(), layout, PROFILES["generic"]) == []
    # One redundant slot makes 6 slots, divisible by 2.
    fixed = Layout(tp=2, ep=2, redundant_experts=1)
    assert layout_violations(five, cluster(), fixed, PROFILES["sglang"]) == []


def test_rules_accept_a_legal_layout() -> None:
    """tp=2 (heads 4, KV heads 2), ep=2 over 4 experts, pp=2 on 8 GPUs is legal everywhere."""
    layout = Layout(tp=2, pp=2, ep=2)
    for name in PROFILES:
        assert layout_violations(toy(), cluster(), layout, PROFILES[name]) == [], name
