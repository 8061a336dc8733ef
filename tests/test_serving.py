"""The serving search (issue 11): brute force, verify, aiconfigurator's grid, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from placer import load_cluster, load_model, load_workload, verify
from placer.config import SolveConfig
from placer.layout import Layout
from placer.plan import Plan
from placer.rules import get_profile, layout_violations
from placer.search.outer import solve
from tests.conftest import HARDWARE, MODELS
from tests.helpers import run_cli
from tests.serving_brute import best_per_layout, meets, point

TARGETS = {"prompt_len": 4000, "output_len": 1000, "ttft_ms": 2000.0, "tpot_ms": 30.0}
#: The plan's times are integer nanoseconds rounded up per table entry; brute force uses
#: the cost model's floats. Their tokens/s differ by far less than this.
ROUNDING = 1e-3


@pytest.fixture(scope="module")
def olmoe():
    """OLMoE-1B-7B on 2 x A100-40GB: 8 legal layouts, small enough for brute force."""
    return (
        load_model(MODELS / "olmoe-1b-7b-0924.json"),
        load_cluster(HARDWARE / "dgx-a100-40gb.json", gpus=2),
    )


def checked(plan: Plan) -> Plan:
    """``plan`` after a JSON round trip, asserted to pass the independent verifier."""
    again = Plan.model_validate_json(plan.model_dump_json())
    report = verify(again)
    assert report.ok, report.violations
    return again


@pytest.mark.parametrize(
    "fields",
    [
        {"prompt_len": 4000, "output_len": 1000, "tpot_ms": 6.0, "ttft_ms": 100.0},
        {"prompt_len": 30000, "output_len": 2000, "tpot_ms": 50.0},
    ],
    ids=["tight-targets", "memory-bound"],
)
def test_throughput_agrees_with_brute_force(olmoe, fields):
    """Every layout x split x concurrency x instance count, scored with evaluate: none
    beats the proven plan, and the plan's value is reached by one of them."""
    model, cluster = olmoe
    workload = load_workload(None, **fields)
    plan = checked(solve(model, cluster, workload, SolveConfig()))
    assert plan.status == "optimal" and plan.objective.gap == 0.0
    n = cluster.num_gpus
    per_layout = best_per_layout(model, cluster, workload, 400)
    gpus = {lay.describe(): lay.gpus for e in [None] for lay in _legal(model, cluster)}
    brute = max((n // gpus[name]) * rate / n for name, (rate, _) in per_layout.items())
    assert plan.objective.value is not None and plan.objective.bound is not None
    assert plan.objective.value == pytest.approx(brute, rel=ROUNDING)
    assert plan.objective.bound == pytest.approx(plan.objective.value)
    s = plan.serving
    assert s is not None and s.instances * s.gpus_per_instance <= n
    assert meets(workload, s.tpot_s, s.ttft_s)


def _legal(model, cluster):
    from placer.search.space import enumerate_layouts

    return enumerate_layouts(model, cluster, get_profile("generic")).legal


@pytest.mark.parametrize("rate", [0.5, 0.9, 1.2])
def test_fewest_gpus_agrees_with_brute_force(olmoe, rate):
    """Objective gpus: the fewest GPUs that serve the request rate, against brute force."""
    model, cluster = olmoe
    fields = {"prompt_len": 4000, "output_len": 1000, "tpot_ms": 6.0, "request_rate": rate}
    workload = load_workload(None, **fields)
    plan = checked(solve(model, cluster, workload, SolveConfig(objective="gpus")))
    need = rate * 1000
    best = math.inf
    gpus = {lay.describe(): lay.gpus for lay in _legal(model, cluster)}
    for name, (instance_rate, _) in best_per_layout(model, cluster, workload, 400).items():
        if instance_rate > 0:
            used = gpus[name] * math.ceil(need / instance_rate)
            if used <= cluster.num_gpus:
                best = min(best, used)
    if math.isinf(best):
        # No deployment on this cluster serves the rate: the solver must prove that too.
        assert plan.status == "infeasible"
        return
    assert plan.status == "optimal"
    assert plan.objective.value == best
    s = plan.serving
    assert s is not None and s.requests_per_s >= rate * (1 - 1e-9)


def test_tampered_plan_fails_verify(olmoe):
    """Raising the concurrency or the objective of a serving plan is caught by verify."""
    model, cluster = olmoe
    workload = load_workload(None, **TARGETS)
    plan = solve(model, cluster, workload, SolveConfig())
    assert plan.serving is not None and plan.objective.value is not None
    data = json.loads(plan.model_dump_json())
    data["serving"]["concurrency"] += 1
    assert not verify(Plan.model_validate_json(json.dumps(data))).ok
    data = json.loads(plan.model_dump_json())
    data["objective"]["value"] *= 1.01
    data["serving"]["tokens_per_s_per_gpu"] *= 1.01
    assert not verify(Plan.model_validate_json(json.dumps(data))).ok


def _grid(gpus: int) -> list[Layout]:
    """aiconfigurator's default aggregated grid: worker sizes 1, 2, 4, 8, 16; tp,
    attention-dp, moe-tp, moe-ep in {1, 2, 4, 8, 16} with tp x dp = moe_tp x moe_ep = worker
    size; pp 1."""
    sizes = (1, 2, 4, 8, 16)
    out = []
    for size in sizes:
        if size > gpus:
            continue
        for tp in sizes:
            for dp in sizes:
                for moe_tp in sizes:
                    for moe_ep in sizes:
                        if tp * dp == size == moe_tp * moe_ep:
                            out.append(Layout(tp=tp, dp_attn=dp, ep=moe_ep, etp=moe_tp))
    return out


#: Batch sizes aiconfigurator's sweep tries per worker.
GRID_BATCHES = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def test_at_least_as_good_as_aiconfigurator_grid():
    """Mixtral-8x7B on 8 x H100 (an issue case): every point of aiconfigurator's grid with
    identical replicas filling the cluster, scored with evaluate under the same targets,
    is no better than placer's plan."""
    model = load_model(MODELS / "mixtral-8x7b.json")
    cluster = load_cluster(HARDWARE / "dgx-h100.json", gpus=8)
    workload = load_workload(None, **TARGETS)
    plan = checked(solve(model, cluster, workload, SolveConfig()))
    assert plan.status == "optimal" and plan.objective.value is not None
    n = cluster.num_gpus
    best_grid = 0.0
    scored = 0
    for lay in _grid(n):
        if layout_violations(model, cluster, lay, get_profile("generic")):
            continue
        for c in GRID_BATCHES:
            fits, tpot, ttft, rate = point(model, cluster, workload, lay, c)
            if not fits or not meets(workload, tpot, ttft):
                break
            scored += 1
            best_grid = max(best_grid, (n // lay.gpus) * rate / n)
    assert scored > 0
    assert plan.objective.value >= best_grid * (1 - ROUNDING)


OLMOE = (str(MODELS / "olmoe-1b-7b-0924.json"), str(HARDWARE / "dgx-a100-40gb.json"))


@pytest.mark.parametrize(
    ("extra", "option"),
    [
        (["--ttft", "0"], "--ttft"),
        (["--tpot", "-5"], "--tpot"),
        (["--tpot", "30", "--request-rate", "0"], "--request-rate"),
        (["--tpot", "30", "--request-rate", "3"], "--request-rate"),
        (["--tpot", "30", "--objective", "gpus"], "--request-rate"),
        (["--tpot", "30", "--batch", "8"], "--batch"),
        (["--tpot", "30", "--objective", "latency"], "--objective"),
    ],
)
def test_bad_serving_options_exit_2(extra, option):
    """Bad targets and combinations: exit 2, one line naming the option, nothing written."""
    res = run_cli("solve", *OLMOE, "--gpus", "2", *extra, "--quiet")
    assert res.exit_code == 2
    assert f"'{option}'" in res.stderr and "Traceback" not in res.stderr
    assert res.stderr.count("\n") == 1


def test_workload_file_with_batch_and_targets_exits_2(tmp_path: Path):
    """A workload file giving both a batch and a target names the batch field."""
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"batch": 8, "tpot_ms": 30.0}))
    res = run_cli("solve", *OLMOE, "--gpus", "2", "--workload", str(path), "--quiet")
    assert res.exit_code == 2
    assert "'batch'" in res.stderr and str(path) in res.stderr


def test_unreachable_target_exits_3_naming_it():
    """TPOT below what any layout reaches: exit 3 naming TPOT and the best value."""
    res = run_cli("solve", *OLMOE, "--gpus", "2", "--tpot", "0.01", "--quiet")
    assert res.exit_code == 3
    assert "TPOT >= " in res.stdout and "on every layout of 2 x" in res.stdout


def test_rate_beyond_the_cluster_is_infeasible(olmoe):
    """A request rate no layout serves on the cluster is infeasible, with the reason."""
    model, cluster = olmoe
    workload = load_workload(None, **TARGETS, request_rate=1000.0)
    plan = solve(model, cluster, workload, SolveConfig(objective="gpus"))
    assert plan.status == "infeasible" and plan.infeasibility is not None
    assert plan.infeasibility.conflicts == ("request_rate",)
    assert verify(Plan.model_validate_json(plan.model_dump_json())).ok


def test_fixed_batch_is_unchanged(olmoe):
    """Without targets the fixed-batch step search runs, with no serving record."""
    model, cluster = olmoe
    plan = solve(model, cluster, load_workload(None, batch=8), SolveConfig())
    assert plan.serving is None and plan.objective.unit == "s"
    step = solve(model, cluster, load_workload(None, batch=8), SolveConfig(objective="step"))
    assert step.objective.value_units == plan.objective.value_units


def test_frontier_agrees_with_brute_force(olmoe, tmp_path: Path):
    """No layout x split x concurrency beats a frontier point on both speeds, every frontier
    point is reached by one of them, and the throughput plan is the frontier's fastest per
    GPU."""
    from placer import frontier
    from tests.serving_brute import splits

    model, cluster = olmoe
    fields = {"prompt_len": 4000, "output_len": 1000, "tpot_ms": 6.0, "ttft_ms": 100.0}
    workload = load_workload(None, **fields)
    front = frontier(model, cluster, workload)
    assert front.exact and front.points
    n = cluster.num_gpus
    brute: list[tuple[float, float]] = []
    for lay in _legal(model, cluster):
        for split in splits(model.num_layers, lay.pp):
            full = lay.model_copy(update={"layers_per_stage": split})
            for c in range(1, 400):
                fits, tpot, ttft, rate = point(model, cluster, workload, full, c)
                if not fits or not meets(workload, tpot, ttft):
                    break
                brute.append((1 / tpot, (n // lay.gpus) * rate / n))
    pts = [(p.tokens_per_s_per_user, p.tokens_per_s_per_gpu) for p in front.points]
    slack = 1 + ROUNDING
    for u, g in brute:
        assert any(fu * slack >= u and fg * slack >= g for fu, fg in pts)
    for fu, fg in pts:
        assert any(u * slack >= fu and g * slack >= fg for u, g in brute)
    plan = solve(model, cluster, workload, SolveConfig())
    assert plan.objective.value == pytest.approx(max(g for _, g in pts))
    out = tmp_path / "f.csv"
    res = run_cli(
        "frontier",
        *OLMOE,
        "--gpus",
        "2",
        "--prompt-len",
        "4000",
        "--output-len",
        "1000",
        "--tpot",
        "6",
        "--ttft",
        "100",
        "-o",
        str(out),
    )
    assert res.exit_code == 0
    assert len(out.read_text().splitlines()) == len(front.points) + 1


def test_capped_instances_are_bounded_not_searched():
    """Instances capped below the cluster: larger ones are covered by the tail bound, which
    the plan records, its gap counts, and verify re-derives."""
    model = load_model(MODELS / "olmoe-1b-7b-0924.json")
    cluster = load_cluster(HARDWARE / "dgx-a100-40gb.json", gpus=4)
    fields = {"prompt_len": 4000, "output_len": 1000, "tpot_ms": 6.0}
    plan = checked(solve(model, cluster, load_workload(None, **fields), SolveConfig(max_gpus=2)))
    s, o = plan.serving, plan.objective
    assert s is not None and s.max_instance_gpus == 2 and s.tail is not None
    assert s.tail.above_gpus == 2 and s.tail.per_gpu > 0
    assert o.value is not None and o.bound is not None and o.gap is not None
    assert o.bound >= max(o.value, s.tail.per_gpu) * (1 - 1e-12)
    assert plan.status == ("optimal" if o.gap == 0 else "feasible")
    assert s.instances * s.gpus_per_instance <= 4
    assert "instances of more than 2 GPUs" in plan.summary()


def test_time_limit_leaves_layouts_unresolved(olmoe):
    """A budget that runs out (injected clock, no waiting) leaves layouts unresolved: no
    claim of optimality, and verify still accepts what the plan says."""
    from placer.budget import Budget
    from placer.serving.solve import solve_serving

    model, cluster = olmoe
    ticks = iter(range(10_000))
    budget = Budget(5.0, clock=lambda: float(next(ticks)))  # one second per look at the clock
    workload = load_workload(None, **TARGETS)
    plan = solve_serving(model, cluster, workload, SolveConfig(time_limit_s=5.0), budget)
    assert plan.status in ("feasible", "unknown")
    assert plan.certificate.search.unresolved > 0
    assert verify(Plan.model_validate_json(plan.model_dump_json())).ok


def test_mixed_gpu_types_exit_2():
    """The serving search rejects a cluster mixing GPU types, naming the field."""
    res = run_cli(
        "solve",
        str(MODELS / "mixtral-8x7b.json"),
        str(HARDWARE / "mixed-h100-h200.json"),
        "--tpot",
        "50",
        "--quiet",
    )
    assert res.exit_code == 2 and "'groups'" in res.stderr


def test_disaggregated_agrees_with_brute_force(olmoe):
    """--disagg on 2 GPUs: one prefill and one decode instance of one GPU each; brute force
    over every concurrency with evaluate/estimate gives the same best, and verify re-checks
    the record (and catches a tampered one)."""
    from placer.cost import estimate
    from placer.serving.disagg import kv_transfer_ns

    model, cluster = olmoe
    fields = {"prompt_len": 4000, "output_len": 1000, "tpot_ms": 10.0, "ttft_ms": 200.0}
    workload = load_workload(None, **fields)
    plan = checked(solve(model, cluster, workload, SolveConfig(disagg=True)))
    assert plan.serving is not None and plan.serving.disagg is not None
    d = plan.serving.disagg
    one = Layout()
    prefill = estimate(
        model, cluster, workload.model_copy(update={"batch": 1, "phase": "prefill"}), one
    ).latency_s
    transfer = kv_transfer_ns(model, cluster, workload, 1, 1, 2) / 1e9
    best = 0.0
    for c in range(1, 400):
        inst = workload.model_copy(update={"batch": c, "phase": "both"})
        ev = evaluate_layout(model, cluster, inst, one)
        if ev is None:
            break
        step = ev
        tpot_s, ttft_s = fields["tpot_ms"] / 1e3, fields["ttft_ms"] / 1e3
        if step > tpot_s or 2 * prefill + transfer + step > ttft_s:
            break
        best = max(best, min(1 / prefill, c / step / 1000) * 1000 / 2)
    assert d.tokens_per_s_per_gpu == pytest.approx(best, rel=ROUNDING)
    assert d.prefill_instances == d.decode_instances == 1
    data = json.loads(plan.model_dump_json())
    data["serving"]["disagg"]["concurrency"] += 7
    assert not verify(Plan.model_validate_json(json.dumps(data))).ok


def evaluate_layout(model, cluster, workload, layout):
    """The decode step (s) of ``layout`` for ``workload`` if it fits, else None."""
    from placer import evaluate

    ev = evaluate(model, cluster, workload, layout, get_profile("generic"))
    return ev.estimates.cycle_s if ev.fits and ev.estimates is not None else None


@pytest.mark.parametrize(
    ("extra", "gpus"),
    [(["--tpot", "30", "--disagg"], "1"), (["--batch", "8", "--disagg"], "2")],
)
def test_bad_disagg_exits_2(extra, gpus):
    """--disagg on one GPU, or without targets: exit 2 naming --disagg."""
    res = run_cli("solve", *OLMOE, "--gpus", gpus, *extra, "--quiet")
    assert res.exit_code == 2 and "'--disagg'" in res.stderr


def test_frontier_plot_marks_the_plan(tmp_path: Path):
    """placer frontier -o f.json, then placer plot f.json --plan plan.json draws a PNG."""
    pytest.importorskip("matplotlib")
    opts = ["--gpus", "2", "--prompt-len", "4000", "--output-len", "1000", "--tpot", "6"]
    front, plan, png = tmp_path / "f.json", tmp_path / "p.json", tmp_path / "f.png"
    assert run_cli("frontier", *OLMOE, *opts, "-o", str(front)).exit_code == 0
    assert run_cli("solve", *OLMOE, *opts, "--quiet", "-o", str(plan)).exit_code == 0
    res = run_cli("plot", str(front), "-o", str(png), "--plan", str(plan))
    assert res.exit_code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_verify_of_a_serving_plan_never_imports_ortools(olmoe, tmp_path: Path):
    """The serving re-check is numpy only: verifying a plan (with --disagg) in a fresh
    interpreter loads no OR-Tools module."""
    import subprocess
    import sys

    model, cluster = olmoe
    workload = load_workload(None, **TARGETS)
    path = tmp_path / "plan.json"
    path.write_text(solve(model, cluster, workload, SolveConfig(disagg=True)).model_dump_json())
    code = (
        "import sys; from placer.verify import verify, load_plan; "
        f"r = verify(load_plan({str(path)!r})); "
        "print(r.ok, any(m.startswith('ortools') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]
