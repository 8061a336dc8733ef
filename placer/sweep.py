"""Capacity planning: ``placer.sweep`` over models x GPU types x GPU counts x workloads x
profiles, on a local process pool or on Ray, with a resumable cache and a Pareto frontier.

Every case is an ordinary ``solve``; a case that fails is recorded in its row
with its reason and never stops the sweep. Identical cases (same model,
cluster, workload and solver settings) are solved once: results are cached as
one JSON file per case, keyed by the SHA-256 of the inputs, so an interrupted
sweep re-run resumes from what it wrote. Cases run with one CP-SAT worker in
deterministic mode, so the local and Ray backends give identical rows.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from placer._base import Frozen
from placer.calibration import Calibration, default_calibration
from placer.cluster import ClusterSpec
from placer.config import SolveConfig
from placer.exceptions import InvalidInputError, PlacerError
from placer.io import read_json, write_atomic
from placer.limits import MAX_PROCESSES
from placer.model import ModelSpec
from placer.plan import digest
from placer.sweep_file import SweepSpec as SweepSpec
from placer.sweep_file import load_sweep as load_sweep
from placer.workload import Workload

Backend = Literal["local", "ray"]


class SweepRow(Frozen):
    """One case of a sweep and its outcome."""

    model: str = Field(description="Model name.")
    hardware: str = Field(description="Hardware name.")
    gpu_type: str = Field(description="GPU model.")
    gpus: int = Field(description="GPUs available in this case.")
    workload: str = Field(description="Workload name.")
    profile: str = Field(description="Rules profile.")
    status: str = Field(description="optimal, feasible, infeasible, unknown or error.")
    layout: str = Field(default="", description="Chosen degrees.")
    gpus_used: int | None = Field(default=None, description="GPUs the plan uses.")
    throughput_tokens_s: float | None = Field(default=None, description="Estimated tokens/s.")
    throughput_per_gpu: float | None = Field(default=None, description="tokens/s per GPU used.")
    latency_s: float | None = Field(default=None, description="Un-pipelined step time.")
    headroom: float | None = Field(
        default=None, description="Smallest free share of usable memory over the plan's GPUs."
    )
    gap: float | None = Field(default=None, description="Global gap of the plan.")
    cost_per_mtok: float | None = Field(
        default=None,
        description="Price per million tokens when the hardware has a price per GPU-hour.",
    )
    min_gpus: int | None = Field(
        default=None, description="For infeasible cases: the fewest GPUs of this type that fit."
    )
    solve_time_s: float = Field(default=0.0, description="Wall time of the solve.")
    cached: bool = Field(default=False, description="Taken from the cache.")
    error: str = Field(default="", description="Why the case failed, if it did.")
    key: str = Field(default="", description="Cache key (SHA-256 of the case).")


class SweepResult(Frozen):
    """All rows of a sweep, with conversions and the Pareto frontier."""

    rows: tuple[SweepRow, ...] = Field(description="One row per case.")
    wall_time_s: float = Field(description="Wall time of the whole sweep.")
    backend: str = Field(description="local or ray.")

    def to_dicts(self) -> list[dict[str, Any]]:
        """Rows as plain dicts (for pandas, JSON, ...)."""
        return [r.model_dump() for r in self.rows]

    def to_csv(self) -> str:
        """Rows as CSV text."""
        buf = io.StringIO()
        fields = list(SweepRow.model_fields)
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        for r in self.to_dicts():
            writer.writerow(r)
        return buf.getvalue()

    def frontier(self, cost: bool = False) -> list[SweepRow]:
        """Pareto-optimal rows per workload: no other row of the same workload has at least
        the throughput per GPU (or at most the cost per token) and at most the latency, and
        is better in one of the two. Workloads are not compared with each other."""
        out: list[SweepRow] = []
        for name in dict.fromkeys(r.workload for r in self.rows):
            out.extend(self._frontier([r for r in self.rows if r.workload == name], cost))
        return out

    @staticmethod
    def _frontier(rows: list[SweepRow], cost: bool) -> list[SweepRow]:
        ok = [r for r in rows if r.throughput_per_gpu is not None and r.latency_s]
        if cost:
            ok = [r for r in ok if r.cost_per_mtok is not None]

        def key(r: SweepRow) -> float:
            if cost:
                assert r.cost_per_mtok is not None
                return -r.cost_per_mtok
            assert r.throughput_per_gpu is not None
            return r.throughput_per_gpu

        out = []
        for r in ok:
            assert r.latency_s is not None
            dominated = any(
                o is not r
                and o.latency_s is not None
                and key(o) >= key(r)
                and o.latency_s <= r.latency_s
                and (key(o) > key(r) or o.latency_s < r.latency_s)
                for o in ok
            )
            if not dominated:
                out.append(r)
        return sorted(out, key=lambda r: r.latency_s or 0.0)


@dataclass(frozen=True)
class Case:
    """One solve of a sweep, picklable for process pools and Ray."""

    model: ModelSpec
    cluster: ClusterSpec
    workload: Workload
    workload_name: str
    config: SolveConfig
    calibration: Calibration | None = None  # None: the shipped default

    @property
    def key(self) -> str:
        """SHA-256 of everything that decides the answer (the calibration included, so a
        cache never mixes answers of two cost models)."""
        m = self.model.canonical_dump(exclude={"source"})
        c = self.cluster.model_dump(mode="json", exclude={"source"})
        calibration = self.calibration or default_calibration()
        return digest(
            {
                "model": m,
                "cluster": c,
                "workload": self.workload.canonical_dump(),
                "config": self.config.model_dump(mode="json"),
                "calibration": calibration.digest(),
            }
        )


def run_case(case: Case) -> SweepRow:
    """Solve one case; any placer error becomes the row's reason, never an exception."""
    from placer.search.outer import solve

    base = {
        "model": case.model.name,
        "hardware": case.cluster.name,
        "gpu_type": case.cluster.groups[0].gpu.name,
        "gpus": case.cluster.num_gpus,
        "workload": case.workload_name,
        "profile": case.config.profile,
        "key": case.key,
    }
    start = time.perf_counter()
    try:
        plan = solve(
            case.model, case.cluster, case.workload, case.config, calibration=case.calibration
        )
    except PlacerError as exc:
        return SweepRow(
            status="error", error=str(exc), solve_time_s=time.perf_counter() - start, **base
        )
    wall = time.perf_counter() - start
    if plan.layout is None or plan.estimates is None:
        inf = plan.infeasibility
        return SweepRow(
            status=plan.status,
            solve_time_s=round(wall, 3),
            min_gpus=inf.min_gpus if inf else None,
            error=inf.reason if inf else "no plan within the time limit",
            **base,
        )
    lay, est = plan.layout, plan.estimates
    headroom = min(1 - g.used_bytes / g.capacity_bytes for g in plan.gpus)
    cost = None
    if case.cluster.price_per_gpu_hour is not None and est.throughput_tokens_s > 0:
        cost = (
            case.cluster.price_per_gpu_hour
            * lay.gpus_used
            / (est.throughput_tokens_s * 3600)
            * 1e6
        )
    return SweepRow(
        status=plan.status,
        layout=f"TP{lay.tp} PP{lay.pp} EP{lay.ep} ETP{lay.etp} DP{lay.dp_attn}",
        gpus_used=lay.gpus_used,
        throughput_tokens_s=est.throughput_tokens_s,
        throughput_per_gpu=est.throughput_tokens_s / lay.gpus_used,
        latency_s=est.latency_s,
        headroom=headroom,
        gap=plan.objective.gap,
        cost_per_mtok=cost,
        solve_time_s=round(wall, 3),
        **base,
    )


