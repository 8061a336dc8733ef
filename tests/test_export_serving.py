"""Exports of serving plans: k identical instances on disjoint GPUs and ports with the
engine's router, disaggregated prefill/decode instances with the engine's transfer flags,
and refusals (exit 2 with the reason). Every flag and variable written is a recorded fact."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from placer import load_cluster, load_model, load_workload, verify
from placer.config import SolveConfig
from placer.engine_facts import release
from placer.export import Export, ExportError, export_plan
from placer.export.serving import pack
from placer.plan import Plan
from placer.search.outer import solve
from tests.conftest import HARDWARE, MODELS
from tests.helpers import run_cli

OLMOE = MODELS / "olmoe-1b-7b-0924.json"
A100 = HARDWARE / "dgx-a100-40gb.json"
#: CUDA's own variable (docs/engine-rules.md, "Serving plans"), not an engine fact.
CUDA_ENV = "CUDA_VISIBLE_DEVICES"


def _solve(gpus: int, config: SolveConfig, tpot: float = 30.0) -> Plan:
    model, cluster = load_model(OLMOE), load_cluster(A100, gpus=gpus)
    workload = load_workload(None, prompt_len=4000, output_len=1000, tpot_ms=tpot, ttft_ms=2000.0)
    plan = Plan.model_validate_json(solve(model, cluster, workload, config).model_dump_json())
    report = verify(plan)
    assert report.ok, report.violations
    return plan


@pytest.fixture(scope="module")
def replicated() -> Plan:
    """OLMoE on 8 x A100-40GB, SGLang rules: two instances of four GPUs."""
    plan = _solve(8, SolveConfig(profile="sglang"))
    assert plan.serving is not None and plan.serving.instances == 2
    return plan


@pytest.fixture(scope="module")
def disaggregated() -> Plan:
    """OLMoE on 8 x A100-40GB, TPOT 20 ms: one prefill and one 7-GPU decode instance beat
    the aggregated plan (deployed)."""
    plan = _solve(8, SolveConfig(disagg=True), tpot=20.0)
    assert plan.serving is not None and plan.serving.disagg is not None
    assert plan.serving.disagg.deployed
    return plan


def _commands(exp: Export) -> list[tuple[str, list[str]]]:
    """(header, tokens) of every command block of an export."""
    out = []
    for block in exp.command.split("\n\n"):
        header, _, body = block.partition("\n")
        out.append((header, shlex.split(body.replace("\\\n", " "))))
    return out


def _assert_known(exp: Export, engine: str) -> None:
    """Every flag and leading variable is in the release's facts (or the router's)."""
    rel = release(engine, None)
    assert rel.serving is not None
    router = rel.serving.router.flags if rel.serving.router else {}
    envs = {*rel.env, rel.serving.side_channel_env, CUDA_ENV}
    for header, tokens in _commands(exp):
        known = router if header == "# router" else rel.flags
        for tok in tokens:
            if tok.startswith("--"):
                assert tok in known, f"{tok} is not a recorded {engine} fact"
        for tok in tokens:
            if not re.fullmatch(r"[A-Z_]+=\S*", tok):
                break
            assert tok.split("=")[0] in envs
    for name in exp.env:
        assert name in rel.env


def _gpu_sets(exp: Export) -> list[tuple[int, tuple[int, ...], int]]:
    """(node, GPUs, port) of every instance block."""
    out = []
    for header, tokens in _commands(exp):
        m = re.match(r"# \w+ \d+ \(node (\d+), GPUs ([\d,]+), port (\d+)\)", header)
        if m:
            gpus = tuple(int(g) for g in m.group(2).split(","))
            assert tokens[0] == f"{CUDA_ENV}={m.group(2)}"
            assert tokens[tokens.index("--port") + 1] == m.group(3)
            out.append((int(m.group(1)), gpus, int(m.group(3))))
    return out


def _disjoint(sets: list[tuple[int, tuple[int, ...], int]]) -> None:
    used = [(node, g) for node, gpus, _ in sets for g in gpus]
    assert len(used) == len(set(used))
    ports = [port for *_, port in sets]
    assert len(ports) == len(set(ports))


def test_replicated_sglang_has_k_servers_and_a_router(replicated: Plan) -> None:
    """k SGLang servers on disjoint GPUs and ports, and one router line over all of them."""
    exp = export_plan(replicated, "sglang")
    sets = _gpu_sets(exp)
    assert replicated.serving is not None
    assert len(sets) == replicated.serving.instances
    assert all(len(g) == replicated.serving.gpus_per_instance for _, g, _ in sets)
    _disjoint(sets)
    router = [t for h, t in _commands(exp) if h == "# router"]
    assert len(router) == 1
    for _, _, port in sets:
        assert f"http://<head-node-ip>:{port}" in router[0]
    _assert_known(exp, "sglang")


def test_replicated_vllm_has_k_servers_and_says_there_is_no_router(replicated: Plan) -> None:
    """vLLM: k servers, no router line, a note saying a load balancer is needed."""
    exp = export_plan(replicated, "vllm")
    sets = _gpu_sets(exp)
    assert replicated.serving is not None and len(sets) == replicated.serving.instances
    _disjoint(sets)
    assert all(h != "# router" for h, _ in _commands(exp))
    assert any("load balancer" in n for n in exp.notes)
    _assert_known(exp, "vllm")


def test_disaggregated_vllm_has_prefill_and_decode_servers(disaggregated: Plan) -> None:
    """vLLM: x producers and y consumers of the NIXL connector, distinct side channels."""
    d = disaggregated.serving.disagg  # type: ignore[union-attr]
    assert d is not None
    exp = export_plan(disaggregated, "vllm")
    sets = _gpu_sets(exp)
    assert len(sets) == d.prefill_instances + d.decode_instances
    _disjoint(sets)
    blocks = _commands(exp)
    roles = [t[t.index("--kv-transfer-config") + 1] for _, t in blocks]
    assert sum('"kv_producer"' in r for r in roles) == d.prefill_instances
    assert sum('"kv_consumer"' in r for r in roles) == d.decode_instances
    channels = [t[1] for _, t in blocks]
    assert len(set(channels)) == len(channels)
    _assert_known(exp, "vllm")


def test_disaggregated_trtllm_exits_2_naming_the_reason(
    disaggregated: Plan, tmp_path: Path
) -> None:
    """TensorRT-LLM disaggregated serving is not in placer's facts: exit 2, reason named."""
    with pytest.raises(ExportError, match="disaggregated"):
        export_plan(disaggregated, "trtllm")
    path = tmp_path / "plan.json"
    path.write_text(disaggregated.model_dump_json())
    res = run_cli("export", str(path), "--engine", "trtllm")
    assert res.exit_code == 2 and "serving.disagg" in res.stderr


