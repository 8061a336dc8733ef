"""Bounds on inputs and options, time limits on an injected clock, and output files.

Nothing here measures the machine's speed: time-limit behaviour runs on a fake clock handed
to :class:`placer.budget.Budget`, and the CLI is run in-process with no timing assertion.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from unittest import mock

import pytest
from click.testing import CliRunner, Result
from pydantic import ValidationError

from placer.budget import Budget
from placer.cli import EXIT_INTERRUPTED, main
from placer.cluster import MAX_MEMORY_BYTES, MIN_RATE
from placer.config import SolveConfig
from placer.exceptions import EXIT_BAD_INPUT, EXIT_INFEASIBLE, EXIT_NO_PLAN, InvalidInputError
from placer.layout import Layout
from placer.limits import check_scale
from placer.load import load_cluster, load_model, model_from_dict
from placer.search.outer import solve
from placer.verify import verify
from placer.workload import Workload

ROOT = Path(__file__).resolve().parent.parent
MIXTRAL = str(ROOT / "models" / "mixtral-8x7b.json")
A100 = str(ROOT / "instances" / "hardware" / "dgx-a100-80gb.json")
SEED_MODEL = str(ROOT / "models" / "seed-moe-8x4.json")
SEED_HW = str(ROOT / "instances" / "hardware" / "seed-16x32gb.json")


class StepClock:
    """A clock that moves ``step`` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def invoke(*args: str) -> Result:
    """``placer ARGS`` in-process; an exception other than SystemExit is a traceback."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"traceback for {args}") from result.exception
    return result


def one_line_error(result: Result, code: int = EXIT_BAD_INPUT) -> str:
    """The single ``placer: error:`` line of a failed command with exit ``code``."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("placer: error: ")
    return lines[0]


# ------------------------------------------------------------------ options


@pytest.mark.parametrize(
    ("args", "option", "fragment"),
    [
        (["solve", "--time-limit", "nan"], "--time-limit", "finite"),
        (["solve", "--time-limit", "inf"], "--time-limit", "finite"),
        (["solve", "--time-limit", "0"], "--time-limit", "greater than 0"),
        (["solve", "--seed", "2147483648"], "--seed", "less than or equal to 2147483647"),
        (["solve", "--seed", "-1"], "--seed", "greater than or equal to 0"),
        (["solve", "--workers", "0"], "--workers", "greater than 0"),
        (["solve", "--mem-util", "1e-300"], "--mem-util", "greater than or equal to 0.01"),
        (["solve", "--mem-util", "nan"], "--mem-util", "finite"),
        (["solve", "--compare", "tp=²"], "--compare", "positive degrees"),
        (["solve", "--compare", "tp=0"], "--compare", "greater than 0"),
        (["solve", "--batch", "10000001"], "--batch", "less than or equal to 10000000"),
        (["evaluate", "--redundant-experts", "1000000000"], "--redundant-experts", "65536"),
        (["evaluate", "--pp", "1000000000"], "--pp", "less than or equal to 4096"),
        (["evaluate", "--tp", "-3"], "--tp", "greater than 0"),
        (["min-gpus", "--time-limit", "inf"], "--time-limit", "finite"),
        (["evaluate", "--gpus", "1000000000000"], "--gpus", "less than or equal to 1000000"),
        (["solve", "--nodes", "1000000000000"], "--nodes", "less than or equal to 1000000"),
    ],
)
def test_bad_option_is_one_line_naming_it(args: list[str], option: str, fragment: str) -> None:
    """An option outside its field's bounds exits 2 with one line naming the option."""
    command, *rest = args
    line = one_line_error(invoke(command, SEED_MODEL, SEED_HW, *rest))
    assert f"field '{option}'" in line
    assert fragment in line


def test_products_past_64_bits_are_refused() -> None:
    """A batch of 10^7 requests of 10^8 tokens each is within each field's bounds, but its
    KV cache is not a 64-bit count: evaluate and solve refuse it naming the batch."""
    big = ["--batch", "10000000", "--context", "100000000"]
    for command in ("evaluate", "solve"):
        line = one_line_error(invoke(command, MIXTRAL, A100, *big))
        assert "field 'batch'" in line and "placer can count" in line


def test_check_scale_accepts_the_largest_real_figures() -> None:
    """DeepSeek-V3 with a large batch and long context is inside the bounds."""
    model = load_model(ROOT / "models" / "deepseek-v3.json")
    check_scale(model, Workload(batch=1024, prompt_len=100_000, output_len=28_000))


