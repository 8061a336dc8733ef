"""Engine launch commands from plans: golden files, and plans an engine cannot express.

The golden plans live in ``tests/data/golden/<case>.plan.json`` (search entries
stripped), so the expected output does not move when the solver changes. Set
``PLACER_UPDATE_GOLDEN=1`` to re-solve the plans and rewrite every golden file
(run this file alone, without ``-n``); review the diff before committing it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from placer import SolveConfig, load_cluster
from placer.cluster import ClusterSpec
from placer.engine_facts import launch_violation, release, sglang_rank_ranges
from placer.evaluate import evaluate
from placer.exceptions import InvalidInputError
from placer.export import (
    ENGINES,
    Export,
    ExportError,
    export_plan,
    model_reference,
    sglang_default_split,
    trtllm_default_split,
    vllm_default_split,
)
from placer.io import read_json
from placer.layout import Layout
from placer.ledger import ExpertMap, default_expert_map
from placer.load import model_from_dict
from placer.model import ModelSpec
from placer.plan import ObjectiveRecord, Plan, PlanLayout, SearchRecord
from placer.rules import PROFILES, layout_violations
from placer.search.outer import solve
from placer.workload import Workload

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "data" / "golden"
UPDATE = os.environ.get("PLACER_UPDATE_GOLDEN") == "1"
CONFIG = SolveConfig(time_limit_s=20, deterministic=True)


# ------------------------------------------------------------------ plan makers
def _model(name: str) -> ModelSpec:
    # A relative source, so the stored plans do not carry this machine's paths.
    return model_from_dict(read_json(ROOT / "models" / f"{name}.json"), f"models/{name}.json")


def _cluster(name: str, gpus: int | None = None) -> ClusterSpec:
    c = load_cluster(ROOT / "instances" / "hardware" / f"{name}.json")
    return c.with_gpus(gpus) if gpus else c


def _solved(model: str, hardware: str, gpus: int | None = None) -> Plan:
    return solve(_model(model), _cluster(hardware, gpus), Workload(), CONFIG)


def _hand_made(
    model: ModelSpec, cluster: ClusterSpec, workload: Workload, layout: Layout, emap: ExpertMap
) -> Plan:
    """A plan for a given layout and expert map (status feasible, no search)."""
    base = solve(model, cluster, workload, SolveConfig(time_limit_s=5, deterministic=True))
    ev = evaluate(model, cluster, workload, layout, "generic", emap)
    assert ev.fits and ev.estimates is not None, ev.violated()
    e = ev.estimates
    split = tuple(len(s) for s in layout.stage_layers(model.num_layers))
    plan = base.model_copy(
        update={
            "status": "feasible",
            "layout": PlanLayout(
                tp=layout.tp,
                pp=layout.pp,
                ep=layout.ep,
                etp=layout.expert_tp,
                dp_attn=layout.dp_attn,
                gpus_used=layout.gpus,
                layers_per_stage=split,
                redundant_experts=layout.redundant_experts,
            ),
            "objective": ObjectiveRecord(
                name="throughput",
                unit="s",
                value=e.cycle_s,
                bound=None,
                gap=None,
                value_units=round(e.cycle_s * 1e9),
                bound_units=None,
            ),
            "gpus": ev.gpus,
            "expert_map": emap,
            "estimates": e,
            "certificate": base.certificate.model_copy(
                update={
                    "constraints": ev.constraints,
                    "search": SearchRecord(
                        candidates=1,
                        legal=1,
                        rejected_by_rule={},
                        solved=0,
                        pruned=0,
                        infeasible=0,
                        unresolved=0,
                        entries=(),
                    ),
                }
            ),
        }
    )
    return Plan.model_validate_json(plan.model_dump_json())


def _qwen3_eplb() -> Plan:
    """Qwen3-30B-A3B on 8 H100: attention DP 8, EP 8, 8 redundant slots, one replica of
    each rank's first expert placed on the next rank."""
    model = _model("qwen3-30b-a3b")
    cluster = _cluster("dgx-h100")
    layout = Layout(tp=1, pp=1, ep=8, etp=1, dp_attn=8, redundant_experts=8)
    row = tuple((*range(r * 16, r * 16 + 16), (r + 1) % 8 * 16) for r in range(8))
    emap: ExpertMap = dict.fromkeys(model.moe_layers, row)
    return _hand_made(model, cluster, Workload(), layout, emap)


