"""Figures of a plan, an expert balance and a sweep (matplotlib, the optional ``plot`` extra).

matplotlib is imported inside each function, so ``import placer.plot`` works
without it; a missing matplotlib raises :class:`InvalidInputError` naming the
extra. Figures are drawn on a ``Figure`` with the Agg canvas (no pyplot, no
global state) and written atomically: to a temporary file in the target folder,
then renamed, so a failed plot never leaves half a file. The format follows the
suffix: ``.png`` or ``.svg``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from placer.exceptions import InvalidInputError
from placer.ledger import COLUMNS
from placer.plan import Plan

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Output formats by suffix.
FORMATS: dict[str, str] = {".png": "png", ".svg": "svg"}
GB = 1e9
_DPI = 120


# ------------------------------------------------------------------ plumbing
def _figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise InvalidInputError(
            "plotting needs the 'plot' extra: pip install placer[plot]"
        ) from None
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _target(path: str | Path) -> tuple[Path, str]:
    p = Path(path)
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise InvalidInputError(
            f"unsupported plot format '{p.suffix or '(none)'}': use .png or .svg",
            source=str(path),
        )
    directory = p.parent if str(p.parent) else Path(".")
    if not directory.is_dir():
        raise InvalidInputError("the output folder does not exist", source=str(path))
    return p, fmt


def write_figure(fig: Figure, path: str | Path) -> None:
    """Save ``fig`` to ``path`` atomically, in the format its suffix names.

    Parameters
    ----------
    fig
        A matplotlib figure.
    path
        Target file ending in ``.png`` or ``.svg``.

    Raises
    ------
    InvalidInputError
        For another suffix, a missing folder or a file that cannot be written; no
        partial file is left behind.
    """
    p, fmt = _target(path)
    directory = p.parent if str(p.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise InvalidInputError(f"cannot write: {exc.strerror}", source=str(path)) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format=fmt)
        # mkstemp creates the file private (0600); a figure is for sharing.
        os.chmod(tmp, 0o644)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------ memory
def plot_memory(plan: Plan, path: str | Path) -> None:
    """Stacked bars of every GPU's memory by ledger column, with the usable capacity.

    Parameters
    ----------
    plan
        A plan with a layout.
    path
        Output file (``.png`` or ``.svg``).

    Raises
    ------
    InvalidInputError
        If the plan has no layout, matplotlib is missing, or the path is unusable.
    """
    _target(path)
    if not plan.gpus:
        raise InvalidInputError(
            f"the plan has no layout (status {plan.status}): no GPU memory to plot"
        )
    fig = _figure(max(6.0, 0.45 * len(plan.gpus) + 3), 4.8)
    ax = fig.add_subplot()
    xs = list(range(len(plan.gpus)))
    bottom = [0.0] * len(plan.gpus)
    for col in (c for c in COLUMNS if any(g.breakdown.get(c, 0) for g in plan.gpus)):
        values = [g.breakdown.get(col, 0) / GB for g in plan.gpus]
        ax.bar(xs, values, bottom=bottom, label=col, width=0.8)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    caps = [g.capacity_bytes / GB for g in plan.gpus]
    mems = [g.memory_bytes / GB for g in plan.gpus]
    ax.step(
        [x - 0.5 for x in xs] + [xs[-1] + 0.5],
        [*caps, caps[-1]],
        where="post",
        color="black",
        linewidth=1.5,
        label="usable (memory x utilization)",
    )
    ax.step(
        [x - 0.5 for x in xs] + [xs[-1] + 0.5],
        [*mems, mems[-1]],
        where="post",
        color="grey",
        linestyle="--",
        linewidth=1,
        label="physical memory",
    )
    ax.set_xticks(xs, [f"{g.id}\ns{g.stage}" for g in plan.gpus], fontsize=8)
    ax.set_xlabel("GPU (and pipeline stage)")
    ax.set_ylabel("GB (1e9 bytes)")
    name = plan.inputs.model.get("name", "model")
    cluster = plan.inputs.cluster.get("name", "cluster")
    lay = plan.layout
    layout = f"TP{lay.tp} PP{lay.pp} EP{lay.ep} ETP{lay.etp} DPattn{lay.dp_attn}" if lay else ""
    ax.set_title(f"Memory per GPU: {name} on {cluster}, {layout}")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    write_figure(fig, path)


# ------------------------------------------------------------------ expert load
def plot_expert_load(
    data: Plan | Mapping[str, Any] | BaseModel, path: str | Path, layer: int | None = None
) -> None:
    """Expert load per GPU without balancing and with the given placement: heatmaps per GPU
    and layer and per-layer imbalance bars with the bound, or one layer's bars (``layer``).
    The drawing is :func:`placer.plot_expert.draw_expert_load`, which documents ``data``.

    Raises
    ------
    InvalidInputError
        If the data has none of the expected shapes, matplotlib is missing, or the path
        is unusable.
    """
    from placer.plot_expert import draw_expert_load

    draw_expert_load(data, path, layer)


# ------------------------------------------------------------------ frontier
def _row_values(row: Mapping[str, Any]) -> tuple[float, float] | None:
    """(latency s, throughput per GPU) of a row, or None when a value is missing."""
    try:
        gpus = float(row["gpus"])
        tput = float(row["throughput_tokens_s"])
        lat = float(row["latency_s"])
    except (KeyError, TypeError, ValueError):
        return None
    if gpus <= 0 or lat <= 0 or tput < 0:
        return None
    return lat, tput / gpus


def pareto_front(rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Indices of the rows no other row beats on both latency and throughput per GPU.

    Parameters
    ----------
    rows
        Dicts with ``gpus``, ``throughput_tokens_s`` and ``latency_s``; rows missing a
        value are ignored.

    Returns
    -------
    list of int
        Frontier rows, by increasing latency.
    """
    vals = [(i, v) for i, row in enumerate(rows) if (v := _row_values(row)) is not None]
    front = []
    for i, (lat, tpg) in vals:
        dominated = any(
            (l2 <= lat and t2 >= tpg) and (l2 < lat or t2 > tpg) for j, (l2, t2) in vals if j != i
        )
        if not dominated:
            front.append(i)
    front.sort(key=lambda i: (_row_values(rows[i]) or (0.0, 0.0))[0])
    return front


