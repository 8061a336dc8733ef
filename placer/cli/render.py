"""Everything the commands print as rich tables, bars and progress displays.

Functions here only format what the library computed; none of them decides anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from placer.balance.whole_model import BalanceResult
    from placer.check import CheckReport
    from placer.evaluate import Evaluation
    from placer.layout import Layout
    from placer.model_report import ModelReport
    from placer.plan import Plan
    from placer.search.fewest import FewestGpus
    from placer.serving.frontier import Frontier
    from placer.sweep import SweepResult
    from placer.verify import VerifyReport

GB = 1e9
#: The ``progress`` callback of :func:`placer.solve`.
LayoutProgress = Callable[[int, int, "int | None", "int | None"], None]


def console() -> Console:
    """A console for stdout tables."""
    # Tables are wide; outside a terminal rich would wrap them at 80 columns.
    probe = Console()
    return Console(highlight=False, width=probe.width if probe.is_terminal else 160)


def _table(title: str, columns: tuple[str, ...], **kwargs: object) -> Table:
    t = Table(title=title, **kwargs)  # type: ignore[arg-type]
    for col in columns:
        t.add_column(col)
    return t


def _yes_no(holds: bool, no: str = "NO") -> str:
    return "yes" if holds else f"[red]{no}[/]"


# ------------------------------------------------------------------ inspect
def print_model_report(r: ModelReport) -> None:
    """What ``placer inspect`` read from a model file."""
    con = console()
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
        a = _table("assumed (not in the file)", ("field", "value used", "why"))
        for x in r.assumed:
            a.add_row(x.field, x.value, x.why)
        con.print(a)
    else:
        con.print("assumed: nothing (every value was read from the file)")
    if r.read:
        con.print(f"read {len(r.read)} fields: " + ", ".join(r.read))


# ------------------------------------------------------------------ evaluate
_MEMORY_COLUMNS = (
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
)


def _evaluation_memory(ev: Evaluation) -> Table:
    t = Table(title="memory per GPU (GB)")
    for col in _MEMORY_COLUMNS:
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
            _yes_no(g.used_bytes <= g.capacity_bytes),
        )
    return t


def _evaluation_constraints(ev: Evaluation) -> Table:
    """Every constraint but memory, then one row for memory over all GPUs (the tightest)."""
    c = _table("constraints", ("constraint", "value", "limit", "holds", "detail"))
    shown = [x for x in ev.constraints if not x.name.startswith("memory[")]
    mem = [x for x in ev.constraints if x.name.startswith("memory[")]
    for x in shown:
        c.add_row(
            escape(x.name), f"{x.value:g}", f"{x.limit:g}", _yes_no(x.holds), escape(x.detail)
        )
    if mem:
        worst = max(mem, key=lambda x: x.value / x.limit if x.limit else float("inf"))
        bad = sum(1 for x in mem if not x.holds)
        c.add_row(
            f"memory (all {len(mem)} GPUs)",
            f"{worst.value / GB:.2f} GB max",
            f"{worst.limit / GB:.2f} GB",
            _yes_no(not bad, f"NO ({bad} GPUs)"),
            escape(f"tightest: {worst.name}"),
        )
    return c


def _evaluation_estimates(ev: Evaluation) -> Table | None:
    e = ev.estimates
    if e is None:
        return None
    s = Table(title=f"estimates ({e.phase})", show_header=False)
    s.add_column("what", style="bold")
    s.add_column("value")
    s.add_row("latency per step", f"{e.latency_s * 1e3:.2f} ms (whole batch through all stages)")
    s.add_row("pipelined cycle", f"{e.cycle_s * 1e3:.2f} ms")
    s.add_row("throughput", f"{e.throughput_tokens_s:,.0f} tokens/s")
    s.add_row("time to first token", f"{e.ttft_s * 1e3:.1f} ms")
    s.add_row("bottleneck", e.bottleneck)
    s.add_row("assumptions", escape("; ".join(e.assumptions)))
    return s


def print_evaluation(ev: Evaluation, model_name: str, cluster_name: str) -> None:
    """``placer evaluate``: memory per GPU, constraints, estimates and the verdict."""
    con = console()
    con.print(
        f"[bold]{model_name}[/] on [bold]{cluster_name}[/]: {ev.layout.describe()} "
        f"({ev.layout.gpus} GPUs, profile {ev.profile})"
    )
    if ev.gpus:
        con.print(_evaluation_memory(ev))
    con.print(_evaluation_constraints(ev))
    estimates = _evaluation_estimates(ev)
    if estimates is not None:
        con.print(estimates)
    con.print(
        "[green]fits[/]"
        if ev.fits
        else "[red]does not fit[/]: " + escape(", ".join(x.name for x in ev.violated()[:6]))
    )


# ------------------------------------------------------------------ solve
@contextmanager
def layout_progress(quiet: bool) -> Iterator[LayoutProgress | None]:
    """On a terminal (and not ``quiet``), a progress callback showing layouts done,
    incumbent and bound on stderr; otherwise None."""
    err = Console(stderr=True)
    if quiet or not err.is_terminal:
        yield None
        return
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

        yield update


def print_memory_bars(plan: Plan) -> None:
    """One bar per GPU (or per stage beyond 32 GPUs): weights, KV cache, the rest, free."""
    con = console()
    width = 40
    t = _table(
        "memory per GPU (usable = memory x utilization)",
        ("gpu", "stage", "bar", "used / usable GB"),
        show_edge=False,
    )
    rows = list(plan.gpus)
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


def print_comparison(plan: Plan, other: Layout, ev: Evaluation) -> None:
    """``solve --compare``: the other layout's evaluation next to the plan."""
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
def print_verify_report(report: VerifyReport) -> None:
    """``placer verify``: every check, what was trusted, every violation, the verdict."""
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


