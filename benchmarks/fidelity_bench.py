"""How far the calibrated cost model is from measured serving, cross-validated.

For every row of a measurement file, predicted / measured TPOT, where the
prediction comes from a calibration fitted WITHOUT that row's layout (5 folds of
whole layouts: every concurrency of a layout is held out together) and, in
turn, without that row's GPU type. Prints the rows, then per GPU and engine the
median ratio, the share within +-20 % and within 1.5x and the Spearman rank
correlation, next to the noise floor (how much repeat measurements of one
configuration differ). Usage::

    python benchmarks/fidelity_bench.py [instances/measurements/silicon_sample.json]
        [--rows] [--write-default]

``--write-default`` fits on all rows and writes placer/data/calibration.json with
the layout-held-out error attached (what ``evaluate`` states as its error band).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from placer.fit import fit
from placer.measurements import (
    Measurement,
    load_measurements,
    predict_tpot_s,
    row_terms,
)

ROOT = Path(__file__).resolve().parent.parent
FOLDS = 5


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Rank correlation (ties broken by order; enough for continuous timings)."""
    if len(x) < 3:
        return float("nan")
    rx = np.argsort(np.argsort(np.asarray(x)))
    ry = np.argsort(np.argsort(np.asarray(y)))
    return float(np.corrcoef(rx, ry)[0, 1])


def stats(pred: Sequence[float], meas: Sequence[float]) -> dict[str, float]:
    """Median ratio, shares within 20 % and 1.5x, Spearman, rows."""
    r = np.asarray(pred) / np.asarray(meas)
    return {
        "rows": float(len(r)),
        "median_ratio": float(np.median(r)),
        "within_20pct": float(np.mean(np.abs(r - 1) <= 0.2)),
        "within_1_5x": float(np.mean((r >= 1 / 1.5) & (r <= 1.5))),
        "spearman": spearman(pred, meas),
    }


def noise_floor(rows: Sequence[Measurement]) -> tuple[float, int]:
    """Median max/min TPOT over groups of rows with the same configuration."""
    groups: dict[tuple[object, ...], list[float]] = defaultdict(list)
    for r in rows:
        key = (*r.layout_key(), r.prompt_len, r.output_len, r.concurrency)
        groups[key].append(r.tpot_ms)
    spreads = [max(v) / min(v) for v in groups.values() if len(v) > 1]
    return (float(np.median(spreads)) if spreads else float("nan")), len(spreads)


def cross_validate(
    rows: Sequence[Measurement], fold_of: Callable[[Measurement], object]
) -> list[float]:
    """Predicted TPOT (s) of each row by a calibration fitted without its fold."""
    terms = [row_terms(r) for r in rows]
    folds = sorted({str(fold_of(r)) for r in rows})
    pred = [0.0] * len(rows)
    for f in folds:
        train = [i for i, r in enumerate(rows) if str(fold_of(r)) != f]
        calib = fit([rows[i] for i in train], [terms[i] for i in train], name=f"without {f}")
        for i, r in enumerate(rows):
            if str(fold_of(r)) == f:
                pred[i] = predict_tpot_s(r, calib)
    return pred


def layout_folds(rows: Sequence[Measurement]) -> Callable[[Measurement], object]:
    """Whole layouts dealt round-robin into FOLDS folds, in sorted order (deterministic)."""
    keys = sorted({repr(r.layout_key()) for r in rows})
    fold = {k: i % FOLDS for i, k in enumerate(keys)}
    return lambda r: fold[repr(r.layout_key())]


def table(title: str, rows: Sequence[Measurement], pred: Sequence[float]) -> None:
    """Print the statistics overall and per GPU and engine."""
    meas = [r.tpot_ms * 1e-3 for r in rows]
    print(f"\n{title}")
    print(f"{'group':<26} {'rows':>5} {'median':>7} {'+-20%':>6} {'1.5x':>6} {'spearman':>8}")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups["all"].append(i)
        groups[f"{r.hardware} {r.engine}"].append(i)
        groups[r.hardware].append(i)
    for g in sorted(groups, key=lambda k: (k != "all", k)):
        idx = groups[g]
        s = stats([pred[i] for i in idx], [meas[i] for i in idx])
        print(
            f"{g:<26} {len(idx):>5} {s['median_ratio']:>7.2f} {s['within_20pct']:>6.0%} "
            f"{s['within_1_5x']:>6.0%} {s['spearman']:>8.2f}"
        )


def main(argv: Sequence[str]) -> None:
    """Run the benchmark (see the module docstring)."""
    args = [a for a in argv if not a.startswith("--")]
    path = args[0] if args else str(ROOT / "instances/measurements/silicon_sample.json")
    data = load_measurements(path)
    rows = list(data.rows)
    floor, groups = noise_floor(rows)
    print(f"{path}: {len(rows)} rows")
    print(f"noise floor: repeat measurements differ by a median {floor:.2f}x ({groups} groups)")
    by_layout = cross_validate(rows, layout_folds(rows))
    by_gpu = cross_validate(rows, lambda r: r.hardware)
    if "--rows" in argv:
        print(f"\n{'id':<60} {'measured ms':>11} {'layout-CV':>9} {'GPU-CV':>7}")
        for r, a, b in zip(rows, by_layout, by_gpu, strict=True):
            m = r.tpot_ms * 1e-3
            print(f"{r.id[:60]:<60} {r.tpot_ms:>11.2f} {a / m:>9.2f} {b / m:>7.2f}")
    table("TPOT, whole layouts held out (5 folds): predicted / measured", rows, by_layout)
    table("TPOT, whole GPU types held out: predicted / measured", rows, by_gpu)
    if "--write-default" in argv:
        err = stats(by_layout, [r.tpot_ms * 1e-3 for r in rows])
        calib = fit(rows, name=f"fitted on {Path(path).name}", sources=(data.about,))
        calib = calib.model_copy(update={"error": {k: round(v, 4) for k, v in err.items()}})
        out = ROOT / "placer/data/calibration.json"
        out.write_text(calib.model_dump_json(indent=1) + "\n", encoding="utf-8")
        print(f"\nwrote {out.relative_to(ROOT)} (sha256 {calib.digest()[:12]})")


if __name__ == "__main__":
    main(sys.argv[1:])
