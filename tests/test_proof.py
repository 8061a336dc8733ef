"""placer.proof against brute force: on small random layout tables, ``any_fit`` and
``layout_optimum`` agree with trying every split and every choice of ranks for the extra
slots (one size of slot, and several)."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from placer.layout import Layout
from placer.proof import any_fit, layout_optimum
from placer.search.tables import LayoutTables, memory_by_rank, objective_ns


def _splits(n: int, pp: int) -> list[tuple[int, ...]]:
    """Every way to cut n layers into pp non-empty contiguous stages."""
    out = []
    for cuts in itertools.combinations(range(1, n), pp - 1):
        bounds = (0, *cuts, n)
        out.append(tuple(bounds[i + 1] - bounds[i] for i in range(pp)))
    return out


def _count_choices(t: LayoutTables) -> list[np.ndarray]:
    """Every slot-count matrix: lo per rank, plus one on k distinct ranks per layer."""
    ep = t.layout.ep
    per_layer = []
    for s in t.slots:
        lo, k = divmod(int(s), ep)
        rows = []
        for extra in itertools.combinations(range(ep), k):
            row = np.full(ep, lo, dtype=np.int64)
            row[list(extra)] += 1
            rows.append(row)
        per_layer.append(rows)
    return [np.array(rows) for rows in itertools.product(*per_layer)]


def _brute(t: LayoutTables, objective: str) -> int | None:
    best = None
    choices = _count_choices(t)
    for split in _splits(len(t.base), t.layout.pp):
        for counts in choices:
            if np.all(memory_by_rank(t, split, counts) <= t.cap):
                value = objective_ns(t, split, counts, objective)
                best = value if best is None else min(best, value)
                break  # the objective depends on the split alone
    return best


@st.composite
def tables(draw: st.DrawFn) -> LayoutTables:
    """Small tables: up to 5 layers, 3 stages, 3 EP ranks, tight random capacities."""
    n = draw(st.integers(1, 5))
    pp = draw(st.integers(1, min(3, n)))
    ep = draw(st.integers(1, 3))
    layout = Layout(tp=1, pp=pp, ep=ep, etp=1, dp_attn=ep)
    one_size = draw(st.booleans())
    size = draw(st.integers(1, 6))
    ints = st.integers(0, 9)
    unit = np.array([size if one_size else draw(st.integers(1, 6)) for _ in range(n)])
    experts = np.array([draw(st.sampled_from([0, ep, ep + 1, 2 * ep - 1])) for _ in range(n)])
    slots = experts.copy()
    unit = np.where(slots > 0, unit, 0)
    return LayoutTables(
        layout=layout,
        base=np.array([draw(ints) for _ in range(n)], dtype=np.int64),
        unit=unit.astype(np.int64),
        slots=slots.astype(np.int64),
        experts=experts.astype(np.int64),
        first=draw(ints),
        last=draw(ints),
        act=np.array([draw(ints) for _ in range(pp)], dtype=np.int64),
        reserve=draw(st.integers(0, 3)),
        cap=np.array([[draw(st.integers(5, 40)) for _ in range(ep)] for _ in range(pp)]),
        time_layer=np.array([[draw(st.integers(1, 50)) for _ in range(pp)] for _ in range(n)]),
        time_slot=np.array([[draw(st.integers(0, 20)) for _ in range(pp)] for _ in range(n)]),
        time_last=np.array([draw(st.integers(0, 30)) for _ in range(pp)], dtype=np.int64),
        handoff=np.array([draw(st.integers(0, 10)) for _ in range(pp)], dtype=np.int64),
    )


@settings(max_examples=200, deadline=None, derandomize=True)
@given(t=tables(), objective=st.sampled_from(["throughput", "latency"]))
def test_exact_check_matches_brute_force(t: LayoutTables, objective: str) -> None:
    """Feasibility and the optimum equal the brute force's, and the split it names fits
    and reaches that optimum."""
    want = _brute(t, objective)
    fits, exact = any_fit(t)
    opt = layout_optimum(t, objective)
    assert exact and opt.exact
    assert fits == (want is not None)
    assert opt.value == want
    if opt.split is not None:
        assert sum(opt.split) == len(t.base) and min(opt.split) >= 1
        assert any(
            np.all(memory_by_rank(t, opt.split, c) <= t.cap)
            and objective_ns(t, opt.split, c, objective) == want
            for c in _count_choices(t)
        )


def test_undecided_search_is_reported_inexact(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """When the slot search for several slot sizes runs out of nodes, the stage counts as
    fitting and the answer is marked inexact (verify then lists it under 'trusted')."""
    from placer import proof

    layout = Layout(tp=1, pp=1, ep=3, etp=1, dp_attn=3)
    t = LayoutTables(
        layout=layout,
        base=np.zeros(2, dtype=np.int64),
        unit=np.array([3, 2], dtype=np.int64),
        slots=np.array([4, 5], dtype=np.int64),
        experts=np.array([4, 5], dtype=np.int64),
        first=0,
        last=0,
        act=np.zeros(1, dtype=np.int64),
        reserve=0,
        cap=np.array([[12, 12, 12]]),
        time_layer=np.ones((2, 1), dtype=np.int64),
        time_slot=np.ones((2, 1), dtype=np.int64),
        time_last=np.zeros(1, dtype=np.int64),
        handoff=np.zeros(1, dtype=np.int64),
    )
    monkeypatch.setattr(proof, "SEARCH_NODES", 0)
    fits, exact = any_fit(t)
    assert fits and not exact
    assert not layout_optimum(t, "latency").exact
