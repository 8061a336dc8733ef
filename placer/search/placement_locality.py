"""The communication-locality family of the CP-SAT placement model (placer/locality.py).

For a layer whose all-to-all depends on where experts sit, and a stage with node
boundaries ``b_0 = 0 < b_1 < ... < b_K = ep`` (EP ranks):

- ``A_k = sum_{r < b_k} n[l, r]``: the first slot position on node ``k`` (slots are
  numbered rank by rank and slot ``p`` holds expert ``p % E``, the plan's contiguous fill);
- ``[A_k >= c]``: fully reified comparisons, one per boundary and interval endpoint;
- ``z[g, k]``: group ``g`` has a slot on node ``k``: one of its slot intervals
  ``[a, b)`` meets ``[A_k, A_{k+1})`` (``A_k < b``, ``A_{k+1} > a``, node not empty);
- ``m_k = sum_g z[g, k]``; ``c_k = node[m_k]`` (``add_element`` on the integer table);
- ``a = max(0, intra, inter + min(sum_k c_k, cap))`` (exact max and min equalities).

Every helper variable is defined exactly (equalities, not bounds), so any feasible
assignment's objective is the true cost of its slot counts, and the hint can set each
one from the heuristic's counts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from ortools.sat.python import cp_model

from placer.locality import groups_on_nodes
from placer.search.tables import LayoutTables, contiguous_ranks

if TYPE_CHECKING:  # placement_model.py imports this module to build the model
    from placer.search.placement_model import PlacementVars

#: A variable with the function of the slot counts it equals (for the complete hint).
Derived = tuple[cp_model.IntVar, Callable[[np.ndarray], int]]

#: A literal with the function of the slot counts it equals; Python bools are constants.
Lit = tuple[cp_model.IntVar, Callable[[np.ndarray], int]] | bool


class _Layer:
    """Builds the locality variables of one layer (shared by the stages using them)."""

    def __init__(self, model: cp_model.CpModel, v: PlacementVars, t: LayoutTables, i: int):
        self.model, self.v, self.t, self.i = model, v, t, i
        ep = t.layout.ep
        self.slots = int(t.slots[i])
        self.lo = self.slots // ep
        self.hi = self.lo + (1 if self.slots % ep else 0)
        self.ge: dict[tuple[int, int], Lit] = {}
        self.seen: dict[tuple[bytes, tuple[int, ...]], np.ndarray] = {}

    def groups(self, counts: np.ndarray, bounds: tuple[int, ...], size: int) -> np.ndarray:
        """``m_k`` of the contiguous fill of ``counts`` (memoised: the hint asks per node)."""
        key = (counts[self.i].tobytes(), bounds)
        if key not in self.seen:
            ranks = contiguous_ranks(int(self.t.experts[self.i]), counts[self.i])
            self.seen[key] = groups_on_nodes(bounds, ranks, size)
        return self.seen[key]

    def _derive(self, var: cp_model.IntVar, fn: Callable[[np.ndarray], int]) -> None:
        self.v.derived.append((var, fn))

    def at_least(self, first_rank: int, c: int) -> Lit:
        """``[sum_{r < first_rank} n[l, r] >= c]``."""
        ep, i = self.t.layout.ep, self.i
        low = max(self.lo * first_rank, self.slots - self.hi * (ep - first_rank))
        high = min(self.hi * first_rank, self.slots - self.lo * (ep - first_rank))
        if c <= low:
            return True
        if c > high:
            return False
        if (first_rank, c) not in self.ge:
            lit = self.model.new_bool_var(f"A[{i}, rank {first_rank}] >= {c}")
            prefix = sum(self.v.n[i, r] for r in range(first_rank))
            self.model.add(prefix >= c).only_enforce_if(lit)
            self.model.add(prefix <= c - 1).only_enforce_if(~lit)

            def value(counts: np.ndarray, r0: int = first_rank, cc: int = c) -> int:
                return int(int(counts[i, :r0].sum()) >= cc)

            self._derive(lit, value)
            self.ge[first_rank, c] = (lit, value)
        return self.ge[first_rank, c]

    def nonempty(self, lo_rank: int, hi_rank: int) -> Lit:
        """The node of ranks ``[lo_rank, hi_rank)`` holds at least one slot."""
        if self.lo >= 1 or hi_rank <= lo_rank:
            return self.lo >= 1
        i = self.i
        lit = self.model.new_bool_var(f"nonempty[{i}, ranks {lo_rank}-{hi_rank}]")
        total = sum(self.v.n[i, r] for r in range(lo_rank, hi_rank))
        self.model.add(total >= 1).only_enforce_if(lit)
        self.model.add(total == 0).only_enforce_if(~lit)

        def value(counts: np.ndarray) -> int:
            return int(int(counts[i, lo_rank:hi_rank].sum()) >= 1)

        self._derive(lit, value)
        return (lit, value)

    def both(self, lits: list[Lit], name: str) -> Lit:
        """The conjunction of ``lits``."""
        if any(x is False for x in lits):
            return False
        real = [x for x in lits if not isinstance(x, bool)]
        if not real:
            return True
        if len(real) == 1:
            return real[0]
        y = self.model.new_bool_var(name)
        self.model.add_bool_and([x[0] for x in real]).only_enforce_if(y)
        self.model.add_bool_or([~x[0] for x in real]).only_enforce_if(~y)

        def value(counts: np.ndarray) -> int:
            return int(all(x[1](counts) for x in real))

        self._derive(y, value)
        return (y, value)

    def negate(self, lit: Lit) -> Lit:
        """``not lit``."""
        if isinstance(lit, bool):
            return not lit
        var, fn = lit
        return (~var, lambda counts: 1 - fn(counts))  # type: ignore[return-value]

    def groups_on_nodes(self, bounds: tuple[int, ...]) -> list[Derived]:
        """``m_k`` of every node of ``bounds``."""
        t, i = self.t, self.i
        assert t.locality is not None
        experts, size = int(t.experts[i]), int(t.locality.group_size[i])
        groups = t.locality.n_group
        out = []
        for k in range(len(bounds) - 1):
            ne = self.nonempty(bounds[k], bounds[k + 1])
            held: list[Lit] = []
            for g in range(groups):
                meets: list[Lit] = []
                for base in range(0, self.slots, experts):
                    a, b = base + g * size, min(base + (g + 1) * size, self.slots)
                    if a >= b:
                        continue
                    start = self.negate(self.at_least(bounds[k], b))
                    end = self.at_least(bounds[k + 1], a + 1)
                    meets.append(self.both([start, end, ne], f"meets[{i},{g},{k},{base}]"))
                held.append(self.either(meets, f"z[{i},{g},{k}]"))
            out.append(self.count(held, bounds, k))
        return out

    def either(self, lits: list[Lit], name: str) -> Lit:
        """The disjunction of ``lits``."""
        if any(x is True for x in lits):
            return True
        real = [x for x in lits if not isinstance(x, bool)]
        if not real:
            return False
        if len(real) == 1:
            return real[0]
        z = self.model.new_bool_var(name)
        self.model.add_bool_or([x[0] for x in real]).only_enforce_if(z)
        for x in real:
            self.model.add_implication(x[0], z)

        def value(counts: np.ndarray) -> int:
            return int(any(x[1](counts) for x in real))

        self._derive(z, value)
        return (z, value)

    def count(self, held: list[Lit], bounds: tuple[int, ...], k: int) -> Derived:
        """``m_k``: the number of true literals in ``held``."""
        t, i = self.t, self.i
        assert t.locality is not None
        m = self.model.new_int_var(0, len(held), f"m[{i},{k},{bounds[k]}]")
        fixed = sum(1 for x in held if x is True)
        real = [x[0] for x in held if not isinstance(x, bool)]
        self.model.add(m == sum(real) + fixed)
        size = int(t.locality.group_size[i])

        def value(counts: np.ndarray) -> int:
            return int(self.groups(counts, bounds, size)[k])

        self._derive(m, value)
        return (m, value)


def _priced(layer: _Layer, s: int, ms: list[Derived]) -> tuple[cp_model.IntVar, int]:
    """``a = max(0, intra, inter + min(sum_k node[m_k], cap))`` for stage ``s``, with its
    largest value."""
    model, t, i = layer.model, layer.t, layer.i
    loc = t.locality
    assert loc is not None
    table = [int(x) for x in loc.node[i, s]]
    cs = []
    fns = []
    for k, (m, m_value) in enumerate(ms):
        c = model.new_int_var(min(table), max(table), f"c[{i},{s},{k}]")
        model.add_element(m, table, c)

        def c_value(counts: np.ndarray, fn: Callable[[np.ndarray], int] = m_value) -> int:
            return table[fn(counts)]

        layer._derive(c, c_value)
        cs.append(c)
        fns.append(c_value)
    cap, intra, inter = int(loc.cap[i, s]), int(loc.intra[i, s]), int(loc.inter[i, s])
    spread = model.new_int_var(0, cap, f"spread[{i},{s}]")
    model.add_min_equality(spread, [sum(cs), cap])

    def spread_value(counts: np.ndarray) -> int:
        return min(sum(fn(counts) for fn in fns), cap)

    layer._derive(spread, spread_value)
    top = max(0, intra, inter + cap)
    a = model.new_int_var(0, top, f"a2a[{i},{s}]")
    model.add_max_equality(a, [0, intra, inter + spread])
    layer._derive(a, lambda counts: max(0, intra, inter + spread_value(counts)))
    return a, top


def add_locality(model: cp_model.CpModel, v: PlacementVars, t: LayoutTables) -> None:
    """``v.a2a[l, s]``: the all-to-all of layer ``l`` if it sits on stage ``s``, else 0."""
    loc = t.locality
    if loc is None:
        return
    for i in (int(x) for x in np.flatnonzero(loc.placed.any(axis=1))):
        if not t.slots[i]:
            continue
        layer = _Layer(model, v, t, i)
        nodes: dict[tuple[int, ...], list[Derived]] = {}
        priced: dict[tuple[object, ...], tuple[cp_model.IntVar, int]] = {}
        for s in (int(x) for x in np.flatnonzero(loc.placed[i])):
            b = loc.bounds[s]
            if b not in nodes:
                nodes[b] = layer.groups_on_nodes(b)
            key = (b, tuple(loc.node[i, s]), loc.intra[i, s], loc.inter[i, s], loc.cap[i, s])
            if key not in priced:
                priced[key] = _priced(layer, s, nodes[b])
            a, top = priced[key]
            w = model.new_int_var(0, top, f"a[{i},{s}]")
            model.add(w == a).only_enforce_if(v.x[i, s])
            model.add(w == 0).only_enforce_if(~v.x[i, s])
            v.a2a[i, s] = w
