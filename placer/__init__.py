"""placer: decide how to deploy a Mixture-of-Experts model on GPUs, and prove it.

The public API, re-exported here (PyVRP style):

- loading: :func:`load_model`, :func:`load_cluster`, :func:`load_workload`,
  :func:`load_loads`, :func:`load_calibration`, :func:`load_plan`, :func:`load_deployment`;
- specs: :class:`ModelSpec`, :class:`ClusterSpec`, :class:`Workload`, :class:`Layout`;
- analysis: :func:`memory_ledger`, :func:`estimate`, :func:`evaluate`, :func:`inspect_model`;
- search: :func:`solve` -> :class:`Plan`, :func:`verify` -> :class:`VerifyReport`,
  :class:`SolveConfig`; :func:`min_gpus` (the fewest GPUs, with the proof on one fewer);
  serving: :func:`frontier` (docs/serving.md);
- around a plan: :func:`markdown_report`, :func:`export_plan`, :func:`check_claims`;
- expert balance: :func:`balance_experts` (docs/balance.md); capacity planning:
  :func:`run_sweep`. (The subpackages ``placer.balance`` and ``placer.sweep`` keep their names.)

``solve``, ``min_gpus``, ``frontier`` and ``balance_experts`` import the solver on first use,
so that ``placer.verify`` never loads OR-Tools.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from placer.balance.loads import LoadStats, load_loads

# First, so that its clock reading marks the start of a command-line run (placer.budget).
from placer.budget import PROCESS_STARTED as _PROCESS_STARTED  # noqa: F401
from placer.calibration import Calibration, load_calibration
from placer.check import CheckReport, Deployment, check_claims, load_deployment
from placer.cluster import ClusterSpec, GPUType, Link
from placer.config import SolveConfig
from placer.cost import Estimates, estimate
from placer.evaluate import Constraint, Evaluation, evaluate
from placer.exceptions import (
    InfeasibleError,
    InvalidInputError,
    LayoutError,
    PlacerError,
    SolverError,
)
from placer.export import Export, export_plan
from placer.layout import Layout
from placer.ledger import Ledger, memory_ledger
from placer.load import load_cluster, load_model, load_workload, model_from_dict
from placer.model import ModelSpec
from placer.model_report import ModelReport, inspect_model
from placer.plan import Plan
from placer.report import markdown_report
from placer.rules import PROFILES, RulesProfile, get_profile
from placer.sweep import SweepResult
from placer.sweep import sweep as run_sweep
from placer.verify import VerifyReport, load_plan, verify
from placer.workload import Workload

if TYPE_CHECKING:
    from placer.balance.result import BalanceResult, Policy
    from placer.budget import Budget
    from placer.search.fewest import FewestGpus
    from placer.serving.frontier import Frontier

__version__ = "0.1.0"

__all__ = [
    "PROFILES",
    "Calibration",
    "CheckReport",
    "ClusterSpec",
    "Constraint",
    "Deployment",
    "Estimates",
    "Evaluation",
    "Export",
    "GPUType",
    "InfeasibleError",
    "InvalidInputError",
    "Layout",
    "LayoutError",
    "Ledger",
    "Link",
    "LoadStats",
    "ModelReport",
    "ModelSpec",
    "PlacerError",
    "Plan",
    "RulesProfile",
    "SolveConfig",
    "SolverError",
    "SweepResult",
    "VerifyReport",
    "Workload",
    "balance_experts",
    "check_claims",
    "estimate",
    "evaluate",
    "export_plan",
    "frontier",
    "get_profile",
    "inspect_model",
    "load_calibration",
    "load_cluster",
    "load_deployment",
    "load_loads",
    "load_model",
    "load_plan",
    "load_workload",
    "markdown_report",
    "memory_ledger",
    "min_gpus",
    "model_from_dict",
    "run_sweep",
    "solve",
    "verify",
]


def solve(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload | None = None,
    config: SolveConfig | None = None,
    *,
    progress: Callable[[int, int, int | None, int | None], None] | None = None,
    loads: LoadStats | None = None,
    calibration: Calibration | None = None,
    budget: Budget | None = None,
) -> Plan:
    """The best layout and placement of ``model`` on ``cluster`` for ``workload``, with its
    certificate (:class:`Plan`); with latency targets in the workload, the serving search.

    ``progress`` is called after each layout with (layouts done, total, incumbent ns, bound
    ns); ``loads`` are expert-load statistics; ``calibration`` prices the estimates (default:
    the shipped one); ``budget`` is the call's clock (default: from ``config``). OR-Tools is
    imported here, on first use, so that :func:`verify` never loads it.
    """
    from placer.search.outer import solve as search

    return search(model, cluster, workload, config, progress, loads, calibration, budget)


def frontier(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    config: SolveConfig | None = None,
) -> Frontier:
    """The non-dominated (tokens/s per user, tokens/s per GPU) deployments of ``model`` on
    ``cluster`` within the workload's targets (docs/serving.md); OR-Tools loads on first use."""
    from placer.serving.frontier import frontier as search

    return search(model, cluster, workload, config)


def min_gpus(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    config: SolveConfig | None = None,
    budget: Budget | None = None,
) -> FewestGpus:
    """The fewest GPUs of ``cluster``'s single GPU type on which ``model`` fits, with the plan
    on them and the solve on one fewer (its infeasibility record when the minimum is proven);
    OR-Tools loads on first use. Raises :class:`InfeasibleError` when no count up to 4096
    fits, and ``NoPlanError`` (exit 4) when the budget runs out first."""
    from placer.search.fewest import fewest_gpus

    return fewest_gpus(model, cluster, workload, config, budget)


def balance_experts(
    loads: LoadStats,
    gpus: int,
    nodes: int = 1,
    slots: int | None = None,
    groups: int | None = None,
    policy: Policy = "global",
    workers: int = 2,
    allow_duplicates: bool = False,
    time_limit_s: float = 10.0,
    seed: int = 0,
    deterministic: bool = False,
    budget: Budget | None = None,
) -> BalanceResult:
    """Replicate and place each layer's experts from their load statistics, with the lower
    bound, gap and proof per layer next to the EPLB baseline (docs/balance.md); OR-Tools
    loads on first use. ``time_limit_s`` is the default of ``placer balance``; see
    :func:`placer.balance.whole_model.balance` for the options."""
    from placer.balance.whole_model import balance as run

    return run(
        loads,
        gpus,
        nodes=nodes,
        slots=slots,
        groups=groups,
        policy=policy,
        workers=workers,
        allow_duplicates=allow_duplicates,
        time_limit_s=time_limit_s,
        seed=seed,
        deterministic=deterministic,
        budget=budget,
    )
