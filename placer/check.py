"""``placer check``: audit a claimed deployment, claim by claim, against computed numbers.

A deployment file names a layout and lists claims (GPUs used, memory per GPU,
modules per GPU, latency or throughput changes...). Each claim gets a verdict,
``holds``, ``fails`` or ``cannot judge``, with the number placer computed and a
one-line reason; then the claimed layout is compared with ``placer solve``'s
optimum on the same inputs. A layout the model cannot have (EP larger than the
experts, TP not dividing the heads) is a failed claim, not a crash.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator

from placer._base import Float, Frozen
from placer.cluster import MAX_GPUS, ClusterSpec
from placer.config import SolveConfig
from placer.evaluate import Evaluation, evaluate
from placer.exceptions import InvalidInputError
from placer.io import read_json, validate, validation_error
from placer.layout import Layout
from placer.model import ModelSpec
from placer.plan import Plan
from placer.rules import get_profile, layout_violations
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


class Deployment(Frozen):
    """A claimed deployment: a layout and its claims."""

    format: Literal["placer-deployment"] = Field(description="File format tag.")
    name: str = Field(default="deployment", description="What is audited.")
    source: str | None = Field(default=None, description="Where the claims come from.")
    notes: str | None = Field(default=None, description="Free text.")
    layout: dict[str, Any] = Field(
        description="tp, pp, ep, optional etp, dp_attn, "
        "layers_per_stage; 'folded': true states TP/EP folding."
    )
    workload: dict[str, Any] = Field(default_factory=dict, description="Workload fields.")
    claims: tuple[Claim, ...] = Field(description="The claims to check.")


class ClaimResult(Frozen):
    """The verdict on one claim."""

    id: str = Field(description="Claim id.")
    text: str = Field(description="The claim as written.")
    verdict: Verdict = Field(description="holds, fails or cannot judge.")
    computed: str = Field(description="The number placer computed.")
    reason: str = Field(description="One line on why.")


class CheckReport(Frozen):
    """All verdicts, and how the claimed layout compares with the optimum."""

    name: str = Field(description="What was audited.")
    layout: str = Field(description="The claimed layout.")
    results: tuple[ClaimResult, ...] = Field(description="One per claim (plus legality).")
    comparison: str = Field(description="Claimed layout vs placer solve's plan.")
    plan_status: str | None = Field(description="Status of the comparison solve.")

    @property
    def failed(self) -> list[ClaimResult]:
        """Claims that do not hold."""
        return [r for r in self.results if r.verdict == "fails"]


def load_deployment(path: str) -> Deployment:
    """Read a deployment file."""
    return validate(Deployment, read_json(path), path)


def _layout(dep: Deployment, source: str) -> Layout:
    keys = {"tp", "pp", "ep", "etp", "dp_attn", "layers_per_stage", "redundant_experts"}
    try:
        return Layout(**{k: v for k, v in dep.layout.items() if k in keys})
    except ValidationError as exc:
        raise validation_error(exc, source, "layout") from None


def _gb(x: float) -> str:
    return f"{x / 1e9:.2f} GB"


def _modules_per_gpu(model: ModelSpec, layout: Layout) -> list[int]:
    """Modules (attention/mixer blocks and experts) each GPU holds a whole or a shard of."""
    stages = layout.stage_layers(model.num_layers)
    out = []
    for s in range(layout.pp):
        for r in range(layout.stage_width):
            ep_rank = (r // layout.expert_tp) % layout.ep
            n = 0
            for i in stages[s]:
                n += 1  # the layer's attention (or Mamba) block, sharded or whole
                e = model.experts_in_layer(i)
                if e:
                    base, extra = divmod(e + layout.redundant_experts, layout.ep)
                    n += base + (1 if ep_rank < extra else 0)
            out.append(n)
    return out


def check_claims(
    dep: Deployment,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    profile: str = "generic",
    solve_limit_s: float = 20.0,
    source: str = "<deployment>",
) -> CheckReport:
    """Judge every claim of ``dep`` (see module docstring)."""
    prof = get_profile(profile)
    out: list[ClaimResult] = []
    try:
        layout = _layout(dep, source)
    except InvalidInputError as exc:
        out.append(
            ClaimResult(
                id="layout",
                text=str(dep.layout),
                verdict="fails",
                computed="-",
                reason=f"the layout cannot exist: {exc.detail}",
            )
        )
        return CheckReport(
            name=dep.name,
            layout=str(dep.layout),
            results=tuple(out),
            comparison="not compared: the claimed layout is not a layout",
            plan_status=None,
        )
    bad = layout_violations(model, cluster, layout, prof)
    out.append(
        ClaimResult(
            id="layout",
            text=f"{layout.describe()} is a legal layout",
            computed=layout.describe(),
            verdict="fails" if bad else "holds",
            reason="; ".join(bad) if bad else f"legal under the '{prof.name}' rules profile",
        )
    )
    ev = (
        evaluate(model, cluster, workload, layout, prof)
        if layout.gpus <= cluster.num_gpus
        else None
    )
    folded = bool(dep.layout.get("folded"))
    for c in dep.claims:
        out.append(_judge(c, model, cluster, workload, layout, ev, folded, prof.name))
    comparison, status, beaten = _compare(
        model, cluster, workload, layout, ev, profile, solve_limit_s
    )
    optimal_ids = {c.id for c in dep.claims if c.kind == "optimal_layout"}
    for i, r in enumerate(out):
        if r.id not in optimal_ids:
            continue
        update: dict[str, Any] = {"computed": comparison}
        if beaten is not None and beaten > 1 + 1e-9:
            update["verdict"] = "fails"
            update["reason"] = (
                f"placer's proven optimum has {beaten:.2f}x the claimed "
                "layout's estimated throughput"
            )
        out[i] = r.model_copy(update=update)
    return CheckReport(
        name=dep.name,
        layout=layout.describe(),
        results=tuple(out),
        comparison=comparison,
        plan_status=status,
    )


def _judge(
    c: Claim,
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    layout: Layout,
    ev: Evaluation | None,
    folded: bool,
    profile: str,
) -> ClaimResult:
    def res(verdict: Verdict, computed: str, reason: str) -> ClaimResult:
        return ClaimResult(
            id=c.id, text=c.text or c.kind, verdict=verdict, computed=computed, reason=reason
        )

    def near(x: float, claimed: float) -> bool:
        return abs(x - claimed) <= c.tolerance * abs(claimed)

    if c.kind == "gpus_used":
        ok = layout.gpus == c.value and layout.gpus <= cluster.num_gpus
        return res(
            "holds" if ok else "fails",
            f"{layout.gpus} of {cluster.num_gpus}",
            f"tp {layout.tp} x dp_attn {layout.dp_attn} x pp {layout.pp} = {layout.gpus}",
        )
    if c.kind == "degrees_fit_gpus":
        product = layout.tp * layout.ep * layout.pp
        if product == c.value:
            return res("holds", str(product), "the degrees multiply to the GPU count")
        if folded and layout.gpus == c.value:
            return res(
                "holds",
                f"{product} unfolded, {layout.gpus} folded",
                "TP and EP share each stage's GPUs (folding), as the file states",
            )
        return res(
            "fails",
            f"{layout.tp} x {layout.ep} x {layout.pp} = {product}",
            f"{product} GPUs as stated; only TP and EP folded onto the same GPUs of a "
            f"stage (expert TP 1) gives {layout.gpus}, and the claim never says so",
        )
    if c.kind == "architecture":
        want = c.value if isinstance(c.value, dict) else {}
        layers = model.num_layers
        experts = model.max_experts
        ok = (
            want.get("layers", layers) == layers
            and want.get("experts_per_layer", experts) == experts
        )
        return res(
            "holds" if ok else "fails",
            f"{layers} layers x {experts} experts",
            "read from the model file",
        )
    if c.kind == "acyclic":
        return res("holds", "acyclic", "the model loaded, and loading rejects cycles")
    if c.kind == "scale_up_domain":
        ok = cluster.scale_up_domain >= int(c.value)
        return res(
            "holds" if ok else "fails",
            f"{cluster.scale_up_domain} GPUs per domain",
            f"{cluster.scale_up.name or 'scale-up link'} from the hardware file",
        )
    if c.kind == "modules_per_gpu":
        counts = _modules_per_gpu(model, layout)
        whole = sum(1 for _ in range(model.num_layers)) + sum(
            model.experts_in_layer(i) for i in range(model.num_layers)
        )
        n = layout.gpus
        base, extra = divmod(whole, n)
        computed = (
            f"{min(counts)}-{max(counts)} module pieces per GPU; whole modules {whole} / {n} GPUs"
        )
        claimed = float(c.value)
        if claimed != int(claimed) and (c.variance == 0 or c.variance is None):
            return res(
                "fails",
                computed,
                f"{whole} whole modules on {n} GPUs give {n - extra} GPUs with {base} "
                f"and {extra} with {base + 1} (variance > 0); {claimed:g} per GPU with "
                "zero variance is impossible, and with sharding each GPU holds pieces of "
                f"{max(counts)} modules",
            )
        ok = all(x == claimed for x in counts)
        return res("holds" if ok else "fails", computed, "counted from the layout")
    if ev is None or ev.estimates is None:
        return res("cannot judge", "-", "the layout does not fit this cluster")
    peak = max(g.used_bytes for g in ev.gpus)
    physical = min(g.memory_bytes for g in ev.gpus)
    if c.kind == "memory_per_gpu_gb":
        ok = near(peak / 1e9, float(c.value)) and ev.fits
        return res(
            "holds" if ok else "fails",
            _gb(peak),
            f"ledger at batch {workload.batch}, {workload.kv_tokens} cached tokens, "
            f"weights {model.dtype}; within {c.tolerance:.0%} of {c.value} GB"
            if ok
            else f"the ledger gives {_gb(peak)} at batch {workload.batch} and "
            f"{workload.kv_tokens} cached tokens, not ~{c.value} GB",
        )
    if c.kind == "memory_headroom":
        head = 1 - peak / physical
        ok = near(head, float(c.value))
        return res(
            "holds" if ok else "fails",
            f"{head:.0%} of {_gb(physical)}",
            "physical memory minus the ledger's peak",
        )
    if c.kind == "latency_reduction":
        unpiped = evaluate(
            model,
            cluster,
            workload,
            layout.model_copy(update={"pp": 1, "layers_per_stage": None}),
            profile,
        )
        assert unpiped.estimates is not None
        change = 1 - ev.estimates.latency_s / unpiped.estimates.latency_s
        return res(
            "fails" if change < float(c.value) * (1 - c.tolerance) else "holds",
            f"{-change:+.0%} latency vs pp=1 ({ev.estimates.latency_s * 1e3:.2f} vs "
            f"{unpiped.estimates.latency_s * 1e3:.2f} ms)",
            "a request still passes through every layer in order: pipelining adds "
            "stage hand-offs to latency and only raises throughput with micro-batches",
        )
    if c.kind == "throughput_gain":
        return res(
            "cannot judge",
            f"{ev.estimates.throughput_tokens_s:,.0f} tokens/s estimated",
            "the claim names no baseline, workload or measurement to compare with",
        )
    if c.kind == "gpu_utilization":
        achieved = compute_utilization(ev, model, cluster)
        return res(
            "cannot judge",
            f"~{achieved:.1%} of peak FLOPS (roofline estimate)",
            "no measurement is given; the roofline model estimates far less for this workload"
            if achieved < float(c.value)
            else "no measurement is given",
        )
    if c.kind == "expert_utilization":
        return res(
            "cannot judge",
            "routing assumed uniform",
            "needs expert load statistics (placer balance takes them)",
        )
    if c.kind == "optimal_layout":
        return res("cannot judge", "", "see the comparison with placer solve")
    return res("cannot judge", "-", "unknown claim kind")  # pragma: no cover


def compute_utilization(ev: Evaluation, model: ModelSpec, cluster: ClusterSpec) -> float:
    """Model FLOPs per step (2 per active parameter per token) over what the layout's GPUs
    could do at peak in one pipelined cycle: a coarse model-FLOPs utilisation."""
    e = ev.estimates
    assert e is not None
    peak = cluster.gpu_types[0].peak_flops("bf16") * ev.layout.gpus
    flops = 2.0 * model.active_params() * e.tokens_per_step
    return flops / (peak * e.cycle_s) if e.cycle_s > 0 else 0.0


def _compare(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    layout: Layout,
    ev: Evaluation | None,
    profile: str,
    limit: float,
) -> tuple[str, str | None, float | None]:
    """The optimum's summary, its status, and its throughput as a multiple of the claimed
    layout's when the optimum is proven (None otherwise)."""
    from placer.search.solve import solve

    plan: Plan = solve(model, cluster, workload, SolveConfig(profile=profile, time_limit_s=limit))
    if plan.estimates is None or plan.layout is None:
        return f"placer solve finds no plan ({plan.status})", plan.status, None
    p = plan.layout
    best = (
        f"placer solve ({plan.status}, gap {100 * (plan.objective.gap or 0):.2f} %): TP{p.tp} "
        f"PP{p.pp} EP{p.ep} ETP{p.etp} DPattn{p.dp_attn} on {p.gpus_used} GPUs, "
        f"{plan.estimates.throughput_tokens_s:,.0f} tokens/s"
    )
    if ev is None or ev.estimates is None or not ev.fits:
        return best + "; the claimed layout does not fit", plan.status, None
    ratio = plan.estimates.throughput_tokens_s / ev.estimates.throughput_tokens_s
    text = (
        f"{best}; the claimed {layout.describe()} reaches "
        f"{ev.estimates.throughput_tokens_s:,.0f} tokens/s ({ratio:.2f}x less)"
    )
    return text, plan.status, ratio if plan.status == "optimal" else None
