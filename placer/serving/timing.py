"""TTFT, TPOT and throughput of one instance at one concurrency: the serving formulas.

This is the one module that turns the cost model's per-step times into serving figures
(docs/serving.md, "Timing model"). It never changes what a step costs: the decode step at a
batch and context and the prefill of one prompt come from :mod:`placer.cost` through the
integer tables of :mod:`placer.search.tables`, so a calibrated cost model plugs in unchanged.

- step(c): the decode step of ``c`` concurrent requests (the pipelined cycle with ``pp``
  micro-batches), each request gaining one token per step.
- TPOT(c): continuous batching with chunked prefill interleaves every new prompt into the
  decode steps. While each of the ``c`` requests produces ``output_len`` tokens, ``c`` new
  prompts are prefilled, so a request waits on average ``step(c) + c x prefill /
  output_len`` per output token. This, not the bare step, is what a user sees.
- TTFT(c): a new request waits for the prompts queued ahead of it (a closed loop of ``c``
  clients), the steps of the running batch its prompt's ``ceil(prompt /
  max_batched_tokens)`` chunks ride on, and a fixed wait outside the steps:
  ``fixed + prefill_factor x prefill + (steps + chunks) x step(c) + queue x (c - 1) x
  prefill``, with the calibration's bounded, non-negative TTFT parameters of the engine
  (:class:`placer.calibration.TTFTModel`; uncalibrated: ``prefill + (chunks + 1) x
  step(c)``).
- Output tokens/s of an instance: ``c / TPOT(c)``; per user ``1 / TPOT(c)``.

step, TPOT and TTFT are non-decreasing in ``c``; this is what makes the concurrency search exact
(:mod:`placer.serving.search`).
"""

from __future__ import annotations

from placer.calibration import TTFTModel, active_calibration
from placer.collectives import active_engine
from placer.ledger import ceil_div
from placer.workload import Workload

#: Integer time unit of every serving time: one nanosecond (the placement tables' unit).
NS = 1e9


def instance_workload(workload: Workload, concurrency: int) -> Workload:
    """The fixed-batch workload of one instance serving ``concurrency`` requests: decode
    steps at that batch, memory for that many KV caches and one prefill chunk's workspace."""
    return workload.model_copy(update={"batch": concurrency, "phase": "both"})


def prefill_workload(workload: Workload) -> Workload:
    """The workload whose prefill step is one request's whole prompt."""
    return workload.model_copy(update={"batch": 1, "phase": "prefill"})


def prefill_chunks(workload: Workload) -> int:
    """Steps a prompt is spread over under chunked prefill."""
    return ceil_div(workload.prompt_len, workload.max_batched_tokens)


def ttft_model(engine: str | None = None) -> TTFTModel:
    """The TTFT model in force: the active calibration's, for ``engine`` (default: the
    engine profile in force, see :func:`placer.collectives.use_engine`)."""
    return active_calibration().ttft_model(engine if engine is not None else active_engine())


def _ttft(
    workload: Workload, concurrency: int, step: float, prefill: float, fixed: float, m: TTFTModel
) -> float:
    """TTFT in the unit of ``step``, ``prefill`` and ``fixed`` (see :func:`ttft_s`)."""
    waits = m.steps + prefill_chunks(workload)
    queued = m.queue * (concurrency - 1)
    return fixed + (m.prefill_factor + queued) * prefill + waits * step


def ttft_s(
    workload: Workload,
    concurrency: int,
    step_s: float,
    prefill_s: float,
    model: TTFTModel | None = None,
) -> float:
    """Mean time to first token, seconds (``model``: default :func:`ttft_model`).

    The queue term is what concurrency adds: a closed loop of ``c`` clients keeps up to
    ``c - 1`` other prompts ahead of a new one. Every term is a non-negative multiple of a
    figure that does not shrink with ``c``, so TTFT is non-decreasing in ``c``, and a lower
    bound when ``step_s`` and ``prefill_s`` are lower bounds."""
    m = model if model is not None else ttft_model()
    return _ttft(workload, concurrency, step_s, prefill_s, m.fixed_ms * 1e-3, m)


def ttft_ns(
    workload: Workload,
    concurrency: int,
    step_ns: int,
    prefill_ns: int,
    model: TTFTModel | None = None,
) -> int:
    """:func:`ttft_s` in integer nanoseconds (rounding keeps it non-decreasing in ``c``)."""
    m = model if model is not None else ttft_model()
    return round(_ttft(workload, concurrency, step_ns, prefill_ns, m.fixed_ms * 1e6, m))


def tpot_ns(workload: Workload, concurrency: int, step_ns: int, prefill_ns: int) -> float:
    """Mean time per output token: the decode step plus each step's share of the prefills
    interleaved with it."""
    return step_ns + concurrency * prefill_ns / workload.output_len


def tokens_per_s(workload: Workload, concurrency: int, step_ns: int, prefill_ns: int) -> float:
    """Output tokens per second of one instance at ``concurrency``."""
    t = tpot_ns(workload, concurrency, step_ns, prefill_ns)
    return concurrency * NS / t if t > 0 else 0.0


def tokens_per_s_bound(
    workload: Workload, low: int, high: int, step_low_ns: int, prefill_ns: int
) -> float:
    """No concurrency in ``[low, high]`` gives more output tokens/s than this, when
    ``step_low_ns`` is a lower bound on step(low) (hence on step(c) for every c >= low)
    and ``prefill_ns`` a lower bound on the prefill."""
    t = tpot_ns(workload, low, step_low_ns, prefill_ns)
    return high * NS / t if t > 0 else float("inf")


def tokens_per_s_ceiling(workload: Workload, step_one_ns: int, prefill_ns: int) -> float:
    """No concurrency gives one instance more output tokens/s than this, when
    ``step_one_ns`` bounds step(1) and ``prefill_ns`` the prefill from below.

    TPOT(c) >= step(1) + c x prefill / output_len, so c / TPOT(c) is at most
    c / (step(1) + c x prefill / output_len), which grows with c; the TPOT target caps c at
    (target - step(1)) x output_len / prefill. Without a TPOT target the limit is
    output_len / prefill (an instance cannot finish requests faster than it prefills them).
    """
    out = workload.output_len
    if prefill_ns <= 0:
        return float("inf")
    if workload.tpot_ms is None:
        return out * NS / prefill_ns
    most = (workload.tpot_ms * 1e6 - step_one_ns) * out / prefill_ns
    if most < 1:
        return 0.0
    return most * NS / (step_one_ns + most * prefill_ns / out)


def disagg_ttft_ns(prefill_ns: int, transfer_ns: int, step_ns: int) -> int:
    """TTFT with separate prefill and decode instances: the prompt in progress on the
    prefill instance, its own prompt, the KV-cache transfer, then one decode step."""
    return 2 * prefill_ns + transfer_ns + step_ns