# ------------------------------------------------------------------ sweep
@contextmanager
def case_progress(quiet: bool) -> Iterator[Callable[[int, int], None]]:
    """A progress callback (cases done, total) drawn on stderr when it is a terminal."""
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
        yield lambda d, t: prog.update(task, completed=d, total=t)


_SWEEP_COLUMNS = (
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
)


def _dash_or(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _sweep_rows(result: SweepResult, title: str) -> Table:
    t = _table(title, _SWEEP_COLUMNS)
    for r in result.rows:
        t.add_row(
            r.model,
            r.hardware,
            f"{r.gpus_used or '-'}/{r.gpus}",
            r.workload,
            r.status,
            r.layout or escape(r.error[:40]),
            _dash_or(r.throughput_tokens_s, ",.0f"),
            _dash_or(r.throughput_per_gpu, ",.0f"),
            "-" if r.latency_s is None else f"{r.latency_s * 1e3:.2f}",
            _dash_or(r.headroom, ".0%"),
            "-" if r.gap is None else f"{100 * r.gap:.2f} %",
            f"{r.solve_time_s:.2f}",
        )
    return t


def print_sweep(result: SweepResult, name: str, backend: str) -> None:
    """``placer sweep``: every case, the Pareto frontier, and the count proven optimal."""
    con = console()
    title = f"sweep {name}: {len(result.rows)} cases in {result.wall_time_s:.1f} s ({backend})"
    con.print(_sweep_rows(result, title))
    f = _table(
        "Pareto frontier: throughput per GPU vs latency",
        ("model", "hardware", "GPUs", "workload", "layout", "tok/s/GPU", "latency ms"),
    )
    for r in result.frontier():
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


# ------------------------------------------------------------------ min-gpus
def print_fewest_gpus(found: FewestGpus, gpu_name: str, gpus_per_node: int) -> None:
    """``placer min-gpus``: the count, the plan's layout and the proof on one fewer."""
    g, plan, below = found.gpus, found.plan, found.below
    lay = plan.layout
    assert lay is not None  # fewest_gpus returns only plans with a layout
    click.echo(
        f"{'fewest GPUs' if found.proven else 'fits on    '}  {g} x {gpu_name} "
        f"({-(-g // gpus_per_node)} node(s) of {gpus_per_node})"
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


# ------------------------------------------------------------------ frontier, check, balance
def print_frontier(front: Frontier) -> None:
    """``placer frontier``: one row per non-dominated point."""
    t = _table(
        f"frontier: {len(front.points)} non-dominated points"
        + ("" if front.exact else " (not proven complete)"),
        ("layout", "instances", "concurrency", "TPOT ms", "TTFT ms", "tok/s/user", "tok/s/GPU"),
        show_edge=False,
    )
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
    console().print(t)


def print_check(report: CheckReport) -> None:
    """``placer check``: each claim's verdict and the comparison with the optimum."""
    con = console()
    t = _table(
        f"claims of {report.name} ({report.layout})", ("claim", "verdict", "computed", "reason")
    )
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


def print_balance(result: BalanceResult) -> None:
    """``placer balance``: imbalance per layer before and after, bound and gap."""
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
            _dash_or(q.eplb_imbalance, ".4f"),
            f"{q.imbalance:.4f}",
            f"{q.bound:.4f}",
            f"{100 * q.gap:.3f} %",
            "yes" if q.proven else "no",
            escape(f"{q.method} ({q.bound_kind} bound)"),
        )
    console().print(t)
    click.echo(result.summary())
