"""Fuzzing placer's inputs: generated files either load or fail with one message naming them.

The cases come from :mod:`tests.strategies` (bundled Hugging Face configs shrunk and
mutated, placer's own model format, module lists, hardware files, workloads). The
properties, each a plain ``check_*`` function so ``benchmarks/fuzz_campaign.py`` runs
them at scale too:

- ``check_load``: a loader returns a spec or raises :class:`InvalidInputError` naming
  the source; its ``field``, when set, is a field of the file (or a missing one the
  message says is missing); cases drawn to be valid load, cases broken on purpose
  fail naming the broken field; a loaded model can be inspected (active <= total).
- ``check_cli_inspect``: ``placer inspect FILE`` exits 0 or 2, and on 2 prints exactly
  the library's message as one ``placer: error:`` line; never a traceback.
- ``check_cli_evaluate``: ``placer evaluate`` of a tiny model on a generated hardware
  file and workload exits 0, 2 or 3 with the same discipline.
- ``check_round_trip``: a loaded model dumped in placer's own format, a cluster dumped
  as a hardware file and a workload dumped as a workload file load back equal.
- ``check_solve``: on tiny instances ``solve`` gives a plan that ``verify`` accepts;
  ``infeasible`` means a brute force over every legal layout, split and slot count
  finds nothing; ``optimal`` means it finds exactly the plan's value.
- ``check_cli_solve_verify``: ``placer solve -o plan.json`` then ``placer verify``.

Every bug the fuzzer found has a minimal reproducer below (``test_bug_*``), which now
passes. The properties excuse one class of input only, a correct rejection whose message
names a field placer derives or renames rather than the file's own (see
:func:`known_limitation`); the campaign counts those as "known".
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from placer.cli import main
from placer.cluster import ClusterSpec
from placer.collectives import use_engine
from placer.config import SolveConfig
from placer.exceptions import InvalidInputError
from placer.load import cluster_from_dict, load_cluster, load_model, load_workload, model_from_dict
from placer.model import ModelSpec
from placer.model_report import inspect_model
from placer.rules import get_profile
from placer.search import fixes
from placer.search.outer import solve
from placer.search.space import enumerate_layouts
from placer.search.tables import build_tables
from placer.verify import verify
from placer.workload import Workload
from tests import strategies as S
from tests.test_solve_property import MIN_GPUS_CAP, layout_brute_force

SOURCE = "fuzz.json"

#: Shared settings: reproducible (derandomize), no per-example deadline.
BASE = settings(
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)


def examples(n: int) -> settings:
    """:data:`BASE` with ``n`` examples."""
    return settings(BASE, max_examples=n)


def log(text: str) -> None:
    """Hypothesis' note inside a property, else nothing (the campaign runs these too)."""
    if currently_in_test_context():
        note(text)


def tally(text: str) -> None:
    """Hypothesis' event inside a property, else nothing."""
    if currently_in_test_context():
        event(text)


#: ModelSpec fields a published config does not hold but placer derives (head_dim from
#: hidden_size / num_heads or from the MLA widths, Grok's expert width from emb_size): an
#: error on one names the derived field (a known limitation: the file's fields behind it
#: are in the message's numbers, not named).
DERIVED_FIELDS = {"head_dim", "attention.head_dim", "expert_intermediate_size",
                  "moe.expert_intermediate_size"}

#: Messages of errors where no single field applies (the file as a whole is wrong).
NO_FIELD_APPLIES = ("expected a JSON object at the top level", "not valid JSON",
                    "file not found", "cannot read", "is a directory")


#: (family or "*", field placer reports) -> the field as the config spells it.
MISNAMED: dict[tuple[str, str], str] = {
    ("dbrx", "max_position_embeddings"): "max_seq_len",
    ("grok1", "max_position_embeddings"): "sequence_len",
    ("qwen2_moe", "shared_intermediate_size"): "shared_expert_intermediate_size",
    ("qwen3_moe", "shared_intermediate_size"): "shared_expert_intermediate_size",
    ("*", "name"): "_name_or_path",
}


def _in(data: Any, fld: str) -> bool:
    return _resolves(data, fld.split("."))


def known_limitation(case: S.Case, exc: InvalidInputError) -> str | None:
    """``hf-derived-field`` or ``hf-field-misnamed`` when ``exc`` rightly rejects ``case``
    but names a field placer derives or renames, not one of the file; None otherwise."""
    data = case.data
    if not isinstance(data, dict) or exc.field is None or _in(data, exc.field):
        return None
    fam = case.family
    for key in ((fam or "", exc.field), ("*", exc.field)):
        if key in MISNAMED and _in(data, MISNAMED[key]):
            return "hf-field-misnamed"
    if fam == "llama4" and _in(data, f"text_config.{exc.field}"):
        return "hf-field-misnamed"
    if exc.field in DERIVED_FIELDS:
        return "hf-derived-field"
    return None


# ------------------------------------------------------------------ helpers


def _resolves(data: Any, parts: list[str]) -> bool:
    for p in parts:
        if isinstance(data, dict) and p in data:
            data = data[p]
        elif isinstance(data, list) and p.isdigit() and int(p) < len(data):
            data = data[int(p)]
        else:
            return False
    return True


