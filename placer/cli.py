"""The ``placer`` command: a thin shell over the library.

Exit codes (DESIGN.md): 0 success, 2 bad input or usage, 3 infeasible (or a
layout that violates a constraint), 4 no plan within the time limit, 5
verification failed. Errors print one line on stderr, never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from placer.evaluate import Evaluation, evaluate
from placer.exceptions import (
    EXIT_INFEASIBLE,
    EXIT_NO_PLAN,
    EXIT_VERIFY_FAILED,
    InvalidInputError,
    PlacerError,
)
from placer.inspect import ModelReport, inspect_model
from placer.io import validation_error, write_atomic
from placer.layout import Layout
from placer.load import load_cluster, load_model, load_workload
from placer.rules import PROFILES

F = TypeVar("F", bound=Callable[..., Any])
GB = 1e9


def _fail(message: str, code: int) -> None:
    click.echo(f"placer: error: {message}", err=True)
    sys.exit(code)


def handle_errors(fn: F) -> F:
    """Turn placer's errors into one message and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PlacerError as exc:
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        return None

    return wrapper  # type: ignore[return-value]


def _console() -> Console:
    # Tables are wide; outside a terminal rich would wrap them at 80 columns.
    probe = Console()
    return Console(highlight=False, width=probe.width if probe.is_terminal else 160)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="placer")
def main() -> None:
    """Place Mixture-of-Experts models on GPUs, and prove the placement."""


# ------------------------------------------------------------------ options
def hardware_options(fn: F) -> F:
    """--gpus / --nodes, shared by every command that reads HARDWARE."""
    fn = click.option(
        "--nodes",
        type=int,
        default=None,
        help="Use this many full nodes instead of the file's count.",
    )(fn)
    return click.option(
        "--gpus", type=int, default=None, help="Use this many GPUs instead of the file's count."
    )(fn)


