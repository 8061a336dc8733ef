"""Sub-model tests of the CP-SAT placement model, one constraint family at a time.

In the style of the CP-SAT Primer's test chapter: each test builds the
:class:`~placer.search.tables.LayoutTables` of a toy model small enough to count
by hand, creates the variables, adds only the family under test (plus the
definitional constraints it reads), fixes the decisions with ``model.add(var ==
value)``, switches the family's enforcement literal on and checks that CP-SAT
says feasible or infeasible, as the numpy reference functions of
:mod:`placer.search.tables` predict.

The toy model (placer's own format, bf16): hidden 64, vocab 16, 2-4 layers of GQA
attention (4 heads, 2 KV heads, head_dim 2) + MoE (3 or 4 experts, top-2, width 4).
The cluster lists every GPU as its own group, so each GPU can be given its own
memory; ``memory_utilization=1.0`` and no runtime reserve make a GPU's usable
capacity exactly its ``memory_bytes``. The GPUs are slow (1 GB/s, 1 GFLOP/s) so
the cost tables hold times of thousands of ns, not 1 ns each.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from ortools.sat.python import cp_model

from placer.cluster import ClusterSpec
from placer.layout import Layout
from placer.load import cluster_from_dict, model_from_dict
from placer.model import ModelSpec
from placer.search.heuristic import best_split
from placer.search.placement_model import (
    PlacementVars,
    add_contiguous_stages,
    add_expert_slots,
    add_hint,
    add_memory,
    add_slot_location,
    add_stage_time,
    build_model,
    create_variables,
    enforce_all,
    extract,
)
from placer.search.tables import (
    LayoutTables,
    balanced_counts,
    build_tables,
    memory_by_rank,
    objective_ns,
    stage_times,
)
from placer.workload import Workload

BIG = 10**12  # bytes: a GPU whose memory never binds

# ------------------------------------------------------------------ builders


def toy(layers: int = 3, experts: int = 3, dense: Sequence[int] = ()) -> ModelSpec:
    """The toy model with ``layers`` layers; layers listed in ``dense`` get a dense MLP."""
    raw: dict[str, Any] = {
        "format": "placer-model",
        "name": "toy",
        "dtype": "bf16",
        "expert_dtype": "bf16",
        "num_layers": layers,
        "hidden_size": 64,
        "vocab_size": 16,
        "attention": {"kind": "gqa", "num_heads": 4, "num_kv_heads": 2, "head_dim": 2},
        "moe": {"num_experts": experts, "top_k": 2, "expert_intermediate_size": 4},
        "dense_intermediate_size": 8,
        "layers": [
            {"mixer": "attention", "ffn": "dense" if i in dense else "moe"} for i in range(layers)
        ],
    }
    return model_from_dict(raw, "toy.json")


def cluster(memory: Sequence[int], speed: Sequence[int] | None = None) -> ClusterSpec:
    """One GPU per entry of ``memory`` (bytes), each its own node, all slow; ``speed``
    multiplies a GPU's 1 GB/s and 1 GFLOP/s."""
    speed = speed if speed is not None else [1] * len(memory)
    groups = [
        {
            "gpu": {
                "name": f"toy-gpu-x{k}",
                "memory_bytes": int(m),
                "hbm_bandwidth_gbps": k,
                "tflops": {"bf16": 0.001 * k},
            },
            "count": 1,
        }
        for m, k in zip(memory, speed, strict=True)
    ]
    return cluster_from_dict(
        {
            "format": "placer-hardware",
            "name": "toy",
            "groups": groups,
            "gpus_per_node": 1,
            "scale_up_domain": 1,
            "scale_up": {"bandwidth_gbps": 100, "latency_us": 1.0},
            "scale_out": {"bandwidth_gbps": 10, "latency_us": 5.0},
        },
        "toy-hw.json",
    )