def _dsv2lite_map() -> Plan:
    """DeepSeek-V2-Lite (one dense layer) on 8 H100: TP1 DP4 EP4 PP2, split 13/14, experts
    dealt round-robin over the EP ranks (not the engines' contiguous default)."""
    model = _model("deepseek-v2-lite")
    cluster = _cluster("dgx-h100")
    layout = Layout(tp=1, pp=2, ep=4, etp=1, dp_attn=4, layers_per_stage=(13, 14))
    e = model.max_experts
    row = tuple(tuple(range(r, e, 4)) for r in range(4))
    emap: ExpertMap = dict.fromkeys(model.moe_layers, row)
    return _hand_made(model, cluster, Workload(), layout, emap)


def _mixtral_tp8pp2() -> Plan:
    """Mixtral-8x7B on 16 A100-80GB (two nodes): TP8 PP2 EP8, one engine over both nodes."""
    model = _model("mixtral-8x7b")
    cluster = _cluster("dgx-a100-80gb", 16)
    layout = Layout(tp=8, pp=2, ep=8, etp=1)
    emap = default_expert_map(model, layout)
    return _hand_made(model, cluster, Workload(), layout, emap)


def _stripped(plan: Plan) -> Plan:
    """The plan without its search entries (exports do not read them)."""
    search = plan.certificate.search.model_copy(update={"entries": ()})
    cert = plan.certificate.model_copy(update={"search": search})
    return plan.model_copy(update={"certificate": cert})


CASES: dict[str, tuple[Callable[[], Plan], tuple[str, ...]]] = {
    "mixtral-a100x8": (lambda: _solved("mixtral-8x7b", "dgx-a100-80gb"), ("vllm", "sglang")),
    "dsv3-h200x16": (lambda: _solved("deepseek-v3", "dgx-h200", 16), ("vllm", "sglang")),
    # 8 + 4 GPUs: neither vLLM's nor SGLang's launcher starts it (test below).
    "qwen3-h100x12": (lambda: _solved("qwen3-30b-a3b", "dgx-h100", 12), ("trtllm",)),
    "qwen3-h100x8-eplb": (_qwen3_eplb, ENGINES),
    # TensorRT-LLM has no DeepSeek-V2 model class (test below).
    "dsv2lite-h100x8-map": (_dsv2lite_map, ("vllm", "sglang")),
    "mixtral-a100x16-tp8pp2": (_mixtral_tp8pp2, ENGINES),
    # A map SGLang's Mixtral class would ignore (test below); TensorRT-LLM takes it.
    "mixtral-a100x8-map": (lambda: _mixtral_map(0), ENGINES),
}
GOLDEN_PAIRS = [(case, engine) for case, (_, engines) in CASES.items() for engine in engines]


def _plan_path(case: str) -> Path:
    return GOLDEN / f"{case}.plan.json"


_PLANS: dict[str, Plan] = {}


def golden_plan(case: str) -> Plan:
    """The stored plan of a case (re-solved and rewritten with PLACER_UPDATE_GOLDEN=1)."""
    if case not in _PLANS:
        path = _plan_path(case)
        if UPDATE:
            GOLDEN.mkdir(parents=True, exist_ok=True)
            plan = _stripped(CASES[case][0]())
            path.write_text(plan.model_dump_json() + "\n", encoding="utf-8")
        if not path.is_file():
            pytest.fail(f"missing {path}; run with PLACER_UPDATE_GOLDEN=1 to create it")
        _PLANS[case] = Plan.model_validate_json(path.read_text(encoding="utf-8"))
    return _PLANS[case]


