"""The EPLB baseline: DeepSeek's README example exactly, and its invariants on random loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from placer.balance.bounds import lower_bound
from placer.balance.eplb import (
    balanced_packing,
    gpu_loads,
    imbalance,
    rebalance_experts,
    replicate_experts,
)
from placer.balance.loads import load_loads

ROOT = Path(__file__).resolve().parent.parent
LOADS = ROOT / "instances" / "loads"
SETTINGS = settings(max_examples=100, deadline=None, derandomize=True)

README_WEIGHT = np.array(
    [
        [90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
        [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27],
    ]
)
README_PHY2LOG = np.array(
    [
        [5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
        [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1],
    ]
)


def check_consistent(
    phy2log: np.ndarray, log2phy: np.ndarray, logcnt: np.ndarray, num_experts: int, R: int
) -> None:
    """phy2log, log2phy and logcnt describe the same placement; every expert has a slot."""
    layers = phy2log.shape[0]
    assert phy2log.shape == (layers, R)
    assert log2phy.shape == (layers, num_experts, R - num_experts + 1)
    assert logcnt.shape == (layers, num_experts)
    for layer in range(layers):
        row = phy2log[layer]
        assert row.min() >= 0 and row.max() < num_experts
        np.testing.assert_array_equal(logcnt[layer], np.bincount(row, minlength=num_experts))
        assert logcnt[layer].min() >= 1 and logcnt[layer].sum() == R
        slots = []
        for e in range(num_experts):
            mine = log2phy[layer, e]
            count = int(logcnt[layer, e])
            assert (mine[:count] >= 0).all() and (mine[count:] == -1).all()
            assert (row[mine[:count]] == e).all()
            slots.extend(mine[:count].tolist())
        assert sorted(slots) == list(range(R))


# -- the published example ------------------------------------------------------------------


def test_readme_example_exact() -> None:
    """R=16, G=4, 2 nodes, 8 GPUs: phy2log equals the one printed in EPLB's README."""
    phy2log, log2phy, logcnt = rebalance_experts(README_WEIGHT, 16, 4, 2, 8)
    np.testing.assert_array_equal(phy2log, README_PHY2LOG)
    check_consistent(phy2log, log2phy, logcnt, 12, 16)


def test_readme_example_scores_match_design_notes() -> None:
    """Imbalances and bounds on the README example match the design notes' table (3 digits)."""
    w = README_WEIGHT.astype(float)
    hier, _, _ = rebalance_experts(w, 16, 4, 2, 8)
    flat, _, _ = rebalance_experts(w, 16, 1, 1, 8)
    hier_imb = [imbalance(w[i], hier[i], 8) for i in range(2)]
    flat_imb = [imbalance(w[i], flat[i], 8) for i in range(2)]
    reports = [lower_bound(w[i], 16, 8, policy="node", G=4, N=2) for i in range(2)]
    group = [r.bounds["group_local"] / r.mean for r in reports]
    pigeon = [max(r.bounds["pigeon"], r.mean) / r.mean for r in reports]
    assert (round(float(np.mean(hier_imb)), 3), round(max(hier_imb), 3)) == (1.225, 1.242)
    assert (round(float(np.mean(flat_imb)), 3), round(max(flat_imb), 3)) == (1.131, 1.190)
    assert (round(float(np.mean(group)), 3), round(max(group), 3)) == (1.163, 1.190)
    assert (round(float(np.mean(pigeon)), 3), round(max(pigeon), 3)) == (1.043, 1.087)


def test_global_policy_when_groups_do_not_divide_nodes() -> None:
    """G % N != 0 selects the global policy, the same as G = N = 1."""
    a = rebalance_experts(README_WEIGHT, 16, 3, 2, 8)
    b = rebalance_experts(README_WEIGHT, 16, 1, 1, 8)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


# -- the building blocks --------------------------------------------------------------------


def test_balanced_packing_lpt_and_ties() -> None:
    """LPT with equal pack sizes; equal loads fill packs in ascending order, lowest pack first."""
    pack, rank = balanced_packing([1.0, 1.0, 1.0, 1.0], 2)
    np.testing.assert_array_equal(pack, [0, 1, 0, 1])
    np.testing.assert_array_equal(rank, [0, 0, 1, 1])
    pack, rank = balanced_packing([[5.0, 1.0, 4.0, 2.0, 3.0, 3.0]], 3)
    # 5 -> p0, 4 -> p1, 3 -> p2, 3 -> p2 (3 < 4 < 5), 2 -> p1 (p2 full), 1 -> p0.
    np.testing.assert_array_equal(pack, [[0, 0, 1, 1, 2, 2]])
    np.testing.assert_array_equal(rank, [[0, 1, 0, 1, 0, 1]])


