"""Hypothesis strategies for placer's inputs: valid, subtly wrong and thoroughly broken.

Every strategy draws a :class:`Case`: the parsed JSON content of one input file
(a model, a hardware file or a workload), how it was made (``label``) and, when
the way it was made fixes the answer, what loading it must do (``expect``).

- **Hugging Face configs** start from the bundled real configs in ``models/``,
  either as published or shrunk to a tiny consistent model of the same family
  (1-4 layers, a few heads and experts, widths of a few elements), then may be
  broken on purpose (a required field deleted or given a wrong value: the error
  must name that field) or mutated at random (fields deleted, wrong types,
  negative, zero, NaN/Infinity, quoted numbers, huge values, unknown keys).
- **placer's own model format** and **module lists** are generated from scratch
  (attention MHA/GQA/MLA, Mamba mixers, sliding windows, shared experts, every
  block kind, random DAG edges, every dtype), then broken: cycles, duplicate
  names, unknown edges, bytes that are not a whole number of values, unknown
  fields, layers out of range...
- **hardware files** (single GPU type with ``gpus``/``nodes``, or mixed
  ``groups``; the bundled files too) and **workloads**, valid or broken.
- :func:`solve_instances` draws tiny (model, hardware, workload) triples for
  cross-checking ``solve`` against a brute force: GPU memory is drawn as a
  fraction of what the model needs on one GPU, so both outcomes occur.

The strategies return plain JSON data (dicts), never loaded specs, so that a
failing case can be saved as files and replayed with the command line.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from placer.dtypes import BYTES_PER_ELEMENT
from placer.hf_config import FAMILIES, detect_family
from placer.limits import MIN_MEMORY_UTILIZATION
from placer.load import model_from_dict
from placer.model import LAYERLESS_KINDS

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "models"
HARDWARE_DIR = ROOT / "instances" / "hardware"
WORKLOADS_DIR = ROOT / "instances" / "workloads"

JsonPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Expect:
    """What loading a case must do.

    ``loads`` True: it loads. False: it raises InvalidInputError, whose ``field``
    is ``field`` when that is given (one of ``fields`` when several are acceptable)
    and whose message contains ``fragment`` when that is given.
    """

    loads: bool
    field: str | None = None
    fragment: str | None = None
    fields: tuple[str, ...] = ()

    def accepts_field(self, got: str | None) -> bool:
        """Whether ``got`` is the (or an) expected field."""
        if self.field is None and not self.fields:
            return True
        return got == self.field or got in self.fields


@dataclass(frozen=True)
class Case:
    """One input file's content, what kind of file it is, and how it was drawn."""

    kind: str  # "model", "hardware" or "workload"
    data: Any
    label: str
    expect: Expect | None = None
    family: str | None = None  # HF family of a model config, when it is one
    mutations: tuple[tuple[str, str], ...] = field(default=())  # (op, dotted path)

    def __post_init__(self) -> None:
        # Own copy of the data: drawn constants ([] or {}) are shared between draws.
        object.__setattr__(self, "data", copy.deepcopy(self.data))

    def to_json(self) -> dict[str, Any]:
        """A JSON-able record of the case (NaN and infinities as JSON's constants)."""
        return {
            "kind": self.kind,
            "label": self.label,
            "family": self.family,
            "mutations": [list(m) for m in self.mutations],
            "expect": None if self.expect is None else self.expect.__dict__,
            "data": self.data,
        }


def dotted(path: JsonPath) -> str:
    """A JSON path as placer spells fields: ``modules.3.bytes``."""
    return ".".join(str(p) for p in path)


def dumps(data: Any) -> str:
    """JSON text of ``data``; NaN and infinities become ``NaN``/``Infinity`` as json writes."""
    return json.dumps(data, indent=1, allow_nan=True)


# ------------------------------------------------------------------ bundled files


def _read(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


#: The bundled Hugging Face configs by file stem, and their family.
HF_CONFIGS: dict[str, dict[str, Any]] = {}
HF_FAMILY: dict[str, str] = {}
for _p in sorted(MODELS_DIR.glob("*.json")):
    _d = _read(_p)
    _fam = None if "format" in _d else detect_family(_d)
    if _fam is not None:
        HF_CONFIGS[_p.stem] = _d
        HF_FAMILY[_p.stem] = _fam
SEED_MODULES: dict[str, Any] = _read(MODELS_DIR / "seed-moe-8x4.json")
HARDWARE_FILES: dict[str, dict[str, Any]] = {
    p.stem: _read(p) for p in sorted(HARDWARE_DIR.glob("*.json"))
}
WORKLOAD_FILES: dict[str, dict[str, Any]] = {
    p.stem: _read(p) for p in sorted(WORKLOADS_DIR.glob("*.json"))
}

#: Values a fuzzed field may take instead of its own.
ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    -(2**31),
    2**63,
    10**30,
    1.5,
    -0.0,
    0.5,
    1e308,
    5e-324,
    math.nan,
    math.inf,
    -math.inf,
    "",
    "8",
    "abc",
    "two\nlines",
    [],
    [1, 2],
    {},
    {"x": 1},
]


def odd_values(current: Any, key: str | int | None = None) -> st.SearchStrategy[Any]:
    """A wrong, extreme or merely different value for a field holding ``current``."""
    options: list[st.SearchStrategy[Any]] = [st.sampled_from(ODD_VALUES)]
    if isinstance(current, int) and not isinstance(current, bool):
        near: list[Any] = [current + 1, current - 1, -current, 2 * current, current // 2,
                           current * 1000, str(current)]
        if abs(current) < 2**1000:  # an earlier mutation may have made it too big for a float
            near += [float(current), current + 0.5]
        options.append(st.sampled_from(near))
        options.append(magnitudes())
    elif isinstance(current, float):
        options.append(st.sampled_from([-current, current * 1e300, current / 1e300, 0.0,
                                        int(current) if math.isfinite(current) else 0]))
        options.append(magnitudes())
    elif isinstance(current, str):
        options.append(
            st.sampled_from([current.upper(), current + "x", *sorted(FAMILIES), "placer-model",
                             "placer-modules", "placer-hardware", "bfloat16", "fp8"])
        )
    elif isinstance(current, list):
        options.append(
            st.sampled_from([current[:1], current * 2, [current], list(reversed(current))])
        )
    # A copy, so that a later edit inside a drawn [] or {} never changes ODD_VALUES (which
    # would make the strategy draw differently on replay).
    return st.one_of(*options).map(copy.deepcopy)


def magnitudes() -> st.SearchStrategy[int | float]:
    """A number anywhere in the representable range: an integer of 0 to 400 digits (JSON has
    no limit), of either sign, or any float (subnormals, the largest, infinities, NaN)."""
    whole = st.tuples(st.integers(0, 400), st.integers(1, 9), st.booleans()).map(
        lambda t: (-1 if t[2] else 1) * t[1] * 10 ** t[0]
    )
    powers = st.integers(0, 130).map(lambda k: 2**k - 1)
    return st.one_of(whole, powers, st.floats())


