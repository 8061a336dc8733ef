"""A short capacity-planning script written against placer's public API only; the tests run
it and type-check it with ``mypy --strict``."""

from __future__ import annotations

from pathlib import Path

import placer

ROOT = Path(__file__).resolve().parents[3]


def best_step_per_gpu_count(counts: list[int]) -> dict[int, tuple[str, float | None]]:
    """Status and step time of the seed's toy model on each count of its GPUs."""
    model = placer.load_model(ROOT / "models" / "seed-moe-8x4.json")
    workload = placer.load_workload(ROOT / "instances" / "workloads" / "seed.json")
    config = placer.SolveConfig(deterministic=True, time_limit_s=30.0)
    hardware = ROOT / "instances" / "hardware" / "seed-16x32gb.json"
    out: dict[int, tuple[str, float | None]] = {}
    for gpus in counts:
        cluster = placer.load_cluster(hardware, gpus=gpus)
        plan: placer.Plan = placer.solve(model, cluster, workload, config)
        report: placer.VerifyReport = placer.verify(plan)
        if not report.ok:
            raise SystemExit(f"{gpus} GPUs: plan does not verify: {report.violations}")
        out[gpus] = (plan.status, plan.objective.value)
    return out


def balanced_mixtral(gpus: int) -> list[tuple[int, float]]:
    """Per layer of the Mixtral C4 loads: the placed imbalance on ``gpus`` GPUs."""
    loads: placer.LoadStats = placer.load_loads(ROOT / "instances" / "loads" / "mixtral-c4.json")
    result = placer.balance_experts(loads, gpus, deterministic=True, time_limit_s=5.0)
    return [(layer.layer, layer.imbalance) for layer in result.layers]


def report_of_eight() -> str:
    """The Markdown report of the toy model's plan on 8 GPUs."""
    model = placer.load_model(ROOT / "models" / "seed-moe-8x4.json")
    cluster = placer.load_cluster(ROOT / "instances" / "hardware" / "seed-16x32gb.json", gpus=8)
    workload = placer.load_workload(ROOT / "instances" / "workloads" / "seed.json")
    plan = placer.solve(model, cluster, workload, placer.SolveConfig(deterministic=True))
    return placer.markdown_report(plan)


if __name__ == "__main__":
    for gpus, (status, step) in best_step_per_gpu_count([4, 8, 16]).items():
        print(gpus, status, step)
    for layer, imbalance in balanced_mixtral(4):
        print("balance", layer, imbalance)
    print("report", report_of_eight().splitlines()[0])