def test_balanced_packing_one_item_per_pack_is_identity() -> None:
    """With one item per pack, item i goes to pack i without sorting."""
    pack, rank = balanced_packing([1.0, 9.0, 3.0], 3)
    np.testing.assert_array_equal(pack, [0, 1, 2])
    np.testing.assert_array_equal(rank, [0, 0, 0])


def test_replicate_experts_water_filling() -> None:
    """Extra slots go to the expert with the heaviest replicas, one at a time."""
    phy2log, rank, counts = replicate_experts([12.0, 5.0, 4.0], 6)
    # Slot 3: 12 is heaviest (expert 0 -> 6 each); slot 4: 6 > 5 (-> 4 each); slot 5: 5.
    np.testing.assert_array_equal(phy2log, [0, 1, 2, 0, 0, 1])
    np.testing.assert_array_equal(rank, [0, 0, 0, 1, 2, 1])
    np.testing.assert_array_equal(counts, [3, 2, 1])
    two = replicate_experts([[12.0, 5.0, 4.0], [1.0, 1.0, 9.0]], 4)
    np.testing.assert_array_equal(two[0], [[0, 1, 2, 0], [0, 1, 2, 2]])


def test_gpu_loads_and_imbalance() -> None:
    """Each replica carries w/c; GPU of slot p is p // (R/P); imbalance is max over mean."""
    loads = gpu_loads([6.0, 2.0], [0, 1, 0, 0], 2)
    np.testing.assert_allclose(loads, [4.0, 4.0])
    assert imbalance([6.0, 2.0], [1, 0], 2) == pytest.approx(6.0 / 4.0)
    assert imbalance([0.0, 0.0], [0, 1], 2) == 1.0


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: rebalance_experts(README_WEIGHT, 15, 4, 2, 8), "multiple of num_gpus"),
        (lambda: rebalance_experts(README_WEIGHT, 8, 4, 2, 8), "at least the number of experts"),
        (lambda: rebalance_experts(README_WEIGHT, 16, 8, 2, 8), "multiple of num_groups"),
        (lambda: rebalance_experts(README_WEIGHT, 18, 4, 4, 6), "multiple of num_nodes"),
        (lambda: rebalance_experts(README_WEIGHT[0], 16, 4, 2, 8), "2-D"),
        (lambda: rebalance_experts(-README_WEIGHT, 16, 4, 2, 8), "non-negative"),
        (lambda: rebalance_experts(README_WEIGHT, 16, 0, 2, 8), "positive"),
        (lambda: balanced_packing([1.0, 2.0, 3.0], 2), "evenly"),
        (lambda: replicate_experts([1.0, 2.0, 3.0], 2), "at least the number of experts"),
        (lambda: gpu_loads([1.0, 2.0], [0, 0], 2), "no replica"),
        (lambda: gpu_loads([1.0, 2.0], [0, 1, 1], 2), "evenly"),
    ],
)
def test_bad_arguments_raise_value_error(call, fragment: str) -> None:  # type: ignore[no-untyped-def]
    """EPLB's assertions become ValueError naming the condition."""
    with pytest.raises(ValueError, match=fragment):
        call()


# -- invariants on random inputs ------------------------------------------------------------


