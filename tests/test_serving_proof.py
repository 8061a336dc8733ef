"""Serving plans that deploy nothing (infeasible, unknown) carry their search record, and
``verify`` re-derives every layout of it: nothing is taken on trust, and a forged entry
exits 5 naming what is wrong (issue 16)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from placer import load_cluster, load_model, load_workload, verify
from placer.budget import Budget
from placer.config import SolveConfig
from placer.plan import Plan
from placer.rules import get_profile
from placer.search.outer import solve
from placer.search.space import enumerate_layouts
from placer.serving.solve import solve_serving
from tests.conftest import HARDWARE, MODELS
from tests.helpers import run_cli

TARGETS = {"prompt_len": 4000, "output_len": 1000, "ttft_ms": 2000.0, "tpot_ms": 30.0}


@pytest.fixture(scope="module")
def olmoe() -> tuple[Any, Any]:
    """OLMoE-1B-7B on 2 x A100-40GB: 8 legal instance layouts."""
    return (
        load_model(MODELS / "olmoe-1b-7b-0924.json"),
        load_cluster(HARDWARE / "dgx-a100-40gb.json", gpus=2),
    )


def _solve_rate(olmoe: tuple[Any, Any], rate: float) -> Plan:
    model, cluster = olmoe
    workload = load_workload(None, **TARGETS, request_rate=rate)
    return solve(model, cluster, workload, SolveConfig(objective="gpus"))


@pytest.fixture(scope="module")
def short_of_rate(olmoe: tuple[Any, Any]) -> Plan:
    """5 requests/s: every layout meets the targets, none reaches the rate on 2 GPUs. The
    case the old verifier took on trust (the rate ceiling does not exclude the layouts)."""
    plan = _solve_rate(olmoe, 5.0)
    assert plan.status == "infeasible"
    return plan


@pytest.fixture(scope="module")
def served(olmoe: tuple[Any, Any]) -> Plan:
    plan = _solve_rate(olmoe, 0.5)
    assert plan.status == "optimal" and plan.layout is not None
    return plan


def test_infeasible_plan_is_reproven_with_nothing_trusted(
    olmoe: tuple[Any, Any], short_of_rate: Plan
) -> None:
    model, cluster = olmoe
    s = short_of_rate.serving
    assert s is not None and not s.deploys and short_of_rate.layout is None
    legal = enumerate_layouts(model, cluster, get_profile("generic")).legal
    assert {e.layout for e in s.entries} == {lay.describe() for lay in legal}
    # The layouts meet the targets: each has a verified best rate below what the rate needs.
    rated = [e for e in s.entries if e.rate is not None]
    assert rated and all(e.value is None for e in rated)
    report = verify(Plan.model_validate_json(short_of_rate.model_dump_json()))
    assert report.ok and report.trusted == (), report.violations
    assert any("best concurrency, rate and instances" in c for c in report.checked)


def test_unknown_plan_carries_its_record(olmoe: tuple[Any, Any]) -> None:
    """A budget spent before any layout (injected clock): unknown, every layout listed as
    unresolved, and the plan verifies without claiming anything."""
    model, cluster = olmoe
    ticks = iter([0.0] + [100.0] * 10_000)
    budget = Budget(5.0, clock=lambda: next(ticks))
    workload = load_workload(None, **TARGETS)
    plan = solve_serving(model, cluster, workload, SolveConfig(time_limit_s=5.0), budget)
    assert plan.status == "unknown" and plan.serving is not None
    assert plan.serving.entries and all(e.status == "unresolved" for e in plan.serving.entries)
    report = verify(Plan.model_validate_json(plan.model_dump_json()))
    assert report.ok and report.trusted == (), report.violations
    data = json.loads(plan.model_dump_json())
    data["status"] = "infeasible"  # claiming a proof the record does not hold
    assert "could still serve" in " ".join(verify(Plan.model_validate(data)).violations)


Edit = Callable[[dict[str, Any]], None]


def _entry_with_rate(plan: dict[str, Any]) -> dict[str, Any]:
    return next(e for e in plan["serving"]["entries"] if e["rate"] is not None)


def _scale_rate(plan: dict[str, Any]) -> None:
    _entry_with_rate(plan)["rate"] *= 1.01


def _drop_entry(plan: dict[str, Any]) -> None:
    plan["serving"]["entries"].pop()


def _lower_leaf(plan: dict[str, Any]) -> None:
    leaf = next(f for e in plan["serving"]["entries"] for f in e["leaves"] if f["bound"] > 0)
    leaf["bound"] *= 0.5


def _drop_record(plan: dict[str, Any]) -> None:
    plan["serving"] = None


def _claim_instances(plan: dict[str, Any]) -> None:
    plan["serving"]["instances"] = 1


def _instances_that_fit(plan: dict[str, Any]) -> None:
    e = _entry_with_rate(plan)
    e["instances"], e["value"] = 1, float(e["gpus"])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_scale_rate, "recomputed"),
        (_drop_entry, "legal layouts have no record"),
        (_lower_leaf, "bound recomputed"),
        (_drop_record, "no serving record"),
        (_claim_instances, "must deploy nothing"),
        (_instances_that_fit, "instances, value"),
    ],
    ids=["rate", "missing-layout", "leaf-bound", "no-record", "deployment", "instances"],
)
def test_forged_infeasible_record_exits_5(
    short_of_rate: Plan, tmp_path: Path, edit: Edit, message: str
) -> None:
    data = json.loads(short_of_rate.model_dump_json())
    edit(data)
    path = tmp_path / "forged.plan.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    res = run_cli("verify", str(path))
    assert res.exit_code == 5, res.stdout + res.stderr
    assert message in res.stdout


def test_served_rate_relabelled_infeasible_exits_5(served: Plan, tmp_path: Path) -> None:
    """The optimal plan stripped of its deployment and marked infeasible: the record's own
    verified rate serves the request rate, so verify refuses the claim."""
    data = json.loads(served.model_dump_json())
    data.update(status="infeasible", layout=None, gpus=[], expert_map={}, estimates=None)
    data["certificate"]["constraints"] = []
    for key in ("value", "bound", "gap", "value_units", "bound_units"):
        data["objective"][key] = None
    for key in (
        "instances",
        "gpus_per_instance",
        "idle_gpus",
        "concurrency",
        "tpot_s",
        "step_s",
        "ttft_s",
        "prefill_s",
        "tokens_per_s_instance",
        "tokens_per_s",
        "tokens_per_s_per_gpu",
        "tokens_per_s_per_user",
        "requests_per_s",
    ):
        data["serving"][key] = None
    path = tmp_path / "relabelled.plan.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    res = run_cli("verify", str(path))
    assert res.exit_code == 5
    assert "status infeasible but" in res.stdout and "could still serve" in res.stdout


def test_cli_verifies_an_infeasible_serving_plan_without_trust(tmp_path: Path) -> None:
    plan = tmp_path / "p.json"
    res = run_cli(
        "solve",
        str(MODELS / "olmoe-1b-7b-0924.json"),
        str(HARDWARE / "dgx-a100-40gb.json"),
        "--gpus",
        "2",
        "--prompt-len",
        "4000",
        "--output-len",
        "1000",
        "--tpot",
        "30",
        "--ttft",
        "2000",
        "--request-rate",
        "5",
        "--objective",
        "gpus",
        "--quiet",
        "-o",
        str(plan),
    )
    assert res.exit_code == 3, res.stdout + res.stderr
    assert "instance layouts of at most 2 GPUs" in res.stdout
    checked = run_cli("verify", str(plan))
    assert checked.exit_code == 0, checked.stdout
    assert "verified: every check holds, nothing taken on trust" in checked.stdout
    assert "trusted" not in checked.stdout
