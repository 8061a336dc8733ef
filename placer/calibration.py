"""Kernel efficiencies and fixed costs as data: what the roofline is scaled by.

A calibration file (format ``placer-calibration``) says, per GPU family, which
fraction of the datasheet peak each op class reaches (dense GEMM, grouped expert
GEMM, attention, HBM streaming, and 16-bit compute when a weight format the GPU
has no units for is dequantised on the fly), plus fixed costs per layer and per
step, and which fraction of link bandwidth collectives reach. ``placer
calibrate`` fits one from measurements (docs/cost-model.md, "Calibration"); the
package ships a default, used when none is given.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import Field

from placer._base import Float, Frozen, PosInt
from placer.io import check_finite, read_json, validate

#: Bounds every fitted parameter stays in (docs/cost-model.md, "Calibration").
EFFICIENCY_RANGE = (0.05, 1.0)
LAYER_US_RANGE = (0.0, 200.0)
STEP_US_RANGE = (0.0, 50_000.0)
#: Bounds of the TTFT (queueing) parameters (docs/cost-model.md, "Time to first token").
TTFT_FIXED_MS_RANGE = (0.0, 500.0)
TTFT_PREFILL_RANGE = (0.2, 5.0)
TTFT_STEPS_RANGE = (0.0, 64.0)
TTFT_QUEUE_RANGE = (0.0, 1.0)


class Efficiency(Frozen):
    """Achieved fraction of the datasheet peak, per op class."""

    dense_gemm: Float = Field(gt=0, le=1, description="Attention projections, dense MLP, head.")
    expert_gemm: Float = Field(gt=0, le=1, description="Grouped GEMM of routed experts.")
    attention: Float = Field(gt=0, le=1, description="Score/context FLOPs (incl. MLA decode).")
    hbm: Float = Field(gt=0, le=1, description="Streaming weights and KV cache from HBM.")
    dequant: Float = Field(
        gt=0,
        le=1,
        description="16-bit GEMM efficiency left when the weight format (FP8/FP4) has no "
        "tensor-core units on the GPU and is dequantised on the fly.",
    )
    comm: Float = Field(
        gt=0,
        le=1,
        description="Ideal per-message latency of collectives over the achieved "
        "one (launch and synchronisation); bandwidth is the datasheet's.",
    )


class TTFTModel(Frozen):
    """How long a new request waits for its first token under concurrency ``c``
    (docs/serving.md, "Timing model")::

        TTFT(c) = fixed + prefill_factor x prefill + (steps + chunks) x step(c)
                  + queue x (c - 1) x prefill

    ``prefill`` is one prompt through every stage, ``step(c)`` the decode step of ``c``
    requests, ``chunks`` the steps a prompt is spread over under chunked prefill. Every
    coefficient is non-negative, so TTFT only grows with ``c``. The defaults give the
    uncalibrated formula: the step in progress, then the prompt's chunks."""

    fixed_ms: Float = Field(
        default=0.0,
        ge=TTFT_FIXED_MS_RANGE[0],
        le=TTFT_FIXED_MS_RANGE[1],
        description="Fixed wait per request outside the steps (API server, tokenising, "
        "scheduling), ms.",
    )
    prefill_factor: Float = Field(
        default=1.0,
        ge=TTFT_PREFILL_RANGE[0],
        le=TTFT_PREFILL_RANGE[1],
        description="Measured over modelled prefill of one prompt (the TPOT fit sees the "
        "prefill only as a 1/output_len share).",
    )
    steps: Float = Field(
        default=1.0,
        ge=TTFT_STEPS_RANGE[0],
        le=TTFT_STEPS_RANGE[1],
        description="Decode steps of the running batch a new request waits for besides "
        "its own chunks (the step in progress, scheduling rounds).",
    )
    queue: Float = Field(
        default=0.0,
        ge=TTFT_QUEUE_RANGE[0],
        le=TTFT_QUEUE_RANGE[1],
        description="Prompts' prefills a request waits for, per other client: a closed "
        "loop of c clients whose requests arrive together has (c - 1) / 2 prompts ahead on "
        "average (0.5); batched prefill and clients drifting apart make it less.",
    )


