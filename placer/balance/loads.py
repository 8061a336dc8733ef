"""Per-layer expert loads: the :class:`LoadStats` record and its file formats (the seeded
generator is :mod:`placer.balance.synthetic`).

A load file is a JSON object in one of three formats, told apart by their keys:

(a) a load matrix, layers x experts::

        {"format": "placer-loads", "name": "olmoe-arxiv", "layers": [0, 7, 15],
         "top_k": 8, "counts": true, "source": "...", "notes": "...",
         "load": [[...], [...], [...]]}

    Only ``load`` is required. ``layers`` (distinct non-negative ids) defaults to
    ``0 .. n-1``, ``name`` to the file's stem. ``format`` may be omitted.
(b) a single layer: the same object with ``load`` a flat list of expert loads.
(c) routing statistics as collected from OLMoE's routing analysis:
    ``{"models": {m: {"top_k": k, "hf_model": ..., "variants": {v: {domain: {layer: [...]}}}}}}``
    where ``layer`` is a layer id written as a string and each list is indexed by expert id.
    ``model``, ``variant`` (default ``"topk"``) and ``domain`` select one table; when a choice
    is left open and the file offers more than one, the error lists them. ``model`` may be the
    key or the model's ``hf_model`` name.

Loads are non-negative finite JSON numbers (never booleans). **Counts**: the values of format
(c), and of an (a)/(b) file that says ``"counts": true``, are token-assignment counts and must
be whole numbers; a float with an integral value (``12.0``) is accepted, ``12.5`` is not.
Every error is an :class:`~placer.exceptions.InvalidInputError` naming the file and the exact
element, e.g. ``load.3.5`` for expert 5 of the fourth layer.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, Strict, model_validator

from placer._base import Frozen, NonNegInt, PosInt
from placer.exceptions import InvalidInputError
from placer.io import check_finite, one_line, read_json, validate

LOADS_FORMAT = "placer-loads"

#: Largest load value accepted (tokens routed to one expert of one layer). A sum over the
#: experts of a layer then stays far inside a float64, and exact integer arithmetic on the
#: scaled loads (docs/balance.md) stays inside 64 bits.
MAX_LOAD = 1e15

#: A non-negative JSON number (an integer is accepted), never a boolean or a string.
LoadValue = Annotated[float, Strict(), Field(ge=0, le=MAX_LOAD)]

_MATRIX_KEYS = ("format", "name", "layers", "load", "top_k", "counts", "source", "notes")


class LoadStats(Frozen):
    """Expert loads of some layers of one model: ``load[i][e]`` for layer ``layers[i]``."""

    name: str = Field(min_length=1, description="Short name of the load set, e.g. 'olmoe-c4'.")
    layers: tuple[NonNegInt, ...] = Field(
        description="Layer id of each row of `load`, distinct (e.g. [0, 7, 15])."
    )
    load: tuple[tuple[LoadValue, ...], ...] = Field(
        description="Load per layer and expert (layers x experts), e.g. tokens routed to it."
    )
    top_k: PosInt | None = Field(
        default=None, description="Experts chosen per token, when the loads are routing counts."
    )
    source: str | None = Field(
        default=None, description="Where the numbers come from (upstream, file or generator)."
    )

    @model_validator(mode="after")
    def _check_shape(self) -> LoadStats:
        if not self.load:
            raise ValueError("load must hold at least one layer")
        width = len(self.load[0])
        if width == 0:
            raise ValueError("load.0 must hold at least one expert")
        for i, row in enumerate(self.load):
            if len(row) != width:
                raise ValueError(f"load.{i} has {len(row)} experts, load.0 has {width}")
        if len(self.layers) != len(self.load):
            raise ValueError(
                f"layers names {len(self.layers)} layers but load has {len(self.load)}"
            )
        seen: dict[int, int] = {}
        for j, layer in enumerate(self.layers):
            if layer in seen:
                raise ValueError(f"layer id {layer} is given twice (layers.{seen[layer]}, {j})")
            seen[layer] = j
        return self

    @property
    def num_layers(self) -> int:
        """Number of layers (rows)."""
        return len(self.load)

    @property
    def num_experts(self) -> int:
        """Number of experts per layer (columns)."""
        return len(self.load[0])

    def array(self) -> NDArray[np.float64]:
        """The loads as a float64 array, layers x experts."""
        return np.array(self.load, dtype=np.float64).reshape(self.num_layers, self.num_experts)

    def layer(self, layer_id: int) -> NDArray[np.float64]:
        """The loads of the layer with id ``layer_id``."""
        try:
            row = self.layers.index(layer_id)
        except ValueError:
            raise KeyError(f"no layer {layer_id} in {self.name} (layers {self.layers})") from None
        return np.array(self.load[row], dtype=np.float64)


# -- reading --------------------------------------------------------------------------------


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return one_line(repr(value if len(value) <= 40 else value[:37] + "..."))
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return repr(value)


def _short(value: int | float) -> str:
    """A number for a message: huge integers (1e400 has 401 digits) by their size."""
    text = repr(value)
    return text if len(text) <= 24 else f"an integer of {len(text)} digits"


def _number(value: Any, source: str, field: str, counts: bool) -> float:
    """One load value, checked; errors name ``field``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"must be a number, got {_describe(value)}", source, field)
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInputError(f"must be a finite number, got {value}", source, field)
    if value < 0:
        raise InvalidInputError(f"must be non-negative, got {_short(value)}", source, field)
    if value > MAX_LOAD:
        raise InvalidInputError(
            f"must be at most {MAX_LOAD:g}, got {_short(value)}", source, field
        )
    if counts and isinstance(value, float) and not value.is_integer():
        raise InvalidInputError(
            f"must be a whole number (these loads are counts), got {value}", source, field
        )
    return float(value)


