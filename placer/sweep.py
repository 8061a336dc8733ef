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
from typing import Annotated, Any, Literal

from pydantic import Field

from placer._base import Frozen, Int, NonNegInt, PosFloat, PosInt
from placer.calibration import Calibration, default_calibration
from placer.cluster import MAX_GPUS, ClusterSpec
from placer.config import SolveConfig
from placer.exceptions import InvalidInputError, PlacerError
from placer.io import one_line, read_json, write_atomic
from placer.limits import MAX_PROCESSES, MAX_SEED, MAX_SWEEP_CASES, MAX_TIME_LIMIT_S
from placer.model import ModelSpec
from placer.plan import digest
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
        m = self.model.model_dump(mode="json", exclude={"source"})
        c = self.cluster.model_dump(mode="json", exclude={"source"})
        calibration = self.calibration or default_calibration()
        return digest(
            {
                "model": m,
                "cluster": c,
                "workload": self.workload.model_dump(mode="json"),
                "config": self.config.model_dump(mode="json"),
                "calibration": calibration.digest(),
            }
        )


def run_case(case: Case) -> SweepRow:
    """Solve one case; any placer error becomes the row's reason, never an exception."""
    from placer.search.solve import solve

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
    rows: dict[int, SweepRow] = {}
    todo: list[tuple[int, Case]] = []
    seen: dict[str, int] = {}
    for i, case in enumerate(cases):
        hit = _cached(cache, case.key)
        if hit is not None:
            rows[i] = hit
        elif case.key in seen:
            continue  # solved once, copied below
        else:
            seen[case.key] = i
            todo.append((i, case))
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
        n = min(workers or os.cpu_count() or 1, len(todo), MAX_PROCESSES)
        if n == 1 or len(todo) <= 1:
            for i, case in todo:
                finish(i, run_case(case))
        else:
            with ProcessPoolExecutor(max_workers=n) as pool:
                for (i, _), row in zip(
                    todo, pool.map(run_case, [c for _, c in todo]), strict=True
                ):
                    finish(i, row)
    else:
        raise InvalidInputError(
            f"unknown backend {backend!r}; choose local or ray", field="--backend"
        )
    for i, case in enumerate(cases):
        if i not in rows:
            rows[i] = rows[seen[case.key]]
    return SweepResult(
        rows=tuple(rows[i] for i in range(len(cases))),
        wall_time_s=round(time.perf_counter() - start, 3),
        backend=backend,
    )


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


class SweepSpec(Frozen):
    """A sweep file (YAML or JSON): the grid and the solver settings."""

    name: str = Field(default="sweep", description="Name of the sweep.")
    models: tuple[str, ...] = Field(min_length=1, description="Model files.")
    hardware: tuple[str, ...] = Field(min_length=1, description="Hardware files.")
    gpus: tuple[Annotated[PosInt, Field(le=MAX_GPUS)], ...] | dict[str, Int] | None = Field(
        default=None,
        description="GPU counts: a list, or {from, to, step}; default each file's own count.",
    )
    workloads: tuple[str | dict[str, Any], ...] = Field(
        default=({},), description="Workload files or inline workloads (with a 'name')."
    )
    profiles: tuple[str, ...] = Field(default=("generic",), description="Rules profiles.")
    objective: Literal["throughput", "latency", "gpus"] = Field(
        default="throughput", description="Objective."
    )
    time_limit: PosFloat = Field(
        default=10.0, le=MAX_TIME_LIMIT_S, description="Seconds per case."
    )
    seed: NonNegInt = Field(default=0, le=MAX_SEED, description="CP-SAT seed.")


def _resolve(path: str, base: Path) -> Path:
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return base / p


def _existing(path: str, base: Path, what: str, spec: str, field: str) -> Path:
    """The file a sweep names, resolved; an error naming the sweep file and field if absent."""
    f = _resolve(path, base)
    if not f.is_file():
        raise InvalidInputError(f"{what} file {path!r} not found", source=spec, field=field)
    return f


def load_sweep(
    path: str,
) -> tuple[
    SweepSpec, list[ModelSpec], list[ClusterSpec], list[tuple[str, Workload]], list[int] | None
]:
    """Read a sweep file and everything it names; errors name the file and the field."""
    from placer.io import validate
    from placer.load import load_cluster, load_model, load_workload

    p = Path(path)
    if p.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InvalidInputError("file not found", source=path) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(one_line(f"cannot read: {exc}"), source=path) from None
        except yaml.YAMLError as exc:
            raise InvalidInputError(
                f"not valid YAML: {exc}".splitlines()[0], source=path
            ) from None
    else:
        data = read_json(path)
    spec = validate(SweepSpec, data, path)
    base = p.parent
    for prof in spec.profiles:
        from placer.rules import PROFILES

        if prof not in PROFILES:
            raise InvalidInputError(
                f"unknown rules profile '{prof}'", source=path, field="profiles"
            )
    models, clusters = [], []
    for i, m in enumerate(spec.models):
        models.append(load_model(_existing(m, base, "model", path, f"models.{i}")))
    for i, h in enumerate(spec.hardware):
        clusters.append(load_cluster(_existing(h, base, "hardware", path, f"hardware.{i}")))
    workloads: list[tuple[str, Workload]] = []
    for i, w in enumerate(spec.workloads):
        if isinstance(w, str):
            f = _existing(w, base, "workload", path, f"workloads.{i}")
            workloads.append((f.stem, load_workload(f)))
        else:
            body = {k: v for k, v in w.items() if k != "name"}
            try:
                workloads.append((str(w.get("name", f"workload{i}")), load_workload(None, **body)))
            except InvalidInputError as exc:
                raise InvalidInputError(
                    exc.detail, source=path, field=f"workloads.{i}.{exc.field}"
                ) from None
    counts: list[int] | None = None
    if isinstance(spec.gpus, dict):
        keys = set(spec.gpus)
        if not {"from", "to"} <= keys or keys - {"from", "to", "step"}:
            raise InvalidInputError("a GPU range is {from, to, step}", source=path, field="gpus")
        lo, hi, step = spec.gpus["from"], spec.gpus["to"], spec.gpus.get("step", 1)
        if lo <= 0 or hi < lo or step <= 0 or hi > MAX_GPUS:
            raise InvalidInputError(
                f"bad range from {lo} to {hi} step {step} (GPU counts are 1 to {MAX_GPUS})",
                source=path,
                field="gpus",
            )
        counts = list(range(lo, hi + 1, step))
    elif spec.gpus is not None:
        if not spec.gpus:
            raise InvalidInputError("the grid is empty", source=path, field="gpus")
        for i, n in enumerate(spec.gpus):
            if n <= 0:
                raise InvalidInputError(
                    f"must be positive, got {n}", source=path, field=f"gpus.{i}"
                )
        counts = list(spec.gpus)
    if counts is not None:
        for i, cluster in enumerate(clusters):
            if len(cluster.groups) != 1:
                raise InvalidInputError(
                    "a cluster of several GPU types cannot be resized by 'gpus'; give each "
                    "size as its own hardware file, or drop 'gpus'",
                    source=path,
                    field=f"hardware.{i}",
                )
    cases = len(models) * len(clusters) * len(workloads) * len(spec.profiles) * len(counts or [1])
    if cases > MAX_SWEEP_CASES:
        raise InvalidInputError(
            f"the grid has {cases} cases, more than the {MAX_SWEEP_CASES} a sweep runs; split it",
            source=path,
            field="gpus" if counts else "models",
        )
    return spec, models, clusters, workloads, counts
