"""Lower bounds on the max GPU load: never above a brute-force optimum, tight where expected.

The brute force enumerates every replica count vector and every assignment of the replicas
to GPUs (exactly S/P per GPU) on tiny instances; for the node policy it also enumerates every
split of the groups over the nodes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from placer.balance import bounds
from placer.balance.bounds import (
    BoundReport,
    group_local_bound,
    hot_gpu_bound,
    lower_bound,
    mean_bound,
    num_group_splits,
    pigeon_bound,
    replica_bound,
    water_fill,
)

TOL = 1e-9
SETTINGS = settings(max_examples=100, deadline=None, derandomize=True)


# -- brute force --------------------------------------------------------------------------


def compositions(total: int, parts: int) -> Iterator[tuple[int, ...]]:
    """Every tuple of ``parts`` integers >= 1 summing to ``total``."""
    for cuts in itertools.combinations(range(1, total), parts - 1):
        bounds_ = (0, *cuts, total)
        yield tuple(bounds_[i + 1] - bounds_[i] for i in range(parts))


@cache
def best_packing(items: tuple[float, ...], bins: int) -> float:
    """Smallest max bin sum over all ways to put the items, len/bins per bin."""
    cap = len(items) // bins
    order = sorted(items, reverse=True)
    best = float("inf")
    loads = [0.0] * bins
    sizes = [0] * bins

    def place(i: int) -> None:
        nonlocal best
        if i == len(order):
            best = min(best, max(loads))
            return
        seen: set[tuple[float, int]] = set()
        for b in range(bins):
            state = (loads[b], sizes[b])
            if sizes[b] == cap or state in seen:
                continue
            seen.add(state)
            loads[b] += order[i]
            sizes[b] += 1
            if max(loads) < best:
                place(i + 1)
            loads[b] -= order[i]
            sizes[b] -= 1

    place(0)
    return best


def brute_optimum(w: list[float], S: int, P: int) -> float:
    """The true min over counts and assignments of the max GPU load."""
    best = float("inf")
    for c in compositions(S, len(w)):
        items = tuple(sorted(x / k for x, k in zip(w, c, strict=True) for _ in range(k)))
        best = min(best, best_packing(items, P))
    return best


def brute_group_local(w: list[float], S: int, P: int, G: int, N: int) -> float:
    """The true optimum over placements keeping each group on one node, G/N groups per node."""
    size = len(w) // G
    groups = [w[g * size : (g + 1) * size] for g in range(G)]
    per = G // N
    best = float("inf")
    for labels in itertools.product(range(N), repeat=G):
        if any(labels.count(n) != per for n in range(N)):
            continue
        worst = 0.0
        for n in range(N):
            sub = [x for g in range(G) if labels[g] == n for x in groups[g]]
            worst = max(worst, brute_optimum(sub, S // N, P // N))
        best = min(best, worst)
    return best


@st.composite
def tiny(draw: st.DrawFn) -> tuple[list[float], int, int]:
    """E <= 5 experts, P <= 3 GPUs, S/P <= 2 slots per GPU, S >= E."""
    P = draw(st.integers(1, 3))
    s = draw(st.integers(1, 2))
    E = draw(st.integers(1, min(5, s * P)))
    w = draw(
        st.lists(
            st.one_of(st.integers(0, 30).map(float), st.floats(0, 30, allow_nan=False)),
            min_size=E,
            max_size=E,
        )
    )
    return w, s * P, P


@st.composite
def tiny_grouped(draw: st.DrawFn) -> tuple[list[float], int, int, int, int]:
    """A tiny instance with G groups on N nodes (G % N == 0, P % N == 0)."""
    N = draw(st.sampled_from([1, 2]))
    G = N * draw(st.integers(1, 2))
    size = draw(st.integers(1, max(1, 4 // G)))
    E = G * size
    least = -(-E // (2 * N))  # GPUs per node for at most 2 slots per GPU
    P = N * draw(st.integers(least, max(least, 2)))
    s = draw(st.integers(-(-E // P), 2))
    w = draw(st.lists(st.integers(0, 20).map(float), min_size=E, max_size=E))
    return w, s * P, P, G, N


# -- validity against brute force -----------------------------------------------------------


@SETTINGS
@given(tiny())
def test_global_bounds_never_exceed_brute_force(case: tuple[list[float], int, int]) -> None:
    """Every global bound is at most the brute-force optimum on random tiny instances."""
    w, S, P = case
    opt = brute_optimum(w, S, P)
    report = lower_bound(w, S, P)
    for name, value in report.bounds.items():
        assert value <= opt * (1 + TOL) + TOL, (name, value, opt)
    assert report.value == max(report.bounds.values())


@SETTINGS
@given(tiny_grouped())
def test_group_local_bound_never_exceeds_brute_force(
    case: tuple[list[float], int, int, int, int],
) -> None:
    """The group-local bound is at most the best group-local placement found by brute force."""
    w, S, P, G, N = case
    opt = brute_group_local(w, S, P, G, N)
    report = lower_bound(w, S, P, policy="node", G=G, N=N)
    assert report.bounds["group_local"] <= opt * (1 + TOL) + TOL
    assert report.value <= opt * (1 + TOL) + TOL


@SETTINGS
@given(tiny())
def test_replica_bound_is_exact(case: tuple[list[float], int, int]) -> None:
    """Water-filling finds the true min over count vectors of the heaviest replica."""
    w, S, _ = case
    exact = min(max(x / k for x, k in zip(w, c, strict=True)) for c in compositions(S, len(w)))
    assert replica_bound(w, S) == pytest.approx(exact, rel=1e-12, abs=1e-12)
    counts = water_fill(w, S)
    assert counts.sum() == S and counts.min() >= 1


@SETTINGS
@given(tiny())
def test_pigeon_at_least_replica(case: tuple[list[float], int, int]) -> None:
    """The pigeon bound includes the k = 0 test, so it is never below the replica bound."""
    w, S, P = case
    assert pigeon_bound(w, S, P) >= replica_bound(w, S) * (1 - TOL)


@pytest.mark.parametrize(("E", "S", "P", "top"), [(4, 4, 2, 4), (3, 4, 2, 4), (5, 6, 3, 3)])
def test_bounds_valid_on_exhaustive_grid(E: int, S: int, P: int, top: int) -> None:
    """On every small-integer load vector the best bound is at most the optimum."""
    for w in itertools.product(range(top), repeat=E):
        opt = brute_optimum(list(map(float, w)), S, P)
        assert lower_bound(w, S, P).value <= opt + TOL, w


# -- tight where expected -------------------------------------------------------------------


def test_mean_bound_tight_for_uniform_loads() -> None:
    """Equal loads, one slot per expert: the mean is the optimum and is the reported bound."""
    w = [3.0, 3.0, 3.0, 3.0]
    report = lower_bound(w, 4, 2)
    assert brute_optimum(w, 4, 2) == report.value == 6.0
    assert report.which == "mean" and report.imbalance == 1.0


def test_replica_bound_tight_for_one_hot_expert() -> None:
    """One GPU slot each: the hot expert's split replica decides the optimum."""
    w = [10.0, 1.0, 1.0]
    report = lower_bound(w, 4, 4)
    assert brute_optimum(w, 4, 4) == report.value == 5.0
    assert report.which == "replica"