# ------------------------------------------------------------------ goldens
@pytest.mark.parametrize(("case", "engine"), GOLDEN_PAIRS)
def test_export_matches_golden(case: str, engine: str) -> None:
    """export_plan's command, env, files and notes equal the stored golden text."""
    got = export_plan(golden_plan(case), engine).render()  # type: ignore[arg-type]
    path = GOLDEN / f"{case}.{engine}.txt"
    if UPDATE:
        path.write_text(got, encoding="utf-8")
    assert path.is_file(), f"missing {path}; run with PLACER_UPDATE_GOLDEN=1"
    assert got == path.read_text(encoding="utf-8")


def test_golden_plans_are_the_layouts_they_claim() -> None:
    """The stored plans hold the layouts the goldens were written for."""
    want = {
        "mixtral-a100x8": (2, 1, 8, 1, 4),
        "dsv3-h200x16": (2, 2, 8, 1, 4),
        "qwen3-h100x12": (1, 3, 4, 1, 4),
        "qwen3-h100x8-eplb": (1, 1, 8, 1, 8),
        "dsv2lite-h100x8-map": (1, 2, 4, 1, 4),
        "mixtral-a100x16-tp8pp2": (8, 2, 8, 1, 1),
        "mixtral-a100x8-map": (1, 1, 8, 1, 8),
    }
    for case, degrees in want.items():
        lay = golden_plan(case).layout
        assert lay is not None
        assert (lay.tp, lay.pp, lay.ep, lay.etp, lay.dp_attn) == degrees, case


# ------------------------------------------------------------------ content
def test_vllm_flags_for_expert_parallel_dp() -> None:
    """vLLM: -tp is attention TP, DP attention is --data-parallel-size, EP is switched on."""
    exp = export_plan(golden_plan("mixtral-a100x8"), "vllm")
    assert isinstance(exp, Export)
    assert exp.command.startswith("vllm serve mistralai/Mixtral-8x7B-v0.1")
    for flag in (
        "--tensor-parallel-size 2",
        "--pipeline-parallel-size 1",
        "--data-parallel-size 4",
        "--enable-expert-parallel",
        "--gpu-memory-utilization 0.9",
        "--max-model-len 1280",
    ):
        assert flag in exp.command
    assert exp.env == {} and exp.files == {}


def test_uneven_split_goes_to_env() -> None:
    """DeepSeek-V3's 32/29 split is set through VLLM_/SGLANG_PP_LAYER_PARTITION."""
    plan = golden_plan("dsv3-h200x16")
    assert export_plan(plan, "vllm").env == {"VLLM_PP_LAYER_PARTITION": "32,29"}
    assert export_plan(plan, "sglang").env == {"SGLANG_PP_LAYER_PARTITION": "32,29"}


def test_multi_node_commands_one_per_node() -> None:
    """16 GPUs on 8-GPU nodes give one command per node, with the head address."""
    plan = golden_plan("dsv3-h200x16")
    sg = export_plan(plan, "sglang", nodes_addr="10.0.0.1:6000")
    assert sg.command.count("python -m sglang.launch_server") == 2
    assert "--nnodes 2" in sg.command and "--node-rank 1" in sg.command
    assert "--dist-init-addr 10.0.0.1:6000" in sg.command
    vl = export_plan(plan, "vllm", nodes_addr="10.0.0.1")
    assert vl.command.count("vllm serve") == 2
    assert "--data-parallel-start-rank 2" in vl.command and "--headless" in vl.command
    assert any("scale_out instead of scale_up" in n for n in vl.notes)


def test_vllm_one_engine_over_two_nodes() -> None:
    """Without DP, vLLM spans nodes with --nnodes/--node-rank/--master-addr, --headless after."""
    exp = export_plan(golden_plan("mixtral-a100x16-tp8pp2"), "vllm", nodes_addr="10.0.0.1:29500")
    head, other = exp.command.split("\n\n")
    assert "--nnodes 2" in head and "--node-rank 0" in head and "--headless" not in head
    assert "--master-addr 10.0.0.1" in head and "--master-port 29500" in head
    assert "--node-rank 1" in other and other.rstrip().endswith("--headless")
    assert "--data-parallel-size" not in exp.command


