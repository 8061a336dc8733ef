"""Disaggregated serving: ``x`` prefill instances and ``y`` decode instances, each with its
own legal layout, compared with aggregated serving (docs/serving.md, "Disaggregated").

- A prefill instance prefills one prompt at a time: ``1 / prefill`` requests/s.
- A decode instance at concurrency ``c`` has TPOT = step(c) (no prefills interleaved) and
  serves ``c / step(c) / output_len`` requests/s.
- Each request's KV cache (``prompt_len`` tokens, every layer) crosses the slowest link the
  deployment spans, sent by ``min(g_p, g_d)`` GPUs in parallel.
- TTFT = :func:`placer.serving.timing.disagg_ttft_ns`.
- ``x g_p + y g_d <= N``; requests/s = ``min(x / prefill, y x decode rate)``; output tokens/s
  per GPU of the cluster = requests/s x output_len / N.

For each GPU count the fastest prefill layout (smallest prefill) and the decode layout with the
most requests/s within TPOT (the serving search's branch and bound, prefills left out) are
kept; every (g_p, g_d, x) is then enumerated. The result is exact unless a TTFT target cut a
pair that a lower decode concurrency could have kept (``exact`` False).
"""

from __future__ import annotations

from dataclasses import replace

from placer.cluster import ClusterSpec
from placer.config import SolveConfig
from placer.dtypes import nbytes
from placer.layout import Layout
from placer.model import ModelSpec
from placer.rules import get_profile
from placer.search.space import enumerate_layouts
from placer.serving.probe import LayoutProbe, Point
from placer.serving.record import DisaggRecord
from placer.serving.search import best_concurrency
from placer.serving.timing import NS, disagg_ttft_ns
from placer.workload import Workload


class DecodeProbe(LayoutProbe):
    """A layout as a decode-only instance: prefills happen elsewhere, so they add nothing to
    TPOT, and TTFT is judged for the pair, not here."""

    def loose(self, concurrency: int) -> Point:
        """Bound figures with no prefill share."""
        return replace(super().loose(concurrency), prefill_ns=0, prefill_bound_ns=0)

    def at(self, concurrency: int) -> Point:
        """Achievable and bound figures with no prefill share."""
        return replace(super().at(concurrency), prefill_ns=0, prefill_bound_ns=0)


def layout_from_text(text: str) -> Layout:
    """The layout a :meth:`placer.layout.Layout.describe` text names (no split, no slots)."""
    degrees = {"tp": 1, "pp": 1, "ep": 1, "etp": 1, "dp_attn": 1}
    names = {"TP": "tp", "PP": "pp", "EP": "ep", "ETP": "etp", "DPattn": "dp_attn"}
    for part in text.split():
        for prefix in sorted(names, key=len, reverse=True):
            if part.startswith(prefix) and part[len(prefix) :].isdigit():
                degrees[names[prefix]] = int(part[len(prefix) :])
                break
    return Layout(**degrees)


def kv_transfer_ns(
    model: ModelSpec, cluster: ClusterSpec, workload: Workload, g_p: int, g_d: int, used: int
) -> int:
    """One request's prompt KV cache over the slowest link of the GPUs in use, sent by
    ``min(g_p, g_d)`` GPUs in parallel."""
    elements = 0
    for i in range(model.num_layers):
        window = model.layers[i].window if model.modules is None else None
        tokens = min(workload.prompt_len, window) if window else workload.prompt_len
        elements += tokens * model.kv_elements_per_token(i)
    link = cluster.link(cluster.level_of(range(used)))
    seconds = nbytes(elements, workload.kv_dtype) / (link.bandwidth_gbps * 1e9 * min(g_p, g_d))
    return int(seconds * NS + link.latency_us * 1e3 + 0.999999)


def disaggregated(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    config: SolveConfig,
    aggregated: float,
    max_instance_gpus: int,
) -> DisaggRecord | None:
    """The best disaggregated deployment within the targets (module docstring); None if no
    prefill/decode pair fits the cluster and the targets."""
    n = cluster.num_gpus
    out = workload.output_len
    space = enumerate_layouts(model, cluster, get_profile(config.profile), max_instance_gpus)
    decode_wl = workload.model_copy(update={"ttft_ms": None})
    cache: dict[object, object] = {}
    decode_cache: dict[object, object] = {}
    prefill: dict[int, tuple[int, Layout]] = {}
    decode: dict[int, tuple[float, Layout, int, int]] = {}  # rate, layout, c, step
    for lay in space.legal:
        g = lay.gpus
        p1 = LayoutProbe(model, cluster, workload, lay, cache).at(1)
        if p1.fits and (g not in prefill or p1.prefill_ns < prefill[g][0]):
            prefill[g] = (p1.prefill_ns, lay)
        probe = DecodeProbe(model, cluster, decode_wl, lay, decode_cache)
        res = best_concurrency(probe, lambda g=g: decode[g][0] if g in decode else 0.0)  # type: ignore[misc]
        if res.concurrency is not None and (g not in decode or res.rate > decode[g][0]):
            decode[g] = (res.rate, lay, res.concurrency, probe.at(res.concurrency).step_ns)
    best: DisaggRecord | None = None
    exact = True
    target = workload.ttft_ms * 1e6 if workload.ttft_ms is not None else None
    for g_p, (pre, lp) in sorted(prefill.items()):
        for g_d, (rate, ld, c, step) in sorted(decode.items()):
            for x in range(1, n // g_p + 1):
                y = (n - x * g_p) // g_d
                if y < 1:
                    break
                used = x * g_p + y * g_d
                transfer = kv_transfer_ns(model, cluster, workload, g_p, g_d, used)
                ttft = disagg_ttft_ns(pre, transfer, step)
                if target is not None and ttft > target:
                    if disagg_ttft_ns(pre, transfer, 0) <= target:
                        exact = False
                    continue
                reqs = min(x * NS / pre, y * rate / out)
                value = reqs * out / n
                if best is None or value > best.tokens_per_s_per_gpu:
                    best = DisaggRecord(
                        prefill_layout=lp.describe(),
                        prefill_gpus=g_p,
                        prefill_instances=x,
                        decode_layout=ld.describe(),
                        decode_gpus=g_d,
                        decode_instances=y,
                        concurrency=c,
                        prefill_s=pre / NS,
                        step_s=step / NS,
                        kv_transfer_s=transfer / NS,
                        ttft_s=ttft / NS,
                        requests_per_s=reqs,
                        tokens_per_s_per_gpu=value,
                        idle_gpus=n - used,
                        exact=exact,
                        aggregated_tokens_per_s_per_gpu=aggregated,
                    )
    return None if best is None else best.model_copy(update={"exact": exact})
