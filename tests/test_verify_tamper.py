"""`placer verify` against tampered plans: one mutation per check, the forgeries of issue 16,
and random mutations (exit 0, 2 or 5, never a traceback).

Every case starts from ``tests/data/plans/seed-toy-8gpus.plan.json`` (the seed toy on 8 of
its GPUs, solved with ``--deterministic``), which verifies as stored.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from placer import SolveConfig, load_cluster, load_model, load_workload
from placer.plan import digest
from placer.search import outer as search_solve
from placer.verify import load_plan, verify

from .conftest import HARDWARE, MODELS, WORKLOADS
from .helpers import run_cli

ROOT = Path(__file__).resolve().parent.parent
PLAN = ROOT / "tests" / "data" / "plans" / "seed-toy-8gpus.plan.json"
ORIGINAL: dict[str, Any] = json.loads(PLAN.read_text(encoding="utf-8"))

Edit = Callable[[dict[str, Any]], None]


def _entry(plan: dict[str, Any], status: str) -> dict[str, Any]:
    """The first search entry with ``status``."""
    return next(e for e in plan["certificate"]["search"]["entries"] if e["status"] == status)


def _pruned_that_fits(plan: dict[str, Any]) -> dict[str, Any]:
    return _entry(plan, "pruned")


def _set(path: str, value: Any) -> Edit:
    """An edit that sets the item at a dotted path (list indices as numbers)."""

    def edit(plan: dict[str, Any]) -> None:
        *head, last = path.split(".")
        item: Any = plan
        for part in head:
            item = item[int(part)] if isinstance(item, list) else item[part]
        if isinstance(item, list):
            item[int(last)] = value
        else:
            item[last] = value

    return edit


def _rehash(name: str, change: Callable[[dict[str, Any]], None]) -> Edit:
    """Edit an input copy and store its new hash, as a careful forger would."""

    def edit(plan: dict[str, Any]) -> None:
        change(plan["inputs"][name])
        plan["inputs"]["hashes"][name] = digest(plan["inputs"][name])

    return edit


def _drop_entry(status: str) -> Edit:
    """Remove one entry and adjust the counts: the record looks consistent."""

    def edit(plan: dict[str, Any]) -> None:
        rec = plan["certificate"]["search"]
        rec["entries"].remove(_entry(plan, status))
        rec["legal"] -= 1
        rec[status] -= 1

    return edit


def _relabel_infeasible(plan: dict[str, Any]) -> None:
    """A feasible pruned layout relabelled infeasible, counts adjusted."""
    e = _pruned_that_fits(plan)
    e.update(status="infeasible", reason="CP-SAT proved no split fits memory", bound_units=None)
    rec = plan["certificate"]["search"]
    rec["pruned"] -= 1
    rec["infeasible"] += 1
    rec["solved"] += 1


def _duplicate_entry(plan: dict[str, Any]) -> None:
    rec = plan["certificate"]["search"]
    rec["entries"].append(copy.deepcopy(_entry(plan, "pruned")))


def _change_entry_degree(plan: dict[str, Any]) -> None:
    _entry(plan, "pruned")["tp"] = 3


def _entry_text(plan: dict[str, Any]) -> None:
    _entry(plan, "pruned")["layout"] = "TP1 PP1 EP1 ETP1"


def _entry_bound(plan: dict[str, Any]) -> None:
    _entry(plan, "pruned")["bound_units"] += 1


def _optimal_value_low(plan: dict[str, Any]) -> None:
    _entry(plan, "optimal")["value_units"] -= 1000


def _optimal_unresolved(plan: dict[str, Any]) -> None:
    e = _entry(plan, "optimal")
    e.update(status="unresolved", value_units=None, solver_bound_units=None)
    rec = plan["certificate"]["search"]
    rec["solved"] -= 1
    rec["unresolved"] += 1


def _expert(value: int) -> Edit:
    def edit(plan: dict[str, Any]) -> None:
        plan["expert_map"]["0"][0][0] = value

    return edit


def _drop_gpu(plan: dict[str, Any]) -> None:
    plan["gpus"].pop()


def _drop_constraint(plan: dict[str, Any]) -> None:
    plan["certificate"]["constraints"].pop()


def _drop_map_layer(plan: dict[str, Any]) -> None:
    del plan["expert_map"]["0"]


def _deep(plan: dict[str, Any]) -> None:
    nested: Any = 1
    for _ in range(100):
        nested = [nested]
    plan["inputs"]["sources"]["model"] = nested


def _batch(workload: dict[str, Any]) -> None:
    workload["batch"] = -4


def _less_memory(workload: dict[str, Any]) -> None:
    workload["memory_utilization"] = 0.8


# (id, edit, exit code, text the message must contain)
TAMPERS: list[tuple[str, Edit, int, str]] = [
    # malformed: exit 2, naming the JSON path
    ("tp-zero", _set("layout.tp", 0), 2, "layout.tp"),
    ("tp-bool", _set("layout.tp", True), 2, "layout.tp"),
    ("pp-float-huge", _set("layout.pp", 1e30), 2, "layout.pp"),
    ("ep-int-huge", _set("layout.ep", 10**30), 2, "layout.ep"),
    ("split-negative", _set("layout.layers_per_stage.0", -1), 2, "layout.layers_per_stage.0"),
    ("entry-pp-huge", _set("certificate.search.entries.0.pp", 10**30), 2, "entries.0.pp"),
    ("entry-tp-string", _set("certificate.search.entries.0.tp", "8"), 2, "entries.0.tp"),
    ("format-version", _set("format_version", 99), 2, "format_version"),
    ("status-unknown", _set("status", "splendid"), 2, "status"),
    ("unknown-field", _set("verified_by", "me"), 2, "verified_by"),
    ("expert-id-float", _expert(0.5), 2, "expert_map.0.0.0"),  # type: ignore[arg-type]
    ("input-copy-invalid", _rehash("workload", _batch), 2, "inputs.workload.batch"),
    ("nested-too-deep", _deep, 2, "nested more than"),
    # well-formed but does not hold: exit 5, naming the check
    ("input-copy-edited", _set("inputs.workload.batch", 1), 5, "input hash differs"),
    ("input-hash-edited", _set("inputs.hashes.model", "0" * 64), 5, "hash differs: model"),
    ("workload-edited-rehashed", _rehash("workload", _less_memory), 5, "capacity_bytes"),
    ("tp-not-a-layout", _set("layout.tp", 9), 5, "layout: not a layout"),
    ("tp-illegal", _set("layout.tp", 16), 5, "layout: rules"),
    ("gpus-used", _set("layout.gpus_used", 7), 5, "layout.gpus_used"),
    ("split-sum", _set("layout.layers_per_stage.0", 7), 5, "layers_per_stage sums"),
    ("expert-out-of-range", _expert(99), 5, "no expert 99"),
    ("expert-negative", _expert(-1), 5, "no expert -1"),
    ("expert-missing", _expert(1), 5, "expert 0 is not placed"),
    ("expert-twice", _set("expert_map.0.0", [0, 0]), 5, "appears twice"),
    ("map-layer-missing", _drop_map_layer, 5, "expert_map"),
    ("gpu-memory-lowered", _set("gpus.3.used_bytes", 1), 5, "memory of gpu 3"),
    ("gpu-id", _set("gpus.0.id", 42), 5, "gpus[0].id"),
    ("gpu-capacity", _set("gpus.0.capacity_bytes", 10**12), 5, "capacity_bytes"),
    ("gpu-dropped", _drop_gpu, 5, "plan lists 7 GPUs"),
    ("constraint-limit", _set("certificate.constraints.0.limit", 1e30), 5, "limit"),
    ("constraint-dropped", _drop_constraint, 5, "constraint instances"),
    ("estimate-latency", _set("estimates.latency_s", 1e-9), 5, "estimates.latency_s"),
    ("estimate-throughput", _set("estimates.throughput_tokens_s", 1e12), 5, "throughput"),
    ("objective-value-units", _set("objective.value_units", 1), 5, "(objective.value_units)"),
    ("objective-value", _set("objective.value", 0.001), 5, "objective.value"),
    ("objective-bound", _set("objective.bound_units", 1), 5, "objective.bound_units"),
    ("objective-gap", _set("objective.gap", 0.5), 5, "objective.gap"),
    ("objective-name", _set("objective.name", "latency"), 5, "objective.name"),
    ("status-feasible", _set("status", "feasible"), 5, "does not match gap"),
    ("profile-unknown", _set("certificate.solver.profile", "tgi"), 5, "unknown rules profile"),
    ("legal-count", _set("certificate.search.legal", 1), 5, "certificate.search.legal"),
    ("candidates", _set("certificate.search.candidates", 1), 5, "candidates"),
    ("rejected", _set("certificate.search.rejected_by_rule", {}), 5, "rejected_by_rule"),
    ("pruned-count", _set("certificate.search.pruned", 0), 5, "certificate.search.pruned"),
    ("entry-removed", _drop_entry("pruned"), 5, "missing from the record"),
    ("entry-duplicated", _duplicate_entry, 5, "listed 2 times"),
    ("entry-degree", _change_entry_degree, 5, "not a legal layout"),
    ("entry-text", _entry_text, 5, "its degrees give"),
    ("entry-bound", _entry_bound, 5, "bound_units"),
    ("pruned-relabelled", _relabel_infeasible, 5, "declared infeasible, but a split fits"),
    ("optimal-value-low", _optimal_value_low, 5, "below the layout's optimum"),
    ("optimal-unresolved", _optimal_unresolved, 5, "unresolved, yet the plan claims"),
    (
        "fix-on-feasible",
        _set(
            "infeasibility",
            {"reason": "", "conflicts": [], "closest_layout": None, "fixes": [], "min_gpus": 9},
        ),
        5,
        "infeasibility",
    ),
]


def _write(tmp_path: Path, edit: Edit) -> Path:
    plan = copy.deepcopy(ORIGINAL)
    edit(plan)
    out = tmp_path / "plan.json"
    out.write_text(json.dumps(plan), encoding="utf-8")
    return out


def test_stored_plan_verifies() -> None:
    """The untouched plan verifies with nothing taken on trust (the baseline of the table)."""
    res = run_cli("verify", str(PLAN))
    assert res.exit_code == 0, res.stdout
    assert "nothing taken on trust" in res.stdout


@pytest.mark.parametrize(("case", "edit", "code", "text"), TAMPERS, ids=[t[0] for t in TAMPERS])
def test_tampered_plan(tmp_path: Path, case: str, edit: Edit, code: int, text: str) -> None:
    """Each mutation exits with its code and a message naming what is wrong."""
    res = run_cli("verify", str(_write(tmp_path, edit)))
    out = res.stdout + res.stderr
    assert res.exit_code == code, out
    assert text in out, out
    assert "Traceback" not in out


def test_other_workload_is_refused(tmp_path: Path) -> None:
    """A plan checked against another workload exits 5 naming the workload."""
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"batch": 16, "prompt_len": 1024}), encoding="utf-8")
    res = run_cli("verify", str(PLAN), "--workload", str(other))
    assert res.exit_code == 5
    assert "input hash differs: workload" in res.stdout


def test_inputs_compared_by_content_not_path() -> None:
    """The very files the plan was made from pass however their paths are spelled."""
    res = run_cli(
        "verify",
        str(PLAN),
        "--model",
        str(MODELS / ".." / "models" / "seed-moe-8x4.json"),
        "--hardware",
        str(HARDWARE / "seed-16x32gb.json"),
        "--gpus",
        "8",
        "--workload",
        str(WORKLOADS / "seed.json"),
    )
    assert res.exit_code == 0, res.stdout


def test_forged_optimum_relabelled_infeasible(monkeypatch: pytest.MonkeyPatch) -> None:
    """The solver told that the true optimum is infeasible produces a consistent plan of a
    worse layout 'proven optimal'; verify finds the relabelled layout fits."""
    model = load_model(MODELS / "seed-moe-8x4.json")
    cluster = load_cluster(HARDWARE / "seed-16x32gb.json", gpus=8)
    workload = load_workload(WORKLOADS / "seed.json")
    optimum = ORIGINAL["objective"]["value_units"]
    honest = search_solve.solve_layout

    def lying(t, objective, config, budget, seconds):  # type: ignore[no-untyped-def]
        # Every layout that reaches the optimum (there may be ties) is declared infeasible.
        answer = honest(t, objective, config, budget, seconds)
        if answer[3] is not None and answer[3] <= optimum:
            return "infeasible", None, None, None, None
        return answer

    monkeypatch.setattr(search_solve, "solve_layout", lying)
    forged = search_solve.solve(
        model, cluster, workload, SolveConfig(deterministic=True, time_limit_s=60)
    )
    assert forged.status == "optimal" and forged.layout is not None
    assert forged.objective.value_units is not None
    assert forged.objective.value_units > ORIGINAL["objective"]["value_units"]
    report = verify(forged)
    assert not report.ok
    assert any("declared infeasible, but a split fits" in v for v in report.violations)


# ------------------------------------------------------------------ random mutations
def _locations(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _locations(v, (*prefix, k))
    elif isinstance(value, list):
        for i in sorted({0, len(value) - 1}) if value else []:
            out += _locations(value[i], (*prefix, i))
    return out


LOCATIONS = [p for p in _locations(ORIGINAL) if p]
AWKWARD = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 10**30, 2**63]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.text(max_size=4),
    st.lists(st.integers(min_value=-3, max_value=40), max_size=3),
    st.just({}),
)


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(where=st.sampled_from(LOCATIONS), value=AWKWARD, delete=st.booleans())
def test_random_mutation_never_crashes(
    tmp_path: Path, where: tuple[Any, ...], value: Any, delete: bool
) -> None:
    """Any field replaced by an awkward value (or deleted): exit 0, 2 or 5, never a
    traceback (run_cli re-raises any exception)."""
    plan = copy.deepcopy(ORIGINAL)
    parent: Any = plan
    for part in where[:-1]:
        parent = parent[part]
    if delete and isinstance(parent, dict):
        del parent[where[-1]]
    else:
        parent[where[-1]] = value
    out = tmp_path / "mutated.json"
    out.write_text(json.dumps(plan), encoding="utf-8")
    res = run_cli("verify", str(out))
    assert res.exit_code in (0, 2, 5), res.stdout + res.stderr


def test_library_reads_and_verifies_the_stored_plan() -> None:
    """load_plan and verify agree with the command line on the untouched plan."""
    report = verify(load_plan(PLAN))
    assert report.ok and not report.trusted, report.violations


# ------------------------------------------------------------------ commands that read plans
def _halved_tp(plan: dict[str, Any]) -> None:
    plan["layout"]["tp"] //= 2


def test_export_acts_only_on_a_plan_that_verifies(tmp_path: Path) -> None:
    """export writes the engine's files for the stored plan, and refuses (exit 5, naming the
    failed check, nothing written) the same plan with TP halved."""
    good_dir, bad_dir = tmp_path / "good", tmp_path / "bad"
    good_dir.mkdir()
    bad_dir.mkdir()
    res = run_cli("export", str(PLAN), "--engine", "sglang", "--out-dir", str(good_dir))
    assert res.exit_code == 0, res.stderr
    res = run_cli(
        "export",
        str(_write(tmp_path, _halved_tp)),
        "--engine",
        "sglang",
        "--out-dir",
        str(bad_dir),
    )
    assert res.exit_code == 5
    assert "the plan does not verify: layout" in res.stderr
    assert list(bad_dir.iterdir()) == []
    assert res.stdout == ""


def test_plot_refuses_a_plan_that_does_not_verify(tmp_path: Path) -> None:
    """plot draws nothing from a plan that does not verify."""
    image = tmp_path / "memory.png"
    res = run_cli("plot", str(_write(tmp_path, _set("gpus.0.used_bytes", 5))), "-o", str(image))
    assert res.exit_code == 5
    assert "memory of gpu 0" in res.stderr
    assert not image.exists()


def test_oversized_plan_is_refused_before_parsing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plan over the size limit exits 2 saying so (the limit lowered for the test)."""
    from placer import planfile

    monkeypatch.setattr(planfile, "MAX_PLAN_BYTES", 1000)
    res = run_cli("verify", str(PLAN))
    assert res.exit_code == 2
    assert "a plan file is at most 1000 bytes" in res.stderr


