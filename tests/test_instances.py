"""The tiny named instances of tests/data/instances: a valid one, its infeasible twin and its
invalid twins, through the library API and the command line. Every plan is re-checked by the
independent verifier."""

from __future__ import annotations

import pytest

import placer
from placer import Plan, SolveConfig
from tests.conftest import INSTANCES, INVALID_INSTANCES, Instance, load_instance
from tests.helpers import run_cli

#: Tiny instances solve in well under a second; the limit only guards against a hang.
CONFIG = SolveConfig(time_limit_s=30, deterministic=True)


def _verified(plan: Plan, inst: Instance) -> None:
    report = placer.verify(
        plan, {"model": inst.model, "cluster": inst.cluster, "workload": inst.workload}
    )
    assert report.ok, report.violations


def test_roomy_instance_is_solved_to_optimality(tiny_moe_roomy: Instance) -> None:
    """Optimal means a zero gap: the value equals the proven bound, and verify agrees."""
    inst = tiny_moe_roomy
    plan = placer.solve(inst.model, inst.cluster, inst.workload, CONFIG)
    assert plan.status == "optimal"
    assert plan.objective.gap == 0
    assert plan.objective.value_units == plan.objective.bound_units
    assert plan.layout is not None and plan.layout.gpus_used <= inst.cluster.num_gpus
    _verified(plan, inst)


def test_cramped_twin_is_proven_infeasible(tiny_moe_cramped: Instance) -> None:
    """Every legal layout is proven not to fit, and the record explains why."""
    inst = tiny_moe_cramped
    plan = placer.solve(inst.model, inst.cluster, inst.workload, CONFIG)
    assert plan.status == "infeasible"
    assert plan.layout is None
    search = plan.certificate.search
    assert search.legal >= 1 and search.infeasible == search.legal
    assert plan.infeasibility is not None and plan.infeasibility.fixes
    _verified(plan, inst)


def test_fewest_gpus_of_cramped_twin_comes_with_its_proof(tiny_moe_cramped: Instance) -> None:
    """The minimum is claimed with a verified plan on it and a verified proof on one fewer;
    the plain solve above proves one GPU infeasible, so the minimum is at least two."""
    inst = tiny_moe_cramped
    found = placer.min_gpus(inst.model, inst.cluster, inst.workload, CONFIG)
    assert found.proven and found.min_gpus == found.gpus
    assert found.plan.status in ("optimal", "feasible")
    assert found.plan.layout is not None and found.plan.layout.gpus_used <= found.gpus
    assert found.below is not None and found.below.status == "infeasible"
    assert found.gpus >= 2
    bigger = Instance(
        inst.name, inst.folder, inst.model, inst.cluster.with_gpus(found.gpus), inst.workload
    )
    smaller = Instance(
        inst.name, inst.folder, inst.model, inst.cluster.with_gpus(found.gpus - 1), inst.workload
    )
    _verified(found.plan, bigger)
    _verified(found.below, smaller)


def test_cli_min_gpus_on_cramped_twin_exits_0(tiny_moe_cramped: Instance) -> None:
    """`placer min-gpus` claims the proven minimum and exits 0."""
    model, hardware, workload = tiny_moe_cramped.paths()
    result = run_cli("min-gpus", model, hardware, "--workload", workload, "--time-limit", "30")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("fewest GPUs")


@pytest.mark.parametrize("name", sorted(INVALID_INSTANCES))
def test_invalid_twins_exit_2_naming_file_and_field(name: str) -> None:
    """Each invalid twin breaks one file: solve exits 2 with one line naming it and the field."""
    broken, field = INVALID_INSTANCES[name]
    folder = INSTANCES / name
    result = run_cli(
        "solve",
        str(folder / "model.json"),
        str(folder / "hardware.json"),
        "--workload",
        str(folder / "workload.json"),
        "--quiet",
    )
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("placer: error: "), result.stderr
    assert f"{folder / broken}: field '{field}'" in lines[0]


def test_every_instance_folder_is_a_valid_or_an_invalid_twin() -> None:
    """No instance is left untested: the folders are the two valid ones and the invalid twins."""
    names = {p.name for p in INSTANCES.iterdir() if p.is_dir()}
    assert names == {"tiny-moe-roomy", "tiny-moe-cramped", *INVALID_INSTANCES}
    for name in ("tiny-moe-roomy", "tiny-moe-cramped"):
        assert load_instance(name).model.name == "tiny-moe"
