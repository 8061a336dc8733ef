"""Independent re-check of a plan from the plan and its inputs alone (numpy, no OR-Tools).

``verify`` trusts nothing the solver computed. From the input copies in the plan
it rebuilds the model, cluster and workload (and checks their hashes, and the
files' when given), then recomputes: the rules profile, the layer split, the
expert map (every expert placed, slot counts per rank, one copy per GPU), the
memory of every GPU with the ledger, every constraint instance, the objective
from the cost tables, the gap and the status, the analytic bound of every
pruned layout, the aggregate memory proof of every layout declared infeasible
for memory, and the witness behind a "fewest GPUs" fix. A CP-SAT infeasibility
proof cannot be re-derived without a solver; such layouts are counted and named
in the report as taken on trust.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import Field, ValidationError

from placer._base import Frozen
from placer.calibration import Calibration, use_calibration
from placer.cluster import ClusterSpec
from placer.collectives import use_engine
from placer.cost import estimate
from placer.evaluate import evaluate
from placer.exceptions import InvalidInputError
from placer.io import read_json, validation_error
from placer.layout import Layout
from placer.ledger import ExpertMap
from placer.model import ModelSpec
from placer.plan import PLAN_FORMAT_VERSION, Plan, digest
from placer.rules import PROFILES, layout_violations
from placer.search.heuristic import fitting_layout
from placer.search.tables import (
    build_tables,
    lower_bound_ns,
    memory_lower_bound,
    objective_ns,
)
from placer.workload import Workload


class VerifyReport(Frozen):
    """What ``verify`` found: ok only if no violation."""

    ok: bool = Field(description="Every check passed.")
    violations: tuple[str, ...] = Field(description="One line per failed check.")
    checked: tuple[str, ...] = Field(description="What was re-checked.")
    trusted: tuple[str, ...] = Field(description="What could not be re-derived without a solver.")


def load_plan(path: str) -> Plan:
    """Read a plan file (this format version or an older one)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise InvalidInputError("expected a plan object", source=path)
    ver = data.get("format_version")
    if not isinstance(ver, int) or ver > PLAN_FORMAT_VERSION or ver < 1:
        raise InvalidInputError(
            f"plan format version {ver!r} is not one this placer reads (1..{PLAN_FORMAT_VERSION})",
            source=path,
            field="format_version",
        )
    try:
        return Plan.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, path) from None


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _specs(plan: Plan, bad: list[str]) -> tuple[ModelSpec, ClusterSpec, Workload] | None:
    for name in ("model", "cluster", "workload"):
        data: dict[str, Any] = getattr(plan.inputs, name)
        if digest(data) != plan.inputs.hashes.get(name):
            bad.append(f"input hash differs: {name} (the plan's copy was changed)")
    if plan.inputs.loads is not None:
        stored = {str(k): list(v) for k, v in plan.inputs.loads.items()}
        if digest(stored) != plan.inputs.hashes.get("loads"):
            bad.append("input hash differs: loads (the plan's copy was changed)")
    try:
        return (
            ModelSpec.model_validate(plan.inputs.model),
            ClusterSpec.model_validate(plan.inputs.cluster),
            Workload.model_validate(plan.inputs.workload),
        )
    except ValidationError as exc:
        bad.append(f"input copy does not validate: {exc.errors()[0]['msg']}")
        return None


def compare_inputs(plan: Plan, files: dict[str, Any]) -> list[str]:
    """Hash differences between the plan's inputs and the given specs (model, cluster,
    workload)."""
    out = []
    for name, spec in files.items():
        data = spec.model_dump(mode="json")
        if name == "model":
            data["format"] = "placer"
        if digest(data) != plan.inputs.hashes.get(name):
            out.append(f"input hash differs: {name} (the given file is not the plan's input)")
    return out


def _check_expert_map(
    model: ModelSpec, layout: Layout, emap: ExpertMap, bad: list[str]
) -> np.ndarray:
    counts = np.zeros((model.num_layers, layout.ep), dtype=np.int64)
    if set(emap) != set(model.moe_layers):
        bad.append("expert map does not list exactly the MoE layers")
        return counts
    for layer, ranks in emap.items():
        experts = model.experts_in_layer(layer)
        slots = experts + layout.redundant_experts
        if len(ranks) != layout.ep:
            bad.append(f"expert map layer {layer}: {len(ranks)} ranks, ep is {layout.ep}")
            continue
        seen = np.zeros(experts, dtype=np.int64)
        for r, ids in enumerate(ranks):
            counts[layer, r] = len(ids)
            if len(set(ids)) != len(ids):
                bad.append(f"expert map layer {layer} rank {r}: an expert appears twice")
            for e in ids:
                if not 0 <= e < experts:
                    bad.append(f"expert map layer {layer} rank {r}: no expert {e}")
                else:
                    seen[e] += 1
        if int(counts[layer].sum()) != slots:
            bad.append(
                f"expert map layer {layer}: {int(counts[layer].sum())} slots, expected {slots}"
            )
        if np.any(seen == 0):
            bad.append(f"expert map layer {layer}: expert {int(np.argmin(seen))} not placed")
        lo, hi = slots // layout.ep, -(-slots // layout.ep)
        if counts[layer].min() < lo or counts[layer].max() > hi:
            bad.append(f"expert map layer {layer}: slot counts per rank outside [{lo}, {hi}]")
    return counts


