"""CP-SAT models of one layer's expert placement on one set of GPUs (see docs/balance.md).

:func:`solve_layer` is the whole problem: how many replicas each expert gets *and* which
GPUs hold them, minimising the busiest GPU. Variables (``y[e, g, k]`` only exist for the
counts ``k`` still possible for expert ``e``)::

    z[e, k]     expert e has exactly k replicas              sum_k z[e, k] = 1
    y[e, g, k]  replicas of e on GPU g while e has k         sum_g y[e, g, k] = k * z[e, k]
    per GPU     sum_{e,k} y[e, g, k] = S / P                 (every slot holds one replica)
                sum_{e,k} a[e, k] * y[e, g, k] <= Z          (a[e, k]: load of one of k replicas)

``y`` is Boolean (no two replicas of an expert on one GPU) unless duplicates are allowed,
then an integer. There is no slot variable, so the order of replicas inside a GPU is not a
symmetry of the model; the GPUs, identical, are ordered by load (``load[g] >= load[g+1]``),
which keeps one placement of every class of relabelled ones.

Loads are made integers exactly when they are whole numbers: ``a[e, k] = w_e * Q / k`` with
``Q`` the least common multiple of the possible counts, so "optimal" is exact. Otherwise (or
when exact integers would be too large) ``a[e, k]`` is ``w_e * Q / k`` rounded down at a
fixed resolution: every placement's modelled load is then at most its real load, so CP-SAT's
bound divided by ``Q`` stays a valid lower bound, but the model no longer proves optimality.

The model is warm-started with a complete hint (the heuristic's placement, GPUs sorted by
load) and solved with ``symmetry_level = 0``: the project's CP-SAT measurements found that
symmetry presolve can turn a complete, feasible hint infeasible (OR-Tools' parameter
documentation, ``sat_parameters.proto``, describes ``symmetry_level``).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from ortools.sat.python import cp_model

from placer.budget import Budget

#: Largest total scaled load of a layer: exact integer loads up to this are used as they are,
#: larger ones are rounded down to this resolution. Far from CP-SAT's 2^62 overflow limit
#: even when multiplied by the slots of one GPU, and exact in a float64.
MAX_SCALED_TOTAL = 2**50

#: The pattern model (see :func:`solve_layer`) is used up to this many GPU contents.
MAX_PATTERNS = 5_000

#: The whole-layer model is built only up to this many ``y`` variables (memory and the time
#: to a first LP); beyond it the heuristic's placement stands.
MAX_MODEL_VARS = 6_000


@dataclass(frozen=True)
class LayerSolution:
    """CP-SAT's answer for one set of GPUs."""

    counts: np.ndarray
    assign: np.ndarray  # [gpu, slot] -> expert
    bound: float  # valid lower bound on the busiest GPU, in load units
    proven: bool  # the placement is optimal (exact model, objective == bound)
    improved: bool  # CP-SAT found a placement better than the hint
    deterministic_time: float


def charge_solve(budget: Budget, solver: cp_model.CpSolver, status: Any, seconds: float) -> None:
    """Charge the solve's deterministic time; in deterministic mode, record a stop by the
    wall clock (CP-SAT ended unproven before its deterministic limit), after which the
    answer is no longer reproducible."""
    budget.charge(solver.deterministic_time)
    if (
        budget.deterministic
        and status != cp_model.OPTIMAL
        and status != cp_model.INFEASIBLE
        and solver.deterministic_time < 0.99 * max(seconds, 0.01)
    ):
        budget.wall_clock_stop = True


def _scale(w: np.ndarray, max_count: int) -> tuple[int | float, bool]:
    """(Q, exact): ``w * Q / k`` is an integer for every count ``k <= max_count`` when exact."""
    total = float(w.sum())
    if total <= 0:
        return 1, True
    lcm = math.lcm(*range(1, max_count + 1))
    whole = bool(np.all(w == np.round(w)))
    # In integers: the lcm of 1..1024 counts has hundreds of digits and overflows a float.
    if whole and round(total) * lcm <= MAX_SCALED_TOTAL:
        return lcm, True
    return MAX_SCALED_TOTAL / total, False


