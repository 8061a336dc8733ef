"""The serving search over instance layouts: order them by promise, settle each against the
incumbent plan (docs/serving.md, "Proof"). The concurrency search of one layout is
:func:`placer.serving.search.best_concurrency`; instances turn its rate into the objective.
"""

from __future__ import annotations

import math

from placer.budget import Budget
from placer.cluster import ClusterSpec
from placer.layout import Layout
from placer.model import ModelSpec
from placer.serving.probe import LayoutProbe
from placer.serving.record import ServingEntry, ServingObjective
from placer.serving.search import TIE, LayoutResult, best_concurrency, cap_check, entry
from placer.serving.tail import floors_ns, instance_rate_bound
from placer.serving.timing import tokens_per_s_ceiling
from placer.workload import Workload


class Incumbent:
    """The best plan so far: a layout, its search result and instance count."""

    def __init__(self) -> None:
        self.layout: Layout | None = None
        self.probe: LayoutProbe | None = None
        self.res: LayoutResult | None = None
        self.instances = 0
        self.value = 0.0  # tokens/s per GPU (throughput) or GPUs (gpus)


class LayoutSearch:
    """Settles layouts one by one against the incumbent; keeps the record of each."""

    def __init__(
        self,
        model: ModelSpec,
        cluster: ClusterSpec,
        workload: Workload,
        objective: ServingObjective,
        budget: Budget,
    ) -> None:
        self.model, self.cluster, self.workload = model, cluster, workload
        self.objective = objective
        self.budget = budget
        self.n = cluster.num_gpus
        self.need = (workload.request_rate or 0.0) * workload.output_len  # output tokens/s
        self.best = Incumbent()
        self.cache: dict[object, object] = {}
        self.entries: list[ServingEntry] = []
        self.probes: dict[Layout, LayoutProbe] = {}
        self._rate_bounds: dict[int, float] = {}

    def floors_rate(self, tp: int) -> float:
        """Output tokens/s no instance with attention TP ``tp`` beats (its floors,
        :mod:`placer.serving.tail`)."""
        if tp not in self._rate_bounds:
            step, pre = floors_ns(self.model, self.cluster, self.workload, tp)
            self._rate_bounds[tp] = instance_rate_bound(self.workload, step, pre)
        return self._rate_bounds[tp]

    def floors_prune(self, lay: Layout) -> float | None:
        """The layout's floors rate when it cannot beat the incumbent (no probe needed)."""
        if self.best.layout is None or self.objective not in ("throughput", "gpus"):
            return None
        rate = self.floors_rate(lay.tp)
        return rate if rate <= self.floor_for(lay.gpus) * (1 + TIE) else None

    def floor_for(self, g: int) -> float:
        """Output tokens/s one instance of ``g`` GPUs must exceed to beat the incumbent."""
        best, n = self.best, self.n
        if self.objective == "throughput":
            return best.value * n / (n // g) if best.layout is not None else 0.0
        k_max = (int(best.value) - 1) // g if best.layout is not None else n // g
        return self.need / k_max * (1 - 2 * TIE) if k_max > 0 else math.inf

    def order(self, layouts: tuple[Layout, ...]) -> list[Layout]:
        """Most promising layouts first (by their ceiling), so the floor rises early and most
        layouts close on their ceiling alone."""
        promise: dict[Layout, float] = {}
        for lay in layouts:
            if self.budget.expired():
                break
            if self.floors_prune(lay) is not None:
                continue  # settled without a probe
            probe = LayoutProbe(self.model, self.cluster, self.workload, lay, self.cache)
            self.probes[lay] = probe
            one = probe.loose(1)
            ceiling = 0.0
            if one.fits_bound and cap_check(self.workload, one, bound=True) is None:
                ceiling = tokens_per_s_ceiling(
                    self.workload, one.step_bound_ns, one.prefill_bound_ns
                )
            if self.objective == "throughput":
                promise[lay] = -(self.n // lay.gpus) * ceiling / self.n
            else:
                promise[lay] = (
                    lay.gpus * math.ceil(self.need / ceiling) if ceiling > 0 else math.inf
                )
        return sorted(
            layouts, key=lambda lay: (promise.get(lay, math.inf), lay.gpus, lay.describe())
        )

    def run(self, layouts: tuple[Layout, ...]) -> None:
        """Settle every layout (in order of promise), recording each."""
        for lay in self.order(layouts):
            self.entries.append(self.settle(lay))

    def settle(self, lay: Layout) -> ServingEntry:
        """Search one layout's concurrencies against the incumbent; update it."""
        g = lay.gpus
        rate = self.floors_prune(lay) if lay not in self.probes else None
        if rate is not None:
            why = "its attention-TP floors cannot beat the plan"
            out = entry(lay, "pruned", None, False, reason=why)
            return out.model_copy(update={"ceiling": rate, "by_floors": True})
        if self.budget.expired() or lay not in self.probes:
            return entry(lay, "unresolved", None, False, reason="time limit")
        if self.objective == "gpus" and math.isinf(self.floor_for(g)):
            why = f"one instance uses {g} GPUs, the plan {int(self.best.value)}"
            return entry(lay, "pruned", None, False, reason=why)
        probe = self.probes[lay]
        res = best_concurrency(probe, lambda: self.floor_for(g), self.budget)
        if res.ceiling is not None:
            why = "its ceiling cannot beat the plan"
            return entry(lay, "pruned", res, probe.exact, reason=why)
        if res.cap == 0:
            why = f"{res.cap_reason} excludes every concurrency"
            return entry(lay, "infeasible", res, probe.exact, reason=why)
        k, value = self._offer(lay, probe, res)
        if res.open_bound > 0.0:
            status = "unresolved"  # a range stayed open (time limit, or inexact figures)
        else:
            status = "solved" if res.concurrency is not None else "pruned"
        return entry(lay, status, res, probe.exact, k, value)

    def _offer(
        self, lay: Layout, probe: LayoutProbe, res: LayoutResult
    ) -> tuple[int, float | None]:
        """The layout's instance count and objective value; it replaces the incumbent if
        better."""
        best, g = self.best, lay.gpus
        k = self.n // g
        if res.concurrency is None:
            return k, None
        if self.objective == "throughput":
            value = k * res.rate / self.n
            better = best.layout is None or value > best.value * (1 + TIE)
        else:
            k = math.ceil(self.need / res.rate * (1 - TIE)) if self.need > 0 else 1
            if k * g > self.n:
                return k, None
            value = float(k * g)
            better = best.layout is None or value < best.value
        if better:
            best.layout, best.probe, best.res, best.instances = lay, probe, res, k
            best.value = value
        return k, value
