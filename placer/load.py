"""The front door: read model, hardware and workload files into validated specs.

Model files come in three formats, told apart by their keys:

- placer's own format: ``{"format": "placer-model", ...}`` with the fields of
  :class:`~placer.model.ModelSpec`;
- an explicit module list: ``{"format": "placer-modules", "modules": [...],
  "edges": [...]}``, each module with ``bytes`` (in the file's ``dtype``) and
  ``flops_per_token``;
- a Hugging Face ``config.json`` exactly as published (see :mod:`placer.hf_config`).
"""

from __future__ import annotations

import graphlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from placer.cluster import ClusterSpec
from placer.dtypes import BYTES_PER_ELEMENT
from placer.exceptions import InvalidInputError
from placer.hf_config import detect_family, parse_hf_config
from placer.io import (
    Options,
    Rename,
    check_finite,
    is_union_tag,
    one_line,
    read_json,
    validate,
    validate_options,
    validation_error,
)
from placer.limits import MAX_LAYERS, MAX_MODULE_PARAMS, MAX_MODULES
from placer.model import Assumption, LayerSpec, ModelSpec, ModuleSpec
from placer.workload import Workload

MODEL_FORMAT = "placer-model"
MODULES_FORMAT = "placer-modules"
HARDWARE_FORMAT = "placer-hardware"


