"""Bad input files and options: placer names the file and the field, and the CLI exits 2.

Every case is a file under ``tests/data/invalid/`` (or a path that does not exist),
read with the loader for its kind (model, hardware or workload). The library must
raise :class:`placer.exceptions.InvalidInputError` whose message names the file, and
whose ``field`` names the offending field as written in the file. The command line
(``python -m placer.cli``) must print exactly that message as one ``placer: error:``
line on stderr, no traceback, and exit 2.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from placer.exceptions import EXIT_BAD_INPUT, InvalidInputError
from placer.load import (
    cluster_from_dict,
    load_cluster,
    load_model,
    load_workload,
    model_from_dict,
)

ROOT = Path(__file__).resolve().parent.parent
INVALID = ROOT / "tests" / "data" / "invalid"
SEED_MODEL = ROOT / "models" / "seed-moe-8x4.json"
SEED_HW = ROOT / "instances" / "hardware" / "seed-16x32gb.json"


@dataclass(frozen=True)
class Case:
    """One bad input: the file, its kind, a message fragment and the field(s) to name."""

    file: str
    kind: str  # "model", "hardware" or "workload"
    fragment: str
    fields: tuple[str, ...] | None  # acceptable values of exc.field; None: no field applies
    bug: str | None = None  # set when placer does not yet name the field correctly

    @property
    def path(self) -> Path:
        return INVALID / self.file


CASES = [
    # -- files that cannot be read as a JSON object (no field applies)
    Case("does-not-exist.json", "model", "file not found", None),
    Case("does-not-exist-hardware.json", "hardware", "file not found", None),
    Case("does-not-exist-workload.json", "workload", "file not found", None),
    Case("not-json.json", "model", "not valid JSON (line 1, column 1", None),
    Case("top-level-array.json", "model", "expected a JSON object at the top level, got list",
         None),
    # -- configs placer does not know
    Case("llama-dense.json", "model", "'model_type' is 'llama'", ("model_type",)),
    Case("unknown-model-type.json", "model", "'model_type' is 'transformer-xl-moe'",
         ("model_type",)),
    Case("no-model-type.json", "model", "unknown model config", ("model_type",)),
    Case("unknown-format.json", "model", "unknown format 'placer-model-v2'", ("format",)),
    # -- Hugging Face configs with missing or impossible values
    Case("mixtral-missing-num-local-experts.json", "model", "required field is missing",
         ("num_local_experts",)),
    Case("mixtral-hidden-size-zero.json", "model", "must be positive, got 0", ("hidden_size",)),
    Case("mixtral-negative-experts.json", "model", "must be positive, got -1",
         ("num_local_experts",)),
    Case("mixtral-nan.json", "model", "NaN", ("hidden_size",)),
    Case("mixtral-infinity.json", "model", "Infinity", ("rope_theta",)),
    Case("mixtral-heads-not-divisible.json", "model", "must be a multiple of",
         ("num_key_value_heads", "num_attention_heads")),
    Case("mixtral-top-k-exceeds-experts.json", "model", "top_k (5) exceeds num_experts (4)",
         ("num_experts_per_tok", "num_local_experts")),
    Case("placer-model-heads-not-divisible.json", "model", "must be a multiple of",
         ("attention",)),
    # -- module lists
    Case("modules-cycle.json", "model", "the module graph has a cycle", ("edges",)),
    Case("modules-duplicate-name.json", "model", "module name 'a' is used twice",
         ("modules", "modules.1.name")),
    Case("modules-unknown-edge.json", "model", "names unknown module 'c'",
         ("edges", "edges.1")),
    Case("modules-odd-bytes.json", "model", "257 bytes is not a whole number of bf16 values",
         ("modules.1.bytes",)),
    Case("modules-unknown-field.json", "model", "unknown field", ("modules.0.size",)),
    # -- hardware files
    Case("hardware-zero-gpus.json", "hardware", "greater than 0", ("gpus",)),
    Case("hardware-negative-memory.json", "hardware", "greater than 0", ("gpu.memory_bytes",)),
    Case("hardware-unknown-field.json", "hardware", "Extra inputs are not permitted",
         ("interconnect",)),
    # -- workload files
    Case("workload-memory-utilization.json", "workload", "less than or equal to 1",
         ("memory_utilization",)),
    Case("workload-batch-zero.json", "workload", "greater than 0", ("batch",)),
    Case("workload-unknown-field.json", "workload", "Extra inputs are not permitted",
         ("batch_size",)),
]

IDS = [c.file.removesuffix(".json") for c in CASES]


def _load(case: Case) -> None:
    path = str(case.path)
    if case.kind == "model":
        load_model(path)
    elif case.kind == "hardware":
        load_cluster(path)
    else:
        load_workload(path)


def _library_error(case: Case) -> InvalidInputError:
    with pytest.raises(InvalidInputError) as info:
        _load(case)
    return info.value


def _cli_args(case: Case) -> list[str]:
    path = str(case.path)
    if case.kind == "model":
        return ["inspect", path]
    if case.kind == "hardware":
        return ["evaluate", str(SEED_MODEL), path]
    return ["evaluate", str(SEED_MODEL), str(SEED_HW), "--workload", path]


def run_placer(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m placer.cli ARGS`` in a child process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "placer.cli", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """Exit 2, nothing on stdout, one ``placer: error:`` line on stderr; returns the line."""
    assert proc.returncode == EXIT_BAD_INPUT, proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert proc.stderr.endswith("\n")
    assert lines[0].startswith("placer: error: ")
    return lines[0]


def test_every_case_file_is_present() -> None:
    """Each invalid-input file the cases name exists, except the deliberately missing ones."""
    missing = [c.file for c in CASES if not c.path.exists()]
    assert missing == ["does-not-exist.json", "does-not-exist-hardware.json",
                       "does-not-exist-workload.json"]
    on_disk = {p.name for p in INVALID.glob("*.json")}
    assert on_disk == {c.file for c in CASES} - set(missing)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_loader_raises_invalid_input(case: Case) -> None:
    """The loader raises InvalidInputError naming the file, with the expected message."""
    exc = _library_error(case)
    assert exc.source == str(case.path)
    assert str(exc).startswith(f"{case.path}: ")
    assert case.fragment in str(exc)
    assert exc.exit_code == EXIT_BAD_INPUT


def _field_params() -> list[object]:
    out: list[object] = []
    for case, id_ in zip(CASES, IDS, strict=True):
        marks = (
            [pytest.mark.xfail(strict=True, raises=AssertionError, reason=case.bug)]
            if case.bug
            else []
        )
        out.append(pytest.param(case, id=id_, marks=marks))
    return out


@pytest.mark.parametrize("case", _field_params())
def test_loader_names_the_field(case: Case) -> None:
    """exc.field is the offending field as written in the file (None when none applies)."""
    exc = _library_error(case)
    if case.fields is None:
        assert exc.field is None
        return
    assert exc.field in case.fields
    assert f"field '{exc.field}'" in str(exc)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cli_reports_one_line_and_exits_2(case: Case) -> None:
    """The CLI prints the library's message as one error line and exits 2."""
    exc = _library_error(case)
    line = assert_one_line_error(run_placer(*_cli_args(case)))
    assert line == f"placer: error: {exc}"
    assert str(case.path) in line


