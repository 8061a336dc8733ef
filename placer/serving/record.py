"""The serving part of a plan (pydantic, JSON): instances, concurrency, targets, throughput,
and the search record that proves nothing else does better (docs/serving.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from placer._base import Frozen

ServingObjective = Literal["throughput", "gpus", "latency"]
ServingStatus = Literal["plan", "solved", "pruned", "infeasible", "unresolved"]


class Leaf(Frozen):
    """A range of concurrencies of one layout and the bound that settles it."""

    low: int = Field(description="Smallest concurrency of the range.")
    high: int = Field(description="Largest concurrency of the range.")
    bound: float = Field(
        description="No concurrency in the range gives one instance more output tokens/s "
        "(0 when the range is excluded)."
    )
    tight: bool = Field(
        default=True,
        description="The bound comes from the DP split's figures (LayoutProbe.at); "
        "False: from the looser figures without a split (LayoutProbe.loose).",
    )
    excluded: str = Field(
        default="",
        description="memory, tpot or ttft when the range's smallest concurrency already "
        "breaks it with bound figures (so every larger one does); empty otherwise.",
    )


class ServingEntry(Frozen):
    """What the serving search did with one instance layout."""

    layout: str = Field(description="Degrees, e.g. 'TP2 PP1 EP8 ETP1 DPattn4'.")
    tp: int = Field(description="Attention tensor parallel.")
    pp: int = Field(description="Pipeline stages.")
    ep: int = Field(description="Expert parallel.")
    etp: int = Field(description="Expert tensor parallel.")
    dp_attn: int = Field(description="Attention data parallel.")
    gpus: int = Field(description="GPUs of one instance.")
    status: ServingStatus = Field(description="How the layout was settled.")
    memory_limit: int = Field(
        description="Largest concurrency the aggregate memory condition allows (0: none); "
        "the leaves cover 1..memory_limit."
    )
    cap: int = Field(description="Largest concurrency found within memory and targets.")
    cap_reason: str = Field(description="What excludes the smallest excluded concurrency.")
    concurrency: int | None = Field(default=None, description="Best concurrency found.")
    rate: float | None = Field(
        default=None, description="Output tokens/s of one instance at that concurrency."
    )
    instances: int | None = Field(default=None, description="Instances at the best value.")
    value: float | None = Field(default=None, description="Objective the layout reaches.")
    bound: float | None = Field(
        default=None, description="Output tokens/s of one instance no concurrency can beat."
    )
    exact: bool = Field(description="Achievable and bound figures of a concurrency coincide.")
    leaves: tuple[Leaf, ...] = Field(default=(), description="Concurrency ranges and bounds.")
    ceiling: float | None = Field(
        default=None,
        description="When set and there are no leaves: the bound on one instance's output "
        "tokens/s from step(1) and the prefill alone settled the layout "
        "(placer.serving.timing.tokens_per_s_ceiling).",
    )
    reason: str = Field(default="", description="Why pruned, infeasible or unresolved.")
    by_floors: bool = Field(
        default=False,
        description="Pruned without a probe: ceiling is the instance rate bound of the "
        "layout's attention-TP floors (placer.serving.tail), which cannot beat the plan.",
    )
    tpot_floor_s: float | None = Field(
        default=None,
        description="Objective latency: no split or expert map of the layout gives a lower "
        "TPOT at its concurrency (bound figures; tight: from the DP split, see leaves).",
    )
    tight: bool = Field(
        default=False,
        description="Objective latency: tpot_floor_s comes from LayoutProbe.at (else loose).",
    )


class TailTerm(Frozen):
    """The bound on instances larger than the searched ones, for one attention-TP degree."""

    tp: int = Field(description="Attention tensor-parallel degree.")
    step_floor_s: float = Field(
        description="No layout with this tp decodes one request faster (placer.serving.tail)."
    )
    prefill_floor_s: float = Field(
        description="No layout with this tp prefills one prompt faster."
    )
    instance_rate: float = Field(description="Output tokens/s no such instance beats.")
    per_gpu: float = Field(
        description="Output tokens/s per GPU of the cluster no such instance of more than "
        "above_gpus GPUs beats: instance_rate / (above_gpus + 1)."
    )


class TailBound(Frozen):
    """What no instance of more GPUs than the search enumerated can reach (docs/serving.md,
    "Large clusters")."""

    above_gpus: int = Field(description="Instances of more GPUs than this are bounded here.")
    terms: tuple[TailTerm, ...] = Field(description="One per attention-TP degree a rule allows.")
    per_gpu: float = Field(description="The largest term: tokens/s per GPU none of them beats.")
    tpot_floor_s: float | None = Field(
        default=None,
        description="Objective latency: no such instance carries its share of the concurrency "
        "with a lower TPOT (placer.serving.tail.tpot_floor_ns).",
    )


class PrefillEntry(Frozen):
    """One legal layout as a prefill instance: one prompt at a time, at concurrency 1."""

    layout: str = Field(description="Degrees, e.g. 'TP2 PP1 EP8 ETP1 DPattn1'.")
    gpus: int = Field(description="GPUs of one instance.")
    fits: bool = Field(description="The DP split holds one prompt's KV cache on every GPU.")
    fits_bound: bool = Field(description="The aggregate memory condition holds.")
    prefill_ns: int = Field(description="One prompt through the DP split (0 if it does not fit).")
    prefill_bound_ns: int = Field(description="No split prefills one prompt faster.")
    tight: bool = Field(
        default=True,
        description="The figures come from the DP split (LayoutProbe.at); False: the loose "
        "bound figures alone (LayoutProbe.loose; fits False, prefill_ns 0), kept when the "
        "bound is above the fastest achievable prefill of the same GPU count.",
    )


class DecodeGroup(Frozen):
    """The decode search of a set of layouts under one step cap: every layout's concurrency
    ranges and their bounds (as in the aggregated search, with no prefill share)."""

    gpus: int | None = Field(
        description="Only layouts of this many GPUs (None: every legal layout)."
    )
    step_cap_ns: int | None = Field(
        description="Largest decode step allowed, set when the TTFT target binds more than "
        "the TPOT target for some split (None: the TPOT target alone)."
    )
    entries: tuple[ServingEntry, ...] = Field(description="One per layout of the group.")


class DisaggSearch(Frozen):
    """The proof of the disaggregated search: every prefill layout's capacity, the decode
    groups, and how the split space (prefill size x decode size x instance counts) was
    settled (docs/serving.md, "Disaggregated")."""

    prefill: tuple[PrefillEntry, ...] = Field(description="One per legal layout.")
    decode: tuple[DecodeGroup, ...] = Field(description="The TPOT group, then capped groups.")
    splits: int = Field(description="(prefill size, x, decode size, y) combinations examined.")
    pruned: int = Field(description="Splits closed by the TPOT group's bound alone.")
    capped: int = Field(description="Splits settled by a capped decode group.")
    excluded: int = Field(description="Splits where TTFT leaves no decode step at all.")
    open: int = Field(description="Splits whose bound still beats the plan.")


class DisaggRecord(Frozen):
    """The best disaggregated deployment and how it compares with the aggregated plan."""

    prefill_layout: str = Field(description="Layout of a prefill instance.")
    prefill_gpus: int = Field(description="GPUs of a prefill instance.")
    prefill_instances: int = Field(description="Prefill instances (x).")
    decode_layout: str = Field(description="Layout of a decode instance.")
    decode_gpus: int = Field(description="GPUs of a decode instance.")
    decode_instances: int = Field(description="Decode instances (y).")
    concurrency: int = Field(description="Concurrent requests per decode instance.")
    prefill_s: float = Field(description="One prompt on a prefill instance.")
    step_s: float = Field(description="Decode step (= TPOT) at the concurrency.")
    kv_transfer_s: float = Field(description="One request's KV cache, prefill to decode.")
    ttft_s: float = Field(description="Time to first token.")
    requests_per_s: float = Field(description="Requests/s the deployment completes.")
    tokens_per_s_per_gpu: float = Field(description="Output tokens/s per GPU of the cluster.")
    idle_gpus: int = Field(description="GPUs no instance uses.")
    exact: bool = Field(description="No pair was cut by TTFT at the decode's best concurrency.")
    aggregated_tokens_per_s_per_gpu: float = Field(description="The aggregated plan's figure.")
    prefill_split: tuple[int, ...] = Field(
        default=(), description="Layers per pipeline stage of a prefill instance."
    )
    decode_split: tuple[int, ...] = Field(
        default=(), description="Layers per pipeline stage of a decode instance."
    )
    status: Literal["optimal", "feasible"] = Field(
        default="feasible",
        description="optimal: no split of the cluster beats it (the search record proves it); "
        "feasible: the bound may be higher (see bound and cut).",
    )
    cut: bool = Field(
        default=False,
        description="The time limit stopped the split search: layouts it did not reach are "
        "bounded from their loose figures, and the status is never optimal.",
    )
    bound: float | None = Field(
        default=None, description="No disaggregated deployment exceeds this tokens/s per GPU."
    )
    deployed: bool = Field(
        default=False,
        description="The plan deploys this split: it beats the aggregated plan (docs/serving.md).",
    )
    search: DisaggSearch | None = Field(default=None, description="The proof record.")

    def summary_lines(self) -> list[str]:
        """Aligned lines for the plan summary."""
        return [
            f"disagg      {self.prefill_instances} x prefill {self.prefill_layout} + "
            f"{self.decode_instances} x decode {self.decode_layout} (concurrency "
            f"{self.concurrency}), {self.idle_gpus} idle",
            f"            TPOT {self.step_s * 1e3:.3f} ms, TTFT {self.ttft_s * 1e3:.1f} ms (KV "
            f"transfer {self.kv_transfer_s * 1e3:.2f} ms), {self.tokens_per_s_per_gpu:,.1f} "
            f"tokens/s per GPU: {self.verdict()}" + ("" if self.exact else " (not proven)"),
            f"            deployed: {'disaggregated' if self.deployed else 'aggregated'}; "
            f"split {self.status}{self._bound_text()}",
        ]

    def gap(self) -> float | None:
        """Relative gap of the split to its bound (None without a bound)."""
        if self.bound is None or self.bound <= 0:
            return None
        return max(0.0, (self.bound - self.tokens_per_s_per_gpu) / self.bound)

    def _bound_text(self) -> str:
        if self.bound is None:
            return ", no bound" + (" (time limit)" if self.cut else "")
        text = f", bound {self.bound:,.1f}"
        gap = self.gap()
        if self.status != "optimal" and gap is not None:
            text += f", gap {100 * gap:.2f} %"
        return text + (" (time limit)" if self.cut else "")

    def markdown_rows(self) -> list[tuple[str, str]]:
        """The report's rows for the disaggregated split."""
        rows = [
            (
                "disaggregated",
                f"{self.prefill_instances} x prefill {self.prefill_layout} + "
                f"{self.decode_instances} x decode {self.decode_layout} (concurrency "
                f"{self.concurrency}), {self.idle_gpus} GPUs idle",
            ),
            (
                "disaggregated figures",
                f"{self.tokens_per_s_per_gpu:,.1f} tokens/s per GPU, TTFT "
                f"{self.ttft_s * 1e3:.1f} ms, TPOT {self.step_s * 1e3:.3f} ms: {self.verdict()}",
            ),
            (
                "deployed",
                ("disaggregated" if self.deployed else "aggregated")
                + f" (split {self.status}{self._bound_text()})",
            ),
        ]
        if self.search is not None:
            s = self.search
            rows.append(
                (
                    "split search",
                    f"{s.splits} splits: {s.pruned} pruned, {s.capped} settled by a TTFT-capped "
                    f"decode search, {s.excluded} excluded by TTFT, {s.open} open",
                )
            )
        return rows

    def verdict(self) -> str:
        """Which wins, and by how much."""
        agg, dis = self.aggregated_tokens_per_s_per_gpu, self.tokens_per_s_per_gpu
        if dis > agg:
            return (
                f"disaggregated wins by {100 * (dis / agg - 1):.1f} %"
                if agg
                else "only disaggregated serves"
            )
        return f"aggregated wins by {100 * (agg / dis - 1):.1f} %" if dis else "aggregated wins"


