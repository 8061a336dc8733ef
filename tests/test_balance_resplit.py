"""The exact re-splits of ``placer.balance.resplit`` against brute force, and on OLMoE loads.

Claims checked: a re-split keeps every replica and the one-copy rule, never lands below the
exhaustive optimum, and the subset search finds the subset sum closest to its interval.
"""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from placer.balance.loads import load_loads
from placer.balance.resplit import resplit, resplit_search, subsets_near
from placer.balance.whole_model import balance_layer
from placer.budget import Budget

from .test_balance_proof import SMALL_CASES, _dealt, _scaled_start

LOADS = Path(__file__).resolve().parent.parent / "instances" / "loads"


@pytest.mark.parametrize("seed", range(30))
def test_subsets_near_finds_the_closest_sum(seed: int) -> None:
    """The first subset is as close to ``[lo, hi]`` as any subset of that size (exhaustive)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 11))
    values = rng.integers(0, 50, size=n).astype(np.int64)
    take = int(rng.integers(1, n + 1))
    lo = int(rng.integers(0, 50 * take + 1))
    hi = lo + int(rng.integers(0, 20))
    best = min(
        max(lo - s, 0, s - hi)
        for s in (int(values[list(c)].sum()) for c in itertools.combinations(range(n), take))
    )
    masks = subsets_near(values, take, lo, hi, 5)
    assert masks.shape[0] >= 1
    assert np.all(masks.sum(axis=1) == take)
    first = int(values[masks[0]].sum())
    assert max(lo - first, 0, first - hi) == best


def _valid(assign: np.ndarray, counts: np.ndarray) -> None:
    """Every expert holds exactly its count of slots, never two on one GPU."""
    held = Counter(assign.ravel().tolist())
    assert all(held[e] == counts[e] for e in range(counts.size))
    assert all(len(set(row)) == len(row) for row in assign.tolist())


@pytest.mark.parametrize(("experts", "gpus", "per_gpu", "seed"), SMALL_CASES)
def test_resplit_never_claims_below_brute_force(
    experts: int, gpus: int, per_gpu: int, seed: int
) -> None:
    """From a poor dealt start, re-splits keep the placement valid and no lighter than the
    exhaustive optimum; reaching the integer mean bound means reaching that optimum."""
    slots = gpus * per_gpu
    _, opt, sc, _, _ = _scaled_start(experts, gpus, per_gpu, seed, False)
    counts = np.full(experts, slots // experts, dtype=np.int64)
    counts[: slots % experts] += 1
    if counts.max() > gpus:
        pytest.skip("no one-copy placement with these counts")
    start = _dealt(counts, gpus, per_gpu)
    target = sc.mean_bound(gpus)
    moved = resplit(sc, counts, start, target, seed)
    _valid(moved, counts)
    assert sc.peak(counts, moved) <= sc.peak(counts, start)
    c2, a2 = resplit_search(sc, counts, start, target, seed)
    _valid(a2, c2)
    for c, a in ((counts, moved), (c2, a2)):
        peak = sc.peak(c, a)
        assert peak >= opt * sc.q - 1e-6 * opt * sc.q
        if peak <= target:
            assert peak == pytest.approx(opt * sc.q)


@pytest.mark.parametrize(
    ("name", "gpus", "mult", "layer"),
    [("olmoe-arxiv", 8, 2, 0), ("olmoe-book", 4, 2, 0), ("olmoe-c4", 8, 1, 0)],
)
def test_olmoe_layers_reach_the_integer_mean_bound(
    name: str, gpus: int, mult: int, layer: int
) -> None:
    """Bundled OLMoE layers that the exchanges alone left above the bound end proven."""
    loads = load_loads(LOADS / f"{name}.json")
    w = loads.array()[layer]
    slots = loads.num_experts * mult
    budget = Budget(600.0, deterministic=True)
    row, counts, q = balance_layer(w, gpus, 1, slots, None, "global", budget=budget, seconds=0.5)
    assert q.proven and q.bound_kind == "integer mean"
    assignment = row.reshape(gpus, -1)
    _valid(assignment, counts)
    loads_per_gpu = (w[assignment] / counts[assignment]).sum(axis=1)
    assert loads_per_gpu.max() == pytest.approx(w.sum() / gpus, rel=1e-12)
