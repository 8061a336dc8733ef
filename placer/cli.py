"""The ``placer`` command: a thin shell over the library.

Exit codes (docs/design.md): 0 success, 2 bad input or usage, 3 infeasible (or a
layout that violates a constraint), 4 no plan within the time limit, 5
verification failed. Errors print one line on stderr, never a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from placer.budget import Budget, count_from_process_start
from placer.calibration import load_calibration, use_calibration
from placer.evaluate import Evaluation, evaluate
from placer.exceptions import (
    EXIT_INFEASIBLE,
    EXIT_NO_PLAN,
    EXIT_VERIFY_FAILED,
    InvalidInputError,
    PlacerError,
)
from placer.inspect import ModelReport, inspect_model
from placer.io import check_output, one_line, validate_options, write_atomic
from placer.layout import Layout
from placer.limits import MAX_PROCESSES, MAX_SEED
from placer.load import load_cluster, load_model, load_workload
from placer.rules import PROFILES

F = TypeVar("F", bound=Callable[..., Any])
#: Exit code of a command stopped by Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130
GB = 1e9


def _fail(message: str, code: int) -> NoReturn:
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
            _fail("interrupted", EXIT_INTERRUPTED)
        return None

    return wrapper  # type: ignore[return-value]


def _console() -> Console:
    # Tables are wide; outside a terminal rich would wrap them at 80 columns.
    probe = Console()
    return Console(highlight=False, width=probe.width if probe.is_terminal else 160)


class _OneLineUsageErrors(click.Group):
    """A click group whose usage errors (an option that is not a number, an unknown option)
    are one ``placer: error:`` line and exit 2, like every other bad input."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:
            # A group or command run with no arguments: its help, as click prints it.
            click.echo(exc.format_message(), err=True)
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            _fail(one_line(exc.format_message()), exc.exit_code)
        except click.Abort:
            _fail("interrupted", EXIT_INTERRUPTED)