def _replica_load(w_e: float, q: int | float, k: int, exact: bool) -> int:
    if exact:
        return round(w_e) * int(q) // k
    return math.floor(w_e * q / k)


def _count_options(
    w: np.ndarray, counts: np.ndarray, max_count: int, q: int | float, exact: bool, peak: int
) -> list[list[int]]:
    """Replica counts worth modelling per expert: a better placement than one with busiest
    GPU ``peak`` has every replica at most ``peak`` (the hint's own count is always kept)."""
    options = []
    for e in range(w.size):
        ks = [k for k in range(1, max_count + 1) if _replica_load(w[e], q, k, exact) <= peak]
        options.append(sorted({*ks, int(counts[e])}))
    return options


def _patterns(experts: int, per_gpu: int, allow_duplicates: bool) -> int:
    """How many different GPU contents there are (sets, or multisets with duplicates)."""
    if allow_duplicates:
        return math.comb(experts + per_gpu - 1, per_gpu)
    return math.comb(experts, per_gpu)


def _run(
    m: cp_model.CpModel, budget: Budget, seconds: float, seed: int
) -> tuple[cp_model.CpSolver, Any]:
    """Solve a hinted model on one worker (reproducible) within ``seconds`` of ``budget``,
    with symmetry presolve off (module docstring) and no gap tolerance."""
    solver = cp_model.CpSolver()
    p = solver.parameters
    budget.limit_cpsat(p, seconds)
    p.num_workers = 1
    p.random_seed = seed
    p.symmetry_level = 0
    p.relative_gap_limit = 0.0
    p.absolute_gap_limit = 0.0
    status = solver.solve(m)
    charge_solve(budget, solver, status, seconds)
    return solver, status


