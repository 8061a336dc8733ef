"""``placer schema``: the JSON Schema of an input or output format."""

from __future__ import annotations

import json
from typing import Any

import click

from placer.cli.app import main


@main.command(name="schema")
@click.argument(
    "which", type=click.Choice(["model", "hardware", "workload", "plan", "deployment", "balance"])
)
def schema_cmd(which: str) -> None:
    """Print the JSON Schema of an input or output format (from the pydantic models)."""
    from placer.check import Deployment
    from placer.cluster import ClusterSpec
    from placer.model import ModelSpec
    from placer.plan import Plan
    from placer.workload import Workload

    classes: dict[str, Any] = {
        "model": ModelSpec,
        "hardware": ClusterSpec,
        "workload": Workload,
        "plan": Plan,
        "deployment": Deployment,
    }
    if which == "balance":
        from placer.balance.whole_model import BalanceResult

        classes["balance"] = BalanceResult
    click.echo(json.dumps(classes[which].model_json_schema(), indent=2))
