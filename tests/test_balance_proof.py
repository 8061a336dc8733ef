"""`placer balance` claims checked against brute force, duplicates, budgets and determinism.

The brute force below shares no code with ``placer.balance``: it enumerates every count
vector and every multiset of GPU contents of small random layers, so a "proven" layer must
match its optimum exactly and every bound must stay below it.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from placer.balance.completion import companion_bound, complete
from placer.balance.count_search import count_search
from placer.balance.eplb import rebalance_experts
from placer.balance.exact import Scaled, exchange, scaled, window_search
from placer.balance.loads import LoadStats, load_loads
from placer.balance.placement import bounded_compositions, count_vectors
from placer.balance.synthetic import synthetic_loads
from placer.balance.whole_model import balance, balance_layer
from placer.budget import Budget

from .helpers import run_cli


def _count_vectors(experts: int, slots: int, cap: int) -> Iterator[tuple[int, ...]]:
    for c in itertools.product(range(1, cap + 1), repeat=experts):
        if sum(c) == slots:
            yield c


def brute_force_optimum(w: np.ndarray, gpus: int, slots: int, duplicates: bool) -> float:
    """The least busiest-GPU load over every placement (exhaustive)."""
    per_gpu = slots // gpus
    experts = w.size
    pick = itertools.combinations_with_replacement if duplicates else itertools.combinations
    contents = list(pick(range(experts), per_gpu))
    cap = slots - experts + 1 if duplicates else min(gpus, slots - experts + 1)
    best = math.inf
    for c in _count_vectors(experts, slots, cap):
        load = [sum(w[e] / c[e] for e in pat) for pat in contents]
        for choice in itertools.combinations_with_replacement(range(len(contents)), gpus):
            peak = max(load[i] for i in choice)
            if peak >= best:
                continue
            held = Counter(e for i in choice for e in contents[i])
            if all(held[e] == c[e] for e in range(experts)):
                best = peak
    return best


SMALL_CASES = [
    (experts, gpus, per_gpu, seed)
    for experts, gpus, per_gpu in (
        (3, 2, 2), (3, 3, 2), (4, 2, 3), (4, 3, 2), (5, 3, 2), (4, 2, 4)
    )
    for seed in range(4)
]


@pytest.mark.parametrize(("experts", "gpus", "per_gpu", "seed"), SMALL_CASES)
@pytest.mark.parametrize("duplicates", [False, True])
def test_proven_claims_match_brute_force(
    experts: int, gpus: int, per_gpu: int, seed: int, duplicates: bool
) -> None:
    """Every bound is below the exhaustive optimum, every placement above it, and a layer
    marked proven sits exactly on it."""
    slots = gpus * per_gpu
    if slots < experts:
        pytest.skip("fewer slots than experts")
    w, opt = _small_case(experts, gpus, per_gpu, seed, duplicates)
    mean = w.sum() / gpus
    budget = Budget(600.0, deterministic=True)
    row, counts, q = balance_layer(
        w, gpus, 1, slots, None, "global", allow_duplicates=duplicates, budget=budget,
        seconds=5.0,
    )
    assert np.array_equal(np.bincount(row, minlength=experts), counts)
    assert np.all(counts >= 1) and row.size == slots
    if not duplicates:
        assert all(len(set(g)) == per_gpu for g in row.reshape(gpus, per_gpu).tolist())
    loads = (w[row] / counts[row]).reshape(gpus, per_gpu).sum(axis=1)
    assert q.imbalance == pytest.approx(loads.max() / mean, rel=1e-12)
    assert q.bound <= opt / mean + 1e-9
    assert q.imbalance >= opt / mean - 1e-9
    # These layers are tiny: the whole-layer model must close them within its budget.
    assert q.proven
    assert q.imbalance == pytest.approx(opt / mean, rel=1e-9)


@functools.cache
def _small_case(
    experts: int, gpus: int, per_gpu: int, seed: int, duplicates: bool
) -> tuple[np.ndarray, float]:
    """A small random layer (whole-number loads) and its exhaustive optimum."""
    rng = np.random.default_rng(seed)
    w = rng.integers(1, 60, size=experts).astype(np.float64)
    return w, brute_force_optimum(w, gpus, gpus * per_gpu, duplicates)


def _dealt(counts: np.ndarray, gpus: int, per_gpu: int) -> np.ndarray:
    """Replicas dealt round-robin: a poor but valid start (no duplicates for counts <= gpus)."""
    reps = np.repeat(np.arange(counts.size), counts)
    return reps.reshape(per_gpu, gpus).T.copy()


def _scaled_start(
    experts: int, gpus: int, per_gpu: int, seed: int, duplicates: bool
) -> tuple[np.ndarray, float, Scaled, np.ndarray, np.ndarray]:
    """A small layer, its optimum, its scaled form, and a poor start: the first count vector,
    dealt round-robin (skips the test when there are fewer slots than experts)."""
    slots = gpus * per_gpu
    if slots < experts:
        pytest.skip("fewer slots than experts")
    w, opt = _small_case(experts, gpus, per_gpu, seed, duplicates)
    sc = scaled(w, slots, gpus, duplicates)
    assert sc is not None
    counts = np.array(next(iter(_count_vectors(experts, slots, gpus))), dtype=np.int64)
    return w, opt, sc, counts, _dealt(counts, gpus, per_gpu)


@pytest.mark.parametrize(("experts", "gpus", "per_gpu", "seed"), SMALL_CASES)
@pytest.mark.parametrize("duplicates", [False, True])
def test_exact_search_matches_brute_force(
    experts: int, gpus: int, per_gpu: int, seed: int, duplicates: bool
) -> None:
    """The integer mean bound stays below the exhaustive optimum; the window search, started
    from a poor placement, ends proven exactly on the optimum with a valid placement, and
    every bound it reports is below the optimum; exchanges keep counts and the one-copy rule
    and never raise the busiest GPU."""
    w, opt, sc, counts, start = _scaled_start(experts, gpus, per_gpu, seed, duplicates)
    assert w.sum() / gpus <= sc.mean_bound(gpus) / sc.q <= opt + 1e-9
    moved = exchange(sc, counts, start, sc.mean_bound(gpus), seed)
    assert sorted(moved.ravel().tolist()) == sorted(start.ravel().tolist())
    assert all(len(set(g)) == per_gpu for g in moved.tolist())
    assert sc.peak(counts, moved) <= sc.peak(counts, start)
    res = window_search(sc, gpus, counts, moved, Budget(600.0, deterministic=True), 30.0,
                        allow_duplicates=duplicates)
    assert res is not None
    assert res.bound / sc.q <= opt + 1e-9
    assert np.array_equal(np.bincount(res.assign.ravel(), minlength=experts), res.counts)
    if not duplicates:
        assert all(len(set(g)) == per_gpu for g in res.assign.tolist())
    loads = (w[res.assign] / res.counts[res.assign]).sum(axis=1)
    assert loads.max() == pytest.approx(sc.peak(res.counts, res.assign) / sc.q, rel=1e-12)
    assert res.proven
    assert loads.max() == pytest.approx(opt, rel=1e-9)


COUNT_SEARCH_CASES = SMALL_CASES + [
    (experts, gpus, per_gpu, seed)
    for experts, gpus, per_gpu in ((6, 3, 3), (5, 4, 2), (6, 2, 4))
    for seed in range(3)
]


@pytest.mark.parametrize(("experts", "gpus", "per_gpu", "seed"), COUNT_SEARCH_CASES)
def test_count_search_matches_brute_force(
    experts: int, gpus: int, per_gpu: int, seed: int
) -> None:
    """The count search, started from a poor placement, returns a valid one-copy placement
    exactly on the exhaustive optimum (it claims optimality for every answer it gives)."""
    w, opt, sc, counts, start = _scaled_start(experts, gpus, per_gpu, seed, False)
    res = count_search(sc, gpus, counts, start)
    assert res is not None
    assert np.array_equal(np.bincount(res.assign.ravel(), minlength=experts), res.counts)
    assert all(len(set(g)) == per_gpu for g in res.assign.tolist())
    loads = (w[res.assign] / res.counts[res.assign]).sum(axis=1)
    assert res.peak == sc.peak(res.counts, res.assign)
    assert loads.max() == pytest.approx(opt, rel=1e-9)


def test_count_search_makes_no_claim_past_its_node_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no exact-cover nodes to spend, the search gives up instead of claiming."""
    import placer.balance.count_search as count_module

    monkeypatch.setattr(count_module, "MAX_COVER_NODES", 0)
    w, _ = _small_case(5, 3, 2, 0, False)
    sc = scaled(w, 6, 3, False)
    assert sc is not None
    counts = np.array([2, 1, 1, 1, 1], dtype=np.int64)
    assert count_search(sc, 3, counts, _dealt(counts, 3, 2)) is None