# ------------------------------------------------------------------ library-only checks
def test_non_finite_values_in_a_parsed_dict_name_the_field() -> None:
    """model_from_dict rejects NaN/Infinity given as Python floats and names the nested field."""
    raw = {"model_type": "llama4", "text_config": {"hidden_size": 64, "rope_theta": math.inf}}
    with pytest.raises(InvalidInputError) as info:
        model_from_dict(raw, "cfg.json")
    assert info.value.source == "cfg.json"
    assert info.value.field == "text_config.rope_theta"
    assert "must be a finite number" in str(info.value)
    with pytest.raises(InvalidInputError) as info:
        model_from_dict({"format": "placer-model", "hidden_size": math.nan}, "m.json")
    assert info.value.field == "hidden_size"


def _toy_model(**changes: object) -> dict[str, object]:
    """A valid one-layer model in placer's own format, with fields replaced."""
    raw: dict[str, object] = {
        "format": "placer-model", "name": "toy", "dtype": "bf16", "expert_dtype": "bf16",
        "num_layers": 1, "hidden_size": 8, "vocab_size": 16,
        "attention": {"kind": "gqa", "num_heads": 4, "num_kv_heads": 2, "head_dim": 2},
        "moe": {"num_experts": 4, "top_k": 2, "expert_intermediate_size": 4},
        "layers": [{"mixer": "attention", "ffn": "moe"}],
    }
    raw.update(changes)
    return raw


