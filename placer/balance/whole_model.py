"""``placer balance``: replicate and place experts to even out GPU load, with a bound per layer.

Layers are independent: :func:`balance` shares the time budget out over them before any
starts, runs them in worker processes, and assembles the maps. One layer's work is
:func:`placer.balance.layer.balance_layer`; the result types are in
:mod:`placer.balance.result` (both re-exported here). docs/balance.md describes the methods,
the bounds and what "proven" means.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from placer.balance.layer import balance_layer
from placer.balance.loads import LoadStats
from placer.balance.result import (
    DEFAULT_LAYER_SECONDS,
    DEFAULT_TIME_LIMIT_S,
    MAX_EXPERTS,
    MAX_GPUS,
    MAX_SLOTS,
    MAX_TIME_LIMIT_S,
    BalanceResult,
    LayerBalance,
    Policy,
    check_shape,
    check_sizes,
)
from placer.budget import Budget
from placer.exceptions import InvalidInputError
from placer.limits import MAX_PROCESSES

__all__ = [
    "DEFAULT_LAYER_SECONDS",
    "DEFAULT_TIME_LIMIT_S",
    "MAX_EXPERTS",
    "MAX_GPUS",
    "MAX_SLOTS",
    "MAX_TIME_LIMIT_S",
    "BalanceResult",
    "LayerBalance",
    "Policy",
    "balance",
    "balance_layer",
    "check_shape",
    "check_sizes",
]


@dataclass(frozen=True)
class _LayerJob:
    """One layer's work, picklable for a worker process."""

    w: np.ndarray
    gpus: int
    nodes: int
    slots: int
    groups: int | None
    policy: Policy
    layer: int
    use_eplb: bool
    allow_duplicates: bool
    seconds: float
    seed: int
    deterministic: bool
    deadline: float  # time.monotonic() of the whole call's hard stop (system-wide clock)


LayerOutcome = tuple[np.ndarray, np.ndarray, LayerBalance, float, bool]


def _run_job(job: _LayerJob, budget: Budget | None = None) -> LayerOutcome:
    """Balance one layer under ``budget`` (in a worker: a budget ending at the deadline)."""
    if budget is None:
        budget = Budget(max(job.deadline - time.monotonic(), 0.01), job.deterministic)
    used = budget.deterministic_used
    row, counts, quality = balance_layer(
        job.w,
        job.gpus,
        job.nodes,
        job.slots,
        job.groups,
        job.policy,
        job.layer,
        job.use_eplb,
        allow_duplicates=job.allow_duplicates,
        budget=budget,
        seconds=job.seconds,
        seed=job.seed,
    )
    budget.expired()  # records a wall-clock stop of a deterministic run
    return row, counts, quality, budget.deterministic_used - used, budget.wall_clock_stop