def field_is_in_file(data: Any, fld: str, message: str) -> bool:
    """Whether ``fld`` names a field of ``data`` (a missing last part only if the message
    says it is missing, required, or None)."""
    parts = fld.split(".")
    if _resolves(data, parts):
        return True
    absent = (
        "missing" in message
        or "required" in message.lower()
        or f"'{parts[-1]}' is None" in message
        or "non-empty" in message
    )
    return absent and _resolves(data, parts[:-1])


def load_case(case: S.Case, folder: Path) -> Any:
    """Load ``case`` with the library: model and hardware from the dict, workloads from a file
    (``load_workload`` reads files), all with source :data:`SOURCE` or the file's path."""
    if case.kind == "model":
        return model_from_dict(case.data, SOURCE)
    if case.kind == "hardware":
        return cluster_from_dict(case.data, SOURCE)
    path = folder / SOURCE
    path.write_text(S.dumps(case.data))
    return load_workload(path)


def case_source(case: S.Case, folder: Path) -> str:
    """The source name errors of ``case`` must carry (see :func:`load_case`)."""
    return str(folder / SOURCE) if case.kind == "workload" else SOURCE


def assert_names_source(exc: InvalidInputError, source: str) -> None:
    """One line, starting with the source, with the field quoted when one is set."""
    text = str(exc)
    assert exc.source == source, (exc.source, text)
    assert text.startswith(f"{source}: "), text
    assert "\n" not in text and "\r" not in text, text
    if exc.field is not None:
        assert exc.field, text
        assert f"field '{exc.field}'" in text, text


# ------------------------------------------------------------------ property: loaders


def check_load(case: S.Case, folder: Path) -> str:
    """Load ``case``; any outcome but a spec or a proper InvalidInputError fails.

    Returns ``loaded``, ``rejected`` or ``known:<limitation>``.
    """
    log(f"{case.label} {case.mutations}")
    source = case_source(case, folder)
    try:
        spec = load_case(case, folder)
    except InvalidInputError as exc:
        limitation = known_limitation(case, exc)
        if limitation:
            return f"known:{limitation}"
        assert_names_source(exc, source)
        if case.expect is not None:
            assert not case.expect.loads, f"a valid case was rejected: {exc}"
        if exc.field is None and not any(m in exc.detail for m in NO_FIELD_APPLIES):
            raise AssertionError(f"no field named: {exc}") from None
        if exc.field is not None:
            assert field_is_in_file(case.data, exc.field, str(exc)), (
                f"field '{exc.field}' is not in the file: {exc}"
            )
        if case.expect is not None:
            assert case.expect.accepts_field(exc.field), (
                f"expected field {case.expect.field or case.expect.fields}, got {exc}"
            )
            if case.expect.fragment:
                assert case.expect.fragment in str(exc), str(exc)
        return "rejected"
    except Exception as exc:
        raise AssertionError(f"{type(exc).__name__} instead of InvalidInputError: {exc}") from exc
    if case.expect is not None:
        assert case.expect.loads, f"a broken case loaded (expected {case.expect})"
    if isinstance(spec, ModelSpec):
        report = inspect_model(spec)
        assert 0 <= report.active_params <= report.total_params, report
        assert report.num_layers == len(spec.layers)
    elif isinstance(spec, ClusterSpec):
        assert spec.num_gpus >= 1
    return "loaded"


@examples(800)
@given(S.model_cases())
def test_model_files_load_or_name_the_problem(case: S.Case) -> None:
    """Model contents load, or raise InvalidInputError naming the source and a real field."""
    with tempfile.TemporaryDirectory() as d:
        tally(check_load(case, Path(d)))


@examples(400)
@given(S.hardware_cases())
def test_hardware_files_load_or_name_the_problem(case: S.Case) -> None:
    """Hardware contents load, or raise InvalidInputError naming the source and a real field."""
    with tempfile.TemporaryDirectory() as d:
        tally(check_load(case, Path(d)))


@examples(300)
@given(S.workload_cases())
def test_workload_files_load_or_name_the_problem(case: S.Case) -> None:
    """Workload files load, or raise InvalidInputError naming the file and a real field."""
    with tempfile.TemporaryDirectory() as d:
        tally(check_load(case, Path(d)))


# ------------------------------------------------------------------ property: CLI


def invoke(*args: str) -> Result:
    """``placer ARGS`` in-process, exceptions caught (a traceback would be a finding)."""
    return CliRunner().invoke(main, list(args), catch_exceptions=True)


def assert_clean_exit(result: Result, allowed: set[int]) -> None:
    """Exit code in ``allowed``; no traceback; on 2 exactly one ``placer: error:`` line."""
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), (
        f"{type(exc).__name__}: {exc} escaped the command (exit {result.exit_code})"
    )
    assert result.exit_code in allowed, (result.exit_code, result.stderr[-500:])
    assert "Traceback" not in result.stdout and "Traceback" not in result.stderr
    if result.exit_code == 2:
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("placer: error: "), result.stderr
        assert result.stdout == "", result.stdout