# ------------------------------------------------------------------ model files


def _mixtral(**changes: object) -> dict[str, object]:
    data = json.loads(Path(MIXTRAL).read_text())
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hidden_size", 10**12),
        ("intermediate_size", 10**30),
        ("num_hidden_layers", 10**30),
        ("vocab_size", 10**12),
        ("num_local_experts", 10**12),
        ("head_dim", 10**12),
        ("num_attention_heads", 2**40),
    ],
)
def test_huge_model_fields_are_refused_at_load(field: str, value: int) -> None:
    """A huge integer in a published config is refused naming that field."""
    with pytest.raises(InvalidInputError) as info:
        model_from_dict(_mixtral(**{field: value}), "big.json")
    assert info.value.source == "big.json"
    assert info.value.field == field, str(info.value)


def test_weights_past_the_byte_limit_are_refused() -> None:
    """Every field within its bound, but their product, the weights, past 2^60 bytes."""
    data = _mixtral(hidden_size=2**20, intermediate_size=2**20, num_local_experts=2**12,
                    num_hidden_layers=4096, num_attention_heads=2**12,
                    num_key_value_heads=2**12)  # fmt: skip
    with pytest.raises(InvalidInputError, match="placer can count"):
        model_from_dict(data, "big.json")


def test_module_without_layer_is_refused() -> None:
    """An expert module with no layer cannot be placed on a stage: refused, naming it."""
    data = {
        "format": "placer-modules",
        "hidden_size": 8,
        "top_k": 1,
        "modules": [
            {"name": "a", "kind": "attention", "layer": 0, "params": 8, "flops_per_token": 8},
            {"name": "e", "kind": "expert", "params": 10**12, "flops_per_token": 8},
        ],
    }
    with pytest.raises(InvalidInputError, match="'layer' is missing") as info:
        model_from_dict(data, "mods.json")
    assert info.value.field == "modules.1.layer"


def test_layout_and_config_take_strict_integers() -> None:
    """No quoted number or boolean for an integer (the strict-input rule of _base.py)."""
    for bad in ({"tp": "4"}, {"pp": True}, {"redundant_experts": 1.0}):
        with pytest.raises(ValidationError):
            Layout.model_validate(bad)
    for bad_config in ({"seed": "1"}, {"workers": True}, {"deterministic": 1}):
        with pytest.raises(ValidationError):
            SolveConfig.model_validate(bad_config)


# ------------------------------------------------------------------ time limits


def test_time_limit_is_unknown_never_infeasible() -> None:
    """A clock that has run out before anything is tabulated: status 'unknown' (exit 4),
    never 'infeasible'; the plan verifies."""
    model, cluster = load_model(MIXTRAL), load_cluster(A100)
    budget = Budget(0.001, clock=StepClock(1.0))
    plan = solve(model, cluster, Workload(), SolveConfig(time_limit_s=0.001), budget=budget)
    assert plan.status == "unknown"
    assert plan.infeasibility is None
    assert verify(plan).ok


def test_search_on_1024_gpus_stops_at_the_limit() -> None:
    """Mixtral on 1024 A100s with 0.5 s on a clock moving 1 ms a reading: the search reads
    the clock while enumerating, so it stops; the answer is a plan or 'unknown'."""
    model, cluster = load_model(MIXTRAL), load_cluster(A100, gpus=1024)
    config = SolveConfig(time_limit_s=0.5)
    plan = solve(model, cluster, Workload(), config, budget=Budget(0.5, clock=StepClock(1e-3)))
    assert plan.status in ("optimal", "feasible", "unknown")
    assert not plan.certificate.search.entries or plan.certificate.search.unresolved > 0
    assert verify(plan).ok


def test_deterministic_run_records_the_wall_clock_stop() -> None:
    """Deterministic mode keeps the wall clock as the hard stop, and says when it hit."""
    model, cluster = load_model(SEED_MODEL), load_cluster(SEED_HW)
    config = SolveConfig(time_limit_s=5, deterministic=True)
    budget = Budget(5, deterministic=True, clock=StepClock(10.0))
    plan = solve(model, cluster, Workload(), config, budget=budget)
    assert plan.status == "unknown"
    assert plan.certificate.solver.wall_clock_stop
    assert verify(plan).ok