class ServingRecord(Frozen):
    """The deployment the serving search chose (if any), and its proof."""

    objective: ServingObjective = Field(description="throughput or gpus.")
    ttft_ms: float | None = Field(description="TTFT target.")
    tpot_ms: float | None = Field(description="TPOT target.")
    request_rate: float | None = Field(description="Requests/s to serve (objective gpus).")
    cluster_gpus: int = Field(description="GPUs of the cluster.")
    max_instance_gpus: int = Field(description="Largest instance size searched.")
    # The deployment: None in a plan that deploys nothing (infeasible or unknown), which
    # still carries its search record below, so that verify re-derives every layout.
    instances: int | None = Field(default=None, description="Identical instances deployed.")
    gpus_per_instance: int | None = Field(default=None, description="GPUs of one instance.")
    idle_gpus: int | None = Field(default=None, description="GPUs no instance uses.")
    concurrency: int | None = Field(default=None, description="Concurrent requests per instance.")
    tpot_s: float | None = Field(
        default=None,
        description="Mean time per output token: the decode step plus its share of the "
        "interleaved prefills (docs/serving.md).",
    )
    step_s: float | None = Field(default=None, description="Decode step at the concurrency.")
    ttft_s: float | None = Field(default=None, description="Time to first token.")
    prefill_s: float | None = Field(default=None, description="One prompt through the instance.")
    tokens_per_s_instance: float | None = Field(
        default=None, description="Output tokens/s of one instance."
    )
    tokens_per_s: float | None = Field(
        default=None, description="Output tokens/s of all instances."
    )
    tokens_per_s_per_gpu: float | None = Field(
        default=None, description="Output tokens/s per GPU of the cluster."
    )
    tokens_per_s_per_user: float | None = Field(
        default=None, description="Output tokens/s one request sees."
    )
    requests_per_s: float | None = Field(
        default=None, description="Requests/s all instances complete."
    )
    entries: tuple[ServingEntry, ...] = Field(description="One per legal instance layout.")
    disagg: DisaggRecord | None = Field(
        default=None,
        description="With --disagg: the best prefill/decode split and how it compares.",
    )
    disagg_unknown: bool = Field(
        default=False,
        description="With --disagg: the time limit stopped the split search before it found "
        "any split, so whether one serves is unknown (disagg is then null).",
    )
    carried: int | None = Field(
        default=None,
        description="Objective latency: requests in flight on the whole cluster, spread over "
        "the instances (the busiest carries concurrency).",
    )
    tail: TailBound | None = Field(
        default=None,
        description="When instances of more than max_instance_gpus GPUs fit the cluster: the "
        "bound that covers them (placer.serving.tail).",
    )

    def summary_lines(self) -> list[str]:
        """Aligned lines for :meth:`placer.plan.Plan.summary`."""
        targets = ", ".join(
            f"{name} <= {v:g} ms"
            for name, v in (("TTFT", self.ttft_ms), ("TPOT", self.tpot_ms))
            if v is not None
        )
        if not self.deploys:
            return [self._search_line("search      ")]
        tpot_s, step_s, ttft_s = self.tpot_s or 0.0, self.step_s or 0.0, self.ttft_s or 0.0
        lines = [
            f"instances   {self.instances} x {self.gpus_per_instance} GPUs of "
            f"{self.cluster_gpus} ({self.idle_gpus} idle), concurrency {self.concurrency} each",
            f"latency     TPOT {tpot_s * 1e3:.3f} ms (step {step_s * 1e3:.3f} ms), "
            f"TTFT {ttft_s * 1e3:.1f} ms" + (f" (targets {targets})" if targets else ""),
            f"serving     {self.tokens_per_s_per_gpu:,.1f} tokens/s per GPU, "
            f"{self.tokens_per_s_per_user:,.1f} tokens/s per user, "
            f"{self.tokens_per_s:,.0f} tokens/s in all, {self.requests_per_s:,.2f} requests/s",
        ]
        if self.tail is not None:
            lines.append(
                f"larger      instances of more than {self.tail.above_gpus} GPUs: at most "
                f"{self.tail.per_gpu:,.1f} tokens/s per GPU (bound, docs/serving.md)"
            )
        if self.disagg is not None:
            lines.extend(self.disagg.summary_lines())
        elif self.disagg_unknown:
            lines.append("disagg      unknown: the time limit stopped the split search first")
        return lines

    @property
    def deploys(self) -> bool:
        """Whether the record describes a deployment (False: infeasible or unknown)."""
        return self.instances is not None

    def _settled(self) -> dict[str, int]:
        return {
            s: sum(1 for e in self.entries if e.status == s)
            for s in ("solved", "pruned", "infeasible", "unresolved")
        }

    def _search_line(self, prefix: str) -> str:
        settled = self._settled()
        return (
            f"{prefix}{len(self.entries)} instance layouts of at most "
            f"{self.max_instance_gpus} GPUs: {settled['solved']} solved, {settled['pruned']} "
            f"pruned by a bound, {settled['infeasible']} excluded by memory or the targets, "
            f"{settled['unresolved']} unresolved"
        )

    def objective_text(self) -> str:
        """What the objective measures, in words."""
        if self.objective == "gpus":
            return "fewest GPUs serving the request rate within the targets (docs/serving.md)"
        if self.objective == "latency":
            return (
                f"lowest TPOT carrying {self.carried} requests in flight within the targets "
                "(docs/serving.md)"
            )
        return "output tokens/s per GPU of the whole cluster within the targets (docs/serving.md)"

    def _deployment_rows(self) -> list[tuple[str, str]]:
        tpot_s, step_s = self.tpot_s or 0.0, self.step_s or 0.0
        ttft_s, prefill_s = self.ttft_s or 0.0, self.prefill_s or 0.0
        return [
            (
                "instances",
                f"{self.instances} x {self.gpus_per_instance} GPUs "
                f"({self.idle_gpus} of {self.cluster_gpus} GPUs idle)",
            ),
            ("concurrency", f"{self.concurrency} requests per instance"),
            (
                "TPOT",
                f"{tpot_s * 1e3:.3f} ms (decode step {step_s * 1e3:.3f} ms plus "
                "its share of interleaved prefills)"
                + (f"; target {self.tpot_ms:g} ms" if self.tpot_ms is not None else ""),
            ),
            (
                "TTFT",
                f"{ttft_s * 1e3:.1f} ms (prefill {prefill_s * 1e3:.1f} ms)"
                + (f"; target {self.ttft_ms:g} ms" if self.ttft_ms is not None else ""),
            ),
            ("tokens/s per GPU", f"{self.tokens_per_s_per_gpu:,.1f} (idle GPUs included)"),
            ("tokens/s per user", f"{self.tokens_per_s_per_user:,.1f}"),
            (
                "tokens/s in all",
                f"{self.tokens_per_s:,.0f} ({self.requests_per_s:,.2f} requests/s)",
            ),
        ]

    def markdown_lines(self) -> list[str]:
        """The report's serving section: deployment, latency, throughput and the search."""
        search = ("search", self._search_line(""))
        if not self.deploys:
            rows = [("deployment", "none"), search]
        else:
            rows = [*self._deployment_rows(), search]
        if self.disagg is not None:
            rows += self.disagg.markdown_rows()
        elif self.disagg_unknown:
            rows.append(("disaggregated", "unknown: the time limit stopped the split search"))
        out = ["| item | value |", "| --- | --- |"]
        out += [f"| {k} | {v} |" for k, v in rows]
        return out