def make_cases(
    models: Sequence[ModelSpec],
    clusters: Sequence[ClusterSpec],
    workloads: Sequence[tuple[str, Workload]],
    config: SolveConfig,
    gpu_counts: Sequence[int] | None = None,
    profiles: Sequence[str] | None = None,
    calibration: Calibration | None = None,
) -> list[Case]:
    """The product of the inputs, each solved deterministically with one worker."""
    cfg = config.model_copy(update={"deterministic": True, "workers": 1})
    cases = []
    for m in models:
        for c in clusters:
            counts = list(gpu_counts) if gpu_counts else [c.num_gpus]
            for n in counts:
                cl = c if n == c.num_gpus else c.with_gpus(n)
                for wname, w in workloads:
                    for prof in profiles or [cfg.profile]:
                        prof_cfg = cfg.model_copy(update={"profile": prof})
                        cases.append(Case(m, cl, w, wname, prof_cfg, calibration))
    return cases


def _cached(cache: Path | None, key: str) -> SweepRow | None:
    if cache is None:
        return None
    path = cache / f"{key}.json"
    if not path.is_file():
        return None
    try:
        return SweepRow.model_validate(read_json(path)).model_copy(update={"cached": True})
    except (InvalidInputError, ValueError):
        return None  # a damaged cache entry is solved again


