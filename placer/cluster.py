"""GPU systems: :class:`ClusterSpec` with GPU types and a hierarchical topology.

GPUs are numbered in file order, group by group. Levels of the hierarchy, from
fastest to slowest: the scale-up domain (NVLink/NVSwitch, xGMI; may span nodes,
as in an NVL72 rack), the node (e.g. PCIe between two domains of one box) and
the scale-out fabric (InfiniBand/RoCE). A group of GPUs talks at the bandwidth
of the slowest level it spans.
"""

from __future__ import annotations

from functools import cached_property
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from placer._base import Float, Frozen, PosFloat, PosInt

Level = Literal["scale_up", "node", "scale_out"]

#: Ranges far beyond any real system. They keep every byte sum inside 64-bit integers and
#: every time finite, so absurd inputs get a clear error instead of an overflow.
MAX_MEMORY_BYTES = 2**50  # 1 PiB per GPU
MAX_GPUS = 1_000_000
MIN_RATE = 1e-6  # GB/s or TFLOPS
MAX_RATE = 1e7
MAX_LATENCY_US = 1e6


class GPUType(Frozen):
    """One kind of GPU."""

    name: str = Field(min_length=1, description="GPU model, e.g. H200-SXM-141GB.")
    memory_bytes: PosInt = Field(
        le=MAX_MEMORY_BYTES, description="Usable HBM in bytes (as the driver reports)."
    )
    hbm_bandwidth_gbps: PosFloat = Field(
        ge=MIN_RATE, le=MAX_RATE, description="HBM bandwidth in GB/s (1e9 B/s)."
    )
    tflops: dict[str, PosFloat] = Field(
        description="Dense TFLOPS per compute dtype (bf16, fp16, fp8, fp4); absent = unsupported."
    )

    @field_validator("tflops")
    @classmethod
    def _check_tflops(cls, tflops: dict[str, float]) -> dict[str, float]:
        # A field validator, so that errors name 'tflops' rather than the whole GPU.
        unknown = set(tflops) - {"bf16", "fp16", "fp8", "fp4", "fp32"}
        if unknown:
            names = ", ".join(repr(n) for n in sorted(unknown))
            raise ValueError(f"unknown compute dtype(s) in tflops: {names}")
        if not tflops:
            raise ValueError("tflops must give at least one dtype")
        for name, value in tflops.items():
            if not MIN_RATE <= value <= MAX_RATE:
                raise ValueError(
                    f"tflops.{name} = {value:g} is outside [{MIN_RATE:g}, {MAX_RATE:g}]"
                )
        return tflops

    def peak_flops(self, dtype: str) -> float:
        """Dense FLOP/s for ``dtype``; falls back to 16-bit where the GPU lacks it
        (e.g. fp8 on A100 runs as weight-only, computing in 16-bit)."""
        for d in (dtype, "bf16", "fp16", "fp32"):
            if d in self.tflops:
                return self.tflops[d] * 1e12
        # Only low-precision rates are known: use the lowest, the honest pessimistic choice.
        return min(self.tflops.values()) * 1e12


class Link(Frozen):
    """One level of the interconnect, per GPU and per direction."""

    bandwidth_gbps: PosFloat = Field(
        ge=MIN_RATE, le=MAX_RATE, description="GB/s per GPU per direction."
    )
    latency_us: Float = Field(
        ge=0, le=MAX_LATENCY_US, description="One-way latency of a message, microseconds."
    )
    name: str = Field(default="", description="Technology, e.g. NVLink 4 / NDR InfiniBand.")


class GPUGroup(Frozen):
    """``count`` GPUs of one type, filling nodes in order."""

    gpu: GPUType = Field(description="The GPU type.")
    count: PosInt = Field(le=MAX_GPUS, description="How many GPUs of this type.")


class ClusterSpec(Frozen):
    """A validated, immutable description of the GPUs and how they are connected."""

    name: str = Field(min_length=1, description="System name or id.")
    groups: tuple[GPUGroup, ...] = Field(min_length=1, description="GPU types and counts.")
    gpus_per_node: PosInt = Field(le=MAX_GPUS, description="GPUs in one node (server, tray).")
    scale_up_domain: PosInt = Field(
        le=MAX_GPUS, description="GPUs that share the scale-up fabric (NVLink/NVSwitch domain)."
    )
    scale_up: Link = Field(description="Link inside a scale-up domain.")
    node_link: Link | None = Field(
        default=None, description="Link between domains of one node (PCIe); None if no such gap."
    )
    scale_out: Link = Field(description="Link between nodes (per GPU, e.g. one NIC per GPU).")
    price_per_gpu_hour: PosFloat | None = Field(
        default=None, description="Optional price, for cost frontiers."
    )
    source: str | None = Field(default=None, description="Where the figures come from.")

    @model_validator(mode="after")
    def _check(self) -> ClusterSpec:
        d, n = self.scale_up_domain, self.gpus_per_node
        if d % n and n % d:
            raise ValueError(
                f"scale_up_domain ({d}) and gpus_per_node ({n}) must divide one another"
            )
        if n % d == 0 and n != d and self.node_link is None:
            raise ValueError(
                "'node_link' is missing: a node holding several scale-up domains needs it"
            )
        for g in self.groups[:-1]:
            if g.count % n:
                raise ValueError(
                    "every GPU group but the last must fill whole nodes "
                    f"({g.count} is not a multiple of gpus_per_node={n})"
                )
        return self

    @property
    def num_gpus(self) -> int:
        """All GPUs in the cluster."""
        return sum(g.count for g in self.groups)

    @property
    def num_nodes(self) -> int:
        """Nodes (the last may be partly filled)."""
        return -(-self.num_gpus // self.gpus_per_node)

    @cached_property
    def gpu_types(self) -> tuple[GPUType, ...]:
        """The type of every GPU, by GPU id."""
        return tuple(g.gpu for g in self.groups for _ in range(g.count))

    @cached_property
    def memory_bytes(self) -> np.ndarray:
        """HBM of every GPU, by GPU id (int64)."""
        return np.array([t.memory_bytes for t in self.gpu_types], dtype=np.int64)

    def node_of(self, gpu: int) -> int:
        """Node index of a GPU."""
        return gpu // self.gpus_per_node

    def domain_of(self, gpu: int) -> int:
        """Scale-up domain index of a GPU."""
        return gpu // self.scale_up_domain

    def level_of(self, gpus: list[int] | tuple[int, ...] | range) -> Level:
        """The slowest level a group of GPUs spans."""
        ids = list(gpus)
        if len({self.domain_of(g) for g in ids}) <= 1:
            return "scale_up"
        if len({self.node_of(g) for g in ids}) <= 1:
            return "node"
        return "scale_out"

    def link(self, level: Level) -> Link:
        """The link of a level."""
        if level == "scale_up":
            return self.scale_up
        if level == "node":
            assert self.node_link is not None
            return self.node_link
        return self.scale_out

    def with_gpus(self, gpus: int) -> ClusterSpec:
        """The same system with ``gpus`` GPUs of its (single) type."""
        if len(self.groups) != 1:
            raise ValueError("--gpus applies to single-type clusters; edit the file instead")
        # Not model_copy: it would carry over cached per-GPU arrays of the old count.
        data = self.model_dump()
        data["groups"] = [{"gpu": self.groups[0].gpu.model_dump(), "count": gpus}]
        return ClusterSpec.model_validate(data)

    def with_nodes(self, nodes: int) -> ClusterSpec:
        """The same system with ``nodes`` full nodes."""
        return self.with_gpus(nodes * self.gpus_per_node)