def plot_frontier(rows: Sequence[Mapping[str, Any]], path: str | Path) -> None:
    """Throughput per GPU against latency, with the Pareto frontier highlighted.

    Parameters
    ----------
    rows
        Dicts with ``gpus``, ``throughput_tokens_s``, ``latency_s`` (seconds) and ``label``;
        rows missing a value are left out.
    path
        Output file (``.png`` or ``.svg``).

    Raises
    ------
    InvalidInputError
        If no row has all values, matplotlib is missing, or the path is unusable.
    """
    _target(path)
    points = [(i, v) for i, row in enumerate(rows) if (v := _row_values(row)) is not None]
    if not points:
        raise InvalidInputError(
            "no row has gpus, throughput_tokens_s and latency_s to plot", field="rows"
        )
    front = pareto_front(rows)
    fig = _figure(8.0, 5.0)
    ax = fig.add_subplot()
    ax.scatter(
        [v[0] * 1e3 for _, v in points],
        [v[1] for _, v in points],
        color="lightgrey",
        edgecolor="grey",
        label="all cases",
        zorder=2,
    )
    fx = [(_row_values(rows[i]) or (0.0, 0.0))[0] * 1e3 for i in front]
    fy = [(_row_values(rows[i]) or (0.0, 0.0))[1] for i in front]
    ax.plot(fx, fy, color="tab:red", marker="o", label="Pareto frontier", zorder=3)
    for i, x, y in zip(front, fx, fy, strict=True):
        label = str(rows[i].get("label", ""))
        gpus = rows[i].get("gpus")
        ax.annotate(
            f"{label} ({gpus} GPUs)".strip(),
            (x, y),
            textcoords="offset points",
            xytext=(5, 5),
            fontsize=7,
        )
    ax.set_xlabel("latency per step (ms)")
    ax.set_ylabel("throughput per GPU (tokens/s)")
    ax.set_title(f"Throughput per GPU vs latency ({len(points)} cases, {len(front)} on frontier)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    write_figure(fig, path)


def plot_serving_frontier(
    points: Sequence[Mapping[str, Any]],
    path: str | Path,
    plan: tuple[float, float] | None = None,
) -> None:
    """A serving frontier (``placer frontier -o f.json``): tokens/s per GPU against tokens/s
    per user, one line per instance layout, the chosen plan marked (docs/serving.md).

    Parameters
    ----------
    points
        The frontier's points (``layout``, ``tokens_per_s_per_user``,
        ``tokens_per_s_per_gpu``).
    path
        Output file (``.png`` or ``.svg``).
    plan
        (tokens/s per user, tokens/s per GPU) of a plan to mark, if any.

    Raises
    ------
    InvalidInputError
        If there are no points, matplotlib is missing, or the path is unusable.
    """
    _target(path)
    by_layout: dict[str, list[tuple[float, float]]] = {}
    for p in points:
        try:
            xy = (float(p["tokens_per_s_per_user"]), float(p["tokens_per_s_per_gpu"]))
        except (KeyError, TypeError, ValueError):
            continue
        by_layout.setdefault(str(p.get("layout", "")), []).append(xy)
    if not by_layout:
        raise InvalidInputError("the frontier has no points to plot", field="points")
    fig = _figure(8.0, 5.0)
    ax = fig.add_subplot()
    for name, curve in sorted(by_layout.items()):
        curve.sort()
        ax.plot([u for u, _ in curve], [g for _, g in curve], marker=".", label=name, zorder=2)
    if plan is not None:
        ax.scatter([plan[0]], [plan[1]], marker="*", s=200, color="black", label="plan", zorder=3)
    ax.set_xlabel("tokens/s per user (1 / TPOT)")
    ax.set_ylabel("output tokens/s per GPU")
    n = sum(len(v) for v in by_layout.values())
    ax.set_title(f"Serving frontier ({n} points, {len(by_layout)} layouts)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    write_figure(fig, path)
