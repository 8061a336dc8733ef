"""Parameter counts of every bundled real model against the published totals."""

from __future__ import annotations

import pytest

from placer import inspect_model, load_model
from placer.model import ModelSpec

from .conftest import MODELS

REAL_MODELS = sorted(p.stem for p in MODELS.glob("*.json") if p.stem != "seed-moe-8x4")

#: Gaps above 1 % between our count and the published total, and why.
EXPLAINED_TOTAL_GAPS = {
    # "1T" is a rounded headline; the architecture gives 1.026 T (61 layers, 384 experts).
    "kimi-k2": "published total is rounded to 1T",
    # Meta's 109B counts the vision encoder, which the text-only config here omits.
    "llama-4-scout-17b-16e": "published total includes the vision tower",
    # DeepSeek's "16B" for V2-Lite is a rounded headline (15.7 B computed, as in its paper).
    "deepseek-v2-lite": "published total is rounded (15.7 B)",
}


def test_all_21_models_are_bundled(published: dict[str, dict]) -> None:
    """models/ holds one config per real model of the facts collection."""
    assert set(REAL_MODELS) == set(published)
    assert len(REAL_MODELS) == 21


@pytest.mark.parametrize("model_id", REAL_MODELS)
def test_total_params_match_published(model_id: str, published: dict[str, dict]) -> None:
    """Total parameters are within 3 % of the published count (1 % unless explained)."""
    spec = load_model(MODELS / f"{model_id}.json")
    ratio = spec.total_params() / published[model_id]["total"]
    assert abs(ratio - 1) <= 0.03, ratio
    if abs(ratio - 1) > 0.01:
        assert model_id in EXPLAINED_TOTAL_GAPS


@pytest.mark.parametrize("model_id", REAL_MODELS)
def test_active_params_match_published(model_id: str, published: dict[str, dict]) -> None:
    """Active parameters bracket the published figure.

    Publishers differ on whether the input embedding (a lookup) counts as active:
    DeepSeek and gpt-oss leave it out, Qwen, OLMoE and Llama-4 include it. Ours
    leaves it out, so the published number must lie between ours and ours plus
    the embedding, within 3 %.
    """
    spec = load_model(MODELS / f"{model_id}.json")
    pub = published[model_id]["active"]
    if pub is None:
        pytest.skip("no published active count (Grok-1)")
    embedding = spec.vocab_size * spec.hidden_size
    low, high = spec.active_params(), spec.active_params() + embedding
    assert low * 0.97 <= pub <= high * 1.03, (low, high, pub)


def test_mixtral_8x7b_is_exact() -> None:
    """Mixtral-8x7B's count is the well-known exact figure, 46,702,792,704."""
    spec = load_model(MODELS / "mixtral-8x7b.json")
    assert spec.total_params() == 46_702_792_704


def _moe_layers(spec: ModelSpec) -> int:
    return len(spec.moe_layers)


@pytest.mark.parametrize(
    ("model_id", "layers", "moe_layers", "experts", "top_k"),
    [
        ("deepseek-v3", 61, 58, 256, 8),
        ("deepseek-v2-lite", 27, 26, 64, 6),
        ("llama-4-maverick-17b-128e", 48, 24, 128, 1),
        ("jamba-v0.1", 32, 16, 16, 2),
        ("glm-4.5", 92, 89, 160, 8),
        ("qwen3-30b-a3b", 48, 48, 128, 8),
        ("grok-1", 64, 64, 8, 2),
        ("dbrx", 40, 40, 16, 4),
    ],
)
def test_layer_structure(model_id: str, layers: int, moe_layers: int, experts: int,
                         top_k: int) -> None:
    """Dense-first, interleaved and hybrid layer rules give the published structure."""
    spec = load_model(MODELS / f"{model_id}.json")
    assert spec.num_layers == layers
    assert _moe_layers(spec) == moe_layers
    assert spec.experts_in_layer(spec.moe_layers[0]) == experts
    assert spec.experts_per_token == top_k


