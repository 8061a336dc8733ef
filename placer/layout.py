"""A parallel layout: degrees, layer split and expert slots.

GPUs are grouped into ``pp`` pipeline stages of ``stage_width`` GPUs. Inside a
stage the same GPUs are factorised twice (Megatron-Core "parallel folding",
SGLang's DP attention): attention as ``dp_attn`` groups of ``tp`` GPUs, and the
MoE blocks as ``ep`` expert-parallel ranks of ``etp`` GPUs each, repeated
``edp`` times. A GPU at position ``r`` of a stage has attention TP rank
``r % tp``, attention DP rank ``r // tp`` and expert-parallel rank
``(r // etp) % ep``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from placer._base import Frozen, NonNegInt, PosInt
from placer.cluster import MAX_GPUS
from placer.limits import MAX_EXPERTS, MAX_LAYERS


class Layout(Frozen):
    """Parallel degrees and how layers and expert slots are split."""

    tp: PosInt = Field(default=1, le=MAX_GPUS, description="Attention tensor-parallel degree.")
    pp: PosInt = Field(default=1, le=MAX_LAYERS, description="Pipeline stages.")
    ep: PosInt = Field(default=1, le=MAX_GPUS, description="Expert-parallel degree (per stage).")
    etp: PosInt | None = Field(
        default=None,
        le=MAX_GPUS,
        description="Tensor-parallel degree inside each expert; default fills the stage "
        "(stage_width // ep), as vLLM does without expert parallelism.",
    )
    dp_attn: PosInt = Field(
        default=1, le=MAX_GPUS, description="Data-parallel attention groups per stage."
    )
    layers_per_stage: tuple[Annotated[PosInt, Field(le=MAX_LAYERS)], ...] | None = Field(
        default=None,
        max_length=MAX_LAYERS,
        description="Layers in each stage; default an even split.",
    )
    redundant_experts: NonNegInt = Field(
        default=0,
        le=MAX_EXPERTS,
        description="Extra expert slots per MoE layer for replicas of hot experts.",
    )

    @model_validator(mode="after")
    def _check(self) -> Layout:
        width = self.tp * self.dp_attn
        etp = self.expert_tp
        if width % (self.ep * etp):
            raise ValueError(
                f"ep x etp ({self.ep} x {etp}) must divide the stage width tp x dp_attn "
                f"({self.tp} x {self.dp_attn} = {width})"
            )
        if self.layers_per_stage is not None and len(self.layers_per_stage) != self.pp:
            raise ValueError(
                f"layers_per_stage has {len(self.layers_per_stage)} entries but pp is {self.pp}"
            )
        return self

    @property
    def stage_width(self) -> int:
        """GPUs per pipeline stage."""
        return self.tp * self.dp_attn

    @property
    def expert_tp(self) -> int:
        """Effective expert tensor-parallel degree."""
        if self.etp is not None:
            return self.etp
        return max(1, (self.tp * self.dp_attn) // self.ep)

    @property
    def edp(self) -> int:
        """Copies of each expert-parallel group inside a stage (expert data parallelism)."""
        return self.stage_width // (self.ep * self.expert_tp)

    @property
    def gpus(self) -> int:
        """GPUs the layout uses."""
        return self.stage_width * self.pp

    def stage_layers(self, num_layers: int) -> tuple[tuple[int, ...], ...]:
        """Layer indices of every stage (even split: earlier stages take the remainder,
        as Megatron/TensorRT-LLM do)."""
        if self.layers_per_stage is not None:
            counts = list(self.layers_per_stage)
        else:
            base, extra = divmod(num_layers, self.pp)
            counts = [base + (1 if s < extra else 0) for s in range(self.pp)]
        out: list[tuple[int, ...]] = []
        start = 0
        for c in counts:
            out.append(tuple(range(start, start + c)))
            start += c
        return tuple(out)

    def record_fields(self) -> dict[str, int | str]:
        """The layout as search records and frontier points store it: its name, its degrees
        under their JSON names, and its GPU count (one shape for every record kind)."""
        return {
            "layout": self.describe(),
            "tp": self.tp,
            "pp": self.pp,
            "ep": self.ep,
            "etp": self.expert_tp,
            "dp_attn": self.dp_attn,
            "gpus": self.gpus,
        }

    def describe(self) -> str:
        """Short text such as ``TP4 PP4 EP4 ETP1``."""
        parts = [f"TP{self.tp}", f"PP{self.pp}", f"EP{self.ep}", f"ETP{self.expert_tp}"]
        if self.dp_attn > 1:
            parts.append(f"DPattn{self.dp_attn}")
        if self.redundant_experts:
            parts.append(f"+{self.redundant_experts} slots")
        return " ".join(parts)
