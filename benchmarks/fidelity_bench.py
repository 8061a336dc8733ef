"""How far the calibrated cost model is from measured serving, cross-validated.

For every row of a measurement file, predicted / measured TPOT and TTFT (as the
serving objective defines it: queueing under concurrency included), where the
prediction comes from a calibration fitted WITHOUT that row's layout (5 folds of
whole layouts: every concurrency of a layout is held out together) and, in
turn, without that row's GPU type. Prints the rows, then per GPU and engine the
median ratio, the share within +-20 % and within 1.5x and the Spearman rank
correlation, next to the noise floor (how much repeat measurements of one
configuration differ). Usage::

    python benchmarks/fidelity_bench.py [instances/measurements/silicon_sample.json]
        [--no-rows] [--write-default]

Then the published points kept apart (instances/measurements/published.json:
never fitted on) with the shipped calibration: speed ratio predicted / measured
per point, its median and the share within 1.5x, and the published rankings
with their gaps.

``--write-default`` fits on all rows and writes placer/data/calibration.json with
the layout-held-out TPOT and TTFT errors attached (what ``evaluate`` and plans
state as their error band).
"""

from __future__ import annotations

import json
import shlex
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from placer.calibration import default_calibration
from placer.cli import main as placer_cli
from placer.fit import fit
from placer.measurements import (
    Measurement,
    RowTerms,
    load_measurements,
    predict_s,
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


def noise_floor(rows: Sequence[Measurement], field: str = "tpot_ms") -> tuple[float, int]:
    """Median max/min of ``field`` over groups of rows with the same configuration."""
    groups: dict[tuple[object, ...], list[float]] = defaultdict(list)
    for r in rows:
        key = (*r.layout_key(), r.prompt_len, r.output_len, r.concurrency)
        value = getattr(r, field)
        if value is not None:
            groups[key].append(float(value))
    spreads = [max(v) / min(v) for v in groups.values() if len(v) > 1]
    return (float(np.median(spreads)) if spreads else float("nan")), len(spreads)


def cross_validate(
    rows: Sequence[Measurement],
    terms: Sequence[RowTerms],
    fold_of: Callable[[Measurement], object],
) -> tuple[list[float], list[float]]:
    """Predicted TPOT and TTFT (s) of each row by a calibration fitted without its fold
    (efficiencies, fixed costs and TTFT models alike)."""
    folds = sorted({str(fold_of(r)) for r in rows})
    tpot, ttft = [0.0] * len(rows), [0.0] * len(rows)
    for f in folds:
        train = [i for i, r in enumerate(rows) if str(fold_of(r)) != f]
        calib = fit([rows[i] for i in train], [terms[i] for i in train], name=f"without {f}")
        for i, r in enumerate(rows):
            if str(fold_of(r)) == f:
                tpot[i], ttft[i] = predict_s(r, calib)
    return tpot, ttft


def layout_folds(rows: Sequence[Measurement]) -> Callable[[Measurement], object]:
    """Whole layouts dealt round-robin into FOLDS folds, in sorted order (deterministic)."""
    keys = sorted({repr(r.layout_key()) for r in rows})
    fold = {k: i % FOLDS for i, k in enumerate(keys)}
    return lambda r: fold[repr(r.layout_key())]


def measured_s(rows: Sequence[Measurement], field: str) -> list[float]:
    """The measured ``field`` (``tpot_ms`` or ``ttft_ms``) of each row, seconds."""
    return [float(getattr(r, field)) * 1e-3 for r in rows]


def table(
    title: str, rows: Sequence[Measurement], pred: Sequence[float], field: str = "tpot_ms"
) -> None:
    """Print the statistics overall and per GPU and engine."""
    meas = measured_s(rows, field)
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


def published_speed_ratios() -> dict[str, tuple[float, float, dict[str, object]]]:
    """Per published point: (predicted speed / measured speed, predicted value, row).

    TPOT rows are predicted as served (decode step plus the prefill share, as the
    calibration is fitted); TTFT rows as the prefill of the batch; throughput rows as the
    pipelined decode throughput."""
    data = json.loads((ROOT / "instances/measurements/published.json").read_text())
    out: dict[str, tuple[float, float, dict[str, object]]] = {}
    for row in data["rows"]:
        args = shlex.split(str(row["args"]))
        args = [str(ROOT / a) if a.endswith(".json") else a for a in args]
        res = CliRunner().invoke(placer_cli, args)
        est = json.loads(res.output)["estimates"]
        out_len = int(args[args.index("--output-len") + 1])
        if row["field"] == "latency_ms":
            pred = (est["latency_s"] + est["ttft_s"] / out_len) * 1e3
        elif row["field"] == "ttft_ms":
            pred = est["ttft_s"] * 1e3
        else:
            pred = est["throughput_tokens_s"]
        measured = float(row["measured"])
        speed = measured / pred if row["kind"] == "time" else pred / measured
        out[str(row["id"])] = (speed, pred, row)
    return out


def published(ratios: dict[str, tuple[float, float, dict[str, object]]]) -> None:
    """Print the published points and the rankings they support."""
    print("\nPublished points kept apart (shipped calibration): predicted / measured speed")
    print(f"{'id':<4} {'setup':<50} {'measured':>10} {'predicted':>10} {'speed':>6}")
    for rid, (speed, pred, row) in ratios.items():
        what = f"{row['model']} {row['gpus']} {str(row['layout'])[:18]} {row['workload']}"
        print(f"{rid:<4} {what[:50]:<50} {row['measured']:>10} {pred:>10.4g} {speed:>6.2f}")
    r = np.array([v[0] for v in ratios.values()])
    within = float(np.mean((r >= 1 / 1.5) & (r <= 1.5)))
    print(f"median speed ratio {np.median(r):.2f}, within 1.5x {within:.0%} of {len(r)} points")
    # gpt-oss-120b on H100 at concurrency 64: per-GPU throughput TP2 > TP4 > TP8.
    per_gpu = {}
    for rid, gpus in (("9a", 2), ("9b", 4), ("9c", 8)):
        _, pred, row = ratios[rid]
        per_gpu[rid] = (64 / float(row["measured"]) / gpus, 64 / pred / gpus)
    print("\nranking: gpt-oss-120b on H100, conc 64, tokens/s per GPU (measured, predicted)")
    for rid, (m, p) in per_gpu.items():
        print(f"  {rid}: {m * 1e3:8.1f} {p * 1e3:8.1f}")
    kept = per_gpu["9a"][1] > per_gpu["9b"][1] > per_gpu["9c"][1]
    gaps = [
        (per_gpu[a][1] / per_gpu[b][1]) / (per_gpu[a][0] / per_gpu[b][0])
        for a, b in (("9a", "9b"), ("9b", "9c"))
    ]
    print(
        f"  order kept: {kept}; predicted gap / measured gap: "
        + ", ".join(f"{g:.2f}" for g in gaps)
    )


def rankings() -> None:
    """Published layout rankings the model must keep (shipped calibration, SGLang profile)."""
    from placer.cost import estimate
    from placer.layout import Layout
    from placer.load import load_cluster, load_model
    from placer.workload import Workload

    dsv3 = load_model(ROOT / "models/deepseek-v3.json")
    h200 = load_cluster(ROOT / "instances/hardware/dgx-h200.json")
    print("\nranking: DeepSeek-V3 on 8 H200, decode tokens/s (DP-attention over TP8, large batch)")
    for batch in (64, 512, 2048):
        w = Workload(batch=batch, prompt_len=1024, output_len=1024, phase="decode",
                     weight_dtype="fp8")  # fmt: skip
        tp8 = estimate(dsv3, h200, w, Layout(tp=8, ep=8), engine="sglang")
        dp8 = estimate(dsv3, h200, w, Layout(tp=1, dp_attn=8, ep=8), engine="sglang")
        ratio = dp8.throughput_tokens_s / tp8.throughput_tokens_s
        print(f"  batch {batch:>5}: TP8 EP8 {tp8.throughput_tokens_s:>8.0f}, DP8 EP8 "
              f"{dp8.throughput_tokens_s:>8.0f} ({ratio:.2f}x)")  # fmt: skip
    h100 = ROOT / "instances/hardware/dgx-h100.json"
    w72 = Workload(batch=256 * 72, prompt_len=2000, output_len=100, phase="decode",
                   weight_dtype="fp8")  # fmt: skip
    ep72 = estimate(dsv3, load_cluster(h100, gpus=72), w72, Layout(tp=1, dp_attn=72, ep=72),
                    engine="sglang")  # fmt: skip
    w16 = w72.model_copy(update={"batch": 256 * 16})
    tp16 = estimate(dsv3, load_cluster(h100, gpus=16), w16, Layout(tp=16), engine="sglang")
    print(
        "ranking: DeepSeek-V3 decode on H100, tokens/s per GPU at 256 requests per GPU: "
        f"EP72 {ep72.throughput_tokens_s / 72:.0f}, TP16 {tp16.throughput_tokens_s / 16:.0f}"
    )


def write_default(path: str, rows: Sequence[Measurement], terms: Sequence[RowTerms],
                  about: str, errors: dict[str, list[float]]) -> None:  # fmt: skip
    """Fit on all rows, attach the layout-held-out errors, write the shipped calibration."""
    tpot_err = stats(errors["tpot_ms"], measured_s(rows, "tpot_ms"))
    ttft_err = stats(errors["ttft_ms"], measured_s(rows, "ttft_ms"))
    calib = fit(rows, terms, name=f"fitted on {Path(path).name}", sources=(about,))
    calib = calib.model_copy(
        update={
            "error": {k: round(v, 4) for k, v in tpot_err.items()},
            "ttft_error": {k: round(v, 4) for k, v in ttft_err.items()},
        }
    )
    out = ROOT / "placer/data/calibration.json"
    out.write_text(calib.model_dump_json(indent=1) + "\n", encoding="utf-8")
    print(f"\nwrote {out.relative_to(ROOT)} (sha256 {calib.digest()[:12]})")
    default_calibration.cache_clear()  # what follows uses the file just written


def ttft_before(rows: Sequence[Measurement]) -> None:
    """TTFT as the uncalibrated formula gives it (no queue: the prefill, then the prompt's
    chunks and one step), with the shipped efficiencies: what the TTFT model improves on."""
    plain = default_calibration().model_copy(update={"ttft": {}})
    pred = [predict_s(r, plain)[1] for r in rows]
    s = stats(pred, measured_s(rows, "ttft_ms"))
    print(
        f"\nTTFT without the queueing model (shipped efficiencies, all rows): median "
        f"{s['median_ratio']:.2f}, {s['within_20pct']:.0%} within +-20 %, "
        f"{s['within_1_5x']:.0%} within 1.5x, Spearman {s['spearman']:.2f}"
    )


def main(argv: Sequence[str]) -> None:
    """Run the benchmark (see the module docstring)."""
    args = [a for a in argv if not a.startswith("--")]
    path = args[0] if args else str(ROOT / "instances/measurements/silicon_sample.json")
    data = load_measurements(path)
    rows = [r for r in data.rows if r.ttft_ms is not None]
    print(f"{path}: {len(data.rows)} rows, {len(rows)} with TPOT and TTFT")
    for field in ("tpot_ms", "ttft_ms"):
        floor, groups = noise_floor(rows, field)
        print(f"noise floor {field[:4].upper()}: repeat measurements differ by a median "
              f"{floor:.2f}x (max/min, {groups} configurations with repeats)")  # fmt: skip
    terms = [row_terms(r) for r in rows]
    tpot_l, ttft_l = cross_validate(rows, terms, layout_folds(rows))
    tpot_g, ttft_g = cross_validate(rows, terms, lambda r: r.hardware)
    if "--no-rows" not in argv:
        print(f"\n{'id':<52} {'TPOT ms':>8} {'lay-CV':>6} {'GPU-CV':>6} {'TTFT ms':>9} "
              f"{'lay-CV':>6} {'GPU-CV':>6}")  # fmt: skip
        for i, r in enumerate(rows):
            m, t = r.tpot_ms * 1e-3, (r.ttft_ms or 0.0) * 1e-3
            print(f"{r.id[:52]:<52} {r.tpot_ms:>8.2f} {tpot_l[i] / m:>6.2f} {tpot_g[i] / m:>6.2f} "
                  f"{t * 1e3:>9.1f} {ttft_l[i] / t:>6.2f} {ttft_g[i] / t:>6.2f}")  # fmt: skip
    table("TPOT, whole layouts held out (5 folds): predicted / measured", rows, tpot_l)
    table("TPOT, whole GPU types held out: predicted / measured", rows, tpot_g)
    table("TTFT, whole layouts held out (5 folds): predicted / measured", rows, ttft_l, "ttft_ms")
    table("TTFT, whole GPU types held out: predicted / measured", rows, ttft_g, "ttft_ms")
    if "--write-default" in argv:
        write_default(path, rows, terms, data.about, {"tpot_ms": tpot_l, "ttft_ms": ttft_l})
    ttft_before(rows)
    published(published_speed_ratios())
    rankings()


if __name__ == "__main__":
    main(sys.argv[1:])
