"""Capacity planning: sweep (local and Ray), cache and resume, frontier, min-gpus."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from placer import SolveConfig, Workload, load_cluster, load_model
from placer.plan import Plan
from placer.sweep import SweepResult, load_sweep, sweep
from placer.verify import verify

from .conftest import HARDWARE, MODELS, ROOT
from .helpers import run_cli

TINY = ROOT / "instances" / "sweeps" / "tiny.json"


def _comparable(result: SweepResult) -> list[dict]:
    rows = result.to_dicts()
    for r in rows:
        r.pop("solve_time_s")
        r.pop("cached")
    return rows


@pytest.fixture(scope="module")
def local_result() -> SweepResult:
    """The tiny sweep on the local process pool."""
    spec, models, clusters, workloads, counts = load_sweep(str(TINY))
    return sweep(models, clusters, workloads, SolveConfig(time_limit_s=spec.time_limit),
                 gpu_counts=counts, backend="local", workers=2)


def test_local_sweep_rows(local_result: SweepResult) -> None:
    """Every case has a typed row; all are solved and proven here."""
    assert len(local_result.rows) == 4
    assert all(r.status == "optimal" and r.gap == 0 for r in local_result.rows)
    assert all(r.gpus_used is not None and r.gpus_used <= r.gpus for r in local_result.rows)
    text = local_result.to_csv()
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert len(parsed) == 4 and parsed[0]["status"] == "optimal"


def test_frontier_is_pareto(local_result: SweepResult) -> None:
    """No frontier row is dominated by another row of the same workload."""
    front = local_result.frontier()
    assert front
    for f in front:
        for r in local_result.rows:
            if r.workload != f.workload or r is f:
                continue
            assert not (r.throughput_per_gpu > f.throughput_per_gpu  # type: ignore[operator]
                        and r.latency_s < f.latency_s)  # type: ignore[operator]


def test_ray_backend_gives_the_same_rows(local_result: SweepResult) -> None:
    """The same sweep as Ray tasks on a local Ray instance gives identical rows."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'placer[ray]')")
    spec, models, clusters, workloads, counts = load_sweep(str(TINY))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = sweep(models, clusters, workloads, SolveConfig(time_limit_s=spec.time_limit),
                       gpu_counts=counts, backend="ray")
    finally:
        ray.shutdown()
    assert _comparable(result) == _comparable(local_result)


def test_cache_resumes(tmp_path: Path) -> None:
    """A second run with the same cache solves nothing again; a damaged entry is re-solved."""
    m = [load_model(MODELS / "olmoe-1b-7b-0924.json")]
    c = [load_cluster(HARDWARE / "dgx-h100.json")]
    w = [("w", Workload(batch=4))]
    first = sweep(m, c, w, SolveConfig(time_limit_s=5), gpu_counts=[1, 2], workers=1,
                  cache_dir=tmp_path)
    assert not any(r.cached for r in first.rows)
    files = sorted(tmp_path.glob("*.json"))
    assert len(files) == 2
    files[0].write_text("{not json")
    second = sweep(m, c, w, SolveConfig(time_limit_s=5), gpu_counts=[1, 2], workers=1,
                   cache_dir=tmp_path)
    assert sum(r.cached for r in second.rows) == 1
    assert _comparable(first) == _comparable(second)


def test_failed_case_does_not_stop_the_sweep() -> None:
    """A case that cannot fit is reported in its row; the others still run."""
    m = [load_model(MODELS / "deepseek-v3.json"), load_model(MODELS / "olmoe-1b-7b-0924.json")]
    c = [load_cluster(HARDWARE / "dgx-a100-40gb.json")]
    result = sweep(m, c, [Workload()], SolveConfig(time_limit_s=10), gpu_counts=[8], workers=1)
    by = {r.model: r for r in result.rows}
    assert by["deepseek-v3"].status == "infeasible" and by["deepseek-v3"].error
    assert by["deepseek-v3"].min_gpus is not None
    assert by["olmoe-1b-7b-0924"].status == "optimal"


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        ({"models": ["models/no-such-model.json"]}, "models.0"),
        ({"gpus": [4, -2]}, "gpus.1"),
        ({"gpus": {"from": 8, "to": 2}}, "gpus"),
        ({"models": []}, "models"),
    ],
)
def test_bad_sweep_files(tmp_path: Path, edit: dict, field: str) -> None:
    """Unknown paths, negative counts, bad ranges and empty grids: exit 2 naming the field."""
    spec = json.loads(TINY.read_text())
    spec.update(edit)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(spec))
    res = run_cli("sweep", str(path))
    assert res.exit_code == 2
    assert str(path) in res.stderr and field in res.stderr


def test_sweep_cli_writes_csv(tmp_path: Path) -> None:
    """The CLI prints the table and frontier and writes CSV by the output's suffix."""
    out = tmp_path / "rows.csv"
    res = run_cli("sweep", str(TINY), "-o", str(out), "--workers", "1")
    assert res.exit_code == 0, res.stderr
    assert "Pareto frontier" in res.stdout
    assert out.read_text().startswith("model,")


def test_min_gpus_with_proof(tmp_path: Path) -> None:
    """min-gpus finds the fewest H200s for DeepSeek-V3 and both records verify."""
    plan_path, proof_path = tmp_path / "plan.json", tmp_path / "proof.json"
    res = run_cli("min-gpus", str(MODELS / "deepseek-v3.json"), str(HARDWARE / "dgx-h200.json"),
                  "-o", str(plan_path), "--proof", str(proof_path))
    assert res.exit_code == 0, res.stderr
    plan = Plan.model_validate_json(plan_path.read_text())
    proof = Plan.model_validate_json(proof_path.read_text())
    assert plan.layout is not None and proof.status == "infeasible"
    assert plan.layout.gpus_used == proof.inputs.cluster["groups"][0]["count"] + 1
    assert f"fewest GPUs  {plan.layout.gpus_used} x" in res.stdout
    assert verify(plan).ok and verify(proof).ok
