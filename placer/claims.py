"""Claims of a deployment document, and one judge per claim kind (:data:`JUDGES`): each
compares what is claimed with what placer computes, and says ``holds``, ``fails`` or
``cannot judge`` with the computed number and a one-line reason (used by
:mod:`placer.check`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from placer._base import Float, Frozen
from placer.cluster import MAX_GPUS, ClusterSpec
from placer.cost import Estimates
from placer.evaluate import Evaluation, evaluate
from placer.layout import Layout
from placer.model import ModelSpec
from placer.topology import balanced_counts, ep_rank
from placer.workload import Workload

Verdict = Literal["holds", "fails", "cannot judge"]
ClaimKind = Literal[
    "gpus_used",
    "degrees_fit_gpus",
    "memory_per_gpu_gb",
    "memory_headroom",
    "architecture",
    "modules_per_gpu",
    "latency_reduction",
    "throughput_gain",
    "gpu_utilization",
    "expert_utilization",
    "scale_up_domain",
    "acyclic",
    "optimal_layout",
]


#: Claims whose value is a count (GPUs, a domain size), and claims whose value is a number
#: (GB, a fraction, a ratio); their values are checked by kind when the file is read.
COUNT_CLAIMS = frozenset({"gpus_used", "degrees_fit_gpus", "scale_up_domain"})
NUMBER_CLAIMS = frozenset(
    {
        "memory_per_gpu_gb",
        "memory_headroom",
        "modules_per_gpu",
        "latency_reduction",
        "throughput_gain",
        "gpu_utilization",
        "expert_utilization",
    }
)
#: Largest claimed number (GB, ratio...): far beyond any real figure, and a float.
MAX_CLAIMED = 1e15


class Claim(Frozen):
    """One claim of a deployment document."""

    id: str = Field(description="Short name.")
    kind: ClaimKind = Field(description="What is claimed.")
    value: Any = Field(description="The claimed number or fact (a count or a number by kind).")
    tolerance: Float = Field(
        default=0.1, ge=0, le=MAX_CLAIMED, description="Relative tolerance for '~'."
    )
    variance: Float | None = Field(default=None, description="Claimed variance, if any.")
    text: str = Field(default="", description="The claim as written.")

    @field_validator("value")
    @classmethod
    def _value_fits_kind(cls, value: Any, info: ValidationInfo) -> Any:
        kind = info.data.get("kind")
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if kind in COUNT_CLAIMS and not (is_int and 0 <= value <= MAX_GPUS):
            raise ValueError(f"a {kind} claim needs an integer in [0, {MAX_GPUS}], got {value!r}")
        number = is_int or isinstance(value, float)
        if kind in NUMBER_CLAIMS and not (number and abs(value) <= MAX_CLAIMED):
            raise ValueError(
                f"a {kind} claim needs a number in [-{MAX_CLAIMED:g}, {MAX_CLAIMED:g}], "
                f"got {value!r}"
            )
        return value


class ClaimResult(Frozen):
    """The verdict on one claim."""

    id: str = Field(description="Claim id.")
    text: str = Field(description="The claim as written.")
    verdict: Verdict = Field(description="holds, fails or cannot judge.")
    computed: str = Field(description="The number placer computed.")
    reason: str = Field(description="One line on why.")


def _gb(x: float) -> str:
    return f"{x / 1e9:.2f} GB"


def _modules_per_gpu(model: ModelSpec, layout: Layout) -> list[int]:
    """Modules (attention/mixer blocks and experts) each GPU holds a whole or a shard of."""
    stages = layout.stage_layers(model.num_layers)
    out = []
    for s in range(layout.pp):
        for r in range(layout.stage_width):
            rank = ep_rank(r, layout.ep, layout.expert_tp)
            n = 0
            for i in stages[s]:
                n += 1  # the layer's attention (or Mamba) block, sharded or whole
                e = model.experts_in_layer(i)
                if e:
                    n += balanced_counts(e + layout.redundant_experts, layout.ep)[rank]
            out.append(n)
    return out


@dataclass(frozen=True)
class _Case:
    """One claim with everything a judge may need."""

    claim: Claim
    model: ModelSpec
    cluster: ClusterSpec
    workload: Workload
    layout: Layout
    ev: Evaluation | None
    folded: bool
    profile: str

    def res(self, verdict: Verdict, computed: str, reason: str) -> ClaimResult:
        """The verdict on this claim."""
        c = self.claim
        return ClaimResult(
            id=c.id, text=c.text or c.kind, verdict=verdict, computed=computed, reason=reason
        )

    def near(self, x: float, claimed: float) -> bool:
        """Within the claim's tolerance."""
        return abs(x - claimed) <= self.claim.tolerance * abs(claimed)

    @property
    def estimates(self) -> Estimates:
        """The layout's estimates (judges that need them run only when there are some)."""
        assert self.ev is not None and self.ev.estimates is not None
        return self.ev.estimates

    def peak_and_physical(self) -> tuple[int, int]:
        """The ledger's peak use and the smallest physical memory of the layout's GPUs."""
        assert self.ev is not None
        return (
            max(g.used_bytes for g in self.ev.gpus),
            min(g.memory_bytes for g in self.ev.gpus),
        )