@pytest.mark.parametrize(
    ("total", "parts", "limit"), [(8, 3, 4), (16, 6, 6), (12, 5, 3), (5, 5, 1)]
)
def test_bounded_compositions_are_every_count_vector(total: int, parts: int, limit: int) -> None:
    rows = bounded_compositions(total, parts, limit)
    expected = sorted(c for c in itertools.product(range(1, limit + 1), repeat=parts)
                      if sum(c) == total)
    assert [tuple(r) for r in rows.tolist()] == expected
    assert count_vectors(total, parts, limit) == len(expected)


ONE_EACH_CASES = [
    (experts, gpus, seed)
    for experts, gpus in ((6, 3), (8, 2), (9, 3), (10, 2), (8, 4))
    for seed in range(4)
]


@functools.cache
def _one_each_case(experts: int, gpus: int, seed: int) -> tuple[np.ndarray, float]:
    """A layer with as many slots as experts and one heavy expert (60-95 % of a GPU's
    mean load, so its companions must be light), and its exhaustive optimum."""
    rng = np.random.default_rng(100 + seed)
    w = rng.integers(1, 60, size=experts).astype(np.float64)
    w[0] = 0.0
    share = rng.uniform(0.6, 0.95)
    w[0] = float(np.ceil(share * w.sum() / (gpus - share)))  # w0 / ((rest + w0) / P) = share
    return w, brute_force_optimum(w, gpus, experts, False)


