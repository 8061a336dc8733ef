"""``placer inspect``: what placer reads from a model file."""

from __future__ import annotations

import click

from placer.cli.app import handle_errors, main
from placer.cli.options import json_option, model_argument
from placer.cli.render import print_model_report
from placer.load import load_model
from placer.model_report import inspect_model


@main.command(name="inspect")
@model_argument
@json_option("Print one JSON document.")
@handle_errors
def inspect_cmd(model_path: str, as_json: bool) -> None:
    """Show what placer reads from MODEL: format, layers, parameters, assumptions."""
    report = inspect_model(load_model(model_path))
    if as_json:
        click.echo(report.model_dump_json(indent=2))
        return
    print_model_report(report)