def verify(plan: Plan, inputs: dict[str, Any] | None = None) -> VerifyReport:
    """Re-check ``plan`` with the calibration it records and its profile's collectives (see
    :func:`verify_plan`)."""
    stored = plan.inputs.calibration
    if stored is None:  # a plan from before calibrations were recorded: the default
        with use_engine(plan.certificate.solver.profile):
            return verify_plan(plan, inputs)
    problem = ""
    if digest(stored) != plan.inputs.hashes.get("calibration"):
        problem = "input hash differs: calibration (the plan's copy was changed)"
    try:
        calibration = Calibration.model_validate(stored)
    except ValidationError as exc:
        problem = f"calibration copy does not validate: {exc.errors()[0]['msg']}"
    if problem:
        return VerifyReport(ok=False, violations=(problem,), checked=("input hashes",), trusted=())
    with use_calibration(calibration), use_engine(plan.certificate.solver.profile):
        return verify_plan(plan, inputs)


def verify_plan(plan: Plan, inputs: dict[str, Any] | None = None) -> VerifyReport:
    """Re-check ``plan``; ``inputs`` (model/cluster/workload specs) are compared by hash."""
    bad: list[str] = []
    checked: list[str] = []
    trusted: list[str] = []
    if inputs:
        bad.extend(compare_inputs(plan, inputs))
        checked.append("inputs match the given files")
    specs = _specs(plan, bad)
    checked.append("input hashes")
    if specs is None:
        return VerifyReport(ok=False, violations=tuple(bad), checked=tuple(checked), trusted=())
    model, cluster, workload = specs
    sv = plan.certificate.solver
    if sv.profile not in PROFILES:
        bad.append(f"unknown rules profile '{sv.profile}'")
        return VerifyReport(ok=False, violations=tuple(bad), checked=tuple(checked), trusted=())
    profile = PROFILES[sv.profile]
    if plan.serving is not None:
        # A serving plan carries its own proof (docs/serving.md).
        from placer.serving.check import check_serving

        found, done = check_serving(plan, model, cluster, workload, profile)
        bad.extend(found)
        checked.extend(done)
        return VerifyReport(ok=not bad, violations=tuple(bad), checked=tuple(checked), trusted=())
    objective = sv.objective
    o = plan.objective

    if plan.layout is not None:
        pl = plan.layout
        layout = pl.to_layout()
        if layout.gpus != pl.gpus_used:
            bad.append(f"gpus_used {pl.gpus_used} but the degrees give {layout.gpus}")
        bad.extend(f"rules: {v}" for v in layout_violations(model, cluster, layout, profile))
        if sum(pl.layers_per_stage) != model.num_layers or min(pl.layers_per_stage) < 1:
            bad.append("layers_per_stage must cover every layer with no empty stage")
            return VerifyReport(
                ok=False, violations=tuple(bad), checked=tuple(checked), trusted=()
            )
        checked.append("rules profile and layer split")
        counts = _check_expert_map(model, layout, plan.expert_map, bad)
        checked.append("expert map: coverage, slots, one copy per GPU")
        ev = evaluate(model, cluster, workload, layout, profile, plan.expert_map)
        mine = {g.id: g for g in ev.gpus}
        if len(mine) != len(plan.gpus):
            bad.append(f"plan lists {len(plan.gpus)} GPUs, the layout uses {len(mine)}")
        for g in plan.gpus:
            ref = mine.get(g.id)
            if ref is None:
                bad.append(f"gpu {g.id} is not part of the layout")
                continue
            if g.breakdown != ref.breakdown or g.used_bytes != ref.used_bytes:
                bad.append(
                    f"memory of gpu {g.id}: plan says {g.used_bytes} B, "
                    f"recomputed {ref.used_bytes} B"
                )
            if g.capacity_bytes != ref.capacity_bytes:
                bad.append(
                    f"capacity of gpu {g.id}: plan says {g.capacity_bytes} B, "
                    f"recomputed {ref.capacity_bytes} B"
                )
            if ref.used_bytes > ref.capacity_bytes:
                bad.append(f"gpu {g.id} over capacity: {ref.used_bytes} > {ref.capacity_bytes}")
        checked.append(f"memory ledger of {len(mine)} GPUs")
        recomputed = {c.name: c for c in ev.constraints}
        for c in plan.certificate.constraints:
            ref_c = recomputed.get(c.name)
            if ref_c is not None and (not _close(ref_c.value, c.value) or ref_c.holds != c.holds):
                bad.append(
                    f"constraint {c.name}: plan says {c.value:g}, recomputed {ref_c.value:g}"
                )
            if not c.holds:
                bad.append(f"constraint {c.name} does not hold ({c.value:g} > {c.limit:g})")
        for c in ev.constraints:
            if not c.holds:
                bad.append(f"recomputed constraint {c.name} does not hold")
        checked.append("every constraint instance")
        tables = build_tables(model, cluster, workload, layout, objective)
        value_ns = objective_ns(tables, pl.layers_per_stage, counts, objective)
        value_units = pl.gpus_used if objective == "gpus" else value_ns
        if o.value_units != value_units:
            bad.append(f"objective: plan says {o.value_units}, recomputed {value_units}")
        loads = (
            {k: np.asarray(v) for k, v in plan.inputs.loads.items()} if plan.inputs.loads else None
        )
        est = estimate(model, cluster, workload, layout, plan.expert_map, loads)
        if plan.estimates is None or not _close(est.cycle_s, plan.estimates.cycle_s):
            bad.append("estimates differ from the cost model's")
        checked.append("objective and estimates")
        if o.bound_units is None or o.value_units is None or o.gap is None:
            bad.append("a plan needs value, bound and gap")
        else:
            if o.bound_units > o.value_units:
                bad.append("bound exceeds the value")
            gap = (o.value_units - o.bound_units) / o.value_units if o.value_units else 0.0
            if not _close(gap, o.gap):
                bad.append(f"gap {o.gap} but value and bound give {gap}")
            if (plan.status == "optimal") != (o.bound_units >= o.value_units):
                bad.append(f"status '{plan.status}' does not match gap {gap:.3g}")
    elif plan.status in ("optimal", "feasible"):
        bad.append(f"status '{plan.status}' without a layout")

    _check_search(plan, model, cluster, workload, objective, bad, checked, trusted)
    return VerifyReport(
        ok=not bad, violations=tuple(bad), checked=tuple(checked), trusted=tuple(trusted)
    )


