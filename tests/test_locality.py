"""Communication locality (placer/locality.py, placer/search/placement_locality.py).

Hand-computed cases of the numpy terms, then the brute force of
tests/test_solve_property.py on tiny grouped-routing models over two nodes, where the
slot counts decide which expert groups share a node: CP-SAT's optimum must equal the
smallest objective over every split and count matrix, and every plan must verify.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from placer.budget import Budget
from placer.cluster import ClusterSpec
from placer.collectives import DispatchParts, group_reach, use_engine
from placer.config import SolveConfig
from placer.cost import estimate
from placer.layout import Layout
from placer.ledger import default_expert_map
from placer.load import cluster_from_dict, model_from_dict
from placer.locality import Locality, groups_on_nodes, node_bounds, placed_seconds
from placer.model import ModelSpec
from placer.rules import get_profile
from placer.search.outer import solve, solve_layout
from placer.search.space import enumerate_layouts
from placer.search.tables import build_tables, lower_bound_ns, memory_by_rank, objective_ns
from placer.verify import verify
from placer.workload import Workload
from tests.test_solve_property import check_instance, count_choices, layout_brute_force

# ------------------------------------------------------------------ instances


def grouped_model(experts: int, layers: int = 1, top_k: int = 2, heads: int = 4) -> ModelSpec:
    """A placer-format model with ``experts`` experts in two groups, one group per token
    (``heads`` 1 rules out attention TP)."""
    raw: dict[str, Any] = {
        "format": "placer-model",
        "name": "grouped",
        "dtype": "bf16",
        "expert_dtype": "bf16",
        "num_layers": layers,
        "hidden_size": 64,
        "vocab_size": 16,
        "attention": {"kind": "gqa", "num_heads": heads, "num_kv_heads": heads, "head_dim": 16},
        "moe": {
            "num_experts": experts,
            "top_k": top_k,
            "expert_intermediate_size": 8,
            "n_group": 2,
            "topk_group": 1,
        },
        "layers": [{"mixer": "attention", "ffn": "moe"} for _ in range(layers)],
    }
    return model_from_dict(raw, "grouped.json")


def two_nodes(
    memory: int = 10**9, gpus: int = 4, tflops: float = 100, per_node: int = 2
) -> ClusterSpec:
    """``gpus`` GPUs, ``per_node`` per node, with a slow network between nodes."""
    return cluster_from_dict(
        {
            "format": "placer-hardware",
            "name": "two-nodes",
            "gpu": {
                "name": "g",
                "memory_bytes": memory,
                "hbm_bandwidth_gbps": 10 * tflops,
                "tflops": {"bf16": tflops},
            },
            "gpus": gpus,
            "gpus_per_node": per_node,
            "scale_up_domain": per_node,
            "scale_up": {"bandwidth_gbps": 100, "latency_us": 1.0},
            "scale_out": {"bandwidth_gbps": 0.01, "latency_us": 5.0},
        },
        "two-nodes.json",
    )


#: Attention-DP over 4 GPUs on 2 nodes with EP 4: the all-to-all crosses nodes.
DP4 = Layout(tp=1, dp_attn=4, ep=4)
WORKLOAD = Workload(batch=64, prompt_len=8, output_len=4, runtime_reserve_bytes=0)


def tables(experts: int, layout: Layout = DP4, layers: int = 1) -> Any:
    return build_tables(grouped_model(experts, layers), two_nodes(), WORKLOAD, layout, "latency")


# ------------------------------------------------------------------ hand-computed


def test_group_reach_matches_the_binomial_formula() -> None:
    """A node holding m of 8 groups is reached by 1 - C(8 - m, 4) / C(8, 4) of tokens."""
    assert group_reach(0, 8, 4) == 0.0
    assert group_reach(1, 8, 4) == pytest.approx(0.5)
    assert group_reach(2, 8, 4) == pytest.approx(1 - math.comb(6, 4) / math.comb(8, 4))
    assert group_reach(8, 8, 4) == 1.0


def test_node_bounds_and_groups_on_nodes() -> None:
    """EP 4 over nodes of 2 GPUs: ranks [0, 2) and [2, 4); groups are read from the map."""
    assert node_bounds(two_nodes(), DP4, 0) == (0, 2, 4)
    aligned = ((0, 1), (2,), (3, 4), (5,))  # node 0: experts 0-2 (group 0), node 1: group 1
    straddling = ((0, 1), (2, 3), (4,), (5,))  # node 0 holds expert 3 of group 1
    assert groups_on_nodes((0, 2, 4), aligned, 3).tolist() == [1, 1]
    assert groups_on_nodes((0, 2, 4), straddling, 3).tolist() == [2, 1]


def test_placed_seconds_by_hand() -> None:
    """max(intra, latency + per_node x min(reached, cap)) less overlap, never negative."""
    parts = DispatchParts(nodes=2, intra=1.0, inter_latency=0.5, per_node=2.0, cap_nodes=1.5)
    row = np.array([parts.intra, parts.inter_latency, parts.per_node, parts.cap_nodes, 0.0])
    # n_group 2, topk_group 1: a node holding one group is reached by half the tokens.
    assert placed_seconds(row, 2, 1, np.array([1, 1])) == pytest.approx(0.5 + 2.0 * 1.0)
    # Both groups on node 0: reached 1 + 0.5 = 1.5 nodes (the cap).
    assert placed_seconds(row, 2, 1, np.array([2, 1])) == pytest.approx(0.5 + 2.0 * 1.5)
    row[4] = 10.0  # hidden behind 10 s of the other micro-batch's work
    assert placed_seconds(row, 2, 1, np.array([2, 1])) == 0.0


def test_tables_price_the_straddling_map_higher() -> None:
    """On the tiny instance the straddling map costs more than the aligned one, by the
    table entries of one more group on node 0."""
    t = tables(6)
    loc: Locality = t.locality
    assert loc is not None and bool(loc.placed[0, 0])
    aligned = loc.table({0: ((0, 1), (2,), (3, 4), (5,))})[0, 0]
    straddling = loc.table({0: ((0, 1), (2, 3), (4,), (5,))})[0, 0]
    inter = int(loc.inter[0, 0])
    assert aligned == max(0, int(loc.intra[0, 0]), inter + 2 * int(loc.node[0, 0, 1]))
    spread = min(int(loc.node[0, 0, 2] + loc.node[0, 0, 1]), int(loc.cap[0, 0]))
    assert straddling == max(0, int(loc.intra[0, 0]), inter + spread)
    assert straddling > aligned


def test_no_locality_without_group_limited_routing_or_nodes() -> None:
    """One node, or tensor-parallel attention: the all-to-all does not depend on placement."""
    model = grouped_model(6)
    one_node = build_tables(model, two_nodes(gpus=2), WORKLOAD, Layout(dp_attn=2, ep=2), "latency")
    assert one_node.locality is None
    tp_attention = build_tables(model, two_nodes(), WORKLOAD, Layout(tp=4, ep=4), "latency")
    assert tp_attention.locality is None


def test_lower_bound_holds_for_every_count_matrix() -> None:
    """lower_bound_ns is below the objective of every count matrix and split."""
    for experts in (4, 6, 8):
        t = tables(experts, layers=2)
        lb = lower_bound_ns(t, "latency")
        for counts in count_choices(t):
            assert lb <= objective_ns(t, (2,), counts, "latency")


@pytest.mark.parametrize(("gpus", "per_node"), [(4, 2), (6, 2), (8, 3)])
def test_objective_matches_the_estimate_on_every_layout(gpus: int, per_node: int) -> None:
    """The integer objective of the default expert map equals the float estimate's cycle
    (within the tables' rounding) on every legal layout, so no all-to-all is dropped or
    counted twice; 8 GPUs on nodes of 3 with pp 2 prices locality on one stage only."""
    model, cluster = grouped_model(6, layers=2, heads=1), two_nodes(gpus=gpus, per_node=per_node)
    seen_partial = False
    for layout in enumerate_layouts(model, cluster, get_profile("generic")).legal:
        if layout.pp > model.num_layers:
            continue
        t = build_tables(model, cluster, WORKLOAD, layout, "throughput")
        emap = default_expert_map(model, layout)
        counts = np.zeros((model.num_layers, layout.ep), dtype=np.int64)
        for i, ranks in emap.items():
            counts[i] = [len(r) for r in ranks]
        split = layout.layers_per_stage or tuple(
            len(r) for r in layout.stage_layers(model.num_layers)
        )
        value = objective_ns(t, split, counts, "throughput", emap)
        with use_engine("generic"):
            est = estimate(model, cluster, WORKLOAD, layout, emap)
        assert value / 1e9 == pytest.approx(est.cycle_s, abs=200e-9), layout.describe()
        if t.locality is not None and not t.locality.placed.all():
            seen_partial = True
    assert seen_partial or per_node != 3


# ------------------------------------------------------------------ CP-SAT against brute force


def test_cpsat_picks_the_aligned_counts() -> None:
    """6 experts on 4 ranks: counts (2, 1, 2, 1) keep each group on its node; CP-SAT finds
    the brute-force optimum and proves it."""
    t = tables(6, layers=2)
    best = layout_brute_force(t, 2, "latency")
    config = SolveConfig(time_limit_s=10, workers=1, deterministic=True)
    status, split, counts, value, bound = solve_layout(
        t, "latency", config, Budget(10.0, True), 10.0
    )
    assert status == "optimal" and value == best and bound == best
    assert split is not None and counts is not None
    assert np.all(memory_by_rank(t, split, counts) <= t.cap)
    worst = max(objective_ns(t, (2,), c, "latency") for c in count_choices(t))
    assert worst > value  # the counts matter here


def test_solved_plan_verifies_and_a_tampered_map_is_caught() -> None:
    """A full solve on the grouped instance verifies; moving one expert across nodes
    changes the recomputed objective, and verify reports it."""
    # Slow GPUs and one attention head: spreading over 4 GPUs with attention-DP wins.
    model, cluster = grouped_model(6, layers=2, heads=1), two_nodes(tflops=0.001)
    config = SolveConfig(time_limit_s=20, workers=1, deterministic=True, objective="latency")
    plan = solve(model, cluster, WORKLOAD, config)
    report = verify(plan)
    assert report.ok, report.violations
    assert plan.status == "optimal"
    assert plan.layout is not None and plan.layout.dp_attn > 1, "the all-to-all layout wins"
    # Swap one expert of node 0's group with one of node 1's: slot counts stay valid, the
    # groups now straddle the nodes and the recomputed objective differs.
    emap = {k: [list(r) for r in v] for k, v in plan.expert_map.items()}
    first = emap[0]
    a, b = first[0][0], first[-1][-1]
    first[0][0], first[-1][-1] = b, a
    tampered = plan.model_copy(
        update={"expert_map": {k: tuple(tuple(r) for r in v) for k, v in emap.items()}}
    )
    bad = verify(tampered)
    assert not bad.ok
    assert any("value" in v for v in bad.violations), bad.violations


@st.composite
def grouped_instances(draw: st.DrawFn) -> tuple[ModelSpec, ClusterSpec, Workload]:
    """Grouped-routing models on 2-6 GPUs over nodes of two, memory from tight to ample."""
    # 6 or 10 experts on EP 4 and 8 on EP 6 leave the slot counts free.
    experts = draw(st.sampled_from([6, 10, 8, 4]))
    model = grouped_model(experts, layers=draw(st.integers(1, 3)), top_k=draw(st.integers(1, 2)))
    workload = Workload(
        batch=draw(st.sampled_from([4, 64, 256])),
        prompt_len=draw(st.integers(1, 8)),
        output_len=draw(st.integers(1, 4)),
        runtime_reserve_bytes=0,
    )
    memory = draw(st.sampled_from([2 * 10**5, 4 * 10**5, 10**6, 10**9]))
    return model, two_nodes(memory, draw(st.sampled_from([4, 6, 2]))), workload


@settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(grouped_instances(), st.sampled_from(["throughput", "latency"]))
def test_grouped_instances_match_brute_force(
    instance: tuple[ModelSpec, ClusterSpec, Workload], objective: str
) -> None:
    """Every plan verifies; CP-SAT's per-layout optimum equals the brute force over every
    split and count matrix (tests/test_solve_property.py), locality included."""
    plan = check_instance(*instance, objective)
    model, cluster, workload = instance
    for layout in enumerate_layouts(model, cluster, get_profile("generic")).legal:
        t = build_tables(model, cluster, workload, layout, objective)
        if t.locality is not None:
            free = bool((t.locality.placed & (t.slots % layout.ep != 0)[:, None]).any())
            event("a layout whose counts decide locality" if free else "fixed locality")
    event(f"status {plan.status}")
    if plan.layout is not None:
        event(f"dp_attn {plan.layout.dp_attn}, ep {plan.layout.ep}")
