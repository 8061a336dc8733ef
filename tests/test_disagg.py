"""Disaggregated serving (--disagg): brute force over every prefill layout x split x decode
layout x split x concurrency x instance counts agrees with the search and with verify, and
forged records exit 5."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from placer import evaluate, get_profile, load_cluster, load_model, load_workload, verify
from placer.config import SolveConfig
from placer.cost import estimate
from placer.plan import Plan
from placer.search.outer import solve
from placer.search.space import enumerate_layouts
from placer.serving.disagg import kv_transfer_ns
from tests.conftest import HARDWARE, MODELS
from tests.helpers import run_cli
from tests.serving_brute import splits

ROUNDING = 1e-3  # the search works in integer ns, the brute force in float seconds


@pytest.fixture(scope="module")
def olmoe3():
    """OLMoE-1B-7B on 3 x A100-40GB: instances of 1, 2 and 3 GPUs, splits of 1+1, 1+2, 2+1
    and 1+1+1 GPUs, small enough for brute force."""
    return (
        load_model(MODELS / "olmoe-1b-7b-0924.json"),
        load_cluster(HARDWARE / "dgx-a100-40gb.json", gpus=3),
    )


def _kinds(model, cluster, workload, tpot_s):
    """Brute force per layout and split: (gpus, prefill s) of every layout that holds one
    prompt, and (gpus, [(c, step s)]) of every decode concurrency within TPOT, scored with
    evaluate and estimate only."""
    prefills, decodes = [], []
    profile = get_profile("generic")
    for lay in enumerate_layouts(model, cluster, profile).legal:
        for split in splits(model.num_layers, lay.pp):
            full = lay.model_copy(update={"layers_per_stage": split})
            one = workload.model_copy(update={"batch": 1, "phase": "both"})
            if evaluate(model, cluster, one, full, profile).fits:
                pre = workload.model_copy(update={"batch": 1, "phase": "prefill"})
                prefills.append((lay.gpus, estimate(model, cluster, pre, full).latency_s))
            points = []
            for c in range(1, 2000):
                inst = workload.model_copy(update={"batch": c, "phase": "both"})
                ev = evaluate(model, cluster, inst, full, profile)
                if not ev.fits or ev.estimates is None or ev.estimates.cycle_s > tpot_s:
                    break  # memory and the step only grow with the concurrency
                points.append((c, ev.estimates.cycle_s))
            decodes.append((lay.gpus, points))
    return prefills, decodes


def _brute(model, cluster, workload) -> float:
    """The most output tokens/s per GPU of any split of the cluster within the targets."""
    n, out = cluster.num_gpus, workload.output_len
    prefills, decodes = _kinds(model, cluster, workload, workload.tpot_ms / 1e3)
    best = 0.0
    for g_p, pre in prefills:
        for g_d, points in decodes:
            for x in range(1, n // g_p + 1):
                for y in range(1, (n - x * g_p) // g_d + 1):
                    used = x * g_p + y * g_d
                    transfer = kv_transfer_ns(model, cluster, workload, g_p, g_d, used) / 1e9
                    for c, step in points:
                        if 2 * pre + transfer + step > workload.ttft_ms / 1e3:
                            break
                        reqs = min(x / pre, y * c / step / out)
                        best = max(best, reqs * out / n)
    return best


@pytest.mark.parametrize("ttft_ms", [200.0, 118.0])
def test_disagg_agrees_with_brute_force(olmoe3, ttft_ms):
    """Every split of 3 GPUs x layout x layer split x concurrency: none beats the proven
    disaggregated plan, and its value is reached. TTFT 118 ms binds the decode step more
    than TPOT does, so the capped decode groups are exercised."""
    model, cluster = olmoe3
    fields = {"prompt_len": 4000, "output_len": 1000, "tpot_ms": 10.0, "ttft_ms": ttft_ms}
    workload = load_workload(None, **fields)
    plan = Plan.model_validate_json(
        solve(model, cluster, workload, SolveConfig(disagg=True)).model_dump_json()
    )
    report = verify(plan)
    assert report.ok, report.violations
    assert plan.serving is not None and plan.serving.disagg is not None
    d = plan.serving.disagg
    assert d.status == "optimal" and d.search is not None and d.search.open == 0
    assert d.bound == pytest.approx(d.tokens_per_s_per_gpu, rel=1e-12)
    assert d.prefill_instances * d.prefill_gpus + d.decode_instances * d.decode_gpus <= 3
    assert d.ttft_s <= ttft_ms / 1e3 and d.step_s <= fields["tpot_ms"] / 1e3
    assert d.tokens_per_s_per_gpu == pytest.approx(_brute(model, cluster, workload), rel=ROUNDING)
    if ttft_ms == 118.0:
        assert len(d.search.decode) > 1  # a capped group was searched
    assert d.deployed == (d.tokens_per_s_per_gpu > plan.serving.tokens_per_s_per_gpu)


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory, olmoe3) -> Path:
    """A verified --disagg plan on 3 GPUs, written by the CLI."""
    path = tmp_path_factory.mktemp("disagg") / "plan.json"
    res = run_cli(
        "solve",
        str(MODELS / "olmoe-1b-7b-0924.json"),
        str(HARDWARE / "dgx-a100-40gb.json"),
        "--gpus",
        "3",
        "--prompt-len",
        "4000",
        "--output-len",
        "1000",
        "--tpot",
        "10",
        "--ttft",
        "118",
        "--disagg",
        "--quiet",
        "-o",
        str(path),
    )
    assert res.exit_code == 0, res.stderr
    assert run_cli("verify", str(path)).exit_code == 0
    return path


def _forge(path: Path, tmp_path: Path, edit) -> Path:
    data = json.loads(path.read_text())
    edit(data["serving"]["disagg"])
    out = tmp_path / "forged.json"
    out.write_text(json.dumps(data))
    return out


def _faster_prefill(d):
    e = next(e for e in d["search"]["prefill"] if e["fits"])
    e["prefill_bound_ns"] = e["prefill_bound_ns"] // 2


def _bigger_decode_bound(d):
    leaf = next(
        leaf for e in d["search"]["decode"][0]["entries"] for leaf in e["leaves"] if leaf["bound"]
    )
    leaf["bound"] *= 1.5


def _drop_capped_group(d):
    d["search"]["decode"] = d["search"]["decode"][:1]


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda d: d.update(prefill_instances=d["prefill_instances"] + 1), "disagg"),
        (lambda d: d.update(decode_instances=d["decode_instances"] + 1), "disagg"),
        (lambda d: d.update(tokens_per_s_per_gpu=d["tokens_per_s_per_gpu"] * 1.1), "disagg"),
        (_faster_prefill, "prefill"),
        (_bigger_decode_bound, "bound recomputed"),
        (_drop_capped_group, "disagg"),
        (lambda d: d.update(bound=d["tokens_per_s_per_gpu"] * 0.5), "bound recomputed"),
        (lambda d: d["search"].update(open=3), "recomputed"),
        (lambda d: d.update(deployed=not d["deployed"]), "deployed"),
        (lambda d: d.update(decode_split=[99]), "layers per stage"),
    ],
    ids=[
        "forged-prefill-count",
        "forged-decode-count",
        "forged-throughput",
        "forged-prefill-capacity",
        "forged-decode-capacity",
        "capped-group-removed",
        "forged-bound",
        "forged-counts",
        "forged-deployed",
        "forged-split",
    ],
)
def test_forged_disagg_record_exits_5(plan_file, tmp_path, edit, words):
    """Each forgery of the disaggregated record is caught by verify: exit 5, named."""
    res = run_cli("verify", str(_forge(plan_file, tmp_path, edit)))
    assert res.exit_code == 5
    assert words in res.stdout + res.stderr
