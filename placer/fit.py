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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from placer.calibration import (
    EFFICIENCY_RANGE,
    LAYER_US_RANGE,
    STEP_US_RANGE,
    TTFT_FIXED_MS_RANGE,
    TTFT_PREFILL_RANGE,
    TTFT_QUEUE_RANGE,
    TTFT_STEPS_RANGE,
    Calibration,
    Efficiency,
    TTFTModel,
)
from placer.measurements import Measurement, RowTerms, gpu_family, row_terms, workload_of
from placer.serving.timing import prefill_chunks

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


@dataclass
class _TTFTArrays:
    """What the TTFT fit needs per row: concurrency, prefill chunks, measured TTFT (s), and
    the decode step and one prompt's prefill (s) under the fitted efficiencies."""

    concurrency: np.ndarray
    chunks: np.ndarray
    measured: np.ndarray
    step_s: np.ndarray
    prefill_s: np.ndarray

    def subset(self, idx: Sequence[int]) -> _TTFTArrays:
        """The rows ``idx``."""
        i = np.asarray(idx, dtype=np.int64)
        return _TTFTArrays(
            self.concurrency[i],
            self.chunks[i],
            self.measured[i],
            self.step_s[i],
            self.prefill_s[i],
        )


def _arrays(terms: Sequence[RowTerms], measured: Sequence[float]) -> _Arrays:
    parts = {
        "decode": [t.decode for t in terms],
        "prefill": [t.prefill for t in terms],
        "prefill_one": [t.prefill_one for t in terms],
    }
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


def _part_s(a: _Arrays, p: dict[str, float], part: str) -> np.ndarray:
    """Seconds of one step (``decode``, ``prefill`` of the batch, ``prefill_one``) per row."""
    eff = {
        "dense_gemm": p["dense_gemm"],
        "expert_gemm": p["expert_gemm"],
        "expert_gemm+dequant": p["expert_gemm"] * p["dequant"],
        "attention": p["attention"],
    }
    latency = a.comm[part] - a.comm_bw[part]
    fixed = a.layers[part] * p["layer_us"] * 1e-6 + p["step_us"] * 1e-6
    t = a.comm_bw[part] + latency / p["comm"] + fixed
    for k in KINDS:
        t = t + np.maximum(a.compute[part, k] / eff[k], a.memory[part, k] / p["hbm"])
    return np.asarray(t, dtype=float)


def _predict(a: _Arrays, p: dict[str, float]) -> np.ndarray:
    prefill: np.ndarray = a.weight["prefill"] * _part_s(a, p, "prefill")
    return np.asarray(_part_s(a, p, "decode") + prefill)


def _tpot_loss(a: _Arrays, p: dict[str, float]) -> float:
    return float(np.mean(np.abs(np.log(_predict(a, p) / a.measured))))


def _ttft_predict(a: _TTFTArrays, p: dict[str, float]) -> np.ndarray:
    """TTFT per row, seconds: :func:`placer.serving.timing.ttft_s` on arrays."""
    queued = p["prefill_factor"] + p["queue"] * (a.concurrency - 1)
    waits = p["steps"] + a.chunks
    return np.asarray(p["fixed_ms"] * 1e-3 + queued * a.prefill_s + waits * a.step_s)


def _ttft_loss(a: _TTFTArrays, p: dict[str, float]) -> float:
    return float(np.mean(np.abs(np.log(_ttft_predict(a, p) / a.measured))))


#: Bounds of the parameters that are not efficiencies (placer/calibration.py).
BOUNDS = {
    "layer_us": LAYER_US_RANGE,
    "step_us": STEP_US_RANGE,
    "fixed_ms": TTFT_FIXED_MS_RANGE,
    "prefill_factor": TTFT_PREFILL_RANGE,
    "steps": TTFT_STEPS_RANGE,
    "queue": TTFT_QUEUE_RANGE,
}
#: Searched on a log grid (factors); the others on a linear one (costs, counts, shares).
LOG_SCALE = (*EFFICIENCIES, "prefill_factor")
TTFT_PARAMS = ("fixed_ms", "prefill_factor", "steps", "queue")
#: Rows an engine needs before it gets a TTFT model of its own.
MIN_ENGINE_ROWS = 30


