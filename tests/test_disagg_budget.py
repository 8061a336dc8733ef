"""The disaggregated split search under the shared Budget (docs/serving.md, "Time limit"):
cut by deterministic work or by the wall clock (both injected, no test depends on the
machine's speed), it reports feasible with a sound bound, or unknown without a split; verify
accepts that and refuses a cut record that claims optimal (exit 5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from placer import load_cluster, load_model, load_workload, verify
from placer.budget import Budget
from placer.config import SolveConfig
from placer.plan import Plan
from placer.serving.solve import solve_serving
from tests.conftest import HARDWARE, MODELS
from tests.helpers import run_cli

CONFIG = SolveConfig(disagg=True, deterministic=True)


def frozen() -> float:
    """A wall clock that never moves: only deterministic work spends the budget."""
    return 0.0


@pytest.fixture(scope="module")
def case():
    """OLMoE-1B-7B on 3 x A100-40GB, TTFT 118 ms (capped decode groups are searched), and
    the deterministic work and optimum of the full search."""
    model = load_model(MODELS / "olmoe-1b-7b-0924.json")
    cluster = load_cluster(HARDWARE / "dgx-a100-40gb.json", gpus=3)
    workload = load_workload(None, prompt_len=4000, output_len=1000, tpot_ms=10.0, ttft_ms=118.0)
    budget = Budget(1e6, deterministic=True, clock=frozen)
    plan = solve_serving(model, cluster, workload, CONFIG, budget)
    assert plan.serving is not None and plan.serving.disagg is not None
    return model, cluster, workload, budget.deterministic_used, plan.serving.disagg


def _solve(case, budget: Budget) -> Plan:
    model, cluster, workload, _, _ = case
    plan = solve_serving(model, cluster, workload, CONFIG, budget)
    plan = Plan.model_validate_json(plan.model_dump_json())  # what a file would hold
    report = verify(plan)
    assert report.ok, report.violations
    return plan


def test_full_search_is_optimal_and_not_cut(case):
    """With the budget not binding the search is complete: optimal, bound = value."""
    *_, work, full = case
    assert work > 0.0  # the search's probes were charged to the budget
    assert full.status == "optimal" and not full.cut
    assert full.bound == pytest.approx(full.tokens_per_s_per_gpu, rel=1e-12)


def _check_cut(plan: Plan, optimum: float) -> bool:
    """A cut record's figures against the full search's optimum; True if it has a split."""
    assert plan.serving is not None
    d = plan.serving.disagg
    if d is None:
        assert plan.serving.disagg_unknown
        assert "unknown" in plan.summary()
        return False
    assert d.cut and d.status == "feasible"
    assert d.tokens_per_s_per_gpu <= optimum * (1 + 1e-9)  # never better than the optimum
    assert d.bound is not None and d.bound >= optimum * (1 - 1e-9)  # the bound is sound
    assert d.search is not None
    return True


@pytest.mark.parametrize("fraction", [0.05, 0.5, 0.8, 0.99])
def test_cut_search_is_feasible_with_a_sound_bound(case, fraction):
    """A deterministic budget below the full search's work cuts it: unknown without a
    split, else feasible with the optimum between its value and its bound; verified."""
    *_, work, full = case
    plan = _solve(case, Budget(work * fraction, deterministic=True, clock=frozen))
    has_split = _check_cut(plan, full.tokens_per_s_per_gpu)
    if fraction == 0.05:
        assert not has_split  # cut while probing the layouts: no split yet
    if fraction == 0.99:
        assert has_split


def test_same_budget_same_cut_plan(case):
    """Deterministic mode: the same budget cuts the search at the same place."""
    *_, work, _ = case
    plans = [_solve(case, Budget(work * 0.9, deterministic=True, clock=frozen)) for _ in range(2)]
    a, b = (p.serving.disagg for p in plans if p.serving is not None)
    assert a is not None and a == b


class JumpingClock:
    """A wall clock that stands still for ``calls`` readings, then jumps past any limit."""

    def __init__(self, calls: int) -> None:
        self.calls, self.seen = calls, 0

    def __call__(self) -> float:
        self.seen += 1
        return 0.0 if self.seen <= self.calls else 1e9


def test_wall_clock_is_the_hard_stop(case):
    """Deterministic mode with deterministic time to spare: the wall clock still stops the
    split search, and the certificate says so."""
    *_, full = case
    counter = JumpingClock(10**9)
    _solve(case, Budget(1e6, deterministic=True, clock=counter))
    clock = JumpingClock(int(counter.seen * 0.95))
    plan = _solve(case, Budget(1e6, deterministic=True, clock=clock))
    assert plan.certificate.solver.wall_clock_stop
    assert plan.status == "optimal"  # the aggregated search had finished
    _check_cut(plan, full.tokens_per_s_per_gpu)


@pytest.fixture(scope="module")
def cut_file(tmp_path_factory, case) -> Path:
    """A cut plan with a split, written as a file."""
    *_, work, _ = case
    plan = _solve(case, Budget(work * 0.99, deterministic=True, clock=frozen))
    assert plan.serving is not None and plan.serving.disagg is not None
    path = tmp_path_factory.mktemp("cut") / "plan.json"
    path.write_text(plan.model_dump_json())
    assert run_cli("verify", str(path)).exit_code == 0
    return path


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda d: d.update(status="optimal"), "cut"),
        (
            lambda d: d.update(status="optimal", bound=d["tokens_per_s_per_gpu"]),
            "cut",
        ),
        (lambda d: d.update(bound=d["tokens_per_s_per_gpu"]), "bound recomputed"),
        (lambda d: d.update(cut=False, status="optimal"), "optimal"),
    ],
    ids=["claims-optimal", "claims-optimal-gap-0", "forged-bound", "uncut-optimal"],
)
def test_forged_cut_record_exits_5(cut_file, tmp_path, edit, words):
    """A cut record claiming more than it proves is refused: exit 5, named."""
    data = json.loads(cut_file.read_text())
    edit(data["serving"]["disagg"])
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(data))
    res = run_cli("verify", str(forged))
    assert res.exit_code == 5
    assert words in res.stdout + res.stderr


@pytest.mark.parametrize(
    ("model_file", "hardware", "gpus"),
    [
        ("olmoe-1b-7b-0924.json", "dgx-a100-40gb.json", 3),
        ("mixtral-8x7b.json", "dgx-h100.json", 8),
    ],
)
def test_secant_memory_limit_equals_doubling_and_bisection(model_file, hardware, gpus):
    """DecodeProbe.find_memory_limit (secant guess, bracket, bisection) finds the same limit
    as placer.serving.search.memory_limit on every legal layout, with no more evaluations."""
    from placer import get_profile
    from placer.search.space import enumerate_layouts
    from placer.serving.decode_probe import DecodeProbe
    from placer.serving.search import memory_limit

    model = load_model(MODELS / model_file)
    cluster = load_cluster(HARDWARE / hardware, gpus=gpus)
    workload = load_workload(None, prompt_len=4000, output_len=1000, tpot_ms=30.0)
    cache: dict[object, object] = {}
    used = {"doubling": 0, "secant": 0}
    limits = []
    for lay in enumerate_layouts(model, cluster, get_profile("generic")).legal:
        plain = DecodeProbe(model, cluster, workload, lay, cache)
        fast = DecodeProbe(model, cluster, workload, lay, cache)
        limits.append(memory_limit(plain))
        assert fast.find_memory_limit() == limits[-1], lay.describe()
        used["doubling"] += len(plain._memory)
        used["secant"] += len(fast._memory)
    assert any(limit > 1 for limit in limits)  # the comparison is not only over empty ranges
    assert used["secant"] <= used["doubling"]
