"""A layout as a decode-only instance of disaggregated serving (docs/serving.md,
"Disaggregated serving"): no prefill share in its figures, every figure memoised and shared
by the decode groups of the split search, and its work charged to the time budget.
"""

from __future__ import annotations

import copy
from dataclasses import replace

from placer.budget import Budget
from placer.cluster import ClusterSpec
from placer.layout import Layout
from placer.limits import MAX_BATCH
from placer.model import ModelSpec
from placer.search.tables import memory_lower_bound
from placer.serving.probe import LayoutProbe, Point
from placer.workload import Workload

#: Deterministic seconds per model layer one probe evaluation counts for in the split search
#: (its own clock in deterministic mode, docs/serving.md "Time limit"): about what each took
#: per layer on DeepSeek-V3 x 16 H200 when measured (building a probe's tables and a DP split
#: ~30 us, loose bound figures ~15 us, one aggregate memory check ~5 us).
WORK_PER_LAYER_S = {"build": 30e-6, "at": 30e-6, "loose": 15e-6, "memory": 5e-6}


class DecodeProbe(LayoutProbe):
    """A layout as a decode-only instance: prefills happen elsewhere, so they add nothing to
    TPOT, and TTFT is judged for the pair, not here.

    With a ``budget``, each evaluation not already memoised is charged to it
    (:data:`WORK_PER_LAYER_S`), so deterministic mode stops the search after the same work on
    an idle and on a busy machine."""

    def __init__(
        self,
        model: ModelSpec,
        cluster: ClusterSpec,
        workload: Workload,
        layout: Layout,
        cache: dict[object, object] | None = None,
        budget: Budget | None = None,
    ) -> None:
        super().__init__(model, cluster, workload, layout, cache)
        self.budget = budget
        self._memory: dict[int, tuple[int, int]] = {}
        #: The memory limit, once :meth:`find_memory_limit` has found it.
        self.limit: int | None = None
        self._charge("build")

    def _charge(self, kind: str) -> None:
        if self.budget is not None:
            self.budget.charge(WORK_PER_LAYER_S[kind] * self.model.num_layers)

    def under(self, workload: Workload) -> DecodeProbe:
        """The same layout judged against other targets, sharing every memoised figure
        (targets change what is allowed, never a figure)."""
        twin = copy.copy(self)
        twin.workload = workload
        return twin

    def memory_need(self, concurrency: int) -> tuple[int, int]:
        """Memoised (need, have) of the aggregate memory condition at ``concurrency``."""
        if concurrency not in self._memory:
            self._charge("memory")
            t = self.tables(concurrency, with_costs=False)
            self._memory[concurrency] = memory_lower_bound(t)
        return self._memory[concurrency]

    def memory_bound_fits(self, concurrency: int) -> bool:
        """The aggregate memory condition at ``concurrency`` (memoised); once
        :meth:`find_memory_limit` has run, answered from the limit it found (the condition
        is monotone in the concurrency, docs/serving.md "Proof")."""
        if self.limit is not None:
            return concurrency <= self.limit
        need, have = self.memory_need(concurrency)
        return need <= have

    def _secant_guess(self, rounds: int = 3) -> int:
        """A guess at the memory limit by secant steps on the need (a guess only: the
        caller brackets and bisects). Each attention-DP rank holds ceil(c / dp_attn)
        requests, so the first step spans a whole round."""
        have = self.memory_need(1)[1]
        a, b = 1, 1 + self.layout.dp_attn
        for _ in range(rounds):
            need_a, need_b = self.memory_need(a)[0], self.memory_need(b)[0]
            if need_b <= need_a:
                return MAX_BATCH
            guess = b + (have - need_b) * (b - a) // (need_b - need_a)
            guess = min(max(guess, 1), MAX_BATCH)
            if guess == b:
                break
            a, b = b, guess
        return b

    def find_memory_limit(self) -> int:
        """:func:`placer.serving.search.memory_limit`, with fewer evaluations: the need grows
        about linearly with the concurrency, so secant steps give a first guess, doubling
        steps from it bracket the limit and bisection ends it. The result is the same (the
        condition is monotone): the largest concurrency it allows, capped at MAX_BATCH (0
        if none)."""
        fits = self.memory_bound_fits
        found = 0
        if fits(1):
            guess = self._secant_guess()
            lo, hi = 1, MAX_BATCH + 1  # fits(lo), and hi is past the limit or MAX_BATCH
            step = 1
            if fits(guess):
                lo = guess
                while lo + step <= MAX_BATCH and fits(lo + step):
                    lo, step = lo + step, 2 * step
                hi = min(lo + step, MAX_BATCH + 1)
            else:
                hi = guess
                while hi - step > 1 and not fits(hi - step):
                    hi, step = hi - step, 2 * step
                lo = max(hi - step, 1)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if fits(mid) else (lo, mid)
            found = lo
        self.limit = found
        return found

    def prefill_point(self, tight: bool) -> Point:
        """The layout as a prefill instance: one prompt, with its prefill figures (from the
        DP split when ``tight``, else the loose bound figures alone)."""
        if not tight:
            return self.prefill_bound_point()
        if 1 not in self._points:
            self._charge("at")
        return super().at(1)

    def prefill_bound_point(self) -> Point:
        """The loose figures at concurrency 1, prefill included."""
        if 1 not in self._loose:
            self._charge("loose")
        return super().loose(1)

    def loose(self, concurrency: int) -> Point:
        """Bound figures with no prefill share."""
        if concurrency not in self._loose:
            self._charge("loose")
        return replace(super().loose(concurrency), prefill_ns=0, prefill_bound_ns=0)

    def at(self, concurrency: int) -> Point:
        """Achievable and bound figures with no prefill share."""
        if concurrency not in self._points:
            self._charge("at")
        return replace(super().at(concurrency), prefill_ns=0, prefill_bound_ns=0)
