"""``placer evaluate``: one given layout, its memory, constraints and estimates."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from placer.calibration import load_calibration
from placer.cli.app import handle_errors, main
from placer.cli.options import (
    file_option,
    hardware_argument,
    hardware_options,
    json_option,
    model_argument,
    parse_split,
    workload_from_options,
    workload_options,
)
from placer.cli.render import print_evaluation
from placer.evaluate import evaluate
from placer.exceptions import EXIT_INFEASIBLE, InvalidInputError
from placer.io import validate_options
from placer.layout import Layout
from placer.load import load_cluster, load_model
from placer.rules import PROFILES


@main.command(name="evaluate")
@model_argument
@hardware_argument
@hardware_options
@click.option("--tp", type=int, default=1, show_default=True, help="Attention tensor parallel.")
@click.option("--pp", type=int, default=1, show_default=True, help="Pipeline stages.")
@click.option("--ep", type=int, default=1, show_default=True, help="Expert parallel.")
@click.option(
    "--etp",
    type=int,
    default=None,
    help="Expert tensor parallel (default fills the stage: tp x dp_attn / ep).",
)
@click.option(
    "--dp-attn",
    type=int,
    default=1,
    show_default=True,
    help="Data-parallel attention groups per stage.",
)
@click.option("--layers-per-stage", default=None, help="Uneven split, e.g. 16,15.")
@click.option(
    "--redundant-experts",
    type=int,
    default=0,
    show_default=True,
    help="Extra expert slots per MoE layer.",
)
@click.option(
    "--profile",
    type=click.Choice(list(PROFILES)),
    default="generic",
    show_default=True,
    help="Engine rules profile.",
)
@workload_options
@file_option(
    "--calibration",
    "calibration_path",
    "Calibration file (placer calibrate); default: the one shipped with placer.",
)
@json_option("Print one JSON document.")
@handle_errors
def evaluate_cmd(
    model_path: str,
    hardware_path: str,
    gpus: int | None,
    nodes: int | None,
    tp: int,
    pp: int,
    ep: int,
    etp: int | None,
    dp_attn: int,
    layers_per_stage: str | None,
    redundant_experts: int,
    profile: str,
    calibration_path: str | None,
    as_json: bool,
    **kwargs: Any,
) -> None:
    """Evaluate one layout of MODEL on HARDWARE: memory per GPU, constraints, estimates.

    Exits 0 if the layout fits, 3 if it violates a constraint, 2 on bad input.
    """
    model = load_model(model_path)
    cluster = load_cluster(hardware_path, gpus=gpus, nodes=nodes)
    workload = workload_from_options(kwargs)
    layout = validate_options(
        Layout,
        {
            "tp": ("--tp", tp),
            "pp": ("--pp", pp),
            "ep": ("--ep", ep),
            "etp": ("--etp", etp),
            "dp_attn": ("--dp-attn", dp_attn),
            "layers_per_stage": ("--layers-per-stage", parse_split(layers_per_stage)),
            "redundant_experts": ("--redundant-experts", redundant_experts),
        },
    )
    if layout.tp > cluster.num_gpus:
        raise InvalidInputError(
            f"tp ({layout.tp}) is larger than the {cluster.num_gpus} GPUs of the cluster",
            source=hardware_path,
            field="--tp",
        )
    calibration = load_calibration(calibration_path) if calibration_path else None
    result = evaluate(model, cluster, workload, layout, profile, calibration=calibration)
    if as_json:
        doc = result.model_dump(mode="json")
        doc["workload"] = workload.model_dump(mode="json")
        click.echo(json.dumps(doc, indent=2))
    else:
        print_evaluation(result, model.name, cluster.name)
    sys.exit(0 if result.fits else EXIT_INFEASIBLE)
