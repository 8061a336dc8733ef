"""`placer solve` and `placer verify` on the acceptance cases of the solve issue."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from placer import SolveConfig, load_cluster, load_model, load_workload, verify
from placer.search.outer import solve

from .conftest import HARDWARE, MODELS, WORKLOADS
from .helpers import run_cli

SEED = [str(MODELS / "seed-moe-8x4.json"), str(HARDWARE / "seed-16x32gb.json")]
SEED_WL = ["--workload", str(WORKLOADS / "seed.json")]


@pytest.fixture(scope="module")
def seed_plan_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed toy solved once, written with -o."""
    out = tmp_path_factory.mktemp("plans") / "seed.json"
    res = run_cli("solve", *SEED, *SEED_WL, "--compare", "tp=4,pp=4,ep=4,etp=1", "-o", str(out))
    assert res.exit_code == 0, res.stderr
    assert "compared   TP4 PP4 EP4 ETP1" in res.stdout
    return out


def test_seed_is_optimal_and_verified(seed_plan_file: Path) -> None:
    """The seed toy is proven optimal over the whole legal space, and verify accepts it."""
    plan = json.loads(seed_plan_file.read_text())
    assert plan["status"] == "optimal"
    assert plan["objective"]["gap"] == 0
    assert plan["objective"]["bound"] == plan["objective"]["value"]
    search = plan["certificate"]["search"]
    assert search["unresolved"] == 0
    assert search["legal"] == search["pruned"] + search["infeasible"] + sum(
        1 for e in search["entries"] if e["status"] in ("optimal", "feasible"))
    res = run_cli("verify", str(seed_plan_file), "--model", SEED[0], "--hardware", SEED[1])
    assert res.exit_code == 0, res.stdout
    assert "verified: every check holds" in res.stdout


def test_seed_plan_beats_the_seed_layout(seed_plan_file: Path) -> None:
    """The plan's pipelined step is no slower than TP4+EP4+PP4's (which is legal and fits)."""
    from placer import Layout, evaluate

    plan = json.loads(seed_plan_file.read_text())
    m, c = load_model(SEED[0]), load_cluster(SEED[1])
    w = load_workload(WORKLOADS / "seed.json")
    seed = evaluate(m, c, w, Layout(tp=4, pp=4, ep=4, etp=1))
    assert seed.fits and seed.estimates is not None
    assert plan["estimates"]["cycle_s"] <= seed.estimates.cycle_s


