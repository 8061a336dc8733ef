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
from dataclasses import dataclass
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
@dataclass(frozen=True)
class _Balance:
    """Per layer: the ranks' expert lists after and before, and the expert loads."""

    layers: list[int]
    after: list[list[list[int]]]
    before: list[list[list[int]]]
    loads: list[list[float]] | None
    uniform: bool
    bounds: list[float] | None = None  # per layer, from a balance result


def _contiguous(experts: int, slots: int, ranks: int) -> list[list[int]]:
    base, extra = divmod(slots, ranks)
    out, start = [], 0
    for r in range(ranks):
        n = base + (1 if r < extra else 0)
        out.append([p % experts for p in range(start, start + n)])
        start += n
    return out


def _from_plan(plan: Plan) -> _Balance:
    if plan.layout is None or not plan.expert_map:
        raise InvalidInputError(f"the plan (status {plan.status}) has no expert map to plot")
    layers = sorted(plan.expert_map)
    after = [[list(r) for r in plan.expert_map[k]] for k in layers]
    before, loads = [], []
    for ranks in after:
        experts = max(e for r in ranks for e in r) + 1
        before.append(_contiguous(experts, sum(len(r) for r in ranks), len(ranks)))
        loads.append([1.0 / experts] * experts)
    return _Balance(layers=layers, after=after, before=before, loads=loads, uniform=True)


def _from_mapping(data: Mapping[str, Any]) -> _Balance | list[dict[str, Any]]:
    p2l = data.get("physical_to_logical_map")
    loads = data.get("loads")
    gpus = data.get("gpus")
    if p2l is None or loads is None:
        layers = data.get("layers")
        if (
            isinstance(layers, Sequence)
            and layers
            and all(
                isinstance(x, Mapping) and "imbalance" in x and "unbalanced_imbalance" in x
                for x in layers
            )
        ):
            return [dict(x) for x in layers]
        raise InvalidInputError(
            "expected a balance result: 'physical_to_logical_map', 'loads' and 'gpus', or "
            "per-layer 'layers' with 'imbalance' and 'unbalanced_imbalance'"
        )
    if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus <= 0:
        raise InvalidInputError("must be a positive integer", field="gpus")
    if len(p2l) != len(loads):
        raise InvalidInputError(
            f"{len(p2l)} rows of physical_to_logical_map but {len(loads)} rows of loads",
            field="loads",
        )
    after, before, out_loads = [], [], []
    for i, (row, load) in enumerate(zip(p2l, loads, strict=True)):
        slots, experts = len(row), len(load)
        if slots % gpus:
            raise InvalidInputError(
                f"{slots} slots do not divide over {gpus} GPUs",
                field=f"physical_to_logical_map.{i}",
            )
        if any(not 0 <= int(e) < experts for e in row):
            raise InvalidInputError(
                f"an expert id is outside 0..{experts - 1}", field=f"physical_to_logical_map.{i}"
            )
        per = slots // gpus
        after.append([[int(e) for e in row[g * per : (g + 1) * per]] for g in range(gpus)])
        before.append(_contiguous(experts, slots, gpus))
        out_loads.append([float(x) for x in load])
    layer_ids = data.get("layer_ids")
    ids = list(layer_ids) if isinstance(layer_ids, Sequence) else list(range(len(after)))
    quality = data.get("layers")
    bounds = None
    if (
        isinstance(quality, Sequence)
        and len(quality) == len(after)
        and all(isinstance(q, Mapping) and isinstance(q.get("bound"), float) for q in quality)
    ):
        bounds = [float(q["bound"]) for q in quality]
        if not isinstance(layer_ids, Sequence) and all(
            isinstance(q.get("layer"), int) for q in quality
        ):
            ids = [int(q["layer"]) for q in quality]
    return _Balance(
        layers=ids, after=after, before=before, loads=out_loads, uniform=False, bounds=bounds
    )


def _rank_loads(ranks: list[list[int]], load: list[float]) -> list[float]:
    replicas = [0] * len(load)
    for r in ranks:
        for e in r:
            replicas[e] += 1
    return [sum(load[e] / replicas[e] for e in r) for r in ranks]