def test_deterministic_run_within_its_limit_is_not_stopped() -> None:
    """On a clock that never moves, a deterministic solve is limited by CP-SAT's
    deterministic time alone, and records that the wall clock did not stop it."""
    model, cluster = load_model(SEED_MODEL), load_cluster(SEED_HW)
    config = SolveConfig(time_limit_s=30, deterministic=True)
    plan = solve(model, cluster, Workload(), config,
                 budget=Budget(30, deterministic=True, clock=StepClock(0.0)))  # fmt: skip
    assert plan.status in ("optimal", "feasible")
    assert not plan.certificate.solver.wall_clock_stop
    assert verify(plan).ok


# ------------------------------------------------------------------ min-gpus exit codes


def test_min_gpus_nothing_fits_exits_3() -> None:
    """A reserve larger than the usable memory of any GPU: no count fits, exit 3."""
    result = invoke("min-gpus", SEED_MODEL, SEED_HW, "--mem-util", "0.01")
    assert "no GPU count up to" in one_line_error(result, EXIT_INFEASIBLE)


def test_min_gpus_out_of_time_exits_4() -> None:
    """No time to find or prove anything: exit 4, and no minimum claimed."""
    result = invoke("min-gpus", MIXTRAL, A100, "--time-limit", "1e-9")
    assert "time limit" in one_line_error(result, EXIT_NO_PLAN)
    assert "fewest GPUs" not in result.stdout


# ------------------------------------------------------------------ output files


def _solve_to(*outputs: str) -> Result:
    return invoke("solve", SEED_MODEL, SEED_HW, "--quiet", "--time-limit", "60", *outputs)


def test_output_honours_the_umask(tmp_path: Path) -> None:
    """Plans and reports get the mode any new file gets (0644 under umask 022)."""
    old = os.umask(0o022)
    try:
        result = _solve_to("-o", str(tmp_path / "p.json"), "--report", str(tmp_path / "r.md"))
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.stderr
    for name in ("p.json", "r.md"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644


@pytest.mark.parametrize("kind", ["symlink", "input", "report", "device"])
def test_output_refused(kind: str, tmp_path: Path) -> None:
    """A symlink, an input, the --report path or a device is refused before the search,
    and nothing is written."""
    target = tmp_path / "plan.json"
    extra: list[str] = []
    if kind == "symlink":
        (tmp_path / "real.json").write_text("keep")
        target.symlink_to(tmp_path / "real.json")
    elif kind == "input":
        target = Path(SEED_MODEL)
    elif kind == "report":
        extra = ["--report", str(target)]
    else:
        target = Path(os.devnull)
    before = sorted(p.name for p in tmp_path.iterdir())
    line = one_line_error(_solve_to("-o", str(target), *extra))
    assert str(target) in line
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if kind == "symlink":
        assert (tmp_path / "real.json").read_text() == "keep"


def test_ctrl_c_before_any_plan_exits_130_and_writes_nothing(tmp_path: Path) -> None:
    """Ctrl-C during the first CP-SAT solve (simulated): exit 130, no output file."""
    target = tmp_path / "plan.json"

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    with mock.patch("placer.search.outer.solve_layout", interrupted):
        result = _solve_to("-o", str(target))
    assert "interrupted" in one_line_error(result, EXIT_INTERRUPTED)
    assert not target.exists()


def test_extreme_hardware_rates_are_refused_not_overflowed(tmp_path: Path) -> None:
    """The largest memory and slowest rates a hardware file accepts, with a large batch and
    context, make a layer
    take years: the solve exits 2
    saying so, instead of CP-SAT rejecting an overflowing model."""
    hw = json.loads(Path(A100).read_text())
    hw["gpu"]["memory_bytes"] = MAX_MEMORY_BYTES
    hw["gpu"]["hbm_bandwidth_gbps"] = MIN_RATE
    hw["gpu"]["tflops"] = {"bf16": MIN_RATE, "fp16": MIN_RATE}
    path = tmp_path / "slow.json"
    path.write_text(json.dumps(hw))
    big = ["--batch", "10000", "--context", "1000000"]
    line = one_line_error(invoke("solve", MIXTRAL, str(path), *big, "--quiet"))
    assert "estimated time" in line


@pytest.mark.parametrize("value", ["abc", [1], None, True, 10**400])
def test_check_claim_of_the_wrong_type_is_refused(value: object, tmp_path: Path) -> None:
    """A claimed GB figure or GPU count that is not a number in range: exit 2 naming it."""
    claims = json.loads((ROOT / "instances" / "seed-claims.json").read_text())
    kinds = [c["kind"] for c in claims["claims"]]
    for kind in ("memory_per_gpu_gb", "gpus_used"):
        i = kinds.index(kind)
        bad = json.loads(json.dumps(claims))
        bad["claims"][i]["value"] = value
        path = tmp_path / "claims.json"
        path.write_text(json.dumps(bad))
        line = one_line_error(invoke("check", str(path), SEED_MODEL, SEED_HW))
        assert f"field 'claims.{i}.value'" in line and kind in line


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"gpus: [1000000000000]\n", "gpus.0"),
        (b"gpus: {from: 1, to: 1000000000000}\n", "gpus"),
        (b"gpus: [8]\nseed: 2147483648\n", "seed"),
        (b"time_limit: .inf\n", "time_limit"),
        (b'name: "\xff\xfe"\n', None),
    ],
    ids=["huge-gpus", "huge-range", "seed", "inf-limit", "not-utf8"],
)
def test_bad_sweep_spec_is_one_line(body: bytes, field: str | None, tmp_path: Path) -> None:
    """Huge GPU counts, solver settings out of range or a file that is not UTF-8: exit 2."""
    head = f"models: [{SEED_MODEL}]\nhardware: [{SEED_HW}]\n".encode()
    path = tmp_path / "spec.yaml"
    path.write_bytes(head + body)
    line = one_line_error(invoke("sweep", str(path), "--quiet", "--workers", "1"))
    assert str(path) in line
    if field is not None:
        assert f"field '{field}'" in line


