"""Shared fixtures: the bundled models, hardware and workloads, loaded once per session."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from placer import ClusterSpec, ModelSpec, Workload, load_cluster, load_model, load_workload

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
HARDWARE = ROOT / "instances" / "hardware"
WORKLOADS = ROOT / "instances" / "workloads"
#: Tiny named instances: a folder each with model.json, hardware.json and workload.json.
INSTANCES = ROOT / "tests" / "data" / "instances"
#: The invalid twins of ``tiny-moe-roomy``: one file broken in each, and the field named.
INVALID_INSTANCES = {
    "tiny-moe-bad-top-k": ("model.json", "moe"),
    "tiny-moe-bad-domain": ("hardware.json", "scale_up_domain"),
    "tiny-moe-bad-batch": ("workload.json", "batch"),
}


@dataclass(frozen=True)
class Instance:
    """A named instance loaded from ``tests/data/instances/NAME/``."""

    name: str
    folder: Path
    model: ModelSpec
    cluster: ClusterSpec
    workload: Workload

    def paths(self) -> tuple[str, str, str]:
        """The model, hardware and workload files, as CLI arguments."""
        f = self.folder
        return str(f / "model.json"), str(f / "hardware.json"), str(f / "workload.json")


def load_instance(name: str) -> Instance:
    """Load the valid instance ``name`` (its files must all load)."""
    folder = INSTANCES / name
    return Instance(
        name=name,
        folder=folder,
        model=load_model(folder / "model.json"),
        cluster=load_cluster(folder / "hardware.json"),
        workload=load_workload(folder / "workload.json"),
    )


def _facts_dir() -> Path | None:
    """The shared facts collection beside the project, when present (it is in CI)."""
    for cand in (ROOT.parent / "shared" / "facts", ROOT / ".." / "shared" / "facts"):
        if (cand / "models.json").is_file():
            return cand
    return None


FACTS = _facts_dir()


@pytest.fixture(scope="session")
def seed_model():
    """The seed's 8x4 toy model (module list)."""
    return load_model(MODELS / "seed-moe-8x4.json")


@pytest.fixture(scope="session")
def seed_cluster():
    """16 x 32 GB GPUs on one NVSwitch domain."""
    return load_cluster(HARDWARE / "seed-16x32gb.json")


@pytest.fixture(scope="session")
def seed_workload():
    """Batch 8 at 32k tokens of context."""
    return load_workload(WORKLOADS / "seed.json")


@pytest.fixture(scope="session")
def tiny_moe_roomy() -> Instance:
    """A 2-layer, 4-expert model on two GPUs with room to spare: solves, optimal."""
    return load_instance("tiny-moe-roomy")


@pytest.fixture(scope="session")
def tiny_moe_cramped() -> Instance:
    """Its infeasible twin: the same model and workload on one GPU too small to hold it."""
    return load_instance("tiny-moe-cramped")


@pytest.fixture(scope="session")
def published() -> dict[str, dict]:
    """Published parameter counts per model id (copied into tests/data with their sources)."""
    return json.loads((ROOT / "tests" / "data" / "published_params.json").read_text())
