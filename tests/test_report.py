"""The Markdown report: every section present, and its numbers equal the plan's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from placer import SolveConfig, load_cluster, load_model
from placer.plan import Plan
from placer.report import INFEASIBLE_SECTIONS, SECTIONS, markdown_report
from placer.search.outer import solve

ROOT = Path(__file__).resolve().parent.parent
CONFIG = SolveConfig(time_limit_s=20)


def _solve(model: str, hardware: str, gpus: int | None = None) -> Plan:
    cluster = load_cluster(ROOT / "instances" / "hardware" / f"{hardware}.json")
    if gpus:
        cluster = cluster.with_gpus(gpus)
    return solve(load_model(ROOT / "models" / f"{model}.json"), cluster, None, CONFIG)


@pytest.fixture(scope="module")
def mixtral() -> Plan:
    """Mixtral-8x7B on 8 x A100-80GB."""
    return _solve("mixtral-8x7b", "dgx-a100-80gb")


@pytest.fixture(scope="module")
def dsv3() -> Plan:
    """DeepSeek-V3 on 16 x H200 (two nodes, uneven pipeline split)."""
    return _solve("deepseek-v3", "dgx-h200", 16)


@pytest.fixture(scope="module")
def infeasible() -> Plan:
    """DeepSeek-V3 on 8 x A100-40GB: nothing fits."""
    return _solve("deepseek-v3", "dgx-a100-40gb")


def _headings(text: str) -> list[str]:
    return re.findall(r"^## (.+)$", text, flags=re.M)


def _row(text: str, key: str) -> str:
    """The value cell of a two-column table row ``| key | value |``."""
    m = re.search(rf"^\| {re.escape(key)} \| (.+) \|$", text, flags=re.M)
    assert m, f"no row {key!r}"
    return m.group(1)


def _section(text: str, name: str) -> str:
    m = re.search(rf"^## {re.escape(name)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert m, f"no section {name!r}"
    return m.group(1)


# ------------------------------------------------------------------ structure
@pytest.mark.parametrize("name", ["mixtral", "dsv3"])
def test_feasible_report_has_every_section(name: str, request: pytest.FixtureRequest) -> None:
    """A feasible plan's report has the stable sections in order, and no infeasible ones."""
    text = markdown_report(request.getfixturevalue(name))
    assert _headings(text) == list(SECTIONS)
    assert text.startswith("# Deployment plan: ")


def test_infeasible_report_explains_and_fixes(infeasible: Plan) -> None:
    """An infeasible plan's report adds 'Why it does not fit' and 'Smallest fix' verbatim."""
    text = markdown_report(infeasible)
    assert _headings(text) == [*SECTIONS, *INFEASIBLE_SECTIONS]
    inf = infeasible.infeasibility
    assert inf is not None
    why = _section(text, "Why it does not fit")
    assert inf.reason in why
    assert all(c in why for c in inf.conflicts)
    assert f"Closest layout: {inf.closest_layout}" in why
    fix = _section(text, "Smallest fix")
    assert all(f in fix for f in inf.fixes)
    assert f"Fewest GPUs of this type that fit: {inf.min_gpus}" in fix
    assert _row(text, "status").startswith("infeasible")
    assert "GPUs used | none (0 of 8 available" in text


# ------------------------------------------------------------------ numbers
@pytest.mark.parametrize("name", ["mixtral", "dsv3"])
def test_summary_numbers_equal_the_plan(name: str, request: pytest.FixtureRequest) -> None:
    """Objective, bound, gap, GPU count and peak memory in the report are the plan's."""
    plan: Plan = request.getfixturevalue(name)
    text = markdown_report(plan)
    o, lay = plan.objective, plan.layout
    assert o.value is not None and o.bound is not None and o.gap is not None and lay is not None
    objective = re.match(r"throughput = ([\d.]+) ms", _row(text, "objective"))
    assert objective and float(objective.group(1)) == round(o.value * 1e3, 3)
    bound = re.match(r"([\d.]+) ms", _row(text, "bound"))
    assert bound and float(bound.group(1)) == round(o.bound * 1e3, 3)
    gap = re.match(r"([\d.]+) %", _row(text, "gap"))
    assert gap and float(gap.group(1)) == round(100 * o.gap, 3)
    used = re.match(r"(\d+) of (\d+) available", _row(text, "GPUs used"))
    assert used and int(used.group(1)) == lay.gpus_used
    assert int(used.group(2)) == plan.inputs.cluster["groups"][0]["count"]
    peak = max(g.used_bytes for g in plan.gpus)
    m = re.search(r"Peak: ([\d.]+) GB on GPU (\d+)", text)
    assert m and float(m.group(1)) == round(peak / 1e9, 2)
    assert _row(text, "layers per stage") == ", ".join(map(str, lay.layers_per_stage))


