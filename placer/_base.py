"""Shared pydantic base for every immutable input and output record.

Records read from files use the strict number types below for their counts,
sizes and switches: pydantic's default (lax) mode would quietly turn a JSON
``true`` into ``1`` and a quoted ``"8"`` into ``8``. Strict fields accept only
a real integer (not a boolean), a real boolean, or for floats any JSON number.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, Strict

#: An integer, never a boolean or a string.
Int = Annotated[int, Strict()]
#: A positive integer (a count or a size), never a boolean or a string.
PosInt = Annotated[int, Strict(), Field(gt=0)]
#: A non-negative integer, never a boolean or a string.
NonNegInt = Annotated[int, Strict(), Field(ge=0)]
#: A JSON number (an integer is accepted), never a boolean or a string.
Float = Annotated[float, Strict()]
#: A positive JSON number, never a boolean or a string.
PosFloat = Annotated[float, Strict(), Field(gt=0)]
#: true or false, never 0/1 or "true".
Bool = Annotated[bool, Strict()]


class Frozen(BaseModel):
    """Immutable, strict-keyed record: unknown fields are errors, never ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    #: Fields added after plans were first stored. A plan records its inputs as JSON
    #: copies and their SHA-256, and verify compares a given file with the copy by
    #: content; so that a new field at its default leaves that content, and every
    #: stored plan, unchanged, such a field is left out of the copy while it holds its
    #: default (see docs/certificate.md).
    omitted_at_default: ClassVar[frozenset[str]] = frozenset()

    def canonical_dump(self, **kwargs: Any) -> dict[str, Any]:
        """The JSON copy a plan records and hashes: ``model_dump(mode="json")`` without the
        :attr:`omitted_at_default` fields that hold their default, in nested records too."""
        return self._without_new_defaults(self.model_dump(mode="json", **kwargs))

    def _without_new_defaults(self, data: dict[str, Any]) -> dict[str, Any]:
        for name, value in self:
            if name not in data:
                continue
            if name in self.omitted_at_default and value == type(self).model_fields[name].default:
                del data[name]
            elif isinstance(value, Frozen):
                data[name] = value._without_new_defaults(data[name])
            elif isinstance(value, tuple) and value and isinstance(value[0], Frozen):
                pairs = zip(value, data[name], strict=True)
                data[name] = [v._without_new_defaults(d) for v, d in pairs]
        return data
