"""How far the calibrated cost model is from measured serving, cross-validated.

For every row of a measurement file, predicted / measured TPOT, where the
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
the layout-held-out error attached (what ``evaluate`` states as its error band).
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
    if "--no-rows" not in argv:
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
        default_calibration.cache_clear()  # what follows uses the file just written
    published(published_speed_ratios())
    rankings()


if __name__ == "__main__":
    main(sys.argv[1:])