def test_sweep_refuses_to_resize_a_mixed_cluster(tmp_path: Path) -> None:
    """'gpus' cannot resize a cluster of several GPU types: exit 2 naming the hardware."""
    mixed = ROOT / "instances" / "hardware" / "mixed-h100-h200.json"
    path = tmp_path / "spec.yaml"
    path.write_text(f"models: [{MIXTRAL}]\nhardware: [{mixed}]\ngpus: [8]\n")
    line = one_line_error(invoke("sweep", str(path), "--quiet", "--workers", "1"))
    assert "field 'hardware.0'" in line


def test_bottleneck_names_communication_when_it_dominates() -> None:
    """TP16 across two nodes: all-reduces over the scale-out link dominate the stage."""
    from placer.evaluate import evaluate

    model, cluster = load_model(MIXTRAL), load_cluster(A100, gpus=16)
    ev = evaluate(model, cluster, Workload(), Layout(tp=16))
    assert ev.estimates is not None
    slow = max(ev.estimates.stages, key=lambda s: s.total_s)
    assert slow.comm_s > max(slow.compute_s, slow.experts_s, slow.handoff_s)
    assert "communication" in ev.estimates.bottleneck


def test_layout_larger_than_the_cluster_is_refused_by_the_tables() -> None:
    """Tabulating a layout on more GPUs than the cluster has names both counts."""
    from placer.exceptions import LayoutError
    from placer.search.tables import build_tables

    model, cluster = load_model(MIXTRAL), load_cluster(A100, gpus=4)
    with pytest.raises(LayoutError, match="needs 8 GPUs, the cluster has 4"):
        build_tables(model, cluster, Workload(), Layout(tp=8), "throughput")


@pytest.mark.parametrize(
    ("change", "field"),
    [({"layer": 2 * 10**137}, "modules.1.layer"), ({"bytes": 4 * 10**21}, "modules.1.bytes")],
    ids=["huge-layer", "huge-bytes"],
)
def test_huge_module_figures_name_the_module_field(change: dict[str, int], field: str) -> None:
    """A module list's huge layer index or byte count names that module's own field (not a
    num_layers or params the file does not have). Found by the fuzz campaign."""
    module = {"name": "e", "kind": "expert", "layer": 0, "bytes": 16, "flops_per_token": 8}
    module.update(change)
    data = {
        "format": "placer-modules",
        "hidden_size": 8,
        "top_k": 1,
        "modules": [
            {"name": "a", "kind": "attention", "layer": 0, "bytes": 16, "flops_per_token": 8},
            module,
        ],
    }
    with pytest.raises(InvalidInputError) as info:
        model_from_dict(data, "mods.json")
    assert info.value.field == field, str(info.value)