def test_disaggregated_sglang_refuses_ep_that_does_not_divide_the_experts(
    disaggregated: Plan,
) -> None:
    """The decode instance's EP 7 does not divide OLMoE's 64 experts: SGLang exits 2."""
    with pytest.raises(ExportError, match="% ep"):
        export_plan(disaggregated, "sglang")


@pytest.mark.parametrize(
    ("sizes", "gpus", "per_node", "fits"),
    [
        ([7, 1, 1, 1, 1, 1], 12, 8, True),
        ([3, 3, 3, 3], 12, 8, False),
        ([16, 16, 8], 40, 8, True),
        ([12], 16, 8, False),
        ([2] * 8, 16, 8, True),
    ],
)
def test_pack_keeps_instances_inside_nodes(sizes, gpus, per_node, fits) -> None:
    """Every instance lands inside one node, or on whole nodes; disjoint GPUs; or None."""
    placed = pack(sizes, gpus, per_node)
    assert (placed is not None) == fits
    if placed is None:
        return
    flat = [g for ids in placed for g in ids]
    assert len(flat) == len(set(flat)) and max(flat) < gpus
    for size, ids in zip(sizes, placed, strict=True):
        assert len(ids) == size
        nodes = {g // per_node for g in ids}
        assert len(nodes) == 1 or (size % per_node == 0 and len(nodes) == size // per_node)


def test_disaggregated_sglang_has_modes_bootstrap_ports_and_a_pd_router(tmp_path: Path) -> None:
    """Qwen3-30B-A3B on 8 x H200, SGLang rules, TPOT 30 ms: the deployed split exports as
    prefill and decode servers with distinct bootstrap ports and one router in PD mode."""
    model = load_model(MODELS / "qwen3-30b-a3b.json")
    cluster = load_cluster(HARDWARE / "dgx-h200.json", gpus=8)
    workload = load_workload(None, prompt_len=4000, output_len=1000, tpot_ms=30.0, ttft_ms=2000.0)
    plan = solve(model, cluster, workload, SolveConfig(disagg=True, profile="sglang"))
    assert verify(plan).ok
    d = plan.serving.disagg  # type: ignore[union-attr]
    assert d is not None and d.deployed
    exp = export_plan(plan, "sglang")
    blocks = _commands(exp)
    modes = [t[t.index("--disaggregation-mode") + 1] for h, t in blocks if h != "# router"]
    assert modes.count("prefill") == d.prefill_instances
    assert modes.count("decode") == d.decode_instances
    boots = [
        t[t.index("--disaggregation-bootstrap-port") + 1] for h, t in blocks if "prefill" in h
    ]
    assert len(set(boots)) == d.prefill_instances
    _disjoint(_gpu_sets(exp))
    router = next(t for h, t in blocks if h == "# router")
    assert "--pd-disaggregation" in router
    assert router.count("--prefill") == d.prefill_instances
    assert router.count("--decode") == d.decode_instances
    _assert_known(exp, "sglang")