@pytest.mark.parametrize(("experts", "gpus", "seed"), ONE_EACH_CASES)
def test_companion_bound_and_completion_match_brute_force(
    experts: int, gpus: int, seed: int
) -> None:
    """One replica per expert: the companion bound never exceeds the exhaustive optimum; a
    completion towards the optimum, when it returns, is a valid partition on or below it;
    and ``balance_layer`` marks a layer proven only on the optimum."""
    w, opt = _one_each_case(experts, gpus, seed)
    sc = scaled(w, experts, gpus, False)
    assert sc is not None and sc.q == 1
    assert companion_bound(sc, gpus, 10**12) <= round(opt)
    ones = np.ones(experts, dtype=np.int64)
    built = complete(sc, ones, gpus, round(opt))
    if built is not None:
        assert sorted(built.ravel().tolist()) == list(range(experts))
        assert sc.peak(ones, built) == round(opt)
    assert complete(sc, ones, gpus, round(opt) - 1) is None
    _, _, q = balance_layer(w, gpus, 1, experts, None, "global",
                            budget=Budget(600.0, deterministic=True), seconds=5.0)
    mean = w.sum() / gpus
    assert q.bound <= opt / mean + 1e-9 <= q.imbalance + 2e-9
    assert q.proven and q.imbalance == pytest.approx(opt / mean, rel=1e-12)


def _mixtral_like() -> LoadStats:
    """Mixtral-shaped loads (8 experts, top-2) on which EPLB doubles experts up (R = 16)."""
    return synthetic_loads(range(8), 8, 2, 4096, (0.2, 0.6), seed=1)


def test_allow_duplicates_is_never_worse_than_eplb() -> None:
    """With --allow-duplicates no layer is worse than EPLB, including layers where EPLB puts
    two copies of an expert on one GPU; without it, no GPU holds two copies."""
    loads = _mixtral_like()
    w = loads.array()
    phy, _, _ = rebalance_experts(w, 16, 1, 1, 8)
    doubled = [
        i for i in range(w.shape[0])
        if any(len(set(g)) < 2 for g in np.asarray(phy[i]).reshape(8, 2).tolist())
    ]
    assert doubled, "the test needs layers where EPLB uses duplicates"
    budget = Budget(600.0, deterministic=True)
    res = balance(loads, 8, slots=16, workers=1, allow_duplicates=True, budget=budget,
                  layer_seconds=0.3)
    for q in res.layers:
        assert q.eplb_imbalance is not None
        assert q.imbalance <= q.eplb_imbalance + 1e-12
        assert q.bound <= q.imbalance
    strict = balance(loads, 8, slots=16, workers=1, budget=Budget(600.0, deterministic=True),
                     layer_seconds=0.3)
    for row in strict.physical_to_logical_map:
        assert all(len(set(g)) == 2 for g in np.asarray(row).reshape(8, 2).tolist())
    for i, q in enumerate(strict.layers):
        if i not in doubled:
            assert q.imbalance <= q.eplb_imbalance + 1e-12  # type: ignore[operator]