class Calibration(Frozen):
    """Efficiencies per GPU family, fixed costs, and where they came from."""

    format: Literal["placer-calibration"] = Field(description="File format tag.")
    version: PosInt = Field(description="Version of this calibration's parameters.")
    name: str = Field(min_length=1, description="What it was fitted on.")
    method: str = Field(description="How it was obtained.")
    sources: tuple[str, ...] = Field(description="Where the measurements come from.")
    default: Efficiency = Field(description="Used for GPU families not listed.")
    families: dict[str, Efficiency] = Field(
        default_factory=dict,
        description="Per GPU family; a family matches a GPU whose name contains it "
        "(case-insensitive, the longest match wins: 'GB200' before 'B200').",
    )
    layer_us: Float = Field(
        ge=LAYER_US_RANGE[0],
        le=LAYER_US_RANGE[1],
        description="Fixed cost per layer and step (kernel launches, norms, routing), µs.",
    )
    step_us: Float = Field(
        ge=STEP_US_RANGE[0],
        le=STEP_US_RANGE[1],
        description="Fixed cost per step (sampling, scheduling), µs.",
    )
    error: dict[str, float] = Field(
        default_factory=dict,
        description="Cross-validated error of this calibration's TPOT estimates: median "
        "ratio, share within 20 % and within 1.5x (see benchmarks/fidelity_bench.py).",
    )
    ttft: dict[str, TTFTModel] = Field(
        default_factory=dict,
        description="TTFT model per engine ('vllm', 'sglang', 'trtllm'; 'default' for any "
        "other); none: the uncalibrated formula (TTFTModel's defaults).",
    )
    ttft_error: dict[str, float] = Field(
        default_factory=dict,
        description="Cross-validated error of this calibration's TTFT estimates, as error.",
    )

    def efficiency(self, gpu_name: str) -> Efficiency:
        """The efficiencies of the family ``gpu_name`` belongs to."""
        name = gpu_name.upper()
        hits = [f for f in self.families if f.upper() in name]
        if not hits:
            return self.default
        return self.families[max(hits, key=len)]

    def ttft_model(self, engine: str | None) -> TTFTModel:
        """The TTFT model of ``engine`` (a profile such as ``sglang-tbo`` falls back to
        ``sglang``), else the calibration's ``default`` one, else the uncalibrated one."""
        name = engine or "default"
        for key in (name, name.split("-")[0], "default"):
            if key in self.ttft:
                return self.ttft[key]
        return TTFTModel()

    def digest(self) -> str:
        """SHA-256 of the canonical JSON: what a plan records to name its calibration.
        The TTFT fields are left out while empty, so a calibration written before they
        existed keeps its hash."""
        data = self.model_dump(mode="json")
        for key in ("ttft", "ttft_error"):
            if not data[key]:
                del data[key]
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def calibration_from_dict(data: object, source: str) -> Calibration:
    """Validate a calibration read from ``source``."""
    check_finite(data, source)
    return validate(Calibration, data, source)


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration file; errors name the file and field."""
    return calibration_from_dict(read_json(path), str(path))


@cache
def default_calibration() -> Calibration:
    """The calibration shipped with placer (fitted on instances/measurements/)."""
    text = resources.files("placer").joinpath("data/calibration.json").read_text("utf-8")
    return calibration_from_dict(json.loads(text), "placer/data/calibration.json")


_ACTIVE: ContextVar[Calibration | None] = ContextVar("placer_calibration", default=None)


def active_calibration() -> Calibration:
    """The calibration in force: the one set by :func:`use_calibration`, else the default."""
    return _ACTIVE.get() or default_calibration()


@contextmanager
def use_calibration(calibration: Calibration | None) -> Iterator[None]:
    """Price everything inside the block with ``calibration`` (None: the default). This is
    how a solve and the verification of its plan use the plan's calibration without passing
    it through every table."""
    token = _ACTIVE.set(calibration)
    try:
        yield
    finally:
        _ACTIVE.reset(token)
