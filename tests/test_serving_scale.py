"""The serving search on clusters larger than the instances it enumerates (the tail bound),
and objective latency (lowest TPOT carrying a concurrency): brute force, soundness of the
bound against real layouts, verify tamper cases, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from placer import load_cluster, load_model, load_workload, verify
from placer.config import SolveConfig
from placer.plan import Plan
from placer.rules import get_profile
from placer.search.outer import solve
from placer.search.space import enumerate_layouts
from placer.serving.probe import LayoutProbe
from placer.serving.tail import tail_bound, tpot_floor_ns
from placer.serving.timing import tokens_per_s_ceiling
from tests.conftest import HARDWARE, MODELS
from tests.helpers import run_cli
from tests.serving_brute import meets, point, splits

TARGETS = {"prompt_len": 4000, "output_len": 1000, "ttft_ms": 2000.0, "tpot_ms": 30.0}


def checked(plan: Plan) -> Plan:
    """``plan`` after a JSON round trip, asserted to pass the independent verifier."""
    again = Plan.model_validate_json(plan.model_dump_json())
    report = verify(again)
    assert report.ok, report.violations
    return again


@pytest.fixture(scope="module")
def olmoe4():
    """OLMoE-1B-7B on 4 x A100-40GB."""
    return (
        load_model(MODELS / "olmoe-1b-7b-0924.json"),
        load_cluster(HARDWARE / "dgx-a100-40gb.json", gpus=4),
    )


def test_tail_bound_covers_every_larger_layout(olmoe4):
    """The tail bound above 1 GPU is no lower than any real layout's per-GPU ceiling (the
    per-layout bound the search itself uses) on 2..4 GPUs: it is sound on layouts it was
    not computed from."""
    model, cluster = olmoe4
    workload = load_workload(None, **TARGETS)
    profile = get_profile("generic")
    tail = tail_bound(model, cluster, workload, profile, 1)
    assert tail.per_gpu > 0 and [t.tp for t in tail.terms]
    cache: dict[object, object] = {}
    checked_layouts = 0
    for lay in enumerate_layouts(model, cluster, profile).legal:
        if lay.gpus <= 1:
            continue
        one = LayoutProbe(model, cluster, workload, lay, cache).at(1)
        ceiling = tokens_per_s_ceiling(workload, one.step_ns, one.prefill_ns)
        assert ceiling / lay.gpus <= tail.per_gpu * (1 + 1e-9), lay.describe()
        checked_layouts += 1
    assert checked_layouts > 0


def test_tail_floors_hold_across_nodes():
    """On two nodes (stages and TP groups at every offset), every sampled layout's bound
    figures at concurrency 1 are no lower than its attention-TP degree's floors."""
    model = load_model(MODELS / "qwen3-30b-a3b.json")
    cluster = load_cluster(HARDWARE / "dgx-h200.json", gpus=16)
    workload = load_workload(None, **TARGETS)
    profile = get_profile("generic")
    tail = tail_bound(model, cluster, workload, profile, 4)
    floors = {t.tp: t for t in tail.terms}
    cache: dict[object, object] = {}
    legal = [lay for lay in enumerate_layouts(model, cluster, profile).legal if lay.gpus > 4]
    for lay in legal[::9]:
        one = LayoutProbe(model, cluster, workload, lay, cache).loose(1)
        t = floors[lay.tp]
        assert one.step_bound_ns >= t.step_floor_s * 1e9 * (1 - 1e-12), lay.describe()
        assert one.prefill_bound_ns >= t.prefill_floor_s * 1e9 * (1 - 1e-12), lay.describe()
    assert len(legal[::9]) > 10


def test_big_cluster_is_bounded_and_verified():
    """Qwen3-30B-A3B on 96 x H200 (more than the instances searched first): the plan records
    a tail bound, its gap counts it, and verify re-derives it."""
    model = load_model(MODELS / "qwen3-30b-a3b.json")
    cluster = load_cluster(HARDWARE / "dgx-h200.json", gpus=96)
    workload = load_workload(None, **TARGETS)
    plan = checked(solve(model, cluster, workload, SolveConfig(max_gpus=8)))
    s, o = plan.serving, plan.objective
    assert s is not None and s.tail is not None and s.tail.above_gpus == 8
    assert o.value is not None and o.bound is not None
    assert o.bound >= max(o.value, s.tail.per_gpu) * (1 - 1e-12)
    assert s.instances * s.gpus_per_instance <= 96


def _tampered(tmp_path: Path, plan: Plan, edit) -> int:
    data = json.loads(plan.model_dump_json())
    edit(data)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    return run_cli("verify", str(path)).exit_code


def test_forged_tail_bound_exits_5(tmp_path: Path, olmoe4):
    """A tail bound lowered (so that larger instances seem unable to win), dropped, with a
    degree left out or a floor changed, and a layout claimed pruned by floors it does not
    have: verify exits 5."""
    model, cluster = olmoe4
    workload = load_workload(None, prompt_len=4000, output_len=1000, tpot_ms=6.0)
    plan = solve(model, cluster, workload, SolveConfig(max_gpus=2))
    path = tmp_path / "ok.json"
    path.write_text(plan.model_dump_json())
    assert run_cli("verify", str(path)).exit_code == 0

    def lower(d):
        d["serving"]["tail"]["per_gpu"] = 1.0
        for t in d["serving"]["tail"]["terms"]:
            t["per_gpu"], t["instance_rate"] = 1.0, 3.0

    def drop(d):
        d["serving"]["tail"] = None

    def degree(d):
        d["serving"]["tail"]["terms"] = d["serving"]["tail"]["terms"][:1]

    def floor(d):
        d["serving"]["tail"]["terms"][0]["prefill_floor_s"] *= 10

    def by_floors(d):
        e = d["serving"]["entries"][-1]
        e.update(status="pruned", by_floors=True, ceiling=0.0, leaves=[])

    for edit in (lower, drop, degree, floor, by_floors):
        assert _tampered(tmp_path, plan, edit) == 5, edit.__name__