class _Clock:
    """A fake monotonic clock advancing by ``step`` at every reading (a busy machine reads
    more time passing for the same work)."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_deterministic_map_does_not_depend_on_the_clock() -> None:
    """Deterministic mode: an idle and a busy clock give the same map and figures, with
    CP-SAT stopped by its deterministic limit before proving (16 experts, 4 GPUs)."""
    w = synthetic_loads(range(1), 16, 4, 2048, (0.5, 0.9), seed=5).array()[0]
    runs = []
    for step in (1e-6, 1e-2):
        budget = Budget(600.0, deterministic=True, clock=_Clock(step))
        row, _, q = balance_layer(w, 4, 1, 24, None, "global", budget=budget, seconds=0.3)
        assert not budget.wall_clock_stop
        runs.append((row.tolist(), q.imbalance, q.bound, q.proven))
    assert runs[0] == runs[1]


def test_wall_clock_stop_is_recorded() -> None:
    """A deterministic run stopped by the wall clock says so (its map may then vary)."""
    loads = synthetic_loads(range(2), 16, 4, 2048, (0.5, 0.9), seed=5)
    res = balance(loads, 4, slots=24, workers=1,
                  budget=Budget(1.0, deterministic=True, clock=_Clock(10.0)))
    assert res.wall_clock_stop
    for q in res.layers:
        assert q.bound <= q.imbalance


def test_node_policy_bound_with_one_group_per_node() -> None:
    """Node policy, one group per node (64 GPUs / 8 nodes / 320 slots): the per-node bound
    keeps the gap small; groups stay on their node."""
    loads = synthetic_loads(range(2), 256, 8, 16384, (0.5, 0.9), groups=8, group_sigma=0.25,
                            seed=0)
    res = balance(loads, 64, nodes=8, slots=320, groups=8, policy="node", workers=1,
                  budget=Budget(600.0, deterministic=True), layer_seconds=0.3)
    per_node = 40
    for row, q in zip(res.physical_to_logical_map, res.layers, strict=True):
        assert q.bound <= q.imbalance
        assert q.gap < 0.02
        assert q.eplb_imbalance is not None and q.imbalance <= q.eplb_imbalance + 1e-12
        nodes_of_group: dict[int, set[int]] = {}
        for p, e in enumerate(row):
            nodes_of_group.setdefault(e // 32, set()).add(p // per_node)
        assert all(len(n) == 1 for n in nodes_of_group.values())


def test_node_policy_closes_the_hot_node_layer() -> None:
    """The bundled DeepSeek-V3-size layer 36 (node policy, 64 GPUs / 8 nodes / 320 slots),
    where one node holds experts of 8x and 4.5x the mean GPU load: the hot-count search
    brings the gap under 2 % (it was 18.4 % with water-filled counts); groups stay on nodes
    and the map is no worse than EPLB's."""
    loads = load_loads(Path(__file__).resolve().parent.parent / "instances" / "loads"
                       / "deepseek-v3-synthetic.json")
    w = loads.array()[loads.layers.index(36)]
    row, counts, q = balance_layer(w, 64, 8, 320, 8, "node", 36,
                                   budget=Budget(600.0, deterministic=True), seconds=0.3)
    assert np.array_equal(np.bincount(row, minlength=w.size), counts)
    assert all(len(set(g)) == 5 for g in row.reshape(64, 5).tolist())
    assert all(len({p // 40 for p in np.flatnonzero(row // 32 == g)}) == 1 for g in range(8))
    loads_per_gpu = (w[row] / counts[row]).reshape(64, 5).sum(axis=1)
    assert q.imbalance == pytest.approx(loads_per_gpu.max() / (w.sum() / 64), rel=1e-12)
    assert q.bound <= q.imbalance and q.gap < 0.02
    assert q.eplb_imbalance is not None and q.imbalance <= q.eplb_imbalance + 1e-12


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("--time-limit", "nan"), "--time-limit"),
        (("--time-limit", "0"), "--time-limit"),
        (("--time-limit", "inf"), "--time-limit"),
        (("--seed", "2147483648"), "--seed"),
        (("--seed", "-1"), "--seed"),
        (("--gpus", "0"), "--gpus"),
        (("--gpus", "1e30"), "--gpus"),
        (("--time-limit", "soon"), "--time-limit"),
        (("--workers", "1.5"), "--workers"),
        (("--gpus", "100000"), "--gpus"),
        (("--slots", "4000000"), "--slots"),
    ],
)
def test_cli_bad_options_exit_2(args: tuple[str, ...], field: str) -> None:
    """Each bad option: exit 2, one line naming it, no traceback."""
    base = {"--gpus": "4"}
    opts = dict(base)
    opts[args[0]] = args[1]
    flat = [x for kv in opts.items() for x in kv]
    res = run_cli("balance", "instances/loads/mixtral-c4.json", *flat)
    assert res.exit_code == 2
    assert field in res.stderr and res.stderr.count("\n") == 1