def library_inspect(path: Path) -> InvalidInputError | None:
    """What the library says about a model file: None if it loads and inspects."""
    try:
        inspect_model(load_model(path))
    except InvalidInputError as exc:
        return exc
    return None


def check_cli_inspect(case: S.Case, data: bytes, as_json: bool, folder: Path) -> str:
    """``placer inspect`` on a file holding ``data``: exit 0 or 2, the library's message."""
    path = folder / "model.json"
    path.write_bytes(data)
    try:
        expected = library_inspect(path)
    except Exception as exc:
        raise AssertionError(f"library: {type(exc).__name__}: {exc}") from exc
    result = invoke("inspect", str(path), *(["--json"] if as_json else []))
    assert_clean_exit(result, {0, 2})
    if expected is None:
        assert result.exit_code == 0, result.stderr
        if as_json:
            doc = json.loads(result.stdout)
            assert doc["num_layers"] >= 1
        return "exit 0"
    assert result.exit_code == 2
    assert result.stderr == f"placer: error: {expected}\n"
    assert str(path) in result.stderr
    limitation = known_limitation(case, expected)
    return f"known:{limitation}" if limitation else "exit 2"


@st.composite
def inspect_inputs(draw: st.DrawFn) -> tuple[S.Case, bytes, bool]:
    """A model case, the bytes of a file holding it (maybe damaged), and --json or not."""
    case = draw(S.model_cases())
    return case, draw(S.file_texts(case)), draw(st.booleans())


@examples(400)
@given(inspect_inputs())
def test_cli_inspect_exits_0_or_2(tmp_path: Path, inputs: tuple[S.Case, bytes, bool]) -> None:
    """`placer inspect FILE` exits 0 or 2 with one error line, never a traceback."""
    tally(check_cli_inspect(*inputs, tmp_path))


TINY_MODEL = {
    "format": "placer-model", "name": "tiny", "dtype": "bf16", "expert_dtype": "bf16",
    "num_layers": 2, "hidden_size": 8, "vocab_size": 16,
    "attention": {"kind": "gqa", "num_heads": 4, "num_kv_heads": 2, "head_dim": 2},
    "moe": {"num_experts": 4, "top_k": 2, "expert_intermediate_size": 4},
    "layers": [{"mixer": "attention", "ffn": "moe"}] * 2,
}  # fmt: skip


def check_cli_evaluate(hw: S.Case, wl: S.Case, degrees: tuple[int, int, int],
                       folder: Path) -> str:
    """``placer evaluate TINY HARDWARE --workload W --tp --pp --ep``: exit 0, 2 or 3.

    Exit 2 must name the hardware file when it does not load, else the workload file when
    that does not load.
    """
    model_path, hw_path, wl_path = folder / "m.json", folder / "hw.json", folder / "w.json"
    model_path.write_text(json.dumps(TINY_MODEL))
    hw_path.write_text(S.dumps(hw.data))
    wl_path.write_text(S.dumps(wl.data))
    cluster: ClusterSpec | None = None
    workload: Workload | None = None
    with contextlib.suppress(InvalidInputError):
        cluster = load_cluster(hw_path)
    with contextlib.suppress(InvalidInputError):
        workload = load_workload(wl_path)
    if cluster is not None and cluster.num_gpus > 4096:
        return "skipped: more than 4096 GPUs"  # evaluate allocates per GPU
    tp, pp, ep = degrees
    result = invoke("evaluate", str(model_path), str(hw_path), "--workload", str(wl_path),
                    "--tp", str(tp), "--pp", str(pp), "--ep", str(ep))
    assert_clean_exit(result, {0, 2, 3})
    if result.exit_code == 2 and cluster is None:
        assert str(hw_path) in result.stderr
    elif result.exit_code == 2 and workload is None:
        assert str(wl_path) in result.stderr
    elif cluster is not None and workload is not None:
        assert result.exit_code in (0, 2, 3)  # 2: the layout does not suit the cluster
    return f"exit {result.exit_code}"


DEGREES = st.tuples(st.sampled_from([1, 2]), st.sampled_from([1, 2]), st.sampled_from([1, 2]))
EVAL_HARDWARE = st.one_of(S.hardware_cases(), S.valid_cases("hardware"))
EVAL_WORKLOADS = st.one_of(S.workload_cases(), S.valid_cases("workload"))


@examples(200)
@given(EVAL_HARDWARE, EVAL_WORKLOADS, DEGREES)
def test_cli_evaluate_exits_0_2_or_3(tmp_path: Path, hw: S.Case, wl: S.Case,
                                     degrees: tuple[int, int, int]) -> None:
    """`placer evaluate` on generated hardware and workload files exits 0, 2 or 3, no traceback."""
    tally(check_cli_evaluate(hw, wl, degrees, tmp_path))


# ------------------------------------------------------------------ property: round trip


