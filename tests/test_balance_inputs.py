"""Expert-load inputs: the three file formats, the bundled load sets and bad files.

Every bad file lives in ``tests/data/invalid_loads/``. Loading it must raise
:class:`InvalidInputError` whose ``source`` is the file and whose ``field`` is the offending
element as written in the file (``load.3.5`` = expert 5 of the fourth layer), or ``None``
when the file is not a JSON object at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from placer.balance.loads import (
    LoadStats,
    load_loads,
    loads_from_dict,
    loads_to_json,
)
from placer.balance.synthetic import synthetic_loads
from placer.exceptions import InvalidInputError

ROOT = Path(__file__).resolve().parent.parent
LOADS = ROOT / "instances" / "loads"
INVALID = ROOT / "tests" / "data" / "invalid_loads"
SHARED_COUNTS = ROOT.parent / "shared" / "moe_routing_loads" / "olmoe_mixtral_expert_counts.json"
OLMOE_COMMIT = "357454f4f647385839c0ff6b99a688dc7cd9c13f"

TOY_STATS: dict[str, Any] = {
    "models": {
        "toy": {
            "hf_model": "org/Toy-4E",
            "top_k": 2,
            "variants": {
                "topk": {
                    "c4": {"15": [1, 2, 3, 2], "0": [4, 4, 0, 0], "7": [2, 2, 2, 2]},
                    "arxiv": {"0": [8, 0, 0, 0]},
                },
                "top1": {"c4": {"0": [2, 2, 0, 0]}},
            },
        },
        "other": {"top_k": 1, "variants": {"topk": {"c4": {"0": [1, 1]}}}},
    }
}


# -- the formats ----------------------------------------------------------------------------


def test_matrix_format() -> None:
    """Format (a): layers x experts with optional layers, name, top_k, source."""
    stats = loads_from_dict(
        {"name": "m", "layers": [3, 9], "top_k": 2, "load": [[1, 2.5, 0], [4, 5, 6]]}, "m.json"
    )
    assert stats.name == "m" and stats.layers == (3, 9) and stats.top_k == 2
    assert stats.num_layers == 2 and stats.num_experts == 3
    arr = stats.array()
    assert arr.dtype == np.float64 and arr.shape == (2, 3)
    np.testing.assert_array_equal(arr, [[1, 2.5, 0], [4, 5, 6]])
    np.testing.assert_array_equal(stats.layer(9), [4, 5, 6])


def test_single_layer_format_defaults() -> None:
    """Format (b): one flat list is one layer, id 0, named after the file."""
    stats = loads_from_dict({"load": [5, 0, 1]}, "some/dir/hot.json")
    assert stats.layers == (0,) and stats.name == "hot" and stats.top_k is None
    np.testing.assert_array_equal(stats.array(), [[5, 0, 1]])


def test_routing_stats_format_selects_table() -> None:
    """Format (c): model and domain choose a table; layers sort by id; top_k comes along."""
    stats = loads_from_dict(TOY_STATS, "toy.json", model="toy", domain="c4")
    assert stats.layers == (0, 7, 15) and stats.top_k == 2 and stats.name == "toy-c4"
    np.testing.assert_array_equal(stats.array()[2], [1, 2, 3, 2])
    assert stats.source == "toy.json: models.toy.variants.topk.c4"
    top1 = loads_from_dict(TOY_STATS, "toy.json", model="org/Toy-4E", variant="top1", domain="c4")
    assert top1.top_k == 1 and top1.name == "toy-c4-top1"
    single = loads_from_dict(TOY_STATS, "toy.json", model="other")
    assert single.num_experts == 2  # the only domain is picked without asking


@pytest.mark.parametrize(
    ("kwargs", "field", "choices"),
    [
        ({}, "models", "toy, other"),
        ({"model": "toy"}, "models.toy.variants.topk", "c4, arxiv"),
        ({"model": "nope"}, "models", "toy, other"),
        ({"model": "toy", "variant": "top3"}, "models.toy.variants", "topk, top1"),
    ],
)
def test_routing_stats_open_choice_lists_options(
    kwargs: dict[str, str], field: str, choices: str
) -> None:
    """An open or unknown choice in a routing-stats file names the field and lists the options."""
    with pytest.raises(InvalidInputError) as info:
        loads_from_dict(TOY_STATS, "toy.json", **kwargs)
    assert info.value.source == "toy.json" and info.value.field == field
    assert choices in str(info.value)


def test_selection_on_plain_file_is_an_error() -> None:
    """model/domain only make sense for a routing-stats file."""
    with pytest.raises(InvalidInputError, match="routing-stats"):
        loads_from_dict({"load": [1, 2]}, "x.json", domain="c4")


def test_counts_accept_integral_floats() -> None:
    """Counts may be written as 12.0; 12.5 is rejected (see the invalid files)."""
    stats = loads_from_dict({"counts": True, "load": [12.0, 3]}, "x.json")
    np.testing.assert_array_equal(stats.array(), [[12, 3]])


def test_load_stats_checks_shape_when_built_directly() -> None:
    """Built in code, LoadStats still rejects ragged rows, a layer-count mismatch, repeats."""
    with pytest.raises(ValidationError, match=r"load\.1 has 1 experts"):
        LoadStats(name="x", layers=(0, 1), load=((1.0, 2.0), (1.0,)))
    with pytest.raises(ValidationError, match="layers names 1 layers"):
        LoadStats(name="x", layers=(0,), load=((1.0,), (2.0,)))
    with pytest.raises(ValidationError, match="given twice"):
        LoadStats(name="x", layers=(4, 4), load=((1.0,), (2.0,)))
    with pytest.raises(ValidationError, match="at least one layer"):
        LoadStats(name="x", layers=(), load=())
    with pytest.raises(ValidationError):
        LoadStats(name="x", layers=(0,), load=((-1.0,),))


def test_load_stats_is_frozen() -> None:
    """LoadStats is immutable."""
    stats = LoadStats(name="x", layers=(0,), load=((1.0, 2.0),))
    with pytest.raises(ValidationError):
        stats.name = "y"  # type: ignore[misc]


def test_json_round_trip(tmp_path: Path) -> None:
    """loads_to_json writes format (a) that reads back to the same record."""
    stats = LoadStats(name="rt", layers=(1, 5), load=((1.0, 2.0), (3.0, 0.0)), top_k=1)
    path = tmp_path / "rt.json"
    path.write_text(loads_to_json(stats))
    assert json.loads(path.read_text())["counts"] is True
    assert load_loads(path) == stats
    floats = LoadStats(name="f", layers=(0,), load=((0.5, 2.0),))
    path.write_text(loads_to_json(floats))
    assert load_loads(path) == floats


# -- bad files ------------------------------------------------------------------------------

INVALID_CASES = [
    ("negative.json", "load.1.1", "non-negative"),
    ("nan.json", "load.2.1", "finite"),
    ("infinity.json", "load.1", "finite"),
    ("non-integer-count.json", "load.1.1", "whole number"),
    ("ragged.json", "load.2", "has 2 experts but load.0 has 3"),
    ("empty.json", "load", "at least one layer"),
    ("empty-layer.json", "load.0", "at least one expert"),
    ("top-level-array.json", None, "expected a JSON object at the top level, got list"),
    ("not-json.json", None, "not valid JSON"),
    ("load-not-a-list.json", "load", "must be a list"),
    ("missing-load.json", "load", "required field is missing"),
    ("boolean-value.json", "load.1", "must be a number, got true"),
    ("string-value.json", "load.0.1", "must be a number"),
    ("mixed-rows.json", "load.1", "must be a list of expert loads"),
    ("layers-length.json", "layers", "names 2 layers but load has 3"),
    ("duplicate-layers.json", "layers.2", "given twice"),
    ("negative-layer.json", "layers.1", "non-negative integer"),
    ("unknown-field.json", "weights", "unknown field"),
    ("top-k-zero.json", "top_k", "greater than 0"),
    ("counts-not-boolean.json", "counts", "true or false"),
    ("wrong-format.json", "format", "placer-loads"),
    ("routing-stats-non-integer.json", "models.toy.variants.topk.c4.7.1", "whole number"),
    ("routing-stats-negative.json", "models.toy.variants.topk.c4.7.1", "non-negative"),
    ("routing-stats-ragged.json", "models.toy.variants.topk.c4.15", "has 3 experts"),
    ("routing-stats-bad-layer.json", "models.toy.variants.topk.c4.last", "not a non-negative"),
    ("routing-stats-two-models.json", "models", "choose one of: toy-a, toy-b"),
    ("routing-stats-two-domains.json", "models.toy.variants.topk", "choose one of: c4, arxiv"),
    # Past MAX_LOAD: a sum of 1e308s overflows, an integer of 401 digits is no float at all.
    ("huge-float.json", "load.0.0", "must be at most 1e+15"),
    ("huge-integer.json", "load.0.2", "an integer of 401 digits"),
    # A superscript digit passes str.isdigit() but not int().
    ("routing-stats-superscript-layer.json", "models.toy.variants.topk.c4.1²",
     "not a non-negative integer"),
]


def test_every_invalid_file_has_a_case() -> None:
    """No file in tests/data/invalid_loads goes untested."""
    assert {p.name for p in INVALID.iterdir()} == {name for name, _, _ in INVALID_CASES}


@pytest.mark.parametrize(("name", "field", "fragment"), INVALID_CASES)
def test_invalid_file_names_source_and_field(name: str, field: str | None, fragment: str) -> None:
    """Each bad file raises InvalidInputError naming the file and the exact element."""
    path = INVALID / name
    with pytest.raises(InvalidInputError) as info:
        load_loads(path)
    err = info.value
    assert err.source == str(path)
    assert err.field == field
    assert fragment in str(err)
    assert str(path) in str(err)
    if field is not None:
        assert f"field '{field}'" in str(err)


def test_missing_file() -> None:
    """A path that does not exist is an InvalidInputError naming it."""
    with pytest.raises(InvalidInputError, match="file not found"):
        load_loads(INVALID / "does-not-exist.json")


# -- the bundled load sets ------------------------------------------------------------------

TOKENS = 208_896
REAL = {
    **{f"olmoe-{d}": (8, TOKENS) for d in ("arxiv", "book", "c4", "github", "wikipedia")},
    **{f"olmoe{v}-tulu": (8, 205_243) for v in ("", "-sft", "-dpo")},
    **{f"mixtral-{d}": (2, TOKENS) for d in ("arxiv", "book", "c4", "github", "wikipedia")},
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_load_sets(name: str) -> None:
    """Each real OLMoE/Mixtral file loads, layers 0/7/15, every layer sums to tokens x top_k."""
    top_k, tokens = REAL[name]
    stats = load_loads(LOADS / f"{name}.json")
    assert stats.name == name and stats.top_k == top_k and stats.layers == (0, 7, 15)
    assert stats.num_experts == (64 if name.startswith("olmoe") else 8)
    assert stats.source is not None and f"allenai/OLMoE@{OLMOE_COMMIT}" in stats.source
    sums = stats.array().sum(axis=1)
    assert (sums == tokens * top_k).all()
    if tokens == TOKENS:
        assert sums[0] == (1_671_168 if top_k == 8 else 417_792)


def test_bundled_files_are_all_known() -> None:
    """instances/loads holds exactly the real sets, the two synthetic sets and the README."""
    names = {p.stem for p in LOADS.glob("*.json")}
    assert names == set(REAL) | {"deepseek-v3-synthetic", "deepseek-v3-synthetic-nogroup"}
    assert (LOADS / "README.md").is_file()


@pytest.mark.skipif(not SHARED_COUNTS.is_file(), reason="shared routing statistics not present")
def test_real_sets_match_upstream_counts() -> None:
    """The bundled files hold exactly the counts of the shared routing-stats file."""
    for model, prefix in (("olmoe", "olmoe"), ("mistral", "mixtral")):
        for domain in ("arxiv", "c4"):
            upstream = load_loads(SHARED_COUNTS, model=model, domain=domain)
            bundled = load_loads(LOADS / f"{prefix}-{domain}.json")
            assert upstream.load == bundled.load and upstream.layers == bundled.layers


# -- synthetic loads ------------------------------------------------------------------------

DSV3 = {
    "layers": list(range(3, 61)),
    "experts": 256,
    "top_k": 8,
    "tokens": 16384,
    "zipf_s_range": (0.5, 0.9),
    "groups": 8,
    "seed": 0,
}


@pytest.mark.parametrize(
    ("name", "sigma"), [("deepseek-v3-synthetic", 0.25), ("deepseek-v3-synthetic-nogroup", 0.0)]
)
def test_synthetic_files_regenerate(name: str, sigma: float) -> None:
    """The bundled synthetic files are exactly what the seeded generator gives."""
    stats = load_loads(LOADS / f"{name}.json")
    fresh = synthetic_loads(**DSV3, group_sigma=sigma, name=name)  # type: ignore[arg-type]
    assert stats.load == fresh.load and stats.layers == fresh.layers
    assert stats.num_layers == 58 and stats.num_experts == 256 and stats.top_k == 8


def test_synthetic_shape_of_loads() -> None:
    """Counts are whole, clipped at tokens, sum to at most tokens x top_k, hot expert ~7%."""
    w = load_loads(LOADS / "deepseek-v3-synthetic.json").array()
    assert (w == np.round(w)).all() and w.max() <= 16384
    assert (w.sum(axis=1) <= 16384 * 8).all() and (w.sum(axis=1) > 0.99 * 16384 * 8).all()
    share = w.max(axis=1) / w.sum(axis=1)
    assert 0.05 < share.mean() < 0.09 and share.max() < 0.126


def test_synthetic_is_deterministic_and_seeded() -> None:
    """Same seed, same loads; another seed, other loads; group_sigma=0 keeps the ranks."""
    a = synthetic_loads(4, 16, 2, 1000, (0.5, 0.9), 4, 0.25, seed=3)
    b = synthetic_loads(4, 16, 2, 1000, (0.5, 0.9), 4, 0.25, seed=3)
    c = synthetic_loads(4, 16, 2, 1000, (0.5, 0.9), 4, 0.25, seed=4)
    assert a == b and a.load != c.load
    assert a.layers == (0, 1, 2, 3) and a.top_k == 2
    with pytest.raises(ValueError, match="top_k"):
        synthetic_loads(1, 4, 8, 10, (0.5, 0.9))
    with pytest.raises(ValueError, match="groups"):
        synthetic_loads(1, 10, 2, 10, (0.5, 0.9), groups=4)