@click.group(cls=_OneLineUsageErrors, context_settings={"help_option_names": ["-h", "--help"]})
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
            type=click.Choice(["fp32", "bf16", "fp16", "fp8", "int8", "int4", "fp4", "mxfp4"]),
            default=None,
        ),
        click.option(
            "--expert-dtype",
            type=click.Choice(["fp32", "bf16", "fp16", "fp8", "int8", "int4", "fp4", "mxfp4"]),
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


#: Workload fields set by options, and the option each is set by (named in errors).
_WORKLOAD_OPTIONS = {
    "batch": "--batch",
    "prompt_len": "--prompt-len",
    "output_len": "--output-len",
    "context": "--context",
    "phase": "--phase",
    "weight_dtype": "--weight-dtype",
    "expert_dtype": "--expert-dtype",
    "kv_dtype": "--kv-dtype",
    "memory_utilization": "--mem-util",
}


def target_options(fn: F) -> F:
    """Latency targets and request rate: they turn ``solve`` into the serving search."""
    opts = [
        click.option("--ttft", type=float, default=None, help="Time-to-first-token target, ms."),
        click.option("--tpot", type=float, default=None, help="Time-per-output-token target, ms."),
        click.option(
            "--request-rate",
            type=float,
            default=None,
            help="Requests/s to serve (with --objective gpus).",
        ),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


#: Workload fields set by the target options, and the option each is set by.
_TARGET_OPTIONS = {"ttft_ms": "--ttft", "tpot_ms": "--tpot", "request_rate": "--request-rate"}


def targets_from_options(kwargs: dict[str, Any]) -> dict[str, float]:
    """The workload fields of the target options (popped from kwargs); bad values and a
    fixed batch next to them are errors naming the option."""
    out: dict[str, float] = {}
    for key, opt in _TARGET_OPTIONS.items():
        value = kwargs.pop(opt.lstrip("-").replace("-", "_"), None)
        if value is None:
            continue
        if not value > 0 or value == float("inf"):
            raise InvalidInputError(f"must be a positive number, got {value:g}", field=opt)
        out[key] = value
    if out and kwargs.get("batch") is not None:
        raise InvalidInputError(
            "a fixed batch cannot be combined with --ttft, --tpot or --request-rate: the "
            "serving search chooses the concurrency",
            field="--batch",
        )
    return out


def workload_from_options(kwargs: dict[str, Any]) -> Any:
    """Build the Workload from --workload and the override options (popped from kwargs),
    validated by the Workload's own field definitions."""
    path = kwargs.pop("workload_file", None)
    targets = targets_from_options(kwargs) if "ttft" in kwargs else {}
    options = {k: (opt, kwargs.pop(k, None)) for k, opt in _WORKLOAD_OPTIONS.items()}
    options.update({k: (_TARGET_OPTIONS[k], v) for k, v in targets.items()})
    return load_workload(path, options)


def config_from_options(**options: tuple[str, Any]) -> Any:
    """A SolveConfig from ``field=(option, value)`` pairs, validated by its own field
    definitions (an error names the option)."""
    from placer.config import SolveConfig

    return validate_options(SolveConfig, options)


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
@click.option(
    "--calibration",
    "calibration_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Calibration file (placer calibrate); default: the one shipped with placer.",
)
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
            "layers_per_stage": ("--layers-per-stage", _parse_split(layers_per_stage)),
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
    values: dict[str, tuple[str, Any]] = {}
    for part in text.split(","):
        key, _, val = part.partition("=")
        key = key.strip().lower().replace("-", "_")
        # ASCII digits only: str.isdigit() also accepts '²', which int() refuses.
        if key not in keys or not re.fullmatch(r"[0-9]+", val.strip()):
            raise InvalidInputError(
                "expected positive degrees like tp=4,pp=4,ep=4,etp=1", field="--compare"
            )
        values["dp_attn" if key == "dp" else key] = ("--compare", int(val))
    return validate_options(Layout, values)


@main.command(name="solve")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.argument("hardware_path", metavar="HARDWARE", type=click.Path(dir_okay=False))
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
    help="With --ttft/--tpot: throughput (tokens/s per GPU) or gpus (fewest for "
    "--request-rate); with a fixed batch: throughput or step (pipelined step), latency, gpus.",
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
@click.option(
    "--report",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write a Markdown report of the plan here.",
)
@click.option(
    "--loads",
    "loads_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Expert load statistics: experts are placed on EP ranks by load and the estimates "
    "use the loads.",
)
@click.option(
    "--calibration",
    "calibration_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Calibration file (placer calibrate); recorded in the plan. Default: the shipped one.",
)
@click.option(
    "--disagg",
    is_flag=True,
    help="With --ttft/--tpot: also find the best split into prefill and decode instances and "
    "say whether it beats aggregated serving.",
)
@click.option("--quiet", is_flag=True, help="No progress display and no memory bars.")
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
    report: str | None,
    loads_path: str | None,
    calibration_path: str | None,
    disagg: bool,
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
    )
    # The time limit counts from the start of the process (start-up, importing the solver and
    # reading the inputs are part of the run), with a reserve for writing the plan.
    budget = Budget.for_process(config.time_limit_s, config.deterministic)
    from placer.search.solve import solve

    model = load_model(model_path)
    cluster = load_cluster(hardware_path, gpus=gpus, nodes=nodes)
    workload_file = kwargs.get("workload_file")
    workload = workload_from_options(kwargs)
    if disagg and not workload.serving:
        raise InvalidInputError("needs latency targets (--ttft/--tpot)", field="--disagg")
    if disagg and cluster.num_gpus < 2:
        raise InvalidInputError(
            "needs at least 2 GPUs (one prefill, one decode)", field="--disagg"
        )
    if disagg and objective != "throughput":
        raise InvalidInputError("works with the throughput objective only", field="--disagg")
    if workload.serving:
        from placer.serving.solve import check_serving_config

        try:
            check_serving_config(workload, config)
        except InvalidInputError as exc:
            flag = {"request_rate": "--request-rate", "objective": "--objective"}
            raise InvalidInputError(
                exc.detail, field=flag.get(exc.field or "", exc.field)
            ) from None
    other = _parse_compare(compare) if compare else None
    inputs = (model_path, hardware_path, workload_file, loads_path, calibration_path)
    if output is not None:
        check_output(output, inputs, [report])
    if report is not None:
        check_output(report, inputs)
    loads = None
    if loads_path is not None:
        from placer.balance.loads import load_loads
        from placer.search.solve import loads_by_layer

        loads = load_loads(loads_path)
        loads_by_layer(model, loads, loads_path)  # bad loads fail before the search
    calibration = load_calibration(calibration_path) if calibration_path else None
    # Solve, re-estimate with loads and compare under one calibration, which the plan records.
    with use_calibration(calibration):
        plan = _solve_with_progress(solve, model, cluster, workload, config, quiet, budget)
        if plan.certificate.solver.interrupted and plan.layout is None:
            # As documented: Ctrl-C before any plan exits 130 and writes nothing.
            _fail("interrupted before any plan was found; nothing written", EXIT_INTERRUPTED)
        if loads is not None:
            from placer.search.solve import with_loads

            plan = with_loads(plan, model, cluster, workload, loads)
        text = plan.model_dump_json(indent=2)
        if output is not None:
            write_atomic(output, text + "\n")
        if report is not None:
            from placer.report import markdown_report

            write_atomic(report, markdown_report(plan))
        if as_json:
            click.echo(text)
        else:
            click.echo(plan.summary())
            if plan.gpus and not quiet:
                _print_memory_bars(plan)
            if other is not None:
                _print_comparison(model, cluster, workload, profile, plan, other)
    sys.exit(
        {"optimal": 0, "feasible": 0, "infeasible": EXIT_INFEASIBLE}.get(plan.status, EXIT_NO_PLAN)
    )


def _solve_with_progress(
    solve: Any, model: Any, cluster: Any, workload: Any, config: Any, quiet: bool, budget: Any
) -> Any:
    """Run the search; on a terminal, show layouts done, incumbent and bound on stderr."""
    err = Console(stderr=True)
    if quiet or not err.is_terminal:
        return solve(model, cluster, workload, config, budget=budget)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("[bold]layouts"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        console=err,
        transient=True,
    ) as prog:
        task = prog.add_task("", total=None)

        def update(done: int, total: int, incumbent: int | None, bound: int | None) -> None:
            desc = "" if incumbent is None else f"incumbent {incumbent / 1e6:.3f} ms"
            if incumbent and bound is not None:
                desc += f", bound {bound / 1e6:.3f} ms, gap {100 * (1 - bound / incumbent):.2f} %"
            prog.update(task, completed=done, total=total, description=desc)

        return solve(model, cluster, workload, config, progress=update, budget=budget)


def _print_memory_bars(plan: Any) -> None:
    """One bar per GPU (or per stage beyond 32 GPUs): weights, KV cache, the rest, free."""
    con = _console()
    width = 40
    t = Table(title="memory per GPU (usable = memory x utilization)", show_edge=False)
    for col in ("gpu", "stage", "bar", "used / usable GB"):
        t.add_column(col)
    rows = plan.gpus
    if len(rows) > 32:
        rows = [
            next(g for g in plan.gpus if g.stage == s)
            for s in sorted({g.stage for g in plan.gpus})
        ]
    for g in rows:
        b = g.breakdown
        kv = b["kv_cache"]
        other = b["activations"] + b["reserve"]
        weights = g.used_bytes - kv - other
        cap = max(g.capacity_bytes, 1)
        cells = [round(width * x / cap) for x in (weights, kv, other)]
        free = max(0, width - sum(cells))
        bar = (
            f"[blue]{'█' * cells[0]}[/][magenta]{'█' * cells[1]}[/]"
            f"[yellow]{'█' * cells[2]}[/]{'·' * free}"
        )
        t.add_row(
            str(g.id), str(g.stage), bar, f"{g.used_bytes / GB:.2f} / {g.capacity_bytes / GB:.2f}"
        )
    con.print(t)
    con.print(
        "[blue]█[/] weights  [magenta]█[/] KV cache  [yellow]█[/] activations + reserve  · free"
    )


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
@main.command(name="calibrate")
@click.argument("measurements_path", metavar="MEASUREMENTS", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    "output_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Calibration file to write.",
)
@handle_errors
def calibrate_cmd(measurements_path: str, output_path: str) -> None:
    """Fit a calibration (kernel efficiencies, fixed costs) to MEASUREMENTS.

    The fit is deterministic and bounded (docs/cost-model.md). Exits 2 on bad input.
    """
    from placer.fit import fit
    from placer.measurements import load_measurements

    check_output(output_path, (measurements_path,))
    data = load_measurements(measurements_path)
    name = Path(measurements_path).name
    calibration = fit(data.rows, name=f"fitted on {name}", sources=(data.about,))
    write_atomic(output_path, calibration.model_dump_json(indent=1) + "\n")
    click.echo(
        f"{output_path}: {len(data.rows)} rows, sha256 {calibration.digest()[:12]}, "
        f"families {', '.join(calibration.families) or 'none'}"
    )


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
@click.option(
    "--workload",
    "workload_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Check the plan was made for this workload file.",
)
@click.option(
    "--loads",
    "loads_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Check the plan was made with this load file.",
)
@click.option(
    "--calibration",
    "calibration_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Check the plan was priced with this calibration file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
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
        for line in report.checked:
            click.echo(f"checked    {line}")
        for line in report.trusted:
            click.echo(f"trusted    {line}")
        for line in report.violations:
            click.echo(f"VIOLATION  {line}")
        if not report.ok:
            click.echo(f"NOT verified: {len(report.violations)} violation(s)")
        elif report.trusted:
            click.echo(f"verified, with {len(report.trusted)} check(s) taken on trust (above)")
        else:
            click.echo("verified: every check holds, nothing taken on trust")
    sys.exit(0 if report.ok else EXIT_VERIFY_FAILED)


# ------------------------------------------------------------------ sweep
@main.command(name="sweep")
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the rows as CSV (.csv) or JSON (.json).",
)
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
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Plot the frontier (.png/.svg; needs the 'plot' extra).",
)
@click.option(
    "--calibration",
    "calibration_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Calibration file (placer calibrate) for every case. Default: the shipped one.",
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
    err = Console(stderr=True)
    show = not quiet and err.is_terminal
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("[bold]cases"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
        transient=True,
        disable=not show,
    ) as prog:
        task = prog.add_task("", total=None)
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
            progress=lambda d, t: prog.update(task, completed=d, total=t),
            calibration=calibration,
        )
    if output is not None:
        text = (
            result.to_csv() if output.endswith(".csv") else json.dumps(result.to_dicts(), indent=1)
        )
        write_atomic(output, text)
    con = _console()
    t = Table(
        title=f"sweep {spec.name}: {len(result.rows)} cases in {result.wall_time_s:.1f} s "
        f"({backend})"
    )
    for col in (
        "model",
        "hardware",
        "GPUs",
        "workload",
        "status",
        "layout",
        "tok/s",
        "tok/s/GPU",
        "latency ms",
        "headroom",
        "gap",
        "time s",
    ):
        t.add_column(col)
    for r in result.rows:
        t.add_row(
            r.model,
            r.hardware,
            f"{r.gpus_used or '-'}/{r.gpus}",
            r.workload,
            r.status,
            r.layout or escape(r.error[:40]),
            "-" if r.throughput_tokens_s is None else f"{r.throughput_tokens_s:,.0f}",
            "-" if r.throughput_per_gpu is None else f"{r.throughput_per_gpu:,.0f}",
            "-" if r.latency_s is None else f"{r.latency_s * 1e3:.2f}",
            "-" if r.headroom is None else f"{r.headroom:.0%}",
            "-" if r.gap is None else f"{100 * r.gap:.2f} %",
            f"{r.solve_time_s:.2f}",
        )
    con.print(t)
    front = result.frontier()
    f = Table(title="Pareto frontier: throughput per GPU vs latency")
    for col in ("model", "hardware", "GPUs", "workload", "layout", "tok/s/GPU", "latency ms"):
        f.add_column(col)
    for r in front:
        f.add_row(
            r.model,
            r.hardware,
            str(r.gpus_used),
            r.workload,
            r.layout,
            f"{r.throughput_per_gpu:,.0f}",
            f"{(r.latency_s or 0) * 1e3:.2f}",
        )
    con.print(f)
    proven = sum(1 for r in result.rows if r.status == "optimal")
    minutes = max(result.wall_time_s / 60, 1e-9)
    con.print(
        f"{len(result.rows)} cases, {proven} proven optimal, "
        f"{len(result.rows) / minutes:.1f} cases per minute"
    )
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


