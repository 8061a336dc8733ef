"""Collectives on hand-computed cases, calibration files, the silicon cleaning, the fit."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings

from placer.calibration import (
    Calibration,
    Efficiency,
    default_calibration,
    load_calibration,
    use_calibration,
)
from placer.cli import main
from placer.cluster import ClusterSpec
from placer.collectives import (
    Wire,
    allreduce_time,
    best_allreduce,
    dispatch_combine_time,
    gather_time,
    hierarchical_allreduce,
    nodes_reached,
)
from placer.cost import estimate
from placer.exceptions import InvalidInputError
from placer.fit import fit
from placer.layout import Layout
from placer.load import load_cluster, load_model
from placer.measurements import Measurement, MeasurementSet, predict_tpot_s
from placer.model import ModelSpec
from placer.plan import Plan
from placer.verify import verify
from placer.workload import Workload

from .test_solve_property import check_instance, instances

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import import_silicon  # noqa: E402

NV = Wire(bandwidth=450e9, latency=2e-6)  # NVLink 4: 450 GB/s per direction, 2 us
IB = Wire(bandwidth=50e9, latency=5e-6)  # one 400 Gb/s NIC per GPU


def test_allreduce_algorithms_by_hand() -> None:
    """1 MB over 8 GPUs: one-shot 2 + 7 x 1e6 / 450e9 s; two-shot 4 + 2 x 7/8 x ...; ring
    28 us of latency alone (the old model's 2 (n-1) hops)."""
    s = 1e6
    assert allreduce_time(s, 8, NV, "one_shot") == pytest.approx(2e-6 + 7 * s / 450e9)
    assert allreduce_time(s, 8, NV, "two_shot") == pytest.approx(4e-6 + 1.75 * s / 450e9)
    assert allreduce_time(s, 8, NV, "ring") == pytest.approx(28e-6 + 1.75 * s / 450e9)
    assert allreduce_time(s, 8, NV, "nvls") == pytest.approx(4e-6 + s / 450e9)
    assert allreduce_time(s, 8, NV, "tree") == pytest.approx(12e-6 + 2 * s / 450e9)
    assert allreduce_time(s, 1, NV, "ring") == 0.0
    # One-shot and two-shot cross where a + 7 S / B = 2a + 1.75 S / B: S = 171 kB. A decode
    # message of 4 tokens x 7168 x 2 B is below it, 64 MB far above.
    small, large = 4 * 7168 * 2, 64e6
    algs = ("one_shot", "two_shot", "ring")
    assert best_allreduce(small, 8, NV, algs) == allreduce_time(small, 8, NV, "one_shot")
    assert best_allreduce(large, 8, NV, algs) == allreduce_time(large, 8, NV, "two_shot")


def test_allreduce_across_nodes_uses_every_nic() -> None:
    """TP16 on two 8-GPU nodes: two-shot inside, then a ring over 2 nodes of S / 8 per GPU,
    each GPU on its own NIC (the node's 8 NICs together), not the whole S on one NIC."""
    s = 8e6
    got = hierarchical_allreduce(s, 8, 2, NV, IB, ("one_shot", "two_shot", "ring"))
    inside = 4e-6 + 1.75 * s / 450e9
    across = 2 * 5e-6 + 2 * 0.5 * (s / 8) / 50e9
    assert got == pytest.approx(inside + across)
    assert got < allreduce_time(s, 16, IB, "ring")


def test_gather_and_dispatch_by_hand() -> None:
    """All-gather of 8 MB over 8 GPUs: 2 us + 7/8 x 8e6 / 450e9. Dispatch inside one node:
    100 tokens x 7168 x (1 + 2) bytes to the expected distinct ranks of top-8 of 8."""
    assert gather_time(8e6, 8, NV) == pytest.approx(2e-6 + 7e6 / 450e9)
    ranks = 8 * (1 - (7 / 8) ** 8)
    sends = 100 * ranks * 7 / 8
    got = dispatch_combine_time(100, 8, 7168, 8, 8, NV, IB, 1.0, 2.0)
    assert got == pytest.approx(sends * 7168 * 3 / 450e9 + 4e-6)


def test_node_limited_routing() -> None:
    """DeepSeek-V3 (8 groups, 4 per token) over 8 nodes: a token reaches 4 nodes at most;
    1 - C(7, 4) / C(8, 4) = 1/2 of the nodes each, so 4 expected; without groups, top-8 of
    8 nodes reaches 8 x (1 - (7/8)^8) = 5.25."""
    assert nodes_reached(8, 8, 8, 4) == pytest.approx(8 * (1 - math.comb(7, 4) / math.comb(8, 4)))
    assert nodes_reached(8, 8, None, None) == pytest.approx(8 * (1 - (7 / 8) ** 8))
    assert nodes_reached(8, 1, 8, 4) == 1.0


def test_tp_attention_has_no_all_to_all_and_two_allreduces() -> None:
    """With TP attention every rank holds the tokens: TP8 EP8 pays exactly what TP8 EP1 pays
    for communication (two all-reduces per layer), not an extra all-to-all."""
    m = load_model(ROOT / "models" / "deepseek-r1.json")
    c = load_cluster(ROOT / "instances" / "hardware" / "dgx-h200.json")
    w = Workload(batch=64, prompt_len=1024, output_len=1024, phase="decode", weight_dtype="fp8")
    a = estimate(m, c, w, Layout(tp=8, ep=8))
    b = estimate(m, c, w, Layout(tp=8, ep=1))
    assert a.stages[0].comm_s == pytest.approx(b.stages[0].comm_s)
    assert a.stages[0].comm_s > 0


def test_calibration_scales_estimates_and_is_recorded() -> None:
    """Halving every efficiency doubles the roofline part; the digest is in the assumptions."""
    m = load_model(ROOT / "models" / "mixtral-8x7b.json")
    c = load_cluster(ROOT / "instances" / "hardware" / "dgx-a100-80gb.json")
    w = Workload(batch=8)
    base = default_calibration()
    one = base.default.model_copy(
        update=dict.fromkeys(("dense_gemm", "expert_gemm", "attention", "hbm", "comm"), 1.0)
    )
    half = base.default.model_copy(
        update=dict.fromkeys(("dense_gemm", "expert_gemm", "attention", "hbm", "comm"), 0.5)
    )
    c1 = base.model_copy(update={"default": one, "families": {}, "layer_us": 0.0, "step_us": 0})
    c2 = c1.model_copy(update={"default": half})
    layout = Layout(tp=2)
    e1, e2 = estimate(m, c, w, layout, calibration=c1), estimate(m, c, w, layout, calibration=c2)
    assert e2.latency_s == pytest.approx(2 * e1.latency_s, rel=0.02)
    assert any(c2.digest()[:12] in a for a in e2.assumptions)
    assert c1.digest() != c2.digest()


def test_family_match_prefers_the_longest_name() -> None:
    base = default_calibration()
    other = base.default.model_copy(update={"hbm": 0.123})
    calib = base.model_copy(update={"families": {"B200": base.default, "GB200": other}})
    assert calib.efficiency("B200 in GB200 superchip").hbm == 0.123
    assert calib.efficiency("B200-SXM-180GB") == base.default
    assert calib.efficiency("Tesla V100") == base.default


def test_bad_calibration_file_names_file_and_field(tmp_path: Path) -> None:
    data = default_calibration().model_dump(mode="json")
    data["default"]["hbm"] = 1.5
    p = tmp_path / "calib.json"
    p.write_text(json.dumps(data))
    with pytest.raises(InvalidInputError, match=r"calib\.json.*default\.hbm"):
        load_calibration(p)


def _csv_row(**over: str) -> dict[str, str]:
    row = {k: "" for k in import_silicon.SAME}
    row.update(
        id="x",
        mode="agg",
        backend="sglang",
        backend_version="0.5",
        model_path="deepseek-ai/DeepSeek-R1",
        system="h200_sxm",
        precision="fp8",
        isl="1024",
        osl="1024",
        gemm_quant_mode="fp8",
        moe_quant_mode="fp8",
        batch_size="16",
        tp_size="1",
        pp_size="1",
        attention_dp_size="8",
        moe_tp_size="1",
        moe_ep_size="8",
        silicon_ttft_ms="100",
        silicon_tpot_ms="20",
    )
    row.update(over)
    return row


def test_silicon_cleaning_rules() -> None:
    """Each rule of tools/import_silicon.py on a row made for it."""
    rows = [
        _csv_row(),  # kept: concurrency = 16 x 8 x 1
        _csv_row(id="dup"),  # same configuration and values: duplicate
        _csv_row(id="disagg", mode="disagg"),
        _csv_row(id="gb", system="gb200"),
        _csv_row(id="tp64", tp_size="64", attention_dp_size="1", moe_tp_size="8"),
        _csv_row(  # attention-DP lost: recovered as 2 x 1 / 1 = 2
            id="lost", tp_size="1", attention_dp_size="", moe_tp_size="2", moe_ep_size="1",
            backend="vllm", silicon_tpot_ms="30",
        ),
        _csv_row(id="bad", tp_size="4", attention_dp_size="", moe_tp_size="1", moe_ep_size="2"),
    ]  # fmt: skip
    kept, dropped = import_silicon.clean(rows)
    assert [r["id"] for r in kept] == ["x", "lost"]
    assert kept[0]["concurrency"] == 128 and kept[0]["gpus"] == 8
    assert kept[1]["dp_attn"] == 2 and kept[1]["concurrency"] == 32
    assert dropped["exact duplicate"] == 1
    assert dropped["not aggregated serving"] == 1
    assert dropped["GB200 'agg' rows behaving like disaggregated serving"] == 1
    assert dropped["layout multiplied out beyond one node"] == 1
    assert dropped["attention-DP lost and not recoverable"] == 1
    MeasurementSet(format="placer-measurements", about="t", rows=tuple(
        Measurement(**r) for r in kept
    ))  # fmt: skip


def _rows() -> list[Measurement]:
    base = {
        "source": "test", "engine": "vllm", "engine_version": "0", "model": "mixtral-8x7b",
        "hardware": "dgx-h100", "gpus": 2, "tp": 2, "dp_attn": 1, "pp": 1, "ep": 1,
        "moe_tp": 2, "weight_dtype": "bf16", "expert_dtype": "bf16", "prompt_len": 512,
        "output_len": 256,
    }  # fmt: skip
    return [
        Measurement(id=f"r{c}", concurrency=c, tpot_ms=t, **base)  # type: ignore[arg-type]
        for c, t in ((1, 9.0), (8, 11.0), (32, 16.0), (128, 31.0))
    ]


def test_fit_is_deterministic_bounded_and_closer() -> None:
    """The same rows give the same file; parameters stay in bounds; the fitted calibration
    predicts these rows better than the plain roofline."""
    rows = _rows()
    a, b = fit(rows), fit(rows)
    assert a.digest() == b.digest()
    for e in (a.default, *a.families.values()):
        assert all(0.05 <= v <= 1.0 for v in e.model_dump().values())
    unit = a.model_copy(
        update={
            "default": a.default.model_copy(
                update=dict.fromkeys(("dense_gemm", "expert_gemm", "attention", "hbm"), 1.0)
                | {"comm": 1.0, "dequant": 1.0}
            ),
            "families": {},
            "layer_us": 0.0,
            "step_us": 0.0,
        }
    )

    def err(c: Calibration) -> float:
        return sum(abs(math.log(predict_tpot_s(r, c) * 1e3 / r.tpot_ms)) for r in rows)

    assert err(a) < err(unit)


def test_calibrate_command_writes_a_loadable_file(tmp_path: Path) -> None:
    src = tmp_path / "m.json"
    rows = [r.model_dump(mode="json") for r in _rows()]
    src.write_text(json.dumps({"format": "placer-measurements", "about": "t", "rows": rows}))
    out = tmp_path / "c.json"
    res = CliRunner().invoke(main, ["calibrate", str(src), "-o", str(out)])
    assert res.exit_code == 0, res.output
    calib = load_calibration(out)
    res = CliRunner().invoke(
        main,
        [
            "evaluate", str(ROOT / "models/mixtral-8x7b.json"),
            str(ROOT / "instances/hardware/dgx-h100.json"), "--tp", "2",
            "--calibration", str(out), "--json",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assumptions = json.loads(res.output)["estimates"]["assumptions"]
    assert any(calib.digest()[:12] in a for a in assumptions)


def test_calibrate_rejects_bad_measurements(tmp_path: Path) -> None:
    src = tmp_path / "m.json"
    row = _rows()[0].model_dump(mode="json") | {"tpot_ms": -1}
    src.write_text(json.dumps({"format": "placer-measurements", "about": "t", "rows": [row]}))
    out = tmp_path / "c.json"
    res = CliRunner().invoke(main, ["calibrate", str(src), "-o", str(out)])
    assert res.exit_code == 2
    assert "m.json" in res.output and "tpot_ms" in res.output
    assert not out.exists()


# ------------------------------------------------------------------ solve and verify

#: Far from the shipped calibration: slow kernels, dear collectives, large fixed costs.
SLOW = default_calibration().model_copy(
    update={
        "name": "test: slow",
        "default": Efficiency(
            dense_gemm=0.3, expert_gemm=0.2, attention=0.5, hbm=0.6, dequant=0.5, comm=0.2
        ),
        "families": {},
        "layer_us": 30.0,
        "step_us": 400.0,
        "error": {},
    }
)


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(instances())
def test_brute_force_properties_hold_with_another_calibration(
    instance: tuple[ModelSpec, ClusterSpec, Workload],
) -> None:
    """Solve, verify and the brute force agree under a non-default calibration too."""
    with use_calibration(SLOW):
        plan = check_instance(*instance, "throughput")
    assert plan.inputs.calibration == SLOW.model_dump(mode="json")


def test_plan_records_its_calibration_and_verify_uses_it(tmp_path: Path) -> None:
    """A plan solved with --calibration verifies (with that calibration, not the default);
    its estimates differ from a default solve's; a changed calibration copy is caught."""
    cfile = tmp_path / "slow.json"
    cfile.write_text(SLOW.model_dump_json())
    args = [
        "solve", str(ROOT / "models/mixtral-8x7b.json"),
        str(ROOT / "instances/hardware/dgx-a100-80gb.json"), "--time-limit", "20", "--quiet",
    ]  # fmt: skip
    slow_plan, plain_plan = tmp_path / "slow-plan.json", tmp_path / "plain-plan.json"
    res = CliRunner().invoke(main, [*args, "--calibration", str(cfile), "-o", str(slow_plan)])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, [*args, "-o", str(plain_plan)])
    assert res.exit_code == 0, res.output
    slow, plain = (Plan.model_validate_json(p.read_text()) for p in (slow_plan, plain_plan))
    assert slow.inputs.hashes["calibration"] != plain.inputs.hashes["calibration"]
    assert slow.estimates is not None and plain.estimates is not None
    assert slow.estimates.cycle_s > plain.estimates.cycle_s
    assert verify(slow).ok and verify(plain).ok
    data = json.loads(slow_plan.read_text())
    data["inputs"]["calibration"]["layer_us"] = 0.0
    report = verify(Plan.model_validate_json(json.dumps(data)))
    assert not report.ok and "calibration" in report.violations[0]


def test_attention_dp_moves_tokens_as_the_engine_does() -> None:
    """DeepSeek-V2-Lite, DP-attention 8 with EP8 on an H100 node, batch 64. vLLM all-gathers
    all 64 tokens (64 x 2048 x 2 bytes) before each MoE layer and reduce-scatters after it:
    2 x (a + 7/8 x 262144 / 450e9) per MoE layer, nothing for attention (TP 1). SGLang
    dispatches FP8 and combines BF16 instead, which costs less here."""
    m = load_model(ROOT / "models" / "deepseek-v2-lite.json")
    c = load_cluster(ROOT / "instances" / "hardware" / "dgx-h100.json")
    w = Workload(batch=64, prompt_len=512, output_len=512, phase="decode")
    layout = Layout(tp=1, dp_attn=8, ep=8)
    vllm = estimate(m, c, w, layout, engine="vllm")
    sglang = estimate(m, c, w, layout, engine="sglang")
    eff = default_calibration().efficiency(c.gpu_types[0].name)
    wire = Wire(bandwidth=450e9, latency=2e-6 / eff.comm)
    per_layer = 2 * gather_time(64 * m.hidden_size * 2, 8, wire)
    assert vllm.stages[0].comm_s == pytest.approx(len(m.moe_layers) * per_layer)
    assert 0 < sglang.stages[0].comm_s < vllm.stages[0].comm_s


def test_a_plan_verifies_under_its_profiles_collectives() -> None:
    """Solved with the SGLang profile (DeepEP dispatch), verified with the same pricing."""
    from placer import SolveConfig
    from placer.search.outer import solve

    m = load_model(ROOT / "models" / "olmoe-1b-7b-0924.json")
    c = load_cluster(ROOT / "instances" / "hardware" / "dgx-h100.json")
    plan = solve(m, c, Workload(batch=256), SolveConfig(time_limit_s=20, profile="sglang"))
    assert plan.status in ("optimal", "feasible")
    assert plan.estimates is not None
    assert any("collectives as sglang" in a for a in plan.estimates.assumptions)
    report = verify(plan)
    assert report.ok, report.violations


def test_sweep_with_a_calibration_solves_again_and_differs(tmp_path: Path) -> None:
    """A sweep under another calibration does not reuse the default's cached answers, and
    its frontier figures are the slower model's; the CLI takes --calibration."""
    from placer import SolveConfig
    from placer.sweep import sweep

    m = [load_model(ROOT / "models" / "olmoe-1b-7b-0924.json")]
    c = [load_cluster(ROOT / "instances" / "hardware" / "dgx-h100.json")]
    w = [("w", Workload(batch=4))]
    cfg = SolveConfig(time_limit_s=5)
    plain = sweep(m, c, w, cfg, gpu_counts=[1], workers=1, cache_dir=tmp_path)
    slow = sweep(m, c, w, cfg, gpu_counts=[1], workers=1, cache_dir=tmp_path, calibration=SLOW)
    assert not any(r.cached for r in slow.rows)
    assert plain.rows[0].key != slow.rows[0].key
    assert slow.rows[0].latency_s is not None and plain.rows[0].latency_s is not None
    assert slow.rows[0].latency_s > plain.rows[0].latency_s
    cfile = tmp_path / "slow.json"
    cfile.write_text(SLOW.model_dump_json())
    spec = ROOT / "instances" / "sweeps" / "tiny.json"
    res = CliRunner().invoke(
        main, ["sweep", str(spec), "--workers", "1", "--calibration", str(cfile), "--quiet"]
    )
    assert res.exit_code == 0, res.output
    assert "Pareto frontier" in res.output
