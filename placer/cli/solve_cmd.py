"""``placer solve``: the best layout and placement, with its certificate."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from placer.budget import Budget
from placer.calibration import load_calibration, use_calibration
from placer.cli.app import EXIT_INTERRUPTED, fail, handle_errors, main
from placer.cli.options import (
    config_from_options,
    file_option,
    hardware_argument,
    hardware_options,
    json_option,
    model_argument,
    output_option,
    parse_compare,
    target_options,
    workload_from_options,
    workload_options,
)
from placer.cli.render import layout_progress, print_comparison, print_memory_bars
from placer.evaluate import evaluate
from placer.exceptions import EXIT_INFEASIBLE, EXIT_NO_PLAN, InvalidInputError
from placer.io import check_output, write_atomic
from placer.load import load_cluster, load_model
from placer.rules import PROFILES

if TYPE_CHECKING:
    from placer.balance.loads import LoadStats
    from placer.cluster import ClusterSpec
    from placer.config import SolveConfig
    from placer.model import ModelSpec
    from placer.plan import Plan
    from placer.workload import Workload


@main.command(name="solve")
@model_argument
@hardware_argument
@hardware_options
@workload_options
@target_options
@click.option(
    "--profile",
    default="generic",
    show_default=True,
    help=f"Engine rules profile: {', '.join(PROFILES)}.",
)
@click.option(
    "--objective",
    type=click.Choice(["throughput", "latency", "gpus", "step"]),
    default="throughput",
    show_default=True,
    help="With --ttft/--tpot: throughput (tokens/s per GPU), gpus (fewest for "
    "--request-rate) or latency (lowest TPOT carrying --concurrency); with a fixed batch: "
    "throughput or step (pipelined step), latency, gpus.",
)
@click.option(
    "--time-limit",
    type=float,
    default=60.0,
    show_default=True,
    help="Wall-clock limit in seconds.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="CP-SAT random seed.")
@click.option("--workers", type=int, default=2, show_default=True, help="CP-SAT workers.")
@click.option(
    "--deterministic",
    is_flag=True,
    help="One worker and deterministic time budgets: same seed, same plan.",
)
@click.option(
    "--compare",
    default=None,
    help="Also evaluate this layout against the plan, e.g. tp=4,pp=4,ep=4,etp=1.",
)
@output_option("Write the plan and certificate (JSON) here, atomically.")
@click.option(
    "--report",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write a Markdown report of the plan here.",
)
@file_option(
    "--loads",
    "loads_path",
    "Expert load statistics: experts are placed on EP ranks by load and the estimates "
    "use the loads.",
)
@file_option(
    "--calibration",
    "calibration_path",
    "Calibration file (placer calibrate); recorded in the plan. Default: the shipped one.",
)
@click.option(
    "--disagg",
    is_flag=True,
    help="With --ttft/--tpot: also find the best split into prefill and decode instances and "
    "say whether it beats aggregated serving.",
)
@click.option(
    "--concurrency",
    type=int,
    default=None,
    help="With --objective latency: requests in flight on the whole cluster; the plan has "
    "the lowest TPOT carrying them within --ttft/--tpot (docs/serving.md).",
)
@click.option("--quiet", is_flag=True, help="No progress display and no memory bars.")
@json_option("Print the plan as JSON.")
@handle_errors
def solve_cmd(
    model_path: str,
    hardware_path: str,
    gpus: int | None,
    nodes: int | None,
    profile: str,
    objective: str,
    time_limit: float,
    seed: int,
    workers: int,
    deterministic: bool,
    compare: str | None,
    output: str | None,
    report: str | None,
    loads_path: str | None,
    calibration_path: str | None,
    disagg: bool,
    concurrency: int | None,
    quiet: bool,
    as_json: bool,
    **kwargs: Any,
) -> None:
    """Find the best layout and placement of MODEL on HARDWARE, and prove it.

    Exits 0 with a plan, 3 when no layout fits (with the smallest fix), 4 when the
    time limit passed with no plan, 2 on bad input.
    """
    if profile not in PROFILES:
        raise InvalidInputError(
            f"unknown rules profile '{profile}'; choose one of {', '.join(PROFILES)}",
            field="--profile",
        )
    config = config_from_options(
        objective=("--objective", objective),
        profile=("--profile", profile),
        time_limit_s=("--time-limit", time_limit),
        seed=("--seed", seed),
        workers=("--workers", workers),
        deterministic=("--deterministic", deterministic),
        disagg=("--disagg", disagg),
        concurrency=("--concurrency", concurrency),
    )
    if concurrency is not None and kwargs.get("batch") is not None:
        raise InvalidInputError(
            "a fixed batch cannot be combined with --concurrency: the batch is one "
            "instance's fixed-batch question, the concurrency the serving one",
            field="--concurrency",
        )
    # The time limit counts from the start of the process (start-up, importing the solver and
    # reading the inputs are part of the run), with a reserve for writing the plan.
    budget = Budget.for_process(config.time_limit_s, config.deterministic)
    model = load_model(model_path)
    cluster = load_cluster(hardware_path, gpus=gpus, nodes=nodes)
    workload_file = kwargs.get("workload_file")
    workload = workload_from_options(kwargs)
    _check_serving_options(workload, cluster, config)
    other = parse_compare(compare) if compare else None
    inputs = (model_path, hardware_path, workload_file, loads_path, calibration_path)
    if output is not None:
        check_output(output, inputs, [report])
    if report is not None:
        check_output(report, inputs)
    loads = _read_loads(loads_path, model)
    calibration = load_calibration(calibration_path) if calibration_path else None
    # Solve, re-estimate with loads and compare under one calibration, which the plan records.
    with use_calibration(calibration):
        plan = _solve(model, cluster, workload, config, budget, loads, quiet)
        _write_plan(plan, output, report)
        if as_json:
            click.echo(plan.model_dump_json(indent=2))
        else:
            click.echo(plan.summary())
            if plan.gpus and not quiet:
                print_memory_bars(plan)
            if other is not None:
                print_comparison(plan, other, evaluate(model, cluster, workload, other, profile))
    sys.exit(
        {"optimal": 0, "feasible": 0, "infeasible": EXIT_INFEASIBLE}.get(plan.status, EXIT_NO_PLAN)
    )


def _check_serving_options(workload: Workload, cluster: ClusterSpec, config: SolveConfig) -> None:
    """--disagg and the serving search's options, each error naming its option."""
    if config.disagg and not workload.serving:
        raise InvalidInputError("needs latency targets (--ttft/--tpot)", field="--disagg")
    if config.disagg and cluster.num_gpus < 2:
        raise InvalidInputError(
            "needs at least 2 GPUs (one prefill, one decode)", field="--disagg"
        )
    if config.disagg and config.objective != "throughput":
        raise InvalidInputError("works with the throughput objective only", field="--disagg")
    if workload.serving or config.concurrency is not None:
        from placer.serving.solve import check_serving_config

        try:
            check_serving_config(workload, config)
        except InvalidInputError as exc:
            flag = {
                "request_rate": "--request-rate",
                "objective": "--objective",
                "concurrency": "--concurrency",
            }
            raise InvalidInputError(
                exc.detail, field=flag.get(exc.field or "", exc.field)
            ) from None


