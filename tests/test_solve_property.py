"""Property tests of ``solve``: on tiny random instances, compare with a brute force.

Hypothesis draws models of 1-4 layers (module lists with 0-4 experts per layer, or
placer's own format), clusters of 1-4 identical GPUs whose memory is a random
fraction of what the model needs on one GPU, and small workloads. For every
instance:

- every plan passes the independent ``verify`` (infeasible ones too);
- an ``optimal`` plan's objective is the smallest over every legal layout, every
  contiguous layer split and every floor/ceil slot-count assignment whose memory
  (``memory_by_rank``) fits ``tables.cap``, and that value is attained;
- an ``infeasible`` plan has no fitting combination at all;
- every legal layout solved on its own (``solve_layout``) agrees with that layout's
  brute force, and the pruning bounds (``lower_bound_ns``, ``memory_lower_bound``)
  never exclude a fitting placement.

The brute force reuses the numpy reference functions of :mod:`placer.search.tables`
(not CP-SAT), so it checks the search, the CP-SAT model and the extraction together.
"""

from __future__ import annotations

import itertools
from typing import Any
from unittest import mock

import numpy as np
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from placer.budget import Budget
from placer.cluster import ClusterSpec
from placer.config import SolveConfig
from placer.layout import Layout
from placer.load import cluster_from_dict, model_from_dict
from placer.model import ModelSpec
from placer.plan import Plan
from placer.rules import get_profile
from placer.search import fixes
from placer.search.heuristic import fitting_layout
from placer.search.outer import solve, solve_layout
from placer.search.space import enumerate_layouts
from placer.search.tables import (
    LayoutTables,
    balanced_counts,
    build_tables,
    lower_bound_ns,
    memory_by_rank,
    memory_lower_bound,
    objective_ns,
)
from placer.verify import verify
from placer.workload import Workload

CONFIG = SolveConfig(time_limit_s=5, workers=1)

#: ``fixes.min_gpus`` may try GPU counts up to 4096 (until the solve's deadline) when no
#: count fits; the property tests cap that search so they stay fast, and the plan is checked
#: all the same.
MIN_GPUS_CAP = 16

# ------------------------------------------------------------------ strategies


@st.composite
def module_list_models(draw: st.DrawFn) -> ModelSpec:
    """A module-list model: per layer one attention module and 0-4 equal experts."""
    layers = draw(st.integers(1, 4))
    modules: list[dict[str, Any]] = []
    if draw(st.booleans()):
        for kind in ("embedding", "lm_head"):
            size = 2 * draw(st.integers(8, 512))
            modules.append({"name": kind, "kind": kind, "bytes": size, "flops_per_token": size})
    any_expert = False
    for i in range(layers):
        size = 2 * draw(st.integers(8, 2048))
        modules.append(
            {
                "name": f"L{i}.attention",
                "kind": "attention",
                "layer": i,
                "bytes": size,
                "flops_per_token": size,
                "kv_elements_per_token": draw(st.integers(0, 64)),
            }
        )
        experts = draw(st.integers(0, 4))
        expert_size = 2 * draw(st.integers(8, 2048))
        for e in range(experts):
            any_expert = True
            modules.append(
                {
                    "name": f"L{i}.expert{e}",
                    "kind": "expert",
                    "layer": i,
                    "bytes": expert_size,
                    "flops_per_token": expert_size,
                }
            )
    raw: dict[str, Any] = {
        "format": "placer-modules",
        "name": "prop",
        "dtype": "bf16",
        "num_layers": layers,
        "hidden_size": draw(st.sampled_from([8, 16, 64])),
        "modules": modules,
    }
    if any_expert:
        fewest = min(
            sum(1 for m in modules if m["kind"] == "expert" and m["layer"] == i)
            for i in {m["layer"] for m in modules if m["kind"] == "expert"}
        )
        raw["top_k"] = draw(st.integers(1, min(2, fewest)))
    return model_from_dict(raw, "prop.json")


