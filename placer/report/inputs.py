"""The input copies a plan carries, validated again before the report reads them."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from placer.cluster import ClusterSpec
from placer.exceptions import InvalidInputError
from placer.model import ModelSpec
from placer.plan import Plan
from placer.workload import Workload


@dataclass(frozen=True)
class PlanSpecs:
    """The plan's input copies, validated again (as ``placer verify`` does)."""

    model: ModelSpec
    cluster: ClusterSpec
    workload: Workload


def plan_specs(plan: Plan) -> PlanSpecs:
    """Validate the model, cluster and workload copies a plan carries.

    Parameters
    ----------
    plan
        Any plan (feasible or not).

    Returns
    -------
    PlanSpecs
        The validated specs.

    Raises
    ------
    InvalidInputError
        If a copy does not validate (the plan file was edited or is damaged).
    """
    parts: dict[str, object] = {}
    for name, cls in (("model", ModelSpec), ("cluster", ClusterSpec), ("workload", Workload)):
        try:
            parts[name] = cls.model_validate(getattr(plan.inputs, name))
        except ValidationError as exc:
            raise InvalidInputError(
                f"the plan's copy does not validate: {exc.errors()[0]['msg']}",
                field=f"inputs.{name}",
            ) from None
    model, cluster, workload = parts["model"], parts["cluster"], parts["workload"]
    assert isinstance(model, ModelSpec)
    assert isinstance(cluster, ClusterSpec)
    assert isinstance(workload, Workload)
    return PlanSpecs(model=model, cluster=cluster, workload=workload)
