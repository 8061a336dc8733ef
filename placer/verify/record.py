"""The search record's listing: every legal layout of the model, cluster and rules profile
re-derived here, and listed by the record exactly once with the right degrees and counts."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from pydantic import ValidationError

from placer.cluster import ClusterSpec
from placer.layout import Layout
from placer.model import ModelSpec
from placer.plan import SearchEntry
from placer.rules import RulesProfile, layout_violations
from placer.verify.context import Context, LayoutKey, layout_key


def check_record(ctx: Context) -> None:
    """The legal layouts (kept in ``ctx.legal``), and the record's listing of them."""
    rec = ctx.plan.certificate.search
    where = "certificate.search"
    seen = Counter(layout_key(e) for e in rec.entries)
    if rec.complete:
        space = legal_layouts(
            ctx.model,
            ctx.cluster,
            ctx.profile,
            ctx.plan.certificate.solver.max_gpus,
            stop_after=len(seen),
        )
        if space.stopped:
            ctx.bad.append(
                f"{where}.entries: {len(seen)} layouts listed, the rules profile gives more "
                "legal layouts than that (some are missing from the record)"
            )
            return
        legal = {layout_key(lay): lay for lay in space.legal}
        check_space_counts(ctx, space)
    else:
        # The enumeration was cut short: each listed layout must be legal on its own, and
        # the plan may claim no bound (checked with the objective record).
        legal = _listed_legal(ctx, rec.entries)
    for i, e in enumerate(rec.entries):
        lay = legal.get(layout_key(e))
        if lay is None:
            ctx.bad.append(
                f"{where}.entries[{i}] (TP{e.tp} PP{e.pp} EP{e.ep} ETP{e.etp} "
                f"DPattn{e.dp_attn}): not a legal layout of this model, cluster and rules "
                "profile"
            )
            continue
        if e.layout != lay.describe() or e.gpus != lay.gpus:
            ctx.bad.append(
                f"{where}.entries[{i}]: says {e.layout[:40]!r} on {e.gpus} GPUs, its "
                f"degrees give '{lay.describe()}' on {lay.gpus}"
            )
    for k, n in seen.items():
        if n > 1 and k in legal:
            ctx.bad.append(f"{where}.entries: {legal[k].describe()} is listed {n} times")
    missing = [lay for k, lay in legal.items() if k not in seen]
    if missing and rec.complete:
        names = ", ".join(lay.describe() for lay in missing[:3])
        ctx.bad.append(
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
            ctx.bad.append(
                f"{where}.{name}: plan says {getattr(rec, name)}, the entries give {want}"
            )
    ctx.found.checked.append(
        f"search record lists each of the {len(legal)} legal layouts once"
        if rec.complete
        else f"search record (enumeration cut short): {len(legal)} listed layouts legal"
    )
    ctx.legal = legal


def check_space_counts(ctx: Context, space: LegalLayouts) -> None:
    """The record's counts of legal layouts, candidates and rejections."""
    rec = ctx.plan.certificate.search
    where = "certificate.search"
    if rec.legal != len(space.legal):
        ctx.bad.append(
            f"{where}.legal: plan says {rec.legal} legal layouts, the rules profile "
            f"gives {len(space.legal)}"
        )
    if rec.candidates != space.candidates:
        ctx.bad.append(
            f"{where}.candidates: plan says {rec.candidates}, recomputed {space.candidates}"
        )
    if dict(rec.rejected_by_rule) != dict(space.rejected):
        ctx.bad.append(f"{where}.rejected_by_rule differs from the rules profile's")


def _listed_legal(ctx: Context, entries: tuple[SearchEntry, ...]) -> dict[LayoutKey, Layout]:
    """The listed layouts that are legal (each checked on its own, no enumeration)."""
    limit = min(ctx.cluster.num_gpus, ctx.plan.certificate.solver.max_gpus or 2**62)
    out = {}
    for e in entries:
        if e.tp * e.dp_attn * e.pp > limit:
            continue
        try:
            lay = Layout(tp=e.tp, pp=e.pp, ep=e.ep, etp=e.etp, dp_attn=e.dp_attn)
        except ValidationError:
            continue
        if not layout_violations(ctx.model, ctx.cluster, lay, ctx.profile):
            out[layout_key(lay)] = lay
    return out


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
