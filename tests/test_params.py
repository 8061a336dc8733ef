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