def _incomplete(plan: dict[str, Any]) -> None:
    """The record of a search whose enumeration the time limit cut short: the pruned
    layouts were never listed, and the plan claims no bound."""
    rec = plan["certificate"]["search"]
    rec["entries"] = [e for e in rec["entries"] if e["status"] != "pruned"]
    rec["complete"] = False
    rec["legal"] = len(rec["entries"])
    rec["pruned"] = 0
    o = plan["objective"]
    o.update(bound_units=0, bound=0.0, gap=1.0)
    plan["status"] = "feasible"


def test_incomplete_enumeration_may_claim_no_bound(tmp_path: Path) -> None:
    """A cut-short record verifies when the plan claims nothing about the missing layouts,
    and fails when it still claims optimality."""
    assert run_cli("verify", str(_write(tmp_path, _incomplete))).exit_code == 0

    def claims_optimal(plan: dict[str, Any]) -> None:
        _incomplete(plan)
        plan["objective"].update(bound_units=plan["objective"]["value_units"], gap=0.0)
        plan["objective"]["bound"] = plan["objective"]["value"]
        plan["status"] = "optimal"

    res = run_cli("verify", str(_write(tmp_path, claims_optimal)))
    assert res.exit_code == 5
    assert "objective.bound_units" in res.stdout