def check_round_trip(case: S.Case, folder: Path) -> str:
    """A case that loads is dumped in placer's own format and loads back equal."""
    try:
        spec = load_case(case, folder)
    except Exception:
        return "did not load"
    if isinstance(spec, ModelSpec):
        doc = spec.model_dump(mode="json")
        doc["format"] = "placer-model"
        path = folder / "again.json"
        path.write_text(json.dumps(doc))
        again = load_model(path)
        skip = {"format", "source"}
        assert again.model_dump(exclude=skip) == spec.model_dump(exclude=skip)
        assert inspect_model(again).total_params == inspect_model(spec).total_params
        return "model"
    if isinstance(spec, ClusterSpec):
        assert ClusterSpec.model_validate(spec.model_dump()) == spec
        path = folder / "again.json"
        path.write_text(json.dumps(spec.model_dump(mode="json")))
        assert load_cluster(path) == spec
        if len(spec.groups) == 1:
            assert load_cluster(path, gpus=spec.num_gpus) == spec
        return "cluster"
    assert isinstance(spec, Workload)
    path = folder / "again.json"
    path.write_text(json.dumps(spec.model_dump(mode="json")))
    assert load_workload(path) == spec
    assert spec.kv_tokens >= 1
    return "workload"


@examples(500)
@given(S.any_cases())
def test_loaded_inputs_round_trip(case: S.Case) -> None:
    """Loaded models, clusters and workloads dumped in placer's formats load back equal."""
    with tempfile.TemporaryDirectory() as d:
        tally(check_round_trip(case, Path(d)))


# ------------------------------------------------------------------ property: solve


def solve_config(inst: S.SolveInstance) -> SolveConfig:
    """Tiny solves: two seconds, one worker."""
    return SolveConfig(objective=inst.objective, profile=inst.profile, time_limit_s=2,
                       workers=1)


def load_instance(inst: S.SolveInstance) -> tuple[ModelSpec, ClusterSpec, Workload]:
    """The specs of a solve instance (its files are valid by construction)."""
    model = model_from_dict(inst.model, "model.json")
    cluster = cluster_from_dict(inst.hardware, "hardware.json")
    workload = load_workload(None, **inst.workload)
    return model, cluster, workload


def brute_force(
    model: ModelSpec, cluster: ClusterSpec, workload: Workload, objective: str, profile: str
) -> int | None:
    """The best objective over every legal layout, split and slot count that fits (None if
    nothing fits); for ``gpus`` the fewest GPUs of a fitting layout."""
    best: int | None = None
    for layout in enumerate_layouts(model, cluster, get_profile(profile)).legal:
        t = build_tables(model, cluster, workload, layout,
                         "throughput" if objective == "gpus" else objective)
        value = layout_brute_force(t, model.num_layers,
                                   "throughput" if objective == "gpus" else objective)
        if value is None:
            continue
        if objective == "gpus":
            value = layout.gpus
        best = value if best is None else min(best, value)
    return best


def check_solve(inst: S.SolveInstance) -> str:
    """solve, verify, and compare with the brute force."""
    log(f"{inst.label}, objective {inst.objective}, profile {inst.profile}")
    model, cluster, workload = load_instance(inst)
    with mock.patch.object(fixes, "MAX_GPUS_SEARCHED", MIN_GPUS_CAP):
        plan = solve(model, cluster, workload, solve_config(inst))
    report = verify(plan)
    assert report.ok, "\n".join(report.violations)
    assert plan.status in ("optimal", "feasible", "infeasible", "unknown"), plan.status
    # The brute force prices the collectives of the profile's engine, as solve does.
    with use_engine(inst.profile):
        best = brute_force(model, cluster, workload, inst.objective, inst.profile)
    log(f"status {plan.status}, value {plan.objective.value_units}, brute force {best}")
    if plan.status == "infeasible":
        assert best is None, f"solve says infeasible, brute force found {best}"
    elif plan.status in ("optimal", "feasible"):
        value = plan.objective.value_units
        assert best is not None and value is not None
        assert best <= value, f"brute force {best} beats the plan's {value}"
        if plan.status == "optimal":
            assert best == value, f"optimal {value} but brute force {best}"
    return plan.status


@examples(250)
@given(S.solve_instances())
def test_solve_verifies_and_matches_brute_force(inst: S.SolveInstance) -> None:
    """Tiny generated instances: verify accepts the plan; optimal/infeasible match brute force."""
    tally(check_solve(inst))


def check_cli_solve_verify(inst: S.SolveInstance, folder: Path) -> str:
    """``placer solve -o plan.json`` exits 0, 3 or 4; the plan file passes ``placer verify``."""
    m, h, w, plan = (folder / n for n in ("m.json", "h.json", "w.json", "plan.json"))
    m.write_text(json.dumps(inst.model))
    h.write_text(json.dumps(inst.hardware))
    w.write_text(json.dumps(inst.workload))
    plan.unlink(missing_ok=True)
    with mock.patch.object(fixes, "MAX_GPUS_SEARCHED", MIN_GPUS_CAP):
        result = invoke("solve", str(m), str(h), "--workload", str(w), "--objective",
                        inst.objective, "--profile", inst.profile, "--time-limit", "2",
                        "--workers", "1", "--quiet", "-o", str(plan))
    assert_clean_exit(result, {0, 3, 4})
    assert plan.exists()
    checked = invoke("verify", str(plan), "--model", str(m), "--hardware", str(h))
    assert_clean_exit(checked, {0})
    return f"solve exit {result.exit_code}"