def balance(
    loads: LoadStats,
    gpus: int,
    nodes: int = 1,
    slots: int | None = None,
    groups: int | None = None,
    policy: Policy = "global",
    workers: int = 2,
    use_eplb: bool = True,
    allow_duplicates: bool = False,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    seed: int = 0,
    deterministic: bool = False,
    budget: Budget | None = None,
    layer_seconds: float | None = None,
) -> BalanceResult:
    """Replicate and place each layer's experts (see module docstring and docs/balance.md).

    Time: ``budget`` (or a new :class:`~placer.budget.Budget` of ``time_limit_s``, in
    deterministic time when ``deterministic``) is shared out over the layers before any
    starts: each layer's CP-SAT gets ``0.8 * limit * min(workers, layers) / layers``
    seconds, a figure that depends on the inputs only, so a deterministic run gives the same
    map on any machine unless the wall clock (the hard stop) ends it first, which the result
    records. ``layer_seconds`` overrides that share (a fixed CP-SAT effort per layer, e.g.
    under a long hard stop). ``seed`` is CP-SAT's random seed.

    Raises
    ------
    InvalidInputError
        For slot counts that do not divide the GPUs, fewer slots than experts, groups
        that do not divide the experts or the nodes, and the like.
    """
    if budget is None:
        budget = Budget(time_limit_s, deterministic)
    w_all = loads.array()
    experts = w_all.shape[1]
    slots = _checked_slots(experts, gpus, nodes, slots, groups, policy)
    start = time.perf_counter()
    layers = w_all.shape[0]
    in_process = workers <= 1 or layers <= 2
    # Never more processes than MAX_PROCESSES (each costs memory), whatever a caller asks.
    parallel = 1 if in_process else min(workers, layers, MAX_PROCESSES)
    share = 0.8 * budget.time_limit_s * parallel / layers
    seconds = layer_seconds if layer_seconds is not None else share
    deadline = time.monotonic() + budget.wall_remaining()
    shape = (gpus, nodes, slots, groups, policy)
    jobs = [
        _LayerJob(
            w_all[i],
            *shape,
            loads.layers[i],
            use_eplb,
            allow_duplicates,
            seconds,
            seed,
            budget.deterministic,
            deadline,
        )
        for i in range(layers)
    ]
    results = _run_layers(jobs, budget, parallel)
    rows, counts = [r[0] for r in results], [r[1] for r in results]
    return BalanceResult(
        physical_to_logical_map=tuple(tuple(int(x) for x in r) for r in rows),
        logical_to_physical_map=_logical_to_physical(rows, counts, experts),
        logical_replica_count=tuple(tuple(int(x) for x in c) for c in counts),
        layers=tuple(r[2] for r in results),
        gpus=gpus,
        nodes=nodes,
        slots=slots,
        groups=groups,
        policy=policy,
        allow_duplicates=allow_duplicates,
        wall_time_s=round(time.perf_counter() - start, 3),
        time_limit_s=budget.time_limit_s,
        deterministic=budget.deterministic,
        seed=seed,
        wall_clock_stop=budget.wall_clock_stop or any(r[4] for r in results),
        source=loads.source,
    )


def _run_layers(jobs: list[_LayerJob], budget: Budget, parallel: int) -> list[LayerOutcome]:
    """Every layer's outcome, in order. Layers are independent. The work is Python and numpy
    on small arrays (GIL-bound), so layers run in processes; with one process they stay in
    this one, under the caller's budget (and its clock)."""
    if parallel <= 1:
        return [_run_job(job, budget) for job in jobs]
    with ProcessPoolExecutor(max_workers=parallel) as pool:
        results = list(pool.map(_run_job, jobs, chunksize=1))
    budget.charge(sum(r[3] for r in results))
    return results


def _checked_slots(
    experts: int, gpus: int, nodes: int, slots: int | None, groups: int | None, policy: Policy
) -> int:
    """The slot count (default: the experts rounded up to a multiple of the GPUs), after
    every shape check (InvalidInputError naming the option)."""
    check_sizes(experts, gpus, slots)
    slots = slots if slots is not None else experts + (-experts) % gpus
    check_shape(experts, gpus, nodes, slots, groups, policy)
    if slots > experts * gpus:
        # Without duplicates a GPU holds at most one copy of an expert, so no map fills more
        # slots; the replica counts are water-filled under that same cap with duplicates too.
        raise InvalidInputError(
            f"{slots} slots exceed {experts} experts x {gpus} GPUs: at most one copy of each "
            "expert per GPU is counted, so at most experts x GPUs slots can be filled",
            field="--slots",
        )
    return slots


def _logical_to_physical(
    rows: list[np.ndarray], counts: list[np.ndarray], experts: int
) -> tuple[tuple[tuple[int, ...], ...], ...]:
    """[layers][experts][max replicas]: the slots of each expert, padded with -1."""
    maxcnt = max(int(c.max()) for c in counts)
    out = []
    for row in rows:
        slots_of: list[list[int]] = [[] for _ in range(experts)]
        for p, e in enumerate(row.tolist()):
            slots_of[e].append(p)
        out.append(tuple(tuple(s + [-1] * (maxcnt - len(s))) for s in slots_of))
    return tuple(out)
