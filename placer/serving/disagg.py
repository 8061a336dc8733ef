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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from placer.cluster import ClusterSpec
from placer.config import SolveConfig
from placer.dtypes import nbytes
from placer.layout import Layout
from placer.model import ModelSpec
from placer.rules import get_profile
from placer.search.space import enumerate_layouts
from placer.serving.probe import LayoutProbe, Point
from placer.serving.record import (
    DecodeGroup,
    DisaggRecord,
    DisaggSearch,
    PrefillEntry,
    ServingEntry,
)
from placer.serving.search import TIE, best_concurrency, entry
from placer.serving.timing import NS, disagg_ttft_ns
from placer.workload import Workload


class DecodeProbe(LayoutProbe):
    """A layout as a decode-only instance: prefills happen elsewhere, so they add nothing to
    TPOT, and TTFT is judged for the pair, not here."""

    def loose(self, concurrency: int) -> Point:
        """Bound figures with no prefill share."""
        return replace(super().loose(concurrency), prefill_ns=0, prefill_bound_ns=0)

    def at(self, concurrency: int) -> Point:
        """Achievable and bound figures with no prefill share."""
        return replace(super().at(concurrency), prefill_ns=0, prefill_bound_ns=0)


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


def kv_transfer_ns(
    model: ModelSpec, cluster: ClusterSpec, workload: Workload, g_p: int, g_d: int, used: int
) -> int:
    """One request's prompt KV cache over the slowest link of the GPUs in use, sent by
    ``min(g_p, g_d)`` GPUs in parallel."""
    elements = 0
    for i in range(model.num_layers):
        window = model.layers[i].window if model.modules is None else None
        tokens = min(workload.prompt_len, window) if window else workload.prompt_len
        elements += tokens * model.kv_elements_per_token(i)
    link = cluster.link(cluster.level_of(range(used)))
    seconds = nbytes(elements, workload.kv_dtype) / (link.bandwidth_gbps * 1e9 * min(g_p, g_d))
    return int(seconds * NS + link.latency_us * 1e3 + 0.999999)


def decode_workload(workload: Workload, step_cap_ns: int | None) -> Workload:
    """The workload a decode group is searched under: no TTFT (judged per split), and the
    TPOT target replaced by the step cap when one is given."""
    update: dict[str, object] = {"ttft_ms": None}
    if step_cap_ns is not None:
        update["tpot_ms"] = step_cap_ns / 1e6
    return workload.model_copy(update=update)


def step_cap(workload: Workload, prefill_ns: int, transfer_ns: int) -> int | None:
    """The decode step TTFT allows after the prefills and the transfer, when it binds more
    than the TPOT target (None when it does not, or there is no TTFT target)."""
    if workload.ttft_ms is None:
        return None
    cap = math.floor(workload.ttft_ms * 1e6) - disagg_ttft_ns(prefill_ns, transfer_ns, 0)
    if workload.tpot_ms is not None and cap >= workload.tpot_ms * 1e6:
        return None
    return cap


def split_value(n: int, out: int, x: int, prefill_ns: int, y: int, rate: float) -> float:
    """Output tokens/s per GPU of ``x`` prefill instances of ``prefill_ns`` per prompt and
    ``y`` decode instances of ``rate`` output tokens/s each, on ``n`` GPUs."""
    prefill_rate = x * NS / prefill_ns if prefill_ns > 0 else math.inf
    return min(prefill_rate, y * rate / out) * out / n


@dataclass(frozen=True)
class PrefillSize:
    """The prefill instances of one GPU count: the fastest achievable and the bound."""

    best_ns: int  # 0 when no layout of this size fits
    layout: str
    bound_ns: int


def prefill_sizes(entries: tuple[PrefillEntry, ...]) -> dict[int, PrefillSize]:
    """Per GPU count with a layout that may fit: its fastest prefill and prefill bound."""
    out: dict[int, PrefillSize] = {}
    for e in entries:
        if not e.fits_bound:
            continue
        cur = out.get(e.gpus, PrefillSize(0, "", e.prefill_bound_ns))
        bound = min(cur.bound_ns, e.prefill_bound_ns)
        if e.fits and (cur.best_ns == 0 or e.prefill_ns < cur.best_ns):
            cur = PrefillSize(e.prefill_ns, e.layout, bound)
        out[e.gpus] = replace(cur, bound_ns=bound)
    return out