@st.composite
def placer_models(draw: st.DrawFn) -> ModelSpec:
    """A model in placer's own format: GQA attention, MoE (1-4 experts) or dense layers."""
    layers = draw(st.integers(1, 4))
    ffn = draw(st.lists(st.sampled_from(["moe", "dense"]), min_size=layers, max_size=layers))
    raw = {
        "format": "placer-model",
        "name": "prop",
        "dtype": "bf16",
        "expert_dtype": "bf16",
        "num_layers": layers,
        "hidden_size": draw(st.sampled_from([8, 16])),
        "vocab_size": draw(st.sampled_from([4, 16])),
        "tie_word_embeddings": draw(st.booleans()),
        "attention": {
            "kind": "gqa",
            "num_heads": 4,
            "num_kv_heads": draw(st.sampled_from([1, 2, 4])),
            "head_dim": 2,
        },
        "moe": {
            "num_experts": draw(st.integers(1, 4)),
            "top_k": 1,
            "expert_intermediate_size": draw(st.sampled_from([4, 8])),
        },
        "dense_intermediate_size": 8,
        "layers": [{"mixer": "attention", "ffn": f} for f in ffn],
    }
    return model_from_dict(raw, "prop.json")


def make_cluster(gpus: int, memory: int, bandwidth: float, latency_us: float = 1.0) -> ClusterSpec:
    """``gpus`` identical GPUs of ``memory`` bytes and ``bandwidth`` GB/s on one domain."""
    return cluster_from_dict(
        {
            "format": "placer-hardware",
            "name": "prop",
            "gpu": {
                "name": "prop-gpu",
                "memory_bytes": memory,
                "hbm_bandwidth_gbps": bandwidth,
                "tflops": {"bf16": bandwidth / 1000},
            },
            "gpus": gpus,
            "gpus_per_node": 4,
            "scale_up_domain": 4,
            "scale_up": {"bandwidth_gbps": 100, "latency_us": latency_us},
            "scale_out": {"bandwidth_gbps": 10, "latency_us": 5.0},
        },
        "prop-hw.json",
    )


def one_gpu_bytes(model: ModelSpec, workload: Workload) -> int:
    """Bytes the model needs on a single GPU (pp=1, ep=1): the scale for cluster memory."""
    probe = make_cluster(1, 10**15, 1)
    t = build_tables(model, probe, workload, Layout(), "throughput", with_costs=False)
    return int(memory_by_rank(t, (model.num_layers,), balanced_counts(t)).max())


@st.composite
def instances(draw: st.DrawFn) -> tuple[ModelSpec, ClusterSpec, Workload]:
    """(model, cluster, workload) with GPU memory 0.3 to 1.5 times the one-GPU need."""
    model = draw(st.one_of(module_list_models(), placer_models()))
    workload = Workload(
        batch=draw(st.integers(1, 4)),
        prompt_len=draw(st.integers(1, 8)),
        output_len=draw(st.integers(1, 4)),
        phase=draw(st.sampled_from(["decode", "prefill"])),
        runtime_reserve_bytes=draw(st.sampled_from([0, 64])),
        memory_utilization=draw(st.sampled_from([1.0, 0.9])),
    )
    need = one_gpu_bytes(model, workload)
    fraction = draw(st.sampled_from([0.6, 0.8, 0.4, 1.0, 0.5, 1.5, 0.3]))
    memory = max(1, int(need * fraction / workload.memory_utilization))
    cluster = make_cluster(
        draw(st.integers(1, 4)),
        memory,
        draw(st.sampled_from([0.01, 1, 100])),
        draw(st.sampled_from([0.0, 1.0])),
    )
    return model, cluster, workload


# ------------------------------------------------------------------ brute force


def log(text: str) -> None:
    """Hypothesis' note inside a property (shown for the failing example), else nothing."""
    if currently_in_test_context():
        note(text)


def log_event(text: str) -> None:
    """Hypothesis' event inside a property (counted in --hypothesis-show-statistics)."""
    if currently_in_test_context():
        event(text)


def compositions(layers: int, pp: int) -> list[tuple[int, ...]]:
    """Every split of ``layers`` into ``pp`` positive contiguous parts."""
    return [
        tuple(b - a for a, b in zip((0, *cuts), (*cuts, layers), strict=True))
        for cuts in itertools.combinations(range(1, layers), pp - 1)
    ]