def test_sglang_map_file_has_a_row_per_hidden_layer() -> None:
    """SGLang's physical_to_logical_map covers every hidden layer, dense ones trivially."""
    import json

    plan = golden_plan("dsv2lite-h100x8-map")
    exp = export_plan(plan, "sglang")
    assert "--init-expert-location expert_location.json" in exp.command
    table = json.loads(exp.files["expert_location.json"])["physical_to_logical_map"]
    assert len(table) == 27
    assert table[0] == list(range(64))  # layer 0 is dense: trivial row
    assert table[1][:16] == list(range(0, 64, 4))  # EP rank 0's slots
    assert sorted(table[5]) == list(range(64))


def test_trtllm_yaml_and_load_balancer() -> None:
    """TensorRT-LLM gets attention DP, moe sizes, pp_partition and the expert assignments."""
    exp = export_plan(golden_plan("qwen3-h100x8-eplb"), "trtllm")
    yaml = exp.files["extra.yaml"]
    assert "enable_attention_dp: true" in yaml
    assert "moe_expert_parallel_size: 8" in yaml
    assert "moe_tensor_parallel_size: 1" in yaml
    assert "initial_global_assignments:" in yaml
    assert "backend" not in yaml  # the release's AUTO default; WIDEEP is gone
    assert "--tp_size 8" in exp.command and "--config extra.yaml" in exp.command
    split = export_plan(golden_plan("qwen3-h100x12"), "trtllm").files["extra.yaml"]
    assert "pp_partition: [18, 18, 12]" in split


def test_redundant_experts_per_engine() -> None:
    """Redundant slots: vLLM EPLB flags, SGLang's count and map, TensorRT-LLM's num_slots."""
    plan = golden_plan("qwen3-h100x8-eplb")
    vl = export_plan(plan, "vllm")
    assert "--enable-eplb" in vl.command
    assert '{"num_redundant_experts":8}' in vl.command
    sg = export_plan(plan, "sglang")
    assert "--ep-num-redundant-experts 8" in sg.command
    assert "expert_location.json" in sg.files
    tr = export_plan(plan, "trtllm")
    assert "num_slots: 136" in tr.files["extra.yaml"]


def test_model_reference_fallbacks() -> None:
    """MODEL: the explicit reference, else the known repository, else the model file."""
    plan = golden_plan("mixtral-a100x8")
    assert model_reference(plan, "/models/mixtral") == "/models/mixtral"
    assert model_reference(plan) == "mistralai/Mixtral-8x7B-v0.1"
    data = plan.inputs.model_copy(update={"model": {**plan.inputs.model, "name": "my-moe"}})
    other = plan.model_copy(update={"inputs": data})
    assert model_reference(other) == "models/mixtral-8x7b.json"
    assert "--model-path /m" in export_plan(plan, "sglang", model_ref="/m").command


def test_default_splits_follow_each_engine() -> None:
    """Default pipeline splits: vLLM before the last, SGLang last ranks, TRT-LLM first ranks."""
    assert vllm_default_split(5, 3) == (2, 2, 1)
    assert vllm_default_split(4, 3) == (1, 2, 1)
    assert sglang_default_split(5, 3) == (1, 2, 2)
    assert trtllm_default_split(5, 3) == (2, 2, 1)
    assert trtllm_default_split(4, 3) == (2, 1, 1)


# ------------------------------------------------------------------ inexpressible
def test_trtllm_rejects_partial_attention_dp() -> None:
    """TensorRT-LLM's attention DP is all-or-nothing: tp 2 x dp_attn 4 is refused by name."""
    with pytest.raises(ExportError, match=r"attention DP .* tp=2 x dp_attn=4"):
        export_plan(golden_plan("mixtral-a100x8"), "trtllm")