WORKLOAD = Workload(
    batch=4, prompt_len=6, output_len=2, runtime_reserve_bytes=0, memory_utilization=1.0
)


def tables(
    model: ModelSpec,
    layout: Layout,
    memory: Sequence[int] | None = None,
    objective: str = "throughput",
    speed: Sequence[int] | None = None,
) -> LayoutTables:
    """Tables of ``layout``; ``memory`` per GPU (default: never binding), ``speed`` per GPU."""
    mem = list(memory) if memory is not None else [BIG] * layout.gpus
    return build_tables(model, cluster(mem, speed), WORKLOAD, layout, objective)


# ------------------------------------------------------------------ CP-SAT helpers


def _solve(model: cp_model.CpModel, **params: Any) -> tuple[Any, cp_model.CpSolver]:
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.max_time_in_seconds = 10.0
    for key, value in params.items():
        setattr(solver.parameters, key, value)
    return solver.solve(model), solver


@contextmanager
def assert_model_feasible(t: LayoutTables) -> Iterator[tuple[cp_model.CpModel, PlacementVars]]:
    """Like cpsat-utils' AssertModelFeasible: the sub-model built in the block must be feasible."""
    model = cp_model.CpModel()
    v = create_variables(model, t)
    yield model, v
    assert not model.validate(), model.validate()
    status, solver = _solve(model)
    assert status in (cp_model.OPTIMAL, cp_model.FEASIBLE), solver.status_name(status)


@contextmanager
def assert_model_infeasible(
    t: LayoutTables,
) -> Iterator[tuple[cp_model.CpModel, PlacementVars]]:
    """Like cpsat-utils' AssertModelInfeasible: the sub-model built in the block is infeasible."""
    model = cp_model.CpModel()
    v = create_variables(model, t)
    yield model, v
    assert not model.validate(), model.validate()
    status, solver = _solve(model)
    assert status == cp_model.INFEASIBLE, solver.status_name(status)


def force(model: cp_model.CpModel, v: PlacementVars, *names: str) -> None:
    """Switch the named families on (they must exist)."""
    for name in names:
        model.add(v.families[name] == 1)


def fix_stages(model: cp_model.CpModel, v: PlacementVars, stage_of: Sequence[int]) -> None:
    """Fix x[l, s] = 1 iff layer l is on stage stage_of[l] (ge is left to the model)."""
    for (i, s), x in v.x.items():
        model.add(x == int(stage_of[i] == s))


def fix_split(model: cp_model.CpModel, v: PlacementVars, split: tuple[int, ...]) -> None:
    """Fix x to the contiguous split given as layers per stage."""
    fix_stages(model, v, [s for s, k in enumerate(split) for _ in range(k)])


def fix_counts(model: cp_model.CpModel, v: PlacementVars, counts: np.ndarray) -> None:
    """Fix n[l, r] = counts[l, r] for every MoE layer."""
    for (i, r), n in v.n.items():
        model.add(n == int(counts[i, r]))


def splits(layers: int, pp: int) -> list[tuple[int, ...]]:
    """Every composition of ``layers`` into ``pp`` positive parts."""
    return [
        tuple(b - a for a, b in zip((0, *cuts), (*cuts, layers), strict=True))
        for cuts in itertools.combinations(range(1, layers), pp - 1)
    ]


def count_choices(t: LayoutTables) -> list[np.ndarray]:
    """Every slot-count matrix with floor/ceil counts per rank summing to the layer's slots."""
    ep = t.layout.ep
    per_layer: list[list[tuple[int, ...]]] = []
    for slots in t.slots:
        lo, hi = int(slots) // ep, -(-int(slots) // ep)
        per_layer.append(
            [c for c in itertools.product(range(lo, hi + 1), repeat=ep) if sum(c) == slots]
        )
    return [
        np.array(rows, dtype=np.int64).reshape(len(t.slots), ep)
        for rows in itertools.product(*per_layer)
    ]


