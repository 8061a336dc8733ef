"""`placer balance`: maps in the engines' conventions, bounds and gaps, never worse than EPLB."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from placer.balance.loads import LoadStats, load_loads
from placer.balance.synthetic import synthetic_loads
from placer.balance.whole_model import balance
from placer.budget import Budget
from placer.exceptions import InvalidInputError

from .conftest import ROOT
from .helpers import run_cli

LOADS = ROOT / "instances" / "loads"


def _fixed_effort() -> dict:  # type: ignore[type-arg]
    """Deterministic CP-SAT effort per layer under a hard stop that measures nothing: the
    same answer on an idle and on a busy machine."""
    return {"budget": Budget(600.0, deterministic=True), "layer_seconds": 0.3}


def _check_maps(res, experts: int) -> None:  # type: ignore[no-untyped-def]
    """The three maps agree, every expert is placed, no GPU holds two copies of one."""
    per = res.slots // res.gpus
    for layer, row in enumerate(res.physical_to_logical_map):
        row = np.array(row)
        assert row.size == res.slots
        counts = np.bincount(row, minlength=experts)
        assert np.all(counts >= 1)
        assert list(counts) == list(res.logical_replica_count[layer])
        for e, slots in enumerate(res.logical_to_physical_map[layer]):
            real = [s for s in slots if s >= 0]
            assert sorted(real) == sorted(np.flatnonzero(row == e).tolist())
        for g in range(res.gpus):
            gpu = row[g * per:(g + 1) * per]
            assert len(set(gpu.tolist())) == per


def test_mixtral_layers_are_proven_optimal() -> None:
    """Real Mixtral loads, 8 GPUs, 16 slots: every layer proven, and no worse than EPLB."""
    loads = load_loads(LOADS / "mixtral-c4.json")
    res = balance(loads, 8, slots=16, workers=1, **_fixed_effort())
    assert all(q.proven and q.gap == 0 for q in res.layers)
    assert all(q.imbalance <= q.eplb_imbalance + 1e-12 for q in res.layers)  # type: ignore[operator]
    _check_maps(res, 8)


def test_global_policy_gap_and_eplb() -> None:
    """DeepSeek-like layers: a gap to the bound below 0.1 %, never worse than EPLB."""
    full = load_loads(LOADS / "deepseek-v3-synthetic.json")
    loads = full.model_copy(update={"layers": full.layers[:6], "load": full.load[:6]})
    res = balance(loads, 32, nodes=4, slots=288, workers=1, **_fixed_effort())
    gaps = np.array([q.gap for q in res.layers])
    assert gaps.mean() < 1e-3
    for q in res.layers:
        assert q.bound <= q.imbalance
        assert q.imbalance <= q.eplb_imbalance + 1e-12  # type: ignore[operator]
    _check_maps(res, 256)


def test_node_policy_keeps_groups_on_nodes() -> None:
    """With --policy node every group's replicas live on one node."""
    full = load_loads(LOADS / "deepseek-v3-synthetic.json")
    loads = full.model_copy(update={"layers": full.layers[:3], "load": full.load[:3]})
    res = balance(
        loads, 32, nodes=4, slots=288, groups=8, policy="node", workers=1, **_fixed_effort()
    )
    per_node = res.slots // 4
    for row in res.physical_to_logical_map:
        node_of_group: dict[int, set[int]] = {}
        for p, e in enumerate(row):
            node_of_group.setdefault(e // 32, set()).add(p // per_node)
        assert all(len(nodes) == 1 for nodes in node_of_group.values())
    assert all(q.cross_node_share == 0 for q in res.layers)
    assert all(q.bound <= q.imbalance + 1e-12 for q in res.layers)


def test_balanced_is_never_worse_than_unbalanced() -> None:
    """On skewed synthetic loads balancing beats the trivial map."""
    loads = synthetic_loads(4, 64, 8, 4096, (0.8, 1.2), seed=3)
    res = balance(loads, 8, slots=72, workers=1, **_fixed_effort())
    for q in res.layers:
        assert q.imbalance <= q.unbalanced_imbalance + 1e-12
        assert q.bound <= q.imbalance


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"gpus": 8, "slots": 20}, "--slots"),
        ({"gpus": 8, "slots": 4}, "--slots"),
        ({"gpus": 8, "slots": 64, "groups": 7}, "--groups"),
        ({"gpus": 8, "slots": 64, "nodes": 3}, "--nodes"),
        ({"gpus": 8, "slots": 64, "policy": "node", "nodes": 2}, "--groups"),
    ],
)
def test_bad_settings(kwargs: dict, field: str) -> None:
    """Slots not dividing the GPUs, too few slots, bad groups or nodes: named errors."""
    loads = LoadStats(name="t", layers=(0,), load=(tuple(float(x) for x in range(1, 65)),))
    with pytest.raises(InvalidInputError) as err:
        balance(loads, **kwargs)
    assert err.value.field == field


def test_cli_writes_sglang_map(tmp_path: Path) -> None:
    """The CLI writes physical_to_logical_map with slot p on GPU p // (S/P), atomically."""
    out = tmp_path / "map.json"
    res = run_cli("balance", str(LOADS / "olmoe-arxiv.json"), "--gpus", "8", "--slots", "72",
                  "--deterministic", "--time-limit", "0.5", "-o", str(out))
    assert res.exit_code == 0, res.stderr
    doc = json.loads(out.read_text())
    assert len(doc["physical_to_logical_map"]) == 3
    assert all(len(r) == 72 for r in doc["physical_to_logical_map"])
    assert "logical_to_physical_map" in doc and "logical_replica_count" in doc
    assert "imbalance" in res.stdout and "EPLB" in res.stdout


def test_cli_bad_slots_exit_2(tmp_path: Path) -> None:
    """Slots that do not divide the GPUs exit 2 naming --slots; nothing is written."""
    out = tmp_path / "map.json"
    res = run_cli("balance", str(LOADS / "olmoe-arxiv.json"), "--gpus", "8", "--slots", "70",
                  "-o", str(out))
    assert res.exit_code == 2 and "--slots" in res.stderr
    assert not out.exists()


def test_solve_with_loads_is_verified(tmp_path: Path) -> None:
    """solve --loads places experts by load, keeps memory, and verify checks the loads' hash."""
    out = tmp_path / "plan.json"
    res = run_cli("solve", str(ROOT / "models" / "olmoe-1b-7b-0924.json"),
                  str(ROOT / "instances" / "hardware" / "dgx-h100.json"), "--loads",
                  str(LOADS / "olmoe-arxiv.json"), "--quiet", "-o", str(out))
    assert res.exit_code == 0, res.stderr
    plan = json.loads(out.read_text())
    assert set(plan["inputs"]["loads"]) == {"0", "7", "15"}
    assert run_cli("verify", str(out)).exit_code == 0
    plan["inputs"]["loads"]["0"][0] += 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(plan))
    res = run_cli("verify", str(bad))
    assert res.exit_code == 5 and "input hash differs: loads" in res.stdout


def test_solve_with_mismatched_loads_is_bad_input() -> None:
    """Loads with the wrong expert count name the load file and field: exit 2."""
    path = str(LOADS / "mixtral-c4.json")
    res = run_cli("solve", str(ROOT / "models" / "olmoe-1b-7b-0924.json"),
                  str(ROOT / "instances" / "hardware" / "dgx-h100.json"), "--loads", path)
    assert res.exit_code == 2
    assert path in res.stderr and "load.0" in res.stderr