def test_vllm_rejects_expert_tp_with_ep(
    seed_model: ModelSpec, seed_cluster: ClusterSpec, seed_workload: Workload
) -> None:
    """vLLM cannot run ep=4 with etp=4; the message names both and the rule.

    The seed's plan (TP16 over one stage) with its experts split EP4 x ETP4, a layout the
    generic profile accepts.
    """
    plan = solve(seed_model, seed_cluster, seed_workload, SolveConfig(time_limit_s=20))
    assert plan.layout is not None and plan.layout.tp * plan.layout.dp_attn == 16
    plan = plan.model_copy(update={"layout": plan.layout.model_copy(update={"ep": 4, "etp": 4})})
    with pytest.raises(ExportError, match=r"ep = tp x dp_attn and etp = 1.*ep=4, etp=4"):
        export_plan(plan, "vllm")


def test_sglang_rejects_uneven_expert_slots() -> None:
    """SGLang needs (E + R) % ep == 0: Mixtral's 8 experts over EP 6 are refused.

    The KV cache of 256 requests of 8k tokens needs all six GPUs, and vLLM's EP spans them.
    """
    plan = solve(
        _model("mixtral-8x7b"),
        _cluster("dgx-a100-80gb", 6),
        Workload(batch=256, prompt_len=4096, output_len=4096),
        SolveConfig(time_limit_s=20, profile="vllm"),
    )
    assert plan.layout is not None and plan.layout.ep == 6
    with pytest.raises(ExportError, match=r"\(experts \+ redundant\) % ep == 0.*\(8 \+ 0\) % 6"):
        export_plan(plan, "sglang")
    assert "--enable-expert-parallel" in export_plan(plan, "vllm").command


def test_infeasible_plan_has_nothing_to_export() -> None:
    """A plan without a layout raises, quoting why nothing fits."""
    plan = solve(
        _model("deepseek-v3"), _cluster("dgx-a100-40gb"), Workload(), SolveConfig(time_limit_s=20)
    )
    assert plan.layout is None
    for engine in ENGINES:
        with pytest.raises(ExportError, match=r"no layout to export \(status infeasible\)"):
            export_plan(plan, engine)  # type: ignore[arg-type]


def test_unknown_engine_is_bad_input() -> None:
    """An engine name outside vllm/sglang/trtllm is an InvalidInputError."""
    with pytest.raises(InvalidInputError, match="unknown engine"):
        export_plan(golden_plan("mixtral-a100x8"), "tgi")  # type: ignore[arg-type]


def test_fp8_kv_cache_flags() -> None:
    """An fp8 KV cache becomes each engine's own spelling of it."""
    plan = golden_plan("qwen3-h100x8-eplb")
    inputs = plan.inputs.model_copy(
        update={"workload": {**plan.inputs.workload, "kv_dtype": "fp8"}}
    )
    fp8 = plan.model_copy(update={"inputs": inputs})
    assert "--kv-cache-dtype fp8" in export_plan(fp8, "vllm").command
    assert "--kv-cache-dtype fp8_e4m3" in export_plan(fp8, "sglang").command
    assert 'dtype: "fp8"' in export_plan(fp8, "trtllm").files["extra.yaml"]


# ------------------------------------------------------------------ engine facts
@pytest.mark.parametrize("case", [c for c, e in GOLDEN_PAIRS if e == "trtllm"])
def test_trtllm_yaml_matches_recorded_llm_args(case: str) -> None:
    """Every key and value of extra.yaml is one the release's llm_args.py declares (the
    facts recorded with their source in placer/engine_facts.json), and the map's shape
    is what MoeLoadBalancerConfig checks (num_slots % ep, one slot list per MoE layer)."""
    import yaml

    plan = golden_plan(case)
    rel = release("trtllm")
    keys = rel.trtllm
    assert keys is not None and "WIDEEP" not in keys.moe_backends
    data = yaml.safe_load(export_plan(plan, "trtllm").files["extra.yaml"])
    assert set(data) <= set(keys.llm_args_keys)
    assert set(data["kv_cache_config"]) <= set(keys.kv_cache_config_keys)
    assert data["kv_cache_config"].get("dtype", "auto") in keys.kv_cache_dtypes
    assert 0 <= data["kv_cache_config"]["free_gpu_memory_fraction"] <= 1
    lay = plan.layout
    assert lay is not None
    assert data["moe_expert_parallel_size"] * data["moe_tensor_parallel_size"] == (
        lay.tp * lay.dp_attn
    )
    if "pp_partition" in data:
        assert keys.pp_partition
        assert sum(data["pp_partition"]) == plan.inputs.model["num_layers"]
    moe = data.get("moe_config", {})
    assert set(moe) <= set(keys.moe_config_keys)
    assert moe.get("backend", "AUTO") in keys.moe_backends
    if "load_balancer" in moe:
        lb = moe["load_balancer"]
        assert set(keys.load_balancer_required) <= set(lb) <= set(keys.load_balancer_keys)
        assert lb["num_slots"] % data["moe_expert_parallel_size"] == 0
        assert set(lb["initial_global_assignments"]) == set(plan.expert_map)
        for slots in lb["initial_global_assignments"].values():
            assert len(slots) == lb["num_slots"]
            assert set(slots) == set(range(plan.inputs.model["moe"]["num_experts"]))