def _gpus_used(k: _Case) -> ClaimResult:
    lay, n = k.layout, k.cluster.num_gpus
    ok = lay.gpus == k.claim.value and lay.gpus <= n
    return k.res(
        "holds" if ok else "fails",
        f"{lay.gpus} of {n}",
        f"tp {lay.tp} x dp_attn {lay.dp_attn} x pp {lay.pp} = {lay.gpus}",
    )


def _degrees_fit_gpus(k: _Case) -> ClaimResult:
    lay = k.layout
    product = lay.tp * lay.ep * lay.pp
    if product == k.claim.value:
        return k.res("holds", str(product), "the degrees multiply to the GPU count")
    if k.folded and lay.gpus == k.claim.value:
        return k.res(
            "holds",
            f"{product} unfolded, {lay.gpus} folded",
            "TP and EP share each stage's GPUs (folding), as the file states",
        )
    return k.res(
        "fails",
        f"{lay.tp} x {lay.ep} x {lay.pp} = {product}",
        f"{product} GPUs as stated; only TP and EP folded onto the same GPUs of a "
        f"stage (expert TP 1) gives {lay.gpus}, and the claim never says so",
    )


def _architecture(k: _Case) -> ClaimResult:
    want = k.claim.value if isinstance(k.claim.value, dict) else {}
    layers, experts = k.model.num_layers, k.model.max_experts
    ok = want.get("layers", layers) == layers and want.get("experts_per_layer", experts) == experts
    return k.res(
        "holds" if ok else "fails",
        f"{layers} layers x {experts} experts",
        "read from the model file",
    )


def _acyclic(k: _Case) -> ClaimResult:
    return k.res("holds", "acyclic", "the model loaded, and loading rejects cycles")


def _scale_up_domain(k: _Case) -> ClaimResult:
    cl = k.cluster
    ok = cl.scale_up_domain >= int(k.claim.value)
    return k.res(
        "holds" if ok else "fails",
        f"{cl.scale_up_domain} GPUs per domain",
        f"{cl.scale_up.name or 'scale-up link'} from the hardware file",
    )


def _modules_per_gpu_claim(k: _Case) -> ClaimResult:
    model, c = k.model, k.claim
    counts = _modules_per_gpu(model, k.layout)
    whole = model.num_layers + sum(model.experts_in_layer(i) for i in range(model.num_layers))
    n = k.layout.gpus
    base, extra = divmod(whole, n)
    computed = (
        f"{min(counts)}-{max(counts)} module pieces per GPU; whole modules {whole} / {n} GPUs"
    )
    claimed = float(c.value)
    if claimed != int(claimed) and (c.variance == 0 or c.variance is None):
        return k.res(
            "fails",
            computed,
            f"{whole} whole modules on {n} GPUs give {n - extra} GPUs with {base} "
            f"and {extra} with {base + 1} (variance > 0); {claimed:g} per GPU with "
            "zero variance is impossible, and with sharding each GPU holds pieces of "
            f"{max(counts)} modules",
        )
    ok = all(x == claimed for x in counts)
    return k.res("holds" if ok else "fails", computed, "counted from the layout")


def _memory_per_gpu_gb(k: _Case) -> ClaimResult:
    c, wl = k.claim, k.workload
    peak, _ = k.peak_and_physical()
    assert k.ev is not None
    ok = k.near(peak / 1e9, float(c.value)) and k.ev.fits
    return k.res(
        "holds" if ok else "fails",
        _gb(peak),
        f"ledger at batch {wl.batch}, {wl.kv_tokens} cached tokens, "
        f"weights {k.model.dtype}; within {c.tolerance:.0%} of {c.value} GB"
        if ok
        else f"the ledger gives {_gb(peak)} at batch {wl.batch} and "
        f"{wl.kv_tokens} cached tokens, not ~{c.value} GB",
    )