def count_choices(t: LayoutTables) -> list[np.ndarray]:
    """Every (L, ep) slot-count matrix with counts in {floor, ceil} summing to the slots."""
    ep = t.layout.ep
    per_layer = []
    for slots in (int(s) for s in t.slots):
        lo, hi = slots // ep, -(-slots // ep)
        per_layer.append(
            [c for c in itertools.product(range(lo, hi + 1), repeat=ep) if sum(c) == slots]
        )
    return [
        np.array(rows, dtype=np.int64).reshape(len(t.slots), ep)
        for rows in itertools.product(*per_layer)
    ]


def layout_brute_force(t: LayoutTables, num_layers: int, objective: str) -> int | None:
    """Smallest objective over every split and slot assignment of one layout that fits."""
    best: int | None = None
    choices = count_choices(t)
    for split in compositions(num_layers, t.layout.pp):
        for counts in choices:
            if np.all(memory_by_rank(t, split, counts) <= t.cap):
                value = objective_ns(t, split, counts, objective)
                best = value if best is None else min(best, value)
    return best


def check_instance(
    model: ModelSpec, cluster: ClusterSpec, workload: Workload, objective: str
) -> Plan:
    """Solve, verify, and compare with the brute force (see the module docstring).

    Every legal layout is also solved on its own (``solve_layout``) and compared with
    that layout's brute force, so the CP-SAT model is checked on layouts that do not
    win too.
    """
    config = CONFIG.model_copy(update={"objective": objective})
    with mock.patch.object(fixes, "MAX_GPUS_SEARCHED", MIN_GPUS_CAP):
        plan = solve(model, cluster, workload, config)
    log(f"status {plan.status}, value {plan.objective.value_units}, layout {plan.layout}")
    assert plan.status in ("optimal", "feasible", "infeasible"), plan.summary()
    report = verify(plan)
    assert report.ok, "\n".join(report.violations)

    best: int | None = None
    for layout in enumerate_layouts(model, cluster, get_profile(config.profile)).legal:
        t = build_tables(model, cluster, workload, layout, objective)
        mine = layout_brute_force(t, model.num_layers, objective)
        if mine is not None:
            best = mine if best is None else min(best, mine)
            # The search prunes with these two: they must hold for every fitting placement.
            assert lower_bound_ns(t, objective) <= mine, layout.describe()
            need, have = memory_lower_bound(t)
            assert need <= have, layout.describe()
        status, split, counts, value, _ = solve_layout(
            t, objective, config, Budget(5.0, config.deterministic), 5.0
        )
        log(f"{layout.describe()}: brute force {mine}, CP-SAT {status} {value}")
        if status == "infeasible":
            assert mine is None, f"{layout.describe()}: CP-SAT infeasible, brute force {mine}"
        elif status in ("optimal", "feasible"):
            assert split is not None and counts is not None and value is not None
            assert np.all(memory_by_rank(t, split, counts) <= t.cap), layout.describe()
            assert value == objective_ns(t, split, counts, objective)
            assert mine is not None and mine <= value, layout.describe()
            if status == "optimal":
                assert mine == value, f"{layout.describe()}: brute {mine}, CP-SAT {value}"
                if layout.pp > 1 or layout.ep > 1:
                    log_event("a layout with pp > 1 or ep > 1 solved to optimality")
    log(f"brute force: best {best}")

    if plan.status == "infeasible":
        assert best is None, f"brute force found a fitting placement of value {best}"
        return plan
    value = plan.objective.value_units
    assert best is not None and value is not None
    if plan.status == "optimal":
        assert best == value, f"brute force {best} vs plan {value}"
    else:
        assert best <= value
    return plan


# ------------------------------------------------------------------ properties


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(instances())
def test_solve_matches_brute_force_throughput(
    instance: tuple[ModelSpec, ClusterSpec, Workload],
) -> None:
    """Throughput: verified plans, optimal values equal the brute force, infeasible is proven."""
    plan = check_instance(*instance, "throughput")
    event(f"status {plan.status}")
    if plan.layout is not None:
        event(f"pp {plan.layout.pp}, ep {plan.layout.ep}")


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(instances())
def test_solve_matches_brute_force_latency(
    instance: tuple[ModelSpec, ClusterSpec, Workload],
) -> None:
    """Latency: the same properties with the un-pipelined objective."""
    plan = check_instance(*instance, "latency")
    event(f"status {plan.status}")


