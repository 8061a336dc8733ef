"""What the deployment must serve: :class:`Workload`."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from placer._base import Bool, Float, Frozen, Int, PosFloat, PosInt
from placer.dtypes import KVDtype, WeightDtype
from placer.limits import MAX_BATCH, MAX_TOKENS, MIN_MEMORY_UTILIZATION

GIB = 1024**3


class Workload(Frozen):
    """Batch, sequence lengths, phase, number formats and memory policy."""

    omitted_at_default: ClassVar[frozenset[str]] = frozenset({"speculative_mtp"})

    batch: PosInt = Field(
        default=8,
        le=MAX_BATCH,
        description="Concurrent requests (sequences) served: a fixed batch. Leave it out with "
        "latency targets: the serving search then chooses the concurrency (docs/serving.md).",
    )
    prompt_len: PosInt = Field(
        default=1024, le=MAX_TOKENS, description="Prompt tokens per request."
    )
    output_len: PosInt = Field(
        default=256, le=MAX_TOKENS, description="Generated tokens per request."
    )
    context: PosInt | None = Field(
        default=None,
        le=MAX_TOKENS,
        description="KV-cache length per request; default prompt_len + output_len.",
    )
    phase: Literal["prefill", "decode", "both"] = Field(
        default="decode", description="Which phase the estimates and the objective are for."
    )
    weight_dtype: WeightDtype | None = Field(
        default=None, description="Dtype of linear weights; None keeps the model's own."
    )
    expert_dtype: WeightDtype | None = Field(
        default=None, description="Dtype of routed experts; None follows weight_dtype or model."
    )
    kv_dtype: KVDtype = Field(default="bf16", description="Dtype of the KV cache.")
    activation_dtype: Literal["bf16", "fp16"] = Field(
        default="bf16", description="Dtype of activations and of traffic between GPUs."
    )
    memory_utilization: Float = Field(
        default=0.9,
        ge=MIN_MEMORY_UTILIZATION,
        le=1,
        description="Fraction of each GPU's memory placer may plan for (vLLM's default 0.9).",
    )
    runtime_reserve_bytes: Int = Field(
        default=GIB,
        ge=0,
        le=2**50,
        description="Per-GPU bytes for CUDA context, NCCL buffers and graphs, outside the plan.",
    )
    max_batched_tokens: PosInt = Field(
        default=8192,
        le=MAX_TOKENS,
        description="Prefill tokens per step (chunked prefill; vLLM default 8192).",
    )

    ttft_ms: PosFloat | None = Field(
        default=None,
        description="Time-to-first-token target, ms: the serving search keeps every request's "
        "TTFT at or below it (docs/serving.md).",
    )
    tpot_ms: PosFloat | None = Field(
        default=None,
        description="Time-per-output-token target, ms: the decode step at the chosen "
        "concurrency stays at or below it (docs/serving.md).",
    )
    request_rate: PosFloat | None = Field(
        default=None,
        description="Requests per second to serve (objective gpus of the serving search).",
    )

    speculative_mtp: Bool = Field(
        default=False,
        description="Load the model's multi-token-prediction layers (num_nextn_predict_layers) "
        "for speculative decoding: engines load them only then (docs/engine-rules.md).",
    )

    @model_validator(mode="after")
    def _check(self) -> Workload:
        if self.context is not None and self.context < 1:
            raise ValueError("context must be positive")
        if self.serving and "batch" in self.model_fields_set:
            raise ValueError(
                "batch is a fixed concurrency; with ttft_ms, tpot_ms or request_rate the "
                "serving search chooses the concurrency: leave batch out"
            )
        return self

    @property
    def serving(self) -> bool:
        """Whether the workload asks the serving question (targets or a request rate)
        rather than the fixed-batch one."""
        return any(v is not None for v in (self.ttft_ms, self.tpot_ms, self.request_rate))

    @property
    def kv_tokens(self) -> int:
        """Tokens of KV cache kept per request."""
        return self.context if self.context is not None else self.prompt_len + self.output_len