def test_cli_quiet_deterministic(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """--quiet prints the summary only; --deterministic and --seed are recorded."""
    out = tmp_path / "map.json"
    res = run_cli("balance", "instances/loads/mixtral-c4.json", "--gpus", "8", "--slots", "16",
                  "--deterministic", "--seed", "3", "--time-limit", "60", "--quiet",
                  "--workers", "1", "-o", str(out))
    assert res.exit_code == 0, res.stderr
    assert "┃" not in res.stdout and "layers proven" in res.stdout
    import json

    doc = json.loads(out.read_text())
    assert doc["deterministic"] is True and doc["seed"] == 3 and doc["time_limit_s"] == 60


def test_expert_load_plot_heatmaps_and_bound_bars(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """placer plot --kind expert-load draws a balance result with its loads (heatmaps and
    per-layer bars with the bound) and without them (bars only)."""
    out = tmp_path / "map.json"
    res = run_cli("balance", "instances/loads/mixtral-c4.json", "--gpus", "4", "--slots", "8",
                  "--deterministic", "--time-limit", "5", "--quiet", "-o", str(out))
    assert res.exit_code == 0, res.stderr
    for extra, name in ((("--loads", "instances/loads/mixtral-c4.json"), "a.png"), ((), "b.svg")):
        res = run_cli("plot", str(out), "--kind", "expert-load", *extra, "-o",
                      str(tmp_path / name))
        assert res.exit_code == 0, res.stderr
        assert (tmp_path / name).stat().st_size > 1000


def test_window_search_probing_from_the_bound_matches_brute_force(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With window caps so small that the incumbent's own window and the midpoint's are
    often too wide, the window search probes up from the integer mean bound instead: every
    bound it reports stays below the exhaustive optimum, every placement is valid and above
    it, every proven one sits on it, and the probing path proves some layers (so this checks
    something)."""
    import placer.balance.exact as exact_module

    monkeypatch.setattr(exact_module, "MAX_EASY_PATTERNS", 1)
    monkeypatch.setattr(exact_module, "MAX_WINDOW_PATTERNS", 4)
    proven = probed = 0
    for experts, gpus, per_gpu, seed in SMALL_CASES:
        slots = gpus * per_gpu
        if slots < experts:
            continue
        w, opt = _small_case(experts, gpus, per_gpu, seed, False)
        sc = scaled(w, slots, gpus, False)
        assert sc is not None
        counts = np.array(next(iter(_count_vectors(experts, slots, gpus))), dtype=np.int64)
        start = _dealt(counts, gpus, per_gpu)
        best = sc.peak(counts, start)
        wide = exact_module.window_patterns(
            sc, per_gpu, sc.total - (gpus - 1) * (best - 1), best - 1, False
        )
        res = window_search(sc, gpus, counts, start, Budget(600.0, deterministic=True), 30.0)
        if res is None:
            continue
        too_wide = wide is None or len(wide) > 1
        probed += too_wide
        assert res.bound / sc.q <= opt + 1e-9
        assert np.array_equal(np.bincount(res.assign.ravel(), minlength=experts), res.counts)
        assert all(len(set(g)) == per_gpu for g in res.assign.tolist())
        loads = (w[res.assign] / res.counts[res.assign]).sum(axis=1)
        assert loads.max() >= opt - 1e-9
        if res.proven:
            proven += too_wide
            assert loads.max() == pytest.approx(opt, rel=1e-9)
    assert probed > 0 and proven > 0