def workload_options(fn: F) -> F:
    """Workload file and per-field overrides."""
    opts = [
        click.option(
            "--workload",
            "workload_file",
            type=click.Path(dir_okay=False),
            default=None,
            help="Workload JSON file (fields below override it).",
        ),
        click.option("--batch", type=int, default=None, help="Concurrent requests."),
        click.option("--prompt-len", type=int, default=None, help="Prompt tokens per request."),
        click.option("--output-len", type=int, default=None, help="Output tokens per request."),
        click.option(
            "--context",
            type=int,
            default=None,
            help="KV-cache tokens per request (default prompt + output).",
        ),
        click.option("--phase", type=click.Choice(["prefill", "decode", "both"]), default=None),
        click.option(
            "--weight-dtype",
            type=click.Choice(["fp32", "bf16", "fp16", "fp8", "int8", "int4", "fp4"]),
            default=None,
        ),
        click.option(
            "--expert-dtype",
            type=click.Choice(["fp32", "bf16", "fp16", "fp8", "int8", "int4", "fp4"]),
            default=None,
        ),
        click.option(
            "--kv-dtype", type=click.Choice(["fp32", "bf16", "fp16", "fp8"]), default=None
        ),
        click.option(
            "--mem-util",
            "memory_utilization",
            type=float,
            default=None,
            help="Fraction of GPU memory to plan for (default 0.9).",
        ),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


_WORKLOAD_KEYS = (
    "batch",
    "prompt_len",
    "output_len",
    "context",
    "phase",
    "weight_dtype",
    "expert_dtype",
    "kv_dtype",
    "memory_utilization",
)


def workload_from_options(kwargs: dict[str, Any]) -> Any:
    """Build the Workload from --workload and the override options (popped from kwargs)."""
    path = kwargs.pop("workload_file", None)
    overrides = {k: kwargs.pop(k, None) for k in _WORKLOAD_KEYS}
    return load_workload(path, **overrides)


# ------------------------------------------------------------------ inspect
@main.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@handle_errors
def inspect(model_path: str, as_json: bool) -> None:
    """Show what placer reads from MODEL: format, layers, parameters, assumptions."""
    report = inspect_model(load_model(model_path))
    if as_json:
        click.echo(report.model_dump_json(indent=2))
        return
    _print_model_report(report)


def _print_model_report(r: ModelReport) -> None:
    con = _console()
    t = Table(title=f"{r.name}  ({r.format})", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value")
    t.add_row("layers", f"{r.num_layers} ({r.moe_layers} MoE)")
    t.add_row("experts", f"{r.experts_per_layer} per MoE layer, top-{r.experts_per_token}")
    t.add_row("attention", r.attention)
    t.add_row("placeable modules", str(r.modules))
    t.add_row("total parameters", f"{r.total_params:,} ({r.total_params / 1e9:.2f} B)")
    t.add_row("active parameters", f"{r.active_params:,} ({r.active_params / 1e9:.2f} B)")
    t.add_row("native dtype", r.native_dtype)
    for dt, b in r.bytes_by_dtype.items():
        t.add_row(f"weights in {dt}", f"{b / GB:.2f} GB")
    t.add_row("KV cache per token", f"{r.kv_bytes_per_token:,} B (bf16)")
    con.print(t)
    if r.assumed:
        a = Table(title="assumed (not in the file)")
        a.add_column("field")
        a.add_column("value used")
        a.add_column("why")
        for x in r.assumed:
            a.add_row(x.field, x.value, x.why)
        con.print(a)
    else:
        con.print("assumed: nothing (every value was read from the file)")
    if r.read:
        con.print(f"read {len(r.read)} fields: " + ", ".join(r.read))


# ------------------------------------------------------------------ evaluate
def _parse_split(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        parts = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise InvalidInputError(
            "must be comma-separated integers, e.g. 3,3,2", field="--layers-per-stage"
        ) from None
    if any(p <= 0 for p in parts):
        raise InvalidInputError("every stage needs at least one layer", field="--layers-per-stage")
    return parts


@main.command(name="evaluate")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.argument("hardware_path", metavar="HARDWARE", type=click.Path(dir_okay=False))
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
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
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
    as_json: bool,
    **kwargs: Any,
) -> None:
    """Evaluate one layout of MODEL on HARDWARE: memory per GPU, constraints, estimates.

    Exits 0 if the layout fits, 3 if it violates a constraint, 2 on bad input.
    """
    model = load_model(model_path)
    cluster = load_cluster(hardware_path, gpus=gpus, nodes=nodes)
    workload = workload_from_options(kwargs)
    for name, value in (
        ("--tp", tp),
        ("--pp", pp),
        ("--ep", ep),
        ("--dp-attn", dp_attn),
        ("--etp", etp),
    ):
        if value is not None and value <= 0:
            raise InvalidInputError(f"must be positive, got {value}", field=name)
    if redundant_experts < 0:
        raise InvalidInputError("must not be negative", field="--redundant-experts")
    split = _parse_split(layers_per_stage)
    try:
        layout = Layout(
            tp=tp,
            pp=pp,
            ep=ep,
            etp=etp,
            dp_attn=dp_attn,
            layers_per_stage=split,
            redundant_experts=redundant_experts,
        )
    except ValidationError as exc:
        raise validation_error(exc, "<layout options>") from None
    if layout.tp > cluster.num_gpus:
        raise InvalidInputError(
            f"tp ({layout.tp}) is larger than the {cluster.num_gpus} GPUs of the cluster",
            source=hardware_path,
            field="--tp",
        )
    result = evaluate(model, cluster, workload, layout, profile)
    if as_json:
        doc = result.model_dump(mode="json")
        doc["workload"] = workload.model_dump(mode="json")
        click.echo(json.dumps(doc, indent=2))
    else:
        _print_evaluation(result, model.name, cluster.name)
    sys.exit(0 if result.fits else EXIT_INFEASIBLE)


def _print_evaluation(ev: Evaluation, model_name: str, cluster_name: str) -> None:
    con = _console()
    con.print(
        f"[bold]{model_name}[/] on [bold]{cluster_name}[/]: {ev.layout.describe()} "
        f"({ev.layout.gpus} GPUs, profile {ev.profile})"
    )
    if ev.gpus:
        t = Table(title="memory per GPU (GB)")
        for col in (
            "gpu",
            "stage",
            "attn",
            "mlp+shared",
            "experts",
            "embed",
            "norms",
            "KV",
            "act",
            "reserve",
            "used",
            "usable",
            "fits",
        ):
            t.add_column(col, justify="right")
        for g in ev.gpus:
            b = g.breakdown
            t.add_row(
                str(g.id),
                str(g.stage),
                f"{(b['attention'] + b['mamba']) / GB:.2f}",
                f"{(b['dense_mlp'] + b['shared_experts']) / GB:.2f}",
                f"{b['experts'] / GB:.2f}",
                f"{b['embeddings'] / GB:.2f}",
                f"{b['norms_routers'] / GB:.3f}",
                f"{b['kv_cache'] / GB:.2f}",
                f"{b['activations'] / GB:.2f}",
                f"{b['reserve'] / GB:.2f}",
                f"{g.used_bytes / GB:.2f}",
                f"{g.capacity_bytes / GB:.2f}",
                "yes" if g.used_bytes <= g.capacity_bytes else "[red]NO[/]",
            )
        con.print(t)
    c = Table(title="constraints")
    for col in ("constraint", "value", "limit", "holds", "detail"):
        c.add_column(col)
    shown = [x for x in ev.constraints if not x.name.startswith("memory[")]
    mem = [x for x in ev.constraints if x.name.startswith("memory[")]
    for x in shown:
        c.add_row(
            escape(x.name),
            f"{x.value:g}",
            f"{x.limit:g}",
            "yes" if x.holds else "[red]NO[/]",
            escape(x.detail),
        )
    if mem:
        worst = max(mem, key=lambda x: x.value / x.limit if x.limit else float("inf"))
        bad = sum(1 for x in mem if not x.holds)
        c.add_row(
            f"memory (all {len(mem)} GPUs)",
            f"{worst.value / GB:.2f} GB max",
            f"{worst.limit / GB:.2f} GB",
            "yes" if not bad else f"[red]NO ({bad} GPUs)[/]",
            escape(f"tightest: {worst.name}"),
        )
    con.print(c)
    e = ev.estimates
    if e is not None:
        s = Table(title=f"estimates ({e.phase})", show_header=False)
        s.add_column("what", style="bold")
        s.add_column("value")
        s.add_row(
            "latency per step", f"{e.latency_s * 1e3:.2f} ms (whole batch through all stages)"
        )
        s.add_row("pipelined cycle", f"{e.cycle_s * 1e3:.2f} ms")
        s.add_row("throughput", f"{e.throughput_tokens_s:,.0f} tokens/s")
        s.add_row("time to first token", f"{e.ttft_s * 1e3:.1f} ms")
        s.add_row("bottleneck", e.bottleneck)
        s.add_row("assumptions", escape("; ".join(e.assumptions)))
        con.print(s)
    con.print(
        "[green]fits[/]"
        if ev.fits
        else "[red]does not fit[/]: " + escape(", ".join(x.name for x in ev.violated()[:6]))
    )


# ------------------------------------------------------------------ solve
def _parse_compare(text: str) -> Layout:
    """'tp=4,pp=4,ep=4,etp=1' -> Layout."""
    keys = {"tp", "pp", "ep", "etp", "dp_attn", "dp"}
    values: dict[str, int] = {}
    for part in text.split(","):
        key, _, val = part.partition("=")
        key = key.strip().lower().replace("-", "_")
        if key not in keys or not val.strip().isdigit() or int(val) <= 0:
            raise InvalidInputError(
                "expected positive degrees like tp=4,pp=4,ep=4,etp=1", field="--compare"
            )
        values["dp_attn" if key == "dp" else key] = int(val)
    try:
        return Layout(**values)
    except ValidationError as exc:
        raise validation_error(exc, "--compare") from None


@main.command(name="solve")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.argument("hardware_path", metavar="HARDWARE", type=click.Path(dir_okay=False))
@hardware_options
@workload_options
@click.option(
    "--profile",
    default="generic",
    show_default=True,
    help=f"Engine rules profile: {', '.join(PROFILES)}.",
)
@click.option(
    "--objective",
    type=click.Choice(["throughput", "latency", "gpus"]),
    default="throughput",
    show_default=True,
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
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the plan and certificate (JSON) here, atomically.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
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
    as_json: bool,
    **kwargs: Any,
) -> None:
    """Find the best layout and placement of MODEL on HARDWARE, and prove it.

    Exits 0 with a plan, 3 when no layout fits (with the smallest fix), 4 when the
    time limit passed with no plan, 2 on bad input.
    """
    from placer.config import SolveConfig
    from placer.search.solve import solve

    if profile not in PROFILES:
        raise InvalidInputError(
            f"unknown rules profile '{profile}'; choose one of {', '.join(PROFILES)}",
            field="--profile",
        )
    if time_limit <= 0:
        raise InvalidInputError(f"must be positive, got {time_limit:g}", field="--time-limit")
    if workers <= 0:
        raise InvalidInputError(f"must be positive, got {workers}", field="--workers")
    if seed < 0:
        raise InvalidInputError(f"must not be negative, got {seed}", field="--seed")
    model = load_model(model_path)
    cluster = load_cluster(hardware_path, gpus=gpus, nodes=nodes)
    workload = workload_from_options(kwargs)
    other = _parse_compare(compare) if compare else None
    config = SolveConfig(
        objective=objective,
        profile=profile,
        time_limit_s=time_limit,
        seed=seed,
        workers=workers,
        deterministic=deterministic,
    )
    if output is not None:
        _check_writable(output)
    plan = solve(model, cluster, workload, config)
    text = plan.model_dump_json(indent=2)
    if output is not None:
        write_atomic(output, text + "\n")
    if as_json:
        click.echo(text)
    else:
        click.echo(plan.summary())
        if other is not None:
            _print_comparison(model, cluster, workload, profile, plan, other)
    sys.exit(
        {"optimal": 0, "feasible": 0, "infeasible": EXIT_INFEASIBLE}.get(plan.status, EXIT_NO_PLAN)
    )


def _check_writable(path: str) -> None:
    """Fail before a long search if the output cannot be written."""
    from pathlib import Path

    parent = Path(path).parent
    if not parent.is_dir():
        raise InvalidInputError("the output folder does not exist", source=path)
    if Path(path).is_dir():
        raise InvalidInputError("is a directory", source=path)


def _print_comparison(
    model: Any, cluster: Any, workload: Any, profile: str, plan: Any, other: Layout
) -> None:
    ev = evaluate(model, cluster, workload, other, profile)
    click.echo(f"compared   {other.describe()} on {other.gpus} GPUs:")
    if ev.estimates is None or not ev.fits:
        bad = ", ".join(c.name for c in ev.violated()[:4])
        click.echo(f"           does not fit or is not legal ({bad})")
        return
    mine = plan.estimates
    if mine is None:
        click.echo(
            f"           {ev.estimates.throughput_tokens_s:,.0f} tokens/s; no plan to compare with"
        )
        return
    click.echo(
        f"           {ev.estimates.throughput_tokens_s:,.0f} tokens/s, step "
        f"{ev.estimates.cycle_s * 1e3:.3f} ms, latency {ev.estimates.latency_s * 1e3:.3f} ms; "
        f"the plan is {mine.throughput_tokens_s / ev.estimates.throughput_tokens_s:.2f}x its "
        f"throughput and {ev.estimates.latency_s / mine.latency_s:.2f}x faster per step"
    )


# ------------------------------------------------------------------ verify
@main.command(name="verify")
@click.argument("plan_path", metavar="PLAN", type=click.Path(dir_okay=False))
@click.option(
    "--model",
    "model_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Check the plan was made from this model file.",
)
@click.option(
    "--hardware",
    "hardware_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Check the plan was made from this hardware file (with --gpus/--nodes).",
)
@hardware_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@handle_errors
def verify_cmd(
    plan_path: str,
    model_path: str | None,
    hardware_path: str | None,
    gpus: int | None,
    nodes: int | None,
    as_json: bool,
) -> None:
    """Re-check PLAN from the plan and its inputs alone (no solver).

    Exits 0 when every check holds, 5 with the list of violations otherwise.
    """
    from placer.verify import load_plan, verify

    plan = load_plan(plan_path)
    given: dict[str, Any] = {}
    if model_path:
        given["model"] = load_model(model_path)
    if hardware_path:
        given["cluster"] = load_cluster(hardware_path, gpus=gpus, nodes=nodes)
    report = verify(plan, given)
    if as_json:
        click.echo(report.model_dump_json(indent=2))
    else:
        for line in report.checked:
            click.echo(f"checked    {line}")
        for line in report.trusted:
            click.echo(f"trusted    {line}")
        for line in report.violations:
            click.echo(f"VIOLATION  {line}")
        click.echo(
            "verified: every check holds"
            if report.ok
            else f"NOT verified: {len(report.violations)} violation(s)"
        )
    sys.exit(0 if report.ok else EXIT_VERIFY_FAILED)


def run() -> None:  # pragma: no cover - console entry for python -m
    main(prog_name="placer")


if __name__ == "__main__":  # pragma: no cover
    run()
