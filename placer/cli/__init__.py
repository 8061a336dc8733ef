"""The ``placer`` command: a thin shell over the library.

One module per command (``<name>_cmd``), the shared options and what they set in
:mod:`placer.cli.options`, everything printed in :mod:`placer.cli.render`, and the group with
its error handling in :mod:`placer.cli.app`. Exit codes (docs/design.md): 0 success, 2 bad
input or usage, 3 infeasible (or a layout that violates a constraint), 4 no plan within the
time limit, 5 verification failed, 130 interrupted. Errors print one line on stderr, never a
traceback.
"""

from __future__ import annotations

# Importing each command module registers its command on ``main`` (click lists commands
# sorted by name, so the order here does not matter).
from placer.cli import (  # noqa: F401
    balance_cmd,
    calibrate_cmd,
    check_cmd,
    evaluate_cmd,
    export_cmd,
    frontier_cmd,
    inspect_cmd,
    min_gpus_cmd,
    plot_cmd,
    schema_cmd,
    solve_cmd,
    sweep_cmd,
    verify_cmd,
)
from placer.cli.app import EXIT_INTERRUPTED, handle_errors, main, run

__all__ = ["EXIT_INTERRUPTED", "handle_errors", "main", "run"]