def core_names(solver: cp_model.CpSolver, v: PlacementVars) -> set[str]:
    """Names of the families in CP-SAT's sufficient assumptions for infeasibility."""
    by_index = {lit.index: name for name, lit in v.families.items()}
    return {by_index[i] for i in solver.sufficient_assumptions_for_infeasibility()}


# ------------------------------------------------------------------ contiguous_stages

PP2 = Layout(pp=2)
PP3 = Layout(pp=3)


@pytest.mark.parametrize(
    ("layout", "stage_of"),
    [(PP2, [1, 0]), (PP2, [1, 1, 0]), (PP3, [0, 2, 1]), (PP3, [1, 0, 2])],
)
def test_contiguous_stages_rejects_out_of_order_layers(
    layout: Layout, stage_of: list[int]
) -> None:
    """A later layer on an earlier stage than its predecessor is infeasible."""
    t = tables(toy(layers=len(stage_of)), layout)
    with assert_model_infeasible(t) as (model, v):
        add_contiguous_stages(model, v, t)
        fix_stages(model, v, stage_of)
        force(model, v, "contiguous_stages")


@pytest.mark.parametrize(
    ("layout", "stage_of"),
    [(PP2, [0, 1]), (PP2, [0, 0, 1]), (PP2, [0, 1, 1]), (PP3, [0, 1, 2]), (PP3, [0, 0, 1, 2])],
)
def test_contiguous_stages_accepts_ordered_layers(layout: Layout, stage_of: list[int]) -> None:
    """Layers in stage order, each on one stage, are feasible."""
    t = tables(toy(layers=len(stage_of)), layout)
    with assert_model_feasible(t) as (model, v):
        add_contiguous_stages(model, v, t)
        fix_stages(model, v, stage_of)
        force(model, v, "contiguous_stages")


def test_contiguous_stages_literal_off_allows_any_order() -> None:
    """With its literal off the family constrains nothing: the out-of-order split is feasible."""
    t = tables(toy(layers=2), PP2)
    with assert_model_feasible(t) as (model, v):
        add_contiguous_stages(model, v, t)
        fix_stages(model, v, [1, 0])
        model.add(v.families["contiguous_stages"] == 0)


@pytest.mark.parametrize("on_stages", [(0, 1), ()])
def test_contiguous_stages_places_every_layer_exactly_once(on_stages: tuple[int, ...]) -> None:
    """A layer on two stages, or on none, is infeasible: x is a one-hot of the stage."""
    t = tables(toy(layers=2), PP2)
    with assert_model_infeasible(t) as (model, v):
        add_contiguous_stages(model, v, t)
        for s in range(2):
            model.add(v.x[0, s] == int(s in on_stages))
        force(model, v, "contiguous_stages")


def test_contiguous_stages_ge_matches_split() -> None:
    """With x fixed, ge[l, s] is 1 exactly when layer l sits on stage s or later."""
    t = tables(toy(layers=3), PP3)
    model = cp_model.CpModel()
    v = create_variables(model, t)
    add_contiguous_stages(model, v, t)
    fix_stages(model, v, [0, 1, 2])
    force(model, v, "contiguous_stages")
    status, solver = _solve(model)
    assert status == cp_model.OPTIMAL
    assert {k: solver.value(g) for k, g in v.ge.items()} == {
        (i, s): int(i >= s) for i in range(3) for s in range(3)
    }


# ------------------------------------------------------------------ nonempty_stages


def test_nonempty_stages_rejects_all_layers_on_stage_0() -> None:
    """pp=2 with every layer on stage 0 leaves stage 1 empty: infeasible."""
    t = tables(toy(layers=3), PP2)
    with assert_model_infeasible(t) as (model, v):
        add_contiguous_stages(model, v, t)
        fix_stages(model, v, [0, 0, 0])
        force(model, v, "nonempty_stages")


