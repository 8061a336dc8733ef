"""Figures: files produced and non-trivial, bad suffixes refused, never a partial file."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

from placer import SolveConfig, load_cluster, load_model
from placer.exceptions import InvalidInputError
from placer.plan import Plan
from placer.plot import pareto_front, plot_expert_load, plot_frontier, plot_memory
from placer.search.outer import solve

pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def plan() -> Plan:
    """Mixtral-8x7B on 8 x A100-80GB."""
    cluster = load_cluster(ROOT / "instances" / "hardware" / "dgx-a100-80gb.json")
    model = load_model(ROOT / "models" / "mixtral-8x7b.json")
    return solve(model, cluster, None, SolveConfig(time_limit_s=20))


ROWS: list[dict[str, Any]] = [
    {"gpus": 8, "throughput_tokens_s": 8000.0, "latency_s": 0.010, "label": "a"},
    {"gpus": 16, "throughput_tokens_s": 12000.0, "latency_s": 0.006, "label": "b"},
    {"gpus": 8, "throughput_tokens_s": 4000.0, "latency_s": 0.012, "label": "dominated"},
    {"gpus": 32, "throughput_tokens_s": 16000.0, "latency_s": 0.004, "label": "c"},
    {"gpus": 4, "throughput_tokens_s": None, "latency_s": 0.004, "label": "no value"},
]
BALANCE: dict[str, Any] = {
    "loads": [[40.0, 10.0, 5.0, 5.0, 20.0, 10.0, 5.0, 5.0], [10.0] * 8],
    "physical_to_logical_map": [
        [0, 1, 2, 3, 0, 4, 5, 6, 7, 4, 1, 2],
        [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3],
    ],
    "gpus": 3,
}


def _svg_ok(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "<svg" in text and text.count("<path") >= 5


def test_memory_png_and_svg(plan: Plan, tmp_path: Path) -> None:
    """plot_memory writes a non-trivial PNG and an SVG with many paths."""
    png, svg = tmp_path / "mem.png", tmp_path / "mem.svg"
    plot_memory(plan, png)
    plot_memory(plan, svg)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    _svg_ok(svg)


def test_expert_load_from_plan_and_balance(plan: Plan, tmp_path: Path) -> None:
    """plot_expert_load takes a plan, a balance dict with loads, or per-layer results."""
    plot_expert_load(plan, tmp_path / "plan.png")
    plot_expert_load(BALANCE, tmp_path / "bal.svg")
    plot_expert_load(BALANCE, tmp_path / "layer.png", layer=0)
    layers = {
        "physical_to_logical_map": BALANCE["physical_to_logical_map"],
        "layers": [
            {"layer": 0, "imbalance": 1.1, "unbalanced_imbalance": 1.9, "bound": 1.05},
            {"layer": 1, "imbalance": 1.0, "unbalanced_imbalance": 1.2, "bound": 1.0},
        ],
    }
    plot_expert_load(layers, tmp_path / "layers.png")
    for name in ("plan.png", "layer.png", "layers.png"):
        assert (tmp_path / name).stat().st_size > 5000
    _svg_ok(tmp_path / "bal.svg")


def test_expert_load_rejects_bad_data(tmp_path: Path) -> None:
    """Data of no known shape, slots that do not divide, or a bad layer are refused."""
    with pytest.raises(InvalidInputError, match="expected a balance result"):
        plot_expert_load({"gpus": 2}, tmp_path / "x.png")
    with pytest.raises(InvalidInputError, match="do not divide over 5 GPUs"):
        plot_expert_load({**BALANCE, "gpus": 5}, tmp_path / "x.png")
    with pytest.raises(InvalidInputError, match="layer index 7"):
        plot_expert_load(BALANCE, tmp_path / "x.png", layer=7)
    assert list(tmp_path.iterdir()) == []


def test_frontier_highlights_pareto_points(tmp_path: Path) -> None:
    """The frontier keeps the undominated rows by latency; the plot is written."""
    assert pareto_front(ROWS) == [3, 1, 0]
    plot_frontier(ROWS, tmp_path / "front.png")
    plot_frontier(ROWS, tmp_path / "front.svg")
    assert (tmp_path / "front.png").stat().st_size > 5000
    _svg_ok(tmp_path / "front.svg")
    with pytest.raises(InvalidInputError, match="no row has"):
        plot_frontier(ROWS[4:], tmp_path / "none.png")


@pytest.mark.parametrize("name", ["mem.pdf", "mem.jpg", "mem"])
def test_bad_suffix_is_refused_naming_the_path(plan: Plan, tmp_path: Path, name: str) -> None:
    """Only .png and .svg are written; the error names the file and nothing is left."""
    target = tmp_path / name
    with pytest.raises(InvalidInputError, match=re.escape(str(target))):
        plot_memory(plan, target)
    assert list(tmp_path.iterdir()) == []


def test_failed_save_leaves_no_partial_file(
    plan: Plan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save that fails halfway leaves neither the target nor a temporary file."""
    from matplotlib.figure import Figure

    def broken(self: Figure, fh: object, **kwargs: object) -> None:
        fh.write(b"\x89PNG half a file")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        plot_memory(plan, tmp_path / "mem.png")
    assert list(tmp_path.iterdir()) == []


def test_existing_file_survives_a_failed_save(
    plan: Plan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The previous figure stays intact when writing its replacement fails."""
    target = tmp_path / "mem.png"
    plot_memory(plan, target)
    before = target.read_bytes()
    from matplotlib.figure import Figure

    def broken(self: Figure, fh: object, **kwargs: object) -> None:
        raise RuntimeError("renderer failed")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError):
        plot_memory(plan, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["mem.png"]


def test_missing_folder_and_infeasible_plan(plan: Plan, tmp_path: Path) -> None:
    """A missing output folder, or a plan without GPUs, is bad input."""
    with pytest.raises(InvalidInputError, match="output folder does not exist"):
        plot_memory(plan, tmp_path / "nope" / "mem.png")
    empty = plan.model_copy(update={"layout": None, "gpus": (), "status": "infeasible"})
    with pytest.raises(InvalidInputError, match="no GPU memory to plot"):
        plot_memory(empty, tmp_path / "mem.png")
    with pytest.raises(InvalidInputError, match="no expert map"):
        plot_expert_load(empty, tmp_path / "load.png")


def test_without_matplotlib_names_the_extra(
    plan: Plan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without matplotlib the error says to install the 'plot' extra."""
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(InvalidInputError, match=r"pip install placer\[plot\]"):
        plot_memory(plan, tmp_path / "mem.png")
    assert list(tmp_path.iterdir()) == []
