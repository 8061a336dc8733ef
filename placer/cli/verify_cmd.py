"""``placer verify``: re-check a plan without the solver."""

from __future__ import annotations

import sys
from typing import Any

import click

from placer.calibration import load_calibration
from placer.cli.app import handle_errors, main
from placer.cli.options import file_option, hardware_options, json_option, plan_argument
from placer.cli.render import print_verify_report
from placer.exceptions import EXIT_VERIFY_FAILED
from placer.load import load_cluster, load_model, load_workload


@main.command(name="verify")
@plan_argument
@file_option("--model", "model_path", "Check the plan was made from this model file.")
@file_option(
    "--hardware",
    "hardware_path",
    "Check the plan was made from this hardware file (with --gpus/--nodes).",
)
@hardware_options
@file_option("--workload", "workload_path", "Check the plan was made for this workload file.")
@file_option("--loads", "loads_path", "Check the plan was made with this load file.")
@file_option(
    "--calibration", "calibration_path", "Check the plan was priced with this calibration file."
)
@json_option("Print the report as JSON.")
@handle_errors
def verify_cmd(
    plan_path: str,
    model_path: str | None,
    hardware_path: str | None,
    gpus: int | None,
    nodes: int | None,
    workload_path: str | None,
    loads_path: str | None,
    calibration_path: str | None,
    as_json: bool,
) -> None:
    """Re-check PLAN from the plan and its inputs alone (no solver).

    Each given file must be the plan's input (compared by content, not by path).
    Exits 0 when every check holds, 5 with the list of violations otherwise, 2 for a
    malformed plan or input file (see docs/certificate.md).
    """
    from placer.verify import load_plan, verify

    plan = load_plan(plan_path)
    given: dict[str, Any] = {}
    if model_path:
        given["model"] = load_model(model_path)
    if hardware_path:
        given["cluster"] = load_cluster(hardware_path, gpus=gpus, nodes=nodes)
    if workload_path:
        given["workload"] = load_workload(workload_path)
    if loads_path:
        from placer.balance.loads import load_loads

        stats = load_loads(loads_path)
        given["loads"] = dict(zip(stats.layers, stats.array(), strict=True))
    if calibration_path:
        given["calibration"] = load_calibration(calibration_path)
    report = verify(plan, given)
    if as_json:
        click.echo(report.model_dump_json(indent=2))
    else:
        print_verify_report(report)
    sys.exit(0 if report.ok else EXIT_VERIFY_FAILED)
