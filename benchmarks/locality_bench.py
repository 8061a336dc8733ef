"""Communication locality on DeepSeek-V3 (8 groups, 4 per token) on DGX H200 nodes.

Usage: python benchmarks/locality_bench.py [--seconds S]

For attention-DP layouts with EP over every GPU of 4 to 12 nodes (generic profile,
decode of 1,024 requests, 2,048-token prompts), one layout at a time:

- ``default``: the objective of the engines' default map (slot counts as even as
  possible, the first ranks taking one more), the all-to-all priced from where its
  expert groups sit;
- ``optimum``: CP-SAT's placement (slot counts chosen for locality), its bound and
  status, with the deterministic time CP-SAT used (independent of machine load);
- the groups each node holds (mean over nodes, first MoE layer) for both.

With ``E % ep == 0`` the counts are fixed, so the two rows agree: the term then only
ranks layouts. Every solved placement is checked against the numpy objective.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from placer.budget import Budget
from placer.collectives import use_engine
from placer.config import SolveConfig
from placer.layout import Layout
from placer.load import load_cluster, load_model
from placer.locality import groups_on_nodes
from placer.search.outer import solve_layout
from placer.search.tables import build_tables, contiguous_map, objective_ns
from placer.workload import Workload

ROOT = Path(__file__).resolve().parent.parent


def _default_counts(slots: np.ndarray, ep: int) -> np.ndarray:
    """The engines' linear map: the first ``slots % ep`` ranks take one more."""
    out = np.zeros((len(slots), ep), dtype=np.int64)
    for i, s in enumerate(int(x) for x in slots):
        base, extra = divmod(s, ep)
        out[i] = base
        out[i, :extra] += 1
    return out


def _groups(t: object, counts: np.ndarray) -> float:
    loc = t.locality  # type: ignore[attr-defined]
    i = int(np.flatnonzero(loc.placed[:, 0])[0])
    ranks = contiguous_map(t, counts)[i]  # type: ignore[arg-type]
    return float(groups_on_nodes(loc.bounds[0], ranks, int(loc.group_size[i])).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="CP-SAT deterministic s")
    args = parser.parse_args()
    model = load_model(ROOT / "models" / "deepseek-v3.json")
    workload = Workload(batch=1024, prompt_len=2048, output_len=1024)
    config = SolveConfig(workers=1, deterministic=True, time_limit_s=args.seconds * 30)
    table = Table(title="DeepSeek-V3, DGX H200, attention-DP + EP over all GPUs, decode")
    for col in ("nodes", "EP", "slots/rank", "default ms", "optimum ms", "gain", "bound",
                "status", "det. s (wall, loaded)", "groups/node default -> optimum"):  # fmt: skip
        table.add_column(col)
    for nodes in (4, 6, 8, 10, 12):
        cluster = load_cluster(ROOT / "instances" / "hardware" / "dgx-h200.json", nodes=nodes)
        gpus = cluster.num_gpus
        layout = Layout(tp=1, dp_attn=gpus, ep=gpus)
        with use_engine("generic"):
            t = build_tables(model, cluster, workload, layout, "throughput")
            default = _default_counts(t.slots, layout.ep)
            split = (model.num_layers,)
            before = objective_ns(t, split, default, "throughput")
            # The deterministic limit decides; the wall clock only stops a runaway solve.
            budget = Budget(args.seconds * 30, True)
            status, got, counts, value, bound = solve_layout(
                t, "throughput", config, budget, args.seconds
            )
        assert got is not None and counts is not None and value is not None
        assert value == objective_ns(t, got, counts, "throughput")
        slots = int(t.slots[int(np.flatnonzero(t.slots)[0])])
        table.add_row(
            str(nodes),
            str(layout.ep),
            f"{slots / layout.ep:.2f}",
            f"{before / 1e6:.4f}",
            f"{value / 1e6:.4f}",
            f"{(before - value) / before:.2%}",
            f"{(bound or 0) / 1e6:.4f}",
            status,
            f"{budget.deterministic_used:.2f} ({budget.elapsed():.0f} s wall)",
            f"{_groups(t, default):.2f} -> {_groups(t, counts):.2f}",
        )
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
