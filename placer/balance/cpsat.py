"""CP-SAT for one set of GPUs with replica counts fixed (formulation "A" of the project's
CP-SAT notes): ``x[e, g]`` = expert ``e`` has a replica on GPU ``g``.

Loads are scaled exactly: a replica of expert ``e`` carries ``w_e / c_e``; with
integer ``w`` and the least common multiple ``L`` of the counts, ``w_e * L / c_e``
is an integer. Hinted models run with ``symmetry_level = 0``: the notes measured
that symmetry presolve turns a complete, feasible hint infeasible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from ortools.sat.python import cp_model

#: Beyond this scale the exact integer loads would risk CP-SAT's 2^62 domain limit.
MAX_SCALE = 10**6


@dataclass
class _CountModel:
    model: cp_model.CpModel
    x: dict[tuple[int, int], cp_model.IntVar]
    z: cp_model.IntVar
    load: list[int]
    scale: int


def _count_model(
    w: np.ndarray, counts: np.ndarray, gpus: int, per_gpu: int, z_max: int | None = None
) -> _CountModel | None:
    """Minimise the busiest GPU's exact integer load for fixed counts (None if the loads are
    not integers or the scale is too large)."""
    if not np.allclose(w, np.round(w)):
        return None
    scale = math.lcm(*(int(c) for c in counts))
    if scale > MAX_SCALE:
        return None
    wi = np.round(w).astype(np.int64)
    load = [int(wi[e]) * (scale // int(counts[e])) for e in range(w.size)]
    model = cp_model.CpModel()
    x = {(e, g): model.new_bool_var(f"x[{e},{g}]") for e in range(w.size) for g in range(gpus)}
    for e in range(w.size):
        model.add(sum(x[e, g] for g in range(gpus)) == int(counts[e]))
    z = model.new_int_var(0, z_max if z_max is not None else sum(load) * per_gpu, "z")
    for g in range(gpus):
        model.add(sum(x[e, g] for e in range(w.size)) == per_gpu)
        model.add(sum(load[e] * x[e, g] for e in range(w.size)) <= z)
    model.minimize(z)
    return _CountModel(model, x, z, load, scale)


def _extract(
    solver: cp_model.CpSolver, m: _CountModel, gpus: int, per_gpu: int, experts: int
) -> np.ndarray:
    out = np.zeros((gpus, per_gpu), dtype=np.int64)
    for g in range(gpus):
        out[g] = [e for e in range(experts) if solver.value(m.x[e, g])]
    return out


def polish(
    w: np.ndarray,
    counts: np.ndarray,
    assign: np.ndarray,
    time_limit: float,
    seed: int = 0,
    workers: int = 1,
) -> np.ndarray | None:
    """A placement with a lighter busiest GPU than ``assign`` (same counts), or None."""
    gpus, per_gpu = assign.shape
    probe = _count_model(w, counts, gpus, per_gpu)
    if probe is None:
        return None
    current = max(sum(probe.load[e] for e in assign[g]) for g in range(gpus))
    m = _count_model(w, counts, gpus, per_gpu, z_max=current)
    assert m is not None
    held = {(int(e), g) for g in range(gpus) for e in assign[g]}
    for (e, g), var in m.x.items():
        m.model.add_hint(var, (e, g) in held)
    m.model.add_hint(m.z, current)
    solver = cp_model.CpSolver()
    p = solver.parameters
    p.max_time_in_seconds = time_limit
    p.num_workers = workers
    p.random_seed = seed
    p.symmetry_level = 0
    status = solver.solve(m.model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE) or solver.objective_value >= current:
        return None
    return _extract(solver, m, gpus, per_gpu, w.size)


def optimal_for_counts(
    w: np.ndarray, counts: np.ndarray, gpus: int, per_gpu: int, time_limit: float = 1.0
) -> tuple[np.ndarray, float] | None:
    """The proven best placement for fixed counts (one copy per GPU), or None if CP-SAT
    does not prove it in time or no placement exists."""
    m = _count_model(w, counts, gpus, per_gpu)
    if m is None:
        return None
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit
    solver.parameters.num_workers = 1
    solver.parameters.relative_gap_limit = 0.0
    if solver.solve(m.model) != cp_model.OPTIMAL:
        return None
    return _extract(solver, m, gpus, per_gpu, w.size), solver.objective_value / m.scale
