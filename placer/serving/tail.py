"""A bound on every instance layout larger than the searched ones (docs/serving.md, "Large
clusters"): what lets the serving search answer 256 to 4,096 GPUs without enumerating
instances of thousands of GPUs.

Per attention-TP degree ``tp``, two floors no layout with that ``tp`` beats, whatever its
pipeline, expert and attention-DP degrees or size:

- ``step_floor``: the decode step of one request is at least the sum over layers of each
  layer's attention, dense/shared MLP and fixed cost (``layer - comm`` in the cost tables)
  and its all-reduce over the attention-TP group (every engine issues one after attention,
  placer/cost_layer.py ``layer_comm``; counted when ``tp`` divides the scale-up unit, so every
  TP group sits inside one), plus the LM head and the step's fixed cost. With one request
  the busiest attention-DP group holds that request, so these terms depend on ``tp`` (and
  the GPU type) alone; routed experts, the other collectives and pipeline hand-offs only
  add, and a pipelined cycle is at least the sum of its stages.
- ``prefill_floor``: the same sum for one request's whole prompt.

Then, as for :func:`placer.serving.timing.tokens_per_s_ceiling`, no concurrency gives one
instance more than ``(T - step_floor) x output_len / (T x prefill_floor)`` output tokens/s
(``T`` the TPOT target; without one ``output_len / prefill_floor``), and an instance of
``g`` GPUs gives the cluster at most that divided by ``g`` per GPU (``k x g <= N``). For
every instance of more than ``G`` GPUs this is at most the figure at ``g = G + 1``.
"""

from __future__ import annotations

import math

from placer.cluster import ClusterSpec
from placer.cost import cost_tables, steps
from placer.layout import Layout
from placer.model import ModelSpec
from placer.rules import RulesProfile
from placer.serving.record import TailBound, TailTerm
from placer.serving.timing import NS, instance_workload, prefill_workload
from placer.workload import Workload


def attention_tps(model: ModelSpec, cluster: ClusterSpec, profile: RulesProfile) -> list[int]:
    """Every attention-TP degree a legal layout may have: the rules that involve ``tp``
    alone (heads and KV heads divide evenly, TP inside the scale-up domain); a superset of
    the degrees of legal layouts, so a bound over it covers them all."""
    out = []
    a = model.attention
    for tp in range(1, cluster.num_gpus + 1):
        if a is not None and profile.heads_divisible and a.num_heads % tp:
            continue
        kv = a.num_kv_heads if a is not None else 1
        if a is not None and a.kind != "mla" and profile.kv_heads_rule and kv % tp and tp % kv:
            continue
        domain = cluster.scale_up_domain
        if profile.tp_within_scale_up and (tp > domain or domain % tp):
            continue
        out.append(tp)
    return out


def floors_ns(
    model: ModelSpec, cluster: ClusterSpec, workload: Workload, tp: int
) -> tuple[float, float]:
    """(decode step of one request, prefill of one prompt) no layout with attention TP
    ``tp`` beats, in ns (module docstring)."""
    lay = Layout(tp=tp)
    # With one attention-TP group per stage (dp 1, the stage is the group) a layer's
    # communication is two equal all-reduces over it, one of which (after attention) every
    # layout with this tp pays too, on the same links when its TP groups cannot straddle a
    # scale-up unit (tp divides the unit; stages start at multiples of tp).
    span = max(cluster.gpus_per_node, cluster.scale_up_domain)
    kept = 0.5 if span % tp == 0 else 0.0
    out = []
    for wl, kind in (
        (instance_workload(workload, 1), "decode"),
        (prefill_workload(workload), "prefill"),
    ):
        t = cost_tables(model, cluster, wl, lay, steps(wl, lay)[kind])
        layers = t.layer[:, 0] - (1.0 - kept) * t.comm[:, 0]
        out.append(float(layers.sum() + t.last[0]) * NS)
    return out[0], out[1]


def instance_rate_bound(workload: Workload, step_ns: float, prefill_ns: float) -> float:
    """Output tokens/s no concurrency of an instance beats, given floors on its decode step
    of one request and on its prefill (module docstring)."""
    if prefill_ns <= 0:
        return math.inf
    if workload.tpot_ms is None:
        return workload.output_len * NS / prefill_ns
    target = workload.tpot_ms * 1e6
    return max(0.0, target - step_ns) * workload.output_len * NS / (target * prefill_ns)


def tail_bound(
    model: ModelSpec,
    cluster: ClusterSpec,
    workload: Workload,
    profile: RulesProfile,
    above: int,
) -> TailBound:
    """The bound on every instance of more than ``above`` GPUs (module docstring)."""
    terms = []
    for tp in attention_tps(model, cluster, profile):
        step, pre = floors_ns(model, cluster, workload, tp)
        rate = instance_rate_bound(workload, step, pre)
        terms.append(
            TailTerm(
                tp=tp,
                step_floor_s=step / NS,
                prefill_floor_s=pre / NS,
                instance_rate=rate,
                per_gpu=rate / (above + 1),
            )
        )
    return TailBound(
        above_gpus=above,
        terms=tuple(terms),
        per_gpu=max((t.per_gpu for t in terms), default=0.0),
    )


def gpus_for_rate(tail: TailBound, need: float) -> float:
    """Fewest GPUs an instance larger than ``tail.above_gpus`` needs to serve ``need``
    output tokens/s: at least one such instance, and no more than ``per_gpu x (above +
    1)`` tokens/s per GPU."""
    if need <= 0:
        return float(tail.above_gpus + 1)
    best = max((t.instance_rate for t in tail.terms), default=0.0)
    if best <= 0:
        return math.inf
    return max(float(tail.above_gpus + 1), need * (tail.above_gpus + 1) / best)


def needed_above(tail: TailBound, floor_per_gpu: float, limit: int) -> int:
    """Smallest ``G`` (at most ``limit``) whose tail bound is at most ``floor_per_gpu``:
    instances of up to ``G`` GPUs must then be searched."""
    best = max((t.instance_rate for t in tail.terms), default=0.0)
    if floor_per_gpu <= 0:
        return limit
    return min(limit, max(tail.above_gpus, math.ceil(best / floor_per_gpu) - 1))


def tpot_floor_ns(
    tail: TailBound, workload: Workload, concurrency: int, cluster_gpus: int
) -> float:
    """Objective latency: no instance of more than ``tail.above_gpus`` GPUs carries its share
    of ``concurrency`` requests with a lower TPOT. At most ``N // (above + 1)`` such
    instances fit, so one carries at least ``ceil(concurrency / that)`` requests, and TPOT(c)
    >= step(1) + c x prefill / output_len."""
    k = cluster_gpus // (tail.above_gpus + 1)
    if k == 0:
        return math.inf
    c = -(-concurrency // k)
    return min(
        ((t.step_floor_s + c * t.prefill_floor_s / workload.output_len) * NS for t in tail.terms),
        default=math.inf,
    )