# ------------------------------------------------------------------ JSON surgery


def json_paths(data: Any, prefix: JsonPath = ()) -> list[JsonPath]:
    """Every path to a value inside ``data`` (not the root itself)."""
    out: list[JsonPath] = []
    if isinstance(data, dict):
        for k, v in data.items():
            p = (*prefix, k)
            out.append(p)
            out.extend(json_paths(v, p))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            p = (*prefix, i)
            out.append(p)
            out.extend(json_paths(v, p))
    return out


def get_at(data: Any, path: JsonPath) -> Any:
    """The value at ``path``."""
    for p in path:
        data = data[p]
    return data


def set_at(data: Any, path: JsonPath, value: Any) -> None:
    """Replace the value at ``path``."""
    get_at(data, path[:-1])[path[-1]] = value


def del_at(data: Any, path: JsonPath) -> None:
    """Remove the value at ``path`` (a dict key or a list item)."""
    del get_at(data, path[:-1])[path[-1]]


@st.composite
def mutated(
    draw: st.DrawFn, data: Any, max_mutations: int = 3
) -> tuple[Any, tuple[tuple[str, str], ...]]:
    """``data`` with 1 to ``max_mutations`` random edits, and the edits made."""
    out = copy.deepcopy(data)
    done: list[tuple[str, str]] = []
    for _ in range(draw(st.integers(1, max_mutations))):
        paths = json_paths(out)
        op = draw(st.sampled_from(["set", "set", "set", "delete", "add"]))
        if not paths or op == "add":
            dicts = [(), *(p for p in paths if isinstance(get_at(out, p), dict))]
            where = draw(st.sampled_from(dicts)) if isinstance(out, dict) else None
            if where is None:
                continue
            key = draw(st.sampled_from(["extra", "bogus_field", "num_experts", "format",
                                        "modules", "gpu", "groups", "_name_or_path",
                                        "text_config", "layers", "x"]))
            target = get_at(out, where)
            target[key] = draw(odd_values(target.get(key), key))
            done.append(("add", dotted((*where, key))))
            continue
        path = draw(st.sampled_from(paths))
        if op == "delete":
            del_at(out, path)
            done.append(("delete", dotted(path)))
        else:
            set_at(out, path, draw(odd_values(get_at(out, path), path[-1])))
            done.append(("set", dotted(path)))
    return out, tuple(done)


