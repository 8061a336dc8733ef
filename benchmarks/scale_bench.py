"""Scale benchmarks: large clusters and models, each in its own process so its peak memory is
its own. Every case must return a verified plan or an honest status within its time limit
(plus a small margin) and within 2 GB of memory.

Usage: python benchmarks/scale_bench.py [--time-limit S]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent

#: (name, model file, hardware file, GPUs)
CASES = [
    ("DeepSeek-V3, 256 x H200 (32 nodes)", "models/deepseek-v3.json",
     "instances/hardware/dgx-h200.json", 256),
    ("Kimi-K2, 256 x H200 (32 nodes)", "models/kimi-k2.json",
     "instances/hardware/dgx-h200.json", 256),
    ("DeepSeek-V3, GB200 NVL72", "models/deepseek-v3.json",
     "instances/hardware/gb200-nvl72.json", 72),
    ("Kimi-K2, GB200 NVL72", "models/kimi-k2.json", "instances/hardware/gb200-nvl72.json", 72),
    ("synthetic 1,024 experts, 64 x H200", "instances/models/synthetic-1024-experts.json",
     "instances/hardware/dgx-h200.json", 64),
    ("Mixtral-8x22B, mixed 8 x H100 + 8 x H200", "models/mixtral-8x22b.json",
     "instances/hardware/mixed-h100-h200.json", None),
]

CHILD = r"""
import json, resource, sys, time
from placer import SolveConfig, load_cluster, load_model, verify
from placer.search.outer import solve
model, hw, gpus, limit = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
m = load_model(model)
c = load_cluster(hw, gpus=int(gpus) if gpus != "None" else None)
t = time.perf_counter()
plan = solve(m, c, None, SolveConfig(time_limit_s=limit))
wall = time.perf_counter() - t
ok = verify(plan).ok
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
lay = plan.layout
print(json.dumps({"status": plan.status, "gap": plan.objective.gap, "wall": wall,
                  "peak_mb": peak, "verified": ok, "legal": plan.certificate.search.legal,
                  "layout": (f"TP{lay.tp} PP{lay.pp} EP{lay.ep} ETP{lay.etp} DP{lay.dp_attn} "
                             f"on {lay.gpus_used}") if lay else "-"}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--time-limit", type=float, default=60.0)
    args = ap.parse_args()
    con = Console(width=170)
    t = Table(title=f"scale (time limit {args.time_limit:g} s per case, 2 cores)")
    for col in ("case", "status", "layout", "gap", "legal layouts", "time s",
                "over limit s", "peak MB", "verified", "targets"):
        t.add_column(col)
    missed = 0
    for name, model, hw, gpus in CASES:
        out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / model), str(ROOT / hw),
                              str(gpus), str(args.time_limit)], capture_output=True, text=True,
                             check=True, cwd=ROOT)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        over = r["wall"] - args.time_limit
        ok = over <= 2.0 and r["peak_mb"] <= 2048 and r["verified"]
        missed += not ok
        t.add_row(name, r["status"], r["layout"],
                  "-" if r["gap"] is None else f"{100 * r['gap']:.2f} %", str(r["legal"]),
                  f"{r['wall']:.1f}", f"{over:+.2f}", f"{r['peak_mb']:.0f}",
                  "yes" if r["verified"] else "NO",
                  "limit + 2 s, 2 GB: " + ("met" if ok else "MISSED"))
    con.print(t)
    con.print(f"targets missed: {missed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
