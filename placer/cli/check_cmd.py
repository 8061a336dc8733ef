"""``placer check``: audit a deployment's claims, claim by claim."""

from __future__ import annotations

import sys

import click

from placer.cli.app import handle_errors, main
from placer.cli.options import (
    config_from_options,
    hardware_argument,
    hardware_options,
    json_option,
    model_argument,
    profile_choice_option,
    time_limit_option,
)
from placer.cli.render import print_check
from placer.exceptions import EXIT_VERIFY_FAILED, InvalidInputError
from placer.load import load_cluster, load_model, load_workload


@main.command(name="check")
@click.argument("deployment_path", metavar="DEPLOYMENT", type=click.Path(dir_okay=False))
@model_argument
@hardware_argument
@hardware_options
@profile_choice_option
@time_limit_option(20.0, "Limit of the comparison solve.")
@json_option("Print the verdicts as JSON.")
@handle_errors
def check_cmd(
    deployment_path: str,
    model_path: str,
    hardware_path: str,
    gpus: int | None,
    nodes: int | None,
    profile: str,
    time_limit: float,
    as_json: bool,
) -> None:
    """Audit the claims of DEPLOYMENT for MODEL on HARDWARE, claim by claim.

    Exits 0 when no claim fails, 5 when some claim does not hold (verification
    failed), 2 on bad input.
    """
    from placer.check import check_claims, load_deployment

    config = config_from_options(
        profile=("--profile", profile), time_limit_s=("--time-limit", time_limit)
    )
    dep = load_deployment(deployment_path)
    model = load_model(model_path)
    cluster = load_cluster(hardware_path, gpus=gpus, nodes=nodes)
    try:
        workload = load_workload(None, **dep.workload)
    except InvalidInputError as exc:
        raise InvalidInputError(
            exc.detail, source=deployment_path, field=f"workload.{exc.field}"
        ) from None
    report = check_claims(
        dep, model, cluster, workload, profile, config.time_limit_s, deployment_path
    )
    if as_json:
        click.echo(report.model_dump_json(indent=2))
    else:
        print_check(report)
    sys.exit(EXIT_VERIFY_FAILED if report.failed else 0)