def test_hot_gpu_bound_tight_without_redundancy() -> None:
    """S == E: the heaviest expert's GPU also holds the lightest; the bound is the optimum."""
    w = [5.0, 1.0, 1.0, 1.0]
    assert hot_gpu_bound(w, 4, 2) == 6.0 == brute_optimum(w, 4, 2)
    assert lower_bound(w, 4, 2).which == "hot_gpu"


def test_pigeon_bound_beats_trivial_bounds() -> None:
    """Five equal experts on 3 GPUs x 2 slots: pigeonhole proves 2 where mean gives 5/3."""
    w = [1.0] * 5
    assert mean_bound(w, 3) == pytest.approx(5 / 3)
    assert replica_bound(w, 6) == 1.0
    assert pigeon_bound(w, 6, 3) == 2.0 == brute_optimum(w, 6, 3)
    assert lower_bound(w, 6, 3).which == "pigeon"


def test_group_local_bound_tight_on_small_example() -> None:
    """Two groups on two nodes, one GPU each: the node holding the hot group decides."""
    w = [6.0, 2.0, 1.0, 1.0]
    value = group_local_bound(w, 4, 2, G=2, N=2)
    assert value == 8.0 == brute_group_local(w, 4, 2, 2, 2)
    assert lower_bound(w, 4, 2, policy="node", G=2, N=2).which == "group_local"


