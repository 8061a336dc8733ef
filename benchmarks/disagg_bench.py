"""Aggregated vs disaggregated serving on the serving benchmark's cases (issue 11, item 4).

Usage: python benchmarks/disagg_bench.py [--only NAME] [--time-limit S] [--deterministic]

For each case: solve with ``SolveConfig(disagg=True)`` (prompt 4000, output 1000, TTFT <=
2000 ms, TPOT <= 30 ms), verify the plan (the disaggregated search record included), and
print the aggregated and disaggregated tokens/s per GPU, the split, its status, the split
counts of its proof (``cut`` when the time limit stopped the split search), the wall time of
the whole solve and the deterministic time the split search charged (its probes' work,
docs/serving.md "Time limit": the same on an idle and a busy machine). Wall times are
measured on whatever machine runs it (pessimistic on a busy one).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from serving_bench import CASES, TARGETS  # noqa: E402

from placer.config import SolveConfig  # noqa: E402


def run_case(model: str, hardware: str, gpus: int, config: SolveConfig) -> str:
    """One case, solved and verified, as a Markdown table row."""
    from placer import load_cluster, load_model, load_workload, verify
    from placer.search.outer import solve

    m = load_model(ROOT / "models" / f"{model}.json")
    c = load_cluster(ROOT / "instances" / "hardware" / f"{hardware}.json", gpus=gpus)
    w = load_workload(None, **TARGETS)
    start = time.perf_counter()
    plan = solve(m, c, w, config)
    took = time.perf_counter() - start
    ok = verify(plan).ok
    s = plan.serving
    work = plan.certificate.solver.deterministic_time_s
    if s is None or s.disagg is None:
        why = "unknown (time limit)" if s is not None and s.disagg_unknown else plan.status
        return f"| {model} {gpus} | {why} | - | - | - | - | {took:.1f} | {work:.1f} | {ok} |"
    d = s.disagg
    assert d.search is not None
    split = (
        f"{d.prefill_instances} x {d.prefill_layout} + {d.decode_instances} x "
        f"{d.decode_layout} (c {d.concurrency})"
    )
    proof = f"{d.search.splits} splits: {d.search.pruned} pruned, {d.search.capped} capped, "
    proof += f"{d.search.open} open" + (", cut" if d.cut else "")
    return (
        f"| {model} {gpus} | {s.tokens_per_s_per_gpu:,.1f} | {d.tokens_per_s_per_gpu:,.1f} "
        f"| {d.verdict()} | {split} | {d.status}; {proof} | {took:.1f} | {work:.1f} | {ok} |"
    )


def main() -> None:
    """Run the cases and print the table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", default=None, help="Run only cases whose name contains this.")
    ap.add_argument("--time-limit", type=float, default=60.0, help="As placer solve's.")
    ap.add_argument("--deterministic", action="store_true", help="As placer solve's.")
    args = ap.parse_args()
    config = SolveConfig(
        time_limit_s=args.time_limit, deterministic=args.deterministic, disagg=True
    )
    print(
        "| case | aggregated tok/s/GPU | disaggregated tok/s/GPU | verdict | split | "
        "split proof | solve s | deterministic s | verified |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, model, hardware, gpus, _ in CASES:
        if args.only and args.only not in name:
            continue
        print(run_case(model, hardware, gpus, config), flush=True)


if __name__ == "__main__":
    main()
