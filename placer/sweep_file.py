"""The sweep file (YAML or JSON): the grid of models, hardware, GPU counts, workloads and
profiles that ``placer sweep`` solves, with every file it names loaded and checked. Errors
name the sweep file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from placer._base import Frozen, Int, NonNegInt, PosFloat, PosInt
from placer.cluster import MAX_GPUS, ClusterSpec
from placer.exceptions import InvalidInputError
from placer.io import one_line, read_json
from placer.limits import MAX_SEED, MAX_SWEEP_CASES, MAX_TIME_LIMIT_S
from placer.model import ModelSpec
from placer.workload import Workload


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
    from placer.load import load_cluster, load_model
    from placer.rules import PROFILES

    spec = validate(SweepSpec, _read_spec(path), path)
    base = Path(path).parent
    for prof in spec.profiles:
        if prof not in PROFILES:
            raise InvalidInputError(
                f"unknown rules profile '{prof}'", source=path, field="profiles"
            )
    models = [
        load_model(_existing(m, base, "model", path, f"models.{i}"))
        for i, m in enumerate(spec.models)
    ]
    clusters = [
        load_cluster(_existing(h, base, "hardware", path, f"hardware.{i}"))
        for i, h in enumerate(spec.hardware)
    ]
    workloads = _workloads(spec, base, path)
    counts = _gpu_counts(spec, path)
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


def _read_spec(path: str) -> Any:
    """The sweep file's data, YAML or JSON by its suffix."""
    p = Path(path)
    if p.suffix not in (".yaml", ".yml"):
        return read_json(path)
    import yaml

    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInputError("file not found", source=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(one_line(f"cannot read: {exc}"), source=path) from None
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"not valid YAML: {exc}".splitlines()[0], source=path) from None


def _workloads(spec: SweepSpec, base: Path, path: str) -> list[tuple[str, Workload]]:
    """Each workload of the sweep, named: a file by its stem, an inline one by its 'name'."""
    from placer.load import load_workload

    workloads: list[tuple[str, Workload]] = []
    for i, w in enumerate(spec.workloads):
        if isinstance(w, str):
            f = _existing(w, base, "workload", path, f"workloads.{i}")
            workloads.append((f.stem, load_workload(f)))
            continue
        body = {k: v for k, v in w.items() if k != "name"}
        try:
            workloads.append((str(w.get("name", f"workload{i}")), load_workload(None, **body)))
        except InvalidInputError as exc:
            raise InvalidInputError(
                exc.detail, source=path, field=f"workloads.{i}.{exc.field}"
            ) from None
    return workloads


def _gpu_counts(spec: SweepSpec, path: str) -> list[int] | None:
    """The GPU counts of 'gpus' (a list, or {from, to, step}); None: each file's own count."""
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
        return list(range(lo, hi + 1, step))
    if spec.gpus is None:
        return None
    if not spec.gpus:
        raise InvalidInputError("the grid is empty", source=path, field="gpus")
    for i, n in enumerate(spec.gpus):
        if n <= 0:
            raise InvalidInputError(f"must be positive, got {n}", source=path, field=f"gpus.{i}")
    return list(spec.gpus)