# ------------------------------------------------------------------ min-gpus
@main.command(name="min-gpus")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.argument("hardware_path", metavar="HARDWARE", type=click.Path(dir_okay=False))
@workload_options
@click.option("--profile", type=click.Choice(list(PROFILES)), default="generic", show_default=True)
@click.option(
    "--time-limit",
    type=float,
    default=60.0,
    show_default=True,
    help="Wall-clock limit of the whole command, seconds.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the plan on the fewest GPUs here.",
)
@click.option(
    "--proof",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the infeasibility record of one GPU fewer here.",
)
@click.option("--json", "as_json", is_flag=True, help="Print both records as JSON.")
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
    from placer.rules import get_profile
    from placer.search.fixes import MAX_GPUS_SEARCHED, min_gpus
    from placer.search.solve import solve

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
    found = min_gpus(model, cluster, workload, get_profile(profile), above=0, budget=budget)
    if found is None:
        if budget.expired():
            _fail("the time limit passed before any GPU count was found to fit", EXIT_NO_PLAN)
        _fail(
            f"no GPU count up to {MAX_GPUS_SEARCHED} fits this model and workload "
            f"({hardware_path})",
            EXIT_INFEASIBLE,
        )
    g = found[0]

    def solve_on(gpus: int) -> Any:
        # Each solve may take half of what is left, so that the next one still has time.
        limit = max(budget.share(0.5), 0.01)
        return solve(model, cluster.with_gpus(gpus), workload, config, budget=Budget(limit))

    # The witness used balanced slot counts; CP-SAT may fit on fewer. Step down until a
    # count is proven infeasible (a solve on n GPUs covers every layout on fewer).
    plan = solve_on(g)
    below = None
    while g > 1 and plan.layout is not None:
        below = solve_on(g - 1)
        if below.status not in ("optimal", "feasible"):
            break
        g, plan, below = g - 1, below, None
    if plan.layout is None:
        _fail(
            f"{g} GPUs fit with balanced expert slots, but no plan on them was found within "
            "the time limit",
            EXIT_NO_PLAN,
        )
    # A minimum is claimed only with the proof that one fewer does not fit.
    proven = g == 1 or (below is not None and below.status == "infeasible")
    if output is not None:
        write_atomic(output, plan.model_dump_json(indent=2) + "\n")
    if proof is not None and below is not None and proven:
        write_atomic(proof, below.model_dump_json(indent=2) + "\n")
    if as_json:
        click.echo(
            json.dumps(
                {
                    "min_gpus": g if proven else None,
                    "fits_on": g,
                    "plan": plan.model_dump(mode="json"),
                    "proof": None if below is None else below.model_dump(mode="json"),
                },
                indent=2,
            )
        )
        sys.exit(0 if proven else EXIT_NO_PLAN)
    lay = plan.layout
    click.echo(
        f"{'fewest GPUs' if proven else 'fits on    '}  {g} x {cluster.groups[0].gpu.name} "
        f"({-(-g // cluster.gpus_per_node)} node(s) of {cluster.gpus_per_node})"
    )
    click.echo(
        f"plan         TP{lay.tp} PP{lay.pp} EP{lay.ep} ETP{lay.etp} DPattn{lay.dp_attn}"
        f", layers per stage {list(lay.layers_per_stage)}, status {plan.status}"
    )
    if below is None:
        click.echo("proof        one GPU is the minimum")
        return
    s = below.certificate.search
    click.echo(
        f"proof        on {g - 1} GPUs: {below.status}; {s.legal} legal layouts, "
        f"{s.infeasible} proven infeasible, {s.unresolved} unresolved"
    )
    if below.infeasibility is not None:
        click.echo(f"why          {below.infeasibility.reason}")
    if not proven:
        _fail(
            f"{g} GPUs fit, but the time limit passed before {g - 1} were proven not to "
            "(no minimum is claimed)",
            EXIT_NO_PLAN,
        )


