"""The plan's inputs: its copies against their hashes, and against files the user gives
(compared by content, not by the path they were given by; docs/certificate.md)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from placer.calibration import default_calibration
from placer.cluster import ClusterSpec
from placer.model import ModelSpec
from placer.plan import Plan, content_digest, digest
from placer.verify.context import Findings
from placer.workload import Workload


def compare_inputs(plan: Plan, files: dict[str, Any]) -> list[str]:
    """Differences between the plan's input copies and the given inputs, by content.

    ``files`` maps ``model``, ``cluster``, ``workload`` and ``calibration`` to specs, and
    ``loads`` to the loads by layer; the path a file was given by is not part of its content.
    """
    out = []
    copies = {"model": plan.inputs.model, "cluster": plan.inputs.cluster}
    copies["workload"] = plan.inputs.workload
    for name, spec in files.items():
        if name == "calibration":
            # A plan from before calibrations were recorded was priced with the default.
            stored_cal = plan.inputs.calibration
            if stored_cal is None:
                stored_cal = default_calibration().model_dump(mode="json")
            if digest(spec.model_dump(mode="json")) != digest(stored_cal):
                out.append(
                    "input hash differs: calibration (the given file is not the plan's input)"
                )
            continue
        if name == "loads":
            given = {str(k): [float(x) for x in v] for k, v in spec.items()}
            stored = (
                {str(k): list(v) for k, v in plan.inputs.loads.items()}
                if plan.inputs.loads is not None
                else None
            )
            if stored is None or digest(given) != digest(stored):
                out.append("input hash differs: loads (the given file is not the plan's input)")
            continue
        data = spec.model_dump(mode="json")
        if name == "model":
            data["format"] = "placer"
        if content_digest(data) != content_digest(copies[name]):
            out.append(f"input hash differs: {name} (the given file is not the plan's input)")
    return out


def input_specs(plan: Plan, found: Findings) -> tuple[ModelSpec, ClusterSpec, Workload] | None:
    for name in ("model", "cluster", "workload"):
        data: dict[str, Any] = getattr(plan.inputs, name)
        if digest(data) != plan.inputs.hashes.get(name):
            found.bad.append(
                f"input hash differs: {name} (inputs.{name}: the plan's copy was changed)"
            )
    if plan.inputs.loads is not None:
        stored = {str(k): list(v) for k, v in plan.inputs.loads.items()}
        if digest(stored) != plan.inputs.hashes.get("loads"):
            found.bad.append(
                "input hash differs: loads (inputs.loads: the plan's copy was changed)"
            )
    elif "loads" in plan.inputs.hashes:
        found.bad.append("inputs.hashes has a loads hash but the plan has no loads")
    found.checked.append("input hashes")
    try:
        return (
            ModelSpec.model_validate(plan.inputs.model),
            ClusterSpec.model_validate(plan.inputs.cluster),
            Workload.model_validate(plan.inputs.workload),
        )
    except ValidationError as exc:
        found.bad.append(f"input copy does not validate: {exc.errors()[0]['msg']}")
        return None
