"""Disaggregated serving: ``x`` prefill instances and ``y`` decode instances, each with its
own legal layout, compared with aggregated serving (docs/serving.md, "Disaggregated").

- A prefill instance prefills one prompt at a time: ``1 / prefill`` requests/s.
- A decode instance at concurrency ``c`` has TPOT = step(c) (no prefills interleaved) and
  serves ``c / step(c) / output_len`` requests/s.
- Each request's KV cache (``prompt_len`` tokens, every layer) crosses the slowest link the
  deployment spans, sent by ``min(g_p, g_d)`` GPUs in parallel.
- TTFT = :func:`placer.serving.timing.disagg_ttft_ns`.
- ``x g_p + y g_d <= N``; requests/s = ``min(x / prefill, y x decode rate)``; output tokens/s
  per GPU of the cluster = requests/s x output_len / N.

The search, exact over the split space:

1. Every legal layout's prefill at concurrency 1 (achievable and bound): per GPU count the
   fastest prefill is best for capacity and for TTFT alike.
2. Every legal layout's decode search under the TPOT target alone (the aggregated search's
   branch and bound with no prefill share): a bound per concurrency range.
3. Every split (g_p, x, g_d, y) where y is the most decode instances that keep the deployment
   within one link level (more decode instances never lower the throughput, but may cross a
   slower link for the KV transfer). Its bound uses the fastest prefill bound of g_p and the
   best decode bound of g_d; splits whose bound cannot beat the best found are closed.
4. TTFT caps the decode step at ``TTFT - 2 prefill - transfer``. A split still open is
   re-searched with that cap (a *capped group*, one per decode size and cap).

:mod:`placer.serving.disagg_check` re-derives all of it for ``placer verify``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from placer.budget import Budget
from placer.cluster import ClusterSpec
from placer.config import SolveConfig
from placer.layout import Layout
from placer.model import ModelSpec
from placer.rules import get_profile
from placer.search.space import enumerate_layouts
from placer.serving.decode_probe import DecodeProbe as DecodeProbe
from placer.serving.record import (
    DecodeGroup,
    DisaggRecord,
    DisaggSearch,
    Leaf,
    PrefillEntry,
    ServingEntry,
)
from placer.serving.search import (
    TIE,
    LayoutResult,
    best_concurrency,
    cap_check,
    entry,
    memory_limit,
)
from placer.serving.splits import (
    PrefillSize,
    Split,
    SplitSpace,
    all_splits,
    decode_floor,
    prefill_sizes,
    settle,
    split_value,
    step_cap,
)
from placer.serving.splits import kv_transfer_ns as kv_transfer_ns
from placer.serving.timing import NS, disagg_ttft_ns, tokens_per_s_bound
from placer.workload import Workload


def layout_from_text(text: str) -> Layout:
    """The layout a :meth:`placer.layout.Layout.describe` text names (no split, no slots)."""
    degrees = {"tp": 1, "pp": 1, "ep": 1, "etp": 1, "dp_attn": 1}
    names = {"TP": "tp", "PP": "pp", "EP": "ep", "ETP": "etp", "DPattn": "dp_attn"}
    for part in text.split():
        for prefix in sorted(names, key=len, reverse=True):
            if part.startswith(prefix) and part[len(prefix) :].isdigit():
                degrees[names[prefix]] = int(part[len(prefix) :])
                break
    return Layout(**degrees)


def decode_workload(workload: Workload, step_cap_ns: int | None) -> Workload:
    """The workload a decode group is searched under: no TTFT (judged per split), and the
    TPOT target replaced by the step cap when one is given."""
    update: dict[str, object] = {"ttft_ms": None}
    if step_cap_ns is not None:
        update["tpot_ms"] = step_cap_ns / 1e6
    return workload.model_copy(update=update)


@dataclass
class Candidate:
    """A decode layout's best within a group: concurrency, rate and step."""

    layout: Layout
    concurrency: int
    rate: float
    step_ns: int
    split: tuple[int, ...]