def _memory_headroom(k: _Case) -> ClaimResult:
    peak, physical = k.peak_and_physical()
    head = 1 - peak / physical
    return k.res(
        "holds" if k.near(head, float(k.claim.value)) else "fails",
        f"{head:.0%} of {_gb(physical)}",
        "physical memory minus the ledger's peak",
    )


def _latency_reduction(k: _Case) -> ClaimResult:
    flat = k.layout.model_copy(update={"pp": 1, "layers_per_stage": None})
    unpiped = evaluate(k.model, k.cluster, k.workload, flat, k.profile)
    assert unpiped.estimates is not None
    mine, base = k.estimates.latency_s, unpiped.estimates.latency_s
    change = 1 - mine / base
    return k.res(
        "fails" if change < float(k.claim.value) * (1 - k.claim.tolerance) else "holds",
        f"{-change:+.0%} latency vs pp=1 ({mine * 1e3:.2f} vs {base * 1e3:.2f} ms)",
        "a request still passes through every layer in order: pipelining adds "
        "stage hand-offs to latency and only raises throughput with micro-batches",
    )


def _throughput_gain(k: _Case) -> ClaimResult:
    return k.res(
        "cannot judge",
        f"{k.estimates.throughput_tokens_s:,.0f} tokens/s estimated",
        "the claim names no baseline, workload or measurement to compare with",
    )


def _gpu_utilization(k: _Case) -> ClaimResult:
    assert k.ev is not None
    achieved = compute_utilization(k.ev, k.model, k.cluster)
    return k.res(
        "cannot judge",
        f"~{achieved:.1%} of peak FLOPS (roofline estimate)",
        "no measurement is given; the roofline model estimates far less for this workload"
        if achieved < float(k.claim.value)
        else "no measurement is given",
    )


def _expert_utilization(k: _Case) -> ClaimResult:
    return k.res(
        "cannot judge",
        "routing assumed uniform",
        "needs expert load statistics (placer balance takes them)",
    )


def _optimal_layout(k: _Case) -> ClaimResult:
    return k.res("cannot judge", "", "see the comparison with placer solve")


#: One judge per claim kind. Judges of claims about the layout's memory or speed need its
#: evaluation, and say "cannot judge" when the layout does not fit the cluster.
JUDGES: dict[str, tuple[Callable[[_Case], ClaimResult], bool]] = {
    "gpus_used": (_gpus_used, False),
    "degrees_fit_gpus": (_degrees_fit_gpus, False),
    "architecture": (_architecture, False),
    "acyclic": (_acyclic, False),
    "scale_up_domain": (_scale_up_domain, False),
    "modules_per_gpu": (_modules_per_gpu_claim, False),
    "memory_per_gpu_gb": (_memory_per_gpu_gb, True),
    "memory_headroom": (_memory_headroom, True),
    "latency_reduction": (_latency_reduction, True),
    "throughput_gain": (_throughput_gain, True),
    "gpu_utilization": (_gpu_utilization, True),
    "expert_utilization": (_expert_utilization, True),
    "optimal_layout": (_optimal_layout, True),
}


def judge_claim(
    c: Claim,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    layout: Layout,
    ev: Evaluation | None,
    folded: bool,
    profile: str,
) -> ClaimResult:
    """The verdict on one claim, from its kind's judge in :data:`JUDGES`."""
    case = _Case(c, model, cluster, workload, layout, ev, folded, profile)
    judge, needs_estimates = JUDGES[c.kind]
    if needs_estimates and (ev is None or ev.estimates is None):
        return case.res("cannot judge", "-", "the layout does not fit this cluster")
    return judge(case)


def compute_utilization(ev: Evaluation, model: ModelSpec, cluster: ClusterSpec) -> float:
    """Model FLOPs per step (2 per active parameter per token) over what the layout's GPUs
    could do at peak in one pipelined cycle: a coarse model-FLOPs utilisation."""
    e = ev.estimates
    assert e is not None
    peak = cluster.gpu_types[0].peak_flops("bf16") * ev.layout.gpus
    flops = 2.0 * model.active_params() * e.tokens_per_step
    return flops / (peak * e.cycle_s) if e.cycle_s > 0 else 0.0