class SplitSpace:
    """The splits of the cluster and their KV transfers (module docstring, step 3)."""

    def __init__(self, model: ModelSpec, cluster: ClusterSpec, workload: Workload) -> None:
        self.model, self.cluster, self.workload = model, cluster, workload
        self.n = cluster.num_gpus
        # The largest GPU count of each link level (range(u) spans a slower level as u grows).
        self.level_ends = self._level_ends()
        self._transfer: dict[tuple[int, int, int], int] = {}

    def _level_ends(self) -> list[int]:
        ends: list[int] = []
        lo = 1
        while lo <= self.n:
            level = self.cluster.level_of(range(lo))
            a, b = lo, self.n  # largest u >= lo with the same level, by bisection
            while a < b:
                mid = (a + b + 1) // 2
                if self.cluster.level_of(range(mid)) == level:
                    a = mid
                else:
                    b = mid - 1
            ends.append(a)
            lo = a + 1
        return ends

    def transfer_ns(self, g_p: int, g_d: int, used: int) -> int:
        """:func:`kv_transfer_ns`, memoised per link level."""
        end = next(e for e in self.level_ends if used <= e)
        key = (g_p, g_d, end)
        if key not in self._transfer:
            self._transfer[key] = kv_transfer_ns(
                self.model, self.cluster, self.workload, g_p, g_d, end
            )
        return self._transfer[key]

    def splits(self, g_p: int, g_d: int) -> Iterator[tuple[int, int, int]]:
        """(x, y, transfer ns) of every undominated split of prefill size ``g_p`` and decode
        size ``g_d``: per x, the most decode instances within each link level."""
        for x in range(1, self.n // g_p + 1):
            base = x * g_p
            most = (self.n - base) // g_d
            if most < 1:
                break
            ys = {most}
            for end in self.level_ends:
                y = (end - base) // g_d
                if 1 <= y < most:
                    ys.add(y)
            for y in sorted(ys):
                yield x, y, self.transfer_ns(g_p, g_d, base + y * g_d)


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


def prefill_entries(
    model: ModelSpec, cluster: ClusterSpec, workload: Workload, legal: Sequence[Layout]
) -> tuple[tuple[PrefillEntry, ...], dict[str, tuple[int, ...]]]:
    """Every legal layout as a prefill instance, and the DP split of those that fit."""
    cache: dict[object, object] = {}
    entries, splits = [], {}
    for lay in legal:
        p = LayoutProbe(model, cluster, workload, lay, cache).at(1)
        entries.append(
            PrefillEntry(
                layout=lay.describe(),
                gpus=lay.gpus,
                fits=p.fits,
                fits_bound=p.fits_bound,
                prefill_ns=p.prefill_ns,
                prefill_bound_ns=p.prefill_bound_ns,
            )
        )
        if p.split is not None:
            splits[lay.describe()] = p.split
    return tuple(entries), splits


def decode_group(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    layouts: Sequence[Layout],
    cap_ns: int | None,
    cache: dict[object, object],
    floor: Callable[[int], float] = lambda g: 0.0,
    found: Callable[[Group, int], None] = lambda group, g: None,
) -> Group:
    """The decode branch and bound of every layout in ``layouts`` under ``cap_ns``.

    ``floor(g)``: the rate a decode instance of ``g`` GPUs must exceed to matter (ranges at
    or below it are closed); ``found(group, g)`` is told of each new candidate of size g."""
    wl = decode_workload(workload, cap_ns)
    group = Group()
    best_rate: dict[int, float] = {}
    for lay in layouts:
        g = lay.gpus
        probe = DecodeProbe(model, cluster, wl, lay, cache)
        res = best_concurrency(
            probe,
            lambda g=g: max(best_rate.get(g, 0.0), floor(g)),  # type: ignore[misc]
        )
        if res.concurrency is None:
            status = "infeasible" if res.cap == 0 else "pruned"
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


def decode_floor(n: int, out: int, sizes: dict[int, PrefillSize], value: float, g_d: int) -> float:
    """The decode rate an instance of ``g_d`` GPUs must exceed for any split to beat
    ``value``: the split needs ``x`` prefill instances whose bound capacity beats it, and the
    fewest such ``x`` leaves the most room for decode instances (finite: a huge number when
    no split can beat ``value``, so that no range is closed on an infinite ceiling)."""
    if value <= 0:
        return 0.0
    most = 0
    for g_p, size in sizes.items():
        x = math.floor(value * n * size.bound_ns / (NS * out)) + 1
        most = max(most, (n - x * g_p) // g_d)
    return value * n / most if most >= 1 else 1e300


Split = tuple[int, int, int, int, int]  # g_p, x, g_d, y, transfer ns


def settle(
    workload: Workload,
    n: int,
    splits: list[Split],
    prefill_bound: dict[int, int],
    tpot_bound: Callable[[int], float],
    capped_bound: Callable[[int, int], float | None],
    value: float,
) -> tuple[dict[str, int], float]:
    """How each split is settled against the plan's ``value`` (module docstring, steps 3-4):
    counts of pruned, capped, excluded and open splits, and the bound over all of them.
    The search and ``placer verify`` both call this on figures they derived."""
    counts = {"pruned": 0, "capped": 0, "excluded": 0, "open": 0}
    top = value
    out = workload.output_len
    for g_p, x, g_d, y, transfer in splits:
        pre = prefill_bound[g_p]
        ub = split_value(n, out, x, pre, y, tpot_bound(g_d))
        if ub <= value * (1 + TIE):
            counts["pruned"] += 1
            continue
        cap = step_cap(workload, pre, transfer)
        if cap is not None and cap < 1:
            counts["excluded"] += 1
            continue
        if cap is not None:
            rate = capped_bound(g_d, cap)
            if rate is not None:
                ub = split_value(n, out, x, pre, y, rate)
                if ub <= value * (1 + TIE):
                    counts["capped"] += 1
                    continue
        counts["open"] += 1
        top = max(top, ub)
    return counts, top


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


def all_splits(
    space: SplitSpace, sizes: dict[int, PrefillSize], legal: Sequence[Layout]
) -> list[Split]:
    """Every undominated split: prefill sizes that may fit x decode sizes x instance counts."""
    return [
        (g_p, x, g_d, y, t)
        for g_p in sorted(sizes)
        for g_d in sorted({lay.gpus for lay in legal})
        for x, y, t in space.splits(g_p, g_d)
    ]


def disaggregated(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    config: SolveConfig,
    aggregated: float,
    max_instance_gpus: int,
) -> DisaggRecord | None:
    """The best disaggregated deployment within the targets, with its proof record (module
    docstring); None if no prefill/decode split fits the cluster and the targets."""
    n = cluster.num_gpus
    legal = enumerate_layouts(model, cluster, get_profile(config.profile), max_instance_gpus).legal
    prefill, prefill_splits = prefill_entries(model, cluster, workload, legal)
    sizes = prefill_sizes(prefill)
    cache: dict[object, object] = {}
    splits = all_splits(SplitSpace(model, cluster, workload), sizes, legal)
    best = _Incumbent(n=n)

    def floor(g: int) -> float:
        return decode_floor(n, workload.output_len, sizes, best.value, g)

    def found(group: Group, g: int) -> None:
        for sp in splits:
            if sp[2] == g:
                best.offer(sp, sizes[sp[0]], group, workload)

    # Larger decode instances first: they usually decode the most per GPU, so the
    # incumbent, and with it the floor, rises early.
    order = sorted(legal, key=lambda lay: (-lay.gpus, lay.describe()))
    tpot_group = decode_group(model, cluster, workload, order, None, cache, floor, found)

    def relaxed(sp: Split) -> float:
        return split_value(
            n, workload.output_len, sp[1], sizes[sp[0]].bound_ns, sp[3], tpot_group.bound(sp[2])
        )

    capped: dict[tuple[int, int], Group] = {}
    for sp in sorted(splits, key=relaxed, reverse=True):
        if relaxed(sp) <= best.value * (1 + TIE):
            break  # sorted: no later split can beat the incumbent either
        cap = step_cap(workload, sizes[sp[0]].bound_ns, sp[4])
        if cap is None or cap < 1:
            continue
        key = (sp[2], cap)
        if key not in capped:
            same = [lay for lay in legal if lay.gpus == sp[2]]
            capped[key] = decode_group(model, cluster, workload, same, cap, cache, floor, found)
        best.offer(sp, sizes[sp[0]], capped[key], workload)
    if best.split is None or best.prefill is None or best.decode is None:
        return None
    counts, top = settle(
        workload,
        n,
        splits,
        {g: s.bound_ns for g, s in sizes.items()},
        tpot_group.bound,
        lambda g, cap: capped[(g, cap)].bound(g) if (g, cap) in capped else None,
        best.value,
    )
    search = DisaggSearch(
        prefill=prefill,
        decode=(
            DecodeGroup(gpus=None, step_cap_ns=None, entries=tuple(tpot_group.entries)),
            *(
                DecodeGroup(gpus=g, step_cap_ns=cap, entries=tuple(grp.entries))
                for (g, cap), grp in sorted(capped.items())
            ),
        ),
        splits=len(splits),
        pruned=counts["pruned"],
        capped=counts["capped"],
        excluded=counts["excluded"],
        open=counts["open"],
    )
    return _record(best, search, top, aggregated, n, workload, prefill_splits[best.prefill.layout])


def _record(
    best: _Incumbent,
    search: DisaggSearch,
    top: float,
    aggregated: float,
    n: int,
    workload: Workload,
    prefill_split: tuple[int, ...],
) -> DisaggRecord:
    """The plan's disaggregated record of the incumbent."""
    assert best.split is not None and best.prefill is not None and best.decode is not None
    g_p, x, g_d, y, transfer = best.split
    pre, cand = best.prefill.best_ns, best.decode
    optimal = search.open == 0
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
        bound=top,
        deployed=best.value > aggregated * (1 + TIE),
        search=search,
    )