def test_loads_option_compares_the_load_file(tmp_path: Path) -> None:
    """verify --loads accepts the load file a plan was solved with and refuses another."""
    loads = ROOT / "instances" / "loads"
    out = tmp_path / "plan.json"
    res = run_cli(
        "solve",
        str(MODELS / "olmoe-1b-7b-0924.json"),
        str(HARDWARE / "dgx-h100.json"),
        "--loads",
        str(loads / "olmoe-arxiv.json"),
        "--deterministic",
        "--quiet",
        "-o",
        str(out),
    )
    assert res.exit_code == 0, res.stderr
    assert run_cli("verify", str(out), "--loads", str(loads / "olmoe-arxiv.json")).exit_code == 0
    res = run_cli("verify", str(out), "--loads", str(loads / "olmoe-c4.json"))
    assert res.exit_code == 5
    assert "input hash differs: loads" in res.stdout


def test_verify_compares_a_given_calibration_by_content(tmp_path: Path) -> None:
    """--calibration: the plan's own calibration passes; another one exits 5 naming it."""
    shipped = ROOT / "placer" / "data" / "calibration.json"
    same = run_cli("verify", str(PLAN), "--calibration", str(shipped))
    assert same.exit_code == 0, same.stdout
    other = json.loads(shipped.read_text(encoding="utf-8"))
    other["name"] = str(other.get("name", "")) + " (edited)"
    edited = tmp_path / "calibration.json"
    edited.write_text(json.dumps(other), encoding="utf-8")
    res = run_cli("verify", str(PLAN), "--calibration", str(edited))
    assert res.exit_code == 5
    assert "input hash differs: calibration" in res.stdout