@pytest.mark.parametrize("path", sorted(MODELS.glob("*.json")), ids=lambda p: p.stem)
def test_inspect_every_model(path) -> None:  # type: ignore[no-untyped-def]
    """inspect works on every bundled model and reports the format and assumptions."""
    report = inspect_model(load_model(path))
    assert report.total_params > 0
    assert 0 < report.active_params <= report.total_params
    assert report.format in ("hf-config", "module-list", "placer")
    assert report.bytes_by_dtype["fp8"] < report.bytes_by_dtype["bf16"]


def test_assumed_fields_are_reported() -> None:
    """A default the loader had to pick is listed, with its value."""
    spec = load_model(MODELS / "glm-4.5.json")
    fields = {a.field: a.value for a in spec.assumed}
    assert fields == {"moe_layer_freq": "1"}


def test_kv_cache_per_token_matches_facts() -> None:
    """MLA caches the latent (512 + 64), GQA 2 x kv_heads x head_dim per layer."""
    v3 = load_model(MODELS / "deepseek-v3.json")
    assert v3.kv_elements_per_token(0) == 576
    mixtral = load_model(MODELS / "mixtral-8x7b.json")
    assert mixtral.kv_elements_per_token(0) == 2 * 8 * 128


def test_placer_format_round_trip() -> None:
    """A model dumped in placer's own format loads back to the same spec."""
    from placer.load import model_from_dict

    spec = load_model(MODELS / "deepseek-v2-lite.json")
    data = spec.model_dump(mode="json", exclude={"format"})
    data["format"] = "placer-model"
    again = model_from_dict(data, "roundtrip.json")
    assert again.total_params() == spec.total_params()
    assert again.model_dump(exclude={"format", "source"}) == spec.model_dump(
        exclude={"format", "source"})


def test_glm_4_5_counts_the_router_correction_bias() -> None:
    """GLM-4.5's router holds one score-correction bias per routed expert in every MoE layer
    (transformers' Glm4MoeTopkRouter), although its config names no ``topk_method``."""
    spec = load_model(MODELS / "glm-4.5.json")
    assert spec.moe is not None and spec.moe.router_bias
    data = spec.model_dump()
    data["moe"]["router_bias"] = False
    without = ModelSpec.model_validate(data)
    assert spec.total_params() - without.total_params() == 89 * 160


def test_phi_3_5_moe_counts_layernorm_and_lm_head_biases() -> None:
    """Phi-3.5-MoE's norms are LayerNorms (scale and bias: two per layer and the final one)
    and its LM head has a bias (``lm_head_bias``), as transformers' Phimoe modules build them."""
    spec = load_model(MODELS / "phi-3.5-moe.json")
    assert spec.norm_bias and spec.lm_head_bias
    data = spec.model_dump()
    data["norm_bias"] = data["lm_head_bias"] = False
    plain = ModelSpec.model_validate(data)
    h, layers = spec.hidden_size, spec.num_layers
    assert spec.total_params() - plain.total_params() == (2 * layers + 1) * h + spec.vocab_size
    # Exact, from the config (h 4096, 32 layers, 16 experts of 6400, vocab 32064, 8 KV heads
    # of 128, biased q/k/v/o): embedding 131,334,144; per layer attention 41,953,280, experts
    # 1,258,291,200, router 65,536, two LayerNorms 16,384; final LayerNorm 8,192; LM head
    # with bias 131,366,208.
    assert spec.total_params() == 41_873_153_344


def test_new_fields_at_default_leave_the_plan_copy_unchanged() -> None:
    """A plan's model copy omits fields added since plans were first stored while they hold
    their default (so stored plans still verify), keeps them when set, and loads back."""
    plain = load_model(MODELS / "mixtral-8x7b.json")
    copy = plain.canonical_dump()
    assert not {"norm_bias", "lm_head_bias"} & set(copy)
    full = plain.model_dump(mode="json")
    assert all(layer.pop("chunk") is None for layer in full["layers"])
    assert set(full) - set(copy) == {"norm_bias", "lm_head_bias", "mtp_layers"}
    assert copy == {k: v for k, v in full.items() if k in copy}
    phi = load_model(MODELS / "phi-3.5-moe.json")
    copy = phi.canonical_dump()
    assert copy["norm_bias"] is True and copy["lm_head_bias"] is True
    assert ModelSpec.model_validate(copy).total_params() == phi.total_params()
    # Nested records too: a layer's chunk is left out unless set (Llama-4).
    assert all("chunk" not in layer for layer in plain.canonical_dump()["layers"])
    llama = load_model(MODELS / "llama-4-scout-17b-16e.json").canonical_dump()
    assert [layer.get("chunk") for layer in llama["layers"][:4]] == [8192, 8192, 8192, None]
    assert ModelSpec.model_validate(llama).layers[0].chunk == 8192