def _seed_hardware(**changes: object) -> dict[str, object]:
    """The seed hardware file's content, with fields replaced."""
    raw: dict[str, object] = json.loads(SEED_HW.read_text())
    raw.update(changes)
    return raw


@pytest.mark.parametrize(
    ("load", "field"),
    [
        (lambda: load_workload(None, batch=True), "batch"),
        (lambda: load_workload(None, batch="8"), "batch"),
        (lambda: model_from_dict(_toy_model(vocab_size=True), "toy.json"), "vocab_size"),
        (lambda: model_from_dict(_toy_model(num_layers="1"), "toy.json"), "num_layers"),
        (lambda: cluster_from_dict(_seed_hardware(gpus=True), "hw.json"), "gpus"),
    ],
    ids=["workload-batch-true", "workload-batch-string", "model-vocab-true",
         "model-layers-string", "hardware-gpus-true"],
)
def test_booleans_and_strings_are_not_sizes(load: Any, field: str) -> None:
    """A JSON true or a quoted number where a count belongs is rejected, naming the field."""
    with pytest.raises(InvalidInputError) as info:
        load()
    assert info.value.field == field


def _toy_modules(**changes: object) -> dict[str, object]:
    """A valid module list with one attention module and one expert, with fields replaced."""
    raw: dict[str, object] = {
        "format": "placer-modules", "hidden_size": 8, "top_k": 1,
        "modules": [
            {"name": "a", "kind": "attention", "layer": 0, "bytes": 128, "flops_per_token": 1},
            {"name": "e", "kind": "expert", "layer": 0, "bytes": 128, "flops_per_token": 1},
        ],
        "edges": [["a", "e"]],
    }
    raw.update(changes)
    return raw


def _hf(path: str, **changes: object) -> dict[str, object]:
    """A bundled Hugging Face config with top-level fields replaced."""
    raw: dict[str, object] = json.loads((ROOT / "models" / path).read_text())
    raw.update(changes)
    return raw


@pytest.mark.parametrize(
    ("load", "field", "fragment"),
    [
        (lambda: cluster_from_dict(_seed_hardware(nodes=0), "hw.json"), "nodes",
         "must be a positive integer"),
        (lambda: cluster_from_dict(_seed_hardware(gpus="8"), "hw.json"), "gpus",
         "valid integer"),
        (lambda: cluster_from_dict(_seed_hardware(groups=[]), "hw.json"), "groups",
         "not both"),
        (lambda: model_from_dict(_toy_modules(top_k=None), "m.json"), "top_k",
         "required field is missing"),
        (lambda: model_from_dict(_toy_modules(num_layers=1, modules=[
            {"name": "a", "kind": "attention", "layer": 2, "bytes": 2, "flops_per_token": 1}]),
            "m.json"), "modules.0.layer", "in layer 2 but the model has 1 layers"),
        (lambda: model_from_dict(_toy_modules(edges=[["a", 1]]), "m.json"), "edges.0",
         "pair of module names"),
        (lambda: model_from_dict(_hf("deepseek-v3.json", n_group=7), "ds.json"), "n_group",
         "must divide n_routed_experts"),
        (lambda: model_from_dict(_hf("gpt-oss-20b.json", layer_types=["full_attention"]),
                                 "oss.json"), "layer_types", "one per layer"),
        (lambda: model_from_dict(_hf("qwen3-30b-a3b.json", mlp_only_layers=3), "q.json"),
         "mlp_only_layers", "list of layer indices"),
    ],
    ids=["hardware-nodes-zero", "hardware-gpus-string", "hardware-gpu-and-groups",
         "modules-no-top-k", "modules-layer-out-of-range", "modules-edge-not-names",
         "deepseek-n-group", "gpt-oss-layer-types", "qwen-mlp-only-layers"],
)
def test_more_bad_fields_are_named(load: Any, field: str, fragment: str) -> None:
    """Further bad values name their field, with exactly one problem and no knock-on count."""
    with pytest.raises(InvalidInputError) as info:
        load()
    assert info.value.field == field
    assert fragment in str(info.value)
    assert "more problem" not in str(info.value)