def _as_object(data: Any, source: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidInputError(
            f"expected a JSON object at the top level, got {type(data).__name__}", source
        )
    check_finite(data, source)
    return data


def model_from_dict(data: Any, source: str = "<model>", name: str | None = None) -> ModelSpec:
    """Detect the format of a parsed model file and build the :class:`ModelSpec`.

    Raises
    ------
    InvalidInputError
        Naming ``source`` and the offending field.
    """
    raw = _as_object(data, source)
    default_name = name or Path(source).stem
    fmt = raw.get("format")
    try:
        if fmt == MODEL_FORMAT:
            body = {k: v for k, v in raw.items() if k != "format"}
            body.setdefault("name", default_name)
            body["format"] = "placer"
            body.setdefault("source", source)
            return validate(ModelSpec, body, source)
        if fmt == MODULES_FORMAT or "modules" in raw:
            return _module_list(raw, source, default_name)
        if fmt is not None:
            raise InvalidInputError(
                f"unknown format {fmt!r}; expected '{MODEL_FORMAT}' or '{MODULES_FORMAT}'",
                source,
                "format",
            )
        try:
            return parse_hf_config(raw, raw.get("_name_or_path") or default_name, source)
        except ValidationError as exc:
            raise validation_error(exc, source, rename=_hf_rename(raw, exc)) from None
    except ValidationError as exc:
        raise validation_error(exc, source) from None


def _int_leaves(
    data: Any, path: tuple[int | str, ...] = ()
) -> list[tuple[tuple[int | str, ...], int]]:
    """Every integer of a parsed JSON object, with its location."""
    if isinstance(data, dict):
        return [leaf for k, v in data.items() for leaf in _int_leaves(v, (*path, k))]
    if isinstance(data, int) and not isinstance(data, bool):
        return [(path, data)]
    return []


def _hf_rename(
    raw: dict[str, Any], exc: ValidationError | None = None
) -> Callable[[tuple[int | str, ...]], tuple[int | str, ...]]:
    """Map a location in placer's ModelSpec back to the field of the published config.

    An integer placer refused is traced back by its value: when exactly one integer of the
    file has that value, that is the field (each family names its widths and counts in its
    own way, e.g. DBRX's ``ffn_config.moe_num_experts`` for ``num_experts``). Otherwise the
    table of known renames below applies."""
    leaves = _int_leaves(raw)
    by_value: dict[tuple[int | str, ...], tuple[int | str, ...]] = {}
    for err in exc.errors() if exc is not None else ():
        value = err.get("input")
        if isinstance(value, int) and not isinstance(value, bool):
            paths = [p for p, v in leaves if v == value]
            if len(paths) == 1:
                by_value[tuple(x for x in err["loc"] if not is_union_tag(x))] = paths[0]
    family = detect_family(raw)
    nested: tuple[str, ...] = ("text_config",) if isinstance(raw.get("text_config"), dict) else ()
    own = {
        ("name",): ("_name_or_path",),
        ("max_position_embeddings",): {"dbrx": ("max_seq_len",), "grok1": ("sequence_len",)}.get(
            family or "", (*nested, "max_position_embeddings")
        ),
        ("moe", "shared_intermediate_size"): (*nested, "shared_expert_intermediate_size"),
        ("attention", "head_dim"): ("key_size",) if family == "grok1" else (*nested, "head_dim"),
        # Attention and MoE specs built on their own report bare names.
        ("shared_intermediate_size",): (*nested, "shared_expert_intermediate_size"),
        ("head_dim",): ("key_size",) if family == "grok1" else (*nested, "head_dim"),
    }

    def rename(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
        if loc in by_value:
            return by_value[loc]
        for head, target in own.items():
            if loc[: len(head)] == head:
                return (*target, *loc[len(head) :])
        return loc

    return rename


def load_model(path: str | Path) -> ModelSpec:
    """Read a model file in any supported format."""
    return model_from_dict(read_json(path), str(path))


_MODULE_KEYS = {
    "name",
    "kind",
    "layer",
    "bytes",
    "params",
    "flops_per_token",
    "kv_elements_per_token",
}


#: Top-level fields of a module list.
_MODULE_LIST_KEYS = frozenset(
    {
        "format",
        "name",
        "dtype",
        "num_layers",
        "hidden_size",
        "top_k",
        "modules",
        "edges",
        "notes",
        "source",
    }
)


def _module_list(raw: dict[str, Any], source: str, default_name: str) -> ModelSpec:
    """A module list (``"modules": [...]``) as a :class:`ModelSpec`, each step checked with
    an error naming the field: fields and dtype, modules, layer count and width, edges,
    top-k against the experts."""
    for key in raw:
        if key not in _MODULE_LIST_KEYS:
            raise InvalidInputError("unknown field in a module list", source, one_line(key))
    dtype, assumed = _module_dtype(raw, source)
    modules = _read_modules(raw.get("modules"), dtype, source)
    n = _module_layer_count(raw, modules, source)
    hidden = raw.get("hidden_size")
    if hidden is None:
        raise InvalidInputError(
            "required field is missing (activation width per token, used "
            "for traffic between GPUs)",
            source,
            "hidden_size",
        )
    edges = _module_edges(raw.get("edges", []), modules, n, source)
    top_k = _module_top_k(raw.get("top_k"), modules, source)
    moe_layers = {m.layer for m in modules if m.kind == "expert"}
    layers = tuple(
        LayerSpec(mixer="attention", ffn="moe" if i in moe_layers else "dense") for i in range(n)
    )
    body = {
        "name": raw.get("name", default_name),
        "format": "module-list",
        "dtype": dtype,
        "expert_dtype": dtype,
        "num_layers": n,
        "hidden_size": hidden,
        "layers": layers,
        "modules": tuple(modules),
        "edges": edges,
        "top_k": top_k,
        "assumed": tuple(assumed),
        "source": source,
    }
    return validate(ModelSpec, body, source)


def _module_dtype(raw: dict[str, Any], source: str) -> tuple[str, list[Assumption]]:
    """The dtype module bytes are counted in (bf16, recorded as assumed, when absent)."""
    assumed: list[Assumption] = []
    dtype = raw.get("dtype")
    if dtype is None:
        dtype = "bf16"
        assumed.append(
            Assumption(
                field="dtype",
                value="'bf16'",
                why="module bytes are taken as bf16 when no dtype is given",
            )
        )
    if not isinstance(dtype, str) or dtype not in BYTES_PER_ELEMENT:
        raise InvalidInputError(f"unknown dtype {dtype!r}", source, "dtype")
    return dtype, assumed


def _read_modules(mods: Any, dtype: str, source: str) -> list[ModuleSpec]:
    """Every entry of ``modules`` validated, ``bytes`` turned into parameters of ``dtype``."""
    if not isinstance(mods, list) or not mods:
        raise InvalidInputError("must be a non-empty list of modules", source, "modules")
    if len(mods) > MAX_MODULES:
        raise InvalidInputError(
            f"has {len(mods)} modules, more than the {MAX_MODULES} placer reads", source, "modules"
        )
    modules: list[ModuleSpec] = []
    for i, m in enumerate(mods):
        if not isinstance(m, dict):
            raise InvalidInputError("must be an object", source, f"modules.{i}")
        for key in m:
            if key not in _MODULE_KEYS:
                raise InvalidInputError("unknown field", source, one_line(f"modules.{i}.{key}"))
        body = dict(m)
        if "bytes" in body:
            body["params"] = _module_params(body.pop("bytes"), dtype, source, f"modules.{i}.bytes")
        modules.append(validate(ModuleSpec, body, source, f"modules.{i}"))
    return modules


def _module_params(size: Any, dtype: str, source: str, where: str) -> int:
    """Parameters of a module given as ``size`` bytes of ``dtype`` values."""
    width = BYTES_PER_ELEMENT[dtype]
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise InvalidInputError(f"must be a positive integer, got {size!r}", source, where)
    params = size / width
    if params != int(params):
        raise InvalidInputError(
            f"{size} bytes is not a whole number of {dtype} values", source, where
        )
    if params > MAX_MODULE_PARAMS:
        raise InvalidInputError(
            f"must be at most {MAX_MODULE_PARAMS * width} ({MAX_MODULE_PARAMS} "
            f"{dtype} values), got {size}",
            source,
            where,
        )
    return int(params)


def _module_layer_count(raw: dict[str, Any], modules: list[ModuleSpec], source: str) -> int:
    """``num_layers``, by default one more than the highest layer a module names."""
    layers_used = [m.layer for m in modules if m.layer is not None]
    n = raw.get("num_layers", (max(layers_used) + 1) if layers_used else 1)
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise InvalidInputError(f"must be a positive integer, got {n!r}", source, "num_layers")
    if n > MAX_LAYERS:
        raise InvalidInputError(f"must be at most {MAX_LAYERS}, got {n}", source, "num_layers")
    return n


def _module_top_k(top_k: Any, modules: list[ModuleSpec], source: str) -> Any:
    """``top_k``: required with experts, at most the experts of the smallest MoE layer."""
    if top_k is None and any(m.kind == "expert" for m in modules):
        raise InvalidInputError(
            "required field is missing (experts per token, for a module list with experts)",
            source,
            "top_k",
        )
    per_layer: dict[int | None, int] = {}
    for m in modules:
        if m.kind == "expert":
            per_layer[m.layer] = per_layer.get(m.layer, 0) + 1
    if isinstance(top_k, int) and not isinstance(top_k, bool) and per_layer:
        fewest = min(per_layer.values())
        if top_k > fewest:
            raise InvalidInputError(
                f"top_k ({top_k}) exceeds the experts of a layer ({fewest})", source, "top_k"
            )
    return top_k


def _module_edges(
    edges: Any, modules: list[ModuleSpec], num_layers: int, source: str
) -> tuple[tuple[str, str], ...]:
    """Check a module list's names, layers and edges, naming the field in the file.

    ModelSpec checks the same graph again; these checks come first so that the
    error names ``modules.<i>.name``, ``modules.<i>.layer``, ``edges.<i>`` or ``edges``.
    """
    index: dict[str, int] = {}
    for i, m in enumerate(modules):
        if m.name in index:
            raise InvalidInputError(
                f"module name {m.name!r} is used twice (modules.{index[m.name]} and modules.{i})",
                source,
                f"modules.{i}.name",
            )
        index[m.name] = i
        if m.layer is not None and m.layer >= num_layers:
            raise InvalidInputError(
                f"module {m.name!r} is in layer {m.layer} but the model has {num_layers} layers",
                source,
                f"modules.{i}.layer",
            )
    if not isinstance(edges, list):
        raise InvalidInputError("must be a list of [from, to] pairs", source, "edges")
    pairs: list[tuple[str, str]] = []
    graph: dict[str, set[str]] = {name: set() for name in index}
    for i, e in enumerate(edges):
        if not isinstance(e, list) or len(e) != 2 or not all(isinstance(end, str) for end in e):
            raise InvalidInputError(
                "must be a [from, to] pair of module names", source, f"edges.{i}"
            )
        src, dst = e
        for end in (src, dst):
            if end not in index:
                raise InvalidInputError(
                    f"edge ({src!r} -> {dst!r}) names unknown module {end!r}",
                    source,
                    f"edges.{i}",
                )
        graph[dst].add(src)
        pairs.append((src, dst))
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        cycle = " -> ".join(repr(name) for name in exc.args[1])
        raise InvalidInputError(
            f"the module graph has a cycle: {cycle}", source, "edges"
        ) from None
    return tuple(pairs)


def _is_count(value: Any) -> bool:
    """A positive JSON integer (not a boolean)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _single_type_group(body: dict[str, Any], source: str) -> tuple[list[dict[str, Any]], Rename]:
    """Turn a single-type file's ``gpu`` with ``gpus`` or ``nodes`` into ``groups``.

    Pops ``gpu``, ``gpus`` and ``nodes`` from ``body``. Returns the groups and a
    function that maps an error in ``groups.0`` back to the field the file gave:
    ``groups.0.gpu.X`` to ``gpu.X`` and ``groups.0.count`` to ``gpus`` or ``nodes``.
    """
    gpu = body.pop("gpu")
    count = body.pop("gpus", None)
    n_nodes = body.pop("nodes", None)
    per_node = body.get("gpus_per_node")
    count_field = "gpus"
    if count is None and n_nodes is not None:
        count_field = "nodes"
        if not _is_count(n_nodes):
            raise InvalidInputError(
                f"must be a positive integer, got {n_nodes!r}", source, "nodes"
            )
        # A bad gpus_per_node is reported on its own field; n_nodes stands in until then.
        count = n_nodes * per_node if _is_count(per_node) else n_nodes
    elif count is None:
        # One node; a bad or missing gpus_per_node is reported on its own field.
        count_field = "gpus_per_node"
        count = per_node if _is_count(per_node) else 1

    def rename(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
        if loc[:2] == ("groups", 0) and len(loc) > 2:
            if loc[2] == "count":
                return (count_field, *loc[3:])
            return loc[2:]
        return loc

    return [{"gpu": gpu, "count": count}], rename


def cluster_from_dict(
    data: Any, source: str = "<hardware>", gpus: int | None = None, nodes: int | None = None
) -> ClusterSpec:
    """Build a :class:`ClusterSpec` from a hardware file's content.

    A single-type file gives ``gpu`` and ``gpus`` (or ``nodes``); a mixed cluster
    gives ``groups``. ``gpus``/``nodes`` arguments override the file's count.
    """
    raw = _as_object(data, source)
    if raw.get("format") not in (None, HARDWARE_FORMAT):
        raise InvalidInputError(
            f"unknown format {raw.get('format')!r}; expected '{HARDWARE_FORMAT}'", source, "format"
        )
    body = {
        k: v
        for k, v in raw.items()
        if k not in ("format", "sources", "notes", "unverified", "system")
    }
    rename = None
    if "gpu" in body:
        if "groups" in body:
            raise InvalidInputError(
                "give 'gpu' (one GPU type) or 'groups' (several), not both", source, "groups"
            )
        body["groups"], rename = _single_type_group(body, source)
    cluster = validate(ClusterSpec, body, source, rename=rename)
    if gpus is not None and nodes is not None:
        raise InvalidInputError("give --gpus or --nodes, not both", source)
    option = "--gpus" if gpus is not None else "--nodes"
    try:
        if gpus is not None:
            if gpus <= 0:
                raise InvalidInputError(f"must be positive, got {gpus}", source, "--gpus")
            return cluster.with_gpus(gpus)
        if nodes is not None:
            if nodes <= 0:
                raise InvalidInputError(f"must be positive, got {nodes}", source, "--nodes")
            return cluster.with_nodes(nodes)
    except ValidationError as exc:
        # The resized cluster failed the file's own field definitions (a count past
        # MAX_GPUS): the option set it, so the option is named.
        raise InvalidInputError(validation_error(exc, source).detail, source, option) from None
    except ValueError as exc:
        if isinstance(exc, InvalidInputError):
            raise
        raise InvalidInputError(one_line(str(exc)), source, "groups") from None
    return cluster


def load_cluster(
    path: str | Path, gpus: int | None = None, nodes: int | None = None
) -> ClusterSpec:
    """Read a hardware file (see :func:`cluster_from_dict`)."""
    return cluster_from_dict(read_json(path), str(path), gpus=gpus, nodes=nodes)


def load_workload(
    path: str | Path | None = None, options: Options | None = None, **overrides: Any
) -> Workload:
    """Read a workload file (or start from the defaults) and apply command-line ``options``
    (``{field: (option, value)}``, named in errors) and ``overrides`` (fields by name)."""
    data: dict[str, Any] = {}
    source = str(path) if path is not None else ""
    if path is not None:
        data = dict(_as_object(read_json(path), source))
    given = dict(options or {})
    given.update({k: (k, v) for k, v in overrides.items()})
    return validate_options(Workload, given, data, source)