def _row(values: Any, source: str, field: str, counts: bool) -> tuple[float, ...]:
    if not isinstance(values, list):
        raise InvalidInputError(
            f"must be a list of expert loads, got {_describe(values)}", source, field
        )
    if not values:
        raise InvalidInputError("must hold at least one expert", source, field)
    return tuple(_number(v, source, f"{field}.{i}", counts) for i, v in enumerate(values))


def _rows(
    raw_rows: list[tuple[str, Any]], source: str, counts: bool
) -> tuple[tuple[float, ...], ...]:
    """Rows given as (field, value); checks each and that all have the same length."""
    rows: list[tuple[float, ...]] = []
    for field, values in raw_rows:
        row = _row(values, source, field, counts)
        if rows and len(row) != len(rows[0]):
            raise InvalidInputError(
                f"has {len(row)} experts but {raw_rows[0][0]} has {len(rows[0])} "
                "(every layer needs the same experts)",
                source,
                field,
            )
        rows.append(row)
    return tuple(rows)


def _layer_ids(value: Any, n: int, source: str) -> tuple[int, ...]:
    if value is None:
        return tuple(range(n))
    if not isinstance(value, list):
        raise InvalidInputError(
            f"must be a list of layer ids, got {_describe(value)}", source, "layers"
        )
    seen: dict[int, int] = {}
    for j, layer in enumerate(value):
        if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
            raise InvalidInputError(
                f"must be a non-negative integer layer id, got {_describe(layer)}",
                source,
                f"layers.{j}",
            )
        if layer in seen:
            raise InvalidInputError(
                f"layer id {layer} is given twice (layers.{seen[layer]} and layers.{j})",
                source,
                f"layers.{j}",
            )
        seen[layer] = j
    if len(value) != n:
        raise InvalidInputError(f"names {len(value)} layers but load has {n}", source, "layers")
    return tuple(value)


def _matrix_file(raw: dict[str, Any], source: str) -> LoadStats:
    """Formats (a) and (b)."""
    for key in raw:
        if key not in _MATRIX_KEYS:
            raise InvalidInputError(
                f"unknown field; expected one of {', '.join(_MATRIX_KEYS)}",
                source,
                one_line(str(key)),
            )
    fmt = raw.get("format", LOADS_FORMAT)
    if fmt != LOADS_FORMAT:
        raise InvalidInputError(
            f"unknown format {_describe(fmt)}; expected '{LOADS_FORMAT}'", source, "format"
        )
    counts = raw.get("counts", False)
    if not isinstance(counts, bool):
        raise InvalidInputError(
            f"must be true or false, got {_describe(counts)}", source, "counts"
        )
    for key in ("name", "source", "notes"):
        if key in raw and raw[key] is not None and not isinstance(raw[key], str):
            raise InvalidInputError(f"must be a string, got {_describe(raw[key])}", source, key)
    if "load" not in raw:
        raise InvalidInputError(
            "required field is missing (a list of expert loads, or one list per layer)",
            source,
            "load",
        )
    load = raw["load"]
    if not isinstance(load, list):
        raise InvalidInputError(
            f"must be a list of expert loads or of layers, got {_describe(load)}", source, "load"
        )
    if not load:
        raise InvalidInputError("must hold at least one layer of expert loads", source, "load")
    if isinstance(load[0], list):
        rows = _rows([(f"load.{i}", row) for i, row in enumerate(load)], source, counts)
    else:
        rows = (_row(load, source, "load", counts),)
    layers = _layer_ids(raw.get("layers"), len(rows), source)
    body = {
        "name": raw["name"] if raw.get("name") is not None else (Path(source).stem or "loads"),
        "layers": layers,
        "load": rows,
        "top_k": raw.get("top_k"),
        "source": raw.get("source"),
    }
    return validate(LoadStats, body, source)


def _choose(
    options: dict[str, Any], wanted: str | None, what: str, source: str, field: str
) -> str:
    """Pick ``wanted`` among ``options``' keys, or the only key; else list the choices."""
    keys = list(options)
    if wanted is None:
        if len(keys) == 1:
            return keys[0]
        raise InvalidInputError(
            f"the file holds {len(keys)} {what}s; choose one of: {', '.join(keys)} "
            f"(pass {what}=...)",
            source,
            field,
        )
    if wanted in options:
        return wanted
    raise InvalidInputError(
        f"no {what} {one_line(repr(wanted))}; choose one of: {', '.join(keys) or '(none)'}",
        source,
        field,
    )