@dataclass
class Group:
    """A decode group while searching: its record entries and achievable candidates."""

    entries: list[ServingEntry] = field(default_factory=list)
    best: dict[int, list[Candidate]] = field(default_factory=dict)

    def bound(self, gpus: int) -> float:
        """No layout of ``gpus`` GPUs in the group decodes more output tokens/s."""
        return max([0.0, *(e.bound or 0.0 for e in self.entries if e.gpus == gpus)])


@dataclass
class Stop:
    """The split search's view of the budget: once it has run out, it stays out, and the
    search remembers that it was cut (the record then says so and never claims optimal)."""

    budget: Budget
    cut: bool = False

    def expired(self) -> bool:
        """True once the budget has run out (and from then on)."""
        if not self.cut and self.budget.expired():
            self.cut = True
        return self.cut


@dataclass
class Probed:
    """Every legal layout probed once: its decode probe (shared by every decode group), its
    prefill entry, and the DP split of those that hold a prompt."""

    probes: list[DecodeProbe]
    prefill: tuple[PrefillEntry, ...]
    prefill_splits: dict[str, tuple[int, ...]]


def probe_layouts(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    legal: Sequence[Layout],
    stop: Stop,
    cache: dict[object, object],
) -> Probed | None:
    """Every legal layout as a prefill instance, with the memory limit and the loose figures
    at concurrency 1 of its decode probe already memoised (so that a cut decode group can
    still bound every layout without new work); None if the budget ran out first.
    ``cache``: cost columns, shared with the aggregated search (the targets change none).

    Per GPU count only the fastest prefill is a candidate, so a layout whose prefill bound
    is above the fastest achievable prefill of its size already found keeps its loose
    entry (``tight`` False): its DP split could change neither the size's fastest prefill
    nor its bound. Layouts of a size are taken by prefill bound, lowest first."""
    probes = []
    decode_wl = decode_workload(workload, None)
    for lay in legal:
        if stop.expired():
            return None
        probe = DecodeProbe(model, cluster, decode_wl, lay, cache, stop.budget)
        if probe.find_memory_limit() > 0:
            probe.loose(1)
        probes.append(probe)
    fastest: dict[int, int] = {}
    found: dict[str, PrefillEntry] = {}
    splits: dict[str, tuple[int, ...]] = {}
    by_bound = sorted(
        probes, key=lambda p: (p.layout.gpus, p.prefill_bound_point().prefill_bound_ns)
    )
    for probe in by_bound:
        if stop.expired():
            return None
        g, name = probe.layout.gpus, probe.layout.describe()
        tight = not probe.prefill_bound_point().prefill_bound_ns > fastest.get(g, math.inf)
        p = probe.prefill_point(tight)
        found[name] = PrefillEntry(
            layout=name,
            gpus=g,
            fits=p.fits,
            fits_bound=p.fits_bound,
            prefill_ns=p.prefill_ns,
            prefill_bound_ns=p.prefill_bound_ns,
            tight=tight,
        )
        if p.split is not None:
            splits[name] = p.split
            fastest[g] = min(fastest.get(g, p.prefill_ns), p.prefill_ns)
    entries = tuple(found[p.layout.describe()] for p in probes)
    return Probed(probes, entries, splits)


def coarse_entry(probe: DecodeProbe) -> ServingEntry:
    """A layout the time limit left unsearched: its whole range 1..memory limit closed by
    one bound from the loose figures at concurrency 1 (the step only grows with the
    concurrency), which ``placer verify`` re-derives like any other range."""
    lay, wl = probe.layout, probe.workload
    res = LayoutResult(memory_limit=memory_limit(probe), cap_reason="memory")
    if res.memory_limit == 0:
        return entry(lay, "infeasible", res, probe.exact, reason="memory excludes every one")
    one = probe.loose(1)
    why = cap_check(wl, one, bound=True)
    if why is not None:
        res.cap_reason = why
        res.leaves.append(Leaf(low=1, high=res.memory_limit, bound=0.0, tight=False, excluded=why))
        return entry(lay, "infeasible", res, probe.exact, reason=f"{why} excludes every one")
    ub = tokens_per_s_bound(wl, 1, res.memory_limit, one.step_bound_ns, one.prefill_bound_ns)
    res.leaves.append(Leaf(low=1, high=res.memory_limit, bound=ub, tight=False))
    return entry(lay, "unresolved", res, probe.exact, reason="time limit")


