"""``placer plot``: draw a plan, a balance result, a sweep or a serving frontier."""

from __future__ import annotations

from typing import Any

import click

from placer.cli.app import handle_errors, main
from placer.cli.options import file_option, output_option
from placer.exceptions import InvalidInputError


@main.command(name="plot")
@click.argument("input_path", metavar="PLAN_OR_RESULT", type=click.Path(dir_okay=False))
@output_option("Image file (.png or .svg).", required=True)
@click.option(
    "--kind",
    type=click.Choice(["memory", "expert-load", "frontier"]),
    default=None,
    help="What to draw (default: memory for a plan, expert-load for "
    "a balance result, frontier for sweep rows).",
)
@file_option("--loads", "loads_path", "The load file of a balance result, for before/after bars.")
@click.option("--layer", type=int, default=None, help="Layer to draw (expert-load).")
@file_option("--plan", "plan_path", "A serving plan to mark on a serving frontier.")
@handle_errors
def plot_cmd(
    input_path: str,
    output: str,
    kind: str | None,
    loads_path: str | None,
    layer: int | None,
    plan_path: str | None,
) -> None:
    """Plot a plan's memory per GPU, a balance result's expert load per GPU before and after,
    or a sweep's throughput-vs-latency frontier (needs the 'plot' extra)."""
    from placer.io import read_json

    data = read_json(input_path)
    if isinstance(data, dict) and "points" in data and "cluster_gpus" in data:
        _plot_serving_frontier(data, output, plan_path)
    elif not _plot_file(data, input_path, output, kind, loads_path, layer):
        return
    click.echo(f"wrote {output}")


def _plot_serving_frontier(data: dict[str, Any], output: str, plan_path: str | None) -> None:
    """A serving frontier (placer frontier -o f.json), with --plan marked."""
    from placer.plot import plot_serving_frontier

    mark = None
    if plan_path is not None:
        from placer.verify import load_plan

        s = load_plan(plan_path).serving
        if s is None:
            raise InvalidInputError("not a serving plan (no targets)", source=plan_path)
        if s.tokens_per_s_per_user is None or s.tokens_per_s_per_gpu is None:
            raise InvalidInputError("the plan deploys nothing to mark", source=plan_path)
        mark = (s.tokens_per_s_per_user, s.tokens_per_s_per_gpu)
    points = [p for p in data["points"] if isinstance(p, dict)]
    plot_serving_frontier(points, output, mark)


def _plot_file(
    data: Any,
    input_path: str,
    output: str,
    kind: str | None,
    loads_path: str | None,
    layer: int | None,
) -> bool:
    """A plan's memory, sweep rows' frontier or expert load (``kind`` guessed from the data).

    False when nothing is to be announced: the expert load of a plan has always been drawn
    without the ``wrote`` line, and the command's output is kept as it was."""
    from placer.plot import plot_expert_load, plot_frontier, plot_memory
    from placer.verify import read_verified_plan

    if kind is None:
        if isinstance(data, list):
            kind = "frontier"
        elif isinstance(data, dict) and "physical_to_logical_map" in data:
            kind = "expert-load"
        else:
            kind = "memory"
    if kind == "memory":
        plot_memory(read_verified_plan(input_path), output)
    elif kind == "frontier":
        if not isinstance(data, list):
            raise InvalidInputError(
                "a frontier needs sweep rows (placer sweep -o rows.json)", source=input_path
            )
        plot_frontier(data, output)
    elif isinstance(data, dict) and "certificate" in data:
        plot_expert_load(read_verified_plan(input_path), output, layer=layer)
        return False
    else:
        if not isinstance(data, dict):
            raise InvalidInputError("expected a balance result", source=input_path)
        if loads_path is not None:
            from placer.balance.loads import load_loads

            data = {"loads": [list(r) for r in load_loads(loads_path).load], **data}
        plot_expert_load(data, output, layer=layer)
    return True