def test_nonempty_stages_is_what_rejects_the_empty_stage() -> None:
    """The same all-on-stage-0 assignment is contiguous, so contiguous_stages alone allows it."""
    t = tables(toy(layers=3), PP2)
    with assert_model_feasible(t) as (model, v):
        add_contiguous_stages(model, v, t)
        fix_stages(model, v, [0, 0, 0])
        force(model, v, "contiguous_stages")
        model.add(v.families["nonempty_stages"] == 0)


def test_nonempty_stages_accepts_every_stage_used() -> None:
    """Both families on with one layer on each of three stages is feasible."""
    t = tables(toy(layers=3), PP3)
    with assert_model_feasible(t) as (model, v):
        add_contiguous_stages(model, v, t)
        fix_stages(model, v, [0, 1, 2])
        force(model, v, "nonempty_stages", "contiguous_stages")


def test_nonempty_stages_core_names_the_family() -> None:
    """Explaining the empty stage 1 yields an assumptions core with nonempty_stages in it."""
    t = tables(toy(layers=2), PP2)
    model = cp_model.CpModel()
    v = create_variables(model, t)
    add_contiguous_stages(model, v, t)
    fix_stages(model, v, [0, 0])
    enforce_all(model, v, explain=True)
    status, solver = _solve(model)
    assert status == cp_model.INFEASIBLE
    assert "nonempty_stages" in core_names(solver, v)


# ------------------------------------------------------------------ expert_slots

EP2 = Layout(tp=2, ep=2)  # etp = 1: two EP ranks of one GPU each


@pytest.mark.parametrize(
    ("counts", "feasible"),
    [((2, 1), True), ((1, 2), True), ((1, 1), False), ((2, 2), False)],
)
def test_expert_slots_counts_must_sum_to_slots(counts: tuple[int, int], feasible: bool) -> None:
    """3 experts over ep=2: (2, 1) and (1, 2) place all 3 slots, (1, 1) and (2, 2) do not."""
    t = tables(toy(layers=2, experts=3), EP2)
    assert t.slots.tolist() == [3, 3]
    check = assert_model_feasible if feasible else assert_model_infeasible
    with check(t) as (model, v):
        add_expert_slots(model, v, t)
        model.add(v.n[0, 0] == counts[0])
        model.add(v.n[0, 1] == counts[1])
        force(model, v, "expert_slots")


def test_expert_slots_literal_off_allows_wrong_sum() -> None:
    """With expert_slots off, a layer may hold 2 of its 3 slots (the literal is what binds)."""
    t = tables(toy(layers=2, experts=3), EP2)
    with assert_model_feasible(t) as (model, v):
        add_expert_slots(model, v, t)
        model.add(v.n[0, 0] == 1)
        model.add(v.n[0, 1] == 1)
        model.add(v.families["expert_slots"] == 0)


@pytest.mark.parametrize(
    ("experts", "layout", "lo", "hi"),
    [
        (3, EP2, 1, 2),  # floor(3 / 2), ceil(3 / 2)
        (4, EP2, 2, 2),  # divisible: one value
        (3, Layout(tp=4, ep=4), 0, 1),  # 3 slots over 4 ranks: one rank empty
        (4, Layout(tp=4, ep=4, redundant_experts=2), 1, 2),  # 6 slots over 4 ranks
        (3, Layout(tp=1), 3, 3),  # ep=1: every slot on the one rank
    ],
)
def test_expert_slot_domains_are_floor_and_ceil(
    experts: int, layout: Layout, lo: int, hi: int
) -> None:
    """n[l, r] is created with domain [floor(slots/ep), ceil(slots/ep)]."""
    t = tables(toy(layers=2, experts=experts), layout)
    model = cp_model.CpModel()
    v = create_variables(model, t)
    assert len(v.n) == 2 * layout.ep
    for var in v.n.values():
        assert list(var.proto.domain) == [lo, hi]


