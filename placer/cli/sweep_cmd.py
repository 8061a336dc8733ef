"""``placer sweep``: a grid of cases, solved in parallel, and their Pareto frontier."""

from __future__ import annotations

import json

import click

from placer.calibration import load_calibration
from placer.cli.app import handle_errors, main
from placer.cli.options import file_option, output_option
from placer.cli.render import case_progress, print_sweep
from placer.exceptions import InvalidInputError
from placer.io import check_output, write_atomic
from placer.limits import MAX_PROCESSES


@main.command(name="sweep")
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@output_option("Write the rows as CSV (.csv) or JSON (.json).")
@click.option(
    "--backend",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Process pool on this machine, or Ray tasks.",
)
@click.option(
    "--ray-address",
    default=None,
    help="Address of an existing Ray cluster (default: start a local one).",
)
@click.option("--workers", type=int, default=None, help="Local processes (default: cores).")
@click.option(
    "--cache",
    "cache_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder of finished cases; a re-run resumes from it.",
)
@file_option("--plot", "plot_path", "Plot the frontier (.png/.svg; needs the 'plot' extra).")
@file_option(
    "--calibration",
    "calibration_path",
    "Calibration file (placer calibrate) for every case. Default: the shipped one.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@handle_errors
def sweep_cmd(
    spec_path: str,
    output: str | None,
    backend: str,
    ray_address: str | None,
    workers: int | None,
    cache_dir: str | None,
    plot_path: str | None,
    calibration_path: str | None,
    quiet: bool,
) -> None:
    """Solve every case of the grid in SPEC (YAML or JSON) and print the Pareto frontier
    of throughput per GPU against latency."""
    from placer.config import SolveConfig
    from placer.sweep import load_sweep, sweep

    if output is not None:
        if not output.endswith((".csv", ".json")):
            raise InvalidInputError("the output must end in .csv or .json", source=output)
        check_output(output, [spec_path])
    if workers is not None and not 0 < workers <= MAX_PROCESSES:
        raise InvalidInputError(
            f"must be from 1 to {MAX_PROCESSES}, got {workers}", field="--workers"
        )
    spec, models, clusters, workloads, counts = load_sweep(spec_path)
    calibration = load_calibration(calibration_path) if calibration_path else None
    config = SolveConfig(objective=spec.objective, time_limit_s=spec.time_limit, seed=spec.seed)
    with case_progress(quiet) as progress:
        result = sweep(
            models,
            clusters,
            workloads,
            config,
            gpu_counts=counts,
            profiles=spec.profiles,
            backend=backend,  # type: ignore[arg-type]
            workers=workers,
            cache_dir=cache_dir,
            ray_address=ray_address,
            progress=progress,
            calibration=calibration,
        )
    if output is not None:
        text = (
            result.to_csv() if output.endswith(".csv") else json.dumps(result.to_dicts(), indent=1)
        )
        write_atomic(output, text)
    print_sweep(result, spec.name, backend)
    if plot_path is not None:
        from placer.plot import plot_frontier

        plot_frontier(
            [
                {
                    "gpus": r.gpus_used,
                    "throughput_tokens_s": r.throughput_tokens_s,
                    "latency_s": r.latency_s,
                    "label": f"{r.model} {r.hardware}",
                }
                for r in result.rows
                if r.latency_s
            ],
            plot_path,
        )
