"""`placer check`: the seed's claims audited, and impossible layouts reported as failed claims."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import HARDWARE, MODELS, ROOT
from .helpers import run_cli

SEED = [str(ROOT / "instances" / "seed-claims.json"), str(MODELS / "seed-moe-8x4.json"),
        str(HARDWARE / "seed-16x32gb.json")]


def _verdicts(*args: str) -> tuple[int, dict[str, dict]]:
    res = run_cli("check", *args, "--json")
    doc = json.loads(res.stdout)
    return res.exit_code, {r["id"]: r for r in doc["results"]}


def test_seed_claims_are_caught() -> None:
    """The impossible and unsupported claims of the seed fail; exit 5."""
    code, v = _verdicts(*SEED)
    assert code == 5
    assert v["modules_per_gpu"]["verdict"] == "fails"
    assert "impossible" in v["modules_per_gpu"]["reason"]
    assert v["latency"]["verdict"] == "fails"
    assert "every layer" in v["latency"]["reason"]
    assert v["parallel_product"]["verdict"] == "fails"
    assert "64" in v["parallel_product"]["computed"]
    assert v["optimal"]["verdict"] == "fails"
    # Claims without a baseline or a measurement cannot be judged either way.
    for cid in ("throughput", "gpu_utilization", "expert_utilization"):
        assert v[cid]["verdict"] == "cannot judge"
    # What the toy model supports holds: 16 GPUs, ~16 GB per GPU at the seed's context.
    assert v["gpu_count"]["verdict"] == "holds"
    assert v["memory"]["verdict"] == "holds"


def test_folding_stated_makes_the_product_claim_hold(tmp_path: Path) -> None:
    """With folding stated in the file, TP4 x EP4 x PP4 on 16 GPUs holds."""
    dep = json.loads(Path(SEED[0]).read_text())
    dep["layout"]["folded"] = True
    path = tmp_path / "folded.json"
    path.write_text(json.dumps(dep))
    _, v = _verdicts(str(path), *SEED[1:])
    assert v["parallel_product"]["verdict"] == "holds"


def test_unsupported_memory_claim_fails(tmp_path: Path) -> None:
    """A memory figure the model does not support is a failed claim."""
    dep = json.loads(Path(SEED[0]).read_text())
    for c in dep["claims"]:
        if c["id"] == "memory":
            c["value"] = 8
    path = tmp_path / "mem.json"
    path.write_text(json.dumps(dep))
    _, v = _verdicts(str(path), *SEED[1:])
    assert v["memory"]["verdict"] == "fails"


def test_impossible_layouts_are_failed_claims(tmp_path: Path) -> None:
    """EP larger than the experts, or TP not dividing the heads: a failed claim, not a crash."""
    for layout, words in (({"tp": 8, "dp_attn": 2, "ep": 16}, "exceeds the 8 expert slots"),
                          ({"tp": 3, "pp": 1}, "not divisible")):
        dep = {"format": "placer-deployment", "layout": layout,
               "claims": [{"id": "g", "kind": "gpus_used", "value": 8}]}
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(dep))
        res = run_cli("check", str(path), str(MODELS / "mixtral-8x7b.json"),
                      str(HARDWARE / "dgx-a100-80gb.json"), "--gpus", "16", "--json",
                      "--time-limit", "5")
        assert res.exit_code == 5, res.stderr
        doc = json.loads(res.stdout)
        layout_row = next(r for r in doc["results"] if r["id"] == "layout")
        assert layout_row["verdict"] == "fails"
        assert words in layout_row["reason"]


def test_bad_deployment_file_is_exit_2(tmp_path: Path) -> None:
    """A deployment file without claims is bad input naming the field."""
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"format": "placer-deployment", "layout": {"tp": 1}}))
    res = run_cli("check", str(path), *SEED[1:])
    assert res.exit_code == 2
    assert "claims" in res.stderr
