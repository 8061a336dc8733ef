"""The layout search: legal layouts, per-layout tables, CP-SAT placement, the outer search.

OR-Tools is imported by :mod:`placer.search.placement_model` (the placement model),
:mod:`placer.search.layout_solve` (one layout's solve) and :mod:`placer.search.fixes`, and
through them by :mod:`placer.search.outer` (the outer search) and
:mod:`placer.search.assemble` (the plan it ends with); :mod:`placer.search.tables` and
:mod:`placer.search.space` are numpy and are shared with the independent verifier.
"""
