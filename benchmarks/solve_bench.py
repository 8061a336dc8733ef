"""Solve benchmarks: the targets of the solve issue, and how solve time grows.

Usage: python benchmarks/solve_bench.py [--quick] [--time-limit S]

Prints one table per group with the measured figures next to their targets and
the ratio (measured / target). Every plan is also re-checked by the verifier.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from placer import SolveConfig, load_cluster, load_model, load_workload, verify
from placer.search.outer import solve

ROOT = Path(__file__).resolve().parent.parent
M, H = ROOT / "models", ROOT / "instances" / "hardware"

#: (name, model, hardware, gpus, workload file, target seconds, target gap, needs optimal)
TARGETS = [
    ("seed 8x4 toy", "seed-moe-8x4", "seed-16x32gb", None, "seed", 5.0, 0.0, True),
    ("Mixtral-8x7B", "mixtral-8x7b", "dgx-a100-80gb", 8, None, 5.0, 0.0, True),
    ("Qwen3-30B-A3B", "qwen3-30b-a3b", "dgx-h100", 8, None, 60.0, 0.01, False),
    ("Qwen3-30B-A3B", "qwen3-30b-a3b", "dgx-h100", 12, None, 60.0, 0.01, False),
    ("DeepSeek-V3", "deepseek-v3", "dgx-h200", 16, None, 60.0, 0.01, False),
    ("DeepSeek-V3", "deepseek-v3", "dgx-h200", 32, None, 60.0, 0.01, False),
    ("DeepSeek-V3", "deepseek-v3", "dgx-h200", 64, None, 60.0, 0.01, False),
]
SCALE_GPUS = [8, 16, 24, 32, 48, 64]
SCALE_EXPERTS = ["mixtral-8x7b", "dbrx", "olmoe-1b-7b-0924", "qwen3-30b-a3b", "deepseek-v3",
                 "kimi-k2"]


def run_case(model: str, hardware: str, gpus: int | None, workload: str | None,
             limit: float) -> tuple[object, float, bool]:
    m = load_model(M / f"{model}.json")
    c = load_cluster(H / f"{hardware}.json", gpus=gpus)
    w = load_workload(ROOT / "instances" / "workloads" / f"{workload}.json" if workload else None)
    start = time.perf_counter()
    plan = solve(m, c, w, SolveConfig(time_limit_s=limit, workers=2))
    wall = time.perf_counter() - start
    return plan, wall, verify(plan).ok


def _row(table: Table, name: str, gpus: int, plan, wall: float, ok: bool,  # type: ignore[no-untyped-def]
         target_s: float | None = None, target_gap: float | None = None) -> None:
    lay = plan.layout
    layout = (f"TP{lay.tp} PP{lay.pp} EP{lay.ep} ETP{lay.etp} DP{lay.dp_attn}"
              if lay else "-")
    gap = plan.objective.gap
    cells = [name, str(gpus), plan.status, layout,
             f"{plan.estimates.throughput_tokens_s:,.0f}" if plan.estimates else "-",
             "-" if gap is None else f"{100 * gap:.3f} %", f"{wall:.2f}",
             f"{plan.certificate.search.legal}", "yes" if ok else "NO"]
    if target_s is not None:
        cells += [f"{target_s:g} s / {100 * (target_gap or 0):g} %", f"{wall / target_s:.2f}"]
    table.add_row(*cells)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--quick", action="store_true", help="targets only, no scaling tables")
    args = ap.parse_args()
    con = Console(width=160)
    cols = ["case", "GPUs", "status", "layout", "tok/s", "gap", "time s", "layouts", "verified"]
    t = Table(title="solve targets (2 cores)")
    for col in [*cols, "target", "time / target"]:
        t.add_column(col)
    failures = 0
    for name, model, hw, gpus, wl, target_s, target_gap, need_opt in TARGETS:
        plan, wall, ok = run_case(model, hw, gpus, wl, args.time_limit)
        n = plan.layout.gpus_used if plan.layout else (gpus or 16)  # type: ignore[attr-defined]
        _row(t, name, gpus or n, plan, wall, ok, target_s, target_gap)
        met = wall <= target_s and ok and (plan.objective.gap or 0) <= target_gap  # type: ignore[attr-defined]
        if need_opt:
            met = met and plan.status == "optimal"  # type: ignore[attr-defined]
        failures += not met
    con.print(t)
    if not args.quick:
        g = Table(title="solve time vs GPU count (DeepSeek-V3 on H200)")
        for col in cols:
            g.add_column(col)
        for n in SCALE_GPUS:
            plan, wall, ok = run_case("deepseek-v3", "dgx-h200", n, None, args.time_limit)
            _row(g, "DeepSeek-V3", n, plan, wall, ok)
        con.print(g)
        e = Table(title="solve time vs expert count (16 x H200)")
        for col in cols:
            e.add_column(col)
        for model in SCALE_EXPERTS:
            plan, wall, ok = run_case(model, "dgx-h200", 16, None, args.time_limit)
            _row(e, model, 16, plan, wall, ok)
        con.print(e)
    con.print(f"targets missed: {failures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