def test_one_line_messages_for_names_with_line_breaks() -> None:
    """A module name or key holding a line break is escaped: the message stays one line."""
    mod = {"name": "a\nb", "kind": "attention", "layer": 0, "bytes": 2, "flops_per_token": 1}
    with pytest.raises(InvalidInputError) as info:
        model_from_dict(_toy_modules(modules=[mod, mod], edges=[], top_k=None), "m.json")
    assert info.value.field == "modules.1.name"
    assert "\n" not in str(info.value)
    with pytest.raises(InvalidInputError) as info:
        load_workload(None, **{"bat\nch": 1})
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------ bad command-line options
SEED = [str(SEED_MODEL), str(SEED_HW)]


def test_cli_tp_larger_than_cluster() -> None:
    """--tp 32 on the 16-GPU seed cluster exits 2 naming --tp and the GPU count."""
    line = assert_one_line_error(run_placer("evaluate", *SEED, "--tp", "32"))
    assert "'--tp'" in line
    assert "tp (32)" in line and "16 GPUs" in line


@pytest.mark.parametrize("option", ["--tp", "--pp", "--ep", "--dp-attn", "--etp"])
def test_cli_zero_degree(option: str) -> None:
    """A parallel degree of 0 exits 2 naming the option."""
    line = assert_one_line_error(run_placer("evaluate", *SEED, option, "0"))
    assert line == f"placer: error: field '{option}': Input should be greater than 0"


def test_cli_layers_per_stage_not_integers() -> None:
    """--layers-per-stage 3,x exits 2 naming --layers-per-stage."""
    line = assert_one_line_error(
        run_placer("evaluate", *SEED, "--pp", "2", "--layers-per-stage", "3,x")
    )
    assert "'--layers-per-stage'" in line
    assert "comma-separated integers" in line


def test_cli_layers_per_stage_wrong_length() -> None:
    """A split with fewer entries than --pp exits 2 with the layout's reason."""
    line = assert_one_line_error(
        run_placer("evaluate", *SEED, "--pp", "2", "--layers-per-stage", "8")
    )
    assert "layers_per_stage has 1 entries but pp is 2" in line


def test_cli_ep_not_dividing_stage() -> None:
    """--tp 4 --ep 3 exits 2: ep x etp must divide the stage width."""
    line = assert_one_line_error(run_placer("evaluate", *SEED, "--tp", "4", "--ep", "3"))
    assert "ep x etp (3 x 1) must divide the stage width" in line


@pytest.mark.parametrize(
    ("args", "field", "fragment"),
    [
        (["--mem-util", "1.5"], "--mem-util", "less than or equal to 1"),
        (["--batch", "0"], "--batch", "greater than 0"),
        (["--gpus", "0"], "--gpus", "must be positive, got 0"),
    ],
    ids=["mem-util-1.5", "batch-0", "gpus-0"],
)
def test_cli_bad_workload_or_hardware_override(args: list[str], field: str,
                                               fragment: str) -> None:
    """Out-of-range --mem-util, --batch and --gpus exit 2 naming the field."""
    line = assert_one_line_error(run_placer("evaluate", *SEED, *args))
    assert f"field '{field}'" in line
    assert fragment in line
