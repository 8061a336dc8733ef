"""Time to first token under concurrency (issue 15): the formula by hand, its monotonicity in
the concurrency (the serving search's branch and bound relies on it), the TTFT fit, and a
calibration written before the TTFT model keeping its hash."""

from __future__ import annotations

import hashlib
import json
import math
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from placer.calibration import (
    TTFT_FIXED_MS_RANGE,
    TTFT_PREFILL_RANGE,
    TTFT_QUEUE_RANGE,
    TTFT_STEPS_RANGE,
    Calibration,
    TTFTModel,
    default_calibration,
    use_calibration,
)
from placer.fit import fit
from placer.load import load_cluster, load_model
from placer.measurements import Measurement, load_measurements, predict_ttft_s
from placer.rules import get_profile
from placer.search.space import enumerate_layouts
from placer.search.tables import memory_lower_bound
from placer.serving.probe import LayoutProbe
from placer.serving.search import memory_limit
from placer.serving.timing import tpot_ns, ttft_model, ttft_ns, ttft_s
from placer.workload import Workload

ROOT = Path(__file__).resolve().parent.parent


def test_ttft_formula_by_hand() -> None:
    """fixed + (prefill_factor + queue (c - 1)) x prefill + (steps + chunks) x step: a
    10,000-token prompt in 8,192-token chunks takes 2 chunks."""
    w = Workload(prompt_len=10_000, output_len=100, max_batched_tokens=8192)
    m = TTFTModel(fixed_ms=10.0, prefill_factor=2.0, steps=3.0, queue=0.5)
    # 0.010 + (2 + 0.5 x 4) x 0.020 + (3 + 2) x 0.001 = 0.095 s
    assert ttft_s(w, 5, 1e-3, 2e-2, m) == pytest.approx(0.095)
    assert ttft_ns(w, 5, 1_000_000, 20_000_000, m) == 95_000_000
    # The uncalibrated model is the step in progress, then the prompt's chunks.
    assert ttft_s(w, 64, 1e-3, 2e-2, TTFTModel()) == pytest.approx(0.020 + 3 * 1e-3)


def test_engine_lookup_falls_back_to_the_family_then_default() -> None:
    base = default_calibration()
    a, b = TTFTModel(queue=0.1), TTFTModel(queue=0.2)
    c = base.model_copy(update={"ttft": {"sglang": a, "default": b}})
    assert c.ttft_model("sglang-tbo") == a
    assert c.ttft_model("megatron") == b
    assert c.ttft_model(None) == b
    assert base.model_copy(update={"ttft": {}}).ttft_model("vllm") == TTFTModel()
    with use_calibration(c):
        assert ttft_model("sglang") == a