def test_deepseek_v3_mtp_layer_counted_only_when_the_workload_loads_it() -> None:
    """DeepSeek-V3's one MTP layer (``num_nextn_predict_layers``) is outside the 671 B count
    and adds to the last stage's memory only with ``speculative_mtp``. By hand (h = 7168, bf16):
    an MoE decoder layer 11,507,286,272 parameters (MLA 187,107,328; 256 experts
    11,274,289,152; shared expert 44,040,192; router and correction bias 1,835,264; two norms
    14,336), plus enorm, hnorm and the shared head's norm (3h) and eh_proj (2h x h): 11,610,068,224
    parameters, 23,220,136,448 bytes; its embedding and head are the model's (vLLM shares them)."""
    from placer.layout import Layout
    from placer.ledger import COLUMNS, edge_bytes, kv_bytes_for_layer, memory_ledger, mtp_bytes
    from placer.workload import Workload

    spec = load_model(MODELS / "deepseek-v3.json")
    assert spec.mtp_layers == 1
    assert spec.total_params() == 671_026_419_200
    on = Workload(weight_dtype="bf16", expert_dtype="bf16", speculative_mtp=True)
    off = on.model_copy(update={"speculative_mtp": False})
    row = mtp_bytes(spec, on, Layout())
    kv = row[COLUMNS.index("kv_cache")]
    assert kv == kv_bytes_for_layer(spec, on, Layout(), spec.num_layers - 1) > 0
    assert int(row.sum() - kv) == 23_220_136_448
    assert not mtp_bytes(spec, off, Layout()).any()
    # In a pipeline only the last stage holds it; the solver's edge bytes agree with the ledger.
    from placer.load import load_cluster

    cluster = load_cluster(MODELS.parent / "instances" / "hardware" / "dgx-h200.json")
    layout = Layout(tp=2, pp=2, ep=2)
    with_mtp = memory_ledger(spec, cluster, on, layout).used
    without = memory_ledger(spec, cluster, off, layout).used
    part = int(mtp_bytes(spec, on, layout).sum())
    assert list(with_mtp - without) == [0, 0, part, part]
    assert edge_bytes(spec, on, layout)[1] - edge_bytes(spec, off, layout)[1] == part


def test_glm_4_5_reads_its_mtp_layer_and_kimi_k2_has_none() -> None:
    """GLM-4.5 publishes one MTP layer, Kimi-K2 zero (``num_nextn_predict_layers``)."""
    assert load_model(MODELS / "glm-4.5.json").mtp_layers == 1
    assert load_model(MODELS / "kimi-k2.json").mtp_layers == 0


def test_a_plan_with_mtp_layers_is_optimal_and_verified() -> None:
    """Solved with ``speculative_mtp`` (DeepSeek-V2-Lite given one MTP layer), the plan is
    optimal, the independent verifier accepts it (its ledger holds the MTP bytes the solver
    planned), and each last-stage GPU holds exactly the MTP bytes more than without."""
    from placer import SolveConfig, load_cluster, verify
    from placer.layout import Layout
    from placer.ledger import memory_ledger, mtp_bytes
    from placer.search.outer import solve
    from placer.workload import Workload

    from .conftest import HARDWARE

    base = load_model(MODELS / "deepseek-v2-lite.json")
    spec = ModelSpec.model_validate(base.model_dump() | {"mtp_layers": 1})
    cluster = load_cluster(HARDWARE / "dgx-a100-80gb.json")
    on = Workload(speculative_mtp=True)
    plan = solve(spec, cluster, on, SolveConfig(time_limit_s=60, deterministic=True))
    assert plan.status == "optimal" and plan.objective.gap == 0
    assert plan.inputs.workload["speculative_mtp"] is True
    report = verify(plan)
    assert report.ok, report.violations
    assert plan.layout is not None
    layout = Layout(
        tp=plan.layout.tp, pp=plan.layout.pp, ep=plan.layout.ep,
        etp=plan.layout.etp, dp_attn=plan.layout.dp_attn,
        layers_per_stage=tuple(plan.layout.layers_per_stage),
        redundant_experts=plan.layout.redundant_experts,
    )
    part = int(mtp_bytes(spec, on, layout).sum())
    assert part > 0
    with_mtp = memory_ledger(spec, cluster, on, layout).used
    without = memory_ledger(spec, cluster, Workload(), layout).used
    last = with_mtp.size - layout.stage_width
    assert list(with_mtp - without) == [0] * last + [part] * layout.stage_width