# ------------------------------------------------------------------ export
@main.command(name="export")
@click.argument("plan_path", metavar="PLAN", type=click.Path(dir_okay=False))
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
@click.option("--json", "as_json", is_flag=True, help="Print the export as JSON.")
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
    from pathlib import Path

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


# ------------------------------------------------------------------ plot
@main.command(name="plot")
@click.argument("input_path", metavar="PLAN_OR_RESULT", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    required=True,
    help="Image file (.png or .svg).",
)
@click.option(
    "--kind",
    type=click.Choice(["memory", "expert-load", "frontier"]),
    default=None,
    help="What to draw (default: memory for a plan, expert-load for "
    "a balance result, frontier for sweep rows).",
)
@click.option(
    "--loads",
    "loads_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="The load file of a balance result, for before/after bars.",
)
@click.option("--layer", type=int, default=None, help="Layer to draw (expert-load).")
@click.option(
    "--plan",
    "plan_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="A serving plan to mark on a serving frontier.",
)
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
    from placer.plot import plot_expert_load, plot_frontier, plot_memory

    data = read_json(input_path)
    if isinstance(data, dict) and "points" in data and "cluster_gpus" in data:
        # A serving frontier (placer frontier -o f.json), with --plan marked.
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
        click.echo(f"wrote {output}")
        return
    if kind is None:
        if isinstance(data, list):
            kind = "frontier"
        elif isinstance(data, dict) and "physical_to_logical_map" in data:
            kind = "expert-load"
        else:
            kind = "memory"
    if kind == "memory":
        from placer.verify import read_verified_plan

        plot_memory(read_verified_plan(input_path), output)
    elif kind == "frontier":
        if not isinstance(data, list):
            raise InvalidInputError(
                "a frontier needs sweep rows (placer sweep -o rows.json)", source=input_path
            )
        plot_frontier(data, output)
    else:
        if isinstance(data, dict) and "certificate" in data:
            from placer.verify import read_verified_plan

            plot_expert_load(read_verified_plan(input_path), output, layer=layer)
            return
        if not isinstance(data, dict):
            raise InvalidInputError("expected a balance result", source=input_path)
        if loads_path is not None:
            from placer.balance.loads import load_loads

            data = {"loads": [list(r) for r in load_loads(loads_path).load], **data}
        plot_expert_load(data, output, layer=layer)
    click.echo(f"wrote {output}")