@pytest.mark.parametrize("value", [0, 3])
def test_expert_slot_counts_outside_floor_ceil_are_impossible(value: int) -> None:
    """3 slots over ep=2: a rank with 0 or 3 slots is infeasible by domain alone (no family)."""
    t = tables(toy(layers=2, experts=3), EP2)
    with assert_model_infeasible(t) as (model, v):
        model.add(v.n[1, 0] == value)


def test_dense_layers_have_no_slot_variables() -> None:
    """A dense layer gets no n, q or v variables and zero slots."""
    t = tables(toy(layers=3, experts=3, dense=[1]), Layout(tp=2, ep=2, pp=3))
    model = cp_model.CpModel()
    v = create_variables(model, t)
    assert t.slots.tolist() == [3, 0, 3]
    assert {i for i, _ in v.n} == {0, 2}
    assert {i for i, _, _ in v.q} == {0, 2}
    assert {i for i, _ in v.v} == {0, 2}


# ------------------------------------------------------------------ memory

MEM_LAYOUT = Layout(tp=2, ep=2, pp=2)  # GPU s * 2 + r is EP rank r of stage s


def memory_model(
    t: LayoutTables, split: tuple[int, ...], counts: np.ndarray
) -> tuple[cp_model.CpModel, PlacementVars]:
    """x and n fixed to (split, counts), slot location and memory added, memory forced on."""
    model = cp_model.CpModel()
    v = create_variables(model, t)
    add_slot_location(model, v, t)
    add_memory(model, v, t)
    fix_split(model, v, split)
    fix_counts(model, v, counts)
    force(model, v, *(f"memory[stage {s}]" for s in range(t.layout.pp)))
    return model, v


def test_memory_exactly_one_of_two_splits_fits() -> None:
    """With capacity between the two splits' peaks, only the split with the smaller peak fits."""
    model_spec = toy(layers=3, experts=3)
    layout = Layout(pp=2)
    ref = tables(model_spec, layout)
    counts = balanced_counts(ref)
    peaks = {sp: int(memory_by_rank(ref, sp, counts).max()) for sp in [(1, 2), (2, 1)]}
    assert peaks[(1, 2)] != peaks[(2, 1)]
    cap = min(peaks.values())
    t = tables(model_spec, layout, [cap, cap])
    assert (t.cap == cap).all()
    for sp, peak in peaks.items():
        model, _ = memory_model(t, sp, counts)
        status, solver = _solve(model)
        if peak <= cap:
            assert status == cp_model.OPTIMAL, (sp, peak, cap)
        else:
            assert status == cp_model.INFEASIBLE, (sp, peak, cap, solver.status_name(status))


CELLS = [(s, r) for s in range(2) for r in range(2)]


@pytest.mark.parametrize("split", [(1, 2), (2, 1)])
@pytest.mark.parametrize("counts_row", [(2, 1), (1, 2)])
@pytest.mark.parametrize("cell", CELLS)
def test_memory_lhs_equals_memory_by_rank(
    split: tuple[int, int], counts_row: tuple[int, int], cell: tuple[int, int]
) -> None:
    """Per (stage, EP rank): capacity = memory_by_rank is feasible, one byte less is not."""
    model_spec = toy(layers=3, experts=3)
    ref = tables(model_spec, MEM_LAYOUT)
    counts = np.array([counts_row, counts_row[::-1], counts_row], dtype=np.int64)
    need = memory_by_rank(ref, split, counts)
    s, r = cell
    for slack, expect in ((0, cp_model.OPTIMAL), (-1, cp_model.INFEASIBLE)):
        memory = [BIG] * 4
        memory[s * 2 + r] = int(need[s, r]) + slack
        t = tables(model_spec, MEM_LAYOUT, memory)
        assert t.cap[s, r] == need[s, r] + slack
        model, _ = memory_model(t, split, counts)
        status, solver = _solve(model)
        assert status == expect, (cell, slack, solver.status_name(status))