def _descend(
    loss: Callable[[dict[str, float]], float], start: dict[str, float], names: Sequence[str]
) -> dict[str, float]:
    """Coordinate descent of ``loss``: each parameter in turn takes the best of a grid that
    narrows around its value, inside its bounds."""
    p = dict(start)
    for sweep in range(SWEEPS):
        for name in names:
            lo, hi = BOUNDS.get(name, EFFICIENCY_RANGE)
            # Search in log space for factors, linear for fixed costs; the grid
            # shrinks with each sweep around the current value.
            span = 0.5**sweep
            if name in LOG_SCALE:
                centre = math.log(p[name])
                width = span * (math.log(hi) - math.log(lo))
                grid = np.exp(np.linspace(centre - width, centre + width, GRID))
            else:
                width = span * (hi - lo)
                grid = np.linspace(p[name] - width, p[name] + width, GRID)
            best, best_loss = p[name], loss(p)
            for v in np.clip(grid, lo, hi):
                trial = {**p, name: float(v)}
                trial_loss = loss(trial)
                if trial_loss < best_loss - 1e-12:
                    best, best_loss = float(v), trial_loss
            p[name] = best
    return p


def _efficiency(p: dict[str, float]) -> Efficiency:
    return Efficiency(**{k: round(p[k], 4) for k in EFFICIENCIES})


def _fit_ttft(
    rows: Sequence[Measurement],
    every: _Arrays,
    params: Sequence[dict[str, float]],
) -> dict[str, TTFTModel]:
    """TTFT models, on all rows (``default``) and per engine with enough rows, with each
    row's step and prefill priced by its own fitted parameters ``params[i]``."""
    n = len(rows)
    step = np.array([_part_s(every, params[i], "decode")[i] for i in range(n)])
    pre = np.array([_part_s(every, params[i], "prefill_one")[i] for i in range(n)])
    data = _TTFTArrays(
        concurrency=np.array([float(r.concurrency) for r in rows]),
        chunks=np.array([float(prefill_chunks(workload_of(r))) for r in rows]),
        measured=np.array([r.ttft_ms * 1e-3 if r.ttft_ms else np.nan for r in rows]),
        step_s=step,
        prefill_s=pre,
    )
    start = TTFTModel().model_dump()
    out: dict[str, TTFTModel] = {}
    groups = {"default": [i for i in range(n) if rows[i].ttft_ms]}
    for engine in sorted({r.engine for r in rows}):
        groups[engine] = [i for i in groups["default"] if rows[i].engine == engine]
    for name, idx in groups.items():
        if (len(idx) < MIN_ENGINE_ROWS and name != "default") or not idx:
            continue
        sub = data.subset(idx)
        best = _descend(partial(_ttft_loss, sub), start, TTFT_PARAMS)
        out[name] = TTFTModel(**{k: round(best[k], 4) for k in TTFT_PARAMS})
    return out


def fit(
    rows: Sequence[Measurement],
    terms: Sequence[RowTerms] | None = None,
    name: str = "fitted",
    sources: Sequence[str] = (),
) -> Calibration:
    """Fit a calibration to ``rows`` (terms are computed when not given): efficiencies and
    fixed costs to TPOT, then the TTFT models to TTFT with those efficiencies."""
    if not rows:
        raise ValueError("no measurements to fit")
    ts = list(terms) if terms is not None else [row_terms(r) for r in rows]
    measured = [r.tpot_ms * 1e-3 for r in rows]
    start = {k: 0.5 for k in EFFICIENCIES} | {"dequant": 1.0, "layer_us": 0.0, "step_us": 0.0}
    every = _arrays(ts, measured)
    glob = _descend(partial(_tpot_loss, every), start, (*EFFICIENCIES, "layer_us", "step_us"))
    glob_eff = _efficiency(glob)
    families: dict[str, Efficiency] = {}
    fams = [family_of(gpu_family(r)) for r in rows]
    for fam in sorted({f for f in fams if f is not None}):
        idx = [i for i, f in enumerate(fams) if f == fam]
        if len(idx) < MIN_FAMILY_ROWS:
            continue
        sub = _arrays([ts[i] for i in idx], [measured[i] for i in idx])
        own = _descend(partial(_tpot_loss, sub), glob, EFFICIENCIES)
        families[fam] = _efficiency(own)
    # Each row's parameters as the calibration will price it (rounded as stored).
    fixed = {"layer_us": round(glob["layer_us"], 3), "step_us": round(glob["step_us"], 3)}
    per_row = [families.get(f or "", glob_eff).model_dump() | fixed for f in fams]
    return Calibration(
        format="placer-calibration",
        version=1,
        name=name,
        method="least absolute log deviation of TPOT, then of TTFT per engine, bounded "
        f"coordinate descent ({SWEEPS} sweeps, {GRID}-point grids), on {len(rows)} rows "
        "(placer/fit.py)",
        sources=tuple(sources),
        default=glob_eff,
        families=families,
        layer_us=fixed["layer_us"],
        step_us=fixed["step_us"],
        ttft=_fit_ttft(rows, every, per_row),
    )