# ------------------------------------------------------------------ frontier
@main.command(name="frontier")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.argument("hardware_path", metavar="HARDWARE", type=click.Path(dir_okay=False))
@hardware_options
@workload_options
@target_options
@click.option("--profile", type=click.Choice(list(PROFILES)), default="generic", show_default=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the points as CSV (.csv) or JSON (any other name), atomically.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the frontier as JSON.")
@handle_errors
def frontier_cmd(
    model_path: str,
    hardware_path: str,
    gpus: int | None,
    nodes: int | None,
    profile: str,
    output: str | None,
    as_json: bool,
    **kwargs: Any,
) -> None:
    """The non-dominated (tokens/s per user, tokens/s per GPU) deployments of MODEL on
    HARDWARE over every instance layout and concurrency within the targets (docs/serving.md)."""
    from placer.config import SolveConfig
    from placer.serving.frontier import frontier

    if output is not None:
        check_output(output, (model_path, hardware_path, kwargs.get("workload_file")))
    model = load_model(model_path)
    cluster = load_cluster(hardware_path, gpus=gpus, nodes=nodes)
    workload = workload_from_options(kwargs)
    if workload.request_rate is not None:
        raise InvalidInputError("a frontier takes no request rate", field="--request-rate")
    front = frontier(model, cluster, workload, SolveConfig(profile=profile))
    if output is not None:
        write_atomic(output, front.to_csv() if output.endswith(".csv") else front.to_json() + "\n")
    if as_json:
        click.echo(front.to_json())
        return
    t = Table(
        title=f"frontier: {len(front.points)} non-dominated points"
        + ("" if front.exact else " (not proven complete)"),
        show_edge=False,
    )
    for col in (
        "layout",
        "instances",
        "concurrency",
        "TPOT ms",
        "TTFT ms",
        "tok/s/user",
        "tok/s/GPU",
    ):
        t.add_column(col)
    for p in front.points:
        t.add_row(
            p.layout,
            f"{p.instances} x {p.gpus}",
            str(p.concurrency),
            f"{p.tpot_ms:.2f}",
            f"{p.ttft_ms:.1f}",
            f"{p.tokens_per_s_per_user:,.1f}",
            f"{p.tokens_per_s_per_gpu:,.1f}",
        )
    _console().print(t)


# ------------------------------------------------------------------ check
@main.command(name="check")
@click.argument("deployment_path", metavar="DEPLOYMENT", type=click.Path(dir_okay=False))
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.argument("hardware_path", metavar="HARDWARE", type=click.Path(dir_okay=False))
@hardware_options
@click.option("--profile", type=click.Choice(list(PROFILES)), default="generic", show_default=True)
@click.option(
    "--time-limit",
    type=float,
    default=20.0,
    show_default=True,
    help="Limit of the comparison solve.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the verdicts as JSON.")
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
        con = _console()
        t = Table(title=f"claims of {report.name} ({report.layout})")
        for col in ("claim", "verdict", "computed", "reason"):
            t.add_column(col)
        colour = {"holds": "green", "fails": "red", "cannot judge": "yellow"}
        for r in report.results:
            t.add_row(
                escape(r.text),
                f"[{colour[r.verdict]}]{r.verdict}[/]",
                escape(r.computed),
                escape(r.reason),
            )
        con.print(t)
        con.print(escape(f"compared with the optimum: {report.comparison}"))
        n = len(report.failed)
        con.print(f"{n} claim(s) fail" if n else "no claim fails")
    sys.exit(EXIT_VERIFY_FAILED if report.failed else 0)


# ------------------------------------------------------------------ schema
@main.command(name="schema")
@click.argument(
    "which", type=click.Choice(["model", "hardware", "workload", "plan", "deployment", "balance"])
)
def schema_cmd(which: str) -> None:
    """Print the JSON Schema of an input or output format (from the pydantic models)."""
    from placer.check import Deployment
    from placer.cluster import ClusterSpec
    from placer.model import ModelSpec
    from placer.plan import Plan
    from placer.workload import Workload

    classes: dict[str, Any] = {
        "model": ModelSpec,
        "hardware": ClusterSpec,
        "workload": Workload,
        "plan": Plan,
        "deployment": Deployment,
    }
    if which == "balance":
        from placer.balance.solve import BalanceResult

        classes["balance"] = BalanceResult
    click.echo(json.dumps(classes[which].model_json_schema(), indent=2))


# ------------------------------------------------------------------ balance
def _whole_number(text: str, option: str) -> int:
    """An option's value as an integer of at most 18 digits (exit 2 naming it otherwise)."""
    digits = text.strip()
    if not (digits.lstrip("-").isascii() and digits.lstrip("-").isdigit()) or len(digits) > 18:
        raise InvalidInputError(f"must be an integer, got {text[:20]!r}", field=option)
    return int(digits)


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
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the expert map (SGLang --init-expert-location format) here.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
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
    from placer.balance.solve import MAX_TIME_LIMIT_S, balance

    n_workers = _whole_number(workers, "--workers")
    if not 0 < n_workers <= MAX_PROCESSES:
        raise InvalidInputError(
            f"must be from 1 to {MAX_PROCESSES}, got {n_workers}", field="--workers"
        )
    try:
        time_limit = float(balance_time_limit)
    except ValueError:
        raise InvalidInputError(
            f"must be a number of seconds, got {balance_time_limit[:20]!r}", field="--time-limit"
        ) from None
    if not 0 < time_limit <= MAX_TIME_LIMIT_S:  # also refuses nan
        raise InvalidInputError(
            f"must be a number of seconds in (0, {MAX_TIME_LIMIT_S:g}], got {time_limit:g}",
            field="--time-limit",
        )
    seed = _whole_number(balance_seed, "--seed")
    if not 0 <= seed <= MAX_SEED:
        raise InvalidInputError(f"must be between 0 and {MAX_SEED}, got {seed}", field="--seed")
    n_gpus = _whole_number(gpus, "--gpus")
    n_nodes = _whole_number(nodes, "--nodes")
    n_slots = None if slots is None else _whole_number(slots, "--slots")
    n_groups = None if groups is None else _whole_number(groups, "--groups")
    loads = load_loads(loads_path, model=load_model_name, domain=domain)
    if output is not None:
        check_output(output, [loads_path])
    result = balance(
        loads,
        n_gpus,
        nodes=n_nodes,
        slots=n_slots,
        groups=n_groups,
        policy=policy,  # type: ignore[arg-type]
        workers=n_workers,
        allow_duplicates=allow_duplicates,
        time_limit_s=time_limit,
        seed=seed,
        deterministic=balance_deterministic,
    )
    text = result.model_dump_json(indent=1)
    if output is not None:
        write_atomic(output, text + "\n")
    if as_json:
        click.echo(text)
        return
    if balance_quiet:
        click.echo(result.summary())
        return
    con = _console()
    t = Table(
        title=f"expert balance: {result.slots} slots on {result.gpus} GPUs, "
        f"{result.nodes} nodes, policy {result.policy} (imbalance = busiest GPU / mean)"
    )
    for col in ("layer", "no balancing", "EPLB", "placer", "bound", "gap", "proven", "method"):
        t.add_column(col, justify="right" if col not in ("method",) else "left")
    for q in result.layers:
        t.add_row(
            str(q.layer),
            f"{q.unbalanced_imbalance:.4f}",
            "-" if q.eplb_imbalance is None else f"{q.eplb_imbalance:.4f}",
            f"{q.imbalance:.4f}",
            f"{q.bound:.4f}",
            f"{100 * q.gap:.3f} %",
            "yes" if q.proven else "no",
            escape(f"{q.method} ({q.bound_kind} bound)"),
        )
    con.print(t)
    click.echo(result.summary())


def run() -> None:  # pragma: no cover - the console entry (and python -m placer.cli)
    """Run one command, flush its output and leave the process without tearing the
    interpreter down: freeing OR-Tools, pandas and the search's tables at exit took up to a
    second on a busy machine, after the plan was already written (docs/certificate.md)."""
    count_from_process_start()  # this process is one command: start-up counts
    code: int | str | None = 0
    try:
        main(prog_name="placer")
    except SystemExit as exc:
        code = exc.code
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":  # pragma: no cover
    run()
