"""Reading a plan file: size and nesting limits, the format version, strict field types,
and the input copies it carries (see docs/certificate.md, "Reading a plan").

Everything here is about the file's form; whether the plan holds is :mod:`placer.verify`'s
question. Every problem is an :class:`~placer.exceptions.InvalidInputError` (exit 2)
naming the file and the JSON path of the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from placer.cluster import ClusterSpec
from placer.exceptions import InvalidInputError
from placer.io import check_finite, one_line, validate, validation_error
from placer.model import ModelSpec
from placer.plan import PLAN_FORMAT_VERSION, Plan
from placer.workload import Workload

#: Largest plan file read, in bytes. A plan for the largest bundled model is well under a
#: megabyte; the limit only stops a runaway file before it is parsed.
MAX_PLAN_BYTES = 64 * 2**20

#: Deepest nesting of objects and lists a plan may have. A real plan nests about eight deep.
MAX_PLAN_DEPTH = 32


def _depth_error(data: Any) -> str | None:
    """The JSON path of the first value nested deeper than :data:`MAX_PLAN_DEPTH`."""
    stack: list[tuple[str, Any, int]] = [("", data, 0)]
    while stack:
        loc, item, depth = stack.pop()
        if depth > MAX_PLAN_DEPTH:
            return loc
        if isinstance(item, dict):
            pairs = [(str(k), v) for k, v in item.items()]
        elif isinstance(item, list):
            pairs = [(str(i), v) for i, v in enumerate(item)]
        else:
            continue
        stack.extend((f"{loc}.{k}" if loc else k, v, depth + 1) for k, v in pairs)
    return None


def _read_text(path: str | Path) -> str:
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise InvalidInputError("file not found", source=str(path)) from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read: {exc.strerror}", source=str(path)) from None
    if p.is_dir():
        raise InvalidInputError("is a directory, expected a plan file", source=str(path))
    if size > MAX_PLAN_BYTES:
        raise InvalidInputError(
            f"{size} bytes; a plan file is at most {MAX_PLAN_BYTES} bytes", source=str(path)
        )
    try:
        with p.open(encoding="utf-8") as fh:
            # A device or pipe reports no size: read one byte past the limit to tell.
            text = fh.read(MAX_PLAN_BYTES + 1)
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(one_line(f"cannot read: {exc}"), source=str(path)) from None
    if len(text) > MAX_PLAN_BYTES:
        raise InvalidInputError(
            f"longer than {MAX_PLAN_BYTES} bytes, the most a plan file may be", source=str(path)
        )
    return text


def _parse(text: str, source: str) -> Any:
    try:
        data = json.loads(text, parse_constant=lambda name: float(name.replace("inity", "")))
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", source=source
        ) from None
    except (ValueError, RecursionError) as exc:
        raise InvalidInputError(
            one_line(f"not valid JSON: {exc or type(exc).__name__}"), source=source
        ) from None
    deep = _depth_error(data)
    if deep is not None:
        raise InvalidInputError(
            f"nested more than {MAX_PLAN_DEPTH} levels deep", source=source, field=deep or None
        )
    check_finite(data, source)
    return data


def read_plan(path: str | Path) -> Plan:
    """Read and validate a plan file (this format version or an older one).

    Raises
    ------
    InvalidInputError
        For a file that is too large or too deep, not JSON, of an unknown format version,
        with a field of the wrong type or range, or with input copies that are not a valid
        model, cluster, workload or load set; the message names the file and the field.
    """
    source = str(path)
    text = _read_text(path)
    data = _parse(text, source)
    return plan_from_dict(data, source, text)


def plan_from_dict(data: Any, source: str = "<plan>", text: str | None = None) -> Plan:
    """Validate a parsed plan (see :func:`read_plan`); ``text`` is the file it came from."""
    if not isinstance(data, dict):
        raise InvalidInputError("expected a plan object", source=source)
    ver = data.get("format_version")
    if type(ver) is not int or not 1 <= ver <= PLAN_FORMAT_VERSION:
        raise InvalidInputError(
            f"plan format version {one_line(repr(ver))[:40]} is not one this placer reads "
            f"(1..{PLAN_FORMAT_VERSION})",
            source=source,
            field="format_version",
        )
    if text is None:
        text = json.dumps(data)
    try:
        # Strict: a JSON true is not a degree, "8" is not a count (see placer._base).
        plan = Plan.model_validate_json(text, strict=True)
    except ValidationError as exc:
        raise validation_error(exc, source, known=set(Plan.model_fields)) from None
    input_specs(plan, source)
    return plan


def input_specs(plan: Plan, source: str = "<plan>") -> tuple[ModelSpec, ClusterSpec, Workload]:
    """The model, cluster and workload of the plan's input copies, validated."""
    return (
        validate(ModelSpec, plan.inputs.model, source, prefix="inputs.model"),
        validate(ClusterSpec, plan.inputs.cluster, source, prefix="inputs.cluster"),
        validate(Workload, plan.inputs.workload, source, prefix="inputs.workload"),
    )