def _tampered(src: Path, dst: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    plan = json.loads(src.read_text())
    edit(plan)
    dst.write_text(json.dumps(plan))
    return dst


def test_verify_rejects_lowered_memory(seed_plan_file: Path, tmp_path: Path) -> None:
    """A memory figure lowered by hand is caught: exit 5 naming the GPU."""
    def edit(p):  # type: ignore[no-untyped-def]
        p["gpus"][3]["used_bytes"] -= 10**9
    bad = _tampered(seed_plan_file, tmp_path / "low.json", edit)
    res = run_cli("verify", str(bad))
    assert res.exit_code == 5
    assert "memory of gpu 3" in res.stdout


def test_verify_rejects_expert_moved_onto_full_gpu(tmp_path: Path) -> None:
    """Moving an expert from one rank to another breaks slot counts and memory: exit 5.

    OLMoE on 8 H100s, whose plan spreads experts over several EP ranks.
    """
    src_plan = tmp_path / "olmoe.json"
    res = run_cli(
        "solve", str(MODELS / "olmoe-1b-7b-0924.json"), str(HARDWARE / "dgx-h100.json"),
        "--time-limit", "30", "--quiet",
        "-o", str(src_plan),
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert json.loads(src_plan.read_text())["layout"]["ep"] > 1

    def edit(p):  # type: ignore[no-untyped-def]
        layer = next(iter(p["expert_map"]))
        ranks = p["expert_map"][layer]
        src = next(i for i, r in enumerate(ranks) if r)
        dst = (src + 1) % len(ranks)
        ranks[dst].append(ranks[src].pop())
    bad = _tampered(src_plan, tmp_path / "moved.json", edit)
    res = run_cli("verify", str(bad))
    assert res.exit_code == 5
    assert "slot counts per rank" in res.stdout or "memory of gpu" in res.stdout


def test_verify_rejects_changed_inputs(seed_plan_file: Path, tmp_path: Path) -> None:
    """A plan whose input copy was edited reports which hash differs."""
    def edit(p):  # type: ignore[no-untyped-def]
        p["inputs"]["workload"]["batch"] = 1
    bad = _tampered(seed_plan_file, tmp_path / "inputs.json", edit)
    res = run_cli("verify", str(bad))
    assert res.exit_code == 5
    assert "input hash differs: workload" in res.stdout


def test_verify_rejects_other_hardware(seed_plan_file: Path) -> None:
    """verify against a different hardware file says the cluster hash differs."""
    res = run_cli("verify", str(seed_plan_file), "--hardware", str(HARDWARE / "dgx-h100.json"))
    assert res.exit_code == 5
    assert "input hash differs: cluster" in res.stdout


def test_verify_rejects_false_optimality(seed_plan_file: Path, tmp_path: Path) -> None:
    """Claiming a better objective than the placement achieves is caught."""
    def edit(p):  # type: ignore[no-untyped-def]
        p["objective"]["value_units"] -= 1000
    bad = _tampered(seed_plan_file, tmp_path / "obj.json", edit)
    res = run_cli("verify", str(bad))
    assert res.exit_code == 5
    assert "objective: plan says" in res.stdout


def test_mixtral_a100_optimal() -> None:
    """Mixtral-8x7B on 8 x A100-80GB: optimal over the whole legal space, verified."""
    m = load_model(MODELS / "mixtral-8x7b.json")
    c = load_cluster(HARDWARE / "dgx-a100-80gb.json")
    plan = solve(m, c, None, SolveConfig(time_limit_s=30))
    assert plan.status == "optimal" and plan.objective.gap == 0
    assert plan.layout is not None and plan.layout.gpus_used <= 8
    report = verify(plan)
    assert report.ok, report.violations


def test_deepseek_v3_on_a100_40gb_is_infeasible_with_fix() -> None:
    """DeepSeek-V3 on 8 x A100-40GB exits 3 and names the smallest GPU count that fits."""
    res = run_cli("solve", str(MODELS / "deepseek-v3.json"), str(HARDWARE / "dgx-a100-40gb.json"),
                  "--json")
    assert res.exit_code == 3
    plan = json.loads(res.stdout)
    assert plan["status"] == "infeasible"
    inf = plan["infeasibility"]
    # fp8 weights alone are 671 GB; 40 GiB x 0.9 per GPU needs at least 18 GPUs.
    assert inf["min_gpus"] is not None and 18 <= inf["min_gpus"] <= 32
    assert any(f"use {inf['min_gpus']} GPUs" in f for f in inf["fixes"])
    assert inf["conflicts"]
    from placer import Plan
    report = verify(Plan.model_validate(plan))
    assert report.ok, report.violations


def test_time_limit_must_be_positive() -> None:
    """--time-limit 0 is bad input (exit 2), as is an unknown profile."""
    assert run_cli("solve", *SEED, "--time-limit", "0").exit_code == 2
    res = run_cli("solve", *SEED, "--profile", "tgi")
    assert res.exit_code == 2 and "unknown rules profile 'tgi'" in res.stderr


def test_output_to_missing_folder_is_bad_input(tmp_path: Path) -> None:
    """An unwritable output path fails before the search, and nothing is written."""
    out = tmp_path / "nope" / "plan.json"
    res = run_cli("solve", *SEED, "-o", str(out))
    assert res.exit_code == 2
    assert not out.exists()


def test_verify_does_not_import_ortools() -> None:
    """The verifier runs with numpy alone."""
    code = "import sys, placer.verify, placer.cli; print('ortools' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_same_seed_same_plan() -> None:
    """--seed N --deterministic gives the same plan apart from timings."""
    m = load_model(MODELS / "qwen3-30b-a3b.json")
    c = load_cluster(HARDWARE / "dgx-h100.json", gpus=6)
    cfg = SolveConfig(seed=7, deterministic=True, time_limit_s=20)
    a = solve(m, c, None, cfg).model_dump(mode="json")
    b = solve(m, c, None, cfg).model_dump(mode="json")
    for p in (a, b):
        p["certificate"]["solver"]["wall_time_s"] = 0
    assert a == b
