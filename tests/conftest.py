"""Shared fixtures: the bundled models, hardware and workloads, loaded once per session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from placer import load_cluster, load_model, load_workload

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
HARDWARE = ROOT / "instances" / "hardware"
WORKLOADS = ROOT / "instances" / "workloads"


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
def published() -> dict[str, dict]:
    """Published parameter counts per model id (copied into tests/data with their sources)."""
    return json.loads((ROOT / "tests" / "data" / "published_params.json").read_text())