def sweep(
    models: Sequence[ModelSpec],
    clusters: Sequence[ClusterSpec],
    workloads: Sequence[tuple[str, Workload]] | Sequence[Workload],
    config: SolveConfig | None = None,
    gpu_counts: Sequence[int] | None = None,
    profiles: Sequence[str] | None = None,
    backend: Backend = "local",
    workers: int | None = None,
    cache_dir: str | Path | None = None,
    ray_address: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    calibration: Calibration | None = None,
) -> SweepResult:
    """Solve every case of the product of the inputs (see module docstring).

    Parameters
    ----------
    workloads
        Workloads, or (name, workload) pairs.
    gpu_counts
        GPU counts to try for every cluster (default: each cluster's own count).
    backend
        ``local`` (a process pool sized to the cores) or ``ray`` (tasks on an existing
        cluster at ``ray_address``, or a local Ray instance).
    cache_dir
        Where finished cases are kept; cases found there are not solved again.
    calibration
        Cost-model calibration every case is solved with (default: the shipped one).
    """
    config = config or SolveConfig(time_limit_s=10)
    named: list[tuple[str, Workload]] = [
        w if isinstance(w, tuple) else (f"workload{i}", w) for i, w in enumerate(workloads)
    ]
    if not models or not clusters or not named:
        raise InvalidInputError("the grid is empty (no model, hardware or workload)", field="grid")
    cases = make_cases(models, clusters, named, config, gpu_counts, profiles, calibration)
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows, todo, first = _from_cache(cases, cache)
    done = len(rows)

    def finish(i: int, row: SweepRow) -> None:
        nonlocal done
        rows[i] = row
        if cache is not None and row.status != "error":
            write_atomic(cache / f"{row.key}.json", row.model_dump_json())
        done += 1
        if progress is not None:
            progress(done, len(cases))

    if backend == "ray":
        _run_ray(todo, finish, ray_address)
    elif backend == "local":
        _run_local(todo, finish, workers)
    else:
        raise InvalidInputError(
            f"unknown backend {backend!r}; choose local or ray", field="--backend"
        )
    for i, case in enumerate(cases):
        if i not in rows:
            rows[i] = rows[first[case.key]]
    return SweepResult(
        rows=tuple(rows[i] for i in range(len(cases))),
        wall_time_s=round(time.perf_counter() - start, 3),
        backend=backend,
    )


def _from_cache(
    cases: Sequence[Case], cache: Path | None
) -> tuple[dict[int, SweepRow], list[tuple[int, Case]], dict[str, int]]:
    """Rows found in the cache, the cases still to solve (each key once), and the first case
    of each key (duplicates copy its row)."""
    rows: dict[int, SweepRow] = {}
    todo: list[tuple[int, Case]] = []
    first: dict[str, int] = {}
    for i, case in enumerate(cases):
        hit = _cached(cache, case.key)
        if hit is not None:
            rows[i] = hit
        elif case.key in first:
            continue  # solved once, copied afterwards
        else:
            first[case.key] = i
            todo.append((i, case))
    return rows, todo, first


def _run_local(
    todo: Sequence[tuple[int, Case]], finish: Callable[[int, SweepRow], None], workers: int | None
) -> None:
    """Solve the cases in a process pool sized to the cores (in this process for one)."""
    n = min(workers or os.cpu_count() or 1, len(todo), MAX_PROCESSES)
    if n == 1 or len(todo) <= 1:
        for i, case in todo:
            finish(i, run_case(case))
        return
    with ProcessPoolExecutor(max_workers=n) as pool:
        for (i, _), row in zip(todo, pool.map(run_case, [c for _, c in todo]), strict=True):
            finish(i, row)


def _run_ray(
    todo: Iterable[tuple[int, Case]], finish: Callable[[int, SweepRow], None], address: str | None
) -> None:
    try:
        import ray
    except ImportError:
        raise InvalidInputError(
            "the ray backend needs the 'ray' extra: pip install 'placer[ray]'", field="--backend"
        ) from None
    started = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        remote = ray.remote(run_case)
        pending = {remote.remote(case): i for i, case in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                finish(pending.pop(ref), ray.get(ref))
    finally:
        if started:
            ray.shutdown()