def test_hand_instance_fits_with_room_and_not_without() -> None:
    """A two-layer model on 2 GPUs: optimal with twice its need, infeasible with a quarter."""
    model = model_from_dict(
        {
            "format": "placer-modules",
            "name": "two",
            "dtype": "bf16",
            "num_layers": 2,
            "hidden_size": 8,
            "top_k": 1,
            "modules": [
                {"name": f"L{i}.{k}", "kind": k, "layer": i, "bytes": 512, "flops_per_token": 512}
                for i in range(2)
                for k in ("attention", "expert")
            ],
        },
        "two.json",
    )
    workload = Workload(batch=1, prompt_len=1, output_len=1, runtime_reserve_bytes=0)
    need = one_gpu_bytes(model, workload)
    roomy = solve(model, make_cluster(2, 2 * need, 1), workload, CONFIG)
    tight = solve(model, make_cluster(2, need // 4, 1), workload, CONFIG)
    assert roomy.status == "optimal" and verify(roomy).ok
    assert tight.status == "infeasible"
    check_instance(model, make_cluster(2, need // 4, 1), workload, "throughput")


# ------------------------------------------------------------------ determinism


def _without_wall_time(data: dict[str, Any]) -> dict[str, Any]:
    del data["certificate"]["solver"]["wall_time_s"]
    return data


def test_deterministic_mode_reproduces_the_plan() -> None:
    """seed=3, deterministic=True twice gives equal plans up to the wall time."""
    model = model_from_dict(
        {
            "format": "placer-modules",
            "name": "det",
            "dtype": "bf16",
            "num_layers": 4,
            "hidden_size": 16,
            "top_k": 2,
            "modules": [
                m
                for i in range(4)
                for m in (
                    {
                        "name": f"L{i}.attention",
                        "kind": "attention",
                        "layer": i,
                        "bytes": 256 * (i + 1),
                        "flops_per_token": 256 * (i + 1),
                        "kv_elements_per_token": 8,
                    },
                    *(
                        {
                            "name": f"L{i}.expert{e}",
                            "kind": "expert",
                            "layer": i,
                            "bytes": 1024,
                            "flops_per_token": 1024,
                        }
                        for e in range(3)
                    ),
                )
            ],
        },
        "det.json",
    )
    workload = Workload(batch=3, prompt_len=8, output_len=4, runtime_reserve_bytes=0)
    cluster = make_cluster(4, one_gpu_bytes(model, workload) // 2, 7)
    config = SolveConfig(seed=3, deterministic=True, time_limit_s=5)
    first = solve(model, cluster, workload, config)
    second = solve(model, cluster, workload, config)
    assert first.status in ("optimal", "feasible")
    assert first.certificate.solver.deterministic and first.certificate.solver.workers == 1
    assert _without_wall_time(first.model_dump()) == _without_wall_time(second.model_dump())


# ------------------------------------------------------------------ time limit


def test_infeasible_solve_respects_time_limit() -> None:
    """A tiny infeasible instance (activations alone exceed a GPU): the search for fixes stops
    when the time limit passes (on an injected clock)."""
    model = model_from_dict(
        {
            "format": "placer-modules",
            "name": "one",
            "dtype": "bf16",
            "num_layers": 1,
            "hidden_size": 8,
            "modules": [
                {
                    "name": "L0.attention",
                    "kind": "attention",
                    "layer": 0,
                    "bytes": 1024,
                    "flops_per_token": 1024,
                }
            ],
        },
        "one.json",
    )
    workload = Workload(
        batch=1, prompt_len=1, output_len=1, runtime_reserve_bytes=0, memory_utilization=1.0
    )
    limit = 0.2
    # Each fix candidate costs 10 ms on an injected clock: the budget must stop the fix
    # search after about limit / 10 ms of them, whatever the machine's speed.
    clock = [0.0]
    calls = [0]
    real = fitting_layout

    def counted(*args: Any, **kwargs: Any) -> Layout | None:
        calls[0] += 1
        clock[0] += 0.01
        return real(*args, **kwargs)

    budget = Budget(limit, clock=lambda: clock[0])
    config = SolveConfig(time_limit_s=limit)
    with mock.patch.object(fixes, "fitting_layout", counted):
        plan = solve(model, make_cluster(1, 50, 1), workload, config, budget=budget)
    assert plan.status == "infeasible"
    assert calls[0] <= limit / 0.01 + 1