def with_non_finite(draw: st.DrawFn, data: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """``data`` with one number (or any value) replaced by NaN or an infinity; its path."""
    out = copy.deepcopy(data)
    paths = [p for p in json_paths(out) if all("." not in str(x) for x in p)]
    path = draw(st.sampled_from(paths))
    set_at(out, path, draw(st.sampled_from([math.nan, math.inf, -math.inf])))
    return out, dotted(path)


# ------------------------------------------------------------------ HF configs

#: Per family: (reader prefix, required integer fields read unconditionally).
HF_REQUIRED: dict[str, tuple[str, ...]] = {
    "mixtral": ("num_hidden_layers", "hidden_size", "vocab_size", "num_local_experts",
                "num_experts_per_tok", "intermediate_size", "num_attention_heads"),
    "phimoe": ("num_hidden_layers", "hidden_size", "vocab_size", "num_local_experts",
               "num_experts_per_tok", "intermediate_size", "num_attention_heads"),
    "gpt_oss": ("num_hidden_layers", "hidden_size", "vocab_size", "num_local_experts",
                "num_experts_per_tok", "intermediate_size", "num_attention_heads"),
    "olmoe": ("num_hidden_layers", "hidden_size", "vocab_size", "num_experts",
              "num_experts_per_tok", "intermediate_size", "num_attention_heads"),
    "qwen2_moe": ("num_hidden_layers", "hidden_size", "vocab_size", "num_experts",
                  "num_experts_per_tok", "moe_intermediate_size", "num_attention_heads"),
    "qwen3_moe": ("num_hidden_layers", "hidden_size", "vocab_size", "num_experts",
                  "num_experts_per_tok", "moe_intermediate_size", "num_attention_heads"),
    "deepseek": ("num_hidden_layers", "hidden_size", "vocab_size", "n_routed_experts",
                 "num_experts_per_tok", "moe_intermediate_size", "num_attention_heads",
                 "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"),
    "glm4_moe": ("num_hidden_layers", "hidden_size", "vocab_size", "n_routed_experts",
                 "num_experts_per_tok", "moe_intermediate_size", "num_attention_heads"),
    "llama4": tuple(
        f"text_config.{k}"
        for k in ("num_hidden_layers", "hidden_size", "vocab_size", "num_local_experts",
                  "num_experts_per_tok", "intermediate_size", "num_attention_heads")
    ),
    "jamba": ("num_hidden_layers", "hidden_size", "vocab_size", "num_experts",
              "num_experts_per_tok", "intermediate_size", "num_attention_heads",
              "attn_layer_period", "expert_layer_period", "mamba_d_state", "mamba_d_conv",
              "mamba_expand", "mamba_dt_rank"),
    "dbrx": ("n_layers", "d_model", "n_heads", "vocab_size", "attn_config.kv_n_heads",
             "ffn_config.moe_num_experts", "ffn_config.moe_top_k", "ffn_config.ffn_hidden_size"),
    # emb_size and num_selected_experts also identify the family: deleting them is not here.
    "grok1": ("num_layers", "num_q_heads", "num_kv_heads", "key_size", "num_experts",
              "vocab_size"),
}


def _split(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


def _heads(draw: st.DrawFn) -> tuple[int, int]:
    kv = draw(st.sampled_from([1, 2]))
    return kv * draw(st.sampled_from([1, 2])), kv


def _shrink(draw: st.DrawFn, family: str, raw: dict[str, Any]) -> dict[str, Any]:
    """A tiny, consistent config of ``family`` built over the real config ``raw``."""
    d = copy.deepcopy(raw)
    r = d["text_config"] if family == "llama4" else d
    n = draw(st.integers(1, 4))
    experts = draw(st.integers(1, 6))
    top_k = draw(st.integers(1, min(experts, 2)))
    width = draw(st.sampled_from([4, 8, 16]))
    dense = draw(st.sampled_from([8, 16]))
    vocab = draw(st.sampled_from([8, 16, 32]))
    heads, kv = _heads(draw)
    head_dim = draw(st.sampled_from([2, 4]))
    if draw(st.booleans()):
        r.pop("torch_dtype", None)
        d.pop("torch_dtype", None)
        if draw(st.booleans()):
            d["torch_dtype"] = draw(st.sampled_from(["float16", "float32", "bfloat16"]))
    if family == "dbrx":
        d.update(n_layers=n, d_model=heads * head_dim, n_heads=heads, vocab_size=vocab)
        d["attn_config"]["kv_n_heads"] = kv
        d["ffn_config"].update(ffn_hidden_size=width, moe_num_experts=experts, moe_top_k=top_k)
        return d
    if family == "grok1":
        d.update(emb_size=8 * draw(st.integers(1, 2)),
                 widening_factor=draw(st.sampled_from([1, 2, 0.5])), key_size=head_dim,
                 num_q_heads=heads, num_kv_heads=kv, num_layers=n,
                 num_experts=experts, num_selected_experts=top_k, vocab_size=vocab)
        return d
    r.update(num_hidden_layers=n, vocab_size=vocab, num_attention_heads=heads,
             num_key_value_heads=kv, num_experts_per_tok=top_k)
    if "head_dim" in r or family in ("qwen3_moe", "gpt_oss", "glm4_moe", "llama4"):
        r["head_dim"] = head_dim
        r["hidden_size"] = draw(st.sampled_from([8, 16]))
    else:
        r["hidden_size"] = heads * head_dim
    if family in ("mixtral", "phimoe", "gpt_oss"):
        r.update(num_local_experts=experts, intermediate_size=width)
        if family == "gpt_oss":
            r["layer_types"] = draw(
                st.lists(st.sampled_from(["sliding_attention", "full_attention"]),
                         min_size=n, max_size=n)
            )
            r["sliding_window"] = draw(st.sampled_from([2, 4, 128]))
    elif family == "olmoe":
        r.update(num_experts=experts, intermediate_size=width)
    elif family in ("qwen2_moe", "qwen3_moe"):
        r.update(num_experts=experts, moe_intermediate_size=width, intermediate_size=dense,
                 decoder_sparse_step=draw(st.sampled_from([1, 1, 2])),
                 mlp_only_layers=sorted(draw(st.sets(st.integers(0, n - 1), max_size=n))))
        if family == "qwen2_moe":
            r["shared_expert_intermediate_size"] = draw(st.sampled_from([0, 8, 16]))
    elif family in ("deepseek", "glm4_moe"):
        groups = [g for g in range(1, experts + 1) if experts % g == 0]
        r.update(n_routed_experts=experts, moe_intermediate_size=width, intermediate_size=dense,
                 first_k_dense_replace=draw(st.integers(0, n)),
                 moe_layer_freq=draw(st.sampled_from([1, 1, 2])),
                 n_shared_experts=draw(st.sampled_from([0, 1, 2])))
        if r["n_shared_experts"] == 0:
            # Written as 0 it is rejected (a bug, see test_fuzz_inputs); absent means none.
            del r["n_shared_experts"]
        if draw(st.booleans()):
            r["n_group"] = draw(st.sampled_from(groups))
            r["topk_group"] = draw(st.integers(1, r["n_group"]))
        else:
            r.pop("n_group", None)
            r.pop("topk_group", None)
        if family == "deepseek":
            r.update(num_key_value_heads=heads, kv_lora_rank=draw(st.sampled_from([4, 8])),
                     q_lora_rank=draw(st.sampled_from([None, 4, 8])), qk_nope_head_dim=head_dim,
                     qk_rope_head_dim=2, v_head_dim=draw(st.sampled_from([2, 4])))
    elif family == "llama4":
        r.update(num_local_experts=experts, intermediate_size=width, intermediate_size_mlp=dense,
                 interleave_moe_layer_step=draw(st.sampled_from([1, 2])))
    elif family == "jamba":
        a_per = draw(st.integers(1, n + 1))
        e_per = draw(st.integers(1, 2))
        r.update(num_experts=experts, intermediate_size=width, attn_layer_period=a_per,
                 attn_layer_offset=draw(st.integers(0, a_per - 1)), expert_layer_period=e_per,
                 expert_layer_offset=draw(st.integers(0, e_per - 1)),
                 mamba_d_state=draw(st.sampled_from([2, 4])), mamba_d_conv=2,
                 mamba_expand=draw(st.sampled_from([1, 2])), mamba_dt_rank=2)
    return d


@st.composite
def tiny_hf_configs(draw: st.DrawFn) -> tuple[str, str, dict[str, Any]]:
    """(file stem, family, tiny valid config): a bundled config shrunk to a few layers."""
    stem = draw(st.sampled_from(sorted(HF_CONFIGS)))
    family = HF_FAMILY[stem]
    return stem, family, _shrink(draw, family, HF_CONFIGS[stem])


@st.composite
def hf_cases(draw: st.DrawFn) -> Case:
    """A Hugging Face config: real, shrunk, broken on purpose, or randomly mutated."""
    stem = draw(st.sampled_from(sorted(HF_CONFIGS)))
    family = HF_FAMILY[stem]
    shrunk = draw(st.booleans())
    base = _shrink(draw, family, HF_CONFIGS[stem]) if shrunk else copy.deepcopy(HF_CONFIGS[stem])
    label = f"hf:{stem}:{'tiny' if shrunk else 'real'}"
    how = draw(st.sampled_from(["valid", "delete", "bad-int", "non-finite", "read-field",
                                "read-field", "family", "random", "random"]))
    if how == "valid":
        return Case("model", base, label, Expect(True), family)
    if how == "read-field":
        # A field placer reads (or assumed), given an odd value or deleted.
        spec = model_from_dict(base, "base.json")
        fields = sorted({*spec.read, *(a.field for a in spec.assumed)})
        where = draw(st.sampled_from(fields))
        path = _split(where)
        data = copy.deepcopy(base)
        parent = get_at(data, path[:-1]) if len(path) > 1 else data
        if isinstance(parent, dict) and path[-1] in parent and draw(st.integers(0, 4)) == 0:
            del parent[path[-1]]
            return Case("model", data, f"{label}:read-delete", None, family,
                        (("delete", where),))
        if isinstance(parent, dict):
            parent[path[-1]] = draw(odd_values(parent.get(path[-1]), path[-1]))
        return Case("model", data, f"{label}:read-field", None, family, (("set", where),))
    if how == "family":
        other = draw(st.sampled_from(sorted(FAMILIES)))
        data = copy.deepcopy(base)
        target = data["text_config"] if draw(st.booleans()) and "text_config" in data else data
        target["model_type"] = other
        return Case("model", data, f"{label}:as-{other}", None, FAMILIES[other],
                    (("set", "model_type"),))
    if how == "non-finite":
        data, where = with_non_finite(draw, base)
        return Case("model", data, f"{label}:non-finite", Expect(False, where, "finite"), family,
                    (("non-finite", where),))
    if how in ("delete", "bad-int"):
        where = draw(st.sampled_from(HF_REQUIRED[family]))
        data = copy.deepcopy(base)
        path = _split(where)
        if how == "delete":
            del_at(data, path)
            return Case("model", data, f"{label}:delete", Expect(False, where, "required field"),
                        family, (("delete", where),))
        value = draw(st.sampled_from([0, -1, -(2**40), True, False, "8", 1.5, 2.0, [], {}]))
        set_at(data, path, value)
        return Case("model", data, f"{label}:bad-int", Expect(False, where), family,
                    (("set", where),))
    data, done = draw(mutated(base))
    return Case("model", data, f"{label}:mutated", None, family, done)


# ------------------------------------------------------------------ placer's own format

DTYPES = sorted(BYTES_PER_ELEMENT)


@st.composite
def placer_model_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """A valid model in placer's own format (``"format": "placer-model"``)."""
    n = draw(st.integers(1, 4))
    kind = draw(st.sampled_from(["mha", "gqa", "mla"]))
    kv = draw(st.sampled_from([1, 2]))
    heads = kv if kind == "mha" else kv * draw(st.sampled_from([1, 2, 4]))
    attention: dict[str, Any] = {"kind": kind, "num_heads": heads,
                                 "num_kv_heads": heads if kind == "mla" else kv,
                                 "head_dim": draw(st.sampled_from([2, 4]))}
    if kind == "mla":
        attention.update(kv_lora_rank=draw(st.sampled_from([2, 4])), qk_nope_head_dim=2,
                         qk_rope_head_dim=2, v_head_dim=draw(st.sampled_from([2, 4])))
        if draw(st.booleans()):
            attention["q_lora_rank"] = 4
    for flag in ("qkv_bias", "o_bias", "sinks"):
        if draw(st.booleans()):
            attention[flag] = draw(st.booleans())
    if draw(st.booleans()):
        attention["qk_norm"] = draw(st.sampled_from(["none", "head", "full"]))
    mixers = draw(st.lists(st.sampled_from(["attention", "attention", "mamba"]),
                           min_size=n, max_size=n))
    if "attention" not in mixers:
        mixers[0] = "attention"
    ffns = draw(st.lists(st.sampled_from(["moe", "moe", "dense"]), min_size=n, max_size=n))
    layers: list[dict[str, Any]] = []
    for m, f in zip(mixers, ffns, strict=True):
        layer: dict[str, Any] = {"mixer": m, "ffn": f}
        if m == "attention" and draw(st.integers(0, 3)) == 0:
            layer["window"] = draw(st.sampled_from([1, 2, 64]))
        layers.append(layer)
    raw: dict[str, Any] = {
        "format": "placer-model",
        "name": draw(st.sampled_from(["gen", "m-ü", "a b"])),
        "dtype": draw(st.sampled_from(DTYPES)),
        "expert_dtype": draw(st.sampled_from(DTYPES)),
        "num_layers": n,
        "hidden_size": draw(st.sampled_from([8, 16])),
        "vocab_size": draw(st.sampled_from([4, 16])),
        "attention": attention,
        "layers": layers,
    }
    if "moe" in ffns or draw(st.booleans()):
        experts = draw(st.integers(1, 6))
        moe: dict[str, Any] = {"num_experts": experts,
                               "top_k": draw(st.integers(1, min(2, experts))),
                               "expert_intermediate_size": draw(st.sampled_from([4, 8]))}
        if draw(st.booleans()):
            shared = draw(st.integers(1, 2))
            moe.update(num_shared_experts=shared, shared_intermediate_size=4 * shared)
        for flag in ("shared_expert_gate", "router_bias", "expert_bias"):
            if draw(st.booleans()):
                moe[flag] = draw(st.booleans())
        if draw(st.booleans()):
            moe["n_group"] = draw(st.sampled_from([g for g in range(1, experts + 1)
                                                   if experts % g == 0]))
            moe["topk_group"] = 1
        raw["moe"] = moe
    if "dense" in ffns or draw(st.booleans()):
        raw["dense_intermediate_size"] = draw(st.sampled_from([4, 8]))
    if "mamba" in mixers or draw(st.integers(0, 3)) == 0:
        raw["mamba"] = {"d_state": 2, "d_conv": 2, "expand": draw(st.sampled_from([1, 2])),
                        "dt_rank": 2}
    optional = {
        "tie_word_embeddings": st.booleans(),
        "max_position_embeddings": st.sampled_from([16, 4096]),
        "gated_mlp": st.booleans(),
        "extra_norms_per_layer": st.integers(0, 2),
        "source": st.sampled_from(["somewhere", None]),
    }
    for key, strat in optional.items():
        if draw(st.booleans()):
            raw[key] = draw(strat)
    return raw


#: Integer fields of placer's model format that must be positive, by path.
PLACER_POSITIVE = ("num_layers", "hidden_size", "attention.num_heads", "attention.num_kv_heads",
                   "attention.head_dim")


@st.composite
def placer_model_cases(draw: st.DrawFn) -> Case:
    """placer's own model format: valid, a positive size made bad, an unknown field, or mutated."""
    base = draw(placer_model_dicts())
    how = draw(st.sampled_from(["valid", "bad-int", "unknown", "non-finite", "random", "random"]))
    if how == "valid":
        return Case("model", base, "placer-model", Expect(True))
    data = copy.deepcopy(base)
    if how == "bad-int":
        where = draw(st.sampled_from(PLACER_POSITIVE))
        set_at(data, _split(where), draw(st.sampled_from([0, -3, True, "8", 2.5, None, []])))
        return Case("model", data, "placer-model:bad-int", Expect(False, where), None,
                    (("set", where),))
    if how == "unknown":
        parent = draw(st.sampled_from([(), ("attention",), ("layers", 0)]))
        set_at(data, (*parent, "bogus"), 1)
        where = dotted((*parent, "bogus"))
        return Case("model", data, "placer-model:unknown", Expect(False, where, "Extra inputs"),
                    None, (("add", where),))
    if how == "non-finite":
        data, where = with_non_finite(draw, base)
        return Case("model", data, "placer-model:non-finite", Expect(False, where, "finite"),
                    None, (("non-finite", where),))
    data, done = draw(mutated(base))
    return Case("model", data, "placer-model:mutated", None, None, done)


# ------------------------------------------------------------------ module lists

BLOCK_KINDS = ["embedding", "lm_head", "attention", "mamba", "dense_mlp", "shared_expert",
               "expert", "router", "norm"]


def _whole_bytes(draw: st.DrawFn, dtype: str) -> int:
    """A byte count that is a whole number of ``dtype`` values."""
    width = BYTES_PER_ELEMENT[dtype]
    params = width.denominator * draw(st.integers(1, 64))
    size = params * width
    assert size.denominator == 1
    return int(size)


@st.composite
def module_list_dicts(draw: st.DrawFn, tidy: bool = False) -> dict[str, Any]:
    """A valid module list. ``tidy``: per layer one attention module and 0-4 equal experts
    (the shape the solver's brute force enumerates quickly); else any kinds, layers and DAG."""
    n = draw(st.integers(1, 4))
    dtype = draw(st.sampled_from(DTYPES))
    modules: list[dict[str, Any]] = []
    if tidy:
        for i in range(n):
            modules.append({"name": f"L{i}.attn", "kind": "attention", "layer": i,
                            "bytes": _whole_bytes(draw, dtype),
                            "flops_per_token": draw(st.integers(0, 4096)),
                            "kv_elements_per_token": draw(st.integers(0, 16))})
            size = _whole_bytes(draw, dtype)
            for e in range(draw(st.integers(0, 4))):
                modules.append({"name": f"L{i}.e{e}", "kind": "expert", "layer": i,
                                "bytes": size, "flops_per_token": size})
    else:
        for j in range(draw(st.integers(1, 8))):
            mod: dict[str, Any] = {"name": draw(st.sampled_from([f"m{j}", f"mod {j}", f"µ{j}"])),
                                   "kind": draw(st.sampled_from(BLOCK_KINDS)),
                                   "flops_per_token": draw(st.integers(0, 4096))}
            if draw(st.booleans()):
                mod["bytes"] = _whole_bytes(draw, dtype)
            else:
                mod["params"] = draw(st.integers(1, 512))
            # Only embeddings, LM heads and norms may sit outside the layers.
            layerless = mod["kind"] in LAYERLESS_KINDS
            layer = draw(st.one_of(st.none(), st.integers(0, n - 1)) if layerless else
                         st.integers(0, n - 1))
            if layer is not None or draw(st.booleans()):
                mod["layer"] = layer
            if draw(st.booleans()):
                mod["kv_elements_per_token"] = draw(st.integers(0, 16))
            modules.append(mod)
    raw: dict[str, Any] = {"format": "placer-modules",
                           "hidden_size": draw(st.sampled_from([8, 16])), "modules": modules}
    if dtype != "bf16" or draw(st.booleans()):  # absent means bf16
        raw["dtype"] = dtype
    used = [m["layer"] for m in modules if m.get("layer") is not None]
    if (max(used) + 1 if used else 1) != n or draw(st.booleans()):  # absent: derived
        raw["num_layers"] = n
    per_layer: dict[Any, int] = {}
    for m in modules:
        if m["kind"] == "expert":
            per_layer[m.get("layer")] = per_layer.get(m.get("layer"), 0) + 1
    if per_layer or draw(st.booleans()):
        # A token cannot use more experts than the smallest MoE layer has.
        raw["top_k"] = draw(st.integers(1, min([2, *per_layer.values()])))
    names = [m["name"] for m in modules]
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    if draw(st.booleans()) and pairs:
        chosen: list[tuple[Any, Any]] = draw(st.lists(st.sampled_from(pairs), max_size=6))
        raw["edges"] = [list(p) for p in chosen]
    for key, value in (("name", "mods"), ("notes", "generated"), ("source", "gen")):
        if draw(st.booleans()):
            raw[key] = value
    return raw


@st.composite
def module_list_cases(draw: st.DrawFn) -> Case:
    """A module list (generated, or the bundled seed model): valid, broken in a named way,
    or randomly mutated."""
    if draw(st.integers(0, 5)) == 0:
        base = copy.deepcopy(SEED_MODULES)
    else:
        base = draw(module_list_dicts(tidy=draw(st.booleans())))
    how = draw(st.sampled_from(["valid", "cycle", "self-loop", "duplicate", "unknown-edge",
                                "odd-bytes", "unknown-field", "layer-range", "no-top-k",
                                "no-hidden", "empty", "bad-dtype", "edge-shape", "non-finite",
                                "random", "random", "random"]))
    data = copy.deepcopy(base)
    mods: list[dict[str, Any]] = data["modules"]
    names = [m["name"] for m in mods]
    label = f"modules:{how}"
    expect: Expect | None
    if how == "valid":
        expect = Expect(True)
    elif how in ("cycle", "self-loop"):
        if how == "cycle" and len(names) >= 2:
            i, j = sorted(draw(st.lists(st.integers(0, len(names) - 1), min_size=2, max_size=2,
                                        unique=True)))
            chain = [[names[i], names[j]], [names[j], names[i]]]
        else:
            chain = [[names[0], names[0]]]
        data["edges"] = list(data.get("edges", [])) + chain
        expect = Expect(False, "edges", "cycle")
    elif how == "duplicate":
        if len(mods) < 2:
            mods.append(dict(mods[0]))
        j = draw(st.integers(1, len(mods) - 1))
        mods[j]["name"] = mods[0]["name"]
        data.pop("edges", None)
        expect = Expect(False, f"modules.{j}.name", "used twice")
    elif how == "unknown-edge":
        edges = list(data.get("edges", []))
        k = len(edges)
        edges.append(draw(st.sampled_from([[names[0], "ghost"], ["ghost", names[-1]]])))
        data["edges"] = edges
        expect = Expect(False, f"edges.{k}", "unknown module")
    elif how == "odd-bytes":
        dtype = data.get("dtype", "bf16")
        if BYTES_PER_ELEMENT[dtype] == 1:
            dtype = data["dtype"] = draw(st.sampled_from(["bf16", "fp8", "int4", "fp4", "fp32"]))
            for m in mods:
                m.pop("bytes", None)
                m.setdefault("params", 8)
        j = draw(st.integers(0, len(mods) - 1))
        mods[j].pop("params", None)
        mods[j]["bytes"] = _whole_bytes(draw, dtype) + 1
        expect = Expect(False, f"modules.{j}.bytes", "whole number")
    elif how == "unknown-field":
        j = draw(st.integers(0, len(mods) - 1))
        mods[j]["size"] = 1
        expect = Expect(False, f"modules.{j}.size", "unknown field")
    elif how == "layer-range":
        n = data.get("num_layers")
        if n is None:
            n = data["num_layers"] = 1 + max(
                [m["layer"] for m in mods if m.get("layer") is not None], default=0
            )
        j = draw(st.integers(0, len(mods) - 1))
        mods[j]["layer"] = n + draw(st.integers(0, 3))
        expect = Expect(False, f"modules.{j}.layer", "layers")
        # An earlier module's layer is fine, so the first error is this one.
    elif how == "no-top-k":
        mods.append({"name": "extra-expert", "kind": "expert", "layer": 0, "params": 4,
                     "flops_per_token": 1})
        data.pop("top_k", None)
        expect = Expect(False, "top_k", "required field is missing")
    elif how == "no-hidden":
        data.pop("hidden_size")
        expect = Expect(False, "hidden_size", "required field is missing")
    elif how == "empty":
        data["modules"] = draw(st.sampled_from([[], {}, None, "modules"]))
        data.pop("edges", None)
        expect = Expect(False, "modules")
    elif how == "bad-dtype":
        data["dtype"] = draw(st.sampled_from(["bfloat16", "fp6", 16, None, ""]))
        expect = Expect(False, "dtype") if data["dtype"] is not None else None
    elif how == "edge-shape":
        k = len(data.get("edges", []))
        bad_edge = draw(st.sampled_from([[names[0]], [names[0], 1], "a->b", [names[0]] * 3]))
        data["edges"] = [*data.get("edges", []), bad_edge]
        expect = Expect(False, f"edges.{k}", "pair")
    elif how == "non-finite":
        data, where = with_non_finite(draw, base)
        return Case("model", data, label, Expect(False, where, "finite"), None,
                    (("non-finite", where),))
    else:
        data, done = draw(mutated(base))
        return Case("model", data, "modules:mutated", None, None, done)
    return Case("model", data, label, expect, None, ((how, ""),))


@st.composite
def junk_cases(draw: st.DrawFn) -> Case:
    """Top-level values that are not a JSON object, and objects of no known format."""
    data = draw(st.sampled_from([[], [1, 2], 0, 3.5, "model", None, True, {}, {"format": 3},
                                 {"format": "placer-model-v2"}, {"model_type": "llama"},
                                 {"model_type": None}, {"model_type": ["mixtral"]},
                                 {"modules": "x"}, {"format": "placer-hardware"}]))
    if isinstance(data, dict):
        return Case("model", data, "junk-object", Expect(False))
    return Case("model", data, "junk", Expect(False, None, "expected a JSON object"))


def model_cases() -> st.SearchStrategy[Case]:
    """Every kind of model file content."""
    return st.one_of(hf_cases(), hf_cases(), placer_model_cases(), module_list_cases(),
                     junk_cases())


# ------------------------------------------------------------------ hardware

TFLOPS_KEYS = ["bf16", "fp16", "fp8", "fp4", "fp32"]


@st.composite
def link_dicts(draw: st.DrawFn, extreme: bool = False) -> dict[str, Any]:
    """One interconnect level; ``extreme`` allows valid but absurd figures."""
    floats = st.floats(1e-3, 1e4) if not extreme else st.sampled_from([1e-300, 1e300, 5e-324])
    link: dict[str, Any] = {"bandwidth_gbps": draw(st.one_of(floats, st.integers(1, 1000))),
                            "latency_us": draw(st.sampled_from([0, 0.0, 1, 2.5, 10.0]))}
    if draw(st.booleans()):
        link["name"] = draw(st.sampled_from(["NVLink", "", "IB\u00a0NDR"]))
    return link


@st.composite
def gpu_dicts(
    draw: st.DrawFn, memory: int | None = None, sixteen_bit: bool = False
) -> dict[str, Any]:
    """One GPU type with 1-5 TFLOPS entries (``sixteen_bit``: one of them bf16, fp16 or
    fp32; a GPU without one breaks evaluate and solve, a known bug)."""
    keys = draw(st.lists(st.sampled_from(TFLOPS_KEYS), min_size=1, max_size=5, unique=True))
    if sixteen_bit and not {"bf16", "fp16", "fp32"} & set(keys):
        keys.append(draw(st.sampled_from(["bf16", "fp16", "fp32"])))
    return {
        "name": draw(st.sampled_from(["G", "H100-SXM", "gpu ü"])),
        "memory_bytes": memory if memory is not None else draw(st.integers(1, 2**40)),
        "hbm_bandwidth_gbps": draw(st.one_of(st.floats(1e-2, 1e4), st.integers(1, 10000))),
        "tflops": {k: draw(st.one_of(st.floats(1e-3, 1e4), st.integers(1, 5000))) for k in keys},
    }


@st.composite
def hardware_dicts(
    draw: st.DrawFn,
    memory: int | None = None,
    max_gpus: int = 64,
    two_types: bool = True,
    sixteen_bit: bool = False,
) -> dict[str, Any]:
    """A valid hardware file: one GPU type (``gpus``, ``nodes`` or one node) or ``groups``."""
    per_node = draw(st.sampled_from([n for n in (1, 2, 4, 8) if n <= max_gpus]))
    domain = per_node * draw(st.sampled_from([1, 1, 2])) if draw(st.booleans()) else max(
        1, per_node // draw(st.sampled_from([1, 2]))
    )
    raw: dict[str, Any] = {
        "format": "placer-hardware",
        "name": draw(st.sampled_from(["hw", "a-cluster"])),
        "gpus_per_node": per_node,
        "scale_up_domain": domain,
        "scale_up": draw(link_dicts()),
        "scale_out": draw(link_dicts()),
    }
    if (per_node % domain == 0 and per_node != domain) or draw(st.integers(0, 3)) == 0:
        raw["node_link"] = draw(link_dicts())
    style = draw(st.sampled_from(["gpus", "nodes", "one-node", "groups"] if two_types
                                 else ["gpus", "nodes", "one-node"]))
    if style == "gpus":
        raw["gpu"] = draw(gpu_dicts(memory, sixteen_bit))
        raw["gpus"] = draw(st.integers(1, max_gpus))
    elif style == "nodes":
        raw["gpu"] = draw(gpu_dicts(memory, sixteen_bit))
        raw["nodes"] = draw(st.integers(1, max(1, max_gpus // per_node)))
    elif style == "one-node":
        raw["gpu"] = draw(gpu_dicts(memory, sixteen_bit))
        if per_node > max_gpus:
            raw["gpus_per_node"] = raw["scale_up_domain"] = max_gpus
            raw.pop("node_link", None)
    else:
        full = draw(st.integers(0, max(0, max_gpus // per_node - 1)))
        groups = []
        if full:
            groups.append({"gpu": draw(gpu_dicts(memory, sixteen_bit)), "count": full * per_node})
        bigger = memory if memory is None else memory * 2
        groups.append({"gpu": draw(gpu_dicts(bigger, sixteen_bit)),
                       "count": draw(st.integers(1, max(1, max_gpus - full * per_node)))})
        raw["groups"] = groups
    for key, strat in (("price_per_gpu_hour", st.sampled_from([0.5, 2, 10.25])),
                       ("source", st.just("generated")),
                       ("notes", st.builds(lambda: ["a note"])),
                       ("system", st.just("a system")),
                       ("sources", st.builds(lambda: [{"where": "x"}]))):
        if draw(st.booleans()):
            raw[key] = draw(strat)
    if draw(st.booleans()):
        raw.pop("format")
    return raw


#: Positive numbers of a single-type hardware file, by path.
HARDWARE_POSITIVE = ("gpu.memory_bytes", "gpu.hbm_bandwidth_gbps", "gpus_per_node",
                     "scale_up_domain", "scale_up.bandwidth_gbps", "scale_out.bandwidth_gbps")


@st.composite
def hardware_cases(draw: st.DrawFn) -> Case:
    """A hardware file: bundled, generated, broken in a named way, or randomly mutated."""
    if draw(st.booleans()):
        stem = draw(st.sampled_from(sorted(HARDWARE_FILES)))
        base = copy.deepcopy(HARDWARE_FILES[stem])
        label = f"hardware:{stem}"
    else:
        base = draw(hardware_dicts())
        label = "hardware:generated"
    how = draw(st.sampled_from(["valid", "extreme", "bad-number", "unknown", "tflops",
                                "count", "both", "format", "non-finite", "random", "random"]))
    if how in ("extreme", "bad-number", "tflops", "count") and "gpu" not in base:
        how = "random"  # these named breakages are for single-type files
    data = copy.deepcopy(base)
    expect: Expect | None
    if how == "valid":
        expect = Expect(True)
    elif how == "extreme":
        # Valid but absurd figures: a GPU or link a googol times too slow or too fast.
        where = draw(st.sampled_from(["gpu.hbm_bandwidth_gbps", "scale_up.bandwidth_gbps",
                                      "scale_out.bandwidth_gbps", "scale_up.latency_us",
                                      "gpu.memory_bytes"]))
        value: Any = draw(st.sampled_from([1e-300, 1e300, 5e-324]))
        if where == "gpu.memory_bytes":
            value = draw(st.sampled_from([2**62, 2**63, 2**64 + 1]))
        elif where.endswith("latency_us"):
            value = draw(st.sampled_from([1e300, 1e12]))
        set_at(data, _split(where), value)
        expect = None  # placer may accept it or reject it; either way without a crash
    elif how == "bad-number":
        where = draw(st.sampled_from(HARDWARE_POSITIVE))
        set_at(data, _split(where), draw(st.sampled_from([0, -1, -2.5, True, "8", None, []])))
        expect = Expect(False, where)
    elif how == "unknown":
        data["interconnect"] = {"x": 1}
        expect = Expect(False, "interconnect", "Extra inputs")
    elif how == "tflops":
        if draw(st.booleans()):
            data["gpu"]["tflops"] = {"bf17": 1.0}
            expect = Expect(False, "gpu.tflops", "unknown compute dtype")
        else:
            key = next(iter(data["gpu"]["tflops"]))
            data["gpu"]["tflops"][key] = draw(st.sampled_from([0, -1.0, "x", None]))
            expect = Expect(False, f"gpu.tflops.{key}")
    elif how == "count":
        for k in ("gpus", "nodes"):
            data.pop(k, None)
        key = draw(st.sampled_from(["gpus", "nodes"]))
        data[key] = draw(st.sampled_from([0, -4, True, "8", 2.5]))
        expect = Expect(False, key)
    elif how == "both":
        gpu = data.get("gpu") or data["groups"][0]["gpu"]
        data["gpu"] = gpu
        data["groups"] = [{"gpu": gpu, "count": 1}]
        expect = Expect(False, "groups", "not both")
    elif how == "format":
        data["format"] = draw(st.sampled_from(["placer-model", "hardware", 3]))
        expect = Expect(False, "format", "unknown format")
    elif how == "non-finite":
        data, where = with_non_finite(draw, base)
        return Case("hardware", data, f"{label}:non-finite", Expect(False, where, "finite"),
                    None, (("non-finite", where),))
    else:
        data, done = draw(mutated(base))
        return Case("hardware", data, f"{label}:mutated", None, None, done)
    return Case("hardware", data, f"{label}:{how}", expect, None, ((how, ""),))


# ------------------------------------------------------------------ workloads


@st.composite
def workload_dicts(draw: st.DrawFn, small: bool = False) -> dict[str, Any]:
    """A valid workload file; ``small`` keeps batch and lengths to a few tokens."""
    hi = 8 if small else 2**20
    raw: dict[str, Any] = {}
    fields: dict[str, st.SearchStrategy[Any]] = {
        "batch": st.integers(1, 4 if small else 4096),
        "prompt_len": st.integers(1, hi),
        "output_len": st.integers(1, hi),
        "context": st.integers(1, hi),
        "phase": st.sampled_from(["prefill", "decode", "both"]),
        "weight_dtype": st.sampled_from([None, *DTYPES]),
        "expert_dtype": st.sampled_from([None, *DTYPES]),
        "kv_dtype": st.sampled_from(["fp32", "bf16", "fp16", "fp8"]),
        "activation_dtype": st.sampled_from(["bf16", "fp16"]),
        "memory_utilization": st.sampled_from([1, 1.0, 0.9, 0.5, MIN_MEMORY_UTILIZATION]),
        "runtime_reserve_bytes": st.sampled_from([0, 64, 2**30]) if not small
        else st.sampled_from([0, 64]),
        "max_batched_tokens": st.integers(1, 16384),
    }
    for key, strat in fields.items():
        if draw(st.booleans()):
            raw[key] = draw(strat)
    return raw


WORKLOAD_POSITIVE = ("batch", "prompt_len", "output_len", "context", "max_batched_tokens")


@st.composite
def workload_cases(draw: st.DrawFn) -> Case:
    """A workload file: bundled, generated, broken in a named way, or randomly mutated."""
    if draw(st.integers(0, 3)) == 0:
        base = copy.deepcopy(WORKLOAD_FILES[draw(st.sampled_from(sorted(WORKLOAD_FILES)))])
    else:
        base = draw(workload_dicts())
    how = draw(st.sampled_from(["valid", "huge", "bad-count", "utilization", "choice",
                                "unknown", "non-finite", "random", "random"]))
    data = copy.deepcopy(base)
    expect: Expect | None
    if how == "valid":
        expect = Expect(True)
    elif how == "huge":
        # Valid but enormous: 10^12 requests of 10^12 tokens, or a reserve beyond 2^63 bytes.
        # Values beyond placer's documented bounds (workload.py) are rejected naming the field.
        limits = {"batch": 10_000_000, "runtime_reserve_bytes": 2**50}
        over: list[str] = []
        for key in draw(st.lists(st.sampled_from([*WORKLOAD_POSITIVE, "runtime_reserve_bytes"]),
                                 min_size=1, max_size=3, unique=True)):
            data[key] = draw(st.sampled_from([10**6, 10**12, 2**62, 2**64, 10**30]))
            if data[key] > limits.get(key, 100_000_000):
                over.append(key)
        expect = Expect(True) if not over else Expect(False, over[0], fields=tuple(over))
    elif how == "bad-count":
        where = draw(st.sampled_from(WORKLOAD_POSITIVE))
        data[where] = draw(st.sampled_from([0, -1, True, "8", 2.5, [], {}]))
        expect = Expect(False, where)
    elif how == "utilization":
        data["memory_utilization"] = draw(st.sampled_from([0, 0.0, -0.5, 1e-9, 1.0000001, 2, "0.9",
                                                           True]))
        expect = Expect(False, "memory_utilization")
    elif how == "choice":
        where = draw(st.sampled_from(["phase", "kv_dtype", "activation_dtype", "weight_dtype"]))
        data[where] = draw(st.sampled_from(["int2", "DECODE", 1, "", ["bf16"]]))
        expect = Expect(False, where)
    elif how == "unknown":
        data["batch_size"] = 8
        expect = Expect(False, "batch_size", "Extra inputs")
    elif how == "non-finite":
        if not data:
            data["memory_utilization"] = 0.9
        data, where = with_non_finite(draw, data)
        return Case("workload", data, "workload:non-finite", Expect(False, where, "finite"),
                    None, (("non-finite", where),))
    else:
        if not data:
            data["batch"] = 8
        data, done = draw(mutated(data))
        return Case("workload", data, "workload:mutated", None, None, done)
    return Case("workload", data, f"workload:{how}", expect, None, ((how, ""),))


@st.composite
def valid_cases(draw: st.DrawFn, kind: str | None = None) -> Case:
    """A case generated valid: a tiny HF config, placer's model format, a module list, a
    hardware file or a workload (for round trips, which need inputs that load). ``kind``
    "hardware" or "workload" draws only those."""
    what = kind or draw(st.sampled_from(["hf", "placer", "modules", "hardware", "workload"]))
    if what == "hf":
        stem, family, data = draw(tiny_hf_configs())
        return Case("model", data, f"hf:{stem}:tiny", Expect(True), family)
    if what == "placer":
        return Case("model", draw(placer_model_dicts()), "placer-model", Expect(True))
    if what == "modules":
        return Case("model", draw(module_list_dicts(tidy=draw(st.booleans()))), "modules",
                    Expect(True))
    if what == "hardware":
        return Case("hardware", draw(hardware_dicts()), "hardware:generated", Expect(True))
    return Case("workload", draw(workload_dicts()), "workload", Expect(True))


def any_cases() -> st.SearchStrategy[Case]:
    """Any case of any kind, half of them generated valid."""
    return st.one_of(valid_cases(), model_cases(), hardware_cases(), workload_cases())


# ------------------------------------------------------------------ raw file bytes


@st.composite
def file_texts(draw: st.DrawFn, case: Case) -> bytes:
    """The bytes of a file holding ``case``: its JSON, or that JSON damaged."""
    text = dumps(case.data)
    how = draw(st.sampled_from(["json"] * 6 + ["compact", "truncate", "bom", "latin1", "empty",
                                               "deep", "bigint", "garbage"]))
    if how == "compact":
        return json.dumps(case.data, allow_nan=True, separators=(",", ":")).encode()
    if how == "truncate" and len(text) > 1:
        return text[: draw(st.integers(1, len(text) - 1))].encode()
    if how == "bom":
        return b"\xef\xbb\xbf" + text.encode()
    if how == "latin1":
        return text.encode() + b'\n"\xe9\xff"'
    if how == "empty":
        return draw(st.sampled_from([b"", b" \n", b"\x00"]))
    if how == "deep":
        depth = draw(st.sampled_from([50, 5000, 100000]))
        return b'{"model_type": "mixtral", "x": ' + b"[" * depth + b"]" * depth + b"}"
    if how == "bigint":
        return b'{"model_type": "mixtral", "hidden_size": ' + b"9" * 5000 + b"}"
    if how == "garbage":
        return draw(st.binary(min_size=1, max_size=64))
    return text.encode()


# ------------------------------------------------------------------ solve instances


@dataclass(frozen=True)
class SolveInstance:
    """A tiny solve problem as file contents, with the objective and rules profile."""

    model: dict[str, Any]
    hardware: dict[str, Any]
    workload: dict[str, Any]
    objective: str
    profile: str
    label: str

    def __post_init__(self) -> None:
        for name in ("model", "hardware", "workload"):
            object.__setattr__(self, name, copy.deepcopy(getattr(self, name)))

    def to_json(self) -> dict[str, Any]:
        """A JSON-able record of the instance."""
        return dict(self.__dict__)


def model_need_bytes(model_raw: dict[str, Any], workload_raw: dict[str, Any]) -> int:
    """Bytes the model needs on one GPU (pp=1, ep=1) under the workload: the memory scale."""
    from placer.layout import Layout
    from placer.load import cluster_from_dict, load_workload, model_from_dict
    from placer.search.tables import balanced_counts, build_tables, memory_by_rank

    model = model_from_dict(model_raw, "need.json")
    workload = load_workload(None, **workload_raw)
    probe = cluster_from_dict(
        {"name": "probe", "gpu": {"name": "p", "memory_bytes": 10**15,
                                  "hbm_bandwidth_gbps": 1, "tflops": {"bf16": 1}},
         "gpus": 1, "gpus_per_node": 1, "scale_up_domain": 1,
         "scale_up": {"bandwidth_gbps": 1, "latency_us": 0},
         "scale_out": {"bandwidth_gbps": 1, "latency_us": 0}},
        "probe.json",
    )
    t = build_tables(model, probe, workload, Layout(), "throughput", with_costs=False)
    return int(memory_by_rank(t, (model.num_layers,), balanced_counts(t)).max())


@st.composite
def solve_instances(draw: st.DrawFn) -> SolveInstance:
    """A tiny model (HF family shrunk, placer format or module list), 1-4 GPUs whose memory is
    0.3-1.6 times the one-GPU need, and a small workload."""
    source = draw(st.sampled_from(["hf", "hf", "placer", "modules"]))
    if source == "hf":
        stem, _, model = draw(tiny_hf_configs())
        label = f"hf:{stem}"
    elif source == "placer":
        model = draw(placer_model_dicts())
        label = "placer-model"
    else:
        model = draw(module_list_dicts(tidy=True))
        label = "modules"
    workload = draw(workload_dicts(small=True))
    workload.pop("memory_utilization", None)
    workload["memory_utilization"] = draw(st.sampled_from([1.0, 0.9]))
    need = model_need_bytes(model, workload)
    fraction = Fraction(draw(st.sampled_from([3, 4, 5, 6, 8, 10, 12, 16])), 10)
    memory = max(1, math.floor(need * fraction / Fraction(workload["memory_utilization"])))
    hardware = draw(hardware_dicts(memory=memory, max_gpus=4, sixteen_bit=True))
    return SolveInstance(
        model=model,
        hardware=hardware,
        workload=workload,
        objective=draw(st.sampled_from(["throughput", "throughput", "latency", "gpus"])),
        profile=draw(st.sampled_from(["generic", "generic", "vllm", "sglang", "megatron"])),
        label=f"{label}, memory {float(fraction):g} x need",
    )
