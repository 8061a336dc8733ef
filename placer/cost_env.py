"""What a step on one pipeline stage is priced with (docs/cost-model.md): the step, the
stage's calibrated peaks, HBM bandwidth and links, the roofline of one block, and the
recorder that collects roofline terms by op class for the fit (placer/fit.py)."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from placer.calibration import Calibration, Efficiency
from placer.cluster import ClusterSpec, GPUType
from placer.collectives import (
    EngineComm,
    Wire,
)
from placer.dtypes import COMPUTE_DTYPE
from placer.layout import Layout
from placer.ledger import (
    ceil_div,
    weight_dtypes,
)
from placer.model import ModelSpec
from placer.workload import Workload


@dataclass(frozen=True)
class Step:
    """One step to be costed."""

    tokens: int  # tokens of the busiest attention-DP group
    total: int  # tokens of all attention-DP groups together (what the MoE blocks see)
    context: float  # cached tokens each token attends to (mean)
    decode: bool


def steps(workload: Workload, layout: Layout) -> dict[str, Step]:
    """The steps costed: the full batch and one of ``pp`` micro-batches, decode and prefill.

    Requests are spread over the attention-DP groups; the busiest group sets the
    attention time, and the MoE blocks see every group's tokens.
    """
    b, pp = workload.batch, layout.pp
    reqs = ceil_div(b, layout.dp_attn)
    micro_b = ceil_div(b, pp)
    micro = ceil_div(micro_b, layout.dp_attn)
    prompt = workload.prompt_len
    ctx = workload.kv_tokens
    return {
        "decode": Step(tokens=reqs, total=b, context=ctx, decode=True),
        "decode_micro": Step(tokens=micro, total=micro_b, context=ctx, decode=True),
        "prefill": Step(tokens=reqs * prompt, total=b * prompt, context=prompt / 2, decode=False),
        "prefill_micro": Step(
            tokens=micro * prompt, total=micro_b * prompt, context=prompt / 2, decode=False
        ),
    }


class Recorder:
    """Collects the roofline terms of a step by op class (see :func:`step_terms`)."""

    def __init__(self) -> None:
        self.weight = 1.0
        self.terms: dict[str, list[float]] = {}

    def add(self, kind: str, compute_s: float, memory_s: float) -> None:
        acc = self.terms.setdefault(kind, [0.0, 0.0])
        acc[0] += self.weight * compute_s
        acc[1] += self.weight * memory_s


RECORDER: ContextVar[Recorder | None] = ContextVar("placer_cost_recorder", default=None)


def roofline(flops: float, nbytes_: float, peak: float, bw: float, kind: str) -> float:
    rec = RECORDER.get()
    if rec is not None:
        rec.add(kind, flops / peak, nbytes_ / bw)
    return max(flops / peak, nbytes_ / bw)


@dataclass(frozen=True)
class Group:
    """A communicating group of GPUs: how it spreads over nodes, and its links."""

    size: int
    per_node: int
    nodes: int
    intra: Wire  # link between the group's GPUs inside one node
    inter: Wire  # link between nodes (each GPU's own NIC)


def wire(cluster: ClusterSpec, gpus: list[int], comm_eff: float) -> Wire:
    # The calibrated link efficiency stretches the per-message latency (launch, sync): the
    # measured data are decode steps of small messages, which cannot tell bandwidth apart;
    # bandwidth stays at the datasheet figure (docs/cost-model.md).
    link = cluster.link(cluster.level_of(gpus))
    return Wire(bandwidth=link.bandwidth_gbps * 1e9, latency=link.latency_us * 1e-6 / comm_eff)


def group(cluster: ClusterSpec, gpus: range, comm_eff: float) -> Group:
    ids = list(gpus)
    # A scale-up domain spanning nodes (NVL72) is one "node" for collectives.
    span = max(cluster.gpus_per_node, cluster.scale_up_domain)
    units = sorted({g // span for g in ids})
    first_unit = [g for g in ids if g // span == units[0]]
    return Group(
        size=len(ids),
        per_node=len(first_unit),
        nodes=len(units),
        intra=wire(cluster, first_unit, comm_eff),
        inter=wire(cluster, ids, comm_eff),
    )


def emulated(gpu: GPUType, dtype: str) -> bool:
    compute = COMPUTE_DTYPE[dtype]
    return compute in ("fp8", "fp4") and compute not in gpu.tflops


def peak(gpu: GPUType, dtype: str, gemm_eff: float, eff: Efficiency) -> float:
    """Achievable FLOP/s for weights of ``dtype``: the GPU's rate for its compute dtype
    times the op's efficiency; a format without units on this GPU (FP4 on H100, FP8 on
    A100) is dequantised and multiplied in 16-bit at the ``dequant`` efficiency."""
    peak = gpu.peak_flops(COMPUTE_DTYPE[dtype]) * gemm_eff
    return peak * eff.dequant if emulated(gpu, dtype) else peak


@dataclass(frozen=True)
class StageEnv:
    peak: float
    peak_expert: float
    peak_attention: float
    bw: float
    tp: Group
    moe: Group
    engine: EngineComm
    layer_s: float
    step_s: float
    expert_emulated: str  # "+dequant" when expert weights are dequantised to 16-bit


def stage_env(
    cluster: ClusterSpec,
    model: ModelSpec,
    workload: Workload,
    layout: Layout,
    stage: int,
    calibration: Calibration,
    engine: EngineComm,
) -> StageEnv:
    first = stage * layout.stage_width
    gpu = cluster.gpu_types[first]
    eff = calibration.efficiency(gpu.name)
    base, expert_dtype, _ = weight_dtypes(model, workload)
    return StageEnv(
        peak=peak(gpu, base, eff.dense_gemm, eff),
        peak_expert=peak(gpu, expert_dtype, eff.expert_gemm, eff),
        peak_attention=gpu.peak_flops("bf16") * eff.attention,
        bw=gpu.hbm_bandwidth_gbps * 1e9 * eff.hbm,
        tp=group(cluster, range(first, first + layout.tp), eff.comm),
        moe=group(cluster, range(first, first + layout.stage_width), eff.comm),
        engine=engine,
        layer_s=calibration.layer_us * 1e-6,
        step_s=calibration.step_us * 1e-6,
        expert_emulated="+dequant" if emulated(gpu, expert_dtype) else "",
    )
