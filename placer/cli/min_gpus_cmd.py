"""``placer min-gpus``: the fewest GPUs that fit, with the proof that one fewer does not."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from placer.budget import Budget
from placer.cli.app import fail, handle_errors, main
from placer.cli.options import (
    config_from_options,
    hardware_argument,
    json_option,
    model_argument,
    output_option,
    profile_choice_option,
    time_limit_option,
    workload_from_options,
    workload_options,
)
from placer.cli.render import print_fewest_gpus
from placer.exceptions import EXIT_NO_PLAN, InfeasibleError, InvalidInputError
from placer.io import check_output, write_atomic
from placer.load import load_cluster, load_model


@main.command(name="min-gpus")
@model_argument
@hardware_argument
@workload_options
@profile_choice_option
@time_limit_option(60.0, "Wall-clock limit of the whole command, seconds.")
@output_option("Write the plan on the fewest GPUs here.")
@click.option(
    "--proof",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the infeasibility record of one GPU fewer here.",
)
@json_option("Print both records as JSON.")
@handle_errors
def min_gpus_cmd(
    model_path: str,
    hardware_path: str,
    profile: str,
    time_limit: float,
    output: str | None,
    proof: str | None,
    as_json: bool,
    **kwargs: Any,
) -> None:
    """The fewest GPUs of HARDWARE's type that fit MODEL, with proof that one fewer does not.

    Nodes are added as needed. Both records pass `placer verify`. Exits 0 with the proven
    minimum, 3 when no GPU count up to 4096 fits, 4 when the time limit passed before the
    proof (what is known is printed, and the plan written).
    """
    from placer.search.fewest import fewest_gpus

    config = config_from_options(
        profile=("--profile", profile), time_limit_s=("--time-limit", time_limit)
    )
    budget = Budget.for_process(config.time_limit_s)
    model = load_model(model_path)
    cluster = load_cluster(hardware_path)
    if len(cluster.groups) != 1:
        raise InvalidInputError(
            "min-gpus needs a single GPU type", source=hardware_path, field="groups"
        )
    workload_file = kwargs.get("workload_file")
    workload = workload_from_options(kwargs)
    inputs = (model_path, hardware_path, workload_file)
    if output is not None:
        check_output(output, inputs, [proof])
    if proof is not None:
        check_output(proof, inputs)
    try:
        found = fewest_gpus(model, cluster, workload, config, budget)
    except InfeasibleError as exc:
        raise InfeasibleError(f"{exc} ({hardware_path})") from None
    g, plan, below = found.gpus, found.plan, found.below
    if output is not None:
        write_atomic(output, plan.model_dump_json(indent=2) + "\n")
    if proof is not None and below is not None and found.proven:
        write_atomic(proof, below.model_dump_json(indent=2) + "\n")
    if as_json:
        record = {
            "min_gpus": found.min_gpus,
            "fits_on": g,
            "plan": plan.model_dump(mode="json"),
            "proof": None if below is None else below.model_dump(mode="json"),
        }
        click.echo(json.dumps(record, indent=2))
        sys.exit(0 if found.proven else EXIT_NO_PLAN)
    print_fewest_gpus(found, cluster.groups[0].gpu.name, cluster.gpus_per_node)
    if below is not None and not found.proven:
        fail(
            f"{g} GPUs fit, but the time limit passed before {g - 1} were proven not to "
            "(no minimum is claimed)",
            EXIT_NO_PLAN,
        )
