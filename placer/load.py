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

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from placer.cluster import ClusterSpec
from placer.dtypes import BYTES_PER_ELEMENT
from placer.exceptions import InvalidInputError
from placer.hf_config import parse_hf_config
from placer.io import check_finite, read_json, validate, validation_error
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
        return parse_hf_config(raw, raw.get("_name_or_path") or default_name, source)
    except ValidationError as exc:
        raise validation_error(exc, source) from None


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


def _module_list(raw: dict[str, Any], source: str, default_name: str) -> ModelSpec:
    allowed = {
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
    for key in raw:
        if key not in allowed:
            raise InvalidInputError("unknown field in a module list", source, key)
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
    if dtype not in BYTES_PER_ELEMENT:
        raise InvalidInputError(f"unknown dtype {dtype!r}", source, "dtype")
    mods = raw.get("modules")
    if not isinstance(mods, list) or not mods:
        raise InvalidInputError("must be a non-empty list of modules", source, "modules")
    width = BYTES_PER_ELEMENT[dtype]
    modules: list[ModuleSpec] = []
    for i, m in enumerate(mods):
        if not isinstance(m, dict):
            raise InvalidInputError("must be an object", source, f"modules.{i}")
        for key in m:
            if key not in _MODULE_KEYS:
                raise InvalidInputError("unknown field", source, f"modules.{i}.{key}")
        body = dict(m)
        if "bytes" in body:
            size = body.pop("bytes")
            if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
                raise InvalidInputError(
                    f"must be a positive integer, got {size!r}", source, f"modules.{i}.bytes"
                )
            params = size / width
            if params != int(params):
                raise InvalidInputError(
                    f"{size} bytes is not a whole number of {dtype} values",
                    source,
                    f"modules.{i}.bytes",
                )
            body["params"] = int(params)
        modules.append(validate(ModuleSpec, body, source, f"modules.{i}"))
    layers_used = [m.layer for m in modules if m.layer is not None]
    n = raw.get("num_layers", (max(layers_used) + 1) if layers_used else 1)
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise InvalidInputError(f"must be a positive integer, got {n!r}", source, "num_layers")
    hidden = raw.get("hidden_size")
    if hidden is None:
        raise InvalidInputError(
            "required field is missing (activation width per token, used "
            "for traffic between GPUs)",
            source,
            "hidden_size",
        )
    edges = raw.get("edges", [])
    if not isinstance(edges, list) or any(
        not isinstance(e, list | tuple) or len(e) != 2 for e in edges
    ):
        raise InvalidInputError("must be a list of [from, to] pairs", source, "edges")
    layers = tuple(
        LayerSpec(
            mixer="attention",
            ffn="moe" if any(m.kind == "expert" and m.layer == i for m in modules) else "dense",
        )
        for i in range(n)
    )
    body2 = {
        "name": raw.get("name", default_name),
        "format": "module-list",
        "dtype": dtype,
        "expert_dtype": dtype,
        "num_layers": n,
        "hidden_size": hidden,
        "layers": layers,
        "modules": tuple(modules),
        "edges": tuple(tuple(e) for e in edges),
        "top_k": raw.get("top_k"),
        "assumed": tuple(assumed),
        "source": source,
    }
    return validate(ModelSpec, body2, source)


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
    if "gpu" in body:
        gpu = body.pop("gpu")
        count = body.pop("gpus", None)
        n_nodes = body.pop("nodes", None)
        per_node = body.get("gpus_per_node")
        if count is None and n_nodes is not None and isinstance(per_node, int):
            count = n_nodes * per_node if isinstance(n_nodes, int) else n_nodes
        if count is None:
            count = per_node
        body["groups"] = [{"gpu": gpu, "count": count}]
    cluster = validate(ClusterSpec, body, source)
    if gpus is not None and nodes is not None:
        raise InvalidInputError("give --gpus or --nodes, not both", source)
    try:
        if gpus is not None:
            if gpus <= 0:
                raise InvalidInputError(f"must be positive, got {gpus}", source, "--gpus")
            return cluster.with_gpus(gpus)
        if nodes is not None:
            if nodes <= 0:
                raise InvalidInputError(f"must be positive, got {nodes}", source, "--nodes")
            return cluster.with_nodes(nodes)
    except ValueError as exc:
        if isinstance(exc, InvalidInputError):
            raise
        raise InvalidInputError(str(exc), source, "groups") from None
    return cluster


def load_cluster(
    path: str | Path, gpus: int | None = None, nodes: int | None = None
) -> ClusterSpec:
    """Read a hardware file (see :func:`cluster_from_dict`)."""
    return cluster_from_dict(read_json(path), str(path), gpus=gpus, nodes=nodes)


def load_workload(path: str | Path | None = None, **overrides: Any) -> Workload:
    """Read a workload file (or start from the defaults) and apply command-line overrides."""
    data: dict[str, Any] = {}
    source = str(path) if path is not None else "<workload options>"
    if path is not None:
        data = dict(_as_object(read_json(path), source))
    data.update({k: v for k, v in overrides.items() if v is not None})
    return validate(Workload, data, source)
