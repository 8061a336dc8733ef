"""Helpers shared by the tests: run the CLI in-process and parse its output."""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner, Result

from placer.cli import main


def run_cli(*args: str) -> Result:
    """Invoke ``placer ARGS`` in-process; stdout and stderr are kept apart."""
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def run_json(*args: str) -> tuple[int, Any]:
    """Invoke ``placer ARGS --json`` and parse the single JSON document it prints."""
    res = run_cli(*args, "--json")
    return res.exit_code, json.loads(res.stdout)
