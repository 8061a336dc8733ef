"""The expert-load figure of a plan or a balance result (see :func:`placer.plot.plot_expert_load`).

Heatmaps of load per GPU and layer before and after balancing, one colour scale, and the
per-layer imbalance with its bound as bars; or one layer's load per GPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from placer.exceptions import InvalidInputError
from placer.plan import Plan
from placer.plot import _figure, _target, write_figure
from placer.topology import balanced_counts, contiguous_slots


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
    return [list(r) for r in contiguous_slots(experts, balanced_counts(slots, ranks))]


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


def draw_expert_load(
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
        right = _one_layer_bars(fig, bal, before[layer], after[layer], layer)
    else:
        right = _load_heatmaps(fig, bal, before, after)
    _imbalance_bars(
        right,
        bal.layers,
        [_imbalance(x) for x in before],
        [_imbalance(x) for x in after],
        bal.bounds,
    )
    write_figure(fig, path)


def _one_layer_bars(
    fig: Any, bal: _Balance, b_one: list[float], a_one: list[float], layer: int
) -> Any:
    """Left panel: one layer's load per GPU before and after; returns the right-hand axes."""
    left, right = fig.subplots(1, 2, width_ratios=[3, 2])
    ranks = len(a_one)
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
    return right


def _load_heatmaps(
    fig: Any, bal: _Balance, before: list[list[float]], after: list[list[float]]
) -> Any:
    """Two heatmaps (GPU x layer) of load / the layer's mean GPU load, before and after, on
    one colour scale; returns the right-hand axes."""
    ranks = len(after[0])
    h_before, h_after, right = fig.subplots(1, 3, width_ratios=[2, 2, 3])
    rel_b = [[v / (sum(x) / ranks) if sum(x) else 1.0 for v in x] for x in before]
    rel_a = [[v / (sum(x) / ranks) if sum(x) else 1.0 for v in x] for x in after]
    top = max(max(max(r) for r in rel_b), max(max(r) for r in rel_a))
    image = None
    for ax, rel, title in ((h_before, rel_b, "no balancing"), (h_after, rel_a, "placement")):
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
    return right


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