def decode_group(
    probes: Sequence[DecodeProbe],
    workload: Workload,
    cap_ns: int | None,
    stop: Stop,
    floor: Callable[[int], float] = lambda g: 0.0,
    found: Callable[[Group, int], None] = lambda group, g: None,
) -> Group:
    """The decode branch and bound of every probed layout under ``cap_ns``; once the budget
    has run out, the remaining layouts get :func:`coarse_entry`.

    ``floor(g)``: the rate a decode instance of ``g`` GPUs must exceed to matter (ranges at
    or below it are closed); ``found(group, g)`` is told of each new candidate of size g."""
    wl = decode_workload(workload, cap_ns)
    group = Group()
    best_rate: dict[int, float] = {}
    for base in probes:
        probe = base.under(wl)
        lay, g = probe.layout, probe.layout.gpus
        if stop.expired():
            group.entries.append(coarse_entry(probe))
            continue
        res = best_concurrency(
            probe,
            lambda g=g: max(best_rate.get(g, 0.0), floor(g)),  # type: ignore[misc]
            stop.budget,
        )
        if res.open_bound > 0.0:
            stop.expired()  # a range left open by the time limit marks the search as cut
        if res.concurrency is None:
            status = "infeasible" if res.cap == 0 else "pruned"
            status = "unresolved" if res.open_bound > 0.0 else status
        else:
            status = "solved" if res.open_bound == 0.0 else "unresolved"
            p = probe.at(res.concurrency)
            assert p.split is not None
            group.best.setdefault(g, []).append(
                Candidate(lay, res.concurrency, res.rate, p.step_ns, p.split)
            )
            best_rate[g] = max(best_rate.get(g, 0.0), res.rate)
        group.entries.append(entry(lay, status, res, probe.exact))
        if res.concurrency is not None:
            found(group, g)
    return group


@dataclass
class _Incumbent:
    """The best split found so far on ``n`` GPUs."""

    n: int
    value: float = 0.0
    split: Split | None = None
    prefill: PrefillSize | None = None
    decode: Candidate | None = None

    def offer(self, sp: Split, size: PrefillSize, group: Group, workload: Workload) -> None:
        """Every achievable decode candidate of ``group`` on split ``sp``."""
        _, x, g_d, y, transfer = sp
        if size.best_ns == 0:
            return
        target = workload.ttft_ms * 1e6 if workload.ttft_ms is not None else math.inf
        n = self.n
        for cand in group.best.get(g_d, []):
            if disagg_ttft_ns(size.best_ns, transfer, cand.step_ns) > target:
                continue
            v = split_value(n, workload.output_len, x, size.best_ns, y, cand.rate)
            if v > self.value * (1 + TIE):
                self.value, self.split, self.prefill, self.decode = v, sp, size, cand