def test_launchers_that_cannot_start_the_plan_exit_2() -> None:
    """TP4 x PP3 on 8 + 4 GPUs: SGLang's launcher would start 8 of 12 ranks and vLLM's
    puts whole 3-GPU engines per node; both refuse with the reason instead of a command."""
    plan = golden_plan("qwen3-h100x12")
    with pytest.raises(ExportError, match=r"SGLang's launcher starts 4 ranks on node 0"):
        export_plan(plan, "sglang")
    with pytest.raises(ExportError, match=r"whole engines of tp x pp = 3 GPUs"):
        export_plan(plan, "vllm")


def test_sglang_launcher_geometry() -> None:
    """SGLang's rank ranges: PP3 on two nodes leaves stage 2 unstarted; on three nodes, or
    TP16 over two 8-GPU nodes (its DeepSeek recipe), every rank starts."""
    sg = release("sglang")
    assert "ranks never start" in (launch_violation(sg, 4, 3, 1, [4, 4]) or "")
    assert launch_violation(sg, 4, 3, 1, [4, 4, 4]) is None
    assert launch_violation(sg, 16, 1, 1, [8, 8]) is None
    assert sglang_rank_ranges(16, 1, 2, 1) == (range(0, 1), range(8, 16))


def test_trtllm_refuses_architectures_it_has_no_class_for() -> None:
    """DeepSeek-V2-Lite: TensorRT-LLM's PyTorch backend has no DeepseekV2ForCausalLM."""
    with pytest.raises(ExportError, match=r"no model class for DeepseekV2ForCausalLM"):
        export_plan(golden_plan("dsv2lite-h100x8-map"), "trtllm")


def _mixtral_map(redundant: int) -> Plan:
    """Mixtral-8x7B on 8 A100-80GB, EP 8 x DP attention 8, experts dealt in reverse."""
    model = _model("mixtral-8x7b")
    layout = Layout(tp=1, pp=1, ep=8, etp=1, dp_attn=8, redundant_experts=redundant)
    row: tuple[tuple[int, ...], ...] = tuple((7 - r,) for r in range(8))
    if redundant:
        row = tuple((7 - r, r) for r in range(8))
    emap: ExpertMap = dict.fromkeys(model.moe_layers, row)
    return _hand_made(model, _cluster("dgx-a100-80gb"), Workload(), layout, emap)


def test_sglang_map_not_offered_to_a_model_class_that_ignores_it() -> None:
    """Mixtral's SGLang class has no expert-location hook: no --init-expert-location (it would
    be silently ignored); the note says so and checks the engine's own placement fits."""
    exp = export_plan(_mixtral_map(0), "sglang")
    assert "--init-expert-location" not in exp.command and exp.files == {}
    assert any("no expert-location hook" in n and "still fits" in n for n in exp.notes)
    with pytest.raises(ExportError, match=r"redundant expert slots .* MixtralForCausalLM"):
        export_plan(_mixtral_map(8), "sglang")
    assert (
        "initial_global_assignments" in export_plan(_mixtral_map(0), "trtllm").files["extra.yaml"]
    )


