"""Independent re-check of a plan from the plan and its inputs alone (numpy, no OR-Tools).

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

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, ValidationError

from placer._base import Frozen
from placer.calibration import Calibration, default_calibration, use_calibration
from placer.cluster import ClusterSpec
from placer.collectives import use_engine
from placer.cost import estimate
from placer.evaluate import Constraint, evaluate
from placer.exceptions import VerificationError
from placer.layout import Layout
from placer.ledger import ExpertMap
from placer.model import ModelSpec
from placer.plan import Plan, SearchEntry, content_digest, digest
from placer.planfile import read_plan
from placer.proof import any_fit, layout_optimum
from placer.rules import PROFILES, RulesProfile, layout_violations
from placer.search.space import enumerate_layouts
from placer.search.tables import (
    TIME_SCALE,
    LayoutTables,
    add_costs,
    balanced_counts,
    build_tables,
    lower_bound_ns,
    memory_lower_bound,
    objective_ns,
)
from placer.workload import Workload

#: Largest cluster whose legal layouts ``verify`` re-derives. Enumerating the layouts of a
#: larger cluster takes longer than a re-check should (see docs/certificate.md).
MAX_VERIFY_GPUS = 4096

#: Most layers a plan's model may have for the exact re-proofs (their sums of per-layer
#: times, each at most 2**50 ns, must stay inside 64-bit integers).
MAX_VERIFY_LAYERS = 4096

#: Most experts per MoE layer the re-checks handle (per-expert arrays are allocated; the
#: largest bundled model has 384).
MAX_VERIFY_EXPERTS = 2**16

#: "step" is the fixed-batch pipelined step under its serving-era name: it is priced as
#: "throughput" everywhere (docs/serving.md).
_OBJECTIVES = ("throughput", "latency", "gpus", "step")


class VerifyReport(Frozen):
    """What ``verify`` found: ok only if no violation."""

    ok: bool = Field(description="Every check passed.")
    violations: tuple[str, ...] = Field(description="One line per failed check.")
    checked: tuple[str, ...] = Field(description="What was re-checked.")
    trusted: tuple[str, ...] = Field(description="What could not be re-derived without a solver.")


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


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _first_difference(mine: Any, theirs: Any, where: str) -> str | None:
    """The JSON path of the first place two dumped records differ (floats to 1e-9)."""
    if isinstance(mine, dict) and isinstance(theirs, dict):
        if set(mine) != set(theirs):
            return where
        for key in mine:
            got = _first_difference(mine[key], theirs[key], f"{where}.{key}")
            if got is not None:
                return got
        return None
    if isinstance(mine, list | tuple) and isinstance(theirs, list | tuple):
        if len(mine) != len(theirs):
            return where
        for i, (a, b) in enumerate(zip(mine, theirs, strict=True)):
            got = _first_difference(a, b, f"{where}[{i}]")
            if got is not None:
                return got
        return None
    if isinstance(mine, bool) or isinstance(theirs, bool):
        return None if mine is theirs else where
    if isinstance(mine, int | float) and isinstance(theirs, int | float):
        return None if _close(float(mine), float(theirs)) else where
    return None if mine == theirs else where


def _key(e: SearchEntry | Layout) -> tuple[int, int, int, int, int]:
    if isinstance(e, Layout):
        return (e.tp, e.pp, e.ep, e.expert_tp, e.dp_attn)
    return (e.tp, e.pp, e.ep, e.etp, e.dp_attn)


class _Findings:
    """Violations, what was checked and what had to be trusted, in order."""

    def __init__(self) -> None:
        self.bad: list[str] = []
        self.checked: list[str] = []
        self.trusted: list[str] = []

    def report(self) -> VerifyReport:
        return VerifyReport(
            ok=not self.bad,
            violations=tuple(self.bad),
            checked=tuple(self.checked),
            trusted=tuple(self.trusted),
        )


# ------------------------------------------------------------------ inputs
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


def _specs(plan: Plan, found: _Findings) -> tuple[ModelSpec, ClusterSpec, Workload] | None:
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


# ------------------------------------------------------------------ verify
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
    found = _Findings()
    if inputs:
        found.bad.extend(compare_inputs(plan, inputs))
        found.checked.append("inputs match the given files")
    specs = _specs(plan, found)
    if specs is None:
        return found.report()
    model, cluster, workload = specs
    sv = plan.certificate.solver
    if sv.profile not in PROFILES:
        found.bad.append(f"certificate.solver.profile: unknown rules profile '{sv.profile}'")
        return found.report()
    if workload.serving:
        # A serving plan carries its own proof (docs/serving.md), deployed or not.
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
    check = _Checker(plan, model, cluster, workload, PROFILES[sv.profile], found)
    try:
        check.run()
    except (OverflowError, FloatingPointError) as exc:
        # Input copies that validate one field at a time can still overflow in products
        # (bytes, FLOPs); such a plan cannot hold, whatever it claims.
        found.bad.append(
            f"the plan's inputs are out of range: recomputing its figures overflowed ({exc})"
        )
    return found.report()


class _Checker:
    """The checks of one plan against its (validated) inputs."""

    def __init__(
        self,
        plan: Plan,
        model: ModelSpec,
        cluster: ClusterSpec,
        workload: Workload,
        profile: RulesProfile,
        found: _Findings,
    ) -> None:
        self.plan = plan
        self.model = model
        self.cluster = cluster
        self.workload = workload
        self.profile = profile
        self.objective = plan.certificate.solver.objective
        self.found = found
        self.bad = found.bad
        # The plan's own objective in ns (also the tie-break of the gpus objective).
        self.value_ns: int | None = None
        self.layout: Layout | None = None

    def run(self) -> None:
        legal = self.check_record()
        if self.plan.layout is not None:
            self.check_layout()
        elif self.plan.status in ("optimal", "feasible"):
            self.bad.append(f"status '{self.plan.status}' without a layout")
        if legal is not None:
            self.check_entries(legal)
        self.check_objective_record()
        self.check_fix()

    # ------------------------------------------------------------ search record
    def check_record(self) -> dict[tuple[int, int, int, int, int], Layout] | None:
        """The legal layouts, and the record's listing of them."""
        rec = self.plan.certificate.search
        where = "certificate.search"
        seen = Counter(_key(e) for e in rec.entries)
        if rec.complete:
            space = legal_layouts(
                self.model,
                self.cluster,
                self.profile,
                self.plan.certificate.solver.max_gpus,
                stop_after=len(seen),
            )
            if space.stopped:
                self.bad.append(
                    f"{where}.entries: {len(seen)} layouts listed, the rules profile gives more "
                    "legal layouts than that (some are missing from the record)"
                )
                return None
            legal = {_key(lay): lay for lay in space.legal}
            self.check_space_counts(space)
        else:
            # The enumeration was cut short: each listed layout must be legal on its own, and
            # the plan may claim no bound (checked with the objective record).
            legal = self._listed_legal(rec.entries)
        for i, e in enumerate(rec.entries):
            lay = legal.get(_key(e))
            if lay is None:
                self.bad.append(
                    f"{where}.entries[{i}] (TP{e.tp} PP{e.pp} EP{e.ep} ETP{e.etp} "
                    f"DPattn{e.dp_attn}): not a legal layout of this model, cluster and rules "
                    "profile"
                )
                continue
            if e.layout != lay.describe() or e.gpus != lay.gpus:
                self.bad.append(
                    f"{where}.entries[{i}]: says {e.layout[:40]!r} on {e.gpus} GPUs, its "
                    f"degrees give '{lay.describe()}' on {lay.gpus}"
                )
        for k, n in seen.items():
            if n > 1 and k in legal:
                self.bad.append(f"{where}.entries: {legal[k].describe()} is listed {n} times")
        missing = [lay for k, lay in legal.items() if k not in seen]
        if missing and rec.complete:
            names = ", ".join(lay.describe() for lay in missing[:3])
            self.bad.append(
                f"{where}.entries: {len(missing)} legal layout(s) missing from the record "
                f"(e.g. {names})"
            )
        counts = Counter(e.status for e in rec.entries)
        solved = counts["optimal"] + counts["feasible"]
        solved += sum(
            1 for e in rec.entries if e.status == "infeasible" and e.reason.startswith("CP-SAT")
        )
        for name, want in (
            ("pruned", counts["pruned"]),
            ("infeasible", counts["infeasible"]),
            ("unresolved", counts["unresolved"]),
            ("solved", solved),
        ):
            if getattr(rec, name) != want:
                self.bad.append(
                    f"{where}.{name}: plan says {getattr(rec, name)}, the entries give {want}"
                )
        self.found.checked.append(
            f"search record lists each of the {len(legal)} legal layouts once"
            if rec.complete
            else f"search record (enumeration cut short): {len(legal)} listed layouts legal"
        )
        return legal

    def check_space_counts(self, space: LegalLayouts) -> None:
        """The record's counts of legal layouts, candidates and rejections."""
        rec = self.plan.certificate.search
        where = "certificate.search"
        if rec.legal != len(space.legal):
            self.bad.append(
                f"{where}.legal: plan says {rec.legal} legal layouts, the rules profile "
                f"gives {len(space.legal)}"
            )
        if rec.candidates != space.candidates:
            self.bad.append(
                f"{where}.candidates: plan says {rec.candidates}, recomputed {space.candidates}"
            )
        if dict(rec.rejected_by_rule) != dict(space.rejected):
            self.bad.append(f"{where}.rejected_by_rule differs from the rules profile's")

    def _listed_legal(
        self, entries: tuple[SearchEntry, ...]
    ) -> dict[tuple[int, int, int, int, int], Layout]:
        """The listed layouts that are legal (each checked on its own, no enumeration)."""
        limit = min(self.cluster.num_gpus, self.plan.certificate.solver.max_gpus or 2**62)
        out = {}
        for e in entries:
            if e.tp * e.dp_attn * e.pp > limit:
                continue
            try:
                lay = Layout(tp=e.tp, pp=e.pp, ep=e.ep, etp=e.etp, dp_attn=e.dp_attn)
            except ValidationError:
                continue
            if not layout_violations(self.model, self.cluster, lay, self.profile):
                out[_key(lay)] = lay
        return out

    # ------------------------------------------------------------ chosen layout
    def check_layout(self) -> None:
        pl = self.plan.layout
        assert pl is not None
        try:
            layout = pl.to_layout()
        except ValidationError as exc:
            msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
            self.bad.append(f"layout: not a layout: {msg}")
            return
        if layout.gpus != pl.gpus_used:
            self.bad.append(f"layout.gpus_used: {pl.gpus_used}, the degrees give {layout.gpus}")
        rules = layout_violations(self.model, self.cluster, layout, self.profile)
        self.bad.extend(f"layout: rules: {v}" for v in rules)
        if rules:
            return  # nothing below is defined for an illegal layout
        self.found.checked.append("rules profile and layer split")
        self.layout = layout
        tables = build_tables(self.model, self.cluster, self.workload, layout, self.objective)
        # The objective depends on the split alone: any valid expert map puts
        # ceil(slots / ep) slots on a layer's busiest rank (docs/certificate.md).
        self.value_ns = objective_ns(
            tables, pl.layers_per_stage, balanced_counts(tables), self.objective
        )
        counts = self.check_expert_map(layout)
        if counts is None:
            return
        self.found.checked.append("expert map: every expert placed, ids in range, slot counts")
        emap: ExpertMap = dict(self.plan.expert_map)
        ev = evaluate(self.model, self.cluster, self.workload, layout, self.profile, emap)
        self.check_gpus(ev.gpus)
        self.check_constraints(list(ev.constraints) + _placement_constraints(tables, counts))
        loads = (
            {k: np.asarray(v) for k, v in self.plan.inputs.loads.items()}
            if self.plan.inputs.loads
            else None
        )
        est = estimate(self.model, self.cluster, self.workload, layout, emap, loads)
        if self.plan.estimates is None:
            self.bad.append("estimates: missing for a plan with a layout")
        else:
            diff = _first_difference(
                est.model_dump(mode="json"), self.plan.estimates.model_dump(mode="json"), ""
            )
            if diff is not None:
                self.bad.append(f"estimates{diff}: differs from the cost model's")
        self.found.checked.append("objective and every estimate")

    def check_expert_map(self, layout: Layout) -> np.ndarray | None:
        """Slot counts per (layer, EP rank), or None when the map is unusable."""
        model, emap = self.model, self.plan.expert_map
        counts = np.zeros((model.num_layers, layout.ep), dtype=np.int64)
        if set(emap) != set(model.moe_layers):
            odd = sorted(set(emap) ^ set(model.moe_layers))[:3]
            self.bad.append(
                f"expert_map: lists layers other than the MoE layers (e.g. layer {odd[0]})"
            )
            return None
        ok = True
        for layer, ranks in emap.items():
            where = f"expert_map.{layer}"
            experts = model.experts_in_layer(layer)
            slots = experts + layout.redundant_experts
            if len(ranks) != layout.ep:
                self.bad.append(f"{where}: {len(ranks)} ranks, ep is {layout.ep}")
                ok = False
                continue
            seen = np.zeros(experts, dtype=np.int64)
            for r, ids in enumerate(ranks):
                counts[layer, r] = len(ids)
                if len(set(ids)) != len(ids):
                    self.bad.append(f"{where}[{r}]: an expert appears twice on one rank")
                    ok = False
                for e in ids:
                    if not 0 <= e < experts:
                        self.bad.append(f"{where}[{r}]: no expert {e} (ids are 0..{experts - 1})")
                        ok = False
                        break
                    seen[e] += 1
            if int(counts[layer].sum()) != slots:
                self.bad.append(f"{where}: {int(counts[layer].sum())} slots, expected {slots}")
                ok = False
            if np.any(seen == 0):
                self.bad.append(f"{where}: expert {int(np.argmin(seen))} is not placed")
                ok = False
            lo, hi = slots // layout.ep, -(-slots // layout.ep)
            if counts[layer].min() < lo or counts[layer].max() > hi:
                self.bad.append(f"{where}: slot counts per rank outside [{lo}, {hi}]")
                ok = False
        return counts if ok else None

    def check_gpus(self, gpus: Any) -> None:
        mine = [g.model_dump(mode="json") for g in gpus]
        theirs = [g.model_dump(mode="json") for g in self.plan.gpus]
        if len(mine) != len(theirs):
            self.bad.append(f"gpus: plan lists {len(theirs)} GPUs, the layout uses {len(mine)}")
        for i, (m, t) in enumerate(zip(mine, theirs, strict=False)):
            diff = _first_difference(m, t, f"gpus[{i}]")
            if diff is not None:
                self.bad.append(
                    f"memory of gpu {m['id']}: {diff}: plan says {_at(t, diff, f'gpus[{i}]')}, "
                    f"recomputed {_at(m, diff, f'gpus[{i}]')}"
                )
        for g in gpus:
            if g.used_bytes > g.capacity_bytes:
                self.bad.append(f"gpu {g.id} over capacity: {g.used_bytes} > {g.capacity_bytes}")
        self.found.checked.append(f"memory ledger, ids and capacity of {len(mine)} GPUs")

    def check_constraints(self, mine: list[Constraint]) -> None:
        theirs = self.plan.certificate.constraints
        where = "certificate.constraints"
        by_name = {c.name: c for c in mine}
        names = [c.name for c in theirs]
        if sorted(names) != sorted(by_name) or len(set(names)) != len(names):
            lost = sorted(set(by_name) - set(names))
            extra = sorted(set(names) - set(by_name))
            self.bad.append(
                f"{where}: not the layout's constraint instances"
                + (f" (missing {lost[0]})" if lost else "")
                + (f" (unknown {extra[0]})" if extra else "")
            )
        for i, c in enumerate(theirs):
            ref = by_name.get(c.name)
            if ref is None:
                continue
            for attr in ("value", "limit"):
                if not _close(getattr(ref, attr), getattr(c, attr)):
                    self.bad.append(
                        f"{where}[{i}] {c.name}: {attr} {getattr(c, attr):g}, recomputed "
                        f"{getattr(ref, attr):g}"
                    )
            if ref.holds != c.holds:
                self.bad.append(
                    f"{where}[{i}] {c.name}: holds is {c.holds}, recomputed {ref.holds}"
                )
            if not c.holds:
                self.bad.append(f"{where}[{i}] {c.name} does not hold ({c.value:g} > {c.limit:g})")
        for c in mine:
            if not c.holds:
                self.bad.append(f"recomputed constraint {c.name} does not hold")
        self.found.checked.append(f"{len(mine)} constraint instances: values, limits, holds")

    # ------------------------------------------------------------ search entries
    def check_entries(self, legal: dict[tuple[int, int, int, int, int], Layout]) -> None:
        """Every entry's figures and fate re-proven; the plan beats every layout it says."""
        entries = self.plan.certificate.search.entries
        where = "certificate.search.entries"
        plan_gpus = self.plan.layout.gpus_used if self.plan.layout is not None else None
        exact_proofs = 0
        cache: dict[object, object] = {}
        own = _key(self.layout) if self.layout is not None else None
        for i, e in enumerate(entries):
            lay = legal.get(_key(e))
            if lay is None:
                continue  # already reported as not legal
            at = f"{where}[{i}] ({lay.describe()})"
            if e.status == "unresolved" and self.plan.status == "optimal":
                self.bad.append(f"{at}: unresolved, yet the plan claims optimality")
            if e.status == "unresolved" and e.bound_units is None:
                continue  # claims nothing
            memory = build_tables(
                self.model, self.cluster, self.workload, lay, self.objective, False, cache
            )
            need, have = memory_lower_bound(memory)
            if e.status == "infeasible":
                if need > have:
                    continue
                fits, exact = any_fit(memory)
                exact_proofs += 1
                if fits and exact:
                    self.bad.append(f"{at}: declared infeasible, but a split fits memory")
                elif fits:
                    self.found.trusted.append(
                        f"{at}: infeasibility not re-proven within the search budget"
                    )
                continue
            if need > have:
                self.bad.append(
                    f"{at}: status {e.status}, but its aggregate memory does not fit "
                    f"({need} B > {have} B)"
                )
                continue
            tables = add_costs(
                memory, self.model, self.cluster, self.workload, self.objective, cache
            )
            lb = lower_bound_ns(tables, self.objective)
            if e.bound_units is not None and e.bound_units != lb:
                self.bad.append(f"{at}: bound_units {e.bound_units}, recomputed {lb}")
            if e.status == "pruned":
                if e.bound_units is None:
                    self.bad.append(f"{at}: pruned without a bound")
                self.check_pruned(at, lay, lb, plan_gpus)
            elif e.status in ("optimal", "feasible"):
                if e.bound_units is None:
                    self.bad.append(f"{at}: solved without its analytic bound")
                self.check_solved(at, e, tables, plan_gpus, own == _key(e))
        self.found.checked.append(
            f"every entry re-proven: pruning bounds, infeasibility ({exact_proofs} by the exact "
            "split and slot check, the rest by aggregate memory), solved values"
        )
        if own is not None and own in legal and entries and own not in {_key(e) for e in entries}:
            self.bad.append(f"{where}: the plan's layout is not in the search record")

    def check_pruned(self, at: str, lay: Layout, lb: int, plan_gpus: int | None) -> None:
        if plan_gpus is None:
            self.bad.append(f"{at}: pruned, but the plan has no layout to prune against")
            return
        if self.value_ns is None:
            return  # the plan's layout did not check out; that violation is listed
        if self.objective == "gpus":
            if lay.gpus < plan_gpus or (lay.gpus == plan_gpus and lb < self.value_ns):
                self.bad.append(f"{at}: pruned, but it could beat the plan (fewer GPUs or faster)")
        elif lb < self.value_ns:
            self.bad.append(
                f"{at}: pruned, but its bound {lb} ns is below the plan's {self.value_ns} ns"
            )

    def check_solved(
        self, at: str, e: SearchEntry, tables: LayoutTables, plan_gpus: int | None, own: bool
    ) -> None:
        """A solved entry's value and bound against the layout's exact optimum."""
        opt = layout_optimum(tables, self.objective)
        if opt.value is None:
            self.bad.append(f"{at}: status {e.status}, but no split of it fits memory")
            return
        if e.value_units is None:
            self.bad.append(f"{at}: status {e.status} without a value")
        elif e.value_units < opt.value:
            self.bad.append(
                f"{at}: value_units {e.value_units} is below the layout's optimum {opt.value}"
            )
        elif opt.exact and e.status == "optimal" and e.value_units != opt.value:
            self.bad.append(
                f"{at}: claimed optimal at {e.value_units} ns, the layout's optimum is "
                f"{opt.value} ns"
            )
        if e.solver_bound_units is not None and opt.exact and e.solver_bound_units > opt.value:
            self.bad.append(
                f"{at}: solver_bound_units {e.solver_bound_units} exceeds the layout's optimum "
                f"{opt.value}"
            )
        if (
            own
            and e.value_units is not None
            and self.value_ns is not None
            and e.value_units != self.value_ns
        ):
            self.bad.append(
                f"{at}: the plan's layout, value {e.value_units} but the plan's split gives "
                f"{self.value_ns}"
            )
        if self.plan.status != "optimal" or plan_gpus is None or self.value_ns is None:
            return
        beats = e.gpus < plan_gpus if self.objective == "gpus" else opt.value < self.value_ns
        if beats and opt.exact:
            what = (
                f"fits on {e.gpus} GPUs"
                if self.objective == "gpus"
                else f"reaches {opt.value} ns, split {list(opt.split or ())}"
            )
            self.bad.append(
                f"{at}: {what}, better than the plan claimed optimal ({self.value_ns} ns on "
                f"{plan_gpus} GPUs)"
            )
        elif beats:
            self.found.trusted.append(f"{at}: optimum not re-proven within the search budget")

    # ------------------------------------------------------------ objective record
    def expected_bound(self) -> int | None:
        """The global bound the verified entries support (the solver's rule)."""
        rec = self.plan.certificate.search
        if not rec.complete:
            return 0 if self.objective != "gpus" else 1
        entries = rec.entries
        plan_value = None
        if self.plan.layout is not None:
            plan_value = self.plan.layout.gpus_used if self.objective == "gpus" else self.value_ns
        if self.objective == "gpus":
            opened = [e.gpus for e in entries if e.status == "unresolved"]
            pool = opened + ([plan_value] if plan_value is not None else [])
            return min(pool) if pool else None
        bounds: list[int] = []
        for e in entries:
            if e.status == "unresolved":
                bounds.append(e.bound_units if e.bound_units is not None else 0)
            elif e.status == "feasible":
                b = e.solver_bound_units if e.solver_bound_units is not None else e.bound_units
                if b is not None:
                    bounds.append(max(b, e.bound_units or 0))
        if plan_value is not None:
            bounds.append(plan_value)
        return min(bounds) if bounds else None

    def check_objective_record(self) -> None:
        o, plan = self.plan.objective, self.plan
        where = "objective"
        if o.name != self.objective:
            self.bad.append(f"{where}.name: '{o.name}', the search used '{self.objective}'")
        unit = "GPUs" if self.objective == "gpus" else "s"
        if o.unit != unit:
            self.bad.append(f"{where}.unit: '{o.unit}', expected '{unit}'")
        bound = self.expected_bound()
        if o.bound_units != bound:
            self.bad.append(f"{where}.bound_units: plan says {o.bound_units}, recomputed {bound}")
        self._scaled(f"{where}.bound", o.bound, o.bound_units)
        if plan.layout is None:
            if plan.status == "infeasible":
                rec = plan.certificate.search
                if not rec.complete or any(e.status != "infeasible" for e in rec.entries):
                    self.bad.append("status infeasible but some layout is not proven infeasible")
            for name in ("value", "value_units", "gap"):
                if getattr(o, name) is not None:
                    self.bad.append(f"{where}.{name}: set on a plan without a layout")
            if plan.gpus or plan.expert_map or plan.estimates or plan.certificate.constraints:
                self.bad.append("a plan without a layout lists GPUs, experts or estimates")
            return
        if plan.status not in ("optimal", "feasible"):
            self.bad.append(f"status '{plan.status}' on a plan with a layout")
        if self.value_ns is None:
            return  # the layout did not check out; its violations are listed
        value = plan.layout.gpus_used if self.objective == "gpus" else self.value_ns
        if o.value_units != value:
            self.bad.append(
                f"{where}: plan says {o.value_units}, recomputed {value} ({where}.value_units)"
            )
        self._scaled(f"{where}.value", o.value, o.value_units)
        if o.bound_units is None or o.value_units is None or o.gap is None:
            self.bad.append(f"{where}: a plan needs value, bound and gap")
            return
        if o.bound_units > o.value_units:
            self.bad.append(f"{where}: bound exceeds the value")
        gap = (o.value_units - o.bound_units) / o.value_units if o.value_units else 0.0
        if not _close(gap, o.gap):
            self.bad.append(f"{where}.gap: {o.gap}, value and bound give {gap}")
        if (plan.status == "optimal") != (o.bound_units >= o.value_units):
            self.bad.append(f"status '{plan.status}' does not match gap {gap:.3g}")
        self.found.checked.append("objective value, bound, gap and status rule")

    def _scaled(self, where: str, figure: float | None, units: int | None) -> None:
        if (figure is None) != (units is None):
            self.bad.append(f"{where}: {figure} does not match its integer units {units}")
        elif figure is not None and units is not None:
            want = float(units) if self.objective == "gpus" else units / TIME_SCALE
            if not _close(figure, want):
                self.bad.append(f"{where}: {figure} does not match its integer units {units}")

    # ------------------------------------------------------------ fix
    def check_fix(self) -> None:
        inf = self.plan.infeasibility
        if inf is None:
            return
        if self.plan.layout is not None:
            self.bad.append("infeasibility: set on a plan with a layout")
            return
        if inf.min_gpus is None or len(self.cluster.groups) != 1:
            return
        if inf.min_gpus > MAX_VERIFY_GPUS:
            self.bad.append(f"infeasibility.min_gpus: {inf.min_gpus} is beyond what verify checks")
            return
        bigger = self.cluster.with_gpus(inf.min_gpus)
        space = enumerate_layouts(self.model, bigger, self.profile, only_gpus=inf.min_gpus)
        for lay in space.legal:
            t = build_tables(self.model, bigger, self.workload, lay, "throughput", False)
            need, have = memory_lower_bound(t)
            if need <= have and any_fit(t)[0]:
                self.found.checked.append(f"the fix: {lay.describe()} fits on {inf.min_gpus} GPUs")
                return
        self.bad.append(f"infeasibility.min_gpus: no layout fits on {inf.min_gpus} GPUs")