def solve_layer(
    w: np.ndarray,
    slots: int,
    gpus: int,
    counts: np.ndarray,
    assign: np.ndarray,
    budget: Budget,
    seconds: float,
    seed: int = 0,
    allow_duplicates: bool = False,
) -> LayerSolution | None:
    """Improve (counts, assign) with a whole-layer model and bound every placement.

    Two exact formulations of the same problem: with few possible GPU contents
    (:data:`MAX_PATTERNS`) the *pattern* model, which counts how many GPUs hold each content
    and so has no GPU symmetry at all; otherwise the assignment model of the module
    docstring. ``seconds`` of ``budget`` are spent at most (deterministic seconds in
    deterministic mode). Returns None when the model would be too large
    (:data:`MAX_MODEL_VARS`) or CP-SAT finds nothing in time.
    """
    experts = w.size
    per_gpu = slots // gpus
    max_count = min(slots - experts + 1, gpus * per_gpu if allow_duplicates else gpus)
    q, exact = _scale(w, max_count)
    gpu_load = _scaled_loads(w, counts, assign, q, exact)
    hint_peak = int(gpu_load.max())
    options = _count_options(w, counts, max_count, q, exact, hint_peak)
    total = int(sum(_replica_load(w[e], q, 1, exact) for e in range(experts)))
    # Some GPU carries at least the mean of the modelled loads, rounded up to whole units.
    floor_z = min(-(-total // gpus), hint_peak) if exact else 0

    m = cp_model.CpModel()
    z = {(e, k): m.new_bool_var(f"z[{e},{k}]") for e in range(experts) for k in options[e]}
    objective = m.new_int_var(floor_z, hint_peak, "Z")
    for e in range(experts):
        m.add_exactly_one(z[e, k] for k in options[e])
        for k in options[e]:
            m.add_hint(z[e, k], int(k == int(counts[e])))
    m.add_hint(objective, hint_peak)
    if _patterns(experts, per_gpu, allow_duplicates) <= MAX_PATTERNS:
        extract = _pattern_model(
            m, z, objective, w, q, exact, options, gpus, per_gpu, assign, allow_duplicates
        )
    elif sum(len(ks) for ks in options) * gpus <= MAX_MODEL_VARS:
        extract = _assignment_model(
            m,
            z,
            objective,
            w,
            q,
            exact,
            options,
            gpus,
            per_gpu,
            counts,
            assign,
            gpu_load,
            allow_duplicates,
        )
    else:
        return None
    m.minimize(objective)

    solver, status = _run(m, budget, seconds, seed)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    best = round(solver.objective_value)
    bound_scaled = max(math.ceil(solver.best_objective_bound - 1e-6), floor_z)
    bound = bound_scaled / q
    if best >= hint_peak:
        proven = exact and bound_scaled >= hint_peak
        return LayerSolution(counts, assign, bound, proven, False, solver.deterministic_time)
    new_counts = np.array(
        [next(k for k in options[e] if solver.value(z[e, k])) for e in range(experts)],
        dtype=np.int64,
    )
    proven = exact and bound_scaled >= best
    return LayerSolution(
        new_counts, extract(solver), bound, proven, True, solver.deterministic_time
    )


Extractor = Callable[[cp_model.CpSolver], np.ndarray]


def _pattern_model(
    m: cp_model.CpModel,
    z: dict[tuple[int, int], cp_model.IntVar],
    objective: cp_model.IntVar,
    w: np.ndarray,
    q: int | float,
    exact: bool,
    options: list[list[int]],
    gpus: int,
    per_gpu: int,
    assign: np.ndarray,
    allow_duplicates: bool,
) -> Extractor:
    """``n[p]``: GPUs whose content is pattern ``p``; a used pattern's load is at most Z."""
    experts = w.size
    pick = itertools.combinations_with_replacement if allow_duplicates else itertools.combinations
    patterns = list(pick(range(experts), per_gpu))
    # The load of one replica of e, given its count: an expression of the z of e.
    replica = [
        sum(_replica_load(w[e], q, k, exact) * z[e, k] for k in options[e]) for e in range(experts)
    ]
    held = Counter(tuple(sorted(int(e) for e in row)) for row in assign)
    n = []
    uses: list[list[tuple[int, cp_model.IntVar]]] = [[] for _ in range(experts)]
    for i, pat in enumerate(patterns):
        n_p = m.new_int_var(0, gpus, f"n[{i}]")
        used = m.new_bool_var(f"used[{i}]")
        m.add(n_p <= gpus * used)
        mult = Counter(pat)
        m.add(sum(c * replica[e] for e, c in mult.items()) <= objective).only_enforce_if(used)
        for e, c in mult.items():
            uses[e].append((c, n_p))
        m.add_hint(n_p, held.get(pat, 0))
        m.add_hint(used, held.get(pat, 0) > 0)
        n.append(n_p)
    m.add(sum(n) == gpus)
    for e in range(experts):
        m.add(sum(c * v for c, v in uses[e]) == sum(k * z[e, k] for k in options[e]))

    def extract(solver: cp_model.CpSolver) -> np.ndarray:
        rows = []
        for pat, n_p in zip(patterns, n, strict=True):
            rows.extend([list(pat)] * int(solver.value(n_p)))
        return np.array(rows, dtype=np.int64).reshape(gpus, per_gpu)

    return extract


def _assignment_model(
    m: cp_model.CpModel,
    z: dict[tuple[int, int], cp_model.IntVar],
    objective: cp_model.IntVar,
    w: np.ndarray,
    q: int | float,
    exact: bool,
    options: list[list[int]],
    gpus: int,
    per_gpu: int,
    counts: np.ndarray,
    assign: np.ndarray,
    gpu_load: np.ndarray,
    allow_duplicates: bool,
) -> Extractor:
    """``y[e, g, k]``: replicas of e on GPU g while e has k replicas (module docstring)."""
    experts = w.size
    y_max = per_gpu if allow_duplicates else 1
    y = {
        (e, g, k): m.new_int_var(0, min(y_max, k), f"y[{e},{g},{k}]")
        for e in range(experts)
        for k in options[e]
        for g in range(gpus)
    }
    for e in range(experts):
        for k in options[e]:
            m.add(sum(y[e, g, k] for g in range(gpus)) == k * z[e, k])
        if not allow_duplicates:
            for g in range(gpus):
                m.add(sum(y[e, g, k] for k in options[e]) <= 1)
    loads = []
    for g in range(gpus):
        m.add(sum(y[e, g, k] for e in range(experts) for k in options[e]) == per_gpu)
        load = sum(
            _replica_load(w[e], q, k, exact) * y[e, g, k]
            for e in range(experts)
            for k in options[e]
        )
        m.add(load <= objective)
        loads.append(load)
    # Identical GPUs: keep only the labelling with loads in falling order.
    for g in range(gpus - 1):
        m.add(loads[g] >= loads[g + 1])
    order = np.argsort(-gpu_load, kind="stable")
    for (e, g, k), var in y.items():
        mine = int(counts[e]) == k
        m.add_hint(var, int(np.count_nonzero(assign[order[g]] == e)) if mine else 0)

    def extract(solver: cp_model.CpSolver) -> np.ndarray:
        out = np.zeros((gpus, per_gpu), dtype=np.int64)
        fill = np.zeros(gpus, dtype=np.int64)
        for (e, g, _), var in y.items():
            n = int(solver.value(var))
            out[g, fill[g] : fill[g] + n] = e
            fill[g] += n
        return out

    return extract


def _scaled_loads(
    w: np.ndarray, counts: np.ndarray, assign: np.ndarray, q: int | float, exact: bool
) -> np.ndarray:
    return np.array(
        [sum(_replica_load(w[e], q, int(counts[e]), exact) for e in row) for row in assign],
        dtype=np.int64,
    )


def _scaled_peak(
    w: np.ndarray, counts: np.ndarray, assign: np.ndarray, q: int | float, exact: bool
) -> int:
    return int(_scaled_loads(w, counts, assign, q, exact).max())


def optimal_for_counts(
    w: np.ndarray,
    counts: np.ndarray,
    gpus: int,
    per_gpu: int,
    budget: Budget,
    seconds: float,
) -> tuple[np.ndarray, float] | None:
    """The proven best placement for fixed counts (one copy per GPU), or None if CP-SAT does
    not prove it within ``seconds`` of ``budget``, no placement exists, or the loads are not
    whole numbers (then nothing exact can be said)."""
    max_count = int(counts.max())
    q, exact = _scale(w, max_count)
    if not exact:
        return None
    m = cp_model.CpModel()
    x = {(e, g): m.new_bool_var(f"x[{e},{g}]") for e in range(w.size) for g in range(gpus)}
    load = [_replica_load(w[e], q, int(counts[e]), exact) for e in range(w.size)]
    for e in range(w.size):
        m.add(sum(x[e, g] for g in range(gpus)) == int(counts[e]))
    z = m.new_int_var(0, sum(load), "z")
    for g in range(gpus):
        m.add(sum(x[e, g] for e in range(w.size)) == per_gpu)
        m.add(sum(load[e] * x[e, g] for e in range(w.size)) <= z)
    m.minimize(z)
    solver = cp_model.CpSolver()
    budget.limit_cpsat(solver.parameters, seconds)
    solver.parameters.num_workers = 1
    solver.parameters.relative_gap_limit = 0.0
    status = solver.solve(m)
    charge_solve(budget, solver, status, seconds)
    if status != cp_model.OPTIMAL:
        return None
    out = np.zeros((gpus, per_gpu), dtype=np.int64)
    for g in range(gpus):
        out[g] = [e for e in range(w.size) if solver.value(x[e, g])]
    return out, solver.objective_value / q
