"""The layout search: legal layouts, per-layout tables, CP-SAT placement, the outer search.

Only :mod:`placer.search.cpsat` and :mod:`placer.search.solve` import OR-Tools;
:mod:`placer.search.tables` and :mod:`placer.search.space` are numpy and are
shared with the independent verifier.
"""
