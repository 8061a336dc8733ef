"""``placer balance``: replicate and place experts to even out the load of each GPU."""

from __future__ import annotations

from dataclasses import dataclass

import click

from placer.cli.app import handle_errors, main
from placer.cli.options import json_option, output_option, whole_number
from placer.cli.render import print_balance
from placer.exceptions import InvalidInputError
from placer.io import check_output, write_atomic
from placer.limits import MAX_PROCESSES, MAX_SEED


@dataclass(frozen=True)
class _Numbers:
    """The numeric options of ``balance``, parsed and range-checked."""

    workers: int
    time_limit_s: float
    seed: int
    gpus: int
    nodes: int
    slots: int | None
    groups: int | None


def _seconds(text: str, upper: float) -> float:
    """``--time-limit`` as seconds in (0, upper]."""
    try:
        value = float(text)
    except ValueError:
        raise InvalidInputError(
            f"must be a number of seconds, got {text[:20]!r}", field="--time-limit"
        ) from None
    if not 0 < value <= upper:  # also refuses nan
        raise InvalidInputError(
            f"must be a number of seconds in (0, {upper:g}], got {value:g}", field="--time-limit"
        )
    return value


def _parse_numbers(
    workers: str,
    time_limit: str,
    seed: str,
    gpus: str,
    nodes: str,
    slots: str | None,
    groups: str | None,
) -> _Numbers:
    """Each option as a number, in the order the checks have always run (the first bad one
    is the one reported)."""
    from placer.balance.whole_model import MAX_TIME_LIMIT_S

    n_workers = whole_number(workers, "--workers")
    if not 0 < n_workers <= MAX_PROCESSES:
        raise InvalidInputError(
            f"must be from 1 to {MAX_PROCESSES}, got {n_workers}", field="--workers"
        )
    seconds = _seconds(time_limit, MAX_TIME_LIMIT_S)
    n_seed = whole_number(seed, "--seed")
    if not 0 <= n_seed <= MAX_SEED:
        raise InvalidInputError(f"must be between 0 and {MAX_SEED}, got {n_seed}", field="--seed")
    return _Numbers(
        workers=n_workers,
        time_limit_s=seconds,
        seed=n_seed,
        gpus=whole_number(gpus, "--gpus"),
        nodes=whole_number(nodes, "--nodes"),
        slots=None if slots is None else whole_number(slots, "--slots"),
        groups=None if groups is None else whole_number(groups, "--groups"),
    )


@main.command(name="balance")
@click.argument("loads_path", metavar="LOADS", type=click.Path(dir_okay=False))
# Numbers are read as text and parsed in the command, so that a bad one ('1e30', '') is one
# line naming the option with exit 2, like every other bad input (click's own message is three).
@click.option("--gpus", metavar="INTEGER", required=True, help="GPUs (EP ranks) per layer.")
@click.option(
    "--nodes", metavar="INTEGER", default="1", show_default=True, help="Nodes the GPUs span."
)
@click.option(
    "--slots",
    metavar="INTEGER",
    default=None,
    help="Physical expert slots per layer (default: experts rounded up to a multiple of --gpus).",
)
@click.option(
    "--groups", metavar="INTEGER", default=None, help="Expert groups (group-limited routing)."
)
@click.option(
    "--policy",
    type=click.Choice(["global", "node"]),
    default="global",
    show_default=True,
    help="node keeps every group's replicas inside one node.",
)
@click.option(
    "--model", "load_model_name", default=None, help="Which model inside a multi-model load file."
)
@click.option("--domain", default=None, help="Which domain inside a multi-domain load file.")
@click.option(
    "--workers", metavar="INTEGER", default="2", show_default=True, help="Layers in parallel."
)
@click.option(
    "--allow-duplicates",
    is_flag=True,
    help="Allow two replicas of one expert on one GPU (EPLB does; off by default).",
)
@click.option(
    "--time-limit",
    "balance_time_limit",
    metavar="SECONDS",
    default="10",
    show_default=True,
    help="Limit of the whole balance, seconds (shared out over the layers).",
)
@click.option(
    "--seed",
    "balance_seed",
    metavar="INTEGER",
    default="0",
    show_default=True,
    help="CP-SAT random seed.",
)
@click.option(
    "--deterministic",
    "balance_deterministic",
    is_flag=True,
    help="Deterministic-time CP-SAT limits: the same map on an idle or a busy machine.",
)
@click.option("--quiet", "balance_quiet", is_flag=True, help="Only the summary, no table.")
@output_option("Write the expert map (SGLang --init-expert-location format) here.")
@json_option("Print the result as JSON.")
@handle_errors
def balance_cmd(
    loads_path: str,
    gpus: str,
    nodes: str,
    slots: str | None,
    groups: str | None,
    policy: str,
    load_model_name: str | None,
    domain: str | None,
    workers: str,
    allow_duplicates: bool,
    balance_time_limit: str,
    balance_seed: str,
    balance_deterministic: bool,
    balance_quiet: bool,
    output: str | None,
    as_json: bool,
) -> None:
    """Replicate and place experts of LOADS on --gpus GPUs to even out load, with the lower
    bound and gap of every layer (see docs/balance.md)."""
    from placer.balance.loads import load_loads
    from placer.balance.whole_model import balance

    n = _parse_numbers(workers, balance_time_limit, balance_seed, gpus, nodes, slots, groups)
    loads = load_loads(loads_path, model=load_model_name, domain=domain)
    if output is not None:
        check_output(output, [loads_path])
    result = balance(
        loads,
        n.gpus,
        nodes=n.nodes,
        slots=n.slots,
        groups=n.groups,
        policy=policy,  # type: ignore[arg-type]
        workers=n.workers,
        allow_duplicates=allow_duplicates,
        time_limit_s=n.time_limit_s,
        seed=n.seed,
        deterministic=balance_deterministic,
    )
    text = result.model_dump_json(indent=1)
    if output is not None:
        write_atomic(output, text + "\n")
    if as_json:
        click.echo(text)
    elif balance_quiet:
        click.echo(result.summary())
    else:
        print_balance(result)
