"""Independent re-check of a plan from the plan and its inputs alone (numpy, no OR-Tools).

One module per certificate section, run in order from :data:`SECTIONS`: the search
record's listing (:mod:`.record`), the chosen layout (:mod:`.chosen`), every search entry
(:mod:`.entries`), the objective record and the fix (:mod:`.objective`); the inputs
(:mod:`.inputs`) come first, and serving plans go to :mod:`placer.serving.check`.

``verify`` trusts nothing the solver computed (docs/certificate.md lists every check).
From the input copies in the plan it rebuilds the model, cluster and workload (and
checks their hashes, and the given files' content), then:

- re-derives the legal layouts from the rules profile and requires the search record
  to list each exactly once, with the right degrees and counts;
- recomputes the chosen layout's rules, layer split, expert map, the memory of every
  GPU, every constraint instance, the objective, every estimate and the figures of the
  objective record;
- re-proves every search entry: a pruned layout's analytic bound against the plan; an
  infeasible layout by the aggregate memory bound or by the exact split and slot check
  of :mod:`placer.proof`; a solved layout's claimed value and bound against its exact
  optimum (the same module), so that no other layout beats the plan;
- re-applies the bound, gap and status rule, and checks the witness behind a
  "fewest GPUs" fix.

A check that cannot be decided within :mod:`placer.proof`'s search budget is reported
under ``trusted`` with the layout named; on every bundled instance there is none.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from placer.calibration import Calibration, use_calibration
from placer.collectives import use_engine
from placer.exceptions import VerificationError
from placer.plan import Plan, digest
from placer.planfile import read_plan
from placer.rules import PROFILES
from placer.verify.chosen import check_chosen_layout
from placer.verify.context import (
    MAX_VERIFY_EXPERTS,
    MAX_VERIFY_GPUS,
    MAX_VERIFY_LAYERS,
    Context,
    Findings,
    VerifyReport,
)
from placer.verify.entries import check_entries
from placer.verify.inputs import compare_inputs, input_specs
from placer.verify.objective import check_fix, check_objective_record
from placer.verify.record import LegalLayouts, check_record, legal_layouts

#: "step" is the fixed-batch pipelined step under its serving-era name: it is priced as
#: "throughput" everywhere (docs/serving.md).
_OBJECTIVES = ("throughput", "latency", "gpus", "step")

#: The checks of a fixed-batch plan, by the certificate section each covers, in the order
#: they run: the listing establishes the legal layouts and the chosen layout its objective,
#: which the entries and the objective record are then checked against.
SECTIONS: tuple[tuple[str, Callable[[Context], None]], ...] = (
    ("certificate.search", check_record),
    ("layout", check_chosen_layout),
    ("certificate.search.entries", check_entries),
    ("objective", check_objective_record),
    ("infeasibility", check_fix),
)


def load_plan(path: str | Path) -> Plan:
    """Read a plan file (this format version or an older one); see :func:`read_plan`."""
    return read_plan(path)


def read_verified_plan(path: str | Path) -> Plan:
    """Read a plan file and verify it: what ``export`` and ``plot`` act on.

    Raises
    ------
    InvalidInputError
        For a malformed plan file (exit 2).
    VerificationError
        For a well-formed plan that does not hold, naming the first failed check (exit 5).
    """
    plan = read_plan(path)
    report = verify(plan)
    if not report.ok:
        more = len(report.violations) - 1
        raise VerificationError(
            f"{path}: the plan does not verify: {report.violations[0]}"
            + (f" (and {more} more; run 'placer verify {path}')" if more else "")
        )
    return plan


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
    """Re-check ``plan`` under the calibration in force; ``inputs`` (model/cluster/workload
    specs, loads by layer) are compared with the plan's input copies by content."""
    found = Findings()
    if inputs:
        found.bad.extend(compare_inputs(plan, inputs))
        found.checked.append("inputs match the given files")
    specs = input_specs(plan, found)
    if specs is None:
        return found.report()
    model, cluster, workload = specs
    sv = plan.certificate.solver
    if sv.profile not in PROFILES:
        found.bad.append(f"certificate.solver.profile: unknown rules profile '{sv.profile}'")
        return found.report()
    if workload.serving or (plan.serving is not None and plan.serving.objective == "latency"):
        # A serving plan carries its own proof (docs/serving.md), deployed or not; objective
        # latency may have no target (it carries a concurrency).
        from placer.serving.check import check_serving

        if plan.serving is None:
            found.bad.append(
                "serving: the workload sets latency targets but the plan has no serving record "
                "(the search record that proves its status)"
            )
            return found.report()
        bad, done = check_serving(plan, model, cluster, workload, PROFILES[sv.profile])
        found.bad.extend(bad)
        found.checked.extend(done)
        return found.report()
    if plan.serving is not None:
        found.bad.append("serving: a serving record, but the workload sets no latency target")
        return found.report()
    if sv.objective not in _OBJECTIVES:
        found.bad.append(f"certificate.solver.objective: unknown objective '{sv.objective}'")
        return found.report()
    if (
        cluster.num_gpus > MAX_VERIFY_GPUS
        or model.num_layers > MAX_VERIFY_LAYERS
        or model.max_experts > MAX_VERIFY_EXPERTS
    ):
        found.bad.append(
            f"the plan's cluster ({cluster.num_gpus} GPUs) or model ({model.num_layers} layers, "
            f"{model.max_experts} experts per layer) is beyond what verify re-derives "
            f"({MAX_VERIFY_GPUS} GPUs, {MAX_VERIFY_LAYERS} layers, {MAX_VERIFY_EXPERTS} experts)"
        )
        return found.report()
    ctx = Context(plan, model, cluster, workload, PROFILES[sv.profile], found)
    try:
        for _section, check in SECTIONS:
            check(ctx)
    except (OverflowError, FloatingPointError) as exc:
        # Input copies that validate one field at a time can still overflow in products
        # (bytes, FLOPs); such a plan cannot hold, whatever it claims.
        found.bad.append(
            f"the plan's inputs are out of range: recomputing its figures overflowed ({exc})"
        )
    return found.report()


__all__ = [
    "MAX_VERIFY_EXPERTS",
    "MAX_VERIFY_GPUS",
    "MAX_VERIFY_LAYERS",
    "SECTIONS",
    "LegalLayouts",
    "VerifyReport",
    "compare_inputs",
    "legal_layouts",
    "load_plan",
    "read_verified_plan",
    "verify",
    "verify_plan",
]