def test_memory_table_rows_equal_the_ledger(dsv3: Plan) -> None:
    """Each GPU's row has the ledger's columns, used and usable bytes, in GB."""
    section = _section(markdown_report(dsv3), "Memory per GPU")
    header = next(line for line in section.splitlines() if line.startswith("| GPU |"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    rows = {
        int(cells[0]): cells
        for line in section.splitlines()
        if re.match(r"^\| \d+ \|", line)
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    assert sorted(rows) == [g.id for g in dsv3.gpus]
    for g in dsv3.gpus:
        cells = dict(zip(cols, rows[g.id], strict=True))
        assert float(cells["used"]) == round(g.used_bytes / 1e9, 2)
        assert float(cells["usable"]) == round(g.capacity_bytes / 1e9, 2)
        assert float(cells["experts"]) == round(g.breakdown["experts"] / 1e9, 2)
        assert int(cells["stage"]) == g.stage
    assert "mamba" not in cols  # zero on every GPU: left out, and said so
    assert "left out: mamba" in section


def test_estimates_and_assumptions_verbatim(dsv3: Plan) -> None:
    """Throughput, cycle and latency are the plan's; the assumptions are copied verbatim."""
    text = markdown_report(dsv3)
    e = dsv3.estimates
    assert e is not None
    assert _row(text, "throughput") == f"{e.throughput_tokens_s:,.1f} tokens/s"
    assert _row(text, "step latency (no micro-batching)") == f"{e.latency_s * 1e3:.3f} ms"
    assert _row(text, "pipelined cycle (2 micro-batches)") == f"{e.cycle_s * 1e3:.3f} ms"
    section = _section(text, "Estimated latency and throughput")
    for a in e.assumptions:
        assert f"- {a}\n" in section
    for st in e.stages:
        assert f"| {st.stage} | {st.layers} | {st.compute_s * 1e3:.3f} |" in section


def test_validation_lists_every_constraint(mixtral: Plan, dsv3: Plan) -> None:
    """Small families are listed one row each; large ones summarised with the tightest."""
    text = markdown_report(mixtral)
    section = _section(text, "Validation checks")
    for c in mixtral.certificate.constraints:
        if c.name.startswith(("memory", "gpu_count", "rules")):
            assert f"`{c.name}`" in section
    assert f"{len(mixtral.certificate.constraints)} constraint instances, all hold." in section
    big = _section(markdown_report(dsv3), "Validation checks")
    assert "`expert_slots[...]` (58 instances" in big
    assert "`expert_slots[layer 10]`" not in big


def test_many_gpus_are_merged_in_memory_and_checks(dsv3: Plan) -> None:
    """With more than 16 GPUs, identical memory rows merge and memory checks are summarised."""
    gpus = tuple(g.model_copy(update={"id": g.id + 16 * k}) for k in range(2) for g in dsv3.gpus)
    mems = [c for c in dsv3.certificate.constraints if c.name.startswith("memory")]
    more = tuple(
        c.model_copy(update={"name": f"memory[gpu {int(c.name[11:-1]) + 16 * k}]"})
        for k in range(2)
        for c in mems
    )
    cert = dsv3.certificate.model_copy(update={"constraints": more})
    big = dsv3.model_copy(update={"gpus": gpus, "certificate": cert})
    text = markdown_report(big)
    assert "| 0-7 | 0 |" in _section(text, "Memory per GPU")
    checks = _section(text, "Validation checks")
    tightest = max(mems, key=lambda c: c.value / c.limit)
    assert f"`memory[...]` (32 instances; tightest {tightest.name})" in checks
    assert f"{tightest.value / 1e9:.2f} GB" in checks


def test_search_counts_and_runner_ups(dsv3: Plan) -> None:
    """Search counts are the record's; runner-ups say why they lost against the plan's value."""
    text = markdown_report(dsv3)
    s = dsv3.certificate.search
    assert _row(text, "legal under the rules profile") == str(s.legal)
    assert _row(text, "pruned by a bound") == str(s.pruned)
    assert _row(text, "unresolved") == str(s.unresolved)
    section = _section(text, "Search")
    value = dsv3.objective.value
    assert value is not None
    runner = [line for line in section.splitlines() if line.startswith("| TP")]
    assert 1 <= len(runner) <= 5
    assert all(f"{value * 1e3:.3f} ms" in line for line in runner)
    bounds = [float(re.search(r"\| (?:bound|value) ([\d.]+) ms", ln).group(1)) for ln in runner]  # type: ignore[union-attr]
    assert bounds == sorted(bounds) and bounds[0] >= round(value * 1e3, 3)


def test_communication_levels_from_the_cluster(dsv3: Plan) -> None:
    """TP and EP groups stay in NVLink; the stage hand-off crosses InfiniBand (two nodes)."""
    section = _section(markdown_report(dsv3), "Communication")
    stage0 = next(line for line in section.splitlines() if line.startswith("| 0 | 0-7 |"))
    layout = dsv3.layout
    assert layout is not None
    assert f"{layout.tp} GPUs, scale_up" in stage0 and f"{layout.ep} ranks, scale_up" in stage0
    assert stage0.rstrip(" |").endswith("scale_out (50 GB/s, 5 us)")
    assert "stores no bytes per link level" in section


def test_load_balance_from_expert_map(mixtral: Plan) -> None:
    """Slots per EP rank come from the expert map; routing is stated as assumed uniform."""
    section = _section(markdown_report(mixtral), "Load balance")
    assert "| 0-31 | 1 1 1 1 1 1 1 1 | 1 / 1.00 = 1.000 | 1.000 |" in section
    assert "Routing is assumed uniform" in section


def test_feasible_status_states_the_gap(mixtral: Plan) -> None:
    """A plan that is only feasible says so, with its gap and bound."""
    o = mixtral.objective
    assert o.value is not None
    objective = o.model_copy(update={"bound": o.value * 0.95, "gap": 0.05})
    text = markdown_report(
        mixtral.model_copy(update={"status": "feasible", "objective": objective})
    )
    assert "feasible: NOT proven optimal; gap 5.000 %" in _row(text, "status")
    assert _row(text, "gap") == "5.000 %"
