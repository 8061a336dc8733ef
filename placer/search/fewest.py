"""The fewest GPUs of one type that fit a model, with the proof that one fewer does not.

A witness count comes from :func:`placer.search.fixes.min_gpus` (a layout that fits with
balanced expert slots); CP-SAT may fit on fewer, so the search steps down one GPU at a time
until a count is proven infeasible. A solve on n GPUs covers every layout on fewer, so the
first infeasible count proves the minimum. PyVRP's ``minimise_fleet`` is the model for this
being a library function rather than a loop in the command line.
"""

from __future__ import annotations

from dataclasses import dataclass

from placer.budget import Budget
from placer.cluster import ClusterSpec
from placer.config import SolveConfig
from placer.exceptions import InfeasibleError, InvalidInputError, NoPlanError
from placer.model import ModelSpec
from placer.plan import Plan
from placer.rules import get_profile
from placer.search.fixes import MAX_GPUS_SEARCHED, min_gpus
from placer.search.outer import solve
from placer.workload import Workload


@dataclass(frozen=True)
class FewestGpus:
    """What the fewest-GPUs search found.

    Attributes
    ----------
    gpus
        The fewest GPUs a plan was found on.
    plan
        That plan.
    below
        The solve on ``gpus - 1`` GPUs (its infeasibility record when ``proven``); None when
        ``gpus`` is 1 or the budget ran out before it was tried.
    proven
        True when ``gpus`` is the proven minimum: one GPU, or ``below`` is infeasible.
    """

    gpus: int
    plan: Plan
    below: Plan | None
    proven: bool

    @property
    def min_gpus(self) -> int | None:
        """The proven minimum, or None when only an upper bound is known."""
        return self.gpus if self.proven else None


def fewest_gpus(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    config: SolveConfig | None = None,
    budget: Budget | None = None,
) -> FewestGpus:
    """The fewest GPUs of ``cluster``'s single GPU type (nodes added as needed) on which
    ``model`` fits, and the solve on one fewer.

    Raises
    ------
    InvalidInputError
        The cluster has more than one GPU type.
    InfeasibleError
        No GPU count up to ``MAX_GPUS_SEARCHED`` fits.
    NoPlanError
        The budget ran out before any count was found to fit, or before a plan was found on
        the witness count.
    """
    config = config or SolveConfig()
    budget = budget or Budget(config.time_limit_s)
    if len(cluster.groups) != 1:
        raise InvalidInputError("min-gpus needs a single GPU type", field="groups")
    found = min_gpus(model, cluster, workload, get_profile(config.profile), above=0, budget=budget)
    if found is None:
        if budget.expired():
            raise NoPlanError("the time limit passed before any GPU count was found to fit")
        raise InfeasibleError(
            f"no GPU count up to {MAX_GPUS_SEARCHED} fits this model and workload"
        )
    return _step_down(model, cluster, workload, config, budget, found[0])


def _step_down(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    config: SolveConfig,
    budget: Budget,
    gpus: int,
) -> FewestGpus:
    """Solve on ``gpus``, then on one fewer while plans are found."""

    def solve_on(count: int) -> Plan:
        # Each solve may take half of what is left, so that the next one still has time.
        limit = max(budget.share(0.5), 0.01)
        return solve(model, cluster.with_gpus(count), workload, config, budget=Budget(limit))

    plan = solve_on(gpus)
    below = None
    while gpus > 1 and plan.layout is not None:
        below = solve_on(gpus - 1)
        if below.status not in ("optimal", "feasible"):
            break
        gpus, plan, below = gpus - 1, below, None
    if plan.layout is None:
        raise NoPlanError(
            f"{gpus} GPUs fit with balanced expert slots, but no plan on them was found within "
            "the time limit"
        )
    # A minimum is claimed only with the proof that one fewer does not fit.
    proven = gpus == 1 or (below is not None and below.status == "infeasible")
    return FewestGpus(gpus, plan, below, proven)
