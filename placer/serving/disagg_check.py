"""``placer verify`` for the disaggregated search record: re-derive every prefill entry and
decode group from the plan's inputs, then re-settle the whole split space (numpy only, no
OR-Tools; docs/serving.md, "Disaggregated").

What is re-derived, not read from the record:

- the legal layouts (each prefill entry and the TPOT decode group must list each once);
- every prefill figure (achievable and bound, or the loose bound alone where the record
  kept it) and whether it fits;
- every decode entry's memory limit, concurrency ranges, exclusions and bounds, and its best
  concurrency's rate, as :mod:`placer.serving.check` does for the aggregated search;
- the split space, the step caps TTFT sets and how each split is settled
  (:func:`placer.serving.splits.settle`): ``optimal`` only when no split stays open and the
  search was not cut by the time limit, and the recorded bound and counts must equal the
  recomputed ones (a cut search's unreached layouts carry one range bounded from their loose
  figures, re-derived like any other);
- the deployed choice: disaggregated exactly when it beats the aggregated plan.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from placer.cluster import ClusterSpec
from placer.layout import Layout
from placer.model import ModelSpec
from placer.rules import RulesProfile
from placer.search.space import enumerate_layouts
from placer.serving.check import close
from placer.serving.disagg import DecodeProbe, decode_workload
from placer.serving.probe import LayoutProbe
from placer.serving.record import DisaggRecord, DisaggSearch, PrefillEntry, ServingEntry
from placer.serving.search import TIE, cap_check
from placer.serving.splits import SplitSpace, all_splits, prefill_sizes, settle
from placer.serving.timing import NS, tokens_per_s_bound
from placer.workload import Workload


def _prefill(
    search: DisaggSearch,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    legal: Sequence[Layout],
    bad: list[str],
) -> None:
    """Every prefill entry recomputed; the entries name each legal layout once."""
    names = [e.layout for e in search.prefill]
    if sorted(names) != sorted(lay.describe() for lay in legal):
        bad.append("disagg: the prefill entries do not list each legal layout once")
        return
    by_name = {e.layout: e for e in search.prefill}
    cache: dict[object, object] = {}
    for lay in legal:
        theirs = by_name[lay.describe()]
        probe = LayoutProbe(model, cluster, workload, lay, cache)
        p = probe.at(1) if theirs.tight else probe.loose(1)
        mine = PrefillEntry(
            layout=lay.describe(),
            gpus=lay.gpus,
            fits=p.fits,
            fits_bound=p.fits_bound,
            prefill_ns=p.prefill_ns,
            prefill_bound_ns=p.prefill_bound_ns,
            tight=theirs.tight,
        )
        if theirs != mine:
            bad.append(f"disagg: prefill of {lay.describe()} differs from the recomputed one")


def _entry_bound(
    e: ServingEntry, probe: DecodeProbe, wl: Workload, bad: list[str]
) -> float | None:
    """The largest output tokens/s of one decode instance the entry's ranges allow, all
    recomputed; None (and a violation) when the entry does not hold."""
    where = f"disagg: decode {e.layout}"
    if e.memory_limit == 0 and probe.memory_bound_fits(1):
        bad.append(f"{where}: holds one request, the record says none")
        return None
    if e.memory_limit and (
        probe.memory_bound_fits(e.memory_limit + 1) or not probe.memory_bound_fits(e.memory_limit)
    ):
        bad.append(f"{where}: memory limit {e.memory_limit} recomputed differently")
        return None
    top, nxt = 0.0, 1
    for leaf in e.leaves:
        if leaf.low != nxt or leaf.high < leaf.low:
            break
        nxt = leaf.high + 1
        p = probe.at(leaf.low) if leaf.tight else probe.loose(leaf.low)
        why = cap_check(wl, p, bound=True)
        if leaf.excluded:
            if why != leaf.excluded:
                bad.append(f"{where} at {leaf.low}: not excluded by {leaf.excluded}")
                return None
            continue
        ub = tokens_per_s_bound(wl, leaf.low, leaf.high, p.step_bound_ns, p.prefill_bound_ns)
        if why is not None or not close(ub, leaf.bound):
            bad.append(f"{where} {leaf.low}..{leaf.high}: bound recomputed {ub:.6g}")
            return None
        top = max(top, ub)
    if nxt != e.memory_limit + 1:
        bad.append(f"{where}: the ranges do not cover 1..{e.memory_limit}")
        return None
    if e.concurrency is not None:
        p = probe.at(e.concurrency)
        rate = e.concurrency * NS / p.step_ns if p.fits and p.step_ns else 0.0
        if cap_check(wl, p, bound=False) is not None or not close(rate, e.rate or 0.0):
            bad.append(f"{where}: concurrency {e.concurrency} recomputed {rate:.6g} tokens/s")
            return None
        top = max(top, rate)
    return top


def _groups(
    search: DisaggSearch,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    legal: Sequence[Layout],
    bad: list[str],
) -> dict[tuple[int | None, int | None], dict[int, float]]:
    """Per decode group (gpus, cap): the recomputed bound per decode size."""
    out: dict[tuple[int | None, int | None], dict[int, float]] = {}
    cache: dict[object, object] = {}
    if not search.decode or search.decode[0].gpus is not None:
        bad.append("disagg: the first decode group must be the TPOT group of every layout")
        return out
    for group in search.decode:
        key = (group.gpus, group.step_cap_ns)
        if key in out or (group.gpus is None) != (group.step_cap_ns is None):
            bad.append(f"disagg: decode group {key} is repeated or malformed")
            continue
        want = [lay for lay in legal if group.gpus is None or lay.gpus == group.gpus]
        if sorted(e.layout for e in group.entries) != sorted(lay.describe() for lay in want):
            bad.append(f"disagg: decode group {key} does not list each of its layouts once")
            continue
        wl = decode_workload(workload, group.step_cap_ns)
        by_name = {e.layout: e for e in group.entries}
        sizes: dict[int, float] = {}
        for lay in want:
            probe = DecodeProbe(model, cluster, wl, lay, cache)
            got = _entry_bound(by_name[lay.describe()], probe, wl, bad)
            if got is None:
                return {}
            sizes[lay.gpus] = max(sizes.get(lay.gpus, 0.0), got)
        out[key] = sizes
    return out


def check_disagg_search(
    d: DisaggRecord,
    aggregated: float,
    max_instance_gpus: int,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    profile: RulesProfile,
    bad: list[str],
    checked: list[str],
) -> None:
    """Re-derive and re-settle the disaggregated search (module docstring)."""
    if d.deployed != (d.tokens_per_s_per_gpu > aggregated * (1 + TIE)):
        bad.append("disagg: 'deployed' does not follow from the two figures")
    if not close(d.aggregated_tokens_per_s_per_gpu, aggregated):
        bad.append("disagg: the aggregated figure is not the plan's")
    if d.cut and d.status == "optimal":
        bad.append("disagg: the time limit cut the split search, its status cannot be optimal")
    search = d.search
    if search is None:
        if d.status == "optimal":
            bad.append("disagg: status optimal without a search record")
        return
    legal = enumerate_layouts(model, cluster, profile, max_instance_gpus).legal
    names = {lay.describe() for lay in legal}
    if d.prefill_layout not in names or d.decode_layout not in names:
        bad.append("disagg: an instance layout is not a legal layout")
    before = len(bad)
    _prefill(search, model, cluster, workload, legal, bad)
    groups = _groups(search, model, cluster, workload, legal, bad)
    if not groups or len(bad) > before:
        return
    sizes = prefill_sizes(search.prefill)
    splits = all_splits(SplitSpace(model, cluster, workload), sizes, legal)
    tpot = groups[(None, None)]
    counts, top = settle(
        workload,
        cluster.num_gpus,
        splits,
        {g: s.bound_ns for g, s in sizes.items()},
        lambda g: tpot.get(g, 0.0),
        lambda g, cap: groups[(g, cap)].get(g, 0.0) if (g, cap) in groups else None,
        d.tokens_per_s_per_gpu,
    )
    mine = (len(splits), counts["pruned"], counts["capped"], counts["excluded"], counts["open"])
    theirs = (search.splits, search.pruned, search.capped, search.excluded, search.open)
    if mine != theirs:
        bad.append(
            f"disagg: splits/pruned/capped/excluded/open recomputed {mine}, record {theirs}"
        )
    if (math.isfinite(top) or d.bound is not None) and (
        d.bound is None or not close(top, d.bound)
    ):
        bad.append(f"disagg: bound recomputed {top:.6g}, the record says {d.bound}")
    if d.status == "optimal" and (counts["open"] or d.bound is None):
        bad.append(f"disagg: status optimal but {counts['open']} splits could still beat it")
    checked.append(
        f"disagg search: {len(legal)} prefill and decode layouts, {len(groups)} decode "
        f"groups, {len(splits)} splits re-settled"
    )