@st.composite
def eplb_case(draw: st.DrawFn) -> tuple[np.ndarray, int, int, int, int]:
    """Random loads and sizes EPLB accepts; sometimes G % N != 0 (global policy)."""
    N = draw(st.sampled_from([1, 2, 4]))
    if draw(st.booleans()) or N == 1:
        G = N * draw(st.integers(1, 2))
    else:
        G = draw(st.sampled_from([g for g in (1, 3, 5, 6) if g % N]))
    E = G * draw(st.integers(1, 4))
    P = N * draw(st.integers(1, 3))
    R = P * (-(-E // P) + draw(st.integers(0, 2)))
    layers = draw(st.integers(1, 3))
    values = st.one_of(st.integers(0, 1000).map(float), st.floats(0, 1000, allow_nan=False))
    w = np.array(draw(st.lists(values, min_size=E * layers, max_size=E * layers)))
    return w.reshape(layers, E), R, G, N, P


@SETTINGS
@given(eplb_case())
def test_invariants_on_random_loads(case: tuple[np.ndarray, int, int, int, int]) -> None:
    """Every expert has a replica, counts sum to R, maps agree, R/P slots fill each GPU."""
    w, R, G, N, P = case
    phy2log, log2phy, logcnt = rebalance_experts(w, R, G, N, P)
    check_consistent(phy2log, log2phy, logcnt, w.shape[1], R)
    for layer in range(w.shape[0]):
        loads = gpu_loads(w[layer], phy2log[layer], P)
        assert loads.shape == (P,)
        assert loads.sum() == pytest.approx(w[layer].sum())


@SETTINGS
@given(eplb_case().filter(lambda c: c[2] % c[3] == 0))
def test_hierarchical_keeps_groups_on_one_node(
    case: tuple[np.ndarray, int, int, int, int],
) -> None:
    """Hierarchical policy: each group's replicas sit on one node, G/N groups per node."""
    w, R, G, N, P = case
    phy2log, _, _ = rebalance_experts(w, R, G, N, P)
    group_size = w.shape[1] // G
    node_of_slot = np.arange(R) // (R // N)
    for row in phy2log:
        node_of_group: dict[int, set[int]] = {}
        for slot, expert in enumerate(row):
            node_of_group.setdefault(int(expert) // group_size, set()).add(int(node_of_slot[slot]))
        assert all(len(nodes) == 1 for nodes in node_of_group.values())
        per_node = np.bincount([next(iter(n)) for n in node_of_group.values()], minlength=N)
        assert (per_node == G // N).all()


@SETTINGS
@given(eplb_case())
def test_imbalance_never_below_lower_bound(case: tuple[np.ndarray, int, int, int, int]) -> None:
    """EPLB's max GPU load is at least the lower bound for its own policy."""
    w, R, G, N, P = case
    phy2log, _, _ = rebalance_experts(w, R, G, N, P)
    hierarchical = G % N == 0
    for layer in range(w.shape[0]):
        if hierarchical:
            report = lower_bound(w[layer], R, P, policy="node", G=G, N=N)
        else:
            report = lower_bound(w[layer], R, P)
        top = gpu_loads(w[layer], phy2log[layer], P).max()
        assert top >= report.value * (1 - 1e-9) - 1e-9
        assert imbalance(w[layer], phy2log[layer], P) >= report.imbalance * (1 - 1e-9)


# -- the bundled load sets ------------------------------------------------------------------


def test_deepseek_synthetic_eplb_close_to_bounds() -> None:
    """DeepSeek-V3-like loads, R=288 on 4 nodes x 8 GPUs: EPLB sits above and near the bounds."""
    w = load_loads(LOADS / "deepseek-v3-synthetic.json").array()[:4]
    hier, _, _ = rebalance_experts(w, 288, 8, 4, 32)
    flat, _, _ = rebalance_experts(w, 288, 1, 1, 32)
    for layer in range(w.shape[0]):
        node = lower_bound(w[layer], 288, 32, policy="node", G=8, N=4)
        flat_bound = lower_bound(w[layer], 288, 32)
        hier_imb = imbalance(w[layer], hier[layer], 32)
        flat_imb = imbalance(w[layer], flat[layer], 32)
        assert node.imbalance <= hier_imb <= node.imbalance * 1.1
        assert flat_bound.imbalance <= flat_imb <= flat_bound.imbalance * 1.05


def test_real_olmoe_loads_run_through_eplb() -> None:
    """OLMoE's real counts (64 experts, 8 redundant slots on 8 GPUs) stay above the bound."""
    stats = load_loads(LOADS / "olmoe-arxiv.json")
    w = stats.array()
    phy2log, log2phy, logcnt = rebalance_experts(w, 72, 1, 1, 8)
    check_consistent(phy2log, log2phy, logcnt, 64, 72)
    for layer in range(w.shape[0]):
        bound = lower_bound(w[layer], 72, 8)
        assert imbalance(w[layer], phy2log[layer], 8) >= bound.imbalance * (1 - 1e-12)