def test_jamba_mamba_state_in_the_model_dtype_as_vllm_keeps_it() -> None:
    """A Jamba Mamba layer keeps, per request, a conv state of d_conv - 1 and an SSM state of
    d_state columns over expand x hidden / tp channels, both bf16 (vLLM's mamba cache dtypes
    default to the model dtype). Jamba-v0.1 (h 4096, expand 2, d_state 16, d_conv 4) at tp 1:
    8,192 x (16 + 3) x 2 bytes = 311,296 bytes a request; 155,648 at tp 2."""
    from placer.layout import Layout
    from placer.ledger import kv_bytes_for_layer
    from placer.workload import Workload

    spec = load_model(MODELS / "jamba-v0.1.json")
    mamba_layer = next(i for i, layer in enumerate(spec.layers) if layer.mixer == "mamba")
    one = Workload(batch=1)
    assert kv_bytes_for_layer(spec, one, Layout(), mamba_layer) == 311_296
    assert kv_bytes_for_layer(spec, Workload(batch=8), Layout(), mamba_layer) == 8 * 311_296
    assert kv_bytes_for_layer(spec, one, Layout(tp=2), mamba_layer) == 155_648


def test_llama_4_chunked_attention_kv_capped_under_vllm_only() -> None:
    """Llama-4-Scout: 36 of 48 layers use chunked attention (RoPE layers, every fourth is a
    global NoPE layer), chunk 8,192. Under the vllm profile their KV holds at most one chunk
    plus a step's batched tokens (8,192 + 8,192 = 16,384 tokens), as vLLM's hybrid KV cache
    manager sizes ChunkedLocalAttentionSpec; the generic profile keeps every token. One request
    of 100,000 tokens, tp 1, bf16, 8 KV heads of 128: 16,384 x 2,048 x 2 = 67,108,864 bytes a
    chunked layer, 100,000 x 2,048 x 2 = 409,600,000 a global one."""
    from placer import evaluate, load_cluster
    from placer.collectives import use_engine
    from placer.layout import Layout
    from placer.ledger import kv_bytes_for_layer
    from placer.workload import Workload

    from .conftest import HARDWARE

    spec = load_model(MODELS / "llama-4-scout-17b-16e.json")
    chunked = [i for i, layer in enumerate(spec.layers) if layer.chunk is not None]
    assert len(chunked) == 36 and 3 not in chunked and spec.layers[0].chunk == 8192
    w = Workload(batch=1, context=100_000)
    with use_engine("vllm"):
        assert kv_bytes_for_layer(spec, w, Layout(), 0) == 67_108_864
        assert kv_bytes_for_layer(spec, w, Layout(), 3) == 409_600_000
    assert kv_bytes_for_layer(spec, w, Layout(), 0) == 409_600_000
    # evaluate's ledger follows its profile: 36 layers x (409,600,000 - 67,108,864) less KV.
    cluster = load_cluster(HARDWARE / "dgx-h100.json")
    layout = Layout(tp=8)
    kv = {
        prof: sum(g.breakdown["kv_cache"] for g in evaluate(spec, cluster, w, layout, prof).gpus)
        for prof in ("generic", "vllm")
    }
    per_gpu_saving = 36 * (409_600_000 - 67_108_864) // 8
    assert kv["generic"] - kv["vllm"] == 8 * per_gpu_saving
