"""One instance layout at one concurrency: does it fit, how fast does it decode and prefill.

Numpy only (no OR-Tools): the serving search and ``placer verify`` both use it. Each probe
gives an achievable figure (the exact DP split over contiguous stages with balanced expert
slots, :func:`placer.search.heuristic.best_split`) and a bound no split or slot map can beat
(:func:`placer.search.tables.lower_bound_ns` and the aggregate memory condition). The two are
equal when the layout's GPUs are of one type, every layer costs the same on every stage
(no stage spans a slower link than another), and every MoE layer's slots divide evenly over
the EP ranks: then the balanced slot counts are the only ones that reach
the fastest busiest rank and the least memory on every rank, and the DP is an exact linear
partition (docs/serving.md, "Proof").
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from placer.cluster import ClusterSpec
from placer.layout import Layout
from placer.ledger import activation_bytes, edge_bytes, layer_bytes
from placer.model import ModelSpec
from placer.search.heuristic import best_split
from placer.search.tables import (
    LayoutTables,
    add_costs,
    balanced_counts,
    build_tables,
    lower_bound_ns,
    memory_by_rank,
    memory_lower_bound,
    objective_ns,
)
from placer.serving.timing import instance_workload, prefill_workload
from placer.workload import Workload


def _same_columns(t: LayoutTables) -> bool:
    """Whether a layer costs the same on every stage (so the sum of stages does not depend on
    the split and the DP's slowest stage decides the pipelined cycle)."""
    return bool(
        np.all(t.time_layer == t.time_layer[:, :1]) and np.all(t.time_slot == t.time_slot[:, :1])
    )


@dataclass(frozen=True)
class Point:
    """One layout at one concurrency (times in ns; 0 where the layout does not fit)."""

    concurrency: int
    fits: bool  # the DP split fits every GPU
    fits_bound: bool  # the aggregate memory condition holds (necessary for any split)
    split: tuple[int, ...] | None
    step_ns: int  # decode step of the DP split
    step_bound_ns: int  # no split decodes faster
    prefill_ns: int  # one prompt through the DP split's stages
    prefill_bound_ns: int  # no split prefills faster


class LayoutProbe:
    """Memoised :class:`Point` s of one layout (see the module docstring)."""

    def __init__(
        self,
        model: ModelSpec,
        cluster: ClusterSpec,
        workload: Workload,
        layout: Layout,
        cache: dict[object, object] | None = None,
    ) -> None:
        self.model = model
        self.cluster = cluster
        self.workload = workload
        self.layout = layout
        # Cost columns are shared between the layouts of a search, per concurrency.
        self._costs = cache if cache is not None else {}
        self._points: dict[int, Point] = {}
        self._loose: dict[int, Point] = {}
        # The prefill tables of every layout share one cache (one workload: the prompt).
        shared = self._costs.setdefault(("serving prefill",), {})
        assert isinstance(shared, dict)
        pre = build_tables(
            model, cluster, prefill_workload(workload), layout, "latency", True, shared
        )
        self.prefill_tables = pre
        self.counts = balanced_counts(pre)
        self._prefill_bound = lower_bound_ns(pre, "latency")
        # The byte tables of any concurrency are the prefill tables' with the KV cache and
        # activation columns redone (see tables()).
        self._bytes = pre
        self.exact = bool(
            np.all(pre.slots % layout.ep == 0) and self._alike_stages(cluster, layout)
        )

    def _batch_cache(self, concurrency: int) -> dict[object, object]:
        """The shared cost columns of one concurrency: a step's cost also depends on the
        batch behind it (the KV cache a decode step reads), so columns are shared between
        layouts only at the same concurrency."""
        sub = self._costs.setdefault(("serving batch", concurrency), {})
        assert isinstance(sub, dict)
        return sub

    @staticmethod
    def _alike_stages(cluster: ClusterSpec, layout: Layout) -> bool:
        """Every GPU of the layout is of one type (so every stage costs the same per layer)."""
        types = {cluster.gpu_types[g].name for g in range(layout.gpus)}
        return len(types) == 1

    def tables(self, concurrency: int, with_costs: bool = True) -> LayoutTables:
        """The placement tables of the instance at ``concurrency``: the concurrency changes
        only the KV cache and activation bytes and the step times."""
        wl = instance_workload(self.workload, concurrency)
        lay = self.layout
        key = ("serving bytes", lay.tp, lay.dp_attn, lay.ep, lay.expert_tp, concurrency)
        got = self._costs.get(key)
        if not isinstance(got, tuple):
            got = (
                layer_bytes(self.model, wl, lay),
                activation_bytes(self.model, wl, lay, last=False),
                activation_bytes(self.model, wl, lay, last=True),
                # The last stage's own bytes hold the MTP layers' KV cache when loaded.
                edge_bytes(self.model, wl, lay)[1],
            )
            self._costs[key] = got
        base: np.ndarray = got[0]
        act_mid: int = got[1]
        act_last: int = got[2]
        act = np.full(lay.pp, act_mid, dtype=np.int64)
        act[-1] = act_last
        t = replace(self._bytes, base=base, act=act, last=got[3])
        if with_costs:
            t = add_costs(
                t, self.model, self.cluster, wl, "throughput", self._batch_cache(concurrency)
            )
        return t

    def memory_bound_fits(self, concurrency: int) -> bool:
        """The aggregate memory condition at ``concurrency`` (necessary for any split)."""
        need, have = memory_lower_bound(self.tables(concurrency, with_costs=False))
        return need <= have

    def loose(self, concurrency: int) -> Point:
        """Bound figures only, without the DP split: the aggregate memory condition and
        :func:`placer.search.tables.lower_bound_ns`. Sound, cheaper and looser than
        :meth:`at` (``fits`` is False: nothing achievable is claimed)."""
        p = self._loose.get(concurrency)
        if p is not None:
            return p
        t = self.tables(concurrency)
        need, have = memory_lower_bound(t)
        p = Point(
            concurrency=concurrency,
            fits=False,
            fits_bound=need <= have,
            split=None,
            step_ns=0,
            step_bound_ns=lower_bound_ns(t, "throughput"),
            prefill_ns=0,
            prefill_bound_ns=self._prefill_bound,
        )
        self._loose[concurrency] = p
        return p

    def at(self, concurrency: int) -> Point:
        """The :class:`Point` at ``concurrency``."""
        p = self._points.get(concurrency)
        if p is not None:
            return p
        t = self.tables(concurrency)
        need, have = memory_lower_bound(t)
        split: tuple[int, ...] | None = None
        if need <= have:
            if self.layout.pp == 1:
                mem = memory_by_rank(t, (self.model.num_layers,), self.counts)
                split = (self.model.num_layers,) if np.all(mem <= t.cap) else None
            else:
                split = best_split(t, self.counts)
        tpot_lb = lower_bound_ns(t, "throughput")
        pre_lb = self._prefill_bound
        if split is not None:
            tpot = objective_ns(t, split, self.counts, "throughput")
            pre = objective_ns(self.prefill_tables, split, self.counts, "latency")
        # The DP's figures are bounds only when every stage costs a layer the same (links
        # too: a stage may span a node boundary another does not).
        exact = self.exact and _same_columns(t) and _same_columns(self.prefill_tables)
        if split is not None:
            tpot = objective_ns(t, split, self.counts, "throughput")
            pre = objective_ns(self.prefill_tables, split, self.counts, "latency")
            if exact:
                tpot_lb, pre_lb = tpot, pre
        else:
            tpot = pre = 0
        p = Point(
            concurrency=concurrency,
            fits=split is not None,
            fits_bound=need <= have and (split is not None or not exact),
            split=split,
            step_ns=tpot,
            step_bound_ns=tpot_lb,
            prefill_ns=pre,
            prefill_bound_ns=pre_lb,
        )
        self._points[concurrency] = p
        return p
