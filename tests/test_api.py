"""The public API: typed, visible to ``dir()``, OR-Tools loaded only by the solver, and a
capacity-planning script that uses it passes ``mypy --strict`` and runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import placer

SCRIPT = Path(__file__).resolve().parent / "data" / "scripts" / "capacity_plan.py"


def test_solve_and_frontier_are_public_and_typed() -> None:
    for name in ("solve", "frontier", "verify", "evaluate", "load_model"):
        assert name in dir(placer) and name in placer.__all__
    assert placer.solve.__annotations__["return"] == "Plan"


def test_importing_placer_does_not_load_ortools() -> None:
    code = "import sys, placer; print(any(m.startswith('ortools') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_capacity_planning_script_type_checks_strictly(tmp_path: Path) -> None:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--cache-dir",
            str(tmp_path / "mypy-cache"),
            str(SCRIPT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_capacity_planning_script_runs_and_its_plans_verify() -> None:
    res = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr
    lines = [line.split() for line in res.stdout.splitlines()]
    rows = [r for r in lines if r[0] not in ("balance", "report")]
    assert [r[0] for r in rows] == ["4", "8", "16"]
    # Balance: one line per layer of the load file, never below a perfect balance.
    imbalances = [float(r[2]) for r in lines if r[0] == "balance"]
    assert len(imbalances) == 3 and all(x >= 1.0 for x in imbalances)
    assert [r[1:3] for r in lines if r[0] == "report"] == [["#", "Deployment"]]
    # 4 x 32 GB cannot hold batch 8 at 32k tokens (proven, with no value); 8 and 16 GPUs
    # are proven optimal, and more GPUs never make the optimum worse.
    assert rows[0][1:] == ["infeasible", "None"]
    assert [r[1] for r in rows[1:]] == ["optimal", "optimal"]
    assert float(rows[2][2]) <= float(rows[1][2])