def disaggregated(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    config: SolveConfig,
    aggregated: float,
    max_instance_gpus: int,
    budget: Budget,
    cache: dict[object, object] | None = None,
) -> tuple[DisaggRecord | None, bool]:
    """The best disaggregated deployment within the targets, with its proof record (module
    docstring), and whether the budget cut the search. The record is None when no split was
    found: proven when the search was not cut, unknown when it was. ``cache``: the aggregated
    search's cost columns, reused."""
    n = cluster.num_gpus
    stop = Stop(budget)
    legal = enumerate_layouts(model, cluster, get_profile(config.profile), max_instance_gpus).legal
    # Larger decode instances first: they usually decode the most per GPU, so the
    # incumbent, and with it the floor, rises early.
    legal = tuple(sorted(legal, key=lambda lay: (-lay.gpus, lay.describe())))
    probed = probe_layouts(model, cluster, workload, legal, stop, {} if cache is None else cache)
    if probed is None:
        return None, True
    sizes = prefill_sizes(probed.prefill)
    splits = all_splits(SplitSpace(model, cluster, workload), sizes, legal)
    best = _Incumbent(n=n)

    def floor(g: int) -> float:
        return decode_floor(n, workload.output_len, sizes, best.value, g)

    def found(group: Group, g: int) -> None:
        for sp in splits:
            if sp[2] == g:
                best.offer(sp, sizes[sp[0]], group, workload)

    tpot_group = decode_group(probed.probes, workload, None, stop, floor, found)

    def relaxed(sp: Split) -> float:
        return split_value(
            n, workload.output_len, sp[1], sizes[sp[0]].bound_ns, sp[3], tpot_group.bound(sp[2])
        )

    capped: dict[tuple[int, int], Group] = {}
    for sp in sorted(splits, key=relaxed, reverse=True):
        if relaxed(sp) <= best.value * (1 + TIE) or stop.expired():
            break  # sorted: no later split can beat the incumbent either
        cap = step_cap(workload, sizes[sp[0]].bound_ns, sp[4])
        if cap is None or cap < 1:
            continue
        key = (sp[2], cap)
        if key not in capped:
            same = [p for p in probed.probes if p.layout.gpus == sp[2]]
            capped[key] = decode_group(same, workload, cap, stop, floor, found)
        best.offer(sp, sizes[sp[0]], capped[key], workload)
    if best.split is None or best.prefill is None or best.decode is None:
        return None, stop.cut
    counts, top = settle(
        workload,
        n,
        splits,
        {g: s.bound_ns for g, s in sizes.items()},
        tpot_group.bound,
        lambda g, cap: capped[(g, cap)].bound(g) if (g, cap) in capped else None,
        best.value,
    )
    search = _search_record(probed, tpot_group, capped, len(splits), counts)
    split = probed.prefill_splits[best.prefill.layout]
    return _record(best, search, top, aggregated, n, workload, split, stop.cut), stop.cut


def _search_record(
    probed: Probed,
    tpot_group: Group,
    capped: dict[tuple[int, int], Group],
    splits: int,
    counts: dict[str, int],
) -> DisaggSearch:
    """The proof record: prefill entries, the TPOT group, each capped group, the counts."""
    return DisaggSearch(
        prefill=probed.prefill,
        decode=(
            DecodeGroup(gpus=None, step_cap_ns=None, entries=tuple(tpot_group.entries)),
            *(
                DecodeGroup(gpus=g, step_cap_ns=cap, entries=tuple(grp.entries))
                for (g, cap), grp in sorted(capped.items())
            ),
        ),
        splits=splits,
        pruned=counts["pruned"],
        capped=counts["capped"],
        excluded=counts["excluded"],
        open=counts["open"],
    )


def _record(
    best: _Incumbent,
    search: DisaggSearch,
    top: float,
    aggregated: float,
    n: int,
    workload: Workload,
    prefill_split: tuple[int, ...],
    cut: bool,
) -> DisaggRecord:
    """The plan's disaggregated record of the incumbent: ``optimal`` only when the search
    ran to its end and no split stays open; ``bound`` None when a bound is not finite."""
    assert best.split is not None and best.prefill is not None and best.decode is not None
    g_p, x, g_d, y, transfer = best.split
    pre, cand = best.prefill.best_ns, best.decode
    optimal = search.open == 0 and not cut
    return DisaggRecord(
        prefill_layout=best.prefill.layout,
        prefill_gpus=g_p,
        prefill_instances=x,
        decode_layout=cand.layout.describe(),
        decode_gpus=g_d,
        decode_instances=y,
        concurrency=cand.concurrency,
        prefill_s=pre / NS,
        step_s=cand.step_ns / NS,
        kv_transfer_s=transfer / NS,
        ttft_s=disagg_ttft_ns(pre, transfer, cand.step_ns) / NS,
        requests_per_s=min(x * NS / pre, y * cand.rate / workload.output_len),
        tokens_per_s_per_gpu=best.value,
        idle_gpus=n - x * g_p - y * g_d,
        exact=optimal,
        aggregated_tokens_per_s_per_gpu=aggregated,
        prefill_split=prefill_split,
        decode_split=cand.split,
        status="optimal" if optimal else "feasible",
        bound=top if math.isfinite(top) else None,
        cut=cut,
        deployed=best.value > aggregated * (1 + TIE),
        search=search,
    )