@dataclass(frozen=True)
class LegalLayouts:
    """The legal layouts as ``verify`` re-derives them, with the solver's counts."""

    legal: tuple[Layout, ...]
    candidates: int
    rejected: dict[str, int]
    stopped: bool  # True when more than ``stop_after`` legal layouts were found


def legal_layouts(
    model: ModelSpec,
    cluster: ClusterSpec,
    profile: RulesProfile,
    max_gpus: int | None = None,
    stop_after: int | None = None,
) -> LegalLayouts:
    """Every (tp, pp, ep, etp, dp_attn) on 1..N GPUs the profile accepts, enumerated here
    independently of the search (the rules themselves are :func:`layout_violations`).

    Counts candidates and rejections as the search does (pp divides the GPU count and is at
    most the layer count; tp divides the stage width; ep (at most the experts) and etp divide
    what is left). Stops as soon as more than ``stop_after`` legal layouts are found: a record
    listing fewer cannot be complete, and the rest need not be enumerated.
    """
    limit = min(cluster.num_gpus, max_gpus or cluster.num_gpus)
    experts = model.max_experts
    legal: list[Layout] = []
    rejected: Counter[str] = Counter()
    candidates = 0
    for gpus in range(1, limit + 1):
        for pp in _divisors(gpus):
            if pp > model.num_layers:
                continue
            width = gpus // pp
            for tp in _divisors(width):
                for ep in _divisors(width) if experts else [1]:
                    if experts and ep > experts:
                        continue
                    for etp in _divisors(width // ep):
                        candidates += 1
                        lay = Layout(tp=tp, pp=pp, ep=ep, etp=etp, dp_attn=width // tp)
                        bad = layout_violations(model, cluster, lay, profile)
                        if bad:
                            rejected[bad[0].split("(")[0].strip()] += 1
                            continue
                        legal.append(lay)
                        if stop_after is not None and len(legal) > stop_after:
                            return LegalLayouts(tuple(legal), candidates, dict(rejected), True)
    return LegalLayouts(tuple(legal), candidates, dict(rejected), False)


def _divisors(n: int) -> list[int]:
    """Divisors of ``n`` in increasing order."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted({*small, *(n // d for d in small)})


def _at(record: Any, path: str, prefix: str) -> Any:
    """The value at ``path`` (as written by :func:`_first_difference`) inside ``record``."""
    item = record
    for part in path[len(prefix) :].lstrip(".").split("."):
        if part and isinstance(item, dict):
            item = item.get(part)
    return item


def _placement_constraints(t: LayoutTables, counts: np.ndarray) -> list[Constraint]:
    """The slot and one-copy constraints a plan lists for every MoE layer (recomputed here
    from the expert map's slot counts)."""
    out = []
    for i, slots in enumerate(t.slots):
        if slots == 0:
            continue
        placed = int(counts[i].sum())
        most = int(counts[i].max())
        out.append(
            Constraint(
                name=f"expert_slots[layer {i}]",
                value=placed,
                limit=int(slots),
                holds=placed == slots,
            )
        )
        out.append(
            Constraint(
                name=f"one_copy_per_gpu[layer {i}]",
                value=most,
                limit=int(t.experts[i]),
                holds=most <= t.experts[i],
            )
        )
    return out


__all__ = [
    "LegalLayouts",
    "VerifyReport",
    "compare_inputs",
    "legal_layouts",
    "load_plan",
    "read_verified_plan",
    "verify",
]