def _read_loads(loads_path: str | None, model: ModelSpec) -> LoadStats | None:
    """The expert loads of --loads, checked against the model before the search."""
    if loads_path is None:
        return None
    from placer.balance.loads import load_loads
    from placer.search.outer import loads_by_layer

    loads = load_loads(loads_path)
    loads_by_layer(model, loads, loads_path)  # bad loads fail before the search
    return loads


def _solve(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    config: SolveConfig,
    budget: Budget,
    loads: LoadStats | None,
    quiet: bool,
) -> Plan:
    """The search (with a progress display on a terminal), re-estimated with the loads."""
    from placer.search.outer import solve, with_loads

    with layout_progress(quiet) as progress:
        plan = solve(model, cluster, workload, config, progress=progress, budget=budget)
    if plan.certificate.solver.interrupted and plan.layout is None:
        # As documented: Ctrl-C before any plan exits 130 and writes nothing.
        fail("interrupted before any plan was found; nothing written", EXIT_INTERRUPTED)
    if loads is not None:
        plan = with_loads(plan, model, cluster, workload, loads)
    return plan


def _write_plan(plan: Plan, output: str | None, report: str | None) -> None:
    """Write the plan (-o) and its Markdown report (--report), each atomically."""
    if output is not None:
        write_atomic(output, plan.model_dump_json(indent=2) + "\n")
    if report is not None:
        from placer.report import markdown_report

        write_atomic(report, markdown_report(plan))
