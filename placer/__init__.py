"""placer: decide how to deploy a Mixture-of-Experts model on GPUs, and prove it.

The public API, re-exported here (PyVRP style):

- loading: :func:`load_model`, :func:`load_cluster`, :func:`load_workload`;
- specs: :class:`ModelSpec`, :class:`ClusterSpec`, :class:`Workload`, :class:`Layout`;
- analysis: :func:`memory_ledger`, :func:`estimate`, :func:`evaluate`, :func:`inspect_model`;
- search: :func:`solve` -> :class:`Plan`, :func:`verify` -> :class:`VerifyReport`,
  :class:`SolveConfig`; serving: :func:`frontier` (docs/serving.md).

``solve`` and ``frontier`` are imported on first use so that ``placer.verify`` never loads
OR-Tools.
"""

from typing import Any

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
from placer.inspect import ModelReport, inspect_model
from placer.layout import Layout
from placer.ledger import Ledger, memory_ledger
from placer.load import load_cluster, load_model, load_workload, model_from_dict
from placer.model import ModelSpec
from placer.plan import Plan
from placer.rules import PROFILES, RulesProfile, get_profile
from placer.verify import VerifyReport, load_plan, verify
from placer.workload import Workload

__version__ = "0.1.0"

__all__ = [
    "PROFILES",
    "ClusterSpec",
    "Constraint",
    "Estimates",
    "Evaluation",
    "GPUType",
    "InfeasibleError",
    "InvalidInputError",
    "Layout",
    "LayoutError",
    "Ledger",
    "Link",
    "ModelReport",
    "ModelSpec",
    "PlacerError",
    "Plan",
    "RulesProfile",
    "SolveConfig",
    "SolverError",
    "VerifyReport",
    "Workload",
    "estimate",
    "evaluate",
    "frontier",
    "get_profile",
    "inspect_model",
    "load_cluster",
    "load_model",
    "load_plan",
    "load_workload",
    "memory_ledger",
    "model_from_dict",
    "solve",
    "verify",
]


def __getattr__(name: str) -> Any:
    if name == "solve":
        from placer.search.solve import solve

        return solve
    if name == "frontier":
        from placer.serving.frontier import frontier

        return frontier
    raise AttributeError(f"module 'placer' has no attribute {name!r}")