def _imbalance(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return max(values) / mean if mean else 1.0


def plot_expert_load(
    data: Plan | Mapping[str, Any] | BaseModel, path: str | Path, layer: int | None = None
) -> None:
    """Expert load per GPU (EP rank) without balancing and with the given placement.

    Parameters
    ----------
    data
        A :class:`~placer.plan.Plan` (its expert map, uniform routing assumed, against the
        contiguous default placement); or a balance result as a mapping or pydantic model:
        ``{"physical_to_logical_map": [[...]], "loads": [[...]], "gpus": P}`` (slot ``p`` on
        GPU ``p // (slots / P)``; "before" is slot ``p -> p % E``), or, without loads, a
        ``placer.balance`` result whose per-layer ``layers`` carry ``imbalance`` and
        ``unbalanced_imbalance`` (then only the per-layer panel is drawn).
    path
        Output file (``.png`` or ``.svg``).
    layer
        Show this layer's per-GPU load (index into the layers); default the sum over layers.

    Raises
    ------
    InvalidInputError
        If the data has none of the expected shapes, matplotlib is missing, or the path
        is unusable.
    """
    _target(path)
    if isinstance(data, Plan):
        bal: _Balance | list[dict[str, Any]] = _from_plan(data)
    elif isinstance(data, BaseModel):
        bal = _from_mapping(data.model_dump(mode="json"))
    elif isinstance(data, Mapping):
        bal = _from_mapping(data)
    else:
        raise InvalidInputError(f"cannot plot expert load from a {type(data).__name__}")
    if isinstance(bal, list):
        fig = _figure(max(8.0, 0.3 * len(bal) + 4), 4.5)
        bounds = [x["bound"] for x in bal] if all("bound" in x for x in bal) else None
        _imbalance_bars(
            fig.add_subplot(),
            [int(x.get("layer", i)) for i, x in enumerate(bal)],
            [x["unbalanced_imbalance"] for x in bal],
            [x["imbalance"] for x in bal],
            bounds,
        )
        write_figure(fig, path)
        return
    assert bal.loads is not None
    before = [_rank_loads(r, ld) for r, ld in zip(bal.before, bal.loads, strict=True)]
    after = [_rank_loads(r, ld) for r, ld in zip(bal.after, bal.loads, strict=True)]
    ranks = len(after[0])
    if layer is not None and not 0 <= layer < len(after):
        raise InvalidInputError(
            f"layer index {layer} is outside 0..{len(after) - 1}", field="layer"
        )
    fig = _figure(max(12.0, 0.25 * ranks + 9), 4.8)
    if layer is not None:
        left, right = fig.subplots(1, 2, width_ratios=[3, 2])
        b_one, a_one = before[layer], after[layer]
        xs = list(range(ranks))
        left.bar([x - 0.2 for x in xs], b_one, width=0.4, label="no balancing (slot p -> p % E)")
        left.bar([x + 0.2 for x in xs], a_one, width=0.4, label="placement")
        mean = sum(a_one) / ranks
        left.axhline(mean, color="black", linewidth=1, linestyle="--", label="mean")
        if ranks <= 32:
            left.set_xticks(xs)
        left.set_xlabel("GPU (EP rank)")
        left.set_ylabel("routed load" + (" (uniform routing assumed)" if bal.uniform else ""))
        left.set_title(
            f"Load per GPU, layer {bal.layers[layer]}: max/mean {_imbalance(b_one):.3f} -> "
            f"{_imbalance(a_one):.3f}"
        )
        left.legend(fontsize=8)
    else:
        # One heatmap per side, same colour scale: GPU load / the layer's mean GPU load.
        h_before, h_after, right = fig.subplots(1, 3, width_ratios=[2, 2, 3])
        rel_b = [[v / (sum(x) / ranks) if sum(x) else 1.0 for v in x] for x in before]
        rel_a = [[v / (sum(x) / ranks) if sum(x) else 1.0 for v in x] for x in after]
        top = max(max(max(r) for r in rel_b), max(max(r) for r in rel_a))
        image = None
        for ax, rel, title in (
            (h_before, rel_b, "no balancing"),
            (h_after, rel_a, "placement"),
        ):
            image = ax.imshow(
                [list(col) for col in zip(*rel, strict=True)],
                aspect="auto",
                cmap="viridis",
                vmin=0.0,
                vmax=top,
                interpolation="nearest",
            )
            ax.set_xticks(range(len(bal.layers)), [str(x) for x in bal.layers], fontsize=7)
            ax.set_xlabel("layer")
            ax.set_ylabel("GPU (EP rank)")
            ax.set_title(f"Load per GPU / mean: {title}", fontsize=9)
        assert image is not None
        fig.colorbar(image, ax=[h_before, h_after], shrink=0.8, label="load / mean", pad=0.02)
    _imbalance_bars(
        right,
        bal.layers,
        [_imbalance(x) for x in before],
        [_imbalance(x) for x in after],
        bal.bounds,
    )
    write_figure(fig, path)


def _imbalance_bars(
    ax: Any,
    layers: Sequence[int],
    before: Sequence[float],
    after: Sequence[float],
    bounds: Sequence[float] | None,
) -> None:
    """Per-layer imbalance as grouped bars, one group per layer present (no line drawn
    across missing layers): no balancing, placement and, when known, the lower bound."""
    xs = list(range(len(layers)))
    width = 0.8 / (3 if bounds is not None else 2)
    ax.bar([x - width for x in xs], before, width=width, label="no balancing")
    ax.bar(xs, after, width=width, label="placement")
    if bounds is not None:
        ax.bar([x + width for x in xs], bounds, width=width, color="black", label="lower bound")
    ax.set_xticks(xs, [str(x) for x in layers], fontsize=7)
    ax.set_ylim(bottom=min([1.0, *after, *(bounds or [])]) * 0.98)
    ax.set_xlabel("layer")
    ax.set_ylabel("busiest GPU load / mean")
    ax.set_title("Imbalance per layer")
    ax.legend(fontsize=8)


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
