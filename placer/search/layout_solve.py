"""One layout's CP-SAT solve: the placement model, hinted with the DP split, within a slice
of the budget, stoppable by Ctrl-C."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np

from placer.budget import Budget
from placer.config import SolveConfig
from placer.exceptions import InvalidInputError, SolverError
from placer.search.heuristic import best_split
from placer.search.tables import LayoutTables, balanced_counts, objective_ns

if TYPE_CHECKING:
    from ortools.sat.python import cp_model


def _solver(config: SolveConfig, budget: Budget, seconds: float) -> cp_model.CpSolver:
    """A CP-SAT solver for ``seconds`` of ``budget`` (deterministic seconds in deterministic
    mode, with the budget's wall clock as the hard stop; see placer/budget.py)."""
    from ortools.sat.python import cp_model  # loaded on the first solve (see solve_layout)

    solver = cp_model.CpSolver()
    p = solver.parameters
    # placer handles Ctrl-C itself (see _interruptible_solve).
    p.catch_sigint_signal = False
    p.random_seed = config.seed
    p.relative_gap_limit = config.relative_gap_limit
    # One worker with a fixed seed is CP-SAT's reproducible mode.
    p.num_workers = 1 if config.deterministic else config.workers
    budget.limit_cpsat(p, seconds)
    for key, value in config.extra_params.items():
        try:
            setattr(p, key, value)
        except (AttributeError, TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"not a CP-SAT parameter or wrong type: {exc}", field=f"extra_params.{key}"
            ) from None
    return solver


def _interruptible_solve(solver: cp_model.CpSolver, model: cp_model.CpModel) -> int:
    """``solver.solve(model)`` in a worker thread, so Ctrl-C reaches Python at once: the
    search is stopped and KeyboardInterrupt re-raised for the caller to keep its best plan."""
    result: dict[str, int] = {}

    def run() -> None:
        result["status"] = int(solver.solve(model))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.05)
    except KeyboardInterrupt:
        solver.stop_search()
        worker.join()
        raise
    return result["status"]


def solve_layout(
    t: LayoutTables, objective: str, config: SolveConfig, budget: Budget, seconds: float
) -> tuple[str, tuple[int, ...] | None, np.ndarray | None, int | None, int | None]:
    """Solve one layout within ``seconds`` of ``budget`` (charged with what CP-SAT used):
    (status, split, counts, value ns, bound ns)."""
    # OR-Tools (and the pandas it imports) load on the first solve, not at start-up: a run
    # whose time is spent before CP-SAT does not pay for them (docs/certificate.md, "Time").
    from ortools.sat.python import cp_model

    from placer.search import placement_model as cpsat

    counts0 = balanced_counts(t)
    split0 = best_split(t, counts0)
    model, v = cpsat.build_model(t, "latency" if objective == "latency" else "throughput")
    cpsat.enforce_all(model, v, explain=False)
    if split0 is not None:
        cpsat.add_hint(model, v, t, split0, counts0, objective)
    invalid = model.validate()
    if invalid:
        raise SolverError(f"CP-SAT rejected the placement model: {invalid}")
    solver = _solver(config, budget, seconds)
    status = _interruptible_solve(solver, model)
    budget.charge(solver.deterministic_time)
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        split, counts = cpsat.extract(solver, v, t)
        value = objective_ns(t, split, counts, objective)
        bound = int(np.ceil(solver.best_objective_bound - 1e-6))
        return (
            ("optimal" if bound >= value else "feasible"),
            split,
            counts,
            value,
            min(bound, value),
        )
    if status == cp_model.INFEASIBLE:
        return "infeasible", None, None, None, None
    if status == cp_model.MODEL_INVALID:  # pragma: no cover - validate() catches these first
        raise SolverError("CP-SAT reports MODEL_INVALID for the placement model")
    if split0 is not None:
        value = objective_ns(t, split0, counts0, objective)
        return "feasible", split0, counts0, value, None
    return "unresolved", None, None, None, None
