"""``placer export``: launch command, environment and files for an inference engine."""

from __future__ import annotations

from pathlib import Path

import click

from placer.cli.app import handle_errors, main
from placer.cli.options import json_option, plan_argument
from placer.exceptions import InvalidInputError
from placer.io import write_atomic


@main.command(name="export")
@plan_argument
@click.option("--engine", required=True, help="vllm, sglang or trtllm.")
@click.option("--model-ref", default=None, help="Model name or path for the command line.")
@click.option(
    "--nodes-addr",
    default="<head-node-ip>",
    show_default=True,
    help="Address of the head node for multi-node launches.",
)
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Write the engine's files (expert maps, YAML) into this folder.",
)
@click.option(
    "--engine-version",
    default=None,
    help="Engine version to target (default: the newest placer has facts for).",
)
@json_option("Print the export as JSON.")
@handle_errors
def export_cmd(
    plan_path: str,
    engine: str,
    model_ref: str | None,
    nodes_addr: str,
    out_dir: str | None,
    engine_version: str | None,
    as_json: bool,
) -> None:
    """Launch command, environment and files that realise PLAN on an inference engine.

    A plan the chosen engine version cannot run as planned exits 2 with the reason.
    """
    from placer.engine_facts import release
    from placer.export import export_plan
    from placer.verify import read_verified_plan

    if engine not in ("vllm", "sglang", "trtllm"):
        raise InvalidInputError(
            f"unknown engine {engine!r}; choose vllm, sglang or trtllm", field="--engine"
        )
    if out_dir is not None and not Path(out_dir).is_dir():
        raise InvalidInputError("the output folder does not exist", source=out_dir)
    release(engine, engine_version)  # an unknown release is a usage error, before any work
    # Nothing is exported from a plan that does not verify (exit 5 names the failed check).
    plan = read_verified_plan(plan_path)
    exp = export_plan(
        plan,
        engine,  # type: ignore[arg-type]
        model_ref=model_ref,
        nodes_addr=nodes_addr,
        engine_version=engine_version,
    )
    if out_dir is not None:
        for name, content in exp.files.items():
            write_atomic(Path(out_dir) / name, content)
    click.echo(exp.model_dump_json(indent=2) if as_json else exp.render())
