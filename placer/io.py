"""Reading JSON files and writing outputs atomically, with errors that name file and field."""

from __future__ import annotations

import json
import math
import os
import re
import stat
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from placer.exceptions import InvalidInputError

M = TypeVar("M", bound=BaseModel)


def _parse_constant(name: str) -> float:
    # json reads NaN, Infinity and -Infinity as floats; they are kept here so that
    # check_finite can reject them naming the field they stand in.
    return float(name.lower().replace("infinity", "inf"))


def one_line(text: str) -> str:
    """``text`` with line breaks escaped, so an error message stays on one line."""
    if "\n" not in text and "\r" not in text:
        return text
    return text.replace("\r", "\\r").replace("\n", "\\n")


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
        data = json.loads(text, parse_constant=_parse_constant)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", source=str(path)
        ) from None
    except (ValueError, RecursionError) as exc:
        raise InvalidInputError(
            one_line(f"not valid JSON: {exc or type(exc).__name__}"), source=str(path)
        ) from None
    check_finite(data, str(path))
    return data


def _json_constant(value: float) -> str:
    """How JSON spells a non-finite float: ``NaN``, ``Infinity`` or ``-Infinity``."""
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def check_finite(value: Any, source: str, where: str = "") -> None:
    """Reject NaN and infinities anywhere inside a parsed JSON value, naming the field.

    ``where`` is the dotted location of ``value`` itself ("" for a whole file).
    """
    stack: list[tuple[str, Any]] = [(where, value)]
    while stack:
        loc, item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise InvalidInputError(
                f"must be a finite number, got {_json_constant(item)}",
                source=source,
                field=one_line(loc) or None,
            )
        if isinstance(item, dict):
            pairs = [(str(k), v) for k, v in item.items()]
        elif isinstance(item, list | tuple):
            pairs = [(str(i), v) for i, v in enumerate(item)]
        else:
            continue
        # Reversed onto the stack so the first offending field in file order is reported.
        stack.extend((f"{loc}.{k}" if loc else k, v) for k, v in reversed(pairs))


#: Rewrites a pydantic error location into the field as written in the file.
Rename = Callable[[tuple[int | str, ...]], tuple[int | str, ...]]


def _field_in_message(msg: str, known: set[str]) -> str:
    """The field a whole-object check is about, read from its message: a quoted field name,
    or the name the message starts with; only names of the model's own fields count."""
    for name in re.findall(r"'([A-Za-z_][A-Za-z0-9_]*)'", msg):
        if name in known:
            return str(name)
    head = re.match(r"([A-Za-z_][A-Za-z0-9_]*)\b", msg)
    if head and head.group(1) in known:
        return head.group(1)
    return ""


def is_union_tag(part: int | str) -> bool:
    """True for the part of a pydantic error location that names which member of a union
    was tried (``tuple[int, ...]``, ``constrained-int``): not a field of the file."""
    return isinstance(part, str) and ("[" in part or part.startswith("constrained-"))


def validation_error(
    exc: ValidationError,
    source: str,
    prefix: str = "",
    rename: Rename | None = None,
    known: set[str] | None = None,
) -> InvalidInputError:
    """Turn pydantic's error into one message naming the first offending field.

    ``rename`` maps each error location to the field as the file spells it (for
    loaders that reshape the file before validating it). Further problems are
    counted once per field; a list's length error caused by one of its failed
    items is not counted.
    """
    errors = exc.errors()
    # A list whose item failed also fails its length check, as if that item were
    # not there ("should have at least 1 item"); the item's own error is the news.
    errors = [
        err
        for err in errors
        if err["type"] not in ("too_short", "too_long")
        or not any(
            len(o["loc"]) > len(err["loc"]) and o["loc"][: len(err["loc"])] == err["loc"]
            for o in errors
        )
    ]
    locs: list[tuple[int | str, ...]] = []
    for err in errors:
        loc = tuple(x for x in err["loc"] if not is_union_tag(x))
        if rename is not None:
            loc = rename(loc)
        if loc not in locs:
            locs.append(loc)
    first = errors[0]
    field = ".".join(str(x) for x in locs[0])
    if prefix:
        field = f"{prefix}.{field}" if field else prefix
    msg = first["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if not locs[0] and known:
        # A check across fields has no location of its own: name the field it is about.
        inferred = _field_in_message(msg, known)
        if inferred:
            field = f"{prefix}.{inferred}" if prefix else inferred
    more = len(locs) - 1
    if more:
        msg += f" (and {more} more problem{'s' if more > 1 else ''})"
    return InvalidInputError(one_line(msg), source=source, field=one_line(field) or None)


def validate(
    cls: type[M], data: Any, source: str, prefix: str = "", rename: Rename | None = None
) -> M:
    """``cls.model_validate(data)`` with errors that name ``source`` and the field."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, source, prefix, rename, set(cls.model_fields)) from None


#: Command-line options that set fields of a record: ``{field: (option as typed, value)}``,
#: with None for an option not given.
Options = Mapping[str, tuple[str, Any]]


def validate_options(
    cls: type[M], options: Options, base: Mapping[str, Any] | None = None, source: str = ""
) -> M:
    """``cls`` built from ``base`` (fields read from ``source``, a file) updated by the
    options given, through the same field definitions as the files: an error names the
    option when an option set the field, else ``source`` and the field."""
    data = dict(base or {})
    given = {field: option for field, (option, value) in options.items() if value is not None}
    data.update({field: options[field][1] for field in given})
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        err = validation_error(exc, source, known=set(cls.model_fields))
        option = given.get((err.field or "").split(".")[0])
        if option is not None or not source:
            raise InvalidInputError(err.detail, field=option or err.field) from None
        raise err from None


def check_output(
    path: str | Path, inputs: Sequence[str | Path | None] = (), others: Sequence[str | None] = ()
) -> None:
    """Refuse an output path before any work is done (see docs/inputs.md, "Output files").

    An output is a regular file or a new name in an existing folder: never a directory, a
    device, a pipe or a socket (as root, ``-o /dev/null`` would replace the device), never
    a symbolic link (a rename would replace the link, not the file it names: give the
    target instead), never one of the command's ``inputs`` and never one of its ``others``
    outputs (one would overwrite the other).
    """
    p = Path(path)
    source = str(path)
    directory = p.parent if str(p.parent) else Path(".")
    if not directory.is_dir():
        raise InvalidInputError("the output folder does not exist", source=source)
    if p.is_symlink():
        raise InvalidInputError(
            "is a symbolic link; give the file it points to as the output", source=source
        )
    if p.is_dir():
        raise InvalidInputError("is a directory", source=source)
    if p.exists() and not stat.S_ISREG(p.stat().st_mode):
        raise InvalidInputError(
            "is not a regular file (a device, pipe or socket); outputs are regular files",
            source=source,
        )
    target = p.resolve()
    for other in inputs:
        if other is not None and Path(other).resolve() == target:
            raise InvalidInputError(f"is also an input ({other}); write elsewhere", source=source)
    for other in others:
        if other is not None and Path(other).resolve() == target:
            raise InvalidInputError(f"is also the output {other}; give two names", source=source)


def _file_mode() -> int:
    """The mode a new file gets from the process umask (``0o666 & ~umask``), as ``open``
    gives it; reading the umask means setting it, so it is set straight back."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: never half a file.

    The file gets the mode any new file of the user gets (the umask, not the temporary
    file's 0600); a path that is not a regular file or new is refused (see
    :func:`check_output`).
    """
    p = Path(path)
    check_output(p)
    directory = p.parent if str(p.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise InvalidInputError(f"cannot write: {exc.strerror}", source=str(path)) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