def _routing_stats(
    raw: dict[str, Any], source: str, model: str | None, variant: str, domain: str | None
) -> LoadStats:
    """Format (c): ``models[m].variants[v][domain][layer]`` = counts per expert."""
    models = raw["models"]
    if not isinstance(models, dict) or not models:
        raise InvalidInputError("must be a non-empty object of models", source, "models")
    if model is not None and model not in models:
        # Accept the Hugging Face name as well as the key.
        for key, entry in models.items():
            if isinstance(entry, dict) and entry.get("hf_model") == model:
                model = key
                break
    m = _choose(models, model, "model", source, "models")
    entry = models[m]
    where = f"models.{m}"
    if not isinstance(entry, dict):
        raise InvalidInputError("must be an object", source, where)
    variants = entry.get("variants")
    if not isinstance(variants, dict):
        raise InvalidInputError("must be an object of variants", source, f"{where}.variants")
    v = _choose(variants, variant, "variant", source, f"{where}.variants")
    domains = variants[v]
    where = f"{where}.variants.{v}"
    if not isinstance(domains, dict) or not domains:
        raise InvalidInputError("must be a non-empty object of domains", source, where)
    d = _choose(domains, domain, "domain", source, where)
    table = domains[d]
    where = f"{where}.{d}"
    if not isinstance(table, dict) or not table:
        raise InvalidInputError(
            "must be a non-empty object of layers (layer id -> counts per expert)", source, where
        )
    keyed: list[tuple[int, str]] = []
    for key in table:
        text = str(key)
        # ASCII digits only: '²'.isdigit() is true, yet int('²') fails.
        if not (text.isascii() and text.isdigit()) or len(text) > 9:
            raise InvalidInputError(
                f"layer id {one_line(repr(text[:20]))} is not a non-negative integer below 10^9",
                source,
                f"{where}.{one_line(text[:20])}",
            )
        keyed.append((int(text), text))
    keyed.sort()
    rows = _rows([(f"{where}.{text}", table[text]) for _, text in keyed], source, counts=True)
    top_k: Any = entry.get("top_k")
    if v == "top1":
        top_k = 1
    elif v != "topk":
        top_k = None
    body = {
        "name": f"{m}-{d}" if v == "topk" else f"{m}-{d}-{v}",
        "layers": tuple(layer for layer, _ in keyed),
        "load": rows,
        "top_k": top_k,
        "source": f"{source}: {where}",
    }
    return validate(LoadStats, body, source)


def loads_from_dict(
    data: Any,
    source: str = "<loads>",
    model: str | None = None,
    variant: str = "topk",
    domain: str | None = None,
) -> LoadStats:
    """Build :class:`LoadStats` from a parsed load file in any of the formats above.

    ``model``, ``variant`` and ``domain`` select a table of a routing-stats file (format c)
    and are an error for the other formats.

    Raises
    ------
    InvalidInputError
        Naming ``source`` and the offending field.
    """
    if not isinstance(data, dict):
        raise InvalidInputError(
            f"expected a JSON object at the top level, got {type(data).__name__}", source
        )
    check_finite(data, source)
    if "models" in data:
        return _routing_stats(data, source, model, variant, domain)
    if model is not None or domain is not None or variant != "topk":
        raise InvalidInputError(
            "model, variant and domain choose inside a routing-stats file (one with "
            "'models'); this file is a plain load list",
            source,
        )
    return _matrix_file(data, source)


def load_loads(
    path: str | Path,
    model: str | None = None,
    variant: str = "topk",
    domain: str | None = None,
) -> LoadStats:
    """Read a load file (see the module docstring for the formats)."""
    return loads_from_dict(read_json(path), str(path), model, variant, domain)


# -- writing --------------------------------------------------------------------------------


def loads_to_json(stats: LoadStats, counts: bool | None = None, notes: str | None = None) -> str:
    """``stats`` as a format (a) file, one layer per line.

    ``counts`` (default: every value is a whole number) writes the values as integers and
    marks the file ``"counts": true``.
    """
    arr = stats.array()
    if counts is None:
        counts = bool(np.all(arr == np.round(arr)))
    elif counts and not np.all(arr == np.round(arr)):
        raise ValueError("counts=True needs whole-number loads")
    head: dict[str, Any] = {"format": LOADS_FORMAT, "name": stats.name}
    if stats.source is not None:
        head["source"] = stats.source
    if notes is not None:
        head["notes"] = notes
    if stats.top_k is not None:
        head["top_k"] = stats.top_k
    head["counts"] = counts
    head["layers"] = list(stats.layers)
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    rows = [
        json.dumps([int(x) for x in row] if counts else [float(x) for x in row])
        for row in stats.load
    ]
    body = ",\n".join(f"    {r}" for r in rows)
    return "{\n" + "\n".join(lines) + '\n  "load": [\n' + body + "\n  ]\n}\n"