def _brute_latency(model, cluster, workload, carried):
    """Lowest TPOT over every layout x split x instance count carrying ``carried``
    requests (each instance at most ceil(carried / k)), scored with evaluate only."""
    best = math.inf
    n = cluster.num_gpus
    for lay in enumerate_layouts(model, cluster, get_profile("generic")).legal:
        for k in range(1, n // lay.gpus + 1):
            c = -(-carried // k)
            for split in splits(model.num_layers, lay.pp):
                full = lay.model_copy(update={"layers_per_stage": split})
                fits, tpot, ttft, _ = point(model, cluster, workload, full, c)
                if fits and meets(workload, tpot, ttft):
                    best = min(best, tpot)
    return best


@pytest.mark.parametrize("carried", [1, 24, 60, 2000])
def test_latency_agrees_with_brute_force(carried):
    """Objective latency: the proven lowest TPOT equals brute force over every layout,
    split and instance count, and passes verify."""
    model = load_model(MODELS / "olmoe-1b-7b-0924.json")
    cluster = load_cluster(HARDWARE / "dgx-a100-40gb.json", gpus=2)
    workload = load_workload(None, prompt_len=4000, output_len=1000, tpot_ms=50.0)
    plan = checked(
        solve(model, cluster, workload, SolveConfig(objective="latency", concurrency=carried))
    )
    brute = _brute_latency(model, cluster, workload, carried)
    if math.isinf(brute):
        assert plan.status == "infeasible" and plan.infeasibility is not None
        return
    assert plan.status == "optimal" and plan.objective.gap == 0.0
    assert plan.objective.value is not None
    assert plan.objective.value == pytest.approx(brute * 1e3, rel=1e-3)
    s = plan.serving
    assert s is not None and s.carried == carried
    assert s.instances * s.concurrency >= carried


def test_latency_beyond_searched_instances_has_a_tail_floor(olmoe4):
    """With instances capped, the tail's TPOT floor bounds larger ones and verify agrees."""
    model, cluster = olmoe4
    workload = load_workload(None, prompt_len=4000, output_len=1000, tpot_ms=50.0)
    config = SolveConfig(objective="latency", concurrency=8, max_gpus=2)
    plan = checked(solve(model, cluster, workload, config))
    s, o = plan.serving, plan.objective
    assert s is not None and s.tail is not None and s.tail.tpot_floor_s is not None
    floor = tpot_floor_ns(s.tail, workload, 8, 4) / 1e9
    assert floor == pytest.approx(s.tail.tpot_floor_s)
    assert o.value is not None and o.bound is not None and o.bound <= o.value


def test_latency_forged_floor_exits_5(tmp_path: Path):
    """A layout's TPOT floor raised (so that it seems unable to beat the plan): exit 5."""
    model = load_model(MODELS / "olmoe-1b-7b-0924.json")
    cluster = load_cluster(HARDWARE / "dgx-a100-40gb.json", gpus=2)
    workload = load_workload(None, prompt_len=4000, output_len=1000, tpot_ms=50.0)
    plan = solve(model, cluster, workload, SolveConfig(objective="latency", concurrency=24))

    def raise_floor(d):
        for e in d["serving"]["entries"]:
            if e["tpot_floor_s"] is not None:
                e["tpot_floor_s"] *= 2
                return

    def carried(d):
        d["serving"]["carried"] = 1

    def forged_floors(d):
        e = d["serving"]["entries"][-1]
        e.update(status="pruned", by_floors=True, tpot_floor_s=1.0)

    for edit in (raise_floor, carried, forged_floors):
        assert _tampered(tmp_path, plan, edit) == 5, edit.__name__


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--objective", "latency", "--tpot", "30"], "--objective"),
        (["--concurrency", "8", "--tpot", "30"], "--concurrency"),
        (["--objective", "latency", "--concurrency", "8", "--batch", "4"], "--concurrency"),
        (["--objective", "latency", "--concurrency", "0"], "--concurrency"),
        (
            ["--objective", "latency", "--concurrency", "8", "--request-rate", "2"],
            "--request-rate",
        ),
    ],
)
def test_latency_bad_input(args, field):
    """Bad combinations exit 2 naming the option."""
    res = run_cli(
        "solve", str(MODELS / "olmoe-1b-7b-0924.json"), str(HARDWARE / "dgx-a100-40gb.json"),
        "--gpus", "2", *args,
    )  # fmt: skip
    assert res.exit_code == 2, res.stdout + res.stderr
    assert field in res.stdout + res.stderr


def test_infeasible_beyond_searched_instances(olmoe4):
    """Targets no instance meets: with instances capped below the cluster, infeasibility is
    proven for the searched ones layout by layout and for larger ones by the tail floors,
    and verify re-proves both."""
    model, cluster = olmoe4
    workload = load_workload(None, prompt_len=4000, output_len=1000, tpot_ms=0.05)
    plan = checked(solve(model, cluster, workload, SolveConfig(max_gpus=2)))
    assert plan.status == "infeasible" and plan.infeasibility is not None
    assert "tpot" in plan.infeasibility.conflicts
    tail = tail_bound(model, cluster, workload, get_profile("generic"), 2)
    assert tail.per_gpu == 0.0
