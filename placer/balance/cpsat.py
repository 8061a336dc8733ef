"""CP-SAT polish of one set of GPUs with replica counts fixed (formulation "A" of the
project's CP-SAT notes): ``x[e, g]`` = expert ``e`` has a replica on GPU ``g``.

Loads are scaled exactly: a replica of expert ``e`` carries ``w_e / c_e``; with
integer ``w`` and the least common multiple ``L`` of the counts, ``w_e * L / c_e``
is an integer. The model is hinted with the incumbent and run with
``symmetry_level = 0``: the notes measured that symmetry presolve turns a
complete, feasible hint infeasible.
"""

from __future__ import annotations

import math

import numpy as np
from ortools.sat.python import cp_model

#: Beyond this scale the exact integer loads would risk CP-SAT's 2^62 domain limit.
MAX_SCALE = 10**6


def polish(
    w: np.ndarray,
    counts: np.ndarray,
    assign: np.ndarray,
    time_limit: float,
    seed: int = 0,
    workers: int = 1,
) -> np.ndarray | None:
    """A placement with a lighter busiest GPU than ``assign`` (same counts), or None."""
    if not np.allclose(w, np.round(w)):
        return None
    lcm = math.lcm(*(int(c) for c in counts))
    if lcm > MAX_SCALE:
        return None
    wi = np.round(w).astype(np.int64)
    load = [int(wi[e]) * (lcm // int(counts[e])) for e in range(w.size)]
    gpus, per_gpu = assign.shape
    model = cp_model.CpModel()
    x = {(e, g): model.new_bool_var(f"x[{e},{g}]") for e in range(w.size) for g in range(gpus)}
    for e in range(w.size):
        model.add(sum(x[e, g] for g in range(gpus)) == int(counts[e]))
    current = max(sum(load[e] for e in assign[g]) for g in range(gpus))
    z = model.new_int_var(0, current, "z")
    for g in range(gpus):
        model.add(sum(x[e, g] for e in range(w.size)) == per_gpu)
        model.add(sum(load[e] * x[e, g] for e in range(w.size)) <= z)
    model.minimize(z)
    held = {(int(e), g) for g in range(gpus) for e in assign[g]}
    for (e, g), var in x.items():
        model.add_hint(var, (e, g) in held)
    model.add_hint(z, current)
    solver = cp_model.CpSolver()
    p = solver.parameters
    p.max_time_in_seconds = time_limit
    p.num_workers = workers
    p.random_seed = seed
    p.symmetry_level = 0
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE) or solver.objective_value >= current:
        return None
    out = np.zeros_like(assign)
    for g in range(gpus):
        out[g] = [e for e in range(w.size) if solver.value(x[e, g])]
    return out


def optimal_for_counts(
    w: np.ndarray, counts: np.ndarray, gpus: int, per_gpu: int, time_limit: float = 1.0
) -> tuple[np.ndarray, float] | None:
    """The proven best placement for fixed counts (one copy per GPU), or None if CP-SAT
    does not prove it in time or no placement exists."""
    if not np.allclose(w, np.round(w)):
        return None
    lcm = math.lcm(*(int(c) for c in counts))
    if lcm > MAX_SCALE:
        return None
    wi = np.round(w).astype(np.int64)
    load = [int(wi[e]) * (lcm // int(counts[e])) for e in range(w.size)]
    model = cp_model.CpModel()
    x = {(e, g): model.new_bool_var(f"x[{e},{g}]") for e in range(w.size) for g in range(gpus)}
    for e in range(w.size):
        model.add(sum(x[e, g] for g in range(gpus)) == int(counts[e]))
    z = model.new_int_var(0, sum(load) * per_gpu, "z")
    for g in range(gpus):
        model.add(sum(x[e, g] for e in range(w.size)) == per_gpu)
        model.add(sum(load[e] * x[e, g] for e in range(w.size)) <= z)
    model.minimize(z)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit
    solver.parameters.num_workers = 1
    solver.parameters.relative_gap_limit = 0.0
    if solver.solve(model) != cp_model.OPTIMAL:
        return None
    out = np.zeros((gpus, per_gpu), dtype=np.int64)
    for g in range(gpus):
        out[g] = [e for e in range(w.size) if solver.value(x[e, g])]
    return out, solver.objective_value / lcm
