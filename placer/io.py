"""Reading JSON files and writing outputs atomically, with errors that name file and field."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from placer.exceptions import InvalidInputError

M = TypeVar("M", bound=BaseModel)


def _reject_constant(name: str) -> float:
    # json accepts NaN and Infinity by default; they are never valid sizes.
    raise ValueError(f"{name} is not a number placer accepts")


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; any problem becomes an :class:`InvalidInputError` naming the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInputError("file not found", source=str(path)) from None
    except IsADirectoryError:
        raise InvalidInputError("is a directory, expected a JSON file", source=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read: {exc}", source=str(path)) from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", source=str(path)
        ) from None
    except ValueError as exc:
        raise InvalidInputError(f"not valid JSON: {exc}", source=str(path)) from None


def check_finite(value: Any, source: str, where: str = "") -> None:
    """Reject NaN and infinities anywhere inside a parsed JSON value."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInputError("must be a finite number", source=source, field=where or None)
    if isinstance(value, dict):
        for k, v in value.items():
            check_finite(v, source, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_finite(v, source, f"{where}.{i}" if where else str(i))


def validation_error(exc: ValidationError, source: str, prefix: str = "") -> InvalidInputError:
    """Turn pydantic's error into one message naming the first offending field."""
    first = exc.errors()[0]
    loc = ".".join(str(x) for x in first["loc"])
    if prefix:
        loc = f"{prefix}.{loc}" if loc else prefix
    msg = first["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    more = len(exc.errors()) - 1
    if more:
        msg += f" (and {more} more problem{'s' if more > 1 else ''})"
    return InvalidInputError(msg, source=source, field=loc or None)


def validate(cls: type[M], data: Any, source: str, prefix: str = "") -> M:
    """``cls.model_validate(data)`` with errors that name ``source`` and the field."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, source, prefix) from None


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: never half a file."""
    p = Path(path)
    directory = p.parent if str(p.parent) else Path(".")
    if not directory.is_dir():
        raise InvalidInputError("the output folder does not exist", source=str(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise InvalidInputError(f"cannot write: {exc.strerror}", source=str(path)) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