def test_memory_core_names_the_overfull_stage() -> None:
    """An infeasible layout's assumptions core (explain=True, one worker) names memory[stage 1]."""
    model_spec = toy(layers=3, experts=3)
    ref = tables(model_spec, MEM_LAYOUT)
    counts = balanced_counts(ref)
    # Stage 1 GPUs cannot hold even one layer plus the last-stage bytes; stage 0 holds anything.
    smallest = min(int(memory_by_rank(ref, sp, counts)[1].min()) for sp in [(2, 1), (1, 2)])
    memory = [BIG, BIG, smallest - 1, smallest - 1]
    t = tables(model_spec, MEM_LAYOUT, memory)

    def full(explain: bool, off: str | None = None) -> tuple[Any, cp_model.CpSolver, Any]:
        model, v = build_model(t, "throughput")
        if off is not None:
            model.add(v.families[off] == 0)
            del v.families[off]
        enforce_all(model, v, explain=explain)
        status, solver = _solve(model)
        return status, solver, v

    # Precondition: without memory[stage 1] the layout is feasible, so every core must name it.
    status, _, _ = full(explain=False, off="memory[stage 1]")
    assert status == cp_model.OPTIMAL
    status, solver, v = full(explain=True)
    assert status == cp_model.INFEASIBLE
    names = core_names(solver, v)
    assert "memory[stage 1]" in names, names
    assert any(n.startswith("memory[stage ") for n in names)


def test_memory_core_of_a_layout_too_small_everywhere() -> None:
    """GPUs of 1 KB each: the layout is infeasible and its core names a memory family."""
    t = tables(toy(layers=2, experts=4), Layout(tp=2, ep=2, pp=2), [1000] * 4)
    model, v = build_model(t, "throughput")
    enforce_all(model, v, explain=True)
    status, solver = _solve(model)
    assert status == cp_model.INFEASIBLE
    assert any(n.startswith("memory[stage ") for n in core_names(solver, v))


# ------------------------------------------------------------------ stage time / objective

TIME_CASES = [
    (Layout(tp=2, ep=2, pp=2), 3),
    (Layout(pp=2), 3),
    (Layout(tp=2, ep=2, pp=3), 4),
]


