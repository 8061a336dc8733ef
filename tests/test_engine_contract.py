"""The contract tool's own logic, without an engine: command splitting and the comparison
that turns engine answers into matches and mismatches (tools/engine_contract.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from placer.export import export_plan
from placer.plan import Plan

ROOT = Path(__file__).resolve().parent.parent


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "engine_contract", ROOT / "tools" / "engine_contract.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["engine_contract"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _plan(case: str) -> Plan:
    path = ROOT / "tests" / "data" / "golden" / f"{case}.plan.json"
    return Plan.model_validate_json(path.read_text(encoding="utf-8"))


def test_node_commands_split_per_node() -> None:
    """A two-node SGLang export gives two argv lists, each with its node rank."""
    tool = _tool()
    exp = export_plan(_plan("dsv3-h200x16"), "sglang", model_ref="/m")
    nodes = tool.node_commands(exp.command)
    assert len(nodes) == 2
    for rank, argv in enumerate(nodes):
        assert argv[:2] == ["--model-path", "/m"]
        assert argv[argv.index("--node-rank") + 1] == str(rank)


def test_compare_flags_every_difference() -> None:
    """Answers equal to the plan match; a wrong degree, node count, split or map is named."""
    tool = _tool()
    plan = _plan("qwen3-h100x8-eplb")
    want = tool.expected(plan, "sglang")
    good = {
        "degrees": dict(want.degrees),
        "ranks_on_node": want.per_node[0],
        "split": want.split,
        "expert_map": {str(k): v for k, v in want.expert_map.items()},
    }
    row = tool.Row(plan="p", engine="sglang", version="v")
    tool.compare(row, want, [good])
    assert row.mismatches == [] and row.expert_map == "applied, equal to plan"
    bad = {
        **good,
        "degrees": {**want.degrees, "ep": 4},
        "ranks_on_node": 4,
        "split": [24, 24],
        "expert_map": {str(k): sorted(v) for k, v in want.expert_map.items()},
    }
    row = tool.Row(plan="p", engine="sglang", version="v")
    tool.compare(row, want, [bad])
    text = "; ".join(row.mismatches)
    for part in ("ep: engine 4", "GPUs per node", "layer split", "expert map differs"):
        assert part in text
    row = tool.Row(plan="p", engine="sglang", version="v")
    tool.compare(row, want, [{"error": "boom"}])
    assert row.parsed == "no" and "boom" in row.mismatches[0]
