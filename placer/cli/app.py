"""The ``placer`` click group, and how errors become one line and an exit code.

Exit codes (docs/design.md): 0 success, 2 bad input or usage, 3 infeasible (or a layout that
violates a constraint), 4 no plan within the time limit, 5 verification failed, 130
interrupted. Errors print one line on stderr, never a traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from placer.budget import count_from_process_start
from placer.exceptions import PlacerError
from placer.io import one_line

F = TypeVar("F", bound=Callable[..., Any])
#: Exit code of a command stopped by Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


def fail(message: str, code: int) -> NoReturn:
    """Print ``placer: error: message`` on stderr and exit with ``code``."""
    click.echo(f"placer: error: {message}", err=True)
    sys.exit(code)


def handle_errors(fn: F) -> F:
    """Turn placer's errors into one message and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PlacerError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", EXIT_INTERRUPTED)
        return None

    return wrapper  # type: ignore[return-value]


class _OneLineUsageErrors(click.Group):
    """A click group whose usage errors (an option that is not a number, an unknown option)
    are one ``placer: error:`` line and exit 2, like every other bad input."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:
            # A group or command run with no arguments: its help, as click prints it.
            click.echo(exc.format_message(), err=True)
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            fail(one_line(exc.format_message()), exc.exit_code)
        except click.Abort:
            fail("interrupted", EXIT_INTERRUPTED)


@click.group(cls=_OneLineUsageErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="placer")
def main() -> None:
    """Place Mixture-of-Experts models on GPUs, and prove the placement."""


def run() -> None:  # pragma: no cover - the console entry (and python -m placer.cli)
    """Run one command, flush its output and leave the process without tearing the
    interpreter down: freeing OR-Tools, pandas and the search's tables at exit took up to a
    second on a busy machine, after the plan was already written (docs/certificate.md)."""
    count_from_process_start()  # this process is one command: start-up counts
    code: int | str | None = 0
    try:
        main(prog_name="placer")
    except SystemExit as exc:
        code = exc.code
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
