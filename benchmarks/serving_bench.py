"""Serving search benchmark (issue 11): time to a proven plan within TTFT/TPOT targets.

Prompt 4000, output 1000, TTFT <= 2000 ms, TPOT <= 30 ms, generic rules. Each case runs in
its own process (so one case's caches do not help the next), and every plan is re-checked
by ``placer verify``. Prints one row per case with the time against its target.

    python benchmarks/serving_bench.py [--only NAME] [--big] [--grid]

``--grid`` also scores aiconfigurator's default grid (pp 1, power-of-two degrees, identical
replicas filling the cluster) with ``placer.evaluate`` under the same targets and prints
placer's tokens/s per GPU over the grid's best.

``--big`` adds DeepSeek-V3 on 256, 1,024 and 4,096 x H200: the search enumerates instances of
up to 16 GPUs, then larger ones while the tail bound (placer/serving/tail.py) could still beat
the plan; ``--max-instance G`` fixes the cap instead (the gap then counts the tail bound).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: (name, model, hardware, GPUs, time target s)
CASES = [
    ("qwen3-30b-a3b 8xH200", "qwen3-30b-a3b", "dgx-h200", 8, 10.0),
    ("qwen3-30b-a3b 12xH200", "qwen3-30b-a3b", "dgx-h200", 12, 10.0),
    ("deepseek-v3 16xH200", "deepseek-v3", "dgx-h200", 16, 10.0),
    ("deepseek-v3 32xH200", "deepseek-v3", "dgx-h200", 32, 10.0),
    ("mixtral-8x7b 8xH100", "mixtral-8x7b", "dgx-h100", 8, 10.0),
]
BIG = [
    ("deepseek-v3 256xH200", "deepseek-v3", "dgx-h200", 256, 30.0),
    ("deepseek-v3 1024xH200", "deepseek-v3", "dgx-h200", 1024, 30.0),
    ("deepseek-v3 4096xH200", "deepseek-v3", "dgx-h200", 4096, 30.0),
]
TARGETS = {"prompt_len": 4000, "output_len": 1000, "ttft_ms": 2000.0, "tpot_ms": 30.0}


def run_case(model: str, hardware: str, gpus: int, max_instance: int | None) -> dict[str, object]:
    """Solve and verify one case in this process; the figures as a dict."""
    from placer import load_cluster, load_model, load_workload, verify
    from placer.config import SolveConfig
    from placer.search.outer import solve

    m = load_model(ROOT / "models" / f"{model}.json")
    c = load_cluster(ROOT / "instances" / "hardware" / f"{hardware}.json", gpus=gpus)
    w = load_workload(None, **TARGETS)
    start = time.perf_counter()
    plan = solve(m, c, w, SolveConfig(time_limit_s=120.0, max_gpus=max_instance))
    took = time.perf_counter() - start
    report = verify(plan)
    s = plan.serving
    return {
        "status": plan.status,
        "layout": plan.layout.to_layout().describe() if plan.layout else "-",
        "instances": f"{s.instances} x {s.gpus_per_instance}" if s else "-",
        "concurrency": s.concurrency if s else 0,
        "tpot_ms": s.tpot_s * 1e3 if s else 0.0,
        "ttft_ms": s.ttft_s * 1e3 if s else 0.0,
        "per_gpu": s.tokens_per_s_per_gpu if s else 0.0,
        "per_user": s.tokens_per_s_per_user if s else 0.0,
        "gap": plan.objective.gap,
        "layouts": plan.certificate.search.legal,
        "time": took,
        "verified": report.ok,
    }


def grid_layouts(gpus: int) -> list[Any]:
    """aiconfigurator's default aggregated grid: worker sizes 1, 2, 4, 8, 16; tp, attention-dp,
    moe-tp, moe-ep in {1, 2, 4, 8, 16} with tp x dp = moe_tp x moe_ep = worker size; pp 1."""
    from placer.layout import Layout

    sizes = (1, 2, 4, 8, 16)
    return [
        Layout(tp=tp, dp_attn=dp, ep=ep, etp=etp)
        for size in sizes
        if size <= gpus
        for tp in sizes
        for dp in sizes
        for etp in sizes
        for ep in sizes
        if tp * dp == size == etp * ep
    ]


#: Batch sizes tried per grid worker.
GRID_BATCHES = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


def grid_best(model: str, hardware: str, gpus: int) -> float:
    """Best tokens/s per GPU over aiconfigurator's grid with identical replicas filling the
    cluster, each point scored with placer.evaluate under the same targets and the timing
    formulas of docs/serving.md."""
    from placer import evaluate, get_profile, load_cluster, load_model, load_workload
    from placer.cost import estimate
    from placer.rules import layout_violations

    m = load_model(ROOT / "models" / f"{model}.json")
    c = load_cluster(ROOT / "instances" / "hardware" / f"{hardware}.json", gpus=gpus)
    w = load_workload(None, **TARGETS)
    prof = get_profile("generic")
    chunks = -(-w.prompt_len // w.max_batched_tokens)
    best = 0.0
    for lay in grid_layouts(gpus):
        if layout_violations(m, c, lay, prof):
            continue
        one = w.model_copy(update={"batch": 1, "phase": "prefill"})
        prefill = estimate(m, c, one, lay).latency_s
        for b in GRID_BATCHES:
            ev = evaluate(m, c, w.model_copy(update={"batch": b, "phase": "both"}), lay, prof)
            if not ev.fits or ev.estimates is None:
                break
            step = ev.estimates.cycle_s
            tpot = step + b * prefill / w.output_len
            ttft = prefill + (chunks + 1) * step
            if tpot > TARGETS["tpot_ms"] / 1e3 or ttft > TARGETS["ttft_ms"] / 1e3:
                break
            best = max(best, (gpus // lay.gpus) * b / tpot / gpus)
    return best


def main() -> None:
    """Run every case in a child process and print the table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", default=None, help="Run only cases whose name contains this.")
    ap.add_argument("--big", action="store_true", help="Add the 256-4,096 GPU cases.")
    ap.add_argument(
        "--max-instance", type=int, default=0, help="Instance cap of big cases (0: automatic)."
    )
    ap.add_argument(
        "--grid", action="store_true", help="Also score aiconfigurator's grid (slower)."
    )
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        model, hardware, gpus, cap = args.child
        out = run_case(model, hardware, int(gpus), int(cap) or None)
        if args.grid:
            out["grid"] = grid_best(model, hardware, int(gpus))
        print(json.dumps(out))
        return
    cases = CASES + (BIG if args.big else [])
    head = (
        f"{'case':24} {'status':9} {'layout':24} {'instances':10} {'conc':>5} "
        f"{'TPOT ms':>8} {'TTFT ms':>8} {'tok/s/GPU':>10} {'tok/s/user':>10} {'gap':>7} "
        f"{'layouts':>7} {'time s':>7} {'target':>6} {'ratio':>6} verify"
        + (f" {'grid tok/s/GPU':>14} {'placer/grid':>11}" if args.grid else "")
    )
    print(head)
    print("-" * len(head))
    for name, model, hardware, gpus, target in cases:
        if args.only and args.only not in name:
            continue
        cap = args.max_instance if gpus > 64 else 0
        out = subprocess.run(
            [sys.executable, __file__, "--child", model, hardware, str(gpus), str(cap)]
            + (["--grid"] if args.grid else []),
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        gap = "-" if r["gap"] is None else f"{100 * r['gap']:.2f}%"
        print(
            f"{name:24} {r['status']:9} {r['layout']:24} {r['instances']:10} "
            f"{r['concurrency']:>5} {r['tpot_ms']:>8.2f} {r['ttft_ms']:>8.1f} "
            f"{r['per_gpu']:>10.1f} {r['per_user']:>10.1f} {gap:>7} {r['layouts']:>7} "
            f"{r['time']:>7.2f} {target:>6.0f} {r['time'] / target:>6.2f} "
            f"{'ok' if r['verified'] else 'FAILED'}"
            + (
                f" {r['grid']:>14.1f} {r['per_gpu'] / r['grid']:>11.3f}"
                if args.grid and r["grid"] > 0
                else ""
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
