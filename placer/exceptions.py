"""Errors raised by placer, one class per failure domain (CVXPY style).

Every error that reaches the command line is turned into one message and a
documented exit code by :mod:`placer.cli`; library callers catch the classes.
"""

from __future__ import annotations

#: Exit codes shared by every command (docs/design.md).
EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_INFEASIBLE = 3
EXIT_NO_PLAN = 4
EXIT_VERIFY_FAILED = 5


class PlacerError(Exception):
    """Base class of every error placer raises on purpose."""

    exit_code = 1


class InvalidInputError(PlacerError, ValueError):
    """An input file or argument is malformed; the message names the file and the field.

    Parameters
    ----------
    message
        What is wrong and, where possible, what to do instead.
    source
        The file (or argument) the problem was found in.
    field
        The dotted location of the offending field inside that source.
    """

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, source: str | None = None, field: str | None = None):
        self.source = source
        self.field = field
        self.detail = message
        where = ""
        if source and field:
            where = f"{source}: field '{field}': "
        elif source:
            where = f"{source}: "
        elif field:
            where = f"field '{field}': "
        super().__init__(where + message)


class LayoutError(InvalidInputError):
    """A parallel layout is not legal for the model, the cluster or the rules profile."""


class InfeasibleError(PlacerError):
    """No placement satisfies the constraints; ``conflicts`` names the constraint families."""

    exit_code = EXIT_INFEASIBLE

    def __init__(self, message: str, conflicts: list[str] | None = None):
        self.conflicts = list(conflicts or [])
        super().__init__(message)


class NoPlanError(PlacerError):
    """The time limit passed before a plan (or the proof asked for) was found."""

    exit_code = EXIT_NO_PLAN


class VerificationError(PlacerError):
    """A well-formed plan does not hold: ``verify`` found a violation (the message names it)."""

    exit_code = EXIT_VERIFY_FAILED


class SolverError(PlacerError):
    """CP-SAT rejected the model (MODEL_INVALID) or failed; a bug in placer, not in the input."""

    exit_code = 1
