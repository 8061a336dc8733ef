"""The split space of disaggregated serving and how each split is settled (docs/serving.md,
"Disaggregated serving"): prefill sizes, instance counts within each link level, the KV
transfer, the decode step TTFT leaves, and the bound of every split against the plan.

Shared by the search (:mod:`placer.serving.disagg`) and ``placer verify``
(:mod:`placer.serving.disagg_check`), so both settle the splits with the same arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

from placer.cluster import ClusterSpec
from placer.dtypes import nbytes
from placer.layout import Layout
from placer.model import ModelSpec
from placer.serving.record import PrefillEntry
from placer.serving.search import TIE
from placer.serving.timing import NS, disagg_ttft_ns
from placer.workload import Workload


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