@examples(40)
@given(S.solve_instances())
def test_cli_solve_then_verify(tmp_path: Path, inst: S.SolveInstance) -> None:
    """`placer solve -o plan.json` exits 0/3/4 and `placer verify plan.json` exits 0."""
    tally(check_cli_solve_verify(inst, tmp_path))


# ------------------------------------------------------------------ bug reproducers


def _hf(stem: str, **changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(json.dumps(S.HF_CONFIGS[stem]))
    raw.update(changes)
    return raw


def test_bug_deepseek_n_shared_experts_zero_loads() -> None:
    """DeepSeek-V3 with n_shared_experts 0 (the default placer assumes) loads, no shared."""
    model = model_from_dict(_hf("deepseek-v3", n_shared_experts=0), "ds.json")
    assert model.moe is not None and model.moe.num_shared_experts == 0


def _llama4(**changes: Any) -> dict[str, Any]:
    raw = _hf("llama-4-scout-17b-16e")
    raw["text_config"].update(changes)
    return raw


@pytest.mark.parametrize(
    ("raw", "file_field"),
    [
        pytest.param(_hf("dbrx", max_seq_len=0), "max_seq_len", id="dbrx-max-seq-len"),
        pytest.param(_hf("grok-1", sequence_len="8192"), "sequence_len", id="grok-sequence-len"),
        pytest.param(_hf("qwen1.5-moe-a2.7b", shared_expert_intermediate_size=-5),
                     "shared_expert_intermediate_size", id="qwen-shared-width"),
        pytest.param(_hf("mixtral-8x7b", _name_or_path=7), "_name_or_path", id="name-or-path"),
        pytest.param(_llama4(head_dim="x"), "text_config.head_dim", id="llama4-head-dim"),
        pytest.param(_llama4(max_position_embeddings=0), "text_config.max_position_embeddings",
                     id="llama4-max-position"),
    ],
)
def test_bug_hf_errors_name_the_config_field(raw: dict[str, Any], file_field: str) -> None:
    """A bad value of a field placer renames is reported under the config's own field name."""
    with pytest.raises(InvalidInputError) as info:
        model_from_dict(raw, "cfg.json")
    assert info.value.field == file_field


def test_bug_grok_zero_widening_factor_names_it() -> None:
    """Grok-1 with widening_factor 0 is rejected naming 'widening_factor'."""
    with pytest.raises(InvalidInputError) as info:
        model_from_dict(_hf("grok-1", widening_factor=0.0), "grok.json")
    assert info.value.field == "widening_factor"


def test_bug_grok_huge_widening_factor_exits_2(tmp_path: Path) -> None:
    """`placer inspect` of Grok-1 with widening_factor 1e308 exits 2, not a traceback."""
    path = tmp_path / "grok.json"
    path.write_text(json.dumps(_hf("grok-1", widening_factor=1e308)))
    assert_clean_exit(invoke("inspect", str(path)), {2})


def test_bug_module_list_top_k_above_experts_is_rejected() -> None:
    """A module list with one expert per layer and top_k 2 is rejected naming 'top_k'."""
    raw = {
        "format": "placer-modules", "hidden_size": 8, "top_k": 2,
        "modules": [
            {"name": "a", "kind": "attention", "layer": 0, "bytes": 2, "flops_per_token": 0},
            {"name": "e", "kind": "expert", "layer": 0, "bytes": 2, "flops_per_token": 2},
        ],
    }  # fmt: skip
    with pytest.raises(InvalidInputError) as info:
        model_from_dict(raw, "m.json")
    assert info.value.field == "top_k"


def _tiny_hardware(gpu: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "one", "gpus": 1, "gpus_per_node": 1, "scale_up_domain": 1,
        "gpu": {"name": "g", "memory_bytes": 2**34, "hbm_bandwidth_gbps": 100.0,
                "tflops": {"bf16": 10.0}, **(gpu or {})},
        "scale_up": {"bandwidth_gbps": 10.0, "latency_us": 1.0},
        "scale_out": {"bandwidth_gbps": 1.0, "latency_us": 5.0},
    }  # fmt: skip
    raw.update(changes)
    return raw


@pytest.mark.parametrize(
    ("kind", "raw", "fields"),
    [
        pytest.param("model", {**TINY_MODEL, "num_layers": 3}, ("num_layers", "layers"),
                     id="num-layers-vs-layers"),
        pytest.param("model", {**TINY_MODEL, "vocab_size": 0}, ("vocab_size",), id="vocab-0"),
        pytest.param("model", {**TINY_MODEL, "moe": None}, ("moe",), id="moe-missing"),
        pytest.param("hardware", {**_tiny_hardware(), "gpus_per_node": 2,
                                  "scale_up_domain": 3}, ("scale_up_domain", "gpus_per_node"),
                     id="domain-vs-node"),
        pytest.param("hardware", {**_tiny_hardware(), "gpus_per_node": 4,
                                  "scale_up_domain": 2}, ("node_link",), id="no-node-link"),
    ],
)
def test_bug_cross_field_checks_name_a_field(
    kind: str, raw: dict[str, Any], fields: tuple[str, ...]
) -> None:
    """Cross-field checks of models and clusters name one of the fields involved."""
    load = model_from_dict if kind == "model" else cluster_from_dict
    with pytest.raises(InvalidInputError) as info:
        load(raw, "x.json")
    assert info.value.field in fields, str(info.value)


def _cli_on(tmp_path: Path, command: str, hardware: dict[str, Any]) -> Result:
    model, hw = tmp_path / "m.json", tmp_path / "hw.json"
    model.write_text(json.dumps(TINY_MODEL))
    hw.write_text(json.dumps(hardware))
    if command == "evaluate":
        return invoke("evaluate", str(model), str(hw))
    return invoke("solve", str(model), str(hw), "--time-limit", "2", "--workers", "1", "--quiet")


def test_tiny_hardware_is_fine(tmp_path: Path) -> None:
    """The hardware the bug reproducers below start from evaluates (0) and solves (0)."""
    for command in ("evaluate", "solve"):
        assert_clean_exit(_cli_on(tmp_path, command, _tiny_hardware()), {0})


@pytest.mark.parametrize("command", ["evaluate", "solve"])
def test_bug_fp8_only_gpu_does_not_crash(tmp_path: Path, command: str) -> None:
    """A GPU with only fp8 TFLOPS: evaluate/solve exit 0, 2 or 3 (not a traceback)."""
    result = _cli_on(tmp_path, command, _tiny_hardware({"tflops": {"fp8": 10.0}}))
    assert_clean_exit(result, {0, 2, 3})


@pytest.mark.parametrize("command", ["evaluate", "solve"])
def test_bug_huge_memory_does_not_crash(tmp_path: Path, command: str) -> None:
    """memory_bytes 2**63: evaluate/solve exit 0, 2 or 3 (not a traceback)."""
    result = _cli_on(tmp_path, command, _tiny_hardware({"memory_bytes": 2**63}))
    assert_clean_exit(result, {0, 2, 3})


@pytest.mark.parametrize(
    "hardware",
    [
        pytest.param(_tiny_hardware({"hbm_bandwidth_gbps": 1e-300}), id="hbm-1e-300"),
        pytest.param(_tiny_hardware({"tflops": {"bf16": 1e-300}}), id="tflops-1e-300"),
        pytest.param(
            _tiny_hardware(gpus=2, gpus_per_node=2, scale_up_domain=2,
                           scale_up={"bandwidth_gbps": 10.0, "latency_us": 1e300}),
            id="latency-1e300",
        ),
    ],
)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_bug_extreme_figures_do_not_crash_solve(tmp_path: Path, hardware: dict[str, Any]) -> None:
    """Valid but extreme hardware figures: solve exits 0, 2, 3 or 4 (not exit 1)."""
    assert_clean_exit(_cli_on(tmp_path, "solve", hardware), {0, 2, 3, 4})


@pytest.mark.parametrize("command", ["evaluate", "solve"])
def test_bug_huge_workload_does_not_crash(tmp_path: Path, command: str) -> None:
    """batch 10**12 x prompt 10**12 tokens: rejected by the workload's bounds (exit 2, named),
    never an overflow."""
    model, hw = tmp_path / "m.json", tmp_path / "hw.json"
    model.write_text(json.dumps(TINY_MODEL))
    hw.write_text(json.dumps(_tiny_hardware()))
    extra = ["--time-limit", "2", "--workers", "1", "--quiet"] if command == "solve" else []
    result = invoke(command, str(model), str(hw), "--batch", str(10**12), "--prompt-len",
                    str(10**12), *extra)
    assert_clean_exit(result, {2})


def test_bug_subnormal_bandwidth_does_not_crash_evaluate(tmp_path: Path) -> None:
    """hbm_bandwidth_gbps 5e-324 (valid: positive): evaluate exits 0, 2 or 3 (not exit 1)."""
    result = _cli_on(tmp_path, "evaluate", _tiny_hardware({"hbm_bandwidth_gbps": 5e-324}))
    assert_clean_exit(result, {0, 2, 3})


def test_bug_solve_respects_time_limit_on_1024_gpus() -> None:
    """Mixtral on 1024 A100s with --time-limit 0.5 ends with a plan or an honest 'unknown'
    (exit 4), never 'infeasible'. The timeout only catches a hang; it measures nothing (the
    stop itself is tested on an injected clock in test_limits.py)."""
    result = subprocess.run(
        [sys.executable, "-m", "placer.cli", "solve", str(S.MODELS_DIR / "mixtral-8x7b.json"),
         str(S.HARDWARE_DIR / "dgx-a100-80gb.json"), "--gpus", "1024", "--time-limit", "0.5",
         "--quiet"],
        capture_output=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode in (0, 4), result.stderr


# ------------------------------------------------------------------ property: CLI options

#: Options of each command that take a value, drawn one at a time over the whole range.
OPTIONS: dict[str, tuple[str, ...]] = {
    "solve": ("--batch", "--prompt-len", "--output-len", "--context", "--mem-util",
              "--time-limit", "--seed", "--workers", "--gpus", "--nodes", "--compare"),
    "evaluate": ("--tp", "--pp", "--ep", "--etp", "--dp-attn", "--layers-per-stage",
                 "--redundant-experts", "--batch", "--context", "--mem-util", "--gpus"),
    "min-gpus": ("--time-limit", "--batch", "--context", "--mem-util"),
}  # fmt: skip
#: Time limit of a drawn solve or min-gpus run unless the drawn option is --time-limit.
OPTION_TIME_LIMIT = 2.0
#: Text a user might type for any option.
ODD_OPTION_TEXT = ["nan", "inf", "-inf", "1e400", "-0", "", "abc", "²", "0x10", "1_000",
                   "tp=²", "tp=0", "tp=4,pp=99999999", "dp=2", "1,2,3", "0,1", "-1,-1"]


@st.composite
def option_runs(draw: st.DrawFn) -> tuple[str, str, str]:
    """(command, option, value as typed): any magnitude as text, or odd text."""
    command = draw(st.sampled_from(sorted(OPTIONS)))
    option = draw(st.sampled_from(OPTIONS[command]))
    number = draw(S.magnitudes())
    text = draw(st.one_of(st.just(str(number)), st.just(repr(number)),
                          st.sampled_from(ODD_OPTION_TEXT)))
    return command, option, text


def check_cli_option(run: tuple[str, str, str], folder: Path) -> str:
    """``placer COMMAND TINY SEED-HW OPTION VALUE``: exit 0, 2, 3 or 4, no traceback, one
    line on exit 2. Returns the exit code, and notes a run past its limit + 2 s (the campaign
    reports those; a test does not assert on speed)."""
    command, option, value = run
    log(f"{command} {option}={value!r}")
    model = folder / "tiny.json"
    model.write_text(json.dumps(TINY_MODEL))
    args = [command, str(model), str(S.HARDWARE_DIR / "seed-16x32gb.json"), f"{option}={value}"]
    limit = OPTION_TIME_LIMIT
    if command != "evaluate" and option != "--time-limit":
        args += ["--time-limit", str(limit)]
    elif option == "--time-limit":
        with contextlib.suppress(ValueError):
            limit = float(value)
    if command == "solve":
        args.append("--quiet")
    start = time.monotonic()
    result = invoke(*args)
    elapsed = time.monotonic() - start
    assert_clean_exit(result, {0, 2, 3, 4})
    late = command != "evaluate" and result.exit_code != 2 and elapsed > limit + 2
    return f"exit {result.exit_code}" + (" (past the limit + 2 s)" if late else "")


@examples(60)
@given(option_runs())
def test_cli_options_exit_cleanly(tmp_path: Path, run: tuple[str, str, str]) -> None:
    """Any value of any option: exit 0, 2, 3 or 4 with one error line, never a traceback."""
    tally(check_cli_option(run, tmp_path))


# ------------------------------------------------------------------ property: balance options

#: Options of ``placer balance`` that take a value.
BALANCE_OPTIONS = ("--gpus", "--nodes", "--slots", "--groups", "--workers", "--time-limit",
                   "--seed")  # fmt: skip
BALANCE_LOADS = S.ROOT / "instances" / "loads" / "mixtral-c4.json"


@st.composite
def balance_runs(draw: st.DrawFn) -> tuple[str, str]:
    """(option, value as typed) of ``placer balance``: any magnitude as text, or odd text."""
    option = draw(st.sampled_from(BALANCE_OPTIONS))
    number = draw(S.magnitudes())
    text = draw(st.one_of(st.just(str(number)), st.just(repr(number)),
                          st.sampled_from(ODD_OPTION_TEXT)))
    return option, text


def check_balance_option(run: tuple[str, str], folder: Path) -> str:
    """``placer balance LOADS --gpus 4 OPTION=VALUE``: exit 0 or 2, no traceback, one line on
    exit 2; deterministic time keeps a drawn run short on any machine."""
    option, value = run
    log(f"balance {option}={value!r}")
    args = ["balance", str(BALANCE_LOADS), "--quiet", "--deterministic"]
    if option != "--gpus":
        args += ["--gpus", "4"]
    if option != "--time-limit":
        args += ["--time-limit", str(OPTION_TIME_LIMIT)]
    result = invoke(*args, f"{option}={value}")
    assert_clean_exit(result, {0, 2})
    return f"exit {result.exit_code}"


@examples(20)
@given(balance_runs())
def test_balance_options_exit_cleanly(tmp_path: Path, run: tuple[str, str]) -> None:
    """Any value of any balance option: exit 0 or 2 with one error line, never a traceback."""
    tally(check_balance_option(run, tmp_path))


# ------------------------------------------------------------------ property: plan files

#: A plan as ``placer solve`` wrote it (the tamper table's starting point, docs/certificate.md).
STORED_PLAN = S.ROOT / "tests" / "data" / "plans" / "seed-toy-8gpus.plan.json"


def _plan_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every field of a plan (first and last item of each list) as a path of keys."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _plan_paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i in sorted({0, len(value) - 1}) if value else []:
            out += _plan_paths(value[i], (*prefix, i))
    return out


_PLAN = json.loads(STORED_PLAN.read_text(encoding="utf-8"))
PLAN_FIELDS = [p for p in _plan_paths(_PLAN) if p]


@st.composite
def plan_mutations(draw: st.DrawFn) -> tuple[tuple[Any, ...], Any, bool]:
    """(field, new value, delete instead): any magnitude, type or shape."""
    where = draw(st.sampled_from(PLAN_FIELDS))
    value = draw(st.one_of(S.magnitudes(), st.booleans(), st.none(), st.text(max_size=4),
                           st.lists(st.integers(-3, 40), max_size=3), st.just({})))
    return where, value, draw(st.booleans())


def check_plan_mutation(run: tuple[tuple[Any, ...], Any, bool], folder: Path) -> str:
    """``placer verify`` and ``placer export`` on a mutated plan: verify exits 0, 2 or 5;
    export exits 0 only when verify does, never a traceback."""
    where, value, delete = run
    log(f"plan {where} {'deleted' if delete else repr(value)[:60]}")
    plan: Any = json.loads(STORED_PLAN.read_text(encoding="utf-8"))
    parent = plan
    for key in where[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[where[-1]]
    else:
        parent[where[-1]] = value
    path = folder / "plan.json"
    try:
        path.write_text(json.dumps(plan), encoding="utf-8")
    except ValueError:  # a float json cannot write (nan stays writable): nothing to check
        return "not writable"
    checked = invoke("verify", str(path))
    assert_clean_exit(checked, {0, 2, 5})
    exported = invoke("export", str(path), "--engine", "vllm")
    assert_clean_exit(exported, {0, 2, 5})
    assert exported.exit_code != 0 or checked.exit_code == 0, "exported a plan that fails verify"
    return f"verify {checked.exit_code}, export {exported.exit_code}"


def _inspect_drawn(x: tuple[S.Case, bytes, bool], folder: Path) -> str:
    return check_cli_inspect(x[0], x[1], x[2], folder)


def _evaluate_drawn(x: tuple[S.Case, S.Case, tuple[int, int, int]], folder: Path) -> str:
    return check_cli_evaluate(x[0], x[1], x[2], folder)


def _solve_drawn(x: S.SolveInstance, folder: Path) -> str:
    return check_solve(x)


#: Properties by name, for benchmarks/fuzz_campaign.py: (strategy, check taking the drawn
#: value and a scratch folder, share of the cases).
PROPERTIES: dict[str, tuple[st.SearchStrategy[Any], Callable[[Any, Path], str], float]] = {
    "load-model": (S.model_cases(), check_load, 0.28),
    "load-hardware": (S.hardware_cases(), check_load, 0.12),
    "load-workload": (S.workload_cases(), check_load, 0.08),
    "cli-inspect": (inspect_inputs(), _inspect_drawn, 0.15),
    "cli-evaluate": (st.tuples(EVAL_HARDWARE, EVAL_WORKLOADS, DEGREES), _evaluate_drawn, 0.10),
    "round-trip": (S.any_cases(), check_round_trip, 0.17),
    "solve-vs-brute-force": (S.solve_instances(), _solve_drawn, 0.08),
    "cli-solve-verify": (S.solve_instances(), check_cli_solve_verify, 0.02),
    "cli-options": (option_runs(), check_cli_option, 0.05),
    "balance-options": (balance_runs(), check_balance_option, 0.02),
    "plan-mutations": (plan_mutations(), check_plan_mutation, 0.03),
}



@pytest.mark.parametrize("command", ["balance", "sweep"])
def test_worker_processes_are_bounded(command: str) -> None:
    """A huge --workers is refused before any process starts (a fuzz run once spawned
    thousands of balance processes and exhausted the machine's memory)."""
    if command == "balance":
        args = ["balance", str(BALANCE_LOADS), "--gpus", "4", "--workers", "100000"]
    else:
        args = ["sweep", str(S.ROOT / "instances" / "sweeps" / "tiny.json"), "--workers", "100000"]
    result = invoke(*args)
    assert_clean_exit(result, {2})
    assert "'--workers'" in result.stderr


@pytest.mark.parametrize("duplicates", [[], ["--allow-duplicates"]])
def test_balance_refuses_more_slots_than_experts_times_gpus(duplicates: list[str]) -> None:
    """--slots 100 for 8 experts on 4 GPUs (found by the campaign: an IndexError) exits 2."""
    result = invoke("balance", str(BALANCE_LOADS), "--gpus", "4", "--slots", "100", *duplicates)
    assert_clean_exit(result, {2})
    assert "'--slots'" in result.stderr


def test_balance_on_a_thousand_gpus_does_not_overflow() -> None:
    """--gpus 1023 (found by the campaign: the exact-scaling lcm overflowed a float)."""
    result = invoke("balance", str(BALANCE_LOADS), "--gpus", "1023", "--quiet",
                    "--deterministic", "--time-limit", "2")  # fmt: skip
    assert_clean_exit(result, {0, 2})
