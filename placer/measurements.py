"""Measured serving results, and what the cost model predicts for each.

A measurement file (format ``placer-measurements``) holds rows of one served
configuration each: source, engine and version, model, GPUs, layout, precision,
prompt/output lengths, concurrency and the measured TTFT, TPOT and throughput
(docs/cost-model.md, "Measurements"). The model and hardware name files of
``models/`` and ``instances/hardware/``.

A row is predicted as continuous batching runs it (docs/cost-model.md): every
decode step carries all ``concurrency`` requests, and each request's prompt is
prefilled once per ``output_len`` steps, so the mean time per output token is
one decode step plus ``1 / output_len`` of prefilling every prompt. Its time to
first token is the serving objective's (:func:`placer.serving.timing.ttft_s`):
the queue of prompts ahead, one prompt's prefill and the decode steps it waits
for, with the calibration's TTFT model of the row's engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import Field

from placer._base import Float, Frozen, PosInt
from placer.calibration import Calibration, active_calibration
from placer.cluster import ClusterSpec
from placer.cost import StepTerms, estimate, step_terms, steps
from placer.dtypes import WeightDtype
from placer.io import read_json, validate
from placer.layout import Layout
from placer.load import load_cluster, load_model
from placer.model import ModelSpec
from placer.serving.timing import ttft_s
from placer.workload import Workload

ROOT = Path(__file__).resolve().parent.parent


class Measurement(Frozen):
    """One measured configuration."""

    id: str = Field(min_length=1, description="Unique id within the file.")
    source: str = Field(min_length=1, description="Where the figure comes from.")
    engine: Literal["vllm", "sglang", "trtllm"] = Field(description="Serving engine.")
    engine_version: str = Field(description="Engine version.")
    model: str = Field(min_length=1, description="Model file name in models/ (no .json).")
    hardware: str = Field(min_length=1, description="Hardware file in instances/hardware/.")
    gpus: PosInt = Field(description="GPUs of one serving instance.")
    tp: PosInt = Field(description="Attention tensor parallelism.")
    dp_attn: PosInt = Field(description="Attention data parallelism.")
    pp: PosInt = Field(description="Pipeline stages.")
    ep: PosInt = Field(description="Expert parallelism.")
    moe_tp: PosInt = Field(description="Tensor parallelism inside each expert.")
    weight_dtype: WeightDtype = Field(description="Dense weights' format.")
    expert_dtype: WeightDtype = Field(description="Routed experts' format.")
    prompt_len: PosInt = Field(description="Input tokens per request.")
    output_len: PosInt = Field(description="Output tokens per request.")
    concurrency: PosInt = Field(description="Requests in flight.")
    ttft_ms: Float | None = Field(default=None, gt=0, description="Mean time to first token.")
    tpot_ms: Float = Field(gt=0, description="Mean time per output token.")
    throughput_tokens_s: Float | None = Field(
        default=None, gt=0, description="Output tokens per second of the instance."
    )

    def layout(self) -> Layout:
        """The placer layout of this row."""
        return Layout(tp=self.tp, dp_attn=self.dp_attn, pp=self.pp, ep=self.ep, etp=self.moe_tp)

    def layout_key(self) -> tuple[object, ...]:
        """What identifies a layout for cross-validation (all concurrencies share it)."""
        return (
            self.model,
            self.hardware,
            self.engine,
            self.tp,
            self.dp_attn,
            self.pp,
            self.ep,
            self.moe_tp,
            self.weight_dtype,
            self.expert_dtype,
        )


class MeasurementSet(Frozen):
    """A file of measurements."""

    format: Literal["placer-measurements"] = Field(description="File format tag.")
    about: str = Field(description="What the set is and how it was cleaned.")
    rows: tuple[Measurement, ...] = Field(min_length=1, description="The measurements.")


def load_measurements(path: str | Path) -> MeasurementSet:
    """Read a measurement file; errors name the file and field."""
    return validate(MeasurementSet, read_json(path), str(path))


@cache
def _model(name: str) -> ModelSpec:
    return load_model(ROOT / "models" / f"{name}.json")


@cache
def _cluster(name: str, gpus: int) -> ClusterSpec:
    return load_cluster(ROOT / "instances" / "hardware" / f"{name}.json", gpus=gpus)


def workload_of(row: Measurement) -> Workload:
    """The decode workload of a row: all requests in one batch at mid-generation context."""
    return Workload(
        batch=row.concurrency,
        prompt_len=row.prompt_len,
        output_len=row.output_len,
        phase="decode",
        weight_dtype=row.weight_dtype,
        expert_dtype=row.expert_dtype,
    )


def predict_s(row: Measurement, calibration: Calibration | None = None) -> tuple[float, float]:
    """Predicted (TPOT, TTFT) of ``row`` in seconds (see the module docstring): TPOT is one
    decode step plus the row's share of prefilling every prompt; TTFT is the serving
    objective's (docs/serving.md, "Timing model"), with the calibration's TTFT model of
    the row's engine."""
    model = _model(row.model)
    cluster = _cluster(row.hardware, row.gpus)
    w = workload_of(row)
    layout = row.layout()
    calib = calibration if calibration is not None else active_calibration()
    est = estimate(model, cluster, w, layout, calibration=calib, engine=row.engine)
    one = w.model_copy(update={"batch": 1, "phase": "prefill"})
    pre = estimate(model, cluster, one, layout, calibration=calib, engine=row.engine)
    tpot = est.cycle_s + est.ttft_s / row.output_len
    ttft = ttft_s(w, row.concurrency, est.cycle_s, pre.latency_s, calib.ttft_model(row.engine))
    return tpot, ttft


def predict_tpot_s(row: Measurement, calibration: Calibration | None = None) -> float:
    """Predicted mean time per output token of ``row`` (see :func:`predict_s`)."""
    model = _model(row.model)
    cluster = _cluster(row.hardware, row.gpus)
    est = estimate(
        model,
        cluster,
        workload_of(row),
        row.layout(),
        calibration=calibration,
        engine=row.engine,
    )
    return est.cycle_s + est.ttft_s / row.output_len


def predict_ttft_s(row: Measurement, calibration: Calibration | None = None) -> float:
    """Predicted mean time to first token of ``row`` (see :func:`predict_s`)."""
    return predict_s(row, calibration)[1]


@dataclass(frozen=True)
class RowTerms:
    """The roofline terms of a row's decode step, of its prefill share (per token) and of
    one prompt's prefill (what a new request's first token waits for)."""

    decode: StepTerms
    prefill: StepTerms
    prefill_weight: float  # 1 / output_len
    prefill_one: StepTerms


def row_terms(row: Measurement) -> RowTerms:
    """Terms of ``row`` for fitting (see :func:`placer.cost.step_terms`)."""
    model = _model(row.model)
    cluster = _cluster(row.hardware, row.gpus)
    w = workload_of(row)
    layout = row.layout()
    st = steps(w, layout)
    decode = st["decode"] if layout.pp == 1 else st["decode_micro"]
    one = w.model_copy(update={"batch": 1, "phase": "prefill"})
    return RowTerms(
        decode=step_terms(model, cluster, w, layout, decode, row.engine),
        prefill=step_terms(model, cluster, w, layout, st["prefill"], row.engine),
        prefill_weight=1.0 / row.output_len,
        prefill_one=step_terms(
            model, cluster, one, layout, steps(one, layout)["prefill"], row.engine
        ),
    )


def gpu_family(row: Measurement) -> str:
    """The GPU name of a row's hardware (what a calibration's family matches)."""
    return _cluster(row.hardware, row.gpus).gpu_types[0].name