@pytest.mark.parametrize("objective", ["throughput", "latency"])
@pytest.mark.parametrize(("layout", "layers"), TIME_CASES)
def test_stage_time_objective_equals_objective_ns(
    objective: str, layout: Layout, layers: int
) -> None:
    """With split and counts fixed, the solved objective is objective_ns, stage times too."""
    # Stage s runs on GPUs s + 1 times as fast, so every split costs something different.
    speed = [g // layout.stage_width + 1 for g in range(layout.gpus)]
    t = tables(toy(layers=layers, experts=3), layout, objective=objective, speed=speed)
    assert int(t.time_slot.min()) > 0 and int(t.time_layer.min()) > 0
    seen = set()
    for split in splits(layers, layout.pp):
        for counts in count_choices(t):
            model = cp_model.CpModel()
            v = create_variables(model, t)
            add_stage_time(model, v, t, objective)
            fix_split(model, v, split)
            fix_counts(model, v, counts)
            status, solver = _solve(model)
            assert status == cp_model.OPTIMAL, solver.status_name(status)
            expected = objective_ns(t, split, counts, objective)
            assert int(solver.objective_value) == expected, (split, counts.tolist())
            times = stage_times(t, split, counts)
            assert [solver.value(v.t[s]) for s in range(layout.pp)] == times.tolist()
            seen.add(expected)
    # The instance is not degenerate: different splits give different objectives.
    assert len(seen) > 1


def test_throughput_and_latency_objectives_differ_on_pp2() -> None:
    """pp=2: throughput is max(pp x slowest, sum), latency the sum; CP-SAT reproduces both."""
    t = tables(toy(layers=3, experts=3), Layout(pp=2))
    split, counts = (1, 2), balanced_counts(t)
    times = stage_times(t, split, counts)
    values = {}
    for objective in ("throughput", "latency"):
        model = cp_model.CpModel()
        v = create_variables(model, t)
        add_stage_time(model, v, t, objective)
        fix_split(model, v, split)
        fix_counts(model, v, counts)
        status, solver = _solve(model)
        assert status == cp_model.OPTIMAL
        values[objective] = int(solver.objective_value)
    assert values["latency"] == int(times.sum())
    assert values["throughput"] == max(2 * int(times.max()), int(times.sum()))
    assert values["throughput"] > values["latency"]


@pytest.mark.parametrize("objective", ["throughput", "latency"])
def test_full_model_with_fixed_decisions_matches_objective_ns(objective: str) -> None:
    """The whole model with x and n fixed solves to objective_ns and extract returns them."""
    layout = Layout(tp=2, ep=2, pp=2)
    t = tables(toy(layers=3, experts=3), layout, objective=objective)
    for split in splits(3, 2):
        for counts in count_choices(t):
            model, v = build_model(t, objective)
            enforce_all(model, v, explain=False)
            fix_split(model, v, split)
            fix_counts(model, v, counts)
            status, solver = _solve(model)
            assert status == cp_model.OPTIMAL
            assert int(solver.objective_value) == objective_ns(t, split, counts, objective)
            got_split, got_counts = extract(solver, v, t)
            assert got_split == split
            assert np.array_equal(got_counts, counts)


# ------------------------------------------------------------------ hint


@pytest.mark.parametrize("objective", ["throughput", "latency"])
@pytest.mark.parametrize(
    ("layout", "layers", "experts"),
    [
        (Layout(pp=2), 3, 3),
        (Layout(tp=2, ep=2, pp=2), 3, 3),
        (Layout(tp=2, ep=2, pp=2, redundant_experts=1), 4, 4),
        (Layout(tp=4, ep=4), 2, 3),
        (Layout(tp=2, ep=2, pp=3), 4, 3),
    ],
)
def test_heuristic_hint_is_a_feasible_complete_assignment(
    objective: str, layout: Layout, layers: int, experts: int
) -> None:
    """best_split + balanced_counts, fixed through add_hint, satisfy every family."""
    t = tables(toy(layers=layers, experts=experts), layout, objective=objective)
    counts = balanced_counts(t)
    split = best_split(t, counts)
    assert split is not None
    model, v = build_model(t, objective)
    enforce_all(model, v, explain=False)
    add_hint(model, v, t, split, counts, objective)
    status, solver = _solve(model, fix_variables_to_their_hinted_value=True)
    assert status in (cp_model.OPTIMAL, cp_model.FEASIBLE), solver.status_name(status)
    assert int(solver.objective_value) == objective_ns(t, split, counts, objective)
    assert extract(solver, v, t)[0] == split


def test_heuristic_hint_is_feasible_when_memory_binds() -> None:
    """With capacity set to the DP split's own peak, its hint is still feasible (tight fit)."""
    model_spec = toy(layers=4, experts=3)
    layout = Layout(tp=2, ep=2, pp=2)
    ref = tables(model_spec, layout)
    counts = balanced_counts(ref)
    split = best_split(ref, counts)
    assert split is not None
    peak = memory_by_rank(ref, split, counts)
    memory = [int(peak[g // 2, g % 2]) for g in range(4)]
    t = tables(model_spec, layout, memory)
    assert best_split(t, counts) == split
    model, v = build_model(t, "throughput")
    enforce_all(model, v, explain=False)
    add_hint(model, v, t, split, counts, "throughput")
    status, solver = _solve(model, fix_variables_to_their_hinted_value=True)
    assert status in (cp_model.OPTIMAL, cp_model.FEASIBLE), solver.status_name(status)