def test_zero_loads_give_zero_bounds() -> None:
    """All-zero loads: every bound is 0 and the imbalance reads 1."""
    report = lower_bound([0.0, 0.0, 0.0, 0.0], 8, 4, policy="node", G=2, N=2)
    assert report.value == 0.0 and report.imbalance == 1.0


# -- fallbacks ------------------------------------------------------------------------------


@SETTINGS
@given(tiny())
def test_pigeon_real_bisection_never_above_exact(
    case: tuple[list[float], int, int],
) -> None:
    """The real-valued bisection (for huge instances) returns at most the exact threshold."""
    w, S, P = case
    exact = pigeon_bound(w, S, P)
    old = bounds._MAX_CANDIDATES
    bounds._MAX_CANDIDATES = 0
    try:
        approx = pigeon_bound(w, S, P)
    finally:
        bounds._MAX_CANDIDATES = old
    assert approx <= exact * (1 + TOL) + TOL
    assert approx >= exact * (1 - 1e-6) - TOL


def test_group_local_fallback_is_weaker_but_valid() -> None:
    """With enumeration switched off the fallback bound is below the exact split bound."""
    rng = np.random.default_rng(1)
    for _ in range(20):
        w = rng.gamma(0.7, 10.0, size=16)
        exact = group_local_bound(w, 24, 8, G=8, N=4)
        old = bounds.MAX_SPLITS
        bounds.MAX_SPLITS = 0
        try:
            weak = group_local_bound(w, 24, 8, G=8, N=4)
        finally:
            bounds.MAX_SPLITS = old
        assert weak <= exact * (1 + TOL)


def test_num_group_splits() -> None:
    """105 ways to pair 8 groups onto 4 nodes, 3 for 4 groups on 2 nodes, 1 for one node."""
    assert num_group_splits(8, 4) == 105
    assert num_group_splits(4, 2) == 3
    assert num_group_splits(8, 1) == 1


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: lower_bound([1.0, 2.0], 3, 2), "multiple of P"),
        (lambda: lower_bound([1.0, 2.0, 3.0], 2, 2), "at least the number of experts"),
        (lambda: lower_bound([1.0, -2.0], 2, 2), "non-negative"),
        (lambda: lower_bound([1.0, float("nan")], 2, 2), "finite"),
        (lambda: lower_bound([[1.0, 2.0]], 2, 2), "1-D"),
        (lambda: hot_gpu_bound([1.0, 2.0], 4, 2), "S == E"),
        (lambda: lower_bound([1.0, 2.0], 2, 2, policy="node"), "needs G"),
        (lambda: group_local_bound([1.0, 2.0, 3.0], 4, 2, G=2, N=2), "multiple of G"),
        (lambda: group_local_bound([1.0, 2.0, 3.0, 4.0], 4, 2, G=2, N=4), "multiple of N"),
        (lambda: lower_bound([1.0, 2.0], 2, 2, policy="bogus"), "policy"),  # type: ignore[arg-type]
    ],
)
def test_bad_arguments_raise_value_error(call, fragment: str) -> None:  # type: ignore[no-untyped-def]
    """Sizes the slot model cannot hold raise ValueError saying which condition failed."""
    with pytest.raises(ValueError, match=fragment):
        call()


def test_bound_report_is_frozen() -> None:
    """BoundReport is an immutable record."""
    report = lower_bound([4.0, 1.0], 2, 2)
    assert isinstance(report, BoundReport)
    with pytest.raises(ValueError):
        report.value = 0.0  # type: ignore[misc]
