"""``placer frontier``: the non-dominated serving deployments within the targets."""

from __future__ import annotations

from typing import Any

import click

from placer.cli.app import handle_errors, main
from placer.cli.options import (
    hardware_argument,
    hardware_options,
    json_option,
    model_argument,
    output_option,
    profile_choice_option,
    target_options,
    workload_from_options,
    workload_options,
)
from placer.cli.render import print_frontier
from placer.exceptions import InvalidInputError
from placer.io import check_output, write_atomic
from placer.load import load_cluster, load_model


@main.command(name="frontier")
@model_argument
@hardware_argument
@hardware_options
@workload_options
@target_options
@profile_choice_option
@output_option("Write the points as CSV (.csv) or JSON (any other name), atomically.")
@json_option("Print the frontier as JSON.")
@handle_errors
def frontier_cmd(
    model_path: str,
    hardware_path: str,
    gpus: int | None,
    nodes: int | None,
    profile: str,
    output: str | None,
    as_json: bool,
    **kwargs: Any,
) -> None:
    """The non-dominated (tokens/s per user, tokens/s per GPU) deployments of MODEL on
    HARDWARE over every instance layout and concurrency within the targets (docs/serving.md)."""
    from placer.config import SolveConfig
    from placer.serving.frontier import frontier

    if output is not None:
        check_output(output, (model_path, hardware_path, kwargs.get("workload_file")))
    model = load_model(model_path)
    cluster = load_cluster(hardware_path, gpus=gpus, nodes=nodes)
    workload = workload_from_options(kwargs)
    if workload.request_rate is not None:
        raise InvalidInputError("a frontier takes no request rate", field="--request-rate")
    front = frontier(model, cluster, workload, SolveConfig(profile=profile))
    if output is not None:
        write_atomic(output, front.to_csv() if output.endswith(".csv") else front.to_json() + "\n")
    if as_json:
        click.echo(front.to_json())
        return
    print_frontier(front)
