"""Balance benchmarks: placer vs the EPLB baseline vs the lower bound, in one run.

Usage: python benchmarks/balance_bench.py

Targets (2 cores): Mixtral-size layers proven optimal in under 1 s each;
DeepSeek-V3-size (58 layers x 256 experts; 32 GPUs / 4 nodes / 288 slots and 64 GPUs /
8 nodes / 320 slots) in under 5 s for all layers, with a mean gap under 0.1 % for the
global policy and never worse than EPLB under the same policy and rules.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from placer.balance.eplb import rebalance_experts
from placer.balance.loads import load_loads
from placer.balance.solve import balance

ROOT = Path(__file__).resolve().parent.parent
LOADS = ROOT / "instances" / "loads"


def _dups(phy: np.ndarray, gpus: int) -> int:
    a = phy.reshape(gpus, -1)
    return sum(len(set(r)) < len(r) for r in a.tolist())


def main() -> int:
    con = Console(width=170)
    missed = 0
    # 1. Mixtral-size: every real Mixtral layer, 8 GPUs, 16 slots.
    t = Table(title="Mixtral-size (8 experts, 8 GPUs, 16 slots), real loads")
    for col in ("domain", "layers", "proven", "max time/layer s", "placer mean", "EPLB mean",
                "target"):
        t.add_column(col)
    for path in sorted(LOADS.glob("mixtral-*.json")):
        loads = load_loads(path)
        per = []
        res = None
        for i in range(loads.num_layers):
            one = loads.model_copy(update={"layers": (loads.layers[i],),
                                           "load": (loads.load[i],)})
            start = time.perf_counter()
            res = balance(one, 8, slots=16, workers=1)
            per.append((time.perf_counter() - start, res.layers[0]))
        proven = sum(q.proven for _, q in per)
        worst = max(s for s, _ in per)
        ok = proven == len(per) and worst < 1.0
        missed += not ok
        t.add_row(path.stem.split("-", 1)[1], str(len(per)), f"{proven}/{len(per)}",
                  f"{worst:.2f}", f"{np.mean([q.imbalance for _, q in per]):.4f}",
                  f"{np.mean([q.eplb_imbalance for _, q in per]):.4f}",
                  "proven, < 1 s/layer: " + ("met" if ok else "MISSED"))
    con.print(t)

    # 2. DeepSeek-V3-size synthetic loads.
    d = Table(title="DeepSeek-V3-size: 58 layers x 256 experts (synthetic, EPLB_NOTES case a)")
    for col in ("GPUs/nodes/slots", "policy", "time s", "placer mean / worst", "EPLB mean / worst",
                "bound mean", "gap mean / worst", "layers worse than EPLB", "target"):
        d.add_column(col)
    loads = load_loads(LOADS / "deepseek-v3-synthetic.json")
    w = loads.array()
    for gpus, nodes, slots in ((32, 4, 288), (64, 8, 320)):
        for policy in ("global", "node"):
            start = time.perf_counter()
            res = balance(loads, gpus, nodes=nodes, slots=slots, groups=8,
                          policy=policy)  # type: ignore[arg-type]
            wall = time.perf_counter() - start
            imb = np.array([q.imbalance for q in res.layers])
            eplb = np.array([q.eplb_imbalance for q in res.layers])
            gap = np.array([q.gap for q in res.layers])
            bnd = np.array([q.bound for q in res.layers])
            worse = np.flatnonzero(imb > eplb + 1e-12)
            phy, _, _ = rebalance_experts(w, slots, 8 if policy == "node" else 1,
                                          nodes if policy == "node" else 1, gpus)
            with_dups = sum(_dups(phy[i], gpus) > 0 for i in worse)
            ok = wall < 5.0 and (policy != "global" or gap.mean() < 1e-3) and (
                len(worse) == with_dups)
            missed += not ok
            d.add_row(f"{gpus}/{nodes}/{slots}", policy, f"{wall:.2f}",
                      f"{imb.mean():.4f} / {imb.max():.4f}", f"{eplb.mean():.4f} / "
                      f"{eplb.max():.4f}", f"{bnd.mean():.4f}",
                      f"{100 * gap.mean():.3f} % / {100 * gap.max():.3f} %",
                      f"{len(worse)} (EPLB doubled an expert on a GPU in {with_dups})",
                      "< 5 s" + (", gap < 0.1 %" if policy == "global" else "") + ": "
                      + ("met" if ok else "MISSED"))
    con.print(d)

    # 3. Real loads: no balancing vs EPLB vs placer, per domain and layer.
    r = Table(title="real loads: imbalance (busiest GPU / mean) per domain and layer")
    for col in ("model", "domain", "layer", "GPUs/slots", "no balancing", "EPLB", "placer",
                "bound", "proven"):
        r.add_column(col)
    for path in sorted(LOADS.glob("*.json")):
        name = path.stem
        if name.startswith("deepseek"):
            continue
        loads = load_loads(path)
        experts = loads.num_experts
        gpus, slots = (8, 16) if experts == 8 else (8, experts + 8)
        res = balance(loads, gpus, slots=slots, workers=1)
        for q in res.layers:
            r.add_row(name.split("-")[0], name.split("-", 1)[1], str(q.layer),
                      f"{gpus}/{slots}", f"{q.unbalanced_imbalance:.4f}",
                      f"{q.eplb_imbalance:.4f}", f"{q.imbalance:.4f}", f"{q.bound:.4f}",
                      "yes" if q.proven else "no")
    con.print(r)
    con.print(f"targets missed: {missed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