def test_a_calibration_without_ttft_keeps_its_hash() -> None:
    """A calibration file written before the TTFT fields existed (as plans store it) hashes
    as it did: the empty TTFT fields are left out of the digest."""
    data = default_calibration().model_dump(mode="json")
    for key in ("ttft", "ttft_error"):
        data.pop(key)
    old = hashlib.sha256(
        json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    assert Calibration.model_validate(data).digest() == old
    assert default_calibration().digest() != old  # the shipped one has a TTFT model


# --- monotonicity in the concurrency -------------------------------------------------------

INSTANCES = (
    ("olmoe-1b-7b-0924", "dgx-a100-40gb", 2),
    ("qwen3-30b-a3b", "dgx-h100", 4),
    ("mixtral-8x7b", "dgx-h100", 2),
)


@cache
def _probes(index: int, prompt: int, output: int, chunk: int) -> list[LayoutProbe]:
    name, hw, gpus = INSTANCES[index]
    model = load_model(ROOT / "models" / f"{name}.json")
    cluster = load_cluster(ROOT / "instances" / "hardware" / f"{hw}.json", gpus=gpus)
    w = Workload(prompt_len=prompt, output_len=output, max_batched_tokens=chunk, tpot_ms=1e9)
    legal = enumerate_layouts(model, cluster, get_profile("generic")).legal
    return [LayoutProbe(model, cluster, w, lay) for lay in legal]


ttft_models = st.builds(
    TTFTModel,
    fixed_ms=st.floats(*TTFT_FIXED_MS_RANGE),
    prefill_factor=st.floats(*TTFT_PREFILL_RANGE),
    steps=st.floats(*TTFT_STEPS_RANGE),
    queue=st.floats(*TTFT_QUEUE_RANGE),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    index=st.integers(0, len(INSTANCES) - 1),
    prompt=st.sampled_from([128, 4000, 9000]),
    output=st.sampled_from([16, 1000]),
    chunk=st.sampled_from([512, 8192]),
    layout=st.integers(0, 99),
    a=st.integers(1, 4096),
    b=st.integers(1, 4096),
    m=ttft_models,
)
def test_serving_figures_only_grow_with_concurrency(
    index: int, prompt: int, output: int, chunk: int, layout: int, a: int, b: int, m: TTFTModel
) -> None:
    """For ``c1 < c2`` within the layout's memory limit: step, TTFT, TPOT and memory of the
    achievable and the bound figures at ``c1`` are at most those at ``c2``; whatever fits
    at ``c2`` fits at ``c1``. The serving search closes a range of concurrencies on the
    figures of its smallest one, which is sound only so."""
    probes = _probes(index, prompt, output, chunk)
    probe = probes[layout % len(probes)]
    limit = memory_limit(probe, 4096)
    if limit == 0:
        return
    c1, c2 = sorted((1 + (a - 1) % limit, 1 + (b - 1) % limit))
    w = probe.workload
    p1, p2 = probe.at(c1), probe.at(c2)
    assert p2.fits_bound <= p1.fits_bound and p2.fits <= p1.fits
    need1, _ = memory_lower_bound(probe.tables(c1, with_costs=False))
    need2, _ = memory_lower_bound(probe.tables(c2, with_costs=False))
    assert need1 <= need2
    for step, pre in (("step_bound_ns", "prefill_bound_ns"), ("step_ns", "prefill_ns")):
        if step == "step_ns" and not p2.fits:
            continue
        s1, s2 = getattr(p1, step), getattr(p2, step)
        f1, f2 = getattr(p1, pre), getattr(p2, pre)
        assert s1 <= s2 and f1 == f2
        assert tpot_ns(w, c1, s1, f1) <= tpot_ns(w, c2, s2, f2)
        assert ttft_ns(w, c1, s1, f1, m) <= ttft_ns(w, c2, s2, f2, m)
    # The bound figures bound the achievable ones, so TTFT's bound is one too.
    if p1.fits:
        lb = ttft_ns(w, c1, p1.step_bound_ns, p1.prefill_bound_ns, m)
        assert lb <= ttft_ns(w, c1, p1.step_ns, p1.prefill_ns, m)


# --- the fit -------------------------------------------------------------------------------


@cache
def _sample_rows() -> tuple[Measurement, ...]:
    """A small slice of the bundled measurements: two engines, all concurrencies of a few
    layouts of gpt-oss-120b."""
    rows = load_measurements(ROOT / "instances/measurements/silicon_sample.json").rows
    keep = [r for r in rows if r.model == "gpt-oss-120b" and r.engine in ("trtllm", "vllm")]
    return tuple(keep[:80])


def test_ttft_fit_is_deterministic_bounded_and_closer() -> None:
    """The TTFT models are the same on the same rows, stay in their bounds, and predict
    the rows' TTFT better than the uncalibrated formula (which has no queue)."""
    rows = _sample_rows()
    a, b = fit(rows), fit(rows)
    assert a.digest() == b.digest()
    assert "default" in a.ttft
    for m in a.ttft.values():
        assert TTFT_FIXED_MS_RANGE[0] <= m.fixed_ms <= TTFT_FIXED_MS_RANGE[1]
        assert TTFT_PREFILL_RANGE[0] <= m.prefill_factor <= TTFT_PREFILL_RANGE[1]
        assert TTFT_STEPS_RANGE[0] <= m.steps <= TTFT_STEPS_RANGE[1]
        assert TTFT_QUEUE_RANGE[0] <= m.queue <= TTFT_QUEUE_RANGE[1]
    plain = a.model_copy(update={"ttft": {}})

    def err(c: Calibration) -> float:
        return sum(abs(math.log(predict_ttft_s(r, c) * 1e3 / (r.ttft_ms or 1))) for r in rows)

    assert err(a) < err(plain)



# --- solve and verify under a TTFT model that binds ----------------------------------------


def test_serving_solve_agrees_with_brute_force_under_a_binding_ttft_model() -> None:
    """With a calibration whose TTFT model queues every other client's prompt, the TTFT
    target (not TPOT or memory) limits the concurrency: the proven plan matches the brute
    force over every layout, split and concurrency, states the TTFT the formula gives at its
    concurrency, and passes the independent verifier with the calibration it records."""
    from placer import load_workload, verify
    from placer.config import SolveConfig
    from placer.plan import Plan
    from placer.search.outer import solve
    from tests.serving_brute import best_per_layout, meets

    model = load_model(ROOT / "models" / "olmoe-1b-7b-0924.json")
    cluster = load_cluster(ROOT / "instances" / "hardware" / "dgx-a100-40gb.json", gpus=2)
    queued = TTFTModel(fixed_ms=5.0, prefill_factor=1.5, steps=4.0, queue=1.0)
    calib = default_calibration().model_copy(update={"ttft": {"default": queued}})
    workload = load_workload(
        None, prompt_len=4000, output_len=1000, ttft_ms=300.0, tpot_ms=1000.0
    )
    with use_calibration(calib):
        plan = solve(model, cluster, workload, SolveConfig(), calibration=calib)
        per_layout = best_per_layout(model, cluster, workload, 400)
    again = Plan.model_validate_json(plan.model_dump_json())
    report = verify(again)
    assert report.ok, report.violations
    assert plan.status == "optimal" and plan.objective.gap == 0.0
    s = plan.serving
    assert s is not None and meets(workload, s.tpot_s, s.ttft_s)
    assert s.ttft_s == pytest.approx(
        ttft_s(workload, s.concurrency, s.step_s, s.prefill_s, queued), rel=1e-6
    )
    # The TTFT target binds: one more request per instance would break it.
    assert ttft_s(workload, s.concurrency + 1, s.step_s, s.prefill_s, queued) > 0.3 * 0.9
    best = max(rate for rate, _ in per_layout.values())
    assert s.tokens_per_s_instance == pytest.approx(best, rel=1e-3)
