"""Fit a calibration to measurements, deterministically, inside bounds.

Method (docs/cost-model.md, "Calibration"): every row is split once into roofline
terms per op class at efficiency 1 (:func:`placer.measurements.row_terms`). A
row's predicted time per output token is then a cheap function of the
parameters (efficiency per op class, link efficiency, fixed costs per layer and
per step). The fit minimises the mean absolute log ratio of predicted to
measured TPOT (least absolute deviations in log space: a median fit, robust to
the file's repeat-to-repeat noise) by coordinate descent over bounded grids
that narrow around the best value, in a fixed order: the same rows give the
same calibration. Global parameters are fitted on all rows; a GPU family with
enough rows then gets its own efficiencies, started from the global ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from placer.calibration import (
    EFFICIENCY_RANGE,
    LAYER_US_RANGE,
    STEP_US_RANGE,
    Calibration,
    Efficiency,
)
from placer.measurements import Measurement, RowTerms, gpu_family, row_terms

#: GPU families a calibration can name (matched inside a GPU's name, longest first).
FAMILIES = ("A100", "H100", "H200", "B200", "GB200", "B300", "MI300X")
#: Rows a family needs before it gets efficiencies of its own.
MIN_FAMILY_ROWS = 30
KINDS = ("dense_gemm", "expert_gemm", "expert_gemm+dequant", "attention")
EFFICIENCIES = ("dense_gemm", "expert_gemm", "attention", "hbm", "dequant", "comm")
SWEEPS = 4
GRID = 17


def family_of(gpu_name: str) -> str | None:
    """The family of a GPU name, or None if none matches."""
    name = gpu_name.upper()
    hits = [f for f in FAMILIES if f in name]
    return max(hits, key=len) if hits else None


@dataclass
class _Arrays:
    """Terms of all rows as arrays: compute/memory seconds per kind, decode and prefill."""

    compute: dict[tuple[str, str], np.ndarray]
    memory: dict[tuple[str, str], np.ndarray]
    comm: dict[str, np.ndarray]
    comm_bw: dict[str, np.ndarray]
    layers: dict[str, np.ndarray]
    weight: dict[str, np.ndarray]  # 1 for decode, 1 / output_len for prefill
    measured: np.ndarray


def _arrays(terms: Sequence[RowTerms], measured: Sequence[float]) -> _Arrays:
    parts = {"decode": [t.decode for t in terms], "prefill": [t.prefill for t in terms]}
    compute, memory, comm, comm_bw, layers = {}, {}, {}, {}, {}
    for part, st in parts.items():
        for k in KINDS:
            compute[part, k] = np.array([s.terms.get(k, (0.0, 0.0))[0] for s in st])
            memory[part, k] = np.array([s.terms.get(k, (0.0, 0.0))[1] for s in st])
        comm[part] = np.array([s.comm_s for s in st])
        comm_bw[part] = np.array([s.comm_bandwidth_s for s in st])
        layers[part] = np.array([float(s.layers) for s in st])
    weight = {
        "decode": np.ones(len(terms)),
        "prefill": np.array([t.prefill_weight for t in terms]),
    }
    measured_s = np.asarray(measured, dtype=float)
    return _Arrays(compute, memory, comm, comm_bw, layers, weight, measured_s)


def _predict(a: _Arrays, p: dict[str, float]) -> np.ndarray:
    eff = {
        "dense_gemm": p["dense_gemm"],
        "expert_gemm": p["expert_gemm"],
        "expert_gemm+dequant": p["expert_gemm"] * p["dequant"],
        "attention": p["attention"],
    }
    total = np.zeros_like(a.measured)
    for part in ("decode", "prefill"):
        latency = a.comm[part] - a.comm_bw[part]
        fixed = a.layers[part] * p["layer_us"] * 1e-6 + p["step_us"] * 1e-6
        t = a.comm_bw[part] + latency / p["comm"] + fixed
        for k in KINDS:
            t = t + np.maximum(a.compute[part, k] / eff[k], a.memory[part, k] / p["hbm"])
        total += a.weight[part] * t
    return total


def _loss(a: _Arrays, p: dict[str, float]) -> float:
    return float(np.mean(np.abs(np.log(_predict(a, p) / a.measured))))


def _bounds(name: str) -> tuple[float, float]:
    if name == "layer_us":
        return LAYER_US_RANGE
    if name == "step_us":
        return STEP_US_RANGE
    return EFFICIENCY_RANGE


def _descend(a: _Arrays, start: dict[str, float], names: Sequence[str]) -> dict[str, float]:
    """Coordinate descent: each parameter in turn takes the best of a grid that narrows."""
    p = dict(start)
    for sweep in range(SWEEPS):
        for name in names:
            lo, hi = _bounds(name)
            # Search in log space for efficiencies, linear for fixed costs; the grid
            # shrinks with each sweep around the current value.
            span = 0.5**sweep
            if name in EFFICIENCIES:
                centre = math.log(p[name])
                width = span * (math.log(hi) - math.log(lo))
                grid = np.exp(np.linspace(centre - width, centre + width, GRID))
            else:
                width = span * (hi - lo)
                grid = np.linspace(p[name] - width, p[name] + width, GRID)
            best, best_loss = p[name], _loss(a, p)
            for v in np.clip(grid, lo, hi):
                trial = {**p, name: float(v)}
                loss = _loss(a, trial)
                if loss < best_loss - 1e-12:
                    best, best_loss = float(v), loss
            p[name] = best
    return p


def _efficiency(p: dict[str, float]) -> Efficiency:
    return Efficiency(**{k: round(p[k], 4) for k in EFFICIENCIES})


def fit(
    rows: Sequence[Measurement],
    terms: Sequence[RowTerms] | None = None,
    name: str = "fitted",
    sources: Sequence[str] = (),
) -> Calibration:
    """Fit a calibration to ``rows`` (terms are computed when not given)."""
    if not rows:
        raise ValueError("no measurements to fit")
    ts = list(terms) if terms is not None else [row_terms(r) for r in rows]
    measured = [r.tpot_ms * 1e-3 for r in rows]
    start = {k: 0.5 for k in EFFICIENCIES} | {"dequant": 1.0, "layer_us": 0.0, "step_us": 0.0}
    every = _arrays(ts, measured)
    glob = _descend(every, start, (*EFFICIENCIES, "layer_us", "step_us"))
    families: dict[str, Efficiency] = {}
    fams = [family_of(gpu_family(r)) for r in rows]
    for fam in sorted({f for f in fams if f is not None}):
        idx = [i for i, f in enumerate(fams) if f == fam]
        if len(idx) < MIN_FAMILY_ROWS:
            continue
        sub = _arrays([ts[i] for i in idx], [measured[i] for i in idx])
        own = _descend(sub, glob, EFFICIENCIES)
        families[fam] = _efficiency(own)
    return Calibration(
        format="placer-calibration",
        version=1,
        name=name,
        method="least absolute log deviation of TPOT, bounded coordinate descent "
        f"({SWEEPS} sweeps, {GRID}-point grids), on {len(rows)} rows (placer/fit.py)",
        sources=tuple(sources),
        default=_efficiency(glob),
        families=families,
        layer_us=round(glob["layer_us"], 3),
        step_us=round(glob["step_us"], 3),
    )