def _check_search(
    plan: Plan,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    objective: str,
    bad: list[str],
    checked: list[str],
    trusted: list[str],
) -> None:
    """Re-derive pruning bounds and aggregate infeasibility proofs of the search record."""
    o = plan.objective
    entries = plan.certificate.search.entries
    cp_infeasible = 0
    for e in entries:
        lay = Layout(tp=e.tp, pp=e.pp, ep=e.ep, etp=e.etp, dp_attn=e.dp_attn)
        if e.status == "pruned":
            t = build_tables(model, cluster, workload, lay, objective)
            lb = lower_bound_ns(t, objective)
            if e.bound_units != lb:
                bad.append(f"search: bound of {e.layout} is {lb}, plan says {e.bound_units}")
            if o.value_units is not None and objective != "gpus" and lb < o.value_units:
                bad.append(
                    f"search: {e.layout} was pruned but its bound {lb} is below the "
                    f"plan's {o.value_units}"
                )
            if (
                objective == "gpus"
                and plan.layout is not None
                and (e.gpus < plan.layout.gpus_used)
            ):
                bad.append(f"search: {e.layout} uses fewer GPUs yet was pruned")
        elif e.status == "infeasible" and e.reason.startswith("memory"):
            t = build_tables(model, cluster, workload, lay, objective, with_costs=False)
            need, have = memory_lower_bound(t)
            if need <= have:
                bad.append(f"search: {e.layout} declared infeasible but its aggregate memory fits")
        elif e.status == "infeasible":
            cp_infeasible += 1
        elif e.status in ("unresolved", "feasible") and plan.status == "optimal":
            b = e.solver_bound_units if e.solver_bound_units is not None else e.bound_units
            if b is not None and o.value_units is not None and b < o.value_units:
                bad.append(
                    f"search: status optimal but {e.layout} is {e.status} with a lower bound"
                )
    checked.append(f"search record: {len(entries)} layouts, pruning bounds and aggregate proofs")
    if cp_infeasible:
        trusted.append(f"{cp_infeasible} layouts proven infeasible by CP-SAT")
    inf = plan.infeasibility
    if plan.status == "infeasible":
        if any(e.status != "infeasible" for e in entries):
            bad.append("status infeasible but some layout is not proven infeasible")
        if inf is not None and inf.min_gpus is not None and len(cluster.groups) == 1:
            bigger = cluster.with_gpus(inf.min_gpus)
            if (
                fitting_layout(
                    model,
                    bigger,
                    workload,
                    PROFILES[plan.certificate.solver.profile],
                    inf.min_gpus,
                )
                is None
            ):
                bad.append(f"fix: no layout found that fits on {inf.min_gpus} GPUs")
            checked.append(f"the fix: a layout fits on {inf.min_gpus} GPUs")