def test_sglang_refuses_moe_data_parallelism() -> None:
    """ep 4 x etp 1 on a stage of 8 GPUs keeps two expert copies: SGLang allows moe_dp > 1
    only with attention context parallelism, so the export and the profile refuse it."""
    model = _model("mixtral-8x7b")
    cluster = _cluster("dgx-a100-80gb")
    layout = Layout(tp=1, pp=1, ep=4, etp=1, dp_attn=8)
    plan = _hand_made(model, cluster, Workload(), layout, default_expert_map(model, layout))
    with pytest.raises(ExportError, match=r"MoE data parallelism \(moe_dp > 1\)"):
        export_plan(plan, "sglang")
    assert any(
        "no MoE data parallelism" in v
        for v in layout_violations(model, cluster, layout, PROFILES["sglang"])
    )


def test_profiles_take_tp_across_nodes_and_launcher_geometry() -> None:
    """vLLM and SGLang run TP over two 8-GPU nodes; SGLang's profile rejects TP4 x PP3 on
    8 + 4 GPUs, which its launcher cannot start."""
    model = _model("deepseek-v3")
    cluster = _cluster("dgx-h200", 16)
    tp16 = Layout(tp=16, pp=1, ep=16, etp=1)
    for name in ("vllm", "sglang"):
        assert not any(
            "scale-up" in v for v in layout_violations(model, cluster, tp16, PROFILES[name])
        )
    assert any(
        "scale-up" in v for v in layout_violations(model, cluster, tp16, PROFILES["generic"])
    )
    qwen = _model("qwen3-30b-a3b")
    c12 = _cluster("dgx-h100", 12)
    bad = Layout(tp=1, pp=3, ep=4, etp=1, dp_attn=4)
    assert any("ranks" in v for v in layout_violations(qwen, c12, bad, PROFILES["sglang"]))


def test_engine_version_selects_facts_or_exits_2(tmp_path: Path) -> None:
    """--engine-version picks the facts' range; an unknown version is bad input (exit 2)
    naming the field and the known ranges."""
    from click.testing import CliRunner

    from placer.cli import main

    plan = golden_plan("mixtral-a100x8")
    assert "vLLM 0.34.0" in " ".join(export_plan(plan, "vllm", engine_version="0.34.2").notes)
    with pytest.raises(InvalidInputError, match=r"no facts for vLLM 0.30.0; known: vLLM 0.34.0"):
        export_plan(plan, "vllm", engine_version="0.30.0")
    path = tmp_path / "plan.json"
    path.write_text(plan.model_dump_json(), encoding="utf-8")
    res = CliRunner().invoke(
        main, ["export", str(path), "--engine", "sglang", "--engine-version", "0.4.0"]
    )
    assert res.exit_code == 2
    assert "--engine-version" in res.output and "SGLang 0.5.23" in res.output


def test_flags_are_checked_against_the_release() -> None:
    """A flag the release does not record, or a value it does not accept, is refused."""
    rel = release("sglang")
    assert rel.flag("--attn-dp-size", 4) == ["--attn-dp-size", 4]
    assert "--enable-dp-attention" in rel.deprecated_flags
    with pytest.raises(KeyError):
        rel.flag("--enable-dp-attention")
    with pytest.raises(ValueError, match="not accepted"):
        rel.flag("--kv-cache-dtype", "fp8")


def test_sglang_profile_solves_to_a_launchable_layout() -> None:
    """Qwen3-30B-A3B on 12 H100 (8 + 4) with the sglang profile: the solver no longer picks
    a layout SGLang's launcher cannot start; the plan verifies and exports for SGLang."""
    from placer.verify import verify

    plan = solve(
        _model("qwen3-30b-a3b"),
        _cluster("dgx-h100", 12),
        Workload(),
        SolveConfig(time_limit_s=20, deterministic=True, profile="sglang"),
    )
    assert plan.status == "optimal" and plan.layout is not None
    assert verify(plan).ok
    assert plan.objective.bound is not None and plan.objective.bound <= plan.objective.value
    exp = export_plan(plan, "sglang")
    assert "--tp-size" in exp.command
